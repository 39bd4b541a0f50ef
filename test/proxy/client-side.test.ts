/**
 * Hardening, second pass. What a client does never counts against an endpoint: an
 * upload abandoned mid-body (FIN or RST), a botched chunked body, a body too slow for
 * the idle timeout, a client that gives up waiting, in http, Upgrade and tcp alike —
 * every endpoint's failure counts stay at zero and nobody is ejected. (A client's FIN
 * after a whole request is no giving up: it still waits for its answer.) And the last
 * relaying defects: an invalid status line, a 103 with hop-by-hop fields, userinfo in
 * an absolute-form target, a UTF-8 reason phrase.
 */
import { once } from 'node:events';
import net from 'node:net';
import t from 'tap';
import { Flag } from '../../src/core/types.js';
import type { Pool, ServiceSettings } from '../../src/pool/pool.js';
import { countingObserver, endpoint, proxyFor } from '../helpers/proxy.js';
import { echoServer, tcpServer, until } from '../helpers/net.js';
import { httpProxy, rawEndpoint, rawRequest, recordingBackend } from '../helpers/http.js';

/** Default outlier detection, as a user gets it (static endpoints: no starting grace). */
const SERVICE: ServiceSettings = {
  balance: 'round-robin',
  outlier: { consecutiveFailures: 5, ejectFor: 30_000, maxEjectFor: 300_000, maxEjectedPercent: 50 },
};

/** Each endpoint's failure counts and whether it is ejected. */
function health(pool: Pool): { id: string; failures: number; consecutive: number; ejected: boolean }[] {
  return [...pool.service('svc')!.endpoints.values()].map((e) => ({ id: e.id, failures: e.failures, consecutive: e.consecutiveFailures, ejected: (e.flags & Flag.Outlier) !== 0 }));
}

function untouched(pool: Pool) {
  return health(pool).map((h) => ({ ...h, failures: 0, consecutive: 0, ejected: false }));
}

/** Requests the listener has finished (any status). */
function finished(counts: Record<string, number>): number {
  let n = 0;
  for (const [k, v] of Object.entries(counts)) if (k.startsWith('http.')) n += v;
  return n;
}

/**
 * A client that sends `head`, waits until an endpoint holds the request (so berth's
 * upstream request is under way), then does `then` and collects what berth sends
 * until the connection closes.
 */
async function client(port: number, head: string, arrived: () => boolean, then: (s: net.Socket) => void): Promise<string> {
  const s = net.connect(port, '127.0.0.1');
  s.on('error', () => {});
  let got = '';
  s.setEncoding('latin1');
  s.on('data', (d: string) => (got += d));
  await once(s, 'connect');
  s.write(head);
  await until(arrived);
  then(s);
  if (!s.destroyed) await once(s, 'close');
  return got;
}

const UPLOAD = 'POST /upload HTTP/1.1\r\nHost: a.example\r\nContent-Length: 1000\r\n\r\n0123456789';
const CHUNKED = 'POST /upload HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n';

t.test('1. http: what a client does to its own request never counts against the endpoint', async (t) => {
  const cases: { name: string; head: string; then: (s: net.Socket) => void; idle?: number; check?: (reply: string) => void }[] = [
    { name: 'upload abandoned with FIN', head: UPLOAD, then: (s) => s.end() },
    { name: 'upload abandoned with RST', head: UPLOAD, then: (s) => s.resetAndDestroy() },
    {
      name: 'chunked body with a chunk longer than its size line: 400',
      head: CHUNKED,
      then: (s) => s.write('5\r\nhelloEXTRA\r\n0\r\n\r\n'),
      check: (r) => t.match(r, /^HTTP\/1\.1 400 /, 'the botched body is answered 400, not 502'),
    },
    { name: 'chunked body cut with RST', head: CHUNKED, then: (s) => s.resetAndDestroy() },
    { name: 'a body too slow for the idle timeout', head: UPLOAD, then: () => {}, idle: 150 },
    { name: 'a client that gives up waiting for the answer (RST)', head: 'GET /slow HTTP/1.1\r\nHost: a.example\r\n\r\n', then: (s) => s.resetAndDestroy() },
  ];
  for (const c of cases) {
    t.test(c.name, async (t) => {
      // Endpoints that take the request and never answer: only the client can end it.
      const a = await recordingBackend(() => true);
      const b = await recordingBackend(() => true);
      const obs = countingObserver();
      const p = await httpProxy({ svc: [endpoint(a.port), endpoint(b.port)] }, c.idle !== undefined ? { timeouts: { connect: 1000, idle: c.idle, headers: 2000, response: 30_000, keepAlive: 5000 } } : {}, obs, undefined, SERVICE);
      t.teardown(() => {
        p.close();
        a.close();
        b.close();
      });
      for (let i = 0; i < 12; i++) {
        const reply = await client(p.port, c.head, () => a.seen.length + b.seen.length > i, c.then);
        if (i === 0) c.check?.(reply);
        t.notMatch(reply, /HTTP\/1\.1 50\d/, 'never a 5xx for what the client did');
      }
      await until(() => finished(obs.counts) === 12);
      t.same(health(p.pool), untouched(p.pool), 'no failure counted, nobody ejected');
      t.equal(a.seen.length + b.seen.length, 12, 'each request reached an endpoint once');
    });
  }
  t.end();
});

