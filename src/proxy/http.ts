/**
 * HTTP/1.1 reverse proxy listener.
 *
 * Downstream: node's http server (llhttp in strict mode) parses client requests,
 * with berth's extra framing checks on top (http-headers.ts). Upstream: one
 * undici Pool per endpoint (http-upstream.ts), driven through the low-level
 * dispatch API: no intermediate streams or objects per request beyond undici's
 * own, and response bytes are written to the client as they arrive, with
 * backpressure both ways.
 */
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import type { Dispatcher } from 'undici';
import type { PeerIdentity, TlsTerminator, UpstreamTls } from '../core/tls.js';
import { nullObserver, type ProxyObserver } from '../core/observer.js';
import type { Logger } from '../log.js';
import type { EndpointState } from '../pool/endpoint.js';
import type { Pool, ServicePool } from '../pool/pool.js';
import { connectResult, tcpConnect } from './connect.js';
import {
  downstreamResponseHeaders,
  hasDotSegment,
  idempotent,
  inspectRequest,
  plainAddress,
  requestHead,
  trailerList,
  upstreamRequestHeaders,
  type Forwarded,
  type RequestFacts,
} from './http-headers.js';
import { RetryBudget, Upstreams, type UpstreamSettings } from './http-upstream.js';
import { listenOn } from './listen.js';
import { normalizeHost, Router, type RouteRule } from './routes.js';

export interface HttpSettings {
  /** Request head size limit in bytes (431 beyond). */
  readonly maxHeaderSize: number;
  /** Addresses/CIDRs whose X-Forwarded-* headers are believed and extended. */
  readonly trustedProxies: readonly string[];
  /** One info line per request. */
  readonly accessLog: boolean;
  /** Idle pooled connections to endpoints close after this (ms). */
  readonly upstreamKeepAlive: number;
  readonly retryBudget: { readonly ratio: number; readonly minPerSecond: number };
}

export interface HttpListenerSettings {
  readonly name: string;
  readonly bind: { readonly host: string; readonly port: number };
  /** Catch-all service when no route matches (may be absent: then 404). */
  readonly service?: string | undefined;
  readonly routes: readonly { readonly host?: string | undefined; readonly pathPrefix?: string | undefined; readonly service: string }[];
  readonly timeouts: {
    readonly connect: number;
    /** No bytes either way on a client connection for this long closes it. */
    readonly idle: number;
    /** Whole request head within this long, else 408. */
    readonly headers: number;
    /** Endpoint's response head within this long, else 504. */
    readonly response: number;
    /** An idle client keep-alive connection closes after this long. */
    readonly keepAlive: number;
  };
  readonly retries: number;
  /** When every endpoint has failed once and attempts remain: pause (ms, doubling per round), then try them again. */
  readonly retryBackoff: number;
  readonly http: HttpSettings;
}

export interface HttpListenerDeps {
  readonly pool: Pool;
  readonly log: Logger;
  readonly observer?: ProxyObserver;
  /** TLS termination (fixed for the listener's life). */
  readonly tls?: TlsTerminator | null;
  /** TLS towards a service's endpoints, if it has any. */
  readonly upstreamTls?: (service: string) => UpstreamTls | undefined;
}

const DEFAULT_SERVICE_LABEL = '-';

/** Short bodies for answers berth makes itself. */
const REASONS: Record<number, string> = {
  400: 'bad request',
  403: 'forbidden: this client certificate is not allowed',
  404: 'no route for this host and path',
  405: 'method not allowed',
  408: 'request head timeout',
  431: 'request header fields too large',
  502: 'bad gateway: no endpoint answered',
  503: 'service unavailable: no usable endpoint',
  504: 'gateway timeout: the endpoint did not answer in time',
};

function reply(res: http.ServerResponse, status: number, close: boolean, extra?: Record<string, string>): void {
  const body = `${REASONS[status] ?? http.STATUS_CODES[status] ?? ''}\n`;
  if (res.headersSent) {
    res.destroy();
    return;
  }
  if (close) res.shouldKeepAlive = false;
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': String(Buffer.byteLength(body)), 'cache-control': 'no-store', ...extra });
  res.end(body);
}

