/**
 * Registration: this host's endpoints (what its local providers found: Docker,
 * Swarm, static; never what it read from etcd) written to etcd under one lease.
 *
 * - One lease per host (TTL `ttl`, a keep-alive every TTL/3; keep-alives write
 *   nothing). Every key is attached to it: a host that dies is gone from every
 *   other host when its lease expires; `stop` revokes it (every key of the host
 *   gone in one revision).
 * - The host key is claimed with a transaction (put if unchanged since read). Held by
 *   another lease: waited for up to TTL + 1 s (a restart of the same host takes its
 *   key back once the old lease expires); still held, the start fails
 *   (BERTH_ERR_HOST_ID). Taken over at once: a key with no lease (no live berth's
 *   claim; it would never expire) and, on a reload, this process's previous
 *   registration (`takeOver`): its keys are put again under the new lease, so other
 *   hosts see no entry go away.
 * - Writes are the difference between what the local state asks for (`desired`,
 *   read on every `changed()`, also one made while connecting) and what was
 *   written; one operation at a time.
 * - Reconcile at start, after every reconnect and every `reconcileMs`: the host's
 *   keys in etcd read back, orphans deleted, missing or different ones written.
 * - etcd away: local serving is unaffected; reconnect with jittered backoff (up to
 *   `backoffCapMs`), keeping the lease when it survived, else a new one and every
 *   key written again.
 */
import { systemClock, type Clock, type Timer } from '../core/clock.js';
import { backoffDelay } from '../core/discovery.js';
import { BerthError } from '../core/errors.js';
import { systemRandom, type Random } from '../core/random.js';
import type { Logger } from '../log.js';
import type { EtcdClient } from './etcd-client.js';
import { describeClaim, encodeClaim, type HostClaim, type RegistryKeys } from './keys.js';

export interface PublisherOptions {
  readonly client: EtcdClient;
  readonly keys: RegistryKeys;
  readonly host: string;
  readonly claim: HostClaim;
  readonly ttlSeconds: number;
  /** Key → JSON value of every entry this host should have now. */
  readonly desired: () => ReadonlyMap<string, string>;
  readonly log: Logger;
  /** Connected or not, and how many entries are written: for the metrics and readiness. */
  readonly onState?: (connected: boolean, published: number) => void;
  readonly clock?: Clock;
  readonly random?: Random;
  readonly reconcileMs?: number;
  readonly backoffBaseMs?: number;
  readonly backoffCapMs?: number;
  /** Between tries of a held host key at start, ms. */
  readonly claimRetryMs?: number;
  /** The lease of the registration this one replaces (a reload): its host key is taken over, not waited for. */
  readonly takeOver?: string | null;
  /**
   * The registration this one replaces, held (a reload): its lease keeps this host's
   * entries alive until this one has put them all under its own, then it is stopped
   * (its lease revoked with nothing left on it); stopped with this one before that.
   */
  readonly predecessor?: Publisher | null;
}

/** The refusal of a host id another live berth holds (its claim's value describes it). */
function hostIdHeld(host: string, claim: string): BerthError {
  return new BerthError('BERTH_ERR_HOST_ID', `host id "${host}" is held in etcd by another berth (${describeClaim(claim)}) that keeps its lease alive: give this berth its own --host-id (discovery.etcd.host)`);
}

/** Thrown inside a connect that `stop` cut short. */
class Stopped extends Error {}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class Publisher {
  private lease: string | null = null;
  /** The host key is written under `lease`. */
  private claimed = false;
  /** What is in etcd for this host, as far as this publisher knows. */
  private readonly written = new Map<string, string>();
  private keepAliveTimer: Timer | null = null;
  private reconcileTimer: Timer | null = null;
  private retryTimer: Timer | null = null;
  private attempt = 0;
  private chain: Promise<void> = Promise.resolve();
  private dirty = false;
  /** A change came while not connected: synced once connected. */
  private pending = false;
  /** Writes held for a successor (`hold`); keep-alives go on, reconnects wait for `resume`. */
  private held = false;
  /** Reports nothing more (held for a successor, or stopped by it): the successor reports. */
  private silent = false;
  private predecessor: Publisher | null;
  private stopped = false;
  /** Bumped on every loss and stop: a keep-alive answer of an older connection is ignored. */
  private generation = 0;
  /** The wait between two claims of a held host key (cut short by `stop`). */
  private claimWait: { readonly timer: Timer; readonly done: () => void } | null = null;
  connected = false;
  private readonly clock: Clock;
  private readonly random: Random;

