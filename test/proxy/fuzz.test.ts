/**
 * A bounded, seeded fuzz run against one running berth (the built binary): malformed
 * requests, resets at random points, stalled TLS handshakes, CONNECT and Upgrades,
 * and an endpoint that answers with whatever hurts. After each batch berth is still
 * up and a control request gets its 200; at the end no descriptor is left open.
 *
 * BERTH_FUZZ_SEED=<n> replays a run; a failure prints the seed.
 */
import { readdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { seededRandom, type Random } from '../../src/core/random.js';
import { createCa, issueCert } from '../../src/tls/certs.js';
import { data, END_HEADERS, GET, headers, PREFACE, rst, settings, settingsAck } from '../helpers/h2-frames.js';
import { freePort, httpGet, listenerPort, startBerth, tcpServer, until } from '../helpers/net.js';

// Some 40 s alone on 2 cores; beside the rest of the suite (tap runs files in
// parallel) CI has seen it pass 120 s, the default.
t.setTimeout(360_000);

const seed = Number(process.env['BERTH_FUZZ_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
const BATCHES = 6;
const PER_BATCH = 400;
const PARALLEL = 40;

function pick<T>(r: Random, items: readonly T[]): T {
  return items[Math.floor(r.next() * items.length)]!;
}
function int(r: Random, lo: number, hi: number): number {
  return lo + Math.floor(r.next() * (hi - lo + 1));
}

/** What the hostile endpoint answers, chosen per request from the seeded stream. */
const ANSWERS: readonly ((s: net.Socket, r: Random) => void)[] = [
  (s) => s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'),
  (s) => s.write('HTTP/1.1 abc\r\n\r\n'),
  (s) => s.write('HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n'),
  (s) => s.write('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'),
  (s) => s.write('HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n'.repeat(60) + 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'),
  (s) => s.resetAndDestroy(),
  (s) => s.end(),
  () => {
    // never answers: the response timeout ends it
  },
  (s) => s.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nbad\r\n'),
  (s) => s.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\nraw bytes'),
  (s) => s.write('HTTP/1.1 200 OK\r\nX-Bad: a\u0001b\r\nContent-Length: 2\r\n\r\nok'),
  (s) => s.end('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab'),
  (s) => s.write(`HTTP/1.1 200 OK\r\nX-Big: ${'b'.repeat(70_000)}\r\nContent-Length: 2\r\n\r\nok`),
  (s, r) => s.write(Buffer.from(Array.from({ length: int(r, 1, 200) }, () => int(r, 0, 255)))),
];

const GOOD_REQUEST = 'GET /fuzz HTTP/1.1\r\nHost: a.example\r\nUser-Agent: fuzz\r\nConnection: close\r\n\r\n';
const UPGRADE = 'GET /ws HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n';
const POST = 'POST /p HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n';

/** Uploads to the well-behaved 'sink' service, which answers only once it has the whole body. */
const UPLOAD_BODY = 'u'.repeat(40);
const UPLOADS: readonly { head: string; body: string }[] = [
  { head: `POST /upload HTTP/1.1\r\nHost: a.example\r\nContent-Length: ${UPLOAD_BODY.length}\r\n\r\n`, body: UPLOAD_BODY },
  { head: 'POST /upload HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n', body: `${(UPLOAD_BODY.length / 2).toString(16)}\r\n${UPLOAD_BODY.slice(20)}\r\n14\r\n${UPLOAD_BODY.slice(20)}\r\n0\r\n\r\n` },
];

/** A request with a few bytes flipped, dropped, doubled or replaced by CR, LF, NUL, space or colon. */
function mutate(r: Random, base: string): Buffer {
  const b = [...Buffer.from(base, 'latin1')];
  for (let n = int(r, 1, 4); n > 0; n--) {
    const i = int(r, 0, b.length - 1);
    switch (int(r, 0, 3)) {
      case 0:
        b[i] = int(r, 0, 255);
        break;
      case 1:
        b.splice(i, 1);
        break;
      case 2:
        b.splice(i, 0, b[i]!);
        break;
      default:
        b[i] = pick(r, [13, 10, 0, 32, 58]);
    }
  }
  return Buffer.from(b);
}

/** Resolves when the socket closes (berth or the action ended it); a hang is reported, not waited out forever. */
function closed(s: net.Socket, ms = 20_000): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, ms);
    s.once('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

t.test(`fuzz (seed ${seed}): berth stays up, answers, and leaks no descriptor`, async (t) => {
  t.comment(`BERTH_FUZZ_SEED=${seed}`);
  const rnd = seededRandom(seed);
  const endpointSockets = new Set<net.Socket>();
  const hostile = await tcpServer((s) => {
    endpointSockets.add(s);
    s.on('close', () => endpointSockets.delete(s));
    s.on('end', () => s.end());
    let buf = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      if (!buf.includes('\r\n\r\n')) return;
      buf = '';
      pick(rnd, ANSWERS)(s, rnd);
    });
  });
  const good = await tcpServer((s) => {
    endpointSockets.add(s);
    s.on('close', () => endpointSockets.delete(s));
    let buf = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      while (buf.includes('\r\n\r\n')) {
        buf = buf.slice(buf.indexOf('\r\n\r\n') + 4);
        s.write('HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\ncontrol');
      }
    });
  });
  // Two endpoints that take an upload and answer only once it is whole: whatever a
  // client does to its upload must never count against them.
  const sink = () =>
    tcpServer((s) => {
      endpointSockets.add(s);
      s.on('close', () => endpointSockets.delete(s));
      let buf = '';
      s.on('data', (d: Buffer) => {
        buf += d.toString('latin1');
        const i = buf.indexOf('\r\n\r\n');
        if (i < 0) return;
        const head = buf.slice(0, i);
        const rest = buf.slice(i + 4);
        const cl = /content-length: (\d+)/i.exec(head);
        if (cl ? rest.length >= Number(cl[1]) : rest.endsWith('0\r\n\r\n')) {
          buf = '';
          s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
        }
      });
    });
  const sinks = [await sink(), await sink()];
  const adminPort = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'berth-fuzz-'));
  await createCa({ out: dir, cn: 'fuzz ca', days: 2, bits: 2048 });
  await issueCert({ ca: dir, out: dir, name: 'server', sans: [{ type: 'DNS', value: 'localhost' }], usage: 'server', days: 2, bits: 2048 });
  const timeouts = { connect: '1s', headers: '1s', response: '1s', idle: '5s', keepAlive: '2s', handshake: '500ms' };
  const config = {
    listeners: [
      {
        name: 'web',
        bind: '127.0.0.1:0',
        mode: 'http',
        service: 'hostile',
        routes: [
          { pathPrefix: '/control', service: 'good' },
          { pathPrefix: '/upload', service: 'sink' },
        ],
        timeouts,
        retries: 2,
      },
      { name: 'secure', bind: '127.0.0.1:0', mode: 'http', service: 'good', tls: { cert: join(dir, 'server.pem'), key: join(dir, 'server-key.pem') }, timeouts },
      { name: 'raw', bind: '127.0.0.1:0', mode: 'tcp', service: 'hostile', timeouts, maxConnections: 50 },
    ],
    services: {
      hostile: { endpoints: [`127.0.0.1:${hostile.port}`], outlier: 'off' },
      good: { endpoints: [`127.0.0.1:${good.port}`] },
      // Default outlier detection: an endpoint blamed for a client's doing would be ejected.
      sink: { endpoints: sinks.map((x) => `127.0.0.1:${x.port}`) },
    },
    admin: { bind: `127.0.0.1:${adminPort}` },
  };
  const file = join(dir, 'berth.json');
  writeFileSync(file, JSON.stringify(config));
  const berth = await startBerth(['-c', file]);
  t.teardown(() => {
    berth.kill('SIGKILL');
    for (const s of endpointSockets) s.destroy();
    hostile.close();
    good.close();
    for (const x of sinks) x.close();
  });
  /** The sink endpoints' failure counts, as the admin API shows them. */
  const sinkFailures = async () => {
    const { services } = JSON.parse((await httpGet(`http://127.0.0.1:${adminPort}/api/v1/services`)).body) as { services: { name: string; endpoints: { id: string; failuresTotal: number; health: string }[] }[] };
    return services.find((x) => x.name === 'sink')!.endpoints.map((e) => ({ id: e.id, failures: e.failuresTotal, health: e.health }));
  };
  const portOf = (name: string) => listenerPort(berth, name);
  await until(() => portOf('raw') > 0, 10_000, 'all listeners up');
  const web = portOf('web');
  const secure = portOf('secure');
  const raw = portOf('raw');
  const control = async () => (await httpGet(`http://127.0.0.1:${web}/control`)).status;
  t.equal(await control(), 200, 'control request before');
  // Descriptors with no client connected: the baseline the run must come back to.
  for (const s of endpointSockets) s.destroy();
  await until(() => endpointSockets.size === 0, 10_000, 'endpoint side idle');
  const baseline = openFds(berth.proc.pid!);
  const sinkBefore = await sinkFailures();
  t.same(
    sinkBefore.map((e) => e.failures),
    [0, 0],
  );

  // Every body offset of both framings, cut with a reset or a half-close: a client's
  // abandoned upload is its own business (half-closed ones are answered 400).
  const cuts: Promise<boolean>[] = [];
  for (const u of UPLOADS) {
    for (let at = 0; at < u.body.length; at++) {
      for (const how of ['reset-after', 'end'] as const) cuts.push(send(web, Buffer.from(u.head + u.body.slice(0, at), 'latin1'), how));
    }
  }
  t.ok((await Promise.all(cuts)).every(Boolean), 'every cut upload ended');

  const actions: readonly ((r: Random) => Promise<boolean>)[] = [
    // A valid request (the endpoint's answer is the hostile part).
    async () => send(web, Buffer.from(GOOD_REQUEST, 'latin1')),
    // A mutated request.
    async (r) => send(web, mutate(r, pick(r, [GOOD_REQUEST, POST, UPGRADE]))),
    // A request cut at a random byte, then a reset.
    async (r) => {
      const req = Buffer.from(pick(r, [GOOD_REQUEST, POST, UPGRADE]), 'latin1');
      return send(web, req.subarray(0, int(r, 0, req.length)), 'reset');
    },
    // A whole request, reset as soon as anything comes back (or at once).
    async (r) => send(web, Buffer.from(pick(r, [GOOD_REQUEST, POST]), 'latin1'), r.next() < 0.5 ? 'reset' : 'reset-on-data'),
    // An Upgrade: the endpoint may agree, refuse or break.
    async (r) => send(web, Buffer.from(UPGRADE + (r.next() < 0.5 ? 'early' : ''), 'latin1'), 'end-on-data'),
    // CONNECT, sometimes reset at once.
    async (r) => send(web, Buffer.from('CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n', 'latin1'), r.next() < 0.5 ? 'reset' : 'wait'),
    // Pipelined: valid then malformed.
    async (r) => send(web, Buffer.concat([Buffer.from(GOOD_REQUEST.replace('Connection: close\r\n', ''), 'latin1'), mutate(r, GOOD_REQUEST)])),
    // A TLS handshake that stalls after a random part of a ClientHello-like record.
    async (r) => send(secure, Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, ...Array.from({ length: int(r, 0, 40) }, () => int(r, 0, 255))])),
    // An upload to the sink cut at a random body offset, or botched (a chunk longer than its size line).
    async (r) => {
      const u = pick(r, UPLOADS);
      const botch = r.next() < 0.25;
      const body = botch ? `${u.body.slice(0, int(r, 0, u.body.length - 1))}5\r\nhelloEXTRA\r\n` : u.body.slice(0, int(r, 0, u.body.length - 1));
      return send(web, Buffer.from(u.head + body, 'latin1'), botch ? 'wait' : pick(r, ['reset-after', 'end'] as const));
    },
    // HTTP/2 (prior knowledge): a request whose frames are mutated, cut at a random
    // byte, followed by random bytes, or reset by the client; then a reset, a
    // half-close, or a wait for berth to end it.
    async (r) => {
      const req = Buffer.concat([PREFACE, settings(), settingsAck(), headers(1, GET(pick(r, ['/fuzz', '/control']), 'a.example'))]);
      let bytes: Buffer;
      switch (int(r, 0, 3)) {
        case 0:
          bytes = mutate(r, req.toString('latin1'));
          break;
        case 1:
          bytes = req.subarray(0, int(r, 0, req.length));
          break;
        case 2:
          bytes = Buffer.concat([req, Buffer.from(Array.from({ length: int(r, 1, 100) }, () => int(r, 0, 255)))]);
          break;
        default:
          bytes = Buffer.concat([req, rst(1, 8)]);
      }
      return send(web, bytes, pick(r, ['reset', 'end', 'wait'] as const));
    },
    // An HTTP/2 upload to the sink cut at a random body offset: the stream reset, or the connection.
    async (r) => {
      const head = headers(1, [[':method', 'POST'], [':scheme', 'http'], [':path', '/upload'], [':authority', 'a.example'], ['content-length', String(UPLOAD_BODY.length)]], END_HEADERS);
      const part = data(1, UPLOAD_BODY.slice(0, int(r, 0, UPLOAD_BODY.length - 1)), 0);
      const cut = r.next() < 0.5;
      return send(web, Buffer.concat([PREFACE, settings(), settingsAck(), head, part, ...(cut ? [rst(1, 8)] : [])]), cut ? 'wait' : 'reset-after');
    },
    // Raw tcp: bytes then a reset or a half-close.
    async (r) => send(raw, Buffer.from(GOOD_REQUEST, 'latin1'), r.next() < 0.5 ? 'reset' : 'end'),
  ];

  let hung = 0;
  for (let batch = 0; batch < BATCHES; batch++) {
    let next = 0;
    await Promise.all(
      Array.from({ length: PARALLEL }, async () => {
        while (next < PER_BATCH) {
          next++;
          const r = seededRandom(Math.floor(rnd.next() * 2 ** 31));
          if (!(await pick(r, actions)(r))) hung++;
        }
      }),
    );
    t.equal(berth.proc.exitCode, null, `seed ${seed}: berth is up after batch ${batch + 1}`, { stderr: berth.stderr.slice(-3000) });
    t.equal(await control(), 200, `seed ${seed}: control request answered after batch ${batch + 1}`);
  }
  t.equal(hung, 0, `seed ${seed}: every connection was ended by berth or the client (none left hanging)`);
  t.same(await sinkFailures(), sinkBefore, `seed ${seed}: no client abort counted against an endpoint, nobody ejected`);
  for (const s of endpointSockets) s.destroy();
  await until(() => openFds(berth.proc.pid!) <= baseline, 20_000, `seed ${seed}: berth back to ${baseline} descriptors (has ${openFds(berth.proc.pid!)})`, 50);
  t.pass(`no descriptor left open (${baseline})`);
  t.notOk(berth.logs.some((l) => l.level >= 50 && !/out of descriptors/.test(l.msg)), `seed ${seed}: no error logged: ${JSON.stringify(berth.logs.filter((l) => l.level >= 50).slice(0, 3))}`);
});

/**
 * One client connection: write `payload`, then wait for berth to close it ('wait'),
 * reset it at once ('reset') or once the bytes have left ('reset-after'), reset on the first byte back ('reset-on-data'),
 * end it on the first byte back ('end-on-data'), or half-close and wait ('end').
 */
async function send(port: number, payload: Buffer, how: 'wait' | 'reset' | 'reset-after' | 'reset-on-data' | 'end-on-data' | 'end' = 'wait'): Promise<boolean> {
  const s = net.connect(port, '127.0.0.1');
  s.on('error', () => {});
  const done = closed(s);
  s.once('connect', () => {
    if (how === 'reset-after') {
      // The reset after the bytes have left (the write's callback), so berth has read them.
      s.write(payload, () => s.resetAndDestroy());
      return;
    }
    s.write(payload);
    if (how === 'reset') s.resetAndDestroy();
    else if (how === 'end') s.end();
  });
  s.on('data', () => {
    if (how === 'reset-on-data') s.resetAndDestroy();
    else if (how === 'end-on-data') s.destroy();
  });
  // A client that never reads would hold berth to the idle timeout: this one reads.
  s.resume();
  return done;
}
