/**
 * The only place that speaks to etcd: the registry operations berth needs, behind
 * an interface (tests use an in-memory fake), and the real client over etcd's v3
 * JSON gateway (`/v3/kv/*`, `/v3/lease/*`, `/v3/watch`; stable in 3.4 and 3.5) on
 * node:http(s) — no gRPC stack, no extra dependency. Keys and values are base64 on
 * the wire and int64s are strings; both stay inside this file. Several endpoints:
 * a request that cannot reach one moves on to the next.
 */
import { request as httpRequest, Agent as HttpAgent, type IncomingMessage } from 'node:http';
import { request as httpsRequest, Agent as HttpsAgent } from 'node:https';
import { readFileSync } from 'node:fs';
import { BerthError } from '../core/errors.js';

export interface KeyValue {
  readonly key: string;
  readonly value: string;
  /** The lease id ("0": none). */
  readonly lease: string;
  readonly modRevision: number;
}

export interface WatchEvent {
  readonly type: 'put' | 'delete';
  readonly key: string;
  /** Empty for a delete. */
  readonly value: string;
}

export interface WatchHandlers {
  /** Events of one revision or more, and the header revision of the response (also for a progress notice with no events). */
  onEvents(events: readonly WatchEvent[], revision: number): void;
  /** The start revision was compacted away: range again, then watch anew. */
  onCompacted(compactRevision: number): void;
  /** The watch ended (connection lost, etcd gone): resume from the last revision seen. */
  onError(err: Error): void;
}

export interface WatchHandle {
  cancel(): void;
}

export interface EtcdClient {
  /** A new lease of `ttl` seconds; its id. */
  grant(ttlSeconds: number): Promise<string>;
  /**
   * One keep-alive; the lease's remaining TTL in seconds, 0 when it is gone.
   * `timeoutMs`: per member tried (a keep-alive must reach another member well
   * within the TTL when one holds it).
   */
  keepAlive(lease: string, timeoutMs?: number): Promise<number>;
  revoke(lease: string): Promise<void>;
  /**
   * Puts `value` under `key` with `lease` only if the key is still as last seen:
   * its mod revision `modRevision` (0: the key does not exist). Else the holder as
   * it is now (mod revision 0 when it went between the compare and the read).
   */
  putIf(key: string, value: string, lease: string, modRevision: number): Promise<{ readonly created: true } | { readonly created: false; readonly holder: KeyValue }>;
  put(key: string, value: string, lease: string): Promise<void>;
  delete(key: string): Promise<void>;
  /** Every key under `prefix` (read in pages, all at one revision), and that revision. */
  range(prefix: string): Promise<{ readonly kvs: readonly KeyValue[]; readonly revision: number }>;
  /** Events under `prefix` from `fromRevision` on (progress notices asked for). */
  watch(prefix: string, fromRevision: number, handlers: WatchHandlers): WatchHandle;
  close(): void;
}

export interface EtcdTls {
  readonly ca?: string | undefined;
  readonly cert?: string | undefined;
  readonly key?: string | undefined;
}

/** The end of the range that holds every key starting with `prefix` (etcd's prefix rule). */
export function prefixEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix);
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i]! < 0xff) {
      const out = Buffer.from(b.subarray(0, i + 1));
      out[i]!++;
      return out;
    }
  }
  return Buffer.from([0]);
}

const b64 = (s: string | Buffer): string => (typeof s === 'string' ? Buffer.from(s) : s).toString('base64');
const unb64 = (s: unknown): string => (typeof s === 'string' ? Buffer.from(s, 'base64').toString('utf8') : '');
const num = (s: unknown): number => (typeof s === 'string' || typeof s === 'number' ? Number(s) : 0);

/** An answer etcd gave with an error (as opposed to no answer). */
export class EtcdError extends Error {
  constructor(
    message: string,
    readonly grpcCode: number,
  ) {
    super(message);
    this.name = 'EtcdError';
  }
}

