/**
 * Header work of the HTTP proxy (RFC 9110 §7.6.1, RFC 9112 §6-7): framing checks
 * that node's parser does not already make, hop-by-hop removal both ways, and the
 * X-Forwarded-* chain. Everything works on node's flat rawHeaders arrays and
 * compares names without lowercasing them (no allocation per header).
 */
import { STATUS_CODES, type IncomingHttpHeaders } from 'node:http';

/** `name` equals `lower` (an all-lowercase ASCII name) ignoring ASCII case. */
export function eqLower(name: string, lower: string): boolean {
  const n = lower.length;
  if (name.length !== n) return false;
  for (let i = 0; i < n; i++) if ((name.charCodeAt(i) | 0x20) !== lower.charCodeAt(i)) return false;
  return true;
}

/**
 * Hop-by-hop headers (RFC 9110 §7.6.1), plus Proxy-Connection (non-standard, still
 * sent) and, on requests, Expect (node answers 100-continue itself, so the
 * endpoint must not wait for a second one). Indexed by length for a cheap first test.
 */
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade'];
const byLength = (names: readonly string[]): (readonly string[] | undefined)[] => {
  const t: string[][] = [];
  for (const n of names) (t[n.length] ??= []).push(n);
  return t;
};
const HOP_BY_LEN = byLength(HOP_BY_HOP);
/** Request headers berth replaces or drops besides hop-by-hop ones. */
const REQUEST_DROP_BY_LEN = byLength([...HOP_BY_HOP, 'expect', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'forwarded', 'x-forwarded-client-cert']);

function inTable(table: (readonly string[] | undefined)[], name: string): boolean {
  const c = table[name.length];
  if (c === undefined) return false;
  for (const n of c) if (eqLower(name, n)) return true;
  return false;
}

/** The tokens of every Connection header (lowercased), or null when none names anything to drop. */
function connectionTokens(raw: readonly string[]): string[] | null {
  let out: string[] | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    if (!eqLower(raw[i]!, 'connection')) continue;
    for (const t of raw[i + 1]!.split(',')) {
      const tok = t.trim().toLowerCase();
      // close / keep-alive / upgrade are dropped anyway; only other names need a list.
      // Host is never hop-by-hop: "Connection: Host" must not take it away (the
      // endpoint would then see berth's upstream address as the Host).
      if (tok !== '' && tok !== 'close' && tok !== 'keep-alive' && tok !== 'upgrade' && tok !== 'host') (out ??= []).push(tok);
    }
  }
  return out;
}

function named(tokens: string[] | null, name: string): boolean {
  if (tokens === null) return false;
  for (const t of tokens) if (eqLower(name, t)) return true;
  return false;
}

/** What the request head says, for checks and routing. */
export interface RequestFacts {
  /** The Host header value (undefined when absent). */
  host: string | undefined;
  /** Why the head is refused (400), or null. */
  bad: string | null;
  /** The request has a body (Content-Length > 0 or chunked). */
  hasBody: boolean;
  xff: string | undefined;
  xfProto: string | undefined;
  xfHost: string | undefined;
}

/**
 * Checks a request head that node's strict parser (llhttp) has accepted. llhttp
 * already refuses Content-Length with Transfer-Encoding, duplicate or invalid
 * Content-Length, a Transfer-Encoding whose last coding is not chunked, bare CR or
 * LF, obs-fold and bad characters. Left for here: Transfer-Encoding on HTTP/1.0,
 * a coding other than plain chunked (berth re-frames the body, so a gzip coding
 * would reach the endpoint undeclared), no Host or more than one in HTTP/1.1
 * (RFC 9112 §3.2), HTTP/0.9.
 */
export function inspectRequest(raw: readonly string[], httpVersionMajor: number, httpVersionMinor: number): RequestFacts {
  const f: RequestFacts = { host: undefined, bad: null, hasBody: false, xff: undefined, xfProto: undefined, xfHost: undefined };
  if (httpVersionMajor !== 1) {
    f.bad = 'unsupported HTTP version';
    return f;
  }
  let hosts = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    switch (name.length) {
      case 4:
        if (eqLower(name, 'host')) {
          hosts++;
          f.host = raw[i + 1];
        }
        break;
      case 14:
        if (eqLower(name, 'content-length') && raw[i + 1] !== '0') f.hasBody = true;
        break;
      case 17:
        if (eqLower(name, 'transfer-encoding')) {
          if (httpVersionMinor === 0) f.bad = 'Transfer-Encoding in an HTTP/1.0 request';
          else if (!eqLower(raw[i + 1]!.trim(), 'chunked')) f.bad = `unsupported Transfer-Encoding "${raw[i + 1]}"`;
          f.hasBody = true;
        } else if (eqLower(name, 'x-forwarded-proto')) f.xfProto = raw[i + 1];
        break;
      case 15:
        if (eqLower(name, 'x-forwarded-for')) f.xff = f.xff === undefined ? raw[i + 1] : `${f.xff}, ${raw[i + 1]}`;
        break;
      case 16:
        if (eqLower(name, 'x-forwarded-host')) f.xfHost = raw[i + 1];
        break;
    }
  }
  if (hosts > 1) f.bad = 'more than one Host header';
  else if (hosts === 0 && httpVersionMinor >= 1) f.bad = 'no Host header (required in HTTP/1.1)';
  else if (f.host !== undefined && !validHost(f.host)) f.bad = 'invalid Host header';
  return f;
}

