/**
 * Turns typed events into prom-client updates, so domain code never imports
 * prom-client. Endpoint gauges (up, weight, active) are read from the pool at
 * scrape time: nothing on the hot path, and a removed endpoint's series vanish
 * with it. Counters of a removed endpoint are removed on its removal event.
 */
import { AggregatorRegistry, collectDefaultMetrics, Registry } from 'prom-client';
import type { DiscoveryObserver } from '../core/discovery.js';
import type { ConnectResult, HttpRejectReason, HttpVersionLabel, LocalErrorSite, PrereadResult, ProxyObserver, ProxyProtocolResult, UdpDropReason } from '../core/observer.js';
import type { HandshakeResult } from '../core/tls.js';
import { ownCounters, type CountersOf } from '../pool/endpoint.js';
import type { Pool } from '../pool/pool.js';
import { declareMetrics, type Metrics } from './names.js';

const RESULTS: readonly ConnectResult[] = ['ok', 'refused', 'timeout', 'error'];

/**
 * Per-endpoint tallies as plain numbers: the hot path adds to these, and a scrape
 * copies them into prom-client (whose labelled inc() hashes the label set on
 * every call — measurable per connection).
 */
interface EndpointTally {
  connect: Record<ConnectResult, number>;
  rx: number;
  tx: number;
}

/** Methods with their own label value; anything else counts as OTHER (bounded cardinality). */
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE', 'OTHER'];
/** gRPC status names by code (grpc/doc/statuscodes.md), the `grpc_status` label's values. */
const GRPC_CODES = ['OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'];
const CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'];
/** The `version` label's values, in the order the counts are kept. */
const VERSIONS = ['1.1', '2'] as const;
const PER_VERSION = METHODS.length * CLASSES.length;

function methodIndex(m: string): number {
  const i = METHODS.indexOf(m);
  return i < 0 ? METHODS.length - 1 : i;
}

/** Request counts of one listener and service: [method × class], plus its histogram. */
interface HttpTally {
  readonly counts: Float64Array;
  readonly duration: ReturnType<Metrics['httpDuration']['labels']>;
}

export interface ListenerView {
  readonly name: string;
  readonly active: number;
}

export class MetricsCollector implements ProxyObserver, DiscoveryObserver {
  readonly registry = new Registry();
  readonly m: Metrics;
  private readonly tallies = new Map<string, Map<string, EndpointTally>>();
  private readonly durations = new Map<string, ReturnType<Metrics['connectDuration']['labels']>>();
  private readonly accepted = new Map<string, number>();
  private readonly http = new Map<string, Map<string, HttpTally>>();
  /** Earliest certificate expiry per TLS listener (ms since epoch). */
  private readonly certExpiry = new Map<string, number>();

