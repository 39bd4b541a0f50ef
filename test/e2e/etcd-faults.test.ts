/**
 * Partitions between berth and a real etcd (3.4): loopback "hosts" (berth on
 * 127.0.0.2, .3, .4, each with one static endpoint answering its name), one of
 * them reaching etcd only through a fault relay that black-holes, cuts and
 * restores its link while the others reach etcd directly.
 *
 * - One host partitioned from etcd only: the others drop it when its lease
 *   expires; it keeps serving its own endpoint and the others' (stale beats
 *   empty); restored, it registers again, without duplicates.
 * - Compaction during a cut: what changed meanwhile (a host gone, one new) is
 *   right once the cut host reads etcd again, though the revisions it missed are
 *   compacted away.
 * - The leader of a three-member cluster killed: no endpoint leaves any pool,
 *   no connection fails, and the hosts' leases survive (keep-alives move to
 *   another member).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { etcdCluster, etcdServer } from '../helpers/etcd-server.js';
import { faultRelay } from '../helpers/fault-relay.js';
import { answers, ask, etcdHost, pool, type EtcdHost } from '../helpers/etcd-hosts.js';
import { httpGet, until, type LogLine } from '../helpers/net.js';

type Host = EtcdHost;

/** One "host", registered through `etcd` (every URL given), watching with progress notices every second. */
const host = (t: Test, etcd: readonly string[], id: string, addr: string, name: string): Promise<Host> => etcdHost(t, { etcd, id, addr, name, progressInterval: '1s' });

/** What a connection through the host's listener answers ('' for a failed or empty one). */
const askHost = (h: Host): Promise<string> => ask(h.addr, h.port);

const metric = async (h: Host, re: RegExp): Promise<boolean> => re.test((await httpGet(`http://127.0.0.1:${h.admin}/metrics`)).body);

/** How long the host has served other hosts' endpoints from its last known state (0: current). */
async function staleSeconds(h: Host): Promise<number> {
  const m = /^berth_registry_stale_seconds\{registry="etcd"\} (\S+)$/m.exec((await httpGet(`http://127.0.0.1:${h.admin}/metrics`)).body);
  if (!m) throw new Error(`${h.id}: no berth_registry_stale_seconds`);
  return Number(m[1]);
}

/** The host's log lines from index `from` on. */
const since = (h: Host, from: number): LogLine[] => h.berth.logs.slice(from);

/**
 * What `h` logged from index `from` on about `other`'s endpoint (added, updated
 * (out: ...), draining, removed), or about service web left without endpoints: a
 * steady pool logs none of it.
 */
const flaps = (h: Host, from: number, other: Host): LogLine[] =>
  since(h, from).filter((l) => l['endpoint'] === other.remoteId || (l['service'] === 'web' && /no usable endpoint|panic/.test(l.msg)));

/** The lease id on a host's key (null: no key). */
async function hostLease(call: (path: string, body: unknown) => Promise<Record<string, unknown>>, id: string): Promise<string | null> {
  const r = await call('/v3/kv/range', { key: Buffer.from(`/berth/v1/hosts/${id}`).toString('base64') });
  const kv = ((r['kvs'] ?? []) as { lease?: string }[])[0];
  return kv === undefined ? null : (kv.lease ?? '0');
}

/** Every key a set of hosts should have written: one entry per endpoint, one host key per host. */
const keysOf = (...hosts: Host[]): string[] => hosts.flatMap((h) => [`/berth/v1/endpoints/web/${h.id}/127.0.0.1%3A${h.endpoint.port}`, `/berth/v1/hosts/${h.id}`]).sort();

const revisionOf = async (call: (path: string, body: unknown) => Promise<Record<string, unknown>>): Promise<number> =>
  Number(((await call('/v3/kv/range', { key: Buffer.from('/').toString('base64') }))['header'] as { revision: string }).revision);

