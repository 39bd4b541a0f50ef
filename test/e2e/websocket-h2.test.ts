/**
 * WebSockets over HTTP/2 (RFC 8441) with a real browser: headless Chromium (Debian's)
 * loads a page through a running berth (the built binary) over TLS with ALPN h2, and
 * the page's WebSocket rides that HTTP/2 connection as an extended CONNECT (Chromium
 * does so once berth's SETTINGS allow it). The endpoint is an HTTP/1.1 WebSocket
 * server; berth turns the CONNECT into its GET Upgrade and the 101 into the 200.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { createCa, issueCert } from '../../src/tls/certs.js';
import { listenerPort, startBerth, until } from '../helpers/net.js';

if (spawnSync('which', ['chromium']).status !== 0) throw new Error('chromium is required (Debian: chromium); .ci/run installs it');

const dir = mkdtempSync(join(tmpdir(), 'berth-ws-h2-e2e-'));

/** One text frame from the server (unmasked, RFC 6455 §5.2), short payloads only. */
const textFrame = (s: string): Buffer => Buffer.concat([Buffer.from([0x81, Buffer.byteLength(s)]), Buffer.from(s)]);

/** The text of a client's (masked) short frame, or null if `b` does not hold a whole one. */
function clientText(b: Buffer): string | null {
  if (b.length < 6) return null;
  const len = b[1]! & 0x7f;
  if (len > 125 || b.length < 6 + len) return null;
  const mask = b.subarray(2, 6);
  const out = Buffer.alloc(len);
  for (let i = 0; i < len; i++) out[i] = b[6 + i]! ^ mask[i % 4]!;
  return out.toString();
}

t.test('Chromium: a page over h2 through berth opens a WebSocket over the same HTTP/2 connection (extended CONNECT) to an HTTP/1.1 endpoint, both ways', async (t) => {
  let port = 0;
  const upgrades: { version: string; key: string | undefined }[] = [];
  /** What the page's WebSocket sent, as the endpoint read it. */
  const texts: string[] = [];
  const page = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(
      `<!doctype html><html><body><script>
const seen = [];
const w = new WebSocket('wss://localhost:${port}/chat');
w.onopen = () => w.send('hi from chromium');
w.onmessage = (e) => { seen.push(e.data); if (e.data.startsWith('echo:')) w.send('seen: ' + seen.join(' | ')); };
</script></body></html>`,
    );
  });
  page.on('upgrade', (req: http.IncomingMessage, socket: Socket) => {
    const key = req.headers['sec-websocket-key'];
    upgrades.push({ version: req.httpVersion, key });
    const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    socket.write(textFrame('hello from the endpoint'));
    let buf = Buffer.alloc(0);
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const text = clientText(buf);
      if (text !== null) {
        texts.push(text);
        if (texts.length === 1) socket.write(textFrame(`echo:${text}`));
        buf = Buffer.alloc(0);
      }
    });
    socket.on('error', () => {});
  });
  await new Promise<void>((r) => page.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    page.closeAllConnections();
    page.close();
  });
  await createCa({ out: dir, cn: 'e2e ca', days: 2, bits: 2048 });
  await issueCert({ ca: dir, out: dir, name: 'srv', sans: [{ type: 'DNS', value: 'localhost' }], usage: 'server', days: 2, bits: 2048 });
  const file = join(dir, 'berth.json');
  writeFileSync(
    file,
    JSON.stringify({
      listeners: [{ name: 'secure', bind: '127.0.0.1:0', mode: 'http', service: 'web', http: { accessLog: true }, tls: { cert: join(dir, 'srv.pem'), key: join(dir, 'srv-key.pem') } }],
      services: { web: { endpoints: [`127.0.0.1:${(page.address() as AddressInfo).port}`] } },
      admin: { bind: 'off' },
    }),
  );
  const berth = await startBerth(['-c', file]);
  t.teardown(() => berth.kill('SIGKILL'));
  port = listenerPort(berth, 'secure');
  const profile = mkdtempSync(join(tmpdir(), 'berth-chromium-'));
  const flags = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--ignore-certificate-errors', `--user-data-dir=${profile}`];
  // The page reports what it read back over its WebSocket; the browser runs until
  // then (no timing guess about when a page is done) and is killed with its group.
  const browser = spawn('chromium', [...flags, `https://localhost:${port}/`], { detached: true, stdio: 'ignore' });
  t.teardown(() => {
    try {
      process.kill(-browser.pid!, 'SIGKILL');
    } catch {
      // gone already
    }
  });
  await until(() => texts.length >= 2, 60_000, 'the page\'s report over its WebSocket');
  t.same(texts, ['hi from chromium', 'seen: hello from the endpoint | echo:hi from chromium'], 'the WebSocket carried messages each way');
  t.equal(upgrades.length, 1);
  t.equal(upgrades[0]!.version, '1.1', 'the endpoint had an HTTP/1.1 handshake');
  await until(() => berth.logs.some((l) => l.msg === 'request' && l['method'] === 'CONNECT'), 10_000, 'the access log line');
  const lines = berth.logs.filter((l) => l.msg === 'request');
  t.same(
    lines.map((l) => [l['method'], l['path'], l['version'], l['status']]).filter(([m]) => m === 'CONNECT'),
    [['CONNECT', '/chat', '2', 200]],
    'the WebSocket came over HTTP/2 (an extended CONNECT), answered 200',
  );
  t.ok(
    lines.some((l) => l['method'] === 'GET' && l['path'] === '/' && l['version'] === '2'),
    'the page came over HTTP/2 too',
  );
});
