/**
 * The composition root: builds the pool, providers and listeners from a Config,
 * starts them, reloads them and shuts them down. The only module (with main.ts)
 * that imports across layers.
 */
import cluster from 'node:cluster';
import { readFile } from 'node:fs/promises';
import { AdminServer } from '../admin/server.js';
import { systemRandom } from '../core/random.js';
import { DnsAnswerer, type DnsEndpoint, type DnsSource } from '../resolver/answer.js';
import { DnsServer } from '../resolver/dns-server.js';
import { RateSampler, servicesView, type ProviderView, type Readiness } from '../admin/view.js';
import type { Config, ListenerConfig } from '../config/schema.js';
import { nullDiscoveryObserver, type DiscoveryObserver } from '../core/discovery.js';
import { BerthError } from '../core/errors.js';
import { nullObserver, type ProxyObserver } from '../core/observer.js';
import { dockerClient } from '../discovery/docker/client.js';
import type { DockerProvider } from '../discovery/docker/provider.js';
import type { DnsProvider } from '../discovery/dns.js';
import type { SwarmProvider } from '../discovery/docker/swarm.js';
import { discoveryRegistry, Providers } from './providers.js';
import type { HealthChecker } from '../health/checker.js';
import { HealthWiring, type HealthVerdict } from './health-wiring.js';
import { MetricsCollector } from '../metrics/collect.js';
import { ownCounters, type CountersOf, type EndpointState } from '../pool/endpoint.js';
import type { DockerClient } from '../discovery/docker/types.js';
import { formatHostPort, type ProviderSnapshot } from '../core/types.js';
import { staticSnapshot } from '../discovery/static.js';
import { SnapshotWatcher } from '../discovery/watcher.js';
import type { Logger } from '../log.js';
import { Pool, type OverrideOp, type OverrideState } from '../pool/pool.js';
import { HttpListener } from '../proxy/http/listener.js';
import { TcpListener } from '../proxy/tcp/listener.js';
import { UdpListener } from '../proxy/udp/listener.js';
import { listenerServices } from '../config/validate.js';
import { ListenerTls, loadUpstreamTls } from '../tls/terminate.js';
import type { UpstreamTls } from '../core/tls.js';
import { hostname } from 'node:os';
import type { EtcdDiscoveryConfig } from '../config/schema.js';
import { Flag } from '../core/types.js';
import type { EtcdProvider } from '../discovery/etcd/provider.js';
import { HttpEtcdClient, type EtcdClient } from '../registry/etcd-client.js';
import { encodeEntry, entryOf, RegistryKeys } from '../registry/keys.js';
import { checkHostId, Publisher } from '../registry/publisher.js';

type Listener = TcpListener | HttpListener | UdpListener;

/** What the registration writes, or where: a change of it is a new registration (subscribe and progressInterval are the provider's). */
function registryKey(e: EtcdDiscoveryConfig): string {
  return JSON.stringify({ ...e, subscribe: null, progressInterval: null });
}

export interface BerthOptions {
  readonly log: Logger;
  readonly observer?: ProxyObserver;
  readonly discoveryObserver?: DiscoveryObserver;
  readonly pool?: Pool;
  /** Builds the Docker client for a host URL (tests inject relays or fakes). */
  readonly dockerClient?: (host: string) => DockerClient;
  /** Docker provider reconnect backoff, ms (tests shorten it). */
  readonly dockerBackoff?: { readonly baseMs: number; readonly capMs: number };
  /** Builds the etcd client for discovery.etcd (tests inject the in-memory fake). */
  readonly etcdClient?: (c: EtcdDiscoveryConfig) => EtcdClient;
  /** Shown by the admin API. */
  readonly version?: string;
  /**
   * single (default): everything in one process. With --workers, the primary runs
   * discovery and the admin server and opens no listener; each worker opens the
   * listeners and proxies, and gets discovery snapshots from the primary.
   */
  readonly role?: 'single' | 'primary' | 'worker';
  /** Primary: every discovery snapshot, to pass on to the workers. */
  readonly onProviderSnapshot?: (snap: ProviderSnapshot) => void;
  /** Primary: the /metrics text aggregated over all processes. */
  readonly metricsText?: () => Promise<{ contentType: string; body: string }>;
  /** Primary: per-worker facts for /api/v1/services. */
  readonly workersView?: () => unknown[];
  /** Primary: endpoint counters summed over the workers (a read-only view; the pool's own stay untouched). */
  readonly countersOf?: CountersOf;
  /** Primary: an active-check verdict, to pass on to the workers. */
  readonly onHealth?: (h: HealthVerdict) => void;
  /** Primary: the operator changed an override (the workers are sent the pool's whole override state). */
  readonly onOverride?: () => void;
  /** Worker: the primary's overrides, in force before its listeners open (for endpoints that come later too). */
  readonly overrides?: OverrideState;
  /** Worker: listeners on a fixed port bind a socket of their own (SO_REUSEPORT). */
  readonly reusePort?: boolean;
}

