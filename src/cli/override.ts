/**
 * `berth drain|undrain ENDPOINT`, `berth drain|undrain --service NAME` and `berth
 * weight ENDPOINT N|discovery`: an operator's change through a running berth's admin
 * API (which needs its token: --admin-token-file), answered with what it now says.
 */
import { readFile } from 'node:fs/promises';
import { adminCall, adminUrl, terminalSafe } from './status.js';

export interface OverrideCommand {
  readonly op: 'drain' | 'undrain' | 'weight';
  /** The endpoint id (null: the whole --service, drain/undrain only). */
  readonly endpoint: string | null;
  readonly service: string | undefined;
  /** weight: 0–1000, or null for discovery's weight again. */
  readonly weight: number | null;
  readonly admin: string;
  readonly adminTokenFile: string | undefined;
}

/** Sends the change; returns the line to print, or throws with the admin API's reason. */
export async function override(c: OverrideCommand): Promise<string> {
  const base = adminUrl(c.admin);
  const token = c.adminTokenFile !== undefined ? (await readFile(c.adminTokenFile, 'utf8')).trim() : undefined;
  let path: string;
  let method = 'POST';
  let body: string | undefined;
  if (c.endpoint === null) {
    if (c.service === undefined || c.op === 'weight') throw new Error('name an endpoint, or a --service to drain or undrain whole');
    path = `/api/v1/services/${encodeURIComponent(c.service)}/${c.op}`;
  } else {
    path = `/api/v1/endpoints/${encodeURIComponent(c.endpoint)}/${c.op}${c.service !== undefined ? `?service=${encodeURIComponent(c.service)}` : ''}`;
    if (c.op === 'weight') {
      method = c.weight === null ? 'DELETE' : 'PUT';
      if (c.weight !== null) body = String(c.weight);
    }
  }
  const { status, json } = await send(`${base}${path}`, method, body, token);
  const answer = terminalSafe(json) as { error?: string; id?: string; service?: string; health?: string; configuredWeight?: number; why?: string; changed?: string[] };
  if (status !== 200) throw new Error(`${method} ${path}: HTTP ${status}${answer.error ? `: ${answer.error}` : status === 401 ? ': the admin API wants its token (--admin-token-file)' : ''}`);
  if (c.endpoint === null) return `service ${answer.service}: ${c.op}ed ${answer.changed?.length ?? 0} endpoint(s)${answer.changed?.length ? ` (${answer.changed.join(', ')})` : ''}\n`;
  return `${answer.service}/${answer.id}: ${answer.health} (weight ${answer.configuredWeight}) — ${answer.why}\n`;
}

async function send(url: string, method: string, body: string | undefined, token: string | undefined): Promise<{ status: number; json: unknown }> {
  const { status, text } = await adminCall(url, method, body, token);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = { error: text.trim() };
  }
  return { status, json };
}
