/**
 * Registration and subscription against the in-memory etcd: the key layout and
 * entry codec, the publisher (lease, host claim, diff writes, reconcile, early
 * drain, reconnect, revoke) and the etcd provider (range + watch, own host
 * ignored, stale kept, compaction re-read, lease expiry).
 */
import t from 'tap';
import { seededRandom } from '../../src/core/random.js';
import { Flag, type EndpointSpec, type ProviderSnapshot } from '../../src/core/types.js';
import { EtcdProvider } from '../../src/discovery/etcd/provider.js';
import { prefixEnd } from '../../src/registry/etcd-client.js';
import { decodeEntry, encodeEntry, entryOf, RegistryKeys, specOf } from '../../src/registry/keys.js';
import { Publisher } from '../../src/registry/publisher.js';
import { ManualClock } from '../helpers/clock.js';
import { FakeEtcd } from '../helpers/etcd.js';
import { silent } from '../helpers/proxy.js';

const flush = async (): Promise<void> => {
  for (let i = 0; i < 30; i++) await new Promise((r) => setImmediate(r));
};
const keys = new RegistryKeys('/berth/');
/** Time moving a second at a time, the promises of each second settled before the next. */
const pass = async (clock: ManualClock, ms: number): Promise<void> => {
  for (let i = 0; i < ms; i += 1000) {
    clock.advance(Math.min(1000, ms - i));
    await flush();
  }
};
/** Time moving a second at a time until `done`, for `seconds` at most (the assertions after it say whether it came). */
const passUntil = async (clock: ManualClock, done: () => boolean, seconds: number): Promise<void> => {
  for (let i = 0; i < seconds && !done(); i++) {
    clock.advance(1000);
    await flush();
  }
};
const spec = (id: string, over: Partial<EndpointSpec> = {}): EndpointSpec => ({ id, host: '172.17.0.5', port: 80, weight: 1, source: 'docker', labels: { container: 'abcdef123456' }, ...over });

function publisher(etcd: FakeEtcd, clock: ManualClock, host: string, local: Map<string, { spec: EndpointSpec; flags: number; service: string }>) {
  return new Publisher({
    client: etcd.client(),
    keys,
    host,
    claim: { host, advertise: '192.0.2.10', hostname: 'box', pid: 42, since: '2026-12-02T00:00:00Z' },
    ttlSeconds: 10,
    desired: () => new Map([...local.values()].map((e) => [keys.endpoint(e.service, host, e.spec.id), encodeEntry(entryOf(e, '192.0.2.10'))])),
    log: silent,
    clock,
    random: seededRandom(1),
    claimRetryMs: 1000,
  });
}

t.test('keys: layout, percent-encoded segments, parse back', async (t) => {
  t.equal(keys.host('node-a'), '/berth/v1/hosts/node-a');
  const k = keys.endpoint('web/x', 'node-a', 'a b');
  t.equal(k, '/berth/v1/endpoints/web%2Fx/node-a/a%20b');
  t.same(keys.parseEndpoint(k), { service: 'web/x', host: 'node-a', endpoint: 'a b' });
  t.equal(keys.parseEndpoint('/berth/v1/endpoints/web/node-a'), null);
  t.equal(keys.parseEndpoint('/berth/v1/endpoints/web/node-a/x/y'), null);
  t.equal(keys.parseEndpoint('/berth/v1/endpoints/%E0%A4%A/h/e'), null, 'bad percent-encoding');
  t.equal(prefixEnd('/berth/').toString(), '/berth0');
});

