/**
 * A tcp listener: the port (through the connection gate), optional TLS
 * termination, and a session per client (session.ts).
 */
import net from 'node:net';
import tls from 'node:tls';
import type { PeerIdentity, TlsTerminator, UpstreamTls } from '../../core/tls.js';
import { nullObserver, type PrereadResult, type ProxyObserver, type ProxyProtocolResult } from '../../core/observer.js';
import type { Logger } from '../../log.js';
import type { Pool, ServiceRoute } from '../../pool/pool.js';
import { tcpConnect, type ConnectFn } from '../connect.js';
import { ConnectionGate } from '../gate.js';
import type { Listener } from '../listener.js';
import { LocalErrorAlarm } from '../local-errors.js';
import { ByConnection } from '../preread/by-connection.js';
import { acceptProxyOf, PrereadReader, prereads, type AcceptProxy, type Preread, type PrereadSettings, type PrereadUser } from '../preread/chain.js';
import type { ProxiedAddresses } from '../preread/proxy-header.js';
import type { ClientAddresses } from '../proxy-protocol.js';
import { PeerLogLimit, plainAddress } from '../preread/trust.js';
import { TcpSession, type SessionRoute } from './session.js';
import { SniRouter, type SniRouteSpec } from './sni-router.js';

/** What a tcp listener needs to know; a subset of config's ListenerConfig. */
export interface TcpListenerSettings {
  readonly name: string;
  readonly bind: { readonly host: string; readonly port: number };
  readonly service: string;
  readonly timeouts: {
    readonly connect: number;
    readonly idle: number;
    /** tls: the whole handshake within this (ms, from accept); default 10 s. */
    readonly handshake?: number | undefined;
    /** A PROXY header and the ClientHello within this (ms, from accept); default 5 s. */
    readonly preread?: number | undefined;
  };
  /** Routes by the TLS ClientHello (passthrough); one without sni is the catch-all. */
  readonly routes?: readonly SniRouteSpec[];
  /** One info line per session when it ends (the http access log's switch). */
  readonly http?: { readonly accessLog: boolean };
  /** PostgreSQL: a client's SSLRequest is answered 'S' and its ClientHello routed; each endpoint is sent one. */
  readonly postgres?: boolean;
  /** PROXY protocol in: these peers must send a header; others are refused or served as they are. */
  readonly acceptProxy?: { readonly trusted: readonly string[]; readonly untrusted: 'refuse' | 'ignore' } | null;
  /**
   * Rounds over the endpoints after every one has failed to connect (with
   * retryBackoff), and replays after an accepted connection reset (services with
   * `replay`). A connect that fails is always tried on the next endpoint.
   */
  readonly retries: number;
  /**
   * When every endpoint has failed once and attempts remain, wait this long (ms,
   * doubling each round) and try the set again: covers an endpoint that is still
   * starting to listen, or a brief refusal during a restart.
   */
  readonly retryBackoff: number;
  /** Send a PROXY protocol header to the endpoint first. */
  readonly proxyProtocol?: 'off' | 'v1' | 'v2';
  /** Cap on open client connections, TLS handshakes included (0 = none); past it, accepted connections wait unread. */
  readonly maxConnections?: number;
}

export interface TcpListenerDeps {
  readonly pool: Pool;
  readonly log: Logger;
  readonly observer?: ProxyObserver;
  readonly connect?: ConnectFn;
  /** TLS termination (fixed for the listener's life: the socket type depends on it). */
  readonly tls?: TlsTerminator | null;
  /** TLS towards a service's endpoints, if it has any. */
  readonly upstreamTls?: (service: string) => UpstreamTls | undefined;
  /** A --workers worker: bind a listening socket of its own (SO_REUSEPORT). */
  readonly reusePort?: boolean;
}

/**
 * A tcp listener: accepts clients, picks an endpoint of its service, and pipes
 * bytes both ways with backpressure and half-close. Settings can be swapped in
 * place (reload) without closing the socket.
 */
export class TcpListener implements Listener<TcpListenerSettings> {
  readonly mode = 'tcp';
  settings: TcpListenerSettings;
  /** Owns the port; counts and caps connections. */
  readonly gate: ConnectionGate;
  readonly sessions = new Set<TcpSession>();
  readonly deps: Required<TcpListenerDeps>;
  readonly alarm: LocalErrorAlarm;
  /** Connections still being read before a pick (a PROXY header, the ClientHello). */
  readonly prereading = new Set<PrereadConn>();
  private router!: SniRouter;
  private preread!: PrereadSettings;
  /** The pool's published routes the router was built with; null when the listener does not route by SNI. */
  private published: readonly ServiceRoute[] | null = null;
  private bySni = false;
  private acceptProxy: AcceptProxy | null = null;
  /** Behind TLS termination: connections whose PROXY header is being read (before the handshake). */
  private readonly headerReading = new Set<net.Socket>();
  private stopped = false;
  /** Behind TLS termination: the client each connection's PROXY header named. */
  private readonly proxied = new ByConnection<ClientAddresses>();
  /** Violations of the PROXY protocol are logged once per peer per minute. */
  private readonly proxyLog = new PeerLogLimit(60_000);

