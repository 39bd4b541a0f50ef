/**
 * The DNS interface: answers from the pick set (A, AAAA, SRV with glue, _tcp/_udp),
 * NXDOMAIN/NODATA/REFUSED/FORMERR/NOTIMP, truncation to 512 bytes or the EDNS0 size
 * with TC, complete answers over tcp, and a seeded fuzz of what clients may send.
 */
import dgram from 'node:dgram';
import { once } from 'node:events';
import net from 'node:net';
import dnsPacket from 'dns-packet';
import t from 'tap';
import { seededRandom } from '../../src/core/random.js';
import { DnsAnswerer, type DnsEndpoint } from '../../src/resolver/answer.js';
import { DnsServer } from '../../src/resolver/dns-server.js';
import { until } from '../helpers/net.js';
import { silent } from '../helpers/proxy.js';

const services: Record<string, DnsEndpoint[]> = {
  web: [
    { host: '10.0.0.5', port: 8080, weight: 1, protocol: 'tcp' },
    { host: '10.0.0.6', port: 8080, weight: 3, protocol: 'tcp' },
    { host: '2001:db8::7', port: 8081, weight: 1, protocol: 'tcp' },
  ],
  dns: [{ host: '10.0.0.9', port: 53, weight: 1, protocol: 'udp' }],
  // Known, but nothing in the pick set.
  down: [],
  // Many endpoints: more than 512 bytes of SRV.
  big: Array.from({ length: 40 }, (_, i) => ({ host: `10.1.0.${i + 1}`, port: 9000 + i, weight: 1, protocol: 'tcp' as const })),
};
const source = { service: (name: string) => (name.toLowerCase() in services ? { name, endpoints: services[name.toLowerCase()]! } : undefined) };
/** A record's data and TTL (dns-packet's Answer union includes OPT, which has neither). */
const data = (r: dnsPacket.Answer) => (r as { data?: unknown }).data;
const ttl = (r: dnsPacket.Answer) => (r as { ttl?: number }).ttl;
const answerer = new DnsAnswerer(source, () => ({ domain: 'berth.', ttl: 0 }), seededRandom(7));

function ask(name: string, type: string, opts: { edns?: number; transport?: 'udp' | 'tcp'; id?: number } = {}) {
  const q = dnsPacket.encode({
    type: 'query',
    id: opts.id ?? 42,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type: type as dnsPacket.RecordType, name }],
    ...(opts.edns !== undefined ? { additionals: [{ type: 'OPT', name: '.', udpPayloadSize: opts.edns }] } : {}),
  } as dnsPacket.Packet);
  const a = answerer.answer(q, opts.transport ?? 'udp');
  return { ...a, decoded: a.packet === null ? null : dnsPacket.decode(a.packet) };
}

t.test('A, AAAA and SRV from the pick set; names are case-insensitive', async (t) => {
  const a = ask('web.service.berth', 'A');
  t.equal(a.rcode, 'NOERROR');
  t.same(a.decoded!.answers!.map(data).sort(), ['10.0.0.5', '10.0.0.6']);
  t.ok(a.decoded!.flag_aa, 'authoritative');
  t.equal(ttl(a.decoded!.answers![0]!), 0, 'TTL 0 by default');
  t.same(ask('WEB.Service.Berth.', 'AAAA').decoded!.answers!.map(data), ['2001:db8::7']);
  const srv = ask('web.service.berth', 'SRV').decoded!;
  t.same(srv.answers!.map((r) => (data(r) as { port: number }).port).sort(), [8080, 8080, 8081]);
  const targets = srv.answers!.map((r) => (data(r) as { target: string }).target);
  t.ok(targets.includes('0a000005.addr.berth'), 'target names the address');
  t.same(srv.additionals!.map((r) => `${r.name} ${r.type} ${String(data(r))}`).sort(), ['0a000005.addr.berth A 10.0.0.5', '0a000006.addr.berth A 10.0.0.6', '20010db8000000000000000000000007.addr.berth AAAA 2001:db8::7'], 'glue for every target');
  t.same(ask('0a000006.addr.berth', 'A').decoded!.answers!.map(data), ['10.0.0.6'], 'a target resolves');
  t.same(ask('_dns._udp.service.berth', 'SRV').decoded!.answers!.map((r) => (data(r) as { port: number }).port), [53], '_udp: the udp pool');
  t.equal(ask('_dns._tcp.service.berth', 'SRV').rcode, 'NXDOMAIN', 'no tcp endpoints there');
  t.equal(ask('_web._tcp.service.berth', 'SRV').decoded!.answers!.length, 3);
});