/** What a reload changed. */
export interface ReloadResult {
  readonly added: number;
  readonly removed: number;
  readonly kept: number;
}

/** A reload whose fallible half is done (see Berth.prepareReload). */
export interface PreparedReload {
  /** Applies it; cannot fail. */
  commit(): ReloadResult;
  /** Undoes the prepared half (closes the listeners it bound). */
  abort(): void;
}

export type { HealthVerdict } from './health-wiring.js';


/** Listeners that bind a fixed port are matched across reloads by address, so they keep their socket. */
function listenerKey(l: ListenerConfig): string {
  return l.bind.port === 0 ? `name:${l.name}` : `${l.mode === 'udp' ? 'udp ' : ''}${formatHostPort(l.bind)}`;
}

export class Berth {
  config: Config;
  readonly pool: Pool;
  readonly log: Logger;
  private readonly observer: ProxyObserver;
  private readonly discoveryObserver: DiscoveryObserver;
  /** Prometheus metrics; null when the admin server (their only reader) is off. */
  readonly metrics: MetricsCollector | null;
  private admin: AdminServer | null = null;
  /** The DNS interface (`dns:`), not the DNS discovery provider. */
  private dnsServer: DnsServer | null = null;
  private dnsKey = '';
  private dnsGen = 0;
  private adminKey = '';
  private readonly rates: RateSampler;
  /** Where the admin API and the metrics read endpoint counters. */
  private readonly countersOf: CountersOf;
  readonly role: 'single' | 'primary' | 'worker';
  /** Active checks and their verdicts in the pool. */
  private readonly health: HealthWiring;
  /** Active listeners by listenerKey. */
  readonly listeners = new Map<string, Listener>();
  /** TLS termination per listener (by listenerKey). */
  private readonly terminators = new Map<string, ListenerTls>();
  /** TLS towards endpoints, per service with upstreamTls. */
  private upstreamTls = new Map<string, UpstreamTls>();
  /** Listeners removed by a reload whose sessions are still finishing. */
  private readonly retired = new Set<Listener>();
  private stopping = false;
  private readonly opts: BerthOptions;