t.test('entries: the address rule, state, health; decode refuses what is not an entry', async (t) => {
  const published = entryOf({ spec: spec('web-1', { hostPort: 8080 }), flags: 0 }, '192.0.2.10');
  t.match(published, { address: '192.0.2.10', port: 8080, state: 'ready', healthy: true, container: { name: 'web-1', id: 'abcdef123456' } });
  t.match(entryOf({ spec: spec('web-1', { hostPort: 8080 }), flags: 0 }, null), { address: '172.17.0.5', port: 80 }, 'no advertise: its own address');
  t.match(entryOf({ spec: spec('web-1'), flags: 0 }, '192.0.2.10'), { address: '172.17.0.5', port: 80 }, 'not published: its own address');
  t.match(entryOf({ spec: spec('web-1', { stopping: true }), flags: Flag.Stopping }, null), { state: 'draining' });
  t.match(entryOf({ spec: spec('web-1'), flags: Flag.ActiveUnhealthy }, null), { healthy: false });
  t.match(entryOf({ spec: spec('web-1'), flags: Flag.Outlier }, null), { healthy: true }, 'passive ejection stays local');
  t.equal(entryOf({ spec: spec('10.0.0.1:80', { source: 'static', labels: {} }), flags: 0 }, null).container, null);
  // A container's own check kind travels, so every host checks it alike.
  const grpcEntry = decodeEntry(encodeEntry(entryOf({ spec: spec('api-1', { healthType: 'grpc', healthPath: '/x' }), flags: 0 }, null)));
  t.ok(grpcEntry.ok && specOf('node-a', 'api-1', grpcEntry.entry).healthType === 'grpc' && specOf('node-a', 'api-1', grpcEntry.entry).healthPath === '/x');
  t.notOk(decodeEntry('{"address":"a","port":80,"weight":1,"state":"ready","healthy":true,"healthType":"dns"}').ok, 'a check kind of no label');
  const text = encodeEntry(published);
  const back = decodeEntry(text);
  t.ok(back.ok);
  if (back.ok) {
    t.same(back.entry, published);
    const s = specOf('node-a', 'web-1', back.entry);
    t.match(s, { id: 'web-1@node-a', host: '192.0.2.10', port: 8080, source: 'etcd', labels: { host: 'node-a' } });
    t.notOk(s.stopping);
    t.notOk(s.health);
  }
  const drained = decodeEntry(encodeEntry({ ...published, state: 'draining', healthy: false }));
  t.ok(drained.ok && specOf('b', 'x', drained.entry).stopping && specOf('b', 'x', drained.entry).health === 'unhealthy');
  for (const bad of ['', 'nope', '[]', '{"address":"a","port":0,"weight":1,"state":"ready","healthy":true}', '{"address":"a","port":80,"weight":1,"state":"gone","healthy":true}']) {
    t.notOk(decodeEntry(bad).ok, bad);
  }
});

t.test('publisher: one lease, the host key, entries written as they change, keep-alives write nothing, stop revokes all', async (t) => {
  const clock = new ManualClock();
  const etcd = new FakeEtcd(clock);
  const local = new Map([['a', { service: 'web', spec: spec('web-1'), flags: 0 }]]);
  const p = publisher(etcd, clock, 'node-a', local);
  await p.start();
  t.ok(p.connected);
  t.same(etcd.keys(), ['/berth/v1/endpoints/web/node-a/web-1', '/berth/v1/hosts/node-a']);
  const lease = etcd.kv.get('/berth/v1/hosts/node-a')!.lease;
  t.equal(etcd.kv.get('/berth/v1/endpoints/web/node-a/web-1')!.lease, lease, 'entries on the host lease');

  const writes = etcd.writes;
  await pass(clock, 30_000);
  t.equal(etcd.writes, writes, 'keep-alives write nothing');
  t.ok(etcd.leases.has(lease), 'lease kept alive');

  // Early drain: the container is being stopped.
  local.set('a', { service: 'web', spec: spec('web-1', { stopping: true }), flags: Flag.Stopping });
  p.changed();
  await flush();
  t.match(JSON.parse(etcd.kv.get('/berth/v1/endpoints/web/node-a/web-1')!.value), { state: 'draining' });
  local.delete('a');
  p.changed();
  await flush();
  t.same(etcd.keys('/berth/v1/endpoints/'), [], 'gone: deleted');

  local.set('b', { service: 'web', spec: spec('web-2'), flags: 0 });
  local.set('c', { service: 'api', spec: spec('api-1'), flags: 0 });
  p.changed();
  await flush();
  t.equal(etcd.keys('/berth/v1/endpoints/').length, 2);
  const rev = etcd.revision;
  await p.stop();
  t.same(etcd.keys(), [], 'stop: every key gone');
  t.equal(etcd.revision, rev + 1, 'in one revision');
});