t.test('1. http: the same with one endpoint: its failure count does not climb', async (t) => {
  const a = await recordingBackend(() => true);
  const obs = countingObserver();
  const p = await httpProxy({ svc: [endpoint(a.port)] }, {}, obs, undefined, SERVICE);
  t.teardown(() => {
    p.close();
    a.close();
  });
  for (let i = 0; i < 12; i++) await client(p.port, UPLOAD, () => a.seen.length > i, (s) => (i % 2 ? s.end() : s.resetAndDestroy()));
  await until(() => finished(obs.counts) === 12);
  t.same(health(p.pool), untouched(p.pool));
});

t.test('1. the other way round: an endpoint that hangs is still its own fault, whatever the client idle timeout', async (t) => {
  // A whole request the endpoint never answers: the client connection's idle timer
  // (shorter here than the response timeout) does not end the wait; the response
  // timeout does (504), counted against the endpoint.
  const a = await recordingBackend(() => true);
  const obs = countingObserver();
  const p = await httpProxy({ svc: [endpoint(a.port)] }, { timeouts: { connect: 1000, idle: 150, headers: 2000, response: 400, keepAlive: 5000 } }, obs, undefined, SERVICE);
  t.teardown(() => {
    p.close();
    a.close();
  });
  const reply = await rawRequest(p.port, 'GET /slow HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n', 10_000);
  t.match(reply, /^HTTP\/1\.1 504 /, 'the response timeout answers');
  t.equal(health(p.pool)[0]!.failures, 1, 'counted against the endpoint');

  // An upload the endpoint stops reading: berth stops reading the client for it, and
  // when the client connection goes idle that is the endpoint's timeout.
  // (Reads nothing at all: the kernel buffers fill, then undici pauses the upload.)
  const sink = await tcpServer((c) => c.pause());
  const qobs = countingObserver();
  const q = await httpProxy({ svc: [endpoint(sink.port)] }, { timeouts: { connect: 1000, idle: 1500, headers: 2000, response: 30_000, keepAlive: 5000 } }, qobs, undefined, SERVICE);
  t.teardown(() => {
    q.close();
    sink.close();
  });
  const size = 64 * 1024 * 1024;
  const s = net.connect(q.port, '127.0.0.1');
  s.on('error', () => {});
  s.resume();
  await once(s, 'connect');
  s.write(`POST /upload HTTP/1.1\r\nHost: a.example\r\nContent-Length: ${size}\r\n\r\n`);
  // The client writes whenever it can: only the endpoint, which reads nothing, stalls the
  // upload. (The idle timeout is long enough that a busy test machine never starves the
  // client for it: the outcome, not a duration, is what is checked.)
  const chunk = Buffer.alloc(1024 * 1024, 0x61);
  let sent = 0;
  const pump = (): void => {
    while (sent < size && !s.destroyed) {
      sent += chunk.length;
      if (!s.write(chunk)) return;
    }
  };
  s.on('drain', pump);
  pump();
  // (The 504 is best effort: with the upload in flight the connection is reset after it.)
  if (!s.destroyed) await new Promise((r) => s.on('close', r));
  t.equal(health(q.pool)[0]!.failures, 1, 'counted against the endpoint that stopped reading');
  t.equal(qobs.counts['http.504'], 1, 'logged and counted as the 504 it is');
});

t.test('1. upgrade: a client that resets before the 101 blames nobody', async (t) => {
  const be = await rawEndpoint(() => null);
  const obs = countingObserver();
  const p = await httpProxy({ svc: [endpoint(be.port)] }, {}, obs, undefined, SERVICE);
  t.teardown(() => {
    p.close();
    be.close();
  });
  const head = 'GET /ws HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n';
  // (A FIN is no giving up: a half-closed client still waits for its answer, as through HAProxy.)
  for (let i = 0; i < 12; i++) await client(p.port, head, () => be.heads.length > i, (s) => s.resetAndDestroy());
  await until(() => finished(obs.counts) === 12);
  t.same(health(p.pool), untouched(p.pool));
});

