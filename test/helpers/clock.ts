import type { Clock, Timer } from '../../src/core/clock.js';

interface Pending {
  at: number;
  seq: number;
  run: () => void;
  cancelled: boolean;
}

/**
 * A clock that moves only when told: `advance(ms)` runs every timer that falls due
 * on the way, in order of due time (then of creation), each seeing `now()` at its
 * own due time. `set(ms)` moves time without running anything (for code that only
 * reads the clock).
 */
export class ManualClock implements Clock {
  private t: number;
  private seq = 0;
  private timers: Pending[] = [];

  constructor(start = 0) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  /** Wall time: a fixed epoch plus the clock's own time. */
  wall(): number {
    return 1_800_000_000_000 + this.t;
  }

  after<A>(ms: number, fn: (arg: A) => void, arg: A): Timer {
    const p: Pending = { at: this.t + Math.max(0, ms), seq: this.seq++, run: () => fn(arg), cancelled: false };
    this.timers.push(p);
    return p as unknown as Timer;
  }

  cancel(timer: Timer | null): void {
    if (timer !== null) (timer as unknown as Pending).cancelled = true;
  }

  /** Timers not yet run nor cancelled. */
  get pending(): number {
    return this.timers.filter((p) => !p.cancelled).length;
  }

  /** The time left (ms) until each pending timer, soonest first. */
  dueIn(): number[] {
    return this.timers
      .filter((p) => !p.cancelled)
      .map((p) => p.at - this.t)
      .sort((a, b) => a - b);
  }

  /** Moves time forward by `ms`, running the timers that fall due. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      this.timers = this.timers.filter((p) => !p.cancelled);
      let next: Pending | undefined;
      for (const p of this.timers) if (p.at <= end && (next === undefined || p.at < next.at || (p.at === next.at && p.seq < next.seq))) next = p;
      if (next === undefined) break;
      next.cancelled = true;
      this.t = next.at;
      next.run();
    }
    this.t = end;
  }

  /** Sets the time without running timers. */
  set(ms: number): void {
    this.t = ms;
  }
}
