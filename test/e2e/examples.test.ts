import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { docker, dockerReady, RUN } from '../helpers/docker.js';
import { freePort, until } from '../helpers/net.js';

// The examples, run as their READMEs say, against the real engine, with the image
// built from the repository's Dockerfile (berth-test/berth, scripts/test-images.sh).
if (!dockerReady(t)) process.exit(0);
if ((await docker('image', 'ls', '-q', 'berth-test/berth')) === '') {
  if (process.env.BERTH_REQUIRE_DOCKER === '1') throw new Error('image berth-test/berth is missing: run scripts/test-images.sh');
  process.exit(0);
}

const examples = fileURLToPath(new URL('../../examples/', import.meta.url));

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { env: { ...process.env, ...env } });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d));
    p.stderr.on('data', (d: Buffer) => (out += d));
    p.on('exit', (code) => resolve({ code, out }));
  });
}

t.test('sidecar-mtls: allowed client through, another identity 403, no certificate refused', async (t) => {
  const prefix = `${RUN}-sidecar`;
  const certs = mkdtempSync(join(tmpdir(), 'berth-sidecar-'));
  const port = await freePort();
  t.teardown(async () => {
    await docker('rm', '-f', `${prefix}-berth`, `${prefix}-app`).catch(() => '');
  });
  const setup = await run(join(examples, 'sidecar-mtls', 'run.sh'), [], { BERTH_IMAGE: 'berth-test/berth', APP_IMAGE: 'berth-test/web', CERTS: certs, PREFIX: prefix, PORT: String(port) });
  t.equal(setup.code, 0, setup.out);
  const curl = (who: string | null) =>
    run('curl', ['-s', '-w', '\n%{http_code}', '--cacert', join(certs, 'ca.pem'), ...(who ? ['--cert', join(certs, `${who}.pem`), '--key', join(certs, `${who}-key.pem`)] : []), `https://localhost:${port}/`]);
  await until(async () => (await curl('frontend')).out.endsWith('\n200'), 30_000, 'sidecar serving', 250);
  const ok = await curl('frontend');
  t.match(ok.out, /^app\n\n?200$/, 'allowed identity reaches the app');
  t.match((await curl('intruder')).out, /forbidden[^]*\n403$/, 'verified but not allowed: 403');
  t.notMatch((await curl(null)).out, /\n200$/, 'no client certificate: refused');
  const metrics = await docker('exec', `${prefix}-berth`, 'node', '-e', "fetch('http://127.0.0.1:9901/metrics').then(r=>r.text()).then(t=>console.log(t))");
  t.match(metrics, /berth_tls_handshakes_total\{listener="app-in",result="not_allowed"\} 1/);
  t.match(metrics, /berth_tls_handshakes_total\{listener="app-in",result="no_cert"\} 1/);
});
