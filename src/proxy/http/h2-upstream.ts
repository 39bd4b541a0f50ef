/**
 * HTTP/2 to one endpoint (a service's `httpVersion: 2`, or an endpoint's label
 * berth.http.version=2): h2 with ALPN over the service's upstream TLS, else h2c
 * with prior knowledge. It takes requests through undici's dispatch interface, so
 * the one Exchange (and the one attempt loop behind it) drives HTTP/1.1 and HTTP/2
 * endpoints alike.
 *
 * - Sessions: each takes streams up to the endpoint's SETTINGS_MAX_CONCURRENT_STREAMS
 *   (at most `maxStreams`; a lowered limit applies to the next stream at once), then
 *   another session is opened, up to `maxSessions`; past that, requests wait for a
 *   stream in arrival order (the response timeout runs from the dispatch).
 * - GOAWAY from the endpoint: no new stream on that session; a stream above its
 *   last-stream-id, like one refused (REFUSED_STREAM), was not processed. While
 *   none of its request body was read it is sent again once on another session,
 *   then reported as such (BERTH_ERR_H2_UNPROCESSED: tried on another endpoint, as
 *   after a refused connect); with body bytes read, as a reset (not sent again).
 * - A session takes streams only once the endpoint's first SETTINGS arrived (its
 *   limit is known before the first stream).
 * - PING only while streams are open (gRPC servers send GOAWAY to a client that pings
 *   an idle connection): an unanswered one destroys the session. An idle session
 *   closes after `keepAlive`.
 */
import http2 from 'node:http2';
import type { IncomingHttpHeaders } from 'node:http';
import net from 'node:net';
import type { Readable } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { Dispatcher } from 'undici';
import type { Clock, Timer } from '../../core/clock.js';
import type { ProxyObserver } from '../../core/observer.js';
import type { UpstreamTls } from '../../core/tls.js';
import { connectResult, type ConnectFn } from '../connect.js';

export interface H2Settings {
  /** Connect (and TLS handshake) timeout, ms (0 = none). */
  readonly connect: number;
  /** An idle session closes after this long, ms. */
  readonly keepAlive: number;
  /** Sessions per endpoint at most. */
  readonly maxSessions: number;
  /** Streams per session at most (also below the endpoint's own limit). */
  readonly maxStreams: number;
  /** A PING this often while streams are open, ms; unanswered within as long, the session is destroyed. */
  readonly pingMs: number;
}

export const H2_DEFAULTS: Omit<H2Settings, 'connect' | 'keepAlive'> = { maxSessions: 16, maxStreams: 100, pingMs: 30_000 };

/** What the h2 dispatcher needs of its endpoint and of berth. */
export interface H2Target {
  readonly service: string;
  readonly id: string;
  readonly host: string;
  readonly port: number;
  readonly tls: UpstreamTls | undefined;
  readonly connectFn: ConnectFn;
  readonly clock: Clock;
  readonly observer: ProxyObserver;
}

/** Fields HTTP/2 forbids (RFC 9113 §8.2.2), and Host (it becomes :authority). */
const DROP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings', 'host']);
const { NGHTTP2_REFUSED_STREAM, NGHTTP2_CANCEL, NGHTTP2_NO_ERROR } = http2.constants;

function codeError(message: string, code: string): Error {
  return Object.assign(new Error(message), { code });
}

class Session {
  readonly streams = new Set<Stream>();
  /** Streams this session may have open now (the endpoint's limit, capped). */
  limit: number;
  ready = false;
  /** GOAWAY received (or sent): no new streams. */
  goingAway = false;
  /** Streams above this id were not processed (GOAWAY); Infinity while none came. */
  lastStreamId = Infinity;
  idleTimer: Timer | null = null;
  pingTimer: Timer | null = null;
  awaitingPing = false;

  constructor(
    readonly h2: http2.ClientHttp2Session,
    readonly socket: net.Socket,
    maxStreams: number,
  ) {
    this.limit = maxStreams;
  }