t.test('publisher: reconcile deletes orphans of this host and writes what is missing; other hosts untouched', async (t) => {
  const clock = new ManualClock();
  const etcd = new FakeEtcd(clock);
  const other = etcd.client();
  const otherLease = await other.grant(10);
  await other.put(keys.endpoint('web', 'node-b', 'x'), '{}', otherLease);
  // Left behind by a crashed earlier run of node-a (no lease).
  await other.put(keys.endpoint('web', 'node-a', 'ghost'), '{}', '0');
  const local = new Map([['a', { service: 'web', spec: spec('web-1'), flags: 0 }]]);
  const p = publisher(etcd, clock, 'node-a', local);
  await p.start();
  t.same(etcd.keys('/berth/v1/endpoints/'), ['/berth/v1/endpoints/web/node-a/web-1', '/berth/v1/endpoints/web/node-b/x']);
  // A key deleted behind its back (registrator's missed-die class, in reverse): the 60 s reconcile writes it again.
  await other.delete(keys.endpoint('web', 'node-a', 'web-1'));
  await pass(clock, 60_000);
  t.ok(etcd.kv.has(keys.endpoint('web', 'node-a', 'web-1')));
  await p.stop();
});

t.test('publisher: a host id held by a live berth is refused after TTL + 1 s; a dead holder\'s key is taken back', async (t) => {
  const clock = new ManualClock();
  const etcd = new FakeEtcd(clock);
  const first = publisher(etcd, clock, 'node-a', new Map());
  await first.start();
  const second = publisher(etcd, clock, 'node-a', new Map());
  let err: unknown = null;
  const starting = second.start().catch((e: unknown) => (err = e));
  for (let i = 0; i < 12; i++) {
    await flush();
    clock.advance(1000);
  }
  await starting;
  t.match(err, { code: 'BERTH_ERR_HOST_ID', message: /pid 42 on box/ });
  t.equal(etcd.leases.size, 1, 'the refused one revoked its own lease');

  // The holder dies (no stop, no keep-alives): its lease expires, a restart takes the key.
  const holder = etcd.kv.get(keys.host('node-a'))!.lease;
  const third = publisher(etcd, clock, 'node-a', new Map([['a', { service: 'web', spec: spec('web-1'), flags: 0 }]]));
  await first.stop().catch(() => {});
  etcd.kv.set(keys.host('node-a'), { value: '{"pid":1}', lease: holder, modRevision: 1 });
  etcd.leases.set(holder, { ttl: 10, expiresAt: clock.now() + 5000 });
  let done = false;
  const restart = third.start().then(() => (done = true));
  for (let i = 0; i < 8 && !done; i++) {
    await flush();
    clock.advance(1000);
  }
  await restart;
  t.ok(third.connected);
  t.not(etcd.kv.get(keys.host('node-a'))!.lease, holder);
  await third.stop();
});

