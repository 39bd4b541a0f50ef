/** Upstream TLS material becomes one TLS context per service, built at load (Node only). */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { Berth } from '../../src/runtime/runtime.js';
import { validateConfig } from '../../src/config/validate.js';
import { createCa, issueCert } from '../../src/tls/certs.js';
import { ListenerTls, loadUpstreamTls } from '../../src/tls/terminate.js';
import { silent } from '../helpers/proxy.js';

t.test('loadUpstreamTls builds the secure context once; bad material fails at load, naming the service', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-uptls-'));
  await createCa({ out: dir, cn: 'ca', days: 2, bits: 2048 });
  await issueCert({ ca: dir, out: dir, name: 'client', sans: [{ type: 'DNS', value: 'client.internal' }], usage: 'client', days: 2, bits: 2048 });
  const u = loadUpstreamTls('api', { ca: join(dir, 'ca.pem'), cert: join(dir, 'client.pem'), key: join(dir, 'client-key.pem'), serverName: 'api.internal', insecure: false });
  t.ok(u.secureContext, 'a context, shared by every connection to the service');
  t.notOk('ca' in u || 'cert' in u || 'key' in u, 'no raw material left for tls.connect to parse per connection');
  t.equal(u.servername, 'api.internal');
  t.equal(u.rejectUnauthorized, true);
  writeFileSync(join(dir, 'bad-key.pem'), '-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n');
  t.throws(() => loadUpstreamTls('api', { cert: join(dir, 'client.pem'), key: join(dir, 'bad-key.pem'), insecure: false }), { code: 'BERTH_ERR_TLS', message: /service api: upstreamTls/ });
});

t.test('SNI callback only where SNI certificates are configured', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-sni-'));
  await createCa({ out: dir, cn: 'ca', days: 2, bits: 2048 });
  await issueCert({ ca: dir, out: dir, name: 'a', sans: [{ type: 'DNS', value: 'a.example' }], usage: 'server', days: 2, bits: 2048 });
  const base = { cert: join(dir, 'a.pem'), key: join(dir, 'a-key.pem'), allow: [], minVersion: 'TLSv1.2' as const };
  const plain = new ListenerTls('plain', { ...base, sni: [] }, silent, { tlsMaterial: () => {} }, false);
  const withSni = new ListenerTls('sni', { ...base, sni: [{ cert: join(dir, 'a.pem'), key: join(dir, 'a-key.pem') }] }, silent, { tlsMaterial: () => {} }, false);
  t.teardown(() => {
    plain.close();
    withSni.close();
  });
  t.equal(plain.serverOptions().SNICallback, undefined, 'no per-handshake call into JS without SNI certificates');
  t.equal(typeof withSni.serverOptions().SNICallback, 'function');
});

t.test('a reload that adds the first SNI certificate to a bound listener is refused; the running config stays', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-sni-reload-'));
  await createCa({ out: dir, cn: 'ca', days: 2, bits: 2048 });
  await issueCert({ ca: dir, out: dir, name: 'a', sans: [{ type: 'DNS', value: 'a.example' }], usage: 'server', days: 2, bits: 2048 });
  const tls = (sni: { cert: string; key: string }[]) => ({ cert: join(dir, 'a.pem'), key: join(dir, 'a-key.pem'), sni });
  const cfg = (sni: { cert: string; key: string }[]) => validateConfig({ listeners: [{ name: 'web', bind: '127.0.0.1:0', service: 'web', tls: tls(sni) }], services: { web: { endpoints: ['127.0.0.1:1'] } }, admin: { bind: 'off' } });
  const berth = new Berth(cfg([]), { log: silent, version: '9.9.9' });
  await berth.start();
  t.teardown(() => berth.shutdown(0));
  await t.rejects(berth.reload(cfg([{ cert: join(dir, 'a.pem'), key: join(dir, 'a-key.pem') }])), { code: 'BERTH_ERR_RELOAD', message: /first SNI certificate/ });
  t.same(await berth.reload(cfg([])), { added: 0, removed: 0, kept: 1 }, 'the same config still reloads');
});
