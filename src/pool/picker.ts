import { createBalancer, NONE_FULL, type Balancer, type PickContext, type PickResult } from '../balancer/index.js';
import type { Random } from '../core/random.js';
import { HEALTH_FLAGS, type BalanceAlgorithm } from '../core/types.js';
import type { EndpointState } from './endpoint.js';

/** What a picker is built from: the service's endpoints and settings at one moment. */
export interface PickerInput {
  readonly balance: BalanceAlgorithm;
  readonly panic: 'fail' | 'spread';
  readonly endpoints: Iterable<EndpointState>;
  /** An endpoint's connection cap (0 = none). */
  readonly capOf: (e: EndpointState) => number;
  readonly random: Random;
}

/**
 * The pick set of one service, immutable between changes (grpc-js publishes a
 * Picker the same way): the pool builds a new one whenever the eligible set, the
 * weights, the balancer or the caps change, and the proxy asks whichever is
 * current. Only live counts (`active`, `latency`) are read at pick time.
 */
export class Picker {
  /** Healthy endpoints in the pick set (0 in panic, when the pick set holds unfit ones). */
  readonly eligibleCount: number;
  /** True while nothing is healthy and panic: spread routes to unfit endpoints. */
  readonly inPanic: boolean;
  private readonly balancer: Balancer<EndpointState>;
  private readonly capOf: (e: EndpointState) => number;
  /** Some endpoint in the pick set has a connection cap. */
  private readonly capped: boolean;

  constructor(input: PickerInput) {
    const all = [...input.endpoints];
    const eligible: EndpointState[] = [];
    for (const e of all) if (e.eligible) eligible.push(e);
    let panic = false;
    if (eligible.length === 0 && input.panic === 'spread') {
      // Panic: better an unfit endpoint than none, but never one that is leaving.
      for (const e of all) if (e.weight > 0 && (e.flags & ~HEALTH_FLAGS) === 0) eligible.push(e);
      panic = eligible.length > 0;
    }
    // Stable order (by id) so that round-robin sequences and hash tables do not
    // depend on the order providers happened to report endpoints in.
    eligible.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    this.balancer = createBalancer(input.balance, eligible, { random: input.random });
    this.inPanic = panic;
    this.eligibleCount = panic ? 0 : eligible.length;
    this.capOf = input.capOf;
    this.capped = eligible.some((e) => input.capOf(e) > 0);
  }

  /**
   * Picks an endpoint. One at its connection cap is passed over for the balancer's
   * next choice, like HAProxy's maxconn; all at their caps: 'at-capacity'.
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

  private atCap(e: EndpointState): boolean {
    const max = this.capOf(e);
    return max > 0 && e.active >= max;
  }
}
