/**
 * HTTP/1.1 reverse proxy listener.
 *
 * Downstream: node's http server (llhttp in strict mode) parses client requests,
 * with berth's extra framing checks on top (headers.ts). Upstream: one
 * undici Pool per endpoint (upstream.ts), driven through the low-level
 * dispatch API: no intermediate streams or objects per request beyond undici's
 * own, and response bytes are written to the client as they arrive, with
 * backpressure both ways.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import type { PeerIdentity, TlsTerminator, UpstreamTls } from '../../core/tls.js';
import { nullObserver, type ProxyObserver } from '../../core/observer.js';
import type { Logger } from '../../log.js';
import type { Pool, ServiceRoute } from '../../pool/pool.js';
import { guardSocket, tcpConnect, type ConnectFn } from '../connect.js';
import { ConnectionGate } from '../gate.js';
import type { Listener } from '../listener.js';
import { LocalErrorAlarm } from '../local-errors.js';
import { ownAnswer, rawReply, reply, responseClosed, type ConnFacts, type UpgradeParts } from './connection.js';
import { Exchange, exchangeOf, streamIdle } from './exchange.js';
import { isGrpc } from './grpc.js';
import { H2Front } from './h2-front.js';
import { hasDotSegment, inspectH2Request, inspectRequest, type Forwarded, type RequestFacts } from './headers.js';
import { sniffPreface } from './preface.js';
import type { Tunnel } from './tunnel.js';
import { RetryBudget, Upstreams, type UpstreamSettings } from './upstream.js';
import { normalizeHost, Router, type RouteRule } from './routes.js';
import { ByConnection } from '../preread/by-connection.js';
import { acceptProxyOf, PrereadReader, type AcceptProxy } from '../preread/chain.js';
import { PeerLogLimit, plainAddress, trustList } from '../preread/trust.js';

const NO_BYTES = Buffer.alloc(0);

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
    /** A PROXY header within this long (from accept); default 5 s. */
    readonly preread?: number | undefined;
  };
  /** PROXY protocol in: these peers must send a header; others are refused or served as they are. */
  readonly acceptProxy?: { readonly trusted: readonly string[]; readonly untrusted: 'refuse' | 'ignore' } | null;
  /** Cap on open client connections, TLS handshakes included (0 = none). */
  readonly maxConnections?: number;
  readonly retries: number;
  /** When every endpoint has failed once and attempts remain: pause (ms, doubling per round), then try them again. */
  readonly retryBackoff: number;
  readonly http: HttpSettings;
  /** HTTP/2 beside HTTP/1.1: ALPN h2 (tls) or the prior-knowledge preface (plaintext). Default false. */
  readonly http2?: boolean | undefined;
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
  /** The HTTP version a service speaks to its endpoints (services' httpVersion). */
  readonly httpVersion?: (service: string) => '1.1' | '2';
  /** A --workers worker: bind a listening socket of its own (SO_REUSEPORT). */
  readonly reusePort?: boolean;
}

const DEFAULT_SERVICE_LABEL = '-';
/** The Allow field of a 405 to CONNECT (HTTP/1.1 and HTTP/2 alike). */
const ALLOWED_METHODS = 'GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS';

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

const kConn = Symbol('berth.http.conn');
type TaggedSocket = net.Socket & { [kConn]?: ConnFacts };

