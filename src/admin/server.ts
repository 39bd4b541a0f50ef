/**
 * The admin server (INTERFACE.md): /metrics, /healthz, /readyz, /api/v1/services,
 * /api/v1/endpoints/{id} and the status page at /. Binds 127.0.0.1:9901 by default.
 */
import { timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import { BerthError } from '../core/errors.js';
import { formatHostPort, type HostPort } from '../core/types.js';
import type { Logger } from '../log.js';
import type { CountersOf, EndpointState } from '../pool/endpoint.js';
import type { OverrideOp } from '../pool/pool.js';
import { statusPage } from './page.js';
import { explainEndpoint, type ProviderView, type RateSampler, type Readiness, type ServiceView } from './view.js';

export interface AdminSource {
  readonly version: string;
  services(): ServiceView[];
  providers(): ProviderView[];
  readiness(): Readiness;
  /** Endpoints with this id (in one service when `service` is given). */
  findEndpoints(id: string, service?: string): EndpointState[];
  metrics(): Promise<{ contentType: string; body: string }>;
  readonly rates?: RateSampler;
  /** With --workers: one entry per worker process. */
  workers?(): unknown[];
  /** The connection cap that applies to an endpoint (its own, else its service's). */
  capOf?(e: EndpointState): number;
  /** Where traffic counters are read (with --workers: the sum over the workers). */
  countersOf?: CountersOf;
  /** An operator's drain, undrain or weight: the endpoints it changed, or null when there is no such service or endpoint. */
  override?(op: OverrideOp): EndpointState[] | null;
}

/** The admin API's writes: an endpoint's drain, undrain and weight; a whole service's drain and undrain. */
const ENDPOINT_WRITE = /^\/api\/v1\/endpoints\/(.+)\/(drain|undrain|weight)$/;
const SERVICE_WRITE = /^\/api\/v1\/services\/([^/]+)\/(drain|undrain)$/;
/** A weight body: an integer 0–1000, as text or as {"weight": n}. */
const WEIGHT_RE = /^\s*(\d{1,4})\s*$/;

export class AdminServer {
  readonly server: http.Server;
  private readonly started = Date.now();
  /** Bearer token every path but /healthz needs (null: none; a reload may change it). */
  token: string | null;

  constructor(
    private readonly bind: HostPort,
    private readonly source: AdminSource,
    private readonly log: Logger,
    token: string | null = null,
  ) {
    this.token = token;
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        this.log.error({ err }, 'admin request failed');
        if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', 'internal error\n');
        else res.destroy();
      });
    });
    this.server.headersTimeout = 10_000;
    this.server.requestTimeout = 30_000;
  }

  listen(): Promise<HostPort> {
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) =>
        reject(new BerthError('BERTH_ERR_LISTEN', `admin: cannot bind ${formatHostPort(this.bind)}: ${err.code ?? err.message}`, { cause: err }));
      this.server.once('error', onError);
      this.server.listen(this.bind.port, this.bind.host, () => {
        this.server.off('error', onError);
        const a = this.server.address();
        resolve(typeof a === 'object' && a ? { host: a.address, port: a.port } : this.bind);
      });
    });
  }

  close(): void {
    this.server.close();
    this.server.closeAllConnections();
  }

  private authorized(req: http.IncomingMessage): boolean {
    if (this.token === null) return true;
    const h = req.headers.authorization;
    if (h === undefined || !/^bearer /i.test(h)) return false;
    return sameToken(h.slice(7).trim(), this.token);
  }

  /**
   * The admin API's writes (drain, undrain, weight). Only with a token: an admin
   * without one is read-only, and says how to set one. Each change is logged with
   * who made it (the peer's address: tokens have no names).
   */
  private async write(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (this.token === null) {
      return json(res, 403, {
        error: 'the admin API is read-only without a token: set admin.tokenFile in the config (or --admin-token-file) to a file that holds one, reload, and send it as Authorization: Bearer <token>',
      });
    }
    if (!this.authorized(req)) {
      res.setHeader('www-authenticate', 'Bearer realm="berth"');
      return send(res, 401, 'text/plain; charset=utf-8', 'unauthorized: send Authorization: Bearer <token>\n');
    }
    const url = new URL(req.url ?? '/', 'http://admin');
    const by = req.socket.remoteAddress ?? 'unknown';
    const override = this.source.override?.bind(this.source);
    if (override === undefined) return json(res, 501, { error: 'this berth takes no changes through its admin API' });
    const svc = SERVICE_WRITE.exec(url.pathname);
    if (svc !== null) {
      const what = svc[2] as 'drain' | 'undrain';
      if (req.method !== 'POST') return methodNotAllowed(res, 'POST');
      const name = decoded(res, svc[1]!, 'the service name');
      if (name === null) return;
      const changed = override({ op: what, service: name, endpoint: null, at: Date.now(), by });
      if (changed === null) return json(res, 404, { error: `no service ${name}` });
      return json(res, 200, { service: name, op: what, changed: changed.map((e) => e.id) });
    }
    const m = ENDPOINT_WRITE.exec(url.pathname)!;
    const what = m[2] as 'drain' | 'undrain' | 'weight';
    const allowed = writeMethod(what);
    if (!allowed.split(', ').includes(req.method ?? '')) return methodNotAllowed(res, allowed);
    const id = decoded(res, m[1]!, 'the endpoint id');
    if (id === null) return;
    let weight: number | null = null;
    if (what === 'weight' && req.method === 'PUT') {
      const body = await readBody(req, 256);
      if (body === null) return json(res, 413, { error: 'a weight body is an integer 0-1000' });
      weight = parseWeight(body);
      if (weight === null) return json(res, 400, { error: 'the body must be an integer 0-1000 (or {"weight": n})' });
    }
    const e = this.oneEndpoint(res, id, url);
    if (e === null) return;
    const at = Date.now();
    const changed = what === 'weight' ? override({ op: 'weight', service: e.service, endpoint: e.id, weight, at, by }) : override({ op: what, service: e.service, endpoint: e.id, at, by });
    if (changed === null) return json(res, 404, { error: `no endpoint ${id}` });
    return json(res, 200, this.explain(e));
  }

  /** The one endpoint `id` names (in `?service=` when given), or null once 404 or 409 has said why not. */
  private oneEndpoint(res: http.ServerResponse, id: string, url: URL): EndpointState | null {
    const service = url.searchParams.get('service') ?? undefined;
    const found = this.source.findEndpoints(id, service);
    if (found.length === 1) return found[0]!;
    if (found.length === 0) json(res, 404, { error: `no endpoint ${id}${service ? ` in service ${service}` : ''}` });
    else json(res, 409, { error: `endpoint ${id} is in several services; add ?service=`, services: found.map((e) => e.service) });
    return null;
  }

  private explain(e: EndpointState) {
    return explainEndpoint(e, this.source.rates, this.source.capOf?.(e), this.source.countersOf);
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      const path = new URL(req.url ?? '/', 'http://admin').pathname;
      if (ENDPOINT_WRITE.test(path) || SERVICE_WRITE.test(path)) return this.write(req, res);
      res.setHeader('allow', 'GET, HEAD');
      return send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n');
    }
    const url = new URL(req.url ?? '/', 'http://admin');
    const path = url.pathname;
    if (path === '/healthz') return send(res, 200, 'text/plain; charset=utf-8', 'ok\n');
    if (!this.authorized(req)) {
      // /readyz still answers its status for probes that carry no token, without the reasons.
      if (path === '/readyz') {
        const ready = this.source.readiness().ready;
        return send(res, ready ? 200 : 503, 'text/plain; charset=utf-8', ready ? 'ready\n' : 'not ready\n');
      }
      res.setHeader('www-authenticate', 'Bearer realm="berth"');
      return send(res, 401, 'text/plain; charset=utf-8', 'unauthorized: send Authorization: Bearer <token>\n');
    }
    if (path === '/metrics') {
      const m = await this.source.metrics();
      return send(res, 200, m.contentType, m.body);
    }
    if (path === '/readyz') {
      const r = this.source.readiness();
      const notes = r.notes.map((n) => `${n}\n`).join('');
      return send(res, r.ready ? 200 : 503, 'text/plain; charset=utf-8', (r.ready ? 'ready\n' : `not ready: ${r.reasons.join('; ')}\n`) + notes);
    }
    if (path === '/api/v1/services') {
      return json(res, 200, {
        services: this.source.services(),
        discovery: this.source.providers(),
        ready: this.source.readiness(),
        ...(this.source.workers ? { workers: this.source.workers() } : {}),
      });
    }
    const m = /^\/api\/v1\/endpoints\/(.+)$/.exec(path);
    if (m) {
      const id = decoded(res, m[1]!, 'the endpoint id');
      if (id === null) return;
      const e = this.oneEndpoint(res, id, url);
      if (e !== null) json(res, 200, this.explain(e));
      return;
    }
    if (path === '/') {
      const html = statusPage({
        version: this.source.version,
        uptimeS: (Date.now() - this.started) / 1000,
        readiness: this.source.readiness(),
        services: this.source.services(),
        providers: this.source.providers(),
        refreshS: 5,
      });
      return send(res, 200, 'text/html; charset=utf-8', html);
    }
    return send(res, 404, 'text/plain; charset=utf-8', 'not found\n');
  }
}