  constructor(pool: Pool, listeners: () => Iterable<ListenerView>, countersOf: CountersOf = ownCounters) {
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
          upstreamActive.set(labels, countersOf(e).active);
        }
      }
      listenerActive.reset();
      for (const l of listeners()) listenerActive.set({ listener: l.name }, l.active);
      this.m.tlsExpiry.reset();
      for (const [listener, at] of this.certExpiry) this.m.tlsExpiry.set({ listener }, Math.round((at - now) / 1000));
      const { httpRequests } = this.m;
      httpRequests.reset();
      for (const [listener, bySvc] of this.http) {
        for (const [service, t] of bySvc) {
          for (let i = 0; i < t.counts.length; i++) {
            const n = t.counts[i]!;
            const j = i % PER_VERSION;
            if (n > 0) httpRequests.inc({ listener, service, method: METHODS[Math.floor(j / CLASSES.length)]!, code: CLASSES[j % CLASSES.length]!, version: VERSIONS[Math.floor(i / PER_VERSION)]! }, n);
          }
        }
      }
      const { listenerConnections, upstreamConnections, upstreamBytes } = this.m;
      listenerConnections.reset();
      for (const [listener, n] of this.accepted) listenerConnections.inc({ listener }, n);
      upstreamConnections.reset();
      upstreamBytes.reset();
      for (const [service, bySvc] of this.tallies) {
        for (const [endpoint, c] of bySvc) {
          for (const result of RESULTS) upstreamConnections.inc({ service, endpoint, result }, c.connect[result]);
          upstreamBytes.inc({ service, endpoint, direction: 'rx' }, c.rx);
          upstreamBytes.inc({ service, endpoint, direction: 'tx' }, c.tx);
        }
      }
    });
    collectDefaultMetrics({ register: this.registry });
    // prom-client names these gauges *_total, which promtool rejects (a _total suffix
    // means counter); a proxy gains little from them, so they go and the scrape lints clean.
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) this.registry.removeSingleMetric(name);
    pool.on((e) => {
      if (e.type === 'endpoint-removed') this.forget(e.endpoint.service, e.endpoint.id);
    });
  }

  private tally(service: string, endpoint: string): EndpointTally {
    let bySvc = this.tallies.get(service);
    if (!bySvc) this.tallies.set(service, (bySvc = new Map()));
    let c = bySvc.get(endpoint);
    if (!c) bySvc.set(endpoint, (c = { connect: { ok: 0, refused: 0, timeout: 0, error: 0 }, rx: 0, tx: 0 }));
    return c;
  }

  /** Drops every series of a removed endpoint (bounded cardinality under churn). */
  forget(service: string, endpoint: string): void {
    this.tallies.get(service)?.delete(endpoint);
  }

  // ProxyObserver
  listenerAccepted(listener: string): void {
    this.accepted.set(listener, (this.accepted.get(listener) ?? 0) + 1);
  }
  listenerClosed(): void {
    // Active counts are read from the listeners at scrape time.
  }
  upstreamConnect(service: string, endpoint: string, result: ConnectResult, seconds: number): void {
    this.tally(service, endpoint).connect[result]++;
    let h = this.durations.get(service);
    if (!h) this.durations.set(service, (h = this.m.connectDuration.labels(service)));
    h.observe(seconds);
  }
  upstreamClosed(service: string, endpoint: string, rx: number, tx: number): void {
    const c = this.tally(service, endpoint);
    c.rx += rx;
    c.tx += tx;
  }
  retry(service: string, reason: string): void {
    this.m.retries.inc({ service, reason });
  }
  noEndpoint(listener: string, service: string): void {
    this.m.noEndpoint.inc({ listener, service });
  }

  httpRequest(listener: string, service: string, method: string, status: number, seconds: number, version: HttpVersionLabel): void {
    let bySvc = this.http.get(listener);
    if (bySvc === undefined) this.http.set(listener, (bySvc = new Map()));
    let t = bySvc.get(service);
    if (t === undefined) bySvc.set(service, (t = { counts: new Float64Array(VERSIONS.length * PER_VERSION), duration: this.m.httpDuration.labels(listener, service) }));
    const cls = Math.min(5, Math.max(1, Math.floor(status / 100))) - 1;
    t.counts[(version === '2' ? PER_VERSION : 0) + methodIndex(method) * CLASSES.length + cls]!++;
    t.duration.observe(seconds);
  }
  grpcRequest(listener: string, service: string, status: number | 'none' | 'CANCELLED'): void {
    this.m.grpcRequests.inc({ listener, service, grpc_status: typeof status === 'number' ? (GRPC_CODES[status] ?? String(status)) : status === 'none' ? 'NONE' : status });
  }
  httpRejected(listener: string, reason: HttpRejectReason): void {
    this.m.httpRejected.inc({ listener, reason });
  }
  httpUpgrade(listener: string, service: string): void {
    this.m.httpUpgrades.inc({ listener, service });
  }

  tlsHandshake(listener: string, result: HandshakeResult): void {
    this.m.tlsHandshakes.inc({ listener, result });
  }
  localError(where: LocalErrorSite, code: string): void {
    this.m.localErrors.inc({ where, code });
  }
  udpSession(listener: string, opened: boolean): void {
    if (opened) {
      this.m.udpSessions.inc({ listener });
      this.m.udpSessionsActive.inc({ listener });
    } else this.m.udpSessionsActive.dec({ listener });
  }
  udpDatagram(listener: string, direction: 'in' | 'out'): void {
    // One child per label pair, found once: a datagram costs an add, not a label lookup.
    const key = `${listener}\u0000${direction}`;
    let c = this.datagramChildren.get(key);
    if (c === undefined) this.datagramChildren.set(key, (c = this.m.udpDatagrams.labels({ listener, direction })));
    c.inc();
  }
  private readonly datagramChildren = new Map<string, { inc(): void }>();
  /** The publisher's state: connected, and how many entries it has written. */
  registryState(connected: boolean, published: number): void {
    this.m.registryConnected.set({ registry: 'etcd' }, connected ? 1 : 0);
    this.m.registryPublished.set({ registry: 'etcd' }, published);
  }
  /** Other hosts' endpoints, per host (a host that is gone drops its series). */
  registryRemote(perHost: ReadonlyMap<string, number>): void {
    for (const h of this.remoteHosts) if (!perHost.has(h)) this.m.registryRemote.remove({ registry: 'etcd', host: h });
    this.remoteHosts.clear();
    for (const [host, n] of perHost) {
      this.m.registryRemote.set({ registry: 'etcd', host }, n);
      this.remoteHosts.add(host);
    }
  }
  private readonly remoteHosts = new Set<string>();
  registryStale(seconds: number): void {
    this.m.registryStale.set({ registry: 'etcd' }, seconds);
  }
  dnsQuery(type: string, rcode: string): void {
    this.m.dnsQueries.inc({ type, rcode });
  }
  udpDropped(listener: string, reason: UdpDropReason): void {
    this.m.udpDropped.inc({ listener, reason });
  }
  preread(listener: string, result: PrereadResult): void {
    this.m.preread.inc({ listener, result });
  }
  proxyProtocol(listener: string, result: ProxyProtocolResult): void {
    this.m.proxyProtocol.inc({ listener, result });
  }
  tlsMaterial(listener: string, ok: boolean, notAfterMs: number | null): void {
    this.m.tlsReloads.inc({ listener, result: ok ? 'ok' : 'error' });
    if (ok && notAfterMs !== null) this.certExpiry.set(listener, notAfterMs);
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

/** One process's metrics in prom-client's JSON form (sent between cluster processes). */
export type MetricsJson = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;

/**
 * Merges the metrics of several processes (the --workers primary and its workers)
 * into one exposition: counters and most gauges are summed; gauges that each
 * process reports from the same shared view use their `aggregator` (max).
 */
export async function aggregateMetrics(parts: MetricsJson[]): Promise<{ contentType: string; body: string }> {
  const reg = AggregatorRegistry.aggregate(parts);
  return { contentType: reg.contentType, body: await reg.metrics() };
}
