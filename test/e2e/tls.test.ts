import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { freePort, httpGet, runCli, startBerth, until } from '../helpers/net.js';

for (const bin of ['redis-server', 'redis-benchmark', 'redis-cli', 'openssl']) {
  if (spawnSync('which', [bin]).status !== 0) throw new Error(`${bin} is required; .ci/run installs it`);
}

const dir = mkdtempSync(join(tmpdir(), 'berth-tls-e2e-'));

async function redisServer(t: Test): Promise<number> {
  const port = await freePort();
  const p = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
  t.teardown(() => p.kill('SIGKILL'));
  await until(() => spawnSync('redis-cli', ['-p', String(port), 'PING'], { encoding: 'utf8' }).stdout.trim() === 'PONG', 5000, 'redis up', 50);
  return port;
}

t.test('berth → berth mTLS tunnel (certificates from berth certs) carries redis-benchmark with zero errors', async (t) => {
  const ca = join(dir, 'ca');
  const certs = join(dir, 'certs');
  for (const args of [
    ['certs', 'ca', '--out', ca, '--cn', 'tunnel CA'],
    ['certs', 'issue', '--ca', ca, '--out', certs, '--name', 'b-side', '--san', 'DNS:localhost,IP:127.0.0.1', '--server'],
    ['certs', 'issue', '--ca', ca, '--out', certs, '--name', 'a-side', '--san', 'URI:spiffe://shop/a-side', '--client'],
  ]) {
    const r = await runCli(args);
    t.equal(r.code, 0, r.stderr);
  }
  const redis = await redisServer(t);
  const bPort = await freePort();
  const bAdmin = await freePort();
  const bCfg = join(dir, 'b.yaml');
  writeFileSync(
    bCfg,
    `listeners:
  - name: tunnel-in
    bind: 127.0.0.1:${bPort}
    service: redis
    tls:
      cert: ${join(certs, 'b-side.pem')}
      key: ${join(certs, 'b-side-key.pem')}
      clientCa: ${join(ca, 'ca.pem')}
      allow: ["URI:spiffe://shop/a-side"]
services:
  redis: { endpoints: ["127.0.0.1:${redis}"] }
admin: { bind: 127.0.0.1:${bAdmin} }
`,
  );
  const aCfg = join(dir, 'a.yaml');
  writeFileSync(
    aCfg,
    `listeners:
  - name: tunnel-out
    bind: 127.0.0.1:0
    service: b
services:
  b:
    endpoints: ["127.0.0.1:${bPort}"]
    upstreamTls: { ca: ${join(ca, 'ca.pem')}, cert: ${join(certs, 'a-side.pem')}, key: ${join(certs, 'a-side-key.pem')}, serverName: localhost }
admin: { bind: "off" }
`,
  );
  const b = await startBerth(['-c', bCfg]);
  t.teardown(() => b.kill('SIGKILL'));
  const a = await startBerth(['-c', aCfg]);
  t.teardown(() => a.kill('SIGKILL'));
  const bench = await new Promise<{ code: number | null; out: string }>((resolve) => {
    const p = spawn('redis-benchmark', ['-h', '127.0.0.1', '-p', String(a.port), '-n', '10000', '-c', '20', '-t', 'set,get,incr', '-q', '--csv']);
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d));
    p.stderr.on('data', (d: Buffer) => (out += d));
    p.on('exit', (code) => resolve({ code, out }));
  });
  t.equal(bench.code, 0, bench.out);
  t.notMatch(bench.out, /error|reset|refused/i, 'no errors');
  t.equal(bench.out.trim().split('\n').filter((l) => /^"(SET|GET|INCR)/.test(l)).length, 3, bench.out);
  const metrics = (await httpGet(`http://127.0.0.1:${bAdmin}/metrics`)).body;
  const ok = Number(/berth_tls_handshakes_total\{listener="tunnel-in",result="ok"\} (\d+)/.exec(metrics)?.[1] ?? 0);
  t.ok(ok >= 20, `every tunnelled connection did an mTLS handshake (${ok})`);
  const expiry = Number(/berth_tls_cert_expiry_seconds\{listener="tunnel-in"\} (\d+)/.exec(metrics)?.[1] ?? 0);
  t.ok(expiry > 300 * 86400, `expiry gauge: ${expiry}s`);
  // Direct connections without the client certificate do not get through.
  const plain = spawnSync('redis-cli', ['-p', String(bPort), 'PING'], { encoding: 'utf8', timeout: 5000 });
  t.notMatch(plain.stdout, /PONG/);
});

t.test('a missing certificate file: exit 2 with a message naming the field', async (t) => {
  const cfg = join(dir, 'bad.yaml');
  writeFileSync(cfg, `listeners:\n  - bind: 127.0.0.1:0\n    service: s\n    tls: { cert: /nope/cert.pem, key: /nope/key.pem }\nservices:\n  s: { endpoints: ["127.0.0.1:1"] }\nadmin: { bind: "off" }\n`);
  const r = await runCli(['-c', cfg]);
  t.equal(r.code, 2);
  t.match(r.stderr, /listener listener-0: cannot read tls\.cert \/nope\/cert\.pem: ENOENT/);
});
