/**
 * The HTTP/2 side of an http listener's front: node's http2 server, never listening
 * itself. The listener hands it the connections that speak HTTP/2 — a plaintext one
 * that opened with the prior-knowledge preface (preface.ts), a TLS one that agreed
 * on ALPN h2 — and it hands each request back, as its stream (node's stream API: no
 * compatibility layer, which costs more per request than all of berth's own work
 * on it), to the same gate and Exchange as HTTP/1.1 requests. What is HTTP/2's own
 * stays here: sessions, their limits (limits.ts), idle sessions, GOAWAY on stop.
 */
import http2, { type IncomingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type net from 'node:net';
import type { Clock } from '../../core/clock.js';
import type { Logger } from '../../log.js';
import type { ConnFacts } from './connection.js';
import { H2Guard, h2ServerOptions, resetStream, type H2Violation } from './limits.js';
import type { Timer } from '../../core/clock.js';

const { NGHTTP2_NO_ERROR } = http2.constants;
const kFacts = Symbol('berth.h2.conn');
type TaggedSession = ServerHttp2Session & { [kFacts]?: ConnFacts; [kGuard]?: H2Guard; [kOpen]?: number; [kIdleSince]?: number };
const kIdleSince = Symbol('berth.h2.idleSince');
const kGuard = Symbol('berth.h2.guard');
const kOpen = Symbol('berth.h2.open');

export interface H2FrontDeps {
  readonly log: Logger;
  readonly clock: Clock;
  /** The listener's settings of the moment (read per session). */
  readonly settings: () => { readonly maxHeaderSize: number; readonly keepAlive: number; readonly settingsTimeout: number; readonly idle: number };
  /**
   * A stream had no traffic either way for the idle timeout: true when it stays open
   * (its exchange waits on the endpoint), false to reset it.
   */
  streamIdle(stream: ServerHttp2Stream): boolean;
  /** A request (its stream, its head as node parsed it and as it came), its connection's facts, and whether its head was within the limits. */
  request(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, raw: string[], conn: ConnFacts, verdict: 'ok' | 'too_large'): void;
  /** A connection ended for breaking a limit. */
  violated(why: H2Violation): void;
}

export class H2Front {
  readonly server: http2.Http2Server;
  /** Open client sessions. */
  readonly sessions = new Set<ServerHttp2Session>();
  /** The facts of the connection being handed over (read by the 'session' event, which node emits at once). */
  private incoming: ConnFacts | null = null;
  private closing = false;
  /** The once-a-second look at every session's hidden refusals (runs while there are sessions). */
  private sweeper: Timer | null = null;

  constructor(private readonly deps: H2FrontDeps) {
    this.server = http2.createServer(h2ServerOptions(deps.settings().maxHeaderSize));
    this.server.on('session', (s: ServerHttp2Session) => this.session(s));
    // (No 'request' listener: node builds its compatibility objects only for one.)
    this.server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, _f: number, raw: string[]) => this.stream(stream, headers, raw));
  }

  /** A connection that speaks HTTP/2 (its preface or ALPN said so): a session of its own. */
  take(socket: net.Socket, facts: ConnFacts): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    // HTTP/2 half-closes streams, not the connection; and over a half-open socket
    // (the listener's sockets allow it, for HTTP/1.1 clients) node's session never
    // learns of a reset: its streams, and their requests to endpoints, would stay open.
    socket.allowHalfOpen = false;
    this.incoming = facts;
    try {
      this.server.emit('connection', socket);
    } finally {
      this.incoming = null;
    }
  }

  private session(s: TaggedSession): void {
    const facts = this.incoming;
    if (facts === null) {
      s.destroy();
      return;
    }
    s[kFacts] = facts;
    s[kOpen] = 0;
    s[kIdleSince] = this.deps.clock.now();
    const st = this.deps.settings();
    s[kGuard] = new H2Guard(s, {
      clock: this.deps.clock,
      settingsTimeout: st.settingsTimeout,
      maxHeaderSize: () => this.deps.settings().maxHeaderSize,
      violated: (_session, why) => this.deps.violated(why),
    });
    this.sessions.add(s);
    if (this.sweeper === null) this.sweeper = this.deps.clock.after(1000, sweepAll, this);
    // Errors end the session (node closes it); the reason is the client's doing.
    s.on('error', (err: Error) => {
      if (this.deps.log.isLevelEnabled('debug')) this.deps.log.debug({ client: facts.ip, err: (err as NodeJS.ErrnoException).code ?? err.message }, 'HTTP/2 connection error');
    });
    s.once('close', () => this.sessions.delete(s));
    // An idle connection (no stream open) closes after the keep-alive timeout, as an
    // HTTP/1.1 one does: GOAWAY first; a client still silent a timeout later (one
    // that stopped mid-frame, say, which a graceful close would wait for) is cut.
    // ('on', not setTimeout's callback: node registers that once, and a timeout that
    // fires while a stream is open must come again once the session is idle.)
    s.setTimeout(st.keepAlive);
    s.on('timeout', () => {
      if ((s[kOpen] ?? 0) !== 0 || s.closed) return;
      s.close();
      const cut = this.deps.clock.after(this.deps.settings().keepAlive, (x: ServerHttp2Session) => x.destroy(), s);
      s.once('close', () => this.deps.clock.cancel(cut));
    });
  }

  private stream(stream: FrontStream, headers: IncomingHttpHeaders, raw: string[]): void {
    const session = stream.session as TaggedSession | undefined;
    // (Listeners shared by every stream, which finds its session and front by its tags: no closures per request.)
    stream.on('error', ignoreStreamError);
    const guard = session?.[kGuard];
    const facts = session?.[kFacts];
    if (session === undefined || guard === undefined || facts === undefined) {
      resetStream(stream, http2.constants.NGHTTP2_REFUSED_STREAM);
      return;
    }
    session[kOpen] = (session[kOpen] ?? 0) + 1;
    stream[kSessionOf] = session;
    stream[kFront] = this;
    stream.on('close', onFrontStreamClose);
    // Every stream has the idle timeout, whatever becomes of it (an exchange, a
    // refusal, berth's answer with the client's half still open).
    stream.setTimeout(this.deps.settings().idle);
    stream.on('timeout', onFrontStreamTimeout);
    // (While stopping too: a stream the client opened before the final GOAWAY is served.)
    const verdict = guard.stream(stream, raw);
    if (verdict === 'ended') resetStream(stream, http2.constants.NGHTTP2_REFUSED_STREAM);
    else this.deps.request(stream, headers, raw, facts, verdict);
  }

  /** A stream closed: its session has one fewer open (idle since now when none is left). */
  streamClosed(session: TaggedSession): void {
    session[kOpen] = (session[kOpen] ?? 1) - 1;
    if (session[kOpen] === 0) session[kIdleSince] = this.deps.clock.now();
  }

  /** A stream had no traffic for the idle timeout: reset, unless its exchange waits on the endpoint. */
  streamTimedOut(stream: ServerHttp2Stream): void {
    if (!stream.closed && !this.deps.streamIdle(stream)) resetStream(stream, http2.constants.NGHTTP2_CANCEL);
  }

  /**
   * Once a second while there are sessions: each one's hidden refusals, and a
   * backstop for idle ones. A session with no stream open for twice the keep-alive
   * timeout is cut, whatever node's own timers did: node 20 leaves a session whose
   * peer broke the protocol open after its GOAWAY, with no event at all.
   */
  sweep(): void {
    this.sweeper = null;
    const now = this.deps.clock.now();
    const limit = 2 * this.deps.settings().keepAlive;
    for (const s of this.sessions as Set<TaggedSession>) {
      s[kGuard]?.sweep();
      if ((s[kOpen] ?? 0) === 0 && now - (s[kIdleSince] ?? now) >= limit) s.destroy();
    }
    if (this.sessions.size > 0) this.sweeper = this.deps.clock.after(1000, sweepAll, this);
  }

  /**
   * Stops taking connections; open sessions are told and end once their streams
   * have. Two GOAWAYs (RFC 9113 §6.8): the first names the highest stream id there
   * can be, so a stream the client opens while it is on its way is still served;
   * after a round trip (a PING's answer: the client has read the first by then) the
   * final one names the last stream berth took, and nothing later is.
   */
  close(): void {
    this.closing = true;
    for (const s of this.sessions) {
      if (s.closed || s.destroyed) continue;
      s.goaway(NGHTTP2_NO_ERROR, 2 ** 31 - 1);
      if (!s.ping(() => s.close())) s.close();
    }
  }

  /** Ends every session now. */
  destroyAll(): void {
    for (const s of this.sessions) s.destroy();
    this.deps.clock.cancel(this.sweeper);
    this.sweeper = null;
  }
}

function sweepAll(f: H2Front): void {
  f.sweep();
}

const kSessionOf = Symbol('berth.h2.sessionOf');
const kFront = Symbol('berth.h2.front');
/** A client's stream, tagged with its session (node forgets it when the stream is destroyed, before 'close') and its front. */
type FrontStream = ServerHttp2Stream & { [kSessionOf]?: TaggedSession; [kFront]?: H2Front };
function onFrontStreamClose(this: FrontStream): void {
  const session = this[kSessionOf];
  if (session !== undefined) this[kFront]?.streamClosed(session);
}
function onFrontStreamTimeout(this: FrontStream): void {
  this[kFront]?.streamTimedOut(this);
}
function ignoreStreamError(): void {
  // A reset or a broken stream: its exchange learns it from 'close'.
}
