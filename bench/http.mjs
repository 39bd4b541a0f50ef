// HTTP keep-alive: berth (mode http) vs HAProxy (mode http, http-reuse always, one
// thread) vs nginx (proxy_pass to a keepalive upstream, one worker) vs a plain
// node:http + http.Agent proxy (what the http-proxy package does)
// vs a direct connection to the endpoint, interleaved in one run. Proxies pinned
// alone to CPU 1; wrk and the endpoint (nginx) on CPU 0. Also Caddy (Go, GOMAXPROCS=1:
// it stands for the Go proxies Traefik users run), and berth --workers 2 (unpinned: on
// this 2-core machine the workers share the cores with wrk and nginx).
// Then latency at a fixed rate: hey at half of HAProxy's maximum, p50/p99 per proxy.
import { fileURLToPath } from 'node:url';
import { fmt, freePort, startCaddyProxy, startHaproxyHttp, measure, median, need, parseWrk, portOpen, runPinned, sleep, startNginxEndpoint, startPinned, tmp, write } from './lib.mjs';

const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const LOAD_CPU = 0;
const PROXY_CPU = 1;
const CONNECTIONS = 50;

const NAIVE = `
const http = require('node:http');
const [port, target] = process.argv.slice(1).map(Number);
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
http.createServer((req, res) => {
  const up = http.request({ host: '127.0.0.1', port: target, method: req.method, path: req.url, headers: req.headers, agent }, (r) => {
    res.writeHead(r.statusCode, r.headers);
    r.pipe(res);
  });
  up.on('error', () => { res.statusCode = 502; res.end(); });
  req.pipe(up);
}).listen(port, '127.0.0.1', 4096);
`;

async function startProxy(kind, dir, port, target) {
  const ready = { ready: () => portOpen(port) };
  if (kind === 'haproxy') return startHaproxyHttp(PROXY_CPU, dir, port, target);
  if (kind === 'nginx') {
    // One process (no master: the pid measured is the one working); upstream keep-alive.
    const conf = write(
      dir,
      `nginx-proxy-${port}.conf`,
      `worker_processes 1; master_process off; daemon off; pid ${dir}/nginx-proxy.pid; error_log ${dir}/nginx-proxy-error.log;
events { worker_connections 20000; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 60s;
  client_body_temp_path ${dir}/nginx-body; proxy_temp_path ${dir}/nginx-proxy-temp;
  upstream u { server 127.0.0.1:${target}; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:${port} backlog=4096;
    location / { proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; } } }
`,
    );
    return startPinned(PROXY_CPU, 'nginx', ['-c', conf, '-e', `${dir}/nginx-proxy-error.log`], ready);
  }
  if (kind === 'node-naive') return startPinned(PROXY_CPU, process.execPath, ['-e', NAIVE, String(port), String(target)], ready);
  if (kind === 'caddy') return startCaddyProxy(PROXY_CPU, dir, port, target);
  const cfg = write(
    dir,
    `berth-${port}.yaml`,
    `listeners:
  - name: web
    bind: 127.0.0.1:${port}
    mode: http
    service: web
services:
  web: { endpoints: ["127.0.0.1:${target}"] }
admin: { bind: "off" }
`,
  );
  const cmd = process.env.BERTH_BENCH_NODE_DEFAULTS === '1' ? [process.execPath, MAIN] : [MAIN];
  const args = [...cmd.slice(1), '-c', cfg, '--log-level', 'warn'];
  if (kind === 'berth-2w') return startPinned('0,1', cmd[0], [...args, '--workers', '2'], ready);
  return startPinned(PROXY_CPU, cmd[0], args, ready);
}

/** wrk keep-alive run; latency percentiles from --latency. */
async function wrk(port, seconds) {
  return parseWrk(await runPinned(LOAD_CPU, 'wrk', ['-t1', `-c${CONNECTIONS}`, `-d${seconds}s`, '--latency', `http://127.0.0.1:${port}/`]));
}

/** A fixed request rate (hey: -c connections, each at rate/c per second); latency percentiles in ms. */
async function fixedRate(port, seconds, rate) {
  const c = CONNECTIONS;
  const out = await runPinned(LOAD_CPU, 'hey', ['-z', `${seconds}s`, '-c', String(c), '-q', String(Math.max(1, Math.round(rate / c))), `http://127.0.0.1:${port}/`]);
  const pct = (p) => Number(new RegExp(`${p}%+ in ([\\d.]+) secs`).exec(out)?.[1] ?? NaN) * 1000;
  return { rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN), p50: pct(50), p99: pct(99), errors: /Error distribution:([\s\S]*)$/.exec(out)?.[1]?.trim() ?? '' };
}