  constructor(settings: TcpListenerSettings, deps: TcpListenerDeps) {
    this.settings = settings;
    this.deps = { observer: nullObserver, connect: tcpConnect, tls: null, upstreamTls: () => undefined, reusePort: false, ...deps };
    this.alarm = new LocalErrorAlarm(this.deps.log, this.deps.observer);
    const t = this.deps.tls;
    let admit: (socket: net.Socket) => void;
    if (t) {
      const server = tls.createServer({ ...t.serverOptions(), allowHalfOpen: true, noDelay: true, handshakeTimeout: settings.timeouts.handshake ?? 10_000 }, (socket) => this.acceptTls(t, socket));
      t.attach(server, settings.name, (l, r) => this.deps.observer.tlsHandshake(l, r));
      admit = (socket) => {
        // The raw socket: it closes whether or not the handshake ever completes.
        socket.on('close', () => this.gate.closed());
        // PROXY protocol in: the header comes before the handshake, on the raw socket.
        if (this.preread.acceptProxy !== null) this.readProxyHeader(socket, server);
        else {
          server.emit('connection', socket);
          socket.resume();
        }
      };
    } else {
      // The gate accepts with pauseOnConnect: the client's first bytes wait in the
      // kernel until an endpoint is connected, so nothing is read that could be lost.
      admit = (socket) => this.accept(socket, null);
    }
    this.gate = new ConnectionGate(settings.name, settings.maxConnections ?? 0, { log: this.deps.log, alarm: this.alarm, admit });
    this.applySettings();
  }

  /** Reload: new settings for new connections (the socket type cannot change). */
  configure(settings: TcpListenerSettings): void {
    this.settings = settings;
    this.gate.maxConnections = settings.maxConnections ?? 0;
    this.applySettings();
  }

  /**
   * Settings (construction, reload): whether the listener routes by SNI — it has sni
   * routes, or no service (the labels' routes, and its catch-all route if it has one).
   * A listener with a service and no sni route never takes label routes: it must not
   * start waiting for a ClientHello (server-speaks-first protocols) because some
   * container somewhere has a berth.tls.sni label.
   */
  private applySettings(): void {
    const s = this.settings;
    this.bySni = this.deps.tls === null && ((s.routes ?? []).some((r) => r.sni !== undefined) || s.service === '');
    this.acceptProxy = acceptProxyOf(s.acceptProxy);
    this.applyRoutes();
  }

  /** The router (and what is read before a pick): the listener's routes, then the labels' when it routes by SNI. */
  private applyRoutes(): void {
    const s = this.settings;
    const routes: SniRouteSpec[] = [...(s.routes ?? [])];
    // The server names endpoints ask for (label berth.tls.sni) come after the
    // listener's own routes, which win on the same name, as for http.
    this.published = this.bySni ? this.deps.pool.routes : null;
    for (const r of this.published ?? []) if (r.sni !== undefined) routes.push({ sni: r.sni, service: r.service });
    this.router = new SniRouter(routes, s.service !== '' ? s.service : undefined);
    // With nowhere to send a connection but by its name (no routes yet, no catch-all),
    // the hello is read and the connection refused as no route, as it will be once
    // labels route some names.
    const hello = this.router.readsHello || (this.bySni && this.router.fallback === undefined);
    this.preread = { acceptProxy: this.acceptProxy, hello, postgres: s.postgres === true, timeout: s.timeouts.preread ?? 5000, max: 65_536 };
  }

  /** The router for a new connection: rebuilt when the pool's published routes changed. */
  private currentRouter(): SniRouter {
    if (this.published !== null && this.deps.pool.routes !== this.published) this.applyRoutes();
    return this.router;
  }

