/** `berth status`: the admin API's services as a terminal table. */
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import type { ProviderView, Readiness, ServiceView } from '../admin/view.js';

interface ServicesAnswer {
  services: ServiceView[];
  discovery: ProviderView[];
  ready: Readiness;
}

export async function fetchJson(url: string, timeoutMs = 5000, token?: string): Promise<unknown> {
  const { status, text } = await adminCall(url, 'GET', undefined, token, timeoutMs);
  if (status === 401) throw new Error(`${url}: HTTP 401: the admin API wants a token (--admin-token-file)`);
  if (status !== 200) throw new Error(`${url}: HTTP ${status}`);
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`${url}: not JSON`);
  }
}

/** One request to an admin API (with its bearer token, when given): the status and the body's text. */
export function adminCall(url: string, method: string, body: string | undefined, token: string | undefined, timeoutMs = 5000): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {};
    if (token !== undefined) headers['authorization'] = `Bearer ${token}`;
    if (body !== undefined) {
      headers['content-type'] = 'text/plain';
      headers['content-length'] = String(Buffer.byteLength(body));
    }
    const req = http.request(url, { method, headers, timeout: timeoutMs }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('timeout', () => req.destroy(new Error(`${url}: timed out`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** Formats rows as aligned columns. */
export function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

export function renderStatus(a: ServicesAnswer): string {
  const out: string[] = [];
  out.push(a.ready.ready ? 'ready' : `NOT READY: ${a.ready.reasons.join('; ')}`);
  for (const n of a.ready.notes ?? []) out.push(`warning: ${n}`);
  for (const d of a.discovery) {
    out.push(`discovery ${d.name}: ${d.connected ? 'connected' : 'DISCONNECTED (serving last known endpoints)'}${d.lastSync ? `, last sync ${d.lastSync}` : ''}`);
    for (const k of d.skipped) out.push(`  skipped ${k.container}: ${k.reason}`);
  }
  for (const s of a.services) {
    out.push('');
    out.push(`service ${s.name} (${s.balance}; ${s.eligible}/${s.endpoints.length} in the pick set${s.listeners.length ? `; listeners ${s.listeners.join(', ')}` : ''})`);
    if (s.endpoints.length === 0) {
      out.push('  no endpoints');
      continue;
    }
    out.push(
      table(
        ['ENDPOINT', 'ADDRESS', 'SOURCE', 'STATE', 'WEIGHT', 'OPEN', 'CONN/S', 'TOTAL', 'FAILED', 'LATENCY'],
        s.endpoints.map((e) => [
          e.id,
          e.address,
          e.sources.join(','),
          e.eligible ? 'up' : `out: ${e.outReasons.join(',')}`,
          // (An operator's weight, over discovery's, is marked.)
          e.override?.weight ? `${e.weight} (admin)` : String(e.weight),
          e.maxConnections ? `${e.activeConnections}/${e.maxConnections}` : String(e.activeConnections),
          e.connectionRate.toFixed(1),
          String(e.connectionsTotal),
          String(e.failuresTotal),
          e.latencyMs ? `${e.latencyMs.toFixed(2)}ms` : '-',
        ]),
      )
        .split('\n')
        .map((l) => `  ${l}`)
        .join('\n'),
    );
  }
  return out.join('\n') + '\n';
}

/** "127.0.0.1:9901", ":9901" or a URL → the admin base URL. */
export function adminUrl(admin: string): string {
  if (/^https?:\/\//.test(admin)) return admin.replace(/\/$/, '');
  const a = admin.startsWith(':') ? `127.0.0.1${admin}` : /^\d+$/.test(admin) ? `127.0.0.1:${admin}` : admin;
  return `http://${a}`;
}

export async function status(admin: string, tokenFile?: string): Promise<string> {
  const base = adminUrl(admin);
  const token = tokenFile !== undefined ? (await readFile(tokenFile, 'utf8')).trim() : undefined;
  const answer = terminalSafe(await fetchJson(`${base}/api/v1/services`, 5000, token)) as ServicesAnswer;
  return renderStatus(answer);
}

/**
 * Label values, container names and reasons come from whoever starts containers:
 * every control character in them (an escape sequence that rewrites the terminal,
 * a newline that fakes a row) is shown as \xNN before anything is printed.
 */
export function terminalSafe(value: unknown): unknown {
  // eslint-disable-next-line no-control-regex
  if (typeof value === 'string') return value.replace(/[\x00-\x1f\x7f-\x9f\u2028\u2029]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  if (Array.isArray(value)) return value.map(terminalSafe);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[terminalSafe(k) as string] = terminalSafe(v);
    return out;
  }
  return value;
}