  constructor(config: Config, opts: BerthOptions) {
    this.config = config;
    this.opts = opts;
    this.log = opts.log;
    this.pool = opts.pool ?? new Pool();
    if (opts.overrides !== undefined) this.pool.replaceOverrides(opts.overrides);
    this.role = opts.role ?? 'single';
    this.countersOf = opts.countersOf ?? ownCounters;
    this.metrics = config.admin ? new MetricsCollector(this.pool, () => this.listenerViews(), this.countersOf) : null;
    this.observer = opts.observer ?? this.metrics ?? nullObserver;
    this.discoveryObserver = opts.discoveryObserver ?? this.metrics ?? nullDiscoveryObserver;
    this.rates = new RateSampler(this.pool, 5000, this.countersOf);
    this.discovery = new Providers(
      discoveryRegistry({
        log: this.log,
        observer: this.discoveryObserver,
        dockerClient: opts.dockerClient ?? dockerClient,
        dockerBackoff: opts.dockerBackoff,
        etcdClient: this.etcdClient,
        onRemote: (perHost) => this.metrics?.registryRemote(perHost),
      }),
      this.publishSnapshot,
      (p, settings) => {
        const host = (settings as { host?: unknown }).host;
        this.log.info({ provider: p.name, ...(typeof host === 'string' ? { host } : {}), endpoints: countEndpoints(this.pool, p.name), skipped: p.skipped.length }, `${p.name} discovery synced`);
      },
    );
    // Any pool change may change a DNS answer: the interface's kept answers go stale.
    // It may change what this host publishes, too.
    this.pool.on(() => {
      this.dnsGen++;
      this.publisher?.changed();
      this.incomingPublisher?.changed();
    });
    this.health = new HealthWiring(
      this.pool,
      () => this.config,
      this.role !== 'worker',
      (v) => this.opts.onHealth?.(v),
      (service) => this.upstreamTls.get(service),
    );
    this.pool.on((e) => {
      const log = this.log;
      switch (e.type) {
        case 'endpoint-added':
          log.info({ service: e.endpoint.service, endpoint: e.endpoint.id, address: e.endpoint.address, weight: e.endpoint.weight }, 'endpoint added');
          break;
        case 'endpoint-updated':
          log.info({ service: e.endpoint.service, endpoint: e.endpoint.id, change: e.what }, 'endpoint updated');
          break;
        case 'endpoint-draining':
          log.info({ service: e.endpoint.service, endpoint: e.endpoint.id, open: e.endpoint.active }, 'endpoint draining');
          break;
        case 'endpoint-removed':
          log.info({ service: e.endpoint.service, endpoint: e.endpoint.id }, 'endpoint removed');
          break;
        case 'picker-updated':
          if (e.panic) log.warn({ service: e.service, endpoints: e.total }, 'service in panic: nothing is healthy, routing to every endpoint that is not leaving');
          else if (e.eligible === 0) log.warn({ service: e.service, endpoints: e.total }, 'service has no usable endpoint');
          break;
      }
    });
  }

  private applyServices(config: Config): void {
    for (const s of config.services.values()) {
      this.pool.configureService(s.name, {
        balance: s.balance,
        panic: s.panic,
        outlier: s.outlier,
        slowStart: s.slowStart,
        maxConnectionsPerEndpoint: s.maxConnectionsPerEndpoint,
        queue: s.queue,
        maxPending: s.maxPending,
        replay: s.replay,
      });
    }
    this.pool.applySnapshot(staticSnapshot(config.services.values()));
    this.health.configChanged(config);
  }

  /** Applies an active-check verdict (from this process's checker, or from the primary). */
  applyHealth(v: HealthVerdict): void {
    this.health.apply(v);
  }

  /**
   * An operator's drain, undrain or weight (admin API): applied to the pool, logged
   * (who and what), and (a --workers primary) passed on to every worker. Returns the
   * endpoints it changed, or null when the service or endpoint is not in the pool.
   */
  override(op: OverrideOp): EndpointState[] | null {
    const changed = this.pool.override(op);
    if (changed === null) return null;
    this.log.info({ op: op.op, service: op.service, endpoint: op.endpoint ?? '*', ...(op.op === 'weight' ? { weight: op.weight ?? 'discovery' } : {}), by: op.by, changed: changed.length }, 'operator override');
    this.opts.onOverride?.();
    return changed;
  }

  /** The primary's overrides, whole (a worker takes them in place of its own; nothing is logged twice). */
  replaceOverrides(state: OverrideState): void {
    this.pool.replaceOverrides(state);
  }

  /** Every override, for the workers. */
  overrideState(): OverrideState {
    return this.pool.overrideState();
  }

  /** Current active-check verdicts, for a worker that has just started. */
  healthVerdicts(): HealthVerdict[] {
    return this.health.verdicts();
  }

  /** The active checks (null in a worker: checks run once per endpoint, in the primary). */
  get checker(): HealthChecker | null {
    return this.health.checker;
  }

  private newListener(l: ListenerConfig): Listener {
    const log = this.log.child({ module: 'proxy', listener: l.name });
    const tls = l.tls ? new ListenerTls(l.name, l.tls, log, this.metrics ?? { tlsMaterial: () => {} }, l.mode === 'http' ? (l.http2 ? ['h2', 'http/1.1'] : ['http/1.1']) : undefined) : null;
    if (tls) this.terminators.set(listenerKey(l), tls);
    const deps = {
      pool: this.pool,
      log,
      observer: this.observer,
      tls,
      upstreamTls: (service: string) => this.upstreamTls.get(service),
      httpVersion: (service: string) => this.config.services.get(service)?.httpVersion ?? '1.1',
      reusePort: this.opts.reusePort ?? false,
    };
    if (l.mode === 'udp') {
      // In a --workers worker a udp listener always has a socket of its own (SO_REUSEPORT):
      // node's cluster would share one among the workers and split a client's datagrams.
      return new UdpListener(l, { pool: this.pool, log, observer: this.observer, reusePort: cluster.isWorker });
    }
    return l.mode === 'http' ? new HttpListener(l, deps) : new TcpListener(l, deps);
  }

