// berth against another build of berth, interleaved in one run: what a change costs
// or saves, per unit of CPU, on the same machine at the same moment.
//   npm run bench -- ab --ref /path/to/other/checkout [--reps N] [--seconds S]
// The other checkout must be built (its dist/main.js). Each berth pinned alone to
// CPU 1, wrk, iperf3 and the endpoints (nginx, iperf3 -s) on CPU 0; measures: tcp
// bulk one stream each way (iperf3, and -R: the endpoint sends), tcp new connections
// (wrk, Connection: close) and http keep-alive requests (wrk -c50), with the proxy's
// own CPU time per unit. The ratios are this build / the reference.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fmt, freePort, iperf, measure, median, need, parseWrk, portOpen, runPinned, sleep, startNginxEndpoint, startPinned, tmp, write } from './lib.mjs';

const LOAD_CPU = 0;
const PROXY_CPU = 1;

async function startBerth(main, dir, tag, tcpPort, httpPort, target, bulkPort, iperfPort) {
  const cfg = write(
    dir,
    `berth-${tag}.yaml`,
    `listeners:
  - { name: t, bind: "127.0.0.1:${tcpPort}", service: web }
  - { name: h, bind: "127.0.0.1:${httpPort}", mode: http, service: web }
  - { name: b, bind: "127.0.0.1:${bulkPort}", service: bulk }
services:
  web: { endpoints: ["127.0.0.1:${target}"] }
  bulk: { endpoints: ["127.0.0.1:${iperfPort}"] }
admin: { bind: "off" }
`,
  );
  return startPinned(PROXY_CPU, main, ['-c', cfg, '--log-level', 'warn'], { ready: async () => (await portOpen(tcpPort)) && (await portOpen(httpPort)) && portOpen(bulkPort) });
}

async function wrk(port, seconds, extra) {
  return parseWrk(await runPinned(LOAD_CPU, 'wrk', ['-t1', `-d${seconds}s`, ...extra, `http://127.0.0.1:${port}/`]));
}

export async function abBench({ reps, seconds, ref }) {
  for (const b of ['wrk', 'nginx', 'iperf3', 'taskset']) need(b);
  if (!ref) throw new Error('ab needs --ref /path/to/another/built/checkout');
  const refMain = resolve(ref, 'dist/main.js');
  if (!existsSync(refMain)) throw new Error(`${refMain} not found: build that checkout first`);
  const builds = { this: fileURLToPath(new URL('../dist/main.js', import.meta.url)), ref: refMain };
  const dir = tmp('berth-ab-');
  const nginxPort = await freePort();
  const iperfPort = await freePort();
  const procs = [await startNginxEndpoint(dir, nginxPort, LOAD_CPU), await startPinned(LOAD_CPU, 'iperf3', ['-s', '-p', String(iperfPort)], { ready: () => portOpen(iperfPort) })];
  try {
    const targets = {};
    for (const [tag, main] of Object.entries(builds)) {
      const tcp = await freePort();
      const http = await freePort();
      const bulk = await freePort();
      const p = await startBerth(main, dir, tag, tcp, http, nginxPort, bulk, iperfPort);
      procs.push(p);
      targets[tag] = { tcp, http, bulk, pid: p.pid };
    }
    const runs = { up: { this: [], ref: [] }, down: { this: [], ref: [] }, conns: { this: [], ref: [] }, http: { this: [], ref: [] } };
    for (let rep = 1; rep <= reps; rep++) {
      // Alternate which build goes first, so a drift of the machine falls on both.
      const order = rep % 2 ? ['this', 'ref'] : ['ref', 'this'];
      for (const tag of order) {
        const t = targets[tag];
        for (const [name, reverse] of [['up', false], ['down', true]]) {
          const b = await measure(t.pid, () => iperf(LOAD_CPU, t.bulk, seconds, { reverse }));
          runs[name][tag].push({ rate: b.result.bitsPerSecond / 1e9, cpu: (b.proxyCpuSeconds * 1000) / (b.result.bytes / 1e9) });
        }
        const c = await measure(t.pid, () => wrk(t.tcp, seconds, ['-c32', '-H', 'Connection: close']));
        runs.conns[tag].push({ rate: c.result.rps, cpu: (c.proxyCpuSeconds * 1e6) / c.result.total });
        const h = await measure(t.pid, () => wrk(t.http, seconds, ['-c50']));
        runs.http[tag].push({ rate: h.result.rps, cpu: (h.proxyCpuSeconds * 1e6) / h.result.total });
        process.stderr.write(`rep ${rep} ${tag}: ${fmt(runs.up[tag].at(-1).rate, 2)} / ${fmt(runs.down[tag].at(-1).rate, 2)} Gbit/s, ${fmt(c.result.rps, 0)} conn/s, ${fmt(h.result.rps, 0)} req/s\n`);
        await sleep(300);
      }
    }
    const med = (xs, k) => median(xs.map((x) => x[k]));
    const line = (label, name, unit, cpuUnit, digits = 0) => {
      const a = runs[name].this;
      const b = runs[name].ref;
      return `| ${label} | ${fmt(med(a, 'rate'), digits)} | ${fmt(med(b, 'rate'), digits)} | **${fmt(med(a, 'rate') / med(b, 'rate'), 3)}x** | ${fmt(med(a, 'cpu'), 1)} | ${fmt(med(b, 'cpu'), 1)} | **${fmt(med(a, 'cpu') / med(b, 'cpu'), 3)}x** | ${unit}, ${cpuUnit} |`;
    };
    const table = [
      `this build: ${builds.this}; reference: ${builds.ref}`,
      '',
      '| measure | this | reference | this/ref | CPU this | CPU ref | CPU this/ref | units |',
      '|---|---|---|---|---|---|---|---|',
      line('tcp bulk, client → endpoint', 'up', 'Gbit/s', 'CPU-ms/GB', 2),
      line('tcp bulk, endpoint → client', 'down', 'Gbit/s', 'CPU-ms/GB', 2),
      line('tcp new connections', 'conns', 'conn/s', 'µs/conn'),
      line('http keep-alive requests', 'http', 'req/s', 'µs/req'),
    ].join('\n');
    return { table, runs };
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    await Promise.all(procs.map((p) => p.exited));
  }
}
