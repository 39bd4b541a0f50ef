/**
 * The JSON-gateway client against a small stand-in for etcd's gateway: ranges read
 * in pages at the first page's revision (and started over when that revision is
 * compacted meanwhile), http and https members in one list, TLS files that cannot
 * be read named by their field.
 */
import http from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import { HttpEtcdClient } from '../../src/registry/etcd-client.js';
import { freePort } from '../helpers/net.js';

const b64 = (s: string): string => Buffer.from(s).toString('base64');
const unb64 = (s: string): string => Buffer.from(s, 'base64').toString();

/** A gateway holding `keys` (sorted) at `revision`; each range body is recorded. */
async function gateway(t: Test, keys: string[], over: { compactOnce?: boolean } = {}) {
  const bodies: Record<string, string>[] = [];
  let revision = 7;
  let compactOnce = over.compactOnce ?? false;
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      const r = JSON.parse(body) as Record<string, string>;
      bodies.push(r);
      if (r['revision'] !== undefined && compactOnce) {
        compactOnce = false;
        revision++;
        res.statusCode = 400;
        res.end(JSON.stringify({ error: 'etcdserver: mvcc: required revision has been compacted', code: 11 }));
        return;
      }
      const from = unb64(r['key']!);
      const end = unb64(r['range_end']!);
      const limit = Number(r['limit'] ?? 0);
      const all = keys.filter((k) => k >= from && k < end);
      const page = limit > 0 ? all.slice(0, limit) : all;
      res.end(JSON.stringify({ header: { revision: String(r['revision'] ?? revision) }, kvs: page.map((k) => ({ key: b64(k), value: b64(`v${k}`), mod_revision: '3' })), more: page.length < all.length, count: String(all.length) }));
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, bodies };
}

t.test('range: pages of pageSize, each after the last key, all at the first page\'s revision', async (t) => {
  const keys = ['/p/a', '/p/b', '/p/c', '/p/d', '/p/e'];
  const g = await gateway(t, keys);
  const c = new HttpEtcdClient([g.url], undefined, 3000, 2);
  t.teardown(() => c.close());
  const r = await c.range('/p/');
  t.same(r.kvs.map((k) => k.key), keys);
  t.equal(r.revision, 7);
  t.equal(g.bodies.length, 3, 'three pages');
  t.same(g.bodies.map((b) => b['revision']), [undefined, '7', '7']);
  t.equal(unb64(g.bodies[1]!['key']!), '/p/b\u0000', 'the next page starts just after the last key');
});

t.test('range: the pinned revision compacted between pages: read again from the start', async (t) => {
  const g = await gateway(t, ['/p/a', '/p/b', '/p/c'], { compactOnce: true });
  const c = new HttpEtcdClient([g.url], undefined, 3000, 2);
  t.teardown(() => c.close());
  const r = await c.range('/p/');
  t.same(r.kvs.map((k) => k.key), ['/p/a', '/p/b', '/p/c']);
  t.equal(r.revision, 8, 'the revision of the second reading');
});

t.test('http and https members in one list: each spoken to with its own scheme', async (t) => {
  const g = await gateway(t, ['/p/a']);
  const closed = await freePort();
  const c = new HttpEtcdClient([`https://127.0.0.1:${closed}`, g.url], undefined);
  t.teardown(() => c.close());
  const r = await c.range('/p/');
  t.same(r.kvs.map((k) => k.key), ['/p/a'], 'the https member refused, the http one answered');
});

t.test('a TLS file that cannot be read: an error naming the field', async (t) => {
  t.throws(() => new HttpEtcdClient(['https://127.0.0.1:2379'], { ca: '/nonexistent/ca.pem' }), { code: 'BERTH_ERR_TLS', message: /discovery\.etcd\.tls\.ca: cannot read \/nonexistent\/ca\.pem: ENOENT/ });
});

t.test('a member that cannot serve (no leader: UNAVAILABLE) is passed for the next; a keep-alive gives up on a silent member within its own timeout', async (t) => {
  const unavailable = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.statusCode = 503;
      res.end(JSON.stringify({ error: 'etcdserver: no leader', code: 14, message: 'etcdserver: no leader' }));
    });
  });
  unavailable.listen(0, '127.0.0.1');
  await once(unavailable, 'listening');
  t.teardown(() => unavailable.close());
  const silent = http.createServer(() => {});
  silent.listen(0, '127.0.0.1');
  await once(silent, 'listening');
  t.teardown(() => {
    silent.closeAllConnections();
    silent.close();
  });
  const g = await gateway(t, ['/p/a']);
  const c = new HttpEtcdClient([`http://127.0.0.1:${(unavailable.address() as AddressInfo).port}`, g.url], undefined);
  t.teardown(() => c.close());
  t.same((await c.range('/p/')).kvs.map((k) => k.key), ['/p/a'], 'the second member answered');
  const k = new HttpEtcdClient([`http://127.0.0.1:${(silent.address() as AddressInfo).port}`], undefined, 60_000);
  t.teardown(() => k.close());
  await t.rejects(k.keepAlive('7', 200), { message: /no answer in 200 ms/ }, 'its own timeout, not the client\'s 60 s');
});
