import { hash32 } from './hash.js';
import { NONE_EMPTY, NONE_EXCLUDED, ok, type Balancer, type BalancerDeps, type BalancerHost, type PickContext, type PickResult } from './types.js';

/** Maglev lookup table size: a prime, large against pool sizes so shares stay even. */
export const DEFAULT_TABLE_SIZE = 65537;

/**
 * Builds a weighted Maglev lookup table (Eisenbud et al., NSDI 2016; weights as in
 * Envoy): each endpoint walks its own permutation of the table (offset + k * skip,
 * both from hashes of its id) and claims free slots in turns, heavier endpoints
 * taking turns more often. When one of N endpoints leaves, the slots the others
 * held almost all stay theirs, so only about 1/N of keys move.
 *
 * Returns, per slot, the index into `hosts`.
 */
export function buildMaglevTable(hosts: readonly BalancerHost[], size: number = DEFAULT_TABLE_SIZE): Int32Array {
  const n = hosts.length;
  const table = new Int32Array(size).fill(-1);
  if (n === 0) return table;
  const offset = new Float64Array(n);
  const skip = new Float64Array(n);
  const next = new Float64Array(n);
  const filledBy = new Float64Array(n);
  let maxWeight = 0;
  for (const h of hosts) maxWeight = Math.max(maxWeight, h.weight);
  const share = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const id = hosts[i]!.id;
    offset[i] = hash32(id, 0x9e3779b9) % size;
    skip[i] = (hash32(id, 0x85ebca6b) % (size - 1)) + 1;
    share[i] = hosts[i]!.weight / maxWeight;
  }
  let filled = 0;
  for (let round = 1; filled < size; round++) {
    for (let i = 0; i < n && filled < size; i++) {
      // A host with relative share s takes a slot in `round` only while it has
      // taken fewer than round * s slots: weights become slot counts.
      if (round * share[i]! < filledBy[i]! + 1) continue;
      let slot = (offset[i]! + next[i]! * skip[i]!) % size;
      while (table[slot] !== -1) {
        next[i]!++;
        slot = (offset[i]! + next[i]! * skip[i]!) % size;
      }
      table[slot] = i;
      next[i]!++;
      filledBy[i]!++;
      filled++;
    }
  }
  return table;
}

/**
 * Source-hash balancing over a Maglev table: the same client key (its IP) goes to
 * the same endpoint while the pool is unchanged, and keeps going there when other
 * endpoints come or go. A retry walks forward in the table to the next endpoint
 * not yet tried, so it is still deterministic per key.
 */
export function sourceHash<H extends BalancerHost>(hosts: readonly H[], deps: BalancerDeps, size: number = DEFAULT_TABLE_SIZE): Balancer<H> {
  const table = buildMaglevTable(hosts, size);
  return {
    size: hosts.length,
    pick(ctx?: PickContext<H>): PickResult<H> {
      if (hosts.length === 0) return NONE_EMPTY;
      const key = ctx?.key;
      let slot = key === undefined ? Math.floor(deps.random.next() * size) : hash32(key) % size;
      const exclude = ctx?.exclude;
      const first = hosts[table[slot]!]!;
      if (exclude === undefined || !exclude.has(first)) return ok(first);
      if (exclude.size >= hosts.length) return NONE_EXCLUDED;
      for (let k = 1; k < size; k++) {
        slot = slot + 1 === size ? 0 : slot + 1;
        const h = hosts[table[slot]!]!;
        if (!exclude.has(h)) return ok(h);
      }
      return NONE_EXCLUDED;
    },
  };
}
