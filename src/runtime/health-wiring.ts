/**
 * Active health checks wired to the pool: which endpoints get a check loop (one
 * per endpoint of every service with `health`, built from the pool and the
 * config), and how a verdict becomes pool flags. In a worker there is no checker:
 * the primary checks once per endpoint and sends the verdicts, applied here too.
 */
import type { Config, HealthConfig } from '../config/schema.js';
import { systemRandom } from '../core/random.js';
import { Flag } from '../core/types.js';
import { HealthChecker, type CheckChange, type CheckTarget } from '../health/checker.js';
import { dnsProbe, grpcProbe, httpProbe, sendExpectProbe, tcpProbe } from '../health/probe.js';
import type { UpstreamTls } from '../core/tls.js';
import type { Pool } from '../pool/pool.js';

/** An active-check verdict for one endpoint, as sent from the primary to workers. */
export interface HealthVerdict {
  readonly service: string;
  readonly id: string;
  readonly pending: boolean;
  readonly unhealthy: boolean;
  readonly why: string;
}

const ACTIVE = Flag.ActivePending | Flag.ActiveUnhealthy;

/** A number per loaded upstream TLS material: a reload that loads it again restarts the checks over it. */
const tlsIds = new WeakMap<object, number>();
let nextTlsId = 1;
function tlsId(t: UpstreamTls): number {
  let id = tlsIds.get(t);
  if (id === undefined) tlsIds.set(t, (id = nextTlsId++));
  return id;
}

/**
 * The transport of a send-expect check: as the check says; else the endpoint's kind
 * of port (label berth.protocol); else udp for a service a udp listener sends to.
 */
export function sendExpectProtocol(h: HealthConfig, endpoint: 'tcp' | 'udp' | undefined, udpServed: boolean): 'tcp' | 'udp' {
  return h.protocol ?? endpoint ?? (udpServed ? 'udp' : 'tcp');
}

/** Services a udp listener sends to. */
function udpServices(config: Config): Set<string> {
  const out = new Set<string>();
  for (const l of config.listeners) if (l.mode === 'udp' && l.service !== '') out.add(l.service);
  return out;
}

/**
 * The probe a service's check settings describe, for one endpoint: `type` and `path`
 * are the endpoint's own (labels berth.health.type and berth.health.path) or the
 * service's; `tls` the service's upstream TLS (a grpc check speaks h2 over it).
 */
function probeFor(h: HealthConfig, type: HealthConfig['type'], path: string, inRange: (code: number) => boolean, protocol: 'tcp' | 'udp', tls: UpstreamTls | undefined): CheckTarget['probe'] {
  switch (type) {
    case 'http':
      return (host, port) => httpProbe(host, port, h.timeout, { path, host: h.host, expect: inRange });
    case 'grpc': {
      const o = { service: h.service ?? '', tls };
      return (host, port) => grpcProbe(host, port, h.timeout, o);
    }
    case 'dns':
      return (host, port) => dnsProbe(host, port, h.timeout, { name: h.query!, type: h.queryType ?? 'A' });
    case 'send-expect': {
      const o = {
        protocol,
        send: h.sendHex !== undefined ? Buffer.from(h.sendHex, 'hex') : Buffer.from(h.send!, 'utf8'),
        receive: h.receiveHex !== undefined ? Buffer.from(h.receiveHex, 'hex') : h.receive !== undefined ? Buffer.from(h.receive, 'utf8') : undefined,
      };
      return (host, port) => sendExpectProbe(host, port, h.timeout, o);
    }
    case 'tcp':
      return (host, port) => tcpProbe(host, port, h.timeout);
  }
}

export class HealthWiring {
  readonly checker: HealthChecker | null;
  private syncQueued = false;
  private stopped = false;

  constructor(
    private readonly pool: Pool,
    private readonly config: () => Config,
    /** Whether this process runs the checks (not in a worker). */
    runChecks: boolean,
    /** A verdict of this process's checker (a primary passes it on to the workers). */
    private readonly onVerdict: (v: HealthVerdict) => void,
    /** A service's upstream TLS, loaded (grpc checks speak h2 over it). */
    private readonly upstreamTls: (service: string) => UpstreamTls | undefined = () => undefined,
  ) {
    this.checker = runChecks ? new HealthChecker((c) => this.onCheck(c), systemRandom) : null;
    pool.on((e) => {
      if (e.type === 'endpoint-added') {
        // With checks configured, a new endpoint waits for its first pass (same in every process).
        const h = this.config().services.get(e.endpoint.service)?.health;
        if (h && h.initial === 'pending') pool.setFlag(e.endpoint.service, e.endpoint.id, Flag.ActivePending, true, 'active check: waiting for the first pass');
      }
      if (e.type === 'endpoint-added' || e.type === 'endpoint-removed' || e.type === 'endpoint-updated') this.queueSync();
    });
  }