t.test('NXDOMAIN, NODATA, REFUSED, FORMERR, NOTIMP', async (t) => {
  const nx = ask('nope.service.berth', 'A');
  t.equal(nx.rcode, 'NXDOMAIN');
  t.equal(nx.decoded!.authorities![0]!.type, 'SOA', 'with the SOA');
  t.equal(ask('down.service.berth', 'A').rcode, 'NXDOMAIN', 'known but none in the pick set');
  const nodata = ask('dns.service.berth', 'AAAA');
  t.same([nodata.rcode, nodata.decoded!.answers!.length, nodata.decoded!.authorities![0]!.type], ['NOERROR', 0, 'SOA'], 'a known name without records of the type: NODATA');
  t.equal(ask('web.service.berth', 'TXT').decoded!.answers!.length, 0);
  t.equal(ask('example.com', 'A').rcode, 'REFUSED', 'out of the zone');
  t.equal(ask('berth', 'SOA').decoded!.answers![0]!.type, 'SOA', 'the apex has its SOA');
  const garbage = Buffer.from('01020100ffffffffffffffffffffffff', 'hex');
  const bad = answerer.answer(garbage, 'udp');
  t.equal(bad.rcode, 'FORMERR');
  t.same([bad.packet!.readUInt16BE(0), bad.packet!.readUInt16BE(2) & 0x000f], [0x0102, 1], 'a header with the id and FORMERR');
  t.equal(answerer.answer(Buffer.alloc(5), 'udp').packet, null, 'shorter than a header: no answer');
  // Opcode 4 (NOTIFY) in the flags.
  const notify = dnsPacket.encode({ type: 'query', id: 1, flags: 4 << 11, questions: [{ type: 'SOA', name: 'berth' }] });
  t.equal(answerer.answer(notify, 'udp').rcode, 'NOTIMP');
  const response = dnsPacket.encode({ type: 'response', id: 1, questions: [{ type: 'A', name: 'web.service.berth' }] });
  t.equal(answerer.answer(response, 'udp').packet, null, 'a response is not answered');
});

t.test('udp answers cut to 512 bytes (or the EDNS0 size, at most 1232) with whole records and TC; tcp complete', async (t) => {
  const small = ask('big.service.berth', 'SRV');
  t.ok(small.packet!.length <= 512, `${small.packet!.length} bytes`);
  t.ok(small.decoded!.flag_tc, 'TC set');
  t.ok(small.decoded!.answers!.length > 0 && small.decoded!.answers!.length < 40, `${small.decoded!.answers!.length} whole records`);
  t.equal(small.decoded!.additionals!.length, 0, 'the glue went first');
  const edns = ask('big.service.berth', 'SRV', { edns: 4096 });
  t.ok(edns.packet!.length <= 1232 && edns.packet!.length > 512, `EDNS0: ${edns.packet!.length} bytes, capped at 1232`);
  t.ok(edns.decoded!.answers!.length > small.decoded!.answers!.length);
  t.ok(edns.decoded!.additionals!.some((r) => r.type === 'OPT'), 'OPT echoed');
  const tcp = ask('big.service.berth', 'SRV', { transport: 'tcp' });
  t.same([tcp.decoded!.answers!.length, tcp.decoded!.flag_tc, tcp.decoded!.additionals!.length], [40, false, 40], 'tcp: every record and the glue');
  const fits = ask('web.service.berth', 'A');
  t.notOk(fits.decoded!.flag_tc);
});

