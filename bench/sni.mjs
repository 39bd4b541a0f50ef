// TLS passthrough routed by SNI: berth (tcp listener, `routes` of `sni` entries, two
// services) vs nginx (stream module, `ssl_preread on` and a map of
// $ssl_preread_server_name to two upstreams, one worker) vs a direct connection,
// interleaved in one run; proxies pinned alone to CPU 1, load and endpoints on CPU 0.
//  - new TLS connections/s: a node client keeping PARALLEL connections going, each a
//    full handshake (no session resumption) with SNI a.bench.test or b.bench.test in
//    turn, then a close; the proxies never hold a key, they read the ClientHello, pick
//    the endpoint by name and pipe. Endpoints: one nginx (http, ssl), a port and a
//    certificate per name. ECDSA P-256 keys, so the handshakes on CPU 0 leave the most
//    room for the proxy's own work.
//  - new connections/s routed by a ClientHello without the handshake: the client
//    sends a real captured hello (SNI a or b; no half-close after it) and closes at the first byte back;
//    the endpoints (plain nginx http, answering 400 to it) and the client cost a
//    fraction of a handshake, so the proxy's core is the one saturated and the
//    per-core cost of SNI routing itself (accept, read and parse the hello, pick,
//    connect, relay, close) is what is compared.
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { fmt, freePort, measure, median, need, portOpen, runPinned, sleep, started, tmp, write } from './lib.mjs';

const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const LOAD_CPU = 0;
const PROXY_CPU = 1;
const PROXIES = ['nginx', 'berth'];
const NAMES = ['a.bench.test', 'b.bench.test'];
const PARALLEL = 32;
const MAX = 10_000_000;

