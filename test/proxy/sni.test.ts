/**
 * Layer 4 on a tcp listener: TLS passthrough routed by the ClientHello's SNI (and
 * ALPN), with a catch-all; PROXY protocol from a front balancer (v1 and v2 in, the
 * client address it gives used for source-hash and the PROXY header sent on); the
 * same header on an http listener (X-Forwarded-For). Real sockets, node's own TLS.
 */
import { once } from 'node:events';
import { mkdtempSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { pino } from 'pino';
import t from 'tap';
import { seededRandom } from '../../src/core/random.js';
import type { BalanceAlgorithm, EndpointSpec } from '../../src/core/types.js';
import { Pool } from '../../src/pool/pool.js';
import { TcpListener, type TcpListenerSettings } from '../../src/proxy/tcp/listener.js';
import { proxyHeader } from '../../src/proxy/proxy-protocol.js';
import { createCa, issueCert } from '../../src/tls/certs.js';
import { ManualClock } from '../helpers/clock.js';
import { httpProxy, recordingBackend, rawValues } from '../helpers/http.js';
import { tcpServer, until } from '../helpers/net.js';
import { countingObserver, endpoint, silent } from '../helpers/proxy.js';
import { captureHello } from '../helpers/tls-hello.js';

/** An endpoint that records every byte it gets and answers its name at the first byte. */
async function named(name: string) {
  const got: Buffer[] = [];
  const server = await tcpServer((s) => {
    const mine: Buffer[] = [];
    got.push(Buffer.alloc(0));
    const i = got.length - 1;
    s.on('data', (d: Buffer) => {
      mine.push(d);
      got[i] = Buffer.concat(mine);
      if (mine.length === 1) s.write(name);
    });
    s.on('end', () => s.end());
  });
  return { port: server.port, got, close: () => server.close() };
}

async function listener(services: Record<string, EndpointSpec[]>, settings: Partial<TcpListenerSettings>, opts: { clock?: ManualClock; balance?: BalanceAlgorithm } = {}) {
  const pool = new Pool({ random: seededRandom(1), ...(opts.clock ? { clock: opts.clock } : {}) });
  for (const name of Object.keys(services)) pool.configureService(name, opts.balance ?? 'round-robin');
  pool.applySnapshot({ provider: 'static', services: new Map(Object.entries(services)) });
  const observer = countingObserver();
  const l = new TcpListener({ name: 'edge', bind: { host: '127.0.0.1', port: 0 }, service: '', timeouts: { connect: 2000, idle: 60_000, preread: 5000 }, retries: 2, retryBackoff: 0, ...settings }, { pool, log: silent, observer });
  const addr = await l.listen();
  return {
    l,
    pool,
    observer,
    port: addr.port,
    close: () => {
      l.stopAccepting();
      l.destroyAll();
    },
  };
}

/** Sends `bytes` (one byte per write when `ones`), then reads until the connection closes or `until` bytes came. */
async function send(port: number, bytes: Buffer, opts: { ones?: boolean; want?: number; end?: boolean } = {}): Promise<string> {
  const s = net.connect(port, '127.0.0.1');
  s.setNoDelay(true);
  s.on('error', () => {});
  let got = '';
  s.setEncoding('latin1');
  const done = new Promise<void>((resolve) => {
    s.on('data', (d: string) => {
      got += d;
      if (opts.want !== undefined && got.length >= opts.want) s.destroy();
    });
    s.on('close', () => resolve());
  });
  await once(s, 'connect');
  if (opts.ones) {
    for (const b of bytes) {
      s.write(Buffer.from([b]));
      await new Promise((r) => setImmediate(r));
    }
  } else s.write(bytes);
  if (opts.end) s.end();
  await done;
  return got;
}

t.test('a listener whose only route is the catch-all (no service): every connection goes there', async (t) => {
  const be = await named('be');
  const p = await listener({ be: [endpoint(be.port)] }, { routes: [{ service: 'be' }] });
  const q = await listener({ be: [endpoint(be.port)] }, { routes: [{ service: 'be' }], acceptProxy: { trusted: ['127.0.0.1/32'], untrusted: 'refuse' } });
  t.teardown(() => {
    p.close();
    q.close();
    be.close();
  });
  t.equal(await send(p.port, Buffer.from('x'), { want: 2 }), 'be');
  t.equal(await send(q.port, Buffer.from('PROXY UNKNOWN\r\nx'), { want: 2 }), 'be', 'after a PROXY header too');
});

t.test('SNI passthrough: exact name, wildcard with ALPN, catch-all; the endpoint gets the hello byte for byte', async (t) => {
  const db1 = await named('db1');
  const db2 = await named('db2');
  const other = await named('other');
  const p = await listener(
    { db1: [endpoint(db1.port)], db2: [endpoint(db2.port)], other: [endpoint(other.port)] },
    {
      routes: [
        { sni: 'db1.example.com', service: 'db1' },
        { sni: '*.example.com', alpn: ['postgresql'], service: 'db2' },
        { service: 'other' },
      ],
    },
  );
  t.teardown(() => {
    p.close();
    db1.close();
    db2.close();
    other.close();
  });
  const h1 = await captureHello({ servername: 'db1.example.com' });
  t.equal(await send(p.port, h1, { ones: true, want: 3 }), 'db1', 'exact name, the hello sent one byte per write');
  await until(() => db1.got[0]?.length === h1.length);
  t.ok(db1.got[0]!.equals(h1), 'the endpoint got the hello unchanged');
  t.equal(await send(p.port, await captureHello({ servername: 'x.example.com', alpn: ['postgresql'] }), { want: 3 }), 'db2', 'wildcard with ALPN');
  t.equal(await send(p.port, await captureHello({ servername: 'x.example.com', alpn: ['h2'] }), { want: 5 }), 'other', 'wildcard without the ALPN: the catch-all');
  t.equal(await send(p.port, await captureHello({ servername: 'example.com' }), { want: 5 }), 'other', 'the bare suffix is no wildcard match');
  t.equal(await send(p.port, await captureHello({}), { want: 5 }), 'other', 'no SNI: the catch-all');
  t.equal(await send(p.port, Buffer.from('GET / HTTP/1.1\r\n\r\n'), { want: 5 }), 'other', 'not TLS: the catch-all');
  t.same(
    Object.fromEntries(Object.entries(p.observer.counts).filter(([k]) => k.startsWith('preread.'))),
    { 'preread.routed': 2, 'preread.fallback': 3, 'preread.no_sni': 1 },
    'counted by result',
  );
  await until(() => p.l.active === 0);
});

t.test('SNI routes endpoints ask for (label berth.tls.sni) join a listener that routes, after its own; they follow the pool', async (t) => {
  const db1 = await named('db1');
  const db2 = await named('db2');
  const other = await named('other');
  const labelled = (port: number, ...sni: string[]): EndpointSpec => ({ ...endpoint(port), source: 'docker', routes: sni.map((n) => ({ sni: n })) });
  const p = await listener(
    { db1: [endpoint(db1.port)], db2: [labelled(db2.port, 'db2.example.com', 'db1.example.com')], other: [endpoint(other.port)] },
    { routes: [{ sni: 'db1.example.com', service: 'db1' }, { service: 'other' }] },
  );
  // A listener without routes does not route by SNI: the label changes nothing there.
  const plain = await listener({ other: [endpoint(other.port)], db2: [labelled(db2.port, 'db2.example.com')] }, { service: 'other' });
  t.teardown(() => {
    p.close();
    plain.close();
    db1.close();
    db2.close();
    other.close();
  });
  t.equal(await send(p.port, await captureHello({ servername: 'db2.example.com' }), { want: 3 }), 'db2', 'a label route');
  t.equal(await send(p.port, await captureHello({ servername: 'db1.example.com' }), { want: 3 }), 'db1', "the listener's own route wins on the same name");
  t.equal(await send(plain.port, await captureHello({ servername: 'db2.example.com' }), { want: 5 }), 'other', 'no routes on the listener: no label routes either');
  // The endpoint goes away: its route with it; it comes back with another name.
  const rest: [string, EndpointSpec[]][] = [
    ['db1', [endpoint(db1.port)]],
    ['other', [endpoint(other.port)]],
  ];
  p.pool.applySnapshot({ provider: 'static', services: new Map([...rest, ['db2', []]]) });
  t.equal(await send(p.port, await captureHello({ servername: 'db2.example.com' }), { want: 5 }), 'other', 'the route left with its endpoint');
  p.pool.applySnapshot({ provider: 'static', services: new Map([...rest, ['db2', [labelled(db2.port, '*.db.example.com')]]]) });
  t.equal(await send(p.port, await captureHello({ servername: 'x.db.example.com' }), { want: 3 }), 'db2', 'a wildcard label route, taken at once');
  await until(() => p.l.active === 0 && plain.l.active === 0);
});

t.test('a listener with neither service nor routes routes by the label routes alone; nothing matching is closed', async (t) => {
  const db = await named('db');
  const p = await listener({ db: [{ ...endpoint(db.port), source: 'docker', routes: [{ sni: 'db.example.com' }] }] }, { service: '' });
  t.teardown(() => {
    p.close();
    db.close();
  });
  t.equal(await send(p.port, await captureHello({ servername: 'db.example.com' }), { want: 2 }), 'db');
  t.equal(await send(p.port, await captureHello({ servername: 'other.example.com' })), '', 'no route: closed');
  t.equal(p.observer.counts['preread.no_route'], 1);
  // No label asks for a name yet: the hello is still read, and the connection refused as no route.
  const q = await listener({ db: [endpoint(db.port)] }, { service: '' });
  t.teardown(() => q.close());
  t.equal(await send(q.port, await captureHello({ servername: 'db.example.com' })), '', 'nothing routes yet: closed');
  t.same([q.observer.counts['preread.no_route'], db.got.length], [1, 1], 'counted as no route; the endpoint saw only the first listener\'s connection');
  await until(() => p.l.active === 0 && q.l.active === 0);
});

t.test('SNI passthrough without a catch-all: no match, a broken hello or a slow one is closed and counted', async (t) => {
  const db1 = await named('db1');
  const clock = new ManualClock();
  const p = await listener({ db1: [endpoint(db1.port)] }, { routes: [{ sni: 'db1.example.com', service: 'db1' }] }, { clock });
  t.teardown(() => {
    p.close();
    db1.close();
  });
  t.equal(await send(p.port, await captureHello({ servername: 'db2.example.com' })), '', 'no route: closed');
  const hello = await captureHello({ servername: 'db1.example.com' });
  const broken = Buffer.from(hello);
  broken.writeUInt16BE(0xffff, 9 + 2 + 32 + 1 + broken[9 + 2 + 32]!);
  t.equal(await send(p.port, broken), '', 'a malformed hello: closed');
  // Half a hello, then nothing: the preread timeout (on the clock) ends it.
  const s = net.connect(p.port, '127.0.0.1');
  s.on('error', () => {});
  await once(s, 'connect');
  s.write(hello.subarray(0, 50));
  await until(() => clock.dueIn().length > 0);
  const closed = new Promise((r) => s.on('close', r));
  clock.advance(5000);
  await closed;
  t.same(
    Object.fromEntries(Object.entries(p.observer.counts).filter(([k]) => k.startsWith('preread.'))),
    { 'preread.no_route': 1, 'preread.malformed': 1, 'preread.timeout': 1 },
  );
  t.equal(db1.got.length, 0, 'nothing reached the endpoint');
  await until(() => p.l.active === 0);
  t.equal(p.observer.counts['accepted'], p.observer.counts['closed'], 'every accepted connection counted closed');
});

t.test('SNI passthrough end to end with node TLS: each name reaches its own server, whose certificate the client checks', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-sni-'));
  await createCa({ out: dir, cn: 'sni ca', days: 2, bits: 2048 });
  await issueCert({ ca: dir, out: dir, name: 'server', sans: [{ type: 'DNS', value: '*.example.com' }], usage: 'server', days: 2, bits: 2048 });
  const opts = { cert: readFileSync(join(dir, 'server.pem')), key: readFileSync(join(dir, 'server-key.pem')) };
  const servers = ['a', 'b'].map((name) => tls.createServer(opts, (s) => s.end(`${name}:${s.servername}`)));
  for (const s of servers) s.listen(0, '127.0.0.1');
  await Promise.all(servers.map((s) => once(s, 'listening')));
  const port = (s: tls.Server) => (s.address() as net.AddressInfo).port;
  const p = await listener({ a: [endpoint(port(servers[0]!))], b: [endpoint(port(servers[1]!))] }, { routes: [{ sni: 'a.example.com', service: 'a' }, { sni: '*.example.com', service: 'b' }] });
  t.teardown(() => {
    p.close();
    for (const s of servers) s.close();
  });
  const ca = readFileSync(join(dir, 'ca.pem'));
  const get = (servername: string) =>
    new Promise<string>((resolve, reject) => {
      const c = tls.connect({ host: '127.0.0.1', port: p.port, servername, ca }, () => {
        let out = '';
        c.setEncoding('utf8');
        c.on('data', (d: string) => (out += d));
        c.on('end', () => resolve(out));
      });
      c.on('error', reject);
    });
  t.equal(await get('a.example.com'), 'a:a.example.com');
  t.equal(await get('z.example.com'), 'b:z.example.com');
});

