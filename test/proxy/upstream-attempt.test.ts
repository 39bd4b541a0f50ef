// One upstream attempt for every mode: the same checks of admission (maxPending),
// the wait queue, source-hash, backoff rounds and the injected connect, run against
// a tcp listener, an http listener and an Upgrade through an http listener. Time
// (queue timeouts, backoff rounds, connect timeouts) runs on a ManualClock.
import net from 'node:net';
import t from 'tap';
import { seededRandom } from '../../src/core/random.js';
import type { BalanceAlgorithm } from '../../src/core/types.js';
import { Pool, type ServiceSettings } from '../../src/pool/pool.js';
import { tcpConnect, type ConnectFn } from '../../src/proxy/connect.js';
import { HttpListener } from '../../src/proxy/http/listener.js';
import { UpstreamAttempt } from '../../src/proxy/upstream-attempt.js';
import { TcpListener } from '../../src/proxy/tcp/listener.js';
import { ManualClock } from '../helpers/clock.js';
import { httpSettings } from '../helpers/http.js';
import { tcpServer, until } from '../helpers/net.js';
import { endpoint, silent } from '../helpers/proxy.js';

type Mode = 'tcp' | 'http' | 'upgrade';
const MODES: Mode[] = ['tcp', 'http', 'upgrade'];

/**
 * An endpoint that answers every mode with its name: a tcp client's bytes, an
 * http request (200) or an Upgrade (101, then the name in the tunnel). While
 * `hold` is set it answers nothing until `release()`.
 */
async function namedEndpoint(name: string) {
  const held: (() => void)[] = [];
  const state = { hold: false, connections: 0 };
  const server = await tcpServer((s) => {
    state.connections++;
    s.on('error', () => {});
    let buf = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      const answer = () => {
        if (/^GET [^\r]*\r\n/.test(buf)) {
          if (!buf.includes('\r\n\r\n')) return;
          if (/\r\nupgrade: /i.test(buf)) s.end(`HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: test\r\n\r\n${name}`);
          else s.end(`HTTP/1.1 200 OK\r\ncontent-length: ${name.length}\r\nconnection: close\r\n\r\n${name}`);
        } else {
          s.end(name);
        }
      };
      if (state.hold) held.push(answer);
      else answer();
    });
  });
  return {
    name,
    port: server.port,
    state,
    release: () => {
      state.hold = false;
      for (const a of held.splice(0)) a();
    },
    close: () => server.close(),
  };
}

/** Sends one client exchange in `mode`; resolves with the endpoint's name, or 'refused' (reset, closed, 502, 503). */
function send(mode: Mode, port: number, localAddress = '127.0.0.1'): { done: Promise<string>; socket: net.Socket } {
  const socket = net.connect({ port, host: '127.0.0.1', localAddress });
  let out = '';
  socket.setEncoding('latin1');
  socket.on('data', (d: string) => (out += d));
  const done = new Promise<string>((resolve) => {
    socket.on('error', () => {});
    socket.on('close', () => {
      if (mode === 'tcp') return resolve(out === '' ? 'refused' : out);
      const m = /^HTTP\/1\.1 (\d{3})[^\r]*\r\n[\s\S]*?\r\n\r\n([\s\S]*)$/.exec(out);
      if (m === null) return resolve('refused');
      const status = Number(m[1]);
      resolve((mode === 'upgrade' ? status === 101 : status === 200) ? m[2]! : 'refused');
    });
  });
  if (mode === 'tcp') socket.end('hi');
  else if (mode === 'http') socket.write('GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n');
  else socket.write('GET / HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: test\r\n\r\n');
  return { done, socket };
}

interface Rig {
  pool: Pool;
  clock: ManualClock;
  port: number;
  connects: { port: number }[];
  close: () => void;
}

/** A pool on a ManualClock, one service "svc", and a listener of `mode` whose connects go through `connect`. */
async function rig(mode: Mode, ports: number[], service: Partial<ServiceSettings> & { balance?: BalanceAlgorithm }, opts: { connect?: ConnectFn; retries?: number; retryBackoff?: number } = {}): Promise<Rig> {
  const clock = new ManualClock();
  const pool = new Pool({ random: seededRandom(7), clock });
  pool.configureService('svc', { balance: 'round-robin', ...service });
  pool.applySnapshot({ provider: 'static', services: new Map([['svc', ports.map((p) => endpoint(p))]]) });
  const connects: { port: number }[] = [];
  const inner = opts.connect ?? tcpConnect;
  const connect: ConnectFn = (host, port, tls) => {
    connects.push({ port });
    return inner(host, port, tls);
  };
  const retries = opts.retries ?? 2;
  const retryBackoff = opts.retryBackoff ?? 0;
  const l =
    mode === 'tcp'
      ? new TcpListener({ name: 't', bind: { host: '127.0.0.1', port: 0 }, service: 'svc', timeouts: { connect: 5000, idle: 60_000 }, retries, retryBackoff }, { pool, log: silent, connect })
      : new HttpListener(httpSettings({ retries, retryBackoff, http: { maxHeaderSize: 16_384, trustedProxies: [], accessLog: false, upstreamKeepAlive: 4000, retryBudget: { ratio: 0.2, minPerSecond: 10 } } }), { pool, log: silent, connect });
  const addr = await l.listen();
  return {
    pool,
    clock,
    port: addr.port,
    connects,
    close: () => {
      l.stopAccepting();
      l.destroyAll();
    },
  };
}