function rawReply(socket: net.Socket, status: number, extra = ''): void {
  const body = `${REASONS[status] ?? http.STATUS_CODES[status] ?? ''}\n`;
  if (socket.writable) {
    socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}connection: close\r\n\r\n${body}`);
  }
  socket.destroySoon();
}

/**
 * Makes a request target origin-form. Absolute-form ("http://host/path", RFC 9112
 * §3.2.2) gives the host (which then replaces Host); anything else but "*" for
 * OPTIONS is refused.
 */
function originForm(url: string, method: string): { path: string; host: string | null } | null {
  if (url.charCodeAt(0) === 47 /* / */) return { path: url, host: null };
  if (url === '*' && method === 'OPTIONS') return { path: url, host: null };
  if (!/^https?:\/\//i.test(url)) return null;
  try {
    const u = new URL(url);
    return { path: `${u.pathname}${u.search}`, host: u.host };
  } catch {
    return null;
  }
}

/** A client connection's facts, computed once per connection. */
interface ConnFacts {
  readonly ip: string;
  readonly trusted: boolean;
  /** mTLS: the verified client is on the allow-list (always true without mTLS). */
  allowed: boolean;
  /** mTLS: the client's identity as an XFCC value. */
  clientCert: string | undefined;
}
const kConn = Symbol('berth.http.conn');
type TaggedSocket = net.Socket & { [kConn]?: ConnFacts };

export class HttpListener {
  settings: HttpListenerSettings;
  readonly server: http.Server;
  readonly deps: Required<HttpListenerDeps>;
  readonly upstreams: Upstreams;
  /** Open client connections. */
  readonly sockets = new Set<net.Socket>();
  /** Open upgrade tunnels (their sockets are no longer the http server's). */
  readonly tunnels = new Set<Tunnel>();
  private router: Router;
  private routesDirty = true;
  private trusted: net.BlockList | null = null;
  private readonly budgets = new Map<string, RetryBudget>();
  private readonly unsubscribe: () => void;
  /** Set when the listener stops accepting: responses then close their connection. */
  closing = false;

  constructor(settings: HttpListenerSettings, deps: HttpListenerDeps) {
    this.settings = settings;
    this.deps = { observer: nullObserver, tls: null, upstreamTls: () => undefined, ...deps };
    this.router = new Router([]);
    this.upstreams = new Upstreams(upstreamSettings(settings), deps.pool, this.deps.observer, this.deps.upstreamTls);
    const t = this.deps.tls;
    const options: http.ServerOptions = {
      maxHeaderSize: settings.http.maxHeaderSize,
      // Checked by inspectRequest, so the refusal is counted and logged like the others.
      requireHostHeader: false,
      noDelay: true,
      // Slow uploads are bounded by the idle timeout, not by a total time.
      requestTimeout: 0,
      headersTimeout: settings.timeouts.headers,
      keepAliveTimeout: settings.timeouts.keepAlive,
      connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(settings.timeouts.headers / 4))),
    };
    if (t) {
      const server = https.createServer({ ...t.serverOptions(), ...options });
      server.on('tlsClientError', (err: Error) => this.deps.observer.tlsHandshake(this.settings.name, t.classify(err)));
      server.on('secureConnection', (socket: tls.TLSSocket) => this.secured(t, socket));
      t.attach(server);
      this.server = server;
    } else {
      this.server = http.createServer(options);
    }
    // A client that half-closes after its request (printf ... | nc -N) still gets the
    // answer, as from HAProxy; node's default treats the FIN as an abort.
    (this.server as http.Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
    this.applyServerSettings();
    this.server.on('connection', (socket: net.Socket) => this.accept(socket));
    this.server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => this.request(req, res));
    this.server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => this.upgrade(req, socket as net.Socket, head));
    this.server.on('connect', (_req: http.IncomingMessage, socket: Duplex) => {
      this.deps.observer.httpRejected(this.settings.name, 'method');
      rawReply(socket as net.Socket, 405, 'allow: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS\r\n');
    });
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => this.clientError(err, socket));
    this.configureTrust();
    this.unsubscribe = deps.pool.on((e) => {
      if (e.type === 'endpoint-added' || e.type === 'endpoint-removed' || e.type === 'endpoint-updated') this.routesDirty = true;
    });
  }

  /** Reload: new settings for new requests; open connections and tunnels go on. */
  configure(settings: HttpListenerSettings): void {
    this.settings = settings;
    this.applyServerSettings();
    this.configureTrust();
    this.upstreams.configure(upstreamSettings(settings), true);
    this.routesDirty = true;
    this.budgets.clear();
  }

  private applyServerSettings(): void {
    const s = this.settings;
    // Read by node per connection (maxHeaderSize) or per check: a reload takes effect for new connections.
    (this.server as http.Server & { maxHeaderSize: number }).maxHeaderSize = s.http.maxHeaderSize;
    this.server.headersTimeout = s.timeouts.headers;
    this.server.keepAliveTimeout = s.timeouts.keepAlive;
    this.server.timeout = s.timeouts.idle;
  }

  private configureTrust(): void {
    const list = this.settings.http.trustedProxies;
    if (list.length === 0) {
      this.trusted = null;
      return;
    }
    const b = new net.BlockList();
    for (const entry of list) {
      const [addr, bits] = entry.split('/') as [string, string | undefined];
      const type = net.isIPv6(addr) ? 'ipv6' : 'ipv4';
      if (bits === undefined) b.addAddress(addr, type);
      else b.addSubnet(addr, Number(bits), type);
    }
    this.trusted = b;
  }

  /** Binds the listener. Rejects with BERTH_ERR_LISTEN when the address cannot be bound. */
  listen(): Promise<net.AddressInfo> {
    return listenOn(this.server, this.settings.name, this.settings.bind, this.deps.log);
  }

  get address(): net.AddressInfo {
    return this.server.address() as net.AddressInfo;
  }

  /** Open client connections and tunnels. */
  get active(): number {
    return this.sockets.size + this.tunnels.size;
  }

  /** Stops accepting; idle keep-alive connections close now, busy ones after their response. */
  stopAccepting(): void {
    this.closing = true;
    if (this.server.listening) this.server.close();
    this.server.closeIdleConnections();
    this.unsubscribe();
  }

  /** Closes every connection, tunnel and pooled upstream connection now. */
  destroyAll(): void {
    for (const s of this.sockets) s.destroy();
    for (const t of this.tunnels) t.destroy();
    this.upstreams.destroy();
  }

  /** The routing table: config routes, label routes from the pool, then the listener's service. */
  routes(): Router {
    if (!this.routesDirty) return this.router;
    this.routesDirty = false;
    const rules: RouteRule[] = this.settings.routes.map((r) => ({ host: r.host, pathPrefix: r.pathPrefix, service: r.service, source: 'config' }));
    const seen = new Set<string>();
    for (const s of this.deps.pool.services.values()) {
      for (const e of s.endpoints.values()) {
        const host = e.spec.labels?.['http.host'];
        const pathPrefix = e.spec.labels?.['http.pathPrefix'];
        if (host === undefined && pathPrefix === undefined) continue;
        const key = `${host ?? ''}\0${pathPrefix ?? ''}\0${s.name}`;
        if (seen.has(key)) continue;
        seen.add(key);
        rules.push({ host, pathPrefix, service: s.name, source: 'label' });
      }
    }
    if (this.settings.service !== undefined) rules.push({ service: this.settings.service, source: 'default' });
    this.router = new Router(rules);
    return this.router;
  }

  budget(service: string): RetryBudget {
    let b = this.budgets.get(service);
    if (b === undefined) {
      const rb = this.settings.http.retryBudget;
      this.budgets.set(service, (b = new RetryBudget(rb.ratio, rb.minPerSecond, 100, this.deps.pool.clock.now())));
    }
    return b;
  }

  private accept(socket: net.Socket): void {
    this.deps.observer.listenerAccepted(this.settings.name);
    this.sockets.add(socket);
    socket.once('close', () => {
      this.sockets.delete(socket);
      this.deps.observer.listenerClosed(this.settings.name);
    });
  }

  /** Client address and whether its X-Forwarded-* may be believed, once per connection. */
  conn(socket: net.Socket): ConnFacts {
    const t = socket as TaggedSocket;
    let c = t[kConn];
    if (c === undefined) {
      const raw = socket.remoteAddress;
      const ip = plainAddress(raw);
      const trusted = this.trusted !== null && raw !== undefined && this.trusted.check(ip, net.isIPv6(ip) ? 'ipv6' : 'ipv4');
      t[kConn] = c = { ip, trusted, allowed: true, clientCert: undefined };
    }
    return c;
  }

  /** A completed handshake: the client's identity is checked once per connection. */
  private secured(t: TlsTerminator, socket: tls.TLSSocket): void {
    const { identity, result } = t.check(socket);
    this.deps.observer.tlsHandshake(this.settings.name, result);
    if (result === 'no_cert' || result === 'bad_cert') {
      // Not verified: nothing to answer; a verified client not on the list gets 403s instead.
      socket.destroy();
      return;
    }
    const c = this.conn(socket);
    c.allowed = result === 'ok';
    c.clientCert = identity ? xfccOf(identity) : undefined;
  }

  forwarded(c: ConnFacts, f: RequestFacts, host: string | undefined): Forwarded {
    const proto = this.deps.tls ? 'https' : 'http';
    // From a trusted proxy: extend its chain and keep what it said about the original request.
    if (c.trusted) return { for: f.xff !== undefined ? `${f.xff}, ${c.ip}` : c.ip, proto: f.xfProto ?? proto, host: f.xfHost ?? host, clientCert: c.clientCert };
    return { for: c.ip, proto, host, clientCert: c.clientCert };
  }

  private clientError(err: NodeJS.ErrnoException, socket: Duplex): void {
    const code = err.code ?? '';
    if (code === 'ECONNRESET' || code === 'EPIPE' || !socket.writable) {
      socket.destroy();
      return;
    }
    // A response already under way on this connection: nothing clean can be said.
    const busy = (socket as { _httpMessage?: http.ServerResponse | null })._httpMessage;
    if (busy && busy.headersSent) {
      socket.destroy();
      return;
    }
    const status = code === 'HPE_HEADER_OVERFLOW' ? 431 : code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    this.deps.observer.httpRejected(this.settings.name, status === 431 ? 'header_too_large' : status === 408 ? 'timeout' : 'bad_request');
    const { log } = this.deps;
    if (log.isLevelEnabled('debug')) log.debug({ status, err: code, reason: (err as { reason?: string }).reason }, 'request refused');
    rawReply(socket as net.Socket, status);
  }

  private request(req: http.IncomingMessage, res: http.ServerResponse): void {
    const facts = inspectRequest(req.rawHeaders, req.httpVersionMajor, req.httpVersionMinor);
    const method = req.method ?? 'GET';
    const target = facts.bad === null ? originForm(req.url ?? '', method) : null;
    const bad = facts.bad ?? (target === null ? 'unsupported request target' : hasDotSegment(target.path) ? 'dot segment in path' : null);
    if (bad !== null || target === null) {
      this.refuse(req, res, bad ?? 'bad request');
      return;
    }
    if (this.closing) res.shouldKeepAlive = false;
    if (!this.conn(req.socket).allowed) {
      this.deps.observer.httpRequest(this.settings.name, DEFAULT_SERVICE_LABEL, method, 403, 0);
      reply(res, 403, true);
      return;
    }
    const rule = this.routes().match(normalizeHost(target.host ?? facts.host), target.path);
    if (rule === undefined) {
      this.deps.observer.httpRequest(this.settings.name, DEFAULT_SERVICE_LABEL, method, 404, 0);
      reply(res, 404, false);
      return;
    }
    new Exchange(this, req, res, rule.service, facts, target.path, target.host).start();
  }

  private refuse(req: http.IncomingMessage, res: http.ServerResponse, why: string): void {
    this.deps.observer.httpRejected(this.settings.name, 'bad_request');
    const { log } = this.deps;
    if (log.isLevelEnabled('debug')) log.debug({ method: req.method, url: req.url, reason: why }, 'request refused');
    // The framing cannot be trusted: answer and close, reading nothing more.
    reply(res, 400, true);
    req.socket.destroySoon();
  }

  private upgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
    const facts = inspectRequest(req.rawHeaders, req.httpVersionMajor, req.httpVersionMinor);
    const method = req.method ?? 'GET';
    const target = facts.bad === null ? originForm(req.url ?? '', method) : null;
    if (facts.bad !== null || target === null || hasDotSegment(target.path)) {
      this.deps.observer.httpRejected(this.settings.name, 'bad_request');
      rawReply(socket, 400);
      return;
    }
    const c = this.conn(socket);
    if (!c.allowed) {
      rawReply(socket, 403);
      return;
    }
    const rule = this.routes().match(normalizeHost(target.host ?? facts.host), target.path);
    if (rule === undefined) {
      this.deps.observer.httpRequest(this.settings.name, DEFAULT_SERVICE_LABEL, method, 404, 0);
      rawReply(socket, 404);
      return;
    }
    let protocol = '';
    for (let i = 0; i < req.rawHeaders.length; i += 2) if (req.rawHeaders[i]!.toLowerCase() === 'upgrade') protocol = req.rawHeaders[i + 1]!;
    const headers = upstreamRequestHeaders(req.rawHeaders, this.forwarded(c, facts, target.host ?? facts.host), protocol, target.host);
    const t = new Tunnel(this, socket, rule.service, Buffer.from(requestHead(method, target.path, headers), 'latin1'), head);
    this.tunnels.add(t);
    t.start();
  }
}

/** XFCC (Envoy's X-Forwarded-Client-Cert format) for a verified client. */
function xfccOf(id: PeerIdentity): string {
  let s = `Hash=${id.hash};Subject="${id.subject.replace(/["\\]/g, '\\$&')}"`;
  for (const u of id.uris) s += `;URI=${u}`;
  for (const d of id.dnsNames) s += `;DNS=${d}`;
  return s;
}

