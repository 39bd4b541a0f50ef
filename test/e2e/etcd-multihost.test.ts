/**
 * Several hosts through a real etcd (3.4): berth processes on their own loopback
 * addresses (127.0.0.2, 127.0.0.3), each with endpoints of its own. An endpoint of
 * host A is served by host B's listener; SIGTERM takes A's entries away in one
 * revision; a berth SIGSTOPped loses its entries when its lease expires and gets
 * them back, without duplicates, on SIGCONT; a second berth with a taken host id
 * exits 2 naming the holder; etcd down at start: the local pool serves, and the
 * host registers when etcd comes up.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { etcdServer } from '../helpers/etcd-server.js';
import { ask, etcdHost, type EtcdHost } from '../helpers/etcd-hosts.js';
import { freePort, httpGet, listenerPort, startBerth, until } from '../helpers/net.js';

const dir = mkdtempSync(join(tmpdir(), 'berth-etcd-e2e-'));

/** One "host": a berth on `addr` with one static endpoint answering `name`. */
const host = (t: Test, etcdUrl: string, id: string, addr: string, name: string, extra: string[] = []): Promise<EtcdHost> => etcdHost(t, { etcd: [etcdUrl], id, addr, name, extra });

/** The answers of `n` connections, as a set. */
async function answers(addr: string, port: number, n = 12): Promise<Set<string>> {
  const out = new Set<string>();
  for (let i = 0; i < n; i++) out.add(await ask(addr, port));
  return out;
}

const metric = async (admin: number, re: RegExp): Promise<boolean> => re.test((await httpGet(`http://127.0.0.1:${admin}/metrics`)).body);

t.test('two hosts, one pool: A\'s endpoint behind B\'s listener; SIGTERM takes A away in one revision', async (t) => {
  const etcd = await etcdServer(t);
  await etcd.start();
  const a = await host(t, etcd.url, 'node-a', '127.0.0.2', 'a');
  const b = await host(t, etcd.url, 'node-b', '127.0.0.3', 'b');
  const bPort = listenerPort(b.berth, 'web');
  await until(async () => (await answers('127.0.0.3', bPort)).has('a'), 10_000, "node-a's endpoint served by node-b");
  t.same([...(await answers('127.0.0.3', bPort))].sort(), ['a', 'b'], 'one pool across hosts');
  t.same(await etcd.keys('/berth/'), [`/berth/v1/endpoints/web/node-a/127.0.0.1%3A${a.endpoint.port}`, `/berth/v1/endpoints/web/node-b/127.0.0.1%3A${b.endpoint.port}`, '/berth/v1/hosts/node-a', '/berth/v1/hosts/node-b']);
  t.ok(await metric(b.admin, /berth_registry_connected\{registry="etcd"\} 1/));
  t.ok(await metric(b.admin, /berth_registry_published_endpoints\{registry="etcd"\} 1/));
  t.ok(await metric(b.admin, /berth_registry_remote_endpoints\{registry="etcd",host="node-a"\} 1/));
  const services = JSON.parse((await httpGet(`http://127.0.0.1:${b.admin}/api/v1/services`)).body) as unknown;
  t.match(JSON.stringify(services), /web-?.*@node-a|@node-a/, 'the admin API shows the remote endpoint with its host');

  const before = Number(((await etcd.call('/v3/kv/range', { key: Buffer.from('/').toString('base64') }))['header'] as { revision: string }).revision);
  a.berth.kill('SIGTERM');
  await a.berth.exited;
  const after = Number(((await etcd.call('/v3/kv/range', { key: Buffer.from('/').toString('base64') }))['header'] as { revision: string }).revision);
  t.same(await etcd.keys('/berth/v1/'), [`/berth/v1/endpoints/web/node-b/127.0.0.1%3A${b.endpoint.port}`, '/berth/v1/hosts/node-b'], "node-a's keys gone");
  t.equal(after, before + 1, 'in one revision (the lease revoked)');
  await until(async () => !(await answers('127.0.0.3', bPort)).has('a'), 10_000, 'node-a gone from node-b');
  t.pass("node-b stopped sending to node-a's endpoint");
});

