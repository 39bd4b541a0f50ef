import { NONE_EMPTY, NONE_EXCLUDED, ok, type Balancer, type BalancerDeps, type BalancerHost, type PickContext, type PickResult } from './types.js';

/** Cumulative weights for O(log n) weighted sampling. */
export class WeightedSampler<H extends BalancerHost> {
  private readonly cumulative: Float64Array;
  readonly total: number;
  constructor(private readonly hosts: readonly H[]) {
    this.cumulative = new Float64Array(hosts.length);
    let sum = 0;
    for (let i = 0; i < hosts.length; i++) {
      sum += hosts[i]!.weight;
      this.cumulative[i] = sum;
    }
    this.total = sum;
  }

  /** Index of the host whose weight interval contains u * total, u in [0, 1). */
  index(u: number): number {
    const target = u * this.total;
    let lo = 0;
    let hi = this.hosts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.cumulative[mid]! > target) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }
}

/**
 * Draws a host by weight, skipping excluded ones. Rejection sampling first (cheap
 * when few are excluded), then a weighted draw over what is left.
 */
export function drawExcluding<H extends BalancerHost>(
  hosts: readonly H[],
  sampler: WeightedSampler<H>,
  deps: BalancerDeps,
  exclude: ReadonlySet<H> | undefined,
): H | undefined {
  if (exclude === undefined || exclude.size === 0) return hosts[sampler.index(deps.random.next())];
  for (let tries = 0; tries < 4; tries++) {
    const h = hosts[sampler.index(deps.random.next())]!;
    if (!exclude.has(h)) return h;
  }
  let total = 0;
  for (const h of hosts) if (!exclude.has(h)) total += h.weight;
  if (total === 0) return undefined;
  let target = deps.random.next() * total;
  for (const h of hosts) {
    if (exclude.has(h)) continue;
    target -= h.weight;
    if (target < 0) return h;
  }
  for (let i = hosts.length - 1; i >= 0; i--) if (!exclude.has(hosts[i]!)) return hosts[i];
  return undefined;
}

/** Weighted random: each pick independent, probability proportional to weight. */
export function weightedRandom<H extends BalancerHost>(hosts: readonly H[], deps: BalancerDeps): Balancer<H> {
  const sampler = new WeightedSampler(hosts);
  return {
    size: hosts.length,
    pick(ctx?: PickContext<H>): PickResult<H> {
      if (hosts.length === 0) return NONE_EMPTY;
      const h = drawExcluding(hosts, sampler, deps, ctx?.exclude);
      return h === undefined ? NONE_EXCLUDED : ok(h);
    },
  };
}