t.test('one host partitioned from etcd only (black hole, then cut): the others drop it at lease expiry, it serves stale, it comes back without duplicates', async (t) => {
  const etcd = await etcdServer(t);
  await etcd.start();
  const relay = await faultRelay(t, { port: etcd.port });
  const a = await host(t, [relay.url], 'node-a', '127.0.0.2', 'a');
  const b = await host(t, [etcd.url], 'node-b', '127.0.0.3', 'b');
  await until(async () => (await answers(b)).includes('a') && (await answers(a)).includes('b'), 10_000, 'one pool across both hosts');
  const leaseBefore = await hostLease(etcd.call, a.id);
  t.ok(leaseBefore, "node-a's host key has a lease");

  const aMark = a.berth.logs.length;
  const bMark = b.berth.logs.length;
  relay.blackhole();
  const holedAt = Date.now();
  await until(async () => !(await etcd.keys('/berth/v1/')).some((k) => k.includes(a.id)), 15_000, "node-a's lease expired");
  const expiredMs = Date.now() - holedAt;
  await until(() => since(b, bMark).some((l) => l.msg === 'endpoint removed' && l['endpoint'] === a.remoteId), 5000, "node-b dropped node-a's endpoint");
  const droppedMs = Date.now() - holedAt;
  t.comment(`black hole: node-a's keys gone from etcd after ${expiredMs} ms, node-a's endpoint out of node-b's pool after ${droppedMs} ms (lease TTL 2 s)`);
  t.same(await answers(b), ['b'], "node-b no longer sends to node-a's endpoint");
  t.match(flaps(b, bMark, a), [{ msg: 'endpoint removed' }], 'the flap check sees it (the control for the leader test)');
  t.same(await etcd.keys('/berth/v1/'), keysOf(b), "only node-b's keys in etcd");

  // node-a has noticed (its watch went silent, its registration is lost) and still serves both.
  await until(() => since(a, aMark).some((l) => /etcd watch silent/.test(l.msg)), 10_000, "node-a's watch found silent");
  await until(() => metric(a, /berth_registry_connected\{registry="etcd"\} 0/), 10_000, 'node-a knows etcd is away');
  t.comment(`node-a noticed after ${Date.now() - holedAt} ms; ${relay.dropped} bytes dropped by the black hole`);
  t.ok((await staleSeconds(a)) > 0, 'node-a says its remote view is stale');
  t.same(await answers(a), ['a', 'b'], "stale beats empty: node-a serves its own endpoint and node-b's");

  const cutMark = a.berth.logs.length;
  relay.cut();
  const cutAt = Date.now();
  await until(() => since(a, cutMark).some((l) => /ECONNRESET|ECONNREFUSED|socket hang up/.test(String(l['err']))), 15_000, "node-a's etcd requests refused");
  t.comment(`cut: node-a's first refused request logged after ${Date.now() - cutAt} ms`);
  t.same(await answers(a), ['a', 'b'], 'cut: node-a still serves both');
  t.same(await answers(b), ['b'], 'cut: node-b still without node-a');

  relay.restore();
  const restoredAt = Date.now();
  await until(async () => (await etcd.keys('/berth/v1/')).filter((k) => k.includes(a.id)).length === 2, 40_000, 'node-a registered again');
  const registeredMs = Date.now() - restoredAt;
  await until(async () => (await answers(b)).includes('a'), 10_000, "node-a's endpoint back in node-b's pool");
  t.comment(`restore: node-a registered again after ${registeredMs} ms, served by node-b after ${Date.now() - restoredAt} ms`);
  t.same(await etcd.keys('/berth/v1/'), keysOf(a, b), 'no duplicates: one entry per endpoint, one host key per host');
  const leaseAfter = await hostLease(etcd.call, a.id);
  t.not(leaseAfter, leaseBefore, 'node-a holds a new lease (the old one expired)');
  t.same(await answers(a), ['a', 'b'], 'node-a serves both');
  t.same(await pool(a), [`127.0.0.1:${a.endpoint.port}`, b.remoteId].sort(), "node-a's pool: its endpoint and node-b's, once each");
  t.same(await pool(b), [a.remoteId, `127.0.0.1:${b.endpoint.port}`].sort(), "node-b's pool: its endpoint and node-a's, once each");
  await until(async () => (await staleSeconds(a)) === 0, 10_000, "node-a's remote view current again");
});

t.test('compaction during a cut: once restored, the cut host serves exactly what etcd holds (a host gone, a new one)', async (t) => {
  const etcd = await etcdServer(t);
  await etcd.start();
  const relay = await faultRelay(t, { port: etcd.port });
  const a = await host(t, [relay.url], 'node-a', '127.0.0.2', 'a');
  const b = await host(t, [etcd.url], 'node-b', '127.0.0.3', 'b');
  await until(async () => (await answers(a)).includes('b') && (await answers(b)).includes('a'), 10_000, 'one pool across both hosts');

  const aMark = a.berth.logs.length;
  const seenRevision = await revisionOf(etcd.call);
  relay.cut();
  const cutAt = Date.now();
  await until(() => since(a, aMark).some((l) => /etcd watch lost/.test(l.msg)), 10_000, "node-a's watch lost");

  const c = await host(t, [etcd.url], 'node-c', '127.0.0.4', 'c');
  b.berth.kill('SIGTERM');
  t.equal(await b.berth.exited, 0, 'node-b stopped');
  await until(async () => (await etcd.keys('/berth/v1/hosts/')).join() === `/berth/v1/hosts/${c.id}`, 15_000, 'etcd: node-c in, node-b out, node-a expired');
  t.same(await etcd.keys('/berth/v1/'), keysOf(c), "etcd holds node-c's keys only");
  t.same(await answers(a), ['a', 'b'], "cut: node-a still serves node-b's endpoint (the last known)");

  const revision = await revisionOf(etcd.call);
  await etcd.call('/v3/kv/compaction', { revision: String(revision), physical: true });
  const old = await etcd.call('/v3/kv/range', { key: Buffer.from('/berth/').toString('base64'), revision: String(seenRevision) });
  t.match(String(old['error'] ?? old['message']), /compacted/, `revisions ${seenRevision}..${revision - 1} compacted away`);

  relay.restore();
  const restoredAt = Date.now();
  await until(async () => (await answers(a)).join() === 'a,c', 40_000, "node-a serves node-c's endpoint and not node-b's");
  t.comment(`restore: node-a's view right after ${Date.now() - restoredAt} ms (cut for ${restoredAt - cutAt} ms)`);
  const how = since(a, aMark).find((l) => /compacted past the watch/.test(l.msg));
  t.comment(how ? 'node-a resumed a watch from a compacted revision and read everything again' : 'node-a read everything again on reconnect (a range, then a watch from its revision)');
  t.same(await pool(a), [`127.0.0.1:${a.endpoint.port}`, c.remoteId].sort(), "node-a's pool: its endpoint and node-c's, nothing of node-b");
  await until(async () => (await answers(c)).includes('a'), 40_000, 'node-a registered again, served by node-c');
  t.same(await etcd.keys('/berth/v1/'), keysOf(a, c), 'one entry per endpoint, one host key per host');
});

