import { pino } from 'pino';
import type { Logger } from '../../src/log.js';
import type { TlsTerminator } from '../../src/core/tls.js';
import { TcpListener, type TcpListenerSettings } from '../../src/proxy/tcp/listener.js';
import { Pool } from '../../src/pool/pool.js';
import type { ConnectFn } from '../../src/proxy/connect.js';
import type { ProxyObserver } from '../../src/core/observer.js';
import { seededRandom } from '../../src/core/random.js';
import type { BalanceAlgorithm, EndpointSpec } from '../../src/core/types.js';

export const silent = pino({ level: 'silent' });

/** Counts observer calls by name (and the retry reasons). */
export function countingObserver(): ProxyObserver & { counts: Record<string, number>; reasons: string[]; bytes: { rx: number; tx: number } } {
  const counts: Record<string, number> = {};
  const reasons: string[] = [];
  const bytes = { rx: 0, tx: 0 };
  const inc = (k: string) => (counts[k] = (counts[k] ?? 0) + 1);
  return {
    counts,
    reasons,
    bytes,
    listenerAccepted: () => inc('accepted'),
    listenerClosed: () => inc('closed'),
    upstreamConnect: (_s, _e, result) => inc(`connect.${result}`),
    upstreamClosed: (_s, _e, rx, tx) => {
      inc('upstreamClosed');
      bytes.rx += rx;
      bytes.tx += tx;
    },
    retry: (_s, reason) => {
      inc('retry');
      reasons.push(reason);
    },
    noEndpoint: () => inc('noEndpoint'),
    httpRequest: (_l, _s, _m, status, _t, version) => {
      inc(`http.${status}`);
      if (version === '2') inc(`h2.${status}`);
    },
    grpcRequest: (_l, _s, status) => inc(`grpc.${status}`),
    httpRejected: (_l, reason) => inc(`rejected.${reason}`),
    httpUpgrade: () => inc('upgrade'),
    tlsHandshake: (_l, result) => inc(`tls.${result}`),
    localError: (where, code) => inc(`local.${where}.${code}`),
    preread: (_l, result) => inc(`preread.${result}`),
    proxyProtocol: (_l, result) => inc(`proxy.${result}`),
    udpSession: (_l, opened) => inc(opened ? 'udp.opened' : 'udp.closed'),
    udpDatagram: (_l, direction) => inc(`udp.${direction}`),
    udpDropped: (_l, reason) => inc(`udp.dropped.${reason}`),
  };
}

export function endpoint(port: number, weight = 1, host = '127.0.0.1'): EndpointSpec {
  return { id: `${host}:${port}`, host, port, weight, source: 'static' };
}

/** A pool with one service "svc" and a tcp listener in front of it on 127.0.0.1:0. */
export async function proxyFor(
  endpoints: EndpointSpec[],
  opts: { balance?: BalanceAlgorithm; settings?: Partial<TcpListenerSettings>; connect?: ConnectFn; observer?: ProxyObserver; replay?: boolean; log?: Logger; tls?: TlsTerminator } = {},
): Promise<{ listener: TcpListener; pool: Pool; port: number; close: () => Promise<void> }> {
  const pool = new Pool({ random: seededRandom(1) });
  pool.configureService('svc', { balance: opts.balance ?? 'round-robin', replay: opts.replay ?? false });
  pool.applySnapshot({ provider: 'static', services: new Map([['svc', endpoints]]) });
  const settings: TcpListenerSettings = { name: 'test', bind: { host: '127.0.0.1', port: 0 }, service: 'svc', timeouts: { connect: 2000, idle: 60_000 }, retries: 2, retryBackoff: 0, ...opts.settings };
  const listener = new TcpListener(settings, { pool, log: opts.log ?? silent, ...(opts.tls ? { tls: opts.tls } : {}), ...(opts.connect ? { connect: opts.connect } : {}), ...(opts.observer ? { observer: opts.observer } : {}) });
  const addr = await listener.listen();
  return {
    listener,
    pool,
    port: addr.port,
    close: async () => {
      listener.stopAccepting();
      listener.destroyAll();
    },
  };
}