  /** The config's services were (re)applied: checks follow, and endpoints of services whose checks were removed are released. */
  configChanged(config: Config): void {
    for (const s of this.pool.services.values()) {
      if (config.services.get(s.name)?.health) continue;
      for (const e of s.endpoints.values()) if (e.flags & ACTIVE) this.pool.setFlag(s.name, e.id, ACTIVE, false, 'active checks removed from the config');
    }
    this.queueSync();
  }

  stop(): void {
    this.stopped = true;
    this.checker?.stopAll();
  }

  private queueSync(): void {
    if (!this.checker || this.syncQueued) return;
    this.syncQueued = true;
    setImmediate(() => {
      this.syncQueued = false;
      if (!this.stopped) this.sync();
    });
  }

  /** One check loop per endpoint of every service that has `health` configured. */
  private sync(): void {
    const targets: CheckTarget[] = [];
    const config = this.config();
    const udp = udpServices(config);
    for (const s of this.pool.services.values()) {
      const h = config.services.get(s.name)?.health;
      if (!h) continue;
      const inRange = (code: number) => h.expect.ranges.some(([lo, hi]) => code >= lo && code <= hi);
      const settings = JSON.stringify(h);
      for (const e of s.endpoints.values()) {
        if (e.sources.size === 0) continue;
        // An endpoint's own health path and type (labels berth.health.path, .type) override the service's.
        const path = e.spec.healthPath ?? h.path;
        const type = e.spec.healthType ?? h.type;
        const tls = type === 'grpc' ? this.upstreamTls(s.name) : undefined;
        targets.push({
          key: `${s.name}\0${e.id}`,
          host: e.host,
          port: e.port,
          probe: probeFor(h, type, path, inRange, sendExpectProtocol(h, e.spec.protocol, udp.has(s.name)), tls),
          intervalMs: h.interval,
          jitter: h.jitter,
          rise: h.rise,
          fall: h.fall,
          initial: h.initial,
          settingsKey: `${settings} ${path} ${type} ${tls !== undefined ? tlsId(tls) : 0}`,
        });
      }
    }
    this.checker!.sync(targets);
  }

  private onCheck(c: CheckChange): void {
    const [service, id] = c.key.split('\0') as [string, string];
    const type = this.pool.service(service)?.endpoints.get(id)?.spec.healthType ?? this.config().services.get(service)?.health?.type ?? '';
    const why = `active ${type} check: ${c.to === 'healthy' ? 'passed' : 'failed'} (${c.detail})`;
    const verdict: HealthVerdict = { service, id, pending: false, unhealthy: c.to === 'unhealthy', why };
    this.apply(verdict);
    this.onVerdict(verdict);
  }

  /** Applies an active-check verdict (from this process's checker, or from the primary). */
  apply(v: HealthVerdict): void {
    this.pool.setFlag(v.service, v.id, Flag.ActivePending, v.pending, v.why);
    this.pool.setFlag(v.service, v.id, Flag.ActiveUnhealthy, v.unhealthy, v.why);
    const e = this.pool.service(v.service)?.endpoints.get(v.id);
    if (e && e.flags & Flag.Outlier && !v.pending && !v.unhealthy && this.config().services.get(v.service)?.outlier?.endEarlyOnActivePass) {
      this.pool.endEjection(e, 'active check passed');
    }
  }

  /** Current active-check verdicts, for a worker that has just started. */
  verdicts(): HealthVerdict[] {
    const out: HealthVerdict[] = [];
    const config = this.config();
    for (const s of this.pool.services.values()) {
      if (!config.services.get(s.name)?.health) continue;
      for (const e of s.endpoints.values()) {
        out.push({ service: s.name, id: e.id, pending: (e.flags & Flag.ActivePending) !== 0, unhealthy: (e.flags & Flag.ActiveUnhealthy) !== 0, why: 'active check state from the primary' });
      }
    }
    return out;
  }
}
