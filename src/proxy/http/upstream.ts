/**
 * Connections from an http listener to endpoints: one undici Pool (keep-alive,
 * bounded, one request per connection at a time) per endpoint, opened lazily and
 * closed gracefully when the endpoint leaves. Connects are timed and counted like
 * tcp listeners' (berth_upstream_connections_total, connect duration, bytes).
 */
import type { Socket } from 'node:net';
import type { Pool as UndiciPool } from 'undici';
import { lazy } from '../../core/lazy.js';
import type { Timer } from '../../core/clock.js';
import { nullObserver, type ProxyObserver } from '../../core/observer.js';
import type { UpstreamTls } from '../../core/tls.js';
import type { EndpointState } from '../../pool/endpoint.js';
import type { Pool } from '../../pool/pool.js';
import { connectResult, tcpConnect, type ConnectFn } from '../connect.js';
import { H2_DEFAULTS, H2Upstream } from './h2-upstream.js';
import { scrubInterimClose } from './interim-close.js';

/** What an exchange dispatches through: undici's Pool (HTTP/1.1) or berth's HTTP/2 sessions. */
export interface UpstreamAgent {
  dispatch(opts: import('undici').Dispatcher.DispatchOptions, handler: import('undici').Dispatcher.DispatchHandler): boolean;
  close(): Promise<void>;
  destroy(): Promise<void>;
}

export interface UpstreamSettings {
  /** Connect timeout, ms (0 = none). */
  readonly connect: number;
  /** An idle pooled connection closes after this long (ms); keep it below the endpoints' own keep-alive timeout. */
  readonly keepAlive: number;
  /** Cap on connections per endpoint (0 = none). */
  readonly maxConnections: number;
}

/**
 * Retry budget (as in Finagle): each request adds `ratio` of a token, time adds
 * `minPerSecond` tokens a second, a retry takes one. Under an outage retries stay
 * a fraction of traffic instead of multiplying it.
 */
export class RetryBudget {
  private tokens: number;
  private at: number;
  constructor(
    readonly ratio = 0.2,
    readonly minPerSecond = 10,
    private readonly cap = 100,
    /** The time now on the caller's clock (ms): the budget refills on that clock. */
    now: number,
  ) {
    this.tokens = minPerSecond;
    this.at = now;
  }
  request(): void {
    this.tokens = Math.min(this.cap, this.tokens + this.ratio);
  }
  tryRetry(now: number): boolean {
    const dt = now - this.at;
    if (dt > 0) {
      this.tokens = Math.min(this.cap, this.tokens + (dt / 1000) * this.minPerSecond);
      this.at = now;
    }
    if (this.tokens < 1) return false;
    this.tokens--;
    return true;
  }
}

function onConnectTimeout(x: { readonly socket: Socket; readonly ms: number }): void {
  x.socket.destroy(Object.assign(new Error(`connect timeout after ${x.ms}ms`), { code: 'UND_ERR_CONNECT_TIMEOUT' }));
}

/** undici only where an http listener exists: loaded when the first one is built. */
const undici = lazy<typeof import('undici')>('undici');

export class Upstreams {
  private readonly agents = new Map<EndpointState, UpstreamAgent>();
  private settings: UpstreamSettings;
  private key: string;
  private readonly unsubscribe: () => void;

  constructor(
    settings: UpstreamSettings,
    private readonly pool: Pool,
    private readonly observer: ProxyObserver = nullObserver,
    private readonly tlsFor: (service: string) => UpstreamTls | undefined = () => undefined,
    /** The one connect berth uses towards endpoints (tests inject failures here). */
    private readonly connectFn: ConnectFn = tcpConnect,
    /** The HTTP version a service speaks to its endpoints (an endpoint's own label wins). */
    private readonly versionFor: (service: string) => '1.1' | '2' = () => '1.1',
  ) {
    undici();
    this.settings = settings;
    this.key = JSON.stringify(settings);
    this.unsubscribe = pool.on((e) => {
      if (e.type === 'endpoint-removed') this.drop(e.endpoint);
    });
  }

  /**
   * New settings (reload): pooled connections made with the old ones finish their
   * requests and close. `force`: also when unchanged (upstream TLS material may be new).
   */
  configure(settings: UpstreamSettings, force = false): void {
    const key = JSON.stringify(settings);
    if (key === this.key && !force) return;
    this.settings = settings;
    this.key = key;
    for (const ep of [...this.agents.keys()]) this.drop(ep);
  }