function pki(dir) {
  const o = (...a) => execFileSync('openssl', a, { stdio: 'ignore' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  o('req', '-x509', ...ec, '-keyout', join(dir, 'ca-key.pem'), '-out', join(dir, 'ca.pem'), '-subj', '/CN=bench-ca', '-days', '2');
  for (const name of NAMES) {
    o('req', ...ec, '-keyout', join(dir, `${name}-key.pem`), '-out', join(dir, `${name}.csr`), '-subj', `/CN=${name}`);
    writeFileSync(join(dir, `${name}.ext`), `subjectAltName=DNS:${name}\nextendedKeyUsage=serverAuth`);
    o('x509', '-req', '-in', join(dir, `${name}.csr`), '-CA', join(dir, 'ca.pem'), '-CAkey', join(dir, 'ca-key.pem'), '-CAcreateserial', '-out', join(dir, `${name}.pem`), '-days', '2', '-extfile', join(dir, `${name}.ext`));
  }
}

// The load generator, run as `node sni-load.mjs CA SECONDS PARALLEL MAX PORT_A PORT_B`:
// connection i goes to PORT_A with SNI a.bench.test or PORT_B with b.bench.test, i
// alternating; prints one JSON line.
const LOAD_SRC = `
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
const [caFile, seconds, parallel, max, portA, portB] = process.argv.slice(2);
// One context for every connection (tls.connect({ ca }) would build one per connection).
const secureContext = tls.createSecureContext({ ca: readFileSync(caFile) });
const names = ${JSON.stringify(NAMES)};
const ports = [Number(portA), Number(portB)];
let connections = 0, errors = 0, started = 0, done = false;
const t0 = process.hrtime.bigint();
function finish() {
  if (done) return;
  done = true;
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  process.stdout.write(JSON.stringify({ connections, errors, seconds: secs }) + '\\n', () => process.exit(0));
}
function next() {
  if (done) return;
  const i = started++ % 2;
  let ok = false;
  const s = tls.connect({ host: '127.0.0.1', port: ports[i], servername: names[i], secureContext });
  s.setTimeout(5000, () => s.destroy(new Error('timeout')));
  s.on('secureConnect', () => {
    ok = true;
    if (++connections >= Number(max)) return finish();
    s.end();
  });
  s.on('error', () => {});
  s.on('close', () => {
    if (!ok) errors++;
    next();
  });
}
for (let k = 0; k < Number(parallel); k++) next();
setTimeout(finish, Number(seconds) * 1000);
`;

// The raw load: `node sni-raw.mjs HELLO_A HELLO_B SECONDS PARALLEL PORT_A PORT_B`: connection i
// sends hello i % 2 to its port and closes at the first byte back; one JSON line.
const RAW_SRC = `
import net from 'node:net';
import { readFileSync } from 'node:fs';
const [a, b, seconds, parallel, portA, portB] = process.argv.slice(2);
const hellos = [readFileSync(a), readFileSync(b)];
const ports = [Number(portA), Number(portB)];
let connections = 0, errors = 0, started = 0, done = false;
const t0 = process.hrtime.bigint();
function finish() {
  if (done) return;
  done = true;
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  process.stdout.write(JSON.stringify({ connections, errors, seconds: secs }) + '\\n', () => process.exit(0));
}
function next() {
  if (done) return;
  const i = started++ % 2;
  let ok = false;
  const s = net.connect(ports[i], '127.0.0.1');
  s.setTimeout(5000, () => s.destroy());
  s.on('connect', () => s.write(hellos[i]));
  s.once('data', () => {
    ok = true;
    connections++;
    s.destroy();
  });
  s.on('error', () => {});
  s.on('close', () => {
    if (!ok) errors++;
    next();
  });
}
for (let k = 0; k < Number(parallel); k++) next();
setTimeout(finish, Number(seconds) * 1000);
`;

/** A real ClientHello for `servername`, as node's TLS sends it. */
function captureHello(servername) {
  return new Promise((resolve) => {
    const sink = net.createServer((c) => c.once('data', (d) => (resolve(d), c.destroy(), sink.close())));
    sink.listen(0, '127.0.0.1', () => {
      const c = tls.connect({ host: '127.0.0.1', port: sink.address().port, servername, rejectUnauthorized: false });
      c.on('error', () => {});
    });
  });
}

/** The two TLS endpoints: one nginx (http, ssl), a port and certificate per name; and two plain http ones (`raw`). */
async function startEndpoints(procs, dir, ports, raw) {
  const conf = write(
    dir,
    'nginx-endpoints.conf',
    `worker_processes 1; master_process off; daemon off; pid ${dir}/nginx-endpoints.pid; error_log ${dir}/nginx-endpoints-error.log;
events { worker_connections 20000; }
http { access_log off; ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets off;
${NAMES.map((n, i) => `  server { listen 127.0.0.1:${ports[i]} ssl backlog=4096; ssl_certificate ${dir}/${n}.pem; ssl_certificate_key ${dir}/${n}-key.pem; location / { return 200 "${n}\\n"; } }
  server { listen 127.0.0.1:${raw[i]} backlog=4096; location / { return 200 "${n}\\n"; } }
`).join('')}}
`,
  );
  return started(procs, LOAD_CPU, 'nginx', ['-c', conf, '-e', `${dir}/nginx-endpoints-error.log`], async () => (await portOpen(ports[0])) && (await portOpen(ports[1])) && (await portOpen(raw[0])) && portOpen(raw[1]));
}

async function startProxy(procs, kind, dir, port, targets, tag = '') {
  if (kind === 'nginx') {
    // One process (no master: the pid measured is the one working).
    const cfg = write(
      dir,
      `nginx-sni${tag}.conf`,
      `load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1; master_process off; daemon off; pid ${dir}/nginx-sni${tag}.pid; error_log ${dir}/nginx-sni${tag}-error.log;
events { worker_connections 20000; }
stream {
  map $ssl_preread_server_name $sni_upstream {
${NAMES.map((n, i) => `    ${n} u${i};
`).join('')}    default u0;
  }
${NAMES.map((n, i) => `  upstream u${i} { server 127.0.0.1:${targets[i]}; }
`).join('')}  server { listen 127.0.0.1:${port} backlog=4096; ssl_preread on; proxy_pass $sni_upstream; }
}
`,
    );
    return started(procs, PROXY_CPU, 'nginx', ['-c', cfg, '-e', `${dir}/nginx-sni${tag}-error.log`], () => portOpen(port));
  }
  const cfg = write(
    dir,
    `berth-sni${tag}.yaml`,
    `listeners:
  - name: edge
    bind: 127.0.0.1:${port}
    mode: tcp
    routes:
${NAMES.map((n, i) => `      - { sni: ${n}, service: s${i} }
`).join('')}services:
${NAMES.map((n, i) => `  s${i}: { endpoints: ["127.0.0.1:${targets[i]}"] }
`).join('')}admin: { bind: "off" }
`,
  );
  // Run the executable as users do (its shebang carries berth's node flags).
  return started(procs, PROXY_CPU, MAIN, ['-c', cfg, '--log-level', 'warn'], () => portOpen(port));
}

/** The certificate's name when connecting to `port` with SNI `name` (which endpoint it reached). */
function peerName(port, name, ca) {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: name, ca }, () => {
      const cn = s.getPeerCertificate().subject?.CN;
      s.destroy();
      resolve(cn);
    });
    s.setTimeout(5000, () => s.destroy(new Error(`no handshake through ${port} for ${name}`)));
    s.on('error', reject);
  });
}

async function load(script, dir, ports, seconds) {
  const out = await runPinned(LOAD_CPU, process.execPath, [script, join(dir, 'ca.pem'), String(seconds), String(PARALLEL), String(MAX), String(ports[0]), String(ports[1])], (seconds + 30) * 1000);
  return JSON.parse(out.trim().split('\n').pop());
}

