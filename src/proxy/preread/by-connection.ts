/**
 * What a PROXY header said about a connection, found again from any socket over
 * that TCP connection. In front of TLS termination the header is read on the raw
 * socket, which then goes to node's TLS server; the TLS socket it makes reports the
 * same four addresses (documented socket properties), and an open TCP connection's
 * 4-tuple is unique, so the tuple is the key. An entry lives while the raw socket
 * is open.
 */
import type net from 'node:net';

function tupleOf(s: net.Socket): string | undefined {
  const { remoteAddress, remotePort, localAddress, localPort } = s;
  if (remoteAddress === undefined || localAddress === undefined) return undefined;
  return `${localAddress} ${localPort} ${remoteAddress} ${remotePort}`;
}

export class ByConnection<T> {
  private readonly entries = new Map<string, T>();

  /** Remembers `value` for `raw`'s connection until `raw` closes; false when the connection is already gone. */
  set(raw: net.Socket, value: T): boolean {
    const key = tupleOf(raw);
    if (key === undefined) return false;
    this.entries.set(key, value);
    raw.once('close', () => {
      if (this.entries.get(key) === value) this.entries.delete(key);
    });
    return true;
  }

  /** The value for the connection `s` runs over (the raw socket, or a TLS socket over it). */
  get(s: net.Socket): T | undefined {
    if (this.entries.size === 0) return undefined;
    const key = tupleOf(s);
    return key === undefined ? undefined : this.entries.get(key);
  }

  get size(): number {
    return this.entries.size;
  }
}
