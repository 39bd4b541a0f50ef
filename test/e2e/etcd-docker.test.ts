/**
 * Several hosts through a real etcd (3.4) with the real Docker engine: two berths on
 * their own loopback addresses (A on 127.0.0.2, B on 127.0.0.3) watch the same
 * engine with their own label prefixes (`hosta`, `hostb`), so a container labelled
 * `hosta.*` is host A's endpoint and reaches B only through etcd.
 *
 * - One pool across hosts: A's container answers through B's tcp and http listeners,
 *   B's through A's; etcd has each under its own host.
 * - Early drain across hosts under load: 20 `docker stop`s of A's containers while
 *   clients open new connections through B the whole time: zero failed requests, and
 *   no request started after B's admin API showed the container out of its pick set
 *   was answered by it. The containers keep serving after SIGTERM until the test has
 *   seen that (web-backend's STOP_ON_FILE), so neither depends on timing luck. The
 *   kill event → last request it answered through B is measured and reported, not
 *   asserted.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import t, { type Test } from 'tap';
import { docker, dockerReady, removeAll, RUN, runContainer } from '../helpers/docker.js';
import { etcdServer } from '../helpers/etcd-server.js';
import { freePort, httpGet, listenerPort, startBerth, until, type BerthProcess } from '../helpers/net.js';

if (!dockerReady(t)) process.exit(0);
t.teardown(removeAll);

const dir = mkdtempSync(join(tmpdir(), 'berth-etcd-docker-e2e-'));
/** The fixture of this tree, mounted over the image's copy: an image rebuilt from another tree cannot lack STOP_ON_FILE. */
const FIXTURE = fileURLToPath(new URL('../fixtures/web-backend.mjs', import.meta.url));
const svcName = (s: string) => `${RUN}-${s}`.replace(/[^A-Za-z0-9_.-]/g, '-');
const enc = encodeURIComponent;
/** Wall-clock ms with sub-ms resolution, comparable with the engine's timeNano. */
const now = () => performance.timeOrigin + performance.now();

interface Host {
  readonly berth: BerthProcess;
  readonly admin: number;
  readonly addr: string;
  port(listener: string): number;
}

/** One "host": a berth on `addr` with docker discovery under `prefix` and the shared etcd. */
async function host(t: Test, etcdUrl: string, id: string, addr: string, prefix: string, listeners: { name: string; service: string; mode?: string }[], services: Record<string, unknown> = {}): Promise<Host> {
  const admin = await freePort();
  const file = join(dir, `${id}-${admin}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      listeners: listeners.map((l) => ({ bind: `${addr}:0`, ...l })),
      services,
      discovery: { docker: { labelPrefix: prefix }, etcd: { endpoints: [etcdUrl], host: id, ttl: '2s', progressInterval: '1s' } },
      admin: { bind: `127.0.0.1:${admin}` },
    }),
  );
  const berth = await startBerth(['-c', file]);
  t.teardown(() => berth.kill('SIGKILL'));
  return { berth, admin, addr, port: (l) => listenerPort(berth, l) };
}

interface Answer {
  /** When the client began (before connecting). */
  readonly started: number;
  readonly done: number;
  /** The name that answered, or `error: ...` / `status ...`. */
  readonly name: string;
}

/** One GET on a new connection (connection: close) to `addr:port`; never rejects. */
function ask(addr: string, port: number, timeoutMs = 5000): Promise<Answer> {
  const started = now();
  return new Promise((resolve) => {
    const req = http.get({ host: addr, port, path: '/', agent: false, headers: { connection: 'close' }, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ started, done: now(), name: res.statusCode === 200 ? body.trim() : `status ${res.statusCode}` }));
      res.on('error', (e) => resolve({ started, done: now(), name: `error: ${e.message}` }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ started, done: now(), name: `error: ${e.message}` }));
  });
}

async function answers(addr: string, port: number, n = 12): Promise<string[]> {
  const out = new Set<string>();
  for (let i = 0; i < n; i++) out.add((await ask(addr, port)).name);
  return [...out].sort();
}

/**
 * `docker stop` through the engine's API: no docker CLI spawned in this process (a
 * spawn and the CLI's start stall the load loops for milliseconds, right when the
 * last connections to the stopped container are measured).
 */
function engineStop(name: string, timeoutS: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: '/var/run/docker.sock', method: 'POST', path: `/containers/${enc(name)}/stop?t=${timeoutS}` }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 204 || res.statusCode === 304 ? resolve() : reject(new Error(`stop ${name}: status ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end();
  });
}

