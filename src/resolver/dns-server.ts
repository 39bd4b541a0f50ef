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
    const a = this.o.answerer.answer(msg, 'udp');
    this.o.counted?.(a.type, a.rcode);
    if (a.packet !== null && this.udp !== null) this.udp.send(a.packet, rinfo.port, rinfo.address, onSent);
  }

  private connection(s: net.Socket): void {
    if (this.closed) {
      s.destroy();
      return;
    }
    this.conns.add(s);
    s.on('close', () => this.conns.delete(s));
    s.on('error', () => {});
    s.setTimeout(this.o.idleMs ?? 10_000, () => s.destroy());
    let buf: Buffer = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
      // Each message: a 2-byte length, then that many bytes (at most 64 KiB held).
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (buf.length < 2 + len) break;
        const msg = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        const a = this.o.answerer.answer(msg, 'tcp');
        this.o.counted?.(a.type, a.rcode);
        if (a.packet === null) {
          s.destroy();
          return;
        }
        const head = Buffer.alloc(2);
        head.writeUInt16BE(a.packet.length, 0);
        // A client that does not read its answers stops being read (once per wait).
        if (!s.write(Buffer.concat([head, a.packet])) && !s.isPaused()) {
          s.pause();
          s.once('drain', () => s.resume());
        }
      }
      if (buf.length > 0) buf = Buffer.from(buf);
    });
  }
}

function onSent(): void {
  // An answer that could not be sent (too large, the client gone): nothing to do.
}
