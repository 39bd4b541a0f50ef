/**
 * Whether --workers gives each worker a listening socket of its own (SO_REUSEPORT:
 * the kernel spreads new connections over the workers' sockets, so they do not
 * all wake on one) or keeps one socket shared by all (node:cluster's handle).
 *
 * The catch with per-worker sockets: a worker that dies takes the connections
 * still waiting in its accept queue with it (those clients are reset), unless the
 * kernel hands them to the other sockets (net.ipv4.tcp_migrate_req = 1, Linux 5.14+).
 * With one shared socket a dying worker loses only what it had accepted. So "auto"
 * takes per-worker sockets only where that migration is on; "on" takes them anyway.
 * Listeners on port 0 always share (each socket would get a port of its own).
 */
import { readFileSync } from 'node:fs';
import { nodeHasReusePort } from '../core/node-version.js';

export type ReusePortMode = 'auto' | 'on' | 'off';

export interface ReusePortFacts {
  /** process.versions.node */
  readonly node: string;
  readonly platform: string;
  /** The contents of /proc/sys/net/ipv4/tcp_migrate_req, or null where it cannot be read. */
  readonly migrateReq: string | null;
}

export interface ReusePortDecision {
  readonly perWorker: boolean;
  /** What the log line says: why (not), and what is missing. */
  readonly why: string;
  /** The user asked for it and it cannot be had, or it is had at a cost: worth a warning. */
  readonly warn: boolean;
}

export { nodeHasReusePort };

export function decideReusePort(mode: ReusePortMode, f: ReusePortFacts): ReusePortDecision {
  if (mode === 'off') return { perWorker: false, why: '--reuse-port off', warn: false };
  if (!nodeHasReusePort(f.node)) return { perWorker: false, why: `a socket per worker needs node 22.12 or later (this is ${f.node})`, warn: mode === 'on' };
  if (f.platform !== 'linux') return { perWorker: false, why: `a socket per worker is used on Linux only (this is ${f.platform})`, warn: mode === 'on' };
  const migrates = f.migrateReq?.trim() === '1';
  if (mode === 'on') {
    return migrates
      ? { perWorker: true, why: '--reuse-port on; net.ipv4.tcp_migrate_req is 1', warn: false }
      : { perWorker: true, why: '--reuse-port on; net.ipv4.tcp_migrate_req is not 1: a worker that dies resets the connections waiting in its accept queue', warn: true };
  }
  return migrates
    ? { perWorker: true, why: 'net.ipv4.tcp_migrate_req is 1: a dying worker\'s waiting connections go to the others', warn: false }
    : { perWorker: false, why: 'net.ipv4.tcp_migrate_req is not 1, so a worker that died would reset the connections waiting in its accept queue; set it to 1 (sysctl) or use --reuse-port on', warn: false };
}

/** The facts of this process and machine. */
export function reusePortFacts(): ReusePortFacts {
  let migrateReq: string | null;
  try {
    migrateReq = readFileSync('/proc/sys/net/ipv4/tcp_migrate_req', 'utf8');
  } catch {
    migrateReq = null;
  }
  return { node: process.versions.node, platform: process.platform, migrateReq };
}
