/**
 * The registration across a reload, with the in-memory etcd behind a running
 * berth: a changed registration (TTL, advertise address) takes over from the old
 * one without any entry going away for other hosts; a reload to a host id another
 * berth holds fails and leaves the running registration and config as they were,
 * and the same reload tried again once the id is free goes through.
 */
import t from 'tap';
import { validateConfig } from '../../src/config/validate.js';
import { Berth } from '../../src/runtime/runtime.js';
import { ManualClock } from '../helpers/clock.js';
import { FakeEtcd } from '../helpers/etcd.js';
import { httpGet, until } from '../helpers/net.js';
import { silent } from '../helpers/proxy.js';
import type { EtcdClient } from '../../src/registry/etcd-client.js';

const config = (etcd: Record<string, unknown>, endpoints = ['127.0.0.1:9', '127.0.0.1:10'], admin = 'off') =>
  validateConfig({
    listeners: [{ name: 'web', bind: '127.0.0.1:0', service: 'web' }],
    services: { web: { endpoints } },
    discovery: { etcd: { endpoints: ['http://127.0.0.1:2379'], host: 'node-a', ttl: '2s', subscribe: false, ...etcd } },
    admin: { bind: admin },
  });

t.test('a changed registration takes over: every entry stays, all on the new lease, the old lease revoked', async (t) => {
  const etcd = new FakeEtcd(new ManualClock());
  const berth = new Berth(config({}), { log: silent, etcdClient: () => etcd.client() });
  await berth.start();
  t.teardown(() => berth.shutdown(0));
  const before = etcd.keys('/berth/v1/');
  t.equal(before.length, 3, 'host key and two entries');
  const oldLease = etcd.kv.get('/berth/v1/hosts/node-a')!.lease;
  const events: string[] = [];
  etcd.client().watch('/berth/', etcd.revision + 1, { onEvents: (ev) => events.push(...ev.map((e) => `${e.type} ${e.key}`)), onCompacted: () => {}, onError: () => {} });

  await berth.reload(config({ ttl: '5s', advertise: '192.0.2.7' }));
  t.same(etcd.keys('/berth/v1/'), before, 'the same keys');
  const lease = etcd.kv.get('/berth/v1/hosts/node-a')!.lease;
  t.not(lease, oldLease, 'a new lease (a new TTL)');
  t.equal(etcd.leases.get(lease)?.ttl, 5);
  t.notOk(etcd.leases.has(oldLease), 'the old lease revoked');
  t.ok(before.every((k) => etcd.kv.get(k)!.lease === lease), 'every key on the new lease');
  t.match(JSON.parse(etcd.kv.get('/berth/v1/hosts/node-a')!.value), { advertise: '192.0.2.7' });
  t.same(events.filter((e) => e.startsWith('delete')), [], 'no entry went away for other hosts');

  // Settings of the provider alone: the registration is left as it is.
  const revision = etcd.revision;
  await berth.reload(config({ ttl: '5s', advertise: '192.0.2.7', progressInterval: '1m' }));
  t.equal(etcd.revision, revision, 'nothing written');
});

t.test('a reload to a host id another berth holds fails; the running registration and config stay; tried again once free, it goes through', async (t) => {
  const etcd = new FakeEtcd(new ManualClock());
  const other = etcd.client();
  const otherLease = await other.grant(60);
  await other.putIf('/berth/v1/hosts/node-b', JSON.stringify({ host: 'node-b', hostname: 'elsewhere', pid: 99, since: '' }), otherLease, 0);
  const berth = new Berth(config({}), { log: silent, etcdClient: () => etcd.client() });
  await berth.start();
  t.teardown(() => berth.shutdown(0));
  const lease = etcd.kv.get('/berth/v1/hosts/node-a')!.lease;

  await t.rejects(berth.reload(config({ host: 'node-b' })), { code: 'BERTH_ERR_HOST_ID', message: /pid 99 on elsewhere/ });
  t.equal(berth.config.discovery.etcd?.host, 'node-a', 'the running config stays');
  t.equal(etcd.kv.get('/berth/v1/hosts/node-a')?.lease, lease, 'the running registration stays');
  t.ok(berth.registry?.connected);
  t.equal(etcd.keys('/berth/v1/endpoints/web/node-a/').length, 2);
  t.equal(etcd.leases.size, 2, 'the refused attempt left no lease');
  // Not left holding its writes: a change after the failed reload is written.
  await berth.reload(config({}, ['127.0.0.1:9', '127.0.0.1:10', '127.0.0.1:11']));
  await new Promise((r) => setImmediate(r));
  t.equal(etcd.keys('/berth/v1/endpoints/web/node-a/').length, 3, 'the old registration writes again');

  etcd.dropLease(otherLease);
  await berth.reload(config({ host: 'node-b' }, ['127.0.0.1:9', '127.0.0.1:10', '127.0.0.1:11']));
  t.equal(berth.config.discovery.etcd?.host, 'node-b');
  t.same(etcd.keys('/berth/v1/'), ['/berth/v1/endpoints/web/node-b/127.0.0.1%3A10', '/berth/v1/endpoints/web/node-b/127.0.0.1%3A11', '/berth/v1/endpoints/web/node-b/127.0.0.1%3A9', '/berth/v1/hosts/node-b'], "node-a's registration gone, node-b's in");
});

