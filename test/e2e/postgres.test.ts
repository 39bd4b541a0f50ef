/**
 * PostgreSQL behind one berth port, routed by SNI (real peers: PostgreSQL 15 and
 * psql with sslmode=require). berth answers the client's SSLRequest 'S', routes its
 * ClientHello, sends the chosen server an SSLRequest of its own and drops its 'S'.
 * A cluster per test in a temp dir, run as the postgres user when this is root.
 */
import { execFile, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { createCa, issueCert } from '../../src/tls/certs.js';
import { freePort, listenerPort, startBerth, until } from '../helpers/net.js';

const run = promisify(execFile);
const BIN = '/usr/lib/postgresql/15/bin';
const asPostgres = process.getuid?.() === 0;

function pgUser(): { uid: number; gid: number } {
  const id = (flag: string) => Number(spawnSync('id', [flag, 'postgres'], { encoding: 'utf8' }).stdout.trim());
  return { uid: id('-u'), gid: id('-g') };
}

/** Runs a PostgreSQL tool (as the postgres user when this is root). */
function pg(tool: string, args: string[]): Promise<{ stdout: string; stderr: string }> {
  return asPostgres ? run('runuser', ['-u', 'postgres', '--', join(BIN, tool), ...args]) : run(join(BIN, tool), args);
}

/** A cluster on 127.0.0.1:`port`, TLS on with `cert`/`key` (or off). */
async function cluster(t: { teardown(fn: () => unknown): void }, dir: string, name: string, tls: { cert: string; key: string } | null): Promise<number> {
  const data = join(dir, name);
  await pg('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8']);
  const port = await freePort();
  let conf = `port = ${port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '${dir}'\n`;
  if (tls !== null) {
    writeFileSync(join(data, 'server.crt'), tls.cert);
    writeFileSync(join(data, 'server.key'), tls.key);
    if (asPostgres) {
      const u = pgUser();
      chownSync(join(data, 'server.crt'), u.uid, u.gid);
      chownSync(join(data, 'server.key'), u.uid, u.gid);
    }
    chmodSync(join(data, 'server.key'), 0o600);
    conf += "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n";
  }
  writeFileSync(join(data, 'postgresql.auto.conf'), conf);
  if (asPostgres) {
    const u = pgUser();
    chownSync(join(data, 'postgresql.auto.conf'), u.uid, u.gid);
  }
  await pg('pg_ctl', ['-D', data, '-l', join(dir, `${name}.log`), '-w', 'start']);
  t.teardown(() => pg('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']).catch(() => {}));
  return port;
}

/** psql through berth: `host` is the name sent in SNI, the connection goes to 127.0.0.1:`port`. */
async function psql(host: string, port: number, sslmode: string, sql: string): Promise<{ ok: boolean; out: string }> {
  try {
    const r = await run('psql', [`host=${host} hostaddr=127.0.0.1 port=${port} user=postgres dbname=postgres sslmode=${sslmode} connect_timeout=5`, '-Atc', sql], { env: { ...process.env, PGGSSENCMODE: 'prefer' } });
    return { ok: true, out: r.stdout.trim() };
  } catch (err) {
    return { ok: false, out: String((err as { stderr?: string }).stderr ?? err) };
  }
}

t.test('two PostgreSQL clusters behind one port, by SNI, psql sslmode=require', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-pg-'));
  chmodSync(dir, 0o777);
  await createCa({ out: dir, cn: 'pg ca', days: 2, bits: 2048 });
  await issueCert({ ca: dir, out: dir, name: 'db', sans: [{ type: 'DNS', value: '*.example.com' }], usage: 'server', days: 2, bits: 2048 });
  const pem = { cert: readFileSync(join(dir, 'db.pem'), 'utf8'), key: readFileSync(join(dir, 'db-key.pem'), 'utf8') };
  const [db1, db2, plain] = await Promise.all([cluster(t, dir, 'db1', pem), cluster(t, dir, 'db2', pem), cluster(t, dir, 'plain', null)]);
  const file = join(dir, 'berth.json');
  writeFileSync(
    file,
    JSON.stringify({
      listeners: [
        {
          name: 'pg',
          bind: '127.0.0.1:0',
          postgres: true,
          routes: [
            { sni: 'db1.example.com', service: 'db1' },
            { sni: 'db2.example.com', service: 'db2' },
            { sni: 'notls.example.com', service: 'plain' },
          ],
        },
      ],
      services: { db1: { endpoints: [`127.0.0.1:${db1}`] }, db2: { endpoints: [`127.0.0.1:${db2}`] }, plain: { endpoints: [`127.0.0.1:${plain}`] } },
      admin: { bind: 'off' },
    }),
  );
  const berth = await startBerth(['-c', file, '--log-level', 'info']);
  t.teardown(() => berth.kill('SIGKILL'));
  await until(() => listenerPort(berth, 'pg') > 0);
  const port = listenerPort(berth, 'pg');
  t.same(await psql('db1.example.com', port, 'require', 'show port'), { ok: true, out: String(db1) }, 'db1 by its name');
  t.same(await psql('db2.example.com', port, 'require', 'show port'), { ok: true, out: String(db2) }, 'db2 by its name');
  t.same(await psql('db2.example.com', port, 'require', 'select ssl from pg_stat_ssl where pid = pg_backend_pid()'), { ok: true, out: 't' }, 'TLS end to end, between psql and the server');
  const noTls = await psql('db1.example.com', port, 'disable', 'select 1');
  t.notOk(noTls.ok, 'a plaintext start has no SNI and no catch-all: closed');
  const refused = await psql('notls.example.com', port, 'require', 'select 1');
  t.notOk(refused.ok, "a server that answers N: the client is closed");
  await berth.waitLog((l) => l.msg === 'PostgreSQL endpoint refused TLS: client closed');
});
