/**
 * UDP through the built binary: --mode udp from flags, and --workers 2 where one
 * client's datagrams must never be split across workers (a socket per worker with
 * SO_REUSEPORT: the kernel hashes each client to one of them). On a node without
 * dgram reusePort berth refuses that configuration at start, naming what it needs.
 */
import dgram from 'node:dgram';
import { once } from 'node:events';
import t from 'tap';
import { startBerth, until } from '../helpers/net.js';

/** An endpoint that answers each datagram with the source port it came from (one per berth session). */
async function portEcho() {
  const s = dgram.createSocket('udp4');
  s.on('message', (_m, r) => s.send(String(r.port), r.port, r.address));
  s.bind(0, '127.0.0.1');
  await once(s, 'listening');
  return { port: s.address().port, close: () => s.close() };
}

const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
const reusePort = major >= 24 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12);

t.test('--mode udp: a session per client, its datagrams to one upstream socket', async (t) => {
  const e = await portEcho();
  const berth = await startBerth(['--listen', '127.0.0.1:0', '--backend', `127.0.0.1:${e.port}`, '--mode', 'udp']);
  t.teardown(() => {
    berth.kill('SIGKILL');
    e.close();
  });
  const c = dgram.createSocket('udp4');
  const got: string[] = [];
  c.on('message', (m) => got.push(m.toString()));
  t.teardown(() => c.close());
  for (let i = 0; i < 5; i++) c.send('x', berth.port, '127.0.0.1');
  await until(() => got.length === 5);
  t.equal(new Set(got).size, 1, 'one session, one upstream socket');
});

t.test('--workers 2: no client is split across workers', async (t) => {
  const e = await portEcho();
  const args = ['--listen', '127.0.0.1:0', '--backend', `127.0.0.1:${e.port}`, '--mode', 'udp', '--workers', '2'];
  if (!reusePort) {
    const berth = await startBerth(args, { waitStarted: false });
    t.teardown(() => e.close());
    const line = await berth.waitLog((l) => l.level >= 50 || /SO_REUSEPORT/.test(l.msg), 10_000).catch(() => null);
    t.match(JSON.stringify(line) + berth.stderr, /needs node 22\.12 or later/, `node ${process.versions.node}: refused, naming what it needs`);
    berth.kill('SIGKILL');
    return;
  }
  // Port 0 would give each worker's socket a port of its own: a fixed free one.
  const probe = dgram.createSocket('udp4');
  probe.bind(0, '127.0.0.1');
  await once(probe, 'listening');
  const port = probe.address().port;
  probe.close();
  const berth = await startBerth(['--listen', `127.0.0.1:${port}`, ...args.slice(2)]);
  t.teardown(() => {
    berth.kill('SIGKILL');
    e.close();
  });
  await until(() => berth.logs.filter((l) => l.msg === 'listening').length >= 2, 10_000, 'both workers listening');
  const clients = await Promise.all(
    Array.from({ length: 16 }, async () => {
      const c = dgram.createSocket('udp4');
      const got: string[] = [];
      c.on('message', (m) => got.push(m.toString()));
      c.bind(0, '127.0.0.1');
      await once(c, 'listening');
      return { c, got };
    }),
  );
  t.teardown(() => {
    for (const x of clients) x.c.close();
  });
  for (let i = 0; i < 6; i++) for (const x of clients) x.c.send(`d${i}`, port, '127.0.0.1');
  await until(() => clients.every((x) => x.got.length === 6), 10_000, 'every datagram answered');
  t.ok(clients.every((x) => new Set(x.got).size === 1), "each client's datagrams all went through one session (one worker)");
  const pids = new Set(berth.logs.filter((l) => l.msg === 'listening').map((l) => l.pid));
  t.equal(pids.size, 2, 'two workers, each with a socket of its own');
});
