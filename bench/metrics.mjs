// The cost of metrics on the hot path: berth with the admin server (and so
// metrics) on vs off, new TCP connections per second through the same nginx,
// interleaved, berth pinned to CPU 1, wrk and nginx on CPU 0. (HTTP mode does not
// exist yet; per-connection metric updates are where metrics cost most in tcp mode.)
import { fileURLToPath } from 'node:url';
import { fmt, freePort, measure, median, need, portOpen, runPinned, sleep, startPinned, tmp, write } from './lib.mjs';

const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url));

export async function metricsBench({ reps, seconds }) {
  for (const b of ['wrk', 'nginx', 'taskset']) need(b);
  const dir = tmp('berth-bench-metrics-');
  const nginxPort = await freePort();
  const conf = write(dir, 'nginx.conf', `worker_processes 1; master_process off; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/e.log;
events { worker_connections 20000; }
http { access_log off; server { listen 127.0.0.1:${nginxPort} backlog=4096; location / { return 200 "ok\\n"; } } }
`);
  const procs = [await startPinned(0, 'nginx', ['-c', conf], { ready: () => portOpen(nginxPort) })];
  const variants = {};
  try {
    for (const [name, admin] of [['metrics off', 'off'], ['metrics on', `127.0.0.1:${await freePort()}`]]) {
      const port = await freePort();
      const p = await startPinned(1, MAIN, ['--listen', `127.0.0.1:${port}`, '--backend', `127.0.0.1:${nginxPort}`, '--admin', admin, '--log-level', 'warn'], { ready: () => portOpen(port) });
      procs.push(p);
      variants[name] = { port, pid: p.pid, admin, rps: [], us: [] };
    }
    for (let rep = 1; rep <= reps; rep++) {
      for (const [name, v] of Object.entries(variants)) {
        const m = await measure(v.pid, () => runPinned(0, 'wrk', ['-t1', '-c32', `-d${seconds}s`, '-H', 'Connection: close', `http://127.0.0.1:${v.port}/`]));
        const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(m.result)?.[1]);
        const total = Number(/(\d+) requests in/.exec(m.result)?.[1]);
        v.rps.push(rps);
        v.us.push((m.proxyCpuSeconds * 1e6) / total);
        process.stderr.write(`rep ${rep} ${name}: ${fmt(rps, 0)} conn/s\n`);
        await sleep(300);
      }
    }
    // A scrape proves the "on" variant really counted.
    const on = variants['metrics on'];
    const scrape = await fetch(`http://${on.admin}/metrics`).then((r) => r.text());
    const counted = Number(/berth_listener_connections_total\{listener="default"\} (\d+)/.exec(scrape)?.[1] ?? 0);
    const off = median(variants['metrics off'].rps);
    const onRps = median(on.rps);
    const table = [
      '| variant | new connections/s (median) | berth CPU µs per connection |',
      '|---|---|---|',
      ...Object.entries(variants).map(([name, v]) => `| ${name} | ${fmt(median(v.rps), 0)} | ${fmt(median(v.us), 1)} |`),
      `| **on / off** | **${fmt(onRps / off, 3)}x** (${fmt((100 * (off - onRps)) / off, 1)}% fewer) | |`,
    ].join('\n');
    return { table: `${table}\n\nconnections counted by the "on" variant's berth_listener_connections_total: ${counted}`, variants };
  } finally {
    for (const p of procs) p.kill('SIGKILL');
  }
}
