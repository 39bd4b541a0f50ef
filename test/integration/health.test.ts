import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { writeFile, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import t, { type Test } from 'tap';
import { Berth } from '../../src/runtime/runtime.js';
import { validateConfig } from '../../src/config/validate.js';
import { Flag } from '../../src/core/types.js';
import type { PoolEvent } from '../../src/pool/pool.js';
import { exchange, freePort, startBerth, until } from '../helpers/net.js';
import { silent } from '../helpers/proxy.js';

/** An HTTP endpoint whose health answer the test controls: 'ok' | 'fail' (500) | 'hang'. */
async function controllable(name: string) {
  const state = { mode: 'ok' as 'ok' | 'fail' | 'hang', hits: 0 };
  const server = http.createServer((req, res) => {
    if (req.url === '/healthz') {
      if (state.mode === 'hang') return; // accepts, never answers
      res.writeHead(state.mode === 'ok' ? 200 : 500).end();
      return;
    }
    state.hits++;
    res.writeHead(200, { connection: 'close', 'content-length': Buffer.byteLength(name) }).end(name);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, state, port: (server.address() as net.AddressInfo).port, close: () => server.closeAllConnections() };
}

async function berthWith(t: Test, services: Record<string, unknown>) {
  const config = validateConfig({ listeners: [{ name: 'l', bind: '127.0.0.1:0', service: 'web' }], services, admin: { bind: 'off' } });
  const berth = new Berth(config, { log: silent });
  const events: { at: number; e: PoolEvent }[] = [];
  berth.pool.on((e) => events.push({ at: performance.now(), e }));
  await berth.start();
  t.teardown(() => berth.shutdown(0));
  return { berth, events, port: [...berth.listeners.values()][0]!.address.port };
}

const flagsOf = (berth: Berth, id: string) => berth.pool.service('web')!.endpoints.get(id)!.flags;

t.test('http checks: 500 takes an endpoint out within the detection window, recovery brings it back', async (t) => {
  const a = await controllable('A');
  const b = await controllable('B');
  t.teardown(() => {
    a.close();
    b.close();
    a.server.close();
    b.server.close();
  });
  const interval = 50;
  const { berth, events, port } = await berthWith(t, {
    web: { balance: 'round-robin', endpoints: [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`], health: { type: 'http', path: '/healthz', interval: `${interval}ms`, timeout: '200ms', rise: 2, fall: 2, jitter: 0 } },
  });
  const A = `127.0.0.1:${a.port}`;
  await until(() => berth.pool.service('web')!.eligibleCount === 2, 3000, 'both pass their first check');
  a.state.mode = 'fail';
  const failedAt = performance.now();
  await until(() => (flagsOf(berth, A) & Flag.ActiveUnhealthy) !== 0, 3000, 'A out');
  const detected = events.find((x) => x.at > failedAt && x.e.type === 'endpoint-updated' && x.e.endpoint.id === A && /failed \(status 500\)/.test(x.e.what))!;
  const window = detected.at - failedAt;
  // fall=2 failures, at most one interval to the next probe plus one more interval: <= ~2 intervals (+ slack).
  // Reported, not asserted: a wall-clock bound would fail on a loaded machine (the checker's timing is unit-tested on a manual clock).
  t.comment(`detected in ${window.toFixed(0)} ms (interval ${interval} ms, fall 2)`);
  const before = b.state.hits;
  for (let i = 0; i < 10; i++) t.equal((await exchange(port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n')).data.toString().endsWith('B'), true);
  t.equal(b.state.hits - before, 10, 'all traffic on B while A is out');
  a.state.mode = 'ok';
  await until(() => flagsOf(berth, A) === 0, 3000, 'A back after rise passes');
  t.match(berth.pool.service('web')!.endpoints.get(A)!.history.map((h) => h.what).join('\n'), /active http check: passed \(status 200\)/);
});

t.test('hang → timeout counts as a failure; refused too (tcp checks)', async (t) => {
  const a = await controllable('A');
  t.teardown(() => {
    a.close();
    a.server.close();
  });
  const dead = await freePort();
  const { berth } = await berthWith(t, {
    web: { endpoints: [`127.0.0.1:${a.port}`], health: { type: 'http', path: '/healthz', interval: '50ms', timeout: '100ms', rise: 1, fall: 1 } },
  });
  const A = `127.0.0.1:${a.port}`;
  await until(() => flagsOf(berth, A) === 0, 3000, 'A healthy');
  a.state.mode = 'hang';
  await until(() => (flagsOf(berth, A) & Flag.ActiveUnhealthy) !== 0, 3000, 'A out on timeout');
  t.match(berth.pool.service('web')!.endpoints.get(A)!.history.at(-1)!.what, /timeout after 100ms/);

  const tcp = await berthWith(t, { web: { endpoints: [`127.0.0.1:${dead}`], health: { type: 'tcp', interval: '50ms', timeout: '100ms', fall: 1 } } });
  await until(() => (flagsOf(tcp.berth, `127.0.0.1:${dead}`) & Flag.ActiveUnhealthy) !== 0, 3000, 'refused endpoint out');
  t.match(tcp.berth.pool.service('web')!.endpoints.get(`127.0.0.1:${dead}`)!.history.at(-1)!.what, /ECONNREFUSED/);
});

t.test('a new endpoint gets no traffic until its first check passes; flapping follows rise/fall', async (t) => {
  const a = await controllable('A');
  a.state.mode = 'fail';
  t.teardown(() => {
    a.close();
    a.server.close();
  });
  const { berth, port } = await berthWith(t, {
    web: { endpoints: [`127.0.0.1:${a.port}`], health: { type: 'http', path: '/healthz', interval: '40ms', timeout: '200ms', rise: 3, fall: 3, jitter: 0 } },
  });
  const A = `127.0.0.1:${a.port}`;
  t.ok(flagsOf(berth, A) & Flag.ActivePending, 'pending at start');
  const r = await exchange(port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  t.equal(r.data.length, 0, 'no traffic while pending');
  t.equal(a.state.hits, 0);
  // Flap: fail, ok, fail, ok ... never three in a row of either: stays where it is.
  await until(() => (flagsOf(berth, A) & Flag.ActiveUnhealthy) !== 0, 3000, 'out after 3 failures');
  let flips = 0;
  const stop = setInterval(() => {
    a.state.mode = a.state.mode === 'ok' ? 'fail' : 'ok';
    flips++;
  }, 45);
  await until(() => flips >= 12, 3000, 'flapping for a while');
  clearInterval(stop);
  t.ok(flagsOf(berth, A) & Flag.ActiveUnhealthy, 'a flapping endpoint is not let back in (rise 3)');
  a.state.mode = 'ok';
  await until(() => flagsOf(berth, A) === 0, 3000, 'steady passes bring it back');
  t.equal((await exchange(port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n')).data.toString().endsWith('A'), true);
});

t.test('--workers 2: checks run once, in the primary, and every worker follows the verdict', async (t) => {
  const good = await controllable('GOOD');
  const bad = await controllable('BAD');
  bad.state.mode = 'fail';
  t.teardown(() => {
    good.close();
    bad.close();
    good.server.close();
    bad.server.close();
  });
  const dir = await mkdtemp(join(tmpdir(), 'berth-health-'));
  const file = join(dir, 'berth.yaml');
  await writeFile(
    file,
    // An hour between checks: the first probe runs at once, the next not within this
    // test, so the number of probes says how many processes run checks.
    `listeners:\n  - bind: 127.0.0.1:0\n    service: web\nservices:\n  web:\n    balance: round-robin\n    endpoints: ["127.0.0.1:${good.port}", "127.0.0.1:${bad.port}"]\n    health: { type: http, path: /healthz, interval: 1h, timeout: 2s, fall: 1, rise: 1 }\nadmin: { bind: "off" }\n`,
  );
  let checks = 0;
  const counting = bad.server.listeners('request')[0] as (req: http.IncomingMessage, res: http.ServerResponse) => void;
  bad.server.removeAllListeners('request');
  bad.server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (req.url === '/healthz') checks++;
    counting(req, res);
  });
  const berth = await startBerth(['-c', file, '--workers', '2']);
  t.teardown(() => berth.kill('SIGKILL'));
  await until(() => berth.logs.filter((l) => l.msg === 'listening').length === 2, 10_000, 'both workers listening');
  // Traffic flows once GOOD's first check has passed and its verdict reached the workers.
  await until(async () => (await exchange(berth.port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n')).data.toString().endsWith('GOOD'), 10_000, 'GOOD served');
  const answers = new Set<string>();
  for (let i = 0; i < 40; i++) answers.add((await exchange(berth.port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n')).data.toString().split('\r\n').at(-1)!);
  t.same([...answers], ['GOOD'], 'no worker sends traffic to the failing endpoint');
  t.equal(checks, 1, 'one check loop (the primary\'s), not one per process: BAD was probed once');
  berth.kill('SIGTERM');
  t.equal(await berth.exited, 0);
});

t.test('outlier detection with a real refusing endpoint: ejected, clients see no error, attempts on it stop', async (t) => {
  const good = await controllable('GOOD');
  t.teardown(() => {
    good.close();
    good.server.close();
  });
  const dead = await freePort();
  const { berth, port } = await berthWith(t, {
    web: { balance: 'round-robin', endpoints: [`127.0.0.1:${good.port}`, `127.0.0.1:${dead}`], outlier: { consecutiveFailures: 3, ejectFor: '10s' } },
  });
  const D = `127.0.0.1:${dead}`;
  for (let i = 0; i < 20; i++) {
    const r = await exchange(port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    t.equal(r.data.toString().endsWith('GOOD'), true, 'answered (refusals retried on the good endpoint)');
  }
  const e = berth.pool.service('web')!.endpoints.get(D)!;
  t.ok(e.flags & Flag.Outlier, 'ejected');
  t.equal(e.failures, 3, 'no more connect attempts once ejected');
});

t.test('panic spread over real endpoints whose checks all fail', async (t) => {
  const a = await controllable('A');
  a.state.mode = 'fail';
  t.teardown(() => {
    a.close();
    a.server.close();
  });
  const { berth, port } = await berthWith(t, {
    web: { endpoints: [`127.0.0.1:${a.port}`], panic: 'spread', health: { type: 'http', path: '/healthz', interval: '50ms', fall: 1 } },
  });
  await until(() => (flagsOf(berth, `127.0.0.1:${a.port}`) & Flag.ActiveUnhealthy) !== 0, 3000, 'A unhealthy');
  t.equal(berth.pool.service('web')!.inPanic, true);
  t.equal((await exchange(port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n')).data.toString().endsWith('A'), true, 'still served in panic');
  t.match(berth.readiness().reasons.join(), /in panic/);
});

/** A real gRPC server with the standard health service, the whole server's status set by the test. */
async function grpcEndpoint(t: Test) {
  const server = new grpc.Server();
  const health = new HealthImplementation({ '': 'SERVING', 'api.v1.Users': 'SERVING' });
  health.addToServer(server);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  t.teardown(() => server.forceShutdown());
  return { port, health };
}

t.test('grpc checks: NOT_SERVING takes an endpoint out, SERVING brings it back; a container\'s berth.health.type=grpc overrides the service\'s http check', async (t) => {
  const a = await grpcEndpoint(t);
  const b = await grpcEndpoint(t);
  const { berth } = await berthWith(t, {
    web: { endpoints: [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`], health: { type: 'grpc', service: 'api.v1.Users', interval: '50ms', timeout: '1s', rise: 1, fall: 1, jitter: 0 } },
  });
  const A = `127.0.0.1:${a.port}`;
  await until(() => berth.pool.service('web')!.eligibleCount === 2, 5000, 'both SERVING');
  a.health.setStatus('api.v1.Users', 'NOT_SERVING');
  await until(() => (flagsOf(berth, A) & Flag.ActiveUnhealthy) !== 0, 5000, 'A out');
  t.match(berth.pool.service('web')!.endpoints.get(A)!.history.map((h) => h.what).join('\n'), /active grpc check: failed \(NOT_SERVING\)/);
  t.equal(berth.pool.service('web')!.eligibleCount, 1);
  a.health.setStatus('api.v1.Users', 'SERVING');
  await until(() => flagsOf(berth, A) === 0, 5000, 'A back');

  // A service checked over http; one container says its checks are grpc.
  const http1 = await controllable('H');
  t.teardown(() => {
    http1.close();
    http1.server.close();
  });
  const c = await grpcEndpoint(t);
  const { berth: b2 } = await berthWith(t, {
    web: { endpoints: [`127.0.0.1:${http1.port}`], health: { type: 'http', path: '/healthz', interval: '50ms', timeout: '1s', rise: 1, fall: 1, jitter: 0 } },
  });
  b2.pool.applySnapshot({ provider: 'docker', services: new Map([['web', [{ id: 'grpc-1', host: '127.0.0.1', port: c.port, weight: 1, source: 'docker', healthType: 'grpc' }]]]) });
  await until(() => b2.pool.service('web')!.eligibleCount === 2, 5000, 'the http endpoint and the grpc one both pass');
  t.match(b2.pool.service('web')!.endpoints.get('grpc-1')!.history.map((h) => h.what).join('\n'), /active grpc check: passed \(SERVING\)/, 'checked with grpc (the service\'s settings, its own type)');
  c.health.setStatus('', 'NOT_SERVING');
  await until(() => (b2.pool.service('web')!.endpoints.get('grpc-1')!.flags & Flag.ActiveUnhealthy) !== 0, 5000, 'grpc-1 out on NOT_SERVING');
  t.equal(flagsOf(b2, `127.0.0.1:${http1.port}`), 0, 'the http one stays');
});
