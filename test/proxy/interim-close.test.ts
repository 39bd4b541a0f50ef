/**
 * The interim-close scrubber alone: the close token goes from the 1xx heads at the
 * start of a response, however the bytes are split, and nothing else changes.
 */
import { Duplex } from 'node:stream';
import t from 'tap';
import { seededRandom } from '../../src/core/random.js';
import { scrub, scrubInterimClose } from '../../src/proxy/http/interim-close.js';

/** Feeds `input` in pieces cut at `cuts`, armed as after a request head; returns what passes. */
function run(input: string, cuts: number[]): { out: string; armed: boolean } {
  const st = { armed: true, held: null as Buffer | null };
  const bytes = Buffer.from(input, 'latin1');
  let out = '';
  let at = 0;
  for (const c of [...cuts, bytes.length]) {
    // (As the socket's read() does: a disarmed scrubber is not called.)
    const piece = bytes.subarray(at, c);
    const got = st.armed ? scrub(st, piece) : piece;
    if (got !== null) out += got.toString('latin1');
    at = c;
  }
  return { out, armed: st.armed };
}

const FINAL = 'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 7\r\n\r\nHTTP/1.';

const cases: { name: string; input: string; want: string }[] = [
  {
    name: 'close alone: the field goes',
    input: `HTTP/1.1 103 Early Hints\r\nLink: </a>\r\nConnection: close\r\n\r\n${FINAL}`,
    want: `HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n${FINAL}`,
  },
  {
    name: 'close among other tokens: they stay (the fields they name are removed downstream)',
    input: `HTTP/1.1 103 Early Hints\r\nconnection:  X-Secret , CLOSE\r\nX-Secret: s\r\n\r\nHTTP/1.1 102 Processing\r\nConnection: close\r\n\r\n${FINAL}`,
    want: `HTTP/1.1 103 Early Hints\r\nConnection: X-Secret\r\nX-Secret: s\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n${FINAL}`,
  },
  { name: 'a final response is never touched', input: FINAL, want: FINAL },
  { name: 'a 1xx without close passes as it is', input: `HTTP/1.1 103 Early Hints\r\nConnection: keep-alive\r\n\r\n${FINAL}`, want: `HTTP/1.1 103 Early Hints\r\nConnection: keep-alive\r\n\r\n${FINAL}` },
  { name: 'bare LF: left for undici to judge', input: 'HTTP/1.1 103 Early Hints\nConnection: close\n\n', want: 'HTTP/1.1 103 Early Hints\nConnection: close\n\n' },
  { name: 'not HTTP: left alone', input: 'garbage Connection: close\r\n\r\n', want: 'garbage Connection: close\r\n\r\n' },
  { name: 'a malformed field name (space before the colon): left for undici to refuse', input: 'HTTP/1.1 103 Early Hints\r\nConnection : close\r\n\r\n', want: 'HTTP/1.1 103 Early Hints\r\nConnection : close\r\n\r\n' },
  { name: 'a 101 disarms: the tunnel bytes after it are never touched', input: 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\nHTTP/1.1 103 x\r\nConnection: close\r\n\r\n', want: 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\nHTTP/1.1 103 x\r\nConnection: close\r\n\r\n' },
];

t.test('every split of each case gives the same bytes', async (t) => {
  for (const c of cases) {
    const whole = run(c.input, []);
    t.equal(whole.out, c.want, `${c.name} (one chunk)`);
    t.notOk(whole.armed && c.want.includes('HTTP/1.1 200'), `${c.name}: disarmed after the final head`);
    let same = true;
    for (let i = 1; i < c.input.length; i++) if (run(c.input, [i]).out !== c.want) same = false;
    t.ok(same, `${c.name}: cut anywhere in two`);
    const ones = run(
      c.input,
      Array.from({ length: c.input.length - 1 }, (_, i) => i + 1),
    );
    t.equal(ones.out, c.want, `${c.name}: one byte at a time`);
    const r = seededRandom(7);
    for (let n = 0; n < 50; n++) {
      const cuts = [...new Set(Array.from({ length: 4 }, () => 1 + Math.floor(r.next() * (c.input.length - 1))))].sort((a, b) => a - b);
      if (run(c.input, cuts).out !== c.want) {
        t.fail(`${c.name}: cuts ${cuts.join(',')}`);
        break;
      }
    }
  }
});

t.test('on a socket: armed by a request head, not by chunk framing; body bytes after the final head pass unchanged', async (t) => {
  const sock = new Duplex({ read() {}, write: (_c, _e, cb) => cb() });
  scrubInterimClose(sock);
  const hints = 'HTTP/1.1 103 Early Hints\r\nConnection: close\r\n\r\n';
  const read = () => (sock.read() as Buffer | null)?.toString('latin1') ?? null;
  sock.push(Buffer.from(hints, 'latin1'));
  t.equal(read(), hints, 'not armed before a request: untouched');
  sock.write('GET / HTTP/1.1\r\nhost: a\r\n\r\n', 'latin1');
  sock.push(Buffer.from(`${hints}HTTP/1.1 200 OK\r\nContent-Length: 47\r\n\r\n`, 'latin1'));
  t.equal(read(), 'HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 47\r\n\r\n');
  sock.write('\r\n5\r\n', 'latin1');
  sock.write(Buffer.from('hello'));
  sock.push(Buffer.from(hints, 'latin1'));
  t.equal(read(), hints, 'a body that looks like a 1xx head is body');
});

t.test('a 1xx head past 16 KiB (undici\'s own limit) is not held', async (t) => {
  const st = { armed: true, held: null as Buffer | null };
  const big = Buffer.from(`HTTP/1.1 103 Early Hints\r\nX: ${'a'.repeat(17_000)}`, 'latin1');
  const out = scrub(st, big);
  t.equal(out?.length, big.length, 'passed on for undici to refuse');
  t.equal(st.armed, false);
});
