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
 *   stream in arrival order (the response timeout runs from the dispatch). A session
 *   is still connecting until the endpoint's first SETTINGS (within the connect
 *   timeout), so its limit is known before its first stream.
 * - GOAWAY from the endpoint: no new stream on that session; a stream above its
 *   last-stream-id, like one refused (REFUSED_STREAM), was not processed. While
 *   none of its request body was read it is sent again once on another session,
 *   then reported as such (BERTH_ERR_H2_UNPROCESSED: tried on another endpoint, as
 *   after a refused connect, and no fault of this one); with body bytes read, as a
 *   reset (not sent again: the bytes are not kept).
 * - A request HTTP/2 cannot carry (an Upgrade, a field node refuses) is refused
 *   before anything is sent, and blames no endpoint (BERTH_ERR_H2_REQUEST).
 * - PING only while streams are open (gRPC servers send GOAWAY to a client that pings
 *   an idle connection): an unanswered one destroys the session. An idle session
 *   closes after `keepAlive`.
 * - A response ends whole only with END_STREAM after its head; any reset, and the
 *   connection closing (the socket is not half-open: an endpoint that goes away is
 *   seen at once), is a cut.
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
  /** Connect timeout, ms (0 = none): the TCP (and TLS) connect and the endpoint's first SETTINGS. */
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
const DROP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings', 'host', 'te']);
const { NGHTTP2_REFUSED_STREAM, NGHTTP2_CANCEL, NGHTTP2_NO_ERROR } = http2.constants;

/** The request asks for an Upgrade (a WebSocket: RFC 8441's extended CONNECT over HTTP/2). */
function upgrades(o: Dispatcher.DispatchOptions): boolean {
  return o.upgrade !== null && o.upgrade !== undefined && o.upgrade !== false;
}

function codeError(message: string, code: string): Error {
  return Object.assign(new Error(message), { code });
}

class Session {
  readonly streams = new Set<Stream>();
  /** Streams this session may have open now (the endpoint's limit, capped). */
  limit: number;
  /** The endpoint's first SETTINGS came. */
  ready = false;
  /** GOAWAY received, or closed by berth: no new streams. */
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

  /** No new stream from now on; closed once its streams are done. */
  retire(): void {
    this.goingAway = true;
    if (this.streams.size === 0 && !this.h2.closed) this.h2.close();
  }
}

/** A response without trailers (one object for all of them). */
const NO_TRAILERS: IncomingHttpHeaders = Object.freeze({});

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
  /** A WebSocket the endpoint agreed to (its extended CONNECT answered 2xx): the stream is the tunnel's now, and holds its slot until it closes. */
  upgraded = false;
  /** Sent again once after the endpoint did not process it; preferably not on the session that refused it. */
  replayed = false;
  avoid: Session | null = null;
  done = false;
  /**
   * The request's one timer: the headers timeout until the response head, then the
   * body timeout from the last byte. Activity only moves `deadline`; the timer, due
   * at `due`, looks at it when it fires (no timer per chunk).
   */
  timer: Timer | null = null;
  deadline = 0;
  due = 0;
  trailers: IncomingHttpHeaders = NO_TRAILERS;
  /** The request body (null: none); its listeners are attached once, on the first stream. */
  readonly body: Readable | null;
  private bodyAttached = false;

  constructor(
    readonly up: H2Upstream,
    readonly opts: Dispatcher.DispatchOptions,
    readonly handler: Dispatcher.DispatchHandler,
    /** The request's fields as HTTP/2 sends them, pseudo-header fields included. */
    readonly headers: http2.OutgoingHttpHeaders,
  ) {
    const b = opts.body as Readable | null | undefined;
    this.body = b !== null && b !== undefined && typeof b === 'object' && 'on' in b ? b : null;
  }

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

  /** Ends the request with `err` (once): the stream cancelled, the body let go, the handler told. */
  fail(err: Error): void {
    if (this.done) return;
    this.done = true;
    this.up.finished(this);
    const h2 = this.h2;
    if (h2 !== null && !h2.destroyed) h2.close(NGHTTP2_CANCEL);
    this.detachBody();
    this.handler.onResponseError?.(this, err);
  }

  complete(): void {
    if (this.done) return;
    this.done = true;
    this.up.finished(this);
    this.detachBody();
    this.handler.onResponseEnd?.(this, this.trailers);
  }

  /** The body flows into `h2` (a new stream after a replay takes it where it stands). */
  attachBody(h2: http2.ClientHttp2Stream): void {
    const body = this.body;
    if (body === null) return;
    h2.on('drain', () => body.resume());
    if (!this.bodyAttached) {
      this.bodyAttached = true;
      body.on('data', this.onBodyData);
      body.on('end', this.onBodyEnd);
      body.on('error', this.onBodyError);
    }
    if (body.readableEnded) h2.end();
    else body.resume();
  }

  /** No stream to write to (waiting for a replay, or ended): the body waits, reading nothing more. */
  holdBody(): void {
    this.body?.pause();
  }

  private detachBody(): void {
    const body = this.body;
    if (body === null || !this.bodyAttached) return;
    this.bodyAttached = false;
    body.off('data', this.onBodyData);
    body.off('end', this.onBodyEnd);
    body.off('error', this.onBodyError);
    body.pause();
  }

  readonly onBodyData = (chunk: Buffer): void => {
    this.bodyRead = true;
    const h2 = this.h2;
    if (h2 === null) {
      // (Paused when its stream went; a chunk already on its way is the last one read.)
      this.body!.pause();
      return;
    }
    if (!h2.write(chunk)) this.body!.pause();
  };

  readonly onBodyEnd = (): void => {
    this.h2?.end();
  };

  readonly onBodyError = (err: Error): void => {
    this.fail(err);
  };
}

