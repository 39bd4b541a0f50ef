/**
 * The PROXY protocol header a front balancer (an AWS NLB, HAProxy, another berth)
 * puts before a client's bytes (HAProxy's doc/proxy-protocol.txt, v1 text and v2
 * binary). PURE: bytes in, verdict out; which peers must send one is chain.ts's.
 *
 * Strict as the spec asks: from a peer that must send a header, anything else is a
 * violation (never guessed at); v1's line within 107 bytes; v2's length exact, its
 * TLVs filling it exactly, its CRC32C checked when present.
 */
import net from 'node:net';

/** Where the client really came from and what it connected to, as the header says. */
export interface ProxiedAddresses {
  readonly family: 'tcp4' | 'tcp6' | 'udp4' | 'udp6';
  readonly source: string;
  readonly sourcePort: number;
  readonly destination: string;
  readonly destinationPort: number;
}

/** What a v2 header's TLVs told (only the ones berth uses or shows). */
export interface ProxyTlvs {
  readonly alpn?: string;
  readonly authority?: string;
  readonly uniqueId?: Buffer;
  /** PP2_TYPE_SSL: the client spoke TLS to the front balancer. */
  readonly ssl?: { readonly verified: boolean; readonly version?: string; readonly cn?: string; readonly cipher?: string };
}

export type ProxyVerdict =
  | { readonly kind: 'more' }
  /**
   * A whole header of `length` bytes. `addresses` null: LOCAL (a health check of
   * the balancer's own), UNKNOWN or an unspecified/unix family — the connection's
   * own addresses stand.
   */
  | { readonly kind: 'header'; readonly version: 1 | 2; readonly length: number; readonly addresses: ProxiedAddresses | null; readonly tlvs: ProxyTlvs }
  /** The bytes are no PROXY header at all. */
  | { readonly kind: 'missing' }
  | { readonly kind: 'malformed'; readonly why: string };

export const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V1_PREFIX = Buffer.from('PROXY ', 'latin1');
/** v1: the longest line, CRLF included (spec §2.1). */
const V1_MAX = 107;
/** v2: the header with the longest address block (unix) and TLVs is bounded by its 16-bit length. */
export const V2_MAX = 16 + 65_535;

const MORE: ProxyVerdict = { kind: 'more' };

const PP2_TYPE_ALPN = 0x01;
const PP2_TYPE_AUTHORITY = 0x02;
const PP2_TYPE_CRC32C = 0x03;
const PP2_TYPE_NOOP = 0x04;
const PP2_TYPE_UNIQUE_ID = 0x05;
const PP2_TYPE_SSL = 0x20;
const PP2_SUBTYPE_SSL_VERSION = 0x21;
const PP2_SUBTYPE_SSL_CN = 0x22;
const PP2_SUBTYPE_SSL_CIPHER = 0x23;
const PP2_TYPE_NETNS = 0x30;

/**
 * After a 'more' verdict: how many bytes the header needs before it is worth parsing
 * again (v2: its whole length once the fixed part is in; v1: one more byte).
 */
export function proxyHeaderNeeds(buf: Buffer): number {
  if (buf[0] === V2_SIGNATURE[0]) return buf.length >= 16 ? 16 + buf.readUInt16BE(14) : 16;
  return buf.length + 1;
}

/** Reads a header from the front of `buf` (all bytes received so far). */
export function parseProxyHeader(buf: Buffer): ProxyVerdict {
  if (buf.length === 0) return MORE;
  if (buf[0] === V1_PREFIX[0]) return v1(buf);
  if (buf[0] === V2_SIGNATURE[0]) return v2(buf);
  return { kind: 'missing' };
}

function prefixMatches(buf: Buffer, prefix: Buffer): boolean | null {
  const n = Math.min(buf.length, prefix.length);
  for (let i = 0; i < n; i++) if (buf[i] !== prefix[i]) return false;
  return n === prefix.length ? true : null;
}

const PORT_RE = /^(0|[1-9][0-9]{0,4})$/;

