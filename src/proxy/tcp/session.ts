/**
 * One tcp client connection and its upstream: connect through the one upstream
 * attempt loop, pipe both ways with backpressure and half-close, hold the first
 * bytes for a replay where the service allows it.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { PeerIdentity } from '../../core/tls.js';
import type { Timer } from '../../core/clock.js';
import type { EndpointState } from '../../pool/endpoint.js';
import { abortSocket, connectResult, isLocalError } from '../connect.js';
import { proxyHeader, socketAddresses, type ClientAddresses } from '../proxy-protocol.js';
import { SSL_REQUEST_BYTES } from '../preread/chain.js';
import { readRelayed, relayedReads, takeRead } from '../read-buffer.js';
import { tcpRetry } from '../retry-policy.js';
import { UpstreamAttempt, type AttemptUser, type GiveUp } from '../upstream-attempt.js';
import type { TcpListener, TcpListenerSettings } from './listener.js';

/**
 * Bytes a client may send before the endpoint's first byte that berth keeps, so a
 * connection reset before any answer can be replayed on another endpoint. Past
 * this, a failure after connect is not retried (the copy would cost too much).
 */
export const REPLAY_LIMIT = 64 * 1024;

const enum Phase {
  Connecting,
  Connected,
  Closed,
}

/** Where a session goes and what was read before: decided by the listener (its service, or the preread and SNI route). */
/** How a tcp session ended, for its log line. */
export type TcpEnd = 'client close' | 'endpoint close' | 'client reset' | 'endpoint reset' | 'idle' | 'drained' | 'no endpoint';

export interface SessionRoute {
  readonly service: string;
  readonly held: Buffer | null;
  readonly peer: ClientAddresses | null;
  /** PostgreSQL: the client's SSLRequest was answered; each endpoint gets one first. */
  readonly sslRequest?: boolean;
}

/**
 * Sessions find themselves through a symbol on their sockets, so the event
 * handlers below are shared functions: no per-connection closures (they would
 * cost ~1 KiB per proxied connection).
 */
const kSession = Symbol('berth.tcp.session');
type Tagged = net.Socket & { [kSession]?: TcpSession | undefined };

function sessionOf(s: net.Socket): TcpSession | undefined {
  return (s as Tagged)[kSession];
}

function onClientData(this: net.Socket, chunk: Buffer): void {
  sessionOf(this)?.clientData(chunk);
}
function onClientEnd(this: net.Socket): void {
  sessionOf(this)?.clientEnd();
}
function onClientDrain(this: net.Socket): void {
  sessionOf(this)?.clientDrain();
}
function onClientError(this: net.Socket): void {
  sessionOf(this)?.clientError();
}
function onClientClose(this: net.Socket): void {
  sessionOf(this)?.clientClose();
}
function onClientIdle(this: net.Socket): void {
  sessionOf(this)?.destroy('idle');
}
function onUpstreamConnect(this: net.Socket): void {
  sessionOf(this)?.upstreamConnect();
}
function onUpstreamData(this: net.Socket, chunk: Buffer): void {
  sessionOf(this)?.upstreamData(chunk);
}
/** A read on the upstream leg, into a reused buffer (read-buffer.ts). */
function onUpstreamRead(this: net.Socket, n: number, buf: Uint8Array): boolean {
  const chunk = takeRead(buf, n);
  const s = sessionOf(this);
  if (s === undefined) return false;
  s.upstreamRead(chunk);
  return true;
}
const upstreamReads = relayedReads(onUpstreamRead);
function onUpstreamEnd(this: net.Socket): void {
  sessionOf(this)?.upstreamEnd();
}
function onUpstreamDrain(this: net.Socket): void {
  sessionOf(this)?.upstreamDrain();
}
function onUpstreamError(this: net.Socket, err: NodeJS.ErrnoException): void {
  sessionOf(this)?.upstreamError(err);
}
function onUpstreamClose(this: net.Socket): void {
  sessionOf(this)?.upstreamClose();
}
function onConnectTimeout(session: TcpSession): void {
  session.connectTimeout();
}
function onLingerTimeout(this: net.Socket): void {
  this.destroy();
}
function noop(): void {}

