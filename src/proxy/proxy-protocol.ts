/**
 * PROXY protocol headers (HAProxy's spec, v1 text and v2 binary) sent to an
 * endpoint ahead of the client's bytes, so it learns the client's address; v2 also
 * carries the TLS facts of a terminated connection (PP2_TYPE_SSL and sub-TLVs).
 */
import net from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { PeerIdentity } from '../core/tls.js';
import { plainAddress } from './preread/trust.js';

const SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const PP2_TYPE_ALPN = 0x01;
const PP2_TYPE_AUTHORITY = 0x02;
const PP2_TYPE_SSL = 0x20;
const PP2_SUBTYPE_SSL_VERSION = 0x21;
const PP2_SUBTYPE_SSL_CN = 0x22;
const PP2_SUBTYPE_SSL_CIPHER = 0x23;
const PP2_CLIENT_SSL = 0x01;
const PP2_CLIENT_CERT_CONN = 0x02;
const PP2_CLIENT_CERT_SESS = 0x04;

function tlv(type: number, value: Buffer): Buffer {
  const h = Buffer.alloc(3);
  h[0] = type;
  h.writeUInt16BE(value.length, 1);
  return Buffer.concat([h, value]);
}

function unmapped(addr: string | undefined): string | undefined {
  return addr === undefined ? undefined : plainAddress(addr);
}

/** The TLS facts of a terminated client connection, for v2. */
export interface TlsFacts {
  readonly socket: TLSSocket;
  readonly identity: PeerIdentity | null;
}

/** A client's source and the address it connected to (its own, or what a front balancer's PROXY header said). */
export interface ClientAddresses {
  readonly source: string | undefined;
  readonly sourcePort: number | undefined;
  readonly destination: string | undefined;
  readonly destinationPort: number | undefined;
}

/** A socket's own addresses. */
export function socketAddresses(s: net.Socket): ClientAddresses {
  return { source: s.remoteAddress, sourcePort: s.remotePort, destination: s.localAddress, destinationPort: s.localPort };
}

/**
 * The header for a client (its source and the address it connected to), or an
 * UNKNOWN/LOCAL header when the addresses are not both IPv4 or both IPv6.
 */
export function proxyHeader(version: 'v1' | 'v2', client: ClientAddresses, tlsFacts: TlsFacts | null): Buffer {
  const src = unmapped(client.source);
  const dst = unmapped(client.destination);
  const sport = client.sourcePort ?? 0;
  const dport = client.destinationPort ?? 0;
  const fam = src && dst && net.isIPv4(src) && net.isIPv4(dst) ? 4 : src && dst && net.isIPv6(src) && net.isIPv6(dst) ? 6 : 0;
  if (version === 'v1') {
    if (fam === 0) return Buffer.from('PROXY UNKNOWN\r\n', 'latin1');
    return Buffer.from(`PROXY TCP${fam} ${src} ${dst} ${sport} ${dport}\r\n`, 'latin1');
  }
  let addr: Buffer;
  if (fam === 4) {
    addr = Buffer.alloc(12);
    Buffer.from(src!.split('.').map(Number)).copy(addr, 0);
    Buffer.from(dst!.split('.').map(Number)).copy(addr, 4);
    addr.writeUInt16BE(sport, 8);
    addr.writeUInt16BE(dport, 10);
  } else if (fam === 6) {
    addr = Buffer.alloc(36);
    ipv6Bytes(src!).copy(addr, 0);
    ipv6Bytes(dst!).copy(addr, 16);
    addr.writeUInt16BE(sport, 32);
    addr.writeUInt16BE(dport, 34);
  } else {
    addr = Buffer.alloc(0);
  }
  const tlvs: Buffer[] = [];
  if (tlsFacts) {
    const s = tlsFacts.socket;
    if (typeof s.alpnProtocol === 'string' && s.alpnProtocol !== '') tlvs.push(tlv(PP2_TYPE_ALPN, Buffer.from(s.alpnProtocol)));
    const sni = (s as TLSSocket & { servername?: string | false }).servername;
    if (typeof sni === 'string' && sni !== '') tlvs.push(tlv(PP2_TYPE_AUTHORITY, Buffer.from(sni)));
    const id = tlsFacts.identity;
    const head = Buffer.alloc(5);
    head[0] = PP2_CLIENT_SSL | (id ? PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS : 0);
    // verify: 0 = the client certificate was verified (berth refuses the others).
    head.writeUInt32BE(0, 1);
    const sub = [tlv(PP2_SUBTYPE_SSL_VERSION, Buffer.from(s.getProtocol() ?? ''))];
    if (id?.cn !== undefined) sub.push(tlv(PP2_SUBTYPE_SSL_CN, Buffer.from(id.cn)));
    const cipher = s.getCipher();
    if (cipher) sub.push(tlv(PP2_SUBTYPE_SSL_CIPHER, Buffer.from(cipher.name)));
    tlvs.push(tlv(PP2_TYPE_SSL, Buffer.concat([head, ...sub])));
  }
  const body = Buffer.concat([addr, ...tlvs]);
  const h = Buffer.alloc(16);
  SIGNATURE.copy(h, 0);
  // Version 2; PROXY command (LOCAL when the family is unknown).
  h[12] = fam === 0 ? 0x20 : 0x21;
  h[13] = fam === 4 ? 0x11 : fam === 6 ? 0x21 : 0x00;
  h.writeUInt16BE(body.length, 14);
  return Buffer.concat([h, body]);
}

function ipv6Bytes(a: string): Buffer {
  const out = Buffer.alloc(16);
  const [head, tail] = a.split('::') as [string, string | undefined];
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined ? [] : tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}
