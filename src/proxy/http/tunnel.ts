import type net from 'node:net';
import type { EndpointState } from '../../pool/endpoint.js';
import type { HttpListener } from './listener.js';

const kTunnel = Symbol('berth.http.tunnel');
type TunnelSocket = net.Socket & { [kTunnel]?: Tunnel };
function onTunnelEnd(this: TunnelSocket): void {
  this[kTunnel]?.destroy();
}

/**
 * An upgraded connection (WebSocket and others), after the endpoint's 101: bytes
 * both ways with backpressure, bounded by the idle timeout; either side closing
 * or failing closes both.
 */
export class Tunnel {
  private closed = false;

  constructor(
    private readonly listener: HttpListener,
    private readonly client: net.Socket,
    private readonly up: net.Socket,
    private readonly ep: EndpointState,
  ) {}

  start(): void {
    const c = this.client as TunnelSocket;
    const u = this.up as TunnelSocket;
    c[kTunnel] = this;
    u[kTunnel] = this;
    c.on('close', onTunnelEnd);
    u.on('close', onTunnelEnd);
    c.on('error', onTunnelEnd);
    u.on('error', onTunnelEnd);
    const idle = this.listener.settings.timeouts.idle;
    c.setTimeout(idle > 0 ? idle : 0);
    if (idle > 0) c.on('timeout', onTunnelEnd);
    c.pipe(u);
    u.pipe(c);
    c.resume();
  }

  destroy(): void {
    if (this.closed) return;
    this.closed = true;
    this.client.destroy();
    this.up.destroy();
    // (The endpoint socket's bytes are counted by Upstreams when it closes.)
    this.listener.deps.pool.release(this.ep);
    this.listener.tunnels.delete(this);
  }
}
