import dgram from 'node:dgram';
import http from 'node:http';
import net from 'node:net';
import dnsPacket from 'dns-packet';

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

/** A TCP connect check: passes when the endpoint accepts within `timeoutMs`. */
export function tcpProbe(host: string, port: number, timeoutMs: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const done = (r: ProbeResult) => {
      clearTimeout(timer);
      s.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => done({ ok: false, detail: `timeout after ${timeoutMs}ms` }), timeoutMs);
    s.once('connect', () => done({ ok: true, detail: 'connected' }));
    s.once('error', (err: NodeJS.ErrnoException) => done({ ok: false, detail: err.code ?? err.message }));
  });
}

/** An HTTP GET check: passes on an expected status within `timeoutMs` (the body is drained and ignored). */
export function httpProbe(host: string, port: number, timeoutMs: number, o: HttpProbeOptions): Promise<ProbeResult> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (r: ProbeResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      resolve(r);
    };
    const req = http.get({ host, port, path: o.path, agent: false, headers: { host: o.host ?? (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`), 'user-agent': 'berth-health-check', connection: 'close' } }, (res) => {
      res.resume();
      const status = res.statusCode ?? 0;
      done({ ok: o.expect(status), detail: `status ${status}` });
    });
    const timer = setTimeout(() => done({ ok: false, detail: `timeout after ${timeoutMs}ms` }), timeoutMs);
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
    const done = (r: ProbeResult) => {
      clearTimeout(timer);
      s.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => done({ ok: false, detail: `timeout after ${timeoutMs}ms${total > 0 ? ` (${total} bytes, not the expected ones)` : ''}` }), timeoutMs);
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
    const done = (r: ProbeResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.close();
      resolve(r);
    };
    const timer = setTimeout(() => done({ ok: false, detail: `timeout after ${timeoutMs}ms` }), timeoutMs);
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
