/**
 * UDP sessions (Envoy's udp_proxy shape): a table keyed by the client's address and
 * port, one connected socket towards the endpoint per session, an idle timer per
 * session on the injected clock, and a cap on the table. The first datagram picks
 * the endpoint through the one upstream attempt loop; later ones follow it; the
 * endpoint's answers go back to the client from the listener's socket.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import type { Timer } from '../../core/clock.js';
import type { EndpointState } from '../../pool/endpoint.js';
import { UpstreamAttempt, type AttemptUser, type GiveUp } from '../upstream-attempt.js';
import type { UdpListener } from './listener.js';

/** Datagrams held while a session's socket towards the endpoint is being set up. */
const MAX_QUEUED = 32;

/** How a session ended (the access log's and the debug log's word). */
export type UdpEnd = 'idle' | 'responses' | 'requests' | 'refused' | 'no_endpoint' | 'error' | 'shutdown';

function onUpMessage(this: dgram.Socket & { [kSession]?: UdpSession | undefined }, msg: Buffer): void {
  this[kSession]?.fromEndpoint(msg);
}
function onUpError(this: dgram.Socket & { [kSession]?: UdpSession | undefined }, err: NodeJS.ErrnoException): void {
  this[kSession]?.upError(err);
}
function onIdle(s: UdpSession): void {
  s.idleCheck();
}
function noop(): void {}
const kSession = Symbol('berth.udp.session');

export class UdpSession implements AttemptUser {
  private readonly attempt: UpstreamAttempt;
  private up: (dgram.Socket & { [kSession]?: UdpSession | undefined }) | null = null;
  private connected = false;
  private queue: Buffer[] | null = [];
  private timer: Timer | null = null;
  /** When a datagram last went either way (pool clock, ms). */
  private lastActive: number;
  private answers = 0;
  private requests = 0;
  private sent = 0;
  private ended = false;
  private endpointId = '-';
  private readonly t0: number;
  rx = 0;
  tx = 0;

  constructor(
    private readonly listener: UdpListener,
    readonly key: string,
    /** The listener's socket the client sent to: the answers leave from it. */
    readonly via: dgram.Socket,
    readonly address: string,
    readonly port: number,
    readonly service: string,
    /** The client a front balancer's PROXY v2 header named (the sender is the balancer). */
    readonly client?: string,
  ) {
    const { pool } = listener.deps;
    this.t0 = this.lastActive = pool.clock.now();
    const hashKey = pool.service(service)?.balance === 'source-hash' ? (client ?? address) : undefined;
    this.attempt = new UpstreamAttempt(pool, service, listener.settings, hashKey, this);
  }

  start(first: Buffer): void {
    // (A PROXY header alone, with no payload after it, starts the session with nothing to send.)
    if (first.length > 0) this.fromClient(first);
    if (this.ended) return;
    const idle = this.listener.settings.udp.idleTimeout;
    if (idle > 0) this.timer = this.listener.deps.pool.clock.after(idle, onIdle, this);
    this.attempt.start();
  }

  /** The attempt picked `ep`: a socket connected to it. */
  connectTo(ep: EndpointState): void {
    this.endpointId = ep.id;
    const up = dgram.createSocket(net.isIPv6(ep.host) ? 'udp6' : 'udp4') as dgram.Socket & { [kSession]?: UdpSession | undefined };
    up[kSession] = this;
    up.on('message', onUpMessage);
    up.on('error', onUpError);
    this.up = up;
    // node calls a failed connect's callback with the error (no 'error' event, no `this`).
    up.connect(ep.port, ep.host, this.onConnect);
  }

  /** Once per session: the connect's callback (a resolve failure, EACCES ... arrive here). */
  private readonly onConnect = (err?: Error): void => {
    if (err) this.upError(err as NodeJS.ErrnoException, true);
    else this.upConnected();
  };

  /** Once per session: a send's callback, so a failed send is seen (node drops its error without one). */
  private readonly onSent = (err: Error | null): void => {
    if (err === null) return;
    if ((err as NodeJS.ErrnoException).code === 'EMSGSIZE') this.listener.dropped('oversize');
    else this.upError(err as NodeJS.ErrnoException, false);
  };

