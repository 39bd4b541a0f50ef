/**
 * PROXY protocol in front of TLS termination: the header comes first on the raw TCP
 * connection, then the handshake; the client it names is the one the session goes
 * by (the PROXY header berth sends on, X-Forwarded-For), on tcp and http listeners.
 */
import { once } from 'node:events';
import { mkdtempSync, readFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import t, { type Test } from 'tap';
import { seededRandom } from '../../src/core/random.js';
import { Pool } from '../../src/pool/pool.js';
import { HttpListener, type HttpListenerSettings } from '../../src/proxy/http/listener.js';
import { createCa, issueCert } from '../../src/tls/certs.js';
import { ListenerTls } from '../../src/tls/terminate.js';
import { httpSettings, rawValues, recordingBackend } from '../helpers/http.js';
import { tcpServer, until } from '../helpers/net.js';
import { countingObserver, endpoint, proxyFor, silent } from '../helpers/proxy.js';

const dir = mkdtempSync(join(tmpdir(), 'berth-proxy-tls-'));
await createCa({ out: dir, cn: 'test ca', days: 2, bits: 2048 });
await issueCert({ ca: dir, out: dir, name: 'server', sans: [{ type: 'DNS', value: 'localhost' }], usage: 'server', days: 2, bits: 2048 });
const ca = readFileSync(join(dir, 'ca.pem'));
/** The server certificate's terminator; `alpn`: what it offers by default; `over`: more of its config (mTLS). */
const terminator = (name: string, alpn?: string[], over: { allow?: string[]; clientCa?: string } = {}) =>
  new ListenerTls(name, { cert: join(dir, 'server.pem'), key: join(dir, 'server-key.pem'), sni: [], allow: [], minVersion: 'TLSv1.2', ...over }, silent, { tlsMaterial: () => {} }, alpn);

/** An http listener terminating TLS with `term`, in front of a recording endpoint (service "svc"); all closed at teardown. */
async function httpsListener(t: Test, term: ListenerTls, settings: Partial<HttpListenerSettings>) {
  const be = await recordingBackend();
  const pool = new Pool({ random: seededRandom(1) });
  pool.configureService('svc', { balance: 'round-robin' });
  pool.applySnapshot({ provider: 'static', services: new Map([['svc', [endpoint(be.port)]]]) });
  const l = new HttpListener(httpSettings(settings), { pool, log: silent, tls: term });
  const { port } = await l.listen();
  t.teardown(() => {
    l.stopAccepting();
    l.destroyAll();
    term.close();
    be.close();
  });
  return { be, pool, l, port };
}
const trusted = { trusted: ['127.0.0.1/32'], untrusted: 'refuse' as const };

/**
 * Connects, sends `header` in the clear, then speaks TLS on the same connection;
 * `together`: the header and the ClientHello in one write (bytes past the header
 * that berth reads with it), else the header on its own first.
 */
async function tlsAfter(port: number, header: string, together = false, headerRead?: () => Promise<void>): Promise<tls.TLSSocket> {
  const raw = net.connect(port, '127.0.0.1');
  raw.on('error', () => {});
  await once(raw, 'connect');
  if (together) raw.cork();
  if (header !== '') raw.write(header);
  // The header alone first: the hello only once berth has taken the header.
  if (!together && headerRead) await headerRead();
  const s = tls.connect({ socket: raw, servername: 'localhost', ca });
  s.on('error', () => {});
  if (together) setImmediate(() => raw.uncork());
  return s;
}

t.test('tcp listener with tls: the PROXY header before the handshake names the client the header sent on carries', async (t) => {
  // The endpoint answers with the first line it got: berth's own PROXY header.
  const be = await tcpServer((s) => {
    let got = '';
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      const nl = got.indexOf('\r\n');
      if (nl >= 0) s.end(got.slice(0, nl));
    });
    s.on('error', () => {});
  });
  const term = terminator('tls');
  const obs = countingObserver();
  const p = await proxyFor([endpoint(be.port)], { tls: term, observer: obs, settings: { acceptProxy: trusted, proxyProtocol: 'v1', timeouts: { connect: 2000, idle: 60_000, preread: 5000 } } });
  t.teardown(async () => {
    await p.close();
    term.close();
    be.close();
  });
  for (const together of [false, true]) {
    const ok = obs.counts['proxy.ok'] ?? 0;
    const c = await tlsAfter(p.port, 'PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n', together, () => until(() => (obs.counts['proxy.ok'] ?? 0) > ok));
    await once(c, 'secureConnect');
    c.write('hello\r\n');
    let answer = '';
    c.setEncoding('latin1');
    c.on('data', (d: string) => (answer += d));
    await once(c, 'end');
    t.equal(answer, 'PROXY TCP4 203.0.113.7 192.0.2.1 51000 443', `the client and destination the front balancer named (hello ${together ? 'with' : 'after'} the header)`);
  }
  // From a trusted peer without a header: refused before any TLS.
  const bare = await tlsAfter(p.port, '');
  let err: Error | undefined;
  bare.on('error', (e) => (err = e));
  await new Promise((resolve) => bare.once('close', resolve));
  t.ok(err !== undefined, `no header, no handshake (${err?.message})`);
  t.same([obs.counts['proxy.ok'], obs.counts['proxy.missing'] ?? obs.counts['proxy.malformed']], [2, 1], 'counted');
  await until(() => p.listener.active === 0);
  // A connection still sending its header is open (counted in active) and closed by destroyAll.
  const slow = net.connect(p.port, '127.0.0.1');
  slow.on('error', () => {});
  await once(slow, 'connect');
  slow.write('PROXY TCP4 203.0');
  await until(() => p.listener.active === 1);
  const gone = new Promise((resolve) => slow.once('close', resolve));
  p.listener.destroyAll();
  await gone;
  t.equal(p.listener.active, 0);
});

