import { createBalancer, NONE_FULL, type Balancer, type PickContext, type PickResult } from '../balancer/index.js';
import { systemClock, type Clock } from '../core/clock.js';
import { systemRandom, type Random } from '../core/random.js';
import { describeFlags, Flag, HEALTH_FLAGS, PROVIDER_FLAGS, specFlags, type BalanceAlgorithm, type EndpointSpec, type ProviderSnapshot } from '../core/types.js';
import { EndpointState } from './endpoint.js';

export type PoolEvent =
  | { readonly type: 'endpoint-added'; readonly endpoint: EndpointState }
  | { readonly type: 'endpoint-updated'; readonly endpoint: EndpointState; readonly what: string }
  | { readonly type: 'endpoint-draining'; readonly endpoint: EndpointState }
  | { readonly type: 'endpoint-removed'; readonly endpoint: EndpointState }
  | { readonly type: 'picker-updated'; readonly service: string; readonly eligible: number; readonly total: number; readonly panic: boolean };

export type PoolListener = (e: PoolEvent) => void;

/** A named pool of endpoints and the balancer over its eligible ones. */
/** Passive outlier detection settings of a service (ms). */
export interface OutlierSettings {
  readonly consecutiveFailures: number;
  readonly ejectFor: number;
  readonly maxEjectFor: number;
  /** Never eject more than this share (0–100) of a service's endpoints. */
  readonly maxEjectedPercent: number;
}

export interface ServiceSettings {
  readonly balance: BalanceAlgorithm;
  /** Nothing healthy: "fail" turns clients away; "spread" routes to every endpoint that is not leaving. */
  readonly panic?: 'fail' | 'spread';
  readonly outlier?: OutlierSettings | undefined;
  /** Ramp time for a new or recovered endpoint's weight, ms (0 = off). */
  readonly slowStart?: number;
  /** Cap on open connections per endpoint unless the endpoint has its own (0 = none). */
  readonly maxConnectionsPerEndpoint?: number;
  /** Clients that may wait when every endpoint is at its cap, and for how long (ms). */
  readonly queue?: { readonly size: number; readonly timeout: number };
  /** Clients waiting for an endpoint (connecting or queued) beyond which new ones are turned away (0 = none). */
  readonly maxPending?: number;
  /** tcp: replay held client bytes on another endpoint after an accepted connection reset. */
  readonly replay?: boolean;
}

/** A discovered endpoint is not ejected as an outlier in its first this many ms (it may still be starting). */
export const STARTING_GRACE_MS = 10_000;

/** Slow start begins at this share of the configured weight. */
export const SLOW_START_FLOOR = 0.1;

export class ServicePool {
  readonly name: string;
  balance: BalanceAlgorithm;
  panic: 'fail' | 'spread' = 'fail';
  outlier: OutlierSettings | undefined = undefined;
  slowStart = 0;
  maxPerEndpoint = 0;
  queue: { size: number; timeout: number } = { size: 0, timeout: 0 };
  maxPending = 0;
  replay = false;
  /** Clients now waiting for an endpoint (connecting or queued): the circuit breaker's count. */
  pending = 0;
  /** Clients queued because every endpoint is at its cap; woken in order as connections close. */
  readonly waiters: (() => void)[] = [];
  /** Endpoints whose weight is ramping up. */
  readonly ramping = new Set<EndpointState>();
  /** True while nothing is healthy and panic: spread routes to unfit endpoints. */
  inPanic = false;
  readonly endpoints = new Map<string, EndpointState>();
  /** Immutable between changes: rebuilt (not mutated) when the eligible set changes. */
  private balancer: Balancer<EndpointState>;
  /** Healthy endpoints in the pick set (0 in panic, when the pick set holds unfit ones). */
  eligibleCount = 0;

  constructor(name: string, balance: BalanceAlgorithm, random: Random) {
    this.name = name;
    this.balance = balance;
    this.balancer = createBalancer(balance, [], { random });
  }

  /** True when some eligible endpoint has a connection cap. */
  private capped = false;

