import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { exchange, freePort, httpGet, nameServer, runCli, startBerth, until } from '../helpers/net.js';

// Real peers: promtool and a Prometheus server (Debian: prometheus), headless Chromium (Debian: chromium).
for (const bin of ['promtool', 'prometheus', 'chromium']) {
  if (spawnSync('which', [bin]).status !== 0) throw new Error(`${bin} is required (Debian packages prometheus, chromium); .ci/run installs them`);
}

const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/', import.meta.url));

const get = httpGet;

const a = await nameServer('A');
const b = await nameServer('B');
t.teardown(() => {
  a.close();
  b.close();
});
const adminPort = await freePort();
const berth = await startBerth(['--listen', '127.0.0.1:0', '--backend', `127.0.0.1:${a.port}`, '--backend', `127.0.0.1:${b.port},weight=2`, '--admin', `127.0.0.1:${adminPort}`, '--service', 'web']);
t.teardown(() => berth.kill('SIGKILL'));
for (let i = 0; i < 6; i++) await exchange(berth.port);
const admin = `http://127.0.0.1:${adminPort}`;

t.test('promtool check metrics accepts a live scrape', async (t) => {
  const scrape = await get(`${admin}/metrics`);
  t.equal(scrape.status, 200);
  const r = spawnSync('promtool', ['check', 'metrics'], { input: scrape.body, encoding: 'utf8' });
  t.equal(r.status, 0, `promtool: ${r.stdout}${r.stderr}`);
  t.equal((r.stdout + r.stderr).trim(), '', 'no lint findings');
});

t.test('a real Prometheus server scrapes berth; a query returns the endpoints', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-prom-'));
  const promPort = await freePort();
  const cfg = join(dir, 'prometheus.yml');
  writeFileSync(cfg, `global: { scrape_interval: 1s, evaluation_interval: 1s }\nscrape_configs:\n  - job_name: berth\n    static_configs: [ { targets: ["127.0.0.1:${adminPort}"] } ]\n`);
  const prom = spawn('prometheus', [`--config.file=${cfg}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${promPort}`], { stdio: 'ignore' });
  t.teardown(() => prom.kill('SIGKILL'));
  const q = async (query: string) => JSON.parse((await get(`http://127.0.0.1:${promPort}/api/v1/query?query=${encodeURIComponent(query)}`)).body) as { status: string; data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
  await until(async () => (await q('berth_upstream_up').catch(() => ({ data: { result: [] } }))).data.result.length === 2, 30_000, 'prometheus has scraped berth', 200);
  const up = await q('berth_upstream_up{service="web"}');
  t.same(up.data.result.map((r) => r.metric['endpoint']).sort(), [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`].sort());
  t.ok(up.data.result.every((r) => r.value[1] === '1'), 'both up');
  const w = await q(`berth_upstream_weight{endpoint="127.0.0.1:${b.port}"}`);
  t.equal(w.data.result[0]?.value[1], '2');
  const total = await q('sum(berth_listener_connections_total)');
  t.ok(Number(total.data.result[0]?.value[1]) >= 6);

  // examples/grafana: every panel query is valid PromQL over metrics berth exports.
  const dash = JSON.parse(readFileSync(new URL('../../examples/grafana/berth-dashboard.json', import.meta.url), 'utf8')) as { panels: { title: string; targets: { expr: string }[] }[] };
  const scrape = (await get(`${admin}/metrics`)).body;
  for (const p of dash.panels) {
    for (const target of p.targets) {
      const expr = target.expr.replace(/\$service/g, '.*');
      const r = await q(expr);
      t.equal(r.status, 'success', `${p.title}: ${expr}`);
      for (const name of expr.match(/berth_[a-z_]+/g) ?? []) {
        t.ok(scrape.includes(`# TYPE ${name.replace(/_bucket$/, '')} `), `${p.title}: ${name} is exported`);
      }
    }
  }
});

t.test('examples/prometheus config and alert rules pass promtool', async (t) => {
  const dir = fileURLToPath(new URL('../../examples/prometheus/', import.meta.url));
  const r = spawnSync('promtool', ['check', 'config', join(dir, 'prometheus.yml')], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stdout + r.stderr);
});

t.test('the status page in headless Chromium: text checked, screenshot kept', async (t) => {
  mkdirSync(ARTIFACTS, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), 'berth-chromium-'));
  const flags = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', `--user-data-dir=${profile}`];
  const dom = spawnSync('chromium', [...flags, '--dump-dom', `${admin}/`], { encoding: 'utf8', timeout: 60_000 });
  t.equal(dom.status, 0, dom.stderr.slice(-500));
  t.match(dom.stdout, /berth \d+\.\d+\.\d+/);
  t.match(dom.stdout, /ready/);
  t.match(dom.stdout, /web <small>least-conn · 2 of 2 in the pick set/);
  t.match(dom.stdout, new RegExp(`127\\.0\\.0\\.1:${b.port}`));
  const shot = join(ARTIFACTS, 'status-page.png');
  const s = spawnSync('chromium', [...flags, '--window-size=1200,700', `--screenshot=${shot}`, `${admin}/`], { encoding: 'utf8', timeout: 60_000 });
  t.equal(s.status, 0, s.stderr.slice(-500));
  t.ok(existsSync(shot) && statSync(shot).size > 5000, `screenshot at ${shot}`);
});

t.test('berth status prints the same as a table', async (t) => {
  const r = await runCli(['status', '--admin', `127.0.0.1:${adminPort}`]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^ready\n/);
  t.match(r.stdout, /service web \(least-conn; 2\/2 in the pick set; listeners web\)/);
  t.match(r.stdout, /ENDPOINT\s+ADDRESS\s+SOURCE\s+STATE\s+WEIGHT/);
  t.match(r.stdout, new RegExp(`127\\.0\\.0\\.1:${b.port}\\s+127\\.0\\.0\\.1:${b.port}\\s+static\\s+up\\s+2`));
  const down = await runCli(['status', '--admin', '127.0.0.1:1']);
  t.equal(down.code, 2);
  t.match(down.stderr, /berth status: .*ECONNREFUSED/);
});
