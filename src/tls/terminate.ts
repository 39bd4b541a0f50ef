/**
 * TLS termination material for one listener: certificate files (a default one and
 * more chosen by SNI), client verification (mTLS) with an identity allow-list,
 * and hot reload: the files are watched (and reread on config reload); a bad new
 * file keeps the old material, logged and counted.
 */
import { constants as cryptoConstants, createHash, X509Certificate } from 'node:crypto';
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import tls, { type SecureContext, type TLSSocket, type TlsOptions } from 'node:tls';
import { BerthError } from '../core/errors.js';
import type { HandshakeResult, PeerIdentity, TlsServerLike, TlsTerminator, UpstreamTls } from '../core/tls.js';
import type { Logger } from '../log.js';

export interface ListenerTlsConfig {
  readonly cert: string;
  readonly key: string;
  readonly sni: readonly { readonly cert: string; readonly key: string; readonly serverNames?: readonly string[] | undefined }[];
  readonly clientCa?: string | undefined;
  readonly allow: readonly string[];
  readonly crl?: string | undefined;
  readonly minVersion: 'TLSv1.2' | 'TLSv1.3';
  readonly alpn?: readonly string[] | undefined;
}

export interface TlsObserver {
  /** Material (re)loaded: the earliest certificate expiry (ms since epoch), or a failed reload. */
  tlsMaterial(listener: string, ok: boolean, notAfterMs: number | null): void;
}

const WARN_DAYS = 14;
/** A refused client has this long to read berth's close_notify and close its side. */
const REFUSE_LINGER_MS = 2000;

function onRefusedLinger(this: TLSSocket): void {
  this.destroy();
}
function noop(): void {}
const DAY = 86_400_000;

interface Material {
  readonly defaults: TlsOptions;
  readonly exact: Map<string, SecureContext>;
  readonly wildcard: { suffix: string; ctx: SecureContext }[];
  readonly notAfter: number;
  readonly key: string;
}

