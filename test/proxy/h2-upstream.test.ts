/**
 * HTTP/2 to endpoints (httpVersion: 2): HTTP/1.1 clients through an http listener to
 * node:http2 endpoints, h2c and h2 over TLS with ALPN. Each request picks its
 * endpoint (per-request balancing over one client connection); trailers come back;
 * a stream the endpoint refused or left above a GOAWAY's last stream is tried
 * again; an endpoint whose limit is one stream gets more sessions; silence is a
 * 504; an endpoint that does not speak HTTP/2 a 502.
 */
import { once } from 'node:events';
import { mkdtempSync, readFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import { connect as netConnect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import t, { type Test } from 'tap';
import { seededRandom } from '../../src/core/random.js';
import type { UpstreamTls } from '../../src/core/tls.js';
import { Pool } from '../../src/pool/pool.js';
import { HttpListener } from '../../src/proxy/http/listener.js';
import { createCa, issueCert } from '../../src/tls/certs.js';
import { httpSettings, rawRequest, request } from '../helpers/http.js';
import { silent } from '../helpers/proxy.js';
import { until } from '../helpers/net.js';

type Answer = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, n: number) => void;

/** An h2c endpoint (or h2 over TLS with `secure`) answering each stream with `answer`; counts sessions and streams. */
async function h2Endpoint(t: Test, name: string, answer: Answer = (s) => {
    s.respond({ ':status': 200 });
    s.end(name);
  }, opts: { settings?: http2.Settings; secure?: { key: Buffer; cert: Buffer } } = {}) {
  const server = opts.secure ? http2.createSecureServer({ ...opts.secure, settings: opts.settings ?? {} }) : http2.createServer({ settings: opts.settings ?? {} });
  const seen = { sessions: 0, streams: 0, headers: [] as http2.IncomingHttpHeaders[], sessionsList: [] as http2.ServerHttp2Session[] };
  server.on('session', (s) => {
    seen.sessions++;
    seen.sessionsList.push(s);
  });
  server.on('stream', (stream, headers) => {
    seen.streams++;
    seen.headers.push(headers);
    stream.on('error', () => {});
    answer(stream, headers, seen.streams);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    for (const s of seen.sessionsList) s.destroy();
    server.close();
  });
  return { port: (server.address() as AddressInfo).port, seen };
}

/** An http listener whose service `svc` speaks HTTP/2 to `ports`. */
async function proxy(t: Test, ports: number[], over: { tls?: UpstreamTls; response?: number; http2?: boolean } = {}) {
  const pool = new Pool({ random: seededRandom(1) });
  pool.configureService('svc', { balance: 'round-robin' });
  pool.applySnapshot({ provider: 'static', services: new Map([['svc', ports.map((p) => ({ id: `127.0.0.1:${p}`, host: '127.0.0.1', port: p, weight: 1, source: 'static' as const }))]]) });
  const listener = new HttpListener(httpSettings({ ...(over.response !== undefined ? { timeouts: { connect: 1000, idle: 10_000, headers: 2000, response: over.response, keepAlive: 5000 } } : {}), ...(over.http2 ? { http2: true } : {}) }), {
    pool,
    log: silent,
    httpVersion: () => '2',
    ...(over.tls !== undefined ? { upstreamTls: () => over.tls } : {}),
  });
  const { port } = await listener.listen();
  t.teardown(() => {
    listener.stopAccepting();
    listener.destroyAll();
  });
  return { port, listener, pool };
}

t.test('h2c: method, path, :authority from Host, body both ways, headers without hop-by-hop fields, X-Forwarded-For', async (t) => {
  const ep = await h2Endpoint(t, 'a', (s, h) => {
    let body = '';
    s.setEncoding('utf8');
    s.on('data', (c: string) => (body += c));
    s.on('end', () => {
      s.respond({ ':status': 201, 'x-echo': `${h[':method']} ${h[':path']} ${body}` });
      s.end('done');
    });
  });
  const { port } = await proxy(t, [ep.port]);
  const r = await request(port, { method: 'POST', path: '/items?x=1', headers: { host: 'api.example', 'content-type': 'text/plain', connection: 'keep-alive', 'keep-alive': 'timeout=5' }, body: 'hello' });
  t.equal(r.status, 201);
  t.equal(r.headers['x-echo'], 'POST /items?x=1 hello');
  t.equal(r.body, 'done');
  const h = ep.seen.headers[0]!;
  t.equal(h[':authority'], 'api.example');
  t.equal(h[':scheme'], 'http');
  t.equal(h['x-forwarded-for'], '127.0.0.1');
  t.equal(h['content-type'], 'text/plain');
  t.notOk('connection' in h || 'keep-alive' in h || 'host' in h, 'hop-by-hop fields and Host stay behind');
});

t.test('trailers from the endpoint reach an HTTP/1.1 client (chunked)', async (t) => {
  const ep = await h2Endpoint(t, 'a', (s) => {
    s.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '0', 'grpc-message': 'ok' }));
    s.end('payload');
  });
  const { port } = await proxy(t, [ep.port]);
  const raw = await rawRequest(port, 'GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n');
  t.match(raw, /^HTTP\/1\.1 200/);
  t.match(raw, /transfer-encoding: chunked/i);
  t.match(raw, /payload/);
  t.match(raw, /\r\n0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n$/, 'the trailers after the last chunk');
});