function upstreamSettings(s: HttpListenerSettings): UpstreamSettings {
  return { connect: s.timeouts.connect, keepAlive: s.http.upstreamKeepAlive, maxConnections: 0 };
}

/** The endpoint took too long to answer (504), as opposed to failing. */
function isTimeout(err: NodeJS.ErrnoException): boolean {
  return err.code === 'UND_ERR_HEADERS_TIMEOUT' || err.code === 'UND_ERR_BODY_TIMEOUT';
}

const kExchange = Symbol('berth.http.exchange');
type TaggedRes = http.ServerResponse & { [kExchange]?: Exchange | undefined };

function onResDrain(this: TaggedRes): void {
  this[kExchange]?.resDrain();
}
function onResClose(this: TaggedRes): void {
  this[kExchange]?.resClose();
}
function onQueueWake(x: Exchange): void {
  x.queued();
}
function onRetryRound(x: Exchange): void {
  x.retryRound();
}

/**
 * One request: pick an endpoint, dispatch, stream the answer back. The object is
 * its own undici handler (no per-request closures).
 */
class Exchange implements Dispatcher.DispatchHandler {
  private readonly method: string;
  private readonly headers: string[];
  private readonly hasBody: boolean;
  private readonly t0: number;
  private ep: EndpointState | null = null;
  /** The last endpoint tried (for the access log). */
  private endpointId = '-';
  private svc: ServicePool | undefined;
  private tried: Set<EndpointState> | undefined;
  private attempts = 0;
  private dispatchedAt = 0;
  /** undici began writing the request (a failure now may have reached the endpoint). */
  private sent = false;
  /** Response head passed to the client. */
  private started = false;
  private done = false;
  private status = 0;
  private ctl: Dispatcher.DispatchController | null = null;
  private cancelQueue: (() => void) | null = null;
  private rounds = 0;
  private roundTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly listener: HttpListener,
    private readonly req: http.IncomingMessage,
    private readonly res: http.ServerResponse,
    private readonly service: string,
    facts: RequestFacts,
    private readonly path: string,
    hostOverride: string | null,
  ) {
    this.method = req.method ?? 'GET';
    this.hasBody = facts.hasBody;
    this.t0 = listener.deps.pool.clock.now();
    const c = listener.conn(req.socket);
    this.headers = upstreamRequestHeaders(req.rawHeaders, listener.forwarded(c, facts, hostOverride ?? facts.host), null, hostOverride);
  }

  start(): void {
    const r = this.res as TaggedRes;
    r[kExchange] = this;
    r.on('drain', onResDrain);
    r.on('close', onResClose);
    this.listener.budget(this.service).request();
    this.attempt();
  }

  private attempt(): void {
    const { pool } = this.listener.deps;
    const svc = (this.svc ??= pool.service(this.service));
    const picked = svc?.pick({ key: svc.balance === 'source-hash' ? this.listener.conn(this.req.socket).ip : undefined, exclude: this.tried });
    if (picked === undefined || picked.type === 'none') {
      const s = this.listener.settings;
      if (picked?.reason === 'all-excluded' && this.attempts <= s.retries && s.retryBackoff > 0) {
        // Every endpoint failed once (an endpoint still starting, a restart): pause, then try them all again.
        this.tried = undefined;
        this.roundTimer = setTimeout(onRetryRound, s.retryBackoff * 2 ** this.rounds++, this);
        return;
      }
      if (picked?.reason === 'at-capacity' && svc && svc.queue.size > 0 && this.cancelQueue === null) {
        this.cancelQueue = svc.enqueue(
          () => onQueueWake(this),
          () => {
            this.cancelQueue = null;
            this.fail(503, `queue timeout (${svc.queue.timeout}ms)`);
          },
        );
        if (this.cancelQueue !== null) return;
      }
      // Nothing usable at all: 503; every endpoint tried and failed: 502.
      if (this.attempts === 0) this.fail(503, picked?.reason ?? 'no such service');
      else this.fail(502, 'every endpoint failed');
      return;
    }
    const ep = picked.host;
    this.ep = ep;
    this.endpointId = ep.id;
    this.attempts++;
    this.sent = false;
    pool.acquire(ep);
    this.dispatchedAt = pool.clock.now();
    const t = this.listener.settings.timeouts;
    this.listener.upstreams.agent(ep).dispatch(
      {
        path: this.path,
        method: this.method,
        headers: this.headers,
        body: this.hasBody ? this.req : null,
        headersTimeout: t.response,
        bodyTimeout: t.idle,
        idempotent: false,
      },
      this,
    );
  }

  queued(): void {
    this.cancelQueue = null;
    if (!this.done) this.attempt();
  }

  retryRound(): void {
    this.roundTimer = null;
    if (!this.done) this.attempt();
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.ctl = controller;
    this.sent = true;
    if (this.done) controller.abort(new Error('client gone'));
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: http.IncomingHttpHeaders, statusMessage?: string): void {
    if (this.done) return;
    if (statusCode < 200) {
      // 1xx: 103 Early Hints is passed on; 100 Continue was already sent by node.
      if (statusCode === 103 && !this.res.headersSent) this.res.writeEarlyHints(headers as Record<string, string | string[]>);
      return;
    }
    const { pool } = this.listener.deps;
    const ep = this.ep!;
    const now = pool.clock.now();
    ep.observeLatency(now - this.dispatchedAt, now);
    // Outlier detection counts endpoints that answer "I am broken".
    if (statusCode === 502 || statusCode === 503 || statusCode === 504) pool.failed(ep);
    else pool.succeeded(ep);
    this.started = true;
    this.status = statusCode;
    const res = this.res;
    if (this.listener.closing) res.shouldKeepAlive = false;
    res.writeHead(statusCode, statusMessage || http.STATUS_CODES[statusCode] || '', downstreamResponseHeaders(headers));
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.done && !this.res.write(chunk)) controller.pause();
  }

  onResponseEnd(_controller: Dispatcher.DispatchController, trailers: http.IncomingHttpHeaders): void {
    if (this.done) return;
    const t = trailerList(trailers);
    if (t !== null && this.res.chunkedEncoding) this.res.addTrailers(t);
    this.res.end();
    this.finish();
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    if (this.done) return;
    const { pool, observer, log } = this.listener.deps;
    const e = err as NodeJS.ErrnoException;
    const ep = this.ep!;
    this.release();
    if (this.started) {
      // Cut mid-response: the client must see a cut, not a short body it could take for whole.
      if (log.isLevelEnabled('debug')) log.debug({ endpoint: ep.id, err: e.code ?? e.message }, 'response cut');
      this.res.destroy();
      this.finish();
      return;
    }
    if (isTimeout(e)) {
      pool.failed(ep);
      this.fail(504, `endpoint ${ep.id}: ${e.code}`);
      return;
    }
    if (!this.sent) pool.failed(ep);
    // Retry: a failed connect always (nothing was sent); a reset before any answer only
    // when repeating the request is harmless (idempotent, no body to resend).
    const safe = !this.sent || (idempotent(this.method) && !this.hasBody);
    const s = this.listener.settings;
    if (safe && this.attempts <= s.retries && this.listener.budget(this.service).tryRetry(pool.clock.now())) {
      observer.retry(ep.service, this.sent ? 'reset' : connectResult(e));
      if (log.isLevelEnabled('debug')) log.debug({ endpoint: ep.id, err: e.code ?? e.message }, 'retrying on another endpoint');
      (this.tried ??= new Set()).add(ep);
      this.attempt();
      return;
    }
    this.fail(502, `endpoint ${ep.id}: ${e.code ?? e.message}`);
  }

  resDrain(): void {
    this.ctl?.resume();
  }

  /** The client connection closed: abandon the upstream request if it is still going. */
  resClose(): void {
    if (this.done) return;
    if (!this.res.writableFinished) {
      this.ctl?.abort(new Error('client closed the connection'));
      this.release();
      this.finish();
    }
  }

  private release(): void {
    if (this.ep !== null) {
      this.listener.deps.pool.release(this.ep);
      this.ep = null;
    }
  }

  /** berth answers itself: 502/503/504. */
  private fail(status: number, why: string): void {
    const { log, observer } = this.listener.deps;
    if (status === 503) observer.noEndpoint(this.listener.settings.name, this.service);
    if (log.isLevelEnabled('debug')) log.debug({ service: this.service, status, reason: why, attempts: this.attempts }, 'request failed');
    this.status = status;
    reply(this.res, status, false, status === 503 ? { 'retry-after': '1' } : undefined);
    this.finish();
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    this.release();
    if (this.roundTimer !== null) {
      clearTimeout(this.roundTimer);
      this.roundTimer = null;
    }
    if (this.cancelQueue !== null) {
      this.cancelQueue();
      this.cancelQueue = null;
    }
    const l = this.listener;
    const { observer, pool, log } = l.deps;
    const seconds = (pool.clock.now() - this.t0) / 1000;
    const status = this.status === 0 ? 499 : this.status;
    observer.httpRequest(l.settings.name, this.service, this.method, status, seconds);
    if (l.settings.http.accessLog) {
      log.info(
        { client: l.conn(this.req.socket).ip, method: this.method, path: this.path, host: this.req.headers.host, status, ms: Math.round(seconds * 1e6) / 1e3, service: this.service, endpoint: this.endpointId, attempts: this.attempts },
        'request',
      );
    }
    (this.res as TaggedRes)[kExchange] = undefined;
  }
}