  constructor(private readonly o: PublisherOptions) {
    this.clock = o.clock ?? systemClock;
    this.random = o.random ?? systemRandom;
    this.predecessor = o.predecessor ?? null;
  }

  private state(connected: boolean, published: number): void {
    if (!this.silent) this.o.onState?.(connected, published);
  }

  /** This registration's lease (null while it has none). */
  get leaseId(): string | null {
    return this.lease;
  }

  get published(): number {
    return this.written.size;
  }

  /**
   * First registration. Resolves once registered, or once etcd has proved
   * unreachable (registration then goes on in the background); rejects only when
   * another live berth holds this host id and `mustClaim` (a start: exit 2). A
   * reload's registration (its host id checked before) goes on retrying instead.
   */
  async start(mustClaim = true): Promise<void> {
    // On the chain, so that `stop` waits for (and cuts short) a start in progress.
    const first = this.connect(mustClaim);
    this.chain = first.catch(() => {});
    try {
      await first;
    } catch (err) {
      if (err instanceof BerthError) throw err;
      if (this.stopped) return;
      this.o.log.warn({ err: message(err) }, 'etcd unreachable: serving local endpoints, registering when it answers');
      this.lost();
      this.state(false, 0);
    }
  }

  /** The local state changed: write the difference (soon, and one write round at a time). */
  changed(): void {
    if (this.stopped || this.held) return;
    if (!this.connected) {
      this.pending = true;
      return;
    }
    if (this.dirty) return;
    this.dirty = true;
    this.enqueue(async () => {
      this.dirty = false;
      await this.sync();
    });
  }

  /**
   * A successor is about to take over (a reload): no more writes (keep-alives go
   * on, so the lease outlives a slow takeover); resolves with the lease once the
   * writes under way are done. `resume` when the successor could not start.
   */
  async hold(): Promise<string | null> {
    this.held = true;
    this.silent = true;
    // A claim of its own under way (a reconnect) ends here: the successor claims.
    this.cutClaimWait();
    await this.chain.catch(() => {});
    return this.lease;
  }

  resume(): void {
    if (!this.held) return;
    this.held = false;
    this.silent = false;
    this.state(this.connected, this.written.size);
    if (this.connected) this.changed();
    else if (this.retryTimer === null) this.lost();
  }

  private cutClaimWait(): void {
    const wait = this.claimWait;
    this.claimWait = null;
    if (wait !== null) {
      this.clock.cancel(wait.timer);
      wait.done();
    }
  }

  /**
   * Revokes the lease: every key of this host gone in one revision (none, for a
   * predecessor whose successor has put them all under its own). A predecessor
   * still held goes too.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.generation++;
    this.clearTimers();
    this.cutClaimWait();
    const predecessor = this.predecessor;
    this.predecessor = null;
    await Promise.all([this.chain.catch(() => {}), predecessor?.stop()]);
    const lease = this.lease;
    this.lease = null;
    this.connected = false;
    if (lease !== null) {
      try {
        await this.o.client.revoke(lease);
        this.o.log.info({ host: this.o.host }, 'registry lease revoked: this host is gone from etcd');
      } catch (err) {
        this.o.log.warn({ err: message(err) }, 'could not revoke the registry lease: other hosts drop this one when it expires');
      }
    }
    this.written.clear();
    this.state(false, 0);
    this.o.client.close();
  }

  private enqueue(task: () => Promise<void>): void {
    this.chain = this.chain.then(task).catch((err: unknown) => {
      if (!this.stopped) {
        this.o.log.warn({ err: message(err) }, 'etcd write failed: reconnecting');
        this.lost();
      }
    });
  }

  private clearTimers(): void {
    this.clock.cancel(this.keepAliveTimer);
    this.clock.cancel(this.reconcileTimer);
    this.clock.cancel(this.retryTimer);
    this.keepAliveTimer = this.reconcileTimer = this.retryTimer = null;
  }

  /** A lease (the old one while it lives), the host key, then a reconcile. */
  private async connect(first: boolean): Promise<void> {
    const c = this.o.client;
    if (this.lease !== null && (await c.keepAlive(this.lease, this.keepAliveTimeout)) <= 0) {
      this.o.log.warn({ host: this.o.host }, 'registry lease expired while etcd was away: registering again');
      this.lease = null;
      this.written.clear();
    }
    if (this.lease === null) {
      if (this.stopped) return;
      // Kept from the grant on, so that a stop meanwhile revokes it.
      this.lease = await c.grant(this.o.ttlSeconds);
      this.claimed = false;
      this.written.clear();
      // Kept alive from the grant on: a wait for the host key, or a long first reconcile, can outlast the TTL.
      this.scheduleKeepAlive();
    }
    // Also after a claim that etcd's loss cut short: the lease lived on, the host key was not written.
    if (!this.claimed) {
      await this.claim(this.lease, first);
      this.claimed = true;
    }
    if (this.stopped) return;
    this.pending = false;
    await this.reconcile();
    if (this.stopped) return;
    this.connected = true;
    this.attempt = 0;
    this.state(true, this.written.size);
    this.scheduleKeepAlive();
    this.scheduleReconcile();
    // Every entry is under this lease now: the predecessor's can go, with nothing on it.
    const predecessor = this.predecessor;
    this.predecessor = null;
    if (predecessor !== null) void predecessor.stop();
    // A change while connecting, after the reconcile read the local state.
    if (this.pending) this.changed();
  }

