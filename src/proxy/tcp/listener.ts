/**
 * A tcp listener: the port (through the connection gate), optional TLS
 * termination, and a session per client (session.ts).
 */
import net from 'node:net';
import tls from 'node:tls';
import type { PeerIdentity, TlsTerminator, UpstreamTls } from '../../core/tls.js';
import { nullObserver, type ProxyObserver } from '../../core/observer.js';
import type { Logger } from '../../log.js';
import type { Pool } from '../../pool/pool.js';
import { tcpConnect, type ConnectFn } from '../connect.js';
import { ConnectionGate } from '../gate.js';
import type { Listener } from '../listener.js';
import { LocalErrorAlarm } from '../local-errors.js';
import { TcpSession } from './session.js';

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
  };
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
        server.emit('connection', socket);
        socket.resume();
      };
    } else {
      // The gate accepts with pauseOnConnect: the client's first bytes wait in the
      // kernel until an endpoint is connected, so nothing is read that could be lost.
      admit = (socket) => this.accept(socket, null);
    }
    this.gate = new ConnectionGate(settings.name, settings.maxConnections ?? 0, { log: this.deps.log, alarm: this.alarm, admit });
  }

  /** Reload: new settings for new connections (the socket type cannot change). */
  configure(settings: TcpListenerSettings): void {
    this.settings = settings;
    this.gate.maxConnections = settings.maxConnections ?? 0;
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
    return this.sessions.size;
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
    this.gate.close();
  }

  /** Closes every open session at once. */
  destroyAll(): void {
    for (const s of this.sessions) s.destroy();
  }

  private accept(client: net.Socket, identity: PeerIdentity | null): void {
    this.deps.observer.listenerAccepted(this.settings.name);
    const session = new TcpSession(this, client, identity);
    this.sessions.add(session);
    session.start();
  }

  /** @internal */
  ended(session: TcpSession): void {
    if (!this.sessions.delete(session)) return;
    this.deps.observer.listenerClosed(this.settings.name);
    // (tls: the gate counts the raw socket, which has a close of its own.)
    if (this.deps.tls === null) this.gate.closed();
  }
}
