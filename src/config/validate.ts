import type { z } from 'zod';
import { hostname } from 'node:os';
import { ConfigError, type ConfigIssue } from '../core/errors.js';
import type { BalanceAlgorithm, EndpointSpec } from '../core/types.js';
import { configSchema, OUTLIER_DEFAULTS, type Config, type ListenerConfig, type ServiceConfig } from './schema.js';


/**
 * The HTTP/2 front is on by default where node's HTTP/2 server holds up: Node 24.
 * Node 20's leaves a session whose client broke the protocol (a frame of garbage
 * after a request) open after its GOAWAY, with no event, socket and all (measured;
 * the fuzz run found it): there it is off unless asked for, and asking is refused.
 */
export const H2_FRONT_NODE = Number(process.versions.node.split('.')[0]) >= 24;

/** ["listeners", 0, "bind"] → "listeners[0].bind" */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out === '' ? String(p) : `.${String(p)}`;
  }
  return out;
}

function zodIssues(error: z.ZodError): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  for (const i of error.issues) {
    if (i.code === 'unrecognized_keys') {
      for (const k of i.keys) out.push({ path: formatPath([...i.path, k]), message: 'unknown key' });
    } else {
      out.push({ path: formatPath(i.path), message: i.message });
    }
  }
  return out;
}

/**
 * Validates a raw config document (already parsed from YAML/JSON, or built from
 * flags) and returns the normalized Config, or throws a ConfigError listing every
 * problem at once, each with its path.
 */