  private async claim(lease: string, first: boolean): Promise<void> {
    const key = this.o.keys.host(this.o.host);
    const value = encodeClaim(this.o.claim);
    const waitMs = this.o.ttlSeconds * 1000 + 1000;
    const start = this.clock.now();
    /** The host key's mod revision this claim expects (0: absent). */
    let expect = 0;
    for (let rounds = 0; ; rounds++) {
      if (this.stopped || this.held) throw new Stopped('stopped');
      const r = await this.o.client.putIf(key, value, lease, expect);
      if (r.created || r.holder.lease === lease) return;
      if (this.stopped || this.held) throw new Stopped('stopped');
      const h = r.holder;
      // Gone between the compare and the read; a key no live berth holds (no lease:
      // it would never expire); this process's previous registration (a reload).
      const takeable = h.modRevision === 0 || h.lease === '0' || h.lease === this.o.takeOver;
      if (takeable) {
        if (h.lease === '0' && h.modRevision !== 0 && rounds === 0) this.o.log.warn({ host: this.o.host, holder: describeClaim(h.value) }, 'host key without a lease (no live berth holds it): taking it');
        expect = h.modRevision;
        // Each at-once retry follows a change of the key in etcd; past a few, paced.
        if (rounds < 16) continue;
        await this.pause(this.o.claimRetryMs ?? 1000);
        continue;
      }
      expect = 0;
      const waited = this.clock.now() - start;
      if (waited >= waitMs) {
        this.lease = null;
        await this.o.client.revoke(lease).catch(() => {});
        const err = hostIdHeld(this.o.host, h.value);
        if (first) throw err;
        // Someone took this host's id while etcd was away: not ours to fight over.
        this.o.log.error({ err: err.message }, 'registry: host id taken; not publishing, retrying');
        throw new Error(err.message);
      }
      if (waited === 0) this.o.log.warn({ host: this.o.host, holder: describeClaim(h.value) }, `host key held: waiting up to ${waitMs} ms for the old lease to expire`);
      await this.pause(Math.min(this.o.claimRetryMs ?? 1000, waitMs - waited));
    }
  }

