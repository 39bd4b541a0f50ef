import type net from 'node:net';
import { BerthError } from '../core/errors.js';
import { formatHostPort, type HostPort } from '../core/types.js';
import type { Logger } from '../log.js';

/**
 * Binds a listener's server. Rejects with BERTH_ERR_LISTEN naming the listener and
 * address when it cannot be bound; later server errors are logged.
 */
export function listenOn(server: net.Server, name: string, bind: HostPort, log: Logger): Promise<net.AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      reject(new BerthError('BERTH_ERR_LISTEN', `listener ${name}: cannot bind ${formatHostPort(bind)}: ${err.code ?? err.message}`, { cause: err }));
    };
    server.once('error', onError);
    server.listen({ host: bind.host, port: bind.port, backlog: 4096 }, () => {
      server.off('error', onError);
      server.on('error', (err) => log.error({ err, listener: name }, 'listener error'));
      resolve(server.address() as net.AddressInfo);
    });
  });
}
