/**
 * UDP load balancing on real sockets, idle time on a ManualClock: sessions keyed by
 * the client's address and port follow their first endpoint; answers come back from
 * the listener's address; `responses: 1` leaves no session behind; the session cap
 * drops and counts; an ICMP unreachable ends the session and counts against the
 * endpoint, and the client's next datagram picks again; a draining endpoint gets no
 * new sessions; nothing is left open after.
 */
import dgram from 'node:dgram';
import { once } from 'node:events';
import type os from 'node:os';
import t from 'tap';
import { seededRandom } from '../../src/core/random.js';
import { Flag, type EndpointSpec } from '../../src/core/types.js';
import { Pool, type ServiceSettings } from '../../src/pool/pool.js';
import { addressesFor, UdpListener, type UdpListenerDeps, type UdpListenerSettings, type UdpSettings } from '../../src/proxy/udp/listener.js';
import { ManualClock } from '../helpers/clock.js';
import { until } from '../helpers/net.js';
import { countingObserver, endpoint, silent } from '../helpers/proxy.js';
import { proxyHeader } from '../../src/proxy/proxy-protocol.js';

/** A UDP endpoint that answers each datagram with "<name>:<datagram>" (`times` answers each). */
async function echo(name: string, times = 1) {
  const s = dgram.createSocket('udp4');
  const seen: string[] = [];
  s.on('message', (m, r) => {
    seen.push(m.toString());
    for (let i = 0; i < times; i++) s.send(`${name}:${m.toString()}`, r.port, r.address);
  });
  s.bind(0, '127.0.0.1');
  await once(s, 'listening');
  return { port: s.address().port, seen, close: () => s.close() };
}

async function listener(endpoints: EndpointSpec[], udp: Partial<UdpSettings> = {}, service: ServiceSettings = { balance: 'round-robin' }, over: Partial<UdpListenerSettings> = {}, deps: Partial<UdpListenerDeps> = {}) {
  const clock = new ManualClock();
  const pool = new Pool({ random: seededRandom(1), clock });
  pool.configureService('svc', service);
  pool.applySnapshot({ provider: 'static', services: new Map([['svc', endpoints]]) });
  const observer = countingObserver();
  const l = new UdpListener({ name: 'dns', bind: { host: '127.0.0.1', port: 0 }, service: 'svc', retries: 2, retryBackoff: 0, udp: { idleTimeout: 60_000, maxSessions: 1024, responses: 0, requests: 0, ...udp }, ...over }, { pool, log: silent, observer, ...deps });
  const addr = await l.listen();
  return { l, pool, clock, observer, port: addr.port, close: () => l.destroyAll() };
}

/** A udp port free on every address: bound on the wildcard, then let go. */
async function freeUdpPort(): Promise<number> {
  const probe = dgram.createSocket('udp4');
  probe.bind(0, '0.0.0.0');
  await once(probe, 'listening');
  const port = probe.address().port;
  probe.close();
  return port;
}

/** A client socket that collects what comes back (with the sender's address). */
async function client() {
  const s = dgram.createSocket('udp4');
  const got: { text: string; from: string }[] = [];
  s.on('message', (m, r) => got.push({ text: m.toString(), from: `${r.address}:${r.port}` }));
  s.bind(0, '127.0.0.1');
  await once(s, 'listening');
  return { s, got, send: (port: number, text: string) => s.send(text, port, '127.0.0.1'), close: () => s.close() };
}

