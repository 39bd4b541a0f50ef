import type net from 'node:net';

/**
 * What the runtime needs of a listener, whatever its mode: one interface, so the
 * composition root never tells tcp and http listeners apart by class.
 */
export interface Listener<S extends { readonly name: string; readonly service?: string | undefined }> {
  readonly mode: 'tcp' | 'http' | 'udp';
  readonly settings: S;
  /** Binds. Rejects with BERTH_ERR_LISTEN when the address cannot be bound. */
  listen(): Promise<net.AddressInfo>;
  /** Reload: new settings for new connections (the socket and its kind stay). */
  configure(settings: S): void;
  /** Stops accepting; open connections go on. */
  stopAccepting(): void;
  /** Closes every open connection now. */
  destroyAll(): void;
  /** Open client connections. */
  readonly active: number;
  readonly address: net.AddressInfo;
  /** Mode-specific facts for the "listening" log line. */
  describe(): Record<string, unknown>;
}