t.test('publisher: etcd down at start, then back: registers; a lease lost while away is replaced and everything rewritten', async (t) => {
  const clock = new ManualClock();
  const etcd = new FakeEtcd(clock);
  etcd.stop();
  const states: boolean[] = [];
  const local = new Map([['a', { service: 'web', spec: spec('web-1'), flags: 0 }]]);
  const p = new Publisher({
    client: etcd.client(),
    keys,
    host: 'node-a',
    claim: { host: 'node-a', advertise: null, hostname: 'box', pid: 1, since: '' },
    ttlSeconds: 10,
    desired: () => new Map([...local.values()].map((e) => [keys.endpoint(e.service, 'node-a', e.spec.id), encodeEntry(entryOf(e, null))])),
    log: silent,
    clock,
    random: seededRandom(2),
    onState: (c) => states.push(c),
  });
  await p.start();
  t.notOk(p.connected, 'start does not wait for etcd');
  clock.advance(5000);
  await flush();
  etcd.start();
  await passUntil(clock, () => p.connected, 40);
  t.ok(p.connected);
  t.equal(etcd.keys('/berth/v1/endpoints/').length, 1);
  // Away longer than the TTL: the lease (and the keys) expire; back, all is rewritten.
  etcd.stop();
  clock.advance(15_000);
  await flush();
  etcd.expire();
  t.same(etcd.keys(), []);
  etcd.start();
  await passUntil(clock, () => p.connected && etcd.keys().length === 2, 60);
  t.equal(etcd.keys().length, 2, 'host key and entry back');
  t.ok(states.includes(false) && states.at(-1) === true);
  await p.stop();
});

t.test('provider: other hosts joined, own entries ignored, draining and health carried, stale kept, compaction re-read, expiry drops', async (t) => {
  const clock = new ManualClock();
  const etcd = new FakeEtcd(clock);
  const b = publisher(etcd, clock, 'node-b', new Map([['x', { service: 'web', spec: spec('web-1', { host: '10.0.0.2' }), flags: 0 }]]));
  await b.start();
  const own = etcd.client();
  await own.put(keys.endpoint('web', 'node-a', 'mine'), encodeEntry(entryOf({ spec: spec('mine'), flags: 0 }, null)), '0');
  await own.put(keys.endpoint('web', 'node-c', 'junk'), 'not json', '0');
  const snaps: ProviderSnapshot[] = [];
  const perHost: ReadonlyMap<string, number>[] = [];
  const p = new EtcdProvider({ client: etcd.client(), keys, host: 'node-a', log: silent, onSnapshot: (s) => snaps.push(s), onRemote: (m) => perHost.push(m), clock, random: seededRandom(3), progressMs: 60_000 });
  await p.start();
  const ids = () => (snaps.at(-1)?.services.get('web') ?? []).map((s) => s.id).sort();
  t.same(ids(), ['web-1@node-b'], 'own host and unreadable entries skipped');
  t.match(p.skipped, [{ name: 'junk@node-c (web)', reason: /unreadable/ }]);
  t.same([...perHost.at(-1)!], [['node-b', 1]]);

  // Watch: a change on node-b arrives.
  const bLocal = new Map([['x', { service: 'web', spec: spec('web-1', { host: '10.0.0.2', stopping: true }), flags: Flag.Stopping }]]);
  const b2 = publisher(etcd, clock, 'node-b2', bLocal);
  await b2.start();
  await flush();
  const draining = snaps.at(-1)!.services.get('web')!.find((s) => s.id === 'web-1@node-b2');
  t.ok(draining?.stopping, 'draining on its host: stopping here');

  // etcd lost: the last known entries stay.
  etcd.stop();
  await flush();
  t.notOk(p.connected);
  t.ok(p.staleSince !== null);
  t.same(ids(), ['web-1@node-b', 'web-1@node-b2'], 'stale beats empty');
  // While away: node-b2 goes, and etcd compacts past the watch.
  etcd.start();
  await b2.stop();
  etcd.compact();
  etcd.stop();
  await pass(clock, 5000);
  etcd.start();
  await passUntil(clock, () => p.connected, 60);
  t.ok(p.connected);
  t.equal(p.staleSince, null);
  t.same(ids(), ['web-1@node-b'], 'the re-read drops what went while away');

  // node-b dies without a word: its lease expires, its entries go.
  clock.advance(11_000);
  etcd.expire();
  await flush();
  t.same(ids(), [], 'expired lease: gone');
  p.stop();
  await b.stop().catch(() => {});
});

