// Discovery latency with the real engine (needs scripts/docker-engine.sh and
// scripts/test-images.sh): berth runs as its own process with --docker.
//   join:  container's health_status:healthy event → first request it serves via berth
//   leave: container's kill event → berth logs it out of the pick set, and how many
//          connections berth still routes to it after that (must be 0)
import { execFile, execFileSync, spawn } from 'node:child_process';
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { freePort, jsonLines, median, portOpen, sleep } from './lib.mjs';

const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const RUN = `berth-bench-${process.pid}`;
const docker = (...a) => execFileSync('docker', a, { encoding: 'utf8' }).trim();
// Never block the event loop while the load loops run (a blocked loop turns answered
// requests into client-side timeouts): long docker calls go through this.
const dockerAsync = (...a) => new Promise((resolve, reject) => execFile('docker', a, (err, out) => (err ? reject(err) : resolve(out.trim()))));

function pct(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] : NaN;
}

function get(port) {
  return new Promise((resolve) => {
    const started = Date.now();
    const req = http.get({ host: '127.0.0.1', port, agent: false, headers: { connection: 'close' }, timeout: 3000 }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ started, done: Date.now(), name: res.statusCode === 200 ? body.trim() : `status-${res.statusCode}` }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ started, done: Date.now(), name: `error-${e.message}` }));
  });
}

export async function dockerBench({ iterations = 10 } = {}) {
  docker('info');
  const service = `${RUN}-svc`;
  const port = await freePort();
  const events = [];
  const ev = spawn('docker', ['events', '--format', '{{json .}}', '--filter', `label=org.berth-test.run=${RUN}`]);
  jsonLines(ev.stdout, (e) => events.push(e));
  const berth = spawn(MAIN, ['--docker', '--service', service, '--listen', `127.0.0.1:${port}`, '--admin', 'off', '--balance', 'round-robin'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const logs = [];
  jsonLines(berth.stdout, (l) => logs.push(l));
  const results = [];
  let stop = false;
  const loops = [];
  const run = (name) =>
    dockerAsync('run', '-d', '--name', `${RUN}-${name}`, '-e', `NAME=${name}`, '-e', 'STOP_DELAY_MS=1500', '-l', `org.berth-test.run=${RUN}`, '-l', 'berth.enable=true', '-l', `berth.service=${service}`,
      '--health-cmd', 'wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1', '--health-interval', '200ms', '--health-start-period', '0s', 'berth-test/web');
  const eventTime = (name, pred) => events.find((e) => e.Actor?.Attributes?.name === `${RUN}-${name}` && pred(e));
  const waitFor = async (fn, ms = 20_000) => {
    const t0 = Date.now();
    while (!fn()) {
      if (Date.now() - t0 > ms) throw new Error('timed out');
      await sleep(5);
    }
    return fn();
  };
  try {
    while (!(await portOpen(port))) await sleep(20);
    await run('c0');
    await waitFor(() => eventTime('c0', (e) => e.Action === 'health_status: healthy'));
    // Load: 4 loops, a new connection per request.
    for (let k = 0; k < 4; k++) {
      loops.push(
        (async () => {
          while (!stop) results.push(await get(port));
        })(),
      );
    }
    for (let i = 1; i <= iterations; i++) {
      const name = `c${i}`;
      const prev = `c${i - 1}`;
      await run(name);
      const healthy = await waitFor(() => eventTime(name, (e) => e.Action === 'health_status: healthy'));
      const healthyMs = healthy.timeNano / 1e6;
      const first = await waitFor(() => results.find((r) => r.name === name));
      const join = first.done - healthyMs;
      const stopped = dockerAsync('stop', '-t', '10', `${RUN}-${prev}`);
      const kill = await waitFor(() => eventTime(prev, (e) => e.Action === 'kill'));
      const killMs = kill.timeNano / 1e6;
      const out = await waitFor(() => logs.find((l) => l.endpoint === `${RUN}-${prev}` && /out: stopping/.test(String(l.change ?? ''))));
      const outMs = Date.parse(out.time);
      // Requests that started after berth took it out but were still answered by it.
      const late = results.filter((r) => r.name === prev && r.started > outMs + 1).length;
      await stopped;
      process.stderr.write(`iteration ${i}: join ${join.toFixed(1)} ms, kill→out ${(outMs - killMs).toFixed(1)} ms, late connections ${late}\n`);
      results.push({ started: 0, done: 0, name: `_mark` });
      (dockerBench.samples ??= []).push({ join, leave: outMs - killMs, late });
    }
    stop = true;
    await Promise.all(loops);
  } finally {
    stop = true;
    berth.kill('SIGTERM');
    ev.kill();
    const ids = docker('ps', '-aq', '--filter', `label=org.berth-test.run=${RUN}`);
    if (ids) docker('rm', '-f', ...ids.split('\n'));
  }
  const s = dockerBench.samples;
  const failed = results.filter((r) => r.name.startsWith('error') || r.name.startsWith('status')).length;
  const joins = s.map((x) => x.join);
  const leaves = s.map((x) => x.leave);
  const table = [
    '| measure | p50 | p99 (max of ' + s.length + ') | target |',
    '|---|---|---|---|',
    `| join: healthy event → first request served (ms) | ${median(joins).toFixed(1)} | ${pct(joins, 99).toFixed(1)} | p50 < 50, p99 < 200 |`,
    `| leave: kill event → out of the pick set (ms) | ${median(leaves).toFixed(1)} | ${pct(leaves, 99).toFixed(1)} | - |`,
    `| new connections routed to a container after it was taken out | ${s.reduce((a, x) => a + x.late, 0)} total | | 0 |`,
    `| failed requests during ${s.length} replacements (${results.length - s.length} requests) | ${failed} | | 0 |`,
  ].join('\n');
  const kinds = {};
  for (const r of results) if (r.name.startsWith('error') || r.name.startsWith('status')) kinds[r.name] = (kinds[r.name] ?? 0) + 1;
  if (failed > 0) process.stderr.write(`failures: ${JSON.stringify(kinds)}\n`);
  return { table, samples: s, failed, failures: kinds, requests: results.length - s.length };
}
