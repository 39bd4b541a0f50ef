/**
 * A berth whose etcd watch is on a member cut off from the rest of its cluster
 * (a real three-member etcd 3.4, peer traffic through fault relays): the member
 * keeps running and answering, and keeps sending progress notices over a view
 * that no longer moves. berth asks for a leader on its watch
 * (Grpc-Metadata-hasleader), so the member ends the stream once it has lost
 * its leader; berth reads the majority and sees what changed there.
 *
 * Hosts: node-a (127.0.0.2) and node-b (127.0.0.3), one static endpoint each
 * answering its name (ttl 2 s, progress 1 s); node-b lists the member to be cut
 * off first (its watch, its keep-alives are there), node-a the two others first.
 *
 * Measured (2 CPUs, 14 runs, 15-17 s each): the member has no leader 0.8-1.8 s
 * after the cut; it ends node-b's watch 2.8-4.6 s after the cut (3 election
 * timeouts without a leader); node-a's endpoint leaves node-b's pool 2.3-3.4 s
 * after node-a left (3.4-5.2 s after the cut). Without the header the watch goes
 * on (a notice every second, node-b says its view is current) and node-b keeps
 * node-a's endpoint: the test fails after 20 s. node-b's lease expires 2.9-3.3 s
 * after the cut (a keep-alive held 3 s by the member, TTL 2 s); it registers
 * again 0.5 s later through the majority.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { etcdCluster } from '../helpers/etcd-server.js';
import { answers, ask, etcdHost, pool, type EtcdHost } from '../helpers/etcd-hosts.js';
import { httpGet, until, type LogLine } from '../helpers/net.js';

type Host = EtcdHost;

/** One "host", registered through `etcd` (in that order), watching with progress notices every second. */
const host = (t: Test, etcd: readonly string[], id: string, addr: string, name: string): Promise<Host> => etcdHost(t, { etcd, id, addr, name, progressInterval: '1s' });

/** What a connection through the host's listener answers ('' for a failed or empty one). */
const askHost = (h: Host): Promise<string> => ask(h.addr, h.port);

/** Connects that `h` retried on another endpoint (berth_retries_total, service web, any reason). */
async function retries(h: Host): Promise<number> {
  const body = (await httpGet(`http://127.0.0.1:${h.admin}/metrics`)).body;
  let n = 0;
  for (const m of body.matchAll(/^berth_retries_total\{([^}]*)\} (\S+)$/gm)) if (m[1]!.includes('service="web"')) n += Number(m[2]);
  return n;
}

/** How long the host has served other hosts' endpoints from its last known state (0: current). */
async function staleSeconds(h: Host): Promise<number> {
  const m = /^berth_registry_stale_seconds\{registry="etcd"\} (\S+)$/m.exec((await httpGet(`http://127.0.0.1:${h.admin}/metrics`)).body);
  if (!m) throw new Error(`${h.id}: no berth_registry_stale_seconds`);
  return Number(m[1]);
}

/** The host's log lines from index `from` on. */
const since = (h: Host, from: number): LogLine[] => h.berth.logs.slice(from);

/** When `l` was logged, in ms after `from` (NaN: no line). */
const msAfter = (from: number, l: LogLine | undefined): number => (l === undefined ? NaN : Date.parse(String(l['time'])) - from);

/** The lease id on a host's key (null: no key). */
async function hostLease(call: (path: string, body: unknown) => Promise<Record<string, unknown>>, id: string): Promise<string | null> {
  const r = await call('/v3/kv/range', { key: Buffer.from(`/berth/v1/hosts/${id}`).toString('base64') });
  const kv = ((r['kvs'] ?? []) as { lease?: string }[])[0];
  return kv === undefined ? null : (kv.lease ?? '0');
}

/** Every key a set of hosts should have written: one entry per endpoint, one host key per host. */
const keysOf = (...hosts: Host[]): string[] => hosts.flatMap((h) => [`/berth/v1/endpoints/web/${h.id}/127.0.0.1%3A${h.endpoint.port}`, `/berth/v1/hosts/${h.id}`]).sort();

