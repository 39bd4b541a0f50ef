// TLS: berth (tcp listener with tls) vs HAProxy (mode tcp, bind ... ssl) vs nginx
// (stream module with ssl, one worker), interleaved in one run; proxies pinned alone to CPU 1, load and nginx on CPU 0.
//  - full handshakes/s: 8 x openssl s_time -new in parallel (no session resumption; RSA 2048).
//    Not wrk with "Connection: close": wrk resumes sessions, and how many differs per
//    server (node under TLS 1.3: about half; under TLS 1.2: all), so its figure mixes
//    full and resumed handshakes differently for each proxy.
//  - full mTLS handshakes/s: the same with a client certificate (verify required)
//  - bulk throughput: wrk keep-alive fetching 1 MiB bodies over TLS
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fmt, freePort, measure, median, need, parseWrk, portOpen, runPinned, sleep, startPinned, tmp, write } from './lib.mjs';

const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const LOAD_CPU = 0;
const PROXY_CPU = 1;
const PROXIES = ['haproxy', 'nginx', 'berth'];

function pki(dir) {
  const o = (...a) => execFileSync('openssl', a, { stdio: 'ignore' });
  o('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'ca-key.pem'), '-out', join(dir, 'ca.pem'), '-subj', '/CN=bench-ca', '-days', '2');
  for (const [name, ext] of [
    ['server', 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth'],
    ['client', 'subjectAltName=URI:spiffe://bench/client\nextendedKeyUsage=clientAuth'],
  ]) {
    o('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, `${name}-key.pem`), '-out', join(dir, `${name}.csr`), '-subj', `/CN=${name}`);
    writeFileSync(join(dir, `${name}.ext`), ext);
    o('x509', '-req', '-in', join(dir, `${name}.csr`), '-CA', join(dir, 'ca.pem'), '-CAkey', join(dir, 'ca-key.pem'), '-CAcreateserial', '-out', join(dir, `${name}.pem`), '-days', '2', '-extfile', join(dir, `${name}.ext`));
  }
  writeFileSync(join(dir, 'server-combined.pem'), readFileSync(join(dir, 'server.pem')) + readFileSync(join(dir, 'server-key.pem')));
}

async function startNginx(dir, port) {
  writeFileSync(join(dir, 'big'), Buffer.alloc(1024 * 1024, 97), { mode: 0o644 });
  const conf = write(
    dir,
    'nginx.conf',
    `worker_processes 1; master_process off; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/nginx-error.log;
events { worker_connections 20000; }
http { access_log off; keepalive_requests 1000000; sendfile on;
  server { listen 127.0.0.1:${port} backlog=4096;
    location = /ok { return 200 "ok\\n"; }
    location / { root ${dir}; } } }
`,
  );
  return startPinned(LOAD_CPU, 'nginx', ['-c', conf, '-e', `${dir}/nginx-error.log`], { ready: () => portOpen(port) });
}

async function startProxy(kind, dir, ports, target) {
  if (kind === 'nginx') {
    // One process (no master: the pid measured is the one working).
    const cfg = write(
      dir,
      'nginx-proxy.conf',
      `load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1; master_process off; daemon off; pid ${dir}/nginx-proxy.pid; error_log ${dir}/nginx-proxy-error.log;
events { worker_connections 20000; }
stream {
  ssl_certificate ${dir}/server.pem; ssl_certificate_key ${dir}/server-key.pem; ssl_protocols TLSv1.2 TLSv1.3;
  server { listen 127.0.0.1:${ports.tls} ssl backlog=4096; proxy_pass 127.0.0.1:${target}; }
  server { listen 127.0.0.1:${ports.mtls} ssl backlog=4096; ssl_verify_client on; ssl_client_certificate ${dir}/ca.pem; proxy_pass 127.0.0.1:${target}; }
}
`,
    );
    return startPinned(PROXY_CPU, 'nginx', ['-c', cfg, '-e', `${dir}/nginx-proxy-error.log`], { ready: () => portOpen(ports.mtls) });
  }
  if (kind === 'haproxy') {
    const cfg = write(
      dir,
      'haproxy.cfg',
      `global
  nbthread 1
  maxconn 9000
  tune.ssl.default-dh-param 2048
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend tls
  bind 127.0.0.1:${ports.tls} ssl crt ${dir}/server-combined.pem ssl-min-ver TLSv1.2
  default_backend b
frontend mtls
  bind 127.0.0.1:${ports.mtls} ssl crt ${dir}/server-combined.pem ca-file ${dir}/ca.pem verify required ssl-min-ver TLSv1.2
  default_backend b
backend b
  server s1 127.0.0.1:${target}
`,
    );
    return startPinned(PROXY_CPU, 'haproxy', ['-f', cfg, '-db'], { ready: () => portOpen(ports.mtls) });
  }
  const cfg = write(
    dir,
    'berth.yaml',
    `listeners:
  - name: tls
    bind: 127.0.0.1:${ports.tls}
    service: web
    tls: { cert: ${dir}/server.pem, key: ${dir}/server-key.pem }
  - name: mtls
    bind: 127.0.0.1:${ports.mtls}
    service: web
    tls: { cert: ${dir}/server.pem, key: ${dir}/server-key.pem, clientCa: ${dir}/ca.pem, allow: ["URI:spiffe://bench/client"] }
services:
  web: { endpoints: ["127.0.0.1:${target}"] }
admin: { bind: "off" }
`,
  );
  return startPinned(PROXY_CPU, MAIN, ['-c', cfg, '--log-level', 'warn'], { ready: () => portOpen(ports.mtls) });
}

async function wrk(url, seconds, close) {
  const args = ['-t1', '-c32', `-d${seconds}s`, ...(close ? ['-H', 'Connection: close'] : []), url];
  return parseWrk(await runPinned(LOAD_CPU, 'wrk', args));
}

const CLIENTS = 8;

/** CLIENTS parallel `openssl s_time -new` runs (full handshakes only); handshakes per second. */
async function sTime(port, dir, seconds, mutual) {
  const cert = mutual ? ['-cert', join(dir, 'client.pem'), '-key', join(dir, 'client-key.pem')] : [];
  const outs = await Promise.all(
    Array.from({ length: CLIENTS }, () => runPinned(LOAD_CPU, 'openssl', ['s_time', '-connect', `127.0.0.1:${port}`, '-new', '-time', String(seconds), ...cert, '-CAfile', join(dir, 'ca.pem')])),
  );
  let n = 0;
  let secs = 0;
  for (const out of outs) {
    const m = /(\d+) connections in (\d+) real seconds/.exec(out);
    if (!m) return { hps: NaN, total: 0 };
    n += Number(m[1]);
    secs = Math.max(secs, Number(m[2]));
  }
  return { hps: n / secs, total: n };
}

export async function tlsBench({ reps, seconds }) {
  for (const b of ['wrk', 'haproxy', 'nginx', 'taskset', 'openssl']) need(b);
  if (!existsSync('/usr/lib/nginx/modules/ngx_stream_module.so')) throw new Error('nginx stream module missing: apt-get install libnginx-mod-stream');
  const dir = tmp('berth-bench-tls-');
  pki(dir);
  const nginxPort = await freePort();
  const procs = [];
  try {
    procs.push(await startNginx(dir, nginxPort));
    const targets = {};
    for (const kind of PROXIES) {
      const ports = { tls: await freePort(), mtls: await freePort() };
      const p = await startProxy(kind, dir, ports, nginxPort);
      procs.push(p);
      targets[kind] = { ...ports, pid: p.pid };
    }
    const kinds = PROXIES;
    const runs = Object.fromEntries(kinds.map((k) => [k, { hs: [], mhs: [], bulk: [] }]));
    for (const k of kinds) await sTime(targets[k].tls, dir, 1, false);
    for (let rep = 1; rep <= reps; rep++) {
      for (const k of kinds) {
        const t = targets[k];
        const hs = await measure(t.pid, () => sTime(t.tls, dir, seconds, false));
        runs[k].hs.push({ v: hs.result.hps, cpu: (hs.proxyCpuSeconds * 1e6) / hs.result.total, busy: hs.busy });
        const mhs = await measure(t.pid, () => sTime(t.mtls, dir, seconds, true));
        runs[k].mhs.push({ v: mhs.result.hps, cpu: (mhs.proxyCpuSeconds * 1e6) / mhs.result.total, busy: mhs.busy });
        const bulk = await measure(t.pid, () => wrk(`https://127.0.0.1:${t.tls}/big`, seconds, false));
        runs[k].bulk.push({ v: bulk.result.bytesPerSec / 1048576, cpu: (bulk.proxyCpuSeconds * 1000) / ((bulk.result.bytesPerSec * seconds) / 1073741824), busy: bulk.busy, errors: bulk.result.errors });
        process.stderr.write(`rep ${rep} ${k}: ${fmt(hs.result.hps, 0)} full handshakes/s, mTLS ${fmt(mhs.result.hps, 0)}/s, bulk ${fmt(bulk.result.bytesPerSec / 1048576, 0)} MiB/s\n`);
        await sleep(300);
      }
    }
    const med = (k, m, key = 'v') => median(runs[k][m].map((x) => x[key]));
    const busy = (k, m) => `${median(runs[k][m].map((x) => x.busy['0']))}/${median(runs[k][m].map((x) => x.busy['1']))}`;
    const row = (label, m, digits, cpuUnit) =>
      `| ${label} | ${kinds.map((k) => fmt(med(k, m), digits)).join(' | ')} | **${fmt(med('berth', m) / med('haproxy', m), 2)}x** | ${fmt(med('berth', m) / med('nginx', m), 2)}x | ${kinds.map((k) => fmt(med(k, m, 'cpu'), 1)).join(' / ')} ${cpuUnit} | ${kinds.map((k) => busy(k, m)).join(' · ')} |`;
    const table = [
      `| measure | HAProxy | nginx | berth | berth/HAProxy | berth/nginx | proxy CPU per unit (HAProxy / nginx / berth) | busy % CPU0/CPU1 (HAProxy · nginx · berth) |`,
      `|---|---|---|---|---|---|---|---|`,
      row(`full TLS handshakes/s (${CLIENTS} x openssl s_time -new)`, 'hs', 0, 'µs/handshake'),
      row(`full mTLS handshakes/s (${CLIENTS} x openssl s_time -new, client cert)`, 'mhs', 0, 'µs/handshake'),
      row('bulk over TLS (MiB/s, wrk keep-alive, 1 MiB bodies)', 'bulk', 0, 'CPU-ms/GiB'),
    ].join('\n');
    const errors = Object.fromEntries(kinds.map((k) => [k, runs[k].bulk.map((x) => x.errors).filter(Boolean)]));
    return { table, errors, params: { reps, seconds }, runs };
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    await Promise.all(procs.map((p) => p.exited));
  }
}