t.test('the server: udp and tcp on one port, framed tcp messages, several per connection; a flood of garbage answered or dropped, nothing crashes', async (t) => {
  const counted: string[] = [];
  const server = new DnsServer({ bind: { host: '127.0.0.1', port: 0 }, answerer, log: silent, counted: (type, rcode) => counted.push(`${type} ${rcode}`) });
  const { port } = await server.listen();
  t.teardown(() => server.close());
  const c = dgram.createSocket('udp4');
  t.teardown(() => c.close());
  const answers: Buffer[] = [];
  c.on('message', (m) => answers.push(m));
  c.send(dnsPacket.encode({ type: 'query', id: 9, questions: [{ type: 'A', name: 'web.service.berth' }] }), port, '127.0.0.1');
  await once(c, 'message');
  t.same(dnsPacket.decode(answers[0]!).answers!.map(data).sort(), ['10.0.0.5', '10.0.0.6']);
  // tcp: two queries in one write, the second split over two writes.
  const s = net.connect(port, '127.0.0.1');
  await once(s, 'connect');
  const frame = (id: number, name: string) => {
    const m = dnsPacket.encode({ type: 'query', id, questions: [{ type: 'SRV', name }] });
    const h = Buffer.alloc(2);
    h.writeUInt16BE(m.length);
    return Buffer.concat([h, m]);
  };
  const two = Buffer.concat([frame(1, 'big.service.berth'), frame(2, 'web.service.berth')]);
  let got = Buffer.alloc(0);
  s.on('data', (d: Buffer) => (got = Buffer.concat([got, d])));
  s.write(two.subarray(0, two.length - 5));
  s.write(two.subarray(two.length - 5));
  const frames = async (n: number) => {
    for (;;) {
      const out: Buffer[] = [];
      let at = 0;
      while (got.length >= at + 2 && got.length >= at + 2 + got.readUInt16BE(at)) {
        out.push(got.subarray(at + 2, at + 2 + got.readUInt16BE(at)));
        at += 2 + got.readUInt16BE(at);
      }
      if (out.length >= n) return out;
      await once(s, 'data');
    }
  };
  const [first, second] = await frames(2);
  t.same([dnsPacket.decode(first!).id, dnsPacket.decode(first!).answers!.length], [1, 40], 'complete over tcp');
  t.same([dnsPacket.decode(second!).id, dnsPacket.decode(second!).answers!.length], [2, 3]);
  s.destroy();
  // Seeded garbage over udp: FORMERR or silence, never a crash; the server still answers after.
  // (In rounds of 25, each waited for: a burst past the socket buffers would be dropped by the kernel, not by berth.)
  const rnd = seededRandom(21);
  for (let round = 0; round < 20; round++) {
    for (let i = 0; i < 25; i++) {
      const len = Math.floor(rnd.next() * 64);
      const b = Buffer.alloc(len);
      for (let j = 0; j < len; j++) b[j] = Math.floor(rnd.next() * 256);
      // Sometimes a real header in front, so the decoder goes further in.
      if (len >= 12 && rnd.next() < 0.5) b.writeUInt16BE(0x0100, 2);
      await new Promise<void>((resolve) => c.send(b, port, '127.0.0.1', () => resolve()));
    }
    const id = 1000 + round;
    c.send(dnsPacket.encode({ type: 'query', id, questions: [{ type: 'A', name: 'web.service.berth' }] }), port, '127.0.0.1');
    while (!answers.some((a) => a.length >= 2 && a.readUInt16BE(0) === id)) await once(c, 'message');
  }
  t.pass('answered after each round of garbage: 500 datagrams in all');
  t.ok(counted.includes('A NOERROR') && counted.some((x) => x.endsWith('FORMERR')), 'counted by type and code');
});