export function validateConfig(raw: unknown): Config {
  const r = configSchema.safeParse(raw);
  if (!r.success) throw new ConfigError(zodIssues(r.error));
  const doc = r.data;
  const issues: ConfigIssue[] = [];

  const listeners: ListenerConfig[] = [];
  const names = new Set<string>();
  const binds = new Map<string, number>();
  doc.listeners.forEach((l, i) => {
    const name = l.name ?? `listener-${i}`;
    if (names.has(name)) issues.push({ path: `listeners[${i}].name`, message: `duplicate listener name "${name}"` });
    names.add(name);
    if (l.bind.port !== 0) {
      // TCP and UDP ports are apart: dns on 53/tcp and 53/udp is two listeners.
      const key = `${l.mode === 'udp' ? 'udp ' : ''}${l.bind.host}:${l.bind.port}`;
      const prev = binds.get(key);
      if (prev !== undefined) issues.push({ path: `listeners[${i}].bind`, message: `${key} is already bound by listeners[${prev}]` });
      binds.set(key, i);
    }
    // With discovery on, services also come from the engine: an unknown name is not an error.
    const known = (svc: string) => svc in doc.services || doc.discovery.docker !== undefined || doc.discovery.swarm !== undefined || doc.discovery.etcd?.subscribe === true || doc.discovery.dns.some((d) => d.service === svc);
    if (l.mode === 'udp') {
      if (l.service === undefined) issues.push({ path: `listeners[${i}].service`, message: 'a udp listener needs a service' });
      for (const [key, on] of [
        ['routes', l.routes.length > 0],
        ['tls', l.tls !== undefined],
        ['postgres', l.postgres],
        ['proxyProtocol', l.proxyProtocol !== 'off'],
        ['maxConnections', l.maxConnections !== 0],
      ] as const) {
        if (on) issues.push({ path: `listeners[${i}].${key}`, message: `${key} is not for udp listeners (datagrams, sessions by client address)` });
      }
    } else if (l.mode === 'tcp') {
      // Without a service or routes it routes by the berth.tls.sni labels alone (not when it terminates TLS).
      if (l.service === undefined && l.routes.length === 0 && (l.tls !== undefined || (!doc.discovery.docker && !doc.discovery.swarm))) {
        issues.push({ path: `listeners[${i}].service`, message: l.tls !== undefined ? 'a tcp listener with tls needs a service' : 'a tcp listener needs a service, routes by sni, or docker discovery (berth.tls.sni labels)' });
      }
      l.routes.forEach((r, j) => {
        if (r.host !== undefined || r.pathPrefix !== undefined) issues.push({ path: `listeners[${i}].routes[${j}]`, message: 'host and pathPrefix are for http listeners; a tcp route takes sni (and alpn)' });
        if (r.alpn !== undefined && r.sni === undefined) issues.push({ path: `listeners[${i}].routes[${j}].alpn`, message: 'alpn goes with sni' });
      });
      if (l.tls !== undefined && l.routes.some((r) => r.sni !== undefined)) {
        issues.push({ path: `listeners[${i}].routes`, message: 'sni routes pass TLS through unterminated; a listener with tls terminates it (route by SNI with tls.sni certificates instead)' });
      }
    } else if (l.service === undefined && l.routes.length === 0 && !doc.discovery.docker && !doc.discovery.swarm) {
      issues.push({ path: `listeners[${i}].service`, message: 'an http listener needs a service, routes, or docker discovery (berth.http.* labels)' });
    }
    if (l.service !== undefined && !known(l.service)) {
      issues.push({ path: `listeners[${i}].service`, message: `unknown service "${l.service}"; define it under services (or enable discovery)` });
    }
    if (l.mode === 'http') {
      l.routes.forEach((r, j) => {
        if (r.sni !== undefined || r.alpn !== undefined) issues.push({ path: `listeners[${i}].routes[${j}]`, message: 'sni and alpn are for tcp listeners (TLS passthrough); an http route takes host and pathPrefix' });
      });
    }
    if (l.mode === 'http' && l.http2 === false && l.tls?.alpn?.includes('h2') === true) issues.push({ path: `listeners[${i}].tls.alpn`, message: 'h2 offered with http2: false: clients would speak HTTP/2 to a listener that does not' });
    if (l.http2 !== undefined && l.mode !== 'http') issues.push({ path: `listeners[${i}].http2`, message: 'http2 is for http listeners' });
    if (l.http2 === true && l.mode === 'http' && !H2_FRONT_NODE) issues.push({ path: `listeners[${i}].http2`, message: `HTTP/2 from clients needs Node 24, the runtime berth ships on (this is Node ${process.versions.node}: its HTTP/2 server leaves a connection whose client broke the protocol open)` });
    if (l.postgres && l.mode !== 'tcp') issues.push({ path: `listeners[${i}].postgres`, message: 'postgres is for tcp listeners (TLS passthrough of PostgreSQL)' });
    if (l.postgres && l.tls !== undefined) issues.push({ path: `listeners[${i}].postgres`, message: 'postgres passes TLS through; a listener with tls terminates it' });
    l.routes.forEach((r, j) => {
      if (!known(r.service)) issues.push({ path: `listeners[${i}].routes[${j}].service`, message: `unknown service "${r.service}"; define it under services (or enable discovery)` });
    });
    if (l.timeouts.preread <= 0) issues.push({ path: `listeners[${i}].timeouts.preread`, message: 'expected more than 0 (a client that sends nothing would be held forever)' });
    const idle = l.timeouts.idle ?? (l.mode === 'tcp' ? 3_600_000 : 60_000);
    if (l.proxyProtocol !== 'off' && l.mode === 'http') issues.push({ path: `listeners[${i}].proxyProtocol`, message: 'PROXY protocol is for tcp listeners (http listeners send X-Forwarded-*)' });
    const common = { name, bind: l.bind, routes: l.routes, timeouts: { ...l.timeouts, idle, handshake: l.timeouts.handshake ?? l.timeouts.headers }, retries: l.retries, retryBackoff: l.retryBackoff, http: l.http, http2: l.mode === 'http' && (l.http2 ?? H2_FRONT_NODE), tls: l.tls, proxyProtocol: l.proxyProtocol, postgres: l.postgres, acceptProxy: l.acceptProxy ?? null, maxConnections: l.maxConnections };
    if (l.mode === 'udp') listeners.push({ ...common, mode: 'udp', service: l.service ?? '', udp: l.udp });
    else listeners.push(l.mode === 'tcp' ? { ...common, mode: 'tcp', service: l.service ?? '' } : { ...common, mode: 'http', service: l.service });
  });

  const services = new Map<string, ServiceConfig>();
  for (const [name, s] of Object.entries(doc.services)) {
    const seen = new Set<string>();
    const endpoints: EndpointSpec[] = [];
    s.endpoints.forEach((e, i) => {
      if (seen.has(e.id)) issues.push({ path: `services.${name}.endpoints[${i}]`, message: `duplicate endpoint ${e.id}` });
      seen.add(e.id);
      endpoints.push(e);
    });
    const mode = listeners.find((l) => l.service === name || l.routes.some((r) => r.service === name))?.mode ?? 'tcp';
    const balance: BalanceAlgorithm = s.balance ?? (mode === 'http' ? 'p2c' : 'least-conn');
    services.set(name, {
      name,
      balance,
      endpoints,
      panic: s.panic,
      slowStart: s.slowStart,
      maxConnectionsPerEndpoint: s.maxConnectionsPerEndpoint,
      queue: s.queue,
      maxPending: s.maxPending,
      replay: s.replay,
      httpVersion: s.httpVersion,
      ...(s.health ? { health: s.health } : {}),
      ...(s.outlier !== 'off' ? { outlier: s.outlier } : {}),
      ...(s.upstreamTls ? { upstreamTls: s.upstreamTls } : {}),
    });
    // gRPC runs over HTTP/2 only: behind an http listener it would fail on every request.
    if (s.health?.type === 'grpc' && s.httpVersion !== '2' && listeners.some((l) => l.mode === 'http' && (l.service === name || l.routes.some((r) => r.service === name)))) {
      issues.push({ path: `services.${name}.httpVersion`, message: 'a gRPC service (health type grpc) behind an http listener needs httpVersion: 2: gRPC does not run over HTTP/1.1' });
    }
    if (s.upstreamTls && (s.upstreamTls.cert === undefined) !== (s.upstreamTls.key === undefined)) {
      issues.push({ path: `services.${name}.upstreamTls`, message: 'cert and key go together' });
    }
  }
  if (issues.length > 0) throw new ConfigError(issues);

  const admin = doc.admin.bind === 'off' ? null : doc.admin.bind;
  // Services only discovery will fill still take their listener's default balance.
  for (const l of listeners) {
    for (const svc of listenerServices(l)) {
      if (!services.has(svc)) services.set(svc, { name: svc, balance: l.mode === 'http' ? 'p2c' : 'least-conn', endpoints: [], panic: 'fail', slowStart: 0, maxConnectionsPerEndpoint: 0, queue: { size: 0, timeout: 1000 }, maxPending: 0, replay: false, httpVersion: '1.1', outlier: OUTLIER_DEFAULTS });
    }
  }
  const e = doc.discovery.etcd;
  const etcd =
    e === undefined
      ? null
      : { endpoints: e.endpoints, prefix: e.prefix, host: e.host ?? hostname(), advertise: e.advertise ?? null, ttl: e.ttl, publish: e.publish, subscribe: e.subscribe, progressInterval: e.progressInterval, tls: e.tls ?? null };
  return { listeners, services, discovery: { docker: doc.discovery.docker ?? null, swarm: doc.discovery.swarm ?? null, dns: doc.discovery.dns, etcd }, admin, adminTokenFile: doc.admin.tokenFile ?? null, drainTimeout: doc.drainTimeout, dns: doc.dns ?? null };
}

/** Every service a listener names: its own and its routes' (not label routes, which come from discovery). */
export function listenerServices(l: ListenerConfig): string[] {
  const out = l.service !== undefined && l.service !== '' ? [l.service] : [];
  for (const r of l.routes) if (!out.includes(r.service)) out.push(r.service);
  return out;
}
