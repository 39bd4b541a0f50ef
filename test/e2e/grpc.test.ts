/**
 * gRPC and HTTP/2 clients that are real peers, through a running berth (the built
 * binary): @grpc/grpc-js clients and servers (unary and the three streaming kinds,
 * per-call balancing over one client connection, deadlines, cancellation, berth's
 * own UNAVAILABLE), Debian's python3-grpcio as a second, independent client, curl
 * over h2c (prior knowledge) and h2 (ALPN), and h2load for a bounded load.
 */
import * as grpc from '@grpc/grpc-js';
import { execFile, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { createCa, issueCert } from '../../src/tls/certs.js';
import { listenerPort, startBerth, until } from '../helpers/net.js';

for (const bin of ['curl', 'h2load', '/usr/bin/python3']) {
  if (spawnSync('which', [bin]).status !== 0) throw new Error(`${bin} is required (Debian: curl, nghttp2-client, python3-grpcio); .ci/run installs it`);
}
if (spawnSync('/usr/bin/python3', ['-c', 'import grpc']).status !== 0) throw new Error('python3-grpcio is required; .ci/run installs it');

const dir = mkdtempSync(join(tmpdir(), 'berth-grpc-e2e-'));

/** Runs a peer to its end without blocking this process (its endpoints live here). */
function peer(cmd: string, args: string[], timeout = 60_000): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { encoding: 'utf8', timeout, maxBuffer: 8 << 20 }, (err, stdout, stderr) => resolve({ status: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr }));
  });
}
const raw = { serialize: (b: Buffer) => b, deserialize: (b: Buffer) => b };
const method = (path: string, requestStream: boolean, responseStream: boolean) => ({ path, requestStream, responseStream, requestSerialize: raw.serialize, requestDeserialize: raw.deserialize, responseSerialize: raw.serialize, responseDeserialize: raw.deserialize });
const SERVICE = {
  echo: method('/test.Svc/Echo', false, false),
  count: method('/test.Svc/Count', false, true),
  sum: method('/test.Svc/Sum', true, false),
  chat: method('/test.Svc/Chat', true, true),
  hang: method('/test.Svc/Hang', false, true),
};

/** A grpc-js server named `name`: Echo answers its name; Count streams N messages; Sum counts what it got; Chat echoes each; Hang streams nothing until cancelled. */
async function grpcServer(t: Test, name: string) {
  const seen = { calls: 0, cancelled: 0 };
  const server = new grpc.Server();
  server.addService(SERVICE as unknown as grpc.ServiceDefinition, {
    echo: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      seen.calls++;
      cb(null, Buffer.from(name));
    },
    count: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      seen.calls++;
      const n = call.request.readUInt8(0);
      for (let i = 0; i < n; i++) call.write(Buffer.from([i]));
      call.end();
    },
    sum: (call: grpc.ServerReadableStream<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      seen.calls++;
      let n = 0;
      call.on('data', () => n++);
      call.on('end', () => cb(null, Buffer.from([n])));
    },
    chat: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      seen.calls++;
      call.on('data', (b: Buffer) => call.write(b));
      call.on('end', () => call.end());
    },
    hang: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      seen.calls++;
      call.on('cancelled', () => seen.cancelled++);
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  t.teardown(() => server.forceShutdown());
  return { port, seen };
}

