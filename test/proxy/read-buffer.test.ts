import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import t from 'tap';
import { READ_SIZE, readRelayed, relayedReads, takeRead } from '../../src/proxy/read-buffer.js';
import { endpoint, proxyFor } from '../helpers/proxy.js';
import { tcpServer, until } from '../helpers/net.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** What node does around one read: the callback, then it asks for the next buffer. */
function read(gen: () => Uint8Array, buf: Uint8Array, bytes: Buffer, queuedAfterWrite: number): { chunk: Buffer; next: Uint8Array } {
  bytes.copy(buf as Buffer);
  const chunk = takeRead(buf, bytes.length);
  readRelayed(chunk, { writableLength: queuedAfterWrite } as net.Socket);
  return { chunk, next: gen() };
}

t.test('which buffer each read goes into', async (t) => {
  const gen = relayedReads(() => true).buffer as () => Uint8Array;
  const shared = gen();
  t.equal(gen(), shared, 'every socket starts on the one shared buffer');
  t.equal(shared.length, READ_SIZE);

  // A small read lands in the shared buffer: copied out at its size, next read shared again.
  const small = randomBytes(100);
  let r = read(gen, shared, small, 0);
  t.ok(r.chunk.equals(small), 'bytes intact');
  t.not(r.chunk.buffer, shared.buffer, 'the chunk does not point into the shared buffer');
  t.equal(r.next, shared, 'a read that did not fill the buffer: back to shared');

  // A full read (the kernel holds more): copied into a private buffer that the socket keeps.
  const full = randomBytes(READ_SIZE);
  r = read(gen, shared, full, 0);
  t.ok(r.chunk.equals(full));
  t.not(r.chunk.buffer, shared.buffer);
  t.equal(r.next, r.chunk, 'written at once: the private buffer is read into next');
  const mine = r.next;

  // Full reads into it, written at once: the same buffer every time (no allocation).
  r = read(gen, mine, randomBytes(READ_SIZE), 0);
  t.equal(r.chunk, mine, 'the chunk is the buffer itself');
  t.equal(r.next, mine, 'reused');

  // The write was queued (the destination still holds bytes): that buffer stays with
  // the queued write, the socket gets a fresh one.
  const queued = randomBytes(READ_SIZE);
  r = read(gen, mine, queued, 1);
  t.not(r.next, mine, 'a queued write keeps its buffer; the next read goes elsewhere');
  t.not(r.next, shared);
  t.equal(r.next.length, READ_SIZE);
  t.ok(r.chunk.equals(queued), 'the queued chunk is untouched by what comes next');
  const fresh = r.next;
  read(gen, fresh, randomBytes(READ_SIZE), 0);
  t.ok(r.chunk.equals(queued), 'still untouched after the next read');

  // The burst ends with a read that does not fill the buffer: back to shared, the private one let go.
  r = read(gen, fresh, randomBytes(10), 0);
  t.equal(r.chunk.length, 10);
  t.equal(r.chunk.buffer, fresh.buffer, 'a partial read into a private buffer is a view of it, no copy');
  t.equal(r.next, shared, 'an idle connection holds no buffer of its own');

  // A full read into the shared buffer whose write was queued: a fresh private buffer next.
  r = read(gen, shared, randomBytes(READ_SIZE), 1);
  t.not(r.next, shared);
  t.not(r.next, r.chunk);
});

t.test('many streams at once through reused buffers, some held while berth queues writes to them: every byte where it belongs', async (t) => {
  // Each endpoint sends its own random payload. Half the clients stop reading until
  // berth has writes queued to them (its read buffers held by those writes), while the
  // other streams go on reading at full speed; then they read in fits and starts. A
  // buffer reused too early, or the shared buffer handed to a write, would put one
  // stream's bytes into another's.
  const streams = 16;
  const size = 8 * 1024 * 1024;
  const payloads = Array.from({ length: streams }, () => randomBytes(size));
  let next = 0;
  const server = await tcpServer((s) => {
    const mine = payloads[next++]!;
    s.once('data', () => s.end(mine));
  });
  const p = await proxyFor([endpoint(server.port)]);
  t.teardown(async () => {
    await p.close();
    server.close();
  });
  const held: net.Socket[] = [];
  const done = payloads.map(
    (_, i) =>
      new Promise<Buffer>((resolve, reject) => {
        const chunks: Buffer[] = [];
        const c = net.connect({ port: p.port, host: '127.0.0.1' }, () => c.write('go'));
        c.on('error', reject);
        if (i % 2 === 1) {
          c.pause();
          held.push(c);
        }
        let n = 0;
        c.on('data', (d: Buffer) => {
          chunks.push(d);
          if (i % 2 === 1 && ++n % 3 === 0) {
            c.pause();
            setImmediate(() => c.resume());
          }
        });
        c.on('end', () => resolve(Buffer.concat(chunks)));
      }),
  );
  // berth's side of each held client: bytes queued in node, not only in the kernel.
  const queued = () => [...p.listener.sessions].filter((s) => (s as unknown as { client: net.Socket }).client.writableLength > 0).length;
  await until(() => queued() >= held.length, 20_000, 'writes queued to every held client');
  for (const c of held) c.resume();
  const results = await Promise.all(done);
  const byHead = new Map(payloads.map((pl) => [sha(pl.subarray(0, 64)), pl]));
  for (const data of results) {
    const want = byHead.get(sha(data.subarray(0, 64)));
    t.ok(want, 'the stream starts with one of the payloads');
    t.equal(data.length, size);
    t.ok(want !== undefined && data.equals(want), 'byte-exact');
  }
  await until(() => p.listener.sessions.size === 0, 5000, 'sessions closed');
});