/** What an HTTP/2 request's head says: its pseudo-header fields, beside the facts of an HTTP/1.1 one. */
export interface H2RequestFacts extends RequestFacts {
  method: string;
  path: string;
  /** An extended CONNECT's :protocol (RFC 8441: "websocket"); undefined otherwise. */
  protocol: string | undefined;
  /** The head as it came (node's rawHeaders: pseudo-header fields first). */
  raw: readonly string[];
  /** Its content-type and grpc-timeout (a gRPC call's), as sent. */
  contentType: string | undefined;
  grpcTimeout: string | undefined;
}

/** A field name HTTP/2 allows: a token in lower case (RFC 9113 §8.2.1). */
const H2_NAME_RE = /^[a-z0-9!#$%&'*+\-.^_`|~]+$/;
/** A field value HTTP/2 refuses: NUL, CR or LF anywhere, whitespace at either end (RFC 9113 §8.2.1). */
const H2_BAD_VALUE_RE = /[\0\r\n]|^[ \t]|[ \t]$/;
/** A method as llhttp takes one (upper-case letters, '-' as in M-SEARCH). */
const H2_METHOD_RE = /^[A-Z][A-Z-]{0,31}$/;
/** A request target's bytes as llhttp takes them: visible ASCII, no space. */
const H2_PATH_RE = /^[\x21-\x7e]+$/;
/** Connection-specific fields (RFC 9113 §8.2.2); te is allowed as "trailers" only. */
const H2_CONNECTION_FIELDS = byLength(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade']);

/**
 * Checks an HTTP/2 request head before any of it goes to an endpoint, which may
 * take it as HTTP/1.1: a request that would read differently there is refused (400)
 * here ("HTTP/2: The Sequel is Always Worse"). nghttp2 already refuses most of
 * these with a stream reset; this is the second, berth-owned line, and the one that
 * knows about Host. `raw`: node's rawHeaders (pseudo-header fields first);
 * `endStream`: the HEADERS frame ended the stream (no body).
 */
export function inspectH2Request(raw: readonly string[], endStream: boolean): H2RequestFacts {
  const f: H2RequestFacts = { host: undefined, bad: null, hasBody: !endStream, xff: undefined, xfProto: undefined, xfHost: undefined, method: '', path: '', protocol: undefined, raw, contentType: undefined, grpcTimeout: undefined };
  let authority: string | undefined;
  let hostField: string | undefined;
  let scheme: string | undefined;
  let regular = false;
  let length: string | undefined;
  const bad = (why: string): H2RequestFacts => {
    f.bad = why;
    return f;
  };
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    if (H2_BAD_VALUE_RE.test(value)) return bad(`invalid value in ${name}`);
    if (name.charCodeAt(0) === 58 /* : */) {
      if (regular) return bad(`pseudo-header field ${name} after a regular field`);
      let seen: boolean;
      switch (name) {
        case ':method':
          seen = f.method !== '';
          f.method = value;
          break;
        case ':path':
          seen = f.path !== '';
          f.path = value;
          break;
        case ':scheme':
          seen = scheme !== undefined;
          scheme = value;
          break;
        case ':authority':
          seen = authority !== undefined;
          authority = value;
          break;
        case ':protocol':
          seen = f.protocol !== undefined;
          f.protocol = value;
          break;
        default:
          return bad(`unknown pseudo-header field ${name}`);
      }
      if (seen) return bad(`more than one ${name}`);
      continue;
    }
    regular = true;
    if (!H2_NAME_RE.test(name)) return bad(`invalid field name "${name}"`);
    if (inTable(H2_CONNECTION_FIELDS, name)) return bad(`connection-specific field ${name}`);
    switch (name) {
      case 'te':
        if (value !== 'trailers') return bad(`te "${value}" (only "trailers" is allowed)`);
        break;
      case 'host':
        if (hostField !== undefined) return bad('more than one host field');
        hostField = value;
        break;
      case 'content-length':
        if (!/^\d{1,15}$/.test(value) || (length !== undefined && length !== value)) return bad(`invalid content-length "${value}"`);
        length = value;
        break;
      case 'x-forwarded-for':
        f.xff = f.xff === undefined ? value : `${f.xff}, ${value}`;
        break;
      case 'x-forwarded-proto':
        f.xfProto = value;
        break;
      case 'x-forwarded-host':
        f.xfHost = value;
        break;
      case 'content-type':
        f.contentType = value;
        break;
      case 'grpc-timeout':
        f.grpcTimeout = value;
        break;
    }
  }
  if (f.method === '') return bad('no :method');
  // As the HTTP/1.1 parser takes them: an upper-case method; a path of visible ASCII.
  if (!H2_METHOD_RE.test(f.method)) return bad(`invalid :method "${f.method}"`);
  if (f.protocol !== undefined) {
    // Extended CONNECT (RFC 8441 §4): a tunnel, with :scheme, :path and :authority as a
    // request has them; its stream carries the tunnel's bytes, never a framed body.
    if (f.method !== 'CONNECT') return bad(':protocol without CONNECT');
    if (length !== undefined) return bad('content-length on an extended CONNECT');
    f.hasBody = false;
  } else if (f.method === 'CONNECT') return f;
  if (scheme !== 'http' && scheme !== 'https') return bad(scheme === undefined ? 'no :scheme' : `unsupported :scheme "${scheme}"`);
  if (f.path === '') return bad('no :path');
  if (f.path.charCodeAt(0) !== 47 /* / */ && !(f.path === '*' && f.method === 'OPTIONS')) return bad(':path does not start with /');
  if (!H2_PATH_RE.test(f.path)) return bad(':path with a byte outside visible ASCII');
  if (authority !== undefined && hostField !== undefined && authority.toLowerCase() !== hostField.toLowerCase()) return bad(':authority and host disagree');
  f.host = authority ?? hostField;
  if (f.host === undefined) return bad('no :authority or host');
  if (!validHost(f.host) || f.host === '') return bad('invalid :authority');
  if (length !== undefined && length !== '0' && endStream) return bad('content-length with no body');
  return f;
}

/**
 * Host = uri-host [ ":" port ] (RFC 9110 §7.2, RFC 3986 §3.2.2): a bracketed IP
 * literal or a reg-name (unreserved, pct-encoded, sub-delims). Refuses what an
 * endpoint could take for a path or userinfo ("x/y", "user@x") or a second token ("a b").
 */
const HOST_RE = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?$/;
export function validHost(host: string): boolean {
  // Fast path (once per request): names and IPv4 with a port, in one pass.
  let colon = -1;
  for (let i = 0; i < host.length; i++) {
    const c = host.charCodeAt(i);
    if ((c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 46 || c === 45 || (c >= 65 && c <= 90)) continue;
    if (c === 58 && colon < 0) {
      colon = i;
      continue;
    }
    return HOST_RE.test(host);
  }
  if (colon < 0) return true;
  for (let i = colon + 1; i < host.length; i++) {
    const c = host.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}

/** The X-Forwarded-* values berth sends, decided per request. */
export interface Forwarded {
  readonly for: string;
  readonly proto: string;
  readonly host: string | undefined;
  /** X-Forwarded-Client-Cert of a verified client (mTLS); any incoming one is always dropped. */
  readonly clientCert?: string | undefined;
}

/**
 * The request headers for the endpoint: the client's, minus hop-by-hop headers,
 * headers named by Connection, Expect and any incoming X-Forwarded-* / Forwarded /
 * X-Forwarded-Client-Cert, plus berth's X-Forwarded-For/-Proto/-Host (and XFCC). `upgrade` keeps Connection: upgrade
 * and the Upgrade header (a tunnel is asked for end to end). `host` replaces the
 * Host header (absolute-form request targets).
 */
export function upstreamRequestHeaders(raw: readonly string[], fwd: Forwarded, upgrade: string | null, host: string | null): string[] {
  const tokens = connectionTokens(raw);
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (inTable(REQUEST_DROP_BY_LEN, name) || named(tokens, name)) continue;
    if (host !== null && eqLower(name, 'host')) continue;
    out.push(name, raw[i + 1]!);
  }
  if (host !== null) out.push('host', host);
  if (upgrade !== null) out.push('connection', 'upgrade', 'upgrade', upgrade);
  out.push('x-forwarded-for', fwd.for, 'x-forwarded-proto', fwd.proto);
  if (fwd.host !== undefined) out.push('x-forwarded-host', fwd.host);
  if (fwd.clientCert !== undefined) out.push('x-forwarded-client-cert', fwd.clientCert);
  return out;
}

/**
 * The request headers for the endpoint of an HTTP/2 request: its regular fields
 * minus those berth replaces (as for HTTP/1.1), Host from `host` (the :authority),
 * and cookie fields — which HTTP/2 may split — joined with "; " into one (RFC 9113
 * §8.2.3), as an HTTP/1.1 endpoint expects. `wsKey`: an extended CONNECT going out
 * as a WebSocket handshake (RFC 8441 §5) takes the Sec-WebSocket-Key berth made.
 */
export function upstreamRequestHeadersH2(raw: readonly string[], fwd: Forwarded, host: string, wsKey: string | null = null): string[] {
  const out: string[] = [];
  let cookie: string | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.charCodeAt(0) === 58 /* : */ || name === 'host' || inTable(REQUEST_DROP_BY_LEN, name)) continue;
    if (wsKey !== null && (name === 'sec-websocket-key' || name === 'sec-websocket-accept')) continue;
    if (name === 'cookie') {
      cookie = cookie === null ? raw[i + 1]! : `${cookie}; ${raw[i + 1]!}`;
      continue;
    }
    out.push(name, raw[i + 1]!);
  }
  out.push('host', host);
  if (cookie !== null) out.push('cookie', cookie);
  out.push('x-forwarded-for', fwd.for, 'x-forwarded-proto', fwd.proto);
  if (fwd.host !== undefined) out.push('x-forwarded-host', fwd.host);
  if (fwd.clientCert !== undefined) out.push('x-forwarded-client-cert', fwd.clientCert);
  if (wsKey !== null) out.push('sec-websocket-key', wsKey);
  return out;
}

