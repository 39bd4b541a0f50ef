import { NONE_EMPTY, NONE_EXCLUDED, ok, type Balancer, type BalancerHost, type PickContext, type PickResult } from './types.js';

/**
 * Smooth weighted round-robin (the nginx algorithm): every pick adds each weight to
 * that endpoint's running score, takes the highest and subtracts the total from it.
 * Weights 5,1,1 give a a b a c a a — the heavy endpoint's turns are spread out,
 * not bunched. O(n) per pick, which for pool sizes of a sidecar (tens) beats a heap.
 */
export function roundRobin<H extends BalancerHost>(hosts: readonly H[]): Balancer<H> {
  const n = hosts.length;
  const current = new Float64Array(n);
  return {
    size: n,
    pick(ctx?: PickContext<H>): PickResult<H> {
      if (n === 0) return NONE_EMPTY;
      const exclude = ctx?.exclude;
      let total = 0;
      let best = -1;
      for (let i = 0; i < n; i++) {
        const h = hosts[i]!;
        if (exclude !== undefined && exclude.has(h)) continue;
        current[i]! += h.weight;
        total += h.weight;
        if (best < 0 || current[i]! > current[best]!) best = i;
      }
      if (best < 0) return NONE_EXCLUDED;
      current[best]! -= total;
      return ok(hosts[best]!);
    },
  };
}
