/**
 * Starts, replaces and stops the discovery providers through the registry: one
 * path for every kind (docker, swarm, dns). A replacement starts before the
 * provider it replaces stops, so a reload pointing at an unreachable engine keeps
 * the running discovery; a provider removed without a successor takes its
 * endpoints with it (an empty snapshot).
 */
import type { ProviderView } from '../admin/view.js';
import type { DnsDiscoveryConfig, DockerDiscoveryConfig, EtcdDiscoveryConfig } from '../config/schema.js';
import { EtcdProvider } from '../discovery/etcd/provider.js';
import type { EtcdClient } from '../registry/etcd-client.js';
import { RegistryKeys } from '../registry/keys.js';
import type { DiscoveryObserver } from '../core/discovery.js';
import { BerthError } from '../core/errors.js';
import type { ProviderSnapshot } from '../core/types.js';
import type { DockerClient } from '../discovery/docker/types.js';
import { DockerProvider } from '../discovery/docker/provider.js';
import { SwarmProvider } from '../discovery/docker/swarm.js';
import { DnsProvider } from '../discovery/dns.js';
import { ProviderRegistry, type Provider, type ProviderDeps } from '../discovery/provider.js';
import type { Logger } from '../log.js';

/** Each kind's settings, as the config gives them (absent: off). */
export interface DiscoverySettings extends Record<string, unknown> {
  docker: DockerDiscoveryConfig;
  swarm: DockerDiscoveryConfig;
  dns: readonly DnsDiscoveryConfig[];
  /** Other hosts' endpoints (discovery.etcd with subscribe). */
  etcd: EtcdDiscoveryConfig;
}
export type WantedProviders = { readonly [K in keyof DiscoverySettings]: DiscoverySettings[K] | null };

export interface ProviderWiring {
  readonly log: Logger;
  readonly observer: DiscoveryObserver;
  /** The engine client for a host URL. */
  readonly dockerClient: (host: string) => DockerClient;
  /** Docker provider reconnect backoff, ms (tests shorten it). */
  readonly dockerBackoff?: { readonly baseMs: number; readonly capMs: number } | undefined;
  /** The etcd client for a config (tests inject the in-memory fake). */
  readonly etcdClient: (c: EtcdDiscoveryConfig) => EtcdClient;
  /** Other hosts' endpoints per host, after each change (metrics). */
  readonly onRemote?: ((perHost: ReadonlyMap<string, number>) => void) | undefined;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The kinds berth has, in start order. */
export function discoveryRegistry(w: ProviderWiring): ProviderRegistry<DiscoverySettings> {
  const dockerLike = (d: DockerDiscoveryConfig, provider: string, deps: ProviderDeps) => ({
    ...d,
    client: w.dockerClient(d.host),
    log: w.log.child({ module: 'discovery', provider }),
    observer: w.observer,
    onSnapshot: deps.onSnapshot,
  });
  return new ProviderRegistry<DiscoverySettings>()
    .define('docker', {
      name: 'docker',
      create: (d, deps) => new DockerProvider({ ...dockerLike(d, 'docker', deps), ...(w.dockerBackoff ? { backoffBaseMs: w.dockerBackoff.baseMs, backoffCapMs: w.dockerBackoff.capMs } : {}) }),
      startError: (d, err) => new BerthError('BERTH_ERR_DOCKER', `cannot reach the Docker engine at ${d.host}: ${message(err)}`, { cause: err }),
      notSynced: 'docker discovery has not synced yet',
    })
    .define('swarm', {
      name: 'swarm',
      create: (d, deps) => new SwarmProvider(dockerLike(d, 'swarm', deps)),
      startError: (d, err) => new BerthError('BERTH_ERR_DOCKER', `cannot read Swarm services from the engine at ${d.host} (is it a swarm manager?): ${message(err)}`, { cause: err }),
      notSynced: 'swarm discovery has not synced yet',
    })
    .define('dns', {
      name: 'dns',
      // Lookups that fail at start are logged and retried (a resolver that is down
      // must not keep berth from serving its other services): its start does not fail.
      create: (entries, deps) => new DnsProvider({ entries, log: w.log.child({ module: 'discovery', provider: 'dns' }), observer: w.observer, onSnapshot: deps.onSnapshot }),
      startError: (_d, err) => (err instanceof Error ? err : new Error(String(err))),
      notSynced: 'dns discovery has not had an answer for every name yet',
    })
    .define('etcd', {
      name: 'etcd',
      // etcd away at start: local endpoints serve, other hosts' join when it answers.
      create: (e, deps) =>
        new EtcdProvider({
          client: w.etcdClient(e),
          keys: new RegistryKeys(e.prefix),
          host: e.host,
          log: w.log.child({ module: 'discovery', provider: 'etcd' }),
          onSnapshot: deps.onSnapshot,
          onRemote: w.onRemote,
          progressMs: e.progressInterval,
        }),
      startError: (_e, err) => (err instanceof Error ? err : new Error(String(err))),
      notSynced: 'etcd discovery has not read the registry yet',
    });
}

interface Running {
  readonly key: string;
  readonly provider: Provider;
  readonly notSynced: string;
}

export class Providers {
  private readonly running = new Map<string, Running>();

  constructor(
    private readonly registry: ProviderRegistry<DiscoverySettings>,
    private readonly onSnapshot: (snap: ProviderSnapshot) => void,
    /** A new provider has synced: for the log line. */
    private readonly synced: (p: Provider, settings: unknown) => void,
  ) {}

  /** Starts, replaces or stops each kind to match `wanted`; rejects (the old ones running) when a new one cannot start. */
  async apply(wanted: WantedProviders): Promise<void> {
    for (const { key, kind } of this.registry.list()) {
      const settings = wanted[key];
      const k = settings === null ? '' : JSON.stringify(settings);
      const cur = this.running.get(key);
      if ((cur?.key ?? '') === k) continue;
      const next = settings === null ? null : kind.create(settings, { onSnapshot: this.onSnapshot });
      if (next !== null) {
        try {
          await next.start();
        } catch (err) {
          next.stop();
          throw kind.startError(settings, err);
        }
      }
      if (cur !== undefined) {
        cur.provider.stop();
        if (next === null) this.onSnapshot({ provider: cur.provider.name, services: new Map() });
      }
      if (next === null) this.running.delete(key);
      else {
        this.running.set(key, { key: k, provider: next, notSynced: kind.notSynced });
        this.synced(next, settings);
      }
    }
  }

  get(key: keyof DiscoverySettings & string): Provider | null {
    return this.running.get(key)?.provider ?? null;
  }

  stopAll(): void {
    for (const r of this.running.values()) r.provider.stop();
  }

  /** Readiness reasons: every provider that has not synced yet. */
  notSynced(): string[] {
    return [...this.running.values()].filter((r) => !r.provider.synced).map((r) => r.notSynced);
  }

  /** The admin API's view of each running provider. */
  views(): ProviderView[] {
    return [...this.running.values()].map(({ provider: p }) => ({
      name: p.name,
      connected: p.connected,
      synced: p.synced,
      lastSync: p.lastSyncAt ? new Date(p.lastSyncAt).toISOString() : null,
      skipped: p.skipped.map((k) => ({ container: k.name, reason: k.reason })),
    }));
  }
}
