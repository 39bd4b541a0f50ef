import type { BalancerHost } from '../../src/balancer/types.js';

/** A mutable test host. */
export interface TestHost extends BalancerHost {
  id: string;
  weight: number;
  active: number;
  latency: number;
}

export function hosts(spec: Record<string, number>): TestHost[] {
  return Object.entries(spec).map(([id, weight]) => ({ id, weight, active: 0, latency: 0 }));
}

/** Picks `n` times and counts picks per id. */
export function countPicks(pick: () => { type: string; host?: TestHost }, n: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const r = pick();
    const id = r.type === 'ok' && r.host ? r.host.id : '<none>';
    out[id] = (out[id] ?? 0) + 1;
  }
  return out;
}