  /** @internal */
  upConnected(): void {
    if (this.ended) return;
    this.connected = true;
    // (A local connect: the client waits for an endpoint no more.)
    this.attempt.connected();
    const q = this.queue;
    this.queue = null;
    if (q !== null) for (const m of q) this.send(m);
  }

  giveUp(_why: GiveUp, detail: string): void {
    this.listener.dropped('no_endpoint');
    const { log } = this.listener.deps;
    if (log.isLevelEnabled('debug')) log.debug({ service: this.service, client: this.key, reason: detail }, 'no usable endpoint');
    this.end('no_endpoint');
  }

  /** A datagram from the client. */
  fromClient(msg: Buffer): void {
    if (this.ended) return;
    this.lastActive = this.listener.deps.pool.clock.now();
    if (this.connected) this.send(msg);
    else if (this.queue !== null && this.queue.length < MAX_QUEUED) this.queue.push(msg);
    else {
      // Not taken: it counts toward no answer owed.
      this.listener.dropped('error');
      return;
    }
    this.requests++;
  }

  private send(msg: Buffer): void {
    const up = this.up;
    if (up === null) return;
    this.tx += msg.length;
    this.sent++;
    this.listener.datagram('in');
    const u = this.listener.settings.udp;
    // Requests only (fire and forget, syslog): the session ends once its last one is out.
    try {
      if (u.requests > 0 && u.responses === 0 && this.sent >= u.requests) up.send(msg, () => this.end('requests'));
      else up.send(msg, this.onSent);
    } catch {
      // A send node refuses synchronously (the socket went away): the datagram is lost, counted.
      this.listener.dropped('error');
    }
  }

  /** @internal a datagram from the endpoint: back to the client, from the address it sent to. */
  fromEndpoint(msg: Buffer): void {
    if (this.ended) return;
    if (this.answers++ === 0) this.attempt.report('connected');
    this.rx += msg.length;
    this.lastActive = this.listener.deps.pool.clock.now();
    this.listener.reply(this.via, msg, this.port, this.address);
    const u = this.listener.settings.udp;
    // `responses` answers to each request datagram: a client with several queries in
    // flight on one address (a resolver reusing its port) gets every answer.
    if (u.responses > 0 && this.answers >= u.responses * this.requests) this.end('responses');
  }

  /**
   * @internal the endpoint's socket failed: ECONNREFUSED is an ICMP unreachable, and
   * a connect that failed (`connecting`: the name did not resolve, EACCES) is the
   * endpoint's too — both count like a refused connect (passive health).
   */
  upError(err: NodeJS.ErrnoException, connecting = false): void {
    if (this.ended) return;
    if (err.code === 'ECONNREFUSED' || connecting) {
      this.attempt.report('failed');
      this.end('refused');
      return;
    }
    const { log } = this.listener.deps;
    if (log.isLevelEnabled('debug')) log.debug({ endpoint: this.endpointId, err: err.code ?? err.message }, 'udp endpoint socket error');
    this.listener.dropped('error');
    this.end('error');
  }

  /** @internal the idle timer: ends the session, or waits for the rest of the idle time. */
  idleCheck(): void {
    this.timer = null;
    if (this.ended) return;
    const idle = this.listener.settings.udp.idleTimeout;
    const clock = this.listener.deps.pool.clock;
    const quiet = clock.now() - this.lastActive;
    // One timer per session, re-armed only when it fires (never per datagram).
    if (quiet < idle) this.timer = clock.after(idle - quiet, onIdle, this);
    else this.end('idle');
  }

  end(how: UdpEnd): void {
    if (this.ended) return;
    this.ended = true;
    this.listener.deps.pool.clock.cancel(this.timer);
    this.timer = null;
    const up = this.up;
    this.up = null;
    if (up !== null) {
      up[kSession] = undefined;
      up.removeAllListeners('message');
      up.on('error', noop);
      try {
        up.close();
      } catch {
        // never bound (the connect had not started)
      }
    }
    const ep = this.attempt.endpoint;
    if (ep !== null) this.listener.deps.observer.upstreamClosed(ep.service, ep.id, this.rx, this.tx);
    this.attempt.end();
    this.listener.sessionEnded(this, how, this.endpointId, this.attempt.attempts, this.listener.deps.pool.clock.now() - this.t0);
  }
}
