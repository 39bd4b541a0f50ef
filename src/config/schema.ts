import { z } from 'zod';
import { balanceAlgorithms, type BalanceAlgorithm, type EndpointSpec, type HostPort, type ListenerMode } from '../core/types.js';
import { parseDuration, parseEndpoint, parseHostPort, type Parsed } from './parse.js';

/** Turns one of our parsers into a zod string schema with a field-level message. */
function parsed<T>(parse: (s: string) => Parsed<T>) {
  return z.string().transform((s, ctx): T => {
    const r = parse(s);
    if (r.ok) return r.value;
    ctx.addIssue({ code: 'custom', message: r.message, input: s });
    return z.NEVER;
  });
}

const duration = parsed(parseDuration);
const listenAddress = parsed((s) => parseHostPort(s, { defaultHost: '0.0.0.0', allowZeroPort: true }));
const adminAddress = parsed((s): Parsed<HostPort | 'off'> => (s.trim() === 'off' ? { ok: true, value: 'off' } : parseHostPort(s, { defaultHost: '127.0.0.1', allowZeroPort: true })));
const balance = z.enum(balanceAlgorithms as [BalanceAlgorithm, ...BalanceAlgorithm[]], {
  error: () => `expected one of ${balanceAlgorithms.join(', ')}`,
});
const name = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'expected a name of letters, digits, ".", "_" or "-"');

const timeouts = z.strictObject({
  /** Connect to an endpoint (ms). */
  connect: duration.default(5000),
  /** No bytes either way for this long closes the connection (ms). */
  idle: duration.default(3_600_000),
});

const listener = z.strictObject({
  name: name.optional(),
  bind: listenAddress,
  mode: z.enum(['tcp'], {
    error: (i) => (i.input === 'http' ? 'http mode is not available in this version of berth; use tcp' : 'expected tcp'),
  }).default('tcp'),
  service: name,
  timeouts: timeouts.default({ connect: 5000, idle: 3_600_000 }),
  /** Further connect attempts after the first (other endpoints first, then rounds with backoff). */
  retries: z.number().int().min(0).max(10).default(3),
  /** Pause before trying every endpoint again, doubling per round; 0 = no second round. */
  retryBackoff: duration.default(50),
});

/** "200-399", "200,204" or "200-299,301" → a predicate on status codes. */
function parseStatuses(input: string): Parsed<{ text: string; ranges: [number, number][] }> {
  const ranges: [number, number][] = [];
  for (const part of input.split(',').map((p) => p.trim())) {
    const m = /^(\d{3})(?:-(\d{3}))?$/.exec(part);
    if (!m) return { ok: false, message: `expected status codes like 200-399 or 200,204, got "${input}"` };
    const lo = Number(m[1]);
    const hi = Number(m[2] ?? m[1]);
    if (lo < 100 || hi > 599 || lo > hi) return { ok: false, message: `expected status codes from 100 to 599, got "${input}"` };
    ranges.push([lo, hi]);
  }
  return { ok: true, value: { text: input, ranges } };
}