/** The request's fields for HTTP/2, or why HTTP/2 cannot carry it. */
function h2Headers(o: Dispatcher.DispatchOptions, authority: string, scheme: string): http2.OutgoingHttpHeaders | Error {
  const upgrade = typeof o.upgrade === 'string' ? o.upgrade : o.upgrade === true ? '' : null;
  let headers: http2.OutgoingHttpHeaders;
  if (upgrade !== null) {
    // A WebSocket goes to an HTTP/2 endpoint as RFC 8441's extended CONNECT (no key: HTTP/2 has none); nothing else upgrades over HTTP/2.
    if (upgrade.toLowerCase() !== 'websocket') return codeError(`an Upgrade to ${upgrade} cannot go to an HTTP/2 endpoint`, 'BERTH_ERR_H2_REQUEST');
    headers = { ':method': 'CONNECT', ':protocol': 'websocket', ':path': o.path, ':scheme': scheme, ':authority': authority };
  } else {
    // te: trailers always: gRPC servers require it, others ignore it, and berth relays trailers.
    headers = { ':method': o.method, ':path': o.path, ':scheme': scheme, ':authority': authority, te: 'trailers' };
  }
  const raw = o.headers as string[] | null | undefined;
  if (raw !== null && raw !== undefined) {
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!.toLowerCase();
      const value = raw[i + 1]!;
      if (name === 'host') headers[':authority'] = value;
      if (DROP.has(name) || (upgrade !== null && (name === 'sec-websocket-key' || name === 'sec-websocket-accept'))) continue;
      const prev = headers[name];
      // A repeated field is one list (RFC 9110 §5.3; cookies joined with "; ", RFC 9113 §8.2.3): node refuses
      // a second value of the fields it holds to one.
      headers[name] = prev === undefined ? value : `${String(prev)}${name === 'cookie' ? '; ' : ', '}${value}`;
    }
  }
  return headers;
}

export class H2Upstream {
  private readonly sessions = new Set<Session>();
  /** Sessions on their way: connecting, or connected and waiting for the first SETTINGS. */
  private connecting = 0;
  private readonly queue: Stream[] = [];
  private closing = false;
  private readonly authority: string;
  private readonly scheme: string;

