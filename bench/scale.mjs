// Across cores: berth --workers N against HAProxy nbthread N, the proxy pinned to
// cores 0..N-1, for N = 1, 2, 4, 8 … up to half this machine's cores; wrk and the
// nginx endpoints on the other half (split between them where there are two or more).
//   npm run bench -- scale [--reps N] [--seconds S]
// Measures http keep-alive requests (wrk -c256) and tcp new connections (wrk -c128,
// Connection: close) and prints each ratio to HAProxy and the gain from each N to the
// next. On a 16-core machine this is N = 1..8 (the issue's 4 → 8 target); on this
// project's 2-core hosts N = 1 only — no scaling figure.
// (../shared/tools/multicore-bench packs the same comparison for a machine with no
// package registry.)
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { fmt, freePort, median, need, parseWrk, portOpen, runPinned, sleep, startPinned, tmp, write } from './lib.mjs';

const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const range = (from, to) => (from === to ? `${from}` : `${from}-${to}`);

function haproxyConfig(n, httpPort, tcpPort, endpoints) {
  return `global
  nbthread ${n}
  maxconn 9000
defaults
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  maxconn 9000
frontend fh
  mode http
  bind 127.0.0.1:${httpPort}
  default_backend bh
backend bh
  mode http
  balance roundrobin
  http-reuse always
${endpoints.map((p, i) => `  server e${i} 127.0.0.1:${p}`).join('\n')}
listen lt
  mode tcp
  bind 127.0.0.1:${tcpPort}
  balance roundrobin
${endpoints.map((p, i) => `  server e${i} 127.0.0.1:${p}`).join('\n')}
`;
}

function berthConfig(httpPort, tcpPort, endpoints) {
  return `listeners:
  - { name: h, bind: "127.0.0.1:${httpPort}", mode: http, service: web }
  - { name: t, bind: "127.0.0.1:${tcpPort}", mode: tcp, service: web }
services:
  web: { balance: round-robin, endpoints: [${endpoints.map((p) => `"127.0.0.1:${p}"`).join(', ')}] }
admin: { bind: "off" }
`;
}

async function wrk(cpus, threads, conns, seconds, port, extra = []) {
  return parseWrk(await runPinned(cpus, 'wrk', [`-t${threads}`, `-c${conns}`, `-d${seconds}s`, ...extra, `http://127.0.0.1:${port}/`])).rps;
}

