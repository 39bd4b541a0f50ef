/**
 * gRPC over an http listener: a request is gRPC by its content-type
 * (`application/grpc`, `application/grpc+proto`, ...). berth's own answers to one —
 * no route, no endpoint, every attempt failed, the response timeout — are gRPC
 * answers, Trailers-Only (one HEADERS frame with END_STREAM: `:status 200`,
 * `grpc-status`, `grpc-message`), as Envoy sends them: a gRPC client maps an HTML
 * 502 to UNAVAILABLE too, but loses why.
 */
import { constants, type ServerHttp2Stream } from 'node:http2';

/** gRPC status codes berth answers with (grpc/doc/statuscodes.md). */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  DEADLINE_EXCEEDED: 4,
  PERMISSION_DENIED: 7,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

/** `content-type` names a gRPC request: application/grpc, or application/grpc+<codec>, or ;params. */
export function isGrpc(contentType: string | undefined): boolean {
  if (contentType === undefined || contentType.length < 16) return false;
  if (contentType.slice(0, 16).toLowerCase() !== 'application/grpc') return false;
  const next = contentType.charCodeAt(16);
  return Number.isNaN(next) || next === 43 /* + */ || next === 59 /* ; */;
}

/**
 * The gRPC status for an HTTP status berth would have sent, as gRPC's own table maps
 * them (grpc/doc/http-grpc-status-mapping.md), except 504: berth's response timeout
 * is a deadline the endpoint missed.
 */
export function grpcStatusFor(httpStatus: number): number {
  switch (httpStatus) {
    case 400:
      return GrpcStatus.INTERNAL;
    case 401:
      return GrpcStatus.UNAUTHENTICATED;
    case 403:
      return GrpcStatus.PERMISSION_DENIED;
    case 404:
      return GrpcStatus.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
      return GrpcStatus.UNAVAILABLE;
    case 504:
      return GrpcStatus.DEADLINE_EXCEEDED;
    default:
      return GrpcStatus.UNKNOWN;
  }
}

/** grpc-message is percent-encoded: anything outside printable ASCII, and '%' itself (gRPC's PROTOCOL-HTTP2.md). */
export function encodeGrpcMessage(message: string): string {
  let out = '';
  for (const b of Buffer.from(message, 'utf8')) out += b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  return out;
}

/**
 * Answers a gRPC request Trailers-Only. Returns false when the response has already
 * started (the stream can only be reset then, which the caller does).
 */
export function grpcAnswer(stream: ServerHttp2Stream, status: number, message: string): boolean {
  // (Closed: the client reset it; node has not destroyed it yet, and would throw.)
  if (stream.headersSent || stream.destroyed || stream.closed) return false;
  stream.respond(
    { [constants.HTTP2_HEADER_STATUS]: 200, 'content-type': 'application/grpc', 'grpc-status': String(status), 'grpc-message': encodeGrpcMessage(message) },
    { endStream: true },
  );
  return true;
}

/** Milliseconds per grpc-timeout unit (Hours, Minutes, Seconds, milli-, micro-, nanoseconds). */
const UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

/**
 * A request's grpc-timeout ("TimeoutValue TimeoutUnit": at most 8 digits and a
 * unit, PROTOCOL-HTTP2.md) in ms, rounded up to a whole one; 0 when absent or
 * malformed (the call then has no deadline, as gRPC servers read it).
 */
export function grpcTimeout(v: string | string[] | undefined): number {
  if (typeof v !== 'string' || v.length < 2 || v.length > 9) return 0;
  const unit = UNIT_MS[v[v.length - 1]!];
  const digits = v.slice(0, -1);
  if (unit === undefined || !/^\d+$/.test(digits)) return 0;
  // (Past a timer's range, 2^31-1 ms — some 24 days — a deadline is that range: grpc-go sends 720H for "none".)
  return Math.min(2 ** 31 - 1, Math.max(1, Math.ceil(Number(digits) * unit)));
}

/** The grpc-status an endpoint's answer carried (trailers, or the headers of a Trailers-Only answer); -1 when none. */
export function grpcStatusOf(fields: Record<string, string | string[] | undefined> | null | undefined): number {
  const v = fields?.['grpc-status'];
  if (typeof v !== 'string' || !/^\d{1,2}$/.test(v)) return -1;
  return Number(v);
}
