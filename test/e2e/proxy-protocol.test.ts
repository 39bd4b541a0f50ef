/**
 * HAProxy as a real PROXY protocol sender in front of berth (v1 and v2, its LOCAL
 * health checks too): berth takes the client address from the header, for the
 * PROXY header it sends on (tcp) and X-Forwarded-For (http). The client connects
 * from 127.0.0.5, so its address differs from HAProxy's own.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { freePort, httpGet, listenerPort, startBerth, tcpServer, until } from '../helpers/net.js';
import { rawValues, recordingBackend } from '../helpers/http.js';
import { makePki } from '../helpers/pki.js';

const run = promisify(execFile);

/** An endpoint that records what each connection sent, answering "ok" to the first bytes. */
async function recorder() {
  const got: string[] = [];
  const server = await tcpServer((s) => {
    let buf = '';
    const i = got.push('') - 1;
    s.on('data', (d: Buffer) => {
      if (buf === '') s.write('ok');
      buf += d.toString('latin1');
      got[i] = buf;
    });
    s.on('end', () => s.end());
  });
  return { port: server.port, got, close: () => server.close() };
}

/** HAProxy with one tcp frontend per entry, each sending `send-proxy` / `send-proxy-v2` to berth. */
async function haproxy(t: { teardown(fn: () => unknown): void }, fronts: { port: number; to: number; send: 'send-proxy' | 'send-proxy-v2'; check?: boolean }[]) {
  const dir = mkdtempSync(join(tmpdir(), 'berth-haproxy-'));
  let cfg = 'global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n';
  fronts.forEach((f, i) => {
    cfg += `frontend f${i}\n  bind 127.0.0.1:${f.port}\n  default_backend b${i}\nbackend b${i}\n  server s 127.0.0.1:${f.to} ${f.send}${f.check ? ' check inter 200ms check-send-proxy' : ''}\n`;
  });
  const file = join(dir, 'haproxy.cfg');
  writeFileSync(file, cfg);
  const p = spawn('haproxy', ['-f', file, '-db'], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  let stderr = '';
  p.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  t.teardown(() => {
    try {
      process.kill(-p.pid!, 'SIGKILL');
    } catch {
      // gone
    }
  });
  // Listening when a connect succeeds.
  for (const f of fronts) {
    await until(
      () =>
        new Promise<boolean>((resolve) => {
          const c = net.connect(f.port, '127.0.0.1');
          c.on('connect', () => {
            c.destroy();
            resolve(true);
          });
          c.on('error', () => resolve(false));
        }),
      10_000,
      `haproxy listening (${stderr})`,
    );
  }
  return p;
}

/** Connects from 127.0.0.5, sends `bytes`, half-closes, returns the answer. */
function fromFive(port: number, bytes: string): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress: '127.0.0.5' });
    let out = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => (out += d));
    s.on('error', () => {});
    s.on('close', () => resolve(out));
    s.on('connect', () => s.end(bytes));
  });
}