/**
 * An endpoint's response headers (undici's object form: lowercase names) as a flat
 * list for writeHead, minus hop-by-hop headers and those named by Connection.
 * A transfer coding other than chunked (`gzip, chunked`) cannot be dropped like the
 * chunked framing undici has undone: it is sent on, re-framed as chunked by node;
 * an HTTP/1.0 or HTTP/2 client cannot receive it (`noCodings`: throws). 204 and 1xx carry no framing fields.
 */
export function downstreamResponseHeaders(headers: IncomingHttpHeaders, status = 200, noCodings = false): string[] {
  const tokens = responseConnectionTokens(headers);
  const out: string[] = [];
  for (const name in headers) {
    if (inTable(HOP_BY_LEN, name) || named(tokens, name)) continue;
    const v = headers[name];
    if (v === undefined) continue;
    if (typeof v === 'string') out.push(name, v);
    else for (const x of v) out.push(name, x);
  }
  if (status === 204 || status < 200) return withoutFraming(out);
  const codings = transferCodings(headers);
  if (codings.length > 0) {
    if (noCodings) throw codingsError(codings);
    out.push('transfer-encoding', `${codings.join(', ')}, chunked`);
  }
  return out;
}

/** The fields a response's Connection names (hop-by-hop for it), or null. */
function responseConnectionTokens(headers: IncomingHttpHeaders): string[] | null {
  const conn = headers.connection;
  return conn === undefined ? null : connectionTokens(['connection', Array.isArray(conn) ? conn.join(',') : conn]);
}