  /** A wait on the clock that `stop` cuts short. */
  private pause(ms: number): Promise<void> {
    if (this.stopped || this.held) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = () => {
        this.claimWait = null;
        resolve();
      };
      this.claimWait = { timer: this.clock.after(ms, done, undefined), done };
    });
  }

  /** The host's keys as etcd has them, made equal to the desired ones. */
  private async reconcile(): Promise<void> {
    const lease = this.lease;
    if (lease === null) return;
    const { kvs } = await this.o.client.range(this.o.keys.endpointsPrefix);
    this.written.clear();
    for (const kv of kvs) {
      const parsed = this.o.keys.parseEndpoint(kv.key);
      if (parsed?.host !== this.o.host) continue;
      // Written under an older lease (a restart): it would vanish with that lease.
      if (kv.lease === lease) this.written.set(kv.key, kv.value);
      else this.written.set(kv.key, '\u0000stale');
    }
    await this.sync();
  }

  private async sync(): Promise<void> {
    const lease = this.lease;
    if (lease === null || this.stopped || this.held) return;
    const desired = this.o.desired();
    for (const [k, v] of desired) {
      if (this.written.get(k) === v) continue;
      await this.o.client.put(k, v, lease);
      this.written.set(k, v);
    }
    for (const k of [...this.written.keys()]) {
      if (desired.has(k)) continue;
      await this.o.client.delete(k);
      this.written.delete(k);
    }
    this.state(this.connected, this.written.size);
  }

  /** A keep-alive gives up on a member within a third of the TTL: time is left to reach another before the lease expires. */
  private get keepAliveTimeout(): number {
    return Math.max(500, Math.floor((this.o.ttlSeconds * 1000) / 3));
  }

  private scheduleKeepAlive(): void {
    if (this.stopped) return;
    this.clock.cancel(this.keepAliveTimer);
    this.keepAliveTimer = this.clock.after(Math.max(500, Math.floor((this.o.ttlSeconds * 1000) / 3)), () => this.keepAlive(), undefined);
  }

  private keepAlive(): void {
    const lease = this.lease;
    const generation = this.generation;
    if (this.stopped || lease === null) return;
    this.o.client.keepAlive(lease, this.keepAliveTimeout).then(
      (ttl) => {
        if (this.stopped || generation !== this.generation || this.lease !== lease) return;
        if (ttl > 0) {
          this.scheduleKeepAlive();
          return;
        }
        this.o.log.warn({ host: this.o.host }, 'registry lease expired: registering again');
        this.lease = null;
        this.written.clear();
        this.lost();
      },
      (err: unknown) => {
        // A late failure of a connection already replaced says nothing of the new one.
        if (this.stopped || generation !== this.generation) return;
        this.o.log.warn({ err: message(err) }, 'etcd keep-alive failed: reconnecting');
        this.lost();
      },
    );
  }

  private scheduleReconcile(): void {
    if (this.stopped) return;
    this.clock.cancel(this.reconcileTimer);
    this.reconcileTimer = this.clock.after(
      this.o.reconcileMs ?? 60_000,
      () => {
        this.enqueue(() => this.reconcile());
        this.scheduleReconcile();
      },
      undefined,
    );
  }

  /** Disconnected: retry with jittered backoff. */
  private lost(): void {
    if (this.stopped) return;
    this.generation++;
    const was = this.connected;
    this.connected = false;
    this.clearTimers();
    if (was) this.state(false, this.written.size);
    // Held for a successor: it claims and writes now; reconnecting waits for a resume.
    if (this.held) return;
    const delay = backoffDelay(this.attempt++, this.o.backoffBaseMs ?? 500, this.o.backoffCapMs ?? 30_000, () => this.random.next());
    this.retryTimer = this.clock.after(
      delay,
      () => {
        this.retryTimer = null;
        this.enqueue(async () => {
          try {
            await this.connect(false);
            this.o.log.info({ host: this.o.host, published: this.written.size }, 'registered in etcd');
          } catch (err) {
            if (this.stopped) return;
            this.o.log.warn({ err: message(err), retryInMs: delay }, 'etcd still unreachable');
            this.lost();
          }
        });
      },
      undefined,
    );
  }
}

/**
 * Before a reload changes the registration (it can still fail then, changing
 * nothing): waits while another live berth holds `host`'s key (up to TTL + 1 s, for
 * a lease that is expiring), then rejects with BERTH_ERR_HOST_ID naming it. A free
 * key, one without a lease, or one on `own` (this process's registration) passes; so
 * does an etcd that does not answer (the registration then retries on its own).
 */
export async function checkHostId(o: { readonly client: EtcdClient; readonly keys: RegistryKeys; readonly host: string; readonly ttlSeconds: number; readonly own: string | null; readonly clock?: Clock; readonly retryMs?: number }): Promise<void> {
  const clock = o.clock ?? systemClock;
  const key = o.keys.host(o.host);
  const waitMs = o.ttlSeconds * 1000 + 1000;
  const start = clock.now();
  for (;;) {
    let holder: { readonly value: string; readonly lease: string } | undefined;
    try {
      holder = (await o.client.range(key)).kvs.find((kv) => kv.key === key);
    } catch {
      return;
    }
    if (holder === undefined || holder.lease === '0' || holder.lease === o.own) return;
    const waited = clock.now() - start;
    if (waited >= waitMs) throw hostIdHeld(o.host, holder.value);
    await new Promise<void>((resolve) => clock.after(Math.min(o.retryMs ?? 1000, waitMs - waited), resolve, undefined));
  }
}
