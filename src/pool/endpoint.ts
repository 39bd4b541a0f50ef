import type { BalancerHost } from '../balancer/types.js';
import { describeFlags, formatHostPort, type EndpointSpec } from '../core/types.js';

/** One line of an endpoint's recent history, for the explain endpoint and logs. */
export interface EndpointEvent {
  /** Wall-clock time, ms since the epoch. */
  readonly at: number;
  readonly what: string;
}

const HISTORY = 16;

/**
 * The runtime state of one endpoint of one service. Only the pool writes its
 * identity, weight and flags; the proxy moves `active` through Pool.acquire/release.
 */
/** An endpoint's traffic counters, as the admin API and the metrics read them. */
export interface EndpointCounters {
  /** Open connections (http: requests in flight). */
  readonly active: number;
  /** Connections (or requests) since it joined. */
  readonly connections: number;
  readonly failures: number;
  /** Peak-EWMA latency, ms. */
  readonly latency: number;
}

/** Where counters are read from: the endpoint itself, or (a --workers primary) the sum over the workers. */
export type CountersOf = (e: EndpointState) => EndpointCounters;
export const ownCounters: CountersOf = (e) => e;

export class EndpointState implements BalancerHost {
  readonly service: string;
  readonly id: string;
  host: string;
  port: number;
  /** Configured weight from the winning provider spec, 0–1000. */
  configuredWeight: number;
  /** Weight the balancer uses. */
  weight: number;
  /** Health and lifecycle bits (core/types Flag); 0 means fit. Change through setFlags. */
  flags = 0;
  /** Wall-clock ms at which each flag bit last changed (set or cleared). */
  readonly flagChangedAt = new Map<number, number>();
  /** Wall-clock ms at which the endpoint joined. */
  readonly addedAt = Date.now();
  /** When it joined on the pool's clock (ms): outlier ejection spares a discovered endpoint that may still be starting. */
  joinedAt = 0;
  active = 0;
  /** Peak EWMA of connect latency, ms. */
  latency = 0;
  private latencyAt = 0;
  /** Provider name → the spec it gave, in provider order. */
  readonly sources = new Map<string, EndpointSpec>();
  /** Totals since the endpoint joined. */
  connections = 0;
  failures = 0;
  /** Whether the endpoint was eligible at the last publish (slow start watches the transitions). */
  wasEligible = false;
  /** Slow start: clock ms when the ramp began, or null when at full weight. */
  rampStart: number | null = null;
  /** Outlier detection: connect failures since the last success, times ejected, and the timer that ends an ejection. */
  consecutiveFailures = 0;
  ejections = 0;
  ejectTimer: NodeJS.Timeout | null = null;
  readonly history: EndpointEvent[] = [];
  spec: EndpointSpec;

  constructor(service: string, spec: EndpointSpec) {
    this.service = service;
    this.id = spec.id;
    this.host = spec.host;
    this.port = spec.port;
    this.configuredWeight = spec.weight;
    this.weight = spec.weight;
    this.spec = spec;
  }

  get address(): string {
    return formatHostPort(this);
  }

  /** Eligible for new connections: positive weight and no flag set. */
  get eligible(): boolean {
    return this.flags === 0 && this.configuredWeight > 0;
  }

  /** Why the endpoint is out of the pick set (empty when it is in). */
  get outReasons(): string[] {
    const r = describeFlags(this.flags);
    if (this.weight <= 0) r.push('weight-0');
    return r;
  }

  /** Sets the flag bits, remembering when each changed. */
  setFlags(next: number, at: number = Date.now()): void {
    const changed = this.flags ^ next;
    for (let bit = 1; bit <= changed; bit <<= 1) if (changed & bit) this.flagChangedAt.set(bit, at);
    this.flags = next;
  }

  record(what: string, at: number = Date.now()): void {
    if (this.history.length >= HISTORY) this.history.shift();
    this.history.push({ at, what });
  }

  /**
   * Peak EWMA (as in Finagle and linkerd): a slower observation is taken at once,
   * faster ones pull the average down with a time constant of `tauMs`, so one slow
   * endpoint is avoided quickly and forgiven gradually.
   */
  observeLatency(ms: number, nowMs: number, tauMs = 10_000): void {
    if (this.latency === 0 || ms > this.latency) {
      this.latency = ms;
    } else {
      const w = Math.exp(-(nowMs - this.latencyAt) / tauMs);
      this.latency = this.latency * w + ms * (1 - w);
    }
    this.latencyAt = nowMs;
  }
}