t.test('per-request balancing: one client connection, three endpoints, each request picks one', async (t) => {
  const eps = await Promise.all(['a', 'b', 'c'].map((n) => h2Endpoint(t, n)));
  const { port } = await proxy(t, eps.map((e) => e.port));
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const counts: Record<string, number> = {};
  for (let i = 0; i < 30; i++) {
    const r = await request(port, { agent, path: '/' });
    counts[r.body] = (counts[r.body] ?? 0) + 1;
  }
  t.same(counts, { a: 10, b: 10, c: 10 }, 'round-robin per request, not per connection');
  t.same(eps.map((e) => e.seen.sessions), [1, 1, 1], 'one session per endpoint, reused');
});

t.test('an endpoint that takes one stream at a time: concurrent requests open more sessions', async (t) => {
  const pending: http2.ServerHttp2Stream[] = [];
  const ep = await h2Endpoint(
    t,
    'a',
    (s) => {
      pending.push(s);
      if (pending.length === 3) {
        for (const p of pending) {
          p.respond({ ':status': 200 });
          p.end('a');
        }
      }
    },
    { settings: { maxConcurrentStreams: 1 } },
  );
  const { port } = await proxy(t, [ep.port]);
  const rs = await Promise.all([0, 1, 2].map(() => request(port, { path: '/' })));
  t.same(rs.map((r) => r.status), [200, 200, 200]);
  t.equal(ep.seen.sessions, 3, 'a session per concurrent request');
});

t.test('REFUSED_STREAM and streams above a GOAWAY\'s last stream were not processed: tried again, the client sees none of it', async (t) => {
  const refusing = await h2Endpoint(t, 'r', (s, _h, n) => {
    if (n === 1) s.close(http2.constants.NGHTTP2_REFUSED_STREAM);
    else {
      s.respond({ ':status': 200 });
      s.end('r');
    }
  });
  const { port } = await proxy(t, [refusing.port]);
  const r = await request(port, { path: '/' });
  t.equal(r.status, 200);
  t.equal(r.body, 'r');
  t.equal(refusing.seen.streams, 2, 'the refused stream, then the one that answered');

  // Two requests on one session; the endpoint goes away after the first (last stream id 1).
  const held: http2.ServerHttp2Stream[] = [];
  const going = await h2Endpoint(t, 'g', (s, _h, n) => {
    if (n <= 2) {
      held.push(s);
      if (held.length === 2) {
        held[0]!.session!.goaway(http2.constants.NGHTTP2_NO_ERROR, held[0]!.id);
        held[0]!.respond({ ':status': 200 });
        held[0]!.end('first');
        held[1]!.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      }
      return;
    }
    s.respond({ ':status': 200 });
    s.end('again');
  });
  const g = await proxy(t, [going.port]);
  const both = await Promise.all([request(g.port, { path: '/1' }), request(g.port, { path: '/2' })]);
  t.same(both.map((x) => x.status), [200, 200]);
  t.same(both.map((x) => x.body).sort(), ['again', 'first']);
  t.ok(going.seen.sessions >= 2, 'the retried request went on a new session');
});

