/**
 * `Connection: close` on an interim (1xx) response, made harmless before undici reads it.
 *
 * undici's parser (llhttp) takes the close token of a 1xx as the end of the
 * connection and fails on the final response that follows, so berth would answer
 * 502 to an endpoint that did nothing wrong. The token means nothing there (RFC 9110
 * §7.6.1: the connection closes after the response is complete, and a 1xx is not the
 * response); berth removes it, as HAProxy does. Every other byte passes unchanged, and
 * the field's other tokens stay, so the hop-by-hop fields it names are still removed
 * downstream.
 *
 * Only the heads at the start of a response are looked at: the scrubber arms when
 * undici writes a request head (a latin1 string that is not chunk framing), reads the
 * 1xx heads that come first, and disarms at the first final status line or at
 * anything it does not recognise (undici then judges those bytes as before).
 */
import type { Duplex } from 'node:stream';

/** A 1xx head longer than this is not held for scrubbing (undici's own head limit: it refuses longer ones). */
const MAX_HELD = 16 * 1024;

const kScrub = Symbol('berth.interim-close');

interface ScrubState {
  armed: boolean;
  /** Bytes of an interim head not yet complete. */
  held: Buffer | null;
}

type Scrubbed = Duplex & { [kScrub]: ScrubState };

const HTTP1 = Buffer.from('HTTP/1.');

/**
 * Installs the scrubber on a connection to an endpoint, before undici uses it
 * (undici pulls with `read()` and writes each request head as one latin1 string).
 */
export function scrubInterimClose(socket: Duplex): void {
  const s = socket as Scrubbed;
  s[kScrub] = { armed: false, held: null };
  const read = s.read;
  const write = s.write;
  s.read = function (this: Scrubbed, n?: number) {
    const chunk = read.call(this, n) as Buffer | null;
    const st = this[kScrub];
    if (!st.armed || chunk === null) return chunk;
    return scrub(st, chunk);
  };
  s.write = function (this: Scrubbed, ...args: unknown[]) {
    const data = args[0];
    // A request head; chunk framing ("\r\n<size>\r\n") starts with CR.
    if (typeof data === 'string' && args[1] === 'latin1' && data.charCodeAt(0) !== 13) {
      const st = this[kScrub];
      st.armed = true;
      st.held = null;
    }
    return (write as (...a: unknown[]) => boolean).apply(this, args);
  } as Duplex['write'];
}

/** Passes `chunk` on, with the close token removed from the interim heads at its start. */
export function scrub(st: { armed: boolean; held: Buffer | null }, chunk: Buffer): Buffer | null {
  const buf = st.held === null ? chunk : Buffer.concat([st.held, chunk]);
  st.held = null;
  const out: Buffer[] = [];
  let pos = 0;
  while (pos < buf.length) {
    const have = Math.min(buf.length - pos, 10);
    // "HTTP/1.x 1": a status line whose class is still to be seen waits for more bytes.
    if (!startsAs(buf, pos, have)) {
      st.armed = false;
      break;
    }
    if (have < 10) {
      st.held = buf.subarray(pos);
      pos = buf.length;
      break;
    }
    if (buf[pos + 9] !== 0x31 /* '1' */) {
      st.armed = false;
      break;
    }
    if (buf.length - pos >= 12) {
      // A 101 ends HTTP on this connection: what follows is the tunnel's.
      if (buf[pos + 10] === 0x30 && buf[pos + 11] === 0x31) {
        st.armed = false;
        break;
      }
    } else {
      st.held = buf.subarray(pos);
      pos = buf.length;
      break;
    }
    const end = headEnd(buf, pos);
    if (end === -2) {
      // Bare LF or anything else: not scrubbed; undici judges it.
      st.armed = false;
      break;
    }
    if (end === -1) {
      if (buf.length - pos > MAX_HELD) st.armed = false;
      else {
        st.held = buf.subarray(pos);
        pos = buf.length;
      }
      break;
    }
    out.push(withoutClose(buf.subarray(pos, end)));
    pos = end;
  }
  if (pos < buf.length) out.push(buf.subarray(pos));
  if (out.length === 0) return null;
  return out.length === 1 ? out[0]! : Buffer.concat(out);
}

function startsAs(buf: Buffer, pos: number, n: number): boolean {
  for (let i = 0; i < n && i < 7; i++) if (buf[pos + i] !== HTTP1[i]) return false;
  // "HTTP/1.x " then the status.
  return n < 9 || buf[pos + 8] === 0x20;
}

/** The offset just past the head's empty line, -1 when it has not come yet, -2 for a bare LF or CR. */
function headEnd(buf: Buffer, pos: number): number {
  for (let i = pos; i < buf.length; i++) {
    if (buf[i] !== 0x0a) continue;
    if (i === pos || buf[i - 1] !== 0x0d) return -2;
    if (i + 1 >= buf.length) return -1;
    if (buf[i + 1] !== 0x0d) continue;
    if (i + 2 >= buf.length) return -1;
    return buf[i + 2] === 0x0a ? i + 3 : -2;
  }
  return -1;
}

/** Only a well-formed field name (no space before the colon): a malformed one is left for undici to refuse. */
const CONNECTION_RE = /^connection:/i;

/** An interim head with "close" taken out of its Connection fields (a field left empty goes). */
function withoutClose(head: Buffer): Buffer {
  const text = head.toString('latin1');
  if (!/\nconnection:[^\r]*close/i.test(text)) return head;
  const lines = text.split('\r\n');
  const kept: string[] = [];
  for (const line of lines) {
    if (!CONNECTION_RE.test(line)) {
      kept.push(line);
      continue;
    }
    const value = line.slice(line.indexOf(':') + 1);
    const tokens = value
      .split(',')
      .map((x) => x.trim())
      .filter((x) => x !== '' && x.toLowerCase() !== 'close');
    if (tokens.length > 0) kept.push(`Connection: ${tokens.join(', ')}`);
  }
  return Buffer.from(kept.join('\r\n'), 'latin1');
}
