/**
 * The one way from a client to an endpoint, shared by tcp sessions, http exchanges
 * and Upgrade tunnels (Envoy hands one "tried hosts" object to its HTTP router and
 * TCP proxy alike): admission (the circuit breaker, maxPending), pick with the
 * endpoints already tried excluded, connect, and after a failure the retry, the
 * backoff round or the queue. What may be retried is the retry policy's word
 * (retry-policy.ts); this loop only carries it out. The mode (tcp, http) connects
 * and reports; every decision about which endpoint and when is made here.
 */
import type { Timer } from '../core/clock.js';
import type { EndpointState } from '../pool/endpoint.js';
import type { Outcome, Pool } from '../pool/pool.js';
import type { RetryKind } from './retry-policy.js';

export interface AttemptSettings {
  /** Backoff rounds over the endpoints once every one has failed, and resends after an endpoint took the request. */
  readonly retries: number;
  /** Pause before a backoff round (ms, doubling each round); 0 = no rounds. */
  readonly retryBackoff: number;
}

/**
 * Why no endpoint will take this client:
 * - unavailable: none could be tried (no usable endpoint, the breaker is open, the
 *   queue is full or timed out): tcp closes, http answers 503;
 * - failed: every endpoint tried failed: tcp resets, http answers 502.
 */
export type GiveUp = 'unavailable' | 'failed';

/** The mode's half: how to reach an endpoint, and what to tell the client when none will do. */
export interface AttemptUser {
  /** Connect (tcp) or dispatch (http) to `ep`; its slot is already taken. */
  connectTo(ep: EndpointState): void;
  /** No endpoint will take this client; the attempt has let go of everything it held. */
  giveUp(why: GiveUp, detail: string): void;
}

function onRound(a: UpstreamAttempt): void {
  a.round();
}
function onQueueWake(a: UpstreamAttempt): void {
  a.woken();
}

export class UpstreamAttempt {
  /** The endpoint being connected to or used (its slot is held), or null. */
  endpoint: EndpointState | null = null;
  /** Endpoints picked, failed connects included (access log). */
  attempts = 0;
  /** Requests sent again after an endpoint took them: these use up `retries`. */
  resends = 0;
  private tried: Set<EndpointState> | undefined = undefined;
  private rounds = 0;
  private timer: Timer | null = null;
  private cancelQueue: (() => void) | null = null;
  /** Counted in the service's pending clients until connected or ended. */
  private pending = false;
  private ended = false;
  /** When the current endpoint was picked (pool clock, ms). */
  private t0 = 0;
  /**
   * Which side ended this client's attempt, once one did: 'client' (it closed,
   * reset, timed out or botched its request; berth then cut the upstream side
   * short) or 'endpoint' (a failure reported against it). After the client has
   * ended it, nothing that fails counts against an endpoint.
   */
  endedBy: 'client' | 'endpoint' | null = null;

  constructor(
    private readonly pool: Pool,
    readonly service: string,
    private readonly settings: AttemptSettings,
    /** source-hash key (the client address), when the service balances by it. */
    private readonly key: string | undefined,
    private readonly user: AttemptUser,
  ) {}

  /** Admission, then the first pick. */
  start(): void {
    if (!this.pool.enter(this.service)) {
      this.giveUp('unavailable', `too many pending clients (${this.pool.service(this.service)?.pending ?? 0})`);
      return;
    }
    this.pending = true;
    this.next();
  }

