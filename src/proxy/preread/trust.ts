/**
 * Who a listener believes: the peers (addresses, CIDRs) whose PROXY header or
 * X-Forwarded-* it takes, and a limit on how often one peer's violations are logged.
 */
import net from 'node:net';

/** "10.0.0.0/8", "192.0.2.1", "2001:db8::/32" → a BlockList that `check`s them. */
export function trustList(entries: readonly string[]): net.BlockList {
  const b = new net.BlockList();
  for (const entry of entries) {
    const [addr, bits] = entry.split('/') as [string, string | undefined];
    const type = net.isIPv6(addr) ? 'ipv6' : 'ipv4';
    if (bits === undefined) b.addAddress(addr, type);
    else b.addSubnet(addr, Number(bits), type);
  }
  return b;
}

/** "::ffff:10.0.0.1" → "10.0.0.1" (an IPv4 client on a dual-stack socket); undefined → "unknown". */
export function plainAddress(addr: string | undefined): string {
  if (addr === undefined) return 'unknown';
  return addr.startsWith('::ffff:') && net.isIPv4(addr.slice(7)) ? addr.slice(7) : addr;
}

/** At most one log line per peer per `every` ms; the table is bounded (a flood of peers forgets the oldest). */
export class PeerLogLimit {
  private readonly last = new Map<string, number>();

  constructor(
    private readonly every: number,
    private readonly max = 1024,
  ) {}

  /** Whether a line about `peer` may be logged now (ms on the caller's clock). */
  take(peer: string, now: number): boolean {
    const at = this.last.get(peer);
    if (at !== undefined && now - at < this.every) return false;
    this.last.delete(peer);
    this.last.set(peer, now);
    if (this.last.size > this.max) this.last.delete(this.last.keys().next().value!);
    return true;
  }
}
