// HTTP/2 both sides: h2load (prior-knowledge h2c, 10 connections x 10 streams) through
// berth (an http listener, httpVersion 2 to the endpoint) vs HAProxy (proto h2 on the
// bind and the server, one thread) vs Caddy (h2c front, h2c transport, GOMAXPROCS=1)
// vs a direct connection to the endpoint (nginx with http2 on a plaintext listen: h2c),
// interleaved in one run. Proxies pinned alone to CPU 1; h2load and nginx on CPU 0.
// Beside them, h2-floor.mjs: a proxy with no logic on node's http2 (what any proxy on
// node pays). Then gRPC unary calls per second to a grpc-js server, direct and through berth.
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { fmt, freePort, startCaddyProxy, startHaproxyHttp, measure, median, need, portOpen, runPinned, sleep, startPinned, tmp, write } from './lib.mjs';

const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const FLOOR = fileURLToPath(new URL('./h2-floor.mjs', import.meta.url));
const LOAD_CPU = 0;
const PROXY_CPU = 1;
const CONNECTIONS = 10;
const STREAMS = 10;

async function startEndpoint(dir, port) {
  const conf = write(
    dir,
    'nginx-h2.conf',
    `worker_processes 1; master_process off; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/nginx-error.log;
events { worker_connections 20000; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 60s; http2_max_requests 10000000; http2_max_concurrent_streams 1000;
  server { listen 127.0.0.1:${port} http2 backlog=4096; location / { return 200 "hello from the endpoint\\n"; } } }
`,
  );
  return startPinned(LOAD_CPU, 'nginx', ['-c', conf, '-e', `${dir}/nginx-error.log`], { ready: () => portOpen(port) });
}

async function startProxy(kind, dir, port, target) {
  const ready = { ready: () => portOpen(port) };
  if (kind === 'haproxy') return startHaproxyHttp(PROXY_CPU, dir, port, target, { h2: true });
  if (kind === 'caddy') return startCaddyProxy(PROXY_CPU, dir, port, target, { h2: true });
  if (kind === 'floor') return startPinned(PROXY_CPU, process.execPath, [FLOOR, String(port), String(target)], ready);
  const cfg = write(
    dir,
    `berth-h2-${port}.yaml`,
    `listeners:
  - { name: web, bind: "127.0.0.1:${port}", mode: http, service: web }
services:
  web: { httpVersion: 2, endpoints: ["127.0.0.1:${target}"] }
admin: { bind: "off" }
`,
  );
  return startPinned(PROXY_CPU, MAIN, ['-c', cfg, '--log-level', 'warn'], ready);
}

/**
 * A grpc-js server (the gRPC implementation berth's users run in Node) with one
 * unary method that answers an empty message, on the load generator's CPU.
 */
async function startGrpcEndpoint(dir, port) {
  const grpcJs = pathToFileURL(createRequire(import.meta.url).resolve('@grpc/grpc-js')).href;
  const script = write(
    dir,
    'grpc-server.mjs',
    `import grpc from '${grpcJs}';
const raw = (b) => b;
const server = new grpc.Server();
server.addService({ echo: { path: '/bench.Svc/Echo', requestStream: false, responseStream: false, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw } }, { echo: (_call, cb) => cb(null, Buffer.alloc(0)) });
server.bindAsync('127.0.0.1:${port}', grpc.ServerCredentials.createInsecure(), () => {});
`,
  );
  return startPinned(LOAD_CPU, process.execPath, [script], { ready: () => portOpen(port) });
}

/** One gRPC message frame (RFC-less gRPC wire format: flag, 4-byte length) holding an empty message. */
const GRPC_EMPTY = Buffer.alloc(5);

/** h2load for `seconds`: requests per second, and how many failed. `grpc`: the file of one unary call's body, to `path`. */
async function h2load(port, seconds, grpc = null, path = '/') {
  const call = grpc === null ? [] : ['-d', grpc, '-H', 'content-type: application/grpc', '-H', 'te: trailers'];
  const out = await runPinned(LOAD_CPU, 'h2load', ['-t1', `-c${CONNECTIONS}`, `-m${STREAMS}`, `-D${seconds}`, ...call, `http://127.0.0.1:${port}${path}`]);
  const rps = Number(/finished in [\d.]+\w*, ([\d.]+) req\/s/.exec(out)?.[1] ?? NaN);
  const m = /requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(out);
  const mean = /time for request:\s+\S+\s+\S+\s+(\S+)/.exec(out)?.[1] ?? '';
  return { rps, total: Number(m?.[3] ?? 0), failed: Number(m?.[4] ?? 0) + Number(m?.[5] ?? 0), mean };
}

