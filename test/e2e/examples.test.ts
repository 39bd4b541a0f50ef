import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { docker, dockerReady, RUN } from '../helpers/docker.js';
import { freePort, httpGet, until } from '../helpers/net.js';

// The examples, run as their READMEs say, against the real engine, with the image
// built from the repository's Dockerfile (berth-test/berth, scripts/test-images.sh).
if (!dockerReady(t)) process.exit(0);
if ((await docker('image', 'ls', '-q', 'berth-test/berth')) === '') {
  if (process.env.BERTH_REQUIRE_DOCKER === '1') throw new Error('image berth-test/berth is missing: run scripts/test-images.sh');
  process.exit(0);
}

const examples = fileURLToPath(new URL('../../examples/', import.meta.url));

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { env: { ...process.env, ...env } });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d));
    p.stderr.on('data', (d: Buffer) => (out += d));
    p.on('exit', (code) => resolve({ code, out }));
  });
}

t.test('sidecar-mtls: allowed client through, another identity 403, no certificate refused', async (t) => {
  const prefix = `${RUN}-sidecar`;
  const certs = mkdtempSync(join(tmpdir(), 'berth-sidecar-'));
  const port = await freePort();
  t.teardown(async () => {
    await docker('rm', '-f', `${prefix}-berth`, `${prefix}-app`).catch(() => '');
  });
  const setup = await run(join(examples, 'sidecar-mtls', 'run.sh'), [], { BERTH_IMAGE: 'berth-test/berth', APP_IMAGE: 'berth-test/web', CERTS: certs, PREFIX: prefix, PORT: String(port) });
  t.equal(setup.code, 0, setup.out);
  const curl = (who: string | null) =>
    run('curl', ['-s', '-w', '\n%{http_code}', '--cacert', join(certs, 'ca.pem'), ...(who ? ['--cert', join(certs, `${who}.pem`), '--key', join(certs, `${who}-key.pem`)] : []), `https://localhost:${port}/`]);
  await until(async () => (await curl('frontend')).out.endsWith('\n200'), 30_000, 'sidecar serving', 250);
  const ok = await curl('frontend');
  t.match(ok.out, /^app\n\n?200$/, 'allowed identity reaches the app');
  t.match((await curl('intruder')).out, /forbidden[^]*\n403$/, 'verified but not allowed: 403');
  t.notMatch((await curl(null)).out, /\n200$/, 'no client certificate: refused');
  const metrics = await docker('exec', `${prefix}-berth`, 'node', '-e', "fetch('http://127.0.0.1:9901/metrics').then(r=>r.text()).then(t=>console.log(t))");
  t.match(metrics, /berth_tls_handshakes_total\{listener="app-in",result="not_allowed"\} 1/);
  t.match(metrics, /berth_tls_handshakes_total\{listener="app-in",result="no_cert"\} 1/);
});

t.test('front-a-group (docker-compose): requests spread over three containers; Prometheus scrapes berth', async (t) => {
  if (spawnSync('which', ['docker-compose']).status !== 0) throw new Error('docker-compose is required (Debian: docker-compose); .ci/run installs it');
  const project = `${RUN}-front`.replace(/[^a-z0-9]/g, '');
  const [berthPort, adminPort, promPort] = [await freePort(), await freePort(), await freePort()];
  const env = {
    BERTH_IMAGE: 'berth-test/berth',
    WEB_IMAGE: 'berth-test/web',
    WEB_PORT: '8080',
    PROMETHEUS_IMAGE: 'berth-test/prometheus',
    DOCKER_GID: String(statSync('/var/run/docker.sock').gid),
    BERTH_PORT: String(berthPort),
    ADMIN_PORT: String(adminPort),
    PROMETHEUS_PORT: String(promPort),
  };
  const compose = (...args: string[]) => run('docker-compose', ['-p', project, '-f', join(examples, 'front-a-group', 'docker-compose.yml'), ...args], env);
  t.teardown(async () => {
    await compose('down', '-v', '--remove-orphans');
  });
  const up = await compose('up', '-d', '--scale', 'web=3');
  t.equal(up.code, 0, up.out);
  const names = new Set<string>();
  await until(
    async () => {
      const r = await httpGet(`http://127.0.0.1:${berthPort}/`).catch(() => null);
      if (r?.status === 200) names.add(r.body.trim());
      return names.size === 3;
    },
    60_000,
    `three containers answer (${[...names].join(', ')})`,
    100,
  );
  t.equal(names.size, 3, 'requests spread over the three web containers');
  const query = encodeURIComponent('count(berth_upstream_up{service="web"} == 1)');
  await until(
    async () => {
      const r = await httpGet(`http://127.0.0.1:${promPort}/api/v1/query?query=${query}`).catch(() => null);
      return r !== null && /"value":\[[\d.]+,"3"\]/.test(r.body);
    },
    60_000,
    'Prometheus sees three endpoints up',
    1000,
  );
  t.pass('Prometheus scraped berth: three endpoints up');
});

