import { isIP } from 'node:net';
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
  /** No bytes either way for this long closes the connection (ms); default 1h for tcp, 60s for http. */
  idle: duration.optional(),
  /** http: the whole request head must arrive within this (408). */
  headers: duration.default(10_000),
  /** http: the endpoint's response head must arrive within this (504). */
  response: duration.default(60_000),
  /** http: an idle client keep-alive connection closes after this. */
  keepAlive: duration.default(60_000),
  /** tls: the whole handshake must finish within this, counted from accept (default: the headers timeout). */
  handshake: duration.optional(),
  /** What is read before an endpoint is picked (a PROXY header, the TLS ClientHello) within this, from accept. */
  preread: duration.default(5000),
});

const hostRule = z
  .string()
  .transform((s) => s.trim().toLowerCase())
  .pipe(z.string().regex(/^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$|^\[[0-9a-f:.]+\]$/, 'expected a host name, "*.suffix" or [ipv6]'));
const pathPrefix = z.string().regex(/^\/[^?#\s]*$/, 'expected a path starting with / (no query)');

const route = z.strictObject({
  /** http: the Host this route is for. */
  host: hostRule.optional(),
  /** http: the path prefix (whole segments). */
  pathPrefix: pathPrefix.optional(),
  /** tcp: the TLS server name (exact or "*.suffix") this route passes through, unterminated. */
  sni: hostRule.optional(),
  /** tcp: with sni, only a hello that offers one of these ALPN protocols. */
  alpn: z.array(z.string().min(1).max(255)).min(1, 'expected at least one protocol').optional(),
  service: name,
});

const cidr = z.string().refine((s) => {
  const [addr, bits, extra] = s.split('/');
  if (extra !== undefined || addr === undefined) return false;
  const v = isIP(addr);
  if (v === 0) return false;
  return bits === undefined || (/^\d+$/.test(bits) && Number(bits) <= (v === 4 ? 32 : 128));
}, 'expected an IP address or CIDR such as 10.0.0.0/8');

const httpOptions = z.strictObject({
  /** Request head size limit, bytes (431 beyond). */
  maxHeaderSize: z.number().int().min(1024).max(1_048_576).default(16_384),
  /** Clients (proxies) whose X-Forwarded-* are kept and extended; from others they are replaced. */
  trustedProxies: z.array(cidr).default([]),
  /** One info log line per request. */
  accessLog: z.boolean().default(false),
  /** Idle pooled connections to endpoints close after this; keep it below the endpoints' keep-alive timeout. */
  upstreamKeepAlive: duration.default(4000),
  /** Retries may add at most `ratio` of requests, plus `minPerSecond`. */
  retryBudget: z.strictObject({ ratio: z.number().min(0).max(10).default(0.2), minPerSecond: z.number().min(0).max(100_000).default(10) }).default({ ratio: 0.2, minPerSecond: 10 }),
});
const httpDefaults = { maxHeaderSize: 16_384, trustedProxies: [], accessLog: false, upstreamKeepAlive: 4000, retryBudget: { ratio: 0.2, minPerSecond: 10 } };

const filePath = z.string().min(1, 'expected a file path');

/** "URI:spiffe://x/y", "DNS:*.internal", "CN=billing": identities a verified client may have. */
const allowEntry = z.string().regex(/^(URI:\S+|DNS:(\*\.)?[A-Za-z0-9.-]+|CN=.+)$/, 'expected URI:<uri>, DNS:<name or *.suffix> or CN=<name>');

const tls = z
  .strictObject({
    /** PEM certificate chain and key (the default certificate). */
    cert: filePath,
    key: filePath,
    /** More certificates, chosen by SNI (their SAN DNS names, or serverNames). */
    sni: z.array(z.strictObject({ cert: filePath, key: filePath, serverNames: z.array(z.string().min(1)).optional() })).default([]),
    /** CA bundle (PEM) for client certificates: present = mTLS, a verified client certificate is required. */
    clientCa: filePath.optional(),
    /** Identities allowed (any verified client when empty). */
    allow: z.array(allowEntry).default([]),
    /** PEM CRL file(s) checked against client certificates. */
    crl: filePath.optional(),
    minVersion: z.enum(['TLSv1.2', 'TLSv1.3'], { error: () => 'expected TLSv1.2 or TLSv1.3' }).default('TLSv1.2'),
    /** ALPN protocols offered (default: http/1.1 for http listeners, none for tcp). */
    alpn: z.array(z.string().min(1).max(255)).optional(),
  })
  .refine((t) => t.allow.length === 0 || t.clientCa !== undefined, { message: 'allow needs clientCa (identities come from verified client certificates)', path: ['allow'] });

const upstreamTls = z.strictObject({
  /** CA bundle to verify endpoints with (default: the system's). */
  ca: filePath.optional(),
  /** Client certificate and key berth presents (mTLS to the endpoint). */
  cert: filePath.optional(),
  key: filePath.optional(),
  /** Name to send in SNI and to check the endpoint's certificate against (default: the endpoint's host). */
  serverName: z.string().min(1).optional(),
  /** Skip verification of the endpoint's certificate (testing only). */
  insecure: z.boolean().default(false),
});

const listener = z.strictObject({
  name: name.optional(),
  bind: listenAddress,
  mode: z.enum(['tcp', 'http', 'udp'], { error: () => 'expected tcp, http or udp' }).default('tcp'),
  /** The service to send to (http: the one for requests no route matches). */
  service: name.optional(),
  /** http: Host / path prefix rules to services; the most specific wins. */
  routes: z.array(route).default([]),
  timeouts: timeouts.default({ connect: 5000, headers: 10_000, response: 60_000, keepAlive: 60_000, preread: 5000 }),
  /** Further connect attempts after the first (other endpoints first, then rounds with backoff). */
  retries: z.number().int().min(0).max(10).default(3),
  /** Pause before trying every endpoint again, doubling per round; 0 = no second round. */
  retryBackoff: duration.default(50),
  http: httpOptions.default(httpDefaults),
  /** http: HTTP/2 beside HTTP/1.1 (ALPN h2 with tls, prior-knowledge h2c without); default true. */
  http2: z.boolean().optional(),
  /** udp: sessions (a client's address and port) and their bounds. */
  udp: z
    .strictObject({
      /** A session with no datagram either way for this long ends (Envoy's default; VPN and DTLS need it long). */
      idleTimeout: duration.default(60_000),
      /** Sessions at once (per worker); past it a new client's datagram is dropped and counted. */
      maxSessions: z.number().int().min(1).max(1_000_000).default(1024),
      /** A session ends once each of its datagrams has had this many answers (1 for DNS: no socket is kept per query); 0 = no limit. */
      responses: z.number().int().min(0).max(1_000_000).default(0),
      /** With responses 0: a session ends once this many datagrams went to the endpoint; 0 = no limit. */
      requests: z.number().int().min(0).max(1_000_000).default(0),
    })
    .default({ idleTimeout: 60_000, maxSessions: 1024, responses: 0, requests: 0 }),
  tls: tls.optional(),
  /**
   * Open client connections this listener serves at once, TLS handshakes included
   * (0 = no cap). Past it, accepted connections wait unread for a slot (as many
   * again at most; then they are closed).
   */
  maxConnections: z.number().int().min(0).max(1_000_000).default(0),
  /**
   * PROXY protocol from a front balancer: from a trusted peer a v1 or v2 header is
   * required; any other peer is refused (or, with untrusted: ignore, served as it is).
   */
  acceptProxy: z.strictObject({ trusted: z.array(cidr).min(1, 'expected at least one address or CIDR'), untrusted: z.enum(['refuse', 'ignore'], { error: () => 'expected refuse or ignore' }).default('refuse') }).optional(),
  /** tcp: PostgreSQL in front of TLS: a client's SSLRequest is answered 'S' and its ClientHello routed by SNI; each endpoint is sent an SSLRequest and must answer 'S'. */
  postgres: z.boolean().default(false),
  /** tcp: send a PROXY protocol header to the endpoint (client address; v2 also TLS facts). */
  proxyProtocol: z.enum(['off', 'v1', 'v2'], { error: () => 'expected off, v1 or v2' }).default('off'),
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

const hex = z.string().regex(/^([0-9A-Fa-f]{2})+$/, 'expected bytes as hex digits, two per byte');
const dnsTypes = ['A', 'AAAA', 'CNAME', 'MX', 'NS', 'PTR', 'SOA', 'SRV', 'TXT'] as const;

const healthFields = z.strictObject({
  /** tcp: a connect; http: a GET; grpc: grpc.health.v1.Health/Check; dns: a query over udp; send-expect: bytes out, a pattern back. */
  type: z.enum(['tcp', 'http', 'grpc', 'dns', 'send-expect'], { error: () => 'expected tcp, http, grpc, dns or send-expect' }).default('tcp'),
  /** grpc: the service name asked about (default "": the server as a whole). */
  service: z.string().max(1024).optional(),
  /** dns: the name to ask for. */
  query: z
    .string()
    .refine((q) => {
      const name = q.endsWith('.') && q.length > 1 ? q.slice(0, -1) : q;
      return name.length <= 253 && name.split('.').every((l) => /^[A-Za-z0-9_-]{1,63}$/.test(l));
    }, 'expected a domain name (labels of 1 to 63 letters, digits, "-" or "_", 253 characters in all)')
    .optional(),
  /** dns: the record type asked for. */
  queryType: z.enum(dnsTypes, { error: () => `expected one of ${dnsTypes.join(', ')}` }).optional(),
  /** send-expect: what to send, as text (UTF-8) or hex. */
  send: z.string().min(1).optional(),
  sendHex: hex.optional(),
  /** send-expect: bytes the answer must contain, as text or hex; neither: any answer passes. */
  receive: z.string().min(1).optional(),
  receiveHex: hex.optional(),
  /** send-expect: over udp or tcp; default udp for a service a udp listener sends to, else tcp. */
  protocol: z.enum(['tcp', 'udp'], { error: () => 'expected tcp or udp' }).optional(),
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

/** Fields that belong to one check type only. */
const healthOnly: Record<string, readonly string[]> = { service: ['grpc'], query: ['dns'], queryType: ['dns'], send: ['send-expect'], sendHex: ['send-expect'], receive: ['send-expect'], receiveHex: ['send-expect'], protocol: ['send-expect'], host: ['http'] };

const health = healthFields.superRefine((h, ctx) => {
  for (const [field, types] of Object.entries(healthOnly)) {
    if (h[field as keyof typeof h] !== undefined && !types.includes(h.type)) ctx.addIssue({ code: 'custom', path: [field], message: `${field} is for ${types.join(', ')} checks, not ${h.type}` });
  }
  if (h.type === 'dns' && h.query === undefined) ctx.addIssue({ code: 'custom', path: ['query'], message: 'a dns check needs the name to ask for' });
  if (h.type === 'send-expect' && (h.send === undefined) === (h.sendHex === undefined)) ctx.addIssue({ code: 'custom', path: ['send'], message: 'a send-expect check needs send or sendHex (one of them)' });
  if (h.receive !== undefined && h.receiveHex !== undefined) ctx.addIssue({ code: 'custom', path: ['receive'], message: 'receive or receiveHex, not both' });
});

const outlierFields = z.strictObject({
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
/**
 * On unless `outlier: off`: an endpoint that keeps refusing leaves the pick set (as
 * nginx's max_fails does by default). Gentle when not configured: the first ejection
 * lasts 1 s (a container that refuses while it starts is back at once), each further
 * one a second longer, up to 30 s.
 */
export const OUTLIER_DEFAULTS = { consecutiveFailures: 5, ejectFor: 1000, maxEjectFor: 30_000, maxEjectedPercent: 50, endEarlyOnActivePass: true } as const;
const outlier = z.union([z.literal('off'), outlierFields], { error: () => 'expected off or { consecutiveFailures, ejectFor, ... }' });

const service = z.strictObject({
  balance: balance.optional(),
  endpoints: z.array(parsed(parseEndpoint)).default([]),
  health: health.optional(),
  outlier: outlier.default(OUTLIER_DEFAULTS),
  /**
   * tcp: when an endpoint accepted the connection and reset it before sending
   * anything, send the client's first bytes (up to 64 KiB) to another endpoint.
   * Only for protocols where running a request twice is harmless; off by default.
   */
  replay: z.boolean().default(false),
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
  /** Originate TLS to the endpoints. */
  upstreamTls: upstreamTls.optional(),
  /** http listeners: HTTP/1.1 to the endpoints, or HTTP/2 (h2 with ALPN over upstreamTls, else h2c with prior knowledge). */
  httpVersion: z
    .union([z.literal(2), z.literal('2'), z.literal(1.1), z.literal('1.1')], { error: () => 'expected 1.1 or 2' })
    .transform((v): HttpVersion => (String(v) === '2' ? '2' : '1.1'))
    .default('1.1'),
});

const dockerHost = z.string().regex(/^(unix:\/\/\/.+|(tcp|http|https):\/\/[^/]+:\d+\/?)$/, 'expected unix:///path/to/docker.sock or tcp://host:port');

const docker = z.strictObject({
  host: dockerHost.default('unix:///var/run/docker.sock'),
  labelPrefix: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'expected a label prefix such as "berth"').default('berth'),
  exposedByDefault: z.boolean().default(false),
  /** Network whose addresses to use when a container has no network label ("" = shared with berth, else first). */
  network: z.string().default(''),
});

const dnsServer = z.string().regex(/^(\[[0-9A-Fa-f:.]+\]|[0-9.]+|[0-9A-Fa-f:]+)(:\d{1,5})?$/, 'expected an IP address, optionally with :port ([v6]:port)');

const dnsEntry = z
  .strictObject({
    /** The name to resolve: tasks.web, web.service.consul, _http._tcp.web.default.svc.cluster.local ... */
    name: z.string().regex(/^[A-Za-z0-9_]([A-Za-z0-9_-]*)(\.[A-Za-z0-9_-]+)*\.?$/, 'expected a DNS name'),
    service: name,
    /** A/AAAA: the endpoints' port. SRV: taken from the records. */
    port: z.number().int().min(1).max(65535).optional(),
    type: z.enum(['A', 'AAAA', 'SRV'], { error: () => 'expected A, AAAA or SRV' }).default('A'),
    interval: duration.default(5000),
    /** DNS servers (default: the system's). */
    servers: z.array(dnsServer).default([]),
    timeout: duration.default(2000),
  })
  .refine((d) => d.type === 'SRV' || d.port !== undefined, { message: 'A and AAAA records need a port', path: ['port'] });

const etcdUrl = z.string().regex(/^https?:\/\/[^/\s]+\/?$/, 'expected an etcd client URL such as http://127.0.0.1:2379');

/** Registration and other hosts' endpoints through etcd (v3 API, JSON gateway). */
const etcd = z
  .strictObject({
    endpoints: z.array(etcdUrl, { error: (i) => (i.input === undefined ? 'at least one etcd URL is required (--etcd URL)' : 'expected a list of etcd URLs') }).min(1, 'at least one etcd URL is required'),
    prefix: z.string().regex(/^\/[^\s]*$/, 'expected a key prefix starting with "/" (e.g. /berth)').default('/berth'),
    /** This host's id (default: the machine's hostname). */
    host: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$/, 'expected a host id of letters, digits, ".", "_" or "-"').optional(),
    /** Where other hosts reach this host's published ports. */
    advertise: z.string().regex(/^([0-9.]+|[0-9A-Fa-f:]+|[A-Za-z0-9][A-Za-z0-9.-]*)$/, 'expected an IP address or host name').optional(),
    /** Lease TTL (whole seconds, 2 s – 1 h). */
    ttl: duration.default(10_000).refine((ms) => ms >= 2000 && ms <= 3_600_000 && ms % 1000 === 0, 'expected whole seconds from 2s to 1h'),
    publish: z.boolean().default(true),
    subscribe: z.boolean().default(true),
    /** etcd's watch progress-notify interval (its --experimental-watch-progress-notify-interval; default 10m). */
    progressInterval: duration.default(600_000),
    tls: z.strictObject({ ca: filePath.optional(), cert: filePath.optional(), key: filePath.optional() }).optional(),
  })
  .refine((e) => (e.tls?.cert === undefined) === (e.tls?.key === undefined), { message: 'cert and key go together', path: ['tls'] });

const discovery = z.strictObject({
  docker: docker.optional(),
  etcd: etcd.optional(),
  /** Swarm services and their tasks (berth on a manager node); same label scheme as docker. */
  swarm: docker.optional(),
  dns: z.array(dnsEntry).default([]),
});

export const configSchema = z.strictObject({
  listeners: z.array(listener).min(1, 'at least one listener is required'),
  services: z.record(name, service).default({}),
  discovery: discovery.default({ dns: [] }),
  /** The admin server; `admin: off` (a plain string) is `admin: { bind: off }`, as `--admin off`. */
  admin: z
    .preprocess(
      (v) => (typeof v === 'string' && v.trim() === 'off' ? { bind: 'off' } : v),
      z.strictObject({
        bind: adminAddress,
        /** A file holding a bearer token: every admin path but /healthz then needs `Authorization: Bearer <token>`. */
        tokenFile: filePath.optional(),
      }),
    )
    .default({ bind: { host: '127.0.0.1', port: 9901 } }),
  /** How long SIGTERM waits for open connections before closing them (ms). */
  drainTimeout: duration.default(30_000),
  /** The DNS interface: the pick set of every service as A, AAAA and SRV records (udp and tcp). */
  dns: z
    .strictObject({
      bind: parsed((s) => parseHostPort(s, { defaultHost: '127.0.0.1', allowZeroPort: true })),
      domain: z
        .string()
        .regex(/^([A-Za-z0-9-]{1,63}\.)+$/, 'expected a domain ending in "." (e.g. berth.)')
        .transform((d) => d.toLowerCase())
        .default('berth.'),
      ttl: z.number().int().min(0).max(86_400).default(0),
    })
    .optional(),
});

interface ListenerBase {
  readonly name: string;
  readonly bind: HostPort;
  readonly mode: ListenerMode;
  readonly routes: readonly RouteConfig[];
  readonly timeouts: { readonly connect: number; readonly idle: number; readonly headers: number; readonly response: number; readonly keepAlive: number; readonly handshake: number; readonly preread: number };
  /** Extra attempts on another endpoint after a failed connect. */
  readonly retries: number;
  /** First pause before a new round over all endpoints, ms. */
  readonly retryBackoff: number;
  readonly http: HttpOptions;
  /** http: HTTP/2 is served beside HTTP/1.1 (ALPN h2 with tls, prior-knowledge h2c without). */
  readonly http2: boolean;
  readonly tls: TlsConfig | undefined;
  readonly proxyProtocol: 'off' | 'v1' | 'v2';
  /** tcp: PostgreSQL SSLRequest handling before the ClientHello. */
  readonly postgres: boolean;
  /** PROXY protocol in: trusted peers (addresses/CIDRs) must send a header; null: none is read. */
  readonly acceptProxy: { readonly trusted: readonly string[]; readonly untrusted: 'refuse' | 'ignore' } | null;
  /** 0 = no cap. */
  readonly maxConnections: number;
}

export type TlsConfig = z.output<typeof tls>;
export type UpstreamTlsConfig = z.output<typeof upstreamTls>;

export interface TcpListenerConfig extends ListenerBase {
  readonly mode: 'tcp';
  /** The service for connections no SNI route takes ("" when only routes name services). */
  readonly service: string;
}

export interface UdpListenerConfig extends ListenerBase {
  readonly mode: 'udp';
  readonly service: string;
  readonly udp: UdpOptions;
}

export type UdpOptions = z.output<typeof listener>['udp'];

export interface HttpListenerConfig extends ListenerBase {
  readonly mode: 'http';
  /** The catch-all service for requests no route matches, if any. */
  readonly service: string | undefined;
}

export type ListenerConfig = TcpListenerConfig | HttpListenerConfig | UdpListenerConfig;

export type RouteConfig = z.output<typeof route>;
export type HttpOptions = z.output<typeof httpOptions>;

export type HealthConfig = z.output<typeof health>;

export interface ServiceConfig {
  readonly name: string;
  readonly balance: BalanceAlgorithm;
  readonly endpoints: readonly EndpointSpec[];
  /** Active health checks; absent = none. */
  readonly health?: HealthConfig | undefined;
  /** Passive outlier detection; absent = off (`outlier: off`). */
  readonly outlier?: OutlierConfig | undefined;
  /** tcp: replay held client bytes after an accepted connection reset (opt-in). */
  readonly replay: boolean;
  readonly panic: 'fail' | 'spread';
  /** ms; 0 = off. */
  readonly slowStart: number;
  readonly maxConnectionsPerEndpoint: number;
  readonly queue: { readonly size: number; readonly timeout: number };
  readonly maxPending: number;
  readonly upstreamTls?: UpstreamTlsConfig | undefined;
  /** http listeners: the HTTP version spoken to the endpoints (an endpoint's label berth.http.version wins). */
  readonly httpVersion: HttpVersion;
}

export type HttpVersion = '1.1' | '2';

export type OutlierConfig = z.output<typeof outlierFields>;

export type DnsDiscoveryConfig = z.output<typeof dnsEntry>;

export interface EtcdDiscoveryConfig {
  readonly endpoints: readonly string[];
  readonly prefix: string;
  readonly host: string;
  readonly advertise: string | null;
  /** ms */
  readonly ttl: number;
  readonly publish: boolean;
  readonly subscribe: boolean;
  /** ms */
  readonly progressInterval: number;
  readonly tls: { readonly ca?: string | undefined; readonly cert?: string | undefined; readonly key?: string | undefined } | null;
}

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
  readonly discovery: { readonly docker: DockerDiscoveryConfig | null; readonly swarm: DockerDiscoveryConfig | null; readonly dns: readonly DnsDiscoveryConfig[]; readonly etcd: EtcdDiscoveryConfig | null };
  /** null when the admin server is off. */
  readonly admin: HostPort | null;
  /** File with the admin API's bearer token (null: no token asked). */
  readonly adminTokenFile: string | null;
  readonly drainTimeout: number;
  /** The DNS interface; null when off. */
  readonly dns: { readonly bind: HostPort; readonly domain: string; readonly ttl: number } | null;
}

export type RawConfig = z.input<typeof configSchema>;
export type ParsedConfig = z.output<typeof configSchema>;
