/**
 * UDP through berth with real peers: `dig` to two dnsmasq endpoints behind one berth
 * port (mode udp, responses: 1), both answering, and no session left behind after.
 */
import { execFile } from 'node:child_process';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { dnsmasq } from '../helpers/dns.js';
import { freePort, httpGet, listenerPort, startBerth, until } from '../helpers/net.js';

const run = promisify(execFile);

t.test('dig through berth to two dnsmasq servers, a session per query and none left', async (t) => {
  const a = await dnsmasq(t, '10.0.0.1 web.svc.test\n');
  const b = await dnsmasq(t, '10.0.0.1 web.svc.test\n');
  const admin = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'berth-udp-'));
  const file = join(dir, 'berth.json');
  writeFileSync(
    file,
    JSON.stringify({
      listeners: [{ name: 'dns', bind: '127.0.0.1:0', mode: 'udp', service: 'dns', udp: { responses: 1 } }],
      services: { dns: { balance: 'round-robin', endpoints: [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`] } },
      admin: { bind: `127.0.0.1:${admin}` },
    }),
  );
  const berth = await startBerth(['-c', file]);
  t.teardown(() => berth.kill('SIGKILL'));
  await until(() => listenerPort(berth, 'dns') > 0);
  const port = listenerPort(berth, 'dns');
  for (let i = 0; i < 10; i++) {
    const out = (await run('dig', ['+short', '+tries=1', '+time=2', '-p', String(port), '@127.0.0.1', 'web.svc.test'])).stdout.trim();
    t.equal(out, '10.0.0.1', `query ${i} answered`);
  }
  const nx = (await run('dig', ['+tries=1', '+time=2', '-p', String(port), '@127.0.0.1', 'nope.svc.test'])).stdout;
  t.match(nx, /status: NXDOMAIN/, 'an NXDOMAIN relayed as it is');
  await until(async () => /berth_udp_sessions_active\{listener="dns"\} 0/.test((await httpGet(`http://127.0.0.1:${admin}/metrics`)).body), 5000, 'no session left');
  const m = (await httpGet(`http://127.0.0.1:${admin}/metrics`)).body;
  t.match(m, /berth_udp_sessions_total\{listener="dns"\} 11/, 'a session per query');
  t.match(m, /berth_udp_datagrams_total\{listener="dns",direction="out"\} 11/);
  const conns = [...m.matchAll(/berth_upstream_bytes_total\{service="dns",endpoint="([^"]+)",direction="rx"\} (\d+)/g)].filter((x) => Number(x[2]) > 0);
  t.equal(conns.length, 2, 'both dnsmasq servers answered');
});

t.test('a dns health check takes a dead dnsmasq out of the pool and brings it back; every query answered meanwhile', async (t) => {
  const a = await dnsmasq(t, '10.0.0.2 web.svc.test\n');
  const b = await dnsmasq(t, '10.0.0.2 web.svc.test\n');
  const admin = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'berth-udp-'));
  const file = join(dir, 'berth.json');
  const bPort = b.port;
  writeFileSync(
    file,
    JSON.stringify({
      listeners: [{ name: 'dns', bind: '127.0.0.1:0', mode: 'udp', service: 'dns', udp: { responses: 1 } }],
      services: {
        dns: {
          balance: 'round-robin',
          endpoints: [`127.0.0.1:${a.port}`, `127.0.0.1:${bPort}`],
          // Any answer counts, an NXDOMAIN too: the check asks for a name nobody has.
          health: { type: 'dns', query: 'health.svc.test', interval: '100ms', timeout: '500ms', rise: 1, fall: 1, jitter: 0 },
        },
      },
      admin: { bind: `127.0.0.1:${admin}` },
    }),
  );
  const berth = await startBerth(['-c', file]);
  t.teardown(() => berth.kill('SIGKILL'));
  await until(() => listenerPort(berth, 'dns') > 0);
  const port = listenerPort(berth, 'dns');
  const health = async () => {
    const s = JSON.parse((await httpGet(`http://127.0.0.1:${admin}/api/v1/services`)).body) as { services: { name: string; endpoints: { id: string; health: string }[] }[] };
    return Object.fromEntries(s.services.find((x) => x.name === 'dns')!.endpoints.map((e) => [e.id, e.health]));
  };
  const bId = `127.0.0.1:${bPort}`;
  await until(async () => Object.values(await health()).every((h) => h === 'up'), 10_000, 'both pass their first check');
  b.proc.kill('SIGKILL');
  await until(async () => /active-check-failed/.test((await health())[bId] ?? ''), 10_000, 'the dead one fails its check');
  for (let i = 0; i < 6; i++) {
    const out = (await run('dig', ['+short', '+tries=1', '+time=2', '-p', String(port), '@127.0.0.1', 'web.svc.test'])).stdout.trim();
    t.equal(out, '10.0.0.2', `query ${i} answered by the live one`);
  }
  // The same port again: back in the pool on its next pass.
  await dnsmasq(t, '10.0.0.2 web.svc.test\n', '', bPort);
  await until(async () => (await health())[bId] === 'up', 10_000, 'back after a pass');
  t.pass('recovered');
});
