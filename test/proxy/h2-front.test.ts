/**
 * HTTP/2 from clients (listeners' http2): prior-knowledge h2c beside HTTP/1.1 on one
 * plaintext port; the same routes, forwarding headers and balancing as HTTP/1.1
 * (each request picks its endpoint); trailers; gRPC answers from berth itself; the
 * downgrade rules (a request that would read differently as HTTP/1.1 never reaches
 * an endpoint); the limits against cheap-frame attacks, each sent as raw frames and
 * each ending the connection with a GOAWAY while the process serves the next
 * client; GOAWAY when the listener stops.
 */
import { once } from 'node:events';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import type { EndpointSpec } from '../../src/core/types.js';
import { H2Guard, MAX_HEADER_FIELDS } from '../../src/proxy/http/limits.js';
import { ManualClock } from '../helpers/clock.js';
import { block, data, END_HEADERS, frame, GET, headers, ping, PREFACE, rawH2, rst, settings, settingsAck, T } from '../helpers/h2-frames.js';
import net from 'node:net';
import { httpProxy, httpSettings, rawRequest, recordingBackend, type Seen } from '../helpers/http.js';
import { countingObserver, silent } from '../helpers/proxy.js';
import { until } from '../helpers/net.js';
import { Pool } from '../../src/pool/pool.js';
import { HttpListener } from '../../src/proxy/http/listener.js';
import { seededRandom } from '../../src/core/random.js';
import { H2_FRONT_NODE } from '../../src/config/validate.js';
import { websocketAccept } from '../../src/proxy/http/exchange.js';
import { grpcAnswer } from '../../src/proxy/http/grpc.js';
import { reply } from '../../src/proxy/http/connection.js';

const { NGHTTP2_ENHANCE_YOUR_CALM, NGHTTP2_SETTINGS_TIMEOUT, NGHTTP2_NO_ERROR } = http2.constants;

const ep = (port: number): EndpointSpec => ({ id: `127.0.0.1:${port}`, host: '127.0.0.1', port, weight: 1, source: 'static' });

interface H2Reply {
  status: number;
  headers: http2.IncomingHttpHeaders;
  flags: number;
  body: string;
  trailers: http2.IncomingHttpHeaders | null;
}

/** One request on `session` (a fresh one on `port` when not given). */
function h2Request(target: number | http2.ClientHttp2Session, fields: http2.OutgoingHttpHeaders, body?: string): Promise<H2Reply> {
  const session = typeof target === 'number' ? http2.connect(`http://127.0.0.1:${target}`) : target;
  session.on('error', () => {});
  return new Promise((resolve, reject) => {
    const s = session.request(fields, { endStream: body === undefined });
    if (body !== undefined) s.end(body);
    let r: Omit<H2Reply, 'body' | 'trailers'> | null = null;
    let text = '';
    let trailers: http2.IncomingHttpHeaders | null = null;
    s.setEncoding('utf8');
    s.on('response', (h, flags) => (r = { status: Number(h[':status']), headers: h, flags }));
    s.on('trailers', (h) => (trailers = h));
    s.on('data', (c: string) => (text += c));
    s.on('error', reject);
    s.on('close', () => {
      if (typeof target === 'number') session.close();
      if (r === null) reject(new Error(`stream closed without a response (rstCode ${s.rstCode})`));
      else resolve({ ...r, body: text, trailers });
    });
  });
}

/** A client session to `port` (prior-knowledge h2c), destroyed with the test. */
function h2Session(t: Test, port: number): http2.ClientHttp2Session {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', () => {});
  t.teardown(() => session.destroy());
  return session;
}

/** An http listener with HTTP/2 on, in front of `backends` (service "svc"). */
async function h2Proxy(t: Test, ports: number[], over: Parameters<typeof httpProxy>[1] = {}, clock?: ManualClock) {
  const observer = countingObserver();
  const p = await httpProxy({ svc: ports.map(ep) }, { http2: true, ...over }, observer, clock);
  t.teardown(p.close);
  return { ...p, observer };
}

const header = (seen: Seen, name: string): string[] => {
  const out: string[] = [];
  for (let i = 0; i < seen.headers.length; i += 2) if (seen.headers[i]!.toLowerCase() === name) out.push(seen.headers[i + 1]!);
  return out;
};

