/**
 * What the admin API shows: plain JSON-able views of the pool, readiness and
 * explanations, built on demand (never on the hot path).
 */
import { describeFlags, Flag, flagNames, formatHostPort, type FlagBit } from '../core/types.js';
import { ownCounters, type CountersOf, type EndpointState } from '../pool/endpoint.js';
import type { Pool } from '../pool/pool.js';

export interface EndpointView {
  readonly id: string;
  readonly service: string;
  readonly address: string;
  readonly sources: string[];
  readonly weight: number;
  readonly configuredWeight: number;
  /** In the pick set. */
  readonly eligible: boolean;
  /** "up" when eligible, else the reasons (draining, docker-unhealthy, weight-0 ...). */
  readonly health: string;
  readonly outReasons: string[];
  readonly draining: boolean;
  readonly activeConnections: number;
  readonly maxConnections: number;
  readonly connectionsTotal: number;
  readonly failuresTotal: number;
  /** Peak-EWMA connect latency, ms. */
  readonly latencyMs: number;
  /** New connections per second over the last sampling window. */
  readonly connectionRate: number;
  /** The operator's drain or weight over what discovery says (admin API), with who and when; null: none. */
  readonly override: { readonly drained: { readonly at: string; readonly by: string } | null; readonly weight: { readonly value: number; readonly at: string; readonly by: string } | null } | null;
}

export interface ServiceView {
  readonly name: string;
  readonly balance: string;
  readonly listeners: string[];
  readonly eligible: number;
  /** Nothing healthy and panic: spread is routing to unfit endpoints. */
  readonly panic: boolean;
  readonly endpoints: EndpointView[];
}

export interface ProviderView {
  readonly name: string;
  readonly connected: boolean;
  readonly synced: boolean;
  readonly lastSync: string | null;
  readonly skipped: { readonly container: string; readonly reason: string }[];
}

export interface Readiness {
  readonly ready: boolean;
  readonly reasons: string[];
  /** Degraded but serving (e.g. the engine is away and the last known endpoints are used). */
  readonly notes: string[];
}

/** Per-endpoint connection totals sampled every few seconds, for rates. */
export class RateSampler {
  private prev = new Map<EndpointState, { at: number; total: number }>();
  private rates = new Map<EndpointState, number>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly pool: Pool,
    private readonly everyMs = 5000,
    private readonly countersOf: CountersOf = ownCounters,
  ) {}

  start(): void {
    this.sample();
    this.timer = setInterval(() => this.sample(), this.everyMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  sample(now: number = Date.now()): void {
    const next = new Map<EndpointState, { at: number; total: number }>();
    for (const s of this.pool.services.values()) {
      for (const e of s.endpoints.values()) {
        const p = this.prev.get(e);
        const total = this.countersOf(e).connections;
        if (p && now > p.at) this.rates.set(e, ((total - p.total) * 1000) / (now - p.at));
        next.set(e, { at: now, total });
      }
    }
    for (const e of this.rates.keys()) if (!next.has(e)) this.rates.delete(e);
    this.prev = next;
  }

  rate(e: EndpointState): number {
    return this.rates.get(e) ?? 0;
  }
}

export function endpointView(e: EndpointState, rates?: RateSampler, cap: number = e.spec.maxConnections ?? 0, countersOf: CountersOf = ownCounters): EndpointView {
  const out = e.outReasons;
  const c = countersOf(e);
  return {
    id: e.id,
    service: e.service,
    address: e.address,
    sources: [...e.sources.keys()],
    weight: e.weight,
    configuredWeight: e.configuredWeight,
    eligible: e.eligible,
    health: e.eligible ? 'up' : out.join(', '),
    outReasons: out,
    draining: (e.flags & Flag.Draining) !== 0,
    activeConnections: c.active,
    maxConnections: cap,
    connectionsTotal: c.connections,
    failuresTotal: c.failures,
    latencyMs: Math.round(c.latency * 1000) / 1000,
    connectionRate: Math.round((rates?.rate(e) ?? 0) * 100) / 100,
    override:
      e.override === null
        ? null
        : {
            drained: e.override.drained ? { at: new Date(e.override.drained.at).toISOString(), by: e.override.drained.by } : null,
            weight: e.override.weight ? { value: e.override.weight.value, at: new Date(e.override.weight.at).toISOString(), by: e.override.weight.by } : null,
          },
  };
}

/** The operator's part in an endpoint's state, in words ("drained by 127.0.0.1 at …"). */
function overrideWords(e: EndpointState): string[] {
  const out: string[] = [];
  const o = e.override;
  if (o?.drained) out.push(`drained by ${o.drained.by} at ${new Date(o.drained.at).toISOString()}`);
  if (o?.weight) out.push(`weight ${o.weight.value} set by ${o.weight.by} at ${new Date(o.weight.at).toISOString()} (discovery says ${e.spec.weight})`);
  return out;
}

export function servicesView(pool: Pool, listeners: readonly { readonly name: string; readonly service: string }[], rates?: RateSampler, countersOf: CountersOf = ownCounters): ServiceView[] {
  return [...pool.services.values()]
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((s) => ({
      name: s.name,
      balance: s.balance,
      listeners: listeners.filter((l) => l.service === s.name).map((l) => l.name),
      eligible: s.eligibleCount,
      panic: s.inPanic,
      endpoints: [...s.endpoints.values()].sort((a, b) => a.id.localeCompare(b.id)).map((e) => endpointView(e, rates, s.capOf(e), countersOf)),
    }));
}

/** The explanation of one endpoint: where it came from, each health input with its time, history, pick-set verdict. */
export function explainEndpoint(e: EndpointState, rates?: RateSampler, cap: number = e.spec.maxConnections ?? 0, countersOf: CountersOf = ownCounters) {
  const inputs = Object.entries(flagNames).map(([bit, name]) => {
    const b = Number(bit) as FlagBit;
    const at = e.flagChangedAt.get(b);
    return { input: name, failing: (e.flags & b) !== 0, since: at !== undefined ? new Date(at).toISOString() : new Date(e.addedAt).toISOString() };
  });
  const out = describeFlags(e.flags);
  if (e.weight <= 0) out.push('weight-0');
  const active = countersOf(e).active;
  const atCap = cap > 0 && active >= cap;
  return {
    ...endpointView(e, rates, cap, countersOf),
    address: formatHostPort(e),
    origin: [...e.sources.entries()].map(([provider, spec]) => ({ provider, address: formatHostPort(spec), weight: spec.weight, details: spec.labels ?? {} })),
    joined: new Date(e.addedAt).toISOString(),
    healthInputs: inputs,
    inPickSet: e.eligible,
    why:
      (e.eligible ? (atCap ? `in the pick set, but at its connection cap (${active}/${cap}): passed over until one closes` : 'in the pick set') : `out of the pick set: ${out.join(', ')}`) +
      overrideWords(e).map((w) => `; ${w}`).join(''),
    recentEvents: e.history.map((h) => ({ at: new Date(h.at).toISOString(), what: h.what })),
  };
}
