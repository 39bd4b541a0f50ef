/**
 * The shared vocabulary of berth. No I/O here and no imports from the rest of src/.
 *
 * listener  — a bound socket that accepts clients (tcp or http mode)
 * service   — a named pool of endpoints that a listener forwards to
 * endpoint  — one address (host:port) that can receive connections
 * provider  — a source of endpoints (static config, docker, swarm, dns, etcd = other hosts)
 */

/** Where an endpoint came from. */
export type SourceKind = 'static' | 'docker' | 'swarm' | 'dns' | 'etcd';

/**
 * A route to its service that an endpoint asks for: an http route (Docker labels
 * berth.http.host / berth.http.pathPrefix), or a tcp route by the TLS ClientHello's
 * server name (berth.tls.sni), which has only `sni`.
 */
export interface RouteSpec {
  /** Lowercase exact server name or "*.suffix": a route on tcp listeners that route by SNI. */
  readonly sni?: string | undefined;
  /** Lowercase exact host or "*.suffix"; absent: any host. */
  readonly host?: string | undefined;
  /** Starts with "/"; absent: "/". */
  readonly pathPrefix?: string | undefined;
}

/** One endpoint as a provider describes it: the desired state, no runtime counters. */
export interface EndpointSpec {
  /** Stable short name, unique within a service: container name, or host:port. */
  readonly id: string;
  readonly host: string;
  /** Port, 1–65535. */
  readonly port: number;
  /** The kind of port (Docker label berth.protocol): absent means tcp, or not said (static endpoints serve any listener). */
  readonly protocol?: 'tcp' | 'udp';
  /** Relative weight, 0–1000. 0 means: no new connections. */
  readonly weight: number;
  readonly source: SourceKind;
  /**
   * The port the engine publishes `port` on, on every address of its host (Docker
   * `-p 8080:80`): other hosts reach the endpoint at the advertise address and this
   * port (registry/keys.ts). Absent when not published.
   */
  readonly hostPort?: number;
  /**
   * Provider-specific facts kept for explanation only (labels parsed, network
   * chosen ...): nothing reads behaviour from them; routes and the health path are
   * the typed fields below.
   */
  readonly labels?: Readonly<Record<string, string>>;
  /** http routes to this endpoint's service that the endpoint asks for. */
  readonly routes?: readonly RouteSpec[];
  /** Path for this endpoint's active http checks, instead of the service's. */
  readonly healthPath?: string;
  /** Kind of this endpoint's active checks, instead of the service's (the service's settings otherwise). */
  readonly healthType?: 'tcp' | 'http' | 'grpc';
  /** The HTTP version this endpoint speaks (label berth.http.version), instead of the service's httpVersion. */
  readonly httpVersion?: '1.1' | '2';
  /** Per-endpoint cap on open connections; 0 or absent means unlimited. */
  readonly maxConnections?: number;
  /** Health the provider reports (Docker HEALTHCHECK); absent when it has none. */
  readonly health?: 'starting' | 'healthy' | 'unhealthy';
  /** Being stopped (Docker kill/stop seen): no new connections, open ones finish. */
  readonly stopping?: boolean;
  /** Paused: no new connections. */
  readonly paused?: boolean;
}

/**
 * A full snapshot from one provider: every service it knows and every endpoint in it.
 * Providers never emit deltas; the pool computes the minimal change.
 */
export interface ProviderSnapshot {
  /** Provider instance name, e.g. "static", "docker". */
  readonly provider: string;
  readonly services: ReadonlyMap<string, readonly EndpointSpec[]>;
}

/**
 * Reasons an endpoint is out of the pick set, as a bitset. Each source of health
 * information owns one bit; the endpoint is eligible only when no bit is set and
 * its weight is above zero.
 */
export const Flag = {
  /** Removed by its provider while connections were still open. */
  Draining: 1 << 0,
  /** Failed active health checks. */
  ActiveUnhealthy: 1 << 1,
  /** Ejected by passive outlier detection. */
  Outlier: 1 << 2,
  /** Docker HEALTHCHECK says starting or unhealthy. */
  DockerUnhealthy: 1 << 3,
  /** Container is being stopped (kill/stop seen). */
  Stopping: 1 << 4,
  /** Container is paused. */
  Paused: 1 << 5,
  /** Active checks configured, first pass not seen yet. */
  ActivePending: 1 << 6,
  /** Drained by an operator (admin API): no new connections until undrained; open ones go on. */
  AdminDrained: 1 << 7,
} as const;
export type FlagBit = (typeof Flag)[keyof typeof Flag];

export const flagNames: Readonly<Record<FlagBit, string>> = {
  [Flag.Draining]: 'draining',
  [Flag.ActiveUnhealthy]: 'active-check-failed',
  [Flag.Outlier]: 'outlier-ejected',
  [Flag.DockerUnhealthy]: 'docker-unhealthy',
  [Flag.Stopping]: 'stopping',
  [Flag.Paused]: 'paused',
  [Flag.ActivePending]: 'active-check-pending',
  [Flag.AdminDrained]: 'drained-by-admin',
};

/** Flags that say an endpoint is unfit (as opposed to leaving: draining, stopping, paused). Panic mode ignores these. */
export const HEALTH_FLAGS = Flag.ActiveUnhealthy | Flag.ActivePending | Flag.Outlier | Flag.DockerUnhealthy;

/** The flag bits a provider's spec decides (the others belong to berth's own checks). */
export const PROVIDER_FLAGS = Flag.DockerUnhealthy | Flag.Stopping | Flag.Paused;

/** Flags implied by what the provider reported about an endpoint. */
export function specFlags(spec: EndpointSpec): number {
  return (spec.health !== undefined && spec.health !== 'healthy' ? Flag.DockerUnhealthy : 0) | (spec.stopping ? Flag.Stopping : 0) | (spec.paused ? Flag.Paused : 0);
}

/** Names of the bits set in `flags`, for logs and the admin API. */
export function describeFlags(flags: number): string[] {
  const out: string[] = [];
  for (const [bit, name] of Object.entries(flagNames)) {
    if (flags & Number(bit)) out.push(name);
  }
  return out;
}

/** Balancing algorithms a service can use. */
export type BalanceAlgorithm = 'round-robin' | 'least-conn' | 'p2c' | 'source-hash' | 'random';
export const balanceAlgorithms: readonly BalanceAlgorithm[] = ['round-robin', 'least-conn', 'p2c', 'source-hash', 'random'];

export type ListenerMode = 'tcp' | 'http' | 'udp';

/** host:port pair. `host` may be an IPv6 literal without brackets. */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** "[::1]:80" for IPv6, "1.2.3.4:80" otherwise. */
export function formatHostPort(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}
