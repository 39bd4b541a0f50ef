import http from 'node:http';
import net from 'node:net';
import t from 'tap';
import { countingObserver, endpoint } from '../helpers/proxy.js';
import { exchange, freePort, tcpServer, until } from '../helpers/net.js';
import { httpProxy, httpSettings, rawRequest, rawValues, recordingBackend, request } from '../helpers/http.js';
import { ManualClock } from '../helpers/clock.js';
import type { EndpointSpec } from '../../src/core/types.js';

t.test('forwards requests and bodies; keeps Host; sets X-Forwarded-*', async (t) => {
  const be = await recordingBackend();
  const p = await httpProxy({ svc: [endpoint(be.port)] });
  t.teardown(() => {
    p.close();
    be.close();
  });
  const r = await request(p.port, { path: '/a/b?c=1', headers: { host: 'shop.example', 'x-forwarded-for': '6.6.6.6', 'x-forwarded-proto': 'https', forwarded: 'for=6.6.6.6' } });
  t.equal(r.status, 200);
  const s = be.seen[0]!;
  t.equal(s.url, '/a/b?c=1');
  t.same(rawValues(s.headers, 'host'), ['shop.example'], 'Host is kept');
  t.same(rawValues(s.headers, 'x-forwarded-for'), ['127.0.0.1'], 'an untrusted client cannot forge the chain');
  t.same(rawValues(s.headers, 'x-forwarded-proto'), ['http']);
  t.same(rawValues(s.headers, 'x-forwarded-host'), ['shop.example']);
  t.same(rawValues(s.headers, 'forwarded'), [], 'untrusted Forwarded is dropped');
  const post = await request(p.port, { method: 'POST', path: '/up', body: 'x'.repeat(100_000), headers: { 'content-type': 'text/plain' } });
  t.equal(JSON.parse(post.body).body, 100_000, 'body streamed through');
  const chunked = await new Promise<string>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: p.port, method: 'PUT', path: '/c', agent: false }, (res) => {
      let b = '';
      res.on('data', (d: Buffer) => (b += d));
      res.on('end', () => resolve(b));
    });
    req.on('error', reject);
    req.write('abc');
    setTimeout(() => req.end('defg'), 20);
  });
  t.equal(JSON.parse(chunked).body, 7, 'chunked request body re-framed and delivered');
});

t.test('a trusted proxy chain is extended, not replaced', async (t) => {
  const be = await recordingBackend();
  const p = await httpProxy({ svc: [endpoint(be.port)] }, { http: { ...httpSettings().http, trustedProxies: ['127.0.0.0/8'] } });
  t.teardown(() => {
    p.close();
    be.close();
  });
  await request(p.port, { headers: { 'x-forwarded-for': '203.0.113.9', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'orig.example' } });
  const h = be.seen[0]!.headers;
  t.same(rawValues(h, 'x-forwarded-for'), ['203.0.113.9, 127.0.0.1']);
  t.same(rawValues(h, 'x-forwarded-proto'), ['https']);
  t.same(rawValues(h, 'x-forwarded-host'), ['orig.example']);
});

