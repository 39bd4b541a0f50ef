import http from 'node:http';
import net from 'node:net';

export interface ProbeResult {
  readonly ok: boolean;
  /** What happened, for the explain endpoint: "connected", "status 503", "ECONNREFUSED", "timeout after 1000ms". */
  readonly detail: string;
}

export interface HttpProbeOptions {
  readonly path: string;
  /** Host header; default the endpoint address. */
  readonly host?: string | undefined;
  /** Status codes that pass. */
  readonly expect: (status: number) => boolean;
}

/** A TCP connect check: passes when the endpoint accepts within `timeoutMs`. */
export function tcpProbe(host: string, port: number, timeoutMs: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const done = (r: ProbeResult) => {
      clearTimeout(timer);
      s.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => done({ ok: false, detail: `timeout after ${timeoutMs}ms` }), timeoutMs);
    s.once('connect', () => done({ ok: true, detail: 'connected' }));
    s.once('error', (err: NodeJS.ErrnoException) => done({ ok: false, detail: err.code ?? err.message }));
  });
}

/** An HTTP GET check: passes on an expected status within `timeoutMs` (the body is drained and ignored). */
export function httpProbe(host: string, port: number, timeoutMs: number, o: HttpProbeOptions): Promise<ProbeResult> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (r: ProbeResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      resolve(r);
    };
    const req = http.get({ host, port, path: o.path, agent: false, headers: { host: o.host ?? (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`), 'user-agent': 'berth-health-check', connection: 'close' } }, (res) => {
      res.resume();
      const status = res.statusCode ?? 0;
      done({ ok: o.expect(status), detail: `status ${status}` });
    });
    const timer = setTimeout(() => done({ ok: false, detail: `timeout after ${timeoutMs}ms` }), timeoutMs);
    req.on('error', (err: NodeJS.ErrnoException) => done({ ok: false, detail: err.code ?? err.message }));
  });
}
