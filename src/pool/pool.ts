import type { PickContext, PickResult } from '../balancer/index.js';
import { systemClock, type Clock, type Timer } from '../core/clock.js';
import { systemRandom, type Random } from '../core/random.js';
import { describeFlags, Flag, PROVIDER_FLAGS, specFlags, type BalanceAlgorithm, type EndpointSpec, type ProviderSnapshot, type RouteSpec } from '../core/types.js';
import { Admission, type QueueSettings } from './admission.js';
import { MutableEndpoint, type EndpointState, type OperatorOverride, type OverrideStamp } from './endpoint.js';
import { OutlierDetector, type OutlierSettings } from './outlier.js';
import { Picker } from './picker.js';
import { SlowStart } from './slow-start.js';

export type { OutlierSettings } from './outlier.js';
export { STARTING_GRACE_MS } from './outlier.js';
export { SLOW_START_FLOOR } from './slow-start.js';

export type PoolEvent =
  | { readonly type: 'endpoint-added'; readonly endpoint: EndpointState }
  | { readonly type: 'endpoint-updated'; readonly endpoint: EndpointState; readonly what: string }
  | { readonly type: 'endpoint-draining'; readonly endpoint: EndpointState }
  | { readonly type: 'endpoint-removed'; readonly endpoint: EndpointState }
  | { readonly type: 'picker-updated'; readonly service: string; readonly eligible: number; readonly total: number; readonly panic: boolean };

export type PoolListener = (e: PoolEvent) => void;

/**
 * An operator's change (the admin API, `berth drain|undrain|weight`): one endpoint, or
 * (drain/undrain with `endpoint` null) every endpoint of the service, those that join
 * it later included. `weight` null gives the endpoint back the weight discovery says.
 * A --workers primary applies it to its pool and sends it to every worker.
 */
/**
 * Every override a pool holds, as one value: a --workers primary sends it whole after
 * each change (and to a worker that starts), and the worker takes it in place of its
 * own, so the two cannot drift.
 */
export interface OverrideState {
  /** Services drained whole (their newcomers join drained). */
  readonly services: readonly (readonly [string, OverrideStamp])[];
  /** Each endpoint's override: [service, endpoint id, override]. */
  readonly endpoints: readonly (readonly [string, string, OperatorOverride])[];
}

export type OverrideOp =
  | { readonly op: 'drain' | 'undrain'; readonly service: string; readonly endpoint: string | null; readonly at: number; readonly by: string }
  | { readonly op: 'weight'; readonly service: string; readonly endpoint: string; readonly weight: number | null; readonly at: number; readonly by: string };

/** An http route that an endpoint asked for, to its service. */
export interface ServiceRoute extends RouteSpec {
  readonly service: string;
}

/**
 * What an attempt on an endpoint came to, as the proxy reports it (Pool.report):
 * - connected: a tcp connect (and TLS handshake) completed in `ms`;
 * - answered: an http endpoint's response head came after `ms`;
 * - broken: it answered in `ms`, but 502/503/504 ("I am broken"): counts as a failure;
 * - failed: the connect failed or timed out, or the answer was malformed or late.
 */
export type Outcome = 'connected' | 'answered' | 'broken' | 'failed';

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
  readonly queue?: QueueSettings;
  /** Clients waiting for an endpoint (connecting or queued) beyond which new ones are turned away (0 = none). */
  readonly maxPending?: number;
  /** tcp: replay held client bytes on another endpoint after an accepted connection reset. */
  readonly replay?: boolean;
}

