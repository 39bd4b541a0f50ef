/**
 * The preread parsers alone (PURE): the ClientHello reader on real hellos from
 * node's TLS client, cut into 1-byte segments and re-framed into split records; the
 * PROXY header parser on v1 lines and on v2 headers berth's own sender builds; and a
 * seeded fuzz of both (malformed, truncated, oversize): a verdict every time, never
 * a throw.
 */
import v8 from 'node:v8';
import vm from 'node:vm';
import t from 'tap';
import { seededRandom, type Random } from '../../src/core/random.js';
import { HelloReader, type HelloVerdict } from '../../src/proxy/preread/client-hello.js';
import { crc32c, parseProxyHeader, V2_SIGNATURE } from '../../src/proxy/preread/proxy-header.js';
import { proxyHeader } from '../../src/proxy/proxy-protocol.js';
import { captureHello } from '../helpers/tls-hello.js';

/** The same handshake message re-framed into records of the sizes `r` picks (1 to 40 bytes). */
function reframe(hello: Buffer, r: Random): Buffer {
  const msg = hello.subarray(5, 5 + hello.readUInt16BE(3));
  const out: Buffer[] = [];
  for (let o = 0; o < msg.length; ) {
    const n = Math.min(msg.length - o, 1 + Math.floor(r.next() * 40));
    const h = Buffer.from([0x16, 0x03, 0x01, 0, 0]);
    h.writeUInt16BE(n, 3);
    out.push(h, msg.subarray(o, o + n));
    o += n;
  }
  return Buffer.concat(out);
}

function feed(bytes: Buffer, sizes: (left: number) => number): { verdict: HelloVerdict; held: Buffer } {
  const r = new HelloReader();
  let v: HelloVerdict = { kind: 'more' };
  for (let o = 0; o < bytes.length && v.kind === 'more'; ) {
    const n = Math.max(1, Math.min(bytes.length - o, sizes(bytes.length - o)));
    v = r.push(bytes.subarray(o, o + n));
    o += n;
  }
  return { verdict: v, held: r.held() };
}

t.test('ClientHello: server name and ALPN from node TLS 1.3 hellos, however they arrive', async (t) => {
  const hello = await captureHello({ servername: 'DB1.Example.com', alpn: ['postgresql', 'h2'] });
  t.ok(hello.length > 300, `a real hello (${hello.length} bytes)`);
  const whole = feed(hello, (n) => n);
  t.same(whole.verdict, { kind: 'hello', sni: 'db1.example.com', alpn: ['postgresql', 'h2'] });
  t.ok(whole.held.equals(hello), 'every byte held, unchanged');
  const ones = feed(hello, () => 1);
  t.same(ones.verdict, whole.verdict, 'one byte per segment');
  t.ok(ones.held.equals(hello));
  const r = seededRandom(11);
  for (let i = 0; i < 20; i++) {
    const split = reframe(hello, r);
    const got = feed(split, () => 1 + Math.floor(r.next() * 7));
    t.same(got.verdict, whole.verdict, `split records, round ${i}`);
    t.ok(got.held.equals(split), 'the split bytes held as they came');
  }
  const none = await captureHello({});
  t.same(feed(none, (n) => n).verdict, { kind: 'hello', sni: null, alpn: [] }, 'no servername: no SNI');
});

t.test('ClientHello: what is not a hello', async (t) => {
  t.same(feed(Buffer.from('GET / HTTP/1.1\r\n\r\n'), (n) => n).verdict, { kind: 'not-tls' });
  t.same(feed(Buffer.from([0x80, 0x2e, 0x01, 0x03, 0x01]), (n) => n).verdict, { kind: 'not-tls' }, 'SSLv2 framing');
  t.same(feed(Buffer.from('SSH-2.0-x\r\n'), () => 1).verdict, { kind: 'not-tls' });
  t.match(feed(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0, 0, 0]), (n) => n).verdict, { kind: 'malformed' }, 'a ServerHello first');
  t.match(feed(Buffer.from([0x16, 0x03, 0x01, 0x50, 0x00]), (n) => n).verdict, { kind: 'malformed' }, 'record longer than 2^14');
  // 64 KiB of a hello that never ends: too large, held no further.
  const big = Buffer.alloc(70_000, 0);
  big.set([0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0xff, 0xff]);
  for (let o = 5 + 0x4000; o + 5 <= big.length; o += 5 + 0x4000) big.set([0x16, 0x03, 0x01, 0x40, 0x00], o);
  t.same(feed(big, () => 1000).verdict, { kind: 'too-large' });
  const hello = await captureHello({ servername: 'a.example' });
  // An alert record in the middle of the hello.
  const msg = hello.subarray(5, 5 + hello.readUInt16BE(3));
  const first = Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x00, 0x10]), msg.subarray(0, 16), Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])]);
  t.match(feed(first, (n) => n).verdict, { kind: 'malformed' }, 'another record type inside the hello');
});