/** A response's transfer codings other than chunked (which undici has undone). */
function transferCodings(headers: IncomingHttpHeaders): string[] {
  const te = headers['transfer-encoding'];
  if (te === undefined) return [];
  return (Array.isArray(te) ? te.join(',') : te)
    .split(',')
    .map((c) => c.trim().toLowerCase())
    .filter((c) => c !== '' && c !== 'chunked');
}

function codingsError(codings: string[]): Error {
  return Object.assign(new Error(`transfer coding ${codings.join(', ')} cannot be sent to an HTTP/1.0 or HTTP/2 client`), { code: 'BERTH_ERR_TRANSFER_CODING' });
}

/**
 * The same for an HTTP/2 client, as the fields node's respond() takes, `:status`
 * included: one object, no list in between. A transfer coding other than chunked
 * cannot be sent to it (throws); 204 and 1xx carry no content-length.
 */
export function downstreamResponseFields(headers: IncomingHttpHeaders, status: number): Record<string, string | string[] | number> {
  const tokens = responseConnectionTokens(headers);
  const bodiless = status === 204 || status < 200;
  const out: Record<string, string | string[] | number> = { ':status': status };
  for (const name in headers) {
    if (inTable(HOP_BY_LEN, name) || named(tokens, name) || (bodiless && name === 'content-length')) continue;
    const v = headers[name];
    if (v !== undefined) out[name] = v;
  }
  if (!bodiless) {
    const codings = transferCodings(headers);
    if (codings.length > 0) throw codingsError(codings);
  }
  return out;
}