/** A connect that never completes (a black-holed endpoint): the client stays pending. */
const hang: ConnectFn = () => new net.Socket();

/** A connect refused at once while `down()` says so. */
function refusing(down: () => boolean): ConnectFn {
  return (host, port, tls) => {
    if (!down()) return tcpConnect(host, port, tls);
    const s = new net.Socket();
    process.nextTick(() => s.destroy(Object.assign(new Error(`connect ECONNREFUSED ${host}:${port}`), { code: 'ECONNREFUSED' })));
    return s;
  };
}

for (const mode of MODES) {
  t.test(`${mode}: every connect goes through the injected connect; a refused one is tried on the next endpoint`, async (t) => {
    // Round robin goes in endpoint id order: `a` is whichever sorts first.
    const [a, b] = (await Promise.all([namedEndpoint('x'), namedEndpoint('y')])).sort((p, q) => (`127.0.0.1:${p.port}` < `127.0.0.1:${q.port}` ? -1 : 1)) as [Awaited<ReturnType<typeof namedEndpoint>>, Awaited<ReturnType<typeof namedEndpoint>>];
    let refuseA = true;
    const r = await rig(mode, [a.port, b.port], {}, { connect: (host, port, tls) => (refuseA && port === a.port ? refusing(() => true)(host, port, tls) : tcpConnect(host, port, tls)) });
    t.teardown(() => {
      r.close();
      a.close();
      b.close();
    });
    t.equal(await send(mode, r.port).done, b.name, 'answered by the second endpoint after the first refused');
    t.same(
      r.connects.map((c) => c.port),
      [a.port, b.port],
      'the first (round robin), then the second: both through the injected connect',
    );
    t.equal(a.state.connections, 0, 'nothing reached the refusing one');
    refuseA = false;
    const next = new Set<string>();
    for (let i = 0; i < 4; i++) next.add(await send(mode, r.port).done);
    t.same([...next].sort(), [a.name, b.name].sort(), 'once it accepts, the first is in turn again');
  });

  t.test(`${mode}: source-hash keeps a client address on one endpoint`, async (t) => {
    const eps = await Promise.all(['a', 'b', 'c'].map((n) => namedEndpoint(n)));
    const r = await rig(mode, eps.map((e) => e.port), { balance: 'source-hash' });
    t.teardown(() => {
      r.close();
      for (const e of eps) e.close();
    });
    const seen = new Map<string, string>();
    for (let host = 1; host <= 8; host++) {
      const addr = `127.0.0.${host}`;
      const answers = new Set<string>();
      for (let i = 0; i < 3; i++) answers.add(await send(mode, r.port, addr).done);
      t.equal(answers.size, 1, `${addr}: always the same endpoint (${[...answers].join(', ')})`);
      seen.set(addr, [...answers][0]!);
    }
    t.ok(new Set(seen.values()).size > 1, `the addresses spread over more than one endpoint: ${[...seen.values()].join(' ')}`);
    t.notOk([...seen.values()].includes('refused'));
  });

  t.test(`${mode}: maxPending turns a client away while others wait for an endpoint`, async (t) => {
    const a = await namedEndpoint('a');
    const r = await rig(mode, [a.port], { maxPending: 1 }, { connect: hang });
    t.teardown(() => {
      r.close();
      a.close();
    });
    const first = send(mode, r.port);
    await until(() => r.pool.service('svc')!.pending === 1, 5000, 'the first client is pending');
    t.equal(await send(mode, r.port).done, 'refused', 'the second is turned away at once');
    t.equal(r.connects.length, 1, 'and never connected anywhere');
    // A client waiting for a connect: berth hears of its reset only once the connect
    // times out (it reads nothing from a tcp client until an endpoint is connected).
    first.socket.resetAndDestroy();
    r.clock.advance(5000);
    await first.done;
    await until(() => r.pool.service('svc')!.pending === 0, 5000, 'the pending count is back to 0 when the client leaves');
  });

  t.test(`${mode}: at every endpoint's cap a client waits in the queue, bounded in length and time (clock)`, async (t) => {
    const a = await namedEndpoint('a');
    a.state.hold = true;
    const r = await rig(mode, [a.port], { maxConnectionsPerEndpoint: 1, queue: { size: 1, timeout: 1000 } });
    t.teardown(() => {
      r.close();
      a.close();
    });
    const svc = () => r.pool.service('svc')!;
    const first = send(mode, r.port);
    await until(() => svc().endpoints.get(`127.0.0.1:${a.port}`)!.active === 1 && a.state.connections === 1, 5000, 'the first client holds the only slot');
    const second = send(mode, r.port);
    await until(() => svc().queued === 1, 5000, 'the second is queued');
    t.equal(await send(mode, r.port).done, 'refused', 'a third finds the queue full');
    a.release();
    t.equal(await first.done, 'a');
    t.equal(await second.done, 'a', 'the queued client is served when the slot frees');
    // The queue's timeout runs on the pool's clock.
    a.state.hold = true;
    const before = a.state.connections;
    const holder = send(mode, r.port);
    await until(() => a.state.connections === before + 1 && svc().endpoints.get(`127.0.0.1:${a.port}`)!.active === 1, 5000, 'the slot is held again');
    const waiting = send(mode, r.port);
    await until(() => svc().queued === 1, 5000, 'queued again');
    r.clock.advance(999);
    t.equal(svc().queued, 1, 'still queued at 999 ms');
    r.clock.advance(1);
    t.equal(await waiting.done, 'refused', 'turned away when the queue timeout is over');
    t.equal(svc().queued, 0);
    a.release();
    t.equal(await holder.done, 'a');
  });

  t.test(`${mode}: every endpoint failed: a backoff round on the clock, then served`, async (t) => {
    const a = await namedEndpoint('a');
    let down = true;
    const r = await rig(mode, [a.port], {}, { connect: refusing(() => down), retries: 2, retryBackoff: 100 });
    t.teardown(() => {
      r.close();
      a.close();
    });
    const c = send(mode, r.port);
    await until(() => r.connects.length === 1 && r.clock.dueIn().includes(100), 5000, 'refused once, a round is scheduled');
    down = false;
    r.clock.advance(99);
    t.equal(r.connects.length, 1, 'nothing before the backoff is over');
    r.clock.advance(1);
    t.equal(await c.done, 'a', 'served after the round');
    t.equal(r.connects.length, 2);
    // With every round spent, the client is told.
    down = true;
    const d = send(mode, r.port);
    await until(() => r.connects.length === 3 && r.clock.dueIn().includes(100), 5000, 'first round scheduled');
    r.clock.advance(100);
    await until(() => r.connects.length === 4 && r.clock.dueIn().includes(200), 5000, 'second round scheduled (doubled)');
    r.clock.advance(199);
    t.equal(r.connects.length, 4, 'the second backoff is 200 ms');
    r.clock.advance(1);
    t.equal(await d.done, 'refused', 'refused once the rounds are spent');
    t.equal(r.connects.length, 5);
  });
}

