/**
 * One request through an http listener: pick an endpoint, dispatch through
 * undici, stream the answer back; an Upgrade until the endpoint's 101.
 */
import http from 'node:http';
import { createHash } from 'node:crypto';
import http2 from 'node:http2';
import net from 'node:net';
import type { ServerHttp2Stream } from 'node:http2';
import { Readable, type Duplex } from 'node:stream';
import type { Dispatcher } from 'undici';
import type { EndpointState } from '../../pool/endpoint.js';
import { connectResult, guardSocket } from '../connect.js';
import { classifyHttpFailure, httpBlames, httpRetry, type HttpFailure } from '../retry-policy.js';
import { UpstreamAttempt, type AttemptUser, type GiveUp } from '../upstream-attempt.js';
import { cut, ownAnswer, responseClosed, type ClientResponse, type ConnFacts, type UpgradeParts } from './connection.js';
import { resetStream } from './limits.js';
import { grpcAnswer, grpcStatusOf, grpcTimeout, GrpcStatus, isGrpc } from './grpc.js';
import type { Timer } from '../../core/clock.js';
import { downstreamResponseFields, downstreamResponseHeaders, fieldsOf, idempotent, interimHead, reasonPhrase, trailerList, upstreamRequestHeaders, upstreamRequestHeadersH2, type H2RequestFacts, type RequestFacts } from './headers.js';
import type { HttpListener } from './listener.js';
import { Tunnel } from './tunnel.js';

const kExchange = Symbol('berth.http.exchange');
/**
 * A client's request: HTTP/1.x (node's parser), or HTTP/2: its stream, which is its
 * body and its response both (node's stream API; its head is in the H2RequestFacts).
 */
export type ClientRequest = http.IncomingMessage | ServerHttp2Stream;
export type { ClientResponse };
type TaggedRes = ClientResponse & { [kExchange]?: Exchange | undefined };
const kTrailers = Symbol('berth.h2.trailers');
type TrailedStream = ServerHttp2Stream & { [kTrailers]?: Record<string, string | string[] | number> | undefined };
/** An HTTP/2 response's end: its trailers (the endpoint's, berth's), or none (an empty DATA frame with END_STREAM). */
function onWantTrailers(this: TrailedStream): void {
  const t = this[kTrailers];
  this[kTrailers] = undefined;
  if (this.destroyed) return;
  try {
    this.sendTrailers(t ?? {});
  } catch {
    // Trailers HTTP/2 cannot carry (a field given twice that may appear once, a
    // connection-specific one): the response cannot end as the endpoint ended it.
    resetStream(this, http2.constants.NGHTTP2_INTERNAL_ERROR);
  }
}

/** The exchange answering through `res`, while it has one. */
export function exchangeOf(res: ClientResponse): Exchange | undefined {
  return (res as TaggedRes)[kExchange];
}

function onResDrain(this: TaggedRes): void {
  this[kExchange]?.resDrain();
}
/** The client connection's idle timer fired (node asks the response before it destroys the socket). */
function onResTimeout(this: http.ServerResponse & { [kExchange]?: Exchange | undefined }): void {
  const x = this[kExchange];
  if (x === undefined || !x.idle()) this.socket?.destroy();
}
const kBody = Symbol('berth.h2.body');
type BodyStream = ServerHttp2Stream & { [kBody]?: H2Body | undefined };
function onH2BodyData(this: BodyStream, chunk: Buffer): void {
  if (this[kBody]?.push(chunk) === false) this.pause();
}
function onH2BodyEnd(this: BodyStream): void {
  this[kBody]?.push(null);
}

/**
 * An HTTP/2 request's body as a Readable of its own, for the endpoint's side:
 * undici destroys a body it has sent, and the stream is the response too. Reads
 * what the stream has, with its backpressure (the stream is paused while this one is full).
 */
class H2Body extends Readable {
  constructor(private readonly stream: BodyStream) {
    super();
    stream[kBody] = this;
    stream.on('data', onH2BodyData);
    stream.on('end', onH2BodyEnd);
    stream.pause();
  }