/** A named pool of endpoints as everything outside the pool sees it: read-only, with the current picker. */
export interface ServicePool {
  readonly name: string;
  readonly balance: BalanceAlgorithm;
  readonly panic: 'fail' | 'spread';
  readonly outlier: OutlierSettings | undefined;
  /** Slow-start ramp, ms (0 = off). */
  readonly slowStart: number;
  readonly maxPerEndpoint: number;
  readonly queue: QueueSettings;
  readonly maxPending: number;
  readonly replay: boolean;
  /** Clients now waiting for an endpoint (connecting or queued): the circuit breaker's count. */
  readonly pending: number;
  /** Clients in the wait queue. */
  readonly queued: number;
  /** Endpoints whose weight is ramping up (slow start). */
  readonly ramping: number;
  readonly endpoints: ReadonlyMap<string, EndpointState>;
  /** The current pick set: replaced, never changed, when the service changes. */
  readonly picker: Picker;
  /** Healthy endpoints in the pick set (0 in panic). */
  readonly eligibleCount: number;
  readonly inPanic: boolean;
  /** Picks from the current picker. */
  pick(ctx?: PickContext<EndpointState>): PickResult<EndpointState>;
  /** An endpoint's own cap (maxConnections), else the service's maxConnectionsPerEndpoint. */
  capOf(e: EndpointState): number;
}

/** The pool's own, writable service. */
class ServiceState implements ServicePool {
  readonly name: string;
  balance: BalanceAlgorithm;
  panic: 'fail' | 'spread' = 'fail';
  outlier: OutlierSettings | undefined = undefined;
  maxPerEndpoint = 0;
  replay = false;
  readonly admission: Admission;
  readonly slow = new SlowStart();
  readonly endpoints = new Map<string, MutableEndpoint>();
  picker: Picker;

  constructor(name: string, balance: BalanceAlgorithm, clock: Clock, random: Random) {
    this.name = name;
    this.balance = balance;
    this.admission = new Admission(clock);
    this.picker = this.build(random);
  }

  get slowStart(): number {
    return this.slow.ms;
  }
  get queue(): QueueSettings {
    return this.admission.queue;
  }
  get maxPending(): number {
    return this.admission.maxPending;
  }
  get pending(): number {
    return this.admission.pending;
  }
  get queued(): number {
    return this.admission.queued;
  }
  get ramping(): number {
    return this.slow.ramping.size;
  }
  get eligibleCount(): number {
    return this.picker.eligibleCount;
  }
  get inPanic(): boolean {
    return this.picker.inPanic;
  }

  pick(ctx?: PickContext<EndpointState>): PickResult<EndpointState> {
    return this.picker.pick(ctx);
  }

  capOf(e: EndpointState): number {
    return e.spec.maxConnections ?? this.maxPerEndpoint;
  }

  build(random: Random): Picker {
    return new Picker({ balance: this.balance, panic: this.panic, endpoints: this.endpoints.values(), capOf: (e) => this.capOf(e), random });
  }
}

export interface PoolOptions {
  readonly random?: Random;
  readonly clock?: Clock;
  /** Provider names in precedence order: when two give the same endpoint id, the first wins. */
  readonly providerOrder?: readonly string[];
}

/** Slow-start ramps advance this often (ms, on the pool's clock). */
const RAMP_TICK_MS = 100;

function onRampTick(pool: Pool): void {
  pool.tickSlowStart();
}

/**
 * The single writer of endpoint and service state. Providers hand it full
 * snapshots; it works out the minimal change (added, updated, removed), drains
 * removed endpoints that still have connections, and publishes a new Picker for
 * each service it touched. The proxy reads pickers, takes and gives back slots
 * (acquire/release), and reports what each attempt came to (report); nothing
 * outside the pool writes an endpoint (the types it hands out are read-only).
 */
export class Pool {
  private readonly state = new Map<string, ServiceState>();
  private readonly snapshots = new Map<string, ReadonlyMap<string, readonly EndpointSpec[]>>();
  private readonly listeners: PoolListener[] = [];
  private readonly random: Random;
  readonly clock: Clock;
  private readonly providerOrder: readonly string[];
  private readonly outliers: OutlierDetector;
  private rampTimer: Timer | null = null;
  private routeTable: readonly ServiceRoute[] = Object.freeze([]);
  /** Services an operator drained whole: an endpoint that joins one joins drained. */
  private readonly drainedServices = new Map<string, OverrideStamp>();
  /**
   * A worker's overrides for endpoints it does not have yet (the primary's state came
   * before the snapshots that bring them); replaced whole by each state from the primary.
   */
  private upcoming = new Map<string, OperatorOverride>();
  private routesStale = false;

