import type net from 'node:net';
import { BerthError } from '../core/errors.js';
import { formatHostPort, type HostPort } from '../core/types.js';
import type { Logger } from '../log.js';
import { isLocalError } from './connect.js';

/**
 * Binds a listener's server. Rejects with BERTH_ERR_LISTEN naming the listener and
 * address when it cannot be bound; later server errors are logged.
 */
export function listenOn(server: net.Server, name: string, bind: HostPort, log: Logger, onLocalError?: (err: NodeJS.ErrnoException) => void): Promise<net.AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      reject(new BerthError('BERTH_ERR_LISTEN', `listener ${name}: cannot bind ${formatHostPort(bind)}: ${err.code ?? err.message}`, { cause: err }));
    };
    server.once('error', onError);
    server.listen({ host: bind.host, port: bind.port, backlog: 4096 }, () => {
      server.off('error', onError);
      // accept() failing for want of descriptors (EMFILE ...) is the caller's to count and log once.
      server.on('error', (err: NodeJS.ErrnoException) => {
        if (onLocalError && isLocalError(err)) onLocalError(err);
        else log.error({ err }, 'listener error');
      });
      resolve(server.address() as net.AddressInfo);
    });
  });
}
