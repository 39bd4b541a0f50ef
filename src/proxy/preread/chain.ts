/**
 * What a listener reads from a client before it picks an endpoint, in the order the
 * bytes come: a PROXY header from a trusted front balancer, then (a tcp listener
 * that routes by SNI) the TLS ClientHello. One timer bounds it all; every byte read
 * past the PROXY header is held and relayed unchanged to the endpoint.
 *
 * A listener that needs none of it never reads before connecting (server-speaks-first
 * protocols — SMTP, MySQL — would hang behind a proxy that waits for the client).
 */
import net from 'node:net';
import type { Clock, Timer } from '../../core/clock.js';
import { trustList } from './trust.js';
import type { ProxyProtocolResult } from '../../core/observer.js';
import { HelloReader, type HelloVerdict } from './client-hello.js';
import { parseProxyHeader, proxyHeaderNeeds, V2_MAX, type ProxiedAddresses, type ProxyTlvs } from './proxy-header.js';

/** PROXY protocol from a front balancer: who must send a header, and what to do with the rest. */
export interface AcceptProxy {
  /** Peers that must send a header (a v1 or v2 header is required from them). */
  readonly trusted: net.BlockList;
  /** Any other peer: refused and counted, or served as it is, without a header. */
  readonly untrusted: 'refuse' | 'ignore';
}

/** A listener's `acceptProxy` setting, its addresses made a BlockList (null: no PROXY header is read). */
export function acceptProxyOf(ap: { readonly trusted: readonly string[]; readonly untrusted: 'refuse' | 'ignore' } | null | undefined): AcceptProxy | null {
  return ap === null || ap === undefined ? null : { trusted: trustList(ap.trusted), untrusted: ap.untrusted };
}

export interface PrereadSettings {
  readonly acceptProxy: AcceptProxy | null;
  /** Read the ClientHello (the listener routes by SNI). */
  readonly hello: boolean;
  /** PostgreSQL in front of the hello: an SSLRequest is answered 'S' (a GSSENCRequest 'N'). */
  readonly postgres?: boolean;
  /** Everything read within this (ms, from accept). */
  readonly timeout: number;
  /** The most bytes held (past it: the hello is too large). */
  readonly max: number;
}

/** What was read: the client as the front balancer saw it, the hello, and the bytes to relay. */
export interface Preread {
  /** From a PROXY header (null: the connection's own addresses stand). */
  readonly proxied: ProxiedAddresses | null;
  readonly tlvs: ProxyTlvs | null;
  /**
   * The ClientHello's verdict when one was read: 'hello', 'not-tls', or why reading
   * stopped ('timeout', 'too-large', 'malformed'; the client may still go to a catch-all).
   */
  readonly hello: HelloVerdict | { readonly kind: 'timeout' } | null;
  /** Bytes the client sent past the PROXY header (and the SSLRequest berth answered): relayed first. */
  readonly held: Buffer;
  /** The client asked for TLS with a PostgreSQL SSLRequest, which berth answered: the endpoint is asked the same. */
  readonly sslRequest: boolean;
}

export interface PrereadUser {
  /** The PROXY stage's result (once per connection that had one). */
  proxyResult(result: ProxyProtocolResult, why: string): void;
  /** Read: route and connect. */
  ready(p: Preread): void;
  /** Refused (bad PROXY header, untrusted peer, a timeout before the header): close the client. */
  refused(): void;
}

const kPreread = Symbol('berth.preread');
type Tagged = net.Socket & { [kPreread]?: PrereadReader | undefined };

function onData(this: Tagged, chunk: Buffer): void {
  this[kPreread]?.data(chunk);
}
function onEnd(this: Tagged): void {
  this[kPreread]?.ended();
}
function onError(this: Tagged): void {
  this[kPreread]?.failed();
}
function onTimeout(r: PrereadReader): void {
  r.timedOut();
}

const EMPTY = Buffer.alloc(0);

/** Whether a listener with these settings reads anything before connecting. */
export function prereads(s: PrereadSettings): boolean {
  return s.acceptProxy !== null || s.hello || s.postgres === true;
}

