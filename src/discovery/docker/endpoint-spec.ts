/**
 * Labels → the parts of an endpoint spec that containers and Swarm services share
 * (enable, bad labels, weight, cap, routes, health path, explanation). PURE; both
 * builders (build.ts for containers, swarm.ts for Swarm services) go through it,
 * so a label means the same wherever it is set.
 */
import type { EndpointSpec, RouteSpec } from '../../core/types.js';
import { parseLabels, type ParsedLabels, type PoolLabels, type PortProtocol } from './labels.js';

export type LabelVerdict =
  /** Not berth's to route (not enabled): ignored without a word. */
  | { readonly kind: 'ignore' }
  /** Asked to be routed, but the labels are wrong: skipped with the reason. */
  | { readonly kind: 'skip'; readonly reason: string }
  | { readonly kind: 'route'; readonly labels: ParsedLabels };

/** Whether a container or service with these labels is routed, and with what. */
export function readLabels(all: Readonly<Record<string, string>> | null | undefined, prefix: string, exposedByDefault: boolean): LabelVerdict {
  const parsed = parseLabels(all, prefix);
  if (!parsed.ok) {
    const enableRaw = all?.[`${prefix}.enable`];
    // Something that is not enabled is none of our business, even with odd labels.
    if (enableRaw === 'true' || (exposedByDefault && enableRaw !== 'false')) return { kind: 'skip', reason: `bad labels: ${parsed.errors.join('; ')}` };
    return { kind: 'ignore' };
  }
  return parsed.labels.enable ?? exposedByDefault ? { kind: 'route', labels: parsed.labels } : { kind: 'ignore' };
}

/** Where the endpoint is and what the builder found out about it, for the spec. */
export interface SpecBase {
  readonly id: string;
  readonly host: string;
  readonly port: number;
  readonly source: 'docker' | 'swarm';
  /** Facts for the explain endpoint (container, network chosen and why ...). */
  readonly explain: Readonly<Record<string, string>>;
  readonly health?: EndpointSpec['health'];
  readonly stopping?: boolean;
  readonly paused?: boolean;
  /** The port the engine publishes this one on, on every host address. */
  readonly hostPort?: number;
}

/** The ports a container exposes (a Swarm service publishes), by protocol, ascending. */
export interface OfferedPorts {
  readonly tcp: readonly number[];
  readonly udp: readonly number[];
}

export interface PoolPort {
  readonly pool: PoolLabels;
  readonly port: number;
  readonly why: string;
}

/**
 * Each pool's port: its `port` label, else the only port of its protocol on offer.
 * Two pools on one port and protocol are an error (one of them would get the
 * other's traffic): the reason, and the container is skipped.
 */
export function poolPorts(pools: readonly PoolLabels[], offered: OfferedPorts, verb: 'exposed' | 'published'): { ok: true; ports: PoolPort[] } | { ok: false; reason: string } {
  const ports: PoolPort[] = [];
  const taken = new Map<string, PoolLabels>();
  for (const pool of pools) {
    let port: number;
    let why: string;
    if (pool.port !== undefined) {
      port = pool.port;
      why = `label ${pool.from}port`;
    } else {
      const list = offered[pool.protocol];
      const kind = `${verb} ${pool.protocol.toUpperCase()} port`;
      if (list.length !== 1) {
        const reason = list.length === 0 ? `no ${pool.from}port label and no ${kind}` : `no ${pool.from}port label and several ${kind}s (${list.join(', ')}): set ${pool.from}port`;
        return { ok: false, reason };
      }
      port = list[0]!;
      why = `only ${kind}`;
    }
    const key = `${pool.protocol} ${port}`;
    const other = taken.get(key);
    if (other !== undefined) return { ok: false, reason: `${other.from.slice(0, -1)} and ${pool.from.slice(0, -1)} both name ${pool.protocol} port ${port}: one port and protocol is one pool` };
    taken.set(key, pool);
    ports.push({ pool, port, why });
  }
  return { ok: true, ports };
}

/**
 * One kind of port per service: the first pool to name a service (containers and
 * Swarm services in name order) fixes its protocol; a pool of the other kind under
 * that name is skipped with the reason — else a udp listener would send datagrams to
 * a tcp port, or a tcp listener connect to a udp one.
 */
export class ServiceProtocols {
  private readonly kinds = new Map<string, { readonly protocol: PortProtocol; readonly by: string }>();

  /** undefined: `by`'s pool may join `service`; else why it may not. */
  claim(service: string, protocol: PortProtocol, by: string): string | undefined {
    const k = this.kinds.get(service);
    if (k === undefined) {
      this.kinds.set(service, { protocol, by });
      return undefined;
    }
    return k.protocol === protocol ? undefined : `service ${service} has ${k.protocol} endpoints (${k.by}); this pool is ${protocol}: one service, one kind of port`;
  }
}

/** Port numbers by protocol, each list ascending and without repeats (sctp ignored). */
export function offeredPorts(entries: readonly { readonly port: number; readonly protocol: string }[]): OfferedPorts {
  const by = (p: PortProtocol) => [...new Set(entries.filter((e) => e.protocol === p).map((e) => e.port))].sort((a, b) => a - b);
  return { tcp: by('tcp'), udp: by('udp') };
}

/** The endpoint spec for a pool's labels `l`: typed routes and health path, labels kept as explanation. */
export function endpointSpec(l: PoolLabels, b: SpecBase): EndpointSpec {
  const explain: Record<string, string> = { ...b.explain, weight: String(l.weight) };
  if (l.protocol !== 'tcp') explain['protocol'] = l.protocol;
  if (l.maxConnections !== undefined) explain['maxConnections'] = String(l.maxConnections);
  if (l.httpHost !== undefined) explain['http.host'] = l.httpHost;
  if (l.httpPathPrefix !== undefined) explain['http.pathPrefix'] = l.httpPathPrefix;
  if (l.healthPath !== undefined) explain['health.path'] = l.healthPath;
  if (l.healthType !== undefined) explain['health.type'] = l.healthType;
  if (l.httpVersion !== undefined) explain['http.version'] = l.httpVersion;
  if (l.sni.length > 0) explain['tls.sni'] = l.sni.join(',');
  const routes: RouteSpec[] = l.httpHost !== undefined || l.httpPathPrefix !== undefined ? [{ host: l.httpHost, pathPrefix: l.httpPathPrefix }] : [];
  for (const sni of l.sni) routes.push({ sni });
  return {
    id: b.id,
    host: b.host,
    port: b.port,
    weight: l.weight,
    source: b.source,
    labels: explain,
    ...(l.protocol !== 'tcp' ? { protocol: l.protocol } : {}),
    ...(routes.length > 0 ? { routes } : {}),
    ...(l.healthPath !== undefined ? { healthPath: l.healthPath } : {}),
    ...(l.healthType !== undefined ? { healthType: l.healthType } : {}),
    ...(l.httpVersion !== undefined ? { httpVersion: l.httpVersion } : {}),
    ...(l.maxConnections !== undefined && l.maxConnections > 0 ? { maxConnections: l.maxConnections } : {}),
    ...(b.health !== undefined ? { health: b.health } : {}),
    ...(b.stopping ? { stopping: true } : {}),
    ...(b.paused ? { paused: true } : {}),
    ...(b.hostPort !== undefined ? { hostPort: b.hostPort } : {}),
  };
}
