// The primary's channel to its workers: a message to a worker that died before the
// primary saw it go is dropped, and the primary lives on.
import t from 'tap';
import cluster from 'node:cluster';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { forkWorker } from '../../src/cluster/channel.js';
import type { Logger } from '../../src/log.js';

/**
 * Whether process `pid` has exited and closed its files but is not yet reaped: its
 * main thread a zombie, every other thread gone (a zombie main thread alone is not
 * enough: the files close with the last thread). Read synchronously, so this process
 * cannot reap it meanwhile.
 */
function deadUnreaped(pid: number): boolean {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat[stat.lastIndexOf(')') + 2] === 'Z' && readdirSync(`/proc/${pid}/task`).length === 1;
}

t.test('a send to a worker that exited before the primary noticed: no crash, the worker still counts as exited', async (t) => {
  cluster.setupPrimary({ exec: fileURLToPath(new URL('../fixtures/exiting-worker.mjs', import.meta.url)), execArgv: [], silent: true });
  const debug: string[] = [];
  const log = { debug: (_o: object, msg: string) => debug.push(msg) } as unknown as Logger;
  const worker = forkWorker(log);
  // (not events.once: it rejects on an 'error' event, the one this is about)
  const exited = new Promise((resolve) => worker.on('exit', resolve));
  await once(worker, 'message');
  const pid = worker.process.pid!;
  // The worker exits right after its message; this loop blocks the event loop until
  // it is dead and its end of the channel closed, so the primary cannot have seen the channel close.
  for (let i = 0; !deadUnreaped(pid); i++) if (i > 5_000_000) throw new Error(`worker ${pid} did not exit`);
  t.equal(worker.isConnected(), true, 'the primary has not seen the worker go');
  worker.send({ t: 'stats', id: 1 });
  await exited;
  t.same(debug, ['a message to a worker was not delivered: the worker is gone']);
});
