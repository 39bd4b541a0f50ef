// UDP: berth (mode udp) vs nginx (stream module, `listen ... udp`, one worker) vs a
// direct path, interleaved in one run; proxies pinned alone to CPU 1, load generator
// and endpoints on CPU 0.
//  - echo: SOCKETS client sockets, each keeping WINDOW datagrams of 64 bytes in flight
//    to a node echo endpoint (one session per client socket, kept for the run).
//  - DNS: the same generator sending A queries (fixed IDs) to dnsmasq; berth with
//    `udp: { responses: 1 }`, nginx with `proxy_responses 1`.
// A datagram is answered or, after 200 ms of silence on its socket, sent again (and
// counted as resent): loss never stalls a run, and every run ends after --seconds
// (or MAX answers).
import { createSocket } from 'node:dgram';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { fmt, freePort, measure, median, need, runPinned, sleep, started, tmp, write } from './lib.mjs';

const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const LOAD_CPU = 0;
const PROXY_CPU = 1;
const PROXIES = ['nginx', 'berth'];
const SOCKETS = 16;
const WINDOW = 8;
const MAX = 50_000_000;
const DNS_NAME = 'web.svc.test';

/** A DNS query for `name` (A, IN, recursion desired) with id `id`. */
export function dnsQuery(id, name) {
  const labels = name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
  const head = Buffer.alloc(12);
  head.writeUInt16BE(id, 0);
  head.writeUInt16BE(0x0100, 2);
  head.writeUInt16BE(1, 4);
  return Buffer.concat([head, ...labels, Buffer.from([0, 0, 1, 0, 1])]);
}

// The load generator, run as `node udp-load.mjs PORT SECONDS SOCKETS WINDOW MAX KIND`;
// prints one JSON line. Datagram i of a socket carries id i in its first two bytes (the
// DNS id, or the echo's first bytes), so an answer names the slot it frees.
export function loadSource(dnsName) {
  return `
import dgram from 'node:dgram';
const [port, seconds, sockets, window, max] = process.argv.slice(2, 7).map(Number);
const kind = process.argv[7];
${dnsQuery.toString()}
const bufs = Array.from({ length: window }, (_, id) => {
  if (kind === 'dns') return dnsQuery(id, ${JSON.stringify(dnsName)});
  const b = Buffer.alloc(64, 120);
  b.writeUInt16BE(id, 0);
  return b;
});
let received = 0, sent = 0, resent = 0, errors = 0, done = false;
const t0 = process.hrtime.bigint();
const socks = [];
function finish() {
  if (done) return;
  done = true;
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  process.stdout.write(JSON.stringify({ received, sent, resent, errors, seconds: secs }) + '\\n', () => process.exit(0));
}
for (let i = 0; i < sockets; i++) {
  const s = dgram.createSocket('udp4');
  const pending = new Uint8Array(window);
  let got = 0, seen = 0;
  s.on('error', () => errors++);
  s.on('message', (m) => {
    if (done || m.length < 2) return;
    const id = m.readUInt16BE(0);
    if (id >= window || !pending[id]) return; // a late answer to a datagram already resent
    pending[id] = 0;
    got++;
    if (++received >= max) return finish();
    pending[id] = 1;
    sent++;
    s.send(bufs[id]);
  });
  s.connect(port, '127.0.0.1', () => {
    for (let id = 0; id < window; id++) {
      pending[id] = 1;
      sent++;
      s.send(bufs[id]);
    }
    // Loss: a socket silent for 200 ms sends its unanswered datagrams again.
    setInterval(() => {
      if (got === seen) for (let id = 0; id < window; id++) if (pending[id]) { resent++; s.send(bufs[id]); }
      seen = got;
    }, 200).unref();
  });
  socks.push(s);
}
setTimeout(finish, seconds * 1000);
`;
}
const LOAD_SRC = loadSource(DNS_NAME);

const ECHO_SRC = `
const s = require('node:dgram').createSocket('udp4');
s.on('error', () => {});
s.on('message', (m, r) => s.send(m, r.port, r.address));
s.bind(Number(process.argv[1]), '127.0.0.1');
`;

/** True once `port` answers one datagram (within 200 ms). */
export function udpAnswers(port, payload) {
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    const end = (v) => {
      clearTimeout(timer);
      s.close();
      resolve(v);
    };
    const timer = setTimeout(() => end(false), 200);
    s.on('error', () => end(false));
    s.on('message', () => end(true));
    s.send(payload, port, '127.0.0.1');
  });
}

function nginxConfig(dir, l) {
  return `load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1; master_process off; daemon off; pid ${dir}/nginx-udp.pid; error_log ${dir}/nginx-udp-error.log;
events { worker_connections 20000; }
stream {
  server { listen 127.0.0.1:${l.echo} udp; proxy_pass 127.0.0.1:${l.echoTarget}; proxy_timeout 60s; }
  server { listen 127.0.0.1:${l.dns} udp; proxy_pass 127.0.0.1:${l.dnsTarget}; proxy_responses 1; proxy_timeout 10s; }
}
`;
}

function berthConfig(l) {
  return `listeners:
  - name: echo
    bind: 127.0.0.1:${l.echo}
    mode: udp
    service: echo
  - name: dns
    bind: 127.0.0.1:${l.dns}
    mode: udp
    service: dns
    udp: { responses: 1 }
services:
  echo: { endpoints: ["127.0.0.1:${l.echoTarget}"] }
  dns: { endpoints: ["127.0.0.1:${l.dnsTarget}"] }
admin: { bind: "off" }
`;
}

