/**
 * The DNS interface with real clients: `dig` over udp and tcp (+tcp) asks berth for
 * a service's endpoints in the pick set (A, SRV with glue), an unknown name
 * (NXDOMAIN), a name out of the zone (REFUSED); an endpoint failing its check leaves
 * the answers; the queries are counted in berth_dns_queries_total.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { freePort, httpGet, listenerPort, startBerth, tcpServer, until } from '../helpers/net.js';

const run = promisify(execFile);

t.test('dig through the DNS interface: A, SRV, +tcp, NXDOMAIN, REFUSED; a failed endpoint leaves the answers', async (t) => {
  const a = await tcpServer((s) => s.end('a'));
  const dead = await freePort();
  const admin = await freePort();
  const dnsPort = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'berth-dnsif-'));
  const file = join(dir, 'berth.json');
  writeFileSync(
    file,
    JSON.stringify({
      listeners: [{ name: 'web', bind: '127.0.0.1:0', service: 'web' }],
      services: {
        web: { endpoints: [`127.0.0.1:${a.port}`, `127.0.0.2:${dead}`], health: { type: 'tcp', interval: '100ms', timeout: '200ms', rise: 1, fall: 1, jitter: 0, initial: 'healthy' } },
      },
      dns: { bind: `127.0.0.1:${dnsPort}` },
      admin: { bind: `127.0.0.1:${admin}` },
    }),
  );
  const berth = await startBerth(['-c', file]);
  t.teardown(() => {
    berth.kill('SIGKILL');
    a.close();
  });
  await until(() => listenerPort(berth, 'web') > 0);
  const dig = async (...args: string[]) => (await run('dig', ['+tries=1', '+time=2', '-p', String(dnsPort), '@127.0.0.1', ...args])).stdout;
  // The dead endpoint fails its check and leaves the pick set: one address left.
  await until(async () => (await dig('+short', 'web.service.berth', 'A')).trim() === '127.0.0.1', 10_000, 'only the live endpoint answered');
  t.pass('A: the endpoint in the pick set, not the one failing its check');
  const srv = await dig('web.service.berth', 'SRV');
  t.match(srv, new RegExp(`web\\.service\\.berth\\.\\s+0\\s+IN\\s+SRV\\s+1 1 ${a.port} 7f000001\\.addr\\.berth\\.`), 'SRV: its port and target');
  t.match(srv, /7f000001\.addr\.berth\.\s+0\s+IN\s+A\s+127\.0\.0\.1/, 'with the glue');
  t.match(srv, /flags: qr aa rd;/, 'authoritative');
  t.equal((await dig('+tcp', '+short', 'web.service.berth', 'A')).trim(), '127.0.0.1', 'over tcp');
  t.match(await dig('nope.service.berth', 'A'), /status: NXDOMAIN/);
  t.match(await dig('example.com', 'A'), /status: REFUSED/);
  const m = (await httpGet(`http://127.0.0.1:${admin}/metrics`)).body;
  t.match(m, /berth_dns_queries_total\{type="SRV",rcode="NOERROR"\} 1/);
  t.match(m, /berth_dns_queries_total\{type="A",rcode="NXDOMAIN"\} 1/);
  t.match(m, /berth_dns_queries_total\{type="A",rcode="REFUSED"\} 1/);
});