export async function sniBench({ reps, seconds }) {
  for (const b of ['nginx', 'taskset', 'openssl']) need(b);
  if (!existsSync('/usr/lib/nginx/modules/ngx_stream_module.so')) throw new Error('nginx stream module missing: apt-get install libnginx-mod-stream');
  const dir = tmp('berth-bench-sni-');
  pki(dir);
  const ca = readFileSync(join(dir, 'ca.pem'));
  const script = write(dir, 'sni-load.mjs', LOAD_SRC);
  const endpointPorts = [await freePort(), await freePort()];
  const rawPorts = [await freePort(), await freePort()];
  const helloFiles = [];
  for (const name of NAMES) helloFiles.push(write(dir, `hello-${name}.bin`, await captureHello(name)));
  const raw = write(dir, 'sni-raw.mjs', RAW_SRC);
  const procs = [];
  try {
    await startEndpoints(procs, dir, endpointPorts, rawPorts);
    // direct: connection i straight to endpoint i, with its name.
    const targets = { direct: { ports: endpointPorts, pid: 0 } };
    const rawTargets = { direct: { ports: rawPorts, pid: 0 } };
    for (const kind of PROXIES) {
      const port = await freePort();
      const p = await startProxy(procs, kind, dir, port, endpointPorts);
      targets[kind] = { ports: [port, port], pid: p.pid };
      const rport = await freePort();
      const r = await startProxy(procs, kind, dir, rport, rawPorts, '-raw');
      rawTargets[kind] = { ports: [rport, rport], pid: r.pid };
    }
    const kinds = ['direct', ...PROXIES];
    for (const k of kinds) {
      for (const [i, name] of NAMES.entries()) {
        const cn = await peerName(targets[k].ports[i], name, ca);
        if (cn !== name) throw new Error(`${k}: SNI ${name} reached the endpoint of ${cn}`);
      }
    }
    const loadTls = (t, secs) => load(script, dir, t.ports, secs);
    const loadRaw = async (t, secs) => JSON.parse((await runPinned(LOAD_CPU, process.execPath, [raw, helloFiles[0], helloFiles[1], String(secs), String(PARALLEL), String(t.ports[0]), String(t.ports[1])], (secs + 30) * 1000)).trim().split('\n').pop());
    const measures = [
      { what: `new TLS connections/s, SNI-routed passthrough to 2 endpoints (full ECDSA handshakes, ${PARALLEL} in parallel)`, targets, run: loadTls },
      { what: `new connections/s routed by a captured ClientHello, no handshake (the proxy's core saturated; ${PARALLEL} in parallel)`, targets: rawTargets, run: loadRaw },
    ];
    const rows = [];
    const allRuns = {};
    for (const [mi, ms] of measures.entries()) {
      const runs = Object.fromEntries(kinds.map((k) => [k, []]));
      for (const k of kinds) await ms.run(ms.targets[k], 1);
      for (let rep = 1; rep <= reps; rep++) {
        for (const k of kinds) {
          const t = ms.targets[k];
          const m = await measure(t.pid, () => ms.run(t, seconds));
          const { connections, errors } = m.result;
          runs[k].push({ v: connections / m.result.seconds, cpu: t.pid ? (m.proxyCpuSeconds * 1e6) / connections : NaN, busy: m.busy, connections, errors });
          process.stderr.write(`rep ${rep} ${mi === 0 ? 'tls' : 'raw'} ${k}: ${fmt(connections / m.result.seconds, 0)} connections/s, errors ${errors}, busy ${JSON.stringify(m.busy)}\n`);
          await sleep(300);
        }
      }
      const med = (k, key = 'v') => median(runs[k].map((x) => x[key]));
      const busy = (k) => `${median(runs[k].map((x) => x.busy['0']))}/${median(runs[k].map((x) => x.busy['1']))}`;
      rows.push(`| ${ms.what} | ${kinds.map((k) => fmt(med(k), 0)).join(' | ')} | **${fmt(med('berth') / med('nginx'), 2)}x** | ${fmt(med('berth') / med('direct'), 2)}x | ${PROXIES.map((k) => fmt(med(k, 'cpu'), 1)).join(' / ')} µs/connection | ${kinds.map(busy).join(' · ')} | ${kinds.map((k) => fmt(med(k, 'errors'), 0)).join(' / ')} |`);
      allRuns[mi === 0 ? 'tls' : 'raw'] = runs;
    }
    const table = [
      `| measure | direct | nginx | berth | berth/nginx | berth/direct | proxy CPU per unit (nginx / berth) | busy % CPU0/CPU1 (direct · nginx · berth) | failed connections (direct / nginx / berth) |`,
      `|---|---|---|---|---|---|---|---|---|`,
      ...rows,
    ].join('\n');
    return { table, params: { reps, seconds, parallel: PARALLEL }, runs: allRuns };
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    await Promise.all(procs.map((p) => p.exited));
  }
}