t.test('the watch on a member cut off from its cluster ends (no leader): node-b reads the majority and drops node-a when it leaves', async (t) => {
  const cluster = await etcdCluster(t, 3, { peerRelays: true });
  const leader = (await cluster.leader())!;
  // A follower: the two others keep their leader, no election among them.
  const cut = cluster.members.find((m) => m !== leader)!;
  const others = cluster.members.filter((m) => m !== cut).map((m) => m.url);
  const a = await host(t, [...others, cut.url], 'node-a', '127.0.0.2', 'a');
  const b = await host(t, [cut.url, ...others], 'node-b', '127.0.0.3', 'b');
  await until(async () => (await answers(b)).includes('a') && (await answers(a)).includes('b'), 10_000, 'one pool across both hosts');
  const bLease = await hostLease(cluster.call, b.id);
  t.ok(bLease, "node-b's host key has a lease");
  // A quiet watch first: etcd skips the progress notice after an event (a gap of
  // up to two of its ticks, 1.0-1.1 s each), which node-b's silence timer (2 s)
  // can take for a dead watch; with no event, a notice every tick.
  await sleep(3000);
  const bMark = b.berth.logs.length;

  // Connections through node-b, all along; when each failed one was open.
  const loop = { run: true, total: 0, failed: [] as { from: number; to: number }[], answers: new Map<string, number>() };
  const loops = (async () => {
    while (loop.run) {
      const from = Date.now();
      const got = await askHost(b);
      loop.total++;
      if (got === '') loop.failed.push({ from, to: Date.now() });
      loop.answers.set(got, (loop.answers.get(got) ?? 0) + 1);
      await sleep(20);
    }
  })();
  // Also when an assertion below throws.
  t.teardown(() => {
    loop.run = false;
    return loops;
  });

  cluster.isolate(cut);
  const cutAt = Date.now();
  const at = (l: LogLine | undefined) => msAfter(cutAt, l);
  /** What node-b logged about etcd since the cut: [ms after the cut, message, error]. */
  const etcdLog = () =>
    JSON.stringify(
      since(b, bMark)
        .filter((l) => l['module'] === 'registry' || /etcd/.test(l.msg))
        .map((l) => [at(l), l.msg, l['err']]),
    );
  await until(async () => (await cut.status())?.leader === '0', 10_000, `${cut.name} without a leader`);
  const leaderlessMs = Date.now() - cutAt;
  const majority = await cluster.leader();
  t.ok(majority !== null && majority !== cut, `the two others keep a leader (${majority?.name})`);
  t.ok((await cut.status()) !== null, `${cut.name} still answers its clients`);
  t.comment(`${cut.name} cut off; it has no leader after ${leaderlessMs} ms (still running, still answering)`);

  // node-a leaves through the majority: its lease revoked, its endpoint gone with it.
  a.berth.kill('SIGTERM');
  t.equal(await a.berth.exited, 0, 'node-a stopped');
  const closedAt = Date.now();
  a.endpoint.close();
  const leftAt = Date.now();
  t.notOk((await cluster.keys('/berth/v1/')).some((k) => k.includes(a.id)), "node-a's keys gone from the majority");

  const dropped = await until(() => since(b, bMark).some((l) => l.msg === 'endpoint removed' && l['endpoint'] === a.remoteId), 20_000).then(
    () => true,
    () => false,
  );
  const droppedMs = Date.now() - leftAt;
  if (!dropped) {
    // The watch on the cut-off member goes on: progress notices over its frozen view.
    t.fail(`node-b still sends to node-a's endpoint ${droppedMs} ms after node-a left: its watch on ${cut.name} never ended; it says its view is ${(await staleSeconds(b)) === 0 ? 'current' : 'stale'}; etcd log: ${etcdLog()}`);
    return;
  }
  // The member ends the stream with {"error":{"message":"etcdserver: no leader"}}
  // and no newline after it: berth reports the stream's end.
  const ended = since(b, bMark).find((l) => /etcd watch (lost|silent)/.test(l.msg));
  t.match(ended, { msg: /etcd watch lost/, err: /no leader|watch stream ended/ }, `node-b's watch on ${cut.name} ended by the member (no leader), not by node-b's silence timer`);
  t.comment(`node-b's watch ended ${at(ended)} ms after the cut; node-a's endpoint out of node-b's pool ${droppedMs} ms after node-a left (${Date.now() - cutAt} ms after the cut)`);

  t.same(await pool(b), [`127.0.0.1:${b.endpoint.port}`], "node-b's pool: its own endpoint only");
  // While node-b still had it, connects to node-a's gone endpoint were refused and retried.
  const retried = await retries(b);
  t.ok(retried > 0, `node-b retried ${retried} connects refused by node-a's gone endpoint`);
  t.same(await answers(b, 30), ['b'], 'node-b answers with its own endpoint');
  t.equal(await retries(b), retried, "node-b no longer tries node-a's endpoint (no retry in 30 connections)");

  // node-b's registration: its keep-alives move to a member of the majority.
  await sleep(Math.max(0, cutAt + 3 * 2000 - Date.now()));
  loop.run = false;
  await loops;
  await until(async () => (await cluster.keys('/berth/v1/')).join() === keysOf(b).join(), 5000).catch(() => {});
  t.same(await cluster.keys('/berth/v1/'), keysOf(b), "node-b's keys in etcd (written through the majority)");
  const expired = since(b, bMark).find((l) => /registry lease expired/.test(l.msg));
  t.comment(expired ? `node-b's lease expired ${at(expired)} ms after the cut; registered again ${at(since(b, bMark).find((l) => l.msg === 'registered in etcd'))} ms after` : "node-b's lease lived on");
  // A keep-alive that the cut-off member holds is given up within a third of the
  // TTL, and the next member renews the lease in time.
  t.equal(await hostLease(cluster.call, b.id), bLease, "node-b's host key: the same lease, three TTLs after the cut");
  t.notOk(expired, "node-b's lease never expired");
  t.comment(`${loop.total} connections through node-b: ${JSON.stringify(Object.fromEntries(loop.answers))}`);
  // One that was on its way to node-a's endpoint as it closed may fail (reset
  // once connected: not retried); every later one refused there is retried.
  const failed = loop.failed.filter((f) => !(f.from <= closedAt && f.to >= closedAt));
  t.same(failed, [], `no connection through node-b failed, but for ${loop.failed.length - failed.length} open as node-a's endpoint closed (refused connects to it retried on node-b's)`);
  t.comment(`node-b etcd log: ${etcdLog()}`);
});