export async function h2Bench({ reps, seconds }) {
  for (const b of ['h2load', 'haproxy', 'nginx', 'caddy', 'taskset']) need(b);
  const dir = tmp('berth-bench-h2-');
  const endpoint = await freePort();
  const procs = [];
  try {
    procs.push(await startEndpoint(dir, endpoint));
    const kinds = ['direct', 'haproxy', 'caddy', 'floor', 'berth'];
    const targets = { direct: { port: endpoint, pid: 0 } };
    for (const k of kinds.slice(1)) {
      const port = await freePort();
      const p = await startProxy(k, dir, port, endpoint);
      procs.push(p);
      targets[k] = { port, pid: p.pid };
    }
    for (const k of kinds) await h2load(targets[k].port, 2);
    const runs = Object.fromEntries(kinds.map((k) => [k, []]));
    for (let rep = 1; rep <= reps; rep++) {
      for (const k of kinds) {
        const t = targets[k];
        const m = await measure(t.pid, () => h2load(t.port, seconds));
        runs[k].push({ ...m.result, busy: m.busy, usPerReq: t.pid ? (m.proxyCpuSeconds * 1e6) / m.result.total : NaN });
        process.stderr.write(`rep ${rep} ${k}: ${fmt(m.result.rps, 0)} req/s, ${m.result.failed} failed, mean ${m.result.mean} busy ${JSON.stringify(m.busy)}\n`);
        await sleep(300);
      }
    }
    const med = (k, key) => median(runs[k].map((x) => x[key]));
    const label = { direct: 'direct (nginx h2c)', haproxy: 'HAProxy 1 thread (h2 both sides)', caddy: 'Caddy (GOMAXPROCS=1, h2c both sides)', floor: 'node\'s http2 floor (h2-floor.mjs: no logic, stream API both sides)', berth: 'berth 1 process (h2c in, httpVersion 2 out)' };
    const hap = med('haproxy', 'rps');
    const caddy = med('caddy', 'rps');
    const table = [
      `h2load -t1 -c${CONNECTIONS} -m${STREAMS} (prior-knowledge h2c), GET of a 24-byte body from nginx over h2c`,
      '',
      '| target | req/s | vs HAProxy | vs Caddy | failed | proxy CPU µs/req | busy % CPU0/CPU1 |',
      '|---|---|---|---|---|---|---|',
      ...kinds.map(
        (k) =>
          `| ${label[k]} | ${fmt(med(k, 'rps'), 0)} | ${k === 'direct' ? '-' : `**${fmt(med(k, 'rps') / hap, 2)}x**`} | ${k === 'direct' ? '-' : `${fmt(med(k, 'rps') / caddy, 2)}x`} | ${runs[k].reduce((n, x) => n + x.failed, 0)} | ${fmt(med(k, 'usPerReq'), 1)} | ${median(runs[k].map((x) => x.busy['0']))}/${median(runs[k].map((x) => x.busy['1']))} |`,
      ),
      '',
      `berth at **${fmt(med('berth', 'rps') / med('floor', 'rps'), 2)}x** the rate of node's http2 floor (the rest of the gap to HAProxy is node's).`,
    ].join('\n');
    const grpc = await grpcUnary(dir, procs, reps, seconds);
    return { table: `${table}\n\n${grpc.table}`, params: { reps, seconds }, runs: { ...runs, grpc: grpc.runs } };
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    await Promise.all(procs.map((p) => p.exited));
  }
}

/**
 * gRPC unary calls per second (h2load sending gRPC frames, as grpc clients do) to a
 * grpc-js server, direct and through berth (httpVersion 2), interleaved; the ratio is
 * what berth costs a gRPC service whose server is Node's.
 */
async function grpcUnary(dir, procs, reps, seconds) {
  const body = write(dir, 'grpc-empty.bin', GRPC_EMPTY);
  const endpoint = await freePort();
  procs.push(await startGrpcEndpoint(dir, endpoint));
  const port = await freePort();
  const b = await startProxy('berth', dir, port, endpoint);
  procs.push(b);
  const targets = { direct: { port: endpoint, pid: 0 }, berth: { port, pid: b.pid } };
  const path = '/bench.Svc/Echo';
  for (const k of Object.keys(targets)) await h2load(targets[k].port, 2, body, path);
  const runs = { direct: [], berth: [] };
  for (let rep = 1; rep <= reps; rep++) {
    for (const k of Object.keys(targets)) {
      const t = targets[k];
      const m = await measure(t.pid, () => h2load(t.port, seconds, body, path));
      runs[k].push({ ...m.result, busy: m.busy, usPerReq: t.pid ? (m.proxyCpuSeconds * 1e6) / m.result.total : NaN });
      process.stderr.write(`rep ${rep} grpc ${k}: ${fmt(m.result.rps, 0)} calls/s, ${m.result.failed} failed, busy ${JSON.stringify(m.busy)}\n`);
      await sleep(300);
    }
  }
  const med = (k, key) => median(runs[k].map((x) => x[key]));
  const table = [
    `gRPC unary calls (h2load -c${CONNECTIONS} -m${STREAMS}, content-type application/grpc, an empty message) to a grpc-js server on CPU 0`,
    '',
    '| target | calls/s | vs direct | failed | berth CPU µs/call | busy % CPU0/CPU1 |',
    '|---|---|---|---|---|---|',
    ...['direct', 'berth'].map(
      (k) =>
        `| ${k === 'direct' ? 'direct (grpc-js)' : 'berth 1 process (h2c in, httpVersion 2 out)'} | ${fmt(med(k, 'rps'), 0)} | ${k === 'direct' ? '-' : `**${fmt(med(k, 'rps') / med('direct', 'rps'), 2)}x**`} | ${runs[k].reduce((n, x) => n + x.failed, 0)} | ${fmt(med(k, 'usPerReq'), 1)} | ${median(runs[k].map((x) => x.busy['0']))}/${median(runs[k].map((x) => x.busy['1']))} |`,
    ),
  ].join('\n');
  return { table, runs };
}
