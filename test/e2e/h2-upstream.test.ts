/**
 * HTTP/2 and gRPC peers that are not node: nghttpd (nghttp2's server) as an h2c
 * endpoint of a service with httpVersion: 2, curl as the HTTP/1.1 client; and
 * Debian's python3-grpcio (gRPC's C core) answering berth's grpc health checks.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { freePort, httpGet, killGroupOnExit, listenerPort, startBerth, until } from '../helpers/net.js';

for (const bin of ['nghttpd', 'curl', '/usr/bin/python3']) {
  if (spawnSync('which', [bin]).status !== 0) throw new Error(`${bin} is required (Debian: nghttp2-server, curl, python3-grpcio); .ci/run installs it`);
}
if (spawnSync('/usr/bin/python3', ['-c', 'import grpc']).status !== 0) throw new Error('python3-grpcio is required; .ci/run installs it');

const dir = mkdtempSync(join(tmpdir(), 'berth-h2-e2e-'));

/** Runs `cmd` in its own process group, killed at teardown (and when this process ends). */
function run(t: Test, cmd: string, args: string[]) {
  const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  killGroupOnExit(p);
  t.teardown(() => {
    try {
      process.kill(-p.pid!, 'SIGKILL');
    } catch {
      // gone
    }
  });
  return p;
}

t.test('nghttpd (h2c) behind an http listener with httpVersion: 2: curl over HTTP/1.1 gets its files, each request on a stream', async (t) => {
  const docroot = mkdtempSync(join(dir, 'www-'));
  const body = 'x'.repeat(200_000);
  writeFileSync(join(docroot, 'big.txt'), body);
  writeFileSync(join(docroot, 'small.txt'), 'hello from nghttpd\n');
  const port = await freePort();
  run(t, 'nghttpd', ['--no-tls', '-d', docroot, '--address', '127.0.0.1', String(port)]);
  await until(() => spawnSync('curl', ['-s', '-o', '/dev/null', '--http2-prior-knowledge', `http://127.0.0.1:${port}/small.txt`]).status === 0, 10_000, 'nghttpd up');
  const file = join(dir, `berth-${port}.json`);
  writeFileSync(file, JSON.stringify({ listeners: [{ name: 'web', bind: '127.0.0.1:0', mode: 'http', service: 'files' }], services: { files: { httpVersion: 2, endpoints: [`127.0.0.1:${port}`] } }, admin: { bind: 'off' } }));
  const berth = await startBerth(['-c', file]);
  t.teardown(() => berth.kill('SIGKILL'));
  const web = listenerPort(berth, 'web');
  const small = spawnSync('curl', ['-s', '--http1.1', '-D', '-', `http://127.0.0.1:${web}/small.txt`], { encoding: 'utf8' });
  t.match(small.stdout, /^HTTP\/1\.1 200/);
  t.match(small.stdout, /hello from nghttpd/);
  const big = spawnSync('curl', ['-s', '--http1.1', `http://127.0.0.1:${web}/big.txt`, `http://127.0.0.1:${web}/big.txt`], { encoding: 'utf8', maxBuffer: 4 << 20 });
  t.equal(big.stdout.length, 2 * body.length, 'two large files whole, one after the other on one client connection');
  t.equal(spawnSync('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${web}/missing`], { encoding: 'utf8' }).stdout, '404');
});

t.test('python3-grpcio answers the grpc health checks: SERVING in, NOT_SERVING out with why', async (t) => {
  const py = run(t, '/usr/bin/python3', [fileURLToPath(new URL('../fixtures/grpc-health.py', import.meta.url))]);
  const port = await new Promise<number>((resolve, reject) => {
    py.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
    py.once('exit', (code) => reject(new Error(`python grpc server exited ${code}`)));
  });
  const admin = await freePort();
  const file = join(dir, `grpc-${port}.json`);
  const check = (service: string) => ({ type: 'grpc', service, interval: '200ms', timeout: '1s', rise: 1, fall: 1 });
  writeFileSync(
    file,
    JSON.stringify({
      listeners: [
        { name: 'good', bind: '127.0.0.1:0', service: 'good' },
        { name: 'bad', bind: '127.0.0.1:0', service: 'bad' },
      ],
      services: { good: { endpoints: [`127.0.0.1:${port}`], health: check('') }, bad: { endpoints: [`127.0.0.1:${port}`], health: check('bad') } },
      admin: { bind: `127.0.0.1:${admin}` },
    }),
  );
  const berth = await startBerth(['-c', file]);
  t.teardown(() => berth.kill('SIGKILL'));
  const ep = encodeURIComponent(`127.0.0.1:${port}`);
  await until(async () => /berth_upstream_up\{service="good",endpoint="[^"]+"\} 1/.test((await httpGet(`http://127.0.0.1:${admin}/metrics`)).body), 10_000, 'good checked in');
  await until(async () => /active grpc check: failed \(NOT_SERVING\)/.test((await httpGet(`http://127.0.0.1:${admin}/api/v1/endpoints/${ep}?service=bad`)).body), 10_000, 'bad checked out');
  t.match((await httpGet(`http://127.0.0.1:${admin}/metrics`)).body, /berth_upstream_up\{service="bad",endpoint="[^"]+"\} 0/);
  t.match((await httpGet(`http://127.0.0.1:${admin}/api/v1/endpoints/${ep}?service=good`)).body, /active grpc check: passed \(SERVING\)/);
});
