import { spawn, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { copyFileSync, readFileSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import { pino } from 'pino';
import t from 'tap';
import { Pool } from '../../src/pool/pool.js';
import { TcpListener, type TcpListenerSettings } from '../../src/proxy/tcp/listener.js';
import { HttpListener } from '../../src/proxy/http/listener.js';
import { ListenerTls, loadUpstreamTls, type ListenerTlsConfig } from '../../src/tls/terminate.js';
import { seededRandom } from '../../src/core/random.js';
import { countingObserver, endpoint, silent } from '../helpers/proxy.js';
import { echoServer, tcpServer, until } from '../helpers/net.js';
import { httpSettings, recordingBackend, rawValues, request } from '../helpers/http.js';
import { makePki } from '../helpers/pki.js';
import type { ProxyObserver } from '../../src/core/observer.js';

for (const bin of ['openssl', 'curl']) {
  if (spawnSync('which', [bin]).status !== 0) throw new Error(`${bin} is required; .ci/run installs it`);
}

const pki = makePki();
pki.ca('ca');
pki.ca('other-ca');
pki.issue('server', { cn: 'server', san: 'DNS:localhost,IP:127.0.0.1', usage: 'server' });
pki.issue('server2', { cn: 'server2', san: 'DNS:localhost,IP:127.0.0.1', usage: 'server' });
pki.issue('api', { cn: 'api', san: 'DNS:api.test', usage: 'server' });
pki.issue('frontend', { cn: 'frontend', san: 'URI:spiffe://shop/frontend,DNS:frontend.internal', usage: 'client' });
pki.issue('other', { cn: 'other', san: 'URI:spiffe://shop/other', usage: 'client' });
pki.issue('billing', { cn: 'billing', usage: 'client' });
pki.issue('foreign', { ca: 'other-ca', cn: 'foreign', san: 'URI:spiffe://shop/frontend', usage: 'client' });
pki.issue('comma', { cn: 'Shop, Inc', san: 'URI:spiffe://shop/comma,DNS:Comma.Internal', usage: 'client' });
pki.issue('soon', { cn: 'soon', san: 'DNS:localhost', usage: 'server', days: 3 });
pki.issue('expired', { cn: 'expired', san: 'URI:spiffe://shop/frontend', usage: 'client', days: 0 });

function tlsConfig(over: Partial<ListenerTlsConfig> = {}): ListenerTlsConfig {
  return { cert: pki.cert('server'), key: pki.key('server'), sni: [], clientCa: pki.cert('ca'), allow: ['URI:spiffe://shop/frontend', 'DNS:*.internal', 'CN=billing'], minVersion: 'TLSv1.2', ...over };
}

function materialObserver() {
  const seen: { ok: boolean; notAfter: number | null }[] = [];
  return { seen, tlsMaterial: (_l: string, ok: boolean, notAfter: number | null) => seen.push({ ok, notAfter }) };
}

async function tlsTcpProxy(target: number, cfg: ListenerTlsConfig, obs: ProxyObserver, settings: Partial<TcpListenerSettings> = {}) {
  const pool = new Pool({ random: seededRandom(1) });
  pool.configureService('svc', 'round-robin');
  pool.applySnapshot({ provider: 'static', services: new Map([['svc', [endpoint(target)]]]) });
  const mo = materialObserver();
  const term = new ListenerTls('secure', cfg, silent, mo, undefined);
  const listener = new TcpListener(
    { name: 'secure', bind: { host: '127.0.0.1', port: 0 }, service: 'svc', timeouts: { connect: 1000, idle: 10_000 }, retries: 1, retryBackoff: 0, ...settings },
    { pool, log: silent, observer: obs, tls: term },
  );
  const { port } = await listener.listen();
  return { listener, term, port, material: mo, close: () => { listener.stopAccepting(); listener.destroyAll(); term.close(); } };
}

/** openssl s_client: sends `input`, returns what came back (and stderr) within `ms`. */
function sClient(port: number, args: string[], input: string, ms = 1500): Promise<{ out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-CAfile', pki.cert('ca'), '-quiet', '-verify_return_error', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d));
    p.stderr.on('data', (d: Buffer) => (err += d));
    p.stdin.on('error', () => {});
    setTimeout(() => p.stdin.write(input), 300);
    const timer = setTimeout(() => p.kill('SIGKILL'), ms);
    p.on('exit', () => {
      clearTimeout(timer);
      resolve({ out, err });
    });
  });
}

const clientArgs = (name: string) => ['-cert', pki.cert(name), '-key', pki.key(name)];

