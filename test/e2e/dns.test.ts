import { writeFileSync } from 'node:fs';
import t from 'tap';
import { dnsmasq } from '../helpers/dns.js';
import { DnsProvider, srvEndpoints, type DnsEntry } from '../../src/discovery/dns.js';
import type { ProviderSnapshot } from '../../src/core/types.js';
import { until } from '../helpers/net.js';
import { silent } from '../helpers/proxy.js';

function follow(entries: DnsEntry[]) {
  const snaps: ProviderSnapshot[] = [];
  let errors = 0;
  const p = new DnsProvider({
    entries,
    log: silent,
    onSnapshot: (s) => snaps.push(s),
    observer: { event() {}, error: () => errors++, connected() {}, synced() {} },
  });
  const ids = (service: string) => (snaps.at(-1)?.services.get(service) ?? []).map((e) => e.id).sort();
  return { p, snaps, ids, errors: () => errors };
}

const entry = (over: Partial<DnsEntry>): DnsEntry => ({ name: 'web.svc.test', service: 'web', port: 8080, type: 'A', interval: 300, servers: [], timeout: 300, ...over });

t.test('A records: added and removed records are followed; a stopped server keeps the last good set', async (t) => {
  const d = await dnsmasq(t, '127.0.0.2 web.svc.test\n127.0.0.3 web.svc.test\n');
  const f = follow([entry({ servers: [`127.0.0.1:${d.port}`] })]);
  t.teardown(() => f.p.stop());
  await f.p.start();
  t.same(f.ids('web'), ['127.0.0.2:8080', '127.0.0.3:8080']);
  t.ok(f.p.synced);
  writeFileSync(d.hostsFile, '127.0.0.2 web.svc.test\n127.0.0.3 web.svc.test\n127.0.0.4 web.svc.test\n');
  d.proc.kill('SIGHUP');
  await until(() => f.ids('web').length === 3, 5000, 'added record followed');
  writeFileSync(d.hostsFile, '127.0.0.4 web.svc.test\n');
  d.proc.kill('SIGHUP');
  await until(() => f.ids('web').join() === '127.0.0.4:8080', 5000, 'removed records followed');
  d.proc.kill('SIGKILL');
  const published = f.snaps.length;
  await until(() => f.errors() >= 2, 5000, 'failures counted');
  t.equal(f.snaps.length, published, 'nothing published while the resolver fails');
  t.same(f.ids('web'), ['127.0.0.4:8080'], 'last good answer kept');
  t.notOk(f.p.connected);
});

t.test('SRV: lowest priority group, record weights, ports from the records', async (t) => {
  const d = await dnsmasq(
    t,
    '127.0.0.5 a.svc.test\n127.0.0.6 b.svc.test\n127.0.0.7 c.svc.test\n',
    ['srv-host=_web._tcp.svc.test,a.svc.test,8081,1,10', 'srv-host=_web._tcp.svc.test,b.svc.test,8082,1,30', 'srv-host=_web._tcp.svc.test,c.svc.test,8083,2,100'].join('\n'),
  );
  const f = follow([entry({ name: '_web._tcp.svc.test', type: 'SRV', port: undefined, servers: [`127.0.0.1:${d.port}`] })]);
  t.teardown(() => f.p.stop());
  await f.p.start();
  const eps = f.snaps.at(-1)!.services.get('web')!;
  t.same(
    eps.map((e) => [e.host, e.port, e.weight]).sort(),
    [
      ['a.svc.test', 8081, 10],
      ['b.svc.test', 8082, 30],
    ],
    'priority 2 is a fallback, not used while priority 1 answers',
  );
});

t.test('a name that does not exist is an empty answer; several names feed one service', async (t) => {
  const d = await dnsmasq(t, '127.0.0.8 one.svc.test\n');
  const server = [`127.0.0.1:${d.port}`];
  const f = follow([entry({ name: 'one.svc.test', servers: server }), entry({ name: 'missing.svc.test', servers: server })]);
  t.teardown(() => f.p.stop());
  await f.p.start();
  t.same(f.ids('web'), ['127.0.0.8:8080']);
  t.equal(f.errors(), 0, 'NXDOMAIN is not a failure');
  t.ok(f.p.synced);
});

t.test('srvEndpoints: weight 0 becomes 1, weights capped at 1000, duplicates merged', async (t) => {
  t.same(
    srvEndpoints([
      { name: 'a.', port: 1, priority: 0, weight: 0 },
      { name: 'b.', port: 2, priority: 0, weight: 5000 },
      { name: 'b.', port: 2, priority: 0, weight: 5000 },
    ]).map((e) => [e.id, e.weight]),
    [
      ['a:1', 1],
      ['b:2', 1000],
    ],
  );
  t.same(srvEndpoints([]), []);
});

t.test('static and dns endpoints feed one service, each with its source', async (t) => {
  const d = await dnsmasq(t, '127.0.0.2 web.svc.test\n127.0.0.9 web.svc.test\n');
  const { Berth } = await import('../../src/runtime/runtime.js');
  const { validateConfig } = await import('../../src/config/validate.js');
  const config = validateConfig({
    listeners: [{ bind: '127.0.0.1:0', service: 'web' }],
    services: { web: { endpoints: ['127.0.0.9:8080', '127.0.0.10:8080'] } },
    discovery: { dns: [{ name: 'web.svc.test', service: 'web', port: 8080, servers: [`127.0.0.1:${d.port}`], interval: '1s' }] },
    admin: { bind: 'off' },
  });
  const berth = new Berth(config, { log: silent });
  await berth.start();
  t.teardown(() => berth.shutdown(0));
  const eps = [...berth.pool.service('web')!.endpoints.values()].map((e) => [e.id, [...e.sources.keys()].sort().join('+')]).sort();
  t.same(eps, [
    ['127.0.0.10:8080', 'static'],
    ['127.0.0.2:8080', 'dns'],
    ['127.0.0.9:8080', 'dns+static'],
  ]);
  t.same(berth.providers().map((p) => [p.name, p.synced]), [['dns', true]]);
});
