import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import t from 'tap';
import { countingObserver, endpoint, proxyFor } from '../helpers/proxy.js';
import { echoServer, exchange, freePort, nameServer, tcpServer, until } from '../helpers/net.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

t.test('forwards to every endpoint in turn', async (t) => {
  const a = await nameServer('A');
  const b = await nameServer('B');
  const p = await proxyFor([endpoint(a.port), endpoint(b.port)]);
  t.teardown(async () => {
    await p.close();
    a.close();
    b.close();
  });
  const seen = [];
  for (let i = 0; i < 4; i++) seen.push((await exchange(p.port)).data.toString());
  t.same(seen.sort(), ['A', 'A', 'B', 'B']);
  await until(() => p.listener.sessions.size === 0, 2000, 'sessions closed');
  t.equal(p.pool.activeTotal(), 0, 'no connection left counted');
});

t.test('large random payloads both ways, byte-exact, at once', async (t) => {
  const size = 32 * 1024 * 1024;
  const down = randomBytes(size);
  let upHash = '';
  const server = await tcpServer((s) => {
    const h = createHash('sha256');
    s.on('data', (d: Buffer) => h.update(d));
    s.on('end', () => (upHash = h.digest('hex')));
    s.end(down);
  });
  const p = await proxyFor([endpoint(server.port)]);
  t.teardown(async () => {
    await p.close();
    server.close();
  });
  const up = randomBytes(size);
  const r = await exchange(p.port, up, { timeoutMs: 60_000 });
  t.equal(r.error, undefined);
  t.equal(r.data.length, size);
  t.equal(sha(r.data), sha(down), 'download byte-exact');
  await until(() => upHash !== '', 5000, 'upload hashed');
  t.equal(upHash, sha(up), 'upload byte-exact');
});

t.test('half-close: a client that shuts its write side still receives the whole answer', async (t) => {
  // The endpoint answers only after it sees the client's FIN (like `sort` over nc).
  const server = await tcpServer((s) => {
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    s.on('end', () => {
      const text = Buffer.concat(got).toString();
      setTimeout(() => s.end(text.toUpperCase() + '|' + 'x'.repeat(1_000_000)), 50);
    });
  });
  const p = await proxyFor([endpoint(server.port)]);
  t.teardown(async () => {
    await p.close();
    server.close();
  });
  const r = await exchange(p.port, 'hello', { end: true });
  t.equal(r.error, undefined);
  t.equal(r.data.length, 'HELLO|'.length + 1_000_000);
  t.ok(r.data.subarray(0, 6).equals(Buffer.from('HELLO|')));
});

t.test('half-close the other way: the endpoint finishes first, the client keeps sending', async (t) => {
  let received = '';
  const server = await tcpServer((s) => {
    s.end('bye-first');
    s.on('data', (d: Buffer) => (received += d.toString()));
    s.on('end', () => s.destroy());
  });
  const p = await proxyFor([endpoint(server.port)]);
  t.teardown(async () => {
    await p.close();
    server.close();
  });
  const c = net.connect({ port: p.port, host: '127.0.0.1', allowHalfOpen: true });
  let got = '';
  c.on('data', (d: Buffer) => (got += d.toString()));
  await once(c, 'end');
  t.equal(got, 'bye-first', 'endpoint FIN passed to the client');
  c.write('still-talking');
  c.end();
  await once(c, 'close');
  await until(() => received === 'still-talking', 3000, 'endpoint got bytes sent after its FIN');
  t.pass('client bytes after the endpoint half-closed were delivered');
});

t.test('refused endpoint: retried on another, nothing lost', async (t) => {
  const dead = await freePort();
  const echo = await echoServer();
  const obs = countingObserver();
  const p = await proxyFor([endpoint(dead), endpoint(echo.port)], { observer: obs });
  t.teardown(async () => {
    await p.close();
    echo.close();
  });
  for (let i = 0; i < 10; i++) {
    const r = await exchange(p.port, `ping-${i}`);
    t.equal(r.data.toString(), `ping-${i}`);
  }
  t.ok((obs.counts['retry'] ?? 0) >= 1, 'retries counted');
  t.ok((obs.counts['connect.refused'] ?? 0) >= 1);
  t.ok(obs.reasons.every((r) => r === 'refused'));
});

