/**
 * --workers N: several processes share the listeners (node:cluster).
 *
 * Why this split: discovery and the admin server run once, in the primary, so there
 * is one engine connection, one view of endpoint health and one /metrics; workers
 * only proxy. The primary sends each discovery snapshot to every worker, which
 * applies it through the same pool reconcile path as a single process — so all
 * workers pick from the same endpoint set. The primary never accepts traffic: either
 * every worker has a listening socket of its own (SO_REUSEPORT, where
 * reuse-port.ts says so) or they share one with SCHED_NONE; either way the kernel
 * hands each new connection to a worker directly. Balancer counters (open connections) are per worker;
 * the primary polls them every second for the status view.
 */
import cluster, { type Worker } from 'node:cluster';
import { Berth } from '../runtime/runtime.js';
import type { LoadedConfig } from '../config/source.js';
import { BerthError } from '../core/errors.js';
import { handleSignals } from '../runtime/signals.js';
import type { Logger } from '../log.js';
import type { EndpointCounters } from '../pool/endpoint.js';
import { aggregateMetrics } from '../metrics/collect.js';
import { forkWorker } from './channel.js';
import { PREPARE_TIMEOUT_MS, toMsg, type EndpointStats, type FromWorker, type ToWorker } from './protocol.js';
import { decideReusePort, reusePortFacts, type ReusePortMode } from './reuse-port.js';
import { statsKey, sumWorkerStats } from './stats.js';

const NO_COUNTERS: EndpointCounters = { active: 0, connections: 0, failures: 0, latency: 0 };


interface WorkerState {
  worker: Worker;
  ready: boolean;
  /** Connections this worker made to endpoints, and its open client connections. */
  connections: number;
  open: number;
}

/**
 * Runs the primary: discovery, admin, N workers. Resolves once every worker
 * listens; rejects (exit 2 upstream) when a worker cannot start.
 */
