import dgram from 'node:dgram';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import dnsPacket from 'dns-packet';
import { upstreamServername, type UpstreamTls } from '../core/tls.js';

export interface ProbeResult {
  readonly ok: boolean;
  /** What happened, for the explain endpoint: "connected", "status 503", "ECONNREFUSED", "timeout after 1000ms". */
  readonly detail: string;
}

export interface HttpProbeOptions {
  readonly path: string;
  /** Host header; default the endpoint address. */
  readonly host?: string | undefined;
  /** Status codes that pass. */
  readonly expect: (status: number) => boolean;
}

/**
 * A probe's one verdict: the first call of the function returned (or the timeout's,
 * after `timeoutMs`, with `timedOut()` as its detail) clears the timer, runs `release`
 * (closes what the probe opened) and resolves; later calls do nothing.
 */
function verdict(resolve: (r: ProbeResult) => void, timeoutMs: number, release: () => void, timedOut = (): string => `timeout after ${timeoutMs}ms`): (r: ProbeResult) => void {
  let settled = false;
  const done = (r: ProbeResult): void => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    release();
    resolve(r);
  };
  const timer = setTimeout(() => done({ ok: false, detail: timedOut() }), timeoutMs);
  return done;
}

/** A TCP connect check: passes when the endpoint accepts within `timeoutMs`. */
export function tcpProbe(host: string, port: number, timeoutMs: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const done = verdict(resolve, timeoutMs, () => s.destroy());
    s.once('connect', () => done({ ok: true, detail: 'connected' }));
    s.once('error', (err: NodeJS.ErrnoException) => done({ ok: false, detail: err.code ?? err.message }));
  });
}