function port(s: string | undefined): number {
  if (s === undefined || !PORT_RE.test(s)) return -1;
  const n = Number(s);
  return n <= 65_535 ? n : -1;
}

function v1(buf: Buffer): ProxyVerdict {
  const m = prefixMatches(buf, V1_PREFIX);
  if (m === false) return { kind: 'missing' };
  if (m === null) return MORE;
  const end = buf.indexOf('\r\n', 0, 'latin1');
  if (end < 0 || end + 2 > V1_MAX) {
    if (buf.length >= V1_MAX || (end >= 0 && end + 2 > V1_MAX)) return { kind: 'malformed', why: `v1 line longer than ${V1_MAX} bytes` };
    // A lone LF inside the line is no header either.
    if (buf.indexOf(0x0a) >= 0) return { kind: 'malformed', why: 'v1 line not ended by CRLF' };
    return MORE;
  }
  const line = buf.subarray(0, end).toString('latin1');
  const length = end + 2;
  const parts = line.split(' ');
  if (parts[1] === 'UNKNOWN') return { kind: 'header', version: 1, length, addresses: null, tlvs: {} };
  if (parts.length !== 6 || (parts[1] !== 'TCP4' && parts[1] !== 'TCP6')) return { kind: 'malformed', why: 'v1 line: expected PROXY TCP4|TCP6 src dst sport dport' };
  const [, proto, src, dst, sp, dp] = parts as [string, 'TCP4' | 'TCP6', string, string, string, string];
  const want = proto === 'TCP4' ? 4 : 6;
  if (net.isIP(src) !== want || net.isIP(dst) !== want) return { kind: 'malformed', why: `v1 addresses are not ${proto}` };
  const sourcePort = port(sp);
  const destinationPort = port(dp);
  if (sourcePort < 0 || destinationPort < 0) return { kind: 'malformed', why: 'v1 ports' };
  return { kind: 'header', version: 1, length, addresses: { family: want === 4 ? 'tcp4' : 'tcp6', source: src, sourcePort, destination: dst, destinationPort }, tlvs: {} };
}

function v2(buf: Buffer): ProxyVerdict {
  const m = prefixMatches(buf, V2_SIGNATURE);
  if (m === false) return { kind: 'missing' };
  if (m === null || buf.length < 16) return MORE;
  const verCmd = buf[12]!;
  if (verCmd >> 4 !== 2) return { kind: 'malformed', why: `v2 version ${verCmd >> 4}` };
  const cmd = verCmd & 0x0f;
  if (cmd > 1) return { kind: 'malformed', why: `v2 command ${cmd}` };
  const fam = buf[13]!;
  const len = buf.readUInt16BE(14);
  const length = 16 + len;
  if (buf.length < length) return MORE;
  const body = buf.subarray(16, length);
  let addrLen: number;
  switch (fam) {
    case 0x00:
      addrLen = 0;
      break;
    case 0x11:
    case 0x12:
      addrLen = 12;
      break;
    case 0x21:
    case 0x22:
      addrLen = 36;
      break;
    case 0x31:
    case 0x32:
      addrLen = 216;
      break;
    default:
      return { kind: 'malformed', why: `v2 family 0x${fam.toString(16)}` };
  }
  if (len < addrLen) return { kind: 'malformed', why: `v2 length ${len} shorter than its addresses (${addrLen})` };
  const tlvs = parseTlvs(buf.subarray(0, length), 16 + addrLen);
  if (typeof tlvs === 'string') return { kind: 'malformed', why: tlvs };
  // LOCAL: the balancer's own connection (a health check): no client address to believe.
  if (cmd === 0) return { kind: 'header', version: 2, length, addresses: null, tlvs };
  let addresses: ProxiedAddresses | null = null;
  if (addrLen === 12) {
    addresses = {
      family: fam === 0x11 ? 'tcp4' : 'udp4',
      source: `${body[0]}.${body[1]}.${body[2]}.${body[3]}`,
      destination: `${body[4]}.${body[5]}.${body[6]}.${body[7]}`,
      sourcePort: body.readUInt16BE(8),
      destinationPort: body.readUInt16BE(10),
    };
  } else if (addrLen === 36) {
    addresses = { family: fam === 0x21 ? 'tcp6' : 'udp6', source: ipv6(body, 0), destination: ipv6(body, 16), sourcePort: body.readUInt16BE(32), destinationPort: body.readUInt16BE(34) };
  }
  return { kind: 'header', version: 2, length, addresses, tlvs };
}

