import { mkdtempSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { renderStatus, terminalSafe } from '../../src/cli/status.js';
import { Berth } from '../../src/runtime/runtime.js';
import { validateConfig } from '../../src/config/validate.js';
import { Flag, type EndpointSpec } from '../../src/core/types.js';
import { exchange, httpGet, nameServer, runCli } from '../helpers/net.js';
import { silent } from '../helpers/proxy.js';

const fetchText = (port: number, path: string) => httpGet(`http://127.0.0.1:${port}${path}`);

async function started(t: Test, services: Record<string, unknown>) {
  const config = validateConfig({
    listeners: [{ name: 'front', bind: '127.0.0.1:0', service: 'web' }],
    services,
    admin: { bind: '127.0.0.1:0' },
  });
  const berth = new Berth(config, { log: silent, version: '9.9.9' });
  await berth.start();
  t.teardown(() => berth.shutdown(0));
  return { berth, admin: berth.adminAddress!.port, port: [...berth.listeners.values()][0]!.address.port };
}

t.test('healthz, readyz with the reason, services JSON, status page', async (t) => {
  const { berth, admin, port } = await started(t, { web: { endpoints: [] } });
  t.equal((await fetchText(admin, '/healthz')).status, 200);
  const notReady = await fetchText(admin, '/readyz');
  t.equal(notReady.status, 503);
  t.match(notReady.body, /listener front: service web has no healthy endpoint/);

  const a = await nameServer('A');
  t.teardown(() => a.close());
  await berth.reload(validateConfig({ listeners: [{ name: 'front', bind: '127.0.0.1:0', service: 'web' }], services: { web: { endpoints: [`127.0.0.1:${a.port}`] } }, admin: { bind: "127.0.0.1:0" } }));
  t.equal((await fetchText(admin, '/readyz')).status, 200, 'ready once the service has an endpoint');
  await exchange(port);

  const services = JSON.parse((await fetchText(admin, '/api/v1/services')).body) as { services: { name: string; endpoints: { id: string; health: string; connectionsTotal: number; sources: string[] }[] }[] };
  const web = services.services.find((s) => s.name === 'web')!;
  t.equal(web.endpoints.length, 1);
  t.match(web.endpoints[0], { id: `127.0.0.1:${a.port}`, health: 'up', sources: ['static'] });

  const page = await fetchText(admin, '/');
  t.match(page.type, /text\/html/);
  t.match(page.body, /<meta http-equiv="refresh" content="5">/);
  t.match(page.body, new RegExp(`127\\.0\\.0\\.1:${a.port}`));
  t.notMatch(page.body, /<script/i, 'readable without JavaScript');
  t.equal((await fetchText(admin, '/nope')).status, 404);

  // And back: the only endpoint leaves → not ready again, with the reason.
  await berth.reload(validateConfig({ listeners: [{ name: 'front', bind: '127.0.0.1:0', service: 'web' }], services: { web: { endpoints: [] } }, admin: { bind: "127.0.0.1:0" } }));
  const again = await fetchText(admin, '/readyz');
  t.equal(again.status, 503);
  t.match(again.body, /service web has no healthy endpoint/);
});

t.test('explain: an endpoint excluded by each reason says why', async (t) => {
  const { berth, admin } = await started(t, { web: { endpoints: ['127.0.0.1:1', '127.0.0.1:2,weight=0', '127.0.0.1:3,maxConnections=1'] } });
  const pool = berth.pool;
  const explain = async (id: string) => JSON.parse((await fetchText(admin, `/api/v1/endpoints/${encodeURIComponent(id)}?service=web`)).body) as { inPickSet: boolean; why: string; healthInputs: { input: string; failing: boolean; since: string }[]; origin: { provider: string }[]; recentEvents: { what: string }[] };
  let e = await explain('127.0.0.1:1');
  t.equal(e.inPickSet, true);
  t.equal(e.why, 'in the pick set');
  t.equal(e.origin[0]!.provider, 'static');
  t.match(e.recentEvents[0]!.what, /static: added 127\.0\.0\.1:1 weight 1/);

  t.match((await explain('127.0.0.1:2')).why, /out of the pick set: weight-0/);

  const cap = pool.service('web')!.endpoints.get('127.0.0.1:3')!;
  pool.acquire(cap);
  t.match((await explain('127.0.0.1:3')).why, /at its connection cap \(1\/1\)/);
  pool.release(cap);

  pool.setFlag('web', '127.0.0.1:1', Flag.ActiveUnhealthy, true, 'active check: refused');
  e = await explain('127.0.0.1:1');
  t.match(e.why, /out of the pick set: active-check-failed/);
  const input = e.healthInputs.find((h) => h.input === 'active-check-failed')!;
  t.equal(input.failing, true);
  t.ok(Date.now() - Date.parse(input.since) < 5000, 'with the time it changed');
  t.match(e.recentEvents.at(-1)!.what, /active check: refused/);

  // Provider-reported states: docker health, stopping, paused; and draining.
  const d = (id: string, extra: Partial<EndpointSpec>): EndpointSpec => ({ id, host: '127.0.0.1', port: 9, weight: 1, source: 'docker', ...extra });
  pool.applySnapshot({ provider: 'docker', services: new Map([['web', [d('c-start', { health: 'starting' }), d('c-stop', { stopping: true }), d('c-pause', { paused: true }), d('c-drain', {})]]]) });
  t.match((await explain('c-start')).why, /docker-unhealthy/);
  t.match((await explain('c-stop')).why, /stopping/);
  t.match((await explain('c-pause')).why, /paused/);
  const drain = pool.service('web')!.endpoints.get('c-drain')!;
  pool.acquire(drain);
  pool.applySnapshot({ provider: 'docker', services: new Map([['web', [d('c-start', { health: 'starting' }), d('c-stop', { stopping: true }), d('c-pause', { paused: true })]]]) });
  t.match((await explain('c-drain')).why, /draining/);
  pool.release(drain);
  t.equal((await fetchText(admin, '/api/v1/endpoints/c-drain')).status, 404, 'gone once drained');
});

t.test('explain: ambiguous id across services is a 409 naming them', async (t) => {
  const config = validateConfig({
    listeners: [
      { name: 'a', bind: '127.0.0.1:0', service: 's1' },
      { name: 'b', bind: '127.0.0.1:0', service: 's2' },
    ],
    services: { s1: { endpoints: ['127.0.0.1:7'] }, s2: { endpoints: ['127.0.0.1:7'] } },
    admin: { bind: '127.0.0.1:0' },
  });
  const berth = new Berth(config, { log: silent });
  await berth.start();
  t.teardown(() => berth.shutdown(0));
  const r = await fetchText(berth.adminAddress!.port, '/api/v1/endpoints/127.0.0.1%3A7');
  t.equal(r.status, 409);
  t.match(JSON.parse(r.body), { services: ['s1', 's2'] });
  t.equal((await fetchText(berth.adminAddress!.port, '/api/v1/endpoints/127.0.0.1%3A7?service=s2')).status, 200);
});

t.test('metrics: contract names and types; series of removed endpoints go away (500 endpoints churned)', async (t) => {
  const { berth, admin, port } = await started(t, { web: { endpoints: [] } });
  const a = await nameServer('A');
  t.teardown(() => a.close());
  await berth.reload(validateConfig({ listeners: [{ name: 'front', bind: '127.0.0.1:0', service: 'web' }], services: { web: { endpoints: [`127.0.0.1:${a.port}`] } }, admin: { bind: "127.0.0.1:0" } }));
  await exchange(port);
  const text = (await fetchText(admin, '/metrics')).body;
  for (const [name, type] of [
    ['berth_listener_connections_total', 'counter'],
    ['berth_listener_active_connections', 'gauge'],
    ['berth_upstream_connections_total', 'counter'],
    ['berth_upstream_active_connections', 'gauge'],
    ['berth_upstream_bytes_total', 'counter'],
    ['berth_upstream_connect_duration_seconds', 'histogram'],
    ['berth_upstream_up', 'gauge'],
    ['berth_upstream_weight', 'gauge'],
    ['berth_retries_total', 'counter'],
    ['berth_discovery_events_total', 'counter'],
    ['berth_discovery_errors_total', 'counter'],
    ['berth_discovery_connected', 'gauge'],
    ['berth_discovery_last_sync_timestamp_seconds', 'gauge'],
    ['berth_config_reloads_total', 'counter'],
  ] as const) {
    t.match(text, new RegExp(`# TYPE ${name} ${type}\\n`), `${name} is a ${type}`);
  }
  t.match(text, /berth_config_reloads_total\{result="ok"\} 1/);
  t.match(text, new RegExp(`berth_upstream_connections_total\\{service="web",endpoint="127.0.0.1:${a.port}",result="ok"\\} 1`));
  t.match(text, /berth_upstream_connect_duration_seconds_bucket\{le="0.0001",service="web"\}/, 'buckets start at 100 µs');
  t.match(text, /process_resident_memory_bytes/, 'default process metrics');

  const seriesCount = async () => (await fetchText(admin, '/metrics')).body.split('\n').filter((l) => l.startsWith('berth_upstream')).length;
  const baseline = await seriesCount();
  const obs = berth.metrics!;
  const many: EndpointSpec[] = Array.from({ length: 500 }, (_, i) => ({ id: `churn-${i}`, host: '127.0.0.1', port: 10_000 + i, weight: 1, source: 'docker' }));
  berth.pool.applySnapshot({ provider: 'docker', services: new Map([['web', many]]) });
  for (const e of many) {
    obs.upstreamConnect('web', e.id, 'ok', 0.001);
    obs.upstreamConnect('web', e.id, 'refused', 0.001);
    obs.upstreamClosed('web', e.id, 10, 20);
  }
  const peak = await seriesCount();
  t.ok(peak >= baseline + 500 * 7, `series grew with 500 endpoints: ${baseline} → ${peak}`);
  berth.pool.applySnapshot({ provider: 'docker', services: new Map() });
  t.equal(await seriesCount(), baseline, 'back to the baseline after the endpoints left');
});

t.test('admin token: every path but /healthz needs the bearer token; /readyz says only ready or not without it; a reload rotates it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-token-'));
  const file = join(dir, 'token');
  writeFileSync(file, 'first-secret-token\n');
  const cfg = (over: Record<string, unknown> = {}) => validateConfig({ listeners: [{ name: 'front', bind: '127.0.0.1:0', service: 'web' }], services: { web: { endpoints: [] } }, admin: { bind: '127.0.0.1:0', tokenFile: file }, ...over });
  const berth = new Berth(cfg(), { log: silent, version: '9.9.9' });
  await berth.start();
  t.teardown(() => berth.shutdown(0));
  const port = berth.adminAddress!.port;
  const get = (path: string, token?: string) =>
    new Promise<{ status: number; body: string; auth: string | undefined }>((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port, path, agent: false, headers: token !== undefined ? { authorization: `Bearer ${token}` } : {} }, (res) => {
          let body = '';
          res.on('data', (d: Buffer) => (body += d.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body, auth: res.headers['www-authenticate'] }));
        })
        .on('error', reject);
    });
  t.equal((await get('/healthz')).status, 200, '/healthz stays open (liveness probes)');
  for (const path of ['/metrics', '/api/v1/services', '/api/v1/endpoints/x', '/']) {
    const r = await get(path);
    t.equal(r.status, 401, `${path} without a token: 401`);
    t.match(r.auth, /^Bearer/);
    t.notMatch(r.body, /web|127\.0\.0\.1/, 'nothing about the services leaks');
    t.equal((await get(path, 'wrong-token-of-some-length')).status, 401, `${path} with a wrong token: 401`);
  }
  const anon = await get('/readyz');
  t.equal(anon.status, 503);
  t.equal(anon.body, 'not ready\n', 'no reasons without the token');
  t.match((await get('/readyz', 'first-secret-token')).body, /service web has no healthy endpoint/);
  t.equal((await get('/metrics', 'first-secret-token')).status, 200);
  writeFileSync(file, 'second-secret-token');
  await berth.reload(cfg());
  t.equal((await get('/metrics', 'first-secret-token')).status, 401, 'the old token no longer works after a reload');
  t.equal((await get('/metrics', 'second-secret-token')).status, 200);
  const status = await runCli(['status', '--admin', `127.0.0.1:${port}`]);
  t.equal(status.code, 2);
  t.match(status.stderr, /401.*--admin-token-file/);
  const ok = await runCli(['status', '--admin', `127.0.0.1:${port}`, '--admin-token-file', file]);
  t.equal(ok.code, 0, ok.stderr);
  t.match(ok.stdout, /service web/);
});

