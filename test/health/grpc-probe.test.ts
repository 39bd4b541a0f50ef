/**
 * The grpc health check (grpc.health.v1.Health/Check over HTTP/2): against a real
 * gRPC server (@grpc/grpc-js with grpc-health-check's service) in h2c and over TLS
 * with ALPN h2, and against a hand-made HTTP/2 server for what a well-behaved one
 * never sends (Trailers-Only errors, other HTTP statuses, resets, garbage, silence).
 * Plus the two protobuf fields it writes and reads.
 */
import { once } from 'node:events';
import { mkdtempSync, readFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import t, { type Test } from 'tap';
import { grpcProbe, healthCheckRequest, servingStatusOf } from '../../src/health/probe.js';
import { createCa, issueCert } from '../../src/tls/certs.js';
import { freePort } from '../helpers/net.js';

/** A real gRPC server with the standard health service; `creds` insecure unless given. */
async function grpcServer(t: Test, statuses: Record<string, 'SERVING' | 'NOT_SERVING' | 'UNKNOWN'>, creds = grpc.ServerCredentials.createInsecure()) {
  const server = new grpc.Server();
  const health = new HealthImplementation(statuses);
  health.addToServer(server);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', creds, (err, p) => (err ? reject(err) : resolve(p))));
  t.teardown(() => server.forceShutdown());
  return { port, health };
}

/** An HTTP/2 server answering every stream with `answer`. */
async function h2Server(t: Test, answer: (stream: http2.ServerHttp2Stream, body: Buffer) => void) {
  const server = http2.createServer();
  server.on('stream', (stream) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => answer(stream, Buffer.concat(chunks)));
    stream.on('error', () => {});
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  return (server.address() as AddressInfo).port;
}

/** A HealthCheckResponse with `status`, length-prefixed. */
const response = (status: number): Buffer => Buffer.from([0, 0, 0, 0, 2, 0x08, status]);

t.test('the request and response messages: the service name as field 1; the status read past fields it does not know', async (t) => {
  t.same([...healthCheckRequest('')], [0, 0, 0, 0, 0], 'the whole server: an empty message');
  t.same([...healthCheckRequest('api')], [0, 0, 0, 0, 5, 0x0a, 3, 0x61, 0x70, 0x69]);
  t.equal(healthCheckRequest('x'.repeat(300)).subarray(5, 8).toString('hex'), '0aac02', 'a two-byte length');
  t.equal(servingStatusOf(response(1)), 1);
  t.equal(servingStatusOf(Buffer.from([0, 0, 0, 0, 0])), 0, 'no status field: UNKNOWN');
  // A string field 2, a fixed64 field 3 and a fixed32 field 4 before the status.
  const other = Buffer.from([0x12, 2, 0x61, 0x62, 0x19, 1, 2, 3, 4, 5, 6, 7, 8, 0x25, 1, 2, 3, 4, 0x08, 2]);
  t.equal(servingStatusOf(Buffer.concat([Buffer.from([0, 0, 0, 0, other.length]), other])), 2);
  t.equal(servingStatusOf(Buffer.from([1, 0, 0, 0, 2, 0x08, 1])), undefined, 'compressed: not read');
  t.equal(servingStatusOf(Buffer.from([0, 0, 0, 0, 9, 0x08, 1])), undefined, 'shorter than its length');
  t.equal(servingStatusOf(Buffer.from([0, 0, 0, 0, 2, 0x08, 0x80])), undefined, 'a varint cut short');
  t.equal(servingStatusOf(Buffer.from([0, 0, 0, 0, 2, 0x0f, 1])), undefined, 'an unknown wire type');
  t.equal(servingStatusOf(Buffer.from([0, 0, 0, 0, 2, 0x12, 9])), undefined, 'a length past the end');
});

t.test('a real gRPC server: SERVING passes, NOT_SERVING fails, an unknown service fails; the verdict follows setStatus', async (t) => {
  const { port, health } = await grpcServer(t, { '': 'SERVING', 'api.v1.Users': 'NOT_SERVING' });
  t.match(await grpcProbe('127.0.0.1', port, 2000, { service: '' }), { ok: true, detail: 'SERVING' });
  t.match(await grpcProbe('127.0.0.1', port, 2000, { service: 'api.v1.Users' }), { ok: false, detail: 'NOT_SERVING' });
  t.match(await grpcProbe('127.0.0.1', port, 2000, { service: 'nope' }), { ok: false, detail: /^grpc-status 5 NOT_FOUND/ });
  health.setStatus('api.v1.Users', 'SERVING');
  t.match(await grpcProbe('127.0.0.1', port, 2000, { service: 'api.v1.Users' }), { ok: true });
});

t.test('a gRPC server over TLS: ALPN h2 with the service\'s upstream TLS (CA, server name)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-grpc-tls-'));
  await createCa({ out: dir, cn: 'grpc ca', days: 2, bits: 2048 });
  await issueCert({ ca: dir, out: dir, name: 'server', sans: [{ type: 'DNS', value: 'api.internal' }], usage: 'server', days: 2, bits: 2048 });
  const creds = grpc.ServerCredentials.createSsl(null, [{ cert_chain: readFileSync(join(dir, 'server.pem')), private_key: readFileSync(join(dir, 'server-key.pem')) }]);
  const { port } = await grpcServer(t, { '': 'SERVING' }, creds);
  const ctx = tls.createSecureContext({ ca: readFileSync(join(dir, 'ca.pem')) });
  t.match(await grpcProbe('127.0.0.1', port, 3000, { service: '', tls: { secureContext: ctx, servername: 'api.internal', rejectUnauthorized: true } }), { ok: true, detail: 'SERVING' });
  t.match(await grpcProbe('127.0.0.1', port, 3000, { service: '', tls: { secureContext: ctx, servername: 'other.internal', rejectUnauthorized: true } }), { ok: false, detail: /ERR_TLS_CERT_ALTNAME_INVALID|altname/i }, 'a certificate for another name fails');
  t.match(await grpcProbe('127.0.0.1', port, 3000, { service: '' }), { ok: false }, 'h2c to a TLS port fails');
});