t.test('sessions: a client sticks to its endpoint, answers come from the listener, idle ends it on the clock', async (t) => {
  const a = await echo('a');
  const b = await echo('b');
  const p = await listener([endpoint(a.port), endpoint(b.port)]);
  const c1 = await client();
  const c2 = await client();
  t.teardown(() => {
    p.close();
    a.close();
    b.close();
    c1.close();
    c2.close();
  });
  for (let i = 0; i < 3; i++) {
    c1.send(p.port, `one${i}`);
    await until(() => c1.got.length === i + 1);
  }
  c2.send(p.port, 'two');
  await until(() => c2.got.length === 1);
  const first = c1.got[0]!.text.split(':')[0];
  t.ok(c1.got.every((g) => g.text.startsWith(`${first}:`)), "one client's datagrams all went to one endpoint");
  t.notOk(c2.got[0]!.text.startsWith(`${first}:`), 'the second client got the other endpoint (round-robin)');
  t.ok([...c1.got, ...c2.got].every((g) => g.from === `127.0.0.1:${p.port}`), 'every answer came from the address the client sent to');
  t.equal(p.l.active, 2);
  t.same([p.observer.counts['udp.in'], p.observer.counts['udp.out']], [4, 4]);
  // Idle: nothing for 60 s on the clock ends both sessions; activity re-arms lazily.
  p.clock.advance(30_000);
  c1.send(p.port, 'again');
  await until(() => c1.got.length === 4);
  p.clock.advance(30_000);
  t.equal(p.l.active, 1, 'the quiet session ended, the active one stays');
  p.clock.advance(30_000);
  t.equal(p.l.active, 0, 'then it too');
  t.equal(p.observer.counts['udp.closed'], 2);
  t.same([...p.pool.service('svc')!.endpoints.values()].map((e) => e.active), [0, 0], 'no endpoint slot held');
});

t.test('responses: 1 (DNS): the session and its socket are gone as soon as the answer is relayed', async (t) => {
  const a = await echo('a', 2);
  const p = await listener([endpoint(a.port)], { responses: 1 });
  const clients = await Promise.all(Array.from({ length: 5 }, () => client()));
  t.teardown(() => {
    p.close();
    a.close();
    for (const c of clients) c.close();
  });
  // A query per client port, as dig sends them.
  clients.forEach((c, i) => c.send(p.port, `q${i}`));
  await until(() => clients.every((c) => c.got.length === 1) && p.l.active === 0);
  t.equal(p.observer.counts['udp.opened'], 5, 'a session per query');
  t.equal(p.observer.counts['udp.closed'], 5, 'and each gone after its answer');
  await until(() => a.seen.length === 5);
  t.same(clients.map((c) => c.got.length), [1, 1, 1, 1, 1], "the endpoint's second answers went nowhere");
  // A resolver with several queries in flight on one port gets every answer.
  const once1 = await echo('b');
  const q = await listener([endpoint(once1.port)], { responses: 1 });
  const r = await client();
  t.teardown(() => {
    q.close();
    once1.close();
    r.close();
  });
  for (let i = 0; i < 3; i++) r.send(q.port, `m${i}`);
  await until(() => r.got.length === 3 && q.l.active === 0);
  t.same(r.got.map((g) => g.text).sort(), ['b:m0', 'b:m1', 'b:m2']);
});

t.test('maxSessions: past the cap a new client is dropped and counted; requests: N ends fire-and-forget sessions', async (t) => {
  const a = await echo('a');
  const p = await listener([endpoint(a.port)], { maxSessions: 2 });
  const clients = [await client(), await client(), await client()];
  t.teardown(() => {
    p.close();
    a.close();
    for (const c of clients) c.close();
  });
  clients[0]!.send(p.port, 'x');
  clients[1]!.send(p.port, 'y');
  await until(() => clients[0]!.got.length === 1 && clients[1]!.got.length === 1);
  clients[2]!.send(p.port, 'z');
  await until(() => p.observer.counts['udp.dropped.sessions_full'] === 1);
  t.equal(p.l.active, 2, 'the table stays at its cap');
  t.equal(a.seen.includes('z'), false);

  const sink = await echo('sink', 0);
  const q = await listener([endpoint(sink.port)], { requests: 2 });
  const c = await client();
  t.teardown(() => {
    q.close();
    sink.close();
    c.close();
  });
  c.send(q.port, 'log1');
  c.send(q.port, 'log2');
  await until(() => sink.seen.length === 2 && q.l.active === 0);
  t.equal(q.observer.counts['udp.closed'], 1, 'ended once its two datagrams were out');
});

