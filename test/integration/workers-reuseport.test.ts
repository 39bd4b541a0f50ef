// --workers 2 --reuse-port: how many listening sockets the kernel sees for the port
// (/proc/net/tcp), on whichever node runs the suite, and the one line that says why.
import { readFileSync } from 'node:fs';
import t from 'tap';
import { decideReusePort, nodeHasReusePort, reusePortFacts } from '../../src/cluster/reuse-port.js';
import { exchange, freePort, nameServer, startBerth, until } from '../helpers/net.js';

/** Listening IPv4 sockets on 127.0.0.1:port. */
function listeningSockets(port: number): number {
  const want = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  return readFileSync('/proc/net/tcp', 'utf8')
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f[1] === want && f[3] === '0A').length;
}

for (const mode of ['on', 'off', 'auto'] as const) {
  t.test(`--reuse-port ${mode}`, { skip: process.platform !== 'linux' ? 'reads /proc/net/tcp' : false }, async (t) => {
    const web = await nameServer('web');
    t.teardown(() => web.close());
    const port = await freePort();
    const berth = await startBerth(['--listen', `127.0.0.1:${port}`, '--backend', `127.0.0.1:${web.port}`, '--workers', '2', '--reuse-port', mode, '--admin', 'off']);
    t.teardown(() => berth.kill('SIGKILL'));
    await until(() => berth.logs.filter((l) => l.msg === 'listening').length === 2, 10_000, 'both workers listening');
    const plan = decideReusePort(mode, reusePortFacts());
    const line = berth.logs.find((l) => l['reusePort'] !== undefined)!;
    t.equal(line['reusePort'], plan.perWorker, `the primary says which (${String(line['why'])})`);
    if (mode === 'on' && !nodeHasReusePort(process.versions.node)) t.match(String(line['why']), /needs node 22\.12 or later/, 'and what is missing');
    t.equal(listeningSockets(port), plan.perWorker ? 2 : 1, plan.perWorker ? 'a socket per worker' : 'one shared socket');
    for (let i = 0; i < 20; i++) t.equal((await exchange(port, 'x')).data.toString(), 'web');
  });
}