  /** Reads every service's upstream TLS files (throws BERTH_ERR_TLS before anything changes). */
  private static loadUpstreamTls(config: Config): Map<string, UpstreamTls> {
    const out = new Map<string, UpstreamTls>();
    for (const s of config.services.values()) if (s.upstreamTls) out.set(s.name, loadUpstreamTls(s.name, s.upstreamTls));
    return out;
  }

  /** Every provider's last snapshot; a changed one goes to the pool, and (primary) on to the workers. */
  private readonly watcher = new SnapshotWatcher((snap) => {
    this.pool.applySnapshot(snap);
    this.opts.onProviderSnapshot?.(snap);
  });

  private readonly publishSnapshot = (snap: ProviderSnapshot): void => {
    this.watcher.publish(snap);
  };

  /** Every discovery provider's last snapshot (a primary replays them to a new worker). */
  providerSnapshots(): ProviderSnapshot[] {
    return this.watcher.snapshots();
  }

  /** The running discovery providers, started, replaced and stopped through one registry. */
  private readonly discovery: Providers;

  /** The running providers (docker, swarm, dns), or null where that kind is off. */
  get docker(): DockerProvider | null {
    return this.discovery.get('docker') as DockerProvider | null;
  }
  get swarm(): SwarmProvider | null {
    return this.discovery.get('swarm') as SwarmProvider | null;
  }
  get dns(): DnsProvider | null {
    return this.discovery.get('dns') as DnsProvider | null;
  }

  private applyDiscovery(config: Config): Promise<void> {
    const d = config.discovery;
    return this.discovery.apply({ docker: d.docker, swarm: d.swarm, dns: d.dns.length > 0 ? d.dns : null, etcd: d.etcd?.subscribe ? d.etcd : null });
  }

  private readonly etcdClient = (c: EtcdDiscoveryConfig): EtcdClient => this.opts.etcdClient?.(c) ?? new HttpEtcdClient(c.endpoints, c.tls ?? undefined);

  /** Registration of this host's endpoints (discovery.etcd with publish); null when off. */
  private publisher: Publisher | null = null;
  /** A reload's new registration while it takes over from `publisher` (told of changes too). */
  private incomingPublisher: Publisher | null = null;
  private publisherKey = '';

  /**
   * Reload, before anything changes: a registration that would change (any setting
   * it writes) may not take a host id another live berth holds. Waits up to TTL + 1 s
   * for a holder's lease to expire, then fails the reload, which leaves everything
   * as it was.
   */
  private async checkRegistry(config: Config): Promise<void> {
    const e = config.discovery.etcd;
    if (!e?.publish || registryKey(e) === this.publisherKey) return;
    const client = this.etcdClient(e);
    try {
      await checkHostId({ client, keys: new RegistryKeys(e.prefix), host: e.host, ttlSeconds: e.ttl / 1000, own: this.publisher?.leaseId ?? null });
    } finally {
      client.close();
    }
  }