/**
 * One client connection and its upstream. The endpoint is found through the one
 * upstream attempt loop (upstream-attempt.ts); this class connects, pipes and
 * closes.
 *
 * Closing follows TCP: each side's FIN is passed on (half-close), and a socket
 * closes itself once it has both sent and received FIN, after flushing what it
 * holds. Only an error (passed on as a reset), an idle timeout or shutdown aborts
 * the other side. The session ends when both sockets are closed.
 */
export class TcpSession implements AttemptUser {
  private readonly listener: TcpListener;
  private readonly client: net.Socket;
  private readonly settings: TcpListenerSettings;
  private readonly attempt: UpstreamAttempt;
  private upstream: net.Socket | null = null;
  private phase = Phase.Connecting;
  private connectTimer: Timer | null = null;
  /**
   * Client bytes sent upstream before the endpoint's first byte, kept for a replay
   * on another endpoint; undefined until the first chunk, null once past that point.
   */
  private replay: Buffer[] | null | undefined = undefined;
  private replayBytes = 0;
  /** The verified client identity (mTLS), for PROXY v2. */
  private readonly identity: PeerIdentity | null;
  /** The service this connection goes to (the listener's, or its SNI route's). */
  private readonly service: string;
  /** Bytes read before the pick (the ClientHello), written first to every endpoint tried. */
  private readonly held: Buffer | null;
  /** The client as a front balancer's PROXY header gave it (null: the socket's own addresses). */
  private readonly peer: ClientAddresses | null;
  /** PostgreSQL: berth answered the client's SSLRequest, so each endpoint is sent one first. */
  private readonly sslRequest: boolean;
  /** Waiting for the endpoint's 'S'. */
  private awaitingS = false;
  private clientEnded = false;
  /** How the session ended, first cause first (the access log's word). */
  private how: TcpEnd | undefined = undefined;
  private readonly t0: number;
  private endpointId = '-';
  /** Bytes from (rx) and to (tx) the endpoints of this session, summed over attempts. */
  private upRx = 0;
  private upTx = 0;
  private clientClosed = false;
  private upstreamAnswered = false;

  constructor(listener: TcpListener, client: net.Socket, identity: PeerIdentity | null, route: SessionRoute) {
    this.listener = listener;
    this.client = client;
    this.settings = listener.settings;
    this.service = route.service;
    this.held = route.held;
    this.peer = route.peer;
    this.sslRequest = route.sslRequest === true;
    this.t0 = listener.deps.pool.clock.now();
    this.identity = identity;
    const { pool } = listener.deps;
    const service = this.service;
    // remoteAddress costs a getpeername() syscall: only source-hash needs it.
    const key = pool.service(service)?.balance === 'source-hash' ? (route.peer?.source ?? client.remoteAddress) : undefined;
    this.attempt = new UpstreamAttempt(pool, service, this.settings, key, this);
  }

  start(): void {
    const c = this.client;
    (c as Tagged)[kSession] = this;
    c.on('error', onClientError);
    c.on('close', onClientClose);
    c.on('end', onClientEnd);
    c.on('drain', onClientDrain);
    // Stays paused (pauseOnConnect) until an endpoint is connected.
    c.on('data', onClientData);
    // One idle timer on the client socket covers both directions: node refreshes
    // it on reads (client → endpoint) and writes (endpoint → client).
    if (this.settings.timeouts.idle > 0) {
      c.on('timeout', onClientIdle);
      c.setTimeout(this.settings.timeouts.idle);
    }
    this.attempt.start();
  }