/**
 * Reads the preread stages from `socket` (paused, as the gate accepted it) and
 * tells `user`; the socket is paused again and its listeners removed before
 * `ready` or `refused`.
 */
export class PrereadReader {
  private buf: Buffer = EMPTY;
  private stage: 'proxy' | 'postgres' | 'hello' | 'done' = 'proxy';
  private sslRequest = false;
  /** The PROXY stage's bytes so far, and how many it needs before it is parsed again. */
  private parts: Buffer[] = [];
  private partBytes = 0;
  private proxyNeed = 1;
  private gssRequests = 0;
  private proxied: ProxiedAddresses | null = null;
  private tlvs: ProxyTlvs | null = null;
  private reader: HelloReader | null = null;
  private timer: Timer | null = null;

  constructor(
    private readonly socket: net.Socket,
    private readonly settings: PrereadSettings,
    private readonly clock: Clock,
    private readonly user: PrereadUser,
  ) {}

  /** `peer`: the connection's source address (who must send a PROXY header). */
  start(peer: string, family: 'ipv4' | 'ipv6'): void {
    const ap = this.settings.acceptProxy;
    const trusted = ap !== null && ap.trusted.check(peer, family);
    if (ap !== null && !trusted && ap.untrusted === 'refuse') {
      this.stage = 'done';
      this.user.proxyResult('untrusted', `${peer} is not a trusted proxy`);
      this.user.refused();
      return;
    }
    if (trusted) this.stage = 'proxy';
    else if (!this.afterProxy()) return;
    const s = this.socket as Tagged;
    s[kPreread] = this;
    s.on('data', onData);
    s.on('end', onEnd);
    s.on('error', onError);
    if (this.settings.timeout > 0) this.timer = this.clock.after(this.settings.timeout, onTimeout, this);
    s.resume();
  }

  /**
   * Starts on the connection's own peer (`peer`: its plain address, asked for only
   * when a PROXY stage needs it, a getpeername() syscall); a connection already gone
   * before it (no peer address) is refused.
   */
  startOnPeer(peer: () => string): void {
    if (this.settings.acceptProxy === null) {
      this.start('', 'ipv4');
      return;
    }
    if (this.socket.remoteAddress === undefined) {
      this.stage = 'done';
      this.user.refused();
      return;
    }
    const p = peer();
    this.start(p, net.isIPv6(p) ? 'ipv6' : 'ipv4');
  }

  /** @internal the client reset (or the socket failed) before the stages were read. */
  failed(): void {
    if (this.stage === 'done') return;
    this.detach();
    this.user.refused();
  }

