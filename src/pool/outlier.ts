import type { Clock, Timer } from '../core/clock.js';
import { Flag } from '../core/types.js';
import type { MutableEndpoint } from './endpoint.js';

/** Passive outlier detection settings of a service (ms). */
export interface OutlierSettings {
  readonly consecutiveFailures: number;
  readonly ejectFor: number;
  readonly maxEjectFor: number;
  /** Never eject more than this share (0–100) of a service's endpoints. */
  readonly maxEjectedPercent: number;
}

/** A discovered endpoint is not ejected as an outlier in its first this many ms (it may still be starting). */
export const STARTING_GRACE_MS = 10_000;

/** What the detector asks of the pool: the flag is the pool's to set. */
export interface OutlierHost {
  setOutlier(e: MutableEndpoint, on: boolean, why: string): void;
}

interface Ejection {
  readonly detector: OutlierDetector;
  readonly endpoint: MutableEndpoint;
}

function onEjectionOver(x: Ejection): void {
  x.detector.timers.delete(x.endpoint);
  x.detector.end(x.endpoint, 'ejection time over');
}

/**
 * Passive outlier detection (Envoy's consecutive-failure ejection): `consecutiveFailures`
 * in a row eject an endpoint for ejectFor × times ejected (capped at maxEjectFor),
 * unless that would eject more than maxEjectedPercent of the service (no ejection
 * cascade). Ejections end on the injected clock.
 */
export class OutlierDetector {
  /** @internal the timer that ends each current ejection. */
  readonly timers = new Map<MutableEndpoint, Timer>();

  constructor(
    private readonly clock: Clock,
    private readonly host: OutlierHost,
  ) {}

  /** A failure of `e` (one of `peers`, its service's endpoints). */
  failed(e: MutableEndpoint, o: OutlierSettings | undefined, peers: Iterable<MutableEndpoint>, peerCount: number): void {
    e.failures++;
    e.consecutiveFailures++;
    if (!o || e.flags & Flag.Outlier || e.consecutiveFailures < o.consecutiveFailures) return;
    // A container discovery has just reported may still be starting to listen: its
    // refusals are retried elsewhere all the same, but do not eject it yet.
    if (!e.sources.has('static') && this.clock.now() - e.joinedAt < STARTING_GRACE_MS) return;
    let ejected = 0;
    for (const x of peers) if (x.flags & Flag.Outlier) ejected++;
    if (((ejected + 1) * 100) / peerCount > o.maxEjectedPercent) {
      e.record(`outlier: ${e.consecutiveFailures} failures in a row, not ejected (would exceed ${o.maxEjectedPercent}% ejected)`, this.clock.wall());
      return;
    }
    e.ejections++;
    const ms = Math.min(o.maxEjectFor, o.ejectFor * e.ejections);
    this.host.setOutlier(e, true, `outlier: ejected for ${ms}ms after ${e.consecutiveFailures} connect failures in a row (ejection ${e.ejections})`);
    this.timers.set(e, this.clock.after(ms, onEjectionOver, { detector: this, endpoint: e }));
  }

  succeeded(e: MutableEndpoint): void {
    e.consecutiveFailures = 0;
  }

  /** Ends an ejection (its time is over, or an active check passed). */
  end(e: MutableEndpoint, why: string): void {
    this.forget(e);
    e.consecutiveFailures = 0;
    this.host.setOutlier(e, false, `outlier: back (${why})`);
  }

  /** The endpoint left: its ejection timer goes. */
  forget(e: MutableEndpoint): void {
    const t = this.timers.get(e);
    if (t !== undefined) {
      this.clock.cancel(t);
      this.timers.delete(e);
    }
  }
}
