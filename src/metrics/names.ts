/**
 * Every berth metric, declared once (INTERFACE.md). Base units: seconds, bytes.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/** Proxy latencies: 100 µs to 10 s. */
export const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * @param scrape called when a scrape reads the metrics that mirror live state or
 *   per-connection tallies (endpoint up/weight/active, listener active, connection
 *   and byte counters): they are filled then, not kept current on the hot path.
 */
export function declareMetrics(registry: Registry, scrape: () => void = () => {}) {
  const registers = [registry];
  const collect = scrape;
  return {
    listenerConnections: new Counter({ name: 'berth_listener_connections_total', help: 'Client connections accepted', labelNames: ['listener'] as const, registers, collect }),
    listenerActive: new Gauge({ name: 'berth_listener_active_connections', help: 'Client connections open now', labelNames: ['listener'] as const, registers, collect }),
    upstreamConnections: new Counter({
      name: 'berth_upstream_connections_total',
      help: 'Connect attempts to endpoints by result',
      labelNames: ['service', 'endpoint', 'result'] as const,
      registers,
      collect,
    }),
    // With --workers, the primary's view holds the sum over workers: max, not sum.
    upstreamActive: new Gauge({ name: 'berth_upstream_active_connections', help: 'Open connections to an endpoint', labelNames: ['service', 'endpoint'] as const, registers, collect, aggregator: 'max' }),
    upstreamBytes: new Counter({
      name: 'berth_upstream_bytes_total',
      help: 'Bytes received from (rx) and sent to (tx) endpoints, counted when a connection closes',
      labelNames: ['service', 'endpoint', 'direction'] as const,
      registers,
      collect,
    }),
    connectDuration: new Histogram({
      name: 'berth_upstream_connect_duration_seconds',
      help: 'Time to connect to an endpoint',
      labelNames: ['service'] as const,
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    upstreamUp: new Gauge({ name: 'berth_upstream_up', help: '1 when the endpoint is in the pick set, else 0', labelNames: ['service', 'endpoint'] as const, registers, collect, aggregator: 'max' }),
    upstreamWeight: new Gauge({ name: 'berth_upstream_weight', help: 'Effective weight of an endpoint (0-1000)', labelNames: ['service', 'endpoint'] as const, registers, collect, aggregator: 'max' }),
    retries: new Counter({ name: 'berth_retries_total', help: 'Connect retries on another endpoint, by reason', labelNames: ['service', 'reason'] as const, registers }),
    noEndpoint: new Counter({
      name: 'berth_no_endpoint_total',
      help: 'Clients turned away because no endpoint was usable',
      labelNames: ['listener', 'service'] as const,
      registers,
    }),
    httpRequests: new Counter({
      name: 'berth_http_requests_total',
      help: 'HTTP requests by response class and the client\'s HTTP version (499: the client left first; service "-": no route)',
      labelNames: ['listener', 'service', 'method', 'code', 'version'] as const,
      registers,
      collect,
    }),
    grpcRequests: new Counter({
      name: 'berth_grpc_requests_total',
      help: 'gRPC requests by the grpc-status of their answer (the endpoint\'s, or berth\'s own: UNAVAILABLE, DEADLINE_EXCEEDED...; NONE: the answer carried none)',
      labelNames: ['listener', 'service', 'grpc_status'] as const,
      registers,
    }),
    httpDuration: new Histogram({
      name: 'berth_http_request_duration_seconds',
      help: 'Time from request head to the end of the response',
      labelNames: ['listener', 'service'] as const,
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    httpRejected: new Counter({
      name: 'berth_http_rejected_total',
      help: 'Requests refused before routing: bad_request (400), header_too_large (431), timeout (408), method (405); h2_limit: an HTTP/2 connection closed for breaking a limit (resets, PING or SETTINGS floods, no SETTINGS acknowledgement)',
      labelNames: ['listener', 'reason'] as const,
      registers,
    }),
    httpUpgrades: new Counter({ name: 'berth_http_upgrades_total', help: 'Upgrade requests (WebSocket and others) tunnelled to an endpoint', labelNames: ['listener', 'service'] as const, registers }),
    tlsHandshakes: new Counter({
      name: 'berth_tls_handshakes_total',
      help: 'TLS handshakes on listeners by result (ok, no_cert, bad_cert, not_allowed, protocol)',
      labelNames: ['listener', 'result'] as const,
      registers,
    }),
    tlsExpiry: new Gauge({ name: 'berth_tls_cert_expiry_seconds', help: 'Seconds until the first of a listener\'s certificates expires (negative: expired)', labelNames: ['listener'] as const, registers, collect, aggregator: 'min' }),
    tlsReloads: new Counter({ name: 'berth_tls_reloads_total', help: 'Certificate material (re)loads by result; an error keeps the old material', labelNames: ['listener', 'result'] as const, registers }),
    discoveryEvents: new Counter({ name: 'berth_discovery_events_total', help: 'Engine events handled', labelNames: ['provider', 'action'] as const, registers }),
    discoveryErrors: new Counter({ name: 'berth_discovery_errors_total', help: 'Discovery failures: engine lost, bad labels', labelNames: ['provider'] as const, registers }),
    discoveryConnected: new Gauge({ name: 'berth_discovery_connected', help: '1 while the engine event stream is connected', labelNames: ['provider'] as const, registers, aggregator: 'max' }),
    discoveryLastSync: new Gauge({
      name: 'berth_discovery_last_sync_timestamp_seconds',
      help: 'Unix time of the last full resync',
      labelNames: ['provider'] as const,
      registers,
      aggregator: 'max',
    }),
    localErrors: new Counter({
      name: 'berth_local_errors_total',
      help: 'This process ran out of a resource (EMFILE, ENFILE, ENOBUFS, ENOMEM ...) accepting a client or connecting to an endpoint; no endpoint is blamed',
      labelNames: ['where', 'code'] as const,
      registers,
    }),
    udpSessionsActive: new Gauge({ name: 'berth_udp_sessions_active', help: 'UDP sessions open now', labelNames: ['listener'] as const, registers }),
    udpSessions: new Counter({ name: 'berth_udp_sessions_total', help: 'UDP sessions opened', labelNames: ['listener'] as const, registers }),
    udpDatagrams: new Counter({ name: 'berth_udp_datagrams_total', help: 'Datagrams relayed: in (client to endpoint), out (endpoint to client)', labelNames: ['listener', 'direction'] as const, registers }),
    registryConnected: new Gauge({ name: 'berth_registry_connected', help: '1 while the registry (etcd) answers this berth', labelNames: ['registry'] as const, registers }),
    registryPublished: new Gauge({ name: 'berth_registry_published_endpoints', help: 'Endpoints of this host written to the registry', labelNames: ['registry'] as const, registers }),
    registryRemote: new Gauge({ name: 'berth_registry_remote_endpoints', help: 'Endpoints of other hosts read from the registry, by host', labelNames: ['registry', 'host'] as const, registers }),
    registryStale: new Gauge({
      name: 'berth_registry_stale_seconds',
      help: 'How long the other hosts\' endpoints have been served from the last known state (the registry lost); 0 while current',
      labelNames: ['registry'] as const,
      registers,
    }),
    dnsQueries: new Counter({ name: 'berth_dns_queries_total', help: 'Queries to the DNS interface by type asked and response code', labelNames: ['type', 'rcode'] as const, registers }),
    udpDropped: new Counter({
      name: 'berth_udp_dropped_total',
      help: 'Datagrams dropped: sessions_full (maxSessions reached), no_endpoint, oversize, error',
      labelNames: ['listener', 'reason'] as const,
      registers,
    }),
    preread: new Counter({
      name: 'berth_preread_total',
      help: 'tcp listeners that route by SNI: what the read of the ClientHello came to (routed, fallback, no_sni, no_route, timeout, malformed, too_large)',
      labelNames: ['listener', 'result'] as const,
      registers,
    }),
    proxyProtocol: new Counter({
      name: 'berth_proxy_protocol_total',
      help: 'PROXY protocol headers from front balancers: ok, or why the connection was refused (missing, malformed, untrusted, timeout)',
      labelNames: ['listener', 'result'] as const,
      registers,
    }),
    configReloads: new Counter({ name: 'berth_config_reloads_total', help: 'Config reloads by result', labelNames: ['result'] as const, registers }),
  };
}

export type Metrics = ReturnType<typeof declareMetrics>;