export async function httpBench({ reps, seconds }) {
  for (const b of ['wrk', 'hey', 'haproxy', 'nginx', 'caddy', 'taskset']) need(b);
  const dir = tmp('berth-bench-http-');
  const nginxPort = await freePort();
  const procs = [];
  try {
    procs.push(await startNginxEndpoint(dir, nginxPort, LOAD_CPU));
    const kinds = ['direct', 'haproxy', 'nginx', 'caddy', 'berth', 'node-naive', 'berth-2w'];
    const targets = { direct: { port: nginxPort, pid: 0 } };
    for (const k of kinds.slice(1)) {
      const port = await freePort();
      const p = await startProxy(k, dir, port, nginxPort);
      procs.push(p);
      targets[k] = { port, pid: k === 'berth-2w' ? 0 : p.pid };
    }
    // Warm up: JIT, connection pools.
    for (const k of kinds) await wrk(targets[k].port, 2);
    const runs = Object.fromEntries(kinds.map((k) => [k, []]));
    for (let rep = 1; rep <= reps; rep++) {
      for (const k of kinds) {
        const t = targets[k];
        const m = await measure(t.pid, () => wrk(t.port, seconds));
        runs[k].push({ ...m.result, busy: m.busy, usPerReq: t.pid ? (m.proxyCpuSeconds * 1e6) / m.result.total : NaN });
        process.stderr.write(`rep ${rep} ${k}: ${fmt(m.result.rps, 0)} req/s p50 ${fmt(m.result.p50, 2)}ms p99 ${fmt(m.result.p99, 2)}ms busy ${JSON.stringify(m.busy)} ${m.result.errors}\n`);
        await sleep(300);
      }
    }
    // Latency at fixed rates, the same for every proxy: half of HAProxy's maximum (the
    // issue's measure), and half of berth's own (a load berth can carry: above its
    // maximum the first measure times queueing, not proxying).
    const rates = [Math.round(median(runs.haproxy.map((x) => x.rps)) / 2), Math.round(median(runs.berth.map((x) => x.rps)) / 2)];
    const fixed = rates.map(() => Object.fromEntries(FIXED.map((k) => [k, []])));
    for (let rep = 1; rep <= reps; rep++) {
      for (const [i, rate] of rates.entries()) {
        for (const k of FIXED) {
          const r = await fixedRate(targets[k].port, seconds, rate);
          fixed[i][k].push(r);
          process.stderr.write(`rep ${rep} ${k} at ${rate}/s: got ${fmt(r.rps, 0)}/s p50 ${fmt(r.p50, 2)}ms p99 ${fmt(r.p99, 2)}ms ${r.errors}\n`);
          await sleep(300);
        }
      }
    }
    return summarize(runs, kinds, { reps, seconds }, fixed, rates);
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    await Promise.all(procs.map((p) => p.exited));
  }
}

const FIXED = ['haproxy', 'nginx', 'caddy', 'berth', 'node-naive'];

function summarize(runs, kinds, params, fixed, rates) {
  const med = (k, key) => median(runs[k].map((x) => x[key]));
  const busy = (k) => `${median(runs[k].map((x) => x.busy['0']))}/${median(runs[k].map((x) => x.busy['1']))}`;
  const hap = { rps: med('haproxy', 'rps'), p99: med('haproxy', 'p99') };
  const label = { direct: 'direct (nginx)', haproxy: 'HAProxy 1 thread', nginx: 'nginx 1 worker (upstream keepalive)', caddy: 'Caddy (GOMAXPROCS=1)', berth: 'berth 1 process', 'node-naive': 'node:http + http.Agent proxy', 'berth-2w': 'berth --workers 2 (unpinned)' };
  const lines = kinds.map((k) => {
    const rps = med(k, 'rps');
    const p99 = med(k, 'p99');
    return `| ${label[k]} | ${fmt(rps, 0)} | ${k === 'direct' ? '-' : `**${fmt(rps / hap.rps, 2)}x**`} | ${fmt(med(k, 'p50'), 2)} | ${fmt(p99, 2)} | ${k === 'direct' ? '-' : `${fmt(p99 / hap.p99, 2)}x`} | ${fmt(med(k, 'usPerReq'), 1)} | ${busy(k)} |`;
  });
  const berthVsNaive = med('berth', 'rps') / med('node-naive', 'rps');
  const berthVsNginx = med('berth', 'rps') / med('nginx', 'rps');
  const berthVsCaddy = med('berth', 'rps') / med('caddy', 'rps');
  const fixedTable = (i, what) => {
    const fmed = (k, key) => median(fixed[i][k].map((x) => x[key]));
    return [
      `Latency at a fixed rate of ${rates[i]} req/s (${what}; hey -c${CONNECTIONS}, ${params.seconds}s, medians of ${params.reps}; hey on one core may not reach it: see achieved):`,
      '',
      `| target | achieved req/s | p50 ms | p99 ms | p99 vs HAProxy |`,
      `|---|---|---|---|---|`,
      ...FIXED.map((k) => `| ${label[k]} | ${fmt(fmed(k, 'rps'), 0)} | ${fmt(fmed(k, 'p50'), 2)} | ${fmt(fmed(k, 'p99'), 2)} | **${fmt(fmed(k, 'p99') / fmed('haproxy', 'p99'), 2)}x** |`),
    ];
  };
  const table = [
    `wrk -t1 -c${CONNECTIONS} keep-alive, GET of a 24-byte body from nginx`,
    '',
    `| target | req/s | vs HAProxy | p50 ms | p99 ms | p99 vs HAProxy | proxy CPU µs/req | busy % CPU0/CPU1 |`,
    `|---|---|---|---|---|---|---|---|`,
    ...lines,
    '',
    `berth / node:http proxy: **${fmt(berthVsNaive, 2)}x** req/s; berth / nginx: **${fmt(berthVsNginx, 2)}x** req/s; berth / Caddy: **${fmt(berthVsCaddy, 2)}x** req/s`,
    '',
    ...fixedTable(0, "half of HAProxy's maximum"),
    '',
    ...fixedTable(1, "half of berth's maximum"),
  ].join('\n');
  const errors = Object.fromEntries(kinds.map((k) => [k, runs[k].map((x) => x.errors + (x.non2xx ? ` non2xx=${x.non2xx}` : '')).filter(Boolean)]));
  return { table, errors, params, runs };
}
