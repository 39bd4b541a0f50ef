/**
 * With --workers, a client that resets while berth refuses its CONNECT or Upgrade
 * must end only its own connection: no worker dies, and connections on another
 * listener carry on (before, every worker died and took those with it).
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { echoServer, listenerPort, nameServer, startBerth, until } from '../helpers/net.js';

t.test('--workers 2: resetting clients on refused CONNECT/Upgrade kill no worker; other listeners carry on', async (t) => {
  const echo = await echoServer();
  const named = await nameServer('A');
  t.teardown(() => {
    echo.close();
    named.close();
  });
  const dir = mkdtempSync(join(tmpdir(), 'berth-workers-'));
  const file = join(dir, 'berth.json');
  writeFileSync(
    file,
    JSON.stringify({
      listeners: [
        { name: 'web', bind: '127.0.0.1:0', mode: 'http', routes: [{ host: 'known.example', service: 'named' }] },
        { name: 'other', bind: '127.0.0.1:0', mode: 'tcp', service: 'echo' },
      ],
      services: { echo: { endpoints: [`127.0.0.1:${echo.port}`] }, named: { endpoints: [`127.0.0.1:${named.port}`] } },
      admin: { bind: 'off' },
    }),
  );
  const berth = await startBerth(['-c', file, '--workers', '2']);
  t.teardown(() => berth.kill('SIGKILL'));
  await until(() => berth.logs.filter((l) => l.msg === 'listening').length === 4, 10_000, 'two listeners in each of two workers');
  const portOf = (name: string) => listenerPort(berth, name);
  // A long-lived connection on the other listener, echoing before and after.
  const held = net.connect(portOf('other'), '127.0.0.1');
  let echoed = '';
  held.on('data', (d: Buffer) => (echoed += d.toString()));
  held.write('before;');
  await until(() => echoed === 'before;', 5000, 'the held connection echoes');
  const refused = [
    'CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n',
    'GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: nowhere.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
  ];
  for (let i = 0; i < 40; i++) {
    await Promise.all(
      refused.map(async (r) => {
        const c = net.connect(portOf('web'), '127.0.0.1');
        c.on('error', () => {});
        await once(c, 'connect');
        c.write(r);
        c.resetAndDestroy();
        await once(c, 'close');
      }),
    );
  }
  held.write('after');
  await until(() => echoed === 'before;after', 5000, 'the held connection still echoes');
  t.pass('a connection on another listener was not cut');
  const r = await new Promise<string>((resolve, reject) => {
    const c = net.connect(portOf('web'), '127.0.0.1', () => c.write('GET / HTTP/1.1\r\nHost: known.example\r\nConnection: close\r\n\r\n'));
    let out = '';
    c.on('data', (d: Buffer) => (out += d.toString()));
    c.on('close', () => resolve(out));
    c.on('error', reject);
  });
  t.match(r, /^HTTP\/1\.1 /, 'the http listener still answers');
  t.notOk(berth.logs.some((l) => l.msg === 'worker died; starting a new one'), 'no worker died');
  t.equal(berth.proc.exitCode, null);
  held.destroy();
});
