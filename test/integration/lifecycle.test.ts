import { once } from 'node:events';
import { writeFile, mkdtemp } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { exchange, freePort, startBerth, tcpServer } from '../helpers/net.js';

/** An endpoint that greets with its name, then echoes. */
function greeter(name: string) {
  return tcpServer((s) => {
    s.write(`${name}:`);
    s.pipe(s);
  });
}

/** An open client connection through berth, for checking that it survives. */
async function openClient(port: number): Promise<{ sock: net.Socket; greeting: string; roundTrip(text: string): Promise<string> }> {
  const sock = net.connect({ port, host: '127.0.0.1' });
  sock.setEncoding('utf8');
  const [greeting] = (await once(sock, 'data')) as [string];
  return {
    sock,
    greeting,
    async roundTrip(text: string) {
      sock.write(text);
      const [d] = (await once(sock, 'data')) as [string];
      return d;
    },
  };
}

t.test('SIGTERM: stops accepting, lets open connections finish, exits 0', async (t) => {
  const a = await greeter('A');
  t.teardown(() => a.close());
  const berth = await startBerth(['--listen', '127.0.0.1:0', '--backend', `127.0.0.1:${a.port}`, '--admin', 'off', '--drain-timeout', '10s']);
  t.teardown(() => berth.kill('SIGKILL'));
  const c = await openClient(berth.port);
  t.equal(c.greeting, 'A:');
  berth.kill('SIGTERM');
  await berth.waitLog((l) => l.msg.startsWith('stopping'));
  const refused = await exchange(berth.port, 'x');
  t.equal(refused.error?.code, 'ECONNREFUSED', 'no new connections');
  t.equal(await c.roundTrip('still-here'), 'still-here', 'open connection still served while draining');
  let exitedEarly = false;
  void berth.exited.then(() => (exitedEarly = true));
  await new Promise((r) => setTimeout(r, 200));
  t.notOk(exitedEarly, 'waits for the open connection');
  c.sock.end();
  t.equal(await berth.exited, 0);
  t.ok(berth.logs.some((l) => l.msg === 'drained; bye'));
});

t.test('SIGTERM: the drain timeout bounds the wait, then exits 0', async (t) => {
  const a = await greeter('A');
  t.teardown(() => a.close());
  const berth = await startBerth(['--listen', '127.0.0.1:0', '--backend', `127.0.0.1:${a.port}`, '--admin', 'off', '--drain-timeout', '300ms']);
  t.teardown(() => berth.kill('SIGKILL'));
  const c = await openClient(berth.port);
  c.sock.on('error', () => {});
  const t0 = Date.now();
  berth.kill('SIGTERM');
  t.equal(await berth.exited, 0);
  const took = Date.now() - t0;
  t.ok(took >= 250 && took < 3000, `exited after ${took}ms`);
  const cut = berth.logs.find((l) => l.msg.startsWith('drain timeout reached'));
  t.equal(cut?.['cut'], 1);
});

t.test('SIGHUP: a good reload changes endpoints, keeps the socket and open connections', async (t) => {
  const a = await greeter('A');
  const b = await greeter('B');
  t.teardown(() => {
    a.close();
    b.close();
  });
  const dir = await mkdtemp(join(tmpdir(), 'berth-reload-'));
  const file = join(dir, 'berth.yaml');
  const port = await freePort();
  const port2 = await freePort();
  const config = (endpoint: number, extra = '') =>
    `listeners:\n  - name: main\n    bind: 127.0.0.1:${port}\n    service: web\n${extra}services:\n  web:\n    endpoints: ["127.0.0.1:${endpoint}"]\nadmin: { bind: "off" }\n`;
  await writeFile(file, config(a.port));
  const berth = await startBerth(['-c', file]);
  t.teardown(() => berth.kill('SIGKILL'));
  const held = await openClient(port);
  t.equal(held.greeting, 'A:');

  // Connections keep flowing during the reload: none may be refused or cut.
  let stop = false;
  const failures: string[] = [];
  let served = 0;
  const loop = (async () => {
    while (!stop && served < 20_000) {
      const r = await exchange(port, '', { timeoutMs: 2000 });
      if (r.error || !/^[AB]:$/.test(r.data.toString())) failures.push(r.error?.code ?? `bad answer "${r.data.toString()}"`);
      else served++;
    }
  })();
  await new Promise((r) => setTimeout(r, 100));
  await writeFile(file, config(b.port, `  - name: second\n    bind: 127.0.0.1:${port2}\n    service: web\n`));
  berth.kill('SIGHUP');
  const reloaded = await berth.waitLog((l) => l.msg === 'config reloaded');
  t.same({ added: reloaded['added'], removed: reloaded['removed'], kept: reloaded['kept'] }, { added: 1, removed: 0, kept: 1 });
  await new Promise((r) => setTimeout(r, 100));
  stop = true;
  await loop;
  t.ok(served > 20, `${served} connections served around the reload`);
  const after = await openClient(port);
  t.equal(after.greeting, 'B:', 'new connections go to the new endpoint');
  const second = await openClient(port2);
  t.equal(second.greeting, 'B:', 'the added listener serves');
  t.equal(await held.roundTrip('ping'), 'ping', 'connection opened before the reload still works');
  t.same(failures, [], 'no connection refused or reset during the reload');
  after.sock.destroy();
  second.sock.destroy();

  // A bad config keeps the old one running.
  await writeFile(file, 'listeners:\n  - bind: 127.0.0.1:1\n    service: nowhere\n    color: blue\n');
  berth.kill('SIGHUP');
  const failed = await berth.waitLog((l) => l.msg.startsWith('config reload failed'));
  const errors = failed['errors'] as string[];
  t.ok(errors.some((e) => e.startsWith('listeners[0].color: unknown key')), JSON.stringify(errors));
  const still = await openClient(port);
  t.equal(still.greeting, 'B:', 'old config still serving');
  t.equal(await held.roundTrip('pong'), 'pong');
  still.sock.destroy();
  held.sock.destroy();
  berth.kill('SIGTERM');
  t.equal(await berth.exited, 0);
});

t.test('SIGHUP: a reload whose new listener cannot bind keeps the old config', async (t) => {
  const a = await greeter('A');
  const b = await greeter('B');
  const blocker = net.createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    a.close();
    b.close();
    blocker.close();
  });
  const taken = (blocker.address() as net.AddressInfo).port;
  const dir = await mkdtemp(join(tmpdir(), 'berth-reload-'));
  const file = join(dir, 'berth.yaml');
  const port = await freePort();
  await writeFile(file, `listeners:\n  - bind: 127.0.0.1:${port}\n    service: web\nservices:\n  web:\n    endpoints: ["127.0.0.1:${a.port}"]\nadmin: { bind: "off" }\n`);
  const berth = await startBerth(['-c', file]);
  t.teardown(() => berth.kill('SIGKILL'));
  await writeFile(
    file,
    `listeners:\n  - bind: 127.0.0.1:${port}\n    service: web\n  - bind: 127.0.0.1:${taken}\n    service: web\nservices:\n  web:\n    endpoints: ["127.0.0.1:${b.port}"]\nadmin: { bind: "off" }\n`,
  );
  berth.kill('SIGHUP');
  const failed = await berth.waitLog((l) => l.msg.startsWith('config reload failed'));
  t.match(JSON.stringify(failed['errors']), /EADDRINUSE/);
  const c = await openClient(port);
  t.equal(c.greeting, 'A:', 'endpoints unchanged: the whole reload was refused');
  c.sock.destroy();
});