function ipv6(b: Buffer, at: number): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(at + i).toString(16));
  // The canonical text form (zeros compressed), as node reports addresses.
  const text = groups.join(':');
  return new net.SocketAddress({ address: text, family: 'ipv6' }).address;
}

/** The TLVs from `at` to the end of `header` (the whole header, for the CRC); a string says what is wrong. */
function parseTlvs(header: Buffer, at: number): ProxyTlvs | string {
  const out: { alpn?: string; authority?: string; uniqueId?: Buffer; ssl?: { verified: boolean; version?: string; cn?: string; cipher?: string } } = {};
  let o = at;
  let crcSeen = false;
  while (o < header.length) {
    if (o + 3 > header.length) return 'v2 TLV header cut short';
    const type = header[o]!;
    const len = header.readUInt16BE(o + 1);
    const v = header.subarray(o + 3, o + 3 + len);
    if (o + 3 + len > header.length) return `v2 TLV 0x${type.toString(16)} longer than the header`;
    switch (type) {
      case PP2_TYPE_ALPN:
        out.alpn = v.toString('latin1');
        break;
      case PP2_TYPE_AUTHORITY:
        out.authority = v.toString('utf8');
        break;
      case PP2_TYPE_CRC32C: {
        if (len !== 4) return 'v2 CRC32C TLV is not 4 bytes';
        // One checksum per header: a second would make a hostile header hash itself thousands of times.
        if (crcSeen) return 'v2 CRC32C TLV twice';
        crcSeen = true;
        const want = v.readUInt32BE(0);
        const copy = Buffer.from(header);
        copy.fill(0, o + 3, o + 7);
        if (crc32c(copy) !== want) return 'v2 CRC32C mismatch';
        break;
      }
      case PP2_TYPE_UNIQUE_ID:
        if (len > 128) return 'v2 UNIQUE_ID longer than 128 bytes';
        out.uniqueId = Buffer.from(v);
        break;
      case PP2_TYPE_SSL: {
        if (len < 5) return 'v2 SSL TLV shorter than 5 bytes';
        const ssl: { verified: boolean; version?: string; cn?: string; cipher?: string } = { verified: v.readUInt32BE(1) === 0 && (v[0]! & 0x01) !== 0 };
        let s = 5;
        while (s < v.length) {
          if (s + 3 > v.length) return 'v2 SSL sub-TLV cut short';
          const st = v[s]!;
          const sl = v.readUInt16BE(s + 1);
          if (s + 3 + sl > v.length) return 'v2 SSL sub-TLV longer than its TLV';
          const sv = v.subarray(s + 3, s + 3 + sl).toString('utf8');
          if (st === PP2_SUBTYPE_SSL_VERSION) ssl.version = sv;
          else if (st === PP2_SUBTYPE_SSL_CN) ssl.cn = sv;
          else if (st === PP2_SUBTYPE_SSL_CIPHER) ssl.cipher = sv;
          s += 3 + sl;
        }
        out.ssl = ssl;
        break;
      }
      case PP2_TYPE_NOOP:
      case PP2_TYPE_NETNS:
      default:
        // Unknown types are skipped (the spec: a receiver ignores what it does not know).
        break;
    }
    o += 3 + len;
  }
  return out;
}

let table: Uint32Array | null = null;

/** CRC-32C (Castagnoli), as the v2 CRC32C TLV carries it. */
export function crc32c(b: Uint8Array): number {
  if (table === null) {
    table = new Uint32Array(256);
    for (let i = 0; i < 256; i++) {
      let c = i;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
      table[i] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (let i = 0; i < b.length; i++) crc = table[(crc ^ b[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}
