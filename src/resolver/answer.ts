/**
 * The DNS interface's answers: a query in, a response out, from the pool's pick set.
 * PURE apart from the random shuffle it is given: no sockets (dns-server.ts does those).
 *
 * Names, under the zone `<domain>` (default `berth.`):
 * - `<service>.service.<domain>`: A and AAAA with the addresses of the service's
 *   endpoints in the pick set (healthy, not draining, weight above 0), SRV with one
 *   record per endpoint (its port; target `<hex>.addr.<domain>`, with A/AAAA glue);
 * - `_<service>._tcp.service.<domain>`, `_<service>._udp.service.<domain>`: SRV of the
 *   endpoints of that kind of port;
 * - `<hex>.addr.<domain>`: the address the hex spells (8 digits IPv4, 32 IPv6).
 * Unknown service or none in the pick set: NXDOMAIN with the SOA; a known name
 * without records of the type asked: NODATA (NOERROR, no answer, the SOA); out of
 * the zone: REFUSED; not a well-formed query: FORMERR; not a QUERY: NOTIMP.
 * UDP answers are cut to 512 bytes or the client's EDNS0 size (at most 1232) with
 * whole records and TC set; TCP answers are complete.
 */
import net from 'node:net';
import dnsPacket from 'dns-packet';
import type { Random } from '../core/random.js';

export interface DnsEndpoint {
  readonly host: string;
  readonly port: number;
  readonly weight: number;
  readonly protocol: 'tcp' | 'udp';
}

/** What the answers are made of: the services and their endpoints in the pick set. */
export interface DnsSource {
  /** The service of that name (case-insensitive), or undefined when there is none. */
  service(name: string): { readonly name: string; readonly endpoints: readonly DnsEndpoint[] } | undefined;
  /** Changes whenever any answer could (an endpoint added, removed, in or out of the pick set); absent: nothing is kept. */
  generation?(): number;
}

export interface DnsSettings {
  /** The zone, lowercase, ending in "." (default "berth."). */
  readonly domain: string;
  /** TTL of every record, seconds. */
  readonly ttl: number;
}

export type Rcode = 'NOERROR' | 'FORMERR' | 'SERVFAIL' | 'NXDOMAIN' | 'NOTIMP' | 'REFUSED';

export interface DnsAnswer {
  /** The response to send; null: nothing (not even a header to answer). */
  readonly packet: Buffer | null;
  /** For the metric: the type asked ("-" when unreadable) and the response code. */
  readonly type: string;
  readonly rcode: Rcode;
}

const RCODE_NUM: Record<Rcode, number> = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 };
const UDP_DEFAULT = 512;
const UDP_MAX = 1232;
const QR = 0x8000;
const AA = 0x0400;
const TC = 0x0200;

/** A header-only error response (its id, opcode and RD kept, as RFC 1035 asks). */
function headerOnly(query: Buffer, rcode: Rcode): Buffer {
  const out = Buffer.alloc(12);
  query.copy(out, 0, 0, 2);
  out[2] = 0x80 | ((query[2] ?? 0) & 0x79);
  out[3] = RCODE_NUM[rcode];
  return out;
}

/**
 * Where the (one) question ends on the wire, and whether its labels are plain
 * letters, digits, "-" and "_" (no compression pointer, no "." or other bytes inside
 * a label); undefined when it runs past the message.
 */
