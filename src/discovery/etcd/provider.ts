/**
 * The discovery protocol across hosts: other hosts' endpoints, read from etcd, as
 * one provider's full snapshots (so they join the pools through the watcher like
 * any provider's; a service is one pool whatever host its endpoints are on).
 *
 * Range the prefix, then watch from the range's revision + 1, and after every
 * response resume from its header revision + 1. A watch cancelled because its
 * revision was compacted: range again (the snapshot is the diff) and watch anew.
 * A watch that ends, or that hears nothing (not even a progress notice) for three times
 * `progressMs`: reconnect with jittered backoff. While etcd is away the last known
 * entries stay (stale beats empty); `staleSince` says since when. Entries of this
 * host are ignored: local state is the truth.
 */
import { systemClock, type Clock, type Timer } from '../../core/clock.js';
import { backoffDelay } from '../../core/discovery.js';
import { systemRandom, type Random } from '../../core/random.js';
import type { EndpointSpec, ProviderSnapshot } from '../../core/types.js';
import type { Logger } from '../../log.js';
import type { EtcdClient, WatchHandle } from '../../registry/etcd-client.js';
import { decodeEntry, specOf, type RegistryKeys } from '../../registry/keys.js';
import type { Provider, SkippedItem } from '../provider.js';

export interface EtcdProviderOptions {
  readonly client: EtcdClient;
  readonly keys: RegistryKeys;
  /** This host's id: its own entries are skipped. */
  readonly host: string;
  readonly log: Logger;
  readonly onSnapshot: (snap: ProviderSnapshot) => void;
  /** Remote endpoints per host, after each change (metrics). */
  readonly onRemote?: ((perHost: ReadonlyMap<string, number>) => void) | undefined;
  readonly clock?: Clock;
  readonly random?: Random;
  /** etcd's progress-notify interval (its default is 10 min): a watch silent for three times this is reconnected. */
  readonly progressMs?: number;
  readonly backoffBaseMs?: number;
  readonly backoffCapMs?: number;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** How an unreadable entry is listed among the skipped: `<endpoint>@<host> (<service>)`. */
function skippedName(k: { readonly service: string; readonly host: string; readonly endpoint: string }): string {
  return `${k.endpoint}@${k.host} (${k.service})`;
}

export class EtcdProvider implements Provider {
  readonly name = 'etcd';
  connected = false;
  synced = false;
  lastSyncAt = 0;
  /** Monotonic ms since the remote view may be stale (etcd lost); null while current. */
  staleSince: number | null = null;
  private readonly entries = new Map<string, { readonly service: string; readonly host: string; readonly spec: EndpointSpec }>();
  private bad = new Map<string, string>();
  private watchHandle: WatchHandle | null = null;
  private revision = 0;
  private silenceTimer: Timer | null = null;
  private retryTimer: Timer | null = null;
  private attempt = 0;
  private stopped = false;
  private generation = 0;
  private readonly clock: Clock;
  private readonly random: Random;

  constructor(private readonly o: EtcdProviderOptions) {
    this.clock = o.clock ?? systemClock;
    this.random = o.random ?? systemRandom;
  }

  get skipped(): readonly SkippedItem[] {
    return [...this.bad].map(([name, reason]) => ({ name, reason }));
  }

  /** The first range; etcd unreachable does not fail the start (local endpoints serve): it is retried. */
  async start(): Promise<void> {
    try {
      await this.resync();
    } catch (err) {
      this.o.log.warn({ err: message(err) }, 'etcd unreachable: no other hosts\' endpoints yet, retrying');
      this.lost();
    }
    // Synced means "tried once": readiness must not wait for other hosts.
    this.synced = true;
  }

  stop(): void {
    this.stopped = true;
    this.watchHandle?.cancel();
    this.watchHandle = null;
    this.clock.cancel(this.silenceTimer);
    this.clock.cancel(this.retryTimer);
    this.o.client.close();
  }

  /** Range everything, replace the entries, watch from the next revision. */
  private async resync(): Promise<void> {
    const gen = ++this.generation;
    const { kvs, revision } = await this.o.client.range(this.o.keys.endpointsPrefix);
    if (this.stopped || gen !== this.generation) return;
    this.entries.clear();
    this.bad = new Map();
    for (const kv of kvs) this.put(kv.key, kv.value);
    this.revision = revision;
    this.connected = true;
    this.staleSince = null;
    this.attempt = 0;
    this.lastSyncAt = this.clock.wall();
    this.emit();
    this.startWatch();
  }