  constructor(
    private readonly t: H2Target,
    private readonly settings: H2Settings,
  ) {
    this.authority = net.isIPv6(t.host) ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`;
    this.scheme = t.tls !== undefined ? 'https' : 'http';
  }

  dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const headers = h2Headers(opts, this.authority, this.scheme);
    const s = new Stream(this, opts, handler, headers instanceof Error ? {} : headers);
    if (headers instanceof Error) {
      s.fail(headers);
      return true;
    }
    if (this.closing) {
      s.fail(codeError('endpoint connections closing', 'UND_ERR_CLOSED'));
      return true;
    }
    const headersTimeout = opts.headersTimeout ?? 0;
    if (headersTimeout > 0) this.deadline(s, headersTimeout);
    this.queue.push(s);
    this.pump();
    return true;
  }

  /** Gives every waiting request a stream where one is free (in arrival order); opens a session where none is and the cap allows. */
  private pump(): void {
    let wanting = 0;
    for (let i = 0; i < this.queue.length; ) {
      const s = this.queue[i]!;
      if (s.done) {
        this.queue.splice(i, 1);
        continue;
      }
      const session = this.pick(s.avoid);
      if (session === null) {
        wanting++;
        i++;
        continue;
      }
      this.queue.splice(i, 1);
      this.start(session, s);
    }
    // As many sessions on their way as needed for what waits (each takes many streams: one at a time).
    if (wanting > 0 && this.connecting === 0 && this.sessions.size < this.settings.maxSessions && !this.closing) this.open();
  }

  /** A free session, not `avoid` while another can be had (a free one, or a new one under the cap). */
  private pick(avoid: Session | null): Session | null {
    let fallback: Session | null = null;
    for (const x of this.sessions) {
      if (!x.free) continue;
      if (x !== avoid) return x;
      fallback = x;
    }
    const more = this.connecting > 0 || this.sessions.size < this.settings.maxSessions;
    return more ? null : fallback;
  }

  private open(): void {
    const t = this.t;
    this.connecting++;
    const t0 = t.clock.now();
    const tls = t.tls !== undefined ? { ...t.tls, ALPNProtocols: ['h2'] } : undefined;
    const socket = t.connectFn(t.host, t.port, tls);
    // An endpoint that closes its side ends the session at once (node's http2 watches only 'close').
    socket.allowHalfOpen = false;
    socket.setKeepAlive(true, 60_000);
    const ready = tls !== undefined ? 'secureConnect' : 'connect';
    let timer: Timer | null = null;
    let done = false;
    /** The session over this socket, once it is made (before its first SETTINGS). */
    let current: Session | null = null;
    /** The connect, then the first SETTINGS, within the connect timeout; a failure is a refused connect for whoever waits. */
    const settle = (err: Error | null, session: Session | null): void => {
      if (done) return;
      done = true;
      t.clock.cancel(timer);
      socket.off(ready, onReady);
      socket.off('error', onError);
      this.connecting--;
      const seconds = (t.clock.now() - t0) / 1000;
      if (err !== null) {
        t.observer.upstreamConnect(t.service, t.id, connectResult(err as NodeJS.ErrnoException), seconds);
        const failed = session ?? current;
        if (failed !== null) {
          this.sessions.delete(failed);
          failed.h2.destroy();
        }
        socket.destroy();
        this.failWaiting(err);
        return;
      }
      t.observer.upstreamConnect(t.service, t.id, 'ok', seconds);
      if (this.closing) session!.retire();
      this.pump();
    };
    const onError = (err: Error): void => settle(err, null);
    const onReady = (): void => {
      socket.off('error', onError);
      if (tls !== undefined && (socket as TLSSocket).alpnProtocol !== 'h2') {
        settle(codeError(`endpoint ${t.id} does not speak HTTP/2 (ALPN: ${(socket as TLSSocket).alpnProtocol || 'none'})`, 'BERTH_ERR_H2_ALPN'), null);
        return;
      }
      current = this.session(socket, settle);
    };
    socket.once(ready, onReady);
    socket.once('error', onError);
    if (this.settings.connect > 0) {
      const ms = this.settings.connect;
      timer = t.clock.after(ms, () => settle(codeError(`connect timeout after ${ms}ms${current !== null ? ' (no HTTP/2 settings from the endpoint)' : ''}`, 'UND_ERR_CONNECT_TIMEOUT'), current), undefined);
    }
  }

  /**
   * The endpoint will take no stream (a connect or the first SETTINGS failed): with
   * no other session to wait for, whoever waits tries elsewhere. One already begun
   * (a replay) reports the request unprocessed: it was not, and is no fault of theirs.
   */
  private failWaiting(err: Error): void {
    if (this.sessions.size > 0 || this.connecting > 0) return;
    for (const s of this.queue.splice(0)) s.fail(s.begun ? unprocessed(this.t.id, 'connect') : err);
  }

  private session(socket: net.Socket, settle: (err: Error | null, session: Session | null) => void): Session {
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
    h2.on('remoteSettings', (settings: http2.Settings) => {
      const peer = settings.maxConcurrentStreams;
      s.limit = Math.max(0, Math.min(this.settings.maxStreams, peer ?? this.settings.maxStreams));
      if (!s.ready) {
        s.ready = true;
        settle(null, s);
      } else this.pump();
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
        settle(codeError(`endpoint ${t.id} closed the connection before HTTP/2 settings (does it speak HTTP/2?)`, 'BERTH_ERR_H2_PROTOCOL'), null);
        return;
      }
      // Streams still open end with their own 'close' (an error for each).
      this.pump();
    });
    this.idle(s);
    return s;
  }

  private start(session: Session, s: Stream): void {
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
    const tunnel = upgrades(s.opts);
    if (tunnel && session.h2.remoteSettings.enableConnectProtocol !== true) {
      s.fail(codeError(`endpoint ${this.t.id} does not take WebSockets over HTTP/2 (no SETTINGS_ENABLE_CONNECT_PROTOCOL)`, 'BERTH_ERR_H2_REQUEST'));
      return;
    }
    let h2s: http2.ClientHttp2Stream;
    try {
      // (node copies the fields: the same object serves a replay.)
      h2s = session.h2.request(s.headers, { endStream: s.body === null && !tunnel });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? '';
      // A field node will not send: the request's, before any byte went out; no endpoint's fault.
      if (code.startsWith('ERR_HTTP2_INVALID_') || code.startsWith('ERR_HTTP2_HEADER')) {
        s.fail(codeError(`HTTP/2 cannot carry the request: ${(err as Error).message}`, 'BERTH_ERR_H2_REQUEST'));
        return;
      }
      // A session closed under us: not processed.
      session.retire();
      s.fail(unprocessed(this.t.id, code || 'closed'));
      return;
    }
    s.h2 = h2s;
    (h2s as OwnedStream)[kOwner] = s;
    if (s.paused) h2s.pause();
    // (Functions shared by every stream, which finds its request by its tag: no closures per request.)
    h2s.on('response', onH2Response);
    // 1xx other than 100 (node answers 100 itself for the request it sent).
    h2s.on('headers', onH2Response);
    h2s.on('data', onH2Data);
    h2s.on('trailers', onH2Trailers);
    h2s.on('end', onH2End);
    h2s.on('error', ignore);
    h2s.on('close', onH2Close);
    s.attachBody(h2s);
  }

  /** The stream closed: whatever did not complete fails, and says whether the endpoint processed it. */
  closed(s: Stream, h2s: http2.ClientHttp2Stream): void {
    if (s.upgraded) {
      // A tunnel's stream: its slot frees now.
      if (s.h2 === h2s) this.finished(s);
      return;
    }
    if (s.done || s.h2 !== h2s) return;
    const session = s.session!;
    const code = h2s.rstCode ?? NGHTTP2_NO_ERROR;
    const notProcessed = !s.responded && (code === NGHTTP2_REFUSED_STREAM || (h2s.id !== undefined && h2s.id > session.lastStreamId) || (h2s.id === undefined && session.goingAway));
    if (notProcessed && !s.bodyRead && !s.replayed) {
      // Once more, on another session where one can be had (a new one where none is free).
      s.replayed = true;
      s.avoid = session;
      session.streams.delete(s);
      s.session = null;
      s.h2 = null;
      s.holdBody();
      this.queue.unshift(s);
      queueMicrotask(() => this.pump());
      return;
    }
    if (notProcessed && !s.bodyRead) {
      s.fail(unprocessed(this.t.id, code === NGHTTP2_REFUSED_STREAM ? 'REFUSED_STREAM' : 'GOAWAY'));
      return;
    }
    s.fail(codeError(`endpoint ${this.t.id}: stream closed${code !== NGHTTP2_NO_ERROR ? ` (code ${code})` : ' before the response ended'}`, s.responded ? 'UND_ERR_SOCKET' : 'ECONNRESET'));
  }

  /**
   * The endpoint agreed to a WebSocket (a 2xx to its extended CONNECT): the stream is
   * handed over as the tunnel's endpoint side; it keeps its session slot until it closes.
   */
  upgrade(s: Stream, headers: IncomingHttpHeaders): void {
    const h2s = s.h2!;
    this.t.clock.cancel(s.timer);
    s.timer = null;
    s.done = true;
    s.upgraded = true;
    h2s.off('response', onH2Response);
    h2s.off('headers', onH2Response);
    h2s.off('data', onH2Data);
    h2s.off('trailers', onH2Trailers);
    h2s.off('end', onH2End);
    if (s.handler.onRequestUpgrade !== undefined) s.handler.onRequestUpgrade(s, 200, headers, h2s);
    else h2s.close(NGHTTP2_CANCEL);
  }

  /** The response moved: its body timeout starts again (none: the headers timeout is over too). */
  bodyActivity(s: Stream): void {
    const ms = s.opts.bodyTimeout ?? 0;
    if (ms > 0) this.deadline(s, ms);
    else if (s.timer !== null) {
      this.t.clock.cancel(s.timer);
      s.timer = null;
    }
  }

  /** The request's timeout is `ms` from now: its timer moves earlier if it must, else it will look again when it fires. */
  private deadline(s: Stream, ms: number): void {
    const clock = this.t.clock;
    s.deadline = clock.now() + ms;
    if (s.timer !== null && s.due <= s.deadline) return;
    clock.cancel(s.timer);
    s.due = s.deadline;
    s.timer = clock.after(ms, onStreamTimer, s);
  }

  /** The request's timer fired: its deadline has passed (the headers or the body timeout), or moved and it waits on. */
  expired(s: Stream): void {
    s.timer = null;
    if (s.done) return;
    const left = s.deadline - this.t.clock.now();
    if (left > 0) {
      s.due = s.deadline;
      s.timer = this.t.clock.after(left, onStreamTimer, s);
      return;
    }
    s.fail(s.responded ? codeError('Body Timeout Error', 'UND_ERR_BODY_TIMEOUT') : codeError('Headers Timeout Error', 'UND_ERR_HEADERS_TIMEOUT'));
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
      if (session.goingAway || this.closing) session.retire();
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

  /** Waits for the streams in flight, then closes the sessions. */
  close(): Promise<void> {
    this.closing = true;
    for (const s of this.sessions) s.retire();
    return Promise.resolve();
  }

  destroy(): Promise<void> {
    this.closing = true;
    for (const s of this.queue.splice(0)) s.fail(codeError('endpoint connections closed', 'UND_ERR_CLOSED'));
    for (const s of this.sessions) s.h2.destroy();
    return Promise.resolve();
  }
}

function unprocessed(id: string, why: string): Error {
  return codeError(`endpoint ${id} did not process the request (${why})`, 'BERTH_ERR_H2_UNPROCESSED');
}

function onResponse(s: Stream, h: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader): void {
  if (s.done) return;
  const status = Number(h[':status']);
  const headers: IncomingHttpHeaders = {};
  for (const name in h) if (name.charCodeAt(0) !== 58 /* : */) headers[name] = h[name] as string | string[];
  if (status >= 200 && status < 300 && upgrades(s.opts)) {
    s.up.upgrade(s, headers);
    return;
  }
  if (status >= 200) {
    s.responded = true;
    s.up.bodyActivity(s);
  }
  s.handler.onResponseStart?.(s, status, headers, undefined);
}

const kOwner = Symbol('berth.h2up.request');
type OwnedStream = http2.ClientHttp2Stream & { [kOwner]?: Stream };
function onH2Response(this: OwnedStream, h: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader): void {
  onResponse(this[kOwner]!, h);
}
function onH2Data(this: OwnedStream, chunk: Buffer): void {
  const s = this[kOwner]!;
  if (s.done) return;
  s.up.bodyActivity(s);
  s.handler.onResponseData?.(s, chunk);
}
function onH2Trailers(this: OwnedStream, tr: IncomingHttpHeaders): void {
  this[kOwner]!.trailers = tr;
}
/** Whole only with END_STREAM after a head: a reset also ends the readable side ('end', then 'close' with its code). */
function onH2End(this: OwnedStream): void {
  const s = this[kOwner]!;
  if (s.responded && (this.rstCode === undefined || this.rstCode === NGHTTP2_NO_ERROR) && !this.aborted) s.complete();
}
function onH2Close(this: OwnedStream): void {
  const s = this[kOwner]!;
  s.up.closed(s, this);
}
function ignore(): void {
  // (A stream's error: its 'close' tells the request, with the code.)
}

function onStreamTimer(s: Stream): void {
  s.up.expired(s);
}

function closeIdle(session: Session): void {
  session.idleTimer = null;
  if (session.streams.size === 0) session.retire();
}