interface RawKv {
  key?: string;
  value?: string;
  lease?: string;
  mod_revision?: string;
}

function kvOf(k: RawKv): KeyValue {
  return { key: unb64(k.key), value: unb64(k.value), lease: k.lease ?? '0', modRevision: num(k.mod_revision) };
}

/** An error one member gives that another member of the cluster may not: gRPC UNAVAILABLE, no leader. */
function memberUnavailable(err: EtcdError): boolean {
  return err.grpcCode === 14 || /no leader|proposal dropped|request timed out|leader changed/.test(err.message);
}

/** The longest line of a watch stream kept (a bigger one ends the watch): etcd's request limit is 1.5 MiB. */
const MAX_LINE = 8 * 1024 * 1024;

export class HttpEtcdClient implements EtcdClient {
  private next = 0;
  /** One agent per scheme: a list may mix http and https members. */
  private readonly httpAgent = new HttpAgent({ keepAlive: true });
  private readonly httpsAgent: HttpsAgent;
  private readonly watches = new Set<IncomingMessage | { destroy(): void }>();

  constructor(
    private readonly endpoints: readonly string[],
    tls: EtcdTls | undefined,
    /** Per request (not per watch), ms. */
    private readonly timeoutMs = 3000,
    /** Keys per range request. */
    private readonly pageSize = 1000,
  ) {
    const read = (field: 'ca' | 'cert' | 'key', path: string): Buffer => {
      try {
        return readFileSync(path);
      } catch (err) {
        throw new BerthError('BERTH_ERR_TLS', `discovery.etcd.tls.${field}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
      }
    };
    const material = {
      ...(tls?.ca !== undefined ? { ca: read('ca', tls.ca) } : {}),
      ...(tls?.cert !== undefined ? { cert: read('cert', tls.cert) } : {}),
      ...(tls?.key !== undefined ? { key: read('key', tls.key) } : {}),
    };
    this.httpsAgent = new HttpsAgent({ keepAlive: true, ...material });
  }

  private open(base: string, path: string, body: string, timeoutMs: number | null, onResponse: (res: IncomingMessage) => void, onError: (err: Error) => void): { destroy(): void } {
    const url = new URL(path, base);
    const https = url.protocol === 'https:';
    const req = (https ? httpsRequest : httpRequest)(url, {
      method: 'POST',
      agent: https ? this.httpsAgent : this.httpAgent,
      headers: {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
        // Ask etcd (the gateway passes Grpc-Metadata-* on as gRPC metadata) to end a
        // stream on a member that has lost its leader, as etcd's own clients do: a
        // member cut off from the others would otherwise go on sending progress
        // notices over a view that no longer moves, and nothing would look wrong.
        ...(path === '/v3/watch' ? { 'grpc-metadata-hasleader': 'true' } : {}),
      },
      ...(timeoutMs !== null ? { timeout: timeoutMs } : {}),
    });
    req.on('timeout', () => req.destroy(new Error(`etcd at ${base}: no answer in ${timeoutMs} ms`)));
    req.on('error', onError);
    req.on('response', onResponse);
    req.end(body);
    return req;
  }

  /**
   * One JSON request, tried on each endpoint in turn until one answers: also past a
   * member that answers it cannot serve now (no leader, a dropped proposal: gRPC
   * UNAVAILABLE), which another member of the cluster can.
   */
  private async call(path: string, body: unknown, timeoutMs = this.timeoutMs): Promise<Record<string, unknown>> {
    const text = JSON.stringify(body);
    let last: Error = new Error('no etcd endpoint');
    for (let i = 0; i < this.endpoints.length; i++) {
      const base = this.endpoints[(this.next + i) % this.endpoints.length]!;
      try {
        const out = await this.once(base, path, text, timeoutMs);
        this.next = (this.next + i) % this.endpoints.length;
        return out;
      } catch (err) {
        if (err instanceof EtcdError && !memberUnavailable(err)) throw err;
        last = err as Error;
      }
    }
    this.next = (this.next + 1) % this.endpoints.length;
    throw last;
  }

  private once(base: string, path: string, body: string, timeoutMs: number): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      this.open(
        base,
        path,
        body,
        timeoutMs,
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > MAX_LINE) res.destroy(new Error(`etcd at ${base}: answer too big`));
            else chunks.push(c);
          });
          res.on('error', reject);
          res.on('end', () => {
            let value: Record<string, unknown>;
            try {
              value = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
            } catch {
              reject(new Error(`etcd at ${base}${path}: HTTP ${res.statusCode}, not JSON`));
              return;
            }
            if (typeof value['error'] === 'string' || (res.statusCode ?? 500) >= 400) {
              reject(new EtcdError(String(value['error'] ?? value['message'] ?? `HTTP ${res.statusCode}`), num(value['code'])));
              return;
            }
            resolve(value);
          });
        },
        reject,
      );
    });
  }

  async grant(ttlSeconds: number): Promise<string> {
    const r = await this.call('/v3/lease/grant', { TTL: ttlSeconds });
    return String(r['ID']);
  }

  async keepAlive(lease: string, timeoutMs?: number): Promise<number> {
    const r = await this.call('/v3/lease/keepalive', { ID: lease }, timeoutMs ?? this.timeoutMs);
    const result = (r['result'] ?? {}) as Record<string, unknown>;
    return num(result['TTL']);
  }

  async revoke(lease: string): Promise<void> {
    try {
      await this.call('/v3/lease/revoke', { ID: lease });
    } catch (err) {
      // Already gone: what revoking wanted.
      if (!(err instanceof EtcdError && /lease not found/.test(err.message))) throw err;
    }
  }

  async putIf(key: string, value: string, lease: string, modRevision: number): Promise<{ readonly created: true } | { readonly created: false; readonly holder: KeyValue }> {
    // MOD against a key that does not exist compares with 0: one compare for "absent" and "unchanged".
    const r = await this.call('/v3/kv/txn', {
      compare: [{ target: 'MOD', key: b64(key), mod_revision: String(modRevision), result: 'EQUAL' }],
      success: [{ request_put: { key: b64(key), value: b64(value), lease } }],
      failure: [{ request_range: { key: b64(key) } }],
    });
    if (r['succeeded'] === true) return { created: true };
    const responses = (r['responses'] ?? []) as { response_range?: { kvs?: RawKv[] } }[];
    const kv = responses[0]?.response_range?.kvs?.[0];
    // Deleted between the compare and the read: as good as free; the caller tries again.
    return { created: false, holder: kv ? kvOf(kv) : { key, value: '', lease: '0', modRevision: 0 } };
  }

  async put(key: string, value: string, lease: string): Promise<void> {
    await this.call('/v3/kv/put', { key: b64(key), value: b64(value), lease });
  }

  async delete(key: string): Promise<void> {
    await this.call('/v3/kv/deleterange', { key: b64(key) });
  }

  async range(prefix: string): Promise<{ readonly kvs: readonly KeyValue[]; readonly revision: number }> {
    // A page at a time (no answer grows with the number of hosts), every page at the
    // first page's revision; that revision compacted away meanwhile: start over.
    for (let tries = 0; ; tries++) {
      try {
        return await this.rangePages(prefix);
      } catch (err) {
        if (tries >= 3 || !(err instanceof EtcdError && /compacted/.test(err.message))) throw err;
      }
    }
  }

  private async rangePages(prefix: string): Promise<{ readonly kvs: readonly KeyValue[]; readonly revision: number }> {
    const end = b64(prefixEnd(prefix));
    const kvs: KeyValue[] = [];
    let from: string | Buffer = prefix;
    let revision = 0;
    for (;;) {
      const r = await this.call('/v3/kv/range', { key: b64(from), range_end: end, limit: String(this.pageSize), ...(revision > 0 ? { revision: String(revision) } : {}) });
      if (revision === 0) revision = num(((r['header'] ?? {}) as Record<string, unknown>)['revision']);
      const page = (r['kvs'] ?? []) as RawKv[];
      for (const k of page) kvs.push(kvOf(k));
      if (r['more'] !== true || page.length === 0) return { kvs, revision };
      // The next page starts just after the last key (keys are bytes: the key and a zero byte).
      from = Buffer.concat([Buffer.from(page[page.length - 1]!.key ?? '', 'base64'), Buffer.from([0])]);
    }
  }

  watch(prefix: string, fromRevision: number, h: WatchHandlers): WatchHandle {
    const base = this.endpoints[this.next % this.endpoints.length]!;
    let done = false;
    const fail = (err: Error) => {
      if (done) return;
      done = true;
      this.watches.delete(req);
      req.destroy();
      // Next time, another endpoint.
      this.next = (this.next + 1) % this.endpoints.length;
      h.onError(err);
    };
    /** Ended on purpose (compaction): the stream closed, nothing more reported. */
    const finish = () => {
      done = true;
      this.watches.delete(req);
      req.destroy();
    };
    const body = JSON.stringify({ create_request: { key: b64(prefix), range_end: b64(prefixEnd(prefix)), start_revision: String(fromRevision), progress_notify: true } });
    const req = this.open(
      base,
      '/v3/watch',
      body,
      null,
      (res) => {
        if ((res.statusCode ?? 500) >= 400) {
          fail(new Error(`etcd at ${base}: watch refused, HTTP ${res.statusCode}`));
          return;
        }
        let buf = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buf += chunk;
          let nl: number;
          while (!done && (nl = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (line !== '') this.onWatchLine(line, h, fail, finish);
          }
          if (buf.length > MAX_LINE) fail(new Error(`etcd at ${base}: watch message too big`));
        });
        res.on('error', (err) => fail(err));
        res.on('end', () => {
          // The gateway's last message (an error: "etcdserver: no leader") may come without its newline.
          const rest = buf.trim();
          if (!done && rest !== '') this.onWatchLine(rest, h, fail, finish);
          fail(new Error(`etcd at ${base}: watch stream ended`));
        });
      },
      (err) => fail(err),
    );
    this.watches.add(req);
    return {
      cancel: () => {
        done = true;
        this.watches.delete(req);
        req.destroy();
      },
    };
  }

  private onWatchLine(line: string, h: WatchHandlers, fail: (err: Error) => void, end: () => void): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      fail(new Error('etcd watch: a message that is not JSON'));
      return;
    }
    if (msg['error'] !== undefined) {
      const e = msg['error'] as Record<string, unknown> | string;
      fail(new Error(`etcd watch: ${typeof e === 'string' ? e : String(e['message'] ?? JSON.stringify(e))}`));
      return;
    }
    const r = (msg['result'] ?? {}) as Record<string, unknown>;
    const compact = num(r['compact_revision']);
    if (compact > 0) {
      end();
      h.onCompacted(compact);
      return;
    }
    if (r['canceled'] === true) {
      fail(new Error(`etcd watch cancelled: ${String(r['cancel_reason'] ?? 'no reason given')}`));
      return;
    }
    if (r['created'] === true) return;
    const header = (r['header'] ?? {}) as Record<string, unknown>;
    const events = ((r['events'] ?? []) as { type?: string; kv?: RawKv }[]).map((e): WatchEvent => {
      const kv = kvOf(e.kv ?? {});
      return e.type === 'DELETE' ? { type: 'delete', key: kv.key, value: '' } : { type: 'put', key: kv.key, value: kv.value };
    });
    h.onEvents(events, num(header['revision']));
  }

  close(): void {
    for (const w of this.watches) w.destroy();
    this.watches.clear();
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }
}
