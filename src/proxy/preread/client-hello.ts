/**
 * The TLS ClientHello, read before a tcp listener picks where a connection goes
 * (TLS passthrough routed by SNI): reassembled from any number of TCP segments and
 * TLS records, bounded in bytes, never decrypted or changed. PURE: bytes in,
 * verdict out; the socket side is chain.ts.
 *
 * A hello may arrive one byte per segment, span several handshake records (a
 * post-quantum key share makes it ~1.5 KB; OpenSSL splits at its record size), and
 * a hostile client may drip 64 KiB: the reader parses each record once, when it is
 * whole, so the work per connection stays linear in its bytes.
 */

/** What the reader has made of the bytes so far. */
export type HelloVerdict =
  | { readonly kind: 'more' }
  /** A whole ClientHello: its server name (lower case, no trailing dot) and ALPN protocols. */
  | { readonly kind: 'hello'; readonly sni: string | null; readonly alpn: readonly string[] }
  /** The first byte is not a TLS handshake record: not TLS (or SSLv2), no SNI to route by. */
  | { readonly kind: 'not-tls' }
  | { readonly kind: 'malformed'; readonly why: string }
  | { readonly kind: 'too-large' };

const RECORD_HANDSHAKE = 0x16;
const HANDSHAKE_CLIENT_HELLO = 0x01;
const EXT_SERVER_NAME = 0x0000;
const EXT_ALPN = 0x0010;
/** A TLSPlaintext fragment is at most 2^14 bytes (RFC 8446 §5.1). */
const MAX_FRAGMENT = 16_384;

const MORE: HelloVerdict = { kind: 'more' };
const NOT_TLS: HelloVerdict = { kind: 'not-tls' };

/** A host name as SNI may carry it (RFC 6066 §3: a DNS name, no IP literal, ASCII). */
const HOST_RE = /^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$/;

/**
 * Reads a ClientHello from the bytes a client sends, chunk by chunk. `max`: the
 * most bytes it will hold before it gives up ('too-large').
 *
 * Every byte goes into one buffer of its own (grown by doubling, never past `max`
 * and a chunk): a client dripping one byte per segment costs a byte each, not a held
 * chunk object each.
 */
export class HelloReader {
  /** Every byte received, in `data[0, length)` (relayed unchanged once the verdict is in). */
  private data: Buffer = Buffer.alloc(0);
  private length = 0;
  /** Where the next record starts in `data`. */
  private pos = 0;
  /** How many bytes past `pos` the next step needs: nothing is parsed before. */
  private need = 1;
  /** The handshake layer's bytes: [start, end) of each record's fragment in `data`. */
  private fragments: number[] = [];
  private handshakeBytes = 0;
  /** Handshake bytes needed before the message is looked at: its header, then all of it. */
  private handshakeNeed = 4;
  private verdict: HelloVerdict = MORE;

  constructor(private readonly max = 65_536) {}

  /** Everything received so far. */
  held(): Buffer {
    return this.data.subarray(0, this.length);
  }

  /** Takes the next chunk the client sent; returns the verdict ('more' until there is one). */
  push(chunk: Buffer): HelloVerdict {
    if (this.verdict.kind !== 'more') return this.verdict;
    const end = this.length + chunk.length;
    if (end > this.data.length) {
      const grown = Buffer.allocUnsafe(Math.max(end, Math.min(this.max + chunk.length, Math.max(512, this.data.length * 2))));
      this.data.copy(grown, 0, 0, this.length);
      this.data = grown;
    }
    chunk.copy(this.data, this.length);
    this.length = end;
    if (this.length - this.pos >= this.need) this.verdict = this.read();
    if (this.verdict.kind === 'more' && this.length >= this.max) this.verdict = { kind: 'too-large' };
    return this.verdict;
  }

  private read(): HelloVerdict {
    for (;;) {
      const v = this.record();
      if (typeof v === 'number') {
        this.need = v;
        return MORE;
      }
      if (v !== null) return v;
    }
  }

  /**
   * One record at `pos`: the bytes it still needs (a number), a verdict, or null
   * when a record was taken and the hello is not yet whole.
   */
  private record(): number | HelloVerdict | null {
    const p = this.data;
    const at = this.pos;
    const have = this.length - at;
    // Before the first record is whole, a wrong type or version means "not TLS"; after, a broken hello.
    const first = this.handshakeBytes === 0;
    if (have === 0) return 1;
    if (p[at] !== RECORD_HANDSHAKE) return first ? NOT_TLS : { kind: 'malformed', why: `record type ${p[at]} inside the hello` };
    if (have < 2) return 2;
    if (p[at + 1] !== 0x03) return first ? NOT_TLS : { kind: 'malformed', why: 'record version' };
    if (have < 5) return 5;
    const len = p.readUInt16BE(at + 3);
    if (len === 0 || len > MAX_FRAGMENT) return { kind: 'malformed', why: `record length ${len}` };
    if (have < 5 + len) return 5 + len;
    this.fragments.push(at + 5, at + 5 + len);
    this.handshakeBytes += len;
    this.pos = at + 5 + len;
    this.need = 1;
    const v = this.message();
    return v === MORE ? null : v;
  }