  /** @internal */
  data(chunk: Buffer): void {
    if (this.stage === 'proxy') {
      this.parts.push(chunk);
      this.partBytes += chunk.length;
      // Joined (and parsed) only once the bytes the header needs are in: a header sent
      // a byte at a time costs linear work, not a copy of itself per byte.
      if (this.partBytes < this.proxyNeed) return;
      this.buf = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts);
      this.parts = [this.buf];
      const v = parseProxyHeader(this.buf);
      switch (v.kind) {
        case 'more':
          this.proxyNeed = proxyHeaderNeeds(this.buf);
          if (this.buf.length > V2_MAX) this.refuse('malformed', 'header too long');
          return;
        case 'missing':
          this.refuse('missing', 'no PROXY header from a trusted peer');
          return;
        case 'malformed':
          this.refuse('malformed', v.why);
          return;
        case 'header': {
          this.proxied = v.addresses;
          this.tlvs = v.tlvs;
          this.user.proxyResult('ok', `v${v.version}`);
          this.buf = this.buf.subarray(v.length);
          this.parts = [];
          this.afterProxy();
          return;
        }
      }
    }
    if (this.stage === 'postgres') {
      this.postgres(chunk);
      return;
    }
    if (this.stage !== 'hello') return;
    const v = this.reader!.push(chunk);
    if (v.kind !== 'more') this.finish(v);
  }

  /**
   * The next stage after the PROXY header (or without one), fed what is already in
   * `buf`; false when the read is over.
   */
  private afterProxy(): boolean {
    if (this.settings.postgres === true) {
      this.stage = 'postgres';
      return this.feed();
    }
    return this.toHello();
  }

  /** On to the ClientHello (fed what is in `buf`), or done where the listener routes by none. */
  private toHello(): boolean {
    if (!this.settings.hello) {
      this.finish();
      return false;
    }
    this.stage = 'hello';
    this.reader = new HelloReader(this.settings.max);
    return this.feed();
  }

  /** The bytes in `buf`, read again by the stage now current. */
  private feed(): boolean {
    const b = this.buf;
    this.buf = EMPTY;
    if (b.length > 0) this.data(b);
    return this.stage !== 'done';
  }

  /**
   * PostgreSQL's start (protocol 3, §55.2.10-11): an SSLRequest is answered 'S' and the
   * ClientHello follows; a GSSENCRequest is answered 'N' (the client then asks for SSL
   * or starts in the clear); anything else (a CancelRequest, a StartupMessage in the
   * clear) has no TLS and no SNI: the catch-all, with its bytes.
   */
  private postgres(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const b = this.buf;
    if (b[0] === 0x16) {
      // Direct TLS (PostgreSQL 17 sslnegotiation=direct): a hello like any other.
      this.toHello();
      return;
    }
    if (b.length < 8) return;
    const kind = postgresRequest(b);
    if (kind === 'ssl' || (kind === 'gss' && this.gssRequests++ === 0)) {
      this.socket.write(kind === 'ssl' ? 'S' : 'N');
      this.buf = b.subarray(8);
      if (kind === 'ssl') {
        this.sslRequest = true;
        this.toHello();
      } else this.feed();
      return;
    }
    // No TLS coming: what the client sent goes to the catch-all as it is.
    this.finish({ kind: 'not-tls' });
  }

  /** @internal the client half-closed before the stages were read. */
  ended(): void {
    if (this.stage === 'proxy') this.refuse('malformed', 'closed before the header was whole');
    else if (this.stage === 'hello' || this.stage === 'postgres') this.finish({ kind: 'malformed', why: 'closed before the hello was whole' });
  }

  /** @internal */
  timedOut(): void {
    this.timer = null;
    if (this.stage === 'proxy') this.refuse('timeout', `no PROXY header within ${this.settings.timeout}ms`);
    else if (this.stage === 'hello' || this.stage === 'postgres') this.finish({ kind: 'timeout' });
  }

  /** Stops reading (the client went away, or the listener is closing). */
  abort(): void {
    this.detach();
  }

  private refuse(result: ProxyProtocolResult, why: string): void {
    this.user.proxyResult(result, why);
    this.detach();
    this.user.refused();
  }

  private finish(hello?: HelloVerdict | { readonly kind: 'timeout' }): void {
    const held = this.reader !== null ? this.reader.held() : this.buf;
    this.detach();
    this.user.ready({ proxied: this.proxied, tlvs: this.tlvs, hello: hello ?? null, held, sslRequest: this.sslRequest });
  }

  private detach(): void {
    this.stage = 'done';
    this.clock.cancel(this.timer);
    this.timer = null;
    const s = this.socket as Tagged;
    if (s[kPreread] !== this) return;
    s[kPreread] = undefined;
    s.off('data', onData);
    s.off('end', onEnd);
    s.off('error', onError);
    s.pause();
  }
}

/** PostgreSQL's request codes (the protocol's own "version" numbers for them). */
const SSL_REQUEST = 80_877_103;
const GSSENC_REQUEST = 80_877_104;

/** What the first 8 bytes of a PostgreSQL connection ask for. */
export function postgresRequest(b: Buffer): 'ssl' | 'gss' | 'other' {
  if (b.length < 8 || b.readInt32BE(0) !== 8) return 'other';
  const code = b.readInt32BE(4);
  return code === SSL_REQUEST ? 'ssl' : code === GSSENC_REQUEST ? 'gss' : 'other';
}

/** The SSLRequest berth sends an endpoint for a client that asked for TLS. */
export const SSL_REQUEST_BYTES = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
