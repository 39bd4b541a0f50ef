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
 *   neither `retries` nor the retry budget. A connection the endpoint dropped after
 *   taking the request, before any answer, is retried only for an idempotent method
 *   without a body, within `retries` and the budget. A malformed or unsupported
 *   answer is never retried (the endpoint ran the request): 502.
 * Local errors (this process is out of descriptors or memory) blame no endpoint.
 */
import { isLocalError } from './connect.js';

/**
 * How an http exchange with an endpoint failed:
 * - connect: the connection never completed (nothing was sent);
 * - reset: the endpoint took (part of) the request and closed without any answer;
 * - timeout: no response head within the response timeout (504);
 * - malformed: the endpoint answered with something berth cannot relay (502);
 * - cut: the response had started and broke off (the client connection is cut);
 * - complete: a 204/304 undici refused only for its Content-Length: the answer is whole;
 * - local: this process failed (EMFILE ...), not the endpoint (503).
 */
export type HttpFailure = 'connect' | 'reset' | 'timeout' | 'malformed' | 'cut' | 'complete' | 'local';

/** Error codes of a connection the endpoint closed or reset. */
const DROPPED = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'UND_ERR_CLOSED']);

/**
 * `sent`: undici began writing the request (the connection was made). `started`:
 * the response head went to the client. `status`: the response status, if any.
 */
export function classifyHttpFailure(err: NodeJS.ErrnoException, sent: boolean, started: boolean, status: number): HttpFailure {
  if (isLocalError(err)) return 'local';
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