t.test('layer4 (docker-compose): dig through berth to a dnsmasq pool; psql to two PostgreSQL servers behind one port by SNI', async (t) => {
  if (spawnSync('which', ['docker-compose']).status !== 0) throw new Error('docker-compose is required (Debian: docker-compose); .ci/run installs it');
  const project = `${RUN}-layer4`.replace(/[^a-z0-9]/g, '');
  const [dnsPort, pgPort, adminPort] = [await freePort(), await freePort(), await freePort()];
  const env = {
    BERTH_IMAGE: 'berth-test/berth',
    DNS_IMAGE: 'berth-test/dnsmasq',
    PG_IMAGE: 'berth-test/postgres',
    DOCKER_GID: String(statSync('/var/run/docker.sock').gid),
    DNS_PORT: String(dnsPort),
    PG_PORT: String(pgPort),
    ADMIN_PORT: String(adminPort),
  };
  const compose = (...args: string[]) => run('docker-compose', ['-p', project, '-f', join(examples, 'layer4', 'docker-compose.yml'), ...args], env);
  t.teardown(async () => {
    await compose('down', '-v', '--remove-orphans');
  });
  const up = await compose('up', '-d');
  t.equal(up.code, 0, up.out);
  // Both dnsmasq servers in the pool, past their first dns check.
  await until(
    async () => {
      const r = await httpGet(`http://127.0.0.1:${adminPort}/api/v1/services`).catch(() => null);
      if (r?.status !== 200) return false;
      const s = JSON.parse(r.body) as { services: { name: string; endpoints: { health: string }[] }[] };
      const dns = s.services.find((x) => x.name === 'dns');
      return dns !== undefined && dns.endpoints.length === 2 && dns.endpoints.every((e) => e.health === 'up');
    },
    60_000,
    'two dnsmasq endpoints up',
    200,
  );
  const dig = await run('dig', ['+short', '+tries=3', '+time=2', '-p', String(dnsPort), '@127.0.0.1', 'web.svc.example']);
  t.equal(dig.out.trim(), '10.0.0.7', 'the answer through berth');
  const psql = (db: string) => run('psql', [`host=${db}.example.com hostaddr=127.0.0.1 port=${pgPort} user=postgres dbname=postgres sslmode=require connect_timeout=5`, '-Atc', "select current_setting('cluster_name') || ' ' || ssl from pg_stat_ssl where pid = pg_backend_pid()"], { PGGSSENCMODE: 'disable' });
  for (const db of ['db1', 'db2']) {
    let got = { code: null as number | null, out: '' };
    // A server takes a moment to start after its container does: asked again until it answers.
    await until(
      async () => {
        got = await psql(db);
        return got.code === 0;
      },
      60_000,
      `${db} answers through berth`,
      500,
    );
    t.equal(got.out.trim(), `${db} true`, `${db} by its name, TLS end to end`);
  }
});