t.test('by default an endpoint that accepted and reset is not replayed elsewhere: nothing runs twice', async (t) => {
  // The first endpoint accepts, reads a command, runs it (counts it), then resets without answering.
  const ran: string[] = [];
  const resetter = await tcpServer((s) => {
    s.once('data', (d: Buffer) => {
      ran.push(d.toString());
      s.resetAndDestroy();
    });
  });
  const echo = await tcpServer((s) => {
    s.on('data', (d: Buffer) => {
      ran.push(d.toString());
      s.write(d);
    });
  });
  const obs = countingObserver();
  const p = await proxyFor([endpoint(resetter.port), endpoint(echo.port)], { observer: obs, balance: 'round-robin' });
  t.teardown(async () => {
    await p.close();
    echo.close();
    resetter.close();
  });
  const answers = await Promise.all([0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map((i) => exchange(p.port, `cmd-${i}`)));
  t.same([...ran].sort(), answers.map((_a, i) => `cmd-${i}`).sort(), 'each command ran exactly once');
  const reset = answers.filter((a) => a.error?.code === 'ECONNRESET').length;
  t.equal(reset, 5, 'the clients whose endpoint reset see a reset (round-robin: every other one)');
  t.notOk(obs.reasons.includes('reset'), 'no replay');
});

t.test('reset before any endpoint byte, service with replay: early client bytes replayed on another endpoint', async (t) => {
  // The first endpoint accepts, reads what the client sent, then resets without answering.
  let resetterSaw = '';
  const resetter = await tcpServer((s) => {
    s.once('data', (d: Buffer) => {
      resetterSaw += d.toString();
      s.resetAndDestroy();
    });
  });
  const echo = await echoServer();
  const obs = countingObserver();
  const p = await proxyFor([endpoint(resetter.port), endpoint(echo.port)], { observer: obs, balance: 'round-robin', replay: true });
  t.teardown(async () => {
    await p.close();
    echo.close();
    resetter.close();
  });
  const answers = await Promise.all([0, 1, 2, 3].map((i) => exchange(p.port, `early-bytes-${i}`)));
  t.same(
    answers.map((a) => a.data.toString()).sort(),
    ['early-bytes-0', 'early-bytes-1', 'early-bytes-2', 'early-bytes-3'],
    'every client got its bytes echoed by the healthy endpoint',
  );
  t.match(resetterSaw, /early-bytes/);
  t.ok(obs.reasons.includes('reset'), `retry reasons: ${obs.reasons}`);
});

t.test('a reset after the endpoint answered is passed on, not retried', async (t) => {
  const server = await tcpServer((s) => {
    s.write('partial');
    setTimeout(() => s.resetAndDestroy(), 30);
  });
  const obs = countingObserver();
  const p = await proxyFor([endpoint(server.port)], { observer: obs });
  t.teardown(async () => {
    await p.close();
    server.close();
  });
  const r = await exchange(p.port, 'x', { end: false });
  t.equal(r.data.toString(), 'partial');
  t.equal(r.error?.code, 'ECONNRESET', 'client sees a reset, not a clean end');
  t.equal(obs.counts['retry'] ?? 0, 0);
});

t.test('connect timeout: tries the next endpoint, then gives up promptly', async (t) => {
  const echo = await echoServer();
  const obs = countingObserver();
  // An endpoint that never completes its connect (a blackholed address), via the injectable connect.
  const blackhole = 1;
  const p = await proxyFor([endpoint(blackhole), endpoint(echo.port)], {
    observer: obs,
    settings: { timeouts: { connect: 150, idle: 60_000 } },
    connect: (host, port) => (port === blackhole ? new net.Socket() : net.connect({ host, port, allowHalfOpen: true })),
  });
  t.teardown(async () => {
    await p.close();
    echo.close();
  });
  const started = Date.now();
  const rs = await Promise.all([exchange(p.port, 'a'), exchange(p.port, 'b')]);
  t.same(rs.map((r) => r.data.toString()).sort(), ['a', 'b']);
  t.ok((obs.counts['connect.timeout'] ?? 0) >= 1, JSON.stringify(obs.counts));
  t.ok(Date.now() - started < 2000);

  const only = await proxyFor([endpoint(blackhole)], {
    observer: obs,
    settings: { timeouts: { connect: 100, idle: 60_000 }, retries: 2 },
    connect: () => new net.Socket(),
  });
  t.teardown(() => only.close());
  const t0 = Date.now();
  const r = await exchange(only.port, 'x');
  t.ok(r.error !== undefined || r.data.length === 0, 'client closed');
  t.ok(Date.now() - t0 < 1000, `closed after ${Date.now() - t0}ms (one endpoint: no second try on the same one)`);
});

t.test('no usable endpoint: client closed at once and counted', async (t) => {
  const obs = countingObserver();
  const p = await proxyFor([], { observer: obs });
  t.teardown(() => p.close());
  const t0 = Date.now();
  const r = await exchange(p.port, 'hello', { end: false });
  t.ok(Date.now() - t0 < 500);
  t.equal(r.data.length, 0);
  t.equal(obs.counts['noEndpoint'], 1);
  await until(() => p.listener.sessions.size === 0, 1000, 'session gone');
});

t.test('idle timeout closes a silent connection', async (t) => {
  const server = await tcpServer(() => {});
  const p = await proxyFor([endpoint(server.port)], { settings: { timeouts: { connect: 1000, idle: 200 } } });
  t.teardown(async () => {
    await p.close();
    server.close();
  });
  const t0 = Date.now();
  await exchange(p.port, 'x', { end: false });
  const took = Date.now() - t0;
  t.ok(took >= 180 && took < 2000, `closed after ${took}ms`);
  await until(() => p.pool.activeTotal() === 0, 1000, 'released');
});

t.test('errors on either side tear down both, nothing leaked', async (t) => {
  const upstreamClosed: string[] = [];
  const server = await tcpServer((s) => {
    s.on('close', () => upstreamClosed.push('closed'));
    s.write('hi');
  });
  const obs = countingObserver();
  const p = await proxyFor([endpoint(server.port)], { observer: obs });
  t.teardown(async () => {
    await p.close();
    server.close();
  });
  // Client resets mid-session.
  const c = net.connect({ port: p.port, host: '127.0.0.1' });
  c.on('error', () => {});
  await once(c, 'data');
  c.resetAndDestroy();
  await until(() => upstreamClosed.length === 1, 2000, 'upstream closed after client reset');
  await until(() => p.listener.sessions.size === 0 && p.pool.activeTotal() === 0, 2000, 'all released');
  t.equal(obs.counts['accepted'], obs.counts['closed'], 'every accepted session closed');
  t.equal(obs.counts['upstreamClosed'], 1);
});

t.test('backpressure: a client that does not read does not make berth buffer the stream', async (t) => {
  // The endpoint writes as fast as it can; we measure how much it got to write while the client reads nothing.
  let written = 0;
  const server = await tcpServer((s) => {
    const chunk = Buffer.alloc(64 * 1024);
    const pump = () => {
      while (s.write(chunk)) written += chunk.length;
      written += chunk.length;
    };
    s.on('drain', pump);
    pump();
  });
  const p = await proxyFor([endpoint(server.port)]);
  t.teardown(async () => {
    await p.close();
    server.close();
  });
  const c = net.connect({ port: p.port, host: '127.0.0.1' });
  c.pause();
  await once(c, 'connect');
  await new Promise((r) => setTimeout(r, 500));
  const stalled = written;
  await new Promise((r) => setTimeout(r, 300));
  t.equal(written, stalled, 'endpoint is blocked: berth stopped reading from it');
  // Kernel buffers on both hops plus node's highWaterMark: a few MB at most, not the stream.
  t.ok(stalled < 16 * 1024 * 1024, `only ${(stalled / 1048576).toFixed(1)} MiB in flight`);
  c.destroy();
});

t.test('every endpoint refused: a new round after a backoff reaches one that has started listening', async (t) => {
  const port = await freePort();
  const obs = countingObserver();
  const p = await proxyFor([endpoint(port)], { observer: obs, settings: { retries: 3, retryBackoff: 50 } });
  let late: net.Server | undefined = undefined;
  t.teardown(async () => {
    await p.close();
    late?.close();
  });
  const answer = exchange(p.port, 'ping');
  // The endpoint starts listening 80 ms after the client arrived (a container starting up).
  await new Promise((r) => setTimeout(r, 80));
  late = net.createServer((s) => s.pipe(s)).listen(port, '127.0.0.1');
  const r = await answer;
  t.equal(r.data.toString(), 'ping', 'served after the endpoint came up; early bytes kept');
  t.ok((obs.counts['connect.refused'] ?? 0) >= 1);
  const none = await proxyFor([endpoint(await freePort())], { settings: { retries: 2, retryBackoff: 20 } });
  t.teardown(() => none.close());
  const t0 = Date.now();
  const gaveUp = await exchange(none.port, 'x');
  t.equal(gaveUp.data.length, 0);
  const took = Date.now() - t0;
  t.ok(took >= 50 && took < 1000, `gave up after bounded rounds (${took}ms: 20 + 40 ms of backoff)`);
});

/** An endpoint that holds each connection open until the client ends it, saying which endpoint it is. */
function holder(name: string) {
  return tcpServer((s) => {
    s.write(name);
    s.on('end', () => s.end());
  });
}

/** Opens a client and waits for the endpoint's greeting (or the close). */
function openHeld(port: number): Promise<{ sock: net.Socket; got: string }> {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    sock.on('error', () => {});
    sock.once('data', (d: Buffer) => resolve({ sock, got: d.toString() }));
    sock.once('close', () => resolve({ sock, got: '' }));
  });
}