function withoutFraming(list: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < list.length; i += 2) if (!eqLower(list[i]!, 'content-length')) out.push(list[i]!, list[i + 1]!);
  return out;
}

/** obs-text and visible ASCII, as node writes them; anything else (undici's U+FFFD for bytes it could not decode) is not sent on. */
const REASON_RE = /^[\t\x20-\x7e\x80-\xff]*$/;
const ASCII_REASON_RE = /^[\t\x20-\x7e]*$/;

/** The reason phrase to send: the endpoint's when node can write it, else the standard one. */
export function reasonPhrase(status: number, message: string | undefined): string {
  if (message === 'OK' || (message !== undefined && message !== '' && ASCII_REASON_RE.test(message))) return message;
  if (message !== undefined && message !== '' && !message.includes('\uFFFD')) {
    // undici decodes the phrase as UTF-8: where that was lossless, these are the
    // endpoint's own bytes again, as the latin1 characters node writes one byte each.
    const bytes = Buffer.from(message, 'utf8').toString('latin1');
    if (REASON_RE.test(bytes)) return bytes;
  }
  // Bytes that did not survive decoding: the standard phrase, never a third form.
  return STATUS_CODES[status] ?? '';
}

/** A header value node would refuse to write (CR, LF, NUL and other controls). */
const BAD_VALUE_RE = /[^\t\x20-\x7e\x80-\xff]/;

/**
 * The head of an interim response (1xx) or of a 101 (`upgrade`: the protocol
 * agreed), hop-by-hop fields removed. Throws on a value that cannot be written.
 */
export function interimHead(status: number, reason: string, headers: IncomingHttpHeaders, upgrade?: string): string {
  let s = `HTTP/1.1 ${status} ${reason}\r\n`;
  const list = downstreamResponseHeaders(headers, status);
  for (let i = 0; i < list.length; i += 2) {
    const v = list[i + 1]!;
    if (BAD_VALUE_RE.test(v)) throw Object.assign(new Error(`invalid value in interim header ${list[i]}`), { code: 'BERTH_ERR_BAD_HEADER' });
    s += `${list[i]}: ${v}\r\n`;
  }
  if (upgrade !== undefined) {
    if (BAD_VALUE_RE.test(upgrade)) throw Object.assign(new Error('invalid Upgrade value'), { code: 'BERTH_ERR_BAD_HEADER' });
    s += `connection: upgrade\r\nupgrade: ${upgrade}\r\n`;
  }
  return `${s}\r\n`;
}

/** A flat [name, value, ...] list as node's HTTP/2 header object (a name given twice keeps both values). */
export function fieldsOf(list: readonly string[]): Record<string, string | string[] | number> {
  const out: Record<string, string | string[] | number> = {};
  for (let i = 0; i < list.length; i += 2) {
    const k = list[i]!;
    const v = list[i + 1]!;
    const prev = out[k];
    out[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [String(prev), v];
  }
  return out;
}

/** Response trailers without hop-by-hop fields, or null when there are none. */
export function trailerList(trailers: IncomingHttpHeaders | null | undefined): [string, string][] | null {
  if (!trailers) return null;
  let out: [string, string][] | null = null;
  for (const name in trailers) {
    if (inTable(HOP_BY_LEN, name)) continue;
    const v = trailers[name];
    if (v === undefined) continue;
    for (const x of typeof v === 'string' ? [v] : v) (out ??= []).push([name, x]);
  }
  return out;
}

/** Methods whose repetition has the same effect as one request (RFC 9110 §9.2.2). */
export function idempotent(method: string): boolean {
  switch (method) {
    case 'GET':
    case 'HEAD':
    case 'OPTIONS':
    case 'TRACE':
    case 'PUT':
    case 'DELETE':
      return true;
    default:
      return false;
  }
}

/** A request path with a "." or ".." segment (raw or percent-encoded): routing on it could be bypassed. */
export function hasDotSegment(path: string): boolean {
  if (path.indexOf('.') < 0 && path.indexOf('%') < 0) return false;
  const q = path.indexOf('?');
  const p = (q < 0 ? path : path.slice(0, q)).replace(/%2e/gi, '.');
  return /(^|\/)\.\.?(\/|$)/.test(p);
}