  /** The attempt picked `ep`: connect to it. */
  connectTo(ep: EndpointState): void {
    this.endpointId = ep.id;
    const { deps } = this.listener;
    const upTls = deps.upstreamTls(ep.service);
    // A plain TCP endpoint is read into reused buffers (the connect ignores them for TLS).
    const up = deps.connect(ep.host, ep.port, upTls, upstreamReads);
    (up as Tagged)[kSession] = this;
    this.upstream = up;
    // With TLS to the endpoint, "connected" means the handshake is done.
    up.on(upTls ? 'secureConnect' : 'connect', onUpstreamConnect);
    // 'data' where the socket reads without `onread` (TLS; a connect that tests inject).
    up.on('data', onUpstreamData);
    up.on('end', onUpstreamEnd);
    up.on('drain', onUpstreamDrain);
    up.on('error', onUpstreamError);
    up.on('close', onUpstreamClose);
    if (this.settings.timeouts.connect > 0) this.connectTimer = deps.pool.clock.after(this.settings.timeouts.connect, onConnectTimeout, this);
  }

  private clearConnectTimer(): void {
    this.listener.deps.pool.clock.cancel(this.connectTimer);
    this.connectTimer = null;
  }

  connectTimeout(): void {
    this.connectTimer = null;
    const err: NodeJS.ErrnoException = new Error(`connect timeout after ${this.settings.timeouts.connect}ms`);
    err.code = 'BERTH_ERR_UPSTREAM_TIMEOUT';
    this.upstream?.destroy(err);
  }

  upstreamConnect(): void {
    // PostgreSQL: the connect timeout also bounds the wait for the endpoint's 'S'.
    if (!this.sslRequest) this.clearConnectTimer();
    const { pool, observer } = this.listener.deps;
    const ep = this.attempt.endpoint!;
    const ms = this.attempt.elapsed();
    this.attempt.report('connected');
    this.attempt.connected();
    this.listener.alarm.clear('upstream_connect');
    // Once the endpoint has accepted, what the client sends may do work there: held
    // for a replay elsewhere only where the service says that is harmless.
    if (this.replay !== null && pool.service(this.service)?.replay !== true) this.replay = null;
    observer.upstreamConnect(ep.service, ep.id, 'ok', ms / 1000);
    const up = this.upstream!;
    if (this.clientClosed) {
      up.destroy();
      return;
    }
    const pp = this.settings.proxyProtocol;
    if (pp === 'v1' || pp === 'v2') up.write(proxyHeader(pp, this.peer ?? socketAddresses(this.client), this.client instanceof tls.TLSSocket ? { socket: this.client, identity: this.identity } : null));
    if (this.sslRequest) {
      // The client's SSLRequest was answered by berth: the endpoint is asked the same,
      // and must say exactly 'S' before the client's hello goes to it. Still
      // "connecting" until then: nothing of the client's has reached it.
      this.awaitingS = true;
      up.write(SSL_REQUEST_BYTES);
      return;
    }
    this.begin(up);
  }

  /** The endpoint is ready for the client's bytes: what was read before, any replay, then the pipe. */
  private begin(up: net.Socket): void {
    this.phase = Phase.Connected;
    // What was read before the pick (a ClientHello): first, on every endpoint tried.
    if (this.held !== null) up.write(this.held);
    // After a retry: replay what the client already sent, then its half-close.
    if (this.replay) for (const chunk of this.replay) up.write(chunk);
    if (this.clientEnded) up.end();
    this.client.resume();
  }

  clientData(chunk: Buffer): void {
    const up = this.upstream;
    if (up === null || this.phase !== Phase.Connected) return;
    if (this.replay !== null) {
      this.replayBytes += chunk.length;
      if (this.replayBytes > REPLAY_LIMIT) this.replay = null;
      else (this.replay ??= []).push(chunk);
    }
    if (!up.write(chunk)) this.client.pause();
  }

  upstreamData(chunk: Buffer): void {
    if (this.awaitingS) {
      this.postgresAnswer(chunk);
      return;
    }
    if (!this.upstreamAnswered) {
      this.upstreamAnswered = true;
      this.replay = null;
    }
    if (!this.client.write(chunk)) this.upstream!.pause();
  }