t.test('tcp mTLS: allowed identities pass; others are refused and counted by reason (openssl s_client)', async (t) => {
  const echo = await echoServer();
  const obs = countingObserver();
  const p = await tlsTcpProxy(echo.port, tlsConfig(), obs);
  t.teardown(() => {
    p.close();
    echo.close();
  });
  for (const who of ['frontend', 'billing', 'other']) {
    const r = await sClient(p.port, [...clientArgs(who)], `hello ${who}\n`);
    if (who === 'other') t.notMatch(r.out, /hello/, 'other: verified but not on the allow-list, closed');
    else t.match(r.out, /hello/, `${who}: allowed (${who === 'frontend' ? 'URI and DNS wildcard' : 'CN'}), echoed`);
  }
  const none = await sClient(p.port, [], 'hello anonymous\n');
  t.notMatch(none.out, /hello/, 'no client certificate: refused');
  const foreign = await sClient(p.port, clientArgs('foreign'), 'hello foreign\n');
  t.notMatch(foreign.out, /hello/, 'certificate from another CA: refused');
  const expired = await sClient(p.port, clientArgs('expired'), 'hello expired\n');
  t.notMatch(expired.out, /hello/, 'expired certificate: refused');
  const old = await sClient(p.port, [...clientArgs('frontend'), '-tls1_1', '-cipher', 'DEFAULT@SECLEVEL=0'], 'hello tls1.1\n');
  t.notMatch(old.out, /hello/, 'TLS 1.1: refused');
  await until(() => (obs.counts['tls.protocol'] ?? 0) >= 1, 3000, 'all counted');
  t.comment(JSON.stringify(obs.counts));
  t.equal(obs.counts['tls.ok'], 2);
  t.equal(obs.counts['tls.not_allowed'], 1);
  t.equal(obs.counts['tls.no_cert'], 1);
  t.equal(obs.counts['tls.bad_cert'], 2, 'foreign CA and expired');
  t.equal(obs.counts['tls.protocol'], 1);
  t.equal(obs.counts['connect.ok'], 2, 'only allowed clients reached the endpoint');
});

t.test('a revoked client certificate (CRL) is refused as bad_cert; others still pass', async (t) => {
  pki.issue('revoked', { cn: 'revoked', san: 'URI:spiffe://shop/frontend', usage: 'client' });
  const crl = pki.crl(['revoked']);
  const echo = await echoServer();
  const obs = countingObserver();
  const p = await tlsTcpProxy(echo.port, tlsConfig({ crl }), obs);
  t.teardown(() => {
    p.close();
    echo.close();
  });
  t.notMatch((await sClient(p.port, clientArgs('revoked'), 'hello revoked\n')).out, /hello/);
  t.match((await sClient(p.port, clientArgs('frontend'), 'hello frontend\n')).out, /hello/);
  t.equal(obs.counts['tls.bad_cert'], 1);
  t.equal(obs.counts['tls.ok'], 1);
});

t.test('a certificate close to expiry is warned about once, the listener named once in the line', async (t) => {
  const lines: string[] = [];
  const root = pino({ level: 'info' }, { write: (l: string) => lines.push(l) });
  // As the app builds it: the listener's logger already carries the listener's name.
  const term = new ListenerTls('web', tlsConfig({ cert: pki.cert('soon'), key: pki.key('soon') }), root.child({ module: 'proxy', listener: 'web' }), materialObserver(), undefined);
  t.teardown(() => term.close());
  const warn = lines.find((l) => l.includes('tls certificate expires soon'));
  t.ok(warn, 'warned at start');
  t.equal(warn!.match(/"listener":/g)?.length, 1, `one listener key: ${warn}`);
  t.match(JSON.parse(warn!) as Record<string, unknown>, { listener: 'web', days: 2 });
});

t.test('identity from the peer certificate: subject in RFC 4514 order, CN unescaped, SAN split, hash of the DER', async (t) => {
  const term = new ListenerTls('id', tlsConfig({ allow: ['CN=Shop, Inc'] }), silent, materialObserver(), undefined);
  t.teardown(() => term.close());
  const pem = readFileSync(pki.cert('comma'));
  const x = new X509Certificate(pem);
  const socket = (authorized: boolean, cert: X509Certificate | undefined) => ({ authorized, getPeerX509Certificate: () => cert }) as unknown as tls.TLSSocket;
  const r = term.check(socket(true, x));
  t.equal(r.result, 'ok', 'CN=Shop, Inc allowed: the escaped comma is unescaped');
  t.same(r.identity, {
    hash: x.fingerprint256.replace(/:/g, '').toLowerCase(),
    subject: 'CN=Shop\\, Inc,O=berth-test',
    cn: 'Shop, Inc',
    uris: ['spiffe://shop/comma'],
    dnsNames: ['comma.internal'],
  });
  t.equal(term.check(socket(false, x)).result, 'bad_cert');
  t.equal(term.check(socket(true, undefined)).result, 'no_cert');
});

