/**
 * Misbehaving clients and endpoints (issue: hardening). Every endpoint here is a raw
 * socket that sends exactly the bytes under test; every client writes raw bytes.
 * Node only: certificates come from berth's own node-forge code, not openssl.
 */
import { once } from 'node:events';
import { mkdtempSync, readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { gunzipSync, gzipSync } from 'node:zlib';
import { pino } from 'pino';
import t from 'tap';
import { createCa, issueCert } from '../../src/tls/certs.js';
import { ListenerTls, type ListenerTlsConfig } from '../../src/tls/terminate.js';
import { countingObserver, endpoint, proxyFor, silent } from '../helpers/proxy.js';
import { echoServer, exchange, freePort, until } from '../helpers/net.js';
import { httpProxy, httpSettings, rawEndpoint, rawRequest, recordingBackend, request } from '../helpers/http.js';
import type { ConnectFn } from '../../src/proxy/connect.js';

/** Connects, writes `payload`, and resets the connection at once (RST, not FIN). */
async function writeAndReset(port: number, payload: string): Promise<void> {
  const c = net.connect(port, '127.0.0.1');
  c.on('error', () => {});
  await once(c, 'connect');
  c.write(payload);
  c.resetAndDestroy();
  await once(c, 'close');
}

t.test('1. a client that resets while berth refuses its CONNECT or Upgrade ends only its own connection', async (t) => {
  const be = await recordingBackend();
  const p = await httpProxy({ svc: [endpoint(be.port)] }, { service: undefined, routes: [{ host: 'known.example', service: 'svc' }] });
  t.teardown(() => {
    p.close();
    be.close();
  });
  const refused = [
    'CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n',
    'GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: nowhere.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
  ];
  for (let i = 0; i < 30; i++) await Promise.all(refused.map((r) => writeAndReset(p.port, r)));
  const r = await request(p.port, { headers: { host: 'known.example' } });
  t.equal(r.status, 200, 'berth still answers (an unhandled socket error would have ended this process)');
});

t.test('2. an Upgrade is an ordinary exchange until the endpoint says 101', async (t) => {
  t.test('a refusal (426) is relayed and the connection ends: later bytes never reach the endpoint', async (t) => {
    const be = await rawEndpoint(() => 'HTTP/1.1 426 Upgrade Required\r\ncontent-length: 2\r\n\r\nno');
    const p = await httpProxy({ svc: [endpoint(be.port)] });
    t.teardown(() => {
      p.close();
      be.close();
    });
    const reply = await rawRequest(
      p.port,
      'GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET /admin HTTP/1.1\r\nHost: evil\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n',
    );
    t.match(reply, /^HTTP\/1\.1 426 /);
    t.match(reply, /connection: close/i);
    t.equal((reply.match(/HTTP\/1\.1 /g) ?? []).length, 1, 'one answer, then the connection closed');
    t.equal(be.heads.length, 1, 'the endpoint saw one request');
    t.notMatch(be.all(), /\/admin|6\.6\.6\.6|evil/, 'nothing after the refused Upgrade reached the endpoint');
  });

  t.test('client bytes sent ahead of the 101 reach the endpoint only after it', async (t) => {
    let beforeAnswer = '';
    const be = await rawEndpoint((_head, _n, s) => {
      setImmediate(() => {
        beforeAnswer = be.all();
        s.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n');
        s.on('data', (d: Buffer) => s.write(d));
      });
      return null;
    });
    const p = await httpProxy({ svc: [endpoint(be.port)] });
    t.teardown(() => {
      p.close();
      be.close();
    });
    const c = net.connect(p.port, '127.0.0.1');
    let got = '';
    c.setEncoding('latin1');
    c.on('data', (d: string) => (got += d));
    c.write('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nEARLY');
    await until(() => got.includes('EARLY'), 5000, 'early bytes echoed after the 101');
    t.match(got, /^HTTP\/1\.1 101 /);
    t.match(got, /upgrade: echo/i);
    t.notMatch(beforeAnswer, /EARLY/, 'held until the endpoint agreed to switch');
    t.equal(p.listener.tunnels.size, 1);
    c.destroy();
    await until(() => p.listener.tunnels.size === 0, 5000, 'tunnel closed with the client');
  });

  t.test('an Upgrade with a body is refused before anything is sent', async (t) => {
    const be = await rawEndpoint(() => 'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n');
    const p = await httpProxy({ svc: [endpoint(be.port)] });
    t.teardown(() => {
      p.close();
      be.close();
    });
    const reply = await rawRequest(p.port, 'POST / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n');
    t.match(reply, /^HTTP\/1\.1 400 /);
    t.equal(be.all(), '', 'the endpoint saw nothing');
  });
  t.end();
});

t.test('4. a malformed request behind a valid one is answered after it, in order', async (t) => {
  const be = await rawEndpoint((head, _n, s) => {
    // Answer a little later, so the malformed request has been read while the first is in flight.
    setTimeout(() => s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${head.length}\r\n\r\n${head}`), 50);
    return null;
  });
  const p = await httpProxy({ svc: [endpoint(be.port)] });
  t.teardown(() => {
    p.close();
    be.close();
  });
  const reply = await rawRequest(p.port, 'GET /first HTTP/1.1\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n');
  const statuses = [...reply.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]);
  t.same(statuses, ['200', '400'], 'the answer to the first request, then the refusal');
  t.match(reply, /GET \/first/);
});

t.test('5. responses berth must relay', async (t) => {
  const cases: { name: string; answer: string | Buffer; check: (reply: string) => void }[] = [
    {
      name: '304 with Content-Length',
      answer: 'HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\nETag: "x"\r\n\r\n',
      check: (r) => t.match(r, /^HTTP\/1\.1 304 /),
    },
    {
      name: '204 with Content-Length (dropped: a 204 has no framing)',
      answer: 'HTTP/1.1 204 No Content\r\nContent-Length: 10\r\nX-A: 1\r\n\r\n',
      check: (r) => {
        t.match(r, /^HTTP\/1\.1 204 /);
        t.notMatch(r, /content-length/i);
      },
    },
    {
      name: '102, 103 without Link and 103 with a bad Link, hop-by-hop removed, then 200',
      answer:
        'HTTP/1.1 102 Processing\r\n\r\n' +
        'HTTP/1.1 103 Early Hints\r\nX-Hint: a\r\nConnection: X-Secret\r\nX-Secret: s\r\nKeep-Alive: timeout=1\r\n\r\n' +
        'HTTP/1.1 103 Early Hints\r\nLink: <bad\r\n\r\n' +
        'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok',
      check: (r) => {
        t.same([...r.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]), ['102', '103', '103', '200']);
        t.match(r, /x-hint: a/i);
        t.match(r, /link: <bad/i);
        t.notMatch(r, /x-secret|keep-alive: timeout/i, 'hop-by-hop fields of a 1xx removed');
        t.match(r, /\r\n\r\nok$/);
      },
    },
    {
      name: 'a legal obs-text reason phrase',
      answer: Buffer.concat([Buffer.from('HTTP/1.1 200 '), Buffer.from([0xe9, 0x74, 0xe9]), Buffer.from('\r\nContent-Length: 2\r\n\r\nok')]),
      check: (r) => {
        t.match(r, /^HTTP\/1\.1 200 /);
        t.match(r, /\r\n\r\nok$/);
      },
    },
    {
      name: 'a flood of 1xx: bounded, then 502',
      answer: 'HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n'.repeat(2000) + 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok',
      check: (r) => {
        t.ok((r.match(/HTTP\/1\.1 103/g) ?? []).length <= 32, 'at most 32 interim responses relayed');
        t.match(r, /HTTP\/1\.1 502 /);
      },
    },
    {
      name: 'a malformed answer: 502 at once, not sent again',
      answer: 'HTTP/1.1 abc\r\n\r\n',
      check: (r) => t.match(r, /^HTTP\/1\.1 502 /),
    },
  ];
  for (const c of cases) {
    const be = await rawEndpoint(() => c.answer);
    const p = await httpProxy({ svc: [endpoint(be.port)] }, { retries: 3 });
    const reply = await rawRequest(p.port, 'GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    t.comment(c.name);
    c.check(reply);
    t.equal(be.heads.length, 1, `${c.name}: the endpoint got the request once`);
    p.close();
    be.close();
  }

  t.test('Transfer-Encoding: gzip, chunked is relayed with its coding', async (t) => {
    const gz = gzipSync('hello');
    const body = `${gz.length.toString(16)}\r\n${gz.toString('latin1')}\r\n0\r\n\r\n`;
    const be = await rawEndpoint(() => Buffer.from(`HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n${body}`, 'latin1'));
    const p = await httpProxy({ svc: [endpoint(be.port)] });
    t.teardown(() => {
      p.close();
      be.close();
    });
    const got = await new Promise<{ te: string | undefined; body: Buffer }>((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port: p.port, agent: false }, (res) => {
          const parts: Buffer[] = [];
          res.on('data', (d: Buffer) => parts.push(d));
          res.on('end', () => resolve({ te: res.headers['transfer-encoding'], body: Buffer.concat(parts) }));
        })
        .on('error', reject);
    });
    t.equal(got.te, 'gzip, chunked');
    t.equal(gunzipSync(got.body).toString(), 'hello', 'the client can undo the coding it was told about');
  });
  t.end();
});

t.test('6. berth sees the whole request head', async (t) => {
  const be = await rawEndpoint((head) => `HTTP/1.1 200 OK\r\ncontent-length: ${head.length}\r\n\r\n${head}`);
  const p = await httpProxy({ svc: [endpoint(be.port)] });
  t.teardown(() => {
    p.close();
    be.close();
  });
  const filler = Array.from({ length: 1100 }, (_x, i) => `X-${i}: ${i}\r\n`).join('');
  t.match(await rawRequest(p.port, `GET / HTTP/1.1\r\nHost: a\r\n${filler}Host: b\r\nConnection: close\r\n\r\n`), /^HTTP\/1\.1 400 /, 'a second Host past the 1,000th line is seen');
  const withBody = await rawRequest(p.port, `POST / HTTP/1.1\r\nHost: a\r\n${filler}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\nbody\r\n0\r\n\r\n`);
  t.match(withBody, /^HTTP\/1\.1 200 /);
  await until(() => be.all().includes('body'), 5000, 'the body reached the endpoint');
  t.pass('framing past the 1,000th line is honoured, the body forwarded');
  const hosted = await rawRequest(p.port, 'GET / HTTP/1.1\r\nHost: shop.example\r\nConnection: Host, close\r\n\r\n');
  t.match(hosted, /host: shop\.example/i, '"Connection: Host" does not take Host away');
  const before = be.heads.length;
  for (const bad of ['a b', 'x/y', 'user@x', 'a\\b']) {
    t.match(await rawRequest(p.port, `GET / HTTP/1.1\r\nHost: ${bad}\r\nConnection: close\r\n\r\n`), /^HTTP\/1\.1 400 /, `Host "${bad}": 400`);
  }
  t.equal(be.heads.length, before, 'no invalid Host reached the endpoint');
});

t.test('7. retries: a connect that fails never costs a client its answer, and nothing runs twice', async (t) => {
  t.test('http: refused endpoints do not use up retries or the budget', async (t) => {
    const be = await recordingBackend();
    const dead = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
    const obs = countingObserver();
    const noBudget = { ...httpSettings().http, retryBudget: { ratio: 0, minPerSecond: 0 } };
    const p = await httpProxy({ svc: [...dead.map((d) => endpoint(d)), endpoint(be.port)] }, { retries: 1, http: noBudget }, obs);
    t.teardown(() => {
      p.close();
      be.close();
    });
    const statuses: number[] = [];
    for (let i = 0; i < 24; i++) statuses.push((await request(p.port, i % 3 === 0 ? { method: 'POST', body: 'x' } : {})).status);
    t.same([...new Set(statuses)], [200], 'every request answered by the endpoint that accepts (5 dead, retries 1, no budget)');
    t.ok((obs.counts['retry'] ?? 0) > 0, 'the refusals were retried');
  });

  t.test('http: a request the endpoint dropped is not resent when it has a body', async (t) => {
    const be = await rawEndpoint((_h, _n, s) => {
      s.resetAndDestroy();
      return null;
    });
    const p = await httpProxy({ svc: [endpoint(be.port)] }, { retries: 3 });
    t.teardown(() => {
      p.close();
      be.close();
    });
    t.equal((await request(p.port, { method: 'POST', body: 'pay' })).status, 502);
    t.equal(be.heads.length, 1, 'sent once');
  });
  t.end();
});

t.test('8. descriptor exhaustion is counted and logged once, and blames no endpoint', async (t) => {
  const lines: { msg: string }[] = [];
  const log = pino({ level: 'info' }, { write: (l: string) => lines.push(JSON.parse(l) as { msg: string }) });
  const echo = await echoServer();
  let fail = true;
  const connect: ConnectFn = (host, port) => {
    if (!fail) return net.connect({ host, port, allowHalfOpen: true });
    const s = new net.Socket();
    process.nextTick(() => s.destroy(Object.assign(new Error('connect EMFILE'), { code: 'EMFILE' })));
    return s;
  };
  const obs = countingObserver();
  const p = await proxyFor([endpoint(echo.port)], { connect, observer: obs, log });
  t.teardown(async () => {
    await p.close();
    echo.close();
  });
  for (let i = 0; i < 5; i++) {
    const r = await exchange(p.port, 'x');
    t.equal(r.data.length, 0, 'turned away');
  }
  t.equal(obs.counts['local.upstream_connect.EMFILE'], 5, 'each counted');
  t.equal(lines.filter((l) => /out of descriptors/.test(l.msg)).length, 1, 'logged once');
  const ep = p.pool.service('svc')!.endpoints.values().next().value!;
  t.equal(ep.failures, 0, 'the endpoint is not blamed');
  fail = false;
  t.equal((await exchange(p.port, 'back')).data.toString(), 'back');
  t.equal(lines.filter((l) => /descriptors available again/.test(l.msg)).length, 1, 'recovery logged once');
  for (let i = 0; i < 3; i++) p.listener.gate.server.emit('error', Object.assign(new Error('accept EMFILE'), { code: 'EMFILE' }));
  t.equal(obs.counts['local.accept.EMFILE'], 3);
  t.equal(lines.filter((l) => /out of descriptors/.test(l.msg)).length, 2, 'a new episode: one more line, not three');
});

t.test('8. maxConnections: past the cap connections wait unread, in order, and are served as slots free', async (t) => {
  const echo = await echoServer();
  const p = await proxyFor([endpoint(echo.port)], { settings: { maxConnections: 2 } });
  t.teardown(async () => {
    await p.close();
    echo.close();
  });
  const open = async (word: string) => {
    const c = net.connect(p.port, '127.0.0.1');
    c.setEncoding('utf8');
    let got = '';
    c.on('data', (d: string) => (got += d));
    c.on('error', () => {});
    await once(c, 'connect');
    c.write(word);
    return { c, got: () => got };
  };
  const a = await open('a');
  const b = await open('b');
  await until(() => a.got() === 'a' && b.got() === 'b', 5000, 'the first two served');
  const c = await open('c');
  await until(() => p.listener.gate.waiting === 1, 5000, 'the third waits');
  t.equal(p.listener.active, 2, 'two served');
  t.equal(c.got(), '', 'the third is not read while it waits');
  a.c.destroy();
  await until(() => c.got() === 'c', 5000, 'served when a slot frees');
  b.c.destroy();
  c.c.destroy();
});

/** A CA, a server and a client certificate from berth's own code (node-forge). */
async function certs(): Promise<{ dir: string; cfg: (over?: Partial<ListenerTlsConfig>) => ListenerTlsConfig }> {
  const dir = mkdtempSync(join(tmpdir(), 'berth-hard-'));
  await createCa({ out: dir, cn: 'test ca', days: 2, bits: 2048 });
  await issueCert({ ca: dir, out: dir, name: 'server', sans: [{ type: 'DNS', value: 'localhost' }, { type: 'IP', value: '127.0.0.1' }], usage: 'server', days: 2, bits: 2048 });
  return {
    dir,
    cfg: (over = {}) => ({ cert: join(dir, 'server.pem'), key: join(dir, 'server-key.pem'), sni: [], allow: [], minVersion: 'TLSv1.2', ...over }),
  };
}

t.test('3. TLS handshakes are bounded; renegotiation refused; refused clients get a clean TLS close', async (t) => {
  const pki = await certs();
  const echo = await echoServer();
  const obs = countingObserver();
  const mo = { tlsMaterial: () => {} };
  const term = new ListenerTls('tls', pki.cfg(), silent, mo, undefined);
  const { port, close } = await proxyFor([endpoint(echo.port)], { observer: obs, tls: term, settings: { timeouts: { connect: 2000, idle: 60_000, handshake: 300 } } });
  t.teardown(async () => {
    await close();
    term.close();
    echo.close();
  });
  // A real ClientHello, to send in part or byte by byte.
  const hello = await new Promise<Buffer>((resolve) => {
    const sink = net.createServer((s) => s.once('data', (d: Buffer) => (resolve(d), s.destroy(), sink.close())));
    sink.listen(0, '127.0.0.1', () => {
      const c = tls.connect({ port: (sink.address() as net.AddressInfo).port, host: '127.0.0.1', rejectUnauthorized: false });
      c.on('error', () => {});
    });
  });
  const closed = (s: net.Socket) => new Promise<void>((resolve) => s.once('close', () => resolve()));
  const silentClient = net.connect(port, '127.0.0.1');
  const partial = net.connect(port, '127.0.0.1', () => partial.write(hello.subarray(0, 20)));
  const drip = net.connect(port, '127.0.0.1');
  let i = 0;
  const dripper = setInterval(() => {
    if (i < hello.length && !drip.destroyed) drip.write(hello.subarray(i, ++i));
  }, 20);
  for (const s of [silentClient, partial, drip]) s.on('error', () => {});
  await Promise.all([closed(silentClient), closed(partial), closed(drip)]);
  clearInterval(dripper);
  t.ok(i < hello.length, `a ClientHello sent a byte every 20 ms is cut off (after ${i} of ${hello.length} bytes): the bound is on the whole handshake`);
  await until(() => (obs.counts['tls.timeout'] ?? 0) === 3, 5000, 'three handshake timeouts counted');
  t.pass('a silent client, half a ClientHello and a drip are each closed and counted as timeouts');

  const reneg = tls.connect({ port, host: '127.0.0.1', ca: readFileSync(join(pki.dir, 'ca.pem')), servername: 'localhost', maxVersion: 'TLSv1.2' });
  reneg.on('error', () => {});
  await once(reneg, 'secureConnect');
  const renegErr = await new Promise<Error | null>((resolve) => {
    const ok = reneg.renegotiate({ rejectUnauthorized: false }, (err) => resolve(err));
    if (!ok) resolve(new Error('renegotiate refused locally'));
    reneg.once('close', () => resolve(new Error('closed')));
  });
  t.ok(renegErr, `client-initiated renegotiation refused (${renegErr?.message})`);
  reneg.destroy();

  // mTLS: a client with no certificate is refused after the handshake with close_notify, not a reset.
  const mterm = new ListenerTls('mtls', pki.cfg({ clientCa: join(pki.dir, 'ca.pem') }), silent, mo, undefined);
  const m = await proxyFor([endpoint(echo.port)], { observer: obs, tls: mterm });
  const mport = m.port;
  t.teardown(async () => {
    await m.close();
    mterm.close();
  });
  const anon = tls.connect({ port: mport, host: '127.0.0.1', ca: readFileSync(join(pki.dir, 'ca.pem')), servername: 'localhost' });
  let anonErr: NodeJS.ErrnoException | undefined;
  anon.on('error', (e: NodeJS.ErrnoException) => (anonErr = e));
  anon.resume();
  await once(anon, 'close');
  t.equal(anonErr, undefined, `no reset: ${anonErr?.code}`);
  t.ok(anon.readableEnded, 'the TLS stream ended cleanly (close_notify)');
});

t.test('8. the connection cap counts sockets still in their TLS handshake', async (t) => {
  const pki = await certs();
  const echo = await echoServer();
  const term = new ListenerTls('tls', pki.cfg(), silent, { tlsMaterial: () => {} }, undefined);
  const { port, listener: l, close } = await proxyFor([endpoint(echo.port)], { tls: term, settings: { maxConnections: 1, timeouts: { connect: 2000, idle: 60_000, handshake: 60_000 } } });
  t.teardown(async () => {
    await close();
    term.close();
    echo.close();
  });
  const stalled = net.connect(port, '127.0.0.1');
  stalled.on('error', () => {});
  await until(() => l.gate.served === 1, 5000, 'the stalled handshake holds the one slot');
  const c = tls.connect({ port, host: '127.0.0.1', ca: readFileSync(join(pki.dir, 'ca.pem')), servername: 'localhost' });
  c.on('error', () => {});
  let got = '';
  c.on('data', (d: Buffer) => (got += d.toString()));
  c.write('hi');
  await until(() => l.gate.waiting === 1, 5000, 'the real client waits unread');
  stalled.resetAndDestroy();
  await until(() => got === 'hi', 5000, 'served once the stalled one left');
  c.destroy();
});
