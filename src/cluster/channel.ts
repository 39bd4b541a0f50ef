/**
 * The primary's end of the worker channel. A worker can die between two of the
 * primary's messages (a crash, a SIGKILL, the end of its drain at shutdown) before
 * the primary has seen it go: the next send then fails with EPIPE, and node reports
 * that as an 'error' event on the Worker. Unheard, that event is an uncaught
 * exception: the primary, and with it every other worker, went down (a clean
 * SIGTERM could end in exit 1 when a health verdict or a stats poll met a worker
 * that had just finished draining). Every worker comes from here, with that event
 * heard: a message to a worker that is gone is dropped, and the primary's 'exit'
 * handler deals with the worker.
 */
import cluster, { type Worker } from 'node:cluster';
import type { Logger } from '../log.js';

export function forkWorker(log: Logger): Worker {
  const worker = cluster.fork();
  worker.on('error', (err: Error) => log.debug({ err, worker: worker.process.pid }, 'a message to a worker was not delivered: the worker is gone'));
  return worker;
}