async function startProxy(procs, kind, dir, l) {
  const ready = async () => (await udpAnswers(l.echo, Buffer.from('probe'))) && udpAnswers(l.dns, dnsQuery(1, DNS_NAME));
  if (kind === 'nginx') {
    const cfg = write(dir, 'nginx-udp.conf', nginxConfig(dir, l));
    return started(procs, PROXY_CPU, 'nginx', ['-c', cfg, '-e', `${dir}/nginx-udp-error.log`], ready);
  }
  const cfg = write(dir, 'berth-udp.yaml', berthConfig(l));
  // Run the executable as users do (its shebang carries berth's node flags).
  return started(procs, PROXY_CPU, MAIN, ['-c', cfg, '--log-level', 'warn'], ready);
}

async function startDnsmasq(procs, dir, port) {
  const hosts = write(dir, 'hosts', `10.0.0.1 ${DNS_NAME}\n`);
  const conf = write(dir, 'dnsmasq.conf', 'local=/svc.test/\n');
  return started(
    procs,
    LOAD_CPU,
    'dnsmasq',
    ['--keep-in-foreground', `--port=${port}`, '--listen-address=127.0.0.1', '--bind-interfaces', '--no-resolv', '--no-hosts', `--addn-hosts=${hosts}`, `--conf-file=${conf}`, '--local-ttl=1', '--pid-file=', '--user=root', '--cache-size=1000', '--dns-forward-max=10000'],
    () => udpAnswers(port, dnsQuery(1, DNS_NAME)),
  );
}

async function load(script, port, seconds, kind) {
  const out = await runPinned(LOAD_CPU, process.execPath, [script, String(port), String(seconds), String(SOCKETS), String(WINDOW), String(MAX), kind], (seconds + 30) * 1000);
  return JSON.parse(out.trim().split('\n').pop());
}

export async function udpBench({ reps, seconds }) {
  for (const b of ['nginx', 'dnsmasq', 'taskset']) need(b);
  if (!existsSync('/usr/lib/nginx/modules/ngx_stream_module.so')) throw new Error('nginx stream module missing: apt-get install libnginx-mod-stream');
  const dir = tmp('berth-bench-udp-');
  const script = write(dir, 'udp-load.mjs', LOAD_SRC);
  const echoPort = await freePort();
  const dnsPort = await freePort();
  const procs = [];
  try {
    await started(procs, LOAD_CPU, process.execPath, ['-e', ECHO_SRC, String(echoPort)], () => udpAnswers(echoPort, Buffer.from('probe')));
    await startDnsmasq(procs, dir, dnsPort);
    const targets = { direct: { echo: echoPort, dns: dnsPort, pid: 0 } };
    for (const kind of PROXIES) {
      const l = { echo: await freePort(), dns: await freePort(), echoTarget: echoPort, dnsTarget: dnsPort };
      const p = await startProxy(procs, kind, dir, l);
      targets[kind] = { ...l, pid: p.pid };
    }
    const kinds = ['direct', ...PROXIES];
    const runs = Object.fromEntries(kinds.map((k) => [k, { echo: [], dns: [] }]));
    for (const k of kinds) await load(script, targets[k].echo, 1, 'echo');
    for (let rep = 1; rep <= reps; rep++) {
      for (const k of kinds) {
        const t = targets[k];
        for (const m of ['echo', 'dns']) {
          const r = await measure(t.pid, () => load(script, t[m], seconds, m));
          const { received, resent, errors } = r.result;
          runs[k][m].push({ v: received / r.result.seconds, cpu: t.pid ? (r.proxyCpuSeconds * 1e6) / received : NaN, busy: r.busy, received, resent, errors });
          process.stderr.write(`rep ${rep} ${k} ${m}: ${fmt(received / r.result.seconds, 0)}/s resent ${resent} errors ${errors} busy ${JSON.stringify(r.busy)}\n`);
        }
        await sleep(300);
      }
    }
    const med = (k, m, key = 'v') => median(runs[k][m].map((x) => x[key]));
    const busy = (k, m) => `${median(runs[k][m].map((x) => x.busy['0']))}/${median(runs[k][m].map((x) => x.busy['1']))}`;
    const row = (label, m, cpuUnit) =>
      `| ${label} | ${kinds.map((k) => fmt(med(k, m), 0)).join(' | ')} | **${fmt(med('berth', m) / med('nginx', m), 2)}x** | ${fmt(med('berth', m) / med('direct', m), 2)}x | ${PROXIES.map((k) => fmt(med(k, m, 'cpu'), 2)).join(' / ')} ${cpuUnit} | ${kinds.map((k) => busy(k, m)).join(' · ')} | ${kinds.map((k) => fmt(med(k, m, 'resent'), 0)).join(' / ')} |`;
    const table = [
      `| measure | direct | nginx | berth | berth/nginx | berth/direct | proxy CPU per unit (nginx / berth) | busy % CPU0/CPU1 (direct · nginx · berth) | resent after 200 ms silence (direct / nginx / berth) |`,
      `|---|---|---|---|---|---|---|---|---|`,
      row(`UDP echo, 64 B (answered datagrams/s, ${SOCKETS} sockets x ${WINDOW} in flight)`, 'echo', 'µs/datagram'),
      row(`DNS A queries/s to dnsmasq (${SOCKETS} sockets x ${WINDOW} in flight; berth responses: 1)`, 'dns', 'µs/query'),
    ].join('\n');
    return { table, params: { reps, seconds, sockets: SOCKETS, window: WINDOW }, runs };
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    await Promise.all(procs.map((p) => p.exited));
  }
}