  get free(): boolean {
    // (closed: a GOAWAY node has seen before its 'goaway' event reached us; a request there would fail.)
    return this.ready && !this.goingAway && !this.h2.closed && !this.h2.destroyed && this.streams.size < this.limit;
  }
}

/** One request on its way: its own undici controller (abort, pause, resume). */
class Stream implements Dispatcher.DispatchController {
  aborted = false;
  paused = false;
  reason: Error | null = null;
  h2: http2.ClientHttp2Stream | null = null;
  session: Session | null = null;
  /** Response head passed on (later failures are cuts). */
  responded = false;
  /** A byte of the request body was read (the request can no longer be replayed). */
  bodyRead = false;
  /** The handler was told a connection is in hand (once, also when the request is sent again). */
  begun = false;
  /** Sent again once after the endpoint did not process it; not on the session that refused it. */
  replayed = false;
  avoid: Session | null = null;
  done = false;
  timer: Timer | null = null;
  trailers: IncomingHttpHeaders = {};

  constructor(
    readonly up: H2Upstream,
    readonly opts: Dispatcher.DispatchOptions,
    readonly handler: Dispatcher.DispatchHandler,
  ) {}

  abort(reason: Error): void {
    if (this.done) return;
    this.aborted = true;
    this.reason = reason;
    this.fail(reason);
  }

  pause(): void {
    this.paused = true;
    this.h2?.pause();
  }

  resume(): void {
    this.paused = false;
    this.h2?.resume();
  }

  /** Ends the request with `err` (once): the stream cancelled, the handler told. */
  fail(err: Error): void {
    if (this.done) return;
    this.done = true;
    this.up.finished(this);
    const h2 = this.h2;
    if (h2 !== null && !h2.destroyed) h2.close(NGHTTP2_CANCEL);
    const body = this.opts.body as Readable | null | undefined;
    if (body !== null && body !== undefined && typeof body === 'object' && 'off' in body) {
      body.off('data', this.onBodyData);
      body.off('end', this.onBodyEnd);
      body.off('error', this.onBodyError);
    }
    this.handler.onResponseError?.(this, err);
  }

  complete(): void {
    if (this.done) return;
    this.done = true;
    this.up.finished(this);
    this.handler.onResponseEnd?.(this, this.trailers);
  }

  readonly onBodyData = (chunk: Buffer): void => {
    this.bodyRead = true;
    const h2 = this.h2;
    if (h2 !== null && !h2.write(chunk)) (this.opts.body as Readable).pause();
  };

  readonly onBodyEnd = (): void => {
    this.h2?.end();
  };

  readonly onBodyError = (err: Error): void => {
    this.fail(err);
  };
}

export class H2Upstream {
  private readonly sessions = new Set<Session>();
  private connecting = 0;
  private readonly queue: Stream[] = [];
  private closing = false;
  private readonly authority: string;

