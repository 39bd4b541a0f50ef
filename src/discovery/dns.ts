/**
 * DNS discovery (Consul DNS, Kubernetes headless services, Docker's tasks.<service>):
 * A/AAAA or SRV records of a name become a service's endpoints. Each name is
 * re-resolved at its interval, sooner when the records' TTL is shorter; a failing
 * resolver (timeout, refused, SERVFAIL) keeps the last good answer and is counted,
 * while "no such name" / "no data" is an answer: no endpoints.
 */
import { Resolver } from 'node:dns/promises';
import { nullDiscoveryObserver, type DiscoveryObserver } from '../core/discovery.js';
import type { EndpointSpec, ProviderSnapshot } from '../core/types.js';
import type { Logger } from '../log.js';

export interface DnsEntry {
  readonly name: string;
  readonly service: string;
  /** A/AAAA: the endpoints' port (SRV records carry their own). */
  readonly port?: number | undefined;
  readonly type: 'A' | 'AAAA' | 'SRV';
  /** ms */
  readonly interval: number;
  /** "host:port" or "host" (port 53); empty = the system's resolvers. */
  readonly servers: readonly string[];
  /** Per query, ms. */
  readonly timeout: number;
}

export interface DnsProviderOptions {
  readonly entries: readonly DnsEntry[];
  readonly log: Logger;
  readonly onSnapshot: (snap: ProviderSnapshot) => void;
  readonly observer?: DiscoveryObserver;
}

/** Shortest re-resolve, so a TTL of 0 does not become a busy loop. */
const MIN_INTERVAL = 500;

/** Errors that mean "the name has no such records": an empty answer, not a failure. */
const EMPTY = new Set(['ENOTFOUND', 'ENODATA']);

/** SRV: only the lowest priority group is used; record weight → endpoint weight (0 → 1, capped at 1000). */
export function srvEndpoints(records: readonly { name: string; port: number; priority: number; weight: number }[]): EndpointSpec[] {
  if (records.length === 0) return [];
  const lowest = Math.min(...records.map((r) => r.priority));
  const out = new Map<string, EndpointSpec>();
  for (const r of records) {
    if (r.priority !== lowest) continue;
    const host = r.name.replace(/\.$/, '');
    const id = `${host}:${r.port}`;
    out.set(id, { id, host, port: r.port, weight: Math.min(1000, Math.max(1, r.weight)), source: 'dns', labels: { record: `SRV priority ${r.priority} weight ${r.weight}` } });
  }
  return [...out.values()];
}

interface State {
  readonly entry: DnsEntry;
  readonly resolver: Resolver;
  endpoints: EndpointSpec[] | null;
  timer: NodeJS.Timeout | null;
  failures: number;
}

export class DnsProvider {
  readonly name = 'dns';
  private readonly states: State[];
  private stopped = false;
  private readonly observer: DiscoveryObserver;

  constructor(private readonly opts: DnsProviderOptions) {
    this.observer = opts.observer ?? nullDiscoveryObserver;
    this.states = opts.entries.map((entry) => {
      const resolver = new Resolver({ timeout: entry.timeout, tries: 2 });
      if (entry.servers.length > 0) resolver.setServers([...entry.servers]);
      return { entry, resolver, endpoints: null, timer: null, failures: 0 };
    });
  }

  /** Resolves every name once (failures are logged, not thrown), publishes, then keeps following. */
  async start(): Promise<void> {
    await Promise.all(this.states.map((s) => this.resolve(s, false)));
    this.publish();
    for (const s of this.states) this.schedule(s, s.entry.interval);
  }

  /** Wall time of the last published answer. */
  lastSyncAt = 0;
  /** A name either resolves or is retried: nothing is skipped. */
  readonly skipped: readonly { readonly name: string; readonly reason: string }[] = [];

  /** False while some name's lookups are failing. */
  get connected(): boolean {
    return this.states.every((s) => s.failures === 0);
  }

  /** True once every name has had a good answer. */
  get synced(): boolean {
    return this.states.every((s) => s.endpoints !== null);
  }

  stop(): void {
    this.stopped = true;
    for (const s of this.states) if (s.timer) clearTimeout(s.timer);
  }

  private schedule(s: State, ms: number): void {
    if (this.stopped) return;
    s.timer = setTimeout(() => {
      void this.resolve(s, true).then((next) => {
        if (this.stopped) return;
        if (next.changed) this.publish();
        this.schedule(s, next.delay);
      });
    }, ms);
    s.timer.unref();
  }

  /** One lookup; returns whether the endpoints changed and when to look again. */
  private async resolve(s: State, following: boolean): Promise<{ changed: boolean; delay: number }> {
    const e = s.entry;
    let endpoints: EndpointSpec[];
    let ttl = Infinity;
    try {
      if (e.type === 'SRV') {
        endpoints = srvEndpoints(await s.resolver.resolveSrv(e.name));
      } else {
        const records = e.type === 'A' ? await s.resolver.resolve4(e.name, { ttl: true }) : await s.resolver.resolve6(e.name, { ttl: true });
        endpoints = [...new Set(records.map((r) => r.address))].sort().map((address) => ({ id: `${address}:${e.port}`, host: address, port: e.port ?? 0, weight: 1, source: 'dns' as const, labels: { record: `${e.type} ${e.name}` } }));
        for (const r of records) ttl = Math.min(ttl, r.ttl * 1000);
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? '';
      if (EMPTY.has(code)) {
        endpoints = [];
      } else {
        s.failures++;
        this.observer.error(this.name);
        if (s.failures === 1 || s.failures % 10 === 0) {
          this.opts.log.warn({ name: e.name, type: e.type, err: code || String(err), failures: s.failures, keeping: s.endpoints?.length ?? 0 }, 'dns lookup failed; keeping the last good answer');
        }
        return { changed: false, delay: Math.max(MIN_INTERVAL, Math.min(e.interval, 1000 * 2 ** Math.min(s.failures, 5))) };
      }
    }
    if (s.failures > 0) this.opts.log.info({ name: e.name, after: s.failures }, 'dns lookups succeed again');
    s.failures = 0;
    const before = s.endpoints === null ? null : s.endpoints.map((x) => `${x.id}/${x.weight}`).join(',');
    const after = endpoints.map((x) => `${x.id}/${x.weight}`).join(',');
    s.endpoints = endpoints;
    const changed = before !== after;
    if (changed && following) this.observer.event(this.name, 'change');
    return { changed, delay: Math.max(MIN_INTERVAL, Math.min(e.interval, ttl)) };
  }

  private publish(): void {
    const services = new Map<string, EndpointSpec[]>();
    for (const s of this.states) {
      const list = services.get(s.entry.service) ?? [];
      // Names that never answered contribute nothing yet; the others their last good answer.
      for (const ep of s.endpoints ?? []) if (!list.some((x) => x.id === ep.id)) list.push(ep);
      services.set(s.entry.service, list);
    }
    this.lastSyncAt = Date.now();
    this.observer.synced(this.name, this.lastSyncAt);
    this.opts.onSnapshot({ provider: this.name, services });
  }
}
