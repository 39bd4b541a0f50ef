import type { LocalErrorSite, ProxyObserver } from '../core/observer.js';
import type { Logger } from '../log.js';

/**
 * Descriptor (or memory) exhaustion of this process, seen by one listener where it
 * accepts clients or connects to endpoints: every occurrence is counted
 * (berth_local_errors_total); the log says it once when it starts and once when that
 * same step next succeeds, not once per failure.
 */
export class LocalErrorAlarm {
  private readonly missed = new Map<LocalErrorSite, number>();

  constructor(
    private readonly log: Logger,
    private readonly observer: ProxyObserver,
  ) {}

  report(where: LocalErrorSite, code: string): void {
    this.observer.localError(where, code);
    const n = this.missed.get(where);
    this.missed.set(where, (n ?? 0) + 1);
    if (n !== undefined) return;
    this.log.error({ where, code }, 'out of descriptors or memory: clients are refused until connections close (raise the descriptor limit, or set maxConnections on the listener)');
  }

  /** `where` succeeded: the condition is over there, if it was on. */
  clear(where: LocalErrorSite): void {
    if (this.missed.size === 0) return;
    const n = this.missed.get(where);
    if (n === undefined) return;
    this.missed.delete(where);
    this.log.warn({ where, failed: n }, 'descriptors available again');
  }
}