t.test('a listener with no SNI routes never waits for the client (server-speaks-first protocols)', async (t) => {
  const smtp = await tcpServer((s) => s.write('220 mail ready\r\n'));
  // Another service's container asks for an SNI route: a listener with a service (and
  // a catch-all) that has no sni route of its own does not take it, so never waits.
  const db: EndpointSpec = { ...endpoint(1), source: 'docker', routes: [{ sni: 'db.example.com' }] };
  const p = await listener({ mail: [endpoint(smtp.port)], db: [db] }, { service: 'mail' });
  const q = await listener({ mail: [endpoint(smtp.port)], db: [db] }, { service: 'mail', routes: [{ service: 'mail' }] });
  t.teardown(() => {
    p.close();
    q.close();
    smtp.close();
  });
  for (const [what, port] of [['a service', p.port], ['a service and a catch-all route', q.port]] as const) {
    const c = net.connect(port, '127.0.0.1');
    const [greeting] = (await once(c, 'data')) as [Buffer];
    t.equal(greeting.toString(), '220 mail ready\r\n', `${what}: the greeting came before the client sent anything`);
    c.destroy();
  }
});

t.test('PROXY protocol in: v1 and v2 from a trusted peer; the client address is the one berth uses and passes on', async (t) => {
  const be = await named('be');
  const clock = new ManualClock();
  const p = await listener({ svc: [endpoint(be.port)] }, { service: 'svc', acceptProxy: { trusted: ['127.0.0.1/32'], untrusted: 'refuse' }, proxyProtocol: 'v1' }, { clock });
  t.teardown(() => {
    p.close();
    be.close();
  });
  await send(p.port, Buffer.from('PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\nhello'), { want: 2 });
  await until(() => be.got[0]?.toString().endsWith('hello') === true);
  t.equal(be.got[0]!.toString(), 'PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\nhello', 'v1 in: the PROXY header berth sends names the real client');
  const v2 = proxyHeader('v2', { source: '2001:db8::7', sourcePort: 4000, destination: '2001:db8::1', destinationPort: 5432 }, null);
  await send(p.port, Buffer.concat([v2, Buffer.from('hi')]), { ones: true, want: 2 });
  await until(() => be.got[1]?.toString().endsWith('hi') === true);
  t.equal(be.got[1]!.toString(), 'PROXY TCP6 2001:db8::7 2001:db8::1 4000 5432\r\nhi', 'v2 in (one byte per write), v1 out');
  t.equal(await send(p.port, Buffer.from('hello without a header')), '', 'no header from a trusted peer: refused');
  t.equal(await send(p.port, Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n')), '', 'a malformed header: refused');
  const s = net.connect(p.port, '127.0.0.1');
  s.on('error', () => {});
  await once(s, 'connect');
  s.write('PROXY TCP4 ');
  await until(() => clock.dueIn().length > 0);
  const closed = new Promise((r) => s.on('close', r));
  clock.advance(5000);
  await closed;
  t.same(
    Object.fromEntries(Object.entries(p.observer.counts).filter(([k]) => k.startsWith('proxy.'))),
    { 'proxy.ok': 2, 'proxy.missing': 1, 'proxy.malformed': 1, 'proxy.timeout': 1 },
  );
  t.equal(be.got.length, 2, 'refused connections never reached the endpoint');
  await until(() => p.l.active === 0);
});

t.test('PROXY protocol in: an untrusted peer is refused, or served as it is with untrusted: ignore', async (t) => {
  const be = await named('be');
  const refuse = await listener({ svc: [endpoint(be.port)] }, { service: 'svc', acceptProxy: { trusted: ['10.0.0.0/8'], untrusted: 'refuse' } });
  const ignore = await listener({ svc: [endpoint(be.port)] }, { service: 'svc', acceptProxy: { trusted: ['10.0.0.0/8'], untrusted: 'ignore' } });
  t.teardown(() => {
    refuse.close();
    ignore.close();
    be.close();
  });
  t.equal(await send(refuse.port, Buffer.from('PROXY TCP4 203.0.113.7 192.0.2.1 1 2\r\nx')), '', 'refused');
  t.equal(refuse.observer.counts['proxy.untrusted'], 1);
  t.equal(await send(ignore.port, Buffer.from('plain'), { want: 2 }), 'be', 'served without a header');
});

t.test('PROXY protocol in: source-hash keys on the address the header gives; then SNI routing', async (t) => {
  const a = await named('a');
  const b = await named('b');
  const p = await listener({ svc: [endpoint(a.port), endpoint(b.port)] }, { service: 'svc', acceptProxy: { trusted: ['127.0.0.1/32'], untrusted: 'refuse' } }, { balance: 'source-hash' });
  t.teardown(() => {
    p.close();
    a.close();
    b.close();
  });
  const seen = new Map<string, Set<string>>();
  for (let i = 0; i < 16; i++) {
    const ip = `198.51.100.${i % 8}`;
    const got = await send(p.port, Buffer.from(`PROXY TCP4 ${ip} 192.0.2.1 ${1000 + i} 80\r\nx`), { want: 1 });
    (seen.get(ip) ?? seen.set(ip, new Set()).get(ip)!).add(got);
  }
  t.ok([...seen.values()].every((s) => s.size === 1), 'each client address always reached the same endpoint');
  t.equal(new Set([...seen.values()].map((s) => [...s][0])).size, 2, 'and the addresses spread over both');

  const db = await named('db');
  const q = await listener({ db: [endpoint(db.port)] }, { acceptProxy: { trusted: ['127.0.0.1/32'], untrusted: 'refuse' }, routes: [{ sni: 'db.example.com', service: 'db' }] });
  t.teardown(() => {
    q.close();
    db.close();
  });
  const hello = await captureHello({ servername: 'db.example.com' });
  t.equal(await send(q.port, Buffer.concat([Buffer.from('PROXY TCP4 203.0.113.9 192.0.2.1 1 443\r\n'), hello]), { ones: true, want: 2 }), 'db', 'the header, then the hello, one byte per write');
  await until(() => db.got[0]?.length === hello.length);
  t.ok(db.got[0]!.equals(hello), 'the endpoint got the hello without the header');
});

t.test('PROXY protocol in on an http listener: X-Forwarded-For names the client the header gave', async (t) => {
  const be = await recordingBackend();
  const obs = countingObserver();
  const p = await httpProxy({ svc: [endpoint(be.port)] }, { acceptProxy: { trusted: ['127.0.0.1/32'], untrusted: 'refuse' } }, obs);
  t.teardown(() => {
    p.close();
    be.close();
  });
  const reply = await send(p.port, Buffer.from('PROXY TCP4 203.0.113.7 192.0.2.1 51000 80\r\nGET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'));
  t.match(reply, /^HTTP\/1\.1 200 /);
  t.same(rawValues(be.seen[0]!.headers, 'x-forwarded-for'), ['203.0.113.7']);
  t.equal(await send(p.port, Buffer.from('GET /x HTTP/1.1\r\nHost: a\r\n\r\n')), '', 'no header: refused before any HTTP');
  t.equal(be.seen.length, 1);
  await until(() => p.listener.active === 0);
  t.same([obs.counts['accepted'], obs.counts['closed']], [2, 2], 'each connection counted once, accepted and closed');
  // A connection still sending its header is open (counted in active) and closed by destroyAll.
  const s = net.connect(p.port, '127.0.0.1');
  s.on('error', () => {});
  await once(s, 'connect');
  s.write('PROXY TCP4 ');
  await until(() => p.listener.active === 1);
  const closed = new Promise((r) => s.on('close', r));
  p.listener.stopAccepting();
  p.listener.destroyAll();
  await closed;
  t.equal(p.listener.active, 0);
});

t.test('a log line per tcp session (with http.accessLog): client, endpoint, bytes, how it ended; refusals too', async (t) => {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s) as Record<string, unknown>) });
  const be = await named('be');
  const pool = new Pool({ random: seededRandom(1) });
  pool.configureService('be', 'round-robin');
  pool.applySnapshot({ provider: 'static', services: new Map([['be', [endpoint(be.port)]]]) });
  const l = new TcpListener(
    { name: 'edge', bind: { host: '127.0.0.1', port: 0 }, service: '', routes: [{ sni: 'be.example.com', service: 'be' }], acceptProxy: { trusted: ['127.0.0.1/32'], untrusted: 'refuse' }, timeouts: { connect: 2000, idle: 60_000 }, retries: 0, retryBackoff: 0, http: { accessLog: true } },
    { pool, log },
  );
  const port = (await l.listen()).port;
  t.teardown(() => {
    l.stopAccepting();
    l.destroyAll();
    be.close();
  });
  const hello = await captureHello({ servername: 'be.example.com' });
  await send(port, Buffer.concat([Buffer.from('PROXY TCP4 203.0.113.7 192.0.2.1 1 443\r\n'), hello]), { want: 2, end: true });
  await send(port, Buffer.concat([Buffer.from('PROXY TCP4 203.0.113.8 192.0.2.1 1 443\r\n'), await captureHello({ servername: 'other.example.com' })]));
  await send(port, Buffer.from('no header'));
  await until(() => lines.filter((x) => x['msg'] === 'tcp session').length === 3);
  const [ok, noRoute, noHeader] = lines.filter((x) => x['msg'] === 'tcp session');
  t.match(ok, { client: '203.0.113.7', listener: 'edge', service: 'be', endpoint: `127.0.0.1:${be.port}`, attempts: 1, tx: hello.length });
  t.ok(['client close', 'client reset', 'endpoint close'].includes(String(ok!['end'])), `how it ended: ${String(ok!['end'])}`);
  t.match(noRoute, { listener: 'edge', sni: 'other.example.com', end: 'refused by route (no_route)' });
  t.match(noHeader, { listener: 'edge', end: 'proxy header error (missing)' });
});

