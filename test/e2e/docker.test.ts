import dgram from 'node:dgram';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { Berth } from '../../src/runtime/runtime.js';
import { validateConfig } from '../../src/config/validate.js';
import type { DiscoveryObserver } from '../../src/core/discovery.js';
import { Flag } from '../../src/core/types.js';
import { dnsmasq } from '../helpers/dns.js';
import { docker, dockerReady, get, removeAll, RUN, runContainer } from '../helpers/docker.js';
import { httpGet, listenerPort, startBerth, until } from '../helpers/net.js';
import { silent } from '../helpers/proxy.js';
import { request } from '../helpers/http.js';

if (!dockerReady(t)) process.exit(0);
t.teardown(removeAll);

function countingDiscovery(): DiscoveryObserver & { errors: number; events: string[]; up: boolean[] } {
  const o = {
    errors: 0,
    events: [] as string[],
    up: [] as boolean[],
    event: (_p: string, a: string) => o.events.push(a),
    error: () => o.errors++,
    connected: (_p: string, up: boolean) => o.up.push(up),
    synced: () => {},
  };
  return o;
}

/** An in-process berth with docker discovery, fronting `service` in tcp mode. */
async function berthFor(t: Test, service: string, opts: { host?: string; balance?: string; observer?: DiscoveryObserver } = {}) {
  const config = validateConfig({
    listeners: [{ name: 'l', bind: '127.0.0.1:0', service, timeouts: { connect: '2s', idle: '30s' } }],
    services: opts.balance ? { [service]: { balance: opts.balance } } : {},
    discovery: { docker: { host: opts.host ?? 'unix:///var/run/docker.sock' } },
    admin: { bind: 'off' },
  });
  const berth = new Berth(config, { log: silent, dockerBackoff: { baseMs: 50, capMs: 500 }, ...(opts.observer ? { discoveryObserver: opts.observer } : {}) });
  await berth.start();
  t.teardown(() => berth.shutdown(0));
  const port = [...berth.listeners.values()][0]!.address.port;
  const svc = () => berth.pool.service(service);
  return { berth, port, svc };
}

const svcName = (s: string) => `${RUN}-${s}`.replace(/[^A-Za-z0-9_.-]/g, '-');

t.test('a labelled container gets traffic after start; an unlabelled one does not', async (t) => {
  const S = svcName('basic');
  const { berth, port, svc } = await berthFor(t, S);
  await runContainer('plain', {});
  await runContainer('labelled', { 'berth.enable': 'true', 'berth.service': S });
  await until(() => (svc()?.eligibleCount ?? 0) === 1, 10_000, 'labelled container in the pool');
  const seen = new Set<string>();
  for (let i = 0; i < 6; i++) seen.add(await get(port));
  t.same([...seen], ['labelled']);
  const all = [...berth.pool.services.values()].flatMap((s) => [...s.endpoints.keys()]);
  t.notOk(all.includes(`${RUN}-plain`), 'unlabelled container not in any service');
});

t.test('weights are honoured', async (t) => {
  const S = svcName('weights');
  const { port, svc } = await berthFor(t, S, { balance: 'round-robin' });
  await runContainer('w1', { 'berth.enable': 'true', 'berth.service': S, 'berth.weight': '1' });
  await runContainer('w3', { 'berth.enable': 'true', 'berth.service': S, 'berth.weight': '3' });
  await until(() => (svc()?.eligibleCount ?? 0) === 2, 10_000, 'both in the pool');
  // Both must be listening before counting: a connect to one still starting is retried on the other and skews counts.
  const warm = new Set<string>();
  await until(async () => warm.add(await get(port)).size === 2, 10_000, 'both serving');
  // Smooth weighted round-robin gives exactly 1:3 over any 4 consecutive whole cycles.
  const counts: Record<string, number> = { w1: 0, w3: 0 };
  for (let i = 0; i < 40; i++) {
    const n = await get(port);
    counts[n] = (counts[n] ?? 0) + 1;
  }
  t.ok(counts['w1']! >= 9 && counts['w1']! <= 11 && counts['w1']! + counts['w3']! === 40, `1:3 split: ${JSON.stringify(counts)}`);
});