export async function runPrimary(
  loaded: LoadedConfig,
  n: number,
  log: Logger,
  version: string,
  reloadConfig: (() => Promise<LoadedConfig>) | null,
  reusePortMode: ReusePortMode = 'auto',
): Promise<void> {
  const socketPlan = decideReusePort(reusePortMode, reusePortFacts());
  // One line, once: which listening sockets the workers use, and why (what is missing).
  log[socketPlan.warn ? 'warn' : 'info'](
    { reusePort: socketPlan.perWorker, why: socketPlan.why },
    socketPlan.perWorker ? 'each worker listens on a socket of its own (SO_REUSEPORT); port-0 listeners share one' : 'the workers share one listening socket per listener',
  );
  const config = loaded.config;
  /** The running config's document: what a new or restarted worker starts with. */
  let current = loaded.raw;
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  const workers = new Map<number, WorkerState>();
  let stopping = false;
  let seq = 0;
  const pending = new Map<number, (m: FromWorker) => void>();

  const broadcast = (m: ToWorker) => {
    for (const w of workers.values()) if (w.worker.isConnected()) w.worker.send(m);
  };
  /** One request to one worker (a fresh id): its answer, or null after `timeoutMs` (or when it is gone). */
  const request = <T extends FromWorker>(w: WorkerState, make: (id: number) => ToWorker, timeoutMs: number): { id: number; answer: Promise<T | null> } => {
    const id = ++seq;
    const answer = new Promise<T | null>((resolve) => {
      const timer = setTimeout(() => {
        pending.delete(id);
        resolve(null);
      }, timeoutMs);
      pending.set(id, (m) => {
        clearTimeout(timer);
        resolve(m as T);
      });
      if (w.worker.isConnected()) w.worker.send(make(id));
    });
    return { id, answer };
  };
  /** Asks every ready worker; answers that take over 1 s are left out. */
  const ask = async <T extends FromWorker>(make: (id: number) => ToWorker): Promise<T[]> => {
    const answers = [...workers.values()].filter((w) => w.ready && w.worker.isConnected()).map((w) => request<T>(w, make, 1000).answer);
    return (await Promise.all(answers)).filter((x) => x !== null) as T[];
  };

  /** The workers' endpoint counters, summed; replaced whole on every poll. */
  let workerCounters = new Map<string, EndpointStats>();
  const berth: Berth = new Berth(config, {
    log,
    version,
    role: 'primary',
    countersOf: (e) => workerCounters.get(statsKey(e.service, e.id)) ?? NO_COUNTERS,
    onHealth: (v) => broadcast({ t: 'health', v }),
    // The whole state after each change: a worker takes it in place of its own, so none drifts.
    onOverride: () => broadcast({ t: 'overrides', state: berth.overrideState() }),
    onProviderSnapshot: (snap) => broadcast(toMsg(snap)),
    metricsText: async () => {
      const parts = (await ask<Extract<FromWorker, { t: 'metrics' }>>((id) => ({ t: 'metrics', id }))).map((m) => m.json);
      if (berth.metrics) parts.push(await berth.metrics.registry.getMetricsAsJSON());
      return aggregateMetrics(parts);
    },
    workersView: () => [...workers.values()].map((w) => ({ pid: w.worker.process.pid, ready: w.ready, connections: w.connections, open: w.open })),
  });

  // Endpoint counters live in the workers; the primary folds them into a view of its
  // own, read by the admin API and the metrics, and never writes them into its pool.
  const poll = setInterval(() => {
    void ask<Extract<FromWorker, { t: 'stats' }>>((id) => ({ t: 'stats', id })).then((answers) => {
      workerCounters = sumWorkerStats(answers);
    });
  }, 1000);
  poll.unref();

  let startupDone: (err?: Error) => void = () => {};
  const started = new Promise<void>((resolve, reject) => {
    startupDone = (err) => (err ? reject(err) : resolve());
  });

  const fork = () => {
    const worker = forkWorker(log);
    const state: WorkerState = { worker, ready: false, connections: 0, open: 0 };
    workers.set(worker.id, state);
    worker.on('message', (m: FromWorker) => {
      if (m.t === 'hello') {
        // (The operator's overrides with it: in force before the worker's listeners open.)
        worker.send({ t: 'config', raw: current, reusePort: socketPlan.perWorker, overrides: berth.overrideState() } satisfies ToWorker);
        return;
      }
      if (m.t === 'ready') {
        state.ready = true;
        // Every provider's last snapshot (docker, swarm, dns), not just the latest one seen.
        for (const snap of berth.providerSnapshots()) worker.send(toMsg(snap));
        for (const v of berth.healthVerdicts()) worker.send({ t: 'health', v });
        // The operator's drains and weights as they are now, after the snapshots that made their endpoints.
        worker.send({ t: 'overrides', state: berth.overrideState() });
        if ([...workers.values()].every((w) => w.ready)) startupDone();
        return;
      }
      if (m.t === 'stats') {
        state.connections = m.endpoints.reduce((n, e) => n + e.connections, 0);
        state.open = m.open;
      }
      const resolve = pending.get(m.id);
      if (resolve) {
        pending.delete(m.id);
        resolve(m);
      }
    });
  };

  cluster.on('exit', (worker, code, signal) => {
    const state = workers.get(worker.id);
    workers.delete(worker.id);
    if (stopping) return;
    if (state && !state.ready) {
      startupDone(new Error(`worker ${worker.process.pid} could not start (exit ${code ?? signal})`));
      return;
    }
    log.error({ worker: worker.process.pid, code, signal }, 'worker died; starting a new one');
    setTimeout(fork, 500).unref();
  });

  await berth.start();
  for (let i = 0; i < n; i++) fork();
  try {
    await started;
  } catch (err) {
    stopping = true;
    for (const w of workers.values()) w.worker.kill();
    throw err;
  }
  log.info({ version, node: process.version, workers: n, listeners: config.listeners.length, services: config.services.size }, 'berth started');

  /**
   * A reload applies to every worker or to none: each worker prepares it (binds,
   * reads TLS files) and says so; only when all did does the primary apply its own
   * part (discovery, admin) and tell them to commit. Any refusal, or a worker that
   * does not answer in PREPARE_TIMEOUT_MS, calls it off everywhere.
   */
  const reload = async (): Promise<object> => {
    const next = await reloadConfig!();
    const all = [...workers.values()];
    const starting = all.filter((w) => !w.ready).map((w) => w.worker.process.pid);
    if (starting.length > 0) throw new BerthError('BERTH_ERR_RELOAD', `worker(s) ${starting.join(', ')} still starting; send SIGHUP again once they listen`);
    // Each worker's prepare has its own request id, which its commit or abort names.
    const asked = all.map((w) => ({ w, ...request<Extract<FromWorker, { t: 'prepared' }>>(w, (id) => ({ t: 'prepare', id, raw: next.raw }), PREPARE_TIMEOUT_MS) }));
    const refused: string[] = [];
    for (const { w, answer } of asked) {
      const m = await answer;
      if (m === null) refused.push(`worker ${w.worker.process.pid}: no answer within ${PREPARE_TIMEOUT_MS}ms`);
      else if (!m.ok) refused.push(`worker ${w.worker.process.pid}: ${m.error}`);
    }
    const tell = (t: 'commit' | 'abort') => {
      for (const { w, id } of asked) if (w.worker.isConnected()) w.worker.send({ t, id } satisfies ToWorker);
    };
    if (refused.length > 0) {
      tell('abort');
      throw new BerthError('BERTH_ERR_RELOAD', `not applied to any worker: ${refused.join('; ')}`);
    }
    try {
      await berth.reload(next.config);
    } catch (err) {
      tell('abort');
      throw err;
    }
    tell('commit');
    current = next.raw;
    return { workers: all.length };
  };

  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, drainTimeoutMs: berth.config.drainTimeout }, 'stopping: workers stop accepting and drain');
    broadcast({ t: 'shutdown', drainMs: berth.config.drainTimeout });
    const done = () => {
      void berth.shutdown(0).then(() => {
        log.info('all workers drained; bye');
        process.exit(0);
      });
    };
    if (workers.size === 0) return done();
    cluster.on('exit', () => {
      if (workers.size === 0) done();
    });
    // A worker that does not finish in time is killed.
    setTimeout(() => {
      for (const w of workers.values()) w.worker.process.kill('SIGKILL');
    }, berth.config.drainTimeout + 5000).unref();
  };
  handleSignals({ log, stop, reload: reloadConfig === null ? null : reload, reloadFailed: () => berth.reloadFailed() });
}