t.test('HAProxy send-proxy and send-proxy-v2 in front of berth tcp and http listeners', async (t) => {
  const be = await recorder();
  const web = await recordingBackend();
  const admin = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'berth-pp-'));
  const file = join(dir, 'berth.json');
  writeFileSync(
    file,
    JSON.stringify({
      listeners: [
        { name: 'tcp', bind: '127.0.0.1:0', service: 'be', acceptProxy: { trusted: ['127.0.0.1/32'] }, proxyProtocol: 'v1' },
        { name: 'web', bind: '127.0.0.1:0', mode: 'http', service: 'web', acceptProxy: { trusted: ['127.0.0.1/32'] } },
      ],
      services: { be: { endpoints: [`127.0.0.1:${be.port}`] }, web: { endpoints: [`127.0.0.1:${web.port}`] } },
      admin: { bind: `127.0.0.1:${admin}` },
    }),
  );
  const berth = await startBerth(['-c', file]);
  t.teardown(() => {
    berth.kill('SIGKILL');
    be.close();
    web.close();
  });
  await until(() => listenerPort(berth, 'web') > 0);
  const [v1, v2, h1, h2] = [await freePort(), await freePort(), await freePort(), await freePort()];
  await haproxy(t, [
    { port: v1, to: listenerPort(berth, 'tcp'), send: 'send-proxy' },
    { port: v2, to: listenerPort(berth, 'tcp'), send: 'send-proxy-v2', check: true },
    { port: h1, to: listenerPort(berth, 'web'), send: 'send-proxy' },
    { port: h2, to: listenerPort(berth, 'web'), send: 'send-proxy-v2' },
  ]);
  t.equal(await fromFive(v1, 'one'), 'ok');
  t.equal(await fromFive(v2, 'two'), 'ok');
  await until(() => be.got.some((g) => g.endsWith('one')) && be.got.some((g) => g.endsWith('two')));
  for (const [what, body] of [['v1', 'one'], ['v2', 'two']] as const) {
    const g = be.got.find((x) => x.endsWith(body))!;
    t.match(g, new RegExp(`^PROXY TCP4 127\\.0\\.0\\.5 127\\.0\\.0\\.1 \\d+ ${what === 'v1' ? v1 : v2}\\r\\n${body}$`), `${what} in: the endpoint is told the client HAProxy saw`);
  }
  for (const port of [h1, h2]) {
    const reply = await fromFive(port, 'GET /who HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    t.match(reply, /^HTTP\/1\.1 200 /);
  }
  t.same(web.seen.map((s) => rawValues(s.headers, 'x-forwarded-for')), [['127.0.0.5'], ['127.0.0.5']], 'X-Forwarded-For names the client, through v1 and v2');
  // HAProxy's health checks with check-send-proxy: a v2 LOCAL header each, taken as ok.
  await until(async () => /berth_proxy_protocol_total\{listener="tcp",result="ok"\} ([3-9]|\d\d)/.test((await httpGet(`http://127.0.0.1:${admin}/metrics`)).body), 10_000, 'LOCAL checks counted ok');
  const metrics = (await httpGet(`http://127.0.0.1:${admin}/metrics`)).body;
  t.notMatch(metrics, /berth_proxy_protocol_total\{listener="(tcp|web)",result="(missing|malformed|timeout|untrusted)"\}/, 'nothing HAProxy sent was refused');
});

t.test('HAProxy send-proxy-v2 in front of a TLS-terminating berth listener: curl over https, X-Forwarded-For names the client', async (t) => {
  const web = await recordingBackend();
  const pki = makePki();
  pki.ca('ca');
  pki.issue('server', { ca: 'ca', san: 'DNS:localhost', usage: 'server' });
  const dir = mkdtempSync(join(tmpdir(), 'berth-pp-tls-'));
  const file = join(dir, 'berth.json');
  writeFileSync(
    file,
    JSON.stringify({
      listeners: [{ name: 'web', bind: '127.0.0.1:0', mode: 'http', service: 'web', tls: { cert: pki.cert('server'), key: pki.key('server') }, acceptProxy: { trusted: ['127.0.0.1/32'] } }],
      services: { web: { endpoints: [`127.0.0.1:${web.port}`] } },
      admin: { bind: 'off' },
    }),
  );
  const berth = await startBerth(['-c', file]);
  t.teardown(() => {
    berth.kill('SIGKILL');
    web.close();
  });
  await until(() => listenerPort(berth, 'web') > 0);
  const front = await freePort();
  await haproxy(t, [{ port: front, to: listenerPort(berth, 'web'), send: 'send-proxy-v2' }]);
  const curl = await run('curl', ['-s', '--interface', '127.0.0.5', '--cacert', pki.cert('ca'), '--resolve', `localhost:${front}:127.0.0.1`, `https://localhost:${front}/who`, '-w', '\n%{http_code}']);
  t.match(curl.stdout, /\n200$/, 'curl got its answer over TLS through HAProxy and berth');
  t.same(web.seen.map((s) => rawValues(s.headers, 'x-forwarded-for')), [['127.0.0.5']], 'the client HAProxy saw');
  t.same(web.seen.map((s) => rawValues(s.headers, 'x-forwarded-proto')), [['https']]);
});
