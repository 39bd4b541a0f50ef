// A udp listener on 0.0.0.0 of a host with several addresses answers each client from
// the address it sent to: in a network namespace of its own (lo with 10.9.0.1/24 and
// the secondary 10.9.0.2/24, where the kernel would pick 10.9.0.1 as the source of any
// answer), clients connected to each address get their answers. Needs unshare(1) and
// ip(1) (util-linux, iproute2); the user namespace (--map-root-user) makes root
// unnecessary.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { MAIN } from '../helpers/net.js';

const DRIVER = fileURLToPath(new URL('../fixtures/udp-addresses.mjs', import.meta.url));

t.test('0.0.0.0 with two addresses on one subnet: each client answered from the address it sent to', async (t) => {
  const r = await new Promise<{ result: Record<string, string | null>; listening?: string }>((resolve, reject) => {
    execFile(
      'unshare',
      ['--user', '--map-root-user', '--net', '--', 'sh', '-c', 'ip link set lo up && ip addr add 10.9.0.1/24 dev lo && ip addr add 10.9.0.2/24 dev lo && exec "$@"', 'sh', process.execPath, DRIVER, MAIN],
      { timeout: 60_000, killSignal: 'SIGKILL' },
      (err, stdout, stderr) => {
        const last = stdout.trim().split('\n').pop() ?? '';
        try {
          resolve(JSON.parse(last) as { result: Record<string, string | null> });
        } catch {
          reject(new Error(`driver gave no result (${err?.message ?? 'exit 0'}): ${stdout.slice(-500)} ${stderr.slice(-1500)}`));
        }
      },
    );
  });
  t.same(r.result, { '10.9.0.1': 'echo:q-10.9.0.1', '10.9.0.2': 'echo:q-10.9.0.2', '127.0.0.1': 'echo:q-127.0.0.1' }, r.listening ?? '');
  t.match(r.listening, /"addresses":\[[^\]]*"10\.9\.0\.2"/, 'the listening line names the addresses bound');
});
