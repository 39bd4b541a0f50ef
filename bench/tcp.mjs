// berth vs HAProxy (mode tcp, one thread) vs nginx (stream module, one worker) vs a
// direct connection, interleaved. Proxies pinned alone to CPU 1; load generators and
// endpoints on CPU 0.
import { existsSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { fmt, freePort, iperf, measure, median, need, parseWrk, portOpen, rssBytes, runPinned, sleep, startPinned, tmp, write } from './lib.mjs';

const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const LOAD_CPU = 0;
const PROXY_CPU = 1;
const PROXIES = ['haproxy', 'nginx', 'berth'];

async function startNginx(dir, port) {
  const conf = write(
    dir,
    'nginx.conf',
    `worker_processes 1; master_process off; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/nginx-error.log;
events { worker_connections 20000; }
http { access_log off; server { listen 127.0.0.1:${port} backlog=4096; location / { return 200 "ok\\n"; } } }
`,
  );
  return startPinned(LOAD_CPU, 'nginx', ['-c', conf, '-e', `${dir}/nginx-error.log`], { ready: () => portOpen(port) });
}

function haproxyConfig(listeners) {
  return `global
  nbthread 1
  maxconn 9000
defaults
  mode tcp
  timeout connect 5s
  timeout client 120s
  timeout server 120s
${listeners.map((l, i) => `frontend f${i}
  bind 127.0.0.1:${l.port}
  default_backend b${i}
backend b${i}
  server s1 127.0.0.1:${l.target}
`).join('')}`;
}

function berthConfig(listeners) {
  return `listeners:
${listeners.map((l, i) => `  - name: l${i}
    bind: 127.0.0.1:${l.port}
    service: s${i}
`).join('')}services:
${listeners.map((l, i) => `  s${i}:
    endpoints: ["127.0.0.1:${l.target}"]
`).join('')}admin: { bind: "off" }
`;
}

/** nginx's stream proxy, one process (no master: the pid measured is the one working). */
function nginxStreamConfig(dir, listeners) {
  const tag = listeners[0].port;
  return `load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1; master_process off; daemon off; pid ${dir}/nginx-${tag}.pid; error_log ${dir}/nginx-${tag}-error.log;
events { worker_connections 20000; }
stream {
${listeners.map((l) => `  server { listen 127.0.0.1:${l.port} backlog=4096; proxy_pass 127.0.0.1:${l.target}; proxy_timeout 120s; }
`).join('')}}
`;
}

async function startProxy(kind, dir, listeners) {
  if (kind === 'nginx') {
    const cfg = write(dir, `nginx-${listeners[0].port}.conf`, nginxStreamConfig(dir, listeners));
    return startPinned(PROXY_CPU, 'nginx', ['-c', cfg, '-e', `${dir}/nginx-${listeners[0].port}-error.log`], { ready: () => portOpen(listeners[0].port) });
  }
  if (kind === 'haproxy') {
    const cfg = write(dir, `haproxy-${listeners[0].port}.cfg`, haproxyConfig(listeners));
    return startPinned(PROXY_CPU, 'haproxy', ['-f', cfg, '-db'], { ready: () => portOpen(listeners[0].port) });
  }
  const cfg = write(dir, `berth-${listeners[0].port}.yaml`, berthConfig(listeners));
  // Run the executable as users do (its shebang carries berth's node flags);
  // BERTH_BENCH_NODE_DEFAULTS=1 runs it under plain node instead, for comparison.
  const cmd = process.env.BERTH_BENCH_NODE_DEFAULTS === '1' ? [process.execPath, MAIN] : [MAIN];
  return startPinned(PROXY_CPU, cmd[0], [...cmd.slice(1), '-c', cfg, '--log-level', 'warn'], { ready: () => portOpen(listeners[0].port) });
}

async function wrkClose(port, seconds) {
  return parseWrk(await runPinned(LOAD_CPU, 'wrk', ['-t1', '-c32', `-d${seconds}s`, '-H', 'Connection: close', `http://127.0.0.1:${port}/`]));
}

/** RSS growth per proxied connection: a fresh proxy, N connections held open through it. */
async function rssPerConnection(kind, dir, holderPort, n) {
  const port = await freePort();
  const proxy = await startProxy(kind, dir, [{ port, target: holderPort }]);
  try {
    await sleep(300);
    const before = rssBytes(proxy.pid);
    const socks = [];
    for (let i = 0; i < n; i += 250) {
      const batch = [];
      for (let k = i; k < Math.min(n, i + 250); k++) {
        batch.push(
          new Promise((resolve, reject) => {
            const s = net.connect({ port, host: '127.0.0.1' });
            socks.push(s);
            s.on('error', reject);
            // One round trip proves the upstream leg is connected too.
            s.once('connect', () => s.write('x'));
            s.once('data', resolve);
          }),
        );
      }
      await Promise.all(batch);
    }
    await sleep(500);
    const after = rssBytes(proxy.pid);
    for (const s of socks) s.destroy();
    return (after - before) / n;
  } finally {
    proxy.kill('SIGKILL');
    await proxy.exited;
  }
}

export async function tcpBench({ reps, seconds, rssConnections }) {
  for (const b of ['iperf3', 'wrk', 'haproxy', 'nginx', 'taskset']) need(b);
  if (!existsSync('/usr/lib/nginx/modules/ngx_stream_module.so')) throw new Error('nginx stream module missing: apt-get install libnginx-mod-stream');
  const dir = tmp('berth-bench-');
  const iperfPort = await freePort();
  const nginxPort = await freePort();
  const holderPort = await freePort();
  const procs = [];
  const cleanup = async () => {
    for (const p of procs) p.kill('SIGKILL');
    await Promise.all(procs.map((p) => p.exited));
  };
  try {
    procs.push(await startPinned(LOAD_CPU, 'iperf3', ['-s', '-p', String(iperfPort)], { ready: () => portOpen(iperfPort) }));
    procs.push(await startNginx(dir, nginxPort));
    procs.push(
      await startPinned(
        LOAD_CPU,
        process.execPath,
        ['-e', `require('net').createServer((s)=>{s.on('error',()=>{});s.pipe(s)}).listen(${holderPort},'127.0.0.1',4096)`],
        { ready: () => portOpen(holderPort) },
      ),
    );
    const targets = {};
    for (const kind of PROXIES) {
      const ports = { iperf: await freePort(), http: await freePort() };
      const p = await startProxy(kind, dir, [
        { port: ports.iperf, target: iperfPort },
        { port: ports.http, target: nginxPort },
      ]);
      procs.push(p);
      targets[kind] = { ...ports, pid: p.pid };
    }
    targets.direct = { iperf: iperfPort, http: nginxPort, pid: 0 };
    const kinds = ['direct', ...PROXIES];
    const runs = { tput1: {}, tput1r: {}, tput8: {}, conns: {} };
    for (const k of kinds) for (const r of Object.values(runs)) r[k] = [];

    for (let rep = 1; rep <= reps; rep++) {
      for (const k of kinds) {
        const t = targets[k];
        for (const [name, streams, reverse] of [['tput1', 1, false], ['tput1r', 1, true], ['tput8', 8, false]]) {
          // reverse (-R): the endpoint sends, so the proxy reads its upstream leg (where berth
          // reads into reused buffers); forward: the proxy reads the accepted leg.
          const m = await measure(t.pid, () => iperf(LOAD_CPU, t.iperf, seconds, { streams, reverse }));
          const gbit = m.result.bitsPerSecond / 1e9;
          runs[name][k].push({ gbit, busy: m.busy, cpuMsPerGB: t.pid ? (m.proxyCpuSeconds * 1000) / (m.result.bytes / 1e9) : NaN });
          process.stderr.write(`rep ${rep} ${k} ${name}: ${fmt(gbit, 2)} Gbit/s busy ${JSON.stringify(m.busy)}\n`);
        }
        const m = await measure(t.pid, () => wrkClose(t.http, seconds));
        runs.conns[k].push({ rps: m.result.rps, busy: m.busy, usPerConn: t.pid ? (m.proxyCpuSeconds * 1e6) / m.result.total : NaN, errors: m.result.errors, non2xx: m.result.non2xx });
        process.stderr.write(`rep ${rep} ${k} conns: ${fmt(m.result.rps, 0)}/s busy ${JSON.stringify(m.busy)} ${m.result.errors}\n`);
        await sleep(500);
      }
    }
    const rss = {};
    for (const k of PROXIES) {
      rss[k] = await rssPerConnection(k, dir, holderPort, rssConnections);
      process.stderr.write(`${k}: ${fmt(rss[k] / 1024, 2)} KiB per connection\n`);
    }
    return summarize(runs, rss, { reps, seconds, rssConnections });
  } finally {
    await cleanup();
  }
}

function summarize(runs, rss, params) {
  const med = (arr, key) => median(arr.map((x) => x[key]));
  const busyMed = (arr, cpu) => median(arr.map((x) => x.busy[cpu]));
  const kinds = ['direct', ...PROXIES];
  const row = (label, name, key, unit, digits, cpuKey, cpuUnit) => {
    const v = Object.fromEntries(kinds.map((k) => [k, med(runs[name][k], key)]));
    const busy = kinds.map((k) => `${busyMed(runs[name][k], '0')}/${busyMed(runs[name][k], '1')}`).join(' · ');
    const cpu = PROXIES.map((k) => fmt(med(runs[name][k], cpuKey), 1)).join(' / ');
    return {
      label,
      line: `| ${label} (${unit}) | ${kinds.map((k) => fmt(v[k], digits)).join(' | ')} | **${fmt(v.berth / v.haproxy, 2)}x** | ${fmt(v.berth / v.nginx, 2)}x | ${fmt(v.berth / v.direct, 2)}x | ${busy} | ${cpu} ${cpuUnit} |`,
      ...v,
    };
  };
  const rows = [
    row('throughput, 1 stream, client → endpoint', 'tput1', 'gbit', 'Gbit/s', 2, 'cpuMsPerGB', 'CPU-ms/GB'),
    row('throughput, 1 stream, endpoint → client (-R)', 'tput1r', 'gbit', 'Gbit/s', 2, 'cpuMsPerGB', 'CPU-ms/GB'),
    row('throughput, 8 streams', 'tput8', 'gbit', 'Gbit/s', 2, 'cpuMsPerGB', 'CPU-ms/GB'),
    row('new connections', 'conns', 'rps', 'conn/s', 0, 'usPerConn', 'µs/conn'),
  ];
  const errors = Object.fromEntries(Object.entries(runs.conns).map(([k, v]) => [k, v.map((x) => x.errors + (x.non2xx ? ` non2xx=${x.non2xx}` : '')).filter(Boolean)]));
  const table = [
    `| measure | direct | HAProxy | nginx | berth | berth/HAProxy | berth/nginx | berth/direct | busy % CPU0/CPU1 (direct · HAProxy · nginx · berth) | proxy CPU per unit (HAProxy / nginx / berth) |`,
    `|---|---|---|---|---|---|---|---|---|---|`,
    ...rows.map((r) => r.line),
    `| RSS per proxied connection (KiB, ${params.rssConnections} held) | - | ${PROXIES.map((k) => fmt(rss[k] / 1024, 2)).join(' | ')} | **${fmt(rss.berth / rss.haproxy, 2)}x** | ${fmt(rss.berth / rss.nginx, 2)}x | - | - | - |`,
  ].join('\n');
  return { table, rows, rss, errors, params, runs };
}
