import net from 'node:net';

/** Opens a TCP connection to an endpoint. Injectable so tests can simulate failures. */
export type ConnectFn = (host: string, port: number) => net.Socket;

export const tcpConnect: ConnectFn = (host, port) => net.connect({ host, port, allowHalfOpen: true, noDelay: true });

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