t.test('SNI picks the certificate; without a match the default one', async (t) => {
  const echo = await echoServer();
  const p = await tlsTcpProxy(echo.port, tlsConfig({ clientCa: undefined, allow: [], sni: [{ cert: pki.cert('api'), key: pki.key('api') }] }), countingObserver());
  t.teardown(() => {
    p.close();
    echo.close();
  });
  const subject = (servername: string) =>
    new Promise<string>((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port: p.port, servername, rejectUnauthorized: false }, () => {
        resolve(String(s.getPeerCertificate().subject.CN));
        s.destroy();
      });
      s.on('error', reject);
    });
  t.equal(await subject('api.test'), 'api');
  t.equal(await subject('other.test'), 'server');
  const r = await sClient(p.port, ['-servername', 'localhost'], 'plain tls\n');
  t.match(r.out, /plain tls/, 'no client certificate needed without clientCa');
});

t.test('PROXY protocol v2 with SSL TLVs, and v1, parsed by the endpoint', async (t) => {
  let header: Buffer = Buffer.alloc(0);
  const endpoint2 = await tcpServer((s) => {
    let got = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      header = got;
      // Answer once the client's bytes (after the header) are in.
      if (got.toString('latin1').endsWith('payload') || got.toString('latin1').endsWith('\r\nx')) s.end('ok');
    });
  });
  const p = await tlsTcpProxy(endpoint2.port, tlsConfig(), countingObserver(), { proxyProtocol: 'v2' });
  t.teardown(() => {
    p.close();
    endpoint2.close();
  });
  const r = await sClient(p.port, clientArgs('frontend'), 'payload');
  t.match(r.out, /ok/);
  t.same([...header.subarray(0, 12)], [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a], 'v2 signature');
  t.equal(header[12], 0x21, 'version 2, PROXY');
  t.equal(header[13], 0x11, 'TCP over IPv4');
  const len = header.readUInt16BE(14);
  t.equal([...header.subarray(16, 20)].join('.'), '127.0.0.1', 'source address');
  t.equal(header.readUInt16BE(26), p.port, 'destination port is the listener');
  // TLVs after the 12 address bytes.
  const tlvs = new Map<number, Buffer>();
  for (let i = 28; i < 16 + len; ) {
    const type = header[i]!;
    const l = header.readUInt16BE(i + 1);
    tlvs.set(type, header.subarray(i + 3, i + 3 + l));
    i += 3 + l;
  }
  const ssl = tlvs.get(0x20);
  t.ok(ssl, 'PP2_TYPE_SSL present');
  t.equal(ssl![0]! & 0x07, 0x07, 'client: ssl, cert on connection and session');
  t.equal(ssl!.readUInt32BE(1), 0, 'verify: ok');
  const sub = new Map<number, string>();
  for (let i = 5; i < ssl!.length; ) {
    const l = ssl!.readUInt16BE(i + 1);
    sub.set(ssl![i]!, ssl!.subarray(i + 3, i + 3 + l).toString());
    i += 3 + l;
  }
  t.match(sub.get(0x21), /^TLSv1\.[23]$/, 'SSL version');
  t.equal(sub.get(0x22), 'frontend', 'client CN');
  t.ok(sub.get(0x23), 'cipher');
  t.equal(header.subarray(16 + len).toString(), 'payload', 'client bytes follow the header');

  // v1 on a plain listener.
  const pool = new Pool();
  pool.configureService('svc', 'round-robin');
  pool.applySnapshot({ provider: 'static', services: new Map([['svc', [endpoint(endpoint2.port)]]]) });
  const plain = new TcpListener({ name: 'p', bind: { host: '127.0.0.1', port: 0 }, service: 'svc', timeouts: { connect: 1000, idle: 5000 }, retries: 0, retryBackoff: 0, proxyProtocol: 'v1' }, { pool, log: silent });
  const { port } = await plain.listen();
  t.teardown(() => {
    plain.stopAccepting();
    plain.destroyAll();
  });
  const c = net.connect(port, '127.0.0.1');
  c.write('x');
  await new Promise((r) => c.once('data', r));
  t.match(header.toString(), new RegExp(`^PROXY TCP4 127\\.0\\.0\\.1 127\\.0\\.0\\.1 ${c.localPort} ${port}\\r\\nx$`));
  c.destroy();
});