  private next(): void {
    const svc = this.pool.service(this.service);
    const picked = svc?.pick({ key: this.key, exclude: this.tried });
    if (picked === undefined || picked.type === 'none') {
      const s = this.settings;
      if (picked?.reason === 'all-excluded' && this.rounds < s.retries && s.retryBackoff > 0) {
        // Every endpoint failed once (one still starting, a restart): pause, then try them all again.
        this.tried = undefined;
        this.timer = this.pool.clock.after(s.retryBackoff * 2 ** this.rounds++, onRound, this);
        return;
      }
      if (picked?.reason === 'at-capacity' && svc !== undefined && svc.queue.size > 0 && this.cancelQueue === null) {
        // Every endpoint is at its cap: wait in line for a slot, bounded in length and time.
        this.cancelQueue = this.pool.enqueue(
          this.service,
          () => onQueueWake(this),
          () => {
            this.cancelQueue = null;
            this.giveUp('unavailable', `queue timeout (${svc.queue.timeout}ms)`);
          },
        );
        if (this.cancelQueue !== null) return;
      }
      // Nothing usable at all: unavailable; every endpoint tried and failed: failed.
      if (this.attempts === 0) this.giveUp('unavailable', picked?.reason ?? 'no such service');
      else this.giveUp('failed', 'every endpoint failed');
      return;
    }
    const ep = picked.host;
    this.attempts++;
    this.endpoint = ep;
    this.pool.acquire(ep);
    this.t0 = this.pool.clock.now();
    this.user.connectTo(ep);
  }

  /** @internal a backoff round is due. */
  round(): void {
    this.timer = null;
    if (!this.ended) this.next();
  }

  /** @internal a slot freed while queued. */
  woken(): void {
    this.cancelQueue = null;
    if (!this.ended) this.next();
  }

  /** Milliseconds since the current endpoint was picked. */
  elapsed(): number {
    return this.pool.clock.now() - this.t0;
  }

  /** The connection is made (tcp: connected; http: the request is on its way): the client is no longer pending. */
  connected(): void {
    this.leavePending();
  }

  /**
   * Reports what the attempt on the current endpoint came to, timed from its pick.
   * A failure reaches the pool only while the client is still there: once the
   * client has ended its side, what breaks after is berth cutting the attempt short.
   */
  report(outcome: Outcome): void {
    if (this.endpoint === null) return;
    if (outcome === 'failed' || outcome === 'broken') {
      if (this.endedBy === 'client') return;
      this.endedBy = 'endpoint';
    }
    this.pool.report(this.endpoint, outcome, this.elapsed());
  }

  /**
   * The client ended its side (closed, reset, went idle, sent a malformed body):
   * from here on no failure is reported against an endpoint, in any mode.
   */
  clientEnded(): void {
    if (!this.ended) this.endedBy = 'client';
  }

  /**
   * The current endpoint failed; `kind` is the retry policy's verdict. 'next' is
   * always tried on another endpoint, 'resend' only within `retries` (and
   * `budget`, when given), 'none' never. Returns whether another endpoint is
   * being tried; false means the mode answers the client itself.
   */
  retry(kind: RetryKind, budget?: () => boolean): boolean {
    const ep = this.endpoint;
    if (ep === null || !this.mayRetry(kind)) return false;
    if (kind === 'resend') {
      if (budget !== undefined && !budget()) return false;
      this.resends++;
    }
    (this.tried ??= new Set()).add(ep);
    this.release();
    this.next();
    return true;
  }

  /** Whether `retry(kind)` would try another endpoint (a budget aside): a mode can let go of its socket first. */
  mayRetry(kind: RetryKind): boolean {
    // A client that has ended its side is tried on no other endpoint.
    if (this.ended || kind === 'none' || this.endedBy === 'client') return false;
    return kind === 'next' || this.resends < this.settings.retries;
  }

  /** Gives back the current endpoint's slot (its connection closed, or the tunnel took it). */
  release(): void {
    if (this.endpoint !== null) {
      this.pool.release(this.endpoint);
      this.endpoint = null;
    }
  }

  /**
   * Hands the current endpoint's slot to the caller, who releases it itself (a
   * tunnel outlives its exchange).
   */
  detach(): EndpointState | null {
    const ep = this.endpoint;
    this.endpoint = null;
    return ep;
  }

  /** Done with this client: timers, queue place, pending count and slot go. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.pool.clock.cancel(this.timer);
    this.timer = null;
    this.leavePending();
    this.release();
  }

  private leavePending(): void {
    if (this.pending) {
      this.pending = false;
      this.pool.leave(this.service);
    }
    if (this.cancelQueue !== null) {
      this.cancelQueue();
      this.cancelQueue = null;
    }
  }

  private giveUp(why: GiveUp, detail: string): void {
    this.end();
    this.user.giveUp(why, detail);
  }
}
