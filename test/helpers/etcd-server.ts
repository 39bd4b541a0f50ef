/**
 * A real etcd (Debian's etcd-server, 3.4) for the real-peer tier: one member on
 * loopback ports of its own, data in a temp dir, its own process group killed at
 * teardown (also when the test times out). Progress notices every second, so a
 * silent watch is noticed quickly. `etcdCluster`: three such members in one
 * cluster, each with its own data dir and process group, a way to find the
 * leader and to kill one member; with `peerRelays`, the peer traffic goes through
 * fault relays, so that one member can be isolated from the others (still
 * running, still answering its clients).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { faultRelay, type FaultRelay } from './fault-relay.js';
import { freePort, killGroupOnExit, until } from './net.js';

if (spawnSync('which', ['etcd']).status !== 0) throw new Error('etcd is required (Debian: etcd-server); .ci/run installs it');

export interface EtcdServer {
  readonly url: string;
  readonly port: number;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** A v3 JSON gateway call (keys and values base64). */
  call(path: string, body: unknown): Promise<Record<string, unknown>>;
  /** Every key under `prefix`, decoded. */
  keys(prefix: string): Promise<string[]>;
}

const b64 = (s: string | Buffer): string => (typeof s === 'string' ? Buffer.from(s) : s).toString('base64');

async function gateway(url: string, path: string, body: unknown, timeoutMs = 5000): Promise<Record<string, unknown>> {
  const r = await fetch(`${url}${path}`, { method: 'POST', body: JSON.stringify(body), signal: AbortSignal.timeout(timeoutMs) });
  return (await r.json()) as Record<string, unknown>;
}

async function keysUnder(call: (path: string, body: unknown) => Promise<Record<string, unknown>>, prefix: string): Promise<string[]> {
  const end = Buffer.from(prefix);
  end[end.length - 1]!++;
  const r = await call('/v3/kv/range', { key: b64(prefix), range_end: b64(end), keys_only: true });
  return ((r['kvs'] ?? []) as { key: string }[]).map((k) => Buffer.from(k.key, 'base64').toString()).sort();
}

/** `/health` says true within a second (whatever holds the port may never answer). */
async function healthy(url: string): Promise<boolean> {
  try {
    const r = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) });
    return (await r.text()).includes('true');
  } catch {
    return false;
  }
}

/**
 * One etcd member in a process group of its own, killed when this test process
 * ends. It listens for peers on `peerUrl` and tells them `advertisePeerUrl` (a
 * relay in front of it, or the same).
 */