t.test('certificate files are watched: new handshakes get the new certificate, an open connection keeps working, a bad file keeps the old', async (t) => {
  const echo = await echoServer();
  // Copies, so the test can overwrite them.
  copyFileSync(pki.cert('server'), `${pki.dir}/live.pem`);
  copyFileSync(pki.key('server'), `${pki.dir}/live-key.pem`);
  const p = await tlsTcpProxy(echo.port, tlsConfig({ cert: `${pki.dir}/live.pem`, key: `${pki.dir}/live-key.pem`, clientCa: undefined, allow: [] }), countingObserver());
  t.teardown(() => {
    p.close();
    echo.close();
  });
  const cn = () =>
    new Promise<string>((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port: p.port, ca: [require_(pki.cert('ca'))], servername: 'localhost' }, () => {
        resolve(String(s.getPeerCertificate().subject.CN));
        s.destroy();
      });
      s.on('error', reject);
    });
  t.equal(await cn(), 'server');
  const open = tls.connect({ host: '127.0.0.1', port: p.port, ca: [require_(pki.cert('ca'))], servername: 'localhost' });
  await new Promise((r) => open.once('secureConnect', r));
  let echoed = '';
  open.on('data', (d: Buffer) => (echoed += d));
  open.write('before ');
  copyFileSync(pki.cert('server2'), `${pki.dir}/live.pem`);
  copyFileSync(pki.key('server2'), `${pki.dir}/live-key.pem`);
  await until(async () => (await cn()) === 'server2', 5000, 'reloaded certificate served', 200);
  open.write('after');
  await until(() => echoed === 'before after', 2000, 'open connection still works');
  open.destroy();
  // A broken key file: the old material stays, the failure is counted.
  const okBefore = p.material.seen.filter((x) => x.ok).length;
  copyFileSync(pki.cert('ca'), `${pki.dir}/live-key.pem`);
  await until(() => p.material.seen.some((x) => !x.ok), 5000, 'failed reload reported', 200);
  t.equal(await cn(), 'server2', 'still served with the last good material');
  t.ok(p.material.seen.filter((x) => x.ok).length >= okBefore);
});

function require_(path: string): Buffer {
  return spawnSync('cat', [path]).stdout;
}

t.test('http mTLS with curl: XFCC set (spoofed one removed), X-Forwarded-Proto https, 403 for a client not on the list', async (t) => {
  const be = await recordingBackend();
  const pool = new Pool({ random: seededRandom(1) });
  pool.configureService('svc', 'round-robin');
  pool.applySnapshot({ provider: 'static', services: new Map([['svc', [endpoint(be.port)]]]) });
  const obs = countingObserver();
  const term = new ListenerTls('web', tlsConfig(), silent, materialObserver(), ['http/1.1']);
  const l = new HttpListener(httpSettings(), { pool, log: silent, observer: obs, tls: term });
  const { port } = await l.listen();
  t.teardown(() => {
    l.stopAccepting();
    l.destroyAll();
    term.close();
    be.close();
  });
  // curl runs async: the proxy under test lives in this process.
  const curl = (who: string | null, extra: string[] = []) =>
    new Promise<{ stdout: string }>((resolve) => {
      const p = spawn('curl', ['-s', '-o', '-', '-w', '\\n%{http_code} %{http_version}', '--cacert', pki.cert('ca'), ...(who ? ['--cert', pki.cert(who), '--key', pki.key(who)] : []), ...extra, `https://localhost:${port}/id`]);
      let stdout = '';
      p.stdout.on('data', (d: Buffer) => (stdout += d));
      p.on('exit', () => resolve({ stdout }));
    });
  const ok = await curl('frontend', ['-H', 'X-Forwarded-Client-Cert: By=evil;URI=spiffe://shop/admin']);
  t.match(ok.stdout, /\n200 1\.1$/, 'allowed: 200 over HTTP/1.1 (ALPN)');
  const h = be.seen[0]!.headers;
  const xfcc = rawValues(h, 'x-forwarded-client-cert');
  t.equal(xfcc.length, 1, 'exactly one XFCC: the spoofed one was removed');
  t.match(xfcc[0], /^Hash=[0-9a-f]{64};Subject="CN=frontend,O=berth-test";URI=spiffe:\/\/shop\/frontend;DNS=frontend\.internal$/);
  t.same(rawValues(h, 'x-forwarded-proto'), ['https']);
  const denied = await curl('other');
  t.match(denied.stdout, /\n403 1\.1$/, 'verified but not allowed: 403');
  t.equal(be.seen.length, 1, 'the endpoint never saw the refused client');
  const anon = await curl(null);
  t.notMatch(anon.stdout, /\n200/, 'no certificate: no answer');
  await until(() => obs.counts['tls.no_cert'] === 1, 2000, 'no_cert counted');
  t.equal(obs.counts['tls.ok'], 1);
  t.equal(obs.counts['tls.not_allowed'], 1);
});