  /**
   * The PROXY header in front of TLS termination: read and checked on the raw
   * socket, the client it names kept for the session the handshake leads to; the
   * bytes after it go back in front of the handshake.
   */
  private readProxyHeader(socket: net.Socket, server: tls.Server): void {
    const peer = plainAddress(socket.remoteAddress);
    // Seen by `active` and destroyAll() while its header is read.
    this.headerReading.add(socket);
    const reader = new PrereadReader(socket, { ...this.preread, hello: false, postgres: false, max: 0 }, this.deps.pool.clock, {
      proxyResult: (result, why) => this.proxyResult(peer, result, why),
      refused: () => socket.destroy(),
      ready: (p) => {
        this.headerReading.delete(socket);
        // The listener stopped while the header was read, or the connection is gone: nothing more.
        if (this.stopped || (p.proxied !== null && !this.proxied.set(socket, addressesOf(p.proxied)))) {
          socket.destroy();
          return;
        }
        if (p.held.length > 0) socket.unshift(p.held);
        // No resume(): node's TLS takes the bytes in the socket's buffer when it starts
        // reading, and a resume would flow them out to no one first.
        server.emit('connection', socket);
      },
    });
    socket.once('close', () => {
      this.headerReading.delete(socket);
      reader.abort();
    });
    reader.startOnPeer(() => peer);
  }

  /** A completed handshake: a verified client not on the allow-list is closed here. */
  private acceptTls(t: TlsTerminator, socket: tls.TLSSocket): void {
    // Decrypted bytes wait in the socket until an endpoint is connected.
    socket.pause();
    const { identity, result } = t.check(socket);
    if (result !== 'ok') {
      this.deps.observer.tlsHandshake(this.settings.name, result);
      const { log } = this.deps;
      if (log.isLevelEnabled('debug')) log.debug({ result, reason: socket.authorizationError, subject: identity?.subject, uris: identity?.uris }, 'client refused after the handshake');
      t.refuse(socket);
      return;
    }
    this.deps.observer.tlsHandshake(this.settings.name, 'ok');
    this.accept(socket, identity);
  }

  /** Binds the listener. Rejects with BERTH_ERR_LISTEN when the address cannot be bound. */
  listen(): Promise<net.AddressInfo> {
    return this.gate.listen(this.settings.bind, this.deps.reusePort);
  }

  get address(): net.AddressInfo {
    return this.gate.server.address() as net.AddressInfo;
  }

  /** Open client connections. */
  get active(): number {
    return this.sessions.size + this.prereading.size + this.headerReading.size;
  }

  describe(): Record<string, unknown> {
    return {};
  }

  /**
   * Stops accepting; open sessions go on. The listening socket is closed at once
   * (server.close's callback would wait for every session to end, which is the
   * drain, not the stop).
   */
  stopAccepting(): void {
    this.stopped = true;
    this.gate.close();
  }

  /** Closes every open session at once. */
  destroyAll(): void {
    for (const s of this.sessions) s.destroy();
    for (const p of this.prereading) p.client.destroy();
    for (const s of this.headerReading) s.destroy();
  }

  private accept(client: net.Socket, identity: PeerIdentity | null): void {
    this.deps.observer.listenerAccepted(this.settings.name);
    this.currentRouter();
    // (A TLS-terminating listener takes neither: the config refuses both with tls.)
    if (identity === null && this.deps.tls === null && prereads(this.preread)) {
      const p = new PrereadConn(this, client, this.preread, this.router);
      this.prereading.add(p);
      p.start();
      return;
    }
    // (Behind TLS termination, a PROXY header was read before the handshake.)
    this.open(client, identity, { service: this.router.fallback ?? this.settings.service, held: null, peer: this.deps.tls === null ? null : (this.proxied.get(client) ?? null) });
  }

  /** @internal a session for `client`, to `route.service`. */
  open(client: net.Socket, identity: PeerIdentity | null, route: SessionRoute): void {
    const session = new TcpSession(this, client, identity, route);
    this.sessions.add(session);
    session.start();
  }

  /** @internal */
  ended(session: TcpSession): void {
    if (!this.sessions.delete(session)) return;
    this.closedOne();
  }

  /** @internal a connection refused while it was read. */
  prereadEnded(p: PrereadConn): void {
    if (this.prereading.delete(p)) this.closedOne();
  }

  private closedOne(): void {
    this.deps.observer.listenerClosed(this.settings.name);
    // (tls: the gate counts the raw socket, which has a close of its own.)
    if (this.deps.tls === null) this.gate.closed();
  }

  /** @internal an endpoint that did not answer berth's PostgreSQL SSLRequest with 'S': the client is closed; logged once per endpoint per minute. */
  postgresRefused(endpoint: string, answer: string): void {
    if (this.proxyLog.take(`postgres ${endpoint}`, this.deps.pool.clock.now())) this.deps.log.warn({ endpoint, answer }, 'PostgreSQL endpoint refused TLS: client closed');
  }