t.test('a missing admin token file stops the start (exit 2); an empty one too', async (t) => {
  const r = await runCli(['--listen', '127.0.0.1:0', '--backend', '127.0.0.1:1', '--admin', '127.0.0.1:0', '--admin-token-file', '/nonexistent/token']);
  t.equal(r.code, 2);
  t.match(r.stderr, /admin\.tokenFile \/nonexistent\/token: ENOENT/);
  const dir = mkdtempSync(join(tmpdir(), 'berth-token-'));
  writeFileSync(join(dir, 'empty'), '\n');
  const e = await runCli(['--listen', '127.0.0.1:0', '--backend', '127.0.0.1:1', '--admin', '127.0.0.1:0', '--admin-token-file', join(dir, 'empty')]);
  t.equal(e.code, 2);
  t.match(e.stderr, /the file is empty/);
});

t.test('explain: an id that is not valid percent-encoding is a 400, not a 500', async (t) => {
  const { admin } = await started(t, { web: { endpoints: [] } });
  const r = await fetchText(admin, '/api/v1/endpoints/%');
  t.equal(r.status, 400);
  t.match(r.body, /percent-encoding/);
});

t.test('berth status shows control characters from labels as \\xNN, never raw', async (t) => {
  const answer = terminalSafe({
    services: [{ name: 'web\u001b[2J', endpoints: [], listeners: [], balance: 'p2c', eligible: 0 }],
    discovery: [{ name: 'docker', connected: true, skipped: [{ container: 'evil\u001b]0;pwned\u0007', reason: 'bad label\nservice fake (p2c; 9/9 in the pick set)' }] }],
    ready: { ready: true, reasons: [], notes: [] },
  });
  const out = renderStatus(answer as Parameters<typeof renderStatus>[0]);
  // eslint-disable-next-line no-control-regex
  t.notMatch(out, /[\u0000-\u0008\u000b-\u001f\u007f]/, 'no control character reaches the terminal');
  t.match(out, /web\\x1b\[2J/);
  t.match(out, /evil\\x1b\]0;pwned\\x07/);
  t.notMatch(out, /\nservice fake/, 'a newline in a value cannot fake a line');
});