  override _read(): void {
    this.stream.resume();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const s = this.stream;
    s[kBody] = undefined;
    s.off('data', onH2BodyData);
    s.off('end', onH2BodyEnd);
    cb(err);
  }
}

/**
 * An HTTP/2 stream has been idle for `timeouts.idle` (the front's timer): the same
 * rule as for an HTTP/1.1 connection. True when it stays open.
 */
export function streamIdle(stream: ServerHttp2Stream): boolean {
  const x = (stream as TaggedRes)[kExchange];
  return x !== undefined && x.idle();
}
function onResClose(this: TaggedRes): void {
  const x = this[kExchange];
  if (x === undefined) return;
  this[kExchange] = undefined;
  x.resClose();
}

function onDeadline(x: Exchange): void {
  x.deadlineExpired();
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
export class Exchange implements Dispatcher.DispatchHandler, AttemptUser {
  private readonly method: string;
  private readonly headers: string[];
  private readonly hasBody: boolean;
  private readonly t0: number;
  /** The client speaks HTTP/2 (req and res are node's compatibility pair over a stream). */
  private readonly h2: boolean;
  /** An HTTP/1.0 client (no chunked framing, no transfer codings, no 1xx). */
  private readonly http10: boolean;
  /** A gRPC request: berth's own answers are gRPC answers. */
  private readonly grpc: boolean;
  /** The grpc-status the endpoint's answer carried (-1: none, or not gRPC). */
  private grpcStatus = -1;
  /** The client went away before its answer was whole (a gRPC call counts as CANCELLED). */
  private clientLeft = false;
  /** gRPC: the request's deadline (its grpc-timeout, ms; 0: none) and its timer. */
  private readonly deadline: number;
  private deadlineTimer: Timer | null = null;
  /** The request's Host (HTTP/2: its :authority), for the access log. */
  private readonly host: string | undefined;
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
  /** The error berth aborted the upstream request with, for the endpoint's fault. */
  private fault: Error | null = null;
  /** An HTTP/2 request's body, as the endpoint's side reads it. */
  private body: Readable | null = null;

  constructor(
    private readonly listener: HttpListener,
    private readonly req: ClientRequest,
    private readonly res: ClientResponse,
    private readonly service: string,
    facts: RequestFacts,
    private readonly path: string,
    hostOverride: string | null,
    private readonly upgrade: UpgradeParts | null,
    private readonly owed: ConnFacts | null,
    private readonly conn: ConnFacts,
  ) {
    this.h2 = !(res instanceof http.ServerResponse);
    const h2f = this.h2 ? (facts as H2RequestFacts) : null;
    this.method = h2f !== null ? h2f.method : ((req as http.IncomingMessage).method ?? 'GET');
    this.hasBody = facts.hasBody;
    this.http10 = h2f === null && (req as http.IncomingMessage).httpVersionMinor === 0;
    this.grpc = h2f !== null && isGrpc(h2f.contentType);
    this.deadline = h2f !== null && this.grpc ? grpcTimeout(h2f.grpcTimeout) : 0;
    const { pool } = listener.deps;
    this.t0 = pool.clock.now();
    this.host = hostOverride ?? facts.host;
    const fwd = listener.forwarded(conn, facts, this.host);
    // Connection/Upgrade are hop-by-hop; for an Upgrade undici writes its own pair.
    this.headers = h2f !== null ? upstreamRequestHeadersH2(h2f.raw, fwd, facts.host!, upgrade?.key ?? null) : upstreamRequestHeaders((req as http.IncomingMessage).rawHeaders, fwd, null, hostOverride);
    const key = pool.service(service)?.balance === 'source-hash' ? conn.ip : undefined;
    this.attempt = new UpstreamAttempt(pool, service, listener.settings, key, this);
  }

  start(): void {
    const r = this.res as TaggedRes;
    r[kExchange] = this;
    r.on('drain', onResDrain);
    r.on('close', onResClose);
    if (this.h2) {
      // (The stream's idle timer is the front's, for every stream: it asks idle().)
      // A gRPC call's deadline is its own; it has no response timeout (a long unary
      // call, a watch stream), only the stream idle timeout, as Envoy's.
      if (this.deadline > 0) this.deadlineTimer = this.listener.deps.pool.clock.after(this.deadline, onDeadline, this);
    } else r.on('timeout', onResTimeout);
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
        // (An HTTP/2 extended CONNECT goes out as the HTTP/1.1 handshake it stands for: a GET with Upgrade.)
        method: u !== null && this.h2 ? 'GET' : this.method,
        headers: this.headers,
        body: this.hasBody && u === null ? this.requestBody() : null,
        headersTimeout: this.grpc ? 0 : t.response,
        bodyTimeout: t.idle,
        idempotent: false,
        // A plain literal (no spread): one object shape per request on the hot path.
        upgrade: u !== null ? u.protocol : null,
      },
      this,
    );
  }

  private requestBody(): Readable {
    if (!this.h2) return this.req as Readable;
    return (this.body ??= new H2Body(this.req as ServerHttp2Stream));
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
      this.endpointFault(controller, Object.assign(new Error(`invalid status code ${statusCode}`), { code: 'BERTH_ERR_BAD_STATUS' }));
      return;
    }
    if (statusCode < 200) {
      this.interim(controller, statusCode, headers, statusMessage);
      return;
    }
    if (this.upgrade !== null && this.h2 && statusCode < 300) {
      // A success that is not a 101 would tell the HTTP/2 client its tunnel is open
      // (RFC 8441 §5: a 2xx) while nothing is: the endpoint did not agree to the upgrade.
      this.endpointFault(controller, Object.assign(new Error(`status ${statusCode} to a WebSocket handshake`), { code: 'BERTH_ERR_NOT_UPGRADED' }));
      return;
    }
    let list: string[] | null = null;
    let fields: Record<string, string | string[] | number> | null = null;
    try {
      if (this.h2) fields = downstreamResponseFields(headers, statusCode);
      else list = downstreamResponseHeaders(headers, statusCode, this.http10);
    } catch (err) {
      this.endpointFault(controller, err as Error);
      return;
    }
    this.answered(statusCode);
    if (this.grpc) this.grpcStatus = grpcStatusOf(headers);
    this.started = true;
    try {
      if (fields !== null) {
        const stream = this.res as ServerHttp2Stream;
        // (Reset by the client, not destroyed yet: its 'close' ends the exchange, on the client's account.)
        if (stream.destroyed || stream.closed) return;
        // Trailers, if the endpoint sends any, follow the body (onResponseEnd).
        stream.respond(fields, { waitForTrailers: true });
        stream.on('wantTrailers', onWantTrailers);
      } else {
        const res = this.res as http.ServerResponse;
        if (this.listener.closing) res.shouldKeepAlive = false;
        res.writeHead(statusCode, reasonPhrase(statusCode, statusMessage), list!);
      }
    } catch (err) {
      // A header value node will not write (a control character): the response cannot be relayed.
      this.started = false;
      this.endpointFault(controller, err as Error);
    }
  }

  /**
   * 1xx before the final answer (RFC 9110 §15.2): forwarded to HTTP/1.1 clients with
   * hop-by-hop fields removed and under the same backpressure as a body. 100 is not
   * forwarded: berth strips Expect and node answers it itself.
   */
  private interim(controller: Dispatcher.DispatchController, statusCode: number, headers: http.IncomingHttpHeaders, statusMessage: string | undefined): void {
    if (statusCode === 100 || statusCode === 101 || this.http10) return;
    // undici keeps parsing past a 1xx even when asked to pause, so the bound is here:
    // while the client has not taken the last one, more are dropped, and an endpoint
    // that sends more than MAX_INTERIM is broken.
    if (++this.interims > MAX_INTERIM) {
      this.endpointFault(controller, Object.assign(new Error(`more than ${MAX_INTERIM} interim responses`), { code: 'BERTH_ERR_INTERIM_FLOOD' }));
      return;
    }
    if (this.h2) {
      const stream = this.res as ServerHttp2Stream;
      if (stream.headersSent || stream.destroyed) return;
      try {
        stream.additionalHeaders(downstreamResponseFields(headers, statusCode));
      } catch (err) {
        this.endpointFault(controller, err as Error);
      }
      return;
    }
    const res = this.res as RawWriter;
    if (res.headersSent || this.interimCongested) return;
    let head: string;
    try {
      head = interimHead(statusCode, reasonPhrase(statusCode, statusMessage), headers);
    } catch (err) {
      this.endpointFault(controller, err as Error);
      return;
    }
    if (!res._writeRaw(head, 'latin1') && res.socket !== null) {
      this.interimCongested = true;
      res.socket.once('drain', () => (this.interimCongested = false));
    }
  }

  /**
   * The endpoint agreed to the Upgrade: an HTTP/1.1 endpoint's 101 with its socket, or
   * an HTTP/2 endpoint's 2xx to the extended CONNECT berth sent for a WebSocket (RFC
   * 8441), with that stream. Either becomes what the client asked for: a 101 (with the
   * Sec-WebSocket-Accept that answers its key, which HTTP/2 does not carry), or an
   * HTTP/2 client's 200.
   */
  onRequestUpgrade(_controller: Dispatcher.DispatchController, statusCode: number, headers: http.IncomingHttpHeaders, socket: Duplex): void {
    const fromH2 = !(socket instanceof net.Socket);
    const up = socket as net.Socket | http2.ClientHttp2Stream;
    if (!fromH2) guardSocket(up as net.Socket);
    const u = this.upgrade;
    if (this.done || u === null) {
      up.destroy();
      return;
    }
    if (u.socket === null) {
      this.upgradedH2(_controller, u, headers, up, fromH2);
      return;
    }
    let head: string;
    try {
      if (fromH2) {
        const key = (this.req as http.IncomingMessage).headers['sec-websocket-key'];
        headers = { ...headers, 'sec-websocket-accept': typeof key === 'string' ? websocketAccept(key) : undefined };
        statusCode = 101;
      }
      head = interimHead(statusCode, reasonPhrase(statusCode, 'Switching Protocols'), headers, headers.upgrade ?? u.protocol);
    } catch (err) {
      up.destroy();
      this.onResponseError(_controller, err as Error);
      return;
    }
    this.answered(statusCode);
    this.started = true;
    // The tunnel owns the endpoint's slot and the client socket from here on.
    const client = u.socket;
    (this.res as http.ServerResponse).detachSocket(client);
    client.write(head);
    if (u.early.length > 0) up.write(u.early);
    this.tunnel(client, up);
  }

  /**
   * An HTTP/2 client's extended CONNECT that the endpoint upgraded (RFC 8441 §5): its
   * 101 must answer the key berth sent, and becomes the client's 200; the stream is
   * the tunnel's client side. The stream was not read before (the request has no
   * body), so nothing the client sent early has gone anywhere until now.
   */
  private upgradedH2(controller: Dispatcher.DispatchController, u: UpgradeParts, headers: http.IncomingHttpHeaders, up: net.Socket | http2.ClientHttp2Stream, fromH2: boolean): void {
    const stream = this.res as ServerHttp2Stream;
    if (stream.destroyed || stream.closed) {
      up.destroy();
      return;
    }
    let fields: http2.OutgoingHttpHeaders;
    try {
      // (An HTTP/2 endpoint's 2xx needs no key: there is none over HTTP/2.)
      if (!fromH2 && headers['sec-websocket-accept'] !== websocketAccept(u.key!)) {
        throw Object.assign(new Error('the 101 does not answer the Sec-WebSocket-Key sent'), { code: 'BERTH_ERR_WS_ACCEPT' });
      }
      fields = downstreamResponseFields(headers, 101);
      delete fields['sec-websocket-accept'];
      fields[':status'] = 200;
      stream.respond(fields);
    } catch (err) {
      up.destroy();
      this.onResponseError(controller, err as Error);
      return;
    }
    this.answered(101);
    this.status = 200;
    this.started = true;
    this.tunnel(stream, up);
  }

  /** The endpoint agreed: the tunnel owns the endpoint's slot and both sides from here on. */
  private tunnel(client: net.Socket | ServerHttp2Stream, up: net.Socket | http2.ClientHttp2Stream): void {
    const ep = this.attempt.detach()!;
    const l = this.listener;
    l.deps.observer.httpUpgrade(l.settings.name, this.service);
    const tunnel = new Tunnel(l, client, up, ep);
    l.tunnels.add(tunnel);
    tunnel.start();
    this.finish();
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.done && !(this.res as { write(chunk: Buffer): boolean }).write(chunk)) controller.pause();
  }

  onResponseEnd(_controller: Dispatcher.DispatchController, trailers: http.IncomingHttpHeaders): void {
    if (this.done) return;
    const t = trailerList(trailers);
    if (this.grpc) {
      const st = grpcStatusOf(trailers);
      if (st >= 0) this.grpcStatus = st;
    }
    if (t !== null) {
      if (this.h2) (this.res as TrailedStream)[kTrailers] = fieldsOf(t.flat());
      else if ((this.res as http.ServerResponse).chunkedEncoding) (this.res as http.ServerResponse).addTrailers(t);
    }
    this.res.end();
    this.finish();
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    if (this.done) return;
    const { observer, log, pool } = this.listener.deps;
    const e = err as NodeJS.ErrnoException;
    if (err !== this.fault && this.clientFailed()) {
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
      observer.retry(ep.service, failure === 'connect' ? connectResult(e) : failure === 'unprocessed' ? 'refused' : 'reset');
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
        // Cut mid-response: the client must see a cut (HTTP/2: a stream reset), not a short body it could take for whole.
        cut(this.res);
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
    else if (!this.res.headersSent) this.answer(status, 'malformed request body', true);
  }

  /** The response closed (sent, or the client left): abandon the upstream request if it is still going. */
  resClose(): void {
    if (this.owed !== null) responseClosed(this.owed);
    // (HTTP/2: a stream the client reset reads as finished; the exchange not being done says it.)
    if (!this.done && (this.h2 || !this.res.writableFinished)) this.endByClient(null, this.h2 ? 'client reset the stream' : 'client closed the connection');
  }

  /**
   * The client connection has been idle for `timeouts.idle`. While berth waits for
   * the endpoint, the endpoint is the slow side (as HAProxy's client timeout does not
   * run while it waits for the server): a whole request waits on for the response
   * timeout (undici's, 504), and an upload the endpoint stopped reading (berth paused
   * the client for it) is the endpoint's timeout now. Anything else is the client's
   * idleness: false, and the connection closes. Returns whether it stays open.
   */
  idle(): boolean {
    if (this.done || !this.sent || this.started) return false;
    // (HTTP/2: a request with no body reads as incomplete until someone reads its end.)
    if (this.h2 ? !this.hasBody || this.req.readableEnded : (this.req as http.IncomingMessage).complete) return true;
    if (!this.req.isPaused()) return false;
    // The endpoint's timeout: counted against it and answered 504, best effort — the
    // upload still in flight means the connection is reset right after (aborting
    // undici's request destroys the request body, and with it the client socket).
    this.attempt.report('failed');
    const ctl = this.ctl;
    if (!this.h2) (this.res as http.ServerResponse).shouldKeepAlive = false;
    this.fail(504, 'the endpoint stopped reading the request body');
    ctl?.abort(Object.assign(new Error('the endpoint stopped reading the request body'), { code: 'BERTH_ERR_UPLOAD_STALLED' }));
    return true;
  }

  /**
   * berth aborts the upstream request for the endpoint's fault (a status or header it
   * cannot relay, a flood of 1xx, an upload it stopped reading). undici then destroys
   * the request body with this error, which must not read as the client's doing.
   */
  private endpointFault(controller: Dispatcher.DispatchController, err: Error): void {
    this.fault = err;
    controller.abort(err);
  }

  /** The client's side has failed: its request body broke off, or its connection is gone. */
  private clientFailed(): boolean {
    // (HTTP/2: a reset stream reads as finished; closed before berth ended it, it is gone.)
    if (this.h2) return (this.res as ServerHttp2Stream).closed;
    const req = this.req as http.IncomingMessage;
    if (req.errored !== null || (req.destroyed && !req.complete)) return true;
    return (this.res as http.ServerResponse).destroyed && !this.res.writableFinished;
  }

  /**
   * The one way an exchange ends on the client's account (it closed, reset, went
   * idle or botched its body): the attempt learns it first, so nothing that breaks
   * after — the upstream request berth now aborts — counts against the endpoint.
   * `status`: the answer still owed to the client (400), or null when it is gone.
   */
  private endByClient(status: number | null, why: string): void {
    this.attempt.clientEnded();
    this.clientLeft = status === null;
    const { log } = this.listener.deps;
    if (log.isLevelEnabled('debug')) log.debug({ service: this.service, endpoint: this.endpointId, reason: why }, 'client ended the request');
    const ctl = this.ctl;
    if (status !== null) {
      this.status = status;
      this.answer(status, why, true);
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
    this.answer(status, why, false, status === 503 ? { 'retry-after': '1' } : undefined);
    this.finish();
  }

  /**
   * berth's own answer on this exchange's response: to a gRPC request a gRPC one
   * (Trailers-Only, the status mapped), else the plain-text one. `close`: the client
   * connection ends after it (HTTP/1.1 only: an HTTP/2 stream ends on its own).
   */
  private answer(status: number, why: string, close: boolean, extra?: Record<string, string>): void {
    const code = ownAnswer(this.res, this.grpc, status, why, close, extra);
    if (code >= 0) this.grpcStatus = code;
  }

  /**
   * gRPC: the call's deadline passed. The endpoint's stream is cancelled (RST_STREAM
   * CANCEL; the endpoint is not to blame: the deadline is the client's), and the
   * client gets DEADLINE_EXCEEDED: Trailers-Only before the response began, else as
   * the trailers of what it has had.
   */
  deadlineExpired(): void {
    this.deadlineTimer = null;
    if (this.done) return;
    this.attempt.clientEnded();
    const ctl = this.ctl;
    const message = `berth: deadline of ${this.deadline} ms exceeded`;
    this.grpcStatus = GrpcStatus.DEADLINE_EXCEEDED;
    const stream = this.res as TrailedStream;
    if (!this.started) {
      this.status = 200;
      if (!grpcAnswer(stream, GrpcStatus.DEADLINE_EXCEEDED, message)) cut(stream);
    } else if (!stream.destroyed) {
      stream[kTrailers] = { 'grpc-status': String(GrpcStatus.DEADLINE_EXCEEDED), 'grpc-message': message };
      stream.end();
    }
    this.finish();
    ctl?.abort(Object.assign(new Error(message), { code: 'BERTH_ERR_GRPC_DEADLINE' }));
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    this.listener.deps.pool.clock.cancel(this.deadlineTimer);
    this.deadlineTimer = null;
    this.attempt.end();
    const l = this.listener;
    const { observer, pool, log } = l.deps;
    const seconds = (pool.clock.now() - this.t0) / 1000;
    const status = this.status === 0 ? 499 : this.status;
    observer.httpRequest(l.settings.name, this.service, this.method, status, seconds, this.h2 ? '2' : '1.1');
    if (this.grpc) observer.grpcRequest(l.settings.name, this.service, this.clientLeft ? 'CANCELLED' : this.grpcStatus < 0 ? 'none' : this.grpcStatus);
    if (l.settings.http.accessLog) {
      log.info(
        {
          client: this.conn.ip,
          method: this.method,
          path: this.path,
          host: this.host,
          version: this.h2 ? '2' : '1.1',
          status,
          // (undefined is left out of the line: one object shape, no spread)
          grpcStatus: this.grpc ? this.grpcStatus : undefined,
          ms: Math.round(seconds * 1e6) / 1e3,
          service: this.service,
          endpoint: this.endpointId,
          attempts: this.attempt.attempts,
        },
        'request',
      );
    }
    // (The response keeps this exchange until it closes: its 'close' settles `owed`.)
  }
}

/** The Sec-WebSocket-Accept that answers `key` (RFC 6455 §4.2.2). */
export function websocketAccept(key: string): string {
  return createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
}