t.test('an ICMP unreachable ends the session and counts against the endpoint; the next datagram picks again', async (t) => {
  const a = await echo('a');
  // A port nothing listens on: the kernel answers ICMP port unreachable.
  const gone = dgram.createSocket('udp4');
  gone.bind(0, '127.0.0.1');
  await once(gone, 'listening');
  const deadPort = gone.address().port;
  gone.close();
  // Only the dead endpoint at first; one failure ejects it (outlier detection), so the
  // next datagram can only go to the live one added after.
  const p = await listener([endpoint(deadPort)], {}, { balance: 'round-robin', outlier: { consecutiveFailures: 1, ejectFor: 60_000, maxEjectFor: 60_000, maxEjectedPercent: 100 } });
  const c = await client();
  t.teardown(() => {
    p.close();
    a.close();
    c.close();
  });
  c.send(p.port, 'first');
  await until(() => p.observer.counts['udp.closed'] === 1, 5000, 'the refused session ended');
  const dead = p.pool.service('svc')!.endpoints.get(`127.0.0.1:${deadPort}`)!;
  t.equal(dead.failures, 1, 'counted against the endpoint, like a refused connect');
  p.pool.applySnapshot({ provider: 'static', services: new Map([['svc', [endpoint(deadPort), endpoint(a.port)]]]) });
  c.send(p.port, 'second');
  await until(() => c.got.length === 1);
  t.equal(c.got[0]!.text, 'a:second', 'a new session, on the other endpoint');
  t.equal(p.observer.counts['udp.opened'], 2);
});

t.test('a draining endpoint gets no new sessions; its open sessions run until idle', async (t) => {
  const a = await echo('a');
  const b = await echo('b');
  const p = await listener([endpoint(a.port), endpoint(b.port)]);
  const c1 = await client();
  const c2 = await client();
  t.teardown(() => {
    p.close();
    a.close();
    b.close();
    c1.close();
    c2.close();
  });
  c1.send(p.port, 'x');
  await until(() => c1.got.length === 1);
  const mine = c1.got[0]!.text.split(':')[0]!;
  const myPort = mine === 'a' ? a.port : b.port;
  p.pool.setFlag('svc', `127.0.0.1:${myPort}`, Flag.Draining, true, 'test: drain');
  c1.send(p.port, 'y');
  await until(() => c1.got.length === 2);
  t.equal(c1.got[1]!.text, `${mine}:y`, 'the open session stays on the draining endpoint');
  c2.send(p.port, 'z');
  await until(() => c2.got.length === 1);
  t.notOk(c2.got[0]!.text.startsWith(`${mine}:`), 'a new client goes elsewhere');
});

t.test('seeded flood: random datagrams from many clients past maxSessions; everything bounded and closed after', async (t) => {
  const a = await echo('a');
  const p = await listener([endpoint(a.port)], { maxSessions: 16, idleTimeout: 1000 });
  const r = seededRandom(Number(process.env['BERTH_FUZZ_SEED'] ?? 7));
  const clients = await Promise.all(Array.from({ length: 40 }, () => client()));
  t.teardown(() => {
    p.close();
    a.close();
    for (const c of clients) c.close();
  });
  // Small enough in all (< 40 KB) that the kernel's socket buffers drop nothing: every
  // datagram is either relayed or counted as dropped.
  for (let i = 0; i < 200; i++) {
    const c = clients[Math.floor(r.next() * clients.length)]!;
    await new Promise<void>((done) => c.s.send(Buffer.from(Array.from({ length: 1 + Math.floor(r.next() * 190) }, () => Math.floor(r.next() * 256))), p.port, '127.0.0.1', () => done()));
  }
  const counted = () => (p.observer.counts['udp.in'] ?? 0) + (p.observer.counts['udp.dropped.sessions_full'] ?? 0) + (p.observer.counts['udp.dropped.error'] ?? 0);
  await until(() => counted() === 200, 5000, 'every datagram relayed or counted');
  t.equal(p.l.active, 16, 'the table full at its cap (idle time has not moved), never past it');
  t.ok((p.observer.counts['udp.dropped.sessions_full'] ?? 0) > 0, 'the cap was reached and counted');
  p.clock.advance(1000);
  t.equal(p.l.active, 0, 'idle ends every session');
  t.same([...p.pool.service('svc')!.endpoints.values()].map((e) => e.active), [0], 'no slot held');
});