/** The request gate's verdict: where a request (or an Upgrade) goes, or why it is refused. */
type Admission =
  | { readonly ok: true; readonly service: string; readonly facts: RequestFacts; readonly path: string; readonly host: string | null }
  | { readonly ok: false; readonly status: 400 | 403 | 404; readonly why: string };

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
  /** PROXY protocol in (null: none is read). */
  private acceptProxy: AcceptProxy | null = null;
  /** The client address a PROXY header gave, per connection. */
  private readonly proxied = new ByConnection<string>();
  /** Violations of the PROXY protocol are logged once per peer per minute. */
  private readonly proxyLog = new PeerLogLimit(60_000);
  private readonly budgets = new Map<string, RetryBudget>();
  /** Set when the listener stops accepting: responses then close their connection. */
  closing = false;
  /** The HTTP/2 front: connections that speak HTTP/2 are handed to it (settings.http2). */
  readonly h2: H2Front;

  constructor(settings: HttpListenerSettings, deps: HttpListenerDeps) {
    this.settings = settings;
    this.deps = { observer: nullObserver, tls: null, upstreamTls: () => undefined, connect: tcpConnect, reusePort: false, httpVersion: () => '1.1', ...deps };
    this.alarm = new LocalErrorAlarm(this.deps.log, this.deps.observer);
    this.router = new Router([]);
    this.upstreams = new Upstreams(upstreamSettings(settings), deps.pool, this.deps.observer, this.deps.upstreamTls, this.deps.connect, this.deps.httpVersion);
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
      // node's own listener starts an HTTP/1.1 parser on every TLS connection; berth
      // decides first: a connection that agreed on ALPN h2 goes to the HTTP/2 front.
      const h1 = server.listeners('secureConnection')[0] as (socket: tls.TLSSocket) => void;
      server.removeAllListeners('secureConnection');
      server.on('secureConnection', (socket: tls.TLSSocket) => {
        this.secured(t, socket);
        if (socket.alpnProtocol === 'h2') this.h2.take(socket, this.conn(socket));
        else h1.call(server, socket);
      });
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
    this.server.on('connection', (socket: net.Socket) => this.track(socket));
    this.server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => this.request(req, res));
    this.server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => this.upgrade(req, socket as net.Socket, head));
    this.server.on('connect', (_req: http.IncomingMessage, socket: Duplex) => {
      this.deps.observer.httpRejected(this.settings.name, 'method');
      rawReply(socket as net.Socket, 405, `allow: ${ALLOWED_METHODS}\r\n`);
    });
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => this.clientError(err, socket as net.Socket));
    this.configureTrust();
    this.configureProxy();
    this.h2 = new H2Front({
      log: this.deps.log,
      clock: this.deps.pool.clock,
      settings: () => ({ maxHeaderSize: this.settings.http.maxHeaderSize, keepAlive: this.settings.timeouts.keepAlive, settingsTimeout: this.settings.timeouts.headers, idle: this.settings.timeouts.idle }),
      streamIdle,
      request: (stream, headers, raw, conn, verdict) => this.requestH2(stream, headers, raw, conn, verdict),
      violated: (why) => {
        this.deps.observer.httpRejected(this.settings.name, 'h2_limit');
        if (this.deps.log.isLevelEnabled('debug')) this.deps.log.debug({ reason: why }, 'HTTP/2 connection closed: over a limit');
      },
    });
    this.gate = new ConnectionGate(settings.name, settings.maxConnections ?? 0, {
      log: this.deps.log,
      alarm: this.alarm,
      admit: (socket) => {
        if (this.acceptProxy === null) this.serve(socket);
        else this.readProxyHeader(socket, this.acceptProxy);
      },
    });
  }

  /**
   * A connection (its PROXY header read, if one was due) to the parser that speaks
   * its protocol: TLS to node's https server (which hands HTTP/2 back by ALPN);
   * plaintext by its first bytes, when HTTP/2 is on, else to the HTTP/1.1 parser.
   */
  private serve(socket: net.Socket): void {
    if (this.deps.tls !== null) {
      this.server.emit('connection', socket);
      return;
    }
    if (this.settings.http2 !== true) {
      this.toH1(socket);
      return;
    }
    this.track(socket);
    // Its bytes are berth's to read until a parser takes it: so is a reset meanwhile.
    guardSocket(socket);
    sniffPreface(socket, this.settings.timeouts.headers, {
      decided: (version) => {
        if (this.closing) {
          socket.destroy();
          return;
        }
        if (version === 'h2') this.h2.take(socket, this.conn(socket));
        else this.toH1(socket);
      },
      timedOut: () => {
        this.deps.observer.httpRejected(this.settings.name, 'timeout');
        rawReply(socket, 408);
      },
    });
  }

  /** A plaintext connection to node's HTTP/1.1 parser (paused until now: nothing read is lost). */
  private toH1(socket: net.Socket): void {
    this.server.emit('connection', socket);
    socket.resume();
  }

  /**
   * PROXY protocol in: the header is read (and checked) before node's parser sees a
   * byte; the client address it gives is the one this connection goes by (access
   * log, X-Forwarded-For, source-hash). Bytes past it go back in front of the parser.
   */
  private readProxyHeader(socket: net.Socket, ap: AcceptProxy): void {
    const peer = plainAddress(socket.remoteAddress);
    let handed = false;
    // Counted, and seen by `active` and destroyAll(), from accept on, once.
    this.track(socket);
    socket.once('close', () => {
      if (!handed) reader.abort();
    });
    const reader = new PrereadReader(socket, { acceptProxy: ap, hello: false, timeout: this.settings.timeouts.preread ?? 5000, max: 0 }, this.deps.pool.clock, {
      proxyResult: (result, why) => {
        this.deps.observer.proxyProtocol(this.settings.name, result);
        if (result !== 'ok' && this.proxyLog.take(peer, this.deps.pool.clock.now())) this.deps.log.warn({ peer, result, reason: why }, 'PROXY protocol: connection refused');
      },
      refused: () => socket.destroy(),
      ready: (p) => {
        // The listener stopped while the header was read: nothing more is served.
        if (this.closing) {
          socket.destroy();
          return;
        }
        handed = true;
        // Found again by conn(), from this socket or (https) the TLS socket over it.
        if (p.proxied !== null) this.proxied.set(socket, p.proxied.source);
        if (p.held.length > 0) socket.unshift(p.held);
        // (https: node's TLS takes the buffered bytes itself.)
        this.serve(socket);
      },
    });
    reader.startOnPeer(() => peer);
  }

  /** Reload: new settings for new requests; open connections and tunnels go on. */
  configure(settings: HttpListenerSettings): void {
    this.settings = settings;
    this.applyServerSettings();
    this.configureTrust();
    this.configureProxy();
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
    this.trusted = trustList(list);
  }

  private configureProxy(): void {
    this.acceptProxy = acceptProxyOf(this.settings.acceptProxy);
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
    this.h2.close();
  }

  /** Closes every connection, tunnel and pooled upstream connection now. */
  destroyAll(): void {
    this.h2.destroyAll();
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
    for (const r of published) if (r.sni === undefined) rules.push({ host: r.host, pathPrefix: r.pathPrefix, service: r.service, source: 'label' });
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

  /**
   * Counts an accepted client connection, once, however it goes on (PROXY header,
   * first bytes read for HTTP/2, node's parser): `active`, destroyAll() and the gate's slot.
   */
  private track(socket: net.Socket): void {
    if (this.sockets.has(socket)) return;
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
      // The client a front balancer's PROXY header named, else the socket's peer.
      const proxied = this.proxied.get(socket);
      const raw = proxied ?? socket.remoteAddress;
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
      const x = exchangeOf(last);
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
      facts.bad ?? (target === null || typeof target === 'string' ? (target ?? 'bad request') : upgrade && facts.hasBody ? 'an Upgrade request with a body' : null);
    if (bad !== null || target === null || typeof target === 'string') return { ok: false, status: 400, why: bad ?? 'bad request' };
    return this.decide(this.conn(req.socket), facts, target.path, target.host);
  }

  /**
   * What every request comes to once its head is read, HTTP/1.1 or HTTP/2 alike:
   * the path's own check, the client's identity, then the route.
   */
  private decide(c: ConnFacts, facts: RequestFacts, path: string, hostOverride: string | null): Admission {
    if (hasDotSegment(path)) return { ok: false, status: 400, why: 'dot segment in path' };
    if (!c.allowed) return { ok: false, status: 403, why: 'client certificate not allowed' };
    const rule = this.routes().match(normalizeHost(hostOverride ?? facts.host), path);
    if (rule === undefined) return { ok: false, status: 404, why: 'no route' };
    return { ok: true, service: rule.service, facts, path, host: hostOverride };
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
  private handle(req: http.IncomingMessage, res: http.ServerResponse, upgrade: UpgradeParts | null, owed: ConnFacts | null, parserGone = false): void {
    const a = this.admit(req, upgrade !== null || parserGone);
    if (!a.ok) {
      if (owed !== null) res.once('close', () => responseClosed(owed));
      this.refuse(req, res, a.status, a.why);
      return;
    }
    if (this.closing) res.shouldKeepAlive = false;
    new Exchange(this, req, res, a.service, a.facts, a.path, a.host, upgrade, owed, this.conn(req.socket)).start();
  }

  /**
   * An HTTP/2 request: through the same checks as an HTTP/1.1 one (its own head
   * rules, inspectH2Request), the same routes and the same Exchange. `verdict`: its
   * header list was within the limits, or it is answered 431.
   */
  private requestH2(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, raw: string[], c: ConnFacts, verdict: 'ok' | 'too_large'): void {
    if (verdict === 'too_large') {
      this.deps.observer.httpRejected(this.settings.name, 'header_too_large');
      this.refuseH2(stream, isGrpc(headers['content-type']), 431, 'request header fields too large');
      return;
    }
    const facts = inspectH2Request(raw, stream.endAfterHeaders);
    const grpc = isGrpc(facts.contentType);
    if (facts.bad === null && facts.method === 'CONNECT' && facts.protocol !== 'websocket') {
      // A plain CONNECT (a TCP tunnel anywhere) is never proxied; an extended one only for WebSocket.
      this.deps.observer.httpRejected(this.settings.name, 'method');
      if (facts.protocol === undefined) this.refuseH2(stream, grpc, 405, 'CONNECT is not proxied', { allow: ALLOWED_METHODS });
      else this.refuseH2(stream, grpc, 501, `the ${facts.protocol} protocol is not proxied (only websocket)`);
      return;
    }
    const expect = headers.expect;
    if (expect !== undefined && expect !== '100-continue') {
      // (As node's HTTP/1.1 server answers an expectation it cannot meet.)
      this.refused(facts.method, facts.path, 417, `expectation "${expect}"`, '2');
      this.refuseH2(stream, grpc, 417, 'expectation failed');
      return;
    }
    const a: Admission = facts.bad !== null ? { ok: false, status: 400, why: facts.bad } : this.decide(c, facts, facts.path, null);
    if (!a.ok) {
      this.refused(facts.method, facts.path, a.status, a.why, '2');
      this.refuseH2(stream, grpc, a.status, a.why);
      // A client whose certificate is not allowed: its connection takes no more (as HTTP/1.1 closes it).
      if (a.status === 403) stream.session?.close();
      return;
    }
    // The client may send its body (berth strips Expect: the endpoint never sees it, as with HTTP/1.1).
    if (expect !== undefined && !stream.headersSent) stream.additionalHeaders({ ':status': 100 });
    // WebSocket over HTTP/2 (RFC 8441): to the endpoint, the HTTP/1.1 handshake, with a key of berth's.
    const upgrade: UpgradeParts | null = facts.protocol === undefined ? null : { protocol: 'websocket', socket: null, early: NO_BYTES, key: randomBytes(16).toString('base64') };
    new Exchange(this, stream, stream, a.service, facts, facts.path, null, upgrade, null, c).start();
  }

  /** berth's own answer to an HTTP/2 request it does not proxy (gRPC: in gRPC, and counted as such). */
  private refuseH2(stream: ServerHttp2Stream, grpc: boolean, status: number, why: string, extra?: Record<string, string>): void {
    const code = ownAnswer(stream, grpc, status, why, false, extra);
    if (code >= 0) this.deps.observer.grpcRequest(this.settings.name, DEFAULT_SERVICE_LABEL, code);
  }

  private refuse(req: http.IncomingMessage, res: http.ServerResponse, status: 400 | 403 | 404, why: string): void {
    this.refused(req.method ?? 'GET', req.url, status, why, '1.1');
    if (status === 400) {
      // The framing cannot be trusted: answer and close, reading nothing more.
      reply(res, 400, true);
      req.socket.destroySoon();
      return;
    }
    reply(res, status, status === 403);
  }

  /** A request the gate refused, HTTP/1.1 or HTTP/2: logged (debug) and counted. */
  private refused(method: string, url: string | undefined, status: 400 | 403 | 404 | 417, why: string, version: '1.1' | '2'): void {
    const { log, observer } = this.deps;
    if (log.isLevelEnabled('debug')) log.debug({ method, url, status, reason: why, version }, 'request refused');
    if (status === 400) observer.httpRejected(this.settings.name, 'bad_request');
    else observer.httpRequest(this.settings.name, DEFAULT_SERVICE_LABEL, method, status, 0, version);
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
    if (protocol.split(',').some((p) => /^\s*h2c?\s*$/i.test(p))) {
      // HTTP/2 by Upgrade (h2c; RFC 9113 dropped it) is never honoured: a tunnel to the
      // endpoint would let every later request on the connection past berth's gate.
      // Served as the plain HTTP/1.1 request it also is (Upgrade and Connection
      // dropped as hop-by-hop), and the connection closes after it (node's parser
      // has let go of it). A body is refused (400), as with any Upgrade.
      this.handle(req, res, null, null, true);
      return;
    }
    this.handle(req, res, { protocol, socket, early: head, key: null }, null);
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