t.test('1. tcp: clients that reset or close at once blame nobody', async (t) => {
  const a = await echoServer();
  const b = await echoServer();
  let accepted = 0;
  a.on('connection', () => accepted++);
  b.on('connection', () => accepted++);
  const p = await proxyFor([endpoint(a.port), endpoint(b.port)]);
  p.pool.configureService('svc', SERVICE);
  t.teardown(async () => {
    await p.close();
    a.close();
    b.close();
  });
  for (let i = 0; i < 12; i++) {
    const s = net.connect(p.port, '127.0.0.1');
    s.on('error', () => {});
    s.resume();
    await once(s, 'connect');
    s.write('hello');
    await until(() => accepted > i);
    if (i % 2) s.end();
    else s.resetAndDestroy();
    if (!s.destroyed) await once(s, 'close');
  }
  await until(() => p.listener.active === 0);
  t.same(health(p.pool), untouched(p.pool));
});

t.test('2. an endpoint status outside 100-599 is a broken endpoint: 502 only, nothing relayed', async (t) => {
  for (const bad of ['HTTP/1.1 099 Weird\r\n\r\n', 'HTTP/1.1 600 Nope\r\nContent-Length: 0\r\n\r\n', 'HTTP/1.1 000 Zero\r\n\r\n']) {
    const be = await rawEndpoint(() => `${bad}HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok`);
    const p = await httpProxy({ svc: [endpoint(be.port)] }, { retries: 3 });
    const reply = await rawRequest(p.port, 'GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    t.match(reply, /^HTTP\/1\.1 502 /, `${JSON.stringify(bad)}: 502 first`);
    t.equal([...reply.matchAll(/HTTP\/1\.1 /g)].length, 1, 'and nothing else');
    t.equal(be.heads.length, 1, 'not sent again');
    p.close();
    be.close();
  }
});

t.test('3. a 103 carrying hop-by-hop fields is relayed without them, and the final response follows', async (t) => {
  const be = await rawEndpoint(
    () =>
      'HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\nConnection: close\r\n\r\n' +
      'HTTP/1.1 103 Early Hints\r\nLink: </app.js>; rel=preload\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\n\r\n' +
      'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok',
  );
  const p = await httpProxy({ svc: [endpoint(be.port)] });
  t.teardown(() => {
    p.close();
    be.close();
  });
  const reply = await rawRequest(p.port, 'GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
  t.same([...reply.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]), ['103', '103', '200']);
  const interim = reply.slice(0, reply.indexOf('HTTP/1.1 200'));
  t.match(interim, /link: <\/style\.css>; rel=preload/i);
  t.match(interim, /link: <\/app\.js>; rel=preload/i);
  t.notMatch(interim, /connection|x-secret/i, 'hop-by-hop fields removed from the 103s');
  t.match(reply, /\r\n\r\nok$/);
});

t.test('4. an absolute-form target with userinfo is refused (RFC 9110 §4.2.4)', async (t) => {
  const be = await recordingBackend();
  const p = await httpProxy({ svc: [endpoint(be.port)] });
  t.teardown(() => {
    p.close();
    be.close();
  });
  for (const target of ['http://user:pw@b.example/x', 'http://user@b.example/x', 'http://@b.example/x', 'https://u:p@b.example:8443/']) {
    const reply = await rawRequest(p.port, `GET ${target} HTTP/1.1\r\nHost: b.example\r\n\r\n`);
    t.match(reply, /^HTTP\/1\.1 400 /, target);
  }
  t.equal(be.seen.length, 0, 'nothing reached the endpoint');
  const ok = await rawRequest(p.port, 'GET http://b.example/x HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n');
  t.match(ok, /^HTTP\/1\.1 200 /, 'absolute form without userinfo still works');
});

t.test('5. a reason phrase is relayed byte for byte, or replaced by the standard one — never re-encoded', async (t) => {
  const cases: { name: string; reason: Buffer; want: Buffer[] }[] = [
    { name: 'UTF-8: byte for byte', reason: Buffer.from('été', 'utf8'), want: [Buffer.from('été', 'utf8')] },
    { name: 'latin-1 obs-text', reason: Buffer.from([0xe9, 0x74, 0xe9]), want: [Buffer.from([0xe9, 0x74, 0xe9]), Buffer.from('OK')] },
    { name: 'ASCII', reason: Buffer.from('Fine Thanks'), want: [Buffer.from('Fine Thanks')] },
  ];
  for (const c of cases) {
    const be = await rawEndpoint(() => Buffer.concat([Buffer.from('HTTP/1.1 200 '), c.reason, Buffer.from('\r\nContent-Length: 2\r\n\r\nok')]));
    const p = await httpProxy({ svc: [endpoint(be.port)] });
    const reply = Buffer.from(await rawRequest(p.port, 'GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'), 'latin1');
    const line = reply.subarray(0, reply.indexOf('\r\n'));
    const reason = line.subarray('HTTP/1.1 200 '.length);
    t.ok(
      c.want.some((w) => w.equals(reason)),
      `${c.name}: got ${reason.toString('hex')}, want one of ${c.want.map((w) => w.toString('hex')).join(', ')}`,
    );
    p.close();
    be.close();
  }
});