  private startWatch(): void {
    const gen = this.generation;
    this.watchHandle?.cancel();
    this.armSilence();
    this.watchHandle = this.o.client.watch(this.o.keys.endpointsPrefix, this.revision + 1, {
      onEvents: (events, revision) => {
        if (gen !== this.generation || this.stopped) return;
        this.armSilence();
        let changed = false;
        for (const e of events) changed = (e.type === 'put' ? this.put(e.key, e.value) : this.remove(e.key)) || changed;
        if (revision > this.revision) this.revision = revision;
        if (changed) this.emit();
      },
      onCompacted: (rev) => {
        if (gen !== this.generation || this.stopped) return;
        this.o.log.warn({ from: this.revision + 1, compacted: rev }, 'etcd compacted past the watch: reading every entry again');
        this.watchHandle = null;
        this.resync().catch((err: unknown) => {
          this.o.log.warn({ err: message(err) }, 'etcd re-read failed');
          this.lost();
        });
      },
      onError: (err) => {
        if (gen !== this.generation || this.stopped) return;
        this.watchHandle = null;
        this.o.log.warn({ err: message(err) }, 'etcd watch lost: keeping the last known endpoints of other hosts, reconnecting');
        this.lost();
      },
    });
  }

  private armSilence(): void {
    this.clock.cancel(this.silenceTimer);
    // Three intervals: etcd skips the notice after an event and moves each by up to 10%,
    // so quiet gaps of over twice the interval happen on a healthy watch.
    const ms = 3 * (this.o.progressMs ?? 600_000);
    const gen = this.generation;
    this.silenceTimer = this.clock.after(
      ms,
      () => {
        if (gen !== this.generation || this.stopped) return;
        this.o.log.warn({ silentMs: ms }, 'etcd watch silent for three progress intervals: reconnecting');
        this.watchHandle?.cancel();
        this.watchHandle = null;
        this.lost();
      },
      undefined,
    );
  }

  /** Disconnected: the entries stay; resume the watch (or range again) after a backoff. */
  private lost(): void {
    if (this.stopped) return;
    this.generation++;
    this.connected = false;
    this.staleSince ??= this.clock.now();
    this.clock.cancel(this.silenceTimer);
    this.clock.cancel(this.retryTimer);
    const delay = backoffDelay(this.attempt++, this.o.backoffBaseMs ?? 500, this.o.backoffCapMs ?? 30_000, () => this.random.next());
    this.retryTimer = this.clock.after(
      delay,
      () => {
        // A range, not a bare watch resume: it proves etcd answers, and it is the diff either way.
        this.resync().catch((err: unknown) => {
          if (this.stopped) return;
          this.o.log.debug({ err: message(err), retryInMs: delay }, 'etcd still unreachable');
          this.lost();
        });
      },
      undefined,
    );
  }

  /** True when the entries changed. */
  private put(key: string, value: string): boolean {
    const k = this.o.keys.parseEndpoint(key);
    if (k === null) return false;
    if (k.host === this.o.host) return false;
    const d = decodeEntry(value);
    if (!d.ok) {
      this.bad.set(skippedName(k), `unreadable registry entry: ${d.reason}`);
      return this.entries.delete(key);
    }
    this.bad.delete(skippedName(k));
    this.entries.set(key, { service: k.service, host: k.host, spec: specOf(k.host, k.endpoint, d.entry) });
    return true;
  }

  private remove(key: string): boolean {
    const k = this.o.keys.parseEndpoint(key);
    if (k !== null) this.bad.delete(skippedName(k));
    return this.entries.delete(key);
  }

  private emit(): void {
    const services = new Map<string, EndpointSpec[]>();
    const perHost = new Map<string, number>();
    for (const e of this.entries.values()) {
      let list = services.get(e.service);
      if (!list) services.set(e.service, (list = []));
      list.push(e.spec);
      perHost.set(e.host, (perHost.get(e.host) ?? 0) + 1);
    }
    this.o.onSnapshot({ provider: this.name, services });
    this.o.onRemote?.(perHost);
  }
}
