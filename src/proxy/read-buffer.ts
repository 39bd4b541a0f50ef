/**
 * Reads into reused buffers for a socket whose bytes are relayed to another one
 * (a tcp session's upstream leg), through node's `onread` option.
 *
 * Without it node allocates a fresh 64 KiB ArrayBuffer for every read. At several
 * Gbit/s that is tens of thousands a second; V8 counts them as external memory and
 * starts a major GC per ~64 MB of them, and a major GC marks berth's whole heap. With
 * `onread` the socket reads into a buffer berth hands it, and berth decides after
 * every read which buffer the next read goes into:
 *
 * - **Resting or trickling** (the last read did not fill its buffer): the next read
 *   goes into one buffer SHARED by every such socket in the process. Its bytes are
 *   copied out, into a chunk of their exact size, before anything can keep a reference
 *   to them — so no idle connection pins memory of its own (node's `onread` holds its
 *   buffer for the socket's whole life), and a write that node had to queue never
 *   points into the shared buffer.
 * - **Streaming** (the last read filled its buffer, so the kernel holds more): the
 *   next read goes into a buffer of this socket's own. When the write of what it held
 *   completed at once (the destination has nothing queued after it), that same buffer
 *   is read into again: no allocation and a buffer that stays in the CPU cache. When
 *   the write was queued, the queued write keeps that buffer and the socket gets a new
 *   one. The first read that does not fill its buffer hands the socket back to the
 *   shared one, so a burst's buffer is let go when the burst ends.
 *
 * A socket that reads into a private buffer is therefore always one with bytes
 * waiting in the kernel (or paused because its destination is full): memory that
 * HAProxy's per-connection buffers would hold too.
 *
 * The accepted (client) leg cannot do this: node offers `onread` only on sockets it
 * connects, not on those a server accepts (bench/RESULTS.md).
 */
import type net from 'node:net';

export const READ_SIZE = 64 * 1024;

const shared = Buffer.allocUnsafeSlow(READ_SIZE);
/** The buffer the socket whose read callback is running reads into next (null: shared). */
let next: Buffer | null = null;

/** node asks for the next read's buffer right after each read callback, and once at connect. */
function nextBuffer(): Buffer {
  const b = next ?? shared;
  next = null;
  return b;
}

/**
 * The bytes one read left in `buf`, as a chunk that may be handed to a write: the
 * private buffer itself (or a view of it); bytes read into the shared buffer are
 * copied out first.
 */
export function takeRead(buf: Uint8Array, n: number): Buffer {
  next = null;
  if (buf === shared) {
    const chunk = n === READ_SIZE ? Buffer.allocUnsafeSlow(READ_SIZE) : Buffer.allocUnsafe(n);
    shared.copy(chunk, 0, 0, n);
    return chunk;
  }
  const b = buf as Buffer;
  return n === b.length ? b : b.subarray(0, n);
}

/**
 * Called once the chunk `takeRead` returned was written to `out` (or dropped):
 * chooses the buffer the socket reads into next. Must be the read callback's last
 * step: node asks for that buffer as soon as the callback returns.
 */
export function readRelayed(chunk: Buffer, out: net.Socket): void {
  // A read that did not fill its buffer: the stream may rest here; back to the shared one.
  if (chunk.length !== READ_SIZE || chunk.byteOffset !== 0) return;
  // Nothing queued on `out` after the write: it went to the kernel whole, the buffer is free.
  next = out.writableLength === 0 ? chunk : Buffer.allocUnsafeSlow(READ_SIZE);
}

/** `onread` options for a relayed socket; `callback` runs for every read (this = the socket). */
export function relayedReads(callback: (this: net.Socket, n: number, buf: Uint8Array) => boolean): net.OnReadOpts {
  return { buffer: nextBuffer, callback };
}
