import type { Clock, Timer } from '../core/clock.js';

/** Queue settings of a service: clients that may wait when every endpoint is at its cap, and for how long (ms). */
export interface QueueSettings {
  readonly size: number;
  readonly timeout: number;
}

interface Waiter {
  readonly admission: Admission;
  readonly wake: () => void;
  readonly expire: () => void;
  timer: Timer | null;
}

function onExpire(w: Waiter): void {
  w.timer = null;
  w.admission.dequeue(w);
  w.expire();
}

/**
 * Admission of clients to one service's endpoints: the circuit breaker
 * (`maxPending`: clients connecting or queued, beyond which new ones are turned
 * away) and the wait queue for when every endpoint is at its cap (bounded in
 * length and, on the injected clock, in time). One per service, owned by the pool.
 */
export class Admission {
  maxPending = 0;
  queue: QueueSettings = { size: 0, timeout: 0 };
  private waiting = 0;
  private readonly waiters: Waiter[] = [];

  constructor(private readonly clock: Clock) {}

  /** A client starts waiting for an endpoint; false when the breaker is open (turn it away). */
  enter(): boolean {
    if (this.maxPending > 0 && this.waiting >= this.maxPending) return false;
    this.waiting++;
    return true;
  }

  /** The client is connected, or gone. */
  leave(): void {
    this.waiting--;
  }

  /** Clients now waiting for an endpoint (connecting or queued). */
  get pending(): number {
    return this.waiting;
  }

  /** Clients in the queue. */
  get queued(): number {
    return this.waiters.length;
  }

  /**
   * Waits for a free slot: `wake` runs when a connection of this service closes, or
   * `expire` after the queue timeout. Returns a cancel function, or null when the
   * queue is full (or off).
   */
  enqueue(wake: () => void, expire: () => void): (() => void) | null {
    if (this.waiters.length >= this.queue.size) return null;
    const w: Waiter = { admission: this, wake, expire, timer: null };
    w.timer = this.clock.after(this.queue.timeout, onExpire, w);
    this.waiters.push(w);
    return () => this.dequeue(w);
  }

  /** @internal */
  dequeue(w: Waiter): void {
    this.clock.cancel(w.timer);
    w.timer = null;
    const i = this.waiters.indexOf(w);
    if (i >= 0) this.waiters.splice(i, 1);
  }

  /** A slot opened: the longest-waiting client tries again (after the caller returns). */
  slotFreed(): void {
    if (this.waiters.length === 0) return;
    queueMicrotask(() => {
      const w = this.waiters.shift();
      if (w === undefined) return;
      this.clock.cancel(w.timer);
      w.timer = null;
      w.wake();
    });
  }
}