t.test('hop-by-hop headers are removed both ways, including those named by Connection', async (t) => {
  const be = await recordingBackend((_req, res) => {
    res.writeHead(200, { connection: 'x-internal, keep-alive', 'x-internal': 'secret', 'keep-alive': 'timeout=5', 'proxy-connection': 'keep-alive', 'x-kept': '1', 'set-cookie': ['a=1', 'b=2'] });
    res.end('ok');
    return true;
  });
  const p = await httpProxy({ svc: [endpoint(be.port)] });
  t.teardown(() => {
    p.close();
    be.close();
  });
  const reply = await rawRequest(
    p.port,
    'GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=9\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: x\r\nUpgrade: h2c\r\nX-Ok: yes\r\n\r\n',
  );
  t.match(reply, /^HTTP\/1\.1 200/);
  const h = be.seen[0]!.headers.filter((_x, i) => i % 2 === 0).map((x) => x.toLowerCase());
  for (const gone of ['x-secret', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade']) t.notOk(h.includes(gone), `${gone} not forwarded`);
  t.ok(h.includes('x-ok'), 'end-to-end header forwarded');
  t.notMatch(reply, /x-internal/i, 'response header named by Connection removed');
  t.notMatch(reply, /keep-alive: timeout=5/i);
  t.notMatch(reply, /proxy-connection/i);
  t.match(reply, /x-kept: 1/);
  t.equal((reply.match(/set-cookie/gi) ?? []).length, 2, 'repeated response headers kept apart');
});

// Each of these is refused with 400 by berth before it reaches the endpoint.
const smuggling: Record<string, string> = {
  'CL and TE together': 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n',
  'duplicate CL': 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde',
  'CL list': 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 4\r\n\r\nabcd',
  'CL with sign': 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\nabcd',
  'TE not chunked last': 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n',
  'TE obfuscated': 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n',
  'TE with other coding': 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n',
  'TE twice': 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n',
  'space before colon': 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n',
  'TE in HTTP/1.0': 'POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
  'bare LF in head': 'GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n',
  'bare CR in head': 'GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n',
  'obs-fold': 'GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n',
  'NUL in value': 'GET / HTTP/1.1\r\nHost: a\r\nX: y\x00z\r\n\r\n',
  'two Host headers': 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n',
  'no Host in 1.1': 'GET / HTTP/1.1\r\n\r\n',
  'HTTP/0.9': 'GET /\r\n\r\n',
  'dot segment': 'GET /public/../admin HTTP/1.1\r\nHost: a\r\n\r\n',
  'encoded dot segment': 'GET /public/%2e%2E/admin HTTP/1.1\r\nHost: a\r\n\r\n',
};

t.test('ambiguous framing and smuggling attempts get 400 and never reach an endpoint', async (t) => {
  const be = await recordingBackend();
  const obs = countingObserver();
  const p = await httpProxy({ svc: [endpoint(be.port)] }, {}, obs);
  t.teardown(() => {
    p.close();
    be.close();
  });
  for (const [name, payload] of Object.entries(smuggling)) {
    const reply = await rawRequest(p.port, payload);
    t.match(reply, /^HTTP\/1\.1 400 /, `${name}: 400`);
    t.equal((reply.match(/HTTP\/1\.1 /g) ?? []).length, 1, `${name}: one answer, nothing smuggled after it`);
    t.equal(be.connections(), 0, `${name}: berth did not connect to the endpoint`);
  }
  t.equal(be.seen.length, 0, 'the endpoint saw no request');
  t.equal(obs.counts['rejected.bad_request'], Object.keys(smuggling).length, 'each counted');
  // The listener still works after all that.
  t.equal((await request(p.port)).status, 200);
});

// Bad chunk framing shows only in the body, after the request is on its way (berth
// streams bodies). The client gets 400; the endpoint gets berth's own framing of the
// bytes before the fault and then a reset: never a complete request, never a second one.
const badBodies: Record<string, string> = {
  'bad chunk size': 'POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4 \r\nabcd\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n',
  'chunk without CR': 'POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\nabcd\n0\n\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n',
};

t.test('bad chunked framing in a body: 400 to the client, the endpoint never gets a complete or a smuggled request', async (t) => {
  let completed = 0;
  const be = await recordingBackend((req, res) => {
    req.on('data', () => {});
    req.on('end', () => {
      completed++;
      res.end('ok');
    });
    return true;
  });
  const p = await httpProxy({ svc: [endpoint(be.port)] });
  t.teardown(() => {
    p.close();
    be.close();
  });
  for (const [name, payload] of Object.entries(badBodies)) {
    const reply = await rawRequest(p.port, payload);
    t.match(reply, /^HTTP\/1\.1 400 /, `${name}: 400`);
    t.equal((reply.match(/HTTP\/1\.1 /g) ?? []).length, 1, `${name}: one answer`);
  }
  await new Promise((r) => setTimeout(r, 100));
  t.equal(completed, 0, 'no request completed at the endpoint');
  t.notOk(be.seen.some((s) => s.url === '/smuggled'), 'nothing smuggled');
});

t.test('oversized head gets 431; a slow head gets 408; others are not disturbed', async (t) => {
  const be = await recordingBackend();
  const obs = countingObserver();
  const p = await httpProxy({ svc: [endpoint(be.port)] }, { http: { ...httpSettings().http, maxHeaderSize: 2048 }, timeouts: { ...httpSettings().timeouts, headers: 300 } }, obs);
  t.teardown(() => {
    p.close();
    be.close();
  });
  const big = await rawRequest(p.port, `GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${'a'.repeat(4000)}\r\n\r\n`);
  t.match(big, /^HTTP\/1\.1 431 /);
  const slow = net.connect(p.port, '127.0.0.1');
  let slowReply = '';
  slow.on('data', (d) => (slowReply += d));
  slow.write('GET / HTTP/1.1\r\nHost: a\r\n');
  const t0 = Date.now();
  // Meanwhile a normal client is served.
  t.equal((await request(p.port)).status, 200);
  await once(slow, 'close');
  t.match(slowReply, /^HTTP\/1\.1 408 /);
  t.ok(Date.now() - t0 < 3000, 'closed within the head timeout (plus the check interval)');
  t.equal(be.seen.length, 1);
  t.equal(obs.counts['rejected.header_too_large'], 1);
  t.equal(obs.counts['rejected.timeout'], 1);
});

async function once(s: net.Socket, ev: string): Promise<void> {
  await new Promise<void>((r) => s.once(ev, () => r()));
}

t.test('keep-alive: many requests reuse few endpoint connections', async (t) => {
  const be = await recordingBackend();
  const p = await httpProxy({ svc: [endpoint(be.port)] });
  t.teardown(() => {
    p.close();
    be.close();
  });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  t.teardown(() => agent.destroy());
  const all = [];
  for (let i = 0; i < 200; i++) all.push(request(p.port, { agent, path: `/${i}` }));
  const replies = await Promise.all(all);
  t.ok(replies.every((r) => r.status === 200));
  t.equal(be.seen.length, 200);
  t.ok(be.connections() <= 4, `endpoint saw ${be.connections()} connections for 200 requests`);
  t.ok(p.listener.sockets.size <= 4, 'client side kept alive too');
});

t.test('an idle pooled connection closed by the endpoint is not used (stale-socket safe)', async (t) => {
  // The endpoint closes idle connections after 100ms, well before berth's 4s.
  const be = await recordingBackend();
  be.server.keepAliveTimeout = 100;
  const p = await httpProxy({ svc: [endpoint(be.port)] }, { retries: 0 });
  t.teardown(() => {
    p.close();
    be.close();
  });
  for (let i = 0; i < 5; i++) {
    t.equal((await request(p.port, { method: 'POST', body: 'x' })).status, 200, `POST ${i} after the endpoint closed the idle connection`);
    await new Promise((r) => setTimeout(r, 150));
  }
});

t.test('responses: chunked with trailers, HEAD, 204, 304, early hints', async (t) => {
  const be = await recordingBackend((req, res) => {
    if (req.url === '/trailers') {
      res.writeHead(200, { trailer: 'x-checksum' });
      res.write('part1-');
      res.addTrailers({ 'x-checksum': 'abc' });
      res.end('part2');
    } else if (req.url === '/204') {
      res.writeHead(204);
      res.end();
    } else if (req.url === '/304') {
      res.writeHead(304, { etag: '"x"' });
      res.end();
    } else if (req.url === '/hints') {
      res.writeEarlyHints({ link: '</style.css>; rel=preload' });
      res.end('hinted');
    } else {
      res.writeHead(200, { 'content-length': '5' });
      res.end(req.method === 'HEAD' ? undefined : 'hello');
    }
    return true;
  });
  const p = await httpProxy({ svc: [endpoint(be.port)] });
  t.teardown(() => {
    p.close();
    be.close();
  });
  const tr = await rawRequest(p.port, 'GET /trailers HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nConnection: close\r\n\r\n');
  t.match(tr, /transfer-encoding: chunked/i);
  t.match(tr, /part1-/);
  t.match(tr, /x-checksum: abc/i, 'trailer passed on');
  const head = await rawRequest(p.port, 'HEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
  t.match(head, /content-length: 5/i);
  t.notMatch(head, /hello/);
  t.equal((await request(p.port, { path: '/204' })).status, 204);
  const nm = await request(p.port, { path: '/304' });
  t.equal(nm.status, 304);
  t.equal(nm.headers.etag, '"x"');
  const hints = await rawRequest(p.port, 'GET /hints HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
  t.match(hints, /^HTTP\/1\.1 103 Early Hints\r\n[^]*link: <\/style\.css>/i);
  t.match(hints, /HTTP\/1\.1 200[^]*hinted/);
});

t.test('Expect: 100-continue is answered by berth and not passed on', async (t) => {
  const be = await recordingBackend();
  const p = await httpProxy({ svc: [endpoint(be.port)] });
  t.teardown(() => {
    p.close();
    be.close();
  });
  const reply = await new Promise<{ status: number; body: string; continued: boolean }>((resolve, reject) => {
    let continued = false;
    const req = http.request({ host: '127.0.0.1', port: p.port, method: 'POST', path: '/', agent: false, headers: { expect: '100-continue', 'content-length': '5' } }, (res) => {
      let b = '';
      res.on('data', (d: Buffer) => (b += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b, continued }));
    });
    req.on('continue', () => {
      continued = true;
      req.end('hello');
    });
    req.on('error', reject);
  });
  t.ok(reply.continued, 'client got 100 Continue');
  t.equal(reply.status, 200);
  t.equal(JSON.parse(reply.body).body, 5);
  t.same(rawValues(be.seen[0]!.headers, 'expect'), []);
});

t.test('no usable endpoint: 503 with Retry-After; no route: 404; CONNECT: 405', async (t) => {
  const obs = countingObserver();
  const p = await httpProxy({ svc: [] }, {}, obs);
  t.teardown(() => p.close());
  const r = await request(p.port);
  t.equal(r.status, 503);
  t.equal(r.headers['retry-after'], '1');
  t.match(r.body, /no usable endpoint/);
  t.equal(obs.counts.noEndpoint, 1);
  t.equal(obs.counts['http.503'], 1);
  const q = await httpProxy({ svc: [] }, { service: undefined, routes: [{ host: 'a.example', service: 'svc' }] });
  t.teardown(() => q.close());
  t.equal((await request(q.port, { headers: { host: 'b.example' } })).status, 404);
  t.match(await rawRequest(q.port, 'CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n'), /^HTTP\/1\.1 405 /);
});

t.test('connect failures: retried on another endpoint (even with a body); 502 when all fail', async (t) => {
  const dead1 = await freePort();
  const dead2 = await freePort();
  const be = await recordingBackend();
  const obs = countingObserver();
  const p = await httpProxy({ svc: [endpoint(dead1), endpoint(be.port)] }, { retries: 2 }, obs);
  t.teardown(() => {
    p.close();
    be.close();
  });
  for (let i = 0; i < 4; i++) {
    const r = await request(p.port, { method: 'POST', body: 'payload' });
    t.equal(r.status, 200, `POST ${i} served`);
    t.equal(JSON.parse(r.body).body, 7, 'body intact after the retry');
  }
  t.ok(obs.reasons.includes('refused'), 'retry counted as refused');
  const all = await httpProxy({ svc: [endpoint(dead1), endpoint(dead2)] }, { retries: 3 });
  t.teardown(() => all.close());
  const r = await request(all.port);
  t.equal(r.status, 502);
  t.match(r.body, /bad gateway/);
});

t.test('a reset before any response byte is retried only for idempotent requests without a body', async (t) => {
  // "flaky" takes the request and drops the connection without answering.
  const flakySeen: string[] = [];
  const flaky = http.createServer((req) => {
    flakySeen.push(req.method ?? '');
    req.socket.destroy();
  });
  await new Promise<void>((r) => flaky.listen(0, '127.0.0.1', r));
  const flakyPort = (flaky.address() as net.AddressInfo).port;
  const good = await recordingBackend();
  const obs = countingObserver();
  // Round-robin starting at the flaky one (ids sort "127.0.0.1:<port>").
  const eps: EndpointSpec[] = [
    { ...endpoint(flakyPort), id: 'a-flaky' },
    { ...endpoint(good.port), id: 'b-good' },
  ];
  const p = await httpProxy({ svc: eps }, { retries: 1 }, obs);
  t.teardown(() => {
    p.close();
    good.close();
    flaky.closeAllConnections();
    flaky.close();
  });
  const get = await request(p.port, { path: '/idem' });
  t.equal(get.status, 200, 'GET retried on the other endpoint');
  t.equal(obs.reasons.filter((r) => r === 'reset').length, 1);
  const post = await request(p.port, { method: 'POST', path: '/not-idem', body: 'x' });
  t.equal(post.status, 200, 'round robin: this POST went to the good one');
  const post2 = await request(p.port, { method: 'POST', path: '/not-idem', body: 'x' });
  t.equal(post2.status, 502, 'a POST reset after sending is not repeated');
  t.equal(good.seen.filter((s) => s.url === '/not-idem').length, 1, 'the good endpoint never got the failed POST');
  t.same(flakySeen, ['GET', 'POST']);
  const put = await request(p.port, { method: 'PUT', path: '/put-body', body: 'x' });
  t.equal(put.status, 200);
  const put2 = await request(p.port, { method: 'PUT', path: '/put-body', body: 'x' });
  t.equal(put2.status, 502, 'idempotent but with a body: not repeated');
});

t.test('an endpoint that does not answer in time: 504', async (t) => {
  const hang = http.createServer(() => {});
  await new Promise<void>((r) => hang.listen(0, '127.0.0.1', r));
  const obs = countingObserver();
  const p = await httpProxy({ svc: [endpoint((hang.address() as net.AddressInfo).port)] }, { timeouts: { ...httpSettings().timeouts, response: 200 } }, obs);
  t.teardown(() => {
    p.close();
    hang.closeAllConnections();
    hang.close();
  });
  const t0 = Date.now();
  const r = await request(p.port);
  t.equal(r.status, 504);
  t.ok(Date.now() - t0 < 2000);
  t.equal(obs.counts['http.504'], 1);
});

t.test('the retry budget stops retries from multiplying an outage', async (t) => {
  // Endpoints that take the request and drop the connection: a GET is retried, within the budget.
  const droppers = await Promise.all([0, 1, 2, 3].map(() => tcpServer((s) => s.once('data', () => s.resetAndDestroy()))));
  const obs = countingObserver();
  const p = await httpProxy({ svc: droppers.map((d) => endpoint(d.port)) }, { retries: 3, http: { ...httpSettings().http, retryBudget: { ratio: 0.1, minPerSecond: 0 } } }, obs);
  t.teardown(() => {
    p.close();
    for (const d of droppers) d.close();
  });
  for (let i = 0; i < 20; i++) t.equal((await request(p.port)).status, 502);
  // Without a budget: 20 requests × 3 retries = 60. Budget: start 0 (min 0) + 0.1 per request.
  t.ok((obs.counts.retry ?? 0) <= 2, `retries bounded: ${obs.counts.retry ?? 0}`);
});

t.test('a client that leaves mid-response releases the endpoint', async (t) => {
  const be = await recordingBackend((_req, res) => {
    res.writeHead(200);
    const timer = setInterval(() => res.write('x'.repeat(1000)), 5);
    res.on('close', () => clearInterval(timer));
    return true;
  });
  const obs = countingObserver();
  const p = await httpProxy({ svc: [endpoint(be.port)] }, {}, obs);
  t.teardown(() => {
    p.close();
    be.close();
  });
  await new Promise<void>((resolve) => {
    const req = http.request({ host: '127.0.0.1', port: p.port, agent: false }, (res) => {
      res.once('data', () => {
        req.destroy();
        resolve();
      });
    });
    req.end();
  });
  const ep = p.pool.service('svc')!.endpoints.values().next().value!;
  await until(() => ep.active === 0, 2000, 'endpoint released');
  await until(() => obs.counts['http.200'] === 1, 2000, 'counted with the status it had begun');
});

t.test('upgrade: tunnels both ways after 101, counted, and survives a reload', async (t) => {
  const be = http.createServer((_req, res) => res.end('plain'));
  be.on('upgrade', (req: http.IncomingMessage, socket: net.Socket) => {
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${req.headers.upgrade}\r\nConnection: Upgrade\r\nX-Saw-XFF: ${req.headers['x-forwarded-for']}\r\n\r\n`);
    socket.pipe(socket);
  });
  await new Promise<void>((r) => be.listen(0, '127.0.0.1', r));
  const obs = countingObserver();
  const p = await httpProxy({ svc: [endpoint((be.address() as net.AddressInfo).port)] }, {}, obs);
  t.teardown(() => {
    p.close();
    be.closeAllConnections();
    be.close();
  });
  const c = net.connect(p.port, '127.0.0.1');
  let got = '';
  c.setEncoding('latin1');
  c.on('data', (d: string) => (got += d));
  c.write('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
  await until(() => got.includes('\r\n\r\n'), 2000, '101');
  t.match(got, /^HTTP\/1\.1 101 /);
  t.match(got, /X-Saw-XFF: 127\.0\.0\.1/i);
  got = '';
  c.write('ping-1');
  await until(() => got === 'ping-1', 2000, 'echo');
  p.listener.configure(httpSettings({ retries: 0 }));
  c.write('ping-2');
  await until(() => got === 'ping-1ping-2', 2000, 'echo after reload');
  t.equal(obs.counts.upgrade, 1);
  t.equal(p.listener.tunnels.size, 1);
  c.destroy();
  await until(() => p.listener.tunnels.size === 0, 2000, 'tunnel closed');
});

t.test('routes: host (exact, wildcard), path prefix and labels, most specific wins', async (t) => {
  const names = ['api', 'apiv2', 'wild', 'deep', 'fallback', 'labelled'];
  const backends = await Promise.all(names.map(() => recordingBackend()));
  const services: Record<string, EndpointSpec[]> = {};
  names.forEach((n, i) => (services[n] = [endpoint(backends[i]!.port)]));
  services.labelled = [{ ...endpoint(backends[5]!.port), routes: [{ host: 'label.example', pathPrefix: '/l' }] }];
  const p = await httpProxy(services, {
    service: 'fallback',
    routes: [
      { host: 'api.example', service: 'api' },
      { host: 'api.example', pathPrefix: '/v2', service: 'apiv2' },
      { host: '*.example', service: 'wild' },
      { host: '*.deep.example', service: 'deep' },
    ],
  });
  t.teardown(() => {
    p.close();
    for (const b of backends) b.close();
  });
  const where = async (host: string, path: string) => {
    const before = backends.map((b) => b.seen.length);
    const r = await request(p.port, { path, headers: { host } });
    if (r.status !== 200) return String(r.status);
    return names[backends.findIndex((b, i) => b.seen.length > before[i]!)]!;
  };
  t.equal(await where('api.example', '/'), 'api');
  t.equal(await where('API.Example:8080', '/v2/users'), 'apiv2', 'host case and port ignored; longer prefix wins');
  t.equal(await where('api.example', '/v2'), 'apiv2');
  t.equal(await where('api.example', '/v20'), 'api', 'prefix matches whole segments');
  t.equal(await where('x.example', '/v2'), 'wild');
  t.equal(await where('a.deep.example', '/'), 'deep', 'longer wildcard suffix wins');
  t.equal(await where('example', '/'), 'fallback', 'a wildcard needs a label before the suffix');
  t.equal(await where('label.example', '/l/x'), 'labelled', 'label route (exact host) beats the wildcard');
  t.equal(await where('label.example', '/other'), 'wild');
  // Absolute-form target: its authority is the host.
  const abs = await rawRequest(p.port, 'GET http://api.example/v2/z HTTP/1.1\r\nHost: ignored.example\r\nConnection: close\r\n\r\n');
  t.match(abs, /^HTTP\/1\.1 200/);
  t.equal(backends[1]!.seen.at(-1)!.url, '/v2/z');
  t.same(rawValues(backends[1]!.seen.at(-1)!.headers, 'host'), ['api.example']);
  // Labels follow the pool: the labelled endpoint leaves, its route goes.
  p.pool.applySnapshot({ provider: 'static', services: new Map(Object.entries({ ...services, labelled: [] })) });
  t.equal(await where('label.example', '/l/x'), 'wild');
});

t.test('p2c balances on response latency: a slow endpoint gets less traffic', async (t) => {
  // Response latency is read from the pool's clock; the slow endpoint moves that clock
  // 40 ms forward before it answers, the fast one not at all: no wall-clock timing.
  const clock = new ManualClock();
  const fast = await recordingBackend();
  const slow = await recordingBackend((_req, res) => {
    clock.set(clock.now() + 40);
    res.end('slow');
    return true;
  });
  const p = await httpProxy({ svc: [endpoint(fast.port), endpoint(slow.port)] }, {}, undefined, clock);
  p.pool.configureService('svc', 'p2c');
  t.teardown(() => {
    p.close();
    fast.close();
    slow.close();
  });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  for (let i = 0; i < 80; i++) await request(p.port, { agent });
  t.equal(slow.seen.length + fast.seen.length, 80);
  t.ok(slow.seen.length <= 2, `the slow endpoint gets only what comes before its latency is known: slow ${slow.seen.length}, fast ${fast.seen.length}`);
});

t.test('an endpoint still starting: retried after a backoff round, not failed at once', async (t) => {
  const port = await freePort();
  const p = await httpProxy({ svc: [endpoint(port)] }, { retries: 3, retryBackoff: 50 });
  t.teardown(() => p.close());
  const pending = request(p.port, { method: 'POST', body: 'early' });
  await new Promise((r) => setTimeout(r, 30));
  // Start listening on the endpoint's port only now.
  const srv = http.createServer((req, res) => {
    let n = 0;
    req.on('data', (c: Buffer) => (n += c.length));
    req.on('end', () => res.end(String(n)));
  });
  await new Promise<void>((r) => srv.listen(port, '127.0.0.1', r));
  t.teardown(() => srv.close());
  const r = await pending;
  t.equal(r.status, 200);
  t.equal(r.body, '5', 'body delivered once the endpoint was up');
});

t.test('a client that half-closes after its request still gets the answer', async (t) => {
  const be = await recordingBackend();
  const p = await httpProxy({ svc: [endpoint(be.port)] });
  t.teardown(() => {
    p.close();
    be.close();
  });
  const r = await exchange(p.port, 'GET /half HTTP/1.1\r\nHost: a\r\n\r\n');
  t.match(r.data.toString(), /^HTTP\/1\.1 200 [^]*"url":"\/half"/);
});

t.test('a route-only change of an endpoint (berth.http.host a -> b) moves its route', async (t) => {
  const be = await recordingBackend();
  const labelled = (host: string): EndpointSpec => ({ ...endpoint(be.port), routes: [{ host }], labels: { 'http.host': host } });
  const p = await httpProxy({ svc: [labelled('a.example')] }, { service: undefined });
  t.teardown(() => {
    p.close();
    be.close();
  });
  t.equal((await request(p.port, { headers: { host: 'a.example' } })).status, 200);
  const events: string[] = [];
  p.pool.on((e) => {
    if (e.type === 'endpoint-updated') events.push(e.what);
  });
  p.pool.applySnapshot({ provider: 'static', services: new Map([['svc', [labelled('b.example')]]]) });
  t.same(events, ['routes b.example/'], 'the pool says the routes changed');
  t.equal((await request(p.port, { headers: { host: 'b.example' } })).status, 200, 'the new host routes');
  t.equal((await request(p.port, { headers: { host: 'a.example' } })).status, 404, 'the old one no longer does');
});