t.test('prior-knowledge h2c and HTTP/1.1 on one port: method, path, body, Host from :authority, cookies joined, X-Forwarded-*', async (t) => {
  const be = await recordingBackend();
  t.teardown(be.close);
  const { port, observer } = await h2Proxy(t, [be.port]);
  const r = await h2Request(port, { ':method': 'POST', ':path': '/p?q=1', ':authority': 'shop.example:8080', cookie: ['a=1', 'b=2'], 'x-forwarded-for': '6.6.6.6', 'content-type': 'text/plain' }, 'hello');
  t.equal(r.status, 200);
  const seen = be.seen[0]!;
  t.equal(seen.method, 'POST');
  t.equal(seen.url, '/p?q=1');
  t.equal(seen.body, 5);
  t.same(header(seen, 'host'), ['shop.example:8080'], 'Host built from :authority');
  t.same(header(seen, 'cookie'), ['a=1; b=2'], 'cookie fields joined into one');
  t.same(header(seen, 'x-forwarded-for'), ['127.0.0.1'], 'an untrusted client\'s X-Forwarded-For replaced');
  t.same(header(seen, 'x-forwarded-proto'), ['http']);
  t.notOk(seen.headers.some((h) => h.startsWith(':')), 'no pseudo-header field reaches an HTTP/1.1 endpoint');
  // The same port still speaks HTTP/1.1.
  const h1 = await rawRequest(port, 'GET /h1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  t.match(h1, /^HTTP\/1\.1 200 /);
  t.equal(be.seen[1]!.url, '/h1');
  t.equal(observer.counts['h2.200'], 1, 'the HTTP/2 request counted with version 2');
  t.equal(observer.counts['http.200'], 2);
});

t.test('one HTTP/2 connection, each request picks its endpoint: 30 requests over 3 endpoints, 10 each', async (t) => {
  const bes = await Promise.all([0, 1, 2].map(() => recordingBackend()));
  for (const b of bes) t.teardown(b.close);
  const { port } = await h2Proxy(t, bes.map((b) => b.port));
  const session = http2.connect(`http://127.0.0.1:${port}`);
  t.teardown(() => session.close());
  await Promise.all(Array.from({ length: 30 }, () => h2Request(session, { ':path': '/' })));
  t.same(
    bes.map((b) => b.seen.length),
    [10, 10, 10],
  );
});

t.test('trailers and 1xx: an endpoint\'s trailers reach the HTTP/2 client; a response without a body ends its stream', async (t) => {
  const be = await recordingBackend((req, res) => {
    if (req.url === '/trailers') {
      res.writeHead(200, { trailer: 'x-checksum' });
      res.write('body');
      res.addTrailers({ 'x-checksum': 'abc' });
      res.end();
      return true;
    }
    if (req.url === '/hints') {
      res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' });
      res.end('after hints');
      return true;
    }
    if (req.url === '/empty') {
      res.writeHead(204);
      res.end();
      return true;
    }
    return false;
  });
  t.teardown(be.close);
  const { port } = await h2Proxy(t, [be.port]);
  const r = await h2Request(port, { ':path': '/trailers' });
  t.equal(r.body, 'body');
  t.equal(r.trailers?.['x-checksum'], 'abc');
  t.equal(r.headers['trailer'], undefined, 'no hop-by-hop field towards an HTTP/2 client');
  const e = await h2Request(port, { ':path': '/empty' });
  t.equal(e.status, 204);
  // 103 Early Hints: an interim HEADERS before the response.
  const session = http2.connect(`http://127.0.0.1:${port}`);
  t.teardown(() => session.close());
  const hints = await new Promise<{ interim: http2.IncomingHttpHeaders[]; status: number }>((resolve, reject) => {
    const interim: http2.IncomingHttpHeaders[] = [];
    const s = session.request({ ':path': '/hints' });
    s.on('headers', (h) => interim.push(h));
    s.on('response', (h) => resolve({ interim, status: Number(h[':status']) }));
    s.on('error', reject);
    s.resume();
  });
  t.equal(hints.interim[0]?.[':status'], 103);
  t.equal(hints.interim[0]?.['link'], '</style.css>; rel=preload; as=style');
  t.equal(hints.status, 200);
});

t.test('gRPC: berth answers Trailers-Only in gRPC (no endpoint: UNAVAILABLE, no route: UNIMPLEMENTED), never an HTML 5xx', async (t) => {
  const { port, observer, pool } = await h2Proxy(t, [], { routes: [{ host: 'grpc.example', service: 'svc' }], service: undefined });
  t.ok(pool.service('svc'));
  const grpc = { 'content-type': 'application/grpc', te: 'trailers', ':method': 'POST' };
  const none = await h2Request(port, { ...grpc, ':path': '/pkg.Svc/Call', ':authority': 'grpc.example' }, '\0\0\0\0\0');
  t.equal(none.status, 200);
  t.equal(none.flags & 0x1, 0x1, 'one HEADERS frame that ends the stream (Trailers-Only)');
  t.equal(none.headers['grpc-status'], '14');
  t.match(String(none.headers['grpc-message']), /^berth: /);
  t.comment(String(none.headers['grpc-message']));
  t.equal(none.headers['content-type'], 'application/grpc');
  const noRoute = await h2Request(port, { ...grpc, ':path': '/pkg.Svc/Call', ':authority': 'other.example' }, '\0\0\0\0\0');
  t.equal(noRoute.headers['grpc-status'], '12');
  t.equal(observer.counts['grpc.12'], 1, 'a call refused at the gate counted too');
  t.equal(observer.counts['grpc.14'], 1, 'counted by grpc-status');
  // Not gRPC: the plain answer.
  const plain = await h2Request(port, { ':path': '/', ':authority': 'grpc.example' });
  t.equal(plain.status, 503);
});

t.test('gRPC through to an endpoint: its grpc-status (in trailers) is counted, its trailers relayed', async (t) => {
  const server = http2.createServer();
  server.on('stream', (s) => {
    s.on('error', () => {});
    s.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '5', 'grpc-message': 'not found' }));
    s.end(Buffer.from([0, 0, 0, 0, 0]));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const observer = countingObserver();
  const pool = new Pool({ random: seededRandom(1) });
  pool.configureService('svc', { balance: 'round-robin' });
  pool.applySnapshot({ provider: 'static', services: new Map([['svc', [ep((server.address() as AddressInfo).port)]]]) });
  const listener = new HttpListener(httpSettings({ http2: true }), { pool, log: silent, observer, httpVersion: () => '2' });
  const { port } = await listener.listen();
  t.teardown(() => {
    listener.stopAccepting();
    listener.destroyAll();
  });
  const r = await h2Request(port, { ':method': 'POST', ':path': '/pkg.Svc/Get', 'content-type': 'application/grpc', te: 'trailers' }, '\0\0\0\0\0');
  t.equal(r.status, 200);
  t.equal(r.trailers?.['grpc-status'], '5');
  t.equal(r.trailers?.['grpc-message'], 'not found');
  t.equal(observer.counts['grpc.5'], 1);
});

