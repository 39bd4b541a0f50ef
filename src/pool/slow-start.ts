import type { MutableEndpoint } from './endpoint.js';

/** Slow start begins at this share of the configured weight. */
export const SLOW_START_FLOOR = 0.1;

/**
 * Slow start of one service: an endpoint that has just become eligible (new, or
 * back from any exclusion) while others are serving starts at SLOW_START_FLOOR of
 * its weight and ramps linearly to the full weight over `ms`. Endpoints of a
 * service that had none serving start at full weight: there is nobody to spare
 * them from. Pure over the time it is given; the pool ticks it on its clock.
 */
export class SlowStart {
  /** Ramp time, ms (0 = off). */
  ms = 0;
  readonly ramping = new Set<MutableEndpoint>();

  /**
   * Notes eligibility transitions since the last call (starting ramps) and applies
   * the ramps for `now`. Returns whether any weight changed.
   */
  begin(endpoints: Iterable<MutableEndpoint>, now: number, wall: number): boolean {
    const all = [...endpoints];
    if (this.ms <= 0) {
      for (const e of all) e.wasEligible = e.eligible;
      return false;
    }
    let serving = 0;
    for (const e of all) if (e.eligible && e.wasEligible) serving++;
    for (const e of all) {
      const eligible = e.eligible;
      if (eligible && !e.wasEligible && serving > 0 && e.rampStart === null) {
        e.rampStart = now;
        e.record(`slow start: ramping to weight ${e.configuredWeight} over ${this.ms}ms`, wall);
        this.ramping.add(e);
      }
      e.wasEligible = eligible;
    }
    return this.apply(now, wall);
  }

  /** Sets ramping endpoints' weights for time `now`; returns whether any changed. */
  apply(now: number, wall: number): boolean {
    let changed = false;
    for (const e of this.ramping) {
      const f = this.ms > 0 ? Math.min(1, SLOW_START_FLOOR + ((1 - SLOW_START_FLOOR) * (now - e.rampStart!)) / this.ms) : 1;
      const w = f >= 1 ? e.configuredWeight : e.configuredWeight * f;
      if (w !== e.weight) {
        e.weight = w;
        changed = true;
      }
      if (f >= 1 || !e.eligible) {
        e.rampStart = null;
        e.weight = e.configuredWeight;
        this.ramping.delete(e);
        if (f >= 1) e.record('slow start: full weight', wall);
      }
    }
    return changed;
  }

  /** The endpoint left the service. */
  forget(e: MutableEndpoint): void {
    this.ramping.delete(e);
  }
}
