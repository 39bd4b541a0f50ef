/**
 * An in-memory etcd behind the registry's EtcdClient interface: one revision
 * counter, leases that expire on a ManualClock, prefix watches, compaction, and a
 * switch that makes every call fail (etcd away). Several clients (hosts) share one
 * FakeEtcd, as berths share one cluster.
 */
import type { EtcdClient, KeyValue, WatchEvent, WatchHandlers, WatchHandle } from '../../src/registry/etcd-client.js';
import type { ManualClock } from './clock.js';

interface Stored {
  value: string;
  lease: string;
  modRevision: number;
}

export class FakeEtcd {
  revision = 1;
  compacted = 0;
  down = false;
  readonly kv = new Map<string, Stored>();
  readonly leases = new Map<string, { ttl: number; expiresAt: number }>();
  readonly history: { revision: number; events: WatchEvent[] }[] = [];
  readonly watchers = new Set<{ prefix: string; h: WatchHandlers; from: number }>();
  nextLease = 100;
  /** Writes (puts, deletes, txns that wrote), for "keep-alives write nothing". */
  writes = 0;

  constructor(readonly clock: ManualClock) {}

  client(): EtcdClient & { closed: boolean } {
    return clientOf(this);
  }

  /** Etcd goes away: calls fail, open watches end. */
  stop(): void {
    this.down = true;
    for (const w of [...this.watchers]) {
      this.watchers.delete(w);
      w.h.onError(new Error('fake etcd: connection lost'));
    }
  }

  start(): void {
    this.down = false;
  }

  compact(): void {
    this.compacted = this.revision;
    this.history.length = 0;
  }

  /** Leases past their time: gone with their keys, in one revision. */
  expire(): void {
    for (const [id, l] of this.leases) if (l.expiresAt <= this.clock.now()) this.dropLease(id);
  }

  dropLease(id: string): void {
    if (!this.leases.delete(id)) return;
    const keys = [...this.kv].filter(([, s]) => s.lease === id).map(([k]) => k);
    if (keys.length > 0) this.write(keys.map((key) => ({ type: 'delete' as const, key, value: '' })), '0');
  }

  write(events: WatchEvent[], lease: string): void {
    this.revision++;
    this.writes++;
    for (const e of events) {
      if (e.type === 'put') this.kv.set(e.key, { value: e.value, lease, modRevision: this.revision });
      else this.kv.delete(e.key);
    }
    this.history.push({ revision: this.revision, events });
    for (const w of this.watchers) {
      const ev = events.filter((e) => e.key.startsWith(w.prefix));
      if (ev.length > 0) w.h.onEvents(ev, this.revision);
    }
  }

  /** Keys under `prefix`, sorted. */
  keys(prefix = ''): string[] {
    return [...this.kv.keys()].filter((k) => k.startsWith(prefix)).sort();
  }
}

function clientOf(self: FakeEtcd): EtcdClient & { closed: boolean } {
    const guard = async <T>(fn: () => T): Promise<T> => {
    await Promise.resolve();
    self.expire();
    if (self.down) throw new Error('connect ECONNREFUSED (fake etcd down)');
    return fn();
  };
  return {
    closed: false,
    grant: (ttl) =>
      guard(() => {
        const id = String(self.nextLease++);
        self.leases.set(id, { ttl, expiresAt: self.clock.now() + ttl * 1000 });
        return id;
      }),
    keepAlive: (lease) =>
      guard(() => {
        const l = self.leases.get(lease);
        if (!l) return 0;
        l.expiresAt = self.clock.now() + l.ttl * 1000;
        return l.ttl;
      }),
    revoke: (lease) => guard(() => self.dropLease(lease)),
    putIf: (key, value, lease, modRevision) =>
      guard(() => {
        const cur = self.kv.get(key);
        if ((cur?.modRevision ?? 0) !== modRevision) return { created: false as const, holder: cur ? { key, value: cur.value, lease: cur.lease, modRevision: cur.modRevision } : { key, value: '', lease: '0', modRevision: 0 } };
        if (lease !== '0' && !self.leases.has(lease)) throw new Error('etcdserver: requested lease not found');
        self.write([{ type: 'put', key, value }], lease);
        return { created: true as const };
      }),
    put: (key, value, lease) =>
      guard(() => {
        if (lease !== '0' && !self.leases.has(lease)) throw new Error('etcdserver: requested lease not found');
        self.write([{ type: 'put', key, value }], lease);
      }),
    delete: (key) =>
      guard(() => {
        if (self.kv.has(key)) self.write([{ type: 'delete', key, value: '' }], '0');
      }),
    range: (prefix) =>
      guard(() => ({
        kvs: [...self.kv].filter(([k]) => k.startsWith(prefix)).map(([key, s]): KeyValue => ({ key, value: s.value, lease: s.lease, modRevision: s.modRevision })),
        revision: self.revision,
      })),
    watch: (prefix, from, h): WatchHandle => {
      const w = { prefix, h, from };
      queueMicrotask(() => {
        if (self.down) {
          h.onError(new Error('fake etcd down'));
          return;
        }
        if (from <= self.compacted) {
          h.onCompacted(self.compacted);
          return;
        }
        self.watchers.add(w);
        for (const r of self.history) {
          if (r.revision < from) continue;
          const ev = r.events.filter((e) => e.key.startsWith(prefix));
          if (ev.length > 0) h.onEvents(ev, r.revision);
        }
      });
      return { cancel: () => self.watchers.delete(w) };
    },
    close() {
      this.closed = true;
    },
  };
}
