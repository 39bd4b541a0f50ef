/**
 * A udp listener: a datagram socket, a session per client (sessions.ts), a cap on
 * sessions. With --workers each worker binds a socket of its own with SO_REUSEPORT,
 * so the kernel hashes a client's address to one worker and its datagrams are never
 * split across workers (node's cluster would share one handle among them all).
 *
 * A client must get its answers from the address it sent to (it may have connected
 * its socket there, and a resolver checks). node's dgram cannot say which local
 * address a datagram on a wildcard socket came to (no IP_PKTINFO), so a wildcard bind
 * (0.0.0.0 or ::, with a fixed port) becomes one socket per address of the host; a
 * session answers from the socket its client sent to.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import os from 'node:os';
import type { Timer } from '../../core/clock.js';
import { BerthError } from '../../core/errors.js';
import { nodeHasReusePort } from '../../core/node-version.js';
import { nullObserver, type ProxyObserver, type UdpDropReason } from '../../core/observer.js';
import type { Logger } from '../../log.js';
import type { Pool } from '../../pool/pool.js';
import type { Listener } from '../listener.js';
import { parseProxyHeader } from '../preread/proxy-header.js';
import { acceptProxyOf, type AcceptProxy } from '../preread/chain.js';
import { UdpSession, type UdpEnd } from './sessions.js';

export interface UdpSettings {
  /** A session with no datagram either way for this long ends (ms); 0 = never. */
  readonly idleTimeout: number;
  /** Sessions at once; past it a new client's datagram is dropped and counted. */
  readonly maxSessions: number;
  /** A session ends once each of its datagrams has had this many answers (1 for DNS); 0 = no limit. */
  readonly responses: number;
  /** With responses 0: a session ends once this many datagrams went to the endpoint; 0 = no limit. */
  readonly requests: number;
}

export interface UdpListenerSettings {
  readonly name: string;
  readonly bind: { readonly host: string; readonly port: number };
  readonly service: string;
  readonly retries: number;
  readonly retryBackoff: number;
  readonly udp: UdpSettings;
  /** One log line per session when it ends. */
  readonly http?: { readonly accessLog: boolean };
  /** PROXY protocol in: a trusted peer's sessions start with a v2 header on their first datagram. */
  readonly acceptProxy?: { readonly trusted: readonly string[]; readonly untrusted: 'refuse' | 'ignore' } | null;
}

export interface UdpListenerDeps {
  readonly pool: Pool;
  readonly log: Logger;
  readonly observer?: ProxyObserver;
  /** A --workers worker: a socket of its own (SO_REUSEPORT), never the cluster's shared one. */
  readonly reusePort?: boolean;
  /** The host's addresses (tests hand their own); default os.networkInterfaces. */
  readonly interfaces?: () => NodeJS.Dict<os.NetworkInterfaceInfo[]>;
}

/** A wildcard bind looks for addresses that came or went this often (and on every reload). */
const REFRESH_MS = 10_000;

function onRefresh(l: UdpListener): void {
  l.refreshAddresses();
}

export class UdpListener implements Listener<UdpListenerSettings> {
  readonly mode = 'udp';
  settings: UdpListenerSettings;
  readonly deps: Required<UdpListenerDeps>;
  readonly sessions = new Map<string, UdpSession>();
  /** One socket, or one per local address for a wildcard bind. */
  private sockets: dgram.Socket[] = [];
  private closing = false;
  /** A wildcard bind made one socket per local address. */
  private perAddress = false;
  /** Where the socket was bound (kept after it closes, for the logs). */
  private bound: net.AddressInfo = { address: '', family: '', port: 0 };

  private acceptProxy: AcceptProxy | null = null;

  constructor(settings: UdpListenerSettings, deps: UdpListenerDeps) {
    this.settings = settings;
    this.deps = { observer: nullObserver, reusePort: false, interfaces: () => os.networkInterfaces(), ...deps };
    this.configureProxy();
  }

  configure(settings: UdpListenerSettings): void {
    this.settings = settings;
    this.configureProxy();
    this.refreshAddresses();
  }

  private refreshTimer: Timer | null = null;
  private refreshing = false;

  /**
   * A wildcard bind follows the host's addresses: one that came (a new network, a VIP,
   * an IPv6 address past duplicate address detection) gets a socket; one that went
   * loses its socket and the sessions on it.
   */
  refreshAddresses(): void {
    const clock = this.deps.pool.clock;
    clock.cancel(this.refreshTimer);
    this.refreshTimer = null;
    if (!this.perAddress || this.closing || this.sockets.length === 0 || this.refreshing) return;
    const { host, port } = this.settings.bind;
    const want = addressesFor(host, this.deps.interfaces()) ?? [];
    const have = new Map(this.sockets.map((s) => [(s as Tagged)[kLocal]!, s]));
    for (const [a, s] of have) {
      if (want.includes(a)) continue;
      for (const session of [...this.sessions.values()]) if (session.via === s) session.end('shutdown');
      this.sockets = this.sockets.filter((x) => x !== s);
      try {
        s.close();
      } catch {
        // closed already
      }
    }
    const added = want.filter((a) => !have.has(a));
    this.refreshing = true;
    void Promise.all(
      added.map((a) =>
        this.bindOne(a, port, this.deps.reusePort, true).then(
          (s) => {
            if (this.closing || this.sockets.length === 0) s.close();
            else this.sockets.push(s);
          },
          (err: NodeJS.ErrnoException) => {
            if (this.deps.log.isLevelEnabled('debug')) this.deps.log.debug({ listener: this.settings.name, address: a, err: err.code ?? err.message }, 'udp: an address of the host cannot be bound yet');
          },
        ),
      ),
    ).then(() => {
      this.refreshing = false;
      if (!this.closing && this.sockets.length > 0) this.refreshTimer = clock.after(REFRESH_MS, onRefresh, this);
    });
  }