t.test('ClientHello: seeded fuzz — truncated, mutated, random: always a verdict, never a throw', async (t) => {
  const hello = await captureHello({ servername: 'fuzz.example', alpn: ['h2'] });
  const seed = Number(process.env['BERTH_FUZZ_SEED'] ?? 1234);
  const r = seededRandom(seed);
  let verdicts = 0;
  for (let i = 0; i < 3000; i++) {
    const b = Buffer.from(i % 3 === 0 ? reframe(hello, r) : hello);
    const kind = i % 4;
    let input: Buffer;
    if (kind === 0) input = b.subarray(0, Math.floor(r.next() * b.length));
    else if (kind === 1) {
      for (let n = 1 + Math.floor(r.next() * 4); n > 0; n--) b[Math.floor(r.next() * b.length)] = Math.floor(r.next() * 256);
      input = b;
    } else if (kind === 2) input = Buffer.from(Array.from({ length: Math.floor(r.next() * 400) }, () => Math.floor(r.next() * 256)));
    else input = Buffer.concat([b.subarray(0, 5 + Math.floor(r.next() * 60)), Buffer.from(Array.from({ length: 50 }, () => Math.floor(r.next() * 256)))]);
    const got = feed(input, () => 1 + Math.floor(r.next() * 64));
    if (!['more', 'hello', 'not-tls', 'malformed', 'too-large'].includes(got.verdict.kind)) t.fail(`seed ${seed}: odd verdict ${JSON.stringify(got.verdict)}`);
    if (!got.held.equals(input.subarray(0, got.held.length))) t.fail(`seed ${seed}: held bytes differ from the input`);
    verdicts++;
  }
  t.equal(verdicts, 3000, `seed ${seed}`);
});

t.test('PROXY v1', async (t) => {
  const ok = parseProxyHeader(Buffer.from('PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\nhello'));
  t.same(ok, { kind: 'header', version: 1, length: 44, addresses: { family: 'tcp4', source: '203.0.113.7', sourcePort: 51000, destination: '192.0.2.1', destinationPort: 443 }, tlvs: {} });
  t.match(parseProxyHeader(Buffer.from('PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n')), { kind: 'header', addresses: { family: 'tcp6', source: '2001:db8::1' } });
  t.match(parseProxyHeader(Buffer.from('PROXY UNKNOWN\r\n')), { kind: 'header', addresses: null });
  t.match(parseProxyHeader(Buffer.from('PROXY UNKNOWN ffff:: 1.2.3.4 1 2\r\n')), { kind: 'header', addresses: null });
  for (const bad of [
    'PROXY TCP4 203.0.113.7 192.0.2.1 51000\r\n',
    'PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n',
    'PROXY TCP4 1.2.3.4 5.6.7.8 65536 1\r\n',
    'PROXY TCP4 1.2.3.4 5.6.7.8 01 1\r\n',
    'PROXY TCP5 1.2.3.4 5.6.7.8 1 1\r\n',
    'PROXY TCP4 1.2.3.4 5.6.7.8 1 1\n',
    `PROXY TCP4 ${'1'.repeat(120)}\r\n`,
  ]) {
    t.match(parseProxyHeader(Buffer.from(bad)), { kind: 'malformed' }, JSON.stringify(bad));
  }
  t.same(parseProxyHeader(Buffer.from('PROXY TCP4 1.2.3')), { kind: 'more' });
  t.same(parseProxyHeader(Buffer.from('PROX')), { kind: 'more' });
  t.same(parseProxyHeader(Buffer.from('GET / HTTP/1.1\r\n')), { kind: 'missing' });
  t.same(parseProxyHeader(Buffer.from('PROXZ')), { kind: 'missing' });
});

function v2(verCmd: number, fam: number, body: Buffer): Buffer {
  const h = Buffer.alloc(16);
  V2_SIGNATURE.copy(h);
  h[12] = verCmd;
  h[13] = fam;
  h.writeUInt16BE(body.length, 14);
  return Buffer.concat([h, body]);
}
function tlv(type: number, v: Buffer): Buffer {
  const h = Buffer.from([type, 0, 0]);
  h.writeUInt16BE(v.length, 1);
  return Buffer.concat([h, v]);
}