t.test('PROXY v2 on a session\'s first datagram from a trusted balancer; untrusted and missing headers dropped and counted', async (t) => {
  const a = await echo('a');
  const trusting = await listener([endpoint(a.port)], { maxSessions: 16 }, undefined, { acceptProxy: { trusted: ['127.0.0.1/32'], untrusted: 'refuse' } });
  const refusing = await listener([endpoint(a.port)], { maxSessions: 16 }, undefined, { acceptProxy: { trusted: ['10.0.0.0/8'], untrusted: 'refuse' } });
  const [tp, rp] = [trusting.port, refusing.port];
  const c = await client();
  const d = await client();
  t.teardown(() => {
    trusting.close();
    refusing.close();
    a.close();
    c.close();
    d.close();
  });
  const header = proxyHeader('v2', { source: '203.0.113.7', sourcePort: 5353, destination: '192.0.2.1', destinationPort: 53 }, null);
  c.s.send(Buffer.concat([header, Buffer.from('q1')]), tp, '127.0.0.1');
  await until(() => c.got.length === 1);
  t.equal(c.got[0]!.text, 'a:q1', 'the endpoint got the payload without the header');
  c.send(tp, 'q2');
  await until(() => c.got.length === 2);
  t.equal(a.seen.join(), 'q1,q2', 'later datagrams of the session carry none');
  d.send(tp, 'no header');
  d.s.send(Buffer.concat([header, Buffer.from('x')]), rp, '127.0.0.1');
  await until(() => (trusting.observer.counts['proxy.missing'] ?? 0) === 1 && (refusing.observer.counts['proxy.untrusted'] ?? 0) === 1);
  t.equal(trusting.observer.counts['proxy.ok'], 1);
  t.equal(a.seen.length, 2, 'nothing of the refused datagrams reached the endpoint');
});

t.test('an endpoint the session cannot connect to (EACCES: a broadcast address) ends the session and counts; berth stays up', async (t) => {
  const p = await listener([endpoint(9, 1, '255.255.255.255')]);
  const c = await client();
  t.teardown(() => {
    p.close();
    c.close();
  });
  c.send(p.port, 'x');
  await until(() => p.observer.counts['udp.closed'] === 1, 5000, 'the session ended');
  t.equal(p.pool.service('svc')!.endpoints.get('255.255.255.255:9')!.failures, 1, 'counted against the endpoint');
  t.equal(p.l.active, 0);
});

t.test('a wildcard bind is one socket per address of the host: a client gets its answer from the address it sent to', async (t) => {
  const a = await echo('a');
  const port = await freeUdpPort();
  const p = await listener([endpoint(a.port)], {}, { balance: 'round-robin' }, { bind: { host: '0.0.0.0', port } });
  const c = await client();
  t.teardown(() => {
    p.close();
    c.close();
    a.close();
  });
  t.equal(p.port, port);
  const addresses = p.l.describe()['addresses'] as string[];
  t.ok(addresses.includes('127.0.0.1'), `one socket per address (${addresses.join(', ')})`);
  c.send(port, 'q');
  await until(() => c.got.length === 1);
  t.same(c.got, [{ text: 'a:q', from: `127.0.0.1:${port}` }], 'answered from the address and port it sent to');
  p.l.destroyAll();
  t.same(p.l.describe()['addresses'], [], 'every socket closed');
});