t.test('answers are kept per question until the pool changes; each query gets its own id and RD bit, and orders vary', async (t) => {
  let gen = 0;
  const list: DnsEndpoint[] = [
    { host: '10.0.0.5', port: 80, weight: 1, protocol: 'tcp' },
    { host: '10.0.0.6', port: 80, weight: 1, protocol: 'tcp' },
  ];
  let calls = 0;
  const kept = new DnsAnswerer(
    {
      service: (name) => {
        calls++;
        return name === 'web' ? { name, endpoints: list } : undefined;
      },
      generation: () => gen,
    },
    () => ({ domain: 'berth.', ttl: 0 }),
    seededRandom(3),
  );
  const query = (id: number, rd: boolean) => dnsPacket.encode({ type: 'query', id, flags: rd ? dnsPacket.RECURSION_DESIRED : 0, questions: [{ type: 'A', name: 'web.service.berth' }] });
  const orders = new Set<string>();
  for (let i = 0; i < 40; i++) {
    const d = dnsPacket.decode(kept.answer(query(100 + i, i % 2 === 0), 'udp').packet!);
    t.equal(d.id, 100 + i);
    t.equal(d.flag_rd, i % 2 === 0);
    orders.add(d.answers!.map(data).join(','));
  }
  t.equal(calls, 1, 'looked up once for 40 queries');
  t.same([...orders].sort(), ['10.0.0.5,10.0.0.6', '10.0.0.6,10.0.0.5'], 'both orders handed out');
  list.pop();
  gen++;
  t.same(dnsPacket.decode(kept.answer(query(1, true), 'udp').packet!).answers!.map(data), ['10.0.0.5'], 'a pool change: the next answer follows');
  t.equal(calls, 2);
});

t.test('the question is echoed as sent; odd names and classes refused; the metric type bounded; mixed-size records truncated per order', async (t) => {
  const q = dnsPacket.encode({ type: 'query', id: 5, questions: [{ type: 'A', name: 'WeB.SeRvIcE.bErTh' }] });
  const a = answerer.answer(q, 'udp');
  t.equal(dnsPacket.decode(a.packet!).questions![0]!.name, 'WeB.SeRvIcE.bErTh', '0x20 case kept');
  t.same(dnsPacket.decode(a.packet!).answers!.map(data).sort(), ['10.0.0.5', '10.0.0.6']);
  // Two labels "web.service" + "berth" (a dot inside a label): not the three-label name.
  const dotted = Buffer.concat([Buffer.from('0006010000010000000000000b', 'hex'), Buffer.from('web.service'), Buffer.from([5]), Buffer.from('berth'), Buffer.from([0, 0, 1, 0, 1])]);
  t.equal(answerer.answer(dotted, 'udp').rcode, 'REFUSED', 'a dot inside a label');
  const chaos = dnsPacket.encode({ type: 'query', id: 6, questions: [{ type: 'TXT', name: 'web.service.berth', class: 'CH' }] });
  t.equal(answerer.answer(chaos, 'udp').rcode, 'REFUSED', 'class CH');
  const odd = Buffer.from(dnsPacket.encode({ type: 'query', id: 7, questions: [{ type: 'A', name: 'web.service.berth' }] }));
  odd.writeUInt16BE(65_280, odd.length - 4);
  t.equal(answerer.answer(odd, 'udp').type, 'other', 'an unknown type counts as other');
  const notify = Buffer.from(dnsPacket.encode({ type: 'query', id: 8, flags: 4 << 11, questions: [{ type: 'SOA', name: 'berth' }] }));
  t.equal((answerer.answer(notify, 'udp').packet![2]! >> 3) & 0x0f, 4, 'NOTIMP echoes the opcode');
  // IPv4 and IPv6 targets differ in size: every shuffled order still fits.
  const mixed = new DnsAnswerer(
    { service: () => ({ name: 'm', endpoints: Array.from({ length: 30 }, (_, i) => ({ host: i % 2 ? `10.2.0.${i}` : `2001:db8::${i + 1}`, port: 80, weight: 1, protocol: 'tcp' as const })) }), generation: () => 1 },
    () => ({ domain: 'berth.', ttl: 0 }),
    seededRandom(9),
  );
  for (let i = 0; i < 30; i++) {
    const p = mixed.answer(dnsPacket.encode({ type: 'query', id: i, questions: [{ type: 'SRV', name: 'm.service.berth' }] }), 'udp').packet!;
    t.ok(p.length <= 512, `order ${i}: ${p.length} bytes`);
  }
  t.equal(hexTarget('::ffff:10.0.0.1'), '00000000000000000000ffff0a000001', 'an IPv4-mapped address spelled in full');
});