t.test('connection caps with a bounded queue: waits for a slot, then the queue timeout, then turned away', async (t) => {
  const a = await holder('A');
  const b = await holder('B');
  const obs = countingObserver();
  const p = await proxyFor([endpoint(a.port), endpoint(b.port)], { observer: obs });
  p.pool.configureService('svc', { balance: 'least-conn', maxConnectionsPerEndpoint: 2, queue: { size: 2, timeout: 300 } });
  t.teardown(async () => {
    await p.close();
    a.close();
    b.close();
  });
  const held = await Promise.all([0, 1, 2, 3].map(() => openHeld(p.port)));
  t.same(held.map((h) => h.got).sort(), ['A', 'A', 'B', 'B'], 'two per endpoint');
  // Two more wait in the queue; a third is turned away at once.
  const q1 = openHeld(p.port);
  const q2 = openHeld(p.port);
  await until(() => p.pool.service('svc')!.queued === 2, 2000, 'two queued');
  const t0 = Date.now();
  const rejected = await openHeld(p.port);
  t.equal(rejected.got, '', 'queue full: closed');
  t.ok(Date.now() - t0 < 200, 'at once');
  // A slot opens: the first queued client gets it.
  held[0]!.sock.end();
  const first = await q1;
  t.ok(['A', 'B'].includes(first.got), `queued client served once a slot opened (${first.got})`);
  // Nothing else opens: the second times out after the queue timeout.
  const t1 = Date.now();
  const second = await q2;
  t.equal(second.got, '', 'timed out in the queue');
  t.ok(Date.now() - t1 >= 150 && Date.now() - t1 < 1500, `after ~300 ms (${Date.now() - t1} ms)`);
  t.equal(p.pool.service('svc')!.pending, 0, 'no client left counted as pending');
  for (const h of [...held, first]) h.sock.destroy();
  await until(() => p.pool.activeTotal() === 0, 2000, 'all released');
  t.ok((obs.counts['noEndpoint'] ?? 0) >= 2);
});

t.test('circuit breaker: clients waiting for an endpoint beyond maxPending are turned away at once', async (t) => {
  const obs = countingObserver();
  // Connects that never complete: every client stays pending.
  const p = await proxyFor([endpoint(1)], { observer: obs, settings: { timeouts: { connect: 2000, idle: 60_000 } }, connect: () => new net.Socket() });
  p.pool.configureService('svc', { balance: 'round-robin', maxPending: 3 });
  t.teardown(() => p.close());
  const waiting = [0, 1, 2].map(() => net.connect({ port: p.port, host: '127.0.0.1' }).on('error', () => {}));
  await until(() => p.pool.service('svc')!.pending === 3, 2000, 'three pending');
  const t0 = Date.now();
  const r = await exchange(p.port, 'x');
  t.equal(r.data.length, 0);
  t.ok(Date.now() - t0 < 300, 'the fourth is turned away at once');
  t.equal(obs.counts['noEndpoint'], 1);
  for (const w of waiting) w.destroy();
  await until(() => p.pool.service('svc')!.pending === 0, 2000, 'pending count back to 0 when the clients leave');
});
