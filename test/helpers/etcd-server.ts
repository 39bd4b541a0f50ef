/**
 * A real etcd (Debian's etcd-server, 3.4) for the real-peer tier: one member on
 * loopback ports of its own, data in a temp dir, its own process group killed at
 * teardown (also when the test times out). Progress notices every second, so a
 * silent watch is noticed quickly. `etcdCluster`: three such members in one
 * cluster, each with its own data dir and process group, a way to find the
 * leader and to kill one member.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { freePort, httpGet, killGroupOnExit, until } from './net.js';

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

async function healthy(url: string): Promise<boolean> {
  try {
    return (await httpGet(`${url}/health`)).body.includes('true');
  } catch {
    return false;
  }
}

/** One etcd member in a process group of its own, killed when this test process ends. */
function spawnMember(name: string, dataDir: string, clientUrl: string, peerUrl: string, initialCluster: string, token: string): ChildProcess {
  const p = spawn(
    'etcd',
    [
      '--name', name,
      '--data-dir', dataDir,
      '--listen-client-urls', clientUrl,
      '--advertise-client-urls', clientUrl,
      '--listen-peer-urls', peerUrl,
      '--initial-advertise-peer-urls', peerUrl,
      '--initial-cluster', initialCluster,
      '--initial-cluster-token', token,
      '--initial-cluster-state', 'new',
      '--experimental-watch-progress-notify-interval', '1s',
      '--log-level', 'error',
    ],
    { stdio: ['ignore', 'ignore', 'ignore'], detached: true },
  );
  killGroupOnExit(p);
  return p;
}

/**
 * A data directory, removed at teardown and when the test process ends: etcd
 * preallocates 128 MB of WAL per member, and test runs add up (a disk filled here).
 */
const dataDirs = new Set<string>();
function dataDir(t: Test, prefix: string): string {
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
  const dir = dataDir(t, 'berth-etcd-');
  const url = `http://127.0.0.1:${clientPort}`;
  let proc: ChildProcess | null = null;
  t.teardown(() => (proc === null ? undefined : killMember(proc)));
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
  /** SIGKILLs the member's process group; resolves once it exited. */
  kill(): Promise<void>;
}

export interface EtcdCluster {
  readonly members: readonly EtcdMember[];
  /** Every member's client URL, in member order. */
  readonly urls: readonly string[];
  /**
   * The leader, when every live member that answers names the same live one;
   * null while there is none (an election) or they disagree.
   */
  leader(): Promise<EtcdMember | null>;
  /** A v3 JSON gateway call on the first live member that answers. */
  call(path: string, body: unknown): Promise<Record<string, unknown>>;
  keys(prefix: string): Promise<string[]>;
}

interface Status {
  readonly id: string;
  readonly leader: string;
}

async function status(url: string): Promise<Status | null> {
  try {
    const r = await gateway(url, '/v3/maintenance/status', {}, 1000);
    const header = (r['header'] ?? {}) as Record<string, unknown>;
    return { id: String(header['member_id']), leader: String(r['leader'] ?? '0') };
  } catch {
    return null;
  }
}

/** A cluster of `size` members (three by default) on loopback ports; up (a leader elected) when it resolves. */
export async function etcdCluster(t: Test, size = 3): Promise<EtcdCluster> {
  const dir = dataDir(t, 'berth-etcd-cluster-');
  const specs: { name: string; url: string; peer: string }[] = [];
  for (let i = 0; i < size; i++) specs.push({ name: `m${i}`, url: `http://127.0.0.1:${await freePort()}`, peer: `http://127.0.0.1:${await freePort()}` });
  const initial = specs.map((s) => `${s.name}=${s.peer}`).join(',');
  const token = `berth-${process.pid}-${specs[0]!.url.split(':').pop()}`;
  const members = specs.map((s) => {
    const proc = spawnMember(s.name, join(dir, s.name), s.url, s.peer, initial, token);
    let id = '';
    const m = {
      name: s.name,
      url: s.url,
      proc,
      get id() {
        return id;
      },
      set id(v: string) {
        id = v;
      },
      get alive() {
        return proc.exitCode === null && proc.signalCode === null;
      },
      kill: () => killMember(proc),
    };
    return m;
  });
  t.teardown(() => Promise.all(members.map((m) => m.kill())).then(() => undefined));

  const call = async (path: string, body: unknown): Promise<Record<string, unknown>> => {
    let last: unknown = new Error('no live etcd member');
    for (const m of members) {
      if (!m.alive) continue;
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
    urls: members.map((m) => m.url),
    async leader() {
      const live = members.filter((m) => m.alive);
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
    call,
    keys: (prefix) => keysUnder(call, prefix),
  };
  await until(async () => (await Promise.all(members.map((m) => healthy(m.url)))).every(Boolean), 30_000, 'every etcd member healthy');
  await until(async () => (await cluster.leader()) !== null && members.every((m) => m.id !== ''), 10_000, 'an etcd leader');
  return cluster;
}