  /** The handshake message, once its bytes are all in (joined only then: tiny records cost no copies). */
  private message(): HelloVerdict {
    if (this.handshakeBytes < this.handshakeNeed) return MORE;
    const f = this.fragments;
    const parts: Buffer[] = [];
    for (let i = 0; i < f.length; i += 2) parts.push(this.data.subarray(f[i]!, f[i + 1]!));
    const h = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    if (h[0] !== HANDSHAKE_CLIENT_HELLO) return { kind: 'malformed', why: `handshake type ${h[0]} first` };
    const len = h.readUIntBE(1, 3);
    if (len + 4 > this.max) return { kind: 'too-large' };
    this.handshakeNeed = 4 + len;
    if (h.length < 4 + len) return MORE;
    // (Bytes past the hello in its record are the client's next message: relayed, not read.)
    return parseHelloBody(Buffer.from(h.subarray(4, 4 + len)));
  }
}

/** The ClientHello body (RFC 8446 §4.1.2; TLS 1.0–1.2 share its layout). */
export function parseHelloBody(b: Buffer): HelloVerdict {
  const bad = (why: string): HelloVerdict => ({ kind: 'malformed', why });
  let o = 2 + 32; // legacy_version, random
  if (b.length < o + 1) return bad('short hello');
  o += 1 + b[o]!; // session id
  if (b.length < o + 2) return bad('short hello');
  const suites = b.readUInt16BE(o);
  if (suites === 0 || suites % 2 !== 0) return bad('cipher suites');
  o += 2 + suites;
  if (b.length < o + 1) return bad('short hello');
  o += 1 + b[o]!; // compression methods
  if (o > b.length) return bad('short hello');
  let sni: string | null = null;
  const alpn: string[] = [];
  // No extensions at all (an old client): no SNI.
  if (o === b.length) return { kind: 'hello', sni, alpn };
  if (b.length < o + 2) return bad('extensions length');
  const extEnd = o + 2 + b.readUInt16BE(o);
  if (extEnd !== b.length) return bad('extensions length');
  o += 2;
  const seen = new Set<number>();
  while (o < extEnd) {
    if (o + 4 > extEnd) return bad('extension header');
    const type = b.readUInt16BE(o);
    const len = b.readUInt16BE(o + 2);
    o += 4;
    if (o + len > extEnd) return bad('extension length');
    // RFC 8446 §4.2: no extension type twice.
    if (seen.has(type)) return bad(`extension ${type} twice`);
    seen.add(type);
    const v = b.subarray(o, o + len);
    o += len;
    if (type === EXT_SERVER_NAME) {
      const r = serverName(v);
      if (typeof r !== 'string' && r !== null) return r;
      sni = r;
    } else if (type === EXT_ALPN) {
      const r = protocols(v);
      if (!Array.isArray(r)) return r as HelloVerdict;
      alpn.push(...r);
    }
  }
  return { kind: 'hello', sni, alpn };
}

/** server_name extension → the host name (null when it names none). */
function serverName(v: Buffer): string | null | HelloVerdict {
  if (v.length === 0) return null;
  if (v.length < 2 || v.readUInt16BE(0) !== v.length - 2) return { kind: 'malformed', why: 'server_name list length' };
  let o = 2;
  let host: string | null = null;
  while (o < v.length) {
    if (o + 3 > v.length) return { kind: 'malformed', why: 'server_name entry' };
    const type = v[o]!;
    const len = v.readUInt16BE(o + 1);
    o += 3;
    if (o + len > v.length) return { kind: 'malformed', why: 'server_name entry length' };
    if (type === 0) {
      if (host !== null) return { kind: 'malformed', why: 'two host names' };
      let name = v.subarray(o, o + len).toString('latin1').toLowerCase();
      if (name.endsWith('.')) name = name.slice(0, -1);
      if (name.length === 0 || name.length > 253 || !HOST_RE.test(name)) return { kind: 'malformed', why: 'server name is not a host name' };
      host = name;
    }
    o += len;
  }
  return host;
}

/** ALPN extension → the protocol names. */
function protocols(v: Buffer): string[] | HelloVerdict {
  if (v.length < 2 || v.readUInt16BE(0) !== v.length - 2) return { kind: 'malformed', why: 'ALPN list length' };
  const out: string[] = [];
  let o = 2;
  while (o < v.length) {
    const len = v[o]!;
    if (len === 0 || o + 1 + len > v.length) return { kind: 'malformed', why: 'ALPN entry' };
    out.push(v.subarray(o + 1, o + 1 + len).toString('latin1'));
    o += 1 + len;
  }
  return out;
}
