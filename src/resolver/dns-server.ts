/**
 * The DNS interface's sockets: one udp socket and one tcp listener on the same
 * address, answering from answer.ts. Bounded: tcp connections (256 at once, 10 s
 * idle), one message of at most 64 KiB buffered per connection, reading paused while
 * an answer waits to be written. Nothing a client sends crashes the process.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import type { HostPort } from '../core/types.js';
import { BerthError } from '../core/errors.js';
import type { Logger } from '../log.js';
import type { DnsAnswerer, Rcode } from './answer.js';

export interface DnsServerOptions {
  readonly bind: HostPort;
  readonly answerer: DnsAnswerer;
  readonly log: Logger;
  /** Each query answered (or refused): for berth_dns_queries_total. */
  readonly counted?: (type: string, rcode: Rcode) => void;
  /** tcp: connections at once (default 256) and idle time (default 10 s). */
  readonly maxConnections?: number;
  readonly idleMs?: number;
}

export class DnsServer {
  private udp: dgram.Socket | null = null;
  private tcp: net.Server | null = null;
  private readonly conns = new Set<net.Socket>();
  private closed = false;

  constructor(private readonly o: DnsServerOptions) {}

  /** Binds udp and tcp (tcp on the port udp got when the port is 0). */
  async listen(): Promise<net.AddressInfo> {
    const { host, port } = this.o.bind;
    const udp = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
    this.udp = udp;
    const bound = await new Promise<net.AddressInfo>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind({ address: host, port }, () => {
        udp.off('error', reject);
        resolve(udp.address());
      });
    }).catch((err: NodeJS.ErrnoException) => {
      this.close();
      throw new BerthError('BERTH_ERR_LISTEN', `dns: cannot bind udp ${host}:${port}: ${err.code ?? err.message}`);
    });
    // A datagram socket's errors (an ICMP error for an answer) end nothing.
    udp.on('error', () => {});
    udp.on('message', (msg, rinfo) => this.datagram(msg, rinfo));
    const tcp = net.createServer({ noDelay: true }, (s) => this.connection(s));
    tcp.maxConnections = this.o.maxConnections ?? 256;
    this.tcp = tcp;
    await new Promise<void>((resolve, reject) => {
      tcp.once('error', reject);
      tcp.listen({ host, port: bound.port }, () => {
        tcp.off('error', reject);
        resolve();
      });
    }).catch((err: NodeJS.ErrnoException) => {
      this.close();
      throw new BerthError('BERTH_ERR_LISTEN', `dns: cannot bind tcp ${host}:${bound.port}: ${err.code ?? err.message}`);
    });
    tcp.on('error', (err: NodeJS.ErrnoException) => this.o.log.warn({ err: err.code ?? err.message }, 'dns: tcp listener error'));
    return bound;
  }

  close(): void {
    this.closed = true;
    try {
      this.udp?.close();
    } catch {
      // closed already
    }
    this.udp = null;
    this.tcp?.close();
    this.tcp = null;
    for (const s of this.conns) s.destroy();
  }

  private datagram(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    // Source port 0 cannot be answered (node's send throws on it): a forged datagram, dropped.
    if (rinfo.port === 0 || this.udp === null) return;
    const a = this.o.answerer.answer(msg, 'udp');
    this.o.counted?.(a.type, a.rcode);
    if (a.packet === null) return;
    try {
      this.udp.send(a.packet, rinfo.port, rinfo.address, onSent);
    } catch {
      // An address node refuses synchronously: that answer is lost, nothing else.
    }
  }

  private connection(s: net.Socket): void {
    if (this.closed) {
      s.destroy();
      return;
    }
    this.conns.add(s);
    s.on('error', () => {});
    s.setTimeout(this.o.idleMs ?? 10_000, () => s.destroy());
    // One message at a time: its 2-byte length, then a buffer of exactly that size
    // filled in place (no copy per segment), within FRAME_MS of its first byte.
    const head = Buffer.alloc(2);
    let headHave = 0;
    let body: Buffer | null = null;
    let bodyHave = 0;
    let deadline: NodeJS.Timeout | null = null;
    const frameStarted = () => {
      deadline ??= setTimeout(() => s.destroy(), FRAME_MS);
    };
    const frameDone = () => {
      if (deadline !== null) clearTimeout(deadline);
      deadline = null;
    };
    s.on('close', () => {
      frameDone();
      this.conns.delete(s);
    });
    let pending: Buffer | null = null;
    const consume = (d: Buffer): void => {
      let at = 0;
      while (at < d.length) {
        frameStarted();
        if (body === null) {
          const n = Math.min(2 - headHave, d.length - at);
          d.copy(head, headHave, at, at + n);
          headHave += n;
          at += n;
          if (headHave < 2) return;
          body = Buffer.allocUnsafe(head.readUInt16BE(0));
          bodyHave = 0;
        }
        const n = Math.min(body.length - bodyHave, d.length - at);
        d.copy(body, bodyHave, at, at + n);
        bodyHave += n;
        at += n;
        if (bodyHave < body.length) return;
        const msg = body;
        body = null;
        headHave = 0;
        frameDone();
        const a = this.o.answerer.answer(msg, 'tcp');
        this.o.counted?.(a.type, a.rcode);
        if (a.packet === null) {
          s.destroy();
          return;
        }
        const len = Buffer.alloc(2);
        len.writeUInt16BE(a.packet.length, 0);
        s.write(len);
        const ok = s.write(a.packet);
        // A client that does not read its answers: stop answering (and reading) until
        // it does; what is left of this read waits with it. Past MAX_QUEUED written
        // and unread, the connection goes.
        if (s.writableLength > MAX_QUEUED) {
          s.destroy();
          return;
        }
        if (!ok && at < d.length) {
          pending = d.subarray(at);
          s.pause();
          s.once('drain', () => {
            const rest = pending;
            pending = null;
            s.resume();
            if (rest !== null) consume(rest);
          });
          return;
        }
        if (!ok) {
          s.pause();
          s.once('drain', () => s.resume());
          return;
        }
      }
    };
    s.on('data', (d: Buffer) => consume(d));
  }
}

/** A tcp message must come whole within this long of its first byte (no slow drip holds a connection). */
const FRAME_MS = 5000;
/** Answers written and not read by the client, at most, per connection. */
const MAX_QUEUED = 256 * 1024;

function onSent(): void {
  // An answer that could not be sent (too large, the client gone): nothing to do.
}
