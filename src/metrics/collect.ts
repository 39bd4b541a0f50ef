/**
 * Turns typed events into prom-client updates, so domain code never imports
 * prom-client. Endpoint gauges (up, weight, active) are read from the pool at
 * scrape time: nothing on the hot path, and a removed endpoint's series vanish
 * with it. Counters of a removed endpoint are removed on its removal event.
 */
import { collectDefaultMetrics, Registry, type Counter } from 'prom-client';
import type { DiscoveryObserver } from '../core/discovery.js';
import type { ConnectResult, ProxyObserver } from '../core/observer.js';
import type { Pool } from '../pool/pool.js';
import { declareMetrics, type Metrics } from './names.js';

const RESULTS: readonly ConnectResult[] = ['ok', 'refused', 'timeout', 'error'];

type Child = ReturnType<Counter<string>['labels']>;

/** Per-endpoint counter children, cached: label hashing once per endpoint, not per connection. */
interface EndpointChildren {
  connect: Record<ConnectResult, Child>;
  rx: Child;
  tx: Child;
}

export interface ListenerView {
  readonly name: string;
  readonly active: number;
}

export class MetricsCollector implements ProxyObserver, DiscoveryObserver {
  readonly registry = new Registry();
  readonly m: Metrics;
  private readonly children = new Map<string, Map<string, EndpointChildren>>();
  private readonly durations = new Map<string, ReturnType<Metrics['connectDuration']['labels']>>();
  private readonly listenerCounters = new Map<string, Child>();

  constructor(pool: Pool, listeners: () => Iterable<ListenerView>) {
    // prom-client calls collect() once per mirrored gauge; the first call of a scrape fills all four.
    let lastRead = -1;
    this.m = declareMetrics(this.registry, () => {
      const now = Date.now();
      if (now === lastRead) return;
      lastRead = now;
      const { upstreamUp, upstreamWeight, upstreamActive, listenerActive } = this.m;
      upstreamUp.reset();
      upstreamWeight.reset();
      upstreamActive.reset();
      for (const s of pool.services.values()) {
        for (const e of s.endpoints.values()) {
          const labels = { service: s.name, endpoint: e.id };
          upstreamUp.set(labels, e.eligible ? 1 : 0);
          upstreamWeight.set(labels, e.weight);
          upstreamActive.set(labels, e.active);
        }
      }
      listenerActive.reset();
      for (const l of listeners()) listenerActive.set({ listener: l.name }, l.active);
    });
    collectDefaultMetrics({ register: this.registry });
    pool.on((e) => {
      if (e.type === 'endpoint-removed') this.forget(e.endpoint.service, e.endpoint.id);
    });
  }

  private endpoint(service: string, endpoint: string): EndpointChildren {
    let bySvc = this.children.get(service);
    if (!bySvc) this.children.set(service, (bySvc = new Map()));
    let c = bySvc.get(endpoint);
    if (!c) {
      const uc = this.m.upstreamConnections;
      c = {
        connect: { ok: uc.labels(service, endpoint, 'ok'), refused: uc.labels(service, endpoint, 'refused'), timeout: uc.labels(service, endpoint, 'timeout'), error: uc.labels(service, endpoint, 'error') },
        rx: this.m.upstreamBytes.labels(service, endpoint, 'rx'),
        tx: this.m.upstreamBytes.labels(service, endpoint, 'tx'),
      };
      bySvc.set(endpoint, c);
    }
    return c;
  }

  /** Drops every series of a removed endpoint (bounded cardinality under churn). */
  forget(service: string, endpoint: string): void {
    const bySvc = this.children.get(service);
    if (!bySvc?.delete(endpoint)) return;
    for (const result of RESULTS) this.m.upstreamConnections.remove(service, endpoint, result);
    this.m.upstreamBytes.remove(service, endpoint, 'rx');
    this.m.upstreamBytes.remove(service, endpoint, 'tx');
  }

  // ProxyObserver
  listenerAccepted(listener: string): void {
    let c = this.listenerCounters.get(listener);
    if (!c) this.listenerCounters.set(listener, (c = this.m.listenerConnections.labels(listener)));
    c.inc();
  }
  listenerClosed(): void {
    // Active counts are read from the listeners at scrape time.
  }
  upstreamConnect(service: string, endpoint: string, result: ConnectResult, seconds: number): void {
    this.endpoint(service, endpoint).connect[result].inc();
    let h = this.durations.get(service);
    if (!h) this.durations.set(service, (h = this.m.connectDuration.labels(service)));
    h.observe(seconds);
  }
  upstreamClosed(service: string, endpoint: string, rx: number, tx: number): void {
    const c = this.endpoint(service, endpoint);
    if (rx > 0) c.rx.inc(rx);
    if (tx > 0) c.tx.inc(tx);
  }
  retry(service: string, reason: string): void {
    this.m.retries.inc({ service, reason });
  }
  noEndpoint(listener: string, service: string): void {
    this.m.noEndpoint.inc({ listener, service });
  }

  // DiscoveryObserver
  event(provider: string, action: string): void {
    this.m.discoveryEvents.inc({ provider, action });
  }
  error(provider: string): void {
    this.m.discoveryErrors.inc({ provider });
  }
  connected(provider: string, up: boolean): void {
    this.m.discoveryConnected.set({ provider }, up ? 1 : 0);
  }
  synced(provider: string, wallMs: number): void {
    this.m.discoveryLastSync.set({ provider }, wallMs / 1000);
  }

  reload(ok: boolean): void {
    this.m.configReloads.inc({ result: ok ? 'ok' : 'error' });
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}