t.test('PROXY v2', async (t) => {
  const sent = proxyHeader('v2', { source: '203.0.113.7', sourcePort: 51000, destination: '192.0.2.1', destinationPort: 443 }, null);
  t.same(parseProxyHeader(Buffer.concat([sent, Buffer.from('x')])), {
    kind: 'header',
    version: 2,
    length: sent.length,
    addresses: { family: 'tcp4', source: '203.0.113.7', sourcePort: 51000, destination: '192.0.2.1', destinationPort: 443 },
    tlvs: {},
  }, "berth's own v2 header, read back");
  const six = proxyHeader('v2', { source: '2001:db8::7', sourcePort: 1, destination: '2001:db8::1', destinationPort: 2 }, null);
  t.match(parseProxyHeader(six), { kind: 'header', addresses: { family: 'tcp6', source: '2001:db8::7', destination: '2001:db8::1' } });
  const addr = Buffer.from([10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2]);
  const withTlvs = Buffer.concat([addr, tlv(0x01, Buffer.from('h2')), tlv(0x02, Buffer.from('db1.example.com')), tlv(0x05, Buffer.from('id-1')), tlv(0x04, Buffer.alloc(3)), tlv(0x20, Buffer.concat([Buffer.from([0x01, 0, 0, 0, 0]), tlv(0x21, Buffer.from('TLSv1.3')), tlv(0x22, Buffer.from('client'))]))]);
  t.match(parseProxyHeader(v2(0x21, 0x11, withTlvs)), { kind: 'header', tlvs: { alpn: 'h2', authority: 'db1.example.com', ssl: { verified: true, version: 'TLSv1.3', cn: 'client' } } });
  // CRC32C over the whole header with its own field zeroed.
  const withCrc = v2(0x21, 0x11, Buffer.concat([addr, tlv(0x03, Buffer.alloc(4))]));
  withCrc.writeUInt32BE(crc32c(withCrc), withCrc.length - 4);
  t.match(parseProxyHeader(withCrc), { kind: 'header' }, 'a right CRC32C');
  withCrc[withCrc.length - 1]! ^= 1;
  t.match(parseProxyHeader(withCrc), { kind: 'malformed', why: /CRC32C/ }, 'a wrong CRC32C');
  t.equal(crc32c(Buffer.from('123456789')), 0xe3069283, 'CRC-32C check value');
  t.match(parseProxyHeader(v2(0x20, 0x00, Buffer.alloc(0))), { kind: 'header', addresses: null }, 'LOCAL');
  t.match(parseProxyHeader(v2(0x21, 0x11, Buffer.alloc(8))), { kind: 'malformed' }, 'length shorter than the addresses');
  t.match(parseProxyHeader(v2(0x31, 0x11, addr)), { kind: 'malformed' }, 'version 3');
  t.match(parseProxyHeader(v2(0x22, 0x11, addr)), { kind: 'malformed' }, 'command 2');
  t.match(parseProxyHeader(v2(0x21, 0x41, addr)), { kind: 'malformed' }, 'family 4');
  t.match(parseProxyHeader(v2(0x21, 0x11, Buffer.concat([addr, Buffer.from([0x01, 0x00, 0x09, 0x61])]))), { kind: 'malformed' }, 'a TLV past the end');
  t.match(parseProxyHeader(v2(0x21, 0x11, Buffer.concat([addr, Buffer.from([0x01])]))), { kind: 'malformed' }, 'a TLV header cut short');
  t.same(parseProxyHeader(v2(0x21, 0x11, addr).subarray(0, 20)), { kind: 'more' });
});

t.test('PROXY: seeded fuzz — always a verdict, never a throw', async (t) => {
  const seed = Number(process.env['BERTH_FUZZ_SEED'] ?? 99);
  const r = seededRandom(seed);
  const bases = [Buffer.from('PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n'), proxyHeader('v2', { source: '2001:db8::7', sourcePort: 1, destination: '2001:db8::1', destinationPort: 2 }, null)];
  let n = 0;
  for (let i = 0; i < 5000; i++) {
    const b = Buffer.from(bases[i % 2]!);
    for (let k = 1 + Math.floor(r.next() * 3); k > 0; k--) b[Math.floor(r.next() * b.length)] = Math.floor(r.next() * 256);
    const cut = b.subarray(0, Math.floor(r.next() * (b.length + 1)));
    const v = parseProxyHeader(cut);
    if (!['more', 'header', 'missing', 'malformed'].includes(v.kind)) t.fail(`seed ${seed}: ${JSON.stringify(v)}`);
    if (v.kind === 'header' && v.length > cut.length) t.fail(`seed ${seed}: a header longer than the bytes`);
    n++;
  }
  t.equal(n, 5000, `seed ${seed}`);
});

t.test('ClientHello: a hello dripped one byte per segment holds its bytes, not a chunk object per byte', async (t) => {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const used = () => {
    gc();
    const m = process.memoryUsage();
    return m.heapUsed + m.arrayBuffers;
  };
  // A record header promising 16 KiB, then 16,000 bytes of it, one per push, in 4 readers at once.
  const head = Buffer.from([0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0xff, 0xf0]);
  const before = used();
  const readers: HelloReader[] = [];
  for (let r = 0; r < 4; r++) {
    const h = new HelloReader();
    for (const b of head) h.push(Buffer.from([b]));
    for (let i = 0; i < 16_000; i++) h.push(Buffer.from([0]));
    readers.push(h);
  }
  const perReader = (used() - before) / readers.length;
  // Measured: ~96 KB (the reader's own buffer, doubled); holding each chunk cost ~2.1 MB.
  t.ok(perReader < 512 * 1024, `${Math.round(perReader / 1024)} KiB held per reader for 16,000 one-byte segments`);
  t.equal(readers[0]!.held().length, head.length + 16_000, 'every byte held');
});