t.test('the new registration cannot write at first (etcd times out once): the old lease keeps every entry until the new one has written them all', async (t) => {
  const etcd = new FakeEtcd(new ManualClock());
  let made = 0;
  const factory = (): EtcdClient => {
    const c = etcd.client();
    // The reload's registration (the third client: start, the reload's host-id check, then it).
    if (++made === 3) {
      let failed = false;
      const put = c.put.bind(c);
      c.put = async (k, v, l) => {
        if (!failed) {
          failed = true;
          throw new Error('etcd at http://127.0.0.1:2379: no answer in 3000 ms');
        }
        return put(k, v, l);
      };
    }
    return c;
  };
  const berth = new Berth(config({}), { log: silent, etcdClient: factory });
  await berth.start();
  t.teardown(() => berth.shutdown(0));
  const oldLease = etcd.kv.get('/berth/v1/hosts/node-a')!.lease;
  const events: string[] = [];
  etcd.client().watch('/berth/', etcd.revision + 1, { onEvents: (ev) => events.push(...ev.map((e) => `${e.type} ${e.key}`)), onCompacted: () => {}, onError: () => {} });
  await berth.reload(config({ ttl: '5s' }));
  t.notOk(berth.registry?.connected, 'the new one is retrying');
  t.ok(etcd.leases.has(oldLease), 'the old lease lives on meanwhile');
  await until(() => berth.registry?.connected === true && !etcd.leases.has(oldLease), 10_000, 'the new one connected, the old lease revoked');
  t.same(events.filter((e) => e.startsWith('delete')), [], 'no entry went away for other hosts at any time');
  t.equal(etcd.keys('/berth/v1/endpoints/').length, 2);
});

t.test('a shutdown during a reload\'s hand-over: nothing stays registered', async (t) => {
  const etcd = new FakeEtcd(new ManualClock());
  let made = 0;
  let release: () => void = () => {};
  const factory = (): EtcdClient => {
    const c = etcd.client();
    if (++made === 3) {
      const grant = c.grant.bind(c);
      c.grant = async (ttl) => {
        await new Promise<void>((r) => (release = r));
        return grant(ttl);
      };
    }
    return c;
  };
  const berth = new Berth(config({}), { log: silent, etcdClient: factory });
  await berth.start();
  const reloading = berth.reload(config({ ttl: '5s' }));
  await until(() => made === 3, 5000, 'the new registration asks for its lease');
  const down = berth.shutdown(0);
  release();
  await reloading;
  await down;
  t.same(etcd.keys('/berth/v1/'), [], 'no key left');
  t.equal(etcd.leases.size, 0, 'no lease left');
});

t.test('the registry metrics after a hand-over are the new registration\'s', async (t) => {
  const etcd = new FakeEtcd(new ManualClock());
  const berth = new Berth(config({}, undefined, '127.0.0.1:0'), { log: silent, etcdClient: () => etcd.client() });
  await berth.start();
  t.teardown(() => berth.shutdown(0));
  await berth.reload(config({ ttl: '5s' }, undefined, '127.0.0.1:0'));
  const body = (await httpGet(`http://127.0.0.1:${berth.adminAddress!.port}/metrics`)).body;
  t.match(body, /berth_registry_connected\{registry="etcd"\} 1/);
  t.match(body, /berth_registry_published_endpoints\{registry="etcd"\} 2/);
});
