import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Certificates made by openssl (independent of berth), in a fresh directory. */
export interface Pki {
  dir: string;
  /** Path of "<name>.pem" / "<name>-key.pem". */
  cert(name: string): string;
  key(name: string): string;
  /** Issues a leaf: `san` like "DNS:localhost,IP:127.0.0.1"; `days` 0 makes it expire at once. */
  issue(name: string, opts: { ca?: string; cn?: string; san?: string; usage: 'server' | 'client'; days?: number }): void;
  /** Creates a self-signed CA. */
  ca(name: string): void;
  /** Revokes `names` (issued by "ca") and writes the CA's CRL; returns its path. */
  crl(names: string[]): string;
}

function openssl(...args: string[]): void {
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}

export function makePki(): Pki {
  const dir = mkdtempSync(join(tmpdir(), 'berth-pki-'));
  const cert = (n: string) => join(dir, `${n}.pem`);
  const key = (n: string) => join(dir, `${n}-key.pem`);
  return {
    dir,
    cert,
    key,
    ca(name) {
      openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key(name), '-out', cert(name), '-subj', `/CN=${name}`, '-days', '30', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
    },
    crl(names) {
      const cnf = join(dir, 'ca.cnf');
      writeFileSync(join(dir, 'index.txt'), '');
      writeFileSync(join(dir, 'crlnumber'), '01\n');
      writeFileSync(cnf, `[ ca ]\ndefault_ca = d\n[ d ]\ndatabase = ${join(dir, 'index.txt')}\ncrlnumber = ${join(dir, 'crlnumber')}\ndefault_md = sha256\ndefault_crl_days = 30\n`);
      for (const n of names) openssl('ca', '-config', cnf, '-keyfile', key('ca'), '-cert', cert('ca'), '-revoke', cert(n));
      const out = join(dir, 'ca.crl');
      openssl('ca', '-config', cnf, '-keyfile', key('ca'), '-cert', cert('ca'), '-gencrl', '-out', out);
      return out;
    },
    issue(name, o) {
      const ca = o.ca ?? 'ca';
      openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', key(name), '-out', join(dir, `${name}.csr`), '-subj', `/O=berth-test/CN=${o.cn ?? name}`);
      const ext = join(dir, `${name}.ext`);
      writeFileSync(
        ext,
        [
          'basicConstraints=critical,CA:FALSE',
          'keyUsage=critical,digitalSignature,keyEncipherment',
          `extendedKeyUsage=${o.usage === 'server' ? 'serverAuth' : 'clientAuth'}`,
          ...(o.san ? [`subjectAltName=${o.san}`] : []),
        ].join('\n'),
      );
      openssl('x509', '-req', '-in', join(dir, `${name}.csr`), '-CA', cert(ca), '-CAkey', key(ca), '-CAcreateserial', '-out', cert(name), '-days', String(o.days ?? 30), '-extfile', ext);
    },
  };
}
