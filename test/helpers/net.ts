import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { once } from 'node:events';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

/** A server on 127.0.0.1:0 that runs `handler` per connection. */
export async function tcpServer(handler: (s: net.Socket) => void, opts: net.ServerOpts = {}): Promise<net.Server & { port: number }> {
  const server = net.createServer({ allowHalfOpen: true, ...opts }, (s) => {
    s.on('error', () => {});
    handler(s);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return Object.assign(server, { port: (server.address() as net.AddressInfo).port });
}

/** Echoes what it receives; ends when the client ends (half-close aware). */
export function echoServer(): ReturnType<typeof tcpServer> {
  return tcpServer((s) => s.pipe(s));
}

/** Answers every connection with `name` and closes. */
export function nameServer(name: string): ReturnType<typeof tcpServer> {
  return tcpServer((s) => s.end(name));
}

/** A free port: bound then released (small race, fine on a test machine). */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

export interface Exchange {
  data: Buffer;
  error: NodeJS.ErrnoException | undefined;
}

/** Connects, sends `payload` (then half-closes if `end`), and collects until close. */
export function exchange(port: number, payload: Buffer | string = '', opts: { end?: boolean; timeoutMs?: number } = {}): Promise<Exchange> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let error: NodeJS.ErrnoException | undefined;
    const c = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const timer = setTimeout(() => c.destroy(new Error('exchange timeout')), opts.timeoutMs ?? 10_000);
    c.on('data', (d: Buffer) => chunks.push(d));
    c.on('error', (e) => (error = e));
    c.on('end', () => c.end());
    c.on('close', () => {
      clearTimeout(timer);
      resolve({ data: Buffer.concat(chunks), error });
    });
    c.on('connect', () => {
      if (payload.length > 0) c.write(payload);
      if (opts.end !== false) c.end();
    });
  });
}

/** `n` connections to `port`, `parallel` at a time: who answered each (the bytes each got, or its error). */
export async function answers(port: number, n: number, parallel = 20): Promise<Record<string, number>> {
  let next = 0;
  const got: Record<string, number> = {};
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < n) {
        next++;
        const r = await exchange(port);
        const k = r.data.toString() || `error ${r.error?.code}`;
        got[k] = (got[k] ?? 0) + 1;
      }
    }),
  );
  return got;
}

/** Resolves when `fn` returns true, polling every `everyMs`; rejects after `timeoutMs`. */
export async function until(fn: () => boolean | Promise<boolean>, timeoutMs = 5000, what = 'condition', everyMs = 10): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export const MAIN = fileURLToPath(new URL('../../dist/main.js', import.meta.url));

export interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

/** berth running as a child process, with its JSON log lines collected. */
export interface BerthProcess {
  proc: ChildProcess;
  logs: LogLine[];
  stderr: string;
  /** Resolves with the first log line (already seen or future) matching `pred`. */
  waitLog(pred: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
  /** Port of the first listener (from its "listening" log line). */
  port: number;
  kill(signal?: NodeJS.Signals): void;
  /** The berth process (the primary with --workers). */
  readonly pid: number;
}

/** Process groups of every berth (or etcd) this test process started and has not seen exit. */
const groups = new Set<number>();

/**
 * Kills process group `pid` when this test process ends (also when tap ends it on
 * a timeout), unless it exited before: for helpers that start other servers.
 */
export function killGroupOnExit(proc: ChildProcess): void {
  const pid = proc.pid;
  if (pid === undefined) return;
  groups.add(pid);
  proc.once('exit', () => groups.delete(pid));
}
function killGroups(): void {
  for (const pid of groups) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  groups.clear();
}
// Also when tap ends this process on a timeout (SIGTERM): no berth (or worker) outlives its test.
process.once('exit', killGroups);
for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.once(sig, () => {
    killGroups();
    process.kill(process.pid, sig);
  });
}

export async function startBerth(args: string[], opts: { env?: NodeJS.ProcessEnv; waitStarted?: boolean; nodeArgs?: string[] } = {}): Promise<BerthProcess> {
  // Its own process group, so the whole group (the primary and its workers) can be killed.
  const proc = spawn(process.execPath, [...(opts.nodeArgs ?? []), MAIN, ...args], { env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const pid = proc.pid!;
  groups.add(pid);
  proc.once('exit', () => {
    // The primary is gone; its workers exit with it (cluster), any straggler is killed.
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // none left
    }
    groups.delete(pid);
  });
  const logs: LogLine[] = [];
  const waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];
  let buf = '';
  proc.stdout!.setEncoding('utf8');
  proc.stdout!.on('data', (d: string) => {
    buf += d;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      let parsed: LogLine;
      try {
        parsed = JSON.parse(line) as LogLine;
      } catch {
        continue;
      }
      logs.push(parsed);
      for (const w of [...waiters]) {
        if (w.pred(parsed)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(parsed);
        }
      }
    }
  });
  const bp: BerthProcess = {
    proc,
    logs,
    stderr: '',
    port: 0,
    exited: new Promise((resolve) => proc.on('exit', (code) => resolve(code))),
    pid,
    waitLog(pred, timeoutMs = 10_000) {
      const seen = logs.find(pred);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no matching log line in ${timeoutMs}ms; logs: ${JSON.stringify(logs.map((l) => l.msg))} stderr: ${bp.stderr}`)), timeoutMs);
        waiters.push({
          pred,
          resolve: (l) => {
            clearTimeout(timer);
            resolve(l);
          },
        });
      });
    },
    kill(signal = 'SIGTERM') {
      if (signal === 'SIGKILL' && groups.has(pid)) {
        try {
          process.kill(-pid, 'SIGKILL');
        } catch {
          // already gone
        }
        return;
      }
      proc.kill(signal);
    },
  };
  proc.stderr!.setEncoding('utf8');
  proc.stderr!.on('data', (d: string) => (bp.stderr += d));
  if (opts.waitStarted !== false) {
    const listening = await Promise.race([bp.waitLog((l) => l.msg === 'listening'), bp.exited.then((c) => Promise.reject(new Error(`berth exited ${c}: ${bp.stderr}`)))]);
    bp.port = Number(String(listening['bind']).split(':').pop());
    await bp.waitLog((l) => l.msg === 'berth started');
  }
  return bp;
}

/** The port of listener `name` of a started berth, from its "listening" line (0 until it has one). */
export function listenerPort(berth: BerthProcess, name: string): number {
  const bind = berth.logs.find((l) => l.msg === 'listening' && l['listener'] === name)?.['bind'];
  return bind === undefined ? 0 : Number(String(bind).split(':').pop());
}

/** Runs the CLI to completion. */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [MAIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** GET on a fresh connection: status, content type and body as text. */
export function httpGet(url: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type'] ?? ''), body }));
      })
      .on('error', reject);
  });
}
