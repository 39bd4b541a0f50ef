/** Typed discovery events for metrics; implemented in src/metrics, no-op by default. */
export interface DiscoveryObserver {
  /** An engine event was handled (`action` e.g. "start", "kill", "health_status"). */
  event(provider: string, action: string): void;
  /** A failure: engine unreachable, a container skipped for bad labels. */
  error(provider: string): void;
  /** The event stream connected (true) or was lost (false). */
  connected(provider: string, up: boolean): void;
  /** A full resync finished. */
  synced(provider: string, wallMs: number): void;
}

export const nullDiscoveryObserver: DiscoveryObserver = {
  event() {},
  error() {},
  connected() {},
  synced() {},
};

/** Capped exponential backoff with full jitter, ms. */
export function backoffDelay(attempt: number, baseMs: number, capMs: number, random: () => number): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.max(baseMs, Math.floor(ceiling / 2 + random() * (ceiling / 2)));
}