t.test('HEALTHCHECK: starting gets nothing, healthy gets traffic, unhealthy is taken out', async (t) => {
  const S = svcName('health');
  const { port, svc } = await berthFor(t, S);
  const name = await runContainer('hc', { 'berth.enable': 'true', 'berth.service': S }, ['--health-cmd', 'test -f /tmp/ready', '--health-interval', '300ms', '--health-retries', '1']);
  await until(() => (svc()?.endpoints.size ?? 0) === 1, 10_000, 'container known');
  const ep = () => [...svc()!.endpoints.values()][0]!;
  t.ok(ep().flags & Flag.DockerUnhealthy, 'starting: out of the pick set');
  await t.rejects(get(port), 'no endpoint: the client is turned away');
  await docker('exec', name, 'touch', '/tmp/ready');
  await until(() => ep().flags === 0, 10_000, 'healthy');
  t.equal(await get(port), 'hc');
  await docker('exec', name, 'rm', '/tmp/ready');
  await until(() => (ep().flags & Flag.DockerUnhealthy) !== 0, 10_000, 'unhealthy');
  t.match(ep().history.map((h) => h.what).join('\n'), /out: docker-unhealthy/);
});

t.test('docker stop: out of the pick set at once, open request finishes, then removed', async (t) => {
  const S = svcName('stop');
  const { port, svc } = await berthFor(t, S);
  const old = await runContainer('old', { 'berth.enable': 'true', 'berth.service': S });
  await runContainer('other', { 'berth.enable': 'true', 'berth.service': S });
  await until(() => (svc()?.eligibleCount ?? 0) === 2, 10_000, 'both in');
  const warm = new Set<string>();
  await until(async () => warm.add(await get(port)).size === 2, 10_000, 'both serving');
  // A slow request that has reached "old" (its log says so) when "old" is stopped.
  let inflight: Promise<string> | undefined;
  for (let i = 0; i < 20 && inflight === undefined; i++) {
    const tag = `n${i}`;
    const p = get(port, `/?delay=1500&tag=${tag}`);
    const where = await Promise.race([
      until(async () => (await docker('logs', old)).includes(`tag=${tag}`), 3000, 'request at old').then(
        () => 'old',
        () => 'elsewhere',
      ),
      p.then((n) => n),
    ]);
    if (where === 'old') inflight = p;
    else await p;
  }
  const stopping = docker('stop', '-t', '10', old);
  await until(() => ((svc()!.endpoints.get(old)?.flags ?? Flag.Stopping) & Flag.Stopping) !== 0, 5000, 'stopping seen');
  for (let i = 0; i < 10; i++) t.equal(await get(port), 'other', 'new connections avoid the stopping container');
  t.equal(await inflight!, 'old', 'the open request finished');
  await stopping;
  await until(() => !svc()!.endpoints.has(old), 5000, 'removed after die');
});

t.test('a container with a bad label is skipped and counted; the others are untouched', async (t) => {
  const S = svcName('badlabel');
  const obs = countingDiscovery();
  const { berth, port, svc } = await berthFor(t, S, { observer: obs });
  await runContainer('good', { 'berth.enable': 'true', 'berth.service': S });
  await runContainer('bad', { 'berth.enable': 'true', 'berth.service': S, 'berth.weight': 'lots' });
  await until(() => (svc()?.eligibleCount ?? 0) === 1 && berth.docker!.skipped.length > 0, 10_000, 'good in, bad skipped');
  t.match(berth.docker!.skipped.find((s) => s.name === `${RUN}-bad`)?.reason, /berth.weight: expected an integer from 0 to 1000, got "lots"/);
  t.ok(obs.errors >= 1, 'counted');
  await until(async () => (await get(port).catch(() => '')) === 'good', 10_000, 'good serves');
});