t.test('an endpoint silent past the response timeout: 504; one that does not speak HTTP/2: 502', async (t) => {
  const silentEp = await h2Endpoint(t, 's', () => {});
  const a = await proxy(t, [silentEp.port], { response: 300 });
  t.equal((await request(a.port, { path: '/' })).status, 504);
  const h1 = http.createServer((_, res) => res.end('h1'));
  h1.listen(0, '127.0.0.1');
  await once(h1, 'listening');
  t.teardown(() => h1.close());
  const b = await proxy(t, [(h1.address() as AddressInfo).port]);
  t.equal((await request(b.port, { path: '/' })).status, 502);
});

t.test('h2 over TLS with ALPN h2, checked against the service\'s CA and server name', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-h2-up-'));
  await createCa({ out: dir, cn: 'h2 ca', days: 2, bits: 2048 });
  await issueCert({ ca: dir, out: dir, name: 'server', sans: [{ type: 'DNS', value: 'api.internal' }], usage: 'server', days: 2, bits: 2048 });
  const ep = await h2Endpoint(t, 'secure', undefined, { secure: { key: readFileSync(join(dir, 'server-key.pem')), cert: readFileSync(join(dir, 'server.pem')) } });
  const ctx = tls.createSecureContext({ ca: readFileSync(join(dir, 'ca.pem')) });
  const { port } = await proxy(t, [ep.port], { tls: { secureContext: ctx, servername: 'api.internal', rejectUnauthorized: true } });
  const r = await request(port, { path: '/' });
  t.equal(r.status, 200);
  t.equal(r.body, 'secure');
  t.equal(ep.seen.headers[0]![':scheme'], 'https');
});

t.test('from the config: a service with httpVersion: 2 behind a running berth; a reload back to 1.1 speaks HTTP/1.1 to it again', async (t) => {
  const { Berth } = await import('../../src/runtime/runtime.js');
  const { validateConfig } = await import('../../src/config/validate.js');
  const ep = await h2Endpoint(t, 'h2-only');
  const config = (httpVersion: string) => validateConfig({ listeners: [{ name: 'web', bind: '127.0.0.1:0', mode: 'http', service: 'api' }], services: { api: { httpVersion, endpoints: [`127.0.0.1:${ep.port}`] } }, admin: { bind: 'off' } });
  const berth = new Berth(config('2'), { log: silent });
  await berth.start();
  t.teardown(() => berth.shutdown(0));
  const port = [...berth.listeners.values()][0]!.address.port;
  const r = await request(port, { path: '/' });
  t.equal(r.status, 200);
  t.equal(r.body, 'h2-only');
  await berth.reload(config('1.1'));
  t.equal((await request(port, { path: '/' })).status, 502, 'HTTP/1.1 to an HTTP/2-only endpoint: it cannot answer');
});

/** A raw HTTP/1.1 exchange that resolves only when berth closes the connection (no timer of its own). */
function untilClosed(port: number, payload: string, more?: (s: import('node:net').Socket) => void): Promise<string> {
  return new Promise((resolve) => {
    const s = netConnect(port, '127.0.0.1');
    let out = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => (out += d));
    s.on('error', () => {});
    s.on('close', () => resolve(out));
    s.write(payload);
    more?.(s);
  });
}

