import { NONE_EMPTY, NONE_EXCLUDED, ok, type Balancer, type BalancerHost, type PickContext, type PickResult } from './types.js';

/**
 * Weighted least-connections: the endpoint with the lowest (active + 1) / weight.
 * The +1 makes an idle heavy endpoint win over an idle light one. Ties go to the
 * first endpoint after a rotating start, so equal endpoints share new connections
 * in turn instead of the first one taking every tie.
 */
export function leastConn<H extends BalancerHost>(hosts: readonly H[]): Balancer<H> {
  const n = hosts.length;
  let start = 0;
  return {
    size: n,
    pick(ctx?: PickContext<H>): PickResult<H> {
      if (n === 0) return NONE_EMPTY;
      const exclude = ctx?.exclude;
      let best: H | undefined;
      let bestScore = Infinity;
      for (let k = 0; k < n; k++) {
        const h = hosts[(start + k) % n]!;
        if (exclude !== undefined && exclude.has(h)) continue;
        const score = (h.active + 1) / h.weight;
        if (score < bestScore) {
          bestScore = score;
          best = h;
        }
      }
      start = start + 1 === n ? 0 : start + 1;
      return best === undefined ? NONE_EXCLUDED : ok(best);
    },
  };
}