function questionEnd(q: Buffer): { readonly end: number; readonly plain: boolean } | undefined {
  let i = 12;
  let plain = true;
  for (;;) {
    if (i >= q.length) return undefined;
    const l = q[i]!;
    if (l === 0) break;
    // A pointer in a question: legal but never sent; not ours to follow.
    if ((l & 0xc0) !== 0) return { end: -1, plain: false };
    if (i + 1 + l > q.length) return undefined;
    for (let j = i + 1; j <= i + l; j++) {
      const c = q[j]!;
      if (!((c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x2d || c === 0x5f)) plain = false;
    }
    i += 1 + l;
  }
  const end = i + 1 + 4;
  return end <= q.length ? { end, plain } : undefined;
}

/** Types counted by name in the metric; any other is "other" (the label stays bounded). */
const COUNTED_TYPES = new Set(['A', 'AAAA', 'SRV', 'SOA', 'NS', 'ANY', 'TXT', 'CNAME', 'PTR', 'MX', 'HTTPS', 'SVCB', 'CAA']);

function hexOf(address: string): string {
  if (net.isIPv4(address)) return address.split('.').map((o) => Number(o).toString(16).padStart(2, '0')).join('');
  // An IPv4 tail (::ffff:10.0.0.1): as its two groups.
  const dotted = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(address);
  if (dotted !== null) {
    const h = hexOf(dotted[2]!);
    return hexOf(`${dotted[1]}${h.slice(0, 4)}:${h.slice(4)}`);
  }
  // Expand "::" to the full 8 groups of 4 hex digits.
  const [head, tail] = address.includes('::') ? address.split('::') : [address, undefined];
  const h = head === '' || head === undefined ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return groups.map((g) => g.padStart(4, '0')).join('').toLowerCase();
}

function addressOfHex(hex: string): { type: 'A' | 'AAAA'; address: string } | undefined {
  if (/^[0-9a-f]{8}$/.test(hex)) return { type: 'A', address: [0, 2, 4, 6].map((i) => parseInt(hex.slice(i, i + 2), 16)).join('.') };
  if (/^[0-9a-f]{32}$/.test(hex)) {
    const groups: string[] = [];
    for (let i = 0; i < 32; i += 4) groups.push(parseInt(hex.slice(i, i + 4), 16).toString(16));
    return { type: 'AAAA', address: groups.join(':') };
  }
  return undefined;
}

function shuffle<T>(xs: T[], random: Random): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(random.next() * (i + 1));
    [xs[i], xs[j]] = [xs[j]!, xs[i]!];
  }
  return xs;
}

/** dns-packet's record codec (exported, not in its type declarations). */
const recordCodec = (dnsPacket as unknown as { answer: { encodingLength(a: dnsPacket.Answer): number } }).answer;

/** Encoded answers to one question, valid while the pool's generation and the settings are the same. */
interface Cached {
  readonly gen: number;
  readonly settings: DnsSettings;
  readonly rcode: Rcode;
  readonly variants: readonly Buffer[];
}

/** Questions whose answers are kept, and their bytes at most (a flood of random names clears it, never grows it). */
const CACHE_MAX = 1024;
const CACHE_BYTES = 8 * 1024 * 1024;
/** Shuffled orders kept per answer: one is picked per query. */
const VARIANTS = 8;

export class DnsAnswerer {
  private readonly cache = new Map<string, Cached>();
  private cacheBytes = 0;

  constructor(
    private readonly source: DnsSource,
    /** Read per query: a reload's new domain or TTL applies to the next one. */
    private readonly current: () => DnsSettings,
    private readonly random: Random,
  ) {}

  private get settings(): DnsSettings {
    return this.current();
  }

  /** The zone as dns-packet writes names: lowercase, no trailing dot. */
  private get zone(): string {
    return this.settings.domain.replace(/\.$/, '').toLowerCase();
  }

