/**
 * A real etcd (Debian's etcd-server, 3.4) for the real-peer tier: one member on
 * loopback ports of its own, data in a temp dir, its own process group killed at
 * teardown (also when the test times out). Progress notices every second, so a
 * silent watch is noticed quickly.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { freePort, httpGet, until } from './net.js';

if (spawnSync('which', ['etcd']).status !== 0) throw new Error('etcd is required (Debian: etcd-server); .ci/run installs it');

export interface EtcdServer {
  readonly url: string;
  readonly port: number;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** A v3 JSON gateway call (keys and values base64). */
  call(path: string, body: unknown): Promise<Record<string, unknown>>;
  /** Every key under `prefix`, decoded. */
  keys(prefix: string): Promise<string[]>;
}

export async function etcdServer(t: Test, port?: number): Promise<EtcdServer> {
  const clientPort = port ?? (await freePort());
  const peerPort = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'berth-etcd-'));
  const url = `http://127.0.0.1:${clientPort}`;
  let proc: ChildProcess | null = null;
  const kill = () => {
    if (proc?.pid !== undefined) {
      try {
        process.kill(-proc.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  };
  t.teardown(kill);
  const call = async (path: string, body: unknown): Promise<Record<string, unknown>> => {
    const r = await fetch(`${url}${path}`, { method: 'POST', body: JSON.stringify(body) });
    return (await r.json()) as Record<string, unknown>;
  };
  const server: EtcdServer = {
    url,
    port: clientPort,
    async start() {
      const p = spawn(
        'etcd',
        [
          '--name', 'default',
          '--data-dir', join(dir, 'data'),
          '--listen-client-urls', url,
          '--advertise-client-urls', url,
          '--listen-peer-urls', `http://127.0.0.1:${peerPort}`,
          '--initial-advertise-peer-urls', `http://127.0.0.1:${peerPort}`,
          '--initial-cluster', `default=http://127.0.0.1:${peerPort}`,
          '--experimental-watch-progress-notify-interval', '1s',
          '--log-level', 'error',
        ],
        { stdio: ['ignore', 'ignore', 'ignore'], detached: true },
      );
      proc = p;
      await until(async () => {
        try {
          return (await httpGet(`${url}/health`)).body.includes('true');
        } catch {
          return false;
        }
      }, 20_000, 'etcd healthy');
    },
    async stop() {
      const p = proc;
      if (p === null) return;
      proc = null;
      const gone = new Promise((r) => p.once('exit', r));
      try {
        process.kill(-p.pid!, 'SIGKILL');
      } catch {
        // gone
      }
      await gone;
    },
    call,
    async keys(prefix: string) {
      const b64 = (s: string) => Buffer.from(s).toString('base64');
      const end = Buffer.from(prefix);
      end[end.length - 1]!++;
      const r = await call('/v3/kv/range', { key: b64(prefix), range_end: end.toString('base64'), keys_only: true });
      return ((r['kvs'] ?? []) as { key: string }[]).map((k) => Buffer.from(k.key, 'base64').toString()).sort();
    },
  };
  return server;
}