t.test('engine connection cut and restored: pool kept, then resynced', async (t) => {
  const S = svcName('relay');
  // A relay in front of the engine socket that the test can cut.
  const path = join(tmpdir(), `${RUN}-relay.sock`);
  const conns = new Set<net.Socket>();
  // It also records every request line berth sends: discovery must only read.
  const requests: string[] = [];
  const relay = net.createServer((c) => {
    const up = net.connect('/var/run/docker.sock');
    conns.add(c);
    conns.add(up);
    c.on('data', (d: Buffer) => {
      for (const m of d.toString('latin1').matchAll(/(?:^|\r\n)([A-Z]+) (\/\S*) HTTP\/1\.[01]\r\n/g)) requests.push(`${m[1]} ${m[2]!.split('?')[0]}`);
    });
    c.pipe(up).pipe(c);
    const kill = () => {
      c.destroy();
      up.destroy();
      conns.delete(c);
      conns.delete(up);
    };
    c.on('error', kill);
    up.on('error', kill);
    c.on('close', kill);
  });
  const listen = async () => {
    relay.listen(path);
    await once(relay, 'listening');
  };
  const cut = () => {
    relay.close();
    for (const s of conns) s.destroy();
  };
  await listen();
  t.teardown(cut);
  const obs = countingDiscovery();
  const { berth, port, svc } = await berthFor(t, S, { host: `unix://${path}`, observer: obs });
  const a = await runContainer('ra', { 'berth.enable': 'true', 'berth.service': S });
  await until(() => (svc()?.eligibleCount ?? 0) === 1, 10_000, 'a in');
  await until(async () => (await get(port).catch(() => '')) === 'ra', 10_000, 'a serves');

  cut();
  await until(() => berth.docker!.connected === false, 5000, 'provider sees the loss');
  t.same(berth.readiness(), { ready: true, reasons: [], notes: ['docker engine disconnected; serving the last known endpoints, reconnecting'] }, '/readyz says it, still ready');
  t.equal(await get(port), 'ra', 'last known pool keeps serving while the engine is away');
  // Missed while away: a new container starts, the old one goes.
  await runContainer('rb', { 'berth.enable': 'true', 'berth.service': S });
  await docker('rm', '-f', a);
  t.ok(svc()!.endpoints.has(a), 'nothing changes while disconnected');

  await listen();
  await until(() => berth.docker!.connected === true, 10_000, 'reconnected');
  t.same(berth.readiness().notes, [], 'note gone once reconnected');
  await until(() => !svc()!.endpoints.has(a) && svc()!.endpoints.has(`${RUN}-rb`), 5000, 'resync caught the missed events');
  await until(async () => (await get(port).catch(() => '')) === 'rb', 10_000, 'b serves');
  t.same(obs.up, [true, false, true], 'connected → lost → restored');
  t.ok(requests.length >= 4, `requests seen: ${requests.length}`);
  const notRead = requests.filter((r) => !/^GET \/(v[\d.]+\/)?(containers\/json|containers\/[0-9a-f]+\/json|events|_ping|version)$/.test(r));
  t.same(notRead, [], `only GET on containers and events: ${[...new Set(requests.map((r) => r.replace(/[0-9a-f]{64}/, '{id}')))].join(', ')}`);
});

t.test('--workers 2 with --docker: discovery runs once, in the primary, and reaches every worker', async (t) => {
  const S = svcName('workers');
  const berth = await startBerth(['--docker', '--service', S, '--listen', '127.0.0.1:0', '--workers', '2', '--admin', 'off']);
  t.teardown(() => berth.kill('SIGKILL'));
  await runContainer('wk', { 'berth.enable': 'true', 'berth.service': S });
  const served = new Set<string>();
  await until(async () => {
    const answers = await Promise.all(Array.from({ length: 20 }, () => get(berth.port).catch(() => '')));
    for (const a of answers) if (a) served.add(a);
    return served.has('wk') && answers.every((x) => x === 'wk');
  }, 15_000, 'container served through both workers');
  t.same([...served], ['wk']);
  t.equal(berth.logs.filter((l) => l.msg === 'docker discovery synced').length, 1, 'one engine connection, in the primary');
  berth.kill('SIGTERM');
  t.equal(await berth.exited, 0);
});

