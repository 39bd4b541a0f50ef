import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { Resolver } from 'node:dns/promises';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { freePort, until } from './net.js';

// A real DNS server on loopback: dnsmasq (Debian: dnsmasq-base), rereading its hosts file on SIGHUP.
if (spawnSync('which', ['dnsmasq']).status !== 0) throw new Error('dnsmasq is required (Debian: dnsmasq-base); .ci/run installs it');

const dir = mkdtempSync(join(tmpdir(), 'berth-dns-'));
chmodSync(dir, 0o755);

/** A dnsmasq answering from `hosts`, on a free port or on `port` (to bring one back where it was). */
export async function dnsmasq(t: Test, hosts: string, conf = '', at?: number): Promise<{ port: number; proc: ChildProcess; hostsFile: string }> {
  const port = at ?? (await freePort());
  const hostsFile = join(dir, `hosts-${port}`);
  const confFile = join(dir, `conf-${port}`);
  writeFileSync(hostsFile, hosts, { mode: 0o644 });
  // Authoritative for svc.test: unknown names get NXDOMAIN (no upstream to ask).
  writeFileSync(confFile, `local=/svc.test/\n${conf}\n`, { mode: 0o644 });
  const proc = spawn('dnsmasq', ['--keep-in-foreground', `--port=${port}`, '--listen-address=127.0.0.1', '--bind-interfaces', '--no-resolv', '--no-hosts', `--addn-hosts=${hostsFile}`, `--conf-file=${confFile}`, '--local-ttl=1', '--pid-file=', '--user=root'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d));
  t.teardown(() => proc.kill('SIGKILL'));
  // Up once it answers (NXDOMAIN is an answer; ECONNREFUSED is not).
  const r = new Resolver({ timeout: 200, tries: 1 });
  r.setServers([`127.0.0.1:${port}`]);
  await until(
    () =>
      r.resolve4('probe.svc.test').then(
        () => true,
        (e: NodeJS.ErrnoException) => e.code === 'ENOTFOUND',
      ),
    5000,
    `dnsmasq up ${err}`,
    50,
  );
  return { port, proc, hostsFile };
}

