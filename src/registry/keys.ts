/**
 * What berth writes to etcd and how it reads it back: the key layout and the JSON
 * of an entry (INTERFACE.md, "Added: registration and DNS"). PURE: no I/O, no
 * clock. The publisher turns this host's endpoints into entries with `entryOf`;
 * the etcd provider turns other hosts' entries back into endpoint specs with
 * `specOf`. Key segments are percent-encoded, so a "/" in a name cannot move an
 * entry to another host's or service's place.
 *
 *   <prefix>/v1/hosts/<host>                          the host's claim (held by its lease)
 *   <prefix>/v1/endpoints/<service>/<host>/<endpoint> one endpoint, JSON below
 */
import { z } from 'zod';
import { Flag, type EndpointSpec, type RouteSpec } from '../core/types.js';

/** One endpoint as published: where other hosts reach it, and what this host knows of it. */
export interface RegistryEntry {
  readonly address: string;
  readonly port: number;
  readonly protocol: 'tcp' | 'udp';
  readonly weight: number;
  /** draining: being stopped on its host (a Docker `kill`): no new connections, open ones finish. */
  readonly state: 'ready' | 'draining';
  /** As its own host sees it: active checks and Docker's HEALTHCHECK (not passive ejection, which is per host). */
  readonly healthy: boolean;
  /** The container behind it (null for a static endpoint). */
  readonly container: { readonly name: string; readonly id: string } | null;
  /** The routes its labels ask for (http host/path, TLS server name), so every host routes it alike. */
  readonly routes?: readonly RouteSpec[];
  readonly healthPath?: string;
  readonly healthType?: 'tcp' | 'http' | 'grpc';
  readonly httpVersion?: '1.1' | '2';
  readonly maxConnections?: number;
}

/** The claim under `<prefix>/v1/hosts/<host>`: who holds the host id, for the refusal message of a second one. */
export interface HostClaim {
  readonly host: string;
  readonly advertise: string | null;
  /** The machine and process that hold it. */
  readonly hostname: string;
  readonly pid: number;
  /** Wall-clock ISO time of the claim. */
  readonly since: string;
}

export class RegistryKeys {
  /** The prefix without a trailing "/". */
  readonly prefix: string;

  constructor(prefix: string) {
    this.prefix = prefix.replace(/\/+$/, '');
  }

  /** Every endpoint entry of every host: range this, watch this. */
  get endpointsPrefix(): string {
    return `${this.prefix}/v1/endpoints/`;
  }

  host(host: string): string {
    return `${this.prefix}/v1/hosts/${enc(host)}`;
  }

  endpoint(service: string, host: string, endpoint: string): string {
    return `${this.endpointsPrefix}${enc(service)}/${enc(host)}/${enc(endpoint)}`;
  }

  /** The service, host and endpoint of an endpoint key; null for anything else under the prefix. */
  parseEndpoint(key: string): { readonly service: string; readonly host: string; readonly endpoint: string } | null {
    if (!key.startsWith(this.endpointsPrefix)) return null;
    const parts = key.slice(this.endpointsPrefix.length).split('/');
    if (parts.length !== 3) return null;
    const [service, host, endpoint] = parts.map(dec);
    if (service === null || host === null || endpoint === null || service === '' || host === '' || endpoint === '') return null;
    return { service: service!, host: host!, endpoint: endpoint! };
  }
}

function enc(s: string): string {
  return encodeURIComponent(s);
}

function dec(s: string | undefined): string | null {
  if (s === undefined) return null;
  try {
    return decodeURIComponent(s);
  } catch {
    return null;
  }
}

/** Bits that make an endpoint unhealthy as its own host publishes it (passive ejection stays local). */
const PUBLISHED_UNHEALTHY = Flag.ActiveUnhealthy | Flag.ActivePending | Flag.DockerUnhealthy | Flag.Paused;