t.test('http listener with tls: X-Forwarded-For names the client of the PROXY header read before the handshake', async (t) => {
  const { be, l, port } = await httpsListener(t, terminator('https'), { acceptProxy: trusted });
  const c = await tlsAfter(port, 'PROXY TCP6 2001:db8::7 2001:db8::1 51000 443\r\n', true);
  await once(c, 'secureConnect');
  const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
    const req = http.request({ createConnection: () => c, path: '/x', headers: { host: 'a', connection: 'close' } }, resolve);
    req.on('error', reject);
    req.end();
  });
  res.resume();
  await once(res, 'end');
  t.equal(res.statusCode, 200);
  t.same(rawValues(be.seen[0]!.headers, 'x-forwarded-for'), ['2001:db8::7']);
  t.same(rawValues(be.seen[0]!.headers, 'x-forwarded-proto'), ['https']);
  await until(() => l.active === 0);
});

t.test('http listener with tls and http2: ALPN h2 speaks HTTP/2 (the PROXY header\'s client in X-Forwarded-For), http/1.1 HTTP/1.1; without http2 only http/1.1 is offered', async (t) => {
  const { be, l, port } = await httpsListener(t, terminator('h2', ['h2', 'http/1.1']), { acceptProxy: trusted, http2: true });
  const raw = net.connect(port, '127.0.0.1');
  raw.on('error', () => {});
  await once(raw, 'connect');
  raw.write('PROXY TCP4 203.0.113.9 192.0.2.1 51000 443\r\n');
  const s = tls.connect({ socket: raw, servername: 'localhost', ca, ALPNProtocols: ['h2', 'http/1.1'] });
  await once(s, 'secureConnect');
  t.equal(s.alpnProtocol, 'h2', 'h2 agreed');
  const session = http2.connect('https://localhost', { createConnection: () => s });
  session.on('error', () => {});
  const status = await new Promise<number>((resolve, reject) => {
    const req = session.request({ ':path': '/over-h2' });
    req.on('response', (h) => resolve(Number(h[':status'])));
    req.on('error', reject);
    req.resume();
  });
  t.equal(status, 200);
  t.equal(be.seen[0]!.url, '/over-h2');
  t.same(rawValues(be.seen[0]!.headers, 'x-forwarded-for'), ['203.0.113.9']);
  t.same(rawValues(be.seen[0]!.headers, 'x-forwarded-proto'), ['https']);
  session.close();
  // An HTTP/1.1 client on the same listener.
  const h1 = await tlsAfter(port, 'PROXY TCP4 203.0.113.10 192.0.2.1 51000 443\r\n', true);
  await once(h1, 'secureConnect');
  t.equal(h1.alpnProtocol, false, 'no ALPN asked, none agreed: HTTP/1.1');
  const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
    const req = http.request({ createConnection: () => h1, path: '/over-h1', headers: { host: 'a', connection: 'close' } }, resolve);
    req.on('error', reject);
    req.end();
  });
  res.resume();
  await once(res, 'end');
  t.equal(res.statusCode, 200);
  t.same(rawValues(be.seen[1]!.headers, 'x-forwarded-for'), ['203.0.113.10']);
  await until(() => l.active === 0);

  // http2 off: ALPN offers http/1.1 alone, so an h2 client falls back to HTTP/1.1.
  const p1 = await httpsListener(t, terminator('h1', ['http/1.1']), { http2: false });
  const s1 = tls.connect({ port: p1.port, host: '127.0.0.1', servername: 'localhost', ca, ALPNProtocols: ['h2', 'http/1.1'] });
  s1.on('error', () => {});
  await once(s1, 'secureConnect');
  t.equal(s1.alpnProtocol, 'http/1.1');
  s1.destroy();
});