  /** The response to `query` (one DNS message), for a client over udp or tcp. */
  answer(query: Buffer, transport: 'udp' | 'tcp'): DnsAnswer {
    if (query.length < 12) return { packet: null, type: '-', rcode: 'FORMERR' };
    // A response sent to us is nobody's question: no answer (no loops between servers).
    if ((query[2]! & 0x80) !== 0) return { packet: null, type: '-', rcode: 'FORMERR' };
    if (((query[2]! >> 3) & 0x0f) !== 0) return { packet: headerOnly(query, 'NOTIMP'), type: '-', rcode: 'NOTIMP' };
    if (query.readUInt16BE(4) !== 1) return { packet: headerOnly(query, 'FORMERR'), type: '-', rcode: 'FORMERR' };
    const wire = questionEnd(query);
    if (wire === undefined) return { packet: headerOnly(query, 'FORMERR'), type: '-', rcode: 'FORMERR' };
    // A name of other bytes, or a class other than IN (or ANY): not this zone's.
    const klass = wire.end > 0 ? query.readUInt16BE(wire.end - 2) : 0;
    if (!wire.plain || (klass !== 1 && klass !== 255)) return { packet: headerOnly(query, 'REFUSED'), type: '-', rcode: 'REFUSED' };
    let q: dnsPacket.Packet;
    try {
      q = dnsPacket.decode(query);
    } catch {
      return { packet: headerOnly(query, 'FORMERR'), type: '-', rcode: 'FORMERR' };
    }
    const question = q.questions?.[0];
    if (question === undefined) return { packet: headerOnly(query, 'FORMERR'), type: '-', rcode: 'FORMERR' };
    const type = String(question.type);
    const counted = COUNTED_TYPES.has(type) ? type : 'other';
    const opts = (q.additionals ?? []).filter((r) => r.type === 'OPT');
    if (opts.length > 1) return { packet: headerOnly(query, 'FORMERR'), type: counted, rcode: 'FORMERR' };
    const opt = opts[0] as { udpPayloadSize?: number } | undefined;
    // UDP: 512 bytes, or the client's EDNS0 size (at most 1232), rounded down to a
    // multiple of 128 so a client cannot spread the kept answers over 721 sizes.
    const limit = transport === 'tcp' ? 65_535 : opt === undefined ? UDP_DEFAULT : Math.max(UDP_DEFAULT, Math.min(UDP_MAX, opt.udpPayloadSize ?? UDP_DEFAULT) & ~127);
    const rd = (query[2]! & 0x01) !== 0;
    const name = question.name.toLowerCase().replace(/\.$/, '');
    // The same question gets the same records until the pool or the settings change:
    // encoded once, in a few shuffled orders; per query the id, RD and the question
    // as the client wrote it (case included) are written in.
    const key = `${limit}|${opt !== undefined ? 1 : 0}|${klass}|${type}|${name}`;
    const gen = this.source.generation?.() ?? -1;
    const settings = this.settings;
    let hit = this.cache.get(key);
    if (hit === undefined || hit.gen !== gen || hit.settings.domain !== settings.domain || hit.settings.ttl !== settings.ttl || gen === -1) {
      hit = this.build({ ...question, name }, type, opt !== undefined, limit, gen, settings);
      const bytes = hit.variants.reduce((n, v) => n + v.length, 0);
      if (this.cache.size >= CACHE_MAX || this.cacheBytes + bytes > CACHE_BYTES) {
        this.cache.clear();
        this.cacheBytes = 0;
      }
      this.cache.set(key, hit);
      this.cacheBytes += bytes;
    }
    const variant = hit.variants.length === 1 ? hit.variants[0]! : hit.variants[Math.floor(this.random.next() * hit.variants.length)]!;
    const packet = Buffer.from(variant);
    query.copy(packet, 0, 0, 2);
    if (rd) packet[2] = packet[2]! | 0x01;
    // The question as sent: same length as the kept one (only case differs).
    query.copy(packet, 12, 12, wire.end);
    return { packet, type: counted, rcode: hit.rcode };
  }

  /** The encoded responses to one question (id 0, RD clear), in up to VARIANTS shuffled orders. */
  private build(question: dnsPacket.Question, type: string, withOpt: boolean, limit: number, gen: number, settings: DnsSettings): Cached {
    const r = this.resolve(question.name, type, question.class ?? 'IN');
    const flags = QR | (r.rcode === 'REFUSED' ? 0 : AA) | RCODE_NUM[r.rcode];
    const optRecord = withOpt ? [{ type: 'OPT' as const, name: '.', udpPayloadSize: UDP_MAX }] : [];
    const encode = (answers: dnsPacket.Answer[], additionals: dnsPacket.Answer[], f: number) =>
      dnsPacket.encode({ id: 0, type: 'response', flags: f, questions: [question], answers, authorities: r.authorities, additionals: [...additionals, ...optRecord] } as dnsPacket.Packet);
    // dns-packet writes no compression: a packet's length is the sum of its parts, so
    // what fits is found in one pass per order, and each variant is encoded once.
    const base = encode([], [], flags).length;
    const sizeOf = (x: dnsPacket.Answer) => recordCodec.encodingLength(x);
    const glue = r.additionals.reduce((n, x) => n + sizeOf(x), 0);
    const one = (answers: dnsPacket.Answer[]): Buffer => {
      const sizes = answers.map(sizeOf);
      let total = base + sizes.reduce((n, x) => n + x, 0);
      if (total + glue <= limit) return encode(answers, r.additionals, flags);
      // Whole records only: the glue goes first (no TC for that), then answers from
      // the end, and TC says so (the client asks again over tcp).
      let keep = answers.length;
      while (total > limit && keep > 0) total -= sizes[--keep]!;
      return encode(answers.slice(0, keep), [], keep < answers.length ? flags | TC : flags);
    };
    const variants = [one(r.answers)];
    for (let i = 1; i < Math.min(VARIANTS, r.answers.length); i++) variants.push(one(shuffle([...r.answers], this.random)));
    return { gen, settings, rcode: r.rcode, variants };
  }