t.test('--workers primary: the admin API and metrics read the workers\' counters through a view; the pool\'s own stay untouched', async (t) => {
  const a = await nameServer('A');
  t.teardown(() => a.close());
  const config = validateConfig({ listeners: [{ name: 'front', bind: '127.0.0.1:0', service: 'web' }], services: { web: { endpoints: [`127.0.0.1:${a.port}`] } }, admin: { bind: '127.0.0.1:0' } });
  const berth = new Berth(config, { log: silent, version: '9.9.9', countersOf: () => ({ active: 7, connections: 42, failures: 3, latency: 1.5 }) });
  await berth.start();
  t.teardown(() => berth.shutdown(0));
  const admin = berth.adminAddress!.port;
  const view = JSON.parse((await fetchText(admin, '/api/v1/services')).body) as { services: { endpoints: { activeConnections: number; connectionsTotal: number; failuresTotal: number }[] }[] };
  t.match(view.services[0]!.endpoints[0], { activeConnections: 7, connectionsTotal: 42, failuresTotal: 3 });
  t.match((await fetchText(admin, '/metrics')).body, /berth_upstream_active_connections\{service="web",endpoint="127\.0\.0\.1:\d+"\} 7/);
  const e = [...berth.pool.service('web')!.endpoints.values()][0]!;
  t.same([e.active, e.connections, e.failures], [0, 0, 0], 'nothing was written into the pool');
});