function spawnMember(name: string, dataDir: string, clientUrl: string, peerUrl: string, initialCluster: string, token: string, advertisePeerUrl = peerUrl): ChildProcess {
  const p = spawn(
    'etcd',
    [
      '--name', name,
      '--data-dir', dataDir,
      '--listen-client-urls', clientUrl,
      '--advertise-client-urls', clientUrl,
      '--listen-peer-urls', peerUrl,
      '--initial-advertise-peer-urls', advertisePeerUrl,
      '--initial-cluster', initialCluster,
      '--initial-cluster-token', token,
      '--initial-cluster-state', 'new',
      '--experimental-watch-progress-notify-interval', '1s',
      '--log-level', 'error',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'], detached: true },
  );
  killGroupOnExit(p);
  p.stderr!.setEncoding('utf8');
  p.stderr!.on('data', (d: string) => lastWords.set(p, ((lastWords.get(p) ?? '') + d).slice(-2000)));
  return p;
}

/**
 * A data directory, removed at teardown and when the test process ends: etcd
 * preallocates 128 MB of WAL per member, and test runs add up (a disk filled here).
 */
const dataDirs = new Set<string>();
function tempDataDir(t: Test, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  dataDirs.add(dir);
  t.teardown(() => removeDir(dir));
  return dir;
}
function removeDir(dir: string): void {
  dataDirs.delete(dir);
  rmSync(dir, { recursive: true, force: true });
}
process.once('exit', () => {
  for (const d of dataDirs) rmSync(d, { recursive: true, force: true });
});

/** The end of what each member process wrote on stderr, for errors. */
const lastWords = new WeakMap<ChildProcess, string>();

/** The last line a member process wrote on stderr. */
const lastLine = (p: ChildProcess): string => (lastWords.get(p) ?? '').trim().split('\n').pop() ?? '';

/** SIGKILLs the member's process group; resolves once it exited. */
async function killMember(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const gone = new Promise((r) => p.once('exit', r));
  try {
    process.kill(-p.pid!, 'SIGKILL');
  } catch {
    // gone
  }
  await gone;
}

export async function etcdServer(t: Test, port?: number): Promise<EtcdServer> {
  const clientPort = port ?? (await freePort());
  const peerPort = await freePort();
  const dir = tempDataDir(t, 'berth-etcd-');
  const url = `http://127.0.0.1:${clientPort}`;
  let proc: ChildProcess | null = null;
  t.teardown(async () => {
    if (proc !== null) await killMember(proc);
    rmSync(dir, { recursive: true, force: true });
  });
  const call = (path: string, body: unknown) => gateway(url, path, body);
  const server: EtcdServer = {
    url,
    port: clientPort,
    async start() {
      const peer = `http://127.0.0.1:${peerPort}`;
      proc = spawnMember('default', join(dir, 'data'), url, peer, `default=${peer}`, `berth-${clientPort}`);
      await until(() => healthy(url), 20_000, 'etcd healthy');
    },
    async stop() {
      const p = proc;
      if (p === null) return;
      proc = null;
      await killMember(p);
    },
    call,
    keys: (prefix) => keysUnder(call, prefix),
  };
  return server;
}

export interface EtcdMember {
  readonly name: string;
  readonly url: string;
  /** The member id (a uint64, as the JSON gateway writes it): known once the cluster is up. */
  readonly id: string;
  readonly alive: boolean;
  /** Cut off from the other members (`isolate`). */
  readonly isolated: boolean;
  /** SIGKILLs the member's process group; resolves once it exited. */
  kill(): Promise<void>;
  /** What the member says of itself (/v3/maintenance/status); null: no answer in 1 s. */
  status(): Promise<MemberStatus | null>;
}

export interface MemberStatus {
  /** This member's id. */
  readonly id: string;
  /** The leader it knows ("0": none). */
  readonly leader: string;
  readonly raftTerm: number;
}

export interface EtcdClusterOptions {
  /**
   * Peer traffic through fault relays, one in front of each member's peer port
   * (its advertised peer URL): `isolate` then works.
   */
  readonly peerRelays?: boolean;
}

export interface EtcdCluster {
  readonly members: readonly EtcdMember[];
  /** Every member's client URL, in member order. */
  readonly urls: readonly string[];
  /**
   * The leader, when every live member that answers (isolated ones aside) names
   * the same live one; null while there is none (an election) or they disagree.
   */
  leader(): Promise<EtcdMember | null>;
  /**
   * Cuts `member` off from the others, both ways (`peerRelays` only): its relay
   * refuses every peer (what the others send it), the others' relays refuse what
   * it dials (what it sends them: raft messages, lease renewals forwarded to the
   * leader). It keeps running and answering clients. For good: a member that
   * campaigned alone has a higher term, and would disrupt the others on return.
   */
  isolate(member: EtcdMember): void;
  /** A v3 JSON gateway call on the first live member that answers (isolated ones aside). */
  call(path: string, body: unknown): Promise<Record<string, unknown>>;
  keys(prefix: string): Promise<string[]>;
}

async function status(url: string): Promise<MemberStatus | null> {
  try {
    const r = await gateway(url, '/v3/maintenance/status', {}, 1000);
    const header = (r['header'] ?? {}) as Record<string, unknown>;
    return { id: String(header['member_id']), leader: String(r['leader'] ?? '0'), raftTerm: Number(r['raftTerm'] ?? r['raft_term'] ?? 0) };
  } catch {
    return null;
  }
}

/** A cluster of `size` members (three by default) on loopback ports; up (a leader elected) when it resolves. */
export async function etcdCluster(t: Test, size = 3, opts: EtcdClusterOptions = {}): Promise<EtcdCluster> {
  const dir = tempDataDir(t, 'berth-etcd-cluster-');
  // The relays first (bound at once): a port picked for a member then cannot be
  // a relay's. Each relay reads its target's port at every connection: a member
  // started again on another port is followed.
  const targets = Array.from({ length: size }, () => ({ port: 0 }));
  const relays: (FaultRelay | null)[] = [];
  for (const target of targets) relays.push(opts.peerRelays ? await faultRelay(t, target) : null);
  const peerPorts: number[] = [];
  for (let i = 0; i < size; i++) peerPorts.push(await freePort());
  // What the members tell each other: the relay in front of each, when there is one.
  const advertised = (i: number) => relays[i]?.url ?? `http://127.0.0.1:${peerPorts[i]}`;
  const initial = Array.from({ length: size }, (_, i) => `m${i}=${advertised(i)}`).join(',');
  const token = `berth-${process.pid}-${peerPorts[0]}`;
  const members = Array.from({ length: size }, (_, i) => {
    const name = `m${i}`;
    const dataDir = join(dir, name);
    let proc: ChildProcess | null = null;
    let url = '';
    let starts = 0;
    let id = '';
    let isolated = false;
    const alive = () => proc !== null && proc.exitCode === null && proc.signalCode === null;
    return {
      name,
      relay: relays[i] ?? null,
      get url() {
        return url;
      },
      get proc() {
        return proc!;
      },
      get starts() {
        return starts;
      },
      /** (Re)starts the member with an empty data dir on a fresh client port (and, behind a relay, a fresh peer port). */
      async spawn() {
        rmSync(dataDir, { recursive: true, force: true });
        url = `http://127.0.0.1:${await freePort()}`;
        if (relays[i] !== null) targets[i]!.port = peerPorts[i] = await freePort();
        starts++;
        proc = spawnMember(name, dataDir, url, `http://127.0.0.1:${peerPorts[i]}`, initial, token, advertised(i));
      },
      get id() {
        return id;
      },
      set id(v: string) {
        id = v;
      },
      get alive() {
        return alive();
      },
      get isolated() {
        return isolated;
      },
      set isolated(v: boolean) {
        isolated = v;
      },
      kill: () => (proc === null ? Promise.resolve() : killMember(proc)),
      status: () => status(url),
    };
  });
  t.teardown(async () => {
    await Promise.all(members.map((m) => m.kill()));
    rmSync(dir, { recursive: true, force: true });
  });
  for (const m of members) await m.spawn();

  const call = async (path: string, body: unknown): Promise<Record<string, unknown>> => {
    let last: unknown = new Error('no live etcd member');
    for (const m of members) {
      if (!m.alive || m.isolated) continue;
      try {
        return await gateway(m.url, path, body);
      } catch (err) {
        last = err;
      }
    }
    throw last;
  };
  const cluster: EtcdCluster = {
    members,
    get urls() {
      return members.map((m) => m.url);
    },
    async leader() {
      const live = members.filter((m) => m.alive && !m.isolated);
      const seen = await Promise.all(live.map((m) => status(m.url)));
      const named = new Set<string>();
      live.forEach((m, i) => {
        const s = seen[i];
        if (!s) return;
        m.id = s.id;
        named.add(s.leader);
      });
      if (named.size !== 1) return null;
      const [id] = named;
      return live.find((m) => m.id === id) ?? null;
    },
    isolate(member) {
      const m = members.find((x) => x === member);
      if (m === undefined) throw new Error(`${member.name}: not a member of this cluster`);
      if (m.relay === null) throw new Error('isolate: start the cluster with peerRelays');
      m.isolated = true;
      // Inbound: every other member's connections to it (the streams it writes to
      // them, what they send it over pipelines).
      m.relay.cut();
      // Outbound: what it dials to the others (the streams it reads from them, its
      // pipelines, lease renewals forwarded to the leader); the others still reach
      // each other through these relays.
      for (const o of members) if (o !== m) o.relay!.cutFrom(m.proc.pid!);
    },
    call,
    keys: (prefix) => keysUnder(call, prefix),
  };
  // A member that exits at start (its port taken between freePort and etcd's
  // bind: "address already in use") starts again on other ports.
  await until(
    async () => {
      for (const m of members) {
        if (m.alive) continue;
        if (m.starts >= 3) throw new Error(`etcd member ${m.name} exited at start ${m.starts} times; last: ${lastLine(m.proc)}`);
        await m.spawn();
      }
      return (await Promise.all(members.map((m) => healthy(m.url)))).every(Boolean);
    },
    30_000,
    'every etcd member healthy',
  );
  await until(async () => (await cluster.leader()) !== null && members.every((m) => m.id !== ''), 10_000, 'an etcd leader');
  return cluster;
}
