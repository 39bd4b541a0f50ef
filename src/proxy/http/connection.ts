/**
 * What an http listener keeps per client connection, and the answers berth writes
 * itself (on a response, or raw on a socket node has let go of).
 */
import http from 'node:http';
import http2, { type ServerHttp2Stream } from 'node:http2';
import type net from 'node:net';
import { guardSocket } from '../connect.js';
import { grpcAnswer, grpcStatusFor } from './grpc.js';
import { closeWhenFlushed, resetStream } from './limits.js';

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

/** An answer to a client: HTTP/1.1's response, or the HTTP/2 request's own stream. */
export type ClientResponse = http.ServerResponse | ServerHttp2Stream;

/**
 * berth's own plain-text answer. `close`: the connection ends after it (HTTP/1.1;
 * an HTTP/2 answer ends its stream only). Once the head is out, only a cut is left.
 */
export function reply(res: ClientResponse, status: number, close: boolean, extra?: Record<string, string>): void {
  const body = `${REASONS[status] ?? http.STATUS_CODES[status] ?? ''}\n`;
  if (res.headersSent) {
    cut(res);
    return;
  }
  const fields = { 'content-type': 'text/plain; charset=utf-8', 'content-length': String(Buffer.byteLength(body)), 'cache-control': 'no-store', ...extra };
  if (res instanceof http.ServerResponse) {
    if (close) res.shouldKeepAlive = false;
    res.writeHead(status, fields);
    res.end(body);
    return;
  }
  // (A stream the client has reset takes no answer.)
  if (res.destroyed || res.closed) return;
  res.respond({ ...fields, ':status': status });
  res.end(body);
  requestNotWanted(res);
}

/**
 * berth's own answer to an HTTP/2 request is whole: a request body still coming is not
 * wanted. Once the answer is out, RST_STREAM(NO_ERROR) tells the client to stop
 * sending (RFC 9113 section 8.1) rather than the stream waiting, its upload stuck behind
 * flow control, for the idle timeout. (A client that has sent all of it needs nothing.)
 */
export function requestNotWanted(stream: ServerHttp2Stream): void {
  if (!stream.endAfterHeaders) closeWhenFlushed(stream);
}

/**
 * berth's own answer to a request, whatever its kind: to a gRPC call a gRPC one
 * (Trailers-Only, the status mapped), else the plain-text one. Returns the
 * grpc-status sent (-1: not gRPC).
 */
export function ownAnswer(res: ClientResponse, grpc: boolean, status: number, why: string, close: boolean, extra?: Record<string, string>): number {
  if (grpc && !(res instanceof http.ServerResponse)) {
    const code = grpcStatusFor(status);
    if (!grpcAnswer(res, code, `berth: ${why}`)) cut(res);
    else requestNotWanted(res);
    return code;
  }
  reply(res, status, close, extra);
  return -1;
}

/** The response breaks off where it is: HTTP/1.1 closes the connection, HTTP/2 resets the stream. */
export function cut(res: ClientResponse): void {
  if (res instanceof http.ServerResponse) res.destroy();
  else resetStream(res, http2.constants.NGHTTP2_INTERNAL_ERROR);
}

export function rawReply(socket: net.Socket, status: number, extra = ''): void {
  guardSocket(socket);
  const body = `${REASONS[status] ?? http.STATUS_CODES[status] ?? ''}\n`;
  if (socket.writable) {
    socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}connection: close\r\n\r\n${body}`);
  }
  socket.destroySoon();
}

/** A client connection's facts, computed once per connection. */
export interface ConnFacts {
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
/**
 * An Upgrade request's own parts. HTTP/1.1: the client socket node handed over and
 * the bytes it read past the head. HTTP/2 (an extended CONNECT, RFC 8441): no socket
 * (the tunnel is the request's stream) and the Sec-WebSocket-Key berth made for the
 * endpoint, whose 101 must answer it.
 */
export interface UpgradeParts {
  readonly protocol: string;
  readonly socket: net.Socket | null;
  readonly early: Buffer;
  readonly key: string | null;
}

/** A response of a request has ended (or its connection closed): a refusal waiting for it goes out. */
export function responseClosed(c: ConnFacts): void {
  c.open--;
  if (c.open === 0 && c.refusal !== 0) rawReply(c.socket, c.refusal);
}