t.test('mTLS over HTTP/2: an allowed client is served; one verified but not allowed gets 403 and its connection takes no more streams (GOAWAY), as HTTP/1.1 closes it', async (t) => {
  await issueCert({ ca: dir, out: dir, name: 'frontend', sans: [], usage: 'client', days: 2, bits: 2048 });
  await issueCert({ ca: dir, out: dir, name: 'intruder', sans: [], usage: 'client', days: 2, bits: 2048 });
  const term = terminator('mtls-h2', ['h2', 'http/1.1'], { allow: ['CN=frontend'], clientCa: join(dir, 'ca.pem') });
  // (A keep-alive timeout far away: the GOAWAY below is the refusal's, not an idle session's.)
  const { be, port } = await httpsListener(t, term, { http2: true, timeouts: { connect: 1000, idle: 600_000, headers: 2000, response: 5000, keepAlive: 600_000 } });
  const as = (who: string) => {
    const session = http2.connect(`https://localhost:${port}`, { ca, cert: readFileSync(join(dir, `${who}.pem`)), key: readFileSync(join(dir, `${who}-key.pem`)), host: '127.0.0.1', servername: 'localhost' } as http2.SecureClientSessionOptions);
    session.on('error', () => {});
    const goaway = new Promise<number>((resolve) => session.on('goaway', (code: number) => resolve(code)));
    const status = new Promise<number>((resolve, reject) => {
      const req = session.request({ ':path': '/' });
      req.on('response', (h) => resolve(Number(h[':status'])));
      req.on('error', reject);
      req.resume();
    });
    return { session, goaway, status };
  };
  const ok = as('frontend');
  t.equal(await ok.status, 200);
  t.match(rawValues(be.seen[0]!.headers, 'x-forwarded-client-cert')[0] ?? '', /Subject="CN=frontend"/, 'XFCC names the client');
  ok.session.close();
  const no = as('intruder');
  t.equal(await no.status, 403);
  t.equal(await no.goaway, http2.constants.NGHTTP2_NO_ERROR, 'told to open no more streams');
  await once(no.session, 'close');
  t.equal(be.seen.length, 1, 'the intruder reached no endpoint');
});
