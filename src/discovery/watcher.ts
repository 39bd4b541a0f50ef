/**
 * The discovery watcher: keeps every provider's last snapshot and is the one place
 * duplicates are dropped (as Traefik's configuration watcher does). Providers emit
 * whole snapshots whenever they look; only a snapshot that differs from that
 * provider's last one in any field of any endpoint — labels included — goes on to
 * the pool (and, in a primary, to the workers). A worker that starts or restarts
 * gets every provider's last snapshot, not just the latest one seen.
 */
import type { ProviderSnapshot } from '../core/types.js';

export class SnapshotWatcher {
  private readonly last = new Map<string, { readonly key: string; readonly snap: ProviderSnapshot }>();

  constructor(private readonly apply: (snap: ProviderSnapshot) => void) {}

  /** Applies `snap` unless it equals its provider's last one; true when applied. */
  publish(snap: ProviderSnapshot): boolean {
    const key = canonical(snap);
    if (this.last.get(snap.provider)?.key === key) return false;
    this.last.set(snap.provider, { key, snap });
    this.apply(snap);
    return true;
  }

  /** Every provider's last snapshot, in the order the providers first reported. */
  snapshots(): ProviderSnapshot[] {
    return [...this.last.values()].map((v) => v.snap);
  }
}

/**
 * A snapshot as text in which equal snapshots read the same: services by name,
 * endpoints by id, every object's keys sorted, absent and undefined fields alike.
 */
export function canonical(snap: ProviderSnapshot): string {
  const services = [...snap.services].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return JSON.stringify(services.map(([name, specs]) => [name, [...specs].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)).map(sorted)]));
}

function sorted(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sorted);
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(value).sort()) {
    const v = (value as Record<string, unknown>)[k];
    if (v !== undefined) out[k] = sorted(v);
  }
  return out;
}