t.test('no health service (UNIMPLEMENTED, Trailers-Only), another HTTP status, a reset, garbage, silence, a refused port, an HTTP/1.1 server: each fails with why', async (t) => {
  const unimplemented = await h2Server(t, (s) => s.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '12', 'grpc-message': 'unknown%20service' }, { endStream: true }));
  t.match(await grpcProbe('127.0.0.1', unimplemented, 2000, { service: '' }), { ok: false, detail: 'grpc-status 12 UNIMPLEMENTED: unknown service' });
  const status503 = await h2Server(t, (s) => s.respond({ ':status': 503 }, { endStream: true }));
  t.match(await grpcProbe('127.0.0.1', status503, 2000, { service: '' }), { ok: false, detail: 'http status 503' });
  const reset = await h2Server(t, (s) => s.close(http2.constants.NGHTTP2_REFUSED_STREAM));
  t.match(await grpcProbe('127.0.0.1', reset, 2000, { service: '' }), { ok: false, detail: 'stream reset (NGHTTP2_REFUSED_STREAM)' });
  const garbage = await h2Server(t, (s) => {
    s.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '0' }));
    s.end(Buffer.from([0, 0, 0, 0, 3, 0x08]));
  });
  t.match(await grpcProbe('127.0.0.1', garbage, 2000, { service: '' }), { ok: false, detail: 'malformed health answer' });
  const noStatus = await h2Server(t, (s) => {
    s.respond({ ':status': 200, 'content-type': 'application/grpc' });
    s.end(response(1));
  });
  t.match(await grpcProbe('127.0.0.1', noStatus, 2000, { service: '' }), { ok: false, detail: 'no grpc-status' }, 'SERVING without a grpc-status is no answer');
  const serving = await h2Server(t, (s, body) => {
    t.same([...body], [...healthCheckRequest('svc')], 'the request as sent');
    t.equal(s.sentHeaders, undefined);
    s.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '0' }));
    s.end(response(1));
  });
  t.match(await grpcProbe('127.0.0.1', serving, 2000, { service: 'svc' }), { ok: true, detail: 'SERVING' }, 'the hand-made server, well-behaved');
  const silent = await h2Server(t, () => {});
  t.match(await grpcProbe('127.0.0.1', silent, 300, { service: '' }), { ok: false, detail: 'timeout after 300ms' });
  t.match(await grpcProbe('127.0.0.1', await freePort(), 2000, { service: '' }), { ok: false, detail: 'ECONNREFUSED' });
  const h1 = http.createServer((_, res) => res.end('hello'));
  h1.listen(0, '127.0.0.1');
  await once(h1, 'listening');
  t.teardown(() => h1.close());
  t.match(await grpcProbe('127.0.0.1', (h1.address() as AddressInfo).port, 2000, { service: '' }), { ok: false }, 'an HTTP/1.1 server fails');
});
