import { execFile } from 'node:child_process';
import { writeFileSync, mkdtempSync, chmodSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import t from 'tap';
import { docker, dockerReady, RUN } from '../helpers/docker.js';
import { freePort, until } from '../helpers/net.js';

const exec = promisify(execFile);

// A single-node swarm; berth (the image built from the repository's Dockerfile) in a
// container on an attachable overlay network, in front of a replicated service.
if (!dockerReady(t)) process.exit(0);
if ((await docker('image', 'ls', '-q', 'berth-test/berth')) === '') {
  if (process.env.BERTH_REQUIRE_DOCKER === '1') throw new Error('image berth-test/berth is missing: run scripts/test-images.sh');
  void t.test('image berth-test/berth missing (scripts/test-images.sh)', { skip: true }, () => {});
  process.exit(0);
}

// Two deployments, each under load through scaling (and a rolling update): more than
// tap's default two minutes per file.
t.setTimeout(480_000);

const state = await docker('info', '--format', '{{.Swarm.LocalNodeState}}');
if (state !== 'active') await docker('swarm', 'init', '--advertise-addr', '127.0.0.1');

const NET = `${RUN}-overlay`;
const SVC = `${RUN}-web`;
const BERTH = `${RUN}-berth`;

/** Removes services (and waits for their task containers), then networks. */
async function removeSwarm(services: string[], networks: string[]): Promise<void> {
  for (const s of services) await docker('service', 'rm', s).catch(() => '');
  for (const s of services) await until(async () => (await docker('ps', '-aq', '--filter', `label=com.docker.swarm.service.name=${s}`)) === '', 30_000, `tasks of ${s} gone`, 500).catch(() => {});
  for (const n of networks) await docker('network', 'rm', n).catch(() => '');
}

function get(port: number, agent: http.Agent): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent, timeout: 15_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: body.trim() }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

/**
 * Keep-alive HTTP clients against berth on `port`: `seen` collects the task names
 * that answered. `untilServing(n)` waits (before any load) until n tasks answered;
 * `start()` runs 8 clients (bounded: 3 minutes or `finish()`).
 */
function loadOn(port: number) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  const seen = new Set<string>();
  const failures: string[] = [];
  let ok = 0;
  let stop = false;
  let clients: Promise<void>[] = [];
  const tryGet = async () => {
    try {
      const r = await get(port, agent);
      if (r.status === 200) seen.add(r.body);
      return r.status;
    } catch {
      return 0;
    }
  };
  return {
    seen,
    failures,
    get ok() {
      return ok;
    },
    untilServing: (n: number, what: string) => until(async () => (await tryGet()) === 200 && seen.size >= n, 90_000, what, 250),
    start() {
      const deadline = Date.now() + 180_000;
      clients = Array.from({ length: 8 }, async () => {
        while (!stop && Date.now() < deadline) {
          try {
            const r = await get(port, agent);
            if (r.status === 200) {
              ok++;
              seen.add(r.body);
            } else failures.push(`status ${r.status}: ${r.body}`);
          } catch (err) {
            failures.push(String(err));
          }
        }
      });
    },
    async finish() {
      stop = true;
      await Promise.all(clients);
      agent.destroy();
    },
  };
}

