/**
 * Raw HTTP/2 frames (RFC 9113 §4, §6) for tests that send what node's own client
 * refuses to: connection-specific fields, upper-case names, floods, resets. Header
 * blocks are HPACK literals without indexing (RFC 7541 §6.2.2), never Huffman, so
 * any value goes out as given. A reader collects what the server sends back: frame
 * types per stream, GOAWAY, RST_STREAM, and the end of the connection.
 */
import net from 'node:net';

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
export const T = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;
export const END_STREAM = 0x1;
export const ACK = 0x1;
export const END_HEADERS = 0x4;

export function frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream & 0x7fffffff, 5);
  return Buffer.concat([h, payload]);
}

/** An HPACK integer with an N-bit prefix (RFC 7541 §5.1); the prefix bits above N are `first`. */
function int(n: number, bits: number, first = 0): Buffer {
  const max = (1 << bits) - 1;
  if (n < max) return Buffer.from([first | n]);
  const out = [first | max];
  n -= max;
  while (n >= 128) {
    out.push((n % 128) + 128);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return Buffer.from(out);
}

/** A header block of literals without indexing, new names (no Huffman). */
export function block(fields: readonly (readonly [string, string])[]): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of fields) {
    const n = Buffer.from(name, 'latin1');
    const v = Buffer.from(value, 'latin1');
    parts.push(Buffer.from([0]), int(n.length, 7), n, int(v.length, 7), v);
  }
  return Buffer.concat(parts);
}

export const GET = (path = '/', authority = 'x'): [string, string][] => [
  [':method', 'GET'],
  [':scheme', 'http'],
  [':path', path],
  [':authority', authority],
];

/** HEADERS (and CONTINUATION frames past the default 16 KiB frame size) carrying `fields`. */
export function headers(stream: number, fields: readonly (readonly [string, string])[], flags = END_HEADERS | END_STREAM): Buffer {
  const b = block(fields);
  const MAX = 16_384;
  if (b.length <= MAX) return frame(T.HEADERS, flags, stream, b);
  const out = [frame(T.HEADERS, flags & ~END_HEADERS, stream, b.subarray(0, MAX))];
  for (let at = MAX; at < b.length; at += MAX) out.push(frame(T.CONTINUATION, at + MAX >= b.length ? flags & END_HEADERS : 0, stream, b.subarray(at, at + MAX)));
  return Buffer.concat(out);
}
export function settings(entries: [number, number][] = []): Buffer {
  const p = Buffer.alloc(6 * entries.length);
  entries.forEach(([id, v], i) => {
    p.writeUInt16BE(id, 6 * i);
    p.writeUInt32BE(v, 6 * i + 2);
  });
  return frame(T.SETTINGS, 0, 0, p);
}
export const settingsAck = (): Buffer => frame(T.SETTINGS, ACK, 0);
export const ping = (n = 0): Buffer => {
  const p = Buffer.alloc(8);
  p.writeUInt32BE(n, 4);
  return frame(T.PING, 0, 0, p);
};
export function rst(stream: number, code: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(code, 0);
  return frame(T.RST_STREAM, 0, stream, p);
}
export const data = (stream: number, body: Buffer | string, flags = END_STREAM): Buffer => frame(T.DATA, flags, stream, Buffer.from(body));

/** What a raw connection received, read as frames. */
export interface Received {
  /** Frame types by stream id. */
  readonly streams: Map<number, number[]>;
  goaway: { code: number; last: number } | null;
  /** Every GOAWAY, in order. */
  readonly goaways: { code: number; last: number }[];
  /** RST_STREAM codes by stream id. */
  readonly resets: Map<number, number>;
  settingsAcks: number;
  pings: number;
  /** The payload of the last PING the server sent. */
  lastPing: Buffer | null;
  ended: boolean;
}

/**
 * A raw HTTP/2 client connection: sends the preface and an empty SETTINGS (and acks
 * the server's, unless `ack` is false), then whatever the test writes.
 */
export async function rawH2(port: number, opts: { ack?: boolean; answerPings?: boolean } = {}) {
  const sock = net.connect(port, '127.0.0.1');
  sock.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  const got: Received = { streams: new Map(), goaway: null, goaways: [], resets: new Map(), settingsAcks: 0, pings: 0, lastPing: null, ended: false };
  const waiters: { pred: () => boolean; resolve: () => void }[] = [];
  const check = () => {
    for (const w of [...waiters]) {
      if (w.pred()) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    }
  };
  let buf = Buffer.alloc(0);
  sock.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 9) {
      const len = buf.readUIntBE(0, 3);
      if (buf.length < 9 + len) break;
      const type = buf[3]!;
      const flags = buf[4]!;
      const id = buf.readUInt32BE(5) & 0x7fffffff;
      const p = buf.subarray(9, 9 + len);
      buf = buf.subarray(9 + len);
      if (type === T.SETTINGS) {
        if (flags & ACK) got.settingsAcks++;
        else if (opts.ack !== false) sock.write(settingsAck());
      } else if (type === T.GOAWAY) got.goaways.push((got.goaway = { last: p.readUInt32BE(0) & 0x7fffffff, code: p.readUInt32BE(4) }));
      // (A server's PING is answered, as every client must, unless the test answers it.)
      else if (type === T.PING && !(flags & ACK)) {
        got.lastPing = Buffer.from(p);
        if (opts.answerPings !== false) sock.write(frame(T.PING, ACK, 0, got.lastPing));
      }
      else if (type === T.RST_STREAM) got.resets.set(id, p.readUInt32BE(0));
      else if (type === T.PING && flags & ACK) got.pings++;
      if (id !== 0) {
        let l = got.streams.get(id);
        if (l === undefined) got.streams.set(id, (l = []));
        l.push(type);
      }
    }
    check();
  });
  sock.on('close', () => {
    got.ended = true;
    check();
  });
  sock.write(Buffer.concat([PREFACE, settings()]));
  return {
    sock,
    got,
    write: (b: Buffer | Buffer[]) => sock.write(Array.isArray(b) ? Buffer.concat(b) : b),
    /** Resolves once `pred` holds (checked on every frame and at close); rejects if the connection ends first without it. */
    until(pred: (g: Received) => boolean, what: string, ms = 10_000): Promise<void> {
      if (pred(got)) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms (${JSON.stringify({ goaway: got.goaway, ended: got.ended, resets: [...got.resets], streams: [...got.streams] })})`)), ms);
        waiters.push({
          pred: () => pred(got) || got.ended,
          resolve: () => {
            clearTimeout(timer);
            if (pred(got)) resolve();
            else reject(new Error(`${what}: the connection ended first (${JSON.stringify({ goaway: got.goaway, resets: [...got.resets], streams: [...got.streams] })})`));
          },
        });
      });
    },
    close: () => sock.destroy(),
  };
}
