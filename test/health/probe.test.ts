/**
 * The probes of active checks against real sockets: dns (any answer to the query
 * passes, a late answer to another query is not taken for it), send-expect over
 * udp and tcp (the pattern across reads, a close or too much without it), and a
 * refused port failing at once.
 */
import dgram from 'node:dgram';
import { once } from 'node:events';
import dnsPacket from 'dns-packet';
import t from 'tap';
import { dnsProbe, sendExpectProbe, StreamMatch } from '../../src/health/probe.js';
import { freePort, tcpServer } from '../helpers/net.js';

/** A udp server answering each datagram with `answer(msg)` (nothing when it returns null). */
async function udpServer(answer: (msg: Buffer) => Buffer[] | null) {
  const s = dgram.createSocket('udp4');
  s.on('message', (msg, from) => {
    for (const out of answer(msg) ?? []) s.send(out, from.port, from.address);
  });
  s.bind(0, '127.0.0.1');
  await once(s, 'listening');
  return { port: s.address().port, close: () => s.close() };
}

/** A free udp port nobody listens on (the kernel answers ICMP port unreachable). */
async function closedUdpPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  s.bind(0, '127.0.0.1');
  await once(s, 'listening');
  const port = s.address().port;
  s.close();
  return port;
}

t.test('dns: any answer to the query passes, whatever its code; an answer to another query is not it', async (t) => {
  const seen: string[] = [];
  const srv = await udpServer((msg) => {
    const q = dnsPacket.decode(msg);
    seen.push(`${q.questions![0]!.type} ${q.questions![0]!.name}`);
    const stale = dnsPacket.encode({ type: 'response', id: (q.id! + 1) & 0xffff, flags: 0, questions: q.questions! });
    const real = dnsPacket.encode({ type: 'response', id: q.id!, flags: 3, questions: q.questions! });
    return [stale, real];
  });
  t.teardown(() => srv.close());
  const r = await dnsProbe('127.0.0.1', srv.port, 2000, { name: 'health.example', type: 'AAAA' });
  t.same(r, { ok: true, detail: 'dns NXDOMAIN, 0 answers' }, 'the answer with the query id, an NXDOMAIN, passes');
  t.same(seen, ['AAAA health.example']);
});

t.test('dns: garbage back fails; a refused port fails at once; silence times out', async (t) => {
  const garbage = await udpServer(() => [Buffer.from('not dns')]);
  const silent = await udpServer(() => null);
  t.teardown(() => {
    garbage.close();
    silent.close();
  });
  t.same(await dnsProbe('127.0.0.1', garbage.port, 2000, { name: 'a.example', type: 'A' }), { ok: false, detail: 'malformed dns answer' });
  t.same(await dnsProbe('127.0.0.1', await closedUdpPort(), 10_000, { name: 'a.example', type: 'A' }), { ok: false, detail: 'ECONNREFUSED' }, 'ICMP unreachable, long before the timeout');
  t.same(await dnsProbe('127.0.0.1', silent.port, 50, { name: 'a.example', type: 'A' }), { ok: false, detail: 'timeout after 50ms' });
});

t.test('send-expect over udp: the first datagram back must hold the pattern; without one any answer passes', async (t) => {
  const srv = await udpServer((msg) => [Buffer.concat([Buffer.from([0, 1]), msg.toString() === 'ping' ? Buffer.from('PONG\x00') : Buffer.from('what?')])]);
  t.teardown(() => srv.close());
  t.same(await sendExpectProbe('127.0.0.1', srv.port, 2000, { protocol: 'udp', send: Buffer.from('ping'), receive: Buffer.from('PONG\x00') }), { ok: true, detail: 'expected answer' });
  t.same(await sendExpectProbe('127.0.0.1', srv.port, 2000, { protocol: 'udp', send: Buffer.from('pong'), receive: Buffer.from('PONG') }), { ok: false, detail: 'unexpected answer (7 bytes)' });
  t.same(await sendExpectProbe('127.0.0.1', srv.port, 2000, { protocol: 'udp', send: Buffer.from('x'), receive: undefined }), { ok: true, detail: 'expected answer' });
  t.same(await sendExpectProbe('127.0.0.1', await closedUdpPort(), 10_000, { protocol: 'udp', send: Buffer.from('x'), receive: undefined }), { ok: false, detail: 'ECONNREFUSED' });
});

t.test('send-expect over tcp: the pattern found across reads; a close or 64 KiB without it fails', async (t) => {
  const srv = await tcpServer((s) => {
    s.once('data', (d: Buffer) => {
      const what = d.toString();
      if (what === 'split') {
        // "+OK" in two segments, after some noise.
        s.write('noise noise +');
        setImmediate(() => s.write('OK\r\n'));
      } else if (what === 'close') s.end('-ERR\r\n');
      else if (what === 'flood') {
        s.write(Buffer.alloc(70_000, 'x'));
      }
    });
    s.on('error', () => {});
  });
  const refused = await freePort();
  t.teardown(() => srv.close());
  const probe = (send: string) => sendExpectProbe('127.0.0.1', srv.port, 5000, { protocol: 'tcp', send: Buffer.from(send), receive: Buffer.from('+OK') });
  t.same(await probe('split'), { ok: true, detail: 'expected answer' }, 'the pattern split over two reads');
  t.same(await probe('close'), { ok: false, detail: 'closed without the expected answer' });
  const flood = await probe('flood');
  t.equal(flood.ok, false);
  t.match(flood.detail, /^no expected answer in \d+ bytes$/, 'bounded: it stops reading past 64 KiB');
  t.same(await sendExpectProbe('127.0.0.1', refused, 5000, { protocol: 'tcp', send: Buffer.from('x'), receive: undefined }), { ok: false, detail: 'ECONNREFUSED' });
});

t.test('a udp check whose connect fails (a name that does not resolve, a broadcast address) fails; nothing is thrown', async (t) => {
  // (Without a resolver to ask, the lookup may also outlast the check: a timeout.)
  const bad = await dnsProbe('no-such-host.invalid', 53, 2000, { name: 'a.example', type: 'A' });
  t.equal(bad.ok, false);
  t.match(bad.detail, /ENOTFOUND|EAI_AGAIN|timeout after 2000ms/);
  const bcast = await sendExpectProbe('255.255.255.255', 9, 5000, { protocol: 'udp', send: Buffer.from('x'), receive: undefined });
  t.same(bcast, { ok: false, detail: 'EACCES' });
});

t.test('StreamMatch: a pattern across reads, byte by byte, and the bound', async (t) => {
  const pattern = Buffer.from('+PONG\r\n');
  const m = new StreamMatch(pattern);
  t.equal(m.feed(Buffer.from('noise +P')), 'more');
  t.equal(m.feed(Buffer.from('ON')), 'more');
  t.equal(m.feed(Buffer.from('G\r\nrest')), 'match', 'split over three reads');
  const one = new StreamMatch(pattern);
  const bytes = Buffer.from('xxxx+PONG\r\n');
  const verdicts = [...bytes].map((b) => one.feed(Buffer.from([b])));
  t.same([verdicts.at(-1), verdicts.slice(0, -1).every((v) => v === 'more')], ['match', true], 'one byte per read');
  const small = new StreamMatch(pattern, 10);
  t.equal(small.feed(Buffer.alloc(8, 'x')), 'more');
  t.equal(small.feed(Buffer.alloc(8, 'x')), 'overflow', 'past the bound without the pattern');
  t.equal(new StreamMatch(Buffer.from('A')).feed(Buffer.from('zzA')), 'match', 'a one-byte pattern');
});
