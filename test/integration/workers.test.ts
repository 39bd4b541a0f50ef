import t from 'tap';
import { answers, freePort, httpGet, nameServer, runCli, startBerth, until } from '../helpers/net.js';

const getJson = async (url: string): Promise<unknown> => JSON.parse((await httpGet(url)).body);
const getText = async (url: string): Promise<string> => (await httpGet(url)).body;

t.test('--workers 2: one /metrics and one status view for all workers; SIGTERM drains all', async (t) => {
  const a = await nameServer('A');
  const b = await nameServer('B');
  t.teardown(() => {
    a.close();
    b.close();
  });
  const adminPort = await freePort();
  const berth = await startBerth(['--listen', '127.0.0.1:0', '--backend', `127.0.0.1:${a.port}`, '--backend', `127.0.0.1:${b.port}`, '--workers', '2', '--admin', `127.0.0.1:${adminPort}`]);
  t.teardown(() => berth.kill('SIGKILL'));
  // Two processes write to one pipe: a worker's line may land after the primary's "berth started".
  await until(() => berth.logs.filter((l) => l.msg === 'listening').length === 2, 5000, 'both workers listening');
  t.pass('both workers listen');
  const N = 400;
  const got = await answers(berth.port, N, 40);
  t.same(Object.keys(got).sort(), ['A', 'B'], `all answered: ${JSON.stringify(got)}`);
  const admin = `http://127.0.0.1:${adminPort}`;
  const metrics = await getText(`${admin}/metrics`);
  t.match(metrics, new RegExp(`berth_listener_connections_total\\{listener="default"\\} ${N}\\n`), 'connections summed over workers');
  t.match(metrics, new RegExp(`berth_upstream_up\\{service="default",endpoint="127.0.0.1:${a.port}"\\} 1\\n`), 'shared-view gauges not summed');
  type Services = { workers: { pid: number; ready: boolean; connections: number }[]; services: { endpoints: { connectionsTotal: number }[] }[] };
  await until(async () => ((await getJson(`${admin}/api/v1/services`)) as Services).workers.reduce((n, w) => n + w.connections, 0) === N, 5000, 'status view folds in every worker', 100);
  const view = (await getJson(`${admin}/api/v1/services`)) as Services;
  t.equal(view.workers.length, 2);
  t.ok(view.workers.every((w) => w.ready));
  t.equal(view.services[0]!.endpoints.reduce((n, e) => n + e.connectionsTotal, 0), N, 'endpoint totals are the sum over workers');
  t.comment(`connections per worker: ${view.workers.map((w) => w.connections).join(', ')}`);
  const status = await runCli(['status', '--admin', `127.0.0.1:${adminPort}`]);
  t.match(status.stdout, /service default \(least-conn; 2\/2 in the pick set/);
  berth.kill('SIGTERM');
  t.equal(await berth.exited, 0);
  t.ok(berth.logs.some((l) => l.msg === 'all workers drained; bye'));
});

t.test('--workers rejects nonsense', async (t) => {
  const r = await runCli(['--listen', '1', '--backend', 'a:1', '--workers', 'lots']);
  t.equal(r.code, 1);
  t.match(r.stderr, /--workers: expected a number from 1 to 64 or "auto"/);
});