t.test('provider: a watch silent for three progress intervals is reconnected (a gap of over two is still healthy)', async (t) => {
  const clock = new ManualClock();
  const etcd = new FakeEtcd(clock);
  const p = new EtcdProvider({ client: etcd.client(), keys, host: 'node-a', log: silent, onSnapshot: () => {}, clock, random: seededRandom(4), progressMs: 1000 });
  await p.start();
  t.ok(p.connected);
  // etcd skips the notice after an event and jitters each by up to 10%: 2.2 s of quiet happens.
  clock.advance(2200);
  t.ok(p.connected, 'two intervals and more of quiet: still connected');
  clock.advance(801);
  t.notOk(p.connected, 'silence: reconnecting');
  for (let i = 0; i < 10 && !p.connected; i++) {
    clock.advance(500);
    await flush();
  }
  t.ok(p.connected);
  p.stop();
});

t.test('publisher: a change made while connecting is written once connected, not at the next reconcile', async (t) => {
  const clock = new ManualClock();
  const etcd = new FakeEtcd(clock);
  const local = new Map([['a', { service: 'web', spec: spec('web-1'), flags: 0 }]]);
  const p = publisher(etcd, clock, 'node-a', local);
  // The local state changes while the reconcile writes what it read, before it is connected.
  const client = (p as unknown as { o: { client: { put: (k: string, v: string, l: string) => Promise<void> } } }).o.client;
  const put = client.put.bind(client);
  let once = true;
  client.put = async (k, v, l) => {
    await put(k, v, l);
    if (once) {
      once = false;
      local.set('b', { service: 'web', spec: spec('web-2'), flags: 0 });
      p.changed();
    }
  };
  await p.start();
  await flush();
  t.same(etcd.keys('/berth/v1/endpoints/'), ['/berth/v1/endpoints/web/node-a/web-1', '/berth/v1/endpoints/web/node-a/web-2'], 'both, with no reconcile due yet');
  t.ok(clock.dueIn().every((ms) => ms > 1000), 'no timer stood in for it');
  await p.stop();
});

t.test('publisher: a stop while the host key is waited for ends the wait, revokes the new lease and leaves no timer', async (t) => {
  const clock = new ManualClock();
  const etcd = new FakeEtcd(clock);
  const holder = publisher(etcd, clock, 'node-a', new Map());
  await holder.start();
  const second = publisher(etcd, clock, 'node-a', new Map());
  let settled = false;
  const starting = second.start().then(
    () => (settled = true),
    () => (settled = true),
  );
  await flush();
  t.equal(etcd.leases.size, 2, 'the second has a lease and waits');
  t.notOk(settled);
  await second.stop();
  await starting;
  t.ok(settled, 'the start ended with the stop, no time passed');
  t.equal(etcd.leases.size, 1, "the waiting one's lease revoked");
  const left = clock.pending;
  await holder.stop();
  t.ok(left > 0 && clock.pending === 0, 'the stopped one left no timer (the holder\'s went with its stop)');
  t.notOk(second.connected);
});

t.test('publisher: a keep-alive that fails after the connection was replaced leaves the new one up', async (t) => {
  const clock = new ManualClock();
  const etcd = new FakeEtcd(clock);
  const local = new Map([['a', { service: 'web', spec: spec('web-1'), flags: 0 }]]);
  const p = publisher(etcd, clock, 'node-a', local);
  const client = (p as unknown as { o: { client: { keepAlive: (lease: string) => Promise<number>; put: (k: string, v: string, l: string) => Promise<void> } } }).o.client;
  const keepAlive = client.keepAlive.bind(client);
  const put = client.put.bind(client);
  await p.start();
  // The next keep-alive hangs (a slow member), then fails once the connection was replaced.
  let failLate: (err: Error) => void = () => {};
  client.keepAlive = () => new Promise<number>((_, reject) => (failLate = reject));
  clock.advance(3334);
  await flush();
  // Meanwhile a write fails: reconnect (keep-alives answer again).
  client.keepAlive = keepAlive;
  client.put = () => Promise.reject(new Error('connection reset'));
  local.set('b', { service: 'web', spec: spec('web-2'), flags: 0 });
  p.changed();
  await flush();
  t.notOk(p.connected, 'the failed write: reconnecting');
  client.put = put;
  await passUntil(clock, () => p.connected, 40);
  t.ok(p.connected);
  failLate(new Error('socket hang up'));
  await flush();
  t.ok(p.connected, 'the old keep-alive\'s failure is not the new connection\'s');
  t.equal(etcd.keys('/berth/v1/endpoints/').length, 2);
  await p.stop();
});

