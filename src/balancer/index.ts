import type { BalanceAlgorithm } from '../core/types.js';
import { leastConn } from './least-conn.js';
import { p2c } from './p2c.js';
import { weightedRandom } from './random.js';
import { roundRobin } from './round-robin.js';
import { sourceHash } from './source-hash.js';
import type { Balancer, BalancerDeps, BalancerHost } from './types.js';

export type { Balancer, BalancerDeps, BalancerHost, PickContext, PickResult } from './types.js';
export { NONE_FULL } from './types.js';

/** Builds the balancer for `algorithm` over `hosts` (already filtered to eligible ones). */
export function createBalancer<H extends BalancerHost>(algorithm: BalanceAlgorithm, hosts: readonly H[], deps: BalancerDeps): Balancer<H> {
  switch (algorithm) {
    case 'round-robin':
      return roundRobin(hosts);
    case 'least-conn':
      return leastConn(hosts);
    case 'p2c':
      return p2c(hosts, deps);
    case 'source-hash':
      return sourceHash(hosts, deps);
    case 'random':
      return weightedRandom(hosts, deps);
  }
}