interface EndpointJson {
  id: string;
  sources: string[];
  eligible: boolean;
  outReasons: string[];
}

async function endpointsOf(admin: number, service: string): Promise<EndpointJson[]> {
  const v = JSON.parse((await httpGet(`http://127.0.0.1:${admin}/api/v1/services`)).body) as { services: { name: string; endpoints: EndpointJson[] }[] };
  return v.services.find((s) => s.name === service)?.endpoints ?? [];
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

t.test('two berths, one engine, two label sets: a hosta container behind B\'s listeners, a hostb one behind A\'s', async (t) => {
  const SA = svcName('ed-a');
  const SB = svcName('ed-b');
  const etcd = await etcdServer(t);
  await etcd.start();
  const a = await host(t, etcd.url, 'node-a', '127.0.0.2', 'hosta', [{ name: 'b', service: SB }]);
  const b = await host(t, etcd.url, 'node-b', '127.0.0.3', 'hostb', [
    { name: 'a-tcp', service: SA },
    { name: 'a-http', service: SA, mode: 'http' },
  ]);
  const ca = await runContainer('ed-ca', { 'hosta.enable': 'true', 'hosta.service': SA });
  const cb = await runContainer('ed-cb', { 'hostb.enable': 'true', 'hostb.service': SB });

  await until(async () => (await answers('127.0.0.3', b.port('a-tcp'), 3)).join() === 'ed-ca', 15_000, "A's container served by B's tcp listener");
  t.same(await answers('127.0.0.3', b.port('a-tcp')), ['ed-ca'], "B's tcp listener: A's container answers every connection");
  await until(async () => (await answers('127.0.0.3', b.port('a-http'), 3)).join() === 'ed-ca', 15_000, "A's container served by B's http listener");
  t.same(await answers('127.0.0.3', b.port('a-http')), ['ed-ca'], "B's http listener: the same");
  await until(async () => (await answers('127.0.0.2', a.port('b'), 3)).join() === 'ed-cb', 15_000, "B's container served by A's listener");
  t.same(await answers('127.0.0.2', a.port('b')), ['ed-cb'], "A's listener: B's container answers every connection");

  // Local on its own host (docker), remote on the other (etcd, <name>@<host>); neither engine view crosses over.
  t.same((await endpointsOf(a.admin, SA)).map((e) => [e.id, e.sources]), [[ca, ['docker']]], 'A: its container, from docker');
  t.same((await endpointsOf(b.admin, SA)).map((e) => [e.id, e.sources]), [[`${ca}@node-a`, ['etcd']]], 'B: A\'s container, from etcd only');
  t.same((await endpointsOf(b.admin, SB)).map((e) => [e.id, e.sources]), [[cb, ['docker']]], 'B: its container, from docker');
  t.same((await endpointsOf(a.admin, SB)).map((e) => [e.id, e.sources]), [[`${cb}@node-b`, ['etcd']]], 'A: B\'s container, from etcd only');

  const mine = (await etcd.keys('/berth/v1/endpoints/')).filter((k) => k.includes(RUN));
  t.same(mine, [`/berth/v1/endpoints/${enc(SA)}/node-a/${enc(ca)}`, `/berth/v1/endpoints/${enc(SB)}/node-b/${enc(cb)}`].sort(), 'etcd: each container under its own host');
  t.same(await etcd.keys('/berth/v1/hosts/'), ['/berth/v1/hosts/node-a', '/berth/v1/hosts/node-b']);
  const r = await etcd.call('/v3/kv/range', { key: Buffer.from(`/berth/v1/endpoints/${enc(SA)}/node-a/${enc(ca)}`).toString('base64') });
  const entry = JSON.parse(Buffer.from((r['kvs'] as { value: string }[])[0]!.value, 'base64').toString()) as Record<string, unknown>;
  const ip = await docker('inspect', '-f', '{{.NetworkSettings.IPAddress}}', ca);
  t.match(entry, { address: ip, port: 8080, protocol: 'tcp', state: 'ready', healthy: true, container: { name: ca } }, 'the entry: the container\'s own address, ready');
});

t.test('early drain across hosts under load: 20 docker stops on A while B\'s clients send there, zero failed and zero late requests', async (t) => {
  const S = svcName('ed-drain');
  const ROUNDS = 20;
  const etcd = await etcdServer(t);
  await etcd.start();
  const a = await host(t, etcd.url, 'node-a', '127.0.0.2', 'hosta', [{ name: 'web', service: S }]);
  const b = await host(
    t,
    etcd.url,
    'node-b',
    '127.0.0.3',
    'hostb',
    [
      { name: 'tcp', service: S },
      { name: 'http', service: S, mode: 'http' },
    ],
    { [S]: { balance: 'round-robin' } },
  );

  // The engine's kill events of this run's containers, from the start of the test.
  const kills = new Map<string, { ms: number; signal: string }>();
  const events = spawn('docker', ['events', '--format', '{{json .}}', '--since', String(Math.floor(Date.now() / 1000) - 1), '--filter', `label=org.berth-test.run=${RUN}`, '--filter', 'event=kill'], { stdio: ['ignore', 'pipe', 'ignore'] });
  t.teardown(() => events.kill('SIGKILL'));
  createInterface({ input: events.stdout }).on('line', (line) => {
    const e = JSON.parse(line) as { Action: string; timeNano: number; Actor: { Attributes: Record<string, string> } };
    const name = e.Actor.Attributes['name']!;
    if (e.Action === 'kill' && !kills.has(name)) kills.set(name, { ms: e.timeNano / 1e6, signal: e.Actor.Attributes['signal'] ?? '' });
  });

  const labels = { 'hosta.enable': 'true', 'hosta.service': S };
  const stopOnFile = ['-e', 'STOP_ON_FILE=/tmp/go', '-v', `${FIXTURE}:/app/server.mjs:ro`];
  const runA = (n: number) => runContainer(`ed-a${n}`, labels, stopOnFile);
  await runContainer('ed-b0', { 'hostb.enable': 'true', 'hostb.service': S }, ['-v', `${FIXTURE}:/app/server.mjs:ro`]);
  let prev = await runA(0);
  await until(async () => (await answers('127.0.0.3', b.port('tcp'), 6)).join() === 'ed-a0,ed-b0', 15_000, "A's container and B's own in B's pool");

  // The load: 4 clients (2 through B's tcp listener, 2 through its http one), a new
  // connection per request, bounded in count and time.
  const results: Answer[] = [];
  const served = new Map<string, number>();
  let stop = false;
  const deadline = Date.now() + 120_000;
  const loops = ['tcp', 'tcp', 'http', 'http'].map(async (l) => {
    const port = b.port(l);
    while (!stop && Date.now() < deadline && results.length < 1_000_000) {
      const r = await ask('127.0.0.3', port);
      results.push(r);
      served.set(r.name, (served.get(r.name) ?? 0) + 1);
    }
  });
  t.teardown(() => {
    stop = true;
  });

  const rounds: { name: string; short: string; issued: number; out: number; how: string }[] = [];
  for (let i = 1; i <= ROUNDS; i++) {
    const next = await runA(i);
    await until(() => (served.get(`ed-a${i}`) ?? 0) > 0, 15_000, `ed-a${i} served through B`);
    const issued = now();
    const stopping = engineStop(prev, 30);
    stopping.catch(() => {});
    // Out of B's pick set: its explain data says stopping (the etcd entry is draining), or it is gone.
    let out = 0;
    let how = '';
    await until(async () => {
      const r = await httpGet(`http://127.0.0.1:${b.admin}/api/v1/endpoints/${enc(`${prev}@node-a`)}?service=${enc(S)}`);
      const at = now();
      if (r.status === 404) how = 'gone';
      else if ((JSON.parse(r.body) as EndpointJson).outReasons.includes('stopping')) how = 'stopping';
      else return false;
      out = at;
      return true;
    }, 10_000, `${prev} out of B's pick set`, 2);
    // Only now may the container stop accepting.
    await docker('exec', prev, 'touch', '/tmp/go');
    await stopping;
    rounds.push({ name: prev, short: `ed-a${i - 1}`, issued, out, how });
    prev = next;
  }
  stop = true;
  await Promise.all(loops);

  const failures = results.filter((r) => r.name.startsWith('error') || r.name.startsWith('status'));
  t.same(
    failures.map((f) => f.name),
    [],
    `zero failed requests out of ${results.length}`,
  );
  t.ok(results.length > ROUNDS * 20, `${results.length} requests during ${ROUNDS} stops`);
  const latencies: number[] = [];
  const gaps: number[] = [];
  const aOuts: number[] = [];
  const bOuts: number[] = [];
  /** When a berth logged the endpoint out of its pick set for stopping (ms resolution); NaN if it did not. */
  const outLogged = (berth: BerthProcess, id: string) => Date.parse(String(berth.logs.find((l) => l['endpoint'] === id && l.msg === 'endpoint updated' && /out: stopping/.test(String(l['change'])))?.['time']));
  let lateTotal = 0;
  for (const r of rounds) {
    const answered = results.filter((x) => x.name === r.short);
    const late = answered.filter((x) => x.started > r.out);
    lateTotal += late.length;
    const kill = kills.get(r.name);
    t.ok(kill !== undefined && (kill.signal === '15' || kill.signal === 'SIGTERM'), `${r.short}: kill event with SIGTERM (${JSON.stringify(kill)})`);
    t.ok(answered.length > 0, `${r.short} answered ${answered.length} requests through B before its stop`);
    const from = kill?.ms ?? r.issued;
    const last = Math.max(...answered.map((x) => x.started));
    latencies.push(last - from);
    // The load's resolution at this container: the median gap between its connections in the second before the stop.
    const before = answered.map((x) => x.started).filter((x) => x > from - 1000 && x <= from).sort((x, y) => x - y);
    if (before.length > 1) gaps.push(median(before.slice(1).map((x, k) => x - before[k]!)));
    const aOut = outLogged(a.berth, r.name) - from;
    const bOut = outLogged(b.berth, `${r.name}@node-a`) - from;
    aOuts.push(aOut);
    bOuts.push(bOut);
    t.comment(
      `${r.short}: kill → last request it answered through B ${(last - from).toFixed(1)} ms; out of the pick set (logged) on A ${aOut.toFixed(0)} ms, on B ${bOut.toFixed(0)} ms;` +
        ` out of B's pick set (${r.how}) seen in its admin API ${(r.out - from).toFixed(1)} ms after the kill; late ${late.length}`,
    );
  }
  t.equal(lateTotal, 0, 'no request started after B showed the container out of its pick set was answered by it');
  const pct = (xs: number[], q: number) => {
    const s = [...xs].sort((x, y) => x - y);
    return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!;
  };
  const p = (q: number) => pct(latencies, q);
  const outs = rounds.map((r) => r.out - (kills.get(r.name)?.ms ?? r.issued));
  const pOut = (q: number) => pct(outs, q);
  t.comment(
    `kill event → last new connection to the stopped container through B, over ${latencies.length} stops: p50 ${p(0.5).toFixed(1)} ms, p99 (max) ${p(0.99).toFixed(1)} ms, p99 < 500 ms: ${p(0.99) < 500}` +
      ` (negative: its last connection began before the kill event; one connection every ${median(gaps).toFixed(1)} ms went to it before the stop);` +
      ` kill → out of the pick set as logged on A: p50 ${pct(aOuts, 0.5).toFixed(0)} ms, max ${pct(aOuts, 0.99).toFixed(0)} ms; on B: p50 ${pct(bOuts, 0.5).toFixed(0)} ms, max ${pct(bOuts, 0.99).toFixed(0)} ms;` +
      ` kill → B's admin API shows it out: p50 ${pOut(0.5).toFixed(1)} ms, max ${pOut(0.99).toFixed(1)} ms; ${failures.length} failed of ${results.length}; late ${lateTotal}`,
  );
});