t.test('publisher: a host key without a lease, or one gone between compare and read, is taken at once', async (t) => {
  const clock = new ManualClock();
  const etcd = new FakeEtcd(clock);
  await etcd.client().put(keys.host('node-a'), '{"pid":7}', '0');
  const p = publisher(etcd, clock, 'node-a', new Map());
  await p.start();
  t.ok(p.connected, 'no wait for a lease that would never expire');
  t.not(etcd.kv.get(keys.host('node-a'))!.lease, '0');
  // Gone between the compare and the read: the holder reads as absent; tried again at once.
  const q = publisher(etcd, clock, 'node-q', new Map());
  const client = (q as unknown as { o: { client: { putIf: (...a: [string, string, string, number]) => Promise<unknown> } } }).o.client;
  const putIf = client.putIf.bind(client);
  let first = true;
  client.putIf = (...a) => {
    if (!first) return putIf(...a);
    first = false;
    return Promise.resolve({ created: false, holder: { key: a[0], value: '', lease: '0', modRevision: 0 } });
  };
  await q.start();
  t.ok(q.connected);
  await p.stop();
  await q.stop();
});

t.test('publisher: a successor takes over (a reload): the host key and every entry on its lease, no entry deleted on the way', async (t) => {
  const clock = new ManualClock();
  const etcd = new FakeEtcd(clock);
  const local = new Map([
    ['a', { service: 'web', spec: spec('web-1'), flags: 0 }],
    ['b', { service: 'api', spec: spec('api-1'), flags: 0 }],
  ]);
  const old = publisher(etcd, clock, 'node-a', local);
  await old.start();
  const oldLease = etcd.kv.get(keys.host('node-a'))!.lease;
  const seen: string[] = [];
  etcd.client().watch('/berth/', etcd.revision + 1, { onEvents: (ev) => seen.push(...ev.map((e) => `${e.type} ${e.key}`)), onCompacted: () => {}, onError: () => {} });
  await flush();
  const lease = await old.hold();
  t.equal(lease, oldLease);
  old.changed();
  const next = new Publisher({
    client: etcd.client(),
    keys,
    host: 'node-a',
    claim: { host: 'node-a', advertise: '192.0.2.99', hostname: 'box', pid: 43, since: '' },
    ttlSeconds: 20,
    desired: () => new Map([...local.values()].map((e) => [keys.endpoint(e.service, 'node-a', e.spec.id), encodeEntry(entryOf(e, '192.0.2.99'))])),
    log: silent,
    clock,
    random: seededRandom(5),
    takeOver: lease,
  });
  await next.start();
  t.ok(next.connected, 'no wait for the old lease');
  const newLease = etcd.kv.get(keys.host('node-a'))!.lease;
  t.not(newLease, oldLease);
  t.ok(etcd.keys('/berth/v1/').every((k) => etcd.kv.get(k)!.lease === newLease), 'every key on the new lease');
  await old.stop();
  t.same(etcd.keys('/berth/v1/endpoints/'), ['/berth/v1/endpoints/api/node-a/api-1', '/berth/v1/endpoints/web/node-a/web-1'], 'the old lease revoked with nothing on it');
  t.notOk(etcd.leases.has(oldLease));
  t.same(seen.filter((e) => e.startsWith('delete')), [], 'no entry went away on the way');
  await next.stop();
});