t.test('http2: false: the preface is no request to the HTTP/1.1 parser (400), and no HTTP/2 is spoken', async (t) => {
  const be = await recordingBackend();
  t.teardown(be.close);
  const { port } = await h2Proxy(t, [be.port], { http2: false });
  const r = await rawRequest(port, 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
  t.match(r, /^HTTP\/1\.1 400 /);
  t.equal(be.seen.length, 0);
});

t.test('downgrade rules: a request that would read differently as HTTP/1.1 never reaches the endpoint', async (t) => {
  const be = await recordingBackend();
  t.teardown(be.close);
  const { port } = await h2Proxy(t, [be.port]);
  const cases: [string, [string, string][]][] = [
    ['transfer-encoding', [...GET(), ['transfer-encoding', 'chunked']]],
    ['connection', [...GET(), ['connection', 'keep-alive']]],
    ['keep-alive', [...GET(), ['keep-alive', 'timeout=5']]],
    ['upgrade', [...GET(), ['upgrade', 'h2c']]],
    ['te other than trailers', [...GET(), ['te', 'gzip']]],
    ['an upper-case name', [...GET(), ['X-Upper', '1']]],
    [':path without /', [[':method', 'GET'], [':scheme', 'http'], [':path', 'x/y'], [':authority', 'x']]],
    ['no :path', [[':method', 'GET'], [':scheme', 'http'], [':authority', 'x']]],
    ['two :path', [[':method', 'GET'], [':scheme', 'http'], [':path', '/a'], [':path', '/b'], [':authority', 'x']]],
    ['no :scheme', [[':method', 'GET'], [':path', '/'], [':authority', 'x']]],
    ['a pseudo-header field after a regular one', [[':method', 'GET'], [':scheme', 'http'], ['x-a', '1'], [':path', '/'], [':authority', 'x']]],
    ['an unknown pseudo-header field', [...GET(), [':x-unknown', '1']]],
    [':protocol without CONNECT', [...GET(), [':protocol', 'websocket']]],
    [':authority and host disagree', [...GET('/', 'a.example'), ['host', 'b.example']]],
    ['two host fields', [[':method', 'GET'], [':scheme', 'http'], [':path', '/'], ['host', 'a'], ['host', 'b']]],
    ['no :authority nor host', [[':method', 'GET'], [':scheme', 'http'], [':path', '/']]],
    ['a dot segment', GET('/a/../admin')],
    ['content-length that is no number', [...GET(), ['content-length', '1, 1']]],
    ['CONNECT', [[':method', 'CONNECT'], [':authority', 'internal:22']]],
    ['a lower-case :method', [[':method', 'get'], [':scheme', 'http'], [':path', '/'], [':authority', 'x']]],
    ['a :method that is no method', [[':method', 'GET /x HTTP/1.1'], [':scheme', 'http'], [':path', '/'], [':authority', 'x']]],
    ['an 8-bit byte in :path', GET('/a\xffb')],
    ['a space in :path', GET('/a b')],
  ];
  for (const [what, fields] of cases) {
    const before = be.seen.length;
    const c = await rawH2(port);
    c.write(headers(1, fields));
    // Refused: a 400 (or 405) answer on the stream, or nghttp2's reset of it, or of the connection.
    await c.until((g) => (g.streams.get(1)?.includes(T.HEADERS) ?? false) || g.resets.has(1) || g.goaway !== null, what);
    c.close();
    t.same(be.seen.slice(before), [], `${what}: refused before the endpoint`);
  }
  // Fields node's HTTP/2 layer drops before berth sees the request (node answers
  // nghttp2's invalid-field callback with "ignore"): the request goes on without
  // them, and nothing of them, nor anything a CR LF would have injected, reaches the endpoint.
  for (const [what, field] of [
    ['a name that is no token', ['x y', '1']],
    ['CR LF in a value', ['x-a', 'v\r\nx-injected: 1']],
    ['LF in a value', ['x-a', 'v\nx-injected: 1']],
    ['NUL in a value', ['x-a', 'v\0w']],
    ['a value with leading space', ['x-a', ' v']],
  ] as const) {
    const before = be.seen.length;
    const c = await rawH2(port);
    c.write(headers(1, [...GET('/dropped'), field]));
    await c.until((g) => (g.streams.get(1)?.includes(T.HEADERS) ?? false) || g.resets.has(1) || g.goaway !== null, what);
    c.close();
    for (const s of be.seen.slice(before)) {
      t.same([header(s, 'x-a'), header(s, 'x y'), header(s, 'x-injected')], [[], [], []], `${what}: not passed on`);
    }
  }
  // A body longer or shorter than its content-length: nghttp2 ends the stream; the endpoint never sees a whole request.
  for (const [what, body] of [
    ['more DATA than content-length', 'x'.repeat(20)],
    ['less DATA than content-length', 'x'],
  ] as const) {
    const completed = be.seen.length;
    const c = await rawH2(port);
    const post: [string, string][] = [[':method', 'POST'], [':scheme', 'http'], [':path', '/cl'], [':authority', 'x'], ['content-length', '10']];
    c.write([headers(1, post, END_HEADERS), data(1, body)]);
    await c.until((g) => g.resets.has(1) || g.goaway !== null || g.ended, what);
    c.close();
    const full = be.seen.slice(completed).filter((s) => s.body === 10);
    t.equal(full.length, 0, `${what}: no request with a whole 10-byte body reached the endpoint`);
  }
  // And the listener serves the next client.
  t.equal((await h2Request(port, { ':path': '/after' })).status, 200);
});

t.test('limits: too many header fields, or a header list over the size limit: 431 on the stream, the connection takes no more (GOAWAY NO_ERROR)', async (t) => {
  const be = await recordingBackend();
  t.teardown(be.close);
  const { port, observer } = await h2Proxy(t, [be.port]);
  const many: [string, string][] = [...GET()];
  for (let i = 0; i <= MAX_HEADER_FIELDS; i++) many.push([`x-h${i}`, 'v']);
  const big: [string, string][] = [...GET(), ['x-big', 'v'.repeat(17_000)]];
  for (const [what, fields] of [
    ['129 fields', many],
    ['17 kB of header list', big],
  ] as const) {
    const c = await rawH2(port);
    await c.until((g) => g.settingsAcks > 0, 'settings acknowledged');
    c.write(headers(1, fields));
    await c.until((g) => g.goaway !== null && (g.streams.get(1)?.includes(T.HEADERS) ?? false), what);
    t.equal(c.got.goaway?.code, NGHTTP2_NO_ERROR, `${what}: GOAWAY NO_ERROR`);
    c.close();
  }
  t.equal(observer.counts['rejected.header_too_large'], 2);
  t.equal(observer.counts['rejected.h2_limit'], undefined, 'a 431 is counted once');
  t.equal(be.seen.length, 0);
  // Within the limits: served.
  const fine: http2.OutgoingHttpHeaders = { ':path': '/' };
  for (let i = 0; i < MAX_HEADER_FIELDS; i++) fine[`x-h${i}`] = 'v';
  t.equal((await h2Request(port, fine)).status, 200, '128 fields pass');
});

t.test('limits: floods and resets end the connection with GOAWAY(ENHANCE_YOUR_CALM); the next client is served', async (t) => {
  const hang = http.createServer(() => {});
  hang.listen(0, '127.0.0.1');
  await once(hang, 'listening');
  t.teardown(() => {
    hang.closeAllConnections();
    hang.close();
  });
  const be = await recordingBackend();
  t.teardown(be.close);
  // A clock that stands still: every frame of an attack falls in the same second.
  const clock = new ManualClock(1_000_000);
  const { port, observer } = await h2Proxy(t, [be.port], {}, clock);
  type Conn = Awaited<ReturnType<typeof rawH2>>;
  /** Writes `chunks` one batch at a time, each after the server answered a PING sent behind the one before. */
  const paced = async (c: Conn, chunks: Buffer[]) => {
    for (let i = 0; i < chunks.length && c.got.goaway === null && !c.got.ended; i++) {
      const acks = c.got.pings;
      c.write([chunks[i]!, ping(i)]);
      await c.until((g) => g.pings > acks || g.goaway !== null, `batch ${i}`).catch(() => {});
    }
  };
  const attacks: [string, (c: Conn) => Promise<void>][] = [
    ['rapid reset (HEADERS then RST_STREAM(CANCEL), 150 streams, in batches of 10)', (c) => paced(c, Array.from({ length: 15 }, (_, b) => Buffer.concat(Array.from({ length: 10 }, (_, i) => [headers(2 * (b * 10 + i) + 1, GET('/'), END_HEADERS), rst(2 * (b * 10 + i) + 1, 8)]).flat())))],
    ['MadeYouReset (trailers without END_STREAM: the server resets each stream), 150 streams', (c) => paced(c, Array.from({ length: 15 }, (_, b) => Buffer.concat(Array.from({ length: 10 }, (_, i) => [headers(2 * (b * 10 + i) + 1, GET('/'), END_HEADERS), frame(T.HEADERS, END_HEADERS, 2 * (b * 10 + i) + 1, block([['x-t', '1']]))]).flat())))],
    ['PING flood (150 in one write)', async (c) => void c.write(Array.from({ length: 150 }, (_, i) => ping(i)))],
    ['SETTINGS flood (30 in one write)', async (c) => void c.write(Array.from({ length: 30 }, () => settings([[4, 65535]])))],
  ];
  for (const [what, attack] of attacks) {
    const c = await rawH2(port);
    await c.until((g) => g.settingsAcks > 0, 'settings acknowledged');
    await attack(c);
    await c.until((g) => g.goaway !== null && g.ended, what);
    t.equal(c.got.goaway?.code, NGHTTP2_ENHANCE_YOUR_CALM, `${what}: GOAWAY(ENHANCE_YOUR_CALM)`);
    t.equal((await h2Request(port, { ':path': '/next' })).status, 200, `${what}: the next client is served`);
  }
  t.equal(observer.counts['rejected.h2_limit'], attacks.length);
});

t.test('limits: a client that never acknowledges berth\'s SETTINGS is ended at the headers timeout (GOAWAY SETTINGS_TIMEOUT)', async (t) => {
  const be = await recordingBackend();
  t.teardown(be.close);
  const clock = new ManualClock(0);
  const { port } = await h2Proxy(t, [be.port], {}, clock);
  const c = await rawH2(port, { ack: false });
  // The server's SETTINGS has arrived (so its timer runs), unacknowledged.
  await c.until((g) => g.settingsAcks > 0, 'the server acknowledged ours');
  clock.advance(1999);
  t.equal(c.got.goaway, null, 'not before the timeout');
  clock.advance(1);
  await c.until((g) => g.goaway !== null && g.ended, 'GOAWAY');
  t.equal(c.got.goaway?.code, NGHTTP2_SETTINGS_TIMEOUT);
});

t.test('limits: 100 streams at once; the 101st, once the client knows the limit, ends the connection', async (t) => {
  const held: http.ServerResponse[] = [];
  const be = await recordingBackend((_req, res) => {
    held.push(res);
    return true;
  });
  t.teardown(() => {
    for (const r of held) r.destroy();
    be.close();
  });
  const { port } = await h2Proxy(t, [be.port]);
  const c = await rawH2(port);
  await c.until((g) => g.settingsAcks > 0, 'settings acknowledged');
  c.write(Array.from({ length: 101 }, (_, i) => headers(2 * i + 1, GET('/hold'))));
  await c.until((g) => g.goaway !== null || g.resets.has(201), 'the 101st refused');
  t.ok(be.seen.length <= 100, `the endpoint saw ${be.seen.length} requests, not more than 100`);
  c.close();
});

t.test('the stream cap: a connection that has opened its share of streams is closed gracefully (GOAWAY NO_ERROR, open streams finish)', async (t) => {
  const server = http2.createServer();
  const clock = new ManualClock(0);
  const guards = new Map<http2.ServerHttp2Session, H2Guard>();
  server.on('session', (s) => {
    guards.set(s, new H2Guard(s, { clock, settingsTimeout: 10_000, maxHeaderSize: () => 16_384, maxStreams: 3, violated: () => {} }));
  });
  server.on('stream', (s: http2.ServerHttp2Stream, _h: unknown, _f: number, raw: string[]) => {
    guards.get(s.session as http2.ServerHttp2Session)!.stream(s, raw);
    s.on('error', () => {});
    s.respond({ ':status': 200 });
    s.end('ok');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const session = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  session.on('error', () => {});
  const goaway = new Promise<number>((resolve) => session.on('goaway', (code: number) => resolve(code)));
  for (let i = 0; i < 3; i++) t.equal((await h2Request(session, { ':path': '/' })).status, 200, `stream ${i + 1} served`);
  t.equal(await goaway, NGHTTP2_NO_ERROR);
  session.destroy();
});

t.test('stop: open HTTP/2 connections get GOAWAY, their streams in flight finish', async (t) => {
  let answer: (() => void) | null = null;
  const be = await recordingBackend((_req, res) => {
    answer = () => res.end('late');
    return true;
  });
  t.teardown(be.close);
  const { port, listener } = await h2Proxy(t, [be.port]);
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', () => {});
  const goaway = new Promise<number>((resolve) => session.on('goaway', (code: number) => resolve(code)));
  const pending = h2Request(session, { ':path': '/slow' });
  while (be.seen.length === 0) await new Promise((r) => setImmediate(r));
  listener.stopAccepting();
  t.equal(await goaway, NGHTTP2_NO_ERROR);
  answer!();
  const r = await pending;
  t.equal(r.body, 'late', 'the stream in flight finished');
  await once(session, 'close');

  // On the wire: GOAWAY(2^31-1) first, then, a round trip later, the last stream taken.
  const { port: p2, listener: l2 } = await h2Proxy(t, [be.port]);
  const c = await rawH2(p2);
  await c.until((g) => g.settingsAcks > 0, 'settings acknowledged');
  c.write(headers(1, GET('/slow2')));
  while (be.seen.length < 2) await new Promise((r) => setImmediate(r));
  l2.stopAccepting();
  await c.until((g) => g.goaways.length === 2, 'two GOAWAYs');
  t.same(c.got.goaways, [
    { code: NGHTTP2_NO_ERROR, last: 2 ** 31 - 1 },
    { code: NGHTTP2_NO_ERROR, last: 1 },
  ]);
  answer!();
  await c.until((g) => g.ended, 'the connection ends once its stream is done');
  t.ok(c.got.streams.get(1)?.includes(T.DATA), 'the stream in flight got its answer');

  // A stream the client opens after the first GOAWAY: node's nghttp2 takes none
  // after any GOAWAY it sent (node has no shutdown notice), so the final GOAWAY names
  // the last stream taken and the client knows that one was not processed (to retry).
  const { port: p3, listener: l3 } = await h2Proxy(t, [be.port]);
  const d = await rawH2(p3, { answerPings: false });
  await d.until((g) => g.settingsAcks > 0, 'settings acknowledged');
  d.write(headers(1, GET('/first')));
  while (be.seen.length < 3) await new Promise((r) => setImmediate(r));
  l3.stopAccepting();
  await d.until((g) => g.goaways.length === 1 && g.lastPing !== null, 'the first GOAWAY and the PING behind it');
  d.write(headers(3, GET('/meanwhile')));
  d.write(frame(T.PING, 0x1, 0, d.got.lastPing!));
  await d.until((g) => g.goaways.length === 2, 'the final GOAWAY');
  t.equal(d.got.goaways[1]!.last, 1, 'the final GOAWAY names stream 1: stream 3 was not processed');
  answer!();
  await d.until((g) => g.ended, 'stream 1 done, the connection ends');
  t.same(
    be.seen.slice(2).map((x) => x.url),
    ['/first'],
    'stream 3 never reached an endpoint',
  );
});

/** An h2c endpoint (httpVersion 2 behind the listener) answering each stream with `answer`; the streams it saw. */
async function grpcEndpoint(t: Test, answer: (s: http2.ServerHttp2Stream) => void) {
  const server = http2.createServer();
  const streams: http2.ServerHttp2Stream[] = [];
  const sessions: http2.ServerHttp2Session[] = [];
  server.on('session', (s) => sessions.push(s));
  server.on('stream', (s) => {
    s.on('error', () => {});
    streams.push(s);
    answer(s);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    for (const s of sessions) s.destroy();
    server.close();
  });
  return { port: (server.address() as AddressInfo).port, streams };
}

async function grpcProxy(t: Test, port: number, clock?: ManualClock) {
  const observer = countingObserver();
  const pool = new Pool({ random: seededRandom(1), ...(clock ? { clock } : {}) });
  pool.configureService('svc', { balance: 'round-robin' });
  pool.applySnapshot({ provider: 'static', services: new Map([['svc', [ep(port)]]]) });
  const listener = new HttpListener(httpSettings({ http2: true }), { pool, log: silent, observer, httpVersion: () => '2' });
  const addr = await listener.listen();
  t.teardown(() => {
    listener.stopAccepting();
    listener.destroyAll();
  });
  return { port: addr.port, observer };
}

const grpcCall = { ':method': 'POST', ':path': '/pkg.Svc/Call', 'content-type': 'application/grpc', te: 'trailers' };

t.test('gRPC deadline (grpc-timeout): past it, the endpoint\'s stream is cancelled and the client gets DEADLINE_EXCEEDED; no idle timeout without one', async (t) => {
  const clock = new ManualClock(0);
  // Silent: no answer at all.
  const silentEp = await grpcEndpoint(t, () => {});
  const p = await grpcProxy(t, silentEp.port, clock);
  const pending = h2Request(p.port, { ...grpcCall, 'grpc-timeout': '200m' }, '\0\0\0\0\0');
  while (silentEp.streams.length === 0) await new Promise((r) => setImmediate(r));
  clock.advance(199);
  t.equal(silentEp.streams[0]!.closed, false, 'not before the deadline');
  const cancelled = new Promise((r) => silentEp.streams[0]!.on('close', r));
  clock.advance(1);
  const r = await pending;
  t.equal(r.status, 200);
  t.equal(r.flags & 0x1, 0x1, 'Trailers-Only');
  t.equal(r.headers['grpc-status'], '4');
  await cancelled;
  t.equal(silentEp.streams[0]!.rstCode, http2.constants.NGHTTP2_CANCEL, 'the endpoint\'s stream was cancelled');
  t.equal(p.observer.counts['grpc.4'], 1);

  // Begun: the response started, then stalled: DEADLINE_EXCEEDED comes as its trailers.
  const stalls = await grpcEndpoint(t, (s) => {
    s.respond({ ':status': 200, 'content-type': 'application/grpc' });
    s.write(Buffer.from([0, 0, 0, 0, 1, 42]));
  });
  const p2 = await grpcProxy(t, stalls.port, clock);
  const s2 = http2.connect(`http://127.0.0.1:${p2.port}`);
  s2.on('error', () => {});
  const call2 = s2.request({ ...grpcCall, 'grpc-timeout': '1S' });
  call2.on('error', () => {});
  call2.end('\0\0\0\0\0');
  let got2 = 0;
  let trailers2: http2.IncomingHttpHeaders | null = null;
  call2.on('trailers', (h) => (trailers2 = h));
  await new Promise<void>((resolve) =>
    call2.on('data', (c: Buffer) => {
      got2 += c.length;
      if (got2 === 6) resolve();
    }),
  );
  clock.advance(1000);
  await new Promise((r) => call2.on('close', r));
  t.equal(got2, 6, 'what the endpoint sent arrived');
  t.equal((trailers2 as http2.IncomingHttpHeaders | null)?.['grpc-status'], '4', 'DEADLINE_EXCEEDED in the trailers');
  s2.close();

  // No grpc-timeout: no deadline, and no idle timeout either (a quiet stream lives on).
  const quiet = await grpcEndpoint(t, () => {});
  const p3 = await grpcProxy(t, quiet.port, clock);
  const session = http2.connect(`http://127.0.0.1:${p3.port}`);
  session.on('error', () => {});
  const call = session.request(grpcCall, { endStream: false });
  call.on('error', () => {});
  call.write('\0\0\0\0\0');
  while (quiet.streams.length === 0) await new Promise((r) => setImmediate(r));
  // Past the listener's idle (10 s) and response (5 s) timeouts; short of the endpoint PING interval (30 s), which this clock would fire with no time for an answer.
  clock.advance(29_000);
  t.equal(quiet.streams[0]!.closed, false, 'past the idle and response timeouts, still open');
  // The client cancels: the endpoint's stream is cancelled too.
  const gone = new Promise((r) => quiet.streams[0]!.on('close', r));
  call.close(http2.constants.NGHTTP2_CANCEL);
  await gone;
  t.equal(quiet.streams[0]!.rstCode, http2.constants.NGHTTP2_CANCEL, 'the client\'s CANCEL became the endpoint\'s');
  session.close();
});

t.test('grpc-timeout is read as gRPC defines it', async (t) => {
  const { grpcTimeout } = await import('../../src/proxy/http/grpc.js');
  t.same(['1H', '2M', '3S', '250m', '1500u', '7n', '99999999S', '', '1', 'S', '1x', '123456789S', '-1S', '1.5S'].map(grpcTimeout), [3_600_000, 120_000, 3000, 250, 2, 1, 2 ** 31 - 1, 0, 0, 0, 0, 0, 0, 0]);
});

t.test('an idle HTTP/2 connection closes after the keep-alive timeout: GOAWAY, then cut if the client is stuck mid-frame', async (t) => {
  const be = await recordingBackend();
  t.teardown(be.close);
  const { port } = await h2Proxy(t, [be.port], { timeouts: { connect: 1000, idle: 10_000, headers: 2000, response: 5000, keepAlive: 100 } });
  const c = await rawH2(port);
  // Half a HEADERS frame, then nothing: no stream ever opens.
  c.write(headers(1, GET()).subarray(0, 20));
  await c.until((g) => g.goaway !== null && g.ended, 'GOAWAY and the end of the connection');
  t.equal(c.got.goaway?.code, NGHTTP2_NO_ERROR);
  t.equal(be.seen.length, 0);
});

t.test('a client connection reset mid-upload: the exchange ends, the endpoint\'s request is abandoned, the connection is let go', async (t) => {
  const be = await recordingBackend((_req, _res) => true);
  t.teardown(be.close);
  const { port, listener, observer } = await h2Proxy(t, [be.port]);
  const post: [string, string][] = [[':method', 'POST'], [':scheme', 'http'], [':path', '/upload'], [':authority', 'x'], ['content-length', '40']];
  const sock = net.connect(port, '127.0.0.1');
  sock.on('error', () => {});
  await once(sock, 'connect');
  // Everything in one write, the reset as soon as it has left.
  sock.write(Buffer.concat([PREFACE, settings(), settingsAck(), headers(1, post, END_HEADERS), data(1, 'u'.repeat(10), 0)]), () => sock.resetAndDestroy());
  await until(() => listener.active === 0 && (observer.counts['http.499'] ?? 0) === 1, 10_000, 'the exchange ended and the connection was let go');
  t.equal(listener.h2.sessions.size, 0);
});

t.test('idle timers: a session idle again after a slow response closes; a GET waiting on its endpoint past the idle timeout is not reset', async (t) => {
  let hold: (() => void) | null = null;
  const be = await recordingBackend((req, res) => {
    if (req.url === '/slow') {
      hold = () => res.end('slow');
      return true;
    }
    return false;
  });
  t.teardown(be.close);
  const { port } = await h2Proxy(t, [be.port], { timeouts: { connect: 1000, idle: 100, headers: 2000, response: 10_000, keepAlive: 100 } });
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', () => {});
  const goaway = new Promise<number>((resolve) => session.on('goaway', (code: number) => resolve(code)));
  const pending = h2Request(session, { ':path': '/slow' });
  while (hold === null) await new Promise((r) => setImmediate(r));
  // Several idle and keep-alive timeouts go by while the endpoint thinks (wall time:
  // the timers are node's; the outcome does not depend on how many fired).
  await new Promise((r) => setTimeout(r, 500));
  (hold as (() => void) | null)!();
  const r = await pending;
  t.equal(r.status, 200, 'the GET waited for its endpoint');
  t.equal(r.body, 'slow');
  t.equal(await goaway, NGHTTP2_NO_ERROR, 'then the idle session was closed');
});

t.test('resets berth sends itself (responses cut by the endpoint) do not count against the client', async (t) => {
  const be = await recordingBackend((_req, res) => {
    res.writeHead(200, { 'content-length': '100' });
    res.write('part');
    setImmediate(() => res.socket?.destroy());
    return true;
  });
  t.teardown(be.close);
  const clock = new ManualClock(1_000_000);
  const { port, observer } = await h2Proxy(t, [be.port], {}, clock);
  const session = h2Session(t, port);
  for (let i = 0; i < 120; i++) {
    await new Promise<void>((resolve) => {
      const s = session.request({ ':path': `/${i}` });
      s.on('error', () => {});
      s.resume();
      s.on('close', () => resolve());
    });
  }
  t.equal(observer.counts['rejected.h2_limit'], undefined, 'no connection ended for resets');
  t.equal(session.closed, false, 'the connection is still open');
});

t.test('streams node refuses before berth sees them (over its header-pair backstop) are limited too', async (t) => {
  const be = await recordingBackend();
  t.teardown(be.close);
  const clock = new ManualClock(1_000_000);
  const { port, observer } = await h2Proxy(t, [be.port], {}, clock);
  const c = await rawH2(port);
  await c.until((g) => g.settingsAcks > 0, 'settings acknowledged');
  const fields: [string, string][] = [...GET()];
  for (let i = 0; i < 270; i++) fields.push([`x-${i}`, 'v']);
  // 150 such streams, each reset by node; a PING behind them says they were read.
  for (let b = 0; b < 15; b++) {
    const acks = c.got.pings;
    c.write([...Array.from({ length: 10 }, (_, i) => headers(2 * (b * 10 + i) + 1, fields)), ping(b)]);
    await c.until((g) => g.pings > acks, `batch ${b}`);
  }
  t.ok(c.got.resets.size >= 150, 'node reset each');
  t.equal(c.got.goaway, null, 'nothing ended the connection yet');
  clock.advance(1000);
  await c.until((g) => g.goaway !== null && g.ended, 'GOAWAY at the next look');
  t.equal(c.got.goaway?.code, NGHTTP2_ENHANCE_YOUR_CALM);
  t.equal(observer.counts['rejected.h2_limit'], 1);
  t.equal(be.seen.length, 0);
});

t.test('Upgrade: h2c is never honoured nor passed on: served as plain HTTP/1.1, the connection closes after', async (t) => {
  const be = await recordingBackend();
  t.teardown(be.close);
  const { port } = await h2Proxy(t, [be.port]);
  const r = await rawRequest(port, 'GET /admin HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n');
  t.match(r, /^HTTP\/1\.1 200 /, 'an ordinary answer, no 101');
  t.equal(be.seen.length, 1);
  t.same([header(be.seen[0]!, 'upgrade'), header(be.seen[0]!, 'http2-settings')], [[], []], 'neither Upgrade nor HTTP2-Settings reached the endpoint');
  t.same(header(be.seen[0]!, 'connection'), ['keep-alive'], 'only undici\'s own Connection');
  // With a body: refused, as any Upgrade with one.
  const withBody = await rawRequest(port, 'POST / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 3\r\n\r\nabc');
  t.match(withBody, /^HTTP\/1\.1 400 /);
  t.equal(be.seen.length, 1);
});

/**
 * A WebSocket endpoint (HTTP/1.1): answers a handshake with the 101 RFC 6455 asks
 * for and echoes; by path, a refusal (403), a 200 that is no upgrade, a 101 with a
 * wrong accept, and one that resets the connection once it has echoed.
 */
async function websocketBackend() {
  const seen: http.IncomingMessage[] = [];
  const upgrades: net.Socket[] = [];
  const be = http.createServer((req, res) => {
    seen.push(req);
    res.end(req.url === '/refuse' ? 'not you' : 'plain');
  });
  be.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    seen.push(req);
    if (req.url === '/refuse') {
      socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 7\r\n\r\nnot you');
      return;
    }
    if (req.url === '/no-upgrade') {
      socket.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
      return;
    }
    const accept = req.url === '/bad-accept' ? 'AAAAAAAAAAAAAAAAAAAAAAAAAAA=' : websocketAccept(String(req.headers['sec-websocket-key']));
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\nSec-WebSocket-Protocol: chat\r\n\r\n`);
    upgrades.push(socket);
    if (head.length > 0) socket.write(head);
    if (req.url === '/reset') socket.once('data', (d: Buffer) => socket.write(d, () => socket.resetAndDestroy()));
    else socket.pipe(socket);
  });
  await new Promise<void>((r) => be.listen(0, '127.0.0.1', r));
  return {
    port: (be.address() as AddressInfo).port,
    seen,
    upgrades,
    close: () => {
      be.closeAllConnections();
      be.close();
      for (const s of upgrades) s.destroy();
    },
  };
}

/** An extended CONNECT for a WebSocket (RFC 8441 §4) on `session`, once the server has allowed it. */
async function websocketOverH2(session: http2.ClientHttp2Session, path: string) {
  if (!session.remoteSettings.enableConnectProtocol) await once(session, 'remoteSettings');
  const s = session.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'http', ':path': path, ':authority': 'chat.example', 'sec-websocket-version': '13', 'sec-websocket-protocol': 'chat', origin: 'http://chat.example' }, { endStream: false });
  s.on('error', () => {});
  let got = '';
  s.on('data', (d: Buffer) => (got += d.toString('latin1')));
  const [h] = (await once(s, 'response')) as [http2.IncomingHttpHeaders];
  return { s, status: Number(h[':status']), headers: h, got: () => got };
}

t.test('WebSocket over HTTP/2 (RFC 8441): the server allows extended CONNECT; it reaches an HTTP/1.1 endpoint as a GET Upgrade with a key of berth\'s, its 101 becomes 200, bytes both ways', async (t) => {
  const be = await websocketBackend();
  t.teardown(be.close);
  const { port, observer, listener } = await h2Proxy(t, [be.port]);
  const session = h2Session(t, port);
  await once(session, 'remoteSettings');
  t.equal(session.remoteSettings.enableConnectProtocol, true, 'SETTINGS_ENABLE_CONNECT_PROTOCOL sent');
  const ws = await websocketOverH2(session, '/chat?room=1');
  t.equal(ws.status, 200, 'the 101 is the client\'s 200');
  t.equal(ws.headers['sec-websocket-protocol'], 'chat', 'the agreed subprotocol relayed');
  t.equal(ws.headers['sec-websocket-accept'], undefined, 'no accept: HTTP/2 has no key');
  t.equal(ws.headers.upgrade, undefined);
  const req = be.seen[0]!;
  t.equal(req.method, 'GET');
  t.equal(req.url, '/chat?room=1');
  t.equal(req.headers.upgrade, 'websocket');
  t.match(req.headers.connection, /upgrade/i);
  t.match(req.headers['sec-websocket-key'], /^[A-Za-z0-9+/]{22}==$/, 'a key of 16 random bytes');
  t.equal(req.headers['sec-websocket-version'], '13');
  t.equal(req.headers.host, 'chat.example', 'Host from :authority');
  t.equal(req.headers['x-forwarded-for'], '127.0.0.1');
  t.notOk(req.rawHeaders.some((h) => h.startsWith(':')), 'no pseudo-header field reaches the endpoint');
  ws.s.write('ping-1');
  await until(() => ws.got() === 'ping-1', 2000, 'echo');
  // The same session serves plain requests beside the tunnel.
  t.equal((await h2Request(session, { ':path': '/beside' })).status, 200);
  t.equal(observer.counts.upgrade, 1);
  t.equal(listener.tunnels.size, 1);
  // The client ends its half (END_STREAM): the endpoint's socket ends, its end ends the stream, cleanly.
  ws.s.end();
  await once(ws.s, 'close');
  t.equal(ws.s.rstCode, NGHTTP2_NO_ERROR, 'closed cleanly both ways');
  await until(() => listener.tunnels.size === 0, 2000, 'tunnel closed');
});

t.test('WebSocket over HTTP/2: bytes sent before the 200 follow the handshake; an endpoint that resets the connection resets the stream (CONNECT_ERROR)', async (t) => {
  const be = await websocketBackend();
  t.teardown(be.close);
  const { port, listener } = await h2Proxy(t, [be.port]);
  const session = h2Session(t, port);
  await once(session, 'remoteSettings');
  const s = session.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'http', ':path': '/reset', ':authority': 'x', 'sec-websocket-version': '13' }, { endStream: false });
  s.on('error', () => {});
  let got = '';
  s.on('data', (d: Buffer) => (got += d.toString('latin1')));
  s.write('early');
  const [h] = (await once(s, 'response')) as [http2.IncomingHttpHeaders];
  t.equal(h[':status'], 200);
  await new Promise((r) => s.once('close', r));
  t.equal(got, 'early', 'the early bytes went through the tunnel, after the endpoint agreed');
  // (On Node 24, where berth serves HTTP/2 to clients; under node 20 the client's stream closes with code 0 here, not looked into further.)
  if (H2_FRONT_NODE) t.equal(s.rstCode, http2.constants.NGHTTP2_CONNECT_ERROR, 'the endpoint\'s reset is the stream\'s');
  await until(() => listener.tunnels.size === 0, 2000, 'tunnel closed');
  t.equal((await h2Request(session, { ':path': '/after' })).status, 200, 'the session goes on');
});

t.test('WebSocket over HTTP/2: nothing is tunnelled unless the endpoint agreed; other CONNECTs are refused', async (t) => {
  const be = await websocketBackend();
  t.teardown(be.close);
  const { port, observer, listener } = await h2Proxy(t, [be.port]);
  const session = h2Session(t, port);
  const body = (s: http2.ClientHttp2Stream) =>
    new Promise<string>((resolve) => {
      let b = '';
      s.on('data', (d: Buffer) => (b += d.toString()));
      s.on('close', () => resolve(b));
    });
  // The endpoint's refusal reaches the client as it is.
  const refused = await websocketOverH2(session, '/refuse');
  t.equal(refused.status, 403);
  t.equal(await body(refused.s), 'not you');
  // A 200 that is no 101 would read as an open tunnel to an HTTP/2 client: 502.
  const plain = await websocketOverH2(session, '/no-upgrade');
  t.equal(plain.status, 502, 'a 2xx that is no upgrade');
  // A 101 that does not answer berth's key: no WebSocket endpoint of the client's; 502.
  const wrong = await websocketOverH2(session, '/bad-accept');
  t.equal(wrong.status, 502, 'a 101 with a wrong Sec-WebSocket-Accept');
  t.equal(observer.counts.upgrade ?? 0, 0, 'no tunnel opened');
  t.equal(listener.tunnels.size, 0);
  // Another :protocol: 501; a plain CONNECT: 405 with Allow; :protocol without CONNECT: 400.
  const other = await h2Request(session, { ':method': 'CONNECT', ':protocol': 'connect-udp', ':scheme': 'http', ':path': '/', ':authority': 'x' }, '');
  t.equal(other.status, 501);
  const connect = await h2Request(session, { ':method': 'CONNECT', ':authority': 'internal:22' }, '');
  t.equal(connect.status, 405);
  t.equal(connect.headers.allow, 'GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS');
  const c = await rawH2(port);
  c.write(headers(1, [...GET(), [':protocol', 'websocket']]));
  await c.until((g) => (g.streams.get(1)?.includes(T.HEADERS) ?? false) || g.resets.has(1) || g.goaway !== null, ':protocol on a GET');
  c.close();
  t.same(
    be.seen.map((r) => r.url),
    ['/refuse', '/no-upgrade', '/bad-accept'],
    'only the three handshakes reached the endpoint',
  );
});

t.test('a reload of an HTTP/2 listener cuts nothing: a request in flight and a WebSocket tunnel go on, the session takes new requests under the new settings', async (t) => {
  let answer: (() => void) | null = null;
  const be = await recordingBackend((req, res) => {
    if (req.url !== '/slow') return false;
    answer = () => res.end('late');
    return true;
  });
  t.teardown(be.close);
  const ws = await websocketBackend();
  t.teardown(ws.close);
  const { port, listener, pool } = await h2Proxy(t, [be.port]);
  pool.configureService('chat', { balance: 'round-robin' });
  pool.applySnapshot({ provider: 'static', services: new Map([['svc', [ep(be.port)]], ['chat', [ep(ws.port)]]]) });
  listener.configure(httpSettings({ http2: true, routes: [{ pathPrefix: '/ws', service: 'chat' }] }));
  const session = h2Session(t, port);
  const pending = h2Request(session, { ':path': '/slow' });
  const tunnel = await websocketOverH2(session, '/ws');
  t.equal(tunnel.status, 200);
  while (!be.seen.some((s) => s.url === '/slow')) await new Promise((r) => setImmediate(r));
  // The reload: other timeouts, and HTTP/2 off for new connections on this plaintext port.
  listener.configure(httpSettings({ http2: false, routes: [{ pathPrefix: '/ws', service: 'chat' }], timeouts: { connect: 2000, idle: 30_000, headers: 5000, response: 20_000, keepAlive: 5000 } }));
  tunnel.s.write('after-reload');
  await until(() => tunnel.got() === 'after-reload', 2000, 'the tunnel still echoes');
  answer!();
  t.equal((await pending).body, 'late', 'the request in flight finished');
  t.equal((await h2Request(session, { ':path': '/next' })).status, 200, 'the open session takes a new request');
  t.equal(listener.tunnels.size, 1);
  const h1 = await rawRequest(port, 'GET /h1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  t.match(h1, /^HTTP\/1\.1 200 /, 'new connections: HTTP/1.1 as before');
});

t.test('Expect over HTTP/2: 100-continue gets its 100 and the body goes on (Expect itself is not passed on); another expectation is 417', async (t) => {
  const be = await recordingBackend();
  t.teardown(be.close);
  const { port } = await h2Proxy(t, [be.port]);
  const session = h2Session(t, port);
  const s = session.request({ ':method': 'PUT', ':path': '/up', expect: '100-continue' }, { endStream: false });
  s.on('error', () => {});
  await once(s, 'continue');
  s.end('payload');
  const [h] = (await once(s, 'response')) as [http2.IncomingHttpHeaders];
  t.equal(h[':status'], 200);
  s.resume();
  t.equal(be.seen[0]!.body, 7, 'the body reached the endpoint after the 100');
  t.same(header(be.seen[0]!, 'expect'), [], 'Expect is hop-by-hop for berth');
  const other = await h2Request(session, { ':method': 'POST', ':path': '/x', expect: 'something-else' }, '');
  t.equal(other.status, 417);
  t.equal(be.seen.length, 1, 'the refused one never reached the endpoint');
});

t.test('a WebSocket tunnel whose endpoint ends cleanly while the HTTP/2 client has stopped reading still ends (the idle timeout cuts it) and frees the endpoint', async (t) => {
  const be = http.createServer();
  const ups: net.Socket[] = [];
  be.on('upgrade', (req: http.IncomingMessage, socket: net.Socket) => {
    ups.push(socket);
    socket.on('error', () => {});
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${websocketAccept(String(req.headers['sec-websocket-key']))}\r\n\r\n`);
    // A little more than the client's flow-control window (the rest waits in berth,
    // under its buffer's high-water mark: the endpoint's side is read to its end), then a clean close.
    socket.end(Buffer.alloc(70_000, 120));
  });
  await new Promise<void>((r) => be.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    be.close();
    for (const s of ups) s.destroy();
  });
  const { port, listener, pool } = await h2Proxy(t, [(be.address() as AddressInfo).port], { timeouts: { connect: 1000, idle: 300, headers: 2000, response: 5000, keepAlive: 5000 } });
  const session = h2Session(t, port);
  await once(session, 'remoteSettings');
  // Nothing reads the stream: the client's window fills and stays full.
  const s = session.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'http', ':path': '/', ':authority': 'x', 'sec-websocket-version': '13' }, { endStream: false });
  s.on('error', () => {});
  const [h] = (await once(s, 'response')) as [http2.IncomingHttpHeaders];
  t.equal(h[':status'], 200);
  await until(() => listener.tunnels.size === 0, 10_000, 'the tunnel ended');
  t.equal(pool.service('svc')!.endpoints.get(`127.0.0.1:${(be.address() as AddressInfo).port}`)!.active, 0, 'the endpoint\'s slot is free');
});