t.test('berth inside a container on a user-defined network uses the network it shares with the endpoint', async (t) => {
  const S = svcName('incontainer');
  const net = `${RUN}-net`;
  await docker('network', 'create', '--label', `org.berth-test.run=${RUN}`, net);
  t.teardown(async () => {
    await removeAll();
    await docker('network', 'rm', net).catch(() => '');
  });
  // The endpoint is on the default bridge first, then also on the shared network.
  const web = await runContainer('ic-web', { 'berth.enable': 'true', 'berth.service': S });
  await docker('network', 'connect', net, web);
  const root = fileURLToPath(new URL('../../', import.meta.url));
  const berthName = await runContainer(
    'ic-berth',
    {},
    ['--network', net, '-v', `${root}:/app:ro`, '-v', '/var/run/docker.sock:/var/run/docker.sock:ro', '--entrypoint', 'node'],
    'berth-test/node',
    ['/app/dist/main.js', '--docker', '--service', S, '--listen', '0.0.0.0:8080', '--admin', '0.0.0.0:9901'],
  );
  const ip = await docker('inspect', '-f', `{{ (index .NetworkSettings.Networks "${net}").IPAddress }}`, berthName);
  const webIp = await docker('inspect', '-f', `{{ (index .NetworkSettings.Networks "${net}").IPAddress }}`, web);
  await until(async () => (await httpGet(`http://${ip}:9901/readyz`).catch(() => ({ status: 0 }))).status === 200, 20_000, 'berth in its container is ready', 100);
  t.equal((await httpGet(`http://${ip}:8080/`)).body.trim(), 'ic-web', 'served through berth-in-a-container');
  const explain = JSON.parse((await httpGet(`http://${ip}:9901/api/v1/endpoints/${web}`)).body) as { address: string; origin: { details: Record<string, string> }[] };
  t.equal(explain.origin[0]!.details['network'], `${net} (shared with berth)`);
  t.equal(explain.address, `${webIp}:8080`);
  t.match(await docker('logs', berthName), /berth runs in a container/);
});

t.test('active checks against containers; the berth.health.path label overrides the service path', async (t) => {
  const S = svcName('activehc');
  const config = validateConfig({
    listeners: [{ name: 'l', bind: '127.0.0.1:0', service: S }],
    services: { [S]: { health: { type: 'http', path: '/', interval: '100ms', timeout: '300ms', rise: 1, fall: 1 } } },
    discovery: { docker: {} },
    admin: { bind: 'off' },
  });
  const berth = new Berth(config, { log: silent });
  await berth.start();
  t.teardown(() => berth.shutdown(0));
  const plain = await runContainer('hc-plain', { 'berth.enable': 'true', 'berth.service': S });
  // This container's check path answers only after 2 s: slower than the 300 ms timeout.
  const slow = await runContainer('hc-slow', { 'berth.enable': 'true', 'berth.service': S, 'berth.health.path': '/?delay=2000' });
  const ep = (id: string) => berth.pool.service(S)?.endpoints.get(id);
  await until(() => ep(plain)?.flags === 0, 15_000, 'plain container passes its check');
  // Once it listens, its label path (2 s) times out where the service path (/) would pass.
  await until(() => berth.checker!.state(`${S}\0${slow}`)?.last?.detail === 'timeout after 300ms', 15_000, 'label path times out');
  t.ok((ep(slow)!.flags & Flag.ActiveUnhealthy) !== 0, 'kept out');
  t.equal(ep(plain)!.flags, 0, 'the same image on the service path passes');
});