  private configureProxy(): void {
    this.acceptProxy = acceptProxyOf(this.settings.acceptProxy);
  }

  async listen(): Promise<net.AddressInfo> {
    const { host, port } = this.settings.bind;
    const own = this.deps.reusePort;
    if (own && !nodeHasReusePort(process.versions.node)) {
      throw new BerthError('BERTH_ERR_LISTEN', `listener ${this.settings.name}: a udp listener with --workers needs a socket per worker (SO_REUSEPORT), which needs node 22.12 or later (this is ${process.versions.node})`);
    }
    const addresses = port !== 0 ? addressesFor(host, this.deps.interfaces()) : null;
    const bindError = (at: string, err: NodeJS.ErrnoException) => new BerthError('BERTH_ERR_LISTEN', `listener ${this.settings.name}: cannot bind udp ${at.includes(':') ? `[${at}]` : at}:${port}: ${err.code ?? err.message}`);
    try {
      if (addresses === null) {
        this.sockets = [await this.bindOne(host, port, own, false).catch((err: NodeJS.ErrnoException) => Promise.reject(bindError(host, err)))];
      } else {
        for (const a of addresses) {
          try {
            this.sockets.push(await this.bindOne(a, port, own, true));
          } catch (e) {
            const err = e as NodeJS.ErrnoException;
            // An address that cannot take a bind now (IPv6 still in duplicate address detection) is left out.
            if (err.code !== 'EADDRNOTAVAIL') throw bindError(a, err);
            this.deps.log.warn({ listener: this.settings.name, address: a }, 'udp: an address of the host cannot be bound; left out');
          }
        }
        if (this.sockets.length === 0) throw bindError(host, Object.assign(new Error('no address of the host could be bound'), { code: 'EADDRNOTAVAIL' }));
        this.perAddress = true;
        this.refreshTimer = this.deps.pool.clock.after(REFRESH_MS, onRefresh, this);
      }
    } catch (err) {
      // Every socket goes with a failed bind: a refused reload leaks nothing.
      this.closeSockets();
      throw err;
    }
    const first = this.sockets[0]!.address();
    this.bound = addresses === null ? first : { address: host, family: net.isIPv6(host) ? 'IPv6' : 'IPv4', port: first.port };
    return this.bound;
  }


  private bindOne(host: string, port: number, own: boolean, perAddress: boolean): Promise<dgram.Socket> {
    const type = net.isIPv6(host) ? 'udp6' : 'udp4';
    // (@types/node 20 does not know `reusePort`; node 22.12+ does.)
    const socket = dgram.createSocket((own ? { type, reusePort: true } : { type }) as dgram.SocketOptions) as Tagged;
    // A socket of one address of a wildcard bind: its sessions are keyed and answered by it.
    if (perAddress) socket[kLocal] = host;
    return new Promise((resolve, reject) => {
      const fail = (err: NodeJS.ErrnoException) => {
        try {
          socket.close();
        } catch {
          // closed already
        }
        reject(err);
      };
      socket.once('error', fail);
      socket.bind({ address: host, port, exclusive: own }, () => {
        socket.off('error', fail);
        socket.on('error', (err: NodeJS.ErrnoException) => this.socketError(err));
        socket.on('message', (msg, rinfo) => this.message(msg, rinfo, socket));
        resolve(socket);
      });
    });
  }

  get address(): net.AddressInfo {
    return this.bound;
  }

  /** Open sessions. */
  get active(): number {
    return this.sessions.size;
  }

  describe(): Record<string, unknown> {
    return { maxSessions: this.settings.udp.maxSessions, idleTimeout: this.settings.udp.idleTimeout, ...(this.perAddress ? { addresses: this.sockets.map((s) => (s as Tagged)[kLocal]) } : {}) };
  }

  /** No new sessions; open ones run until idle (the drain). The sockets stay to carry their answers. */
  stopAccepting(): void {
    this.closing = true;
    if (this.sessions.size === 0) this.closeSockets();
  }

  destroyAll(): void {
    for (const s of [...this.sessions.values()]) s.end('shutdown');
    this.closeSockets();
  }

  private closeSockets(): void {
    this.deps.pool.clock.cancel(this.refreshTimer);
    this.refreshTimer = null;
    const all = this.sockets;
    this.sockets = [];
    for (const s of all) {
      try {
        s.close();
      } catch {
        // closed already
      }
    }
  }