  constructor(opts: PoolOptions = {}) {
    this.random = opts.random ?? systemRandom;
    this.clock = opts.clock ?? systemClock;
    this.providerOrder = opts.providerOrder ?? ['static', 'docker', 'swarm', 'dns'];
    this.outliers = new OutlierDetector(this.clock, { setOutlier: (e, on, why) => this.setFlag(e.service, e.id, Flag.Outlier, on, why) });
  }

  /** Every service, read-only. */
  get services(): ReadonlyMap<string, ServicePool> {
    return this.state;
  }

  /**
   * The routes endpoints ask for, one per (host, path prefix, service) for http
   * and per (server name, service) for tcp listeners that route by SNI: immutable,
   * and replaced (a new array) only when one of them changes, so a listener
   * rebuilds its router when the reference differs, as a proxy reads a new picker.
   */
  get routes(): readonly ServiceRoute[] {
    if (this.routesStale) {
      this.routesStale = false;
      const out: ServiceRoute[] = [];
      const seen = new Set<string>();
      for (const s of this.state.values()) {
        for (const e of s.endpoints.values()) {
          for (const r of e.spec.routes ?? []) {
            const key = `${r.sni ?? ''}\0${r.host ?? ''}\0${r.pathPrefix ?? ''}\0${s.name}`;
            if (seen.has(key)) continue;
            seen.add(key);
            out.push(Object.freeze(r.sni !== undefined ? { sni: r.sni, service: s.name } : { host: r.host, pathPrefix: r.pathPrefix, service: s.name }));
          }
        }
      }
      // In a stable order (not discovery's): two services asking for the same name or
      // host get the same winner on every host and after every churn (the lower service name).
      out.sort(compareRoutes);
      if (!sameServiceRoutes(out, this.routeTable)) this.routeTable = Object.freeze(out);
    }
    return this.routeTable;
  }

