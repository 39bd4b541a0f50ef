/**
 * TLS passthrough by SNI with real peers: two `openssl s_server` endpoints with
 * certificates of their own behind one berth port, reached with `openssl s_client
 * -servername`; the same through hellos the test re-frames into split records and
 * sends one byte per write (berth relays them unchanged, so the handshake completes).
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import { promisify } from 'node:util';
import t from 'tap';
import { createCa, issueCert } from '../../src/tls/certs.js';
import { freePort, listenerPort, startBerth, until } from '../helpers/net.js';

const run = promisify(execFile);

async function sServer(t: { teardown(fn: () => unknown): void }, dir: string, name: string): Promise<number> {
  await issueCert({ ca: dir, out: dir, name, sans: [{ type: 'DNS', value: `${name}.example.com` }], usage: 'server', days: 2, bits: 2048 });
  const port = await freePort();
  const p = spawn('openssl', ['s_server', '-quiet', '-accept', `127.0.0.1:${port}`, '-cert', join(dir, `${name}.pem`), '-key', join(dir, `${name}-key.pem`), '-www'], { stdio: 'ignore', detached: true });
  t.teardown(() => {
    try {
      process.kill(-p.pid!, 'SIGKILL');
    } catch {
      // gone
    }
  });
  await until(
    () =>
      new Promise<boolean>((resolve) => {
        const c = net.connect(port, '127.0.0.1');
        c.on('connect', () => {
          c.destroy();
          resolve(true);
        });
        c.on('error', () => resolve(false));
      }),
    10_000,
    `s_server ${name} listening`,
  );
  return port;
}

t.test('openssl s_client -servername reaches the s_server that holds that name, through one berth port', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-sni-e2e-'));
  await createCa({ out: dir, cn: 'sni e2e ca', days: 2, bits: 2048 });
  const [db1, db2] = [await sServer(t, dir, 'db1'), await sServer(t, dir, 'db2')];
  const file = join(dir, 'berth.json');
  writeFileSync(
    file,
    JSON.stringify({
      listeners: [{ name: 'edge', bind: '127.0.0.1:0', routes: [{ sni: 'db1.example.com', service: 'db1' }, { sni: '*.example.com', service: 'db2' }] }],
      services: { db1: { endpoints: [`127.0.0.1:${db1}`] }, db2: { endpoints: [`127.0.0.1:${db2}`] } },
      admin: { bind: 'off' },
    }),
  );
  const berth = await startBerth(['-c', file]);
  t.teardown(() => berth.kill('SIGKILL'));
  await until(() => listenerPort(berth, 'edge') > 0);
  const port = listenerPort(berth, 'edge');
  const client = async (servername: string) =>
    (await run('sh', ['-c', `openssl s_client -connect 127.0.0.1:${port} -servername ${servername} -CAfile ${join(dir, 'ca.pem')} -verify_return_error </dev/null 2>&1`])).stdout;
  const one = await client('db1.example.com');
  t.match(one, /subject=CN\s*=\s*db1/, 'db1.example.com: db1 answered with its certificate');
  t.match(one, /Verify return code: 0 \(ok\)/);
  t.match(await client('x.example.com'), /subject=CN\s*=\s*db2/, 'x.example.com: the wildcard route, db2');

  // node's TLS client over a socket the test drives: the hello re-framed into 7-byte
  // records and written one byte per write; berth relays it unchanged.
  const raw = net.connect(port, '127.0.0.1');
  await new Promise((r) => raw.once('connect', r));
  let first = true;
  const wire = new Duplex({
    read() {},
    write(chunk: Buffer, _e, cb) {
      if (!first) {
        raw.write(chunk, () => cb());
        return;
      }
      first = false;
      const msg = chunk.subarray(5, 5 + chunk.readUInt16BE(3));
      const out: Buffer[] = [];
      for (let o = 0; o < msg.length; o += 7) {
        const part = msg.subarray(o, o + 7);
        const h = Buffer.from([0x16, 0x03, 0x01, 0, 0]);
        h.writeUInt16BE(part.length, 3);
        out.push(h, part);
      }
      const bytes = Buffer.concat([...out, chunk.subarray(5 + msg.length)]);
      void (async () => {
        for (const b of bytes) {
          await new Promise<void>((r) => raw.write(Buffer.from([b]), () => r()));
        }
        cb();
      })();
    },
  });
  raw.on('data', (d: Buffer) => wire.push(d));
  raw.on('end', () => wire.push(null));
  const secure = tls.connect({ socket: wire, servername: 'db1.example.com', ca: readFileSync(join(dir, 'ca.pem')) });
  await new Promise<void>((resolve, reject) => {
    secure.once('secureConnect', () => resolve());
    secure.once('error', reject);
  });
  t.match(secure.getPeerCertificate().subject.CN, /db1/, 'split records, one byte per write: db1, the handshake whole');
  secure.destroy();
  raw.destroy();
});