  /**
   * Picks an endpoint. An endpoint at its connection cap (maxConnections) is
   * passed over for the next choice of the balancer, like HAProxy's maxconn.
   */
  pick(ctx?: PickContext<EndpointState>): PickResult<EndpointState> {
    const r = this.balancer.pick(ctx);
    if (!this.capped || r.type === 'none' || !this.atCap(r.host)) return r;
    const exclude = new Set(ctx?.exclude);
    exclude.add(r.host);
    for (let i = 1; i < this.balancer.size; i++) {
      const next = this.balancer.pick({ key: ctx?.key, exclude });
      if (next.type === 'none') break;
      if (!this.atCap(next.host)) return next;
      exclude.add(next.host);
    }
    return NONE_FULL;
  }

  /** An endpoint's own cap (maxConnections), else the service's maxConnectionsPerEndpoint. */
  capOf(e: EndpointState): number {
    return e.spec.maxConnections ?? this.maxPerEndpoint;
  }

  atCap(e: EndpointState): boolean {
    const max = this.capOf(e);
    return max > 0 && e.active >= max;
  }

  /**
   * Waits for a free slot: `wake` runs when a connection of this service closes, or
   * `expire` after the queue timeout. Returns a cancel function, or null when the
   * queue is full (or off).
   */
  enqueue(wake: () => void, expire: () => void): (() => void) | null {
    if (this.waiters.length >= this.queue.size) return null;
    const timer = setTimeout(() => {
      const i = this.waiters.indexOf(entry);
      if (i >= 0) this.waiters.splice(i, 1);
      expire();
    }, this.queue.timeout);
    const entry = () => {
      clearTimeout(timer);
      wake();
    };
    this.waiters.push(entry);
    return () => {
      clearTimeout(timer);
      const i = this.waiters.indexOf(entry);
      if (i >= 0) this.waiters.splice(i, 1);
    };
  }

  /** @internal the pool calls this after every change to the service. */
  rebuild(random: Random): void {
    let eligible: EndpointState[] = [];
    for (const e of this.endpoints.values()) if (e.eligible) eligible.push(e);
    this.inPanic = false;
    if (eligible.length === 0 && this.panic === 'spread') {
      // Panic: better an unfit endpoint than none, but never one that is leaving.
      eligible = [...this.endpoints.values()].filter((e) => e.weight > 0 && (e.flags & ~HEALTH_FLAGS) === 0);
      this.inPanic = eligible.length > 0;
    }
    // Stable order (by id) so that round-robin sequences and hash tables do not
    // depend on the order providers happened to report endpoints in.
    eligible.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    this.balancer = createBalancer(this.balance, eligible, { random });
    this.eligibleCount = this.inPanic ? 0 : eligible.length;
    this.capped = eligible.some((e) => this.capOf(e) > 0);
  }
}

export interface PoolOptions {
  readonly random?: Random;
  readonly clock?: Clock;
  /** Provider names in precedence order: when two give the same endpoint id, the first wins. */
  readonly providerOrder?: readonly string[];
}

/**
 * The single writer of endpoint state. Providers hand it full snapshots; it works
 * out the minimal change (added, updated, removed), drains removed endpoints that
 * still have connections, and swaps in a new balancer for each service it touched.
 */
export class Pool {
  readonly services = new Map<string, ServicePool>();
  private readonly snapshots = new Map<string, ReadonlyMap<string, readonly EndpointSpec[]>>();
  private readonly listeners: PoolListener[] = [];
  private readonly random: Random;
  readonly clock: Clock;
  private readonly providerOrder: readonly string[];

  constructor(opts: PoolOptions = {}) {
    this.random = opts.random ?? systemRandom;
    this.clock = opts.clock ?? systemClock;
    this.providerOrder = opts.providerOrder ?? ['static', 'docker', 'swarm', 'dns'];
  }