  private message(msg: Buffer, rinfo: dgram.RemoteInfo, via: Tagged): void {
    // Source port 0 cannot be answered (node's send throws on it): a forged datagram, dropped.
    if (rinfo.port === 0) {
      this.dropped('error');
      return;
    }
    const local = via[kLocal];
    const key = local === undefined ? `${rinfo.address}|${rinfo.port}` : `${local}|${rinfo.address}|${rinfo.port}`;
    const s = this.sessions.get(key);
    if (s !== undefined) {
      s.fromClient(msg);
      return;
    }
    if (this.closing) return;
    if (this.sessions.size >= this.settings.udp.maxSessions) {
      // Bounded: a new client waits for a free place (it will send again); never an unbounded table.
      this.dropped('sessions_full');
      return;
    }
    let first = msg;
    let client: string | undefined;
    const ap = this.acceptProxy;
    if (ap !== null) {
      if (ap.trusted.check(rinfo.address, rinfo.family === 'IPv6' ? 'ipv6' : 'ipv4')) {
        // A trusted front balancer: the session's first datagram starts with a v2 header.
        const v = parseProxyHeader(msg);
        if (v.kind !== 'header' || v.version !== 2) {
          this.deps.observer.proxyProtocol(this.settings.name, v.kind === 'missing' || v.kind === 'more' ? 'missing' : 'malformed');
          this.dropped('error');
          return;
        }
        this.deps.observer.proxyProtocol(this.settings.name, 'ok');
        first = msg.subarray(v.length);
        client = v.addresses?.source;
        // A header alone (a LOCAL check, or nothing after it) opens no session and holds no endpoint.
        if (first.length === 0) return;
      } else if (ap.untrusted === 'refuse') {
        this.deps.observer.proxyProtocol(this.settings.name, 'untrusted');
        this.dropped('error');
        return;
      }
    }
    const session = new UdpSession(this, key, via, rinfo.address, rinfo.port, this.settings.service, client);
    this.sessions.set(key, session);
    this.deps.observer.udpSession(this.settings.name, true);
    session.start(first);
  }

  /** @internal an answer to a client, from the socket it sent to (the address it sent to). */
  reply(via: dgram.Socket, msg: Buffer, port: number, address: string): void {
    if (this.sockets.length === 0) return;
    this.datagram('out');
    // One callback for every answer (node drops a send's error without one).
    try {
      via.send(msg, port, address, this.onReplySent);
    } catch {
      // An address node refuses to send to synchronously: that answer is lost, nothing else.
      this.dropped('error');
    }
  }

  private readonly onReplySent = (err: Error | null): void => {
    if (err) this.dropped((err as NodeJS.ErrnoException).code === 'EMSGSIZE' ? 'oversize' : 'error');
  };

  /** @internal */
  datagram(direction: 'in' | 'out'): void {
    this.deps.observer.udpDatagram(this.settings.name, direction);
  }

  /** @internal */
  dropped(reason: UdpDropReason): void {
    this.deps.observer.udpDropped(this.settings.name, reason);
  }

  /** @internal */
  sessionEnded(s: UdpSession, how: UdpEnd, endpoint: string, attempts: number, ms: number): void {
    if (this.sessions.get(s.key) !== s) return;
    this.sessions.delete(s.key);
    this.deps.observer.udpSession(this.settings.name, false);
    if (this.settings.http?.accessLog) {
      this.deps.log.info({ client: s.client ?? `${s.address}:${s.port}`, listener: this.settings.name, service: s.service, endpoint, attempts, rx: s.rx, tx: s.tx, ms, end: how }, 'udp session');
    }
    if (this.closing && this.sessions.size === 0) this.closeSockets();
  }

  private socketError(err: NodeJS.ErrnoException): void {
    // A datagram socket's errors (an answer too large, an ICMP error for one) end nothing: counted, logged at debug.
    this.dropped(err.code === 'EMSGSIZE' ? 'oversize' : 'error');
    if (this.deps.log.isLevelEnabled('debug')) this.deps.log.debug({ err: err.code ?? err.message }, 'udp listener socket error');
  }
}

const kLocal = Symbol('berth.udp.local');
type Tagged = dgram.Socket & { [kLocal]?: string };

/**
 * For a wildcard bind, the host's addresses to bind one by one (of the wildcard's
 * family; `::` takes both, as a dual-stack socket would); null for a plain address.
 * IPv6 link-local addresses are left out (they need a scope, and no client reaches a
 * service there through a balancer's name).
 */
export function addressesFor(host: string, interfaces: NodeJS.Dict<os.NetworkInterfaceInfo[]> = os.networkInterfaces()): string[] | null {
  if (host !== '0.0.0.0' && host !== '::') return null;
  const out: string[] = [];
  for (const list of Object.values(interfaces)) {
    for (const a of list ?? []) {
      if (a.family === 'IPv4' || (host === '::' && a.family === 'IPv6' && !a.address.toLowerCase().startsWith('fe80:'))) {
        if (!out.includes(a.address)) out.push(a.address);
      }
    }
  }
  // No address at all (no interface up): the wildcard itself, as before.
  return out.length > 0 ? out : null;
}