t.test('addressesFor: the host\'s addresses for a wildcard (link-local IPv6 left out), null for a plain address', async (t) => {
  const nics = {
    lo: [
      { address: '127.0.0.1', family: 'IPv4', internal: true, netmask: '255.0.0.0', mac: '', cidr: null },
      { address: '::1', family: 'IPv6', internal: true, netmask: '', mac: '', cidr: null, scopeid: 0 },
    ],
    eth0: [
      { address: '10.0.0.5', family: 'IPv4', internal: false, netmask: '', mac: '', cidr: null },
      { address: '10.0.0.6', family: 'IPv4', internal: false, netmask: '', mac: '', cidr: null },
      { address: 'fe80::1', family: 'IPv6', internal: false, netmask: '', mac: '', cidr: null, scopeid: 2 },
      { address: '2001:db8::5', family: 'IPv6', internal: false, netmask: '', mac: '', cidr: null, scopeid: 0 },
    ],
  } as unknown as NodeJS.Dict<os.NetworkInterfaceInfo[]>;
  t.same(addressesFor('0.0.0.0', nics), ['127.0.0.1', '10.0.0.5', '10.0.0.6']);
  t.same(addressesFor('::', nics), ['127.0.0.1', '::1', '10.0.0.5', '10.0.0.6', '2001:db8::5'], ':: takes both families, as a dual-stack socket would');
  t.equal(addressesFor('10.0.0.5', nics), null);
  t.equal(addressesFor('0.0.0.0', {}), null, 'no address at all: the wildcard itself');
});

t.test('a datagram from source port 0 (forged: it cannot be answered) is dropped and counted; nothing throws', async (t) => {
  const a = await echo('a');
  const p = await listener([endpoint(a.port)]);
  t.teardown(() => {
    p.close();
    a.close();
  });
  const sock = (p.l as unknown as { sockets: dgram.Socket[] }).sockets[0]!;
  sock.emit('message', Buffer.from('x'), { address: '127.0.0.1', family: 'IPv4', port: 0, size: 1 });
  t.equal(p.observer.counts['udp.dropped.error'], 1);
  t.equal(p.l.active, 0, 'no session');
});

t.test('a wildcard bind follows the host\'s addresses: one that comes gets a socket, one that goes loses it and its sessions', async (t) => {
  const a = await echo('a');
  const port = await freeUdpPort();
  const nic = (address: string) => ({ address, family: 'IPv4', internal: true, netmask: '255.0.0.0', mac: '', cidr: null }) as unknown as os.NetworkInterfaceInfo;
  let lo = [nic('127.0.0.1')];
  const p = await listener([endpoint(a.port)], {}, { balance: 'round-robin' }, { bind: { host: '0.0.0.0', port } }, { interfaces: () => ({ lo }) });
  const { l, clock } = p;
  const c = await client();
  const got = c.got;
  t.teardown(() => {
    p.close();
    c.close();
    a.close();
  });
  t.same(l.describe()['addresses'], ['127.0.0.1']);
  lo = [nic('127.0.0.1'), nic('127.0.0.3')];
  clock.advance(10_000);
  await until(() => (l.describe()['addresses'] as string[]).length === 2);
  c.s.send('q', port, '127.0.0.3');
  await until(() => got.length === 1);
  t.same(got, [{ text: 'a:q', from: `127.0.0.3:${port}` }], 'the new address answers from itself');
  t.equal(l.active, 1);
  lo = [nic('127.0.0.1')];
  l.configure(l.settings);
  await until(() => (l.describe()['addresses'] as string[]).length === 1);
  t.equal(l.active, 0, 'its session ended with its socket');
});