t.test('publisher: a held one writes nothing until resumed', async (t) => {
  const clock = new ManualClock();
  const etcd = new FakeEtcd(clock);
  const local = new Map([['a', { service: 'web', spec: spec('web-1'), flags: 0 }]]);
  const p = publisher(etcd, clock, 'node-a', local);
  await p.start();
  await p.hold();
  local.set('b', { service: 'web', spec: spec('web-2'), flags: 0 });
  p.changed();
  await pass(clock, 61_000);
  t.equal(etcd.keys('/berth/v1/endpoints/').length, 1, 'held: neither the change nor the reconcile wrote');
  t.ok(p.connected, 'keep-alives went on');
  p.resume();
  await flush();
  t.equal(etcd.keys('/berth/v1/endpoints/').length, 2, 'resumed: written');
  await p.stop();
});

t.test('publisher: its lease is kept alive while it waits for the host key (a short TTL outlives the wait)', async (t) => {
  const clock = new ManualClock();
  const etcd = new FakeEtcd(clock);
  const other = etcd.client();
  const holder = await other.grant(10);
  await other.putIf(keys.host('node-a'), '{"pid":9}', holder, 0);
  const p = new Publisher({ client: etcd.client(), keys, host: 'node-a', claim: { host: 'node-a', advertise: null, hostname: 'box', pid: 1, since: '' }, ttlSeconds: 2, desired: () => new Map(), log: silent, clock, random: seededRandom(6), claimRetryMs: 500 });
  let done = false;
  const starting = p.start().then(() => (done = true));
  // The holder goes after 2.5 s: longer than this one's TTL.
  for (let ms = 0; ms < 2500; ms += 250) {
    clock.advance(250);
    await flush();
  }
  etcd.dropLease(holder);
  await passUntil(clock, () => done, 5);
  await starting;
  t.ok(p.connected, 'claimed with its lease alive');
  t.equal(etcd.kv.get(keys.host('node-a'))?.lease, [...etcd.leases.keys()][0]);
  await p.stop();
});

t.test('publisher: a stop while a claim write is in flight does not wait out a retry pause', async (t) => {
  const clock = new ManualClock();
  const etcd = new FakeEtcd(clock);
  const other = etcd.client();
  await other.putIf(keys.host('node-a'), '{"pid":9}', await other.grant(10), 0);
  const p = publisher(etcd, clock, 'node-a', new Map());
  const client = (p as unknown as { o: { client: { putIf: (...a: [string, string, string, number]) => Promise<unknown> } } }).o.client;
  const putIf = client.putIf.bind(client);
  let answer: () => void = () => {};
  client.putIf = (...a) => new Promise((resolve) => (answer = () => resolve(putIf(...a))));
  const starting = p.start().catch(() => {});
  await flush();
  let stopped = false;
  const stopping = p.stop().then(() => (stopped = true));
  answer();
  await flush();
  t.ok(stopped, 'stopped with no time passing');
  await stopping;
  await starting;
});

t.test('publisher: held, it does not reconnect on its own (its successor claims); resumed, it does', async (t) => {
  const clock = new ManualClock();
  const etcd = new FakeEtcd(clock);
  const p = publisher(etcd, clock, 'node-a', new Map([['a', { service: 'web', spec: spec('web-1'), flags: 0 }]]));
  await p.start();
  await p.hold();
  etcd.stop();
  await pass(clock, 4000);
  t.notOk(p.connected, 'the keep-alive failed');
  etcd.start();
  await pass(clock, 60_000);
  t.notOk(p.connected, 'no reconnect while held');
  p.resume();
  await passUntil(clock, () => p.connected, 40);
  t.ok(p.connected, 'resumed: reconnected');
  await p.stop();
});
