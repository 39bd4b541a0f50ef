import http from 'node:http';
import net from 'node:net';
import { Pool, type ServiceSettings } from '../../src/pool/pool.js';
import { HttpListener, type HttpListenerSettings } from '../../src/proxy/http/listener.js';
import type { ProxyObserver } from '../../src/core/observer.js';
import { seededRandom } from '../../src/core/random.js';
import type { Clock } from '../../src/core/clock.js';
import type { EndpointSpec } from '../../src/core/types.js';
import { silent } from './proxy.js';
import { tcpServer } from './net.js';

export interface Seen {
  method: string;
  url: string;
  headers: string[];
  body: number;
  conn: number;
}

/** A backend that records each request (raw headers, body size, which connection) and answers JSON. */
export async function recordingBackend(handler?: (req: http.IncomingMessage, res: http.ServerResponse, seen: Seen) => boolean | void): Promise<{
  server: http.Server;
  port: number;
  seen: Seen[];
  connections: () => number;
  close: () => void;
}> {
  const seen: Seen[] = [];
  let conns = 0;
  const server = http.createServer((req, res) => {
    const s: Seen = { method: req.method ?? '', url: req.url ?? '', headers: req.rawHeaders, body: 0, conn: (req.socket as net.Socket & { n?: number }).n ?? -1 };
    seen.push(s);
    if (handler?.(req, res, s) === true) return;
    req.on('data', (c: Buffer) => (s.body += c.length));
    req.on('end', () => {
      const body = JSON.stringify(s);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  server.on('connection', (sock: net.Socket & { n?: number }) => {
    sock.n = conns++;
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    server,
    port: (server.address() as net.AddressInfo).port,
    seen,
    connections: () => conns,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

export function httpSettings(over: Partial<HttpListenerSettings> = {}): HttpListenerSettings {
  return {
    name: 'web',
    bind: { host: '127.0.0.1', port: 0 },
    service: 'svc',
    routes: [],
    timeouts: { connect: 1000, idle: 10_000, headers: 2000, response: 5000, keepAlive: 5000 },
    retries: 2,
    retryBackoff: 0,
    http: { maxHeaderSize: 16_384, trustedProxies: [], accessLog: false, upstreamKeepAlive: 4000, retryBudget: { ratio: 0.2, minPerSecond: 10 } },
    ...over,
  };
}

/** A pool with the given services and an http listener on 127.0.0.1:0. */
export async function httpProxy(
  services: Record<string, EndpointSpec[]>,
  over: Partial<HttpListenerSettings> = {},
  observer?: ProxyObserver,
  clock?: Clock,
  service: ServiceSettings = { balance: 'round-robin' },
): Promise<{ listener: HttpListener; pool: Pool; port: number; close: () => void }> {
  const pool = new Pool({ random: seededRandom(1), ...(clock ? { clock } : {}) });
  for (const name of Object.keys(services)) pool.configureService(name, service);
  pool.applySnapshot({ provider: 'static', services: new Map(Object.entries(services)) });
  const listener = new HttpListener(httpSettings(over), { pool, log: silent, ...(observer ? { observer } : {}) });
  const addr = await listener.listen();
  return {
    listener,
    pool,
    port: addr.port,
    close: () => {
      listener.stopAccepting();
      listener.destroyAll();
    },
  };
}

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  raw: string[];
  body: string;
}

/** One request through a fresh (or given) agent. */
export function request(port: number, opts: http.RequestOptions & { body?: string | Buffer } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const { body, ...o } = opts;
    const req = http.request({ host: '127.0.0.1', port, agent: false, ...o }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (b += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, raw: res.rawHeaders, body: b }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Writes raw bytes, returns everything the server sends until it closes (or the timeout). */
export function rawRequest(port: number, payload: string, timeoutMs = 3000): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let out = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => (out += d));
    s.on('error', () => {});
    const timer = setTimeout(() => s.destroy(), timeoutMs);
    s.on('close', () => {
      clearTimeout(timer);
      resolve(out);
    });
    s.write(payload);
  });
}

/** Header value from a flat raw list, case-insensitive; all values. */
export function rawValues(raw: readonly string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === name) out.push(raw[i + 1]!);
  return out;
}

/** An endpoint that answers each request head it reads with `answer(head, n)` (raw bytes), recording every byte. */
export async function rawEndpoint(answer: (head: string, n: number, s: net.Socket) => string | Buffer | null) {
  const heads: string[] = [];
  let all = '';
  const sockets = new Set<net.Socket>();
  const server = await tcpServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('end', () => s.end());
    let buf = '';
    s.on('data', (d: Buffer) => {
      const text = d.toString('latin1');
      all += text;
      buf += text;
      let i: number;
      while ((i = buf.indexOf('\r\n\r\n')) >= 0) {
        const head = buf.slice(0, i);
        buf = buf.slice(i + 4);
        heads.push(head);
        const a = answer(head, heads.length, s);
        if (a !== null) s.write(typeof a === 'string' ? Buffer.from(a, 'latin1') : a);
      }
    });
  });
  return {
    port: server.port,
    heads,
    all: () => all,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

