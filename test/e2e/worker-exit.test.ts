// A worker that dies loses no connection it had not accepted: with one listening
// socket per worker (--reuse-port) only where the kernel hands a closed socket's
// waiting connections to the others (net.ipv4.tcp_migrate_req = 1), and with the
// shared socket everywhere else. Each case runs test/fixtures/worker-exit.mjs in a
// network namespace of its own (its own sysctl): both workers stopped, 40 clients
// waiting in the accept queues, one worker SIGKILLed, the other continued.
// Needs unshare(1) and ip(1) (util-linux, iproute2) and node >= 22.12; the namespace
// comes with a user namespace of its own (--map-root-user), so root is not needed.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { nodeHasReusePort } from '../../src/cluster/reuse-port.js';
import { MAIN } from '../helpers/net.js';

const DRIVER = fileURLToPath(new URL('../fixtures/worker-exit.mjs', import.meta.url));

interface Result {
  sockets: number;
  clients: number;
  served: number;
  reset: number;
  other: number;
  error?: string;
}

function inNamespace(mode: string, migrate: 0 | 1): Promise<Result> {
  return new Promise((resolve, reject) => {
    execFile(
      'unshare',
      ['--user', '--map-root-user', '--net', '--', 'sh', '-c', 'ip link set lo up && exec "$@"', 'sh', process.execPath, DRIVER, MAIN, mode, String(migrate)],
      { timeout: 60_000, killSignal: 'SIGKILL' },
      (err, stdout, stderr) => {
        const last = stdout.trim().split('\n').pop() ?? '';
        try {
          resolve(JSON.parse(last) as Result);
        } catch {
          reject(new Error(`driver gave no result (${err?.message ?? 'exit 0'}): ${stdout.slice(-500)} ${stderr.slice(-1500)}`));
        }
      },
    );
  });
}

t.test('prerequisites', async (t) => {
  t.ok(nodeHasReusePort(process.versions.node), `node ${process.version} has reusePort (22.12+)`);
});

t.test('shared socket (--reuse-port off): a killed worker loses none of the waiting connections', async (t) => {
  const r = await inNamespace('off', 0);
  t.equal(r.error, undefined);
  t.equal(r.sockets, 1, 'one listening socket');
  t.equal(r.served, r.clients, `all ${r.clients} answered`);
  t.equal(r.reset, 0, 'none reset');
});

t.test('a socket per worker where the kernel migrates (auto, tcp_migrate_req = 1): none lost', async (t) => {
  const r = await inNamespace('auto', 1);
  t.equal(r.error, undefined);
  t.equal(r.sockets, 2, 'auto chose a socket per worker');
  t.equal(r.served, r.clients, `all ${r.clients} answered, those queued at the killed worker by the other`);
  t.equal(r.reset, 0, 'none reset');
});

t.test('what auto avoids: a socket per worker without migration (on, tcp_migrate_req = 0) resets the killed worker’s queue', async (t) => {
  const r = await inNamespace('on', 0);
  t.equal(r.error, undefined);
  t.equal(r.sockets, 2);
  t.ok(r.reset > 0, `${r.reset} of ${r.clients} reset`);
  t.equal(r.served + r.reset + r.other, r.clients);
});