async function berthFor(t: Test, endpoints: number[], extra: Record<string, unknown> = {}) {
  const file = join(dir, `berth-${endpoints.join('-') || 'none'}-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      listeners: [{ name: 'grpc', bind: '127.0.0.1:0', mode: 'http', service: 'svc' }],
      services: { svc: { httpVersion: 2, balance: 'round-robin', endpoints: endpoints.map((p) => `127.0.0.1:${p}`) } },
      admin: { bind: 'off' },
      ...extra,
    }),
  );
  const berth = await startBerth(['-c', file]);
  t.teardown(() => berth.kill('SIGKILL'));
  return listenerPort(berth, 'grpc');
}

function unary(client: grpc.Client, path: string, arg: Buffer, options: grpc.CallOptions = {}): Promise<Buffer> {
  return new Promise((resolve, reject) => client.makeUnaryRequest(path, raw.serialize, raw.deserialize, arg, new grpc.Metadata(), options, (err, v) => (err ? reject(err) : resolve(v!))));
}

t.test('grpc-js: one client connection, 3,000 unary calls over 3 endpoints, each its own pick (1,000 each); the three streaming kinds', async (t) => {
  const servers = await Promise.all(['a', 'b', 'c'].map((n) => grpcServer(t, n)));
  const port = await berthFor(t, servers.map((s) => s.port));
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  t.teardown(() => client.close());
  const by = new Map<string, number>();
  for (let batch = 0; batch < 30; batch++) {
    const names = await Promise.all(Array.from({ length: 100 }, () => unary(client, SERVICE.echo.path, Buffer.alloc(0))));
    for (const n of names) by.set(n.toString(), (by.get(n.toString()) ?? 0) + 1);
  }
  t.same([...by.entries()].sort(), [
    ['a', 1000],
    ['b', 1000],
    ['c', 1000],
  ]);
  // Server streaming: 50 messages.
  const got = await new Promise<number[]>((resolve, reject) => {
    const out: number[] = [];
    const call = client.makeServerStreamRequest(SERVICE.count.path, raw.serialize, raw.deserialize, Buffer.from([50]), new grpc.Metadata(), {});
    call.on('data', (b: Buffer) => out.push(b[0]!));
    call.on('error', reject);
    call.on('end', () => resolve(out));
  });
  t.same(got, Array.from({ length: 50 }, (_, i) => i), 'server streaming: every message, in order');
  // Client streaming: 20 messages in, their count back.
  const sum = await new Promise<Buffer>((resolve, reject) => {
    const call = client.makeClientStreamRequest(SERVICE.sum.path, raw.serialize, raw.deserialize, new grpc.Metadata(), {}, (err, v) => (err ? reject(err) : resolve(v!)));
    for (let i = 0; i < 20; i++) call.write(Buffer.from([i]));
    call.end();
  });
  t.equal(sum[0], 20, 'client streaming');
  // Bidi: each message answered before the next is sent (nothing buffered on the way).
  const call = client.makeBidiStreamRequest(SERVICE.chat.path, raw.serialize, raw.deserialize, new grpc.Metadata(), {});
  const answers: number[] = [];
  for (let i = 0; i < 10; i++) {
    const next = new Promise<Buffer>((resolve) => call.once('data', resolve));
    call.write(Buffer.from([i]));
    answers.push((await next)[0]!);
  }
  const status = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
  call.on('error', () => {});
  call.end();
  t.same(answers, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'bidi streaming: message by message');
  t.equal((await status).code, grpc.status.OK, 'and it ends OK');
});

t.test('grpc-js: a deadline is DEADLINE_EXCEEDED and cancels the endpoint\'s call; a client\'s cancel reaches the endpoint; no endpoint: UNAVAILABLE with why', async (t) => {
  const server = await grpcServer(t, 'a');
  const port = await berthFor(t, [server.port]);
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  t.teardown(() => client.close());
  // Deadline: Hang never answers.
  const err = await new Promise<grpc.ServiceError>((resolve) => {
    const call = client.makeServerStreamRequest(SERVICE.hang.path, raw.serialize, raw.deserialize, Buffer.alloc(0), new grpc.Metadata(), { deadline: Date.now() + 300 });
    call.on('data', () => {});
    call.on('error', resolve);
  });
  t.equal(err.code, grpc.status.DEADLINE_EXCEEDED);
  await until(() => server.seen.cancelled === 1, 10_000, 'the endpoint saw its call cancelled');
  // The client cancels.
  const call = client.makeServerStreamRequest(SERVICE.hang.path, raw.serialize, raw.deserialize, Buffer.alloc(0), new grpc.Metadata(), {});
  call.on('error', () => {});
  await until(() => server.seen.calls === 2, 10_000, 'the second call arrived');
  call.cancel();
  await until(() => server.seen.cancelled === 2, 10_000, 'the client\'s cancel reached the endpoint');

  const emptyPort = await berthFor(t, []);
  const empty = new grpc.Client(`127.0.0.1:${emptyPort}`, grpc.credentials.createInsecure());
  t.teardown(() => empty.close());
  const unavailable = await unary(empty, SERVICE.echo.path, Buffer.alloc(0)).catch((e: grpc.ServiceError) => e);
  t.equal((unavailable as grpc.ServiceError).code, grpc.status.UNAVAILABLE);
  t.match((unavailable as grpc.ServiceError).details, /^berth: /, 'the reason, from berth');
});

t.test('python3-grpcio (gRPC\'s C core) as a second client: a call answered through berth; UNAVAILABLE from berth with its reason', async (t) => {
  const server = await grpcServer(t, 'py-target');
  const port = await berthFor(t, [server.port]);
  const emptyPort = await berthFor(t, []);
  const script = `
import grpc, sys
def call(port):
    ch = grpc.insecure_channel("127.0.0.1:%d" % port)
    f = ch.unary_unary("/test.Svc/Echo", request_serializer=None, response_deserializer=None)
    try:
        print("OK", f(b"", timeout=10).decode())
    except grpc.RpcError as e:
        print(e.code().name, e.details())
call(${port}); call(${emptyPort})
`;
  const r = await peer('/usr/bin/python3', ['-c', script]);
  t.equal(r.status, 0, r.stderr);
  const [ok, unavailable] = r.stdout.trim().split('\n');
  t.equal(ok, 'OK py-target');
  t.match(unavailable, /^UNAVAILABLE berth: /);
});

t.test('curl over h2c (prior knowledge) and h2 (ALPN, TLS), h2load for 2,000 requests on 4 connections: all answered', async (t) => {
  const web = http.createServer((req, res) => res.end(`hello ${req.httpVersion}\n`));
  await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
  t.teardown(() => web.close());
  const wport = (web.address() as AddressInfo).port;
  await createCa({ out: dir, cn: 'e2e ca', days: 2, bits: 2048 });
  await issueCert({ ca: dir, out: dir, name: 'srv', sans: [{ type: 'DNS', value: 'localhost' }], usage: 'server', days: 2, bits: 2048 });
  const file = join(dir, 'curl.json');
  writeFileSync(
    file,
    JSON.stringify({
      listeners: [
        { name: 'plain', bind: '127.0.0.1:0', mode: 'http', service: 'web' },
        { name: 'secure', bind: '127.0.0.1:0', mode: 'http', service: 'web', tls: { cert: join(dir, 'srv.pem'), key: join(dir, 'srv-key.pem') } },
      ],
      services: { web: { endpoints: [`127.0.0.1:${wport}`] } },
      admin: { bind: 'off' },
    }),
  );
  const berth = await startBerth(['-c', file]);
  t.teardown(() => berth.kill('SIGKILL'));
  const plain = listenerPort(berth, 'plain');
  const secure = listenerPort(berth, 'secure');
  const h2c = await peer('curl', ['-s', '-i', '--http2-prior-knowledge', `http://127.0.0.1:${plain}/`]);
  t.match(h2c.stdout, /^HTTP\/2 200/);
  t.match(h2c.stdout, /hello 1\.1/, 'the endpoint speaks HTTP/1.1');
  const h1 = await peer('curl', ['-s', '-i', '--http1.1', `http://127.0.0.1:${plain}/`]);
  t.match(h1.stdout, /^HTTP\/1\.1 200/, 'HTTP/1.1 on the same port');
  const tls = await peer('curl', ['-s', '-i', '--http2', '--cacert', join(dir, 'ca.pem'), '--resolve', `localhost:${secure}:127.0.0.1`, `https://localhost:${secure}/`]);
  t.match(tls.stdout, /^HTTP\/2 200/, 'ALPN h2');
  const load = await peer('h2load', ['-n', '2000', '-c', '4', '-m', '10', `http://127.0.0.1:${plain}/`]);
  t.match(load.stdout, /requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored/, load.stdout.split('\n').find((l) => l.startsWith('requests:')) ?? load.stderr);
});