/** One of this host's endpoints as the pool holds it: the spec and the flags. */
export interface LocalEndpoint {
  readonly spec: EndpointSpec;
  readonly flags: number;
}

/**
 * The entry for one of this host's endpoints. The address rule: an endpoint whose
 * port the engine publishes on every host address (spec.hostPort) is reached at
 * `advertise:hostPort` when an advertise address is set; every other endpoint at
 * its own address and port (a container's address on its network: routed and
 * overlay networks, or a static endpoint as configured).
 */
export function entryOf(e: LocalEndpoint, advertise: string | null): RegistryEntry {
  const s = e.spec;
  const published = s.hostPort !== undefined && advertise !== null;
  const container = s.labels?.['container'];
  return {
    address: published ? advertise : s.host,
    port: published ? s.hostPort! : s.port,
    protocol: s.protocol ?? 'tcp',
    weight: s.weight,
    state: s.stopping ? 'draining' : 'ready',
    healthy: (e.flags & PUBLISHED_UNHEALTHY) === 0,
    container: container !== undefined && (s.source === 'docker' || s.source === 'swarm') ? { name: s.id, id: container } : null,
    ...(s.routes !== undefined && s.routes.length > 0 ? { routes: s.routes } : {}),
    ...(s.healthPath !== undefined ? { healthPath: s.healthPath } : {}),
    ...(s.healthType !== undefined ? { healthType: s.healthType } : {}),
    ...(s.httpVersion !== undefined ? { httpVersion: s.httpVersion } : {}),
    ...(s.maxConnections !== undefined && s.maxConnections > 0 ? { maxConnections: s.maxConnections } : {}),
  };
}

/** Where `entryOf` sends other hosts, and why (for the explain endpoint). */
export function addressRule(spec: EndpointSpec, advertise: string | null): string {
  if (spec.hostPort !== undefined && advertise !== null) return `published host port ${spec.hostPort}: registered as ${advertise}:${spec.hostPort} (the advertise address)`;
  if (spec.hostPort !== undefined) return `published host port ${spec.hostPort}, but no advertise address: registered at its own address ${spec.host}:${spec.port}`;
  return `registered at its own address ${spec.host}:${spec.port} (no published host port: other hosts must route to it)`;
}

/** JSON text in one key order, so an unchanged entry is an unchanged value (and no write). */
export function encodeEntry(e: RegistryEntry): string {
  return JSON.stringify({
    address: e.address,
    port: e.port,
    protocol: e.protocol,
    weight: e.weight,
    state: e.state,
    healthy: e.healthy,
    container: e.container,
    ...(e.routes !== undefined ? { routes: e.routes.map((r) => ({ ...(r.sni !== undefined ? { sni: r.sni } : {}), ...(r.host !== undefined ? { host: r.host } : {}), ...(r.pathPrefix !== undefined ? { pathPrefix: r.pathPrefix } : {}) })) } : {}),
    ...(e.healthPath !== undefined ? { healthPath: e.healthPath } : {}),
    ...(e.healthType !== undefined ? { healthType: e.healthType } : {}),
    ...(e.httpVersion !== undefined ? { httpVersion: e.httpVersion } : {}),
    ...(e.maxConnections !== undefined ? { maxConnections: e.maxConnections } : {}),
  });
}

const hostname = z.string().min(1).max(253);
const routeSchema = z.strictObject({
  sni: z.string().min(1).max(253).optional(),
  host: z.string().min(1).max(253).optional(),
  pathPrefix: z.string().startsWith('/').max(1024).optional(),
});
const entrySchema = z.object({
  address: hostname,
  port: z.number().int().min(1).max(65535),
  protocol: z.enum(['tcp', 'udp']).default('tcp'),
  weight: z.number().int().min(0).max(1000),
  state: z.enum(['ready', 'draining']),
  healthy: z.boolean(),
  container: z.object({ name: z.string().max(256), id: z.string().max(128) }).nullable().default(null),
  routes: z.array(routeSchema).max(64).optional(),
  healthPath: z.string().startsWith('/').max(1024).optional(),
  healthType: z.enum(['tcp', 'http', 'grpc']).optional(),
  httpVersion: z.enum(['1.1', '2']).optional(),
  maxConnections: z.number().int().min(0).optional(),
});

