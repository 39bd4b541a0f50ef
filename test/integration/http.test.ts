import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { freePort, httpGet, startBerth, until } from '../helpers/net.js';
import { recordingBackend, request } from '../helpers/http.js';

const GB = 1024 * 1024 * 1024;

/** Peak resident set of a process (VmHWM), bytes. */
function peakRss(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) * 1024;
}

t.test('1 GB upload and 1 GB download through berth with bounded memory', async (t) => {
  const chunk = Buffer.alloc(1024 * 1024, 7);
  const be = http.createServer((req, res) => {
    if (req.method === 'POST') {
      let n = 0;
      req.on('data', (c: Buffer) => (n += c.length));
      req.on('end', () => res.end(String(n)));
      return;
    }
    res.writeHead(200, { 'content-length': String(GB) });
    let sent = 0;
    const pump = () => {
      while (sent < GB) {
        sent += chunk.length;
        if (!res.write(chunk)) {
          res.once('drain', pump);
          return;
        }
      }
      res.end();
    };
    pump();
  });
  await new Promise<void>((r) => be.listen(0, '127.0.0.1', r));
  const bePort = (be.address() as { port: number }).port;
  const berth = await startBerth(['--listen', '127.0.0.1:0', '--mode', 'http', '--backend', `127.0.0.1:${bePort}`, '--admin', 'off']);
  t.teardown(() => {
    berth.kill('SIGKILL');
    be.close();
  });
  const baseline = peakRss(berth.proc.pid!);
  const up = await new Promise<string>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: berth.port, method: 'POST', agent: false, headers: { 'content-length': String(GB) } }, (res) => {
      let b = '';
      res.on('data', (d: Buffer) => (b += d));
      res.on('end', () => resolve(b));
    });
    req.on('error', reject);
    let sent = 0;
    const pump = () => {
      while (sent < GB) {
        sent += chunk.length;
        if (!req.write(chunk)) {
          req.once('drain', pump);
          return;
        }
      }
      req.end();
    };
    pump();
  });
  t.equal(Number(up), GB, 'endpoint received every byte of the upload');
  const down = await new Promise<number>((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: berth.port, agent: false }, (res) => {
        let n = 0;
        res.on('data', (d: Buffer) => (n += d.length));
        res.on('end', () => resolve(n));
      })
      .on('error', reject);
  });
  t.equal(down, GB, 'client received every byte of the download');
  const peak = peakRss(berth.proc.pid!);
  t.comment(`berth peak RSS ${(peak / 1048576).toFixed(0)} MiB (baseline ${(baseline / 1048576).toFixed(0)} MiB) for 2 GiB proxied`);
  t.ok(peak - baseline < 160 * 1024 * 1024, 'memory stays bounded: backpressure, no buffering of bodies');
});

t.test('--workers 2 in http mode: both serve, metrics are summed, access log lines per request', async (t) => {
  const be = await recordingBackend();
  const adminPort = await freePort();
  const dir = tmpdir();
  const cfg = join(dir, `berth-http-${process.pid}.yaml`);
  writeFileSync(
    cfg,
    `listeners:
  - name: web
    bind: 127.0.0.1:0
    mode: http
    service: web
    http: { accessLog: true }
services:
  web: { endpoints: ["127.0.0.1:${be.port}"] }
admin: { bind: 127.0.0.1:${adminPort} }
`,
  );
  const berth = await startBerth(['-c', cfg, '--workers', '2']);
  t.teardown(() => {
    berth.kill('SIGKILL');
    be.close();
  });
  await until(() => berth.logs.filter((l) => l.msg === 'listening').length === 2, 5000, 'both workers listening');
  const N = 300;
  const pids = new Set<number>();
  // New connections each time, so the kernel spreads them over both workers.
  await Promise.all(
    Array.from({ length: 10 }, async (_x, w) => {
      for (let i = w; i < N; i += 10) {
        const r = await request(berth.port, { path: `/r${i}` });
        if (r.status !== 200) throw new Error(`status ${r.status}`);
      }
    }),
  );
  t.equal(be.seen.length, N);
  await until(() => berth.logs.filter((l) => l.msg === 'request').length === N, 5000, 'one access log line per request');
  for (const l of berth.logs.filter((x) => x.msg === 'request')) pids.add(Number(l['pid']));
  t.equal(pids.size, 2, 'both workers served requests');
  const line = berth.logs.find((l) => l.msg === 'request')!;
  t.match(line, { method: 'GET', status: 200, service: 'web', client: '127.0.0.1', endpoint: `127.0.0.1:${be.port}`, attempts: 1 });
  t.type(line['ms'], 'number');
  const metrics = (await httpGet(`http://127.0.0.1:${adminPort}/metrics`)).body;
  t.match(metrics, new RegExp(`berth_http_requests_total\\{listener="web",service="web",method="GET",code="2xx",version="1.1"\\} ${N}\\n`), 'request counts summed over workers');
  t.match(metrics, new RegExp(`berth_http_request_duration_seconds_count\\{listener="web",service="web"\\} ${N}\\n`));
  berth.kill('SIGTERM');
  t.equal(await berth.exited, 0);
});

t.test('SIGTERM: idle keep-alive clients are closed, a request in flight finishes', async (t) => {
  const be = await recordingBackend((req, res) => {
    if (req.url === '/slow') {
      setTimeout(() => res.end('slow done'), 500);
      return true;
    }
    return false;
  });
  const berth = await startBerth(['--listen', '127.0.0.1:0', '--mode', 'http', '--backend', `127.0.0.1:${be.port}`, '--admin', 'off']);
  t.teardown(() => {
    berth.kill('SIGKILL');
    be.close();
  });
  const agent = new http.Agent({ keepAlive: true });
  t.teardown(() => agent.destroy());
  t.equal((await request(berth.port, { agent })).status, 200);
  const slow = request(berth.port, { path: '/slow' });
  await until(() => be.seen.some((s) => s.url === '/slow'), 2000, 'slow request at the endpoint');
  const t0 = Date.now();
  berth.kill('SIGTERM');
  const r = await slow;
  t.equal(r.status, 200);
  t.equal(r.body, 'slow done');
  t.equal(await berth.exited, 0);
  t.ok(Date.now() - t0 < 5000, 'did not wait for the idle keep-alive connection');
});