t.test('once the client has ended its side, no failure reaches the pool and no other endpoint is tried', async (t) => {
  const pool = new Pool({ random: seededRandom(1), clock: new ManualClock() });
  pool.configureService('svc', { balance: 'round-robin', outlier: { consecutiveFailures: 1, ejectFor: 1000, maxEjectFor: 1000, maxEjectedPercent: 100 } });
  pool.applySnapshot({ provider: 'static', services: new Map([['svc', [endpoint(1), endpoint(2)]]]) });
  const picked: string[] = [];
  const user = { connectTo: (ep: { id: string }) => picked.push(ep.id), giveUp: () => picked.push('gave up') };
  const a = new UpstreamAttempt(pool, 'svc', { retries: 2, retryBackoff: 0 }, undefined, user);
  a.start();
  t.equal(a.endedBy, null);
  a.clientEnded();
  t.equal(a.endedBy, 'client');
  a.report('failed');
  a.report('broken');
  t.same([...pool.service('svc')!.endpoints.values()].map((e) => e.failures), [0, 0], 'nothing counted against the endpoint berth cut short');
  t.notOk(a.mayRetry('next'), 'not even a connect that never completed is tried elsewhere');
  t.notOk(a.retry('next'));
  t.same(picked, ['127.0.0.1:1'], 'one endpoint picked, no other');
  a.end();
  // The same failure while the client is still there counts.
  const b = new UpstreamAttempt(pool, 'svc', { retries: 2, retryBackoff: 0 }, undefined, user);
  b.start();
  b.report('failed');
  t.equal(b.endedBy, 'endpoint');
  t.equal([...pool.service('svc')!.endpoints.values()].reduce((n, e) => n + e.failures, 0), 1, "the endpoint's own failure is counted");
  b.end();
});