t.test("PostgreSQL: an endpoint that never answers berth's SSLRequest, or answers N, is a failed connect: the next one is tried", async (t) => {
  const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
  const silent = await tcpServer(() => {});
  const noTls = await tcpServer((s) => s.once('data', () => s.write('N')));
  const good = await tcpServer((s) => {
    let first = true;
    s.on('data', (d: Buffer) => {
      if (first && d.subarray(0, 8).equals(SSL_REQUEST)) {
        first = false;
        s.write('S');
        if (d.length > 8) s.write(`got:${d.subarray(8).toString()}`);
        return;
      }
      s.write(`got:${d.toString()}`);
    });
  });
  const clock = new ManualClock();
  const p = await listener({ pg: [endpoint(silent.port, 1000), endpoint(noTls.port, 100), endpoint(good.port, 1)] }, { service: 'pg', postgres: true }, { clock });
  t.teardown(() => {
    p.close();
    silent.close();
    noTls.close();
    good.close();
  });
  const c = net.connect(p.port, '127.0.0.1');
  c.on('error', () => {});
  let got = '';
  c.setEncoding('latin1');
  c.on('data', (d: string) => (got += d));
  await once(c, 'connect');
  c.write(SSL_REQUEST);
  await until(() => got === 'S', 5000, "berth's own S");
  // The first endpoint accepted and says nothing: the connect timeout (on the clock) ends that wait.
  await until(() => clock.dueIn().length > 0);
  clock.advance(2000);
  c.write('hello');
  await until(() => got === 'Sgot:hello', 5000, 'through the endpoint that answered S');
  const eps = p.pool.service('pg')!.endpoints;
  t.equal(eps.get(`127.0.0.1:${silent.port}`)!.failures, 1, 'the silent one counted');
  t.equal(eps.get(`127.0.0.1:${noTls.port}`)!.failures, 1, 'the one that said N counted');
  c.destroy();
});
