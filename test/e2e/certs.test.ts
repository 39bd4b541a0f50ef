import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, stat } from 'node:fs/promises';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import t from 'tap';
import { parseSans } from '../../src/tls/certs.js';
import { runCli } from '../helpers/net.js';

// Real peers: openssl (Debian) checks what berth certs writes.
if (spawnSync('which', ['openssl']).status !== 0) throw new Error('openssl is required; .ci/run installs it');
const openssl = (...args: string[]) => spawnSync('openssl', args, { encoding: 'utf8' });
const ext = (file: string, names: string) => openssl('x509', '-in', file, '-noout', '-ext', names).stdout;

const dir = await mkdtemp(join(tmpdir(), 'berth-certs-'));
const ca = join(dir, 'ca');
const out = join(dir, 'issued');

t.test('berth certs ca: a CA certificate openssl accepts; key 0600; no overwrite without --force', async (t) => {
  const r = await runCli(['certs', 'ca', '--out', ca, '--cn', 'shop CA', '--days', '30']);
  t.equal(r.code, 0, r.stderr);
  const cert = join(ca, 'ca.pem');
  t.match(ext(cert, 'basicConstraints'), /critical\s+CA:TRUE/);
  t.match(ext(cert, 'keyUsage'), /critical\s+Certificate Sign, CRL Sign/);
  t.match(openssl('x509', '-in', cert, '-noout', '-subject').stdout, /CN ?= ?shop CA/);
  t.match(openssl('x509', '-in', cert, '-noout', '-text').stdout, /Public-Key: \(2048 bit\)/);
  t.equal((await stat(join(ca, 'ca-key.pem'))).mode & 0o777, 0o600);
  const again = await runCli(['certs', 'ca', '--out', ca]);
  t.equal(again.code, 1);
  t.match(again.stderr, /ca\.pem exists; use --force to overwrite it/);
});

t.test('berth certs issue: server and client certificates with SANs, usages and key ids right', async (t) => {
  const server = await runCli(['certs', 'issue', '--ca', ca, '--out', out, '--name', 'web', '--san', 'DNS:web.internal,IP:127.0.0.1,URI:spiffe://shop/web', '--server']);
  t.equal(server.code, 0, server.stderr);
  const client = await runCli(['certs', 'issue', '--ca', ca, '--out', out, '--name', 'frontend', '--san', 'URI:spiffe://shop/frontend', '--client']);
  t.equal(client.code, 0, client.stderr);
  for (const name of ['web', 'frontend']) {
    const v = openssl('verify', '-CAfile', join(ca, 'ca.pem'), join(out, `${name}.pem`));
    t.equal(v.status, 0, v.stdout + v.stderr);
    t.equal((await stat(join(out, `${name}-key.pem`))).mode & 0o777, 0o600);
    t.match(ext(join(out, `${name}.pem`), 'basicConstraints'), /critical\s+CA:FALSE/);
    t.match(ext(join(out, `${name}.pem`), 'keyUsage'), /critical\s+Digital Signature, Key Encipherment/);
  }
  const web = join(out, 'web.pem');
  t.match(ext(web, 'subjectAltName'), /DNS:web\.internal, IP Address:127\.0\.0\.1, URI:spiffe:\/\/shop\/web/);
  t.match(ext(web, 'extendedKeyUsage'), /TLS Web Server Authentication/);
  t.notMatch(ext(web, 'extendedKeyUsage'), /Client/);
  t.match(ext(join(out, 'frontend.pem'), 'extendedKeyUsage'), /TLS Web Client Authentication/);
  // The leaf's authority key id is the CA's subject key id.
  const ski = /Identifier:\s*\n\s*(?:keyid:)?([0-9A-F:]+)/.exec(ext(join(ca, 'ca.pem'), 'subjectKeyIdentifier'))?.[1];
  const aki = /Identifier:\s*\n\s*(?:keyid:)?([0-9A-F:]+)/.exec(ext(web, 'authorityKeyIdentifier'))?.[1];
  t.ok(ski && ski === aki, `AKI ${aki} = CA SKI ${ski}`);
  const both = await runCli(['certs', 'issue', '--ca', ca, '--out', out, '--name', 'web', '--server']);
  t.equal(both.code, 1, 'existing files are not overwritten');
  const forced = await runCli(['certs', 'issue', '--ca', ca, '--out', out, '--name', 'web', '--san', 'DNS:web.internal,IP:127.0.0.1', '--server', '--force']);
  t.equal(forced.code, 0, forced.stderr);
});

t.test('bad arguments name the flag and exit 1', async (t) => {
  const san = await runCli(['certs', 'issue', '--ca', ca, '--out', out, '--name', 'x', '--san', 'EMAIL:a@b']);
  t.equal(san.code, 1);
  t.match(san.stderr, /--san: expected DNS:name, IP:address or URI:uri, got "EMAIL:a@b"/);
  const noCa = await runCli(['certs', 'issue', '--ca', join(dir, 'nope'), '--out', out, '--name', 'x']);
  t.equal(noCa.code, 1);
  t.match(noCa.stderr, /--ca: cannot read/);
  const both = await runCli(['certs', 'issue', '--ca', ca, '--out', out, '--name', 'x', '--client', '--server']);
  t.equal(both.code, 1);
  t.same(parseSans('DNS:*.internal'), { ok: true, sans: [{ type: 'DNS', value: '*.internal' }] });
});

t.test('the certificates work for a real mTLS handshake (openssl s_client against node:tls)', async (t) => {
  const server = tls.createServer({
    cert: await readFile(join(out, 'web.pem')),
    key: await readFile(join(out, 'web-key.pem')),
    ca: await readFile(join(ca, 'ca.pem')),
    requestCert: true,
    rejectUnauthorized: true,
  });
  let peerUri = '';
  server.on('secureConnection', (s: tls.TLSSocket) => {
    peerUri = s.getPeerCertificate().subjectaltname ?? '';
    s.end('hello\n');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const port = (server.address() as net.AddressInfo).port;
  // Async: the TLS server runs in this process, so a spawnSync would deadlock it.
  const client = spawn(
    'openssl',
    ['s_client', '-ign_eof', '-connect', `127.0.0.1:${port}`, '-servername', 'web.internal', '-verify_hostname', 'web.internal', '-CAfile', join(ca, 'ca.pem'), '-cert', join(out, 'frontend.pem'), '-key', join(out, 'frontend-key.pem')],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  client.stdin.end();
  let stdout = '';
  client.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  const timer = setTimeout(() => client.kill(), 10_000);
  await once(client, 'exit');
  clearTimeout(timer);
  const r = { stdout };
  t.match(r.stdout, /Verify return code: 0 \(ok\)/, 'client verified the server certificate and host name');
  t.match(r.stdout, /hello/, 'handshake completed both ways');
  t.equal(peerUri, 'URI:spiffe://shop/frontend', 'the server saw the client identity');
});