const health = z.strictObject({
  type: z.enum(['tcp', 'http'], { error: () => 'expected tcp or http' }).default('tcp'),
  /** http: the path to GET. */
  path: z.string().regex(/^\//, 'expected a path starting with /').default('/'),
  /** http: Host header (default the endpoint's address). */
  host: z.string().min(1).optional(),
  /** http: status codes that pass. */
  expect: parsed(parseStatuses).default({ text: '200-399', ranges: [[200, 399]] }),
  interval: duration.default(2000),
  timeout: duration.default(1000),
  rise: z.number().int().min(1).max(100).default(2),
  fall: z.number().int().min(1).max(100).default(3),
  /** Share of the interval each check may move by, so checks do not march in step. */
  jitter: z.number().min(0).max(1).default(0.1),
  /** A new endpoint's state until its first check: pending (no traffic yet) or healthy. */
  initial: z.enum(['pending', 'healthy'], { error: () => 'expected pending or healthy' }).default('pending'),
});

const outlier = z.strictObject({
  /** Connect failures in a row that eject an endpoint. */
  consecutiveFailures: z.number().int().min(1).max(1000).default(5),
  /** Ejection time; multiplied by the number of times the endpoint was ejected. */
  ejectFor: duration.default(30_000),
  maxEjectFor: duration.default(300_000),
  /** Never eject more than this share of a service's endpoints. */
  maxEjectedPercent: z.number().min(0).max(100).default(50),
  /** A passing active check ends an ejection early. */
  endEarlyOnActivePass: z.boolean().default(true),
});

const service = z.strictObject({
  balance: balance.optional(),
  endpoints: z.array(parsed(parseEndpoint)).default([]),
  health: health.optional(),
  outlier: outlier.optional(),
  /** When no endpoint is healthy: fail (turn clients away) or spread (use every endpoint that is not leaving). */
  panic: z.enum(['fail', 'spread'], { error: () => 'expected fail or spread' }).default('fail'),
  /** A new or recovered endpoint's weight ramps from 10% to full over this time (0ms = off). */
  slowStart: duration.default(0),
  /** Cap on open connections per endpoint (0 = unlimited); an endpoint's own cap (label, ,maxConnections=) wins. */
  maxConnectionsPerEndpoint: z.number().int().min(0).default(0),
  /** When every endpoint is at its cap: how many clients may wait, and how long. */
  queue: z.strictObject({ size: z.number().int().min(0).max(100_000).default(0), timeout: duration.default(1000) }).default({ size: 0, timeout: 1000 }),
  /** Circuit breaker: clients waiting for an endpoint (connecting or queued) beyond which new ones are turned away (0 = none). */
  maxPending: z.number().int().min(0).default(0),
});

const dockerHost = z.string().regex(/^(unix:\/\/\/.+|(tcp|http|https):\/\/[^/]+:\d+\/?)$/, 'expected unix:///path/to/docker.sock or tcp://host:port');

const docker = z.strictObject({
  host: dockerHost.default('unix:///var/run/docker.sock'),
  labelPrefix: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'expected a label prefix such as "berth"').default('berth'),
  exposedByDefault: z.boolean().default(false),
  /** Network whose addresses to use when a container has no network label ("" = shared with berth, else first). */
  network: z.string().default(''),
});

const discovery = z.strictObject({
  docker: docker.optional(),
});

export const configSchema = z.strictObject({
  listeners: z.array(listener).min(1, 'at least one listener is required'),
  services: z.record(name, service).default({}),
  discovery: discovery.default({}),
  admin: z.strictObject({ bind: adminAddress }).default({ bind: { host: '127.0.0.1', port: 9901 } }),
  /** How long SIGTERM waits for open connections before closing them (ms). */
  drainTimeout: duration.default(30_000),
});

export interface ListenerConfig {
  readonly name: string;
  readonly bind: HostPort;
  readonly mode: ListenerMode;
  readonly service: string;
  readonly timeouts: { readonly connect: number; readonly idle: number };
  /** Extra attempts on another endpoint after a failed connect. */
  readonly retries: number;
  /** First pause before a new round over all endpoints, ms. */
  readonly retryBackoff: number;
}

export type HealthConfig = z.output<typeof health>;

export interface ServiceConfig {
  readonly name: string;
  readonly balance: BalanceAlgorithm;
  readonly endpoints: readonly EndpointSpec[];
  /** Active health checks; absent = none. */
  readonly health?: HealthConfig | undefined;
  /** Passive outlier detection; absent = off. */
  readonly outlier?: OutlierConfig | undefined;
  readonly panic: 'fail' | 'spread';
  /** ms; 0 = off. */
  readonly slowStart: number;
  readonly maxConnectionsPerEndpoint: number;
  readonly queue: { readonly size: number; readonly timeout: number };
  readonly maxPending: number;
}

export type OutlierConfig = z.output<typeof outlier>;

export interface DockerDiscoveryConfig {
  readonly host: string;
  readonly labelPrefix: string;
  readonly exposedByDefault: boolean;
  readonly network: string;
}

/** The validated, normalized configuration. Durations are in milliseconds. */
export interface Config {
  readonly listeners: readonly ListenerConfig[];
  readonly services: ReadonlyMap<string, ServiceConfig>;
  readonly discovery: { readonly docker: DockerDiscoveryConfig | null };
  /** null when the admin server is off. */
  readonly admin: HostPort | null;
  readonly drainTimeout: number;
}

export type RawConfig = z.input<typeof configSchema>;
export type ParsedConfig = z.output<typeof configSchema>;
