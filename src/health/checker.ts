/**
 * Active health checks: one probe loop per endpoint, interval with jitter, timeout,
 * rise/fall thresholds. It knows nothing of the pool: the composition root tells it
 * which targets exist (sync) and turns its state changes into pool flags.
 */
import { systemClock, type Clock, type Timer } from '../core/clock.js';
import type { Random } from '../core/random.js';
import type { ProbeResult } from './probe.js';

export type CheckState = 'pending' | 'healthy' | 'unhealthy';

export interface CheckTarget {
  /** Unique key, e.g. "service\0endpoint". */
  readonly key: string;
  readonly host: string;
  readonly port: number;
  /** Runs one probe. */
  readonly probe: (host: string, port: number) => Promise<ProbeResult>;
  readonly intervalMs: number;
  /** 0–1: each interval is stretched or shrunk by up to this share, so checks do not march in step. */
  readonly jitter: number;
  /** Consecutive passes that bring an unhealthy endpoint back. */
  readonly rise: number;
  /** Consecutive failures that take a healthy endpoint out. */
  readonly fall: number;
  /** State before the first probe: pending (no traffic until it passes) or healthy. */
  readonly initial: 'pending' | 'healthy';
  /** Identity of the settings: a target whose settings change is restarted. */
  readonly settingsKey: string;
}

export interface CheckChange {
  readonly key: string;
  readonly from: CheckState;
  readonly to: CheckState;
  readonly detail: string;
}

/** @internal */
export interface Running {
  target: CheckTarget;
  state: CheckState;
  passes: number;
  failures: number;
  timer: Timer | null;
  stopped: boolean;
  last: ProbeResult | null;
  lastAt: number;
}

function onDue(x: { readonly checker: HealthChecker; readonly r: Running }): void {
  void x.checker.run(x.r);
}

export class HealthChecker {
  private readonly running = new Map<string, Running>();

  constructor(
    private readonly onChange: (c: CheckChange) => void,
    private readonly random: Random,
    /** Probe intervals run on this clock. */
    private readonly clock: Clock = systemClock,
  ) {}

  /** Starts checks for new targets, stops removed ones, restarts changed ones. */
  sync(targets: Iterable<CheckTarget>): void {
    const wanted = new Map<string, CheckTarget>();
    for (const t of targets) wanted.set(t.key, t);
    for (const [key, r] of this.running) {
      const t = wanted.get(key);
      if (!t || t.settingsKey !== r.target.settingsKey || t.host !== r.target.host || t.port !== r.target.port) this.stop(key);
    }
    for (const t of wanted.values()) if (!this.running.has(t.key)) this.start(t);
  }

  state(key: string): { state: CheckState; last: ProbeResult | null; lastAt: number } | undefined {
    const r = this.running.get(key);
    return r ? { state: r.state, last: r.last, lastAt: r.lastAt } : undefined;
  }

  stopAll(): void {
    for (const key of [...this.running.keys()]) this.stop(key);
  }

  private stop(key: string): void {
    const r = this.running.get(key);
    if (!r) return;
    r.stopped = true;
    this.clock.cancel(r.timer);
    this.running.delete(key);
  }

  private start(t: CheckTarget): void {
    const r: Running = { target: t, state: t.initial, passes: 0, failures: 0, timer: null, stopped: false, last: null, lastAt: 0 };
    this.running.set(t.key, r);
    // First probe right away (a new endpoint should not wait a whole interval), then on schedule.
    void this.run(r);
  }

  private schedule(r: Running): void {
    if (r.stopped) return;
    const { intervalMs, jitter } = r.target;
    const delay = Math.max(1, intervalMs * (1 + jitter * (this.random.next() * 2 - 1)));
    r.timer = this.clock.after(delay, onDue, { checker: this, r });
  }

  /** @internal */
  async run(r: Running): Promise<void> {
    r.timer = null;
    // A probe that throws or rejects is a failed check, never an unhandled error.
    const result = await Promise.resolve()
      .then(() => r.target.probe(r.target.host, r.target.port))
      .catch((err: unknown): ProbeResult => ({ ok: false, detail: err instanceof Error ? err.message : String(err) }));
    if (r.stopped) return;
    r.last = result;
    r.lastAt = this.clock.wall();
    const from = r.state;
    if (result.ok) {
      r.passes++;
      r.failures = 0;
      // A pending endpoint joins on its first pass; an unhealthy one needs `rise` in a row.
      if (from === 'pending' || (from === 'unhealthy' && r.passes >= r.target.rise)) r.state = 'healthy';
    } else {
      r.failures++;
      r.passes = 0;
      if (from !== 'unhealthy' && r.failures >= r.target.fall) r.state = 'unhealthy';
    }
    if (r.state !== from) this.onChange({ key: r.target.key, from, to: r.state, detail: result.detail });
    this.schedule(r);
  }
}