t.test('swarm: scale 2 -> 4 -> 1 under load with zero failed requests; every task served', async (t) => {
  t.teardown(async () => {
    await docker('rm', '-f', BERTH).catch(() => '');
    await removeSwarm([SVC], [NET]);
  });
  await docker('network', 'create', '-d', 'overlay', '--attachable', NET);
  await docker(
    'service', 'create', '--detach', '--no-resolve-image', '--name', SVC, '--replicas', '2', '--network', NET,
    '--label', 'berth.enable=true', '--label', 'berth.port=8080', '--label', `berth.service=web`,
    '--env', 'NAME={{.Task.Name}}', '--stop-grace-period', '10s', 'berth-test/web',
  );
  const dir = mkdtempSync(join(tmpdir(), 'berth-swarm-'));
  chmodSync(dir, 0o755);
  const cfg = join(dir, 'berth.yaml');
  writeFileSync(
    cfg,
    `listeners:
  - name: web
    bind: 0.0.0.0:8080
    mode: http
    service: web
    # A task whose network is being torn down may swallow SYNs: fail over quickly.
    timeouts: { connect: 1s }
discovery:
  swarm: { host: unix:///var/run/docker.sock }
admin: { bind: 0.0.0.0:9901 }
`,
    { mode: 0o644 },
  );
  // Least privilege: berth gets the engine only through a relay that refuses anything
  // but GET on containers, events, networks, services, tasks and info.
  const allowed = /^GET \/(v[\d.]+\/)?(containers\/json|containers\/[0-9a-f]+\/json|events|_ping|version|info|networks(\/[\w.-]+)?|services(\/[\w.-]+)?|tasks)$/;
  const requests = new Set<string>();
  const refused: string[] = [];
  const relayPath = join(dir, 'docker.sock');
  const relay = net.createServer((c) => {
    const up = net.connect('/var/run/docker.sock');
    c.on('data', (d: Buffer) => {
      for (const m of d.toString('latin1').matchAll(/(?:^|\r\n)([A-Z]+) (\/\S*) HTTP\/1\.[01]\r\n/g)) {
        const line = `${m[1]} ${m[2]!.split('?')[0]}`;
        requests.add(line.replace(/[0-9a-f]{64}/, '{id}'));
        if (!allowed.test(line)) {
          refused.push(line);
          c.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
          up.destroy();
          return;
        }
      }
      up.write(d);
    });
    up.pipe(c);
    const kill = () => {
      c.destroy();
      up.destroy();
    };
    c.on('error', kill);
    up.on('error', kill);
    c.on('close', kill);
    up.on('close', () => c.end());
  });
  await new Promise<void>((r) => relay.listen(relayPath, r));
  chmodSync(relayPath, 0o666);
  t.teardown(() => relay.close());
  await docker(
    'run', '-d', '--name', BERTH, '--network', NET, '-p', '127.0.0.1::8080', '-p', '127.0.0.1::9901',
    '-v', `${relayPath}:/var/run/docker.sock:ro`, '-v', `${cfg}:/etc/berth.yaml:ro`,
    'berth-test/berth', 'run', '-c', '/etc/berth.yaml',
  );
  const port = Number((await docker('port', BERTH, '8080/tcp')).split('\n')[0]!.split(':').pop());
  const load = loadOn(port);
  await load.untilServing(2, 'berth serves both tasks');
  load.start();
  try {
    await docker('service', 'scale', '--detach', `${SVC}=4`);
    await until(() => load.seen.size >= 4, 90_000, `four tasks served (${[...load.seen].join(', ')})`, 250);
    const atFour = load.ok;
    await docker('service', 'scale', '--detach', `${SVC}=1`);
    // Wait until the three removed tasks are gone from the engine, then a little more load.
    await until(async () => (await docker('service', 'ps', '-q', '--filter', 'desired-state=running', SVC)).split('\n').filter(Boolean).length === 1, 60_000, 'scaled to 1', 500);
    await until(async () => (await docker('ps', '-q', '--filter', `label=com.docker.swarm.service.name=${SVC}`)).split('\n').filter(Boolean).length === 1, 60_000, 'old task containers stopped', 500);
    const before = load.ok;
    await until(() => load.ok > before + 200, 30_000, 'load after scale-down', 100);
    t.ok(atFour > 0 && load.ok > atFour);
  } finally {
    await load.finish();
  }
  t.comment(`${load.ok} requests, ${load.failures.length} failed; tasks served: ${[...load.seen].sort().join(', ')}`);
  t.same(load.failures, [], 'zero failed requests through scale-up and scale-down');
  t.ok(load.seen.size >= 4, 'every task served');
  const logs = await docker('logs', BERTH);
  t.match(logs, /swarm discovery synced/);
  t.same(refused, [], `berth made only read calls through the filtering relay: ${[...requests].sort().join(', ')}`);
  t.ok(requests.size >= 3);
  // The image's HEALTHCHECK (GET /healthz every 10 s) reports healthy.
  await until(async () => (await docker('inspect', '-f', '{{.State.Health.Status}}', BERTH)) === 'healthy', 40_000, 'container healthy', 500);
  t.pass('the image HEALTHCHECK passes');
});

