/**
 * "Hosts" for the multi-host tests: each a berth on a loopback address of its own
 * (127.0.0.2, 127.0.0.3 ...) with one static endpoint that answers its name and
 * closes, registered in etcd under its host id.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { freePort, httpGet, listenerPort, startBerth, tcpServer, type BerthProcess } from './net.js';

const dir = mkdtempSync(join(tmpdir(), 'berth-etcd-hosts-'));

export interface EtcdHost {
  readonly id: string;
  readonly addr: string;
  readonly berth: BerthProcess;
  readonly admin: number;
  /** Its static endpoint (on 127.0.0.1); closed at teardown. */
  readonly endpoint: net.Server & { port: number };
  /** The port of its listener `web` (on `addr`). */
  readonly port: number;
  /** Its endpoint's id in other hosts' pools. */
  readonly remoteId: string;
}

export interface EtcdHostOptions {
  /** etcd client URLs, in the order berth tries them. */
  readonly etcd: readonly string[];
  readonly id: string;
  readonly addr: string;
  /** What its endpoint answers. */
  readonly name: string;
  /** discovery.etcd.progressInterval (match the server's progress-notify interval). */
  readonly progressInterval?: string;
  /** More berth arguments (--workers 2 ...). */
  readonly extra?: readonly string[];
}

export async function etcdHost(t: Test, o: EtcdHostOptions): Promise<EtcdHost> {
  const ep = await tcpServer((s) => s.end(o.name));
  const admin = await freePort();
  const file = join(dir, `${o.id}-${admin}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      listeners: [{ name: 'web', bind: `${o.addr}:0`, service: 'web' }],
      services: { web: { endpoints: [`127.0.0.1:${ep.port}`] } },
      discovery: { etcd: { endpoints: o.etcd, host: o.id, ttl: '2s', ...(o.progressInterval !== undefined ? { progressInterval: o.progressInterval } : {}) } },
      admin: { bind: `127.0.0.1:${admin}` },
    }),
  );
  const berth = await startBerth(['-c', file, ...(o.extra ?? [])]);
  t.teardown(() => {
    berth.kill('SIGKILL');
    ep.close();
  });
  return { id: o.id, addr: o.addr, berth, admin, endpoint: ep, port: listenerPort(berth, 'web'), remoteId: `127.0.0.1:${ep.port}@${o.id}` };
}

/** What one connection through `port` on `addr` answers ('' for a failed or empty one; one silent for 3 s is given up). */
export function ask(addr: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, addr);
    let out = '';
    s.setTimeout(3000, () => s.destroy());
    s.setEncoding('utf8');
    s.on('data', (d: string) => (out += d));
    s.on('close', () => resolve(out));
    s.on('error', () => resolve(''));
  });
}

/** The answers of `n` connections through the host's listener, sorted, without repeats. */
export async function answers(h: EtcdHost, n = 12): Promise<string[]> {
  const out = new Set<string>();
  for (let i = 0; i < n; i++) out.add(await ask(h.addr, h.port));
  return [...out].sort();
}

/** Endpoint ids of service web in the host's pool (its admin API). */
export async function pool(h: EtcdHost): Promise<string[]> {
  const body = JSON.parse((await httpGet(`http://127.0.0.1:${h.admin}/api/v1/services`)).body) as { services: { name: string; endpoints: { id: string }[] }[] };
  return body.services
    .filter((s) => s.name === 'web')
    .flatMap((s) => s.endpoints.map((e) => e.id))
    .sort();
}
