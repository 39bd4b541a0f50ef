import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { freePort, startBerth, until } from '../helpers/net.js';

// A real client and real servers: redis-benchmark through berth to two redis-server processes.
for (const bin of ['redis-server', 'redis-benchmark', 'redis-cli']) {
  if (spawnSync('which', [bin]).status !== 0) throw new Error(`${bin} is required (Debian: redis-server, redis-tools); .ci/run installs it`);
}

function redisCli(port: number, ...args: string[]): string {
  return spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { encoding: 'utf8' }).stdout;
}

async function redisServer(t: Test): Promise<number> {
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'berth-redis-'));
  const p = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
  t.teardown(() => p.kill('SIGKILL'));
  await until(() => redisCli(port, 'PING').trim() === 'PONG', 5000, `redis on ${port}`, 50);
  return port;
}

t.test('redis-benchmark through berth: zero errors, both servers used', async (t) => {
  const r1 = await redisServer(t);
  const r2 = await redisServer(t);
  const berth = await startBerth(['--listen', '127.0.0.1:0', '--backend', `127.0.0.1:${r1}`, '--backend', `127.0.0.1:${r2}`, '--balance', 'round-robin', '--admin', 'off']);
  t.teardown(() => berth.kill('SIGKILL'));
  const bench = spawnSync('redis-benchmark', ['-h', '127.0.0.1', '-p', String(berth.port), '-n', '20000', '-c', '20', '-r', '10000', '-t', 'set,get,incr,lpush,lpop', '-q', '--csv'], {
    encoding: 'utf8',
    timeout: 120_000,
  });
  t.equal(bench.status, 0, `redis-benchmark exit status; stderr: ${bench.stderr}`);
  t.notMatch(bench.stdout + bench.stderr, /error|reset|refused/i, 'no errors reported');
  const rows = bench.stdout.trim().split('\n').filter((l) => /^"(SET|GET|INCR|LPUSH|LPOP)/.test(l));
  t.equal(rows.length, 5, `five tests ran:\n${bench.stdout}`);
  const processed = (port: number) => Number(/total_commands_processed:(\d+)/.exec(redisCli(port, 'INFO', 'stats'))?.[1] ?? 0);
  const n1 = processed(r1);
  const n2 = processed(r2);
  t.ok(n1 > 10_000 && n2 > 10_000, `both servers used: ${n1} and ${n2} commands`);
  t.ok(n1 + n2 >= 100_000, `every command reached a server: ${n1 + n2}`);
  berth.kill('SIGTERM');
  t.equal(await berth.exited, 0);
});
