/**
 * The accepting socket of a listener, and the one place its connections are
 * counted. Every listener kind (tcp, tls, http, https) is fed from here: the gate
 * owns the port and hands each accepted socket, still unread, to the listener's
 * own handler, so a cap counts connections still in their TLS handshake.
 *
 * With `maxConnections`, a connection past the cap is held unread (no bytes read,
 * no handshake started) until one being served closes, as the kernel's backlog
 * would hold it: node cannot stop calling accept() without closing the port. At
 * most as many again are held; past that a connection is closed at once.
 * Descriptor exhaustion on accept is counted and logged once per episode.
 */
import net from 'node:net';
import type { Logger } from '../log.js';
import type { HostPort } from '../core/types.js';
import { listenOn } from './listen.js';
import type { LocalErrorAlarm } from './local-errors.js';

export interface GateDeps {
  readonly log: Logger;
  readonly alarm: LocalErrorAlarm;
  /**
   * Takes an accepted socket (paused, nothing read yet). The listener calls
   * closed() once that connection is gone (it already watches its sockets; a
   * listener of the gate's own on every socket would cost each connection).
   */
  readonly admit: (socket: net.Socket) => void;
}

export class ConnectionGate {
  readonly server: net.Server;
  /** Connections handed to the listener and not closed yet (handshakes included). */
  served = 0;
  private readonly held: net.Socket[] = [];
  /** 0 = no cap. */
  maxConnections: number;

  constructor(
    private readonly name: string,
    maxConnections: number,
    private readonly deps: GateDeps,
  ) {
    this.maxConnections = maxConnections;
    this.server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true, noDelay: true }, (s) => this.accepted(s));
  }

  listen(bind: HostPort, reusePort = false): Promise<net.AddressInfo> {
    return listenOn(
      this.server,
      this.name,
      bind,
      this.deps.log,
      (err) => {
        this.deps.alarm.report('accept', err.code ?? 'error');
      },
      reusePort,
    );
  }

  /** Connections accepted and waiting for a slot under the cap. */
  get waiting(): number {
    return this.held.length;
  }

  private accepted(s: net.Socket): void {
    this.deps.alarm.clear('accept');
    const max = this.maxConnections;
    if (max > 0 && this.served >= max) {
      if (this.held.length >= max) {
        // Past the cap and the hold: refused now rather than piling up descriptors.
        s.on('error', noop);
        s.destroy();
        return;
      }
      s.on('error', noop);
      this.held.push(s);
      return;
    }
    this.serve(s);
  }

  private serve(s: net.Socket): void {
    this.served++;
    this.deps.admit(s);
  }

  /** A served connection is gone: the longest-held one takes its slot. */
  closed(): void {
    this.served--;
    while (this.held.length > 0 && (this.maxConnections === 0 || this.served < this.maxConnections)) {
      const next = this.held.shift()!;
      if (next.destroyed) continue;
      this.serve(next);
    }
  }

  /** Stops accepting; held connections are closed (they were never read). */
  close(): void {
    if (this.server.listening) this.server.close();
    for (const s of this.held.splice(0)) {
      s.on('error', noop);
      s.destroy();
    }
  }
}

function noop(): void {}