t.test('HEADLINE: every container replaced one by one under load, zero failed requests', async (t) => {
  const S = svcName('rolling');
  const { port, svc } = await berthFor(t, S, { balance: 'round-robin' });
  const labels = { 'berth.enable': 'true', 'berth.service': S };
  const gen0 = await Promise.all(['g0a', 'g0b', 'g0c'].map((n) => runContainer(n, labels)));
  await until(() => (svc()?.eligibleCount ?? 0) === 3, 10_000, 'three in');
  await until(async () => (await Promise.all([1, 2, 3, 4, 5, 6].map(() => get(port).catch(() => '')))).every((x) => x !== ''), 10_000, 'all serving');

  let stop = false;
  const failures: string[] = [];
  const served: Record<string, number> = {};
  let total = 0;
  // A bounded load loop: 4 clients, a new connection per request.
  const loops = [0, 1, 2, 3].map(async () => {
    while (!stop && total < 200_000) {
      try {
        const n = await get(port, '/', 5000);
        served[n] = (served[n] ?? 0) + 1;
        total++;
      } catch (err) {
        failures.push(err instanceof Error ? err.message : String(err));
      }
    }
  });
  const gen1 = ['g1a', 'g1b', 'g1c'];
  for (let i = 0; i < 3; i++) {
    const fresh = await runContainer(gen1[i]!, labels);
    await until(() => svc()!.endpoints.get(fresh)?.eligible === true, 10_000, `${fresh} in`);
    await docker('stop', '-t', '10', gen0[i]!);
  }
  await until(() => gen1.every((n) => (served[n] ?? 0) > 0), 10_000, 'new generation serving');
  stop = true;
  await Promise.all(loops);
  t.same(failures, [], `zero failed requests out of ${total}`);
  t.ok(total > 200, `${total} requests during the replacement`);
  for (const n of [...['g0a', 'g0b', 'g0c'], ...gen1]) t.ok((served[n] ?? 0) > 0, `${n} served ${served[n]}`);
});

t.test('http mode: berth.http.host / berth.http.pathPrefix labels route requests to their containers', async (t) => {
  const A = svcName('route-a');
  const B = svcName('route-b');
  const config = validateConfig({
    listeners: [{ name: 'web', bind: '127.0.0.1:0', mode: 'http' }],
    discovery: { docker: { host: 'unix:///var/run/docker.sock' } },
    admin: { bind: 'off' },
  });
  const berth = new Berth(config, { log: silent });
  await berth.start();
  t.teardown(() => berth.shutdown(0));
  const port = [...berth.listeners.values()][0]!.address.port;
  await runContainer('route-a', { 'berth.enable': 'true', 'berth.service': A, 'berth.http.host': 'a.test' });
  await runContainer('route-b', { 'berth.enable': 'true', 'berth.service': B, 'berth.http.host': 'a.test', 'berth.http.pathPrefix': '/b' });
  await until(() => (berth.pool.service(A)?.eligibleCount ?? 0) === 1 && (berth.pool.service(B)?.eligibleCount ?? 0) === 1, 10_000, 'both containers in their pools');
  const body = async (host: string, path: string) => {
    const r = await request(port, { path, headers: { host } });
    return r.status === 200 ? r.body.trim() : String(r.status);
  };
  t.equal(await body('a.test', '/'), 'route-a');
  t.equal(await body('a.test', '/b/x'), 'route-b', 'longer path prefix wins');
  t.equal(await body('other.test', '/'), '404', 'no route: 404');
  await docker('rm', '-f', `${RUN}-route-b`);
  await until(async () => (await body('a.test', '/b/x')) === 'route-a', 10_000, 'route of a removed container goes');
});