  /**
   * The endpoint's answer to berth's SSLRequest: exactly 'S', and the client's hello
   * follows. Anything else (an 'N': no TLS there) is that endpoint's failure before
   * any of the client's bytes reached it: counted, and the next endpoint is tried.
   */
  private postgresAnswer(chunk: Buffer): void {
    const up = this.upstream!;
    if (chunk.length === 1 && chunk[0] === 0x53 /* S */) {
      this.awaitingS = false;
      this.clearConnectTimer();
      this.begin(up);
      return;
    }
    const ep = this.attempt.endpoint!;
    const answer = chunk[0] === 0x4e /* N */ && chunk.length === 1 ? 'N (no TLS there)' : `${chunk.length} bytes, not 'S'`;
    this.listener.postgresRefused(ep.id, answer);
    up.destroy(Object.assign(new Error(`PostgreSQL endpoint answered ${answer} to the SSLRequest`), { code: 'BERTH_ERR_POSTGRES_NO_TLS' }));
  }

  /** What `onread` read from the endpoint; then the socket's next read buffer is chosen. */
  upstreamRead(chunk: Buffer): void {
    this.upstreamData(chunk);
    readRelayed(chunk, this.client);
  }

  upstreamDrain(): void {
    if (this.phase === Phase.Connected) this.client.resume();
  }

  clientDrain(): void {
    this.upstream?.resume();
  }

  clientEnd(): void {
    this.how ??= 'client close';
    this.clientEnded = true;
    if (this.phase === Phase.Connected) this.upstream!.end();
  }

  upstreamEnd(): void {
    if (this.awaitingS) {
      // Closed instead of answering the SSLRequest: a failed connect, tried elsewhere.
      this.upstream!.destroy(Object.assign(new Error('PostgreSQL endpoint closed before answering the SSLRequest'), { code: 'BERTH_ERR_POSTGRES_NO_TLS' }));
      return;
    }
    this.how ??= 'endpoint close';
    // A clean close with no answer is an answer (an empty one): pass it on, no retry.
    this.upstreamAnswered = true;
    this.replay = null;
    if (!this.client.destroyed) this.client.end();
  }

  upstreamError(err: NodeJS.ErrnoException): void {
    const { observer, log } = this.listener.deps;
    const ep = this.attempt.endpoint!;
    const up = this.upstream!;
    this.clearConnectTimer();
    const connecting = this.phase === Phase.Connecting;
    if (connecting && isLocalError(err)) {
      // Out of descriptors here: the endpoint is not to blame, and another would fail alike.
      this.listener.alarm.report('upstream_connect', err.code ?? 'error');
      this.drop(up);
      this.attempt.end();
      this.giveUp('unavailable', `local error ${err.code}`);
      return;
    }
    if (connecting) {
      // (Waiting for a PostgreSQL 'S', the connect itself was counted ok already.)
      if (!this.awaitingS) observer.upstreamConnect(ep.service, ep.id, connectResult(err), this.attempt.elapsed() / 1000);
      this.attempt.report('failed');
    }
    const kind = tcpRetry(connecting, !this.upstreamAnswered && this.replay !== null);
    if (!this.clientClosed && this.attempt.mayRetry(kind)) {
      if (log.isLevelEnabled('debug')) log.debug({ endpoint: ep.id, err: err.code ?? err.message }, 'retrying on another endpoint');
      observer.retry(ep.service, connecting ? connectResult(err) : 'reset');
      this.drop(up);
      this.phase = Phase.Connecting;
      this.client.pause();
      this.attempt.retry(kind);
      return;
    }
    if (log.isLevelEnabled('debug')) log.debug({ endpoint: ep.id, err: err.code ?? err.message }, 'upstream error');
    // Pass the failure on as a reset, so the client cannot take a cut stream for a whole one.
    this.how ??= 'endpoint reset';
    this.phase = Phase.Closed;
    if (!this.client.destroyed) abortSocket(this.client);
  }

  /**
   * Lets go of a failed upstream socket: its events no longer reach this session,
   * its bytes are counted; the endpoint's slot stays with the attempt (which gives
   * it back when it retries or ends).
   */
  private drop(up: net.Socket): void {
    this.awaitingS = false;
    (up as Tagged)[kSession] = undefined;
    up.removeAllListeners();
    up.on('error', noop);
    up.destroy();
    this.count(up);
    this.upstream = null;
  }

