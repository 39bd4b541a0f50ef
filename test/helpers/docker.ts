import { execFile, spawnSync } from 'node:child_process';
import http from 'node:http';
import { promisify } from 'node:util';
import type { Test } from 'tap';

const exec = promisify(execFile);

/**
 * Whether the Docker tests can run. With BERTH_REQUIRE_DOCKER=1 (set by .ci/run) a
 * missing engine or test image is a failure, not a skip.
 */
export function dockerReady(t: Test): boolean {
  const info = spawnSync('docker', ['info', '--format', '{{.ServerVersion}}'], { encoding: 'utf8' });
  const image = spawnSync('docker', ['image', 'inspect', 'berth-test/web'], { encoding: 'utf8' });
  const problem = info.status !== 0 ? 'no Docker engine (run scripts/docker-engine.sh)' : image.status !== 0 ? 'test images missing (run scripts/test-images.sh)' : '';
  if (problem === '') return true;
  if (process.env.BERTH_REQUIRE_DOCKER === '1') t.fail(`BERTH_REQUIRE_DOCKER=1 but ${problem}`);
  else void t.test(problem, { skip: problem }, () => {});
  return false;
}

export async function docker(...args: string[]): Promise<string> {
  const r = await exec('docker', args, { maxBuffer: 16 * 1024 * 1024 });
  return r.stdout.trim();
}

/** A unique name prefix per test file run, and a label to clean up by. */
export const RUN = `berth-e2e-${process.pid}`;

/** Starts a container of berth-test/web (or `image`) with labels; returns its name. */
export async function runContainer(name: string, labels: Record<string, string>, extra: string[] = [], image = 'berth-test/web', cmd: string[] = []): Promise<string> {
  const full = `${RUN}-${name}`;
  const args = ['run', '-d', '--name', full, '-e', `NAME=${name}`, '-l', `org.berth-test.run=${RUN}`];
  for (const [k, v] of Object.entries(labels)) args.push('-l', `${k}=${v}`);
  await docker(...args, ...extra, image, ...cmd);
  return full;
}

export async function removeAll(): Promise<void> {
  const ids = await docker('ps', '-aq', '--filter', `label=org.berth-test.run=${RUN}`);
  if (ids) await docker('rm', '-f', ...ids.split('\n'));
}

/** One HTTP GET on a fresh connection; resolves with the body or rejects. */
export function get(port: number, path = '/', timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false, headers: { connection: 'close' }, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => (res.statusCode === 200 ? resolve(body.trim()) : reject(new Error(`status ${res.statusCode}`))));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}