t.test('a container with two pools from its labels: http on one port, udp on another, each behind its own listener', async (t) => {
  const WEB = svcName('two-web');
  const ECHO = svcName('two-echo');
  const config = validateConfig({
    listeners: [
      { name: 'web', bind: '127.0.0.1:0', mode: 'http', service: WEB },
      { name: 'echo', bind: '127.0.0.1:0', mode: 'udp', service: ECHO, udp: { responses: 1 } },
    ],
    discovery: { docker: { host: 'unix:///var/run/docker.sock' } },
    admin: { bind: 'off' },
  });
  const berth = new Berth(config, { log: silent });
  await berth.start();
  t.teardown(() => berth.shutdown(0));
  const webPort = berth.listeners.get('name:web')!.address.port;
  const echoPort = berth.listeners.get('name:echo')!.address.port;
  await runContainer('two', { 'berth.enable': 'true', [`berth.services.${WEB}.port`]: '8080', [`berth.services.${ECHO}.port`]: '5353', [`berth.services.${ECHO}.protocol`]: 'udp' }, ['-e', 'UDP_PORT=5353']);
  // Mixing the one-pool labels with per-pool ones: skipped, with the reason.
  await runContainer('two-mixed', { 'berth.enable': 'true', 'berth.port': '8080', [`berth.services.${ECHO}.port`]: '5353' });
  await until(() => (berth.pool.service(WEB)?.eligibleCount ?? 0) === 1 && (berth.pool.service(ECHO)?.eligibleCount ?? 0) === 1, 10_000, 'one container, in both pools');
  const ep = [...berth.pool.service(ECHO)!.endpoints.values()][0]!;
  t.equal(ep.spec.protocol, 'udp');
  t.equal(ep.spec.labels?.['port'], '5353 (label berth.services.' + ECHO + '.port)');
  t.equal(await get(webPort), 'two', 'http to its web pool');
  const sock = dgram.createSocket('udp4');
  t.teardown(() => sock.close());
  let answer = '';
  sock.on('message', (m) => (answer = m.toString()));
  // Datagrams may be lost: sent again until one is answered.
  await until(() => {
    if (answer === '') sock.send('hello', echoPort, '127.0.0.1');
    return answer !== '';
  }, 10_000, 'an answer over udp', 200);
  t.equal(answer, 'two:hello', 'udp to its echo pool, the same container');
  await until(() => berth.docker!.skipped.some((s) => s.name === `${RUN}-two-mixed`), 10_000, 'the mixed one skipped');
  t.match(berth.docker!.skipped.find((s) => s.name === `${RUN}-two-mixed`)?.reason, /berth.<label> and berth.services.<name>.<label> mixed/);
});

t.test('--workers 2 with docker and dns: every worker gets every provider\'s endpoints, not just the last provider\'s', async (t) => {
  const S = svcName('twoprov');
  // The container is up before berth starts: its endpoints reach the workers only by
  // the primary's replay of what discovery found before they were forked.
  await runContainer('tp', { 'berth.enable': 'true', 'berth.service': S });
  const named = net.createServer((s) => s.end('HTTP/1.1 200 OK\r\ncontent-length: 1\r\nconnection: close\r\n\r\nD'));
  await new Promise<void>((r) => named.listen(0, '127.0.0.1', r));
  t.teardown(() => named.close());
  const dns = await dnsmasq(t, '127.0.0.1 other.svc.test\n');
  const dir = mkdtempSync(join(tmpdir(), 'berth-twoprov-'));
  const file = join(dir, 'berth.json');
  writeFileSync(
    file,
    JSON.stringify({
      listeners: [
        { name: 'd', bind: '127.0.0.1:0', service: S },
        { name: 'n', bind: '127.0.0.1:0', service: 'named' },
      ],
      discovery: { docker: {}, dns: [{ name: 'other.svc.test', service: 'named', port: (named.address() as net.AddressInfo).port, servers: [`127.0.0.1:${dns.port}`], interval: '1s' }] },
      admin: { bind: 'off' },
    }),
  );
  const berth = await startBerth(['-c', file, '--workers', '2']);
  t.teardown(() => berth.kill('SIGKILL'));
  await until(() => berth.logs.filter((l) => l.msg === 'listening').length === 4, 10_000, 'both workers listening');
  const portOf = (name: string) => listenerPort(berth, name);
  const served = new Map<string, number>();
  for (let i = 0; i < 40; i++) {
    for (const [l, port] of [['d', portOf('d')], ['n', portOf('n')]] as const) {
      const a = await get(port).catch(() => '');
      served.set(`${l}:${a}`, (served.get(`${l}:${a}`) ?? 0) + 1);
    }
  }
  t.same([...served.keys()].sort(), ['d:tp', 'n:D'], `every request answered, through both workers: ${JSON.stringify([...served])}`);
  berth.kill('SIGTERM');
  t.equal(await berth.exited, 0);
});
