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
import type { Pool, ServiceRoute } from '../pool/pool.js';
import { connectResult, guardSocket, tcpConnect, type ConnectFn } from './connect.js';
import { classifyHttpFailure, httpBlames, httpRetry, type HttpFailure } from './retry-policy.js';
import { UpstreamAttempt, type AttemptUser, type GiveUp } from './upstream-attempt.js';
import {
  downstreamResponseHeaders,
  hasDotSegment,
  idempotent,
  interimHead,
  reasonPhrase,
  inspectRequest,
  plainAddress,
  trailerList,
  upstreamRequestHeaders,
  type Forwarded,
  type RequestFacts,
} from './http-headers.js';
import { RetryBudget, Upstreams, type UpstreamSettings } from './http-upstream.js';
import { ConnectionGate } from './gate.js';
import type { Listener } from './listener.js';
import { LocalErrorAlarm } from './local-errors.js';
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
    /** tls: the whole handshake within this long (from accept); default: the headers timeout. */
    readonly handshake?: number | undefined;
  };
  /** Cap on open client connections, TLS handshakes included (0 = none). */
  readonly maxConnections?: number;
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
  /** How endpoints are reached (the same ConnectFn as tcp listeners; tests inject failures). */
  readonly connect?: ConnectFn;
  /** A --workers worker: bind a listening socket of its own (SO_REUSEPORT). */
  readonly reusePort?: boolean;
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
  guardSocket(socket);
  const body = `${REASONS[status] ?? http.STATUS_CODES[status] ?? ''}\n`;
  if (socket.writable) {
    socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}connection: close\r\n\r\n${body}`);
  }
  socket.destroySoon();
}

/**
 * Makes a request target origin-form. Absolute-form ("http://host/path", RFC 9112
 * §3.2.2) gives the host (which then replaces Host); userinfo in it is an error
 * (RFC 9110 §4.2.4, as from HAProxy and nginx); anything else but "*" for OPTIONS is
 * refused. Returns why, when refused.
 */
function originForm(url: string, method: string): { path: string; host: string | null } | string {
  if (url.charCodeAt(0) === 47 /* / */) return { path: url, host: null };
  if (url === '*' && method === 'OPTIONS') return { path: url, host: null };
  if (!/^https?:\/\//i.test(url)) return 'unsupported request target';
  const authority = url.slice(url.indexOf('//') + 2).split(/[/?#]/, 1)[0]!;
  if (authority.includes('@')) return 'userinfo in the request target';
  try {
    const u = new URL(url);
    return { path: `${u.pathname}${u.search}`, host: u.host };
  } catch {
    return 'unsupported request target';
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
  /** Requests of this connection whose response has not ended yet. */
  open: number;
  /** A refusal (400/408/431) waiting for the responses before it, so answers stay in order. */
  refusal: number;
  /** The parser failed on this connection: nothing more is read or answered but what is owed. */
  errored: boolean;
  /** The latest request's response (its body may still be arriving). */
  last: http.ServerResponse | null;
  readonly socket: net.Socket;
}
const kConn = Symbol('berth.http.conn');
type TaggedSocket = net.Socket & { [kConn]?: ConnFacts };

/** The request gate's verdict: where a request (or an Upgrade) goes, or why it is refused. */
type Admission =
  | { readonly ok: true; readonly service: string; readonly facts: RequestFacts; readonly path: string; readonly host: string | null }
  | { readonly ok: false; readonly status: 400 | 403 | 404; readonly why: string };

/** An Upgrade request's own parts: the client socket node handed over and the bytes it read past the head. */
interface UpgradeParts {
  readonly protocol: string;
  readonly socket: net.Socket;
  readonly early: Buffer;
}

/** A response of a request has ended (or its connection closed): a refusal waiting for it goes out. */
function responseClosed(c: ConnFacts): void {
  c.open--;
  if (c.open === 0 && c.refusal !== 0) rawReply(c.socket, c.refusal);
}

export class HttpListener implements Listener<HttpListenerSettings> {
  readonly mode = 'http';
  settings: HttpListenerSettings;
  /** node's http(s) server: parses; the gate owns the port and feeds it. */
  readonly server: http.Server;
  readonly gate: ConnectionGate;
  readonly alarm: LocalErrorAlarm;
  readonly deps: Required<HttpListenerDeps>;
  readonly upstreams: Upstreams;
  /** Open client connections (upgraded ones too, until they close). */
  readonly sockets = new Set<net.Socket>();
  /** Open upgrade tunnels: their endpoint side is berth's to close. */
  readonly tunnels = new Set<Tunnel>();
  private router: Router;
  /** The pool's route table the router was built from. */
  private published: readonly ServiceRoute[] | null = null;
  /** The listener's own routes changed (reload). */
  private routesDirty = true;
  private trusted: net.BlockList | null = null;
  private readonly budgets = new Map<string, RetryBudget>();
  /** Set when the listener stops accepting: responses then close their connection. */
  closing = false;

  constructor(settings: HttpListenerSettings, deps: HttpListenerDeps) {
    this.settings = settings;
    this.deps = { observer: nullObserver, tls: null, upstreamTls: () => undefined, connect: tcpConnect, reusePort: false, ...deps };
    this.alarm = new LocalErrorAlarm(this.deps.log, this.deps.observer);
    this.router = new Router([]);
    this.upstreams = new Upstreams(upstreamSettings(settings), deps.pool, this.deps.observer, this.deps.upstreamTls, this.deps.connect);
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
      const server = https.createServer({ ...t.serverOptions(), ...options, handshakeTimeout: settings.timeouts.handshake ?? settings.timeouts.headers });
      t.attach(server, settings.name, (l, r) => this.deps.observer.tlsHandshake(l, r));
      server.on('secureConnection', (socket: tls.TLSSocket) => this.secured(t, socket));
      this.server = server;
    } else {
      this.server = http.createServer(options);
    }
    // Every header line reaches berth's checks: node's default keeps the first 1,000
    // for rawHeaders while its parser still frames the body by all of them.
    // maxHeaderSize bounds the head in bytes.
    this.server.maxHeadersCount = 0;
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
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => this.clientError(err, socket as net.Socket));
    this.configureTrust();
    const server = this.server;
    this.gate = new ConnectionGate(settings.name, settings.maxConnections ?? 0, {
      log: this.deps.log,
      alarm: this.alarm,
      admit: (socket) => {
        server.emit('connection', socket);
        socket.resume();
      },
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
    this.gate.maxConnections = settings.maxConnections ?? 0;
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
  async listen(): Promise<net.AddressInfo> {
    const a = await this.gate.listen(this.settings.bind, this.deps.reusePort);
    // node's server starts checking header timeouts and tracking idle connections on
    // 'listening'; the gate listens in its place.
    this.server.emit('listening');
    return a;
  }

  get address(): net.AddressInfo {
    return this.gate.server.address() as net.AddressInfo;
  }

  /** Open client connections (an upgraded one counts once, as its client socket). */
  get active(): number {
    return this.sockets.size;
  }

  describe(): Record<string, unknown> {
    return { routes: this.routes().size };
  }

  /** Stops accepting; idle keep-alive connections close now, busy ones after their response. */
  stopAccepting(): void {
    this.closing = true;
    this.gate.close();
    // Not listening itself: close() stops its timeout checks and closes idle connections.
    this.server.close();
    this.server.closeIdleConnections();
  }

  /** Closes every connection, tunnel and pooled upstream connection now. */
  destroyAll(): void {
    for (const s of this.sockets) s.destroy();
    for (const t of this.tunnels) t.destroy();
    this.upstreams.destroy();
  }

  /** The routing table: config routes, the routes endpoints ask for (published by the pool), then the listener's service. */
  routes(): Router {
    const published = this.deps.pool.routes;
    if (published === this.published && !this.routesDirty) return this.router;
    this.published = published;
    this.routesDirty = false;
    const rules: RouteRule[] = this.settings.routes.map((r) => ({ host: r.host, pathPrefix: r.pathPrefix, service: r.service, source: 'config' }));
    for (const r of published) rules.push({ host: r.host, pathPrefix: r.pathPrefix, service: r.service, source: 'label' });
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
      this.gate.closed();
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
      t[kConn] = c = { ip, trusted, allowed: true, clientCert: undefined, open: 0, refusal: 0, errored: false, last: null, socket };
    }
    return c;
  }

  /** A completed handshake: the client's identity is checked once per connection. */
  private secured(t: TlsTerminator, socket: tls.TLSSocket): void {
    const { identity, result } = t.check(socket);
    this.deps.observer.tlsHandshake(this.settings.name, result);
    // A client not verified or not on the list gets an HTTP answer (403, then the
    // connection closes), as from nginx, rather than a reset it cannot explain.
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

  private clientError(err: NodeJS.ErrnoException, socket: net.Socket): void {
    guardSocket(socket);
    const code = err.code ?? '';
    if (code === 'ECONNRESET' || code === 'EPIPE' || !socket.writable) {
      socket.destroy();
      return;
    }
    const c = this.conn(socket);
    // The parser stays in error: later bytes report again; one answer is enough.
    if (c.errored) return;
    c.errored = true;
    socket.pause();
    const status = code === 'HPE_HEADER_OVERFLOW' ? 431 : code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    this.deps.observer.httpRejected(this.settings.name, status === 431 ? 'header_too_large' : status === 408 ? 'timeout' : 'bad_request');
    const { log } = this.deps;
    if (log.isLevelEnabled('debug')) log.debug({ status, err: code, reason: (err as { reason?: string }).reason }, 'request refused');
    const last = c.last;
    if (last !== null && !last.req.complete && !last.writableFinished) {
      // The error is in the body of the request being read: that request is answered with it.
      const x = (last as TaggedRes)[kExchange];
      if (x !== undefined) x.refuse(status);
      else reply(last, status, true);
      return;
    }
    // Earlier requests on this connection are still being answered: the refusal
    // follows their responses (a client pairs answers with requests by order).
    if (c.open === 0) rawReply(socket, status);
    else c.refusal = status;
  }

  /**
   * The one gate every request and every Upgrade passes: framing and head checks,
   * the client's identity, then the route.
   */
  private admit(req: http.IncomingMessage, upgrade: boolean): Admission {
    const facts = inspectRequest(req.rawHeaders, req.httpVersionMajor, req.httpVersionMinor);
    const method = req.method ?? 'GET';
    const target = facts.bad === null ? originForm(req.url ?? '', method) : null;
    // An Upgrade with a body: the tunnel would start after a body node has not framed
    // for an Upgrade; refused rather than guessed at (WebSocket handshakes have none).
    const bad =
      facts.bad ??
      (target === null || typeof target === 'string'
        ? (target ?? 'bad request')
        : hasDotSegment(target.path)
          ? 'dot segment in path'
          : upgrade && facts.hasBody
            ? 'an Upgrade request with a body'
            : null);
    if (bad !== null || target === null || typeof target === 'string') return { ok: false, status: 400, why: bad ?? 'bad request' };
    if (!this.conn(req.socket).allowed) return { ok: false, status: 403, why: 'client certificate not allowed' };
    const rule = this.routes().match(normalizeHost(target.host ?? facts.host), target.path);
    if (rule === undefined) return { ok: false, status: 404, why: 'no route' };
    return { ok: true, service: rule.service, facts, path: target.path, host: target.host };
  }

  private request(req: http.IncomingMessage, res: http.ServerResponse): void {
    const c = this.conn(req.socket);
    c.open++;
    c.last = res;
    this.handle(req, res, null, c);
  }

  /**
   * A request or an Upgrade, once it has a ServerResponse to answer through.
   * `owed`: the request's connection, whose count of open responses drops when
   * this one closes (through the exchange's own 'close' listener, or one added
   * here for the answers berth gives itself).
   */
  private handle(req: http.IncomingMessage, res: http.ServerResponse, upgrade: UpgradeParts | null, owed: ConnFacts | null): void {
    const a = this.admit(req, upgrade !== null);
    if (!a.ok) {
      if (owed !== null) res.once('close', () => responseClosed(owed));
      this.refuse(req, res, a.status, a.why);
      return;
    }
    if (this.closing) res.shouldKeepAlive = false;
    new Exchange(this, req, res, a.service, a.facts, a.path, a.host, upgrade, owed).start();
  }

  private refuse(req: http.IncomingMessage, res: http.ServerResponse, status: 400 | 403 | 404, why: string): void {
    const { log, observer } = this.deps;
    if (log.isLevelEnabled('debug')) log.debug({ method: req.method, url: req.url, status, reason: why }, 'request refused');
    if (status === 400) {
      observer.httpRejected(this.settings.name, 'bad_request');
      // The framing cannot be trusted: answer and close, reading nothing more.
      reply(res, 400, true);
      req.socket.destroySoon();
      return;
    }
    observer.httpRequest(this.settings.name, DEFAULT_SERVICE_LABEL, req.method ?? 'GET', status, 0);
    reply(res, status, status === 403);
  }

  /**
   * An Upgrade request. node has handed the socket over (its parser is gone), so
   * berth answers through a ServerResponse of its own on that socket: until the
   * endpoint says 101 this is an ordinary exchange, and any other answer ends the
   * connection after it. Only a 101 turns the connection into a tunnel.
   */
  private upgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
    guardSocket(socket);
    const prev = (socket as { _httpMessage?: http.ServerResponse | null })._httpMessage;
    // An Upgrade pipelined behind a request still being answered waits its turn.
    if (prev && !prev.writableFinished) {
      prev.once('finish', () => this.upgrade(req, socket, head));
      prev.once('close', () => {
        if (!prev.writableFinished) socket.destroy();
      });
      return;
    }
    const res = new http.ServerResponse(req);
    res.shouldKeepAlive = false;
    res.assignSocket(socket);
    res.once('finish', onUpgradeAnswered);
    let protocol = '';
    for (let i = 0; i < req.rawHeaders.length; i += 2) if (req.rawHeaders[i]!.toLowerCase() === 'upgrade') protocol = req.rawHeaders[i + 1]!;
    this.handle(req, res, { protocol, socket, early: head }, null);
  }
}

/** A non-101 answer to an Upgrade has been written: the connection ends with it. */
function onUpgradeAnswered(this: http.ServerResponse): void {
  const s = this.socket;
  if (s === null) return;
  this.detachSocket(s);
  s.destroySoon();
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

const kExchange = Symbol('berth.http.exchange');
type TaggedRes = http.ServerResponse & { [kExchange]?: Exchange | undefined };

function onResDrain(this: TaggedRes): void {
  this[kExchange]?.resDrain();
}
function onResClose(this: TaggedRes): void {
  const x = this[kExchange];
  if (x === undefined) return;
  this[kExchange] = undefined;
  x.resClose();
}

/** The error berth aborts an upstream request with when the client ended it. */
function clientEndedError(why: string): Error {
  return Object.assign(new Error(why), { code: 'BERTH_ERR_CLIENT_ENDED' });
}

/** More 1xx responses than this before the final one: the endpoint is broken (502). */
const MAX_INTERIM = 32;

/** Writes an interim (1xx) response ahead of the final one, through node's queue for this response. */
type RawWriter = http.ServerResponse & { _writeRaw(data: string, encoding: BufferEncoding, cb?: () => void): boolean };

/**
 * One request: pick an endpoint, dispatch, stream the answer back. The object is
 * its own undici handler (no per-request closures). An Upgrade request is the same
 * exchange until the endpoint answers 101; then it hands both sockets to a Tunnel.
 */
class Exchange implements Dispatcher.DispatchHandler, AttemptUser {
  private readonly method: string;
  private readonly headers: string[];
  private readonly hasBody: boolean;
  private readonly t0: number;
  /** The one loop that picks, retries and queues (shared with tcp and tunnels). */
  private readonly attempt: UpstreamAttempt;
  /** The last endpoint tried (for the access log). */
  private endpointId = '-';
  /** undici began writing the request (a failure now may have reached the endpoint). */
  private sent = false;
  /** Response head passed to the client. */
  private started = false;
  private done = false;
  private status = 0;
  private ctl: Dispatcher.DispatchController | null = null;
  /** 1xx responses seen, and whether the client has yet to take the last one written. */
  private interims = 0;
  private interimCongested = false;

  constructor(
    private readonly listener: HttpListener,
    private readonly req: http.IncomingMessage,
    private readonly res: http.ServerResponse,
    private readonly service: string,
    facts: RequestFacts,
    private readonly path: string,
    hostOverride: string | null,
    private readonly upgrade: UpgradeParts | null,
    private readonly owed: ConnFacts | null,
  ) {
    this.method = req.method ?? 'GET';
    this.hasBody = facts.hasBody;
    const { pool } = listener.deps;
    this.t0 = pool.clock.now();
    const c = listener.conn(req.socket);
    // Connection/Upgrade are hop-by-hop; for an Upgrade undici writes its own pair.
    this.headers = upstreamRequestHeaders(req.rawHeaders, listener.forwarded(c, facts, hostOverride ?? facts.host), null, hostOverride);
    const key = pool.service(service)?.balance === 'source-hash' ? c.ip : undefined;
    this.attempt = new UpstreamAttempt(pool, service, listener.settings, key, this);
  }

  start(): void {
    const r = this.res as TaggedRes;
    r[kExchange] = this;
    r.on('drain', onResDrain);
    r.on('close', onResClose);
    this.listener.budget(this.service).request();
    this.attempt.start();
  }

  /** The attempt picked `ep`: send the request there. */
  connectTo(ep: EndpointState): void {
    this.endpointId = ep.id;
    this.sent = false;
    const t = this.listener.settings.timeouts;
    const u = this.upgrade;
    this.listener.upstreams.agent(ep).dispatch(
      {
        path: this.path,
        method: this.method,
        headers: this.headers,
        body: this.hasBody && u === null ? this.req : null,
        headersTimeout: t.response,
        bodyTimeout: t.idle,
        idempotent: false,
        // A plain literal (no spread): one object shape per request on the hot path.
        upgrade: u !== null ? u.protocol : null,
      },
      this,
    );
  }

  /** No endpoint will take the request: 503 when none could be tried, 502 when every one failed. */
  giveUp(why: GiveUp, detail: string): void {
    if (!this.done) this.fail(why === 'unavailable' ? 503 : 502, detail);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.ctl = controller;
    this.sent = true;
    // A connection to the endpoint is in hand: the client waits for an endpoint no more.
    this.attempt.connected();
    this.listener.alarm.clear('upstream_connect');
    if (this.done) controller.abort(clientEndedError('client gone'));
  }

  /** The endpoint answered (a final head or a 101): passive health and latency. */
  private answered(statusCode: number): void {
    // Outlier detection counts endpoints that answer "I am broken".
    this.attempt.report(statusCode === 502 || statusCode === 503 || statusCode === 504 ? 'broken' : 'answered');
    this.status = statusCode;
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: http.IncomingHttpHeaders, statusMessage?: string): void {
    if (this.done) return;
    if (statusCode < 100 || statusCode > 599) {
      // Not a status (RFC 9110 §15): the endpoint is broken; nothing of it reaches the client.
      controller.abort(Object.assign(new Error(`invalid status code ${statusCode}`), { code: 'BERTH_ERR_BAD_STATUS' }));
      return;
    }
    if (statusCode < 200) {
      this.interim(controller, statusCode, headers, statusMessage);
      return;
    }
    const res = this.res;
    let list: string[];
    try {
      list = downstreamResponseHeaders(headers, statusCode, this.req.httpVersionMinor === 0);
    } catch (err) {
      controller.abort(err as Error);
      return;
    }
    this.answered(statusCode);
    this.started = true;
    if (this.listener.closing) res.shouldKeepAlive = false;
    try {
      res.writeHead(statusCode, reasonPhrase(statusCode, statusMessage), list);
    } catch (err) {
      // A header value node will not write (a control character): the response cannot be relayed.
      this.started = false;
      controller.abort(err as Error);
    }
  }

  /**
   * 1xx before the final answer (RFC 9110 §15.2): forwarded to HTTP/1.1 clients with
   * hop-by-hop fields removed and under the same backpressure as a body. 100 is not
   * forwarded: berth strips Expect and node answers it itself.
   */
  private interim(controller: Dispatcher.DispatchController, statusCode: number, headers: http.IncomingHttpHeaders, statusMessage: string | undefined): void {
    if (statusCode === 100 || statusCode === 101 || this.req.httpVersionMinor === 0) return;
    // undici keeps parsing past a 1xx even when asked to pause, so the bound is here:
    // while the client has not taken the last one, more are dropped, and an endpoint
    // that sends more than MAX_INTERIM is broken.
    if (++this.interims > MAX_INTERIM) {
      controller.abort(Object.assign(new Error(`more than ${MAX_INTERIM} interim responses`), { code: 'BERTH_ERR_INTERIM_FLOOD' }));
      return;
    }
    const res = this.res as RawWriter;
    if (res.headersSent || this.interimCongested) return;
    let head: string;
    try {
      head = interimHead(statusCode, reasonPhrase(statusCode, statusMessage), headers);
    } catch (err) {
      controller.abort(err as Error);
      return;
    }
    if (!res._writeRaw(head, 'latin1') && res.socket !== null) {
      this.interimCongested = true;
      res.socket.once('drain', () => (this.interimCongested = false));
    }
  }

  onRequestUpgrade(_controller: Dispatcher.DispatchController, statusCode: number, headers: http.IncomingHttpHeaders, socket: Duplex): void {
    const up = socket as net.Socket;
    guardSocket(up);
    const u = this.upgrade;
    if (this.done || u === null) {
      up.destroy();
      return;
    }
    let head: string;
    try {
      head = interimHead(statusCode, reasonPhrase(statusCode, 'Switching Protocols'), headers, headers.upgrade ?? u.protocol);
    } catch (err) {
      up.destroy();
      this.onResponseError(_controller, err as Error);
      return;
    }
    this.answered(statusCode);
    this.started = true;
    // The tunnel owns the endpoint's slot and the client socket from here on.
    const ep = this.attempt.detach()!;
    const client = u.socket;
    this.res.detachSocket(client);
    const l = this.listener;
    l.deps.observer.httpUpgrade(l.settings.name, this.service);
    const tunnel = new Tunnel(l, client, up, ep);
    l.tunnels.add(tunnel);
    client.write(head);
    if (u.early.length > 0) up.write(u.early);
    tunnel.start();
    this.finish();
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
    const { observer, log, pool } = this.listener.deps;
    const e = err as NodeJS.ErrnoException;
    if (this.clientFailed()) {
      // undici saw the client's side fail first (its request body broke off): the client's doing.
      this.endByClient(null, e.code ?? e.message);
      return;
    }
    const ep = this.attempt.endpoint!;
    const failure: HttpFailure = classifyHttpFailure(e, this.sent, this.started, this.status);
    if (log.isLevelEnabled('debug')) log.debug({ endpoint: ep.id, err: e.code ?? e.message, failure }, 'upstream failure');
    if (httpBlames(failure)) this.attempt.report('failed');
    const kind = httpRetry(failure, { idempotent: idempotent(this.method), hasBody: this.hasBody, upgrade: this.upgrade !== null });
    if (this.attempt.retry(kind, kind === 'resend' ? () => this.listener.budget(this.service).tryRetry(pool.clock.now()) : undefined)) {
      observer.retry(ep.service, failure === 'connect' ? connectResult(e) : 'reset');
      return;
    }
    this.attempt.release();
    switch (failure) {
      case 'complete':
        // A 204/304 whose Content-Length undici held against it: the answer is whole.
        this.res.end();
        this.finish();
        return;
      case 'cut':
        // Cut mid-response: the client must see a cut, not a short body it could take for whole.
        this.res.destroy();
        this.finish();
        return;
      case 'local':
        // Out of descriptors or memory here: the endpoint is not to blame, and another would fail alike.
        this.listener.alarm.report('upstream_connect', e.code ?? 'error');
        this.fail(503, `local error: ${e.code}`);
        return;
      case 'timeout':
        this.fail(504, `endpoint ${ep.id}: ${e.code}`);
        return;
      default:
        // Malformed (sending it again would run it again), or dropped and not safe to resend.
        this.fail(502, `endpoint ${ep.id}: ${e.code ?? e.message}`);
        return;
    }
  }

  resDrain(): void {
    if (!this.done) this.ctl?.resume();
  }

  /** The client's own request turned out malformed (its body): answered with `status`, and the connection closes. */
  refuse(status: number): void {
    if (!this.done) this.endByClient(status, 'malformed request body');
    // (Ended already when undici saw the body break first: the answer is still owed.)
    else if (!this.res.headersSent) reply(this.res, status, true);
  }

  /** The response closed (sent, or the client left): abandon the upstream request if it is still going. */
  resClose(): void {
    if (this.owed !== null) responseClosed(this.owed);
    if (!this.done && !this.res.writableFinished) this.endByClient(null, 'client closed the connection');
  }

  /** The client's side has failed: its request body broke off, or its connection is gone. */
  private clientFailed(): boolean {
    const req = this.req;
    return req.errored !== null || (req.destroyed && !req.complete) || (this.res.destroyed && !this.res.writableFinished);
  }

  /**
   * The one way an exchange ends on the client's account (it closed, reset, went
   * idle or botched its body): the attempt learns it first, so nothing that breaks
   * after — the upstream request berth now aborts — counts against the endpoint.
   * `status`: the answer still owed to the client (400), or null when it is gone.
   */
  private endByClient(status: number | null, why: string): void {
    this.attempt.clientEnded();
    const { log } = this.listener.deps;
    if (log.isLevelEnabled('debug')) log.debug({ service: this.service, endpoint: this.endpointId, reason: why }, 'client ended the request');
    const ctl = this.ctl;
    if (status !== null) {
      this.status = status;
      reply(this.res, status, true);
    }
    this.finish();
    // finish() has let go of the endpoint: undici's answer to the abort finds the exchange done.
    ctl?.abort(clientEndedError(why));
  }

  /** berth answers itself: 502/503/504. */
  private fail(status: number, why: string): void {
    const { log, observer } = this.listener.deps;
    if (status === 503) observer.noEndpoint(this.listener.settings.name, this.service);
    if (log.isLevelEnabled('debug')) log.debug({ service: this.service, status, reason: why, attempts: this.attempt.attempts }, 'request failed');
    this.status = status;
    reply(this.res, status, false, status === 503 ? { 'retry-after': '1' } : undefined);
    this.finish();
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    this.attempt.end();
    const l = this.listener;
    const { observer, pool, log } = l.deps;
    const seconds = (pool.clock.now() - this.t0) / 1000;
    const status = this.status === 0 ? 499 : this.status;
    observer.httpRequest(l.settings.name, this.service, this.method, status, seconds);
    if (l.settings.http.accessLog) {
      log.info(
        { client: l.conn(this.req.socket).ip, method: this.method, path: this.path, host: this.req.headers.host, status, ms: Math.round(seconds * 1e6) / 1e3, service: this.service, endpoint: this.endpointId, attempts: this.attempt.attempts },
        'request',
      );
    }
    // (The response keeps this exchange until it closes: its 'close' settles `owed`.)
  }
}

const kTunnel = Symbol('berth.http.tunnel');
type TunnelSocket = net.Socket & { [kTunnel]?: Tunnel };
function onTunnelEnd(this: TunnelSocket): void {
  this[kTunnel]?.destroy();
}

/**
 * An upgraded connection (WebSocket and others), after the endpoint's 101: bytes
 * both ways with backpressure, bounded by the idle timeout; either side closing
 * or failing closes both.
 */
class Tunnel {
  private closed = false;

  constructor(
    private readonly listener: HttpListener,
    private readonly client: net.Socket,
    private readonly up: net.Socket,
    private readonly ep: EndpointState,
  ) {}

  start(): void {
    const c = this.client as TunnelSocket;
    const u = this.up as TunnelSocket;
    c[kTunnel] = this;
    u[kTunnel] = this;
    c.on('close', onTunnelEnd);
    u.on('close', onTunnelEnd);
    c.on('error', onTunnelEnd);
    u.on('error', onTunnelEnd);
    const idle = this.listener.settings.timeouts.idle;
    c.setTimeout(idle > 0 ? idle : 0);
    if (idle > 0) c.on('timeout', onTunnelEnd);
    c.pipe(u);
    u.pipe(c);
    c.resume();
  }

  destroy(): void {
    if (this.closed) return;
    this.closed = true;
    this.client.destroy();
    this.up.destroy();
    // (The endpoint socket's bytes are counted by Upstreams when it closes.)
    this.listener.deps.pool.release(this.ep);
    this.listener.tunnels.delete(this);
  }
}