t.test('http upstream TLS: berth verifies the endpoint and presents its client certificate', async (t) => {
  const seenClients: string[] = [];
  const be = https.createServer({ cert: readFileSync(pki.cert('server')), key: readFileSync(pki.key('server')), ca: readFileSync(pki.cert('ca')), requestCert: true, rejectUnauthorized: true }, (req, res) => {
    seenClients.push(String((req.socket as tls.TLSSocket).getPeerCertificate().subject.CN));
    res.end('secure hello');
  });
  await new Promise<void>((r) => be.listen(0, '127.0.0.1', r));
  const bePort = (be.address() as net.AddressInfo).port;
  const upstream = loadUpstreamTls('svc', { ca: pki.cert('ca'), cert: pki.cert('frontend'), key: pki.key('frontend'), serverName: 'localhost', insecure: false });
  const pool = new Pool({ random: seededRandom(1) });
  pool.configureService('svc', 'round-robin');
  pool.applySnapshot({ provider: 'static', services: new Map([['svc', [endpoint(bePort)]]]) });
  const l = new HttpListener(httpSettings(), { pool, log: silent, upstreamTls: () => upstream });
  const { port } = await l.listen();
  t.teardown(() => {
    l.stopAccepting();
    l.destroyAll();
    be.closeAllConnections();
    be.close();
  });
  const r = await request(port);
  t.equal(r.status, 200);
  t.equal(r.body, 'secure hello');
  t.same(seenClients, ['frontend'], 'the endpoint saw berth\'s client certificate');
  // A wrong CA: the endpoint is not trusted, berth answers 502.
  const wrong = loadUpstreamTls('svc', { ca: pki.cert('other-ca'), serverName: 'localhost', insecure: false });
  const l2 = new HttpListener(httpSettings({ retries: 0 }), { pool, log: silent, upstreamTls: () => wrong });
  const p2 = (await l2.listen()).port;
  t.teardown(() => {
    l2.stopAccepting();
    l2.destroyAll();
  });
  t.equal((await request(p2)).status, 502, 'untrusted endpoint certificate: 502');
  t.equal(seenClients.length, 1);
});

/** openssl s_client without -quiet (its R command works): writes `lines` one by one, returns all it printed. */
function sClientInteractive(port: number, args: string[], lines: string[], ms = 3000): Promise<string> {
  return new Promise((resolve) => {
    const p = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-CAfile', pki.cert('ca'), '-servername', 'localhost', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d));
    p.stderr.on('data', (d: Buffer) => (out += d));
    p.stdin.on('error', () => {});
    let sent = false;
    p.stdout.on('data', () => {
      // Once the handshake is done (s_client prints the session), send the lines.
      if (sent || !/Verify return code/.test(out)) return;
      sent = true;
      for (const l of lines) p.stdin.write(`${l}\n`);
    });
    const timer = setTimeout(() => p.kill('SIGKILL'), ms);
    p.on('exit', () => {
      clearTimeout(timer);
      resolve(out);
    });
  });
}

t.test('real peer: client-initiated renegotiation (openssl s_client R, TLS 1.2) is refused', async (t) => {
  const echo = await echoServer();
  const p = await tlsTcpProxy(echo.port, tlsConfig({ clientCa: undefined, allow: [] }), countingObserver());
  t.teardown(() => {
    p.close();
    echo.close();
  });
  const out = await sClientInteractive(p.port, ['-tls1_2'], ['R', 'after-renegotiation']);
  t.match(out, /RENEGOTIATING/, 's_client asked');
  t.match(out, /no renegotiation/i, `refused by the server: ${out.split('\n').filter((l) => /RENEG|renegotiation|error/i.test(l)).join(' | ')}`);
  t.notMatch(out, /after-renegotiation\s*\n.*after-renegotiation/s, 'no echo after a renegotiated handshake');
});

t.test('real peer: a refused mTLS client (openssl s_client, no certificate) gets a clean TLS close, not a reset', async (t) => {
  const echo = await echoServer();
  const p = await tlsTcpProxy(echo.port, tlsConfig(), countingObserver());
  t.teardown(() => {
    p.close();
    echo.close();
  });
  const out = await sClientInteractive(p.port, [], ['hello']);
  t.notMatch(out, /errno=104|Connection reset/i, 'no ECONNRESET');
  t.notMatch(out, /^hello$/m, 'nothing echoed');
});