  constructor(
    private readonly t: H2Target,
    private settings: H2Settings,
  ) {
    this.authority = net.isIPv6(t.host) ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`;
  }

  /** Sessions open (connected or connecting), for tests and the explain data. */
  get sessionCount(): number {
    return this.sessions.size + this.connecting;
  }

  dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const s = new Stream(this, opts, handler);
    if (this.closing) {
      s.fail(codeError('endpoint connections closing', 'UND_ERR_CLOSED'));
      return true;
    }
    if (opts.upgrade !== null && opts.upgrade !== undefined) {
      // RFC 8441's extended CONNECT is not spoken to endpoints: an HTTP/2 endpoint cannot take an Upgrade.
      s.fail(codeError('an Upgrade cannot go to an HTTP/2 endpoint', 'BERTH_ERR_H2_UPGRADE'));
      return true;
    }
    const headersTimeout = opts.headersTimeout ?? 0;
    if (headersTimeout > 0) s.timer = this.t.clock.after(headersTimeout, onHeadersTimeout, s);
    this.queue.push(s);
    this.pump();
    return true;
  }

  /** Gives every waiting request a stream where one is free; opens a session where none is and the cap allows. */
  private pump(): void {
    while (this.queue.length > 0) {
      const head = this.queue[0]!;
      let session: Session | null = null;
      for (const x of this.sessions) {
        if (x.free && x !== head.avoid) {
          session = x;
          break;
        }
      }
      if (session === null) {
        // As many sessions coming as there are requests waiting beyond what those will take.
        if (this.connecting === 0 && this.sessions.size < this.settings.maxSessions) this.open();
        return;
      }
      const s = this.queue.shift()!;
      if (!s.done) this.start(session, s);
    }
  }

  private open(): void {
    const t = this.t;
    this.connecting++;
    const t0 = t.clock.now();
    const tls = t.tls !== undefined ? { ...t.tls, ALPNProtocols: ['h2'] } : undefined;
    const socket = t.connectFn(t.host, t.port, tls);
    const ready = tls !== undefined ? 'secureConnect' : 'connect';
    let timer: Timer | null = null;
    const settle = (err: Error | null): void => {
      t.clock.cancel(timer);
      socket.off(ready, onReady);
      socket.off('error', settle);
      this.connecting--;
      const seconds = (t.clock.now() - t0) / 1000;
      if (err === null && tls !== undefined && (socket as TLSSocket).alpnProtocol !== 'h2') {
        err = codeError(`endpoint ${t.id} does not speak HTTP/2 (ALPN: ${(socket as TLSSocket).alpnProtocol || 'none'})`, 'BERTH_ERR_H2_ALPN');
      }
      if (err !== null) {
        t.observer.upstreamConnect(t.service, t.id, connectResult(err as NodeJS.ErrnoException), seconds);
        socket.destroy();
        // The endpoint takes no connection: whoever waits for one tries elsewhere.
        for (const s of this.queue.splice(0)) s.fail(err);
        return;
      }
      t.observer.upstreamConnect(t.service, t.id, 'ok', seconds);
      this.session(socket);
    };
    const onReady = (): void => settle(null);
    socket.once(ready, onReady);
    socket.once('error', settle);
    if (this.settings.connect > 0) timer = t.clock.after(this.settings.connect, onConnectTimeout, { socket, ms: this.settings.connect });
  }

  private session(socket: net.Socket): void {
    const t = this.t;
    const h2 = http2.connect(`${t.tls !== undefined ? 'https' : 'http'}://${this.authority}`, {
      createConnection: () => socket,
      settings: { enablePush: false },
      peerMaxConcurrentStreams: this.settings.maxStreams,
    });
    const s = new Session(h2, socket, this.settings.maxStreams);
    this.sessions.add(s);
    socket.once('close', () => t.observer.upstreamClosed(t.service, t.id, socket.bytesRead, socket.bytesWritten));
    h2.on('error', () => {});
    // Ready with the endpoint's first SETTINGS: its stream limit is known before the first stream.
    h2.on('remoteSettings', (settings: http2.Settings) => {
      const peer = settings.maxConcurrentStreams;
      s.limit = Math.max(0, Math.min(this.settings.maxStreams, peer ?? this.settings.maxStreams));
      s.ready = true;
      this.pump();
    });
    h2.on('goaway', (_code: number, lastStreamID: number) => {
      s.goingAway = true;
      s.lastStreamId = lastStreamID;
      this.pump();
    });
    h2.once('close', () => {
      this.sessions.delete(s);
      t.clock.cancel(s.idleTimer);
      t.clock.cancel(s.pingTimer);
      if (!s.ready) {
        // Gone before its first SETTINGS: not an HTTP/2 endpoint (an HTTP/1.1 server answers the preface with a 400 and closes).
        const err = codeError(`endpoint ${t.id} closed the connection before HTTP/2 settings (does it speak HTTP/2?)`, 'BERTH_ERR_H2_PROTOCOL');
        if (this.sessions.size === 0 && this.connecting === 0) for (const q of this.queue.splice(0)) q.fail(err);
        return;
      }
      // Streams still open end with their own 'close' (an error for each).
      this.pump();
    });
    this.idle(s);
  }

  private start(session: Session, s: Stream): void {
    const o = s.opts;
    const t = this.t;
    s.session = session;
    session.streams.add(s);
    this.t.clock.cancel(session.idleTimer);
    session.idleTimer = null;
    this.ping(session);
    if (!s.begun) {
      s.begun = true;
      // A connection is in hand: from now on a failure may have reached the endpoint.
      s.handler.onRequestStart?.(s, {});
      if (s.done) return;
    }
    const headers: http2.OutgoingHttpHeaders = { ':method': o.method, ':path': o.path, ':scheme': t.tls !== undefined ? 'https' : 'http', ':authority': this.authority };
    const raw = o.headers as string[] | null | undefined;
    if (raw !== null && raw !== undefined) {
      for (let i = 0; i < raw.length; i += 2) {
        const name = raw[i]!.toLowerCase();
        const value = raw[i + 1]!;
        if (name === 'host') headers[':authority'] = value;
        if (DROP.has(name) || (name === 'te' && value.toLowerCase() !== 'trailers')) continue;
        const prev = headers[name];
        headers[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [String(prev), value];
      }
    }
    const body = o.body as Readable | null | undefined;
    const hasBody = body !== null && body !== undefined;
    let h2s: http2.ClientHttp2Stream;
    try {
      h2s = session.h2.request(headers, { endStream: !hasBody });
    } catch (err) {
      // A session closed under us, or a field HTTP/2 cannot carry.
      s.fail(err as Error);
      return;
    }
    s.h2 = h2s;
    if (s.paused) h2s.pause();
    h2s.on('response', (h: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader) => onResponse(s, h));
    // 1xx other than 100 (node answers 100 itself for the request it sent).
    h2s.on('headers', (h: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader) => onResponse(s, h));
    h2s.on('data', (chunk: Buffer) => {
      if (s.done) return;
      this.bodyActivity(s);
      s.handler.onResponseData?.(s, chunk);
    });
    h2s.on('trailers', (tr: IncomingHttpHeaders) => (s.trailers = tr));
    h2s.on('end', () => s.complete());
    h2s.on('error', () => {});
    h2s.on('close', () => this.closed(s, h2s));
    if (hasBody) {
      body.on('data', s.onBodyData);
      body.on('end', s.onBodyEnd);
      body.on('error', s.onBodyError);
      h2s.on('drain', () => body.resume());
      if (body.readableEnded) h2s.end();
    }
  }

  /** The stream closed: whatever did not complete fails, and says whether the endpoint processed it. */
  private closed(s: Stream, h2s: http2.ClientHttp2Stream): void {
    if (s.done) return;
    const session = s.session!;
    const code = h2s.rstCode ?? NGHTTP2_NO_ERROR;
    const unprocessed = !s.responded && (code === NGHTTP2_REFUSED_STREAM || (h2s.id !== undefined && h2s.id > session.lastStreamId) || (h2s.id === undefined && session.goingAway));
    if (unprocessed && !s.bodyRead && !s.replayed) {
      // Once more, on another session (a new one where none is free).
      s.replayed = true;
      s.avoid = session;
      session.streams.delete(s);
      s.session = null;
      s.h2 = null;
      this.queue.unshift(s);
      queueMicrotask(() => this.pump());
      return;
    }
    if (unprocessed && !s.bodyRead) {
      s.fail(codeError(`endpoint ${this.t.id} did not process the request (${code === NGHTTP2_REFUSED_STREAM ? 'REFUSED_STREAM' : 'GOAWAY'})`, 'BERTH_ERR_H2_UNPROCESSED'));
      return;
    }
    if (s.responded && code === NGHTTP2_NO_ERROR && h2s.readableEnded) {
      s.complete();
      return;
    }
    s.fail(codeError(`endpoint ${this.t.id}: stream closed${code !== NGHTTP2_NO_ERROR ? ` (code ${code})` : ''}`, s.responded ? 'UND_ERR_SOCKET' : 'ECONNRESET'));
  }

  /** The response moved: its body timeout starts again. */
  bodyActivity(s: Stream): void {
    const ms = s.opts.bodyTimeout ?? 0;
    if (ms <= 0) return;
    this.t.clock.cancel(s.timer);
    s.timer = this.t.clock.after(ms, onBodyTimeout, s);
  }

  /** A request ended (any way): its stream slot frees, the next waiting request gets it. */
  finished(s: Stream): void {
    this.t.clock.cancel(s.timer);
    s.timer = null;
    const session = s.session;
    if (session === null) {
      const i = this.queue.indexOf(s);
      if (i >= 0) this.queue.splice(i, 1);
      return;
    }
    session.streams.delete(s);
    if (session.streams.size === 0) {
      this.t.clock.cancel(session.pingTimer);
      session.pingTimer = null;
      if (session.goingAway || this.closing) session.h2.close();
      else this.idle(session);
    }
    // Not from inside the stream's own callbacks: the next start may call into the exchange.
    queueMicrotask(() => this.pump());
  }

  private idle(session: Session): void {
    this.t.clock.cancel(session.idleTimer);
    session.idleTimer = this.t.clock.after(this.settings.keepAlive, closeIdle, session);
  }

  private ping(session: Session): void {
    if (session.pingTimer !== null || this.settings.pingMs <= 0) return;
    session.pingTimer = this.t.clock.after(this.settings.pingMs, () => this.pinged(session), undefined);
  }

  private pinged(session: Session): void {
    session.pingTimer = null;
    if (session.streams.size === 0 || session.h2.destroyed) return;
    if (session.awaitingPing) {
      // The last one went unanswered for a whole interval: the endpoint or the path is gone.
      session.h2.destroy(codeError('endpoint did not answer a PING', 'ECONNRESET'));
      return;
    }
    session.awaitingPing = true;
    session.h2.ping((err) => {
      if (err === null) session.awaitingPing = false;
    });
    this.ping(session);
  }

  /** New settings (reload): sessions made with the old ones finish their streams and close. */
  configure(settings: H2Settings): void {
    this.settings = settings;
    for (const s of this.sessions) {
      s.goingAway = true;
      if (s.streams.size === 0) s.h2.close();
    }
  }

  /** Waits for the streams in flight, then closes the sessions. */
  close(): Promise<void> {
    this.closing = true;
    for (const s of this.sessions) if (s.streams.size === 0) s.h2.close();
    return Promise.resolve();
  }

  destroy(): Promise<void> {
    this.closing = true;
    for (const s of this.queue.splice(0)) s.fail(codeError('endpoint connections closed', 'UND_ERR_CLOSED'));
    for (const s of this.sessions) s.h2.destroy();
    return Promise.resolve();
  }
}

function onResponse(s: Stream, h: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader): void {
  if (s.done) return;
  const status = Number(h[':status']);
  const headers: IncomingHttpHeaders = {};
  for (const name in h) if (name.charCodeAt(0) !== 58 /* : */) headers[name] = h[name] as string | string[];
  if (status >= 200) {
    s.responded = true;
    s.up.bodyActivity(s);
  }
  s.handler.onResponseStart?.(s, status, headers, undefined);
}

function onHeadersTimeout(s: Stream): void {
  s.timer = null;
  if (!s.responded) s.fail(codeError('Headers Timeout Error', 'UND_ERR_HEADERS_TIMEOUT'));
}

function onBodyTimeout(s: Stream): void {
  s.timer = null;
  s.fail(codeError('Body Timeout Error', 'UND_ERR_BODY_TIMEOUT'));
}

function onConnectTimeout(x: { readonly socket: net.Socket; readonly ms: number }): void {
  x.socket.destroy(codeError(`connect timeout after ${x.ms}ms`, 'UND_ERR_CONNECT_TIMEOUT'));
}

function closeIdle(session: Session): void {
  session.idleTimer = null;
  if (session.streams.size === 0) session.h2.close();
}