t.test('an endpoint that drops its connection mid-response: the client sees a cut at once (not a whole short body), and the next request gets a new connection', async (t) => {
  const ep = await h2Endpoint(t, 'a', (s, h) => {
    s.respond({ ':status': 200 });
    if (h[':path'] === '/cut') {
      s.write('partial-', () => s.session!.destroy());
      return;
    }
    s.end('whole');
  });
  // An idle timeout far beyond the test: only noticing the dropped connection ends the exchange.
  const pool = new Pool({ random: seededRandom(1) });
  pool.configureService('svc', { balance: 'round-robin' });
  pool.applySnapshot({ provider: 'static', services: new Map([['svc', [{ id: 'a', host: '127.0.0.1', port: ep.port, weight: 1, source: 'static' as const }]]]) });
  const listener = new HttpListener(httpSettings({ timeouts: { connect: 1000, idle: 600_000, headers: 2000, response: 600_000, keepAlive: 5000 } }), { pool, log: silent, httpVersion: () => '2' });
  const { port } = await listener.listen();
  t.teardown(() => {
    listener.stopAccepting();
    listener.destroyAll();
  });
  const cut = await untilClosed(port, 'GET /cut HTTP/1.1\r\nHost: x\r\n\r\n');
  t.match(cut, /^HTTP\/1\.1 200/);
  t.match(cut, /partial-/);
  t.notMatch(cut, /\r\n0\r\n\r\n$/, 'no last chunk: a cut');
  const next = await request(port, { path: '/whole' });
  t.equal(next.body, 'whole');
  t.equal(ep.seen.sessions, 2, 'a new connection after the dropped one');
});

t.test('a reset with NO_ERROR before any response is not an empty 200: an idempotent request goes to another endpoint', async (t) => {
  const resetting = await h2Endpoint(t, 'r', (s) => s.close(http2.constants.NGHTTP2_NO_ERROR));
  const answering = await h2Endpoint(t, 'b');
  const { port } = await proxy(t, [resetting.port, answering.port]);
  // Round-robin: of two requests one starts on the resetting endpoint.
  const rs = [await request(port, { path: '/' }), await request(port, { path: '/' })];
  t.same(rs.map((r) => `${r.status} ${r.body}`), ['200 b', '200 b']);
  t.equal(resetting.seen.streams, 1, 'the reset one was tried once');
});

t.test('a request refused before its body arrived is sent again with the body once, whole', async (t) => {
  let firstSeen: () => void = () => {};
  const seen = new Promise<void>((r) => (firstSeen = r));
  const bodies: string[] = [];
  const ep = await h2Endpoint(t, 'a', (s, _h, n) => {
    if (n === 1) {
      s.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      firstSeen();
      return;
    }
    let b = '';
    s.setEncoding('utf8');
    s.on('data', (c: string) => (b += c));
    s.on('end', () => {
      bodies.push(b);
      s.respond({ ':status': 200 });
      s.end('ok');
    });
  });
  const { port } = await proxy(t, [ep.port]);
  const out = await untilClosed(port, 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\nConnection: close\r\n\r\n', (sock) => {
    // The body only once the endpoint has refused the first stream (which read none of it).
    void seen.then(() => sock.write('AAAABBBB'));
  });
  t.match(out, /^HTTP\/1\.1 200/);
  t.same(bodies, ['AAAABBBB'], 'the whole body, once');
});

