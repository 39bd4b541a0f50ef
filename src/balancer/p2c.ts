import { drawExcluding, WeightedSampler } from './random.js';
import { NONE_EMPTY, NONE_EXCLUDED, ok, type Balancer, type BalancerDeps, type BalancerHost, type PickContext, type PickResult } from './types.js';

/**
 * Cost of sending one more unit of work to `h`: its latency (peak EWMA, or 1 while
 * unknown) times the work it would have, per unit of weight. With no latency
 * signal this reduces to weighted least-connections.
 */
export function cost(h: BalancerHost): number {
  const latency = h.latency > 0 ? h.latency : 1;
  return (latency * (h.active + 1)) / h.weight;
}

/**
 * Power of two choices: draw two distinct endpoints by weight and take the cheaper.
 * Near least-loaded quality at O(1), and, unlike plain least-conn, several
 * balancers with slightly stale counts do not all pile onto the same endpoint.
 */
export function p2c<H extends BalancerHost>(hosts: readonly H[], deps: BalancerDeps): Balancer<H> {
  const n = hosts.length;
  const sampler = new WeightedSampler(hosts);
  return {
    size: n,
    pick(ctx?: PickContext<H>): PickResult<H> {
      if (n === 0) return NONE_EMPTY;
      const exclude = ctx?.exclude;
      if (n === 1) {
        const only = hosts[0]!;
        return exclude !== undefined && exclude.has(only) ? NONE_EXCLUDED : ok(only);
      }
      const a = drawExcluding(hosts, sampler, deps, exclude);
      if (a === undefined) return NONE_EXCLUDED;
      let b: H | undefined;
      // A second, different endpoint: a few weighted draws, then the next one along.
      for (let tries = 0; tries < 4 && (b === undefined || b === a); tries++) b = drawExcluding(hosts, sampler, deps, exclude);
      if (b === undefined || b === a) {
        b = undefined;
        const start = hosts.indexOf(a);
        for (let k = 1; k < n; k++) {
          const h = hosts[(start + k) % n]!;
          if (exclude === undefined || !exclude.has(h)) {
            b = h;
            break;
          }
        }
        if (b === undefined) return ok(a);
      }
      return ok(cost(b) < cost(a) ? b : a);
    },
  };
}
