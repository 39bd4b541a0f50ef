import type { BalancerHost } from '../balancer/types.js';
import { describeFlags, formatHostPort, type EndpointSpec } from '../core/types.js';

/** One line of an endpoint's recent history, for the explain endpoint and logs. */
export interface EndpointEvent {
  /** Wall-clock time, ms since the epoch. */
  readonly at: number;
  readonly what: string;
}

const HISTORY = 16;

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

/**
 * The runtime state of one endpoint of one service, as everything outside the pool
 * sees it: read-only. The pool is its only writer (the class behind it,
 * MutableEndpoint, is imported by src/pool alone; lint enforces that); the proxy
 * changes it only through Pool.acquire/release/report.
 */
export interface EndpointState extends BalancerHost, EndpointCounters {
  readonly service: string;
  readonly id: string;
  readonly host: string;
  readonly port: number;
  /** Configured weight from the winning provider spec, 0–1000. */
  readonly configuredWeight: number;
  /** Weight the balancer uses (slow start may hold it below the configured one). */
  readonly weight: number;
  /** Health and lifecycle bits (core/types Flag); 0 means fit. */
  readonly flags: number;
  /** Wall-clock ms at which each flag bit last changed (set or cleared). */
  readonly flagChangedAt: ReadonlyMap<number, number>;
  /** Wall-clock ms at which the endpoint joined. */
  readonly addedAt: number;
  /** When it joined on the pool's clock (ms). */
  readonly joinedAt: number;
  /** Peak EWMA of the connect time (tcp), ms; 0 while unknown. */
  readonly connectLatency: number;
  /** Peak EWMA of the time to the response head (http), ms; 0 while unknown. */
  readonly responseLatency: number;
  /** Slow start: clock ms when the ramp began, or null when at full weight. */
  readonly rampStart: number | null;
  /** Outlier detection: failures since the last success, and times ejected. */
  readonly consecutiveFailures: number;
  readonly ejections: number;
  /** Provider name → the spec it gave. */
  readonly sources: ReadonlyMap<string, EndpointSpec>;
  readonly history: readonly EndpointEvent[];
  /** The winning provider's spec. */
  readonly spec: EndpointSpec;
  /** host:port ([v6]:port). */
  readonly address: string;
  /** Eligible for new connections: positive weight and no flag set. */
  readonly eligible: boolean;
  /** Why the endpoint is out of the pick set (empty when it is in). */
  readonly outReasons: string[];
  /** An operator's drain or weight, over what discovery says (null: none). */
  readonly override: OperatorOverride | null;
}

/** Who changed something, and when (wall-clock ms): an operator override's stamp. */
export interface OverrideStamp {
  readonly at: number;
  readonly by: string;
}

/**
 * The operator's word over discovery for one endpoint (admin API, `berth drain`): kept
 * through label changes, reloads and resyncs until undone or the endpoint leaves.
 */
export interface OperatorOverride {
  /** Drained: out of the pick set (open connections go on). */
  readonly drained: OverrideStamp | null;
  /** A weight of the operator's, over the provider's. */
  readonly weight: (OverrideStamp & { readonly value: number }) | null;
}

/** Where counters are read from: the endpoint itself, or (a --workers primary) the sum over the workers. */
export type CountersOf = (e: EndpointState) => EndpointCounters;
export const ownCounters: CountersOf = (e) => e;

/**
 * Peak EWMA (as in Finagle and linkerd): a slower observation is taken at once,
 * faster ones pull the average down with a time constant of `tauMs`, so one slow
 * endpoint is avoided quickly and forgiven gradually.
 */
export class PeakEwma {
  value = 0;
  private at = 0;
  observe(ms: number, nowMs: number, tauMs = 10_000): void {
    if (this.value === 0 || ms > this.value) {
      this.value = ms;
    } else {
      const w = Math.exp(-(nowMs - this.at) / tauMs);
      this.value = this.value * w + ms * (1 - w);
    }
    this.at = nowMs;
  }
}

/** The pool's own, writable endpoint. Only src/pool imports this class. */
export class MutableEndpoint implements EndpointState {
  readonly service: string;
  readonly id: string;
  host: string;
  port: number;
  configuredWeight: number;
  weight: number;
  flags = 0;
  readonly flagChangedAt = new Map<number, number>();
  readonly addedAt: number;
  joinedAt: number;
  active = 0;
  /**
   * Two measures, never mixed in one average: what a tcp listener can see (connect
   * time) and what an http listener sees (time to the response head).
   */
  readonly connectEwma = new PeakEwma();
  readonly responseEwma = new PeakEwma();
  readonly sources = new Map<string, EndpointSpec>();
  connections = 0;
  failures = 0;
  /** Whether the endpoint was eligible at the last publish (slow start watches the transitions). */
  wasEligible = false;
  rampStart: number | null = null;
  consecutiveFailures = 0;
  ejections = 0;
  readonly history: EndpointEvent[] = [];
  spec: EndpointSpec;
  override: OperatorOverride | null = null;

  constructor(service: string, spec: EndpointSpec, joinedAt: number, wallNow: number) {
    this.service = service;
    this.id = spec.id;
    this.host = spec.host;
    this.port = spec.port;
    this.configuredWeight = spec.weight;
    this.weight = spec.weight;
    this.spec = spec;
    this.joinedAt = joinedAt;
    this.addedAt = wallNow;
  }

  get address(): string {
    return formatHostPort(this);
  }

  get connectLatency(): number {
    return this.connectEwma.value;
  }

  get responseLatency(): number {
    return this.responseEwma.value;
  }

  /**
   * What latency-aware balancing (p2c) reads: the response time where an http
   * listener has measured it, else the connect time.
   */
  get latency(): number {
    return this.responseEwma.value > 0 ? this.responseEwma.value : this.connectEwma.value;
  }

  get eligible(): boolean {
    return this.flags === 0 && this.configuredWeight > 0;
  }

  get outReasons(): string[] {
    const r = describeFlags(this.flags);
    if (this.weight <= 0) r.push('weight-0');
    return r;
  }

  /** Sets the flag bits, remembering (wall-clock ms) when each changed. */
  setFlags(next: number, at: number): void {
    const changed = this.flags ^ next;
    for (let bit = 1; bit <= changed; bit <<= 1) if (changed & bit) this.flagChangedAt.set(bit, at);
    this.flags = next;
  }

  record(what: string, at: number): void {
    if (this.history.length >= HISTORY) this.history.shift();
    this.history.push({ at, what });
  }
}