t.test('a field sent twice goes as one list; TE: trailers always; a WebSocket to an HTTP/2 endpoint that does not allow extended CONNECT is a 502 that reaches and blames no endpoint', async (t) => {
  const a = await h2Endpoint(t, 'a');
  const b = await h2Endpoint(t, 'b');
  const one = await proxy(t, [a.port]);
  const r = await rawRequest(one.port, 'GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: one\r\nUser-Agent: two\r\nIf-None-Match: "x"\r\nIf-None-Match: "y"\r\nCookie: a=1\r\nCookie: b=2\r\nConnection: close\r\n\r\n');
  t.match(r, /^HTTP\/1\.1 200/);
  const h = a.seen.headers[0]!;
  t.equal(h['user-agent'], 'one, two');
  t.equal(h['if-none-match'], '"x", "y"');
  t.equal(h.cookie, 'a=1; b=2');
  t.equal(h.te, 'trailers');
  const { port, pool } = await proxy(t, [a.port, b.port]);
  const streams = a.seen.streams + b.seen.streams;
  const up = await rawRequest(port, 'GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
  t.match(up, /^HTTP\/1\.1 502/);
  t.equal(a.seen.streams + b.seen.streams, streams, 'no endpoint saw it');
  t.same([...pool.service('svc')!.endpoints.values()].map((e) => e.flags), [0, 0], 'none blamed');
});

t.test('WebSockets to an HTTP/2 endpoint (RFC 8441 upstream): an HTTP/1.1 client\'s Upgrade and an HTTP/2 client\'s extended CONNECT go out as an extended CONNECT; its 200 is the 101 (with the accept the client\'s key asks for) or the 200; bytes both ways; the stream holds its session slot until it closes', async (t) => {
  const ep = await h2Endpoint(
    t,
    'ws',
    (s, h) => {
      if (h[':path'] === '/refuse') {
        s.respond({ ':status': 403 });
        s.end('no');
        return;
      }
      s.respond({ ':status': 200, 'sec-websocket-protocol': 'chat' });
      s.pipe(s);
    },
    { settings: { enableConnectProtocol: true } },
  );
  const { port, listener } = await proxy(t, [ep.port], { http2: true });
  // HTTP/1.1 client.
  const c = netConnect(port, '127.0.0.1');
  t.teardown(() => c.destroy());
  let got = '';
  c.setEncoding('latin1');
  c.on('data', (d: string) => (got += d));
  c.write('GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat\r\n\r\n');
  await until(() => got.includes('\r\n\r\n'), 5000, 'the 101');
  t.match(got, /^HTTP\/1\.1 101 /);
  t.match(got, /sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=\r\n/i, 'the accept RFC 6455 gives for that key');
  t.match(got, /upgrade: websocket\r\n/i);
  t.match(got, /sec-websocket-protocol: chat\r\n/i);
  const h = ep.seen.headers[0]!;
  t.same([h[':method'], h[':protocol'], h[':path'], h['sec-websocket-key'], h['sec-websocket-version'], h.upgrade], ['CONNECT', 'websocket', '/chat', undefined, '13', undefined], 'an extended CONNECT, no key, no Upgrade');
  got = '';
  c.write('ping-1');
  await until(() => got === 'ping-1', 5000, 'echo over h1 → h2');
  t.equal(listener.tunnels.size, 1);
  // HTTP/2 client, on the same endpoint session.
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', () => {});
  t.teardown(() => session.destroy());
  if (!session.remoteSettings.enableConnectProtocol) await once(session, 'remoteSettings');
  const s = session.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'http', ':path': '/chat2', ':authority': 'x', 'sec-websocket-version': '13' }, { endStream: false });
  s.on('error', () => {});
  let got2 = '';
  s.on('data', (d: Buffer) => (got2 += d.toString()));
  const [rh] = (await once(s, 'response')) as [http2.IncomingHttpHeaders];
  t.equal(rh[':status'], 200);
  s.write('ping-2');
  await until(() => got2 === 'ping-2', 5000, 'echo over h2 → h2');
  t.equal(ep.seen.sessions, 1, 'both tunnels on one endpoint session');
  t.equal(listener.tunnels.size, 2);
  // The endpoint's refusal is relayed; no tunnel.
  const r = await rawRequest(port, 'GET /refuse HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
  t.match(r, /^HTTP\/1\.1 403 /);
  t.equal(listener.tunnels.size, 2);
  // A clean end on the client's side ends the endpoint's stream (its echo ends too): the tunnels close, their slots free.
  s.end();
  c.end();
  await until(() => listener.tunnels.size === 0, 5000, 'tunnels closed');
});
