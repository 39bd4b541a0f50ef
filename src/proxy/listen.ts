import type net from 'node:net';
import { BerthError } from '../core/errors.js';
import { formatHostPort, type HostPort } from '../core/types.js';
import type { Logger } from '../log.js';
import { isLocalError } from './connect.js';

/**
 * Binds a listener's server (`reusePort`: a socket of its own, see cluster/reuse-port.ts). Rejects with BERTH_ERR_LISTEN naming the listener and
 * address when it cannot be bound; later server errors are logged.
 */
export function listenOn(server: net.Server, name: string, bind: HostPort, log: Logger, onLocalError?: (err: NodeJS.ErrnoException) => void, reusePort = false): Promise<net.AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      reject(new BerthError('BERTH_ERR_LISTEN', `listener ${name}: cannot bind ${formatHostPort(bind)}: ${err.code ?? err.message}`, { cause: err }));
    };
    server.once('error', onError);
    // A socket of its own in a cluster worker (SO_REUSEPORT; `exclusive` keeps node:cluster
    // from sharing the primary's handle instead). Port 0 would give each worker another port.
    const own = reusePort && bind.port !== 0;
    const options: net.ListenOptions & { reusePort?: boolean } = own ? { host: bind.host, port: bind.port, backlog: 4096, reusePort: true, exclusive: true } : { host: bind.host, port: bind.port, backlog: 4096 };
    server.listen(options, () => {
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
