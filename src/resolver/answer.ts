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
const RD = 0x0100;
const TC = 0x0200;

/** A header-only error response for a message that could not be decoded (its id and RD kept). */
function headerOnly(query: Buffer, rcode: Rcode): Buffer {
  const out = Buffer.alloc(12);
  query.copy(out, 0, 0, 2);
  const rd = query.length >= 3 ? (query.readUInt8(2) & 0x01) << 8 : 0;
  out.writeUInt16BE(QR | rd | RCODE_NUM[rcode], 2);
  return out;
}

function hexOf(address: string): string {
  if (net.isIPv4(address)) return address.split('.').map((o) => Number(o).toString(16).padStart(2, '0')).join('');
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

/** Encoded answers to one question, valid while the pool's generation and the settings are the same. */
interface Cached {
  readonly gen: number;
  readonly settings: DnsSettings;
  readonly rcode: Rcode;
  readonly variants: readonly Buffer[];
}

/** Questions whose answers are kept (a flood of random names clears it, never grows it). */
const CACHE_MAX = 1024;
/** Shuffled orders kept per answer: one is picked per query. */
const VARIANTS = 8;

export class DnsAnswerer {
  private readonly cache = new Map<string, Cached>();

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
    let q: dnsPacket.Packet;
    try {
      q = dnsPacket.decode(query);
    } catch {
      return { packet: headerOnly(query, 'FORMERR'), type: '-', rcode: 'FORMERR' };
    }
    // A response sent to us is nobody's question: no answer (no loops between servers).
    if (q.type === 'response') return { packet: null, type: '-', rcode: 'FORMERR' };
    const questions = q.questions ?? [];
    if ((q as { opcode?: string }).opcode !== 'QUERY') return { packet: headerOnly(query, 'NOTIMP'), type: '-', rcode: 'NOTIMP' };
    if (questions.length !== 1) return { packet: headerOnly(query, 'FORMERR'), type: '-', rcode: 'FORMERR' };
    const question = questions[0]!;
    const type = String(question.type);
    const opt = (q.additionals ?? []).find((r) => r.type === 'OPT') as { udpPayloadSize?: number } | undefined;
    const limit = transport === 'tcp' ? 65_535 : opt === undefined ? UDP_DEFAULT : Math.min(UDP_MAX, Math.max(UDP_DEFAULT, opt.udpPayloadSize ?? UDP_DEFAULT));
    const rd = ((q.flags ?? 0) & RD) !== 0;
    // The same question gets the same records until the pool or the settings change:
    // encoded once, in a few shuffled orders, and only the id and RD bit written per query.
    const key = `${limit}|${opt !== undefined ? 1 : 0}|${question.class ?? 'IN'}|${type}|${question.name}`;
    const gen = this.source.generation?.() ?? -1;
    const settings = this.settings;
    let hit = this.cache.get(key);
    if (hit === undefined || hit.gen !== gen || hit.settings.domain !== settings.domain || hit.settings.ttl !== settings.ttl || gen === -1) {
      hit = this.build(question, type, opt !== undefined, limit, gen, settings);
      if (this.cache.size >= CACHE_MAX) this.cache.clear();
      this.cache.set(key, hit);
    }
    const variant = hit.variants.length === 1 ? hit.variants[0]! : hit.variants[Math.floor(this.random.next() * hit.variants.length)]!;
    const packet = Buffer.from(variant);
    query.copy(packet, 0, 0, 2);
    if (rd) packet.writeUInt16BE(packet.readUInt16BE(2) | RD, 2);
    return { packet, type, rcode: hit.rcode };
  }

  /** The encoded responses to one question (id 0, RD clear), in up to VARIANTS shuffled orders. */
  private build(question: dnsPacket.Question, type: string, withOpt: boolean, limit: number, gen: number, settings: DnsSettings): Cached {
    const r = this.resolve(question.name.toLowerCase().replace(/\.$/, ''), type, question.class ?? 'IN');
    const flags = QR | (r.rcode === 'REFUSED' ? 0 : AA) | RCODE_NUM[r.rcode];
    const optRecord = withOpt ? [{ type: 'OPT' as const, name: '.', udpPayloadSize: UDP_MAX }] : [];
    const encode = (answers: dnsPacket.Answer[], additionals: dnsPacket.Answer[], f: number) =>
      dnsPacket.encode({ id: 0, type: 'response', flags: f, questions: [question], answers, authorities: r.authorities, additionals: [...additionals, ...optRecord] } as dnsPacket.Packet);
    const one = (answers: dnsPacket.Answer[]): Buffer => {
      let packet = encode(answers, r.additionals, flags);
      if (packet.length > limit) {
        // Whole records only: the glue goes first (no TC for that), then answers from
        // the end, and TC says so (the client asks again over tcp).
        packet = encode(answers, [], flags);
        let n = answers.length;
        while (packet.length > limit && n > 0) {
          n--;
          packet = encode(answers.slice(0, n), [], flags | TC);
        }
      }
      return packet;
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
    // <hex>.addr.<zone>
    if (rel.endsWith('.addr') || rel === 'addr') {
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
        withAddress.map((e) => ({ type: 'SRV', name, ttl, data: { priority: 1, weight: Math.min(65_535, e.weight), port: e.port, target: `${hexOf(e.host)}.addr.${zone}` } }) as dnsPacket.Answer),
        this.random,
      );
      const additionals = [...new Map(withAddress.map((e) => [e.host, glue(e)])).values()];
      return { rcode: 'NOERROR', answers, authorities: [], additionals };
    }
    return nodata;
  }
}
