// The DNS interface: berth (`dns:`, answering web.service.berth from the pick set of a
// static service of two endpoints) vs dnsmasq answering one static record
// (web.svc.test, --address), each alone on CPU 1, the load generator on CPU 0,
// interleaved in one run: A queries/s with SOCKETS sockets x WINDOW in flight (the
// udp benchmark's generator), and each server's CPU per query. Target: >= 0.5x.
import { fileURLToPath } from 'node:url';
import { fmt, freePort, measure, median, need, runPinned, sleep, started, tmp, write } from './lib.mjs';
import { dnsQuery, loadSource, udpAnswers } from './udp.mjs';

const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const LOAD_CPU = 0;
const SERVER_CPU = 1;
const SOCKETS = 16;
const WINDOW = 8;
const MAX = 50_000_000;
const NAMES = { dnsmasq: 'web.svc.test', berth: 'web.service.berth' };

export async function dnsBench({ reps, seconds }) {
  for (const b of ['dnsmasq', 'taskset']) need(b);
  const dir = tmp('berth-bench-dns-');
  const scripts = Object.fromEntries(Object.entries(NAMES).map(([k, name]) => [k, write(dir, `dns-load-${k}.mjs`, loadSource(name))]));
  const procs = [];
  try {
    const ports = { dnsmasq: await freePort(), berth: await freePort() };
    const dm = await started(
      procs,
      SERVER_CPU,
      'dnsmasq',
      ['--keep-in-foreground', `--port=${ports.dnsmasq}`, '--listen-address=127.0.0.1', '--bind-interfaces', '--no-resolv', '--no-hosts', '--address=/web.svc.test/10.0.0.1', '--pid-file=', '--user=root', '--cache-size=1000'],
      () => udpAnswers(ports.dnsmasq, dnsQuery(1, NAMES.dnsmasq)),
    );
    const cfg = write(
      dir,
      'berth-dns.yaml',
      `listeners:
  - { name: web, bind: "127.0.0.1:0", service: web }
services:
  web: { endpoints: ["10.0.0.1:80", "10.0.0.2:80"] }
dns: { bind: "127.0.0.1:${ports.berth}" }
admin: { bind: "off" }
`,
    );
    const b = await started(procs, SERVER_CPU, MAIN, ['-c', cfg, '--log-level', 'warn'], () => udpAnswers(ports.berth, dnsQuery(1, NAMES.berth)));
    const pids = { dnsmasq: dm.pid, berth: b.pid };
    const kinds = ['dnsmasq', 'berth'];
    const runs = Object.fromEntries(kinds.map((k) => [k, []]));
    const load = (k, secs) => runPinned(LOAD_CPU, process.execPath, [scripts[k], String(ports[k]), String(secs), String(SOCKETS), String(WINDOW), String(MAX), 'dns'], (secs + 30) * 1000).then((out) => JSON.parse(out.trim().split('\n').pop()));
    for (const k of kinds) await load(k, 1);
    for (let rep = 1; rep <= reps; rep++) {
      for (const k of kinds) {
        const r = await measure(pids[k], () => load(k, seconds));
        const { received, resent } = r.result;
        runs[k].push({ v: received / r.result.seconds, cpu: (r.proxyCpuSeconds * 1e6) / received, busy: r.busy, resent });
        process.stderr.write(`rep ${rep} ${k}: ${fmt(received / r.result.seconds, 0)} queries/s resent ${resent} busy ${JSON.stringify(r.busy)}\n`);
        await sleep(300);
      }
    }
    const med = (k, key = 'v') => median(runs[k].map((x) => x[key]));
    const busy = (k) => `${median(runs[k].map((x) => x.busy['0']))}/${median(runs[k].map((x) => x.busy['1']))}`;
    const table = [
      `| measure | dnsmasq | berth | berth/dnsmasq | CPU per query (dnsmasq / berth) | per core (dnsmasq µs / berth µs) | busy % CPU0/CPU1 (dnsmasq · berth) | resent (dnsmasq / berth) |`,
      `|---|---|---|---|---|---|---|---|`,
      `| A queries/s (${SOCKETS} sockets x ${WINDOW} in flight) | ${fmt(med('dnsmasq'), 0)} | ${fmt(med('berth'), 0)} | **${fmt(med('berth') / med('dnsmasq'), 2)}x** | ${fmt(med('dnsmasq', 'cpu'), 2)} / ${fmt(med('berth', 'cpu'), 2)} µs | **${fmt(med('dnsmasq', 'cpu') / med('berth', 'cpu'), 2)}x** | ${kinds.map(busy).join(' · ')} | ${kinds.map((k) => fmt(med(k, 'resent'), 0)).join(' / ')} |`,
    ].join('\n');
    return { table, params: { reps, seconds, sockets: SOCKETS, window: WINDOW }, runs };
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    await Promise.all(procs.map((p) => p.exited));
  }
}
