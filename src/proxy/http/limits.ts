/**
 * The bounds of an HTTP/2 connection from a client. HTTP/2 is attacked with cheap
 * frames, and node's http2 leaves several unbounded (docs/research/http2-node24-limits.md,
 * measured on node 24): a session's streams in total, resets at a pace under
 * nghttp2's own bucket (rapid reset, CVE-2023-44487) and resets the server is made
 * to send (MadeYouReset, CVE-2025-8671), paced PING and SETTINGS floods, a client
 * that never acknowledges berth's SETTINGS (before that, nghttp2 enforces neither
 * the stream limit nor the header list size), and a header list over berth's limits
 * before that acknowledgement. What node and nghttp2 do bound (CONTINUATION floods,
 * burst floods, too many settings, malformed frames) they end with their own GOAWAY;
 * node's options below are set to sit behind berth's checks.
 */
import http2, { type Http2Stream, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type { Clock, Timer } from '../../core/clock.js';

const { NGHTTP2_ENHANCE_YOUR_CALM, NGHTTP2_SETTINGS_TIMEOUT, NGHTTP2_NO_ERROR } = http2.constants;

/** Streams a client may have open at once on one connection (node's default is 2^32-1). */
export const MAX_CONCURRENT_STREAMS = 100;
/** Header fields a request may carry (pseudo-header fields apart), as for HTTP/1.1. */
export const MAX_HEADER_FIELDS = 128;
/** Streams one connection may open in all; then it is closed gracefully (GOAWAY NO_ERROR: the client opens another). */
export const MAX_STREAMS_PER_CONNECTION = 10_000;
/** Stream resets (the client's, or ones the client made berth send) per second before the connection is closed. */
export const MAX_RESETS_PER_SECOND = 100;
/** PING frames per second. */
export const MAX_PINGS_PER_SECOND = 100;
/** SETTINGS frames per second. */
export const MAX_SETTINGS_PER_SECOND = 20;

/**
 * node's options for the HTTP/2 server: limits advertised and enforced by nghttp2,
 * each a backstop above berth's own check (which answers first, and counts).
 * `maxHeaderSize`: the listener's header size limit in bytes.
 */
export function h2ServerOptions(maxHeaderSize: number): http2.ServerOptions {
  return {
    // enableConnectProtocol: WebSockets over HTTP/2 (RFC 8441's extended CONNECT).
    settings: { maxConcurrentStreams: MAX_CONCURRENT_STREAMS, maxHeaderListSize: 2 * maxHeaderSize + 4096, enableConnectProtocol: true },
    // Counted with pseudo-header fields; twice berth's limit, so a request over berth's
    // limit reaches berth (431, counted) rather than vanishing in a reset.
    maxHeaderListPairs: 2 * (MAX_HEADER_FIELDS + 4),
    maxSessionInvalidFrames: 1000,
    maxSessionRejectedStreams: 100,
    maxSettings: 32,
  };
}

const kByBerth = Symbol('berth.h2.resetByBerth');

/**
 * berth resets a client's stream itself (a response cut, an idle stream, a refused
 * one): marked, so that the reset budget counts only what the client caused.
 */
export function resetStream(stream: Http2Stream, code: number): void {
  (stream as Http2Stream & { [kByBerth]?: true })[kByBerth] = true;
  stream.close(code);
}

/**
 * Once what berth has written on `stream` is out, RST_STREAM(NO_ERROR): the peer may
 * stop sending too (RFC 9113 §8.1), unless the stream has closed on its own by then
 * (both halves ended). Not close() at once: node then waits for the data to flow out
 * with the stream's timeout taken off, and a peer that stopped reading would hold the
 * stream for ever; this way its idle timeout still cuts it.
 */
export function closeWhenFlushed(stream: Http2Stream): void {
  if (stream.closed || stream.destroyed) return;
  if (stream.writableFinished) closeFlushed.call(stream);
  else stream.once('finish', closeFlushed);
}

function closeFlushed(this: Http2Stream): void {
  if (!this.closed && !this.destroyed && !this.readableEnded) resetStream(this, http2.constants.NGHTTP2_NO_ERROR);
}

/** A per-second counter on the injected clock (no timer). */
class Rate {
  private windowStart = 0;
  private count = 0;
  constructor(private readonly max: number) {}
  /** Counts one; true when the count in this second is past the maximum. */
  over(now: number): boolean {
    if (now - this.windowStart >= 1000) {
      this.windowStart = now;
      this.count = 0;
    }
    return ++this.count > this.max;
  }
}

export type H2Violation = 'resets' | 'pings' | 'settings' | 'settings_timeout' | 'hidden_rejects';

export interface H2GuardDeps {
  readonly clock: Clock;
  /** A client's SETTINGS acknowledgement must arrive within this (ms). */
  readonly settingsTimeout: number;
  /** The listener's header size limit (bytes, Σ name + value + 32 per field as RFC 9113 counts). */
  readonly maxHeaderSize: () => number;
  /** Streams in all before the connection is closed gracefully (default MAX_STREAMS_PER_CONNECTION). */
  readonly maxStreams?: number;
  /** A connection ended for a violation (counted and logged by the caller). */
  violated(session: ServerHttp2Session, why: H2Violation): void;
}

/**
 * Watches one client session. Violations end the connection with
 * GOAWAY(ENHANCE_YOUR_CALM); the stream cap ends it gracefully.
 */
export class H2Guard {
  private readonly resets = new Rate(MAX_RESETS_PER_SECOND);
  private readonly pings = new Rate(MAX_PINGS_PER_SECOND);
  private readonly settings = new Rate(MAX_SETTINGS_PER_SECOND);
  private streams = 0;
  /** Streams refused by node before berth saw them, at the last sweep. */
  private hidden = 0;
  private ackTimer: Timer | null;
  private ended = false;

  constructor(
    private readonly session: ServerHttp2Session,
    private readonly deps: H2GuardDeps,
  ) {
    this.ackTimer = deps.clock.after(deps.settingsTimeout, (g: H2Guard) => g.kill('settings_timeout', NGHTTP2_SETTINGS_TIMEOUT), this);
    session.once('localSettings', () => this.clearAck());
    session.on('ping', () => {
      if (this.pings.over(deps.clock.now())) this.kill('pings');
    });
    session.on('remoteSettings', () => {
      if (this.settings.over(deps.clock.now())) this.kill('settings');
    });
    session.once('close', () => {
      this.ended = true;
      this.clearAck();
    });
  }

  private clearAck(): void {
    this.deps.clock.cancel(this.ackTimer);
    this.ackTimer = null;
  }

  /**
   * A new stream (from the 'stream' event): counts it, checks its header list.
   * Returns false when the stream is not to be served: its head is over the limits
   * (the caller answers 431), or the connection has just been ended.
   */
  stream(stream: ServerHttp2Stream, rawHeaders: readonly string[]): 'ok' | 'too_large' | 'ended' {
    if (this.ended) return 'ended';
    stream.once('close', () => {
      // A reset either way (the client's RST_STREAM, or one nghttp2 sent because the
      // client broke the stream's rules): from a close handler, destroyed on the next
      // turn, or the GOAWAY can be lost in nghttp2's send loop.
      const byBerth = (stream as ServerHttp2Stream & { [kByBerth]?: true })[kByBerth] === true;
      if (!byBerth && stream.rstCode !== undefined && stream.rstCode !== NGHTTP2_NO_ERROR && this.resets.over(this.deps.clock.now())) setImmediate(() => this.kill('resets'));
    });
    if (++this.streams === (this.deps.maxStreams ?? MAX_STREAMS_PER_CONNECTION)) {
      // Streams already open finish; nghttp2 refuses later ones.
      this.session.close();
    }
    let size = 0;
    let fields = 0;
    for (let i = 0; i < rawHeaders.length; i += 2) {
      size += rawHeaders[i]!.length + rawHeaders[i + 1]!.length + 32;
      if (rawHeaders[i]!.charCodeAt(0) !== 58 /* : */) fields++;
    }
    if (fields > MAX_HEADER_FIELDS || size > this.deps.maxHeaderSize()) {
      // Answered on its stream (431, counted there); the connection takes no more streams (GOAWAY NO_ERROR).
      this.session.close();
      return 'too_large';
    }
    return 'ok';
  }

  /**
   * Streams node refused before berth saw them (a header list over node's own
   * backstops, malformed ones: RST_STREAM, no 'stream' event): read off the highest
   * stream id the session processed. Called about once a second; more than
   * MAX_RESETS_PER_SECOND new ones since the last call end the connection, and they
   * count towards the stream cap.
   */
  sweep(): void {
    if (this.ended || this.session.destroyed) return;
    const last = this.session.state.lastProcStreamID ?? 0;
    const opened = (last + 1) / 2;
    const hidden = opened - this.streams;
    const fresh = hidden - this.hidden;
    this.hidden = hidden;
    if (fresh > MAX_RESETS_PER_SECOND) this.kill('hidden_rejects');
    else if (opened >= (this.deps.maxStreams ?? MAX_STREAMS_PER_CONNECTION) && !this.session.closed) this.session.close();
  }

  /** Ends the connection at once: GOAWAY(code), then the socket closes. */
  private kill(why: H2Violation, code: number = NGHTTP2_ENHANCE_YOUR_CALM): void {
    if (this.ended) return;
    this.ended = true;
    this.clearAck();
    this.deps.violated(this.session, why);
    this.session.destroy(Object.assign(new Error(`HTTP/2 ${why}`), { code: 'BERTH_ERR_H2_LIMIT' }), code);
  }
}
