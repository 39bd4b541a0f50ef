import { NONE_EMPTY, NONE_EXCLUDED, ok, type Balancer, type BalancerHost, type PickContext, type PickResult } from './types.js';

/**
 * Weighted least-connections: the endpoint with the lowest active / weight. Ties —
 * the usual case when traffic is light and every endpoint is idle — go to the
 * endpoint with the fewest picks per unit of weight, so idle endpoints share new
 * connections by weight (1:2 for weights 1 and 2) instead of the heaviest taking
 * them all. Under load the connection counts decide, as in HAProxy's leastconn.
 */
export function leastConn<H extends BalancerHost>(hosts: readonly H[]): Balancer<H> {
  const n = hosts.length;
  const picks = new Float64Array(n);
  return {
    size: n,
    pick(ctx?: PickContext<H>): PickResult<H> {
      if (n === 0) return NONE_EMPTY;
      const exclude = ctx?.exclude;
      let best = -1;
      let bestLoad = Infinity;
      let bestTurn = Infinity;
      for (let i = 0; i < n; i++) {
        const h = hosts[i]!;
        if (exclude !== undefined && exclude.has(h)) continue;
        const load = h.active / h.weight;
        // The turn a further pick would bring this endpoint to: its picks per weight after the pick.
        const turn = (picks[i]! + 1) / h.weight;
        if (load < bestLoad || (load === bestLoad && turn < bestTurn)) {
          best = i;
          bestLoad = load;
          bestTurn = turn;
        }
      }
      if (best < 0) return NONE_EXCLUDED;
      picks[best]!++;
      return ok(hosts[best]!);
    },
  };
}