t.test('a host id held by a live berth: exit 2 naming the holder', async (t) => {
  const etcd = await etcdServer(t);
  await etcd.start();
  await host(t, etcd.url, 'node-a', '127.0.0.2', 'a');
  await until(async () => (await etcd.keys('/berth/v1/hosts/')).length === 1, 10_000, 'node-a registered');
  const admin = await freePort();
  const file = join(dir, `dup-${admin}.json`);
  writeFileSync(file, JSON.stringify({ listeners: [{ name: 'web', bind: '127.0.0.4:0', service: 'web' }], services: { web: { endpoints: ['127.0.0.1:9'] } }, discovery: { etcd: { endpoints: [etcd.url], host: 'node-a', ttl: '2s' } }, admin: { bind: `127.0.0.1:${admin}` } }));
  const dup = await startBerth(['-c', file], { waitStarted: false });
  t.teardown(() => dup.kill('SIGKILL'));
  t.equal(await dup.exited, 2);
  t.match(dup.stderr, /host id "node-a" is held in etcd by another berth \(pid \d+ on /);
});

t.test('lease expiry: a SIGSTOPped host leaves the other hosts\' pools; SIGCONT brings it back without duplicates', async (t) => {
  const etcd = await etcdServer(t);
  await etcd.start();
  const a = await host(t, etcd.url, 'node-a', '127.0.0.2', 'a');
  const b = await host(t, etcd.url, 'node-b', '127.0.0.3', 'b');
  const bPort = listenerPort(b.berth, 'web');
  await until(async () => (await answers('127.0.0.3', bPort)).has('a'), 10_000, 'node-a in node-b\'s pool');
  process.kill(a.berth.pid, 'SIGSTOP');
  const stoppedAt = Date.now();
  await until(async () => (await etcd.keys('/berth/v1/')).every((k) => !k.includes('node-a')), 15_000, "node-a's lease expired");
  await until(async () => await metric(b.admin, /berth_registry_remote_endpoints\{registry="etcd",host="node-a"\}/).then((x) => !x), 5000, 'node-b dropped node-a');
  t.comment(`node-a gone from node-b ${Date.now() - stoppedAt} ms after SIGSTOP (lease TTL 2 s)`);
  t.same([...(await answers('127.0.0.3', bPort))], ['b']);
  process.kill(a.berth.pid, 'SIGCONT');
  await until(async () => (await etcd.keys('/berth/v1/')).filter((k) => k.includes('node-a')).length === 2, 15_000, 'node-a registered again');
  await until(async () => (await answers('127.0.0.3', bPort)).has('a'), 10_000, 'node-a back in node-b\'s pool');
  t.equal((await etcd.keys('/berth/v1/endpoints/')).length, 2, 'no duplicates');
});

t.test('etcd down at start: the local pool serves; the host registers and subscribes when etcd comes up', async (t) => {
  const port = await freePort();
  const etcd = await etcdServer(t, port);
  const a = await host(t, etcd.url, 'node-a', '127.0.0.2', 'a');
  const aPort = listenerPort(a.berth, 'web');
  t.same([...(await answers('127.0.0.2', aPort, 3))], ['a'], 'serving without etcd');
  t.ok(await metric(a.admin, /berth_registry_connected\{registry="etcd"\} 0/));
  t.match((await httpGet(`http://127.0.0.1:${a.admin}/readyz`)).body, /etcd unreachable/, 'readiness says so');
  await etcd.start();
  const b = await host(t, etcd.url, 'node-b', '127.0.0.3', 'b');
  await until(async () => (await etcd.keys('/berth/v1/hosts/')).length === 2, 40_000, 'node-a registered once etcd answered');
  await until(async () => (await answers('127.0.0.2', aPort)).has('b'), 40_000, "node-b's endpoint in node-a's pool");
  t.ok(await metric(a.admin, /berth_registry_connected\{registry="etcd"\} 1/));
  void b;
});

t.test('the JSON-gateway client against etcd 3.4: lease, put-if-unchanged, paged range, watch events and progress, compaction, revoke', async (t) => {
  const { HttpEtcdClient } = await import('../../src/registry/etcd-client.js');
  const etcd = await etcdServer(t);
  await etcd.start();
  const c = new HttpEtcdClient(['http://127.0.0.1:1', etcd.url], undefined);
  t.teardown(() => c.close());
  const lease = await c.grant(5);
  t.ok(Number(lease) > 0, 'a lease (an unreachable first endpoint skipped)');
  t.equal(await c.keepAlive(lease), 5);
  t.same(await c.putIf('/t/host', 'one', lease, 0), { created: true }, 'absent: created');
  const again = await c.putIf('/t/host', 'two', '0', 0);
  t.match(again, { created: false, holder: { value: 'one', lease } }, 'present: the holder');
  const seen = again.created ? 0 : again.holder.modRevision;
  t.match(await c.putIf('/t/host', 'three', lease, seen + 1), { created: false, holder: { value: 'one' } }, 'another mod revision: refused');
  t.same(await c.putIf('/t/host', 'three', lease, seen), { created: true }, 'as last seen: taken over');
  await c.put('/t/e/1', 'x', lease);
  const r = await c.range('/t/');
  t.same(r.kvs.map((k) => k.key), ['/t/e/1', '/t/host']);
  // Read in pages, every page at the first one's revision.
  const paged = new HttpEtcdClient([etcd.url], undefined, 3000, 2);
  t.teardown(() => paged.close());
  for (let i = 0; i < 5; i++) await c.put(`/t/p/${i}`, String(i), lease);
  const all = await paged.range('/t/p/');
  t.same(all.kvs.map((k) => k.value), ['0', '1', '2', '3', '4'], 'five keys in pages of two');
  t.equal(all.revision, (await c.range('/t/p/')).revision);
  for (let i = 0; i < 5; i++) await c.delete(`/t/p/${i}`);
  const events: string[] = [];
  let progress = 0;
  const w = c.watch('/t/e/', r.revision + 1, {
    onEvents: (ev) => {
      if (ev.length === 0) progress++;
      for (const e of ev) events.push(`${e.type} ${e.key} ${e.value}`);
    },
    onCompacted: () => t.fail('not compacted'),
    onError: (err) => t.fail(err.message),
  });
  await c.put('/t/e/2', 'y', lease);
  await c.delete('/t/e/1');
  await until(() => events.length === 2, 5000, 'two events');
  t.same(events, ['put /t/e/2 y', 'delete /t/e/1 ']);
  await until(() => progress > 0, 5000, 'a progress notice');
  w.cancel();
  await etcd.call('/v3/kv/compaction', { revision: String((await c.range('/t/')).revision) });
  let compacted = 0;
  c.watch('/t/e/', r.revision, { onEvents: () => {}, onCompacted: (rev) => (compacted = rev), onError: (err) => t.fail(err.message) });
  await until(() => compacted > 0, 5000, 'compaction reported');
  t.ok(compacted > r.revision);
  await c.revoke(lease);
  t.same((await c.range('/t/')).kvs, [], 'revoked: the lease\'s keys gone');
  t.equal(await c.keepAlive(lease), 0, 'a gone lease keeps no TTL');
  await c.revoke(lease);
  t.pass('revoking a gone lease is not an error');
});

t.test('--workers: the primary registers and subscribes; its workers serve other hosts\' endpoints; SIGTERM revokes in one revision', async (t) => {
  const etcd = await etcdServer(t);
  await etcd.start();
  const a = await host(t, etcd.url, 'node-a', '127.0.0.2', 'a', ['--workers', '2']);
  const b = await host(t, etcd.url, 'node-b', '127.0.0.3', 'b');
  const aPort = listenerPort(a.berth, 'web');
  const bPort = listenerPort(b.berth, 'web');
  await until(async () => (await answers('127.0.0.3', bPort)).has('a'), 10_000, "node-a's endpoint (registered by its primary) served by node-b");
  await until(async () => (await answers('127.0.0.2', aPort)).has('b'), 10_000, "node-b's endpoint served by node-a");
  // node-a's own endpoint goes: a worker without node-b's endpoint would have nothing
  // to try next. 48 connections, spread over both workers by the kernel, all answered.
  await new Promise((r) => a.endpoint.close(r));
  const all = await answers('127.0.0.2', aPort, 48);
  t.same([...all], ['b'], "every worker has node-b's endpoint");
  t.same(await etcd.keys('/berth/v1/hosts/'), ['/berth/v1/hosts/node-a', '/berth/v1/hosts/node-b'], 'one host key for the whole process');
  const revision = async () => Number(((await etcd.call('/v3/kv/range', { key: Buffer.from('/').toString('base64') }))['header'] as { revision: string }).revision);
  const before = await revision();
  a.berth.kill('SIGTERM');
  await a.berth.exited;
  t.equal(await revision(), before + 1, 'gone in one revision');
  t.same(await etcd.keys('/berth/v1/hosts/'), ['/berth/v1/hosts/node-b']);
});
