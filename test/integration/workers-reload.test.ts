// --workers: a reload applies to every worker or to none, and a restarted worker
// starts with the running config (the primary's, not whatever the file says now).
import { mkdtemp, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { exchange, freePort, nameServer, startBerth, until, type LogLine } from '../helpers/net.js';

/** Whether something accepts connections on the port. */
function accepting(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

t.test('--workers 2: a reload one worker cannot take is applied by none; the next one by all; a restarted worker gets the running config', async (t) => {
  const web = await nameServer('web');
  t.teardown(() => web.close());
  const [a, b, admin] = [await freePort(), await freePort(), await freePort()];
  const dir = await mkdtemp(join(tmpdir(), 'berth-workers-reload-'));
  const file = join(dir, 'berth.yaml');
  const config = (extra: string) => `listeners:
  - { name: a, bind: "127.0.0.1:${a}", service: web }
${extra}services:
  web: { endpoints: ["127.0.0.1:${web.port}"] }
admin: { bind: "127.0.0.1:${admin}" }
`;
  await writeFile(file, config(''));
  const berth = await startBerth(['--config', file, '--workers', '2', '--log-level', 'info']);
  t.teardown(() => berth.kill('SIGKILL'));
  await until(() => berth.logs.filter((l) => l.msg === 'listening').length === 2, 10_000, 'both workers listening');
  const view = (await (await fetch(`http://127.0.0.1:${admin}/api/v1/services`)).json()) as { workers: { pid: number }[] };
  const [p1, p2] = view.workers.map((w) => w.pid) as [number, number];

  // One worker cannot answer (stopped): the reload that adds listener b is called off everywhere.
  await writeFile(file, config(`  - { name: b, bind: "127.0.0.1:${b}", service: web }\n`));
  process.kill(p2, 'SIGSTOP');
  berth.kill('SIGHUP');
  const failed = await berth.waitLog((l) => l.msg === 'config reload failed; keeping the running config', 15_000);
  t.match((failed['errors'] as string[]).join(' '), new RegExp(`not applied to any worker: worker ${p2}: no answer within \\d+ms`), 'names the worker that did not answer');
  t.notOk(
    berth.logs.some((l) => l.msg === 'config reloaded'),
    'not reported as reloaded',
  );
  process.kill(p2, 'SIGCONT');
  // The stopped worker now reads its queued prepare and abort; the running one aborted already.
  await until(async () => !(await accepting(b)), 10_000, 'listener b is bound by no worker');
  t.equal((await exchange(a, 'x')).data.toString(), 'web', 'listener a still serves');

  // Both answer: the same reload goes through, in both.
  berth.kill('SIGHUP');
  const ok = await berth.waitLog((l) => l.msg === 'config reloaded', 15_000);
  t.equal(ok['workers'], 2);
  await until(async () => await accepting(b), 10_000, 'b accepts');
  t.equal((await exchange(b, 'x')).data.toString(), 'web', 'listener b serves');

  // The file changes again without a SIGHUP; a worker dies: its replacement starts
  // with the running config (a and b), not with the file.
  await writeFile(file, config('').replace(`name: a, bind: "127.0.0.1:${a}"`, `name: c, bind: "127.0.0.1:${await freePort()}"`));
  process.kill(p1, 'SIGKILL');
  await berth.waitLog((l) => l.msg === 'worker died; starting a new one', 10_000);
  const listening = (name: string) => berth.logs.filter((l: LogLine) => l.msg === 'listening' && l['listener'] === name).length;
  // Its lines arrive one by one: wait for both (a and b, the running config's) before judging.
  await until(() => listening('a') === 3 && listening('b') === 1, 10_000, 'the new worker listens on a and on b (added by the reload)');
  t.notOk(
    berth.logs.some((l) => l.msg === 'listening' && l['listener'] === 'c'),
    'not on the file that was never reloaded',
  );
  for (let i = 0; i < 6; i++) t.equal((await exchange(b, 'x')).data.toString(), 'web', `b served (${i})`);
});
