import { readFileSync } from 'node:fs';
import net from 'node:net';
import t from 'tap';
import { startBerth, tcpServer } from '../helpers/net.js';

/** Resident set size of a process, bytes (Linux /proc). */
function rss(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

const TOTAL = 1024 * 1024 * 1024;

t.test('1 GB to a slow client: bytes all arrive, berth RSS stays bounded', async (t) => {
  // The endpoint streams 1 GB as fast as backpressure lets it.
  const chunk = Buffer.alloc(1024 * 1024, 0x61);
  const server = await tcpServer((s) => {
    let sent = 0;
    const pump = () => {
      while (sent < TOTAL) {
        sent += chunk.length;
        if (!s.write(chunk)) return;
      }
      s.end();
    };
    s.on('drain', pump);
    pump();
  });
  t.teardown(() => server.close());
  const berth = await startBerth(['--listen', '127.0.0.1:0', '--backend', `127.0.0.1:${server.port}`, '--admin', 'off']);
  t.teardown(() => berth.kill('SIGKILL'));
  const pid = berth.proc.pid!;
  const baseline = rss(pid);
  let peak = baseline;
  const sampler = setInterval(() => (peak = Math.max(peak, rss(pid))), 50);
  t.teardown(() => clearInterval(sampler));

  const received = await new Promise<number>((resolve, reject) => {
    let got = 0;
    let sinceNap = 0;
    const c = net.connect({ port: berth.port, host: '127.0.0.1' });
    c.on('error', reject);
    // Slow: reads nothing for the first second, then naps 20 ms after every 16 MiB.
    c.pause();
    setTimeout(() => c.resume(), 1000);
    c.on('data', (d: Buffer) => {
      got += d.length;
      sinceNap += d.length;
      if (sinceNap >= 16 * 1024 * 1024) {
        sinceNap = 0;
        c.pause();
        setTimeout(() => c.resume(), 20);
      }
    });
    c.on('end', () => resolve(got));
  });
  clearInterval(sampler);
  t.equal(received, TOTAL, 'every byte of 1 GiB arrived');
  const growth = peak - baseline;
  // Without backpressure berth would hold most of the 1 GiB while the client naps.
  // With it, what remains is garbage awaiting GC: node allocates a buffer per read
  // and V8 collects external memory lazily (its soft limit is 64 MiB), so the
  // bound is that plus headroom, a tenth of the stream.
  t.ok(growth < 96 * 1024 * 1024, `RSS grew ${(growth / 1048576).toFixed(1)} MiB (baseline ${(baseline / 1048576).toFixed(1)} MiB, peak ${(peak / 1048576).toFixed(1)} MiB)`);
  berth.kill('SIGTERM');
  t.equal(await berth.exited, 0);
});