  private soa(): dnsPacket.Answer {
    return {
      type: 'SOA',
      name: this.zone,
      ttl: this.settings.ttl,
      data: { mname: `ns.${this.zone}`, rname: `hostmaster.${this.zone}`, serial: 1, refresh: 3600, retry: 600, expire: 86_400, minimum: this.settings.ttl },
    } as dnsPacket.Answer;
  }

  private resolve(name: string, type: string, klass: string): { rcode: Rcode; answers: dnsPacket.Answer[]; authorities: dnsPacket.Answer[]; additionals: dnsPacket.Answer[] } {
    const zone = this.zone;
    const none = { answers: [] as dnsPacket.Answer[], additionals: [] as dnsPacket.Answer[] };
    if (name !== zone && !name.endsWith(`.${zone}`)) return { rcode: 'REFUSED', answers: [], authorities: [], additionals: [] };
    const nodata = { rcode: 'NOERROR' as const, ...none, authorities: [this.soa()] };
    const nxdomain = { rcode: 'NXDOMAIN' as const, ...none, authorities: [this.soa()] };
    if (klass !== 'IN' && klass !== 'ANY') return nodata;
    const ttl = this.settings.ttl;
    if (name === zone) return type === 'SOA' ? { rcode: 'NOERROR', answers: [this.soa()], authorities: [], additionals: [] } : nodata;
    const rel = name.slice(0, -(zone.length + 1));
    // Names with names under them (empty non-terminals): NODATA, not NXDOMAIN (RFC 8020).
    if (rel === 'addr' || rel === '_tcp.service' || rel === '_udp.service') return nodata;
    // <hex>.addr.<zone>
    if (rel.endsWith('.addr')) {
      const a = addressOfHex(rel.slice(0, -'.addr'.length));
      if (a === undefined) return nxdomain;
      return a.type === type ? { rcode: 'NOERROR', answers: [{ type: a.type, name, ttl, data: a.address } as dnsPacket.Answer], authorities: [], additionals: [] } : nodata;
    }
    if (rel === 'service') return nodata;
    if (!rel.endsWith('.service')) return nxdomain;
    const svcPart = rel.slice(0, -'.service'.length);
    // _<service>._tcp / _udp: SRV of that kind of port.
    let protocol: 'tcp' | 'udp' | null = null;
    let serviceName = svcPart;
    const m = /^_(.+)\._(tcp|udp)$/.exec(svcPart);
    if (m !== null) {
      serviceName = m[1]!;
      protocol = m[2] as 'tcp' | 'udp';
    }
    const svc = this.source.service(serviceName);
    const endpoints = svc?.endpoints.filter((e) => protocol === null || e.protocol === protocol) ?? [];
    if (svc === undefined || endpoints.length === 0) return nxdomain;
    const v4 = endpoints.filter((e) => net.isIPv4(e.host));
    const v6 = endpoints.filter((e) => net.isIPv6(e.host));
    const glue = (e: DnsEndpoint): dnsPacket.Answer => ({ type: net.isIPv4(e.host) ? 'A' : 'AAAA', name: `${hexOf(e.host)}.addr.${zone}`, ttl, data: e.host }) as dnsPacket.Answer;
    if (protocol === null && (type === 'A' || type === 'AAAA')) {
      const list = type === 'A' ? v4 : v6;
      // One record per address (two endpoints on one host, two ports: one A).
      const seen = [...new Set(list.map((e) => e.host))];
      if (seen.length === 0) return nodata;
      return { rcode: 'NOERROR', answers: shuffle(seen.map((h) => ({ type, name, ttl, data: h }) as dnsPacket.Answer), this.random), authorities: [], additionals: [] };
    }
    if (type === 'SRV') {
      const withAddress = [...v4, ...v6];
      if (withAddress.length === 0) return nodata;
      const answers = shuffle(
        withAddress.map((e) => ({ type: 'SRV', name, ttl, data: { priority: 1, weight: Math.max(1, Math.min(65_535, Math.round(e.weight))), port: e.port, target: `${hexOf(e.host)}.addr.${zone}` } }) as dnsPacket.Answer),
        this.random,
      );
      const additionals = [...new Map(withAddress.map((e) => [e.host, glue(e)])).values()];
      return { rcode: 'NOERROR', answers, authorities: [], additionals };
    }
    return nodata;
  }
}