t.test('the leader of a three-member cluster killed: no endpoint flaps, no connection fails, leases survive', async (t) => {
  const cluster = await etcdCluster(t);
  const leader = (await cluster.leader())!;
  // The leader first: each berth's requests and watch start on the member that dies.
  const urls = [leader.url, ...cluster.urls.filter((u) => u !== leader.url)];
  const a = await host(t, urls, 'node-a', '127.0.0.2', 'a');
  const b = await host(t, urls, 'node-b', '127.0.0.3', 'b');
  await until(async () => (await answers(a)).includes('b') && (await answers(b)).includes('a'), 10_000, 'one pool across both hosts');
  const leases = { a: await hostLease(cluster.call, a.id), b: await hostLease(cluster.call, b.id) };
  t.ok(leases.a && leases.b, 'both hosts hold a lease');
  const aMark = a.berth.logs.length;
  const bMark = b.berth.logs.length;

  // Connections through each host, all along.
  const loop = { run: true, total: 0, failed: 0, remote: 0 };
  const through = async (h: Host, remote: string) => {
    while (loop.run) {
      const got = await askHost(h);
      loop.total++;
      if (got === '') loop.failed++;
      if (got === remote) loop.remote++;
      await sleep(5);
    }
  };
  const loops = Promise.all([through(b, 'a'), through(a, 'b')]);

  const killedAt = Date.now();
  await leader.kill();
  await until(async () => {
    const l = await cluster.leader();
    return l !== null && l !== leader;
  }, 15_000, 'a new leader');
  const electedAt = Date.now();
  const next = (await cluster.leader())!;
  t.comment(`leader ${leader.name} killed; ${next.name} leads after ${electedAt - killedAt} ms`);

  // Both hosts lost their watch (it was on the leader) and read etcd again.
  for (const h of [a, b]) {
    await until(() => since(h, h === a ? aMark : bMark).some((l) => /etcd watch lost/.test(l.msg)), 10_000, `${h.id}'s watch on the dead member lost`);
    await until(async () => (await staleSeconds(h)) === 0, 15_000, `${h.id}'s remote view current again`);
  }
  t.comment(`both hosts read etcd again ${Date.now() - killedAt} ms after the kill`);
  // Their watches are live on the members left: a new host is seen by both.
  const c = await host(t, cluster.urls.filter((u) => u !== leader.url), 'node-c', '127.0.0.4', 'c');
  await until(async () => (await answers(a)).includes('c') && (await answers(b)).includes('c'), 10_000, 'node-c seen by node-a and node-b');
  // The leases outlive their TTL (2 s) after the election: kept alive through another member.
  await until(async () => {
    for (const [id, lease] of [[a.id, leases.a], [b.id, leases.b]] as const) {
      const r = await cluster.call('/v3/lease/timetolive', { ID: lease });
      if (!(Number(r['TTL']) > 0)) throw new Error(`${id}'s lease ${lease} gone: ${JSON.stringify(r)}`);
    }
    return Date.now() - electedAt > 3 * 2000;
  }, 15_000, 'three lease TTLs after the election');
  loop.run = false;
  await loops;
  t.comment(`${loop.total} connections during the leader loss, ${loop.remote} of them to the other host's endpoint`);

  t.equal(await hostLease(cluster.call, a.id), leases.a, "node-a's host key: the same lease");
  t.equal(await hostLease(cluster.call, b.id), leases.b, "node-b's host key: the same lease");
  t.same(await cluster.keys('/berth/v1/'), keysOf(a, b, c), 'one entry per endpoint, one host key per host');
  t.equal(loop.failed, 0, 'no connection failed');
  t.ok(loop.remote > 0, "connections reached the other host's endpoint");
  t.same(flaps(b, bMark, a), [], "node-b's pool never lost node-a's endpoint (no removed/draining/out: line)");
  t.same(flaps(a, aMark, b), [], "node-a's pool never lost node-b's endpoint");
  const registry = (h: Host, from: number) => since(h, from).filter((l) => l['module'] === 'registry').map((l) => l.msg);
  t.comment(`node-a registry log: ${JSON.stringify(registry(a, aMark))}; node-b: ${JSON.stringify(registry(b, bMark))}`);
});
