/**
 * Injectable time: the current time and the timers that run on it, so tests drive
 * time-based behaviour (slow start, ejection, queue timeouts, retry rounds) by
 * advancing a clock instead of sleeping. Every timer of the pool and the upstream
 * attempt goes through one of these (as undici sends its timers through one module).
 */
export interface Clock {
  /** Milliseconds, monotonic (not wall time). */
  now(): number;
  /** Wall-clock milliseconds since the epoch: only for showing when something happened. */
  wall(): number;
  /**
   * Calls `fn(arg)` once after `ms` on this clock. The timer never keeps the
   * process alive on its own (each one belongs to a socket or to background
   * state); cancel it with `cancel`.
   */
  after<A>(ms: number, fn: (arg: A) => void, arg: A): Timer;
  /** Cancels a timer from `after` (a timer that already ran, or null, is ignored). */
  cancel(timer: Timer | null): void;
}

/** A pending timer of a Clock: opaque outside the clock that made it. */
export interface Timer {
  readonly __timer?: never;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  wall: () => Date.now(),
  after<A>(ms: number, fn: (arg: A) => void, arg: A): Timer {
    const t = setTimeout(fn, ms, arg);
    t.unref();
    return t as unknown as Timer;
  },
  cancel(timer: Timer | null): void {
    if (timer !== null) clearTimeout(timer as unknown as NodeJS.Timeout);
  },
};