  on(listener: PoolListener): () => void {
    this.listeners.push(listener);
    return () => {
      const i = this.listeners.indexOf(listener);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }

  private emit(e: PoolEvent): void {
    for (const l of this.listeners) l(e);
  }

  /** Creates the service if needed, and applies its settings (rebuilding on change). */
  configureService(name: string, settings: BalanceAlgorithm | ServiceSettings): ServicePool {
    const o: ServiceSettings = typeof settings === 'string' ? { balance: settings } : settings;
    let s = this.services.get(name);
    if (!s) {
      s = new ServicePool(name, o.balance, this.random);
      this.services.set(name, s);
    }
    s.outlier = o.outlier;
    s.slowStart = o.slowStart ?? 0;
    s.queue = o.queue ?? { size: 0, timeout: 0 };
    s.maxPending = o.maxPending ?? 0;
    s.replay = o.replay ?? false;
    if ((o.maxConnectionsPerEndpoint ?? 0) !== s.maxPerEndpoint) {
      s.maxPerEndpoint = o.maxConnectionsPerEndpoint ?? 0;
      this.publish(s);
    }
    const panic = o.panic ?? 'fail';
    if (s.balance !== o.balance || s.panic !== panic) {
      s.balance = o.balance;
      s.panic = panic;
      this.publish(s);
    }
    return s;
  }

  service(name: string): ServicePool | undefined {
    return this.services.get(name);
  }

  private rank(provider: string): number {
    const i = this.providerOrder.indexOf(provider);
    return i < 0 ? this.providerOrder.length : i;
  }

  /**
   * Applies a provider's full snapshot. Returns the number of endpoints that
   * changed (0 for a duplicate snapshot, which rebuilds nothing).
   */
  applySnapshot(snap: ProviderSnapshot): number {
    const prev = this.snapshots.get(snap.provider) ?? new Map<string, readonly EndpointSpec[]>();
    this.snapshots.set(snap.provider, snap.services);
    const touched = new Set<string>([...prev.keys(), ...snap.services.keys()]);
    let changes = 0;
    for (const serviceName of touched) {
      const s = this.services.get(serviceName) ?? this.configureService(serviceName, 'least-conn');
      const n = this.reconcileService(s, snap.provider, snap.services.get(serviceName) ?? []);
      if (n > 0) {
        changes += n;
        this.publish(s);
      }
    }
    return changes;
  }

  private reconcileService(s: ServicePool, provider: string, specs: readonly EndpointSpec[]): number {
    let changes = 0;
    const wanted = new Map<string, EndpointSpec>();
    for (const spec of specs) wanted.set(spec.id, spec);
    // Endpoints this provider no longer reports.
    for (const e of s.endpoints.values()) {
      if (e.sources.has(provider) && !wanted.has(e.id)) {
        e.sources.delete(provider);
        changes += this.settle(s, e, `${provider}: removed`);
      }
    }
    for (const spec of wanted.values()) {
      let e = s.endpoints.get(spec.id);
      if (!e) {
        e = new EndpointState(s.name, spec);
        e.joinedAt = this.clock.now();
        e.setFlags(specFlags(spec));
        e.sources.set(provider, spec);
        e.record(`${provider}: added ${e.address} weight ${spec.weight}${e.flags ? ` (out: ${describeFlags(e.flags).join(', ')})` : ''}`);
        s.endpoints.set(e.id, e);
        this.emit({ type: 'endpoint-added', endpoint: e });
        changes++;
        continue;
      }
      const old = e.sources.get(provider);
      if (old && sameSpec(old, spec) && !(e.flags & Flag.Draining)) continue;
      e.sources.set(provider, spec);
      changes += this.settle(s, e, `${provider}: updated`);
    }
    return changes;
  }

  /** Re-derives an endpoint from its remaining sources: update, drain or remove it. */
  private settle(s: ServicePool, e: EndpointState, why: string): number {
    if (e.sources.size === 0) {
      if (e.active > 0) {
        if (e.flags & Flag.Draining) return 0;
        e.setFlags(e.flags | Flag.Draining);
        e.record(`${why}; draining ${e.active} open connection(s)`);
        this.emit({ type: 'endpoint-draining', endpoint: e });
        return 1;
      }
      this.remove(s, e, why);
      return 1;
    }
    // The highest-precedence provider's spec wins.
    let best: EndpointSpec | undefined;
    let bestRank = Infinity;
    for (const [p, spec] of e.sources) {
      const r = this.rank(p);
      if (r < bestRank) {
        bestRank = r;
        best = spec;
      }
    }
    const spec = best!;
    const parts: string[] = [];
    if (e.flags & Flag.Draining) {
      e.setFlags(e.flags & ~Flag.Draining);
      parts.push('back from draining');
    }
    if (spec.host !== e.host || spec.port !== e.port) {
      e.host = spec.host;
      e.port = spec.port;
      parts.push(`address ${e.address}`);
    }
    if (spec.weight !== e.configuredWeight) {
      e.configuredWeight = spec.weight;
      if (e.rampStart === null) e.weight = spec.weight;
      parts.push(`weight ${spec.weight}`);
    }
    const flags = (e.flags & ~PROVIDER_FLAGS) | specFlags(spec);
    if (flags !== e.flags) {
      const was = e.flags;
      e.setFlags(flags);
      const on = describeFlags(flags & ~was);
      const off = describeFlags(was & ~flags);
      if (on.length) parts.push(`out: ${on.join(', ')}`);
      if (off.length) parts.push(`no longer ${off.join(', ')}`);
    }
    // Labels carry routes (berth.http.*) and health paths: a change there is a change
    // that listeners and checks must hear of, even when nothing else moved.
    if (!sameLabels(e.spec.labels, spec.labels)) parts.push('labels');
    if (spec.maxConnections !== e.spec.maxConnections) parts.push(`maxConnections ${spec.maxConnections ?? 'unset'}`);
    e.spec = spec;
    if (parts.length === 0) return 0;
    const what = parts.join(', ');
    e.record(`${why}: ${what}`);
    this.emit({ type: 'endpoint-updated', endpoint: e, what });
    return 1;
  }

  private remove(s: ServicePool, e: EndpointState, why: string): void {
    s.endpoints.delete(e.id);
    s.ramping.delete(e);
    if (e.ejectTimer) clearTimeout(e.ejectTimer);
    e.record(`${why}; removed`);
    this.emit({ type: 'endpoint-removed', endpoint: e });
  }

  private publish(s: ServicePool): void {
    const before = s.eligibleCount;
    const panicBefore = s.inPanic;
    this.startRamps(s);
    s.rebuild(this.random);
    if (before !== s.eligibleCount || panicBefore !== s.inPanic) {
      this.emit({ type: 'picker-updated', service: s.name, eligible: s.eligibleCount, total: s.endpoints.size, panic: s.inPanic });
    }
  }

  /**
   * Slow start: an endpoint that has just become eligible (new, or back from any
   * exclusion) while others are serving starts at SLOW_START_FLOOR of its weight and
   * ramps linearly to the full weight over `slowStart`. Endpoints of a service that
   * had none serving start at full weight: there is nobody to spare them from.
   */
  private startRamps(s: ServicePool): void {
    if (s.slowStart <= 0) return;
    let serving = 0;
    for (const e of s.endpoints.values()) if (e.eligible && e.wasEligible) serving++;
    const now = this.clock.now();
    for (const e of s.endpoints.values()) {
      const eligible = e.flags === 0 && e.configuredWeight > 0;
      if (eligible && !e.wasEligible && serving > 0 && e.rampStart === null) {
        e.rampStart = now;
        e.record(`slow start: ramping to weight ${e.configuredWeight} over ${s.slowStart}ms`);
        s.ramping.add(e);
      }
      e.wasEligible = eligible;
    }
    this.applyRamps(s, now);
    if (s.ramping.size > 0 && !this.rampTimer) {
      this.rampTimer = setInterval(() => this.tickSlowStart(), 100);
      this.rampTimer.unref();
    }
  }

  private rampTimer: NodeJS.Timeout | null = null;

  /** Sets ramping endpoints' weights for time `now`; returns whether any changed. */
  private applyRamps(s: ServicePool, now: number): boolean {
    let changed = false;
    for (const e of s.ramping) {
      const f = Math.min(1, SLOW_START_FLOOR + ((1 - SLOW_START_FLOOR) * (now - e.rampStart!)) / s.slowStart);
      const w = f >= 1 ? e.configuredWeight : e.configuredWeight * f;
      if (w !== e.weight) {
        e.weight = w;
        changed = true;
      }
      if (f >= 1 || !e.eligible) {
        e.rampStart = null;
        e.weight = e.configuredWeight;
        s.ramping.delete(e);
        if (f >= 1) e.record('slow start: full weight');
      }
    }
    return changed;
  }

  /** Advances every slow-start ramp to the clock's now (a timer calls this; tests call it with a fake clock). */
  tickSlowStart(): void {
    const now = this.clock.now();
    let any = false;
    for (const s of this.services.values()) {
      if (s.ramping.size === 0) continue;
      any = true;
      if (this.applyRamps(s, now)) s.rebuild(this.random);
    }
    if (!any && this.rampTimer) {
      clearInterval(this.rampTimer);
      this.rampTimer = null;
    }
  }

  /** Sets or clears a health/lifecycle flag on an endpoint. */
  setFlag(service: string, id: string, flag: number, on: boolean, why: string): boolean {
    const s = this.services.get(service);
    const e = s?.endpoints.get(id);
    if (!s || !e) return false;
    const next = on ? e.flags | flag : e.flags & ~flag;
    if (next === e.flags) return false;
    e.setFlags(next);
    e.record(why);
    this.emit({ type: 'endpoint-updated', endpoint: e, what: why });
    this.publish(s);
    return true;
  }

  /** A connection to `e` opened. */
  acquire(e: EndpointState): void {
    e.active++;
    e.connections++;
  }

  /** A connection to `e` closed; a draining endpoint leaves when its last one does. */
  release(e: EndpointState): void {
    e.active--;
    const svc = this.services.get(e.service);
    // A slot opened: the longest-waiting queued client tries again (after this call returns).
    if (svc && svc.waiters.length > 0) queueMicrotask(() => svc.waiters.shift()?.());
    if (e.active === 0 && e.flags & Flag.Draining && e.sources.size === 0) {
      const s = this.services.get(e.service);
      if (s && s.endpoints.get(e.id) === e) {
        this.remove(s, e, 'drained');
        this.publish(s);
      }
    }
  }

  /**
   * A connect to `e` failed. With outlier detection on, `consecutiveFailures` in a
   * row eject it for ejectFor × times ejected (capped at maxEjectFor), unless that
   * would eject more than maxEjectedPercent of the service (no ejection cascade).
   */
  failed(e: EndpointState): void {
    e.failures++;
    e.consecutiveFailures++;
    const s = this.services.get(e.service);
    const o = s?.outlier;
    if (!s || !o || e.flags & Flag.Outlier || e.consecutiveFailures < o.consecutiveFailures) return;
    // A container discovery has just reported may still be starting to listen: its
    // refusals are retried elsewhere all the same, but do not eject it yet.
    if (!e.sources.has('static') && this.clock.now() - e.joinedAt < STARTING_GRACE_MS) return;
    let ejected = 0;
    for (const x of s.endpoints.values()) if (x.flags & Flag.Outlier) ejected++;
    if (((ejected + 1) * 100) / s.endpoints.size > o.maxEjectedPercent) {
      e.record(`outlier: ${e.consecutiveFailures} failures in a row, not ejected (would exceed ${o.maxEjectedPercent}% ejected)`);
      return;
    }
    e.ejections++;
    const ms = Math.min(o.maxEjectFor, o.ejectFor * e.ejections);
    this.setFlag(s.name, e.id, Flag.Outlier, true, `outlier: ejected for ${ms}ms after ${e.consecutiveFailures} connect failures in a row (ejection ${e.ejections})`);
    e.ejectTimer = setTimeout(() => this.endEjection(e, 'ejection time over'), ms);
    e.ejectTimer.unref();
  }

  /** A connect to `e` succeeded. */
  succeeded(e: EndpointState): void {
    e.consecutiveFailures = 0;
  }

  /** Ends an outlier ejection (its time is over, or an active check passed). */
  endEjection(e: EndpointState, why: string): void {
    if (e.ejectTimer) clearTimeout(e.ejectTimer);
    e.ejectTimer = null;
    e.consecutiveFailures = 0;
    this.setFlag(e.service, e.id, Flag.Outlier, false, `outlier: back (${why})`);
  }

  /** Total open connections across every endpoint (drain progress on shutdown). */
  activeTotal(): number {
    let n = 0;
    for (const s of this.services.values()) for (const e of s.endpoints.values()) n += e.active;
    return n;
  }
}

function sameSpec(a: EndpointSpec, b: EndpointSpec): boolean {
  return (
    a.host === b.host &&
    a.port === b.port &&
    a.weight === b.weight &&
    a.maxConnections === b.maxConnections &&
    a.health === b.health &&
    a.stopping === b.stopping &&
    a.paused === b.paused &&
    sameLabels(a.labels, b.labels)
  );
}

function sameLabels(a: Readonly<Record<string, string>> | undefined, b: Readonly<Record<string, string>> | undefined): boolean {
  if (a === b) return true;
  if (!a || !b) return false;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) if (a[k] !== b[k]) return false;
  return true;
}