function read(path: string, field: string, listener: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new BerthError('BERTH_ERR_TLS', `listener ${listener}: cannot read tls.${field} ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
  }
}

/** SAN DNS names of the first certificate in a PEM chain. */
function dnsNamesOf(pem: Buffer): string[] {
  const san = new X509Certificate(pem).subjectAltName ?? '';
  return san
    .split(', ')
    .filter((s) => s.startsWith('DNS:'))
    .map((s) => s.slice(4).toLowerCase());
}

/** An allow-list entry as a predicate on identities. */
function allowRule(entry: string): (id: PeerIdentity) => boolean {
  if (entry.startsWith('URI:')) {
    const uri = entry.slice(4);
    return (id) => id.uris.includes(uri);
  }
  if (entry.startsWith('DNS:')) {
    const name = entry.slice(4).toLowerCase();
    if (name.startsWith('*.')) {
      const suffix = name.slice(1);
      // One label deep, as in certificate wildcards: *.internal matches a.internal, not a.b.internal.
      return (id) => id.dnsNames.some((d) => d.endsWith(suffix) && d.length > suffix.length && !d.slice(0, -suffix.length).includes('.'));
    }
    return (id) => id.dnsNames.includes(name);
  }
  const cn = entry.slice(3);
  return (id) => id.cn === cn;
}

/** An RFC 2253 attribute value as written by OpenSSL, unescaped (`\,` → `,`, `\2C` → `,`). */
function unescapeRdn(v: string): string {
  if (!v.includes('\\')) return v;
  return v.replace(/\\([0-9A-Fa-f]{2}|.)/g, (_m, e: string) => (e.length === 2 ? String.fromCharCode(parseInt(e, 16)) : e));
}

export class ListenerTls implements TlsTerminator {
  private material: Material;
  private server: { setSecureContext(options: TlsOptions): void } | null = null;
  private readonly rules: ((id: PeerIdentity) => boolean)[];
  private watched: string[] = [];
  readonly mutual: boolean;
  /**
   * SNI certificates configured: only then is there an SNICallback (a call into JS
   * on every handshake). Fixed for the server's life: node reads the callback once.
   */
  readonly sni: boolean;

  constructor(
    private readonly listener: string,
    private cfg: ListenerTlsConfig,
    private readonly log: Logger,
    private readonly observer: TlsObserver,
    /** ALPN offered when the config names none (http listeners: h2 and http/1.1, or http/1.1 alone). */
    private readonly defaultAlpn: readonly string[] | undefined,
  ) {
    this.material = this.load(cfg);
    this.mutual = cfg.clientCa !== undefined;
    this.sni = cfg.sni.length > 0;
    this.rules = cfg.allow.map(allowRule);
    this.report(true);
  }

  /** Reads every file and builds the contexts; throws BERTH_ERR_TLS naming the field. */
  private load(cfg: ListenerTlsConfig): Material {
    const l = this.listener;
    const ca = cfg.clientCa !== undefined ? read(cfg.clientCa, 'clientCa', l) : undefined;
    const crl = cfg.crl !== undefined ? read(cfg.crl, 'crl', l) : undefined;
    const base = { minVersion: cfg.minVersion, ...(ca ? { ca } : {}), ...(crl ? { crl } : {}) } as const;
    const cert = read(cfg.cert, 'cert', l);
    const key = read(cfg.key, 'key', l);
    const build = (c: Buffer, k: Buffer, field: string): SecureContext => {
      try {
        return tls.createSecureContext({ ...base, cert: c, key: k });
      } catch (err) {
        throw new BerthError('BERTH_ERR_TLS', `listener ${l}: tls.${field}: ${(err as Error).message}`, { cause: err });
      }
    };
    build(cert, key, 'cert');
    let notAfter = Date.parse(new X509Certificate(cert).validTo);
    const exact = new Map<string, SecureContext>();
    const wildcard: { suffix: string; ctx: SecureContext }[] = [];
    cfg.sni.forEach((s, i) => {
      const c = read(s.cert, `sni[${i}].cert`, l);
      const k = read(s.key, `sni[${i}].key`, l);
      const ctx = build(c, k, `sni[${i}]`);
      notAfter = Math.min(notAfter, Date.parse(new X509Certificate(c).validTo));
      for (const name of s.serverNames ?? dnsNamesOf(c)) {
        const n = name.toLowerCase();
        if (n.startsWith('*.')) wildcard.push({ suffix: n.slice(1), ctx });
        else exact.set(n, ctx);
      }
    });
    wildcard.sort((a, b) => b.suffix.length - a.suffix.length);
    const files = [cfg.cert, cfg.key, cfg.clientCa, cfg.crl, ...cfg.sni.flatMap((s) => [s.cert, s.key])].filter((f): f is string => f !== undefined);
    return { defaults: { ...base, cert, key }, exact, wildcard, notAfter, key: files.join('\0') };
  }

  private report(atStart: boolean): void {
    const m = this.material;
    this.observer.tlsMaterial(this.listener, true, m.notAfter);
    const days = (m.notAfter - Date.now()) / DAY;
    if (days < WARN_DAYS) {
      this.log.warn({ expires: new Date(m.notAfter).toISOString(), days: Math.floor(days) }, days < 0 ? 'tls certificate has expired' : 'tls certificate expires soon');
    } else if (!atStart) {
      this.log.info({ expires: new Date(m.notAfter).toISOString() }, 'tls material reloaded');
    }
  }

  serverOptions(): TlsOptions {
    const alpn = this.cfg.alpn ?? this.defaultAlpn;
    return {
      ...this.material.defaults,
      requestCert: this.mutual,
      // Verified by check() after the handshake, so a refusal is counted with its
      // reason (node's own rejection closes the socket and reports only "hang up").
      rejectUnauthorized: false,
      ...(alpn ? { ALPNProtocols: [...alpn] } : {}),
      // Client-initiated renegotiation (TLS 1.2) is refused: it costs the server a
      // handshake's work for each request of a client's (CVE-2011-1473).
      secureOptions: cryptoConstants.SSL_OP_NO_RENEGOTIATION,
      // Only with SNI certificates: otherwise every handshake would call into JS for nothing.
      ...(this.sni ? { SNICallback: (servername: string, cb: (err: Error | null, ctx?: SecureContext) => void) => cb(null, this.contextFor(servername)) } : {}),
      // Resumed sessions skip the certificate check: tickets are per process and
      // material, so a reload (new key) does not resume under old trust.
      sessionTimeout: 300,
    };
  }

  private contextFor(servername: string): SecureContext | undefined {
    const m = this.material;
    const name = servername.toLowerCase();
    const hit = m.exact.get(name);
    if (hit) return hit;
    for (const w of m.wildcard) if (name.endsWith(w.suffix) && !name.slice(0, -w.suffix.length).includes('.')) return w.ctx;
    // undefined: the server's default context.
    return undefined;
  }

  attach(server: TlsServerLike, listener: string, report: (listener: string, result: HandshakeResult) => void): void {
    this.server = server;
    // node hands a failed handshake (a protocol error, or handshakeTimeout for a
    // client that sends nothing, half a ClientHello, or stalls after it) to this
    // event and leaves the socket open while anyone listens: it is closed here.
    server.on('tlsClientError', (err, socket) => {
      report(listener, this.classify(err));
      socket.destroy();
    });
    this.watch();
  }

  refuse(socket: TLSSocket): void {
    socket.on('error', noop);
    socket.on('data', noop);
    socket.setTimeout(REFUSE_LINGER_MS, onRefusedLinger);
    socket.end();
  }

  check(socket: TLSSocket): { identity: PeerIdentity | null; result: HandshakeResult } {
    if (!this.mutual) return { identity: null, result: 'ok' };
    // The X509Certificate view: a quarter of getPeerCertificate()'s cost (~10 vs ~43 µs
    // per handshake here), which builds every field and the issuer chain as objects.
    const cert = socket.getPeerX509Certificate();
    if (!cert) return { identity: null, result: 'no_cert' };
    if (!socket.authorized) return { identity: null, result: 'bad_cert' };
    const uris: string[] = [];
    const dnsNames: string[] = [];
    for (const part of (cert.subjectAltName ?? '').split(', ')) {
      if (part.startsWith('URI:')) uris.push(part.slice(4));
      else if (part.startsWith('DNS:')) dnsNames.push(part.slice(4).toLowerCase());
    }
    // One "type=value" per line, in certificate order, values escaped as RFC 2253 says.
    const rdns = cert.subject.split('\n');
    const cnLine = rdns.find((r) => r.startsWith('CN='));
    const identity: PeerIdentity = {
      hash: createHash('sha256').update(cert.raw).digest('hex'),
      subject: rdns.reverse().join(','),
      cn: cnLine !== undefined ? unescapeRdn(cnLine.slice(3)) : undefined,
      uris,
      dnsNames,
    };
    const allowed = this.rules.length === 0 || this.rules.some((r) => r(identity));
    return { identity, result: allowed ? 'ok' : 'not_allowed' };
  }

  classify(err: Error): HandshakeResult {
    if ((err as NodeJS.ErrnoException).code === 'ERR_TLS_HANDSHAKE_TIMEOUT') return 'timeout';
    const text = `${(err as NodeJS.ErrnoException).code ?? ''} ${err.message}`.toUpperCase();
    if (text.includes('PEER_DID_NOT_RETURN_A_CERTIFICATE') || text.includes('NO_CERTIFICATE')) return 'no_cert';
    if (/CERT|ISSUER|SELF_SIGNED|VERIFY|EXPIRED|REVOKED|UNKNOWN_CA|SIGNATURE/.test(text)) return 'bad_cert';
    return 'protocol';
  }

  /** New settings (config reload): reread everything; on failure keep the old material. */
  configure(cfg: ListenerTlsConfig): void {
    this.cfg = cfg;
    this.reload('config reload');
  }

  private reload(why: string): void {
    let next: Material;
    try {
      next = this.load(this.cfg);
    } catch (err) {
      this.observer.tlsMaterial(this.listener, false, null);
      this.log.error({ why, err: err instanceof Error ? err.message : String(err) }, 'tls reload failed; keeping the current certificates');
      return;
    }
    this.material = next;
    this.server?.setSecureContext(this.serverOptions());
    this.report(false);
    this.watch();
  }

  private watch(): void {
    const files = this.material.key.split('\0');
    if (files.join('\0') === this.watched.join('\0')) return;
    this.unwatch();
    // Polling (stat), not inotify: survives the symlink swaps of mounted secrets.
    for (const f of files) watchFile(f, { interval: 1000, persistent: false }, (cur, prev) => {
      if (cur.mtimeMs !== prev.mtimeMs || cur.size !== prev.size || cur.ino !== prev.ino) this.reload(`${f} changed`);
    });
    this.watched = files;
  }

  private unwatch(): void {
    for (const f of this.watched) unwatchFile(f);
    this.watched = [];
  }

  close(): void {
    this.unwatch();
  }
}

export interface UpstreamTlsConfig {
  readonly ca?: string | undefined;
  readonly cert?: string | undefined;
  readonly key?: string | undefined;
  readonly serverName?: string | undefined;
  readonly insecure: boolean;
}

/** Reads a service's upstream TLS files; throws BERTH_ERR_TLS naming the field. */
export function loadUpstreamTls(service: string, c: UpstreamTlsConfig): UpstreamTls {
  const r = (path: string, field: string) => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new BerthError('BERTH_ERR_TLS', `service ${service}: cannot read upstreamTls.${field} ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
    }
  };
  const material = {
    ...(c.ca !== undefined ? { ca: r(c.ca, 'ca') } : {}),
    ...(c.cert !== undefined ? { cert: r(c.cert, 'cert') } : {}),
    ...(c.key !== undefined ? { key: r(c.key, 'key') } : {}),
    minVersion: 'TLSv1.2',
  } as const;
  let secureContext: SecureContext;
  try {
    secureContext = tls.createSecureContext(material);
  } catch (err) {
    throw new BerthError('BERTH_ERR_TLS', `service ${service}: upstreamTls: ${(err as Error).message}`, { cause: err });
  }
  return {
    secureContext,
    ...(c.serverName !== undefined ? { servername: c.serverName } : {}),
    rejectUnauthorized: !c.insecure,
    minVersion: 'TLSv1.2',
  };
}