  upstreamClose(): void {
    const up = this.upstream!;
    this.clearConnectTimer();
    this.closed(up);
    this.upstream = null;
    // Closed without finishing both directions (destroyed): nowhere for the client's bytes to go.
    if (!this.clientClosed && !(up.readableEnded && up.writableFinished) && !this.client.destroyed) {
      this.phase = Phase.Closed;
      this.client.destroy();
    }
    this.maybeEnded();
  }

  clientError(): void {
    this.how ??= 'client reset';
    // The client's doing: whatever the upstream socket does after this blames no endpoint.
    this.attempt.clientEnded();
    this.phase = Phase.Closed;
    const up = this.upstream;
    if (up !== null && !up.destroyed) abortSocket(up);
  }

  clientClose(): void {
    this.clientClosed = true;
    if (this.phase !== Phase.Connected || !this.client.readableEnded) this.attempt.clientEnded();
    // Connected or not, this client waits for nothing any more (its slot stays until the upstream closes).
    this.attempt.connected();
    if (this.upstream === null) {
      this.clearConnectTimer();
      this.attempt.end();
    }
    const up = this.upstream;
    if (up !== null && !up.destroyed) {
      if (this.client.readableEnded && this.client.writableFinished && this.phase === Phase.Connected) {
        // Both directions finished cleanly; the upstream flushes and closes itself.
        // Bound that, in case the endpoint stops reading.
        if (this.settings.timeouts.idle > 0) {
          up.on('timeout', onLingerTimeout);
          up.setTimeout(this.settings.timeouts.idle);
        }
      } else {
        this.phase = Phase.Closed;
        up.destroy();
      }
    }
    this.maybeEnded();
  }

  /** No endpoint will take this client: counted, logged at debug, closed at once. */
  giveUp(_why: GiveUp, detail: string): void {
    const { log, observer } = this.listener.deps;
    this.how ??= 'no endpoint';
    observer.noEndpoint(this.settings.name, this.service);
    if (log.isLevelEnabled('debug')) log.debug({ service: this.service, reason: detail, attempts: this.attempt.attempts }, 'no usable endpoint');
    this.phase = Phase.Closed;
    if (!this.client.destroyed) abortSocket(this.client);
  }

  /** The upstream socket closed: counted, and its endpoint's slot given back. */
  private closed(up: net.Socket): void {
    this.count(up);
    this.attempt.release();
  }

  /** An upstream socket's bytes, counted for its endpoint. */
  private count(up: net.Socket): void {
    const ep = this.attempt.endpoint;
    this.upRx += up.bytesRead;
    this.upTx += up.bytesWritten;
    if (ep !== null) this.listener.deps.observer.upstreamClosed(ep.service, ep.id, up.bytesRead, up.bytesWritten);
  }

  private maybeEnded(): void {
    if (this.clientClosed && this.upstream === null) {
      this.phase = Phase.Closed;
      this.attempt.end();
      this.listener.ended(this);
      if (this.settings.http?.accessLog) this.accessLog();
    }
  }

  /** The session's log line (HAProxy's tcplog), behind the same switch as the http access log. */
  private accessLog(): void {
    const { log, pool } = this.listener.deps;
    const c = this.client;
    log.info(
      {
        client: this.peer?.source ?? c.remoteAddress,
        listener: this.settings.name,
        service: this.service,
        endpoint: this.endpointId,
        attempts: this.attempt.attempts,
        rx: this.upRx,
        tx: this.upTx,
        ms: pool.clock.now() - this.t0,
        end: this.how ?? (this.attempt.endedBy === 'client' ? 'client reset' : 'closed'),
      },
      'tcp session',
    );
  }

  /** Closes both sides now (idle timeout; shutdown after the drain timeout). */
  destroy(how: TcpEnd = 'drained'): void {
    this.how ??= how;
    this.phase = Phase.Closed;
    this.clearConnectTimer();
    if (this.upstream === null) this.attempt.end();
    this.upstream?.destroy();
    this.client.destroy();
  }
}
