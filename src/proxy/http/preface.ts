/**
 * One plaintext port for HTTP/1.1 and HTTP/2 with prior knowledge (RFC 9113 §3.3):
 * the first bytes say which. An HTTP/2 client opens with the 24-byte connection
 * preface; no HTTP/1.1 request line starts like it ("PRI" is no method berth
 * proxies), so most connections are decided by their first byte or two. The bytes
 * read go back in front of the socket for whichever parser takes it.
 */
import type net from 'node:net';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export interface PrefaceOutcome {
  /** 'h2': the preface; 'h1': anything else. The socket is paused, its bytes unread. */
  decided(version: 'h1' | 'h2'): void;
  /** Nothing decisive within the timeout (the socket is still open). */
  timedOut(): void;
}

/** Reads `socket` (not flowing, nothing read yet) until its first bytes tell HTTP/2 from HTTP/1.1. */
export function sniffPreface(socket: net.Socket, timeoutMs: number, out: PrefaceOutcome): void {
  let got: Buffer | null = null;
  const finish = (): void => {
    socket.removeListener('readable', onReadable);
    socket.removeListener('end', onEnd);
    socket.removeListener('timeout', onTimeout);
    socket.setTimeout(0);
    if (got !== null) socket.unshift(got);
  };
  const onReadable = (): void => {
    let chunk: Buffer | null;
    while ((chunk = socket.read() as Buffer | null) !== null) {
      got = got === null ? chunk : Buffer.concat([got, chunk]);
      const n = Math.min(got.length, PREFACE.length);
      if (got.compare(PREFACE, 0, n, 0, n) !== 0) {
        finish();
        out.decided('h1');
        return;
      }
      if (got.length >= PREFACE.length) {
        finish();
        out.decided('h2');
        return;
      }
    }
  };
  const onEnd = (): void => {
    finish();
    socket.destroy();
  };
  const onTimeout = (): void => {
    finish();
    out.timedOut();
  };
  socket.on('readable', onReadable);
  socket.once('end', onEnd);
  socket.setTimeout(timeoutMs);
  socket.once('timeout', onTimeout);
}