  /**
   * Starts, replaces or stops the registration. A new one (any setting it writes
   * changed) takes over from the old: the old holds its writes (its keep-alives go
   * on), the new one claims the host key from the old lease and puts every entry
   * again under its own, and only then is the old lease revoked, with nothing left
   * on it: other hosts see no entry go away, also when etcd fails in between (the
   * old lease keeps the entries until the new one has written them). At start, a
   * host id another live berth holds fails the start (exit 2); a reload checked that
   * before (checkRegistry), and a registration that loses a race for it retries.
   */
  private async applyRegistry(config: Config, start: boolean): Promise<void> {
    const e = config.discovery.etcd;
    const key = e?.publish ? registryKey(e) : '';
    if (key === this.publisherKey) return;
    const old = this.publisher;
    let next: Publisher | null = null;
    if (e?.publish) {
      const keys = new RegistryKeys(e.prefix);
      const client = this.etcdClient(e);
      const takeOver = old !== null ? await old.hold() : null;
      if (this.stopping) {
        client.close();
        return;
      }
      next = new Publisher({
        client,
        keys,
        host: e.host,
        claim: { host: e.host, advertise: e.advertise, hostname: hostname(), pid: process.pid, since: new Date().toISOString() },
        ttlSeconds: e.ttl / 1000,
        desired: () => this.registryEntries(keys, e),
        log: this.log.child({ module: 'registry' }),
        onState: (connected, published) => this.metrics?.registryState(connected, published),
        takeOver,
        predecessor: old,
      });
      this.incomingPublisher = next;
      try {
        await next.start(start);
      } catch (err) {
        await next.stop();
        old?.resume();
        throw err;
      } finally {
        this.incomingPublisher = null;
      }
      // A shutdown came meanwhile: it stopped the old one; this one (and with it its predecessor) goes too.
      if (this.stopping) {
        await next.stop();
        return;
      }
      this.log.info({ host: e.host, etcd: e.endpoints, connected: next.connected, published: next.published }, next.connected ? 'registered in etcd' : 'registration waits for etcd');
    } else if (old !== null) await old.stop();
    this.publisher = next;
    this.publisherKey = key;
  }

  /** This host's entries: every endpoint a local provider gave (not other hosts'), that its provider still lists. */
  private registryEntries(keys: RegistryKeys, e: EtcdDiscoveryConfig): Map<string, string> {
    const out = new Map<string, string>();
    for (const s of this.pool.services.values()) {
      for (const ep of s.endpoints.values()) {
        if (ep.spec.source === 'etcd' || (ep.flags & Flag.Draining) !== 0) continue;
        out.set(keys.endpoint(s.name, e.host, ep.id), encodeEntry(entryOf(ep, e.advertise)));
      }
    }
    return out;
  }

  /** The etcd provider (other hosts), or null where it is off. */
  get etcd(): EtcdProvider | null {
    return this.discovery.get('etcd') as EtcdProvider | null;
  }

  /** The registration, or null where it is off. */
  get registry(): Publisher | null {
    return this.publisher;
  }

  /** Binds every listener; on any failure closes what was bound and rejects (BERTH_ERR_LISTEN). */
  async start(): Promise<void> {
    this.upstreamTls = Berth.loadUpstreamTls(this.config);
    this.applyServices(this.config);
    if (this.role !== 'worker') await this.applyDiscovery(this.config);
    const opened = await this.openAll(this.role === 'primary' ? [] : this.config.listeners);
    for (const [k, l] of opened) this.listeners.set(k, l);
    try {
      if (this.role !== 'worker') {
        await this.applyAdmin(this.config);
        await this.applyDns(this.config);
        await this.applyRegistry(this.config, true);
      }
    } catch (err) {
      for (const l of opened.values()) l.stopAccepting();
      throw err;
    }
    this.rates.start();
    for (const l of this.listeners.values()) {
      const svc = l.settings.service;
      const s = svc !== undefined ? this.pool.service(svc) : undefined;
      this.log.info(
        {
          listener: l.settings.name,
          bind: formatHostPort({ host: l.address.address, port: l.address.port }),
          mode: l.mode,
          service: svc,
          balance: s?.balance,
          endpoints: s?.endpoints.size ?? 0,
          ...l.describe(),
        },
        'listening',
      );
    }
  }

  private async openAll(configs: readonly ListenerConfig[]): Promise<Map<string, Listener>> {
    const opened = new Map<string, Listener>();
    try {
      for (const c of configs) {
        const l = this.newListener(c);
        await l.listen();
        opened.set(listenerKey(c), l);
      }
    } catch (err) {
      this.closeOpened(opened);
      throw err;
    }
    return opened;
  }