function onTunnelIdle(this: net.Socket & { [kTunnel]?: Tunnel }): void {
  this[kTunnel]?.destroy();
}
const kTunnel = Symbol('berth.http.tunnel');

/**
 * An Upgrade request (WebSocket and others): berth connects to an endpoint, sends
 * the request head, and from then on copies bytes both ways: the endpoint's 101
 * (or refusal) reaches the client as it was sent.
 */
class Tunnel {
  private up: net.Socket | null = null;
  private ep: EndpointState | null = null;
  private tried: Set<EndpointState> | undefined;
  private attempts = 0;
  private connected = false;
  private closed = false;
  private connectTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly listener: HttpListener,
    private readonly client: net.Socket,
    private readonly service: string,
    private readonly head: Buffer,
    private readonly early: Buffer,
  ) {}

  start(): void {
    const c = this.client as net.Socket & { [kTunnel]?: Tunnel };
    c[kTunnel] = this;
    c.on('error', () => this.destroy());
    c.on('close', () => this.destroy());
    const idle = this.listener.settings.timeouts.idle;
    c.setTimeout(idle > 0 ? idle : 0);
    if (idle > 0) c.on('timeout', onTunnelIdle);
    this.connect();
  }

  private connect(): void {
    const { pool, observer } = this.listener.deps;
    const svc = pool.service(this.service);
    const picked = svc?.pick({ exclude: this.tried });
    if (picked === undefined || picked.type === 'none') {
      if (this.attempts === 0) observer.noEndpoint(this.listener.settings.name, this.service);
      this.end(this.attempts === 0 ? 503 : 502);
      return;
    }
    const ep = picked.host;
    this.ep = ep;
    this.attempts++;
    pool.acquire(ep);
    const t0 = pool.clock.now();
    const upTls = this.listener.deps.upstreamTls(ep.service);
    const up = tcpConnect(ep.host, ep.port, upTls);
    this.up = up;
    const timeout = this.listener.settings.timeouts.connect;
    if (timeout > 0) {
      this.connectTimer = setTimeout(() => {
        const err: NodeJS.ErrnoException = new Error('connect timeout');
        err.code = 'BERTH_ERR_UPSTREAM_TIMEOUT';
        up.destroy(err);
      }, timeout);
    }
    up.once(upTls ? 'secureConnect' : 'connect', () => {
      if (this.connectTimer) clearTimeout(this.connectTimer);
      const now = pool.clock.now();
      observer.upstreamConnect(ep.service, ep.id, 'ok', (now - t0) / 1000);
      ep.observeLatency(now - t0, now);
      pool.succeeded(ep);
      if (this.closed) {
        up.destroy();
        return;
      }
      this.connected = true;
      observer.httpUpgrade(this.listener.settings.name, this.service);
      up.write(this.head);
      if (this.early.length > 0) up.write(this.early);
      this.client.pipe(up);
      up.pipe(this.client);
    });
    up.on('error', (err: NodeJS.ErrnoException) => {
      if (this.connectTimer) clearTimeout(this.connectTimer);
      if (this.connected || this.closed) {
        this.destroy();
        return;
      }
      observer.upstreamConnect(ep.service, ep.id, connectResult(err), (pool.clock.now() - t0) / 1000);
      pool.failed(ep);
      this.releaseUp();
      const l = this.listener;
      if (this.attempts <= l.settings.retries && l.budget(this.service).tryRetry(pool.clock.now())) {
        observer.retry(ep.service, connectResult(err));
        (this.tried ??= new Set()).add(ep);
        this.connect();
      } else {
        this.end(502);
      }
    });
    up.on('close', () => {
      if (this.connected) this.destroy();
    });
  }

  private releaseUp(): void {
    const up = this.up;
    const ep = this.ep;
    if (up === null || ep === null) return;
    this.up = null;
    this.ep = null;
    up.destroy();
    this.listener.deps.observer.upstreamClosed(ep.service, ep.id, up.bytesRead, up.bytesWritten);
    this.listener.deps.pool.release(ep);
  }

  private end(status: number): void {
    rawReply(this.client, status, status === 503 ? 'retry-after: 1\r\n' : '');
    this.closed = true;
    this.listener.tunnels.delete(this);
  }

  destroy(): void {
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.closed = true;
    this.releaseUp();
    this.client.destroy();
    this.listener.tunnels.delete(this);
  }
}