  /** @internal a PROXY protocol result: counted, and a violation logged once per peer per minute. */
  proxyResult(peer: string, result: ProxyProtocolResult, why: string): void {
    this.deps.observer.proxyProtocol(this.settings.name, result);
    if (result !== 'ok' && this.proxyLog.take(peer, this.deps.pool.clock.now())) this.deps.log.warn({ peer, result, reason: why }, 'PROXY protocol: connection refused');
  }
}

function onPrereadClose(this: net.Socket & { [kConn]?: PrereadConn | undefined }): void {
  this[kConn]?.closed();
}
const kConn = Symbol('berth.tcp.preread');

/**
 * A connection being read before its pick: the PROXY header from a trusted front
 * balancer, then the ClientHello the SNI routes look at.
 */
class PrereadConn implements PrereadUser {
  private readonly reader: PrereadReader;
  private peerAddress: string | undefined;
  private done = false;

  constructor(
    private readonly listener: TcpListener,
    readonly client: net.Socket,
    settings: PrereadSettings,
    private readonly router: SniRouter,
  ) {
    this.reader = new PrereadReader(client, settings, listener.deps.pool.clock, this);
  }

  /** The connection's peer, asked for only when needed (a getpeername() syscall): the PROXY trust check and logs. */
  private get peer(): string {
    return (this.peerAddress ??= plainAddress(this.client.remoteAddress));
  }

  start(): void {
    const c = this.client as net.Socket & { [kConn]?: PrereadConn | undefined };
    c[kConn] = this;
    c.once('close', onPrereadClose);
    this.reader.startOnPeer(() => this.peer);
  }

  proxyResult(result: ProxyProtocolResult, why: string): void {
    this.listener.proxyResult(this.peer, result, why);
    const l = this.listener;
    if (result !== 'ok' && l.settings.http?.accessLog) l.deps.log.info({ client: this.peer, listener: l.settings.name, end: `proxy header error (${result})`, reason: why }, 'tcp session');
  }

  refused(): void {
    this.end();
    this.client.destroy();
  }

  /** @internal the client closed while it was read. */
  closed(): void {
    this.reader.abort();
    this.end();
  }

  ready(p: Preread): void {
    const l = this.listener;
    const { observer, log } = l.deps;
    let service: string | undefined;
    const h = p.hello;
    if (h !== null) {
      let result: PrereadResult;
      if (h.kind === 'hello') {
        const m = this.router.match(h.sni, h.alpn);
        service = m?.service;
        result = m === undefined ? (h.sni === null ? 'no_sni' : 'no_route') : m.routed ? 'routed' : h.sni === null ? 'no_sni' : 'fallback';
      } else if (h.kind === 'malformed') {
        // A broken hello goes nowhere: it would break at the endpoint too.
        result = 'malformed';
      } else {
        service = this.router.fallback;
        result = h.kind === 'not-tls' ? (service === undefined ? 'no_sni' : 'fallback') : h.kind === 'too-large' ? 'too_large' : h.kind === 'timeout' ? 'timeout' : 'malformed';
      }
      observer.preread(l.settings.name, result);
      if (service === undefined) {
        if (l.settings.http?.accessLog) log.info({ client: this.peer, listener: l.settings.name, sni: h.kind === 'hello' ? h.sni : undefined, end: `refused by route (${result})` }, 'tcp session');
        else if (log.isLevelEnabled('debug')) log.debug({ client: this.peer, result, reason: h.kind === 'malformed' ? h.why : undefined, sni: h.kind === 'hello' ? h.sni : undefined }, 'no route for this connection');
        this.refused();
        return;
      }
    } else {
      // (A listener whose only route is a catch-all reads no hello: the catch-all takes it.)
      service = this.router.fallback ?? l.settings.service;
    }
    // Handed to a session: still open, no longer being read.
    this.done = true;
    l.prereading.delete(this);
    const c = this.client as net.Socket & { [kConn]?: PrereadConn | undefined };
    c[kConn] = undefined;
    c.off('close', onPrereadClose);
    l.open(this.client, null, { service, held: p.held.length > 0 ? p.held : null, peer: p.proxied === null ? null : addressesOf(p.proxied), sslRequest: p.sslRequest });
  }

  private end(): void {
    if (this.done) return;
    this.done = true;
    this.listener.prereadEnded(this);
  }
}

function addressesOf(p: ProxiedAddresses): ClientAddresses {
  return { source: p.source, sourcePort: p.sourcePort, destination: p.destination, destinationPort: p.destinationPort };
}