function hexTarget(address: string): string {
  const a = new DnsAnswerer({ service: () => ({ name: 'x', endpoints: [{ host: address, port: 1, weight: 1, protocol: 'tcp' }] }) }, () => ({ domain: 'berth.', ttl: 0 }), seededRandom(1));
  const p = a.answer(dnsPacket.encode({ type: 'query', id: 1, questions: [{ type: 'SRV', name: 'x.service.berth' }] }), 'udp').packet!;
  return (data(dnsPacket.decode(p).answers![0]!) as { target: string }).target.split('.')[0]!;
}

t.test('empty non-terminals are NODATA; a forged source port 0 is dropped, not a crash; a client that never reads is cut', async (t) => {
  t.same([ask('addr.berth', 'A').rcode, ask('_tcp.service.berth', 'SRV').rcode], ['NOERROR', 'NOERROR']);
  // (A short idle time: a client that stops reading is paused on, then cut when nothing moves.)
  const server = new DnsServer({ bind: { host: '127.0.0.1', port: 0 }, answerer, log: silent, idleMs: 300 });
  const { port } = await server.listen();
  t.teardown(() => server.close());
  // (A datagram from port 0 needs a raw socket to send: handed to the server's socket as the kernel would.)
  const udp = (server as unknown as { udp: dgram.Socket }).udp;
  udp.emit('message', dnsPacket.encode({ type: 'query', id: 1, questions: [{ type: 'A', name: 'web.service.berth' }] }), { address: '127.0.0.1', family: 'IPv4', port: 0, size: 40 });
  t.pass('no throw');
  // tcp: 2,000 pipelined SRV queries for 40 records each, never read: the connection is cut, the server stays.
  const s = net.connect(port, '127.0.0.1');
  s.on('error', () => {});
  await once(s, 'connect');
  const m = dnsPacket.encode({ type: 'query', id: 2, questions: [{ type: 'SRV', name: 'big.service.berth' }] });
  const h = Buffer.alloc(2);
  h.writeUInt16BE(m.length);
  const frame = Buffer.concat([h, m]);
  s.pause();
  s.write(Buffer.concat(Array.from({ length: 2000 }, () => frame)));
  const conns = (server as unknown as { conns: Set<net.Socket> }).conns;
  // (The client does not read, so it would not see the close: the server's side is watched.)
  await until(() => conns.size === 1);
  // The event, not a bound on the time it takes: the server's side of the connection closes.
  const serverSide = [...conns][0]!;
  if (!serverSide.destroyed) await once(serverSide, 'close');
  t.equal(conns.size, 0, 'the connection cut');
  t.pass('paused on while it did not read (its answers bounded), then cut');
  s.destroy();
  const c = dgram.createSocket('udp4');
  t.teardown(() => c.close());
  c.send(dnsPacket.encode({ type: 'query', id: 3, questions: [{ type: 'A', name: 'web.service.berth' }] }), port, '127.0.0.1');
  const [reply] = (await once(c, 'message')) as [Buffer];
  t.equal(dnsPacket.decode(reply).id, 3, 'still answering');
});
