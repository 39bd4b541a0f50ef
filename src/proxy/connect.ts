import net from 'node:net';
import tls from 'node:tls';
import { upstreamServername, type UpstreamTls } from '../core/tls.js';

/**
 * Opens a connection to an endpoint (TLS when `upstreamTls`): the one way berth
 * connects to endpoints, for tcp sessions and for the http listeners' connection
 * pools alike. Injectable so tests can simulate failures in every mode.
 * `reads`: node's `onread` (plain TCP only; a tcp session's reused read buffers,
 * read-buffer.ts). A connect that ignores it still works: the session also reads 'data'.
 */
export type ConnectFn = (host: string, port: number, upstreamTls?: UpstreamTls, reads?: net.OnReadOpts) => net.Socket;

/** TLS sessions kept per endpoint for resumption, in each secure context (one per service). */
const SESSIONS_PER_CONTEXT = 256;
const sessions = new WeakMap<object, Map<string, Buffer>>();

type SessionSocket = tls.TLSSocket & { [kSessionKey]?: string; [kSessionCtx]?: object };

function onSession(this: SessionSocket, session: Buffer): void {
  const ctx = this[kSessionCtx];
  const key = this[kSessionKey];
  if (ctx === undefined || key === undefined) return;
  let m = sessions.get(ctx);
  if (m === undefined) sessions.set(ctx, (m = new Map()));
  m.delete(key);
  m.set(key, session);
  if (m.size > SESSIONS_PER_CONTEXT) m.delete(m.keys().next().value!);
}
const kSessionKey = Symbol('berth.tls.session-key');
const kSessionCtx = Symbol('berth.tls.session-context');

export const tcpConnect: ConnectFn = (host, port, upstreamTls, reads) => {
  if (upstreamTls === undefined) return net.connect(reads === undefined ? { host, port, allowHalfOpen: true, noDelay: true } : { host, port, allowHalfOpen: true, noDelay: true, onread: reads });
  const servername = upstreamServername(upstreamTls, host);
  // Resumption within the same secure context only: another service's client
  // certificate must never resume this one's session.
  const key = `${servername ?? ''}|${host}|${port}`;
  const ctx = upstreamTls.secureContext as object | undefined;
  const session = ctx !== undefined ? sessions.get(ctx)?.get(key) : undefined;
  const s = tls.connect({ host, port, ...upstreamTls, ...(servername !== undefined ? { servername } : {}), ...(session !== undefined ? { session } : {}) }) as SessionSocket;
  s.setNoDelay(true);
  if (ctx !== undefined) {
    s[kSessionCtx] = ctx;
    s[kSessionKey] = key;
    s.on('session', onSession);
  }
  return s;
};

/**
 * Aborts a connection so the peer sees a failure: a TCP reset where possible; a
 * TLS socket (whose handle cannot reset) is destroyed without close_notify.
 */
export function abortSocket(s: net.Socket): void {
  if (s instanceof tls.TLSSocket) s.destroy();
  else s.resetAndDestroy();
}

/** Maps a socket error to the `result` label of berth_upstream_connections_total. */
export function connectResult(err: NodeJS.ErrnoException): 'refused' | 'timeout' | 'error' {
  switch (err.code) {
    case 'ECONNREFUSED':
      return 'refused';
    case 'ETIMEDOUT':
    case 'BERTH_ERR_UPSTREAM_TIMEOUT':
    case 'UND_ERR_CONNECT_TIMEOUT':
      return 'timeout';
    default:
      return 'error';
  }
}

function onGuardedError(this: net.Socket): void {
  this.destroy();
}
const kGuarded = Symbol('berth.guarded');

/**
 * Gives a socket an error path before berth writes to it: a peer's reset then
 * ends that connection alone. Needed wherever a socket changes hands (node's http
 * server removes its own listener before 'upgrade' and 'connect'; undici removes
 * its own before an upgrade), since an 'error' with no listener ends the process.
 */
export function guardSocket(s: net.Socket): void {
  const g = s as net.Socket & { [kGuarded]?: true };
  if (g[kGuarded]) return;
  g[kGuarded] = true;
  s.on('error', onGuardedError);
}

/** Errors that say this process is out of descriptors or memory, not that the endpoint failed. */
export function isLocalError(err: NodeJS.ErrnoException): boolean {
  switch (err.code) {
    case 'EMFILE':
    case 'ENFILE':
    case 'ENOBUFS':
    case 'ENOMEM':
    case 'EADDRNOTAVAIL':
      return true;
    default:
      return false;
  }
}