  on(listener: PoolListener): () => void {
    this.listeners.push(listener);
    return () => {
      const i = this.listeners.indexOf(listener);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }

  private emit(e: PoolEvent): void {
    // Any endpoint coming, going or changing may change the route table (recomputed when read).
    if (e.type !== 'picker-updated') this.routesStale = true;
    for (const l of this.listeners) l(e);
  }

  /** Creates the service if needed, and applies its settings (publishing on change). */
  configureService(name: string, settings: BalanceAlgorithm | ServiceSettings): ServicePool {
    return this.configure(name, settings);
  }

  private configure(name: string, settings: BalanceAlgorithm | ServiceSettings): ServiceState {
    const o: ServiceSettings = typeof settings === 'string' ? { balance: settings } : settings;
    let s = this.state.get(name);
    if (!s) {
      s = new ServiceState(name, o.balance, this.clock, this.random);
      this.state.set(name, s);
    }
    s.outlier = o.outlier;
    s.slow.ms = o.slowStart ?? 0;
    s.admission.queue = o.queue ?? { size: 0, timeout: 0 };
    s.admission.maxPending = o.maxPending ?? 0;
    s.replay = o.replay ?? false;
    const panic = o.panic ?? 'fail';
    const max = o.maxConnectionsPerEndpoint ?? 0;
    if (s.balance !== o.balance || s.panic !== panic || s.maxPerEndpoint !== max) {
      s.balance = o.balance;
      s.panic = panic;
      s.maxPerEndpoint = max;
      this.publish(s);
    }
    return s;
  }

  service(name: string): ServicePool | undefined {
    return this.state.get(name);
  }

  private rank(provider: string): number {
    const i = this.providerOrder.indexOf(provider);
    return i < 0 ? this.providerOrder.length : i;
  }

  /**
   * Applies a provider's full snapshot. Returns the number of endpoints that
   * changed (0 for a duplicate snapshot, which publishes nothing).
   */
  applySnapshot(snap: ProviderSnapshot): number {
    const prev = this.snapshots.get(snap.provider) ?? new Map<string, readonly EndpointSpec[]>();
    this.snapshots.set(snap.provider, snap.services);
    const touched = new Set<string>([...prev.keys(), ...snap.services.keys()]);
    let changes = 0;
    for (const serviceName of touched) {
      const s = this.state.get(serviceName) ?? this.configure(serviceName, 'least-conn');
      const n = this.reconcileService(s, snap.provider, snap.services.get(serviceName) ?? []);
      if (n > 0) {
        changes += n;
        this.publish(s);
      }
    }
    return changes;
  }

  private reconcileService(s: ServiceState, provider: string, specs: readonly EndpointSpec[]): number {
    let changes = 0;
    const wall = this.clock.wall();
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
        e = new MutableEndpoint(s.name, spec, this.clock.now(), wall);
        // An operator's word that waits for it: its service drained whole, or (a worker) the primary's override for it.
        const key = `${s.name}\n${e.id}`;
        const drained = this.drainedServices.get(s.name);
        const early = this.upcoming.get(key) ?? (drained !== undefined ? { drained, weight: null } : null);
        this.upcoming.delete(key);
        e.override = early;
        if (early?.weight) e.configuredWeight = e.weight = early.weight.value;
        e.setFlags(specFlags(spec) | (early?.drained ? Flag.AdminDrained : 0), wall);
        e.sources.set(provider, spec);
        e.record(`${provider}: added ${e.address} weight ${spec.weight}${e.flags ? ` (out: ${describeFlags(e.flags).join(', ')})` : ''}`, wall);
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
  private settle(s: ServiceState, e: MutableEndpoint, why: string): number {
    const wall = this.clock.wall();
    if (e.sources.size === 0) {
      // It leaves: the operator's word for it goes (one that comes back, even before its
      // last connection closes, is new).
      if (e.override !== null) {
        e.override = null;
        e.setFlags(e.flags & ~Flag.AdminDrained, wall);
      }
      if (e.active > 0) {
        if (e.flags & Flag.Draining) return 0;
        e.setFlags(e.flags | Flag.Draining, wall);
        e.record(`${why}; draining ${e.active} open connection(s)`, wall);
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
      e.setFlags(e.flags & ~Flag.Draining, wall);
      parts.push('back from draining');
    }
    if (spec.host !== e.host || spec.port !== e.port) {
      e.host = spec.host;
      e.port = spec.port;
      parts.push(`address ${e.address}`);
    }
    // (An operator's weight stands over the provider's.)
    const weight = e.override?.weight?.value ?? spec.weight;
    if (weight !== e.configuredWeight) {
      e.configuredWeight = weight;
      if (e.rampStart === null) e.weight = weight;
      parts.push(`weight ${weight}`);
    }
    const flags = (e.flags & ~PROVIDER_FLAGS) | specFlags(spec);
    if (flags !== e.flags) {
      const was = e.flags;
      e.setFlags(flags, wall);
      const on = describeFlags(flags & ~was);
      const off = describeFlags(was & ~flags);
      if (on.length) parts.push(`out: ${on.join(', ')}`);
      if (off.length) parts.push(`no longer ${off.join(', ')}`);
    }
    // Routes and the health path and type are behaviour: listeners and checks must hear of a
    // change there even when nothing else moved. Labels are explanation, shown anew.
    if (!sameRoutes(e.spec.routes, spec.routes)) parts.push(`routes ${describeRoutes(spec.routes)}`);
    if (e.spec.healthPath !== spec.healthPath) parts.push(`health path ${spec.healthPath ?? 'unset'}`);
    if (e.spec.healthType !== spec.healthType) parts.push(`health type ${spec.healthType ?? 'unset'}`);
    if (e.spec.httpVersion !== spec.httpVersion) parts.push(`http version ${spec.httpVersion ?? 'unset'}`);
    if (e.spec.protocol !== spec.protocol) parts.push(`protocol ${spec.protocol ?? 'unset'}`);
    if (parts.length === 0 && !sameLabels(e.spec.labels, spec.labels)) parts.push('labels');
    if (spec.maxConnections !== e.spec.maxConnections) parts.push(`maxConnections ${spec.maxConnections ?? 'unset'}`);
    e.spec = spec;
    if (parts.length === 0) return 0;
    const what = parts.join(', ');
    e.record(`${why}: ${what}`, wall);
    this.emit({ type: 'endpoint-updated', endpoint: e, what });
    return 1;
  }

  private remove(s: ServiceState, e: MutableEndpoint, why: string): void {
    s.endpoints.delete(e.id);
    s.slow.forget(e);
    this.outliers.forget(e);
    e.record(`${why}; removed`, this.clock.wall());
    this.emit({ type: 'endpoint-removed', endpoint: e });
  }

  /** Builds and publishes the service's new picker (slow start first: it sets the weights). */
  private publish(s: ServiceState): void {
    const before = s.picker;
    s.slow.begin(s.endpoints.values(), this.clock.now(), this.clock.wall());
    s.picker = s.build(this.random);
    if (before.eligibleCount !== s.picker.eligibleCount || before.inPanic !== s.picker.inPanic) {
      this.emit({ type: 'picker-updated', service: s.name, eligible: s.eligibleCount, total: s.endpoints.size, panic: s.inPanic });
    }
    if (s.slow.ramping.size > 0 && this.rampTimer === null) this.rampTimer = this.clock.after(RAMP_TICK_MS, onRampTick, this);
  }

  /** Advances every slow-start ramp to the clock's now; the pool's ramp timer calls this. */
  tickSlowStart(): void {
    this.clock.cancel(this.rampTimer);
    this.rampTimer = null;
    const now = this.clock.now();
    const wall = this.clock.wall();
    let any = false;
    for (const s of this.state.values()) {
      if (s.slow.ramping.size === 0) continue;
      if (s.slow.apply(now, wall)) s.picker = s.build(this.random);
      if (s.slow.ramping.size > 0) any = true;
    }
    if (any) this.rampTimer = this.clock.after(RAMP_TICK_MS, onRampTick, this);
  }

  /** Sets or clears a health/lifecycle flag on an endpoint. */
  setFlag(service: string, id: string, flag: number, on: boolean, why: string): boolean {
    const s = this.state.get(service);
    const e = s?.endpoints.get(id);
    if (!s || !e) return false;
    const next = on ? e.flags | flag : e.flags & ~flag;
    if (next === e.flags) return false;
    const wall = this.clock.wall();
    e.setFlags(next, wall);
    e.record(why, wall);
    this.emit({ type: 'endpoint-updated', endpoint: e, what: why });
    this.publish(s);
    return true;
  }

  /**
   * An operator's drain, undrain or weight (OverrideOp). Returns the endpoints it
   * changed (none when they already were so), or null when the service or endpoint
   * is not in the pool.
   */
  override(op: OverrideOp): EndpointState[] | null {
    const s = this.state.get(op.service);
    if (s === undefined) return null;
    let targets: MutableEndpoint[];
    if (op.endpoint === null) {
      targets = [...s.endpoints.values()];
      if (op.op === 'drain') this.drainedServices.set(op.service, { at: op.at, by: op.by });
      else if (op.op === 'undrain') this.drainedServices.delete(op.service);
    } else {
      const e = s.endpoints.get(op.endpoint);
      if (e === undefined) return null;
      targets = [e];
    }
    const changed: MutableEndpoint[] = [];
    for (const e of targets) if (this.overrideOne(e, op)) changed.push(e);
    if (changed.length > 0) this.publish(s);
    return changed;
  }

  private overrideOne(e: MutableEndpoint, op: OverrideOp): boolean {
    const stamp: OverrideStamp = { at: op.at, by: op.by };
    const was: OperatorOverride = e.override ?? { drained: null, weight: null };
    let next: OperatorOverride;
    let what: string;
    if (op.op === 'weight') {
      if (op.weight === null) {
        if (was.weight === null) return false;
        next = { drained: was.drained, weight: null };
        what = `weight back to discovery's ${e.spec.weight}, by ${op.by}`;
      } else {
        if (was.weight?.value === op.weight) return false;
        next = { drained: was.drained, weight: { ...stamp, value: op.weight } };
        what = `weight ${op.weight} set by ${op.by}`;
      }
    } else if (op.op === 'drain') {
      if (was.drained !== null) return false;
      next = { drained: stamp, weight: was.weight };
      what = `drained by ${op.by}`;
    } else {
      if (was.drained === null) return false;
      next = { drained: null, weight: was.weight };
      what = `undrained by ${op.by}`;
    }
    this.putOverride(e, next, op.at, what);
    return true;
  }

  /** Puts an override in force on `e` (its flag, its weight: discovery's where it sets none), told as `what`. */
  private putOverride(e: MutableEndpoint, next: OperatorOverride | null, at: number, what: string): void {
    e.override = next === null || (next.drained === null && next.weight === null) ? null : next;
    const flags = next?.drained ? e.flags | Flag.AdminDrained : e.flags & ~Flag.AdminDrained;
    if (flags !== e.flags) e.setFlags(flags, at);
    const weight = next?.weight?.value ?? e.spec.weight;
    if (weight !== e.configuredWeight) {
      e.configuredWeight = weight;
      if (e.rampStart === null) e.weight = weight;
    }
    e.record(what, this.clock.wall());
    this.emit({ type: 'endpoint-updated', endpoint: e, what });
  }

  /** Every override this pool holds (what a --workers primary sends its workers). */
  overrideState(): OverrideState {
    const endpoints: [string, string, OperatorOverride][] = [];
    for (const s of this.state.values()) for (const e of s.endpoints.values()) if (e.override !== null) endpoints.push([s.name, e.id, e.override]);
    return { services: [...this.drainedServices], endpoints };
  }

  /**
   * Takes `state` in place of every override here (a --workers worker, from its
   * primary): endpoints it names get theirs, every other one none; those not here yet
   * get theirs when they come, and only those the latest state names.
   */
  replaceOverrides(state: OverrideState): void {
    this.drainedServices.clear();
    for (const [name, stamp] of state.services) this.drainedServices.set(name, stamp);
    const want = new Map<string, OperatorOverride>();
    for (const [service, id, ov] of state.endpoints) want.set(`${service}\n${id}`, ov);
    const wall = this.clock.wall();
    for (const s of this.state.values()) {
      let changed = false;
      for (const e of s.endpoints.values()) {
        const key = `${s.name}\n${e.id}`;
        const next = want.get(key) ?? null;
        want.delete(key);
        if (sameOverride(e.override, next)) continue;
        this.putOverride(e, next, wall, next === null ? 'operator override cleared' : `operator override: ${next.drained ? `drained by ${next.drained.by}` : 'not drained'}${next.weight ? `, weight ${next.weight.value}` : ''}`);
        changed = true;
      }
      if (changed) this.publish(s);
    }
    this.upcoming = want;
  }

  /** A service an operator drained whole: when and by whom (undefined: not drained). */
  serviceDrained(service: string): OverrideStamp | undefined {
    return this.drainedServices.get(service);
  }

  /** The pool's own object behind a read-only endpoint it handed out. */
  private own(e: EndpointState): MutableEndpoint {
    return e as MutableEndpoint;
  }

  /** A connection (http: a request) to `e` opened. */
  acquire(e: EndpointState): void {
    const m = this.own(e);
    m.active++;
    m.connections++;
  }

  /** A connection to `e` closed; a draining endpoint leaves when its last one does. */
  release(e: EndpointState): void {
    const m = this.own(e);
    m.active--;
    const s = this.state.get(m.service);
    if (s === undefined) return;
    // A slot opened: the longest-waiting queued client tries again.
    s.admission.slotFreed();
    if (m.active === 0 && m.flags & Flag.Draining && m.sources.size === 0 && s.endpoints.get(m.id) === m) {
      this.remove(s, m, 'drained');
      this.publish(s);
    }
  }

  /**
   * What an attempt on `e` came to (the proxy's one report): latency (connect time
   * for tcp, response time for http, kept apart) and passive health for outlier
   * detection. `ms` for connected, answered and broken.
   */
  report(e: EndpointState, outcome: Outcome, ms = 0): void {
    const m = this.own(e);
    const now = this.clock.now();
    switch (outcome) {
      case 'connected':
        m.connectEwma.observe(ms, now);
        this.outliers.succeeded(m);
        return;
      case 'answered':
        m.responseEwma.observe(ms, now);
        this.outliers.succeeded(m);
        return;
      case 'broken':
        m.responseEwma.observe(ms, now);
        break;
      case 'failed':
        break;
    }
    const s = this.state.get(m.service);
    if (s !== undefined) this.outliers.failed(m, s.outlier, s.endpoints.values(), s.endpoints.size);
    else m.failures++;
  }

  /** Ends an outlier ejection early (an active check passed). */
  endEjection(e: EndpointState, why: string): void {
    this.outliers.end(this.own(e), why);
  }

  /**
   * A client starts waiting for an endpoint of `service`: false when its circuit
   * breaker (maxPending) is open. Every true is matched by one `leave`.
   */
  enter(service: string): boolean {
    return this.state.get(service)?.admission.enter() ?? true;
  }

  leave(service: string): void {
    this.state.get(service)?.admission.leave();
  }

  /** Waits in the service's queue for a free slot (see Admission.enqueue); null when full or off. */
  enqueue(service: string, wake: () => void, expire: () => void): (() => void) | null {
    return this.state.get(service)?.admission.enqueue(wake, expire) ?? null;
  }

  /** Total open connections across every endpoint (drain progress on shutdown). */
  activeTotal(): number {
    let n = 0;
    for (const s of this.state.values()) for (const e of s.endpoints.values()) n += e.active;
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
    a.healthPath === b.healthPath &&
    a.healthType === b.healthType &&
    a.httpVersion === b.httpVersion &&
    a.protocol === b.protocol &&
    sameRoutes(a.routes, b.routes) &&
    sameLabels(a.labels, b.labels)
  );
}

function compareRoutes(a: ServiceRoute, b: ServiceRoute): number {
  const k = (r: ServiceRoute) => [r.sni ?? '', r.host ?? '', r.pathPrefix ?? '', r.service];
  const x = k(a);
  const y = k(b);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i]! < y[i]! ? -1 : 1;
  return 0;
}

function sameServiceRoutes(a: readonly ServiceRoute[], b: readonly ServiceRoute[]): boolean {
  return a.length === b.length && a.every((r, i) => r.sni === b[i]!.sni && r.host === b[i]!.host && r.pathPrefix === b[i]!.pathPrefix && r.service === b[i]!.service);
}

function sameRoutes(a: readonly RouteSpec[] | undefined, b: readonly RouteSpec[] | undefined): boolean {
  const x = a ?? [];
  const y = b ?? [];
  return x.length === y.length && x.every((r, i) => r.sni === y[i]!.sni && r.host === y[i]!.host && r.pathPrefix === y[i]!.pathPrefix);
}

function describeRoutes(r: readonly RouteSpec[] | undefined): string {
  return r === undefined || r.length === 0 ? 'none' : r.map((x) => (x.sni !== undefined ? `sni ${x.sni}` : `${x.host ?? '*'}${x.pathPrefix ?? '/'}`)).join(' ');
}

function sameLabels(a: Readonly<Record<string, string>> | undefined, b: Readonly<Record<string, string>> | undefined): boolean {
  if (a === b) return true;
  if (!a || !b) return false;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) if (a[k] !== b[k]) return false;
  return true;
}

function sameStamp(a: OverrideStamp | null, b: OverrideStamp | null): boolean {
  return a === b || (a !== null && b !== null && a.at === b.at && a.by === b.by);
}

function sameOverride(a: OperatorOverride | null, b: OperatorOverride | null): boolean {
  if (a === null || b === null) return a === b;
  return sameStamp(a.drained, b.drained) && sameStamp(a.weight, b.weight) && (a.weight?.value ?? -1) === (b.weight?.value ?? -1);
}