/** An HTTP GET check: passes on an expected status within `timeoutMs` (the body is drained and ignored). */
export function httpProbe(host: string, port: number, timeoutMs: number, o: HttpProbeOptions): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const done = verdict(resolve, timeoutMs, () => req.destroy());
    const req = http.get({ host, port, path: o.path, agent: false, headers: { host: o.host ?? (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`), 'user-agent': 'berth-health-check', connection: 'close' } }, (res) => {
      res.resume();
      const status = res.statusCode ?? 0;
      done({ ok: o.expect(status), detail: `status ${status}` });
    });
    req.on('error', (err: NodeJS.ErrnoException) => done({ ok: false, detail: err.code ?? err.message }));
  });
}

export interface DnsProbeOptions {
  /** The name to ask for. */
  readonly name: string;
  /** Record type, e.g. "A". */
  readonly type: string;
}

/**
 * A DNS check over UDP: one query for `name`; any well-formed answer to it passes
 * (whatever its code: the server answered), a refused port (ICMP) or silence fails.
 */
export function dnsProbe(host: string, port: number, timeoutMs: number, o: DnsProbeOptions): Promise<ProbeResult> {
  const id = Math.floor(Math.random() * 0x10000);
  const query = dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: o.type as dnsPacket.RecordType, name: o.name }] });
  return udpExchange(host, port, timeoutMs, query, (msg) => {
    let answer: dnsPacket.Packet;
    try {
      answer = dnsPacket.decode(msg);
    } catch {
      return { ok: false, detail: 'malformed dns answer' };
    }
    // Not the answer to this query (a late one to an earlier check): keep waiting.
    if (answer.id !== id || answer.type !== 'response') return undefined;
    return { ok: true, detail: `dns ${(answer as { rcode?: string }).rcode ?? 'answer'}, ${answer.answers?.length ?? 0} answers` };
  });
}

export interface SendExpectOptions {
  readonly protocol: 'tcp' | 'udp';
  readonly send: Buffer;
  /** Bytes the answer must contain; undefined: any answer passes. */
  readonly receive: Buffer | undefined;
}

/** What a send-expect check reads of a tcp answer at most before it gives up on the pattern. */
const EXPECT_MAX = 64 * 1024;

/**
 * Looks for `pattern` in a stream read in chunks: a match may straddle reads, so
 * only the last pattern.length - 1 bytes of what did not match are kept. PURE.
 */
export class StreamMatch {
  private tail: Buffer = Buffer.alloc(0);
  /** Bytes fed in all. */
  total = 0;

  constructor(
    private readonly pattern: Buffer,
    private readonly max: number = EXPECT_MAX,
  ) {}

  feed(chunk: Buffer): 'match' | 'more' | 'overflow' {
    this.total += chunk.length;
    const b = this.tail.length === 0 ? chunk : Buffer.concat([this.tail, chunk]);
    if (b.includes(this.pattern)) return 'match';
    if (this.total > this.max) return 'overflow';
    this.tail = b.subarray(Math.max(0, b.length - (this.pattern.length - 1)));
    return 'more';
  }
}

/**
 * Bytes out, a byte pattern back: over udp the first datagram back must contain
 * `receive`; over tcp the stream read until it does (within 64 KiB), or the
 * endpoint closes or the time is up.
 */
export function sendExpectProbe(host: string, port: number, timeoutMs: number, o: SendExpectOptions): Promise<ProbeResult> {
  if (o.protocol === 'udp') return udpExchange(host, port, timeoutMs, o.send, (msg) => (o.receive === undefined || msg.includes(o.receive) ? { ok: true, detail: 'expected answer' } : { ok: false, detail: `unexpected answer (${msg.length} bytes)` }));
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const m = o.receive !== undefined ? new StreamMatch(o.receive) : null;
    let total = 0;
    const done = verdict(resolve, timeoutMs, () => s.destroy(), () => `timeout after ${timeoutMs}ms${total > 0 ? ` (${total} bytes, not the expected ones)` : ''}`);
    s.once('connect', () => s.write(o.send));
    s.on('data', (d: Buffer) => {
      total += d.length;
      const v = m === null ? 'match' : m.feed(d);
      if (v === 'match') done({ ok: true, detail: 'expected answer' });
      else if (v === 'overflow') done({ ok: false, detail: `no expected answer in ${total} bytes` });
    });
    s.once('end', () => done({ ok: false, detail: total > 0 ? 'closed without the expected answer' : 'closed without an answer' }));
    s.once('error', (err: NodeJS.ErrnoException) => done({ ok: false, detail: err.code ?? err.message }));
  });
}

/**
 * One datagram to the endpoint on a connected socket, then its answers to `judge`
 * until one gives a verdict (undefined: not for us, keep waiting) or the time is up.
 * A refused port (ICMP unreachable) fails at once.
 */
function udpExchange(host: string, port: number, timeoutMs: number, out: Buffer, judge: (msg: Buffer) => ProbeResult | undefined): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const s = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
    let settled = false;
    const done = verdict(resolve, timeoutMs, () => {
      settled = true;
      s.close();
    });
    s.on('error', (err: NodeJS.ErrnoException) => done({ ok: false, detail: err.code ?? err.message }));
    s.on('message', (msg) => {
      const r = judge(msg);
      if (r !== undefined) done(r);
    });
    // A connect that fails (a name that does not resolve, a broadcast address) comes
    // to this callback, not as an 'error'.
    s.connect(port, host, (err?: Error) => {
      if (settled) return;
      if (err) {
        done({ ok: false, detail: (err as NodeJS.ErrnoException).code ?? err.message });
        return;
      }
      s.send(out, (err) => {
        if (err) done({ ok: false, detail: (err as NodeJS.ErrnoException).code ?? err.message });
      });
    });
  });
}

export interface GrpcProbeOptions {
  /** The service asked about (grpc.health.v1 HealthCheckRequest.service; "" = the server as a whole). */
  readonly service: string;
  /** TLS with ALPN h2, as the service's upstreamTls says; absent: h2c with prior knowledge. */
  readonly tls?: UpstreamTls | undefined;
}

/** gRPC status codes by number, for the detail line. */
const GRPC_CODES = ['OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'];
/** grpc.health.v1.HealthCheckResponse.ServingStatus by number. */
const SERVING_STATUS = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'];
/** The most of an answer a grpc check reads (a health answer is a few bytes). */
const GRPC_ANSWER_MAX = 64 * 1024;

function varint(n: number): Buffer {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}

/** A HealthCheckRequest { string service = 1 } as one length-prefixed, uncompressed gRPC message. PURE. */
export function healthCheckRequest(service: string): Buffer {
  const name = Buffer.from(service, 'utf8');
  const body = name.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a]), varint(name.length), name]);
  const head = Buffer.alloc(5);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

/**
 * The serving status in the first gRPC message of `data` (a HealthCheckResponse
 * { ServingStatus status = 1 }; fields it does not know skipped, a missing status is
 * UNKNOWN); undefined when `data` holds no whole, uncompressed, well-formed message. PURE.
 */
export function servingStatusOf(data: Buffer): number | undefined {
  if (data.length < 5 || data[0] !== 0) return undefined;
  const len = data.readUInt32BE(1);
  if (data.length < 5 + len) return undefined;
  const m = data.subarray(5, 5 + len);
  let status = 0;
  let i = 0;
  const readVarint = (): number | undefined => {
    let v = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      if (i >= m.length) return undefined;
      const b = m[i++]!;
      v += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return v;
    }
    return undefined;
  };
  while (i < m.length) {
    const key = readVarint();
    if (key === undefined) return undefined;
    const field = Math.floor(key / 8);
    switch (key & 7) {
      case 0: {
        const v = readVarint();
        if (v === undefined) return undefined;
        if (field === 1) status = v;
        break;
      }
      case 1:
        i += 8;
        break;
      case 2: {
        const n = readVarint();
        if (n === undefined) return undefined;
        i += n;
        break;
      }
      case 5:
        i += 4;
        break;
      default:
        return undefined;
    }
    if (i > m.length) return undefined;
  }
  return status;
}

/**
 * Why an HTTP/2 stream failed, for the explain endpoint: a stream cancelled because
 * its connection failed says the connection's error (ECONNREFUSED, a certificate
 * error); a reset says its code.
 */
function h2ErrorDetail(err: NodeJS.ErrnoException): string {
  const cause = (err as { cause?: unknown }).cause;
  if (err.code === 'ERR_HTTP2_STREAM_CANCEL' && cause instanceof Error) return (cause as NodeJS.ErrnoException).code ?? cause.message;
  const reset = /NGHTTP2_[A-Z_]+/.exec(err.message);
  if (err.code === 'ERR_HTTP2_STREAM_ERROR' && reset) return `stream reset (${reset[0]})`;
  return err.code ?? err.message;
}

/** grpc-message is percent-encoded UTF-8; a malformed one is shown as sent. */
function percentDecoded(m: string): string {
  try {
    return decodeURIComponent(m);
  } catch {
    return m;
  }
}

/**
 * A gRPC health check (grpc.health.v1.Health/Check) over HTTP/2: passes when the
 * endpoint answers SERVING for `service` within `timeoutMs`; NOT_SERVING,
 * SERVICE_UNKNOWN, a gRPC error (UNIMPLEMENTED: no health service), an HTTP status
 * other than 200, a reset, a refused connect or silence fail. One connection a check,
 * closed after it, as the other probes do. The two protobuf fields are written and
 * read here: a gRPC stack per check would cost more than the check.
 */
export function grpcProbe(host: string, port: number, timeoutMs: number, o: GrpcProbeOptions): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const authority = net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
    const secure = o.tls !== undefined;
    const servername = o.tls !== undefined ? upstreamServername(o.tls, host) : undefined;
    const session = http2.connect(`${secure ? 'https' : 'http'}://${authority}`, {
      createConnection: () => (o.tls !== undefined ? tls.connect({ host, port, ...o.tls, ALPNProtocols: ['h2'], ...(servername !== undefined ? { servername } : {}) }) : net.connect({ host, port })),
      settings: { enablePush: false },
      maxSessionMemory: 1,
    });
    let settled = false;
    const done = verdict(resolve, timeoutMs, () => {
      settled = true;
      session.destroy();
    });
    session.on('error', (err: NodeJS.ErrnoException) => done({ ok: false, detail: err.code ?? err.message }));
    // Trailers-Only answers (an error with no message) carry grpc-status in the headers.
    let grpcStatus: string | undefined;
    let grpcMessage = '';
    const chunks: Buffer[] = [];
    let size = 0;
    const req = session.request({
      ':method': 'POST',
      ':path': '/grpc.health.v1.Health/Check',
      'content-type': 'application/grpc',
      te: 'trailers',
      'grpc-timeout': `${Math.max(1, Math.ceil(timeoutMs))}m`,
      'user-agent': 'berth-health-check',
    });
    const statusOf = (h: http2.IncomingHttpHeaders) => {
      const s = h['grpc-status'];
      if (typeof s === 'string') {
        grpcStatus = s;
        const m = h['grpc-message'];
        grpcMessage = typeof m === 'string' ? percentDecoded(m) : '';
      }
    };
    req.on('response', (h) => {
      const status = h[':status'];
      if (status !== 200) {
        done({ ok: false, detail: `http status ${status}` });
        return;
      }
      statusOf(h);
    });
    req.on('trailers', statusOf);
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > GRPC_ANSWER_MAX) done({ ok: false, detail: 'answer too big for a health check' });
      else chunks.push(c);
    });
    req.on('error', (err: NodeJS.ErrnoException) => done({ ok: false, detail: h2ErrorDetail(err) }));
    req.on('close', () => {
      if (settled) return;
      if (grpcStatus === undefined) {
        done({ ok: false, detail: req.rstCode !== undefined && req.rstCode !== http2.constants.NGHTTP2_NO_ERROR ? `stream reset (code ${req.rstCode})` : 'no grpc-status' });
        return;
      }
      if (grpcStatus !== '0') {
        const code = Number(grpcStatus);
        done({ ok: false, detail: `grpc-status ${grpcStatus} ${GRPC_CODES[code] ?? ''}${grpcMessage !== '' ? `: ${grpcMessage.slice(0, 200)}` : ''}`.trimEnd() });
        return;
      }
      const serving = servingStatusOf(Buffer.concat(chunks));
      if (serving === undefined) done({ ok: false, detail: 'malformed health answer' });
      else done({ ok: serving === 1, detail: SERVING_STATUS[serving] ?? `status ${serving}` });
    });
    req.end(healthCheckRequest(o.service));
  });
}
