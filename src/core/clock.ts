/** Injectable time, so tests can drive time-based behaviour without sleeping. */
export interface Clock {
  /** Milliseconds, monotonic (not wall time). */
  now(): number;
}

export const systemClock: Clock = {
  now: () => performance.now(),
};
