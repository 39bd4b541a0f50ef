// Shared helpers for the side-by-side benchmarks: processes pinned to CPUs,
// per-CPU busy %, process CPU time, RSS, medians.
import { spawn, execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import { join } from 'node:path';

export const HZ = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

export function need(bin) {
  try {
    execFileSync('which', [bin], { stdio: 'ignore' });
  } catch {
    throw new Error(`${bin} not found: install it (Debian: apt-get install -y iperf3 wrk haproxy nginx-light)`);
  }
}

export function tmp(prefix) {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function write(dir, name, text) {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

/**
 * Starts `cmd args` pinned to `cpu` (taskset). Resolves once `ready()` is true.
 * Run everything as one process (nginx: `master_process off`): a SIGKILLed parent
 * leaves its children holding the output pipes, and the benchmark would never exit.
 */
export async function startPinned(cpu, cmd, args, { ready, env } = {}) {
  const p = spawn('taskset', ['-c', String(cpu), cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let out = '';
  p.stdout.on('data', (d) => (out += d));
  p.stderr.on('data', (d) => (out += d));
  p.output = () => out;
  const exited = new Promise((r) => p.on('exit', r));
  p.exited = exited;
  if (ready) {
    const deadline = Date.now() + 10_000;
    while (!(await ready())) {
      if (p.exitCode !== null) throw new Error(`${cmd} exited: ${out}`);
      if (Date.now() > deadline) throw new Error(`${cmd} not ready: ${out}`);
      await sleep(20);
    }
  }
  return p;
}

/**
 * startPinned, with the process put in `procs` before it is ready: one that never gets
 * ready is killed with the rest (startPinned's own `ready` leaves it running).
 */
export async function started(procs, cpu, cmd, args, ready) {
  const p = await startPinned(cpu, cmd, args);
  procs.push(p);
  const deadline = Date.now() + 10_000;
  while (!(await ready())) {
    if (p.exitCode !== null) throw new Error(`${cmd} exited: ${p.output()}`);
    if (Date.now() > deadline) throw new Error(`${cmd} not ready: ${p.output()}`);
    await sleep(20);
  }
  return p;
}

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

export async function portOpen(port) {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.on('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

export async function freePort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const port = s.address().port;
  await new Promise((r) => s.close(r));
  return port;
}

/** Per-CPU [busy, total] jiffies from /proc/stat. */
export function cpuTimes() {
  const out = {};
  for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
    const m = /^cpu(\d+) (.*)$/.exec(line);
    if (!m) continue;
    const v = m[2].trim().split(/\s+/).map(Number);
    const idle = v[3] + (v[4] || 0);
    const total = v.reduce((a, b) => a + b, 0);
    out[m[1]] = [total - idle, total];
  }
  return out;
}

/** Busy % per CPU between two cpuTimes() samples. */
export function busy(a, b) {
  const out = {};
  for (const k of Object.keys(b)) out[k] = Math.round((100 * (b[k][0] - a[k][0])) / Math.max(1, b[k][1] - a[k][1]));
  return out;
}

/** utime + stime of a process and its threads, seconds. */
export function procCpu(pid) {
  if (!pid) return 0;
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) / HZ;
  } catch {
    return 0;
  }
}

export function rssBytes(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/** The pid of the real program under `taskset` (taskset execs, so it is the same pid). */
export function pidOf(p) {
  return p.pid;
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n === 0 ? NaN : n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/** Runs a command pinned to `cpu` to completion; returns stdout. */
export function runPinned(cpu, cmd, args, timeoutMs = 120_000) {
  return new Promise((resolve, reject) => {
    const p = spawn('taskset', ['-c', String(cpu), cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('exit', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${err}${out}`));
    });
  });
}

/**
 * One iperf3 client run from `cpu` (`reverse`: -R, the server sends). iperf3 -s runs
 * one test at a time and says "the server is busy" right after the last one: retried.
 */
export async function iperf(cpu, port, seconds, { streams = 1, reverse = false } = {}) {
  for (let attempt = 1; ; attempt++) {
    const out = await runPinned(cpu, 'iperf3', ['-c', '127.0.0.1', '-p', String(port), '-t', String(seconds), '-P', String(streams), '-J', ...(reverse ? ['-R'] : [])]);
    const j = JSON.parse(out);
    if (j.end?.sum_received) return { bitsPerSecond: j.end.sum_received.bits_per_second, bytes: j.end.sum_received.bytes };
    if (attempt === 3) throw new Error(`iperf3: ${j.error ?? out.slice(0, 300)}`);
    await sleep(1000);
  }
}

/** What wrk printed: requests/s and in all, latency percentiles (with --latency), transfer rate, errors. */
export function parseWrk(out) {
  const ms = (label) => {
    const m = new RegExp(`${label}%\\s+([\\d.]+)(us|ms|s)`).exec(out);
    if (!m) return NaN;
    return Number(m[1]) * (m[2] === 'us' ? 0.001 : m[2] === 's' ? 1000 : 1);
  };
  const rate = /Transfer\/sec:\s+([\d.]+)(\w+)/.exec(out);
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN),
    total: Number(/(\d+) requests in/.exec(out)?.[1] ?? NaN),
    p50: ms('50'),
    p99: ms('99'),
    bytesPerSec: rate ? Number(rate[1]) * ({ B: 1, KB: 1024, MB: 1048576, GB: 1073741824 }[rate[2]] ?? 1) : NaN,
    errors: /Socket errors: (.*)/.exec(out)?.[1] ?? '',
    non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0),
  };
}

/** Measures a workload: per-CPU busy % and the CPU seconds `pid` used while `fn` ran. */
export async function measure(pid, fn) {
  const c0 = cpuTimes();
  const p0 = procCpu(pid);
  const result = await fn();
  const p1 = procCpu(pid);
  const c1 = cpuTimes();
  return { result, busy: busy(c0, c1), proxyCpuSeconds: p1 - p0 };
}

export function fmt(n, digits = 1) {
  if (!Number.isFinite(n)) return '-';
  return n.toFixed(digits);
}

/** Calls `sink` with each JSON object a stream prints one per line (other lines are skipped). */
export function jsonLines(stream, sink) {
  let buf = '';
  stream.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        sink(JSON.parse(line));
      } catch {
        // not a JSON line: ignore
      }
    }
  });
}

/** nginx as the HTTP endpoint of the http benchmarks: one process pinned to `cpu`, keep-alive, a 24-byte body. */
export async function startNginxEndpoint(dir, port, cpu) {
  const conf = write(
    dir,
    'nginx.conf',
    `worker_processes 1; master_process off; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/nginx-error.log;
events { worker_connections 20000; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 60s;
  server { listen 127.0.0.1:${port} backlog=4096; location / { return 200 "hello from the endpoint\\n"; } } }
`,
  );
  return startPinned(cpu, 'nginx', ['-c', conf, '-e', `${dir}/nginx-error.log`], { ready: () => portOpen(port) });
}

/**
 * HAProxy in http mode, one thread, pinned to `cpu`, in front of `target`; `h2`:
 * HTTP/2 both sides (prior-knowledge h2c on the bind, proto h2 to the server).
 */
export function startHaproxyHttp(cpu, dir, port, target, { h2 = false } = {}) {
  const proto = h2 ? ' proto h2' : '';
  const cfg = write(
    dir,
    `haproxy-${h2 ? 'h2-' : ''}${port}.cfg`,
    `global
  nbthread 1
  maxconn 9000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend f
  bind 127.0.0.1:${port}${proto}
  default_backend b
backend b
  server s1 127.0.0.1:${target}${proto}
`,
  );
  return startPinned(cpu, 'haproxy', ['-f', cfg, '-db'], { ready: () => portOpen(port) });
}

/**
 * Caddy as a reverse proxy, GOMAXPROCS=1 (it stands for the Go proxies Traefik users
 * run), pinned to `cpu`; `h2`: h2c both sides.
 */
export function startCaddyProxy(cpu, dir, port, target, { h2 = false } = {}) {
  const cfg = write(
    dir,
    `Caddyfile-${h2 ? 'h2-' : ''}${port}`,
    `{
  admin off
  auto_https off${h2 ? '\n  servers {\n    protocols h1 h2c\n  }' : ''}
}
http://127.0.0.1:${port} {
  bind 127.0.0.1
  reverse_proxy 127.0.0.1:${target}${h2 ? ' {\n    transport http {\n      versions h2c\n    }\n  }' : ''}
}
`,
  );
  return startPinned(cpu, 'caddy', ['run', '--config', cfg, '--adapter', 'caddyfile'], { ready: () => portOpen(port), env: { GOMAXPROCS: '1', XDG_DATA_HOME: dir, XDG_CONFIG_HOME: dir } });
}