t.test('trailers HTTP/2 cannot carry (a field that may appear once, twice; a connection-specific one) reset the client\'s stream; berth goes on', async (t) => {
  for (const trailer of ['Age: 1\r\nAge: 2', 'HTTP2-Settings: x', 'Content-Type: a\r\nContent-Type: b']) {
    const be = net.createServer((s) => {
      s.on('error', () => {});
      s.once('data', () => s.write(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x\r\n\r\n4\r\nbody\r\n0\r\n${trailer}\r\n\r\n`));
    });
    await new Promise<void>((r) => be.listen(0, '127.0.0.1', r));
    const { port } = await h2Proxy(t, [(be.address() as AddressInfo).port]);
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on('error', () => {});
    const s = session.request({ ':path': '/' });
    s.on('error', () => {});
    s.resume();
    await new Promise((r) => s.once('close', r));
    t.equal(s.rstCode, http2.constants.NGHTTP2_INTERNAL_ERROR, `${JSON.stringify(trailer)}: a reset, not a whole response`);
    session.destroy();
    be.close();
  }
});

t.test('an upload berth will not take (no endpoint answered: 502) is stopped with RST_STREAM(NO_ERROR) once the answer is out, not left for the idle timeout', async (t) => {
  const closed = net.createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const dead = (closed.address() as AddressInfo).port;
  await new Promise<void>((r) => closed.close(() => r()));
  const { port } = await h2Proxy(t, [dead], { retries: 0, timeouts: { connect: 1000, idle: 120_000, headers: 2000, response: 5000, keepAlive: 5000 } });
  const session = h2Session(t, port);
  const s = session.request({ ':method': 'POST', ':path': '/' }, { endStream: false });
  s.on('error', () => {});
  let status = 0;
  s.on('response', (h) => (status = Number(h[':status'])));
  s.resume();
  s.end(Buffer.alloc(2 << 20));
  await new Promise((r) => s.once('close', r));
  t.equal(status, 502);
  t.equal(s.rstCode, NGHTTP2_NO_ERROR, 'stopped without error right after the answer (the idle timeout would be CANCEL, two minutes on)');
});

t.test('berth\'s own answers to a stream the client has reset but node has not destroyed yet (its upload unread) throw nothing', async (t) => {
  const server = http2.createServer();
  let served: http2.ServerHttp2Stream | null = null;
  server.on('stream', (s) => {
    s.on('error', () => {});
    // As an exchange's body reader leaves it: read listeners on, paused.
    s.on('data', () => {});
    s.pause();
    served = s;
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const session = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  session.on('error', () => {});
  t.teardown(() => session.destroy());
  const s = session.request({ ':method': 'POST', ':path': '/svc/M', 'content-type': 'application/grpc' }, { endStream: false });
  s.on('error', () => {});
  s.write(Buffer.alloc(30_000));
  await until(() => served !== null, 2000, 'the stream');
  // The upload reaches the server before the reset (a PING's answer is the barrier both times).
  await new Promise((r) => session.ping(r));
  s.close(NGHTTP2_NO_ERROR);
  await new Promise((r) => session.ping(r));
  const stream = served! as http2.ServerHttp2Stream;
  t.ok(stream.closed && !stream.destroyed, 'closed, not destroyed');
  t.equal(grpcAnswer(stream, 4, 'deadline'), false, 'no gRPC answer, no throw');
  t.doesNotThrow(() => reply(stream, 502, false), 'no plain answer, no throw');
});