/** A request to the admin API with a method, a body and a token. */
function call(port: number, method: string, path: string, token?: string, body?: string): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method, agent: false, headers: token !== undefined ? { authorization: `Bearer ${token}` } : {} }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => {
        let json: Record<string, unknown>;
        try {
          json = JSON.parse(text) as Record<string, unknown>;
        } catch {
          json = { text };
        }
        resolve({ status: res.statusCode ?? 0, json });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

t.test('operator overrides: drain, undrain and weight through the admin API, only with its token; shown in the views; a reload keeps them; each change logged with who', async (t) => {
  const a = await nameServer('A');
  const b = await nameServer('B');
  t.teardown(() => {
    a.close();
    b.close();
  });
  const dir = mkdtempSync(join(tmpdir(), 'berth-override-'));
  const file = join(dir, 'token');
  writeFileSync(file, 'operator-token-123\n');
  const cfg = (tokenFile: string | null, weightB = 1) =>
    validateConfig({
      listeners: [{ name: 'front', bind: '127.0.0.1:0', service: 'web' }],
      services: { web: { balance: 'round-robin', endpoints: [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port},weight=${weightB}`] } },
      admin: { bind: '127.0.0.1:0', ...(tokenFile !== null ? { tokenFile } : {}) },
    });
  // Without a token the admin API is read-only, and says how to change that.
  const lines: Record<string, unknown>[] = [];
  const open = new Berth(cfg(null), { log: silent, version: '9.9.9' });
  await open.start();
  const refused = await call(open.adminAddress!.port, 'POST', `/api/v1/endpoints/127.0.0.1:${a.port}/drain`);
  await open.shutdown(0);
  t.equal(refused.status, 403);
  t.match(refused.json['error'], /read-only without a token: set admin\.tokenFile/);

  const { pino } = await import('pino');
  const { Writable } = await import('node:stream');
  const sink = new Writable({
    write(chunk: Buffer, _e, cb) {
      for (const l of chunk.toString().split('\n')) if (l.trim() !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  const berth = new Berth(cfg(file), { log: pino({ level: 'info' }, sink), version: '9.9.9' });
  await berth.start();
  t.teardown(() => berth.shutdown(0));
  const admin = berth.adminAddress!.port;
  const port = [...berth.listeners.values()][0]!.address.port;
  const token = 'operator-token-123';
  const A = `127.0.0.1:${a.port}`;
  t.equal((await call(admin, 'POST', `/api/v1/endpoints/${A}/drain`)).status, 401, 'a token is needed');
  const drained = await call(admin, 'POST', `/api/v1/endpoints/${A}/drain`, token);
  t.equal(drained.status, 200);
  t.equal(drained.json['health'], 'drained-by-admin');
  t.match(drained.json['why'], /out of the pick set: drained-by-admin; drained by 127\.0\.0\.1 at \d{4}-/);
  t.match(drained.json['override'], { drained: { by: '127.0.0.1' }, weight: null });
  for (let i = 0; i < 6; i++) t.equal((await exchange(port)).data.toString(), 'B', 'new connections go to B only');
  // A reload (the token file and B's weight change) keeps the drain.
  await berth.reload(cfg(file, 3));
  t.equal((await exchange(port)).data.toString(), 'B', 'still drained after a reload');
  const services = (await call(admin, 'GET', '/api/v1/services', token)).json as { services: { endpoints: { id: string; health: string; override: unknown }[] }[] };
  t.match(services.services[0]!.endpoints.find((e) => e.id === A), { health: 'drained-by-admin', override: { drained: { by: '127.0.0.1' } } });
  // Weight: an integer 0-1000, as text or JSON; DELETE gives discovery's back.
  const B = `127.0.0.1:${b.port}`;
  t.equal((await call(admin, 'PUT', `/api/v1/endpoints/${B}/weight`, token, '1001')).status, 400);
  t.equal((await call(admin, 'PUT', `/api/v1/endpoints/${B}/weight`, token, 'ten')).status, 400);
  t.equal((await call(admin, 'PUT', `/api/v1/endpoints/${B}/weight`, token, 'x'.repeat(300))).status, 413);
  t.equal((await call(admin, 'POST', `/api/v1/endpoints/${B}/weight`, token, '5')).status, 405);
  const w = await call(admin, 'PUT', `/api/v1/endpoints/${B}/weight`, token, '{"weight": 250}');
  t.equal(w.json['configuredWeight'], 250);
  t.equal((await call(admin, 'DELETE', `/api/v1/endpoints/${B}/weight`, token)).json['configuredWeight'], 3, 'discovery\'s (the reloaded config\'s) weight again');
  t.equal((await call(admin, 'POST', '/api/v1/endpoints/10.9.9.9:1/drain', token)).status, 404);
  // A whole service.
  const svc = await call(admin, 'POST', '/api/v1/services/web/drain', token);
  t.same(svc.json['changed'], [B], 'A was drained already');
  t.equal((await call(admin, 'POST', '/api/v1/services/nope/drain', token)).status, 404);
  t.same(((await call(admin, 'POST', '/api/v1/services/web/undrain', token)).json['changed'] as string[]).sort(), [A, B].sort());
  const seen = new Set<string>();
  for (let i = 0; i < 6; i++) seen.add((await exchange(port)).data.toString());
  t.same([...seen].sort(), ['A', 'B'], 'both back');
  t.same(
    lines.filter((l) => l['msg'] === 'operator override').map((l) => [l['op'], l['endpoint'], l['by']]),
    [
      ['drain', A, '127.0.0.1'],
      ['weight', B, '127.0.0.1'],
      ['weight', B, '127.0.0.1'],
      ['drain', '*', '127.0.0.1'],
      ['undrain', '*', '127.0.0.1'],
    ],
    'one line per change, with who',
  );
});
