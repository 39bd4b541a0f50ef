/**
 * What berth may retry, per mode, and what counts against an endpoint. The rule
 * behind every case: a request is sent again only where nothing could have run
 * twice.
 *
 * tcp: a connect that never completed (refused, timed out, unreachable) is tried
 *   on another endpoint. Once an endpoint has accepted, the client's bytes may have
 *   done work there: they are replayed elsewhere only for services that opt in
 *   (`replay: true`), and only while the endpoint has sent nothing back.
 * http: a connect that never completed is always tried elsewhere, and uses up
 *   neither `retries` nor the retry budget; so is a request an HTTP/2 endpoint
 *   did not process (REFUSED_STREAM, or above a GOAWAY's last stream) while none of
 *   its body was read. A connection the endpoint dropped after
 *   taking the request, before any answer, is retried only for an idempotent method
 *   without a body, within `retries` and the budget. A malformed or unsupported
 *   answer is never retried (the endpoint ran the request): 502.
 * Local errors (this process is out of descriptors or memory) blame no endpoint.
 */
import { isLocalError } from './connect.js';

/**
 * The policy's verdict on a failed attempt, which the one upstream attempt loop
 * (upstream-attempt.ts) carries out:
 * - next: nothing reached the endpoint; always tried on another, using up neither
 *   `retries` nor the retry budget;
 * - resend: the endpoint took (part of) the request, but running it again is
 *   harmless; tried elsewhere within `retries` (http: and the budget);
 * - none: answered or cut here, never sent again.
 */
export type RetryKind = 'next' | 'resend' | 'none';

/**
 * tcp: `connecting`: the connect never completed. `replayable`: the service opted
 * into replay (`replay: true`), the endpoint has sent nothing back and every byte
 * the client sent is still held.
 */
export function tcpRetry(connecting: boolean, replayable: boolean): RetryKind {
  if (connecting) return 'next';
  return replayable ? 'resend' : 'none';
}

/** What an http request is, for its retry: an Upgrade is never resent (its bytes are a stream). */
export interface RequestKind {
  readonly idempotent: boolean;
  readonly hasBody: boolean;
  readonly upgrade: boolean;
}

export function httpRetry(failure: HttpFailure, req: RequestKind): RetryKind {
  switch (failure) {
    case 'connect':
    case 'unprocessed':
      return 'next';
    case 'reset':
      return req.idempotent && !req.hasBody && !req.upgrade ? 'resend' : 'none';
    default:
      return 'none';
  }
}

/**
 * Whether an http failure counts against the endpoint (outlier detection): it
 * refused, timed out or answered something berth cannot relay. A dropped
 * connection, a cut response or a local error blames it for nothing.
 */
export function httpBlames(failure: HttpFailure): boolean {
  return failure === 'connect' || failure === 'timeout' || failure === 'malformed';
}

/**
 * How an http exchange with an endpoint failed:
 * - connect: the connection never completed (nothing was sent);
 * - unprocessed: an HTTP/2 endpoint said it did not process the request (REFUSED_STREAM,
 *   GOAWAY), and none of its body was read: as good as never sent, and no fault of it;
 * - unsendable: the request cannot go to that endpoint at all (an Upgrade, or a field
 *   HTTP/2 cannot carry): nothing was sent, no endpoint is to blame, none is tried (502);
 * - reset: the endpoint took (part of) the request and closed without any answer;
 * - timeout: no response head within the response timeout (504);
 * - malformed: the endpoint answered with something berth cannot relay (502);
 * - cut: the response had started and broke off (the client connection is cut);
 * - complete: a 204/304 undici refused only for its Content-Length: the answer is whole;
 * - local: this process failed (EMFILE ...), not the endpoint (503).
 */
export type HttpFailure = 'connect' | 'unprocessed' | 'unsendable' | 'reset' | 'timeout' | 'malformed' | 'cut' | 'complete' | 'local';

/** Error codes of a connection the endpoint closed or reset. */
const DROPPED = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'UND_ERR_CLOSED']);

/**
 * `sent`: undici began writing the request (the connection was made). `started`:
 * the response head went to the client. `status`: the response status, if any.
 */
export function classifyHttpFailure(err: NodeJS.ErrnoException, sent: boolean, started: boolean, status: number): HttpFailure {
  if (isLocalError(err)) return 'local';
  if (err.code === 'BERTH_ERR_H2_UNPROCESSED') return 'unprocessed';
  if (err.code === 'BERTH_ERR_H2_REQUEST') return 'unsendable';
  if (started) {
    // Bodiless by definition (RFC 9110 §15.3.5, §15.4.5): undici still checks their Content-Length.
    if ((status === 204 || status === 304) && err.code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH') return 'complete';
    return 'cut';
  }
  if (!sent) return err.code === 'UND_ERR_HEADERS_TIMEOUT' ? 'timeout' : 'connect';
  if (err.code === 'UND_ERR_HEADERS_TIMEOUT' || err.code === 'UND_ERR_BODY_TIMEOUT') return 'timeout';
  if (err.code !== undefined && DROPPED.has(err.code)) return 'reset';
  // undici reports both "other side closed" (no answer) and "bad response" under
  // UND_ERR_SOCKET; only the message tells them apart.
  if (err.code === 'UND_ERR_SOCKET' && err.message === 'other side closed') return 'reset';
  return 'malformed';
}
