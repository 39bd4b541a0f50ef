import http2, { type ClientHttp2Stream, type ServerHttp2Stream } from 'node:http2';
import net from 'node:net';
import type { EndpointState } from '../../pool/endpoint.js';
import type { HttpListener } from './listener.js';
import { closeWhenFlushed, resetStream } from './limits.js';

const { NGHTTP2_NO_ERROR, NGHTTP2_CONNECT_ERROR } = http2.constants;

const kTunnel = Symbol('berth.http.tunnel');
/** One side of a tunnel: a socket (an HTTP/1.1 endpoint's or client's) or a stream (an HTTP/2 client's or endpoint's: RFC 8441). */
type Side = net.Socket | ServerHttp2Stream | ClientHttp2Stream;
type TunnelSide = Side & { [kTunnel]?: Tunnel };

function onSideClose(this: TunnelSide, hadError?: boolean): void {
  const t = this[kTunnel];
  if (t === undefined) return;
  // A socket says whether it failed; a stream, by how it was closed (a reset, or both halves ended).
  const clean = this instanceof net.Socket ? hadError !== true : (this as ServerHttp2Stream | ClientHttp2Stream).rstCode === NGHTTP2_NO_ERROR;
  t.sideClosed(this, clean);
}
function onSideError(this: TunnelSide): void {
  // ('close' follows, with the failure; the other side is cut then.)
}
function onIdle(this: TunnelSide): void {
  this[kTunnel]?.destroy();
}

/**
 * An upgraded connection (WebSocket and others), after the endpoint agreed: bytes
 * both ways with backpressure, bounded by the idle timeout. Each side is a socket
 * (HTTP/1.1: the client's, the endpoint's after its 101) or a stream (HTTP/2: the
 * client's extended CONNECT, or berth's to an HTTP/2 endpoint).
 * A side that ends cleanly ends the other cleanly once what is written to it is
 * flushed (a FIN; on HTTP/2, END_STREAM then the stream's close), so the last
 * frames of a WebSocket close handshake are never dropped; a side that fails (an
 * error, a reset) cuts the other (RFC 8441 §5/RFC 9113 §8.5: a TCP reset is a
 * stream reset with CONNECT_ERROR, and the reverse). Either way the tunnel ends
 * once both sides have closed, and the idle timeout still cuts a side that never
 * finishes.
 */
export class Tunnel {
  private open = 2;
  private released = false;

  constructor(
    private readonly listener: HttpListener,
    private readonly client: Side,
    private readonly up: net.Socket | ClientHttp2Stream,
    private readonly ep: EndpointState,
  ) {}

  start(): void {
    const c = this.client as TunnelSide;
    const u = this.up as TunnelSide;
    c[kTunnel] = this;
    u[kTunnel] = this;
    c.on('close', onSideClose);
    u.on('close', onSideClose);
    c.on('error', onSideError);
    u.on('error', onSideError);
    const idle = this.listener.settings.timeouts.idle;
    // (An HTTP/2 client's stream has its idle timer from the front, as every stream does.)
    if (c instanceof net.Socket) {
      c.setTimeout(idle > 0 ? idle : 0);
      if (idle > 0) c.on('timeout', onIdle);
    }
    // The endpoint's side too: a side left flushing to a peer that stopped reading ends.
    u.setTimeout(idle > 0 ? idle : 0);
    if (idle > 0) u.on('timeout', onIdle);
    c.pipe(u);
    u.pipe(c);
    c.resume();
  }

  /** One side has closed: the other ends as it did (cleanly, or cut). */
  sideClosed(side: Side, clean: boolean): void {
    this.open--;
    const other = side === this.client ? this.up : this.client;
    if (clean) endCleanly(other);
    else cutSide(other);
    if (this.open <= 0) this.settle();
  }

  /** Cuts both sides now (the idle timeout, a stop). */
  destroy(): void {
    cutSide(this.client);
    cutSide(this.up);
    this.settle();
  }

  private settle(): void {
    if (this.released) return;
    this.released = true;
    // (The endpoint socket's bytes are counted by Upstreams when it closes.)
    this.listener.deps.pool.release(this.ep);
    this.listener.tunnels.delete(this);
  }
}

function endCleanly(s: Side): void {
  if (s.destroyed) return;
  if (s instanceof net.Socket) s.destroySoon();
  else if (!s.closed) {
    // END_STREAM (pipe may have sent it already), then closed once it is out, still
    // under the idle timeout (a peer that stopped reading would otherwise hold the
    // stream, and the endpoint's slot, for ever).
    s.end();
    closeWhenFlushed(s);
  }
}

function cutSide(s: Side): void {
  if (s instanceof net.Socket) s.destroy();
  else if (!s.closed) resetStream(s, NGHTTP2_CONNECT_ERROR);
  else s.destroy();
}