  /**
   * The connections to `ep`: HTTP/2 sessions or an HTTP/1.1 pool, as it speaks. An
   * endpoint whose version changed (a label, a reload) gets new ones; the old finish.
   */
  agent(ep: EndpointState): UpstreamAgent {
    const h2 = (ep.spec.httpVersion ?? this.versionFor(ep.service)) === '2';
    let a = this.agents.get(ep);
    if (a !== undefined && a instanceof H2Upstream !== h2) {
      this.drop(ep);
      a = undefined;
    }
    if (a === undefined) {
      a = h2 ? this.createH2(ep) : this.create(ep);
      this.agents.set(ep, a);
    }
    return a;
  }

  private createH2(ep: EndpointState): H2Upstream {
    const s = this.settings;
    const { service, id, host, port } = ep;
    return new H2Upstream(
      { service, id, host, port, tls: this.tlsFor(service), connectFn: this.connectFn, clock: this.pool.clock, observer: this.observer },
      { ...H2_DEFAULTS, connect: s.connect, keepAlive: s.keepAlive, ...(s.maxConnections > 0 ? { maxSessions: s.maxConnections } : {}) },
    );
  }

  private create(ep: EndpointState): UndiciPool {
    const s = this.settings;
    const t = this.tlsFor(ep.service);
    const { observer, pool, connectFn } = this;
    const { service, id, host, port } = ep;
    const origin = `${t ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`;
    return new (undici().Pool)(origin, {
      ...(s.maxConnections > 0 ? { connections: s.maxConnections } : {}),
      pipelining: 1,
      keepAliveTimeout: s.keepAlive,
      keepAliveMaxTimeout: s.keepAlive,
      // Endpoints that announce a shorter Keep-Alive timeout are believed, less a margin.
      keepAliveTimeoutThreshold: 1000,
      // berth applies its own per-request timeouts (headersTimeout/bodyTimeout per dispatch).
      headersTimeout: 0,
      bodyTimeout: 0,
      // Once per pooled connection, not per request: through the same connect as tcp.
      connect: (_opts, cb) => {
        const t0 = pool.clock.now();
        const socket = connectFn(host, port, t);
        // undici reads a response framed by the close as whole at the endpoint's FIN:
        // then this side ends too (a tcp session keeps half-open connections, undici does not).
        socket.allowHalfOpen = false;
        // A pooled connection may sit idle for a while: TCP keep-alive finds a peer
        // that vanished (as undici's own connector does, after 60 s).
        socket.setKeepAlive(true, 60_000);
        const ready = t ? 'secureConnect' : 'connect';
        let timer: Timer | null = null;
        const settle = (err: Error | null): void => {
          pool.clock.cancel(timer);
          socket.off(ready, onReady);
          socket.off('error', settle);
          const seconds = (pool.clock.now() - t0) / 1000;
          if (err !== null) {
            observer.upstreamConnect(service, id, connectResult(err as NodeJS.ErrnoException), seconds);
            socket.destroy();
            cb(err, null);
            return;
          }
          observer.upstreamConnect(service, id, 'ok', seconds);
          scrubInterimClose(socket);
          socket.once('close', () => observer.upstreamClosed(service, id, socket.bytesRead, socket.bytesWritten));
          cb(null, socket);
        };
        const onReady = (): void => settle(null);
        socket.once(ready, onReady);
        socket.once('error', settle);
        if (s.connect > 0) timer = pool.clock.after(s.connect, onConnectTimeout, { socket, ms: s.connect });
      },
    });
  }

  private drop(ep: EndpointState): void {
    const a = this.agents.get(ep);
    if (a === undefined) return;
    this.agents.delete(ep);
    // Waits for requests in flight, then closes the connections.
    a.close().catch(() => {});
  }

  /** Closes every pooled connection now (shutdown after the drain). */
  destroy(): void {
    this.unsubscribe();
    for (const a of this.agents.values()) a.destroy().catch(() => {});
    this.agents.clear();
  }

  /** Closes idle connections and, once their requests finish, busy ones (listener retired). */
  close(): void {
    this.unsubscribe();
    for (const a of this.agents.values()) a.close().catch(() => {});
    this.agents.clear();
  }
}