export async function scaleBench({ reps, seconds }) {
  for (const b of ['wrk', 'nginx', 'haproxy', 'taskset']) need(b);
  const cores = availableParallelism();
  if (cores < 2) throw new Error('scale needs at least 2 cores (the proxy on one half, the load on the other)');
  const half = Math.floor(cores / 2);
  const ns = [];
  for (let n = 1; n <= half; n *= 2) ns.push(n);
  const rest = Array.from({ length: cores - half }, (_, i) => half + i);
  const split = rest.length >= 2 ? Math.floor(rest.length / 2) : rest.length;
  const loadCpus = range(rest[0], rest[split - 1]);
  const endpointCpus = rest.length >= 2 ? range(rest[split], rest.at(-1)) : loadCpus;
  const endpointWorkers = rest.length >= 2 ? rest.length - split : 1;
  const threads = Math.max(1, Math.min(4, split));
  const dir = tmp('berth-scale-');
  const endpoints = [await freePort(), await freePort()];
  const nginx = await startPinned(
    endpointCpus,
    'nginx',
    ['-c', write(dir, 'nginx.conf', `worker_processes ${endpointWorkers}; ${endpointWorkers === 1 ? 'master_process off; ' : ''}daemon off; pid ${dir}/nginx.pid; error_log ${dir}/nginx-error.log; worker_rlimit_nofile 100000;
events { worker_connections 50000; }
http { access_log off; keepalive_requests 100000000; keepalive_timeout 600s;
${endpoints.map((p) => `  server { listen 127.0.0.1:${p} backlog=65535 reuseport; location / { return 200 "ok"; } }`).join('\n')} }
`), '-e', `${dir}/nginx-error.log`],
    { ready: async () => (await portOpen(endpoints[0])) && portOpen(endpoints[1]) },
  );
  const rows = [];
  try {
    for (let rep = 1; rep <= reps; rep++) {
      for (const n of ns) {
        for (const px of rep % 2 ? ['haproxy', 'berth'] : ['berth', 'haproxy']) {
          const httpPort = await freePort();
          const tcpPort = await freePort();
          const cpus = range(0, n - 1);
          const ready = async () => (await portOpen(httpPort)) && portOpen(tcpPort);
          const p =
            px === 'haproxy'
              ? await startPinned(cpus, 'haproxy', ['-db', '-f', write(dir, `ha-${n}.cfg`, haproxyConfig(n, httpPort, tcpPort, endpoints))], { ready })
              : await startPinned(cpus, MAIN, ['-c', write(dir, `berth-${n}.yaml`, berthConfig(httpPort, tcpPort, endpoints)), '--workers', String(n), '--drain-timeout', '1s', '--log-level', 'warn'], { ready });
          try {
            // --workers: every worker listening (the ports answer once the first one is).
            await sleep(1000);
            await wrk(loadCpus, threads, 256, 1, httpPort);
            const http = await wrk(loadCpus, threads, 256, seconds, httpPort);
            const tcp = await wrk(loadCpus, threads, 128, seconds, tcpPort, ['-H', 'Connection: close']);
            rows.push({ rep, n, px, http, tcp });
            process.stderr.write(`rep ${rep} N=${n} ${px}: ${fmt(http, 0)} req/s, ${fmt(tcp, 0)} conn/s\n`);
          } finally {
            p.kill('SIGTERM');
            await Promise.race([p.exited, sleep(3000)]);
            p.kill('SIGKILL');
            await p.exited;
          }
        }
      }
    }
  } finally {
    // SIGTERM: nginx's master (where there are several workers) stops them with it.
    nginx.kill('SIGTERM');
    await nginx.exited;
  }
  const med = (n, px, k) => median(rows.filter((r) => r.n === n && r.px === px).map((r) => r[k]));
  const lines = ns.map((n, i) => {
    const prev = i > 0 ? ns[i - 1] : undefined;
    const gain = (px, k) => (prev === undefined ? '-' : `${fmt(med(n, px, k) / med(prev, px, k), 2)}x`);
    return `| ${n} | ${fmt(med(n, 'haproxy', 'http'), 0)} | ${fmt(med(n, 'berth', 'http'), 0)} | **${fmt(med(n, 'berth', 'http') / med(n, 'haproxy', 'http'), 2)}x** | ${fmt(med(n, 'haproxy', 'tcp'), 0)} | ${fmt(med(n, 'berth', 'tcp'), 0)} | **${fmt(med(n, 'berth', 'tcp') / med(n, 'haproxy', 'tcp'), 2)}x** | ${gain('haproxy', 'http')} / ${gain('berth', 'http')} | ${gain('haproxy', 'tcp')} / ${gain('berth', 'tcp')} |`;
  });
  const table = [
    `${cores} cores: proxy on 0..N-1, wrk (${threads} threads) on ${loadCpus}, nginx (${endpointWorkers} worker(s)) on ${endpointCpus}${cores < 4 ? ' — N = 1 only here: no scaling figure on this machine' : ''}`,
    '',
    '| N | HAProxy http req/s | berth http req/s | berth/HAProxy | HAProxy tcp conn/s | berth tcp conn/s | berth/HAProxy | http gain from previous N (HAProxy / berth) | tcp gain (HAProxy / berth) |',
    '|---|---|---|---|---|---|---|---|---|',
    ...lines,
  ].join('\n');
  return { table, rows, cores };
}
