/**
 * An operator's drain with --workers: through the primary's admin API (here with
 * `berth drain|undrain|weight`), every worker applies it, a worker that starts later
 * too (the primary replays the overrides after the snapshots); without the admin
 * token the commands fail and say why.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { answers, freePort, nameServer, runCli, startBerth, until } from '../helpers/net.js';

t.test('--workers 2: berth drain through the primary stops new connections on every worker, a restarted worker included; undrain and weight likewise', async (t) => {
  const a = await nameServer('A');
  const b = await nameServer('B');
  t.teardown(() => {
    a.close();
    b.close();
  });
  const dir = mkdtempSync(join(tmpdir(), 'berth-workers-drain-'));
  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, 'ops-token-4242\n');
  const adminPort = await freePort();
  const adminArgs = ['--admin', `127.0.0.1:${adminPort}`, '--admin-token-file', tokenFile];
  const berth = await startBerth(['--listen', '127.0.0.1:0', '--backend', `127.0.0.1:${a.port}`, '--backend', `127.0.0.1:${b.port}`, '--workers', '2', ...adminArgs]);
  t.teardown(() => berth.kill('SIGKILL'));
  await until(() => berth.logs.filter((l) => l.msg === 'listening').length === 2, 5000, 'both workers listening');
  const A = `127.0.0.1:${a.port}`;

  const noToken = await runCli(['drain', A, '--admin', `127.0.0.1:${adminPort}`]);
  t.equal(noToken.code, 2, 'without the token: refused (exit 2, as berth status)');
  t.match(noToken.stderr, /berth drain: POST \/api\/v1\/endpoints\/.*: HTTP 401/);

  const drained = await runCli(['drain', A, ...adminArgs]);
  t.equal(drained.code, 0, drained.stderr);
  t.match(drained.stdout, new RegExp(`default/${A.replace(/\./g, '\\.')}: drained-by-admin .* drained by 127\\.0\\.0\\.1 at `));
  t.same(await answers(berth.port, 200), { B: 200 }, 'no worker sends a new connection to A');
  t.ok(berth.logs.some((l) => l.msg === 'operator override' && l['op'] === 'drain' && l['endpoint'] === A && l['by'] === '127.0.0.1'), 'the change is logged with who made it');

  // A worker dies; the one the primary starts instead has the drain before it listens.
  const listening = berth.logs.filter((l) => l.msg === 'listening').length;
  const workerPids = [...new Set(berth.logs.filter((l) => l.msg === 'listening').map((l) => l['pid'] as number))];
  t.equal(workerPids.length, 2, 'two worker pids');
  process.kill(workerPids[0]!, 'SIGKILL');
  await until(() => berth.logs.filter((l) => l.msg === 'listening').length > listening, 10_000, 'a new worker listening');
  t.same(await answers(berth.port, 200), { B: 200 }, 'still none to A with the new worker');

  const w = await runCli(['weight', `127.0.0.1:${b.port}`, '300', ...adminArgs]);
  t.equal(w.code, 0, w.stderr);
  t.match(w.stdout, /\(weight 300\)/);
  const undrained = await runCli(['undrain', A, ...adminArgs]);
  t.equal(undrained.code, 0, undrained.stderr);
  const after = await answers(berth.port, 200);
  t.same(Object.keys(after).sort(), ['A', 'B'], `both answer again: ${JSON.stringify(after)}`);
  const status = await runCli(['status', ...adminArgs]);
  t.match(status.stdout, /2\/2 in the pick set/);
  t.match(status.stdout, new RegExp(`127\\.0\\.0\\.1:${b.port}\\s.*\\s300 \\(admin\\)\\s`), 'the operator\'s weight marked as such');
});
