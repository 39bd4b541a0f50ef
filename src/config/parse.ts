import ms from 'ms';
import type { EndpointSpec, HostPort } from '../core/types.js';

/** A parse result that says what was expected instead of throwing. */
export type Parsed<T> = { ok: true; value: T } | { ok: false; message: string };

const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)$/;

/** "250ms", "2s", "1m", "1h" → milliseconds. A unit is required: a bare number is ambiguous. */
export function parseDuration(input: string): Parsed<number> {
  const s = input.trim();
  if (!DURATION.test(s)) return { ok: false, message: `expected a duration like 250ms, 2s or 1m, got "${input}"` };
  const value = ms(s as ms.StringValue);
  if (typeof value !== 'number' || !Number.isFinite(value)) return { ok: false, message: `expected a duration like 250ms, 2s or 1m, got "${input}"` };
  return { ok: true, value };
}

function parsePort(s: string): number | undefined {
  if (!/^\d{1,5}$/.test(s)) return undefined;
  const n = Number(s);
  return n >= 0 && n <= 65535 ? n : undefined;
}

/**
 * "[host:]port", "host:port" or "[v6]:port". With `allowNoHost`, a bare port (or
 * ":port") binds `defaultHost`. Port 0 only where `allowZeroPort` (listen on any port).
 */
export function parseHostPort(input: string, opts: { defaultHost?: string; allowZeroPort?: boolean } = {}): Parsed<HostPort> {
  const s = input.trim();
  const expected = opts.defaultHost !== undefined ? 'expected [host:]port' : 'expected host:port';
  let host: string;
  let portText: string;
  const v6 = /^\[([0-9a-fA-F:.%a-zA-Z]+)\]:(\d+)$/.exec(s);
  if (v6) {
    host = v6[1]!;
    portText = v6[2]!;
  } else if (/^:?\d+$/.test(s)) {
    if (opts.defaultHost === undefined) return { ok: false, message: `${expected}, got "${input}"` };
    host = opts.defaultHost;
    portText = s.replace(/^:/, '');
  } else {
    const i = s.lastIndexOf(':');
    if (i <= 0 || s.indexOf(':') !== i) return { ok: false, message: `${expected}, got "${input}"` };
    host = s.slice(0, i);
    portText = s.slice(i + 1);
    if (!/^[A-Za-z0-9._-]+$/.test(host)) return { ok: false, message: `${expected}, got "${input}" (bad host)` };
  }
  const port = parsePort(portText);
  if (port === undefined || (port === 0 && !opts.allowZeroPort)) {
    return { ok: false, message: `${expected} with a port from ${opts.allowZeroPort ? 0 : 1} to 65535, got "${input}"` };
  }
  return { ok: true, value: { host, port } };
}

/**
 * A static endpoint: "host:port[,weight=N][,maxConnections=N]". Weight 0–1000
 * (default 1); its id is host:port as written.
 */
export function parseEndpoint(input: string): Parsed<EndpointSpec> {
  const [address = '', ...opts] = input.split(',').map((p) => p.trim());
  const hp = parseHostPort(address);
  if (!hp.ok) return { ok: false, message: hp.message.replace('expected host:port', 'expected host:port[,weight=N]') };
  let weight = 1;
  let maxConnections = 0;
  for (const opt of opts) {
    const m = /^(weight|maxConnections)=(\d+)$/.exec(opt);
    if (!m) return { ok: false, message: `unknown endpoint option "${opt}"; expected weight=N or maxConnections=N` };
    const n = Number(m[2]);
    if (m[1] === 'weight') {
      if (n > 1000) return { ok: false, message: `weight must be 0 to 1000, got ${n}` };
      weight = n;
    } else {
      maxConnections = n;
    }
  }
  return {
    ok: true,
    value: { id: address, host: hp.value.host, port: hp.value.port, weight, source: 'static', ...(maxConnections > 0 ? { maxConnections } : {}) },
  };
}
