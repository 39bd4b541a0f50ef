/**
 * Layer 4 through the built binary: a tcp listener that routes TLS by SNI and takes
 * PROXY headers from a trusted front balancer, configured from a file, with and
 * without --workers; the counters on /metrics.
 */
import { writeFileSync, mkdtempSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { freePort, httpGet, listenerPort, startBerth, tcpServer, until } from '../helpers/net.js';
import { captureHello } from '../helpers/tls-hello.js';

async function named(name: string) {
  const got: string[] = [];
  const server = await tcpServer((s) => {
    let buf = '';
    s.on('data', (d: Buffer) => {
      if (buf === '') s.write(name);
      buf += d.toString('latin1');
    });
    s.on('end', () => {
      got.push(buf);
      s.end();
    });
  });
  return { port: server.port, got, close: () => server.close() };
}

/** Sends `bytes`, half-closes, and returns what comes back. */
function exchange(port: number, bytes: Buffer): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let out = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => (out += d));
    s.on('error', () => {});
    s.on('close', () => resolve(out));
    s.on('connect', () => s.end(bytes));
  });
}

for (const workers of [1, 2]) {
  t.test(`SNI routes and PROXY in from a config file (workers: ${workers})`, async (t) => {
    const a = await named('a');
    const b = await named('b');
    const admin = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'berth-l4-'));
    const file = join(dir, 'berth.json');
    writeFileSync(
      file,
      JSON.stringify({
        listeners: [
          {
            name: 'edge',
            bind: '127.0.0.1:0',
            routes: [{ sni: 'a.example.com', service: 'a' }, { service: 'b' }],
            acceptProxy: { trusted: ['127.0.0.1/32'] },
            proxyProtocol: 'v1',
          },
        ],
        services: { a: { endpoints: [`127.0.0.1:${a.port}`] }, b: { endpoints: [`127.0.0.1:${b.port}`] } },
        admin: { bind: `127.0.0.1:${admin}` },
      }),
    );
    const berth = await startBerth(['-c', file, ...(workers > 1 ? ['--workers', String(workers)] : [])]);
    t.teardown(() => {
      berth.kill('SIGKILL');
      a.close();
      b.close();
    });
    await until(() => listenerPort(berth, 'edge') > 0, 10_000);
    const port = listenerPort(berth, 'edge');
    const hello = await captureHello({ servername: 'a.example.com' });
    const pp = Buffer.from('PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n');
    t.equal(await exchange(port, Buffer.concat([pp, hello])), 'a', 'by SNI');
    t.equal(await exchange(port, Buffer.concat([pp, Buffer.from('not tls')])), 'b', 'the catch-all');
    t.equal(await exchange(port, Buffer.from('no header')), '', 'no PROXY header: refused');
    await until(() => a.got.length === 1 && b.got.length === 1);
    t.equal(a.got[0], `PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n${hello.toString('latin1')}`, 'the endpoint got the client named, then the hello as sent');
    t.equal(b.got[0], 'PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\nnot tls');
    await until(async () => /berth_proxy_protocol_total\{listener="edge",result="missing"\} 1/.test((await httpGet(`http://127.0.0.1:${admin}/metrics`)).body), 10_000, 'counters summed');
    const metrics = (await httpGet(`http://127.0.0.1:${admin}/metrics`)).body;
    t.match(metrics, /berth_preread_total\{listener="edge",result="routed"\} 1/);
    t.match(metrics, /berth_preread_total\{listener="edge",result="fallback"\} 1/);
    t.match(metrics, /berth_proxy_protocol_total\{listener="edge",result="ok"\} 2/);
  });
}