/** The operator's change through the admin API, as a path and a method say it. */
function writeMethod(what: string): string {
  return what === 'weight' ? 'PUT, DELETE' : 'POST';
}

/** Compares in constant time, so the token cannot be guessed byte by byte from response times. */
function sameToken(given: string, token: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** A path segment percent-decoded, or null once a 400 has said it is not valid. */
function decoded(res: http.ServerResponse, raw: string, what: string): string | null {
  try {
    return decodeURIComponent(raw);
  } catch {
    json(res, 400, { error: `${what} is not valid percent-encoding` });
    return null;
  }
}

function methodNotAllowed(res: http.ServerResponse, allow: string): void {
  res.setHeader('allow', allow);
  send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n');
}

/** The request body as text, or null when it is longer than `limit` bytes. */
async function readBody(req: http.IncomingMessage, limit: number): Promise<string | null> {
  let size = 0;
  const parts: Buffer[] = [];
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) return null;
    parts.push(chunk);
  }
  return Buffer.concat(parts).toString('utf8');
}

/** An integer 0–1000 as text or as {"weight": n}; null otherwise. */
export function parseWeight(body: string): number | null {
  let text = body;
  if (body.trim().startsWith('{')) {
    try {
      const v = (JSON.parse(body) as { weight?: unknown }).weight;
      text = typeof v === 'number' ? String(v) : '';
    } catch {
      return null;
    }
  }
  const m = WEIGHT_RE.exec(text);
  if (m === null) return null;
  const n = Number(m[1]);
  return n <= 1000 ? n : null;
}

function send(res: http.ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

function json(res: http.ServerResponse, status: number, value: unknown): void {
  send(res, status, 'application/json; charset=utf-8', `${JSON.stringify(value, null, 2)}\n`);
}
