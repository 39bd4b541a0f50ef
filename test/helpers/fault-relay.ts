/**
 * A TCP relay on 127.0.0.1:<port 0> in front of `target`, for partition tests: a
 * peer that reaches a server only through it can be cut off or black-holed and
 * let back, while every other peer reaches the server directly.
 *
 * - `cut()`: every open connection reset (both sides), new ones reset as they
 *   are accepted (the client sees ECONNRESET at once).
 * - `blackhole()`: connections stay open and new ones are accepted, but every
 *   byte either way is dropped: requests hang until the client gives up.
 * - `cutFrom(pid)`: only the connections that process `pid` dialed are cut (open
 *   ones reset, new ones reset as they are accepted); everyone else's flow. The
 *   dialer is found the way `ss -p` finds it: the client end's socket inode in
 *   /proc/net/tcp, then that inode among /proc/<pid>/fd (Linux; own children).
 *   For peers that share a relay (etcd members dialing one member's peer URL).
 * - `restore()`: bytes flow again, for everyone. A connection that lost bytes in
 *   a black hole is reset then (a stream with a hole cannot go on; a real network
 *   would have retransmitted): the client opens a new one, as it would after its
 *   timeout.
 *
 * `target` is read at every new connection: a server that moved can be followed.
 * Closed at teardown with every connection. node:net, and /proc for `cutFrom`.
 */
import { once } from 'node:events';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import net from 'node:net';
import type { Test } from 'tap';

export type RelayMode = 'open' | 'cut' | 'blackhole';

export interface FaultRelay {
  /** Where the relayed peer connects: `127.0.0.1:<port>`. */
  readonly port: number;
  readonly url: string;
  readonly mode: RelayMode;
  /** Connections open now (client side). */
  readonly open: number;
  /** Bytes dropped by black holes so far. */
  readonly dropped: number;
  cut(): void;
  blackhole(): void;
  /** Cuts the connections dialed by process `pid` (and refuses its new ones) until `restore`. */
  cutFrom(pid: number): void;
  restore(): void;
  close(): Promise<void>;
}

/** /proc/net/tcp's form of an IPv4 address and port: `0100007F:1F90` for 127.0.0.1:8080. */
function procAddress(ip: string, port: number): string {
  const hex = (n: number, width: number) => n.toString(16).toUpperCase().padStart(width, '0');
  return `${hex(ip.split('.').reduceRight((n, b) => n * 256 + Number(b), 0), 8)}:${hex(port, 4)}`;
}

/** Whether process `pid` holds the client end of accepted socket `s` (IPv4): it dialed it. */
function dialedBy(s: net.Socket, pid: number): boolean {
  if (s.remoteAddress === undefined || s.remotePort === undefined || s.localAddress === undefined || s.localPort === undefined) return false;
  // The client end: local address = our remote one, remote address = our local one.
  const local = procAddress(s.remoteAddress.replace(/^::ffff:/, ''), s.remotePort);
  const remote = procAddress(s.localAddress.replace(/^::ffff:/, ''), s.localPort);
  let inode: string | undefined;
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f[1] === local && f[2] === remote) inode = f[9];
  }
  if (inode === undefined || inode === '0') return false;
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return false;
  }
  return fds.some((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`) === `socket:[${inode}]`;
    } catch {
      return false;
    }
  });
}

/**
 * Resets `s` (RST). One that has sent its FIN already is destroyed instead:
 * libuv refuses to reset a shut-down socket (EINVAL), and Node then never
 * closes its handle, so the process spins at exit waiting for it.
 */
function hardClose(s: net.Socket): void {
  if (s.writableEnded) s.destroy();
  else s.resetAndDestroy();
}

interface Pair {
  readonly client: net.Socket;
  readonly upstream: net.Socket;
  /** Lost bytes in a black hole. */
  holed: boolean;
}

export async function faultRelay(t: Test, target: { host?: string; port: number }): Promise<FaultRelay> {
  const pairs = new Set<Pair>();
  let mode: RelayMode = 'open';
  let dropped = 0;
  /** Processes whose connections are cut (`cutFrom`). */
  const shunned = new Set<number>();
  const shunnedDialer = (client: net.Socket) => [...shunned].some((pid) => dialedBy(client, pid));

  const reset = (p: Pair) => {
    pairs.delete(p);
    hardClose(p.client);
    p.upstream.destroy();
  };
  /** `from`'s bytes to `to`, unless the link is black-holed. */
  const pipe = (p: Pair, from: net.Socket, to: net.Socket) => {
    from.on('data', (d: Buffer) => {
      if (mode === 'open') {
        if (!to.destroyed) to.write(d);
        return;
      }
      dropped += d.length;
      p.holed = true;
    });
    from.on('end', () => {
      if (mode === 'open') to.end();
      else p.holed = true;
    });
  };

  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    client.on('error', () => {});
    if (mode === 'cut' || (shunned.size > 0 && shunnedDialer(client))) {
      hardClose(client);
      return;
    }
    const upstream = net.connect({ host: target.host ?? '127.0.0.1', port: target.port, allowHalfOpen: true });
    upstream.on('error', () => {});
    const p: Pair = { client, upstream, holed: false };
    pairs.add(p);
    pipe(p, client, upstream);
    pipe(p, upstream, client);
    client.on('close', () => {
      if (pairs.delete(p)) upstream.destroy();
    });
    upstream.on('close', (hadError) => {
      if (!pairs.has(p)) return;
      // In a black hole the client must not hear of it: reset when restored.
      if (mode === 'blackhole') {
        p.holed = true;
        return;
      }
      if (!hadError) {
        client.end();
        return;
      }
      pairs.delete(p);
      hardClose(client);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;

  const relay: FaultRelay = {
    port,
    url: `http://127.0.0.1:${port}`,
    get mode() {
      return mode;
    },
    get open() {
      return pairs.size;
    },
    get dropped() {
      return dropped;
    },
    cut() {
      mode = 'cut';
      for (const p of [...pairs]) reset(p);
    },
    blackhole() {
      mode = 'blackhole';
    },
    cutFrom(pid) {
      shunned.add(pid);
      for (const p of [...pairs]) if (dialedBy(p.client, pid)) reset(p);
    },
    restore() {
      mode = 'open';
      shunned.clear();
      for (const p of [...pairs]) if (p.holed) reset(p);
    },
    async close() {
      mode = 'cut';
      for (const p of [...pairs]) reset(p);
      if (server.listening) await new Promise((r) => server.close(r));
    },
  };
  t.teardown(() => relay.close());
  return relay;
}