/** An entry read back from etcd; a reason when it is not one (another writer, another version). */
export function decodeEntry(text: string): { readonly ok: true; readonly entry: RegistryEntry } | { readonly ok: false; readonly reason: string } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, reason: 'not JSON' };
  }
  const r = entrySchema.safeParse(value);
  if (!r.success) {
    const i = r.error.issues[0]!;
    return { ok: false, reason: `${i.path.join('.') || 'entry'}: ${i.message}` };
  }
  const d = r.data;
  const entry: RegistryEntry = {
    address: d.address,
    port: d.port,
    protocol: d.protocol,
    weight: d.weight,
    state: d.state,
    healthy: d.healthy,
    container: d.container,
    ...(d.routes !== undefined ? { routes: d.routes.map((x) => ({ ...(x.sni !== undefined ? { sni: x.sni.toLowerCase() } : {}), ...(x.host !== undefined ? { host: x.host.toLowerCase() } : {}), ...(x.pathPrefix !== undefined ? { pathPrefix: x.pathPrefix } : {}) })) } : {}),
    ...(d.healthPath !== undefined ? { healthPath: d.healthPath } : {}),
    ...(d.healthType !== undefined ? { healthType: d.healthType } : {}),
    ...(d.httpVersion !== undefined ? { httpVersion: d.httpVersion } : {}),
    ...(d.maxConnections !== undefined ? { maxConnections: d.maxConnections } : {}),
  };
  return { ok: true, entry };
}

/** Another host's endpoint as the pool takes it: one id per host (`<endpoint>@<host>`), the host in its labels. */
export function specOf(host: string, endpoint: string, e: RegistryEntry): EndpointSpec {
  const labels: Record<string, string> = { host, registered: `${e.address.includes(':') ? `[${e.address}]` : e.address}:${e.port}` };
  if (e.container !== null) labels['container'] = `${e.container.name} (${e.container.id.slice(0, 12)})`;
  if (!e.healthy) labels['health'] = `unhealthy on ${host}`;
  return {
    id: `${endpoint}@${host}`,
    host: e.address,
    port: e.port,
    weight: e.weight,
    source: 'etcd',
    labels,
    ...(e.protocol !== 'tcp' ? { protocol: e.protocol } : {}),
    ...(e.routes !== undefined && e.routes.length > 0 ? { routes: e.routes } : {}),
    ...(e.healthPath !== undefined ? { healthPath: e.healthPath } : {}),
    ...(e.healthType !== undefined ? { healthType: e.healthType } : {}),
    ...(e.httpVersion !== undefined ? { httpVersion: e.httpVersion } : {}),
    ...(e.maxConnections !== undefined && e.maxConnections > 0 ? { maxConnections: e.maxConnections } : {}),
    ...(e.healthy ? {} : { health: 'unhealthy' as const }),
    ...(e.state === 'draining' ? { stopping: true } : {}),
  };
}

export function encodeClaim(c: HostClaim): string {
  return JSON.stringify(c);
}

/** The holder of a host key, in words (for the refusal of a second berth with the same id). */
export function describeClaim(text: string): string {
  try {
    const c = JSON.parse(text) as Partial<HostClaim>;
    const parts = [`pid ${String(c.pid ?? '?')} on ${String(c.hostname ?? '?')}`];
    if (c.advertise) parts.push(`advertising ${c.advertise}`);
    if (c.since) parts.push(`since ${c.since}`);
    return parts.join(', ');
  } catch {
    return 'a holder berth cannot read';
  }
}
