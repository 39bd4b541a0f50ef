import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { cgroupCpuQuota, usableCpus } from '../../src/cluster/cpus.js';
import { exchange, nameServer, runCli, startBerth } from '../helpers/net.js';

const dir = await mkdtemp(join(tmpdir(), 'berth-cli-'));

t.test('berth check: 0 for a good file, 1 with every error and its path for a bad one', async (t) => {
  const good = join(dir, 'good.yaml');
  await writeFile(good, 'listeners:\n  - bind: 127.0.0.1:7000\n    service: web\nservices:\n  web:\n    endpoints: ["10.0.0.5:80,weight=3", "10.0.0.6:80"]\n');
  const ok = await runCli(['check', '-c', good]);
  t.equal(ok.code, 0, ok.stderr);
  t.match(ok.stdout, /ok \(1 listener\(s\), 1 service\(s\), 2 static endpoint\(s\)\)/);

  const bad = join(dir, 'bad.yaml');
  await writeFile(bad, 'listeners:\n  - bind: nowhere\n    service: web\n    timeouts: { idle: forever }\nservices:\n  web:\n    balance: magic\n    endpoints: ["10.0.0.5"]\nsurprise: true\n');
  const r = await runCli(['check', '-c', bad]);
  t.equal(r.code, 1);
  t.match(r.stderr, /invalid configuration \(5 errors\)/);
  for (const path of ['listeners[0].bind:', 'listeners[0].timeouts.idle:', 'services.web.balance:', 'services.web.endpoints[0]:', 'surprise: unknown key']) {
    t.ok(r.stderr.includes(path), `names ${path}`);
  }
  const missing = await runCli(['check', '-c', join(dir, 'nope.yaml')]);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /cannot read config file/);
  const syntax = join(dir, 'syntax.yaml');
  await writeFile(syntax, 'listeners: [\n');
  t.equal((await runCli(['check', '-c', syntax])).code, 1);
  // "Billion laughs": aliases that expand without bound are a config error (1), not a crash (2).
  const bomb = join(dir, 'bomb.yaml');
  const levels = ['a: &a ["x","x","x","x","x","x","x","x","x"]'];
  for (let i = 1; i < 8; i++) levels.push(`l${i}: &l${i} [${Array(9).fill(i === 1 ? '*a' : `*l${i - 1}`).join(',')}]`);
  await writeFile(bomb, `${levels.join('\n')}\nlisteners: *l7\n`);
  const b = await runCli(['check', '-c', bomb]);
  t.equal(b.code, 1, b.stderr);
  t.match(b.stderr, /alias/i);
});

t.test('exit code 1 for bad arguments, naming the flag', async (t) => {
  const unknown = await runCli(['--listen', '127.0.0.1:0', '--backend', '127.0.0.1:1', '--frobnicate']);
  t.equal(unknown.code, 1);
  t.match(unknown.stderr, /Unknown argument: frobnicate/);
  const badBackend = await runCli(['--listen', '127.0.0.1:0', '--backend', 'nohost']);
  t.equal(badBackend.code, 1);
  t.match(badBackend.stderr, /--backend\[0\]: expected host:port/);
  const badBalance = await runCli(['--listen', '127.0.0.1:0', '--backend', '127.0.0.1:1', '--balance', 'magic']);
  t.equal(badBalance.code, 1);
  t.match(badBalance.stderr, /balance/);
  const clash = await runCli(['-c', '/dev/null', '--listen', '1234']);
  t.equal(clash.code, 1);
  t.match(clash.stderr, /--listen cannot be combined with --config/);
  const nothing = await runCli([]);
  t.equal(nothing.code, 1);
  t.match(nothing.stderr, /--listen: at least one address/);
});

t.test('exit code 2 when the port is in use', async (t) => {
  const blocker = net.createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  t.teardown(() => blocker.close());
  const port = (blocker.address() as net.AddressInfo).port;
  const r = await runCli(['--listen', `127.0.0.1:${port}`, '--backend', '127.0.0.1:1', '--admin', 'off']);
  t.equal(r.code, 2);
  t.match(r.stderr, /cannot bind 127\.0\.0\.1:\d+: EADDRINUSE/);
});