  /**
   * The first half of a reload: everything that can fail, nothing applied yet —
   * the checks on bound listeners, the upstream TLS files, and the new addresses
   * bound. `commit` then applies it (it cannot fail); `abort` closes what was
   * bound. A --workers primary prepares every worker before it commits any, so a
   * reload applies to all of them or to none.
   */
  async prepareReload(next: Config): Promise<PreparedReload> {
    const nextKeys = new Map(next.listeners.map((l) => [listenerKey(l), l] as const));
    const own = this.role === 'primary' ? new Map<string, Listener>() : this.listeners;
    for (const [k, l] of own) {
      const c = nextKeys.get(k);
      if (c && c.mode !== l.mode) {
        throw new BerthError('BERTH_ERR_RELOAD', `listener ${c.name}: changing the mode of a bound listener (${formatHostPort(c.bind)}) needs a restart; the running config stays`);
      }
      if (c && (c.tls !== undefined) !== this.terminators.has(k)) {
        throw new BerthError('BERTH_ERR_RELOAD', `listener ${c.name}: turning TLS on or off on a bound listener (${formatHostPort(c.bind)}) needs a restart; the running config stays`);
      }
      if (c?.mode === 'http' && l.mode === 'http' && c.tls !== undefined && c.http2 !== (l.settings.http2 ?? false)) {
        throw new BerthError('BERTH_ERR_RELOAD', `listener ${c.name}: turning http2 on or off on a bound TLS listener (${formatHostPort(c.bind)}) needs a restart (the ALPN offer is fixed at bind); the running config stays`);
      }
      const term = this.terminators.get(k);
      if (c?.tls && term && (c.tls.sni.length > 0) !== term.sni) {
        throw new BerthError('BERTH_ERR_RELOAD', `listener ${c.name}: adding the first SNI certificate, or removing the last, on a bound listener (${formatHostPort(c.bind)}) needs a restart; the running config stays`);
      }
    }
    // The primary too: its grpc health checks speak over it.
    const upstreamTls = Berth.loadUpstreamTls(next);
    const toOpen = this.role === 'primary' ? [] : next.listeners.filter((l) => !this.listeners.has(listenerKey(l)));
    const opened = await this.openAll(toOpen);
    let settled = false;
    return {
      abort: () => {
        if (settled) return;
        settled = true;
        this.closeOpened(opened);
      },
      commit: () => {
        if (settled) throw new Error('reload already committed or aborted');
        settled = true;
        let kept = 0;
        let removed = 0;
        for (const [k, l] of own) {
          const c = nextKeys.get(k);
          if (c) {
            // The modes match (checked above); the narrowing tells the compiler.
            if (l.mode === 'http' && c.mode === 'http') l.configure(c);
            else if (l.mode === 'tcp' && c.mode === 'tcp') l.configure(c);
            else if (l.mode === 'udp' && c.mode === 'udp') l.configure(c);
            if (c.tls) this.terminators.get(k)?.configure(c.tls);
            kept++;
          } else {
            this.listeners.delete(k);
            this.retired.add(l);
            removed++;
            l.stopAccepting();
            this.terminators.get(k)?.close();
            this.terminators.delete(k);
            this.log.info({ listener: l.settings.name, open: l.active }, 'listener closed by reload; its connections finish');
          }
        }
        for (const [k, l] of opened) this.listeners.set(k, l);
        this.upstreamTls = upstreamTls;
        this.config = next;
        this.applyServices(next);
        this.metrics?.reload(true);
        return { added: opened.size, removed, kept };
      },
    };
  }

  /** Listeners bound for a reload (or a start) that will not happen: closed, their TLS material dropped. */
  private closeOpened(opened: ReadonlyMap<string, Listener>): void {
    for (const [k, l] of opened) {
      l.stopAccepting();
      l.destroyAll();
      this.terminators.get(k)?.close();
      this.terminators.delete(k);
    }
  }

  /**
   * Swaps in a new, already validated config. Listeners on an unchanged address
   * keep their socket and take the new settings for new connections; new
   * addresses are bound before anything else changes, so a bind failure leaves the
   * old config running untouched; removed listeners stop accepting and their
   * connections finish. Discovery and the admin server (not in workers) change
   * between the two halves: their failure also leaves the old config running.
   */
  async reload(next: Config): Promise<ReloadResult> {
    const prepared = await this.prepareReload(next);
    try {
      if (this.role !== 'worker') {
        // First: the one step that can fail for a while, before anything changed.
        await this.checkRegistry(next);
        await this.applyDiscovery(next);
        await this.applyAdmin(next);
        await this.applyDns(next);
      }
    } catch (err) {
      prepared.abort();
      throw err;
    }
    const result = prepared.commit();
    // Cannot fail now (its host id was checked; etcd away, it retries on its own).
    if (this.role !== 'worker') await this.applyRegistry(next, false);
    return result;
  }

