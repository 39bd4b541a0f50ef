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
import type { AddressInfo } from 'node:net';
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
async function proxy(t: Test, ports: number[], over: { tls?: UpstreamTls; response?: number } = {}) {
  const pool = new Pool({ random: seededRandom(1) });
  pool.configureService('svc', { balance: 'round-robin' });
  pool.applySnapshot({ provider: 'static', services: new Map([['svc', ports.map((p) => ({ id: `127.0.0.1:${p}`, host: '127.0.0.1', port: p, weight: 1, source: 'static' as const }))]]) });
  const listener = new HttpListener(httpSettings(over.response !== undefined ? { timeouts: { connect: 1000, idle: 10_000, headers: 2000, response: over.response, keepAlive: 5000 } } : {}), {
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
