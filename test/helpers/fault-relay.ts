/**
 * A TCP relay on 127.0.0.1:<port 0> in front of `target`, for partition tests: a
 * peer that reaches a server only through it can be cut off or black-holed and
 * let back, while every other peer reaches the server directly.
 *
 * - `cut()`: every open connection reset (both sides), new ones reset as they
 *   are accepted (the client sees ECONNRESET at once).
 * - `blackhole()`: connections stay open and new ones are accepted, but every
 *   byte either way is dropped: requests hang until the client gives up.
 * - `restore()`: bytes flow again. A connection that lost bytes in a black hole
 *   is reset then (a stream with a hole cannot go on; a real network would have
 *   retransmitted): the client opens a new one, as it would after its timeout.
 *
 * Closed at teardown with every connection. Pure node:net.
 */
import { once } from 'node:events';
import net from 'node:net';
import type { Test } from 'tap';

export type RelayMode = 'open' | 'cut' | 'blackhole';

export interface FaultRelay {
  /** Where the relayed peer connects: `127.0.0.1:<port>`. */
  readonly port: number;
  readonly url: string;
  readonly mode: RelayMode;
  /** Connections open now (client side). */
  readonly open: number;
  /** Bytes dropped by black holes so far. */
  readonly dropped: number;
  cut(): void;
  blackhole(): void;
  restore(): void;
  close(): Promise<void>;
}

interface Pair {
  readonly client: net.Socket;
  readonly upstream: net.Socket;
  /** Lost bytes in a black hole. */
  holed: boolean;
}

export async function faultRelay(t: Test, target: { host?: string; port: number }): Promise<FaultRelay> {
  const pairs = new Set<Pair>();
  let mode: RelayMode = 'open';
  let dropped = 0;

  const reset = (p: Pair) => {
    pairs.delete(p);
    p.client.resetAndDestroy();
    p.upstream.destroy();
  };
  /** `from`'s bytes to `to`, unless the link is black-holed. */
  const pipe = (p: Pair, from: net.Socket, to: net.Socket) => {
    from.on('data', (d: Buffer) => {
      if (mode === 'open') {
        if (!to.destroyed) to.write(d);
        return;
      }
      dropped += d.length;
      p.holed = true;
    });
    from.on('end', () => {
      if (mode === 'open') to.end();
      else p.holed = true;
    });
  };

  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    client.on('error', () => {});
    if (mode === 'cut') {
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect({ host: target.host ?? '127.0.0.1', port: target.port, allowHalfOpen: true });
    upstream.on('error', () => {});
    const p: Pair = { client, upstream, holed: false };
    pairs.add(p);
    pipe(p, client, upstream);
    pipe(p, upstream, client);
    client.on('close', () => {
      if (pairs.delete(p)) upstream.destroy();
    });
    upstream.on('close', (hadError) => {
      if (!pairs.has(p)) return;
      // In a black hole the client must not hear of it: reset when restored.
      if (mode === 'blackhole') {
        p.holed = true;
        return;
      }
      if (!hadError) {
        client.end();
        return;
      }
      pairs.delete(p);
      client.resetAndDestroy();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;

  const relay: FaultRelay = {
    port,
    url: `http://127.0.0.1:${port}`,
    get mode() {
      return mode;
    },
    get open() {
      return pairs.size;
    },
    get dropped() {
      return dropped;
    },
    cut() {
      mode = 'cut';
      for (const p of [...pairs]) reset(p);
    },
    blackhole() {
      mode = 'blackhole';
    },
    restore() {
      mode = 'open';
      for (const p of [...pairs]) if (p.holed) reset(p);
    },
    async close() {
      mode = 'cut';
      for (const p of [...pairs]) reset(p);
      if (server.listening) await new Promise((r) => server.close(r));
    },
  };
  t.teardown(() => relay.close());
  return relay;
}