  /** Open client connections across all listeners. */
  openSessions(): number {
    let n = 0;
    for (const l of this.listeners.values()) n += l.active;
    for (const l of this.retired) n += l.active;
    return n;
  }

  /**
   * Graceful stop: stop accepting, let open connections finish for up to
   * `drainMs`, then close what is left. Resolves with the number cut at the end.
   */
  async shutdown(drainMs: number): Promise<number> {
    if (this.stopping) return 0;
    this.stopping = true;
    this.discovery.stopAll();
    this.health.stop();
    this.rates.stop();
    const all = [...this.listeners.values(), ...this.retired];
    for (const l of all) l.stopAccepting();
    // Other hosts drop this host's endpoints at once (every key gone in one revision), while the connections drain.
    // (A reload's registration under way too: it would otherwise register a host that has stopped.)
    const revoked = Promise.all([this.publisher?.stop(), this.incomingPublisher?.stop()]);
    const deadline = Date.now() + drainMs;
    while (this.openSessions() > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, Math.min(50, Math.max(1, deadline - Date.now()))));
    }
    const cut = this.openSessions();
    for (const l of all) l.destroyAll();
    for (const t of this.terminators.values()) t.close();
    this.admin?.close();
    this.dnsServer?.close();
    await revoked;
    return cut;
  }

  /** A reload was refused (bad file, bind failure): counted; the running config stays. */
  reloadFailed(): void {
    this.metrics?.reload(false);
  }

  /**
   * Starts or moves the admin server. A new address is bound before the old server
   * closes, so a reload with a taken admin port keeps the old one. Metrics stay
   * off when the config starts with the admin off (nothing would read them).
   */
  private async applyAdmin(config: Config): Promise<void> {
    const bind = config.admin;
    // Read again on every reload: a rotated token takes effect with SIGHUP.
    const token = bind && config.adminTokenFile !== null ? await readAdminToken(config.adminTokenFile) : null;
    if (this.admin !== null && bind !== null) this.admin.token = token;
    const key = bind ? formatHostPort(bind) : '';
    if (key === this.adminKey) return;
    let next: AdminServer | null = null;
    if (bind) {
      next = new AdminServer(bind, this.adminSource(), this.log.child({ module: 'admin' }), token);
      const at = await next.listen();
      this.log.info({ admin: formatHostPort(at) }, 'admin server listening');
    }
    this.admin?.close();
    this.admin = next;
    this.adminKey = key;
  }

  /**
   * Starts, moves or stops the DNS interface. A new address is bound before the old
   * server closes (a taken port keeps the old one); a new domain or TTL applies to
   * the next query without a rebind.
   */
  private async applyDns(config: Config): Promise<void> {
    // A reload may change which services udp listeners serve (the kind of port of static endpoints).
    this.dnsGen++;
    const d = config.dns;
    const key = d ? formatHostPort(d.bind) : '';
    if (key === this.dnsKey) return;
    let next: DnsServer | null = null;
    let at: { port: number } | null = null;
    if (d) {
      const answerer = new DnsAnswerer(this.dnsSource(), () => this.config.dns ?? d, systemRandom);
      next = new DnsServer({ bind: d.bind, answerer, log: this.log.child({ module: 'dns' }), counted: (type, rcode) => this.metrics?.dnsQuery(type, rcode) });
      const a = await next.listen();
      at = a;
      this.log.info({ dns: formatHostPort({ host: a.address, port: a.port }), domain: d.domain }, 'dns interface listening (udp and tcp)');
    }
    this.dnsServer?.close();
    this.dnsServer = next;
    this.dnsKey = key;
    this.dnsPort = at?.port ?? 0;
  }

  /** The pool as the DNS interface sees it: each service's endpoints in the pick set. */
  private dnsSource(): DnsSource {
    return {
      generation: () => this.dnsGen,
      service: (name) => {
        let s = this.pool.service(name);
        if (s === undefined) {
          const lower = name.toLowerCase();
          for (const x of this.pool.services.values()) {
            if (x.name.toLowerCase() === lower) {
              s = x;
              break;
            }
          }
        }
        if (s === undefined) return undefined;
        const svc = s;
        // Static endpoints say no kind of port: the listener that sends to them does.
        const udp = this.config.listeners.some((l) => l.mode === 'udp' && l.service === svc.name);
        const endpoints: DnsEndpoint[] = [];
        for (const e of svc.endpoints.values()) {
          // The configured weight, not slow start's ramp (which moves without a pool event).
          if (e.eligible && e.weight > 0) endpoints.push({ host: e.host, port: e.port, weight: e.spec.weight, protocol: e.spec.protocol ?? (udp ? 'udp' : 'tcp') });
        }
        return { name: svc.name, endpoints };
      },
    };
  }

  /** The DNS interface's port (0 when off). */
  dnsPort = 0;

  /** Address the admin server is bound to (port 0 resolved), or null. */
  get adminAddress(): { host: string; port: number } | null {
    const a = this.admin?.server.address();
    return typeof a === 'object' && a ? { host: a.address, port: a.port } : null;
  }

  private listenerViews(): { name: string; active: number }[] {
    return [...this.listeners.values()].map((l) => ({ name: l.settings.name, active: l.active }));
  }

  /** Ready once discovery has synced and every listener's service has an endpoint in the pick set. */
  readiness(): Readiness {
    const reasons: string[] = [];
    reasons.push(...this.discovery.notSynced());
    for (const l of this.config.listeners) {
      for (const name of listenerServices(l)) {
        const s = this.pool.service(name);
        if (s?.inPanic) reasons.push(`listener ${l.name}: service ${name} is in panic (no healthy endpoint; spreading over unfit ones)`);
        else if (!s || s.eligibleCount === 0) reasons.push(`listener ${l.name}: service ${name} has no healthy endpoint`);
      }
    }
    // Engine away after the first sync: still ready (the last known endpoints serve, and
    // failing readiness would take a working proxy out of rotation), but said so.
    const notes = this.docker && this.docker.synced && !this.docker.connected ? ['docker engine disconnected; serving the last known endpoints, reconnecting'] : [];
    if (this.publisher !== null && !this.publisher.connected) notes.push('etcd unreachable: this host\'s endpoints are not (or not surely) published; retrying');
    if (this.etcd !== null && !this.etcd.connected) notes.push('etcd unreachable: serving the last known endpoints of other hosts; reconnecting');
    return { ready: reasons.length === 0, reasons, notes };
  }

  providers(): ProviderView[] {
    return this.discovery.views();
  }

  private adminSource() {
    const listeners = () => this.config.listeners.flatMap((l) => listenerServices(l).map((service) => ({ name: l.name, service })));
    return {
      version: this.opts.version ?? '',
      ...(this.opts.workersView ? { workers: this.opts.workersView } : {}),
      rates: this.rates,
      services: () => servicesView(this.pool, listeners(), this.rates, this.countersOf),
      countersOf: this.countersOf,
      providers: () => this.providers(),
      readiness: () => this.readiness(),
      capOf: (e: EndpointState) => this.pool.service(e.service)?.capOf(e) ?? 0,
      override: (op: OverrideOp) => this.override(op),
      findEndpoints: (id: string, service?: string): EndpointState[] => {
        const out: EndpointState[] = [];
        for (const s of this.pool.services.values()) {
          if (service !== undefined && s.name !== service) continue;
          const e = s.endpoints.get(id);
          if (e) out.push(e);
        }
        return out;
      },
      metrics: async () => {
        const stale = this.etcd?.staleSince;
        this.metrics?.registryStale(stale === null || stale === undefined ? 0 : (performance.now() - stale) / 1000);
        if (this.opts.metricsText) return this.opts.metricsText();
        if (!this.metrics) return { contentType: 'text/plain; charset=utf-8', body: '# metrics are off\n' };
        return { contentType: this.metrics.registry.contentType, body: await this.metrics.text() };
      },
    };
  }
}

function countEndpoints(pool: Pool, source: string): number {
  let n = 0;
  for (const s of pool.services.values()) for (const e of s.endpoints.values()) if (e.sources.has(source)) n++;
  return n;
}

/** The admin API's bearer token from its file (trimmed); throws BERTH_ERR_ADMIN_TOKEN. */
async function readAdminToken(path: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new BerthError('BERTH_ERR_ADMIN_TOKEN', `admin.tokenFile ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
  }
  const token = text.trim();
  if (token === '') throw new BerthError('BERTH_ERR_ADMIN_TOKEN', `admin.tokenFile ${path}: the file is empty`);
  return token;
}
