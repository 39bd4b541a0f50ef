import type { HandshakeResult } from './tls.js';

/**
 * Typed events the proxy and discovery emit for metrics. Domain code calls these;
 * only src/metrics turns them into prom-client updates. All methods must be cheap:
 * several are called once per connection.
 */
export type ConnectResult = 'ok' | 'refused' | 'timeout' | 'error';

export interface ProxyObserver {
  /** A client connection was accepted by `listener`. */
  listenerAccepted(listener: string): void;
  /** A client connection of `listener` ended. */
  listenerClosed(listener: string): void;
  /** A connect attempt to an endpoint finished. `seconds` is the time it took. */
  upstreamConnect(service: string, endpoint: string, result: ConnectResult, seconds: number): void;
  /** A proxied upstream connection closed, with bytes received from (rx) and sent to (tx) the endpoint. */
  upstreamClosed(service: string, endpoint: string, rx: number, tx: number): void;
  /** A retry on another endpoint, with why. */
  retry(service: string, reason: string): void;
  /** A client was turned away because no endpoint was usable. */
  noEndpoint(listener: string, service: string): void;
  /** An http request finished (status 499: the client left first). `service` is "-" when no route matched; `version` the client's HTTP version. */
  httpRequest(listener: string, service: string, method: string, status: number, seconds: number, version: HttpVersionLabel): void;
  /** A gRPC request finished with this grpc-status (a code 0-16; 'none': the answer carried none; 'CANCELLED': the client left first). */
  grpcRequest(listener: string, service: string, status: number | 'none' | 'CANCELLED'): void;
  /** berth refused a request before routing it (malformed, head too large or too slow, CONNECT). */
  httpRejected(listener: string, reason: HttpRejectReason): void;
  /** An Upgrade request was connected through to an endpoint (a tunnel opened). */
  httpUpgrade(listener: string, service: string): void;
  /** A TLS handshake on a listener ended (ok, or why not). */
  tlsHandshake(listener: string, result: HandshakeResult): void;
  /**
   * This process failed for want of a resource (EMFILE, ENFILE, ENOBUFS, ENOMEM ...)
   * accepting a client or connecting to an endpoint: no endpoint is to blame.
   */
  localError(where: LocalErrorSite, code: string): void;
  /** A tcp listener's read of the ClientHello came to `result` (routed by SNI, the catch-all, or why not). */
  preread(listener: string, result: PrereadResult): void;
  /** A PROXY protocol header from a front balancer: ok, or why the connection was refused. */
  proxyProtocol(listener: string, result: ProxyProtocolResult): void;
  /** A udp session opened (true) or ended (false). */
  udpSession(listener: string, opened: boolean): void;
  /** A datagram relayed: in (client → endpoint) or out (endpoint → client). */
  udpDatagram(listener: string, direction: 'in' | 'out'): void;
  /** A datagram dropped, and why. */
  udpDropped(listener: string, reason: UdpDropReason): void;
}

export type UdpDropReason = 'sessions_full' | 'no_endpoint' | 'oversize' | 'error';

export type PrereadResult = 'routed' | 'fallback' | 'no_sni' | 'no_route' | 'timeout' | 'malformed' | 'too_large';
export type ProxyProtocolResult = 'ok' | 'missing' | 'malformed' | 'untrusted' | 'timeout';

export type LocalErrorSite = 'accept' | 'upstream_connect';

export type HttpRejectReason = 'bad_request' | 'header_too_large' | 'timeout' | 'method' | 'h2_limit';
/** The HTTP version a client spoke (the `version` label). */
export type HttpVersionLabel = '1.1' | '2';

export const nullObserver: ProxyObserver = {
  listenerAccepted() {},
  listenerClosed() {},
  upstreamConnect() {},
  upstreamClosed() {},
  retry() {},
  noEndpoint() {},
  httpRequest() {},
  grpcRequest() {},
  httpRejected() {},
  httpUpgrade() {},
  tlsHandshake() {},
  localError() {},
  preread() {},
  proxyProtocol() {},
  udpSession() {},
  udpDatagram() {},
  udpDropped() {},
};
