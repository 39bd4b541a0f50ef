/**
 * What the proxy needs from TLS termination, as an interface: src/tls implements
 * it (files, reloads, SNI, allow-lists), the listeners only call it. Types, and the
 * one rule for the server name berth sends to endpoints (proxy and health checks).
 */
import { isIP } from 'node:net';
import type { TLSSocket, TlsOptions, ConnectionOptions } from 'node:tls';

/** How a handshake ended (the `result` label of berth_tls_handshakes_total). */
export type HandshakeResult = 'ok' | 'no_cert' | 'bad_cert' | 'not_allowed' | 'protocol' | 'timeout';

/** A verified client's identity, as passed on to endpoints. */
export interface PeerIdentity {
  /** SHA-256 of the certificate (DER), lowercase hex. */
  readonly hash: string;
  /** Subject as "CN=x,OU=y,O=z". */
  readonly subject: string;
  readonly cn: string | undefined;
  readonly uris: readonly string[];
  readonly dnsNames: readonly string[];
}

export interface TlsTerminator {
  /** Options for tls.createServer / https.createServer (SNI, client verification, versions, ALPN). */
  serverOptions(): TlsOptions;
  /** True when client certificates are required (mTLS). */
  readonly mutual: boolean;
  /**
   * After a completed handshake: the client's identity (mTLS) and the verdict:
   * ok, no_cert / bad_cert (not verified: close at once), not_allowed (verified, not
   * on the allow-list). Without mTLS: { identity: null, result: 'ok' }.
   */
  check(socket: TLSSocket): { identity: PeerIdentity | null; result: HandshakeResult };
  /** Classifies a failed handshake (the server's tlsClientError). */
  classify(err: Error): HandshakeResult;
  /**
   * Called with the server once it exists: reloaded material reaches it, and every
   * failed or timed-out handshake is counted and its socket closed.
   */
  attach(server: TlsServerLike, listener: string, report: (listener: string, result: HandshakeResult) => void): void;
  /**
   * Refuses a client after the handshake: close_notify and FIN (a clean TLS close,
   * not a reset), what it sent meanwhile read and dropped, closed for good soon after.
   */
  refuse(socket: TLSSocket): void;
}

/** The part of tls.Server the terminator uses. */
export interface TlsServerLike {
  setSecureContext(options: TlsOptions): void;
  on(event: 'tlsClientError', listener: (err: Error, socket: TLSSocket) => void): unknown;
}

/**
 * TLS towards the endpoints of a service: options for tls.connect, minus host and
 * port. The CA, certificate and key are in `secureContext`, built once per service
 * (tls.connect would otherwise parse them and build a context per connection).
 */
export type UpstreamTls = Readonly<Pick<ConnectionOptions, 'secureContext' | 'servername' | 'rejectUnauthorized' | 'minVersion' | 'ALPNProtocols'>>;

/**
 * The server name sent to an endpoint over TLS: the configured one, else the host
 * when it is a name. SNI only for names (RFC 6066): an IP endpoint is checked
 * against the certificate's IP SANs.
 */
export function upstreamServername(t: UpstreamTls, host: string): string | undefined {
  return t.servername ?? (isIP(host) ? undefined : host);
}