t.test('BERTH_* environment variables set flags', async (t) => {
  const a = await nameServer('A');
  const b = await nameServer('B');
  t.teardown(() => {
    a.close();
    b.close();
  });
  const berth = await startBerth([], {
    env: { BERTH_LISTEN: '127.0.0.1:0', BERTH_BACKEND: `127.0.0.1:${a.port} 127.0.0.1:${b.port}`, BERTH_BALANCE: 'round-robin', BERTH_ADMIN: 'off', BERTH_LOG_LEVEL: 'info' },
  });
  t.teardown(() => berth.kill('SIGKILL'));
  const got = new Set<string>();
  for (let i = 0; i < 4; i++) got.add((await exchange(berth.port)).data.toString());
  t.same([...got].sort(), ['A', 'B']);
  const started = await berth.waitLog((l) => l.msg === 'listening');
  t.equal(started['balance'], 'round-robin');
  berth.kill('SIGTERM');
  t.equal(await berth.exited, 0);
});

t.test('unrelated BERTH_* variables are ignored; command-line flags beat the environment', async (t) => {
  const a = await nameServer('A');
  t.teardown(() => a.close());
  const berth = await startBerth(['--listen', '127.0.0.1:0', '--backend', `127.0.0.1:${a.port}`], {
    env: { BERTH_REQUIRE_DOCKER: '1', BERTH_SOMETHING_ELSE: 'x', BERTH_LISTEN: '127.0.0.1:1', BERTH_ADMIN: 'off' },
  });
  t.teardown(() => berth.kill('SIGKILL'));
  t.equal((await exchange(berth.port)).data.toString(), 'A');
  t.not(berth.port, 1, '--listen beat BERTH_LISTEN');
  const started = await berth.waitLog((l) => l.msg === 'berth started');
  t.equal(started['admin'], 'off', 'BERTH_ADMIN applied');
  berth.kill('SIGTERM');
  t.equal(await berth.exited, 0);
});

t.test('berth demo works with no Docker and no config', async (t) => {
  const demo = await startBerth(['demo', '--listen', '127.0.0.1:0', '--admin', 'off']);
  t.teardown(() => demo.kill('SIGKILL'));
  const names = new Set<string>();
  for (let i = 0; i < 3; i++) {
    const r = await exchange(demo.port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    const m = /hello from (backend-\d)/.exec(r.data.toString());
    if (m) names.add(m[1]!);
  }
  t.same([...names].sort(), ['backend-1', 'backend-2', 'backend-3'], 'round-robin over the three demo endpoints');
  await demo.waitLog(() => demo.stderr.includes('Try, in another terminal'), 3000).catch(() => undefined);
  t.match(demo.stderr, /curl http:\/\/127\.0\.0\.1:\d+\//, 'prints what to try');
  const httpLine = await demo.waitLog((l) => l.msg === 'listening' && l['mode'] === 'http');
  const httpPort = Number(String(httpLine['bind']).split(':').pop());
  const viaHttp = await exchange(httpPort, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  t.match(viaHttp.data.toString(), /^HTTP\/1\.1 200[^]*hello from backend-\d \(berth forwarded a request from 127\.0\.0\.1\)/, 'the http listener forwards with X-Forwarded-For');
  demo.kill('SIGINT');
  t.equal(await demo.exited, 0);
});

t.test('--workers auto counts the CPUs a cgroup quota allows (v2 and v1), not just the cores', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'berth-cgroup-'));
  t.equal(cgroupCpuQuota(root), null, 'no cgroup files: no quota');
  t.equal(usableCpus(16, root), 16);
  await writeFile(join(root, 'cpu.max'), 'max 100000\n');
  t.equal(usableCpus(16, root), 16, 'v2 "max": no quota');
  await writeFile(join(root, 'cpu.max'), '250000 100000\n');
  t.equal(cgroupCpuQuota(root), 2.5);
  t.equal(usableCpus(16, root), 3, '--cpus 2.5 on 16 cores: 3 workers');
  t.equal(usableCpus(2, root), 2, 'never more than the cores');
  const v1 = await mkdtemp(join(tmpdir(), 'berth-cgroup-v1-'));
  await mkdir(join(v1, 'cpu,cpuacct'));
  await writeFile(join(v1, 'cpu,cpuacct', 'cpu.cfs_quota_us'), '50000');
  await writeFile(join(v1, 'cpu,cpuacct', 'cpu.cfs_period_us'), '100000');
  t.equal(usableCpus(8, v1), 1, 'v1: half a CPU rounds up to one worker');
  await writeFile(join(v1, 'cpu,cpuacct', 'cpu.cfs_quota_us'), '-1');
  t.equal(usableCpus(8, v1), 8, 'v1 -1: no quota');
});

t.test('the start line says which node berth runs on', async (t) => {
  const r = await startBerth(['--listen', '127.0.0.1:0', '--backend', '127.0.0.1:1', '--admin', 'off']);
  t.teardown(() => r.kill('SIGKILL'));
  const line = await r.waitLog((l) => l.msg === 'berth started');
  t.equal(line['node'], process.version);
});