t.test('examples/swarm/stack.yml with docker stack deploy: scale 3 -> 5, rolling update, scale -> 1 under load, zero failed', async (t) => {
  // The example as its README says, with the local images and a free published port.
  const stack = `${RUN}-shop`;
  const port = await freePort();
  const env = { ...process.env, BERTH_IMAGE: 'berth-test/berth', WEB_IMAGE: 'berth-test/web', WEB_PORT: '8080', BERTH_PORT: String(port) };
  const dir = fileURLToPath(new URL('../../examples/swarm/', import.meta.url));
  const stackTasks = async () => (await docker('ps', '-aq', '--filter', `label=com.docker.stack.namespace=${stack}`)).split('\n').filter(Boolean).length;
  t.teardown(async () => {
    await docker('stack', 'rm', stack).catch(() => '');
    await until(async () => (await stackTasks()) === 0, 60_000, 'stack containers gone', 500).catch(() => {});
    // stack rm removes the network asynchronously; make sure it is gone before the next run.
    await until(
      async () => {
        await docker('network', 'rm', `${stack}_shop`).catch(() => '');
        return (await docker('network', 'ls', '-q', '--filter', `name=${stack}_shop`)) === '';
      },
      30_000,
      'stack network gone',
      500,
    ).catch(() => {});
  });
  // Another team's service with the same pool name, on an overlay berth is not attached
  // to: its task address is unreachable from berth, so it must be skipped, not sent to.
  const decoy = `${RUN}-decoy`;
  await docker('network', 'create', '-d', 'overlay', `${decoy}-net`);
  t.teardown(() => removeSwarm([decoy], [`${decoy}-net`]));
  await docker(
    'service', 'create', '--detach', '--no-resolve-image', '--name', decoy, '--network', `${decoy}-net`,
    '--label', 'berth.enable=true', '--label', 'berth.port=8080', '--label', 'berth.service=web', 'berth-test/web',
  );
  await exec('docker', ['stack', 'deploy', '-c', 'stack.yml', stack], { cwd: dir, env });
  const web = `${stack}_web`;
  const load = loadOn(port);
  await load.untilServing(3, 'the stack serves from its three tasks');
  load.start();
  const running = async () => (await docker('ps', '-q', '--filter', `label=com.docker.swarm.service.name=${web}`)).split('\n').filter(Boolean).length;
  try {
    await docker('service', 'scale', '--detach', `${web}=5`);
    await until(() => load.seen.size >= 5, 90_000, `five tasks served (${[...load.seen].join(', ')})`, 250);
    // Rolling update (the stack says start-first): every task replaced, one at a time.
    await docker('service', 'update', '--force', '--detach=false', '--quiet', web);
    await until(() => load.seen.size >= 10, 60_000, `the five replacement tasks served (${load.seen.size} seen)`, 250);
    const afterUpdate = load.ok;
    await docker('service', 'scale', '--detach', `${web}=1`);
    await until(async () => (await running()) === 1, 60_000, 'scaled to 1', 500);
    const before = load.ok;
    await until(() => load.ok > before + 200, 30_000, 'load after scale-down', 100);
    t.ok(load.ok > afterUpdate);
  } finally {
    await load.finish();
  }
  t.comment(`${load.ok} requests, ${load.failures.length} failed; ${load.seen.size} tasks served`);
  t.same(load.failures, [], 'zero failed requests through scale-up, rolling update and scale-down');
  const logs = await docker('service', 'logs', '--raw', `${stack}_berth`);
  t.match(logs, /swarm discovery synced/);
  t.match(logs, new RegExp(`${decoy}[^\\n]*no network shared with berth`), 'the decoy task is skipped with the reason');
});
