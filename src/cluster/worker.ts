/** A --workers worker: takes its config, snapshots and reloads from the primary, and proxies. */
import { Berth, type PreparedReload } from '../runtime/runtime.js';
import { validateConfig } from '../config/validate.js';
import type { Logger } from '../log.js';
import type { EndpointStats, FromWorker, ToWorker } from './protocol.js';
import type { OverrideState } from '../pool/pool.js';

/** Runs in each worker: takes its config, snapshots and reloads from the primary, and proxies. */
export async function runWorker(log: Logger, version: string): Promise<void> {
  // A message the primary can no longer take (it is gone, and this worker exits with
  // its channel) is dropped: without a callback node makes that an uncaught error.
  const send = (m: FromWorker) => process.send?.(m, undefined, undefined, () => {});
  // Signals go to the primary, which tells workers what to do; a terminal's Ctrl-C
  // reaches the whole process group, so workers ignore it and wait for the primary.
  process.on('SIGINT', () => {});
  process.on('SIGTERM', () => {});
  process.on('SIGHUP', () => {});
  let berth: Berth | null = null;
  /** The reload this worker has prepared (or is preparing), by the primary's id. */
  let prepared: { id: number; reload: Promise<PreparedReload | null>; aborted: boolean } | null = null;
  let lastPrepare: Promise<void> = Promise.resolve();
  const settle = (id: number, how: 'commit' | 'abort') => {
    const p = prepared;
    if (p === null || p.id !== id) return;
    prepared = null;
    if (how === 'abort') p.aborted = true;
    void p.reload.then((r) => {
      if (r === null) return;
      if (how === 'commit') r.commit();
      else r.abort();
    });
  };
  process.on('message', (raw: ToWorker) => {
    if (raw.t === 'config') {
      void startWorker(raw.raw, raw.reusePort, raw.overrides);
      return;
    }
    const b = berth;
    if (b === null) return;
    switch (raw.t) {
      case 'snapshot':
        b.pool.applySnapshot({ provider: raw.provider, services: new Map(raw.services) });
        return;
      case 'health':
        b.applyHealth(raw.v);
        return;
      case 'overrides':
        b.replaceOverrides(raw.state);
        return;
      case 'prepare': {
        if (prepared !== null) settle(prepared.id, 'abort');
        const entry = { id: raw.id, aborted: false, reload: Promise.resolve<PreparedReload | null>(null) };
        // One at a time: an earlier prepare (of a reload called off while this worker
        // could not answer) is undone before this one binds the same addresses.
        const before = lastPrepare;
        entry.reload = (async () => {
          await before;
          try {
            const r = await b.prepareReload(validateConfig(raw.raw));
            // Called off while it was still binding: undo at once.
            if (entry.aborted) {
              r.abort();
              return null;
            }
            send({ t: 'prepared', id: raw.id, ok: true });
            return r;
          } catch (err) {
            send({ t: 'prepared', id: raw.id, ok: false, error: err instanceof Error ? err.message : String(err) });
            return null;
          }
        })();
        prepared = entry;
        lastPrepare = entry.reload.then(() => undefined);
        return;
      }
      case 'commit':
        settle(raw.id, 'commit');
        return;
      case 'abort':
        settle(raw.id, 'abort');
        return;
      case 'stats': {
        const endpoints: EndpointStats[] = [];
        for (const s of b.pool.services.values()) {
          for (const e of s.endpoints.values()) endpoints.push({ service: s.name, id: e.id, active: e.active, connections: e.connections, failures: e.failures, latency: e.latency });
        }
        send({ t: 'stats', id: raw.id, open: b.openSessions(), endpoints });
        return;
      }
      case 'metrics':
        if (!b.metrics) send({ t: 'metrics', id: raw.id, json: [] });
        else void b.metrics.registry.getMetricsAsJSON().then((json) => send({ t: 'metrics', id: raw.id, json }));
        return;
      case 'shutdown':
        void b.shutdown(raw.drainMs).then(() => process.exit(0));
        return;
    }
  });
  const startWorker = async (raw: unknown, reusePort: boolean, overrides: OverrideState): Promise<void> => {
    if (berth !== null) return;
    try {
      berth = new Berth(validateConfig(raw), { log, version, role: 'worker', reusePort, overrides });
      await berth.start();
    } catch (err) {
      log.fatal({ err }, err instanceof Error ? err.message : String(err));
      process.exit(2);
    }
    send({ t: 'ready' });
  };
  send({ t: 'hello' });
}

