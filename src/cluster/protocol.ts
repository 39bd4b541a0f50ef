/**
 * The messages between a --workers primary and its workers (node:cluster IPC,
 * JSON-serialised): typed here once, for both sides.
 */
import type { HealthVerdict } from '../runtime/runtime.js';
import type { EndpointSpec, ProviderSnapshot } from '../core/types.js';
import type { MetricsJson } from '../metrics/collect.js';
import type { OverrideState } from '../pool/pool.js';

export type SnapshotMsg = { t: 'snapshot'; provider: string; services: [string, EndpointSpec[]][] };
/**
 * Primary → worker. A worker starts with `config` (the document the primary
 * validated: workers never read the file). A reload is two-phase: `prepare` (a
 * worker does everything that can fail and answers `prepared`), then `commit` to
 * every worker once all answered ok, else `abort` to every worker.
 */
export type ToWorker =
  | SnapshotMsg
  | { t: 'config'; raw: unknown; reusePort: boolean; overrides: OverrideState }
  | { t: 'health'; v: HealthVerdict }
  | { t: 'overrides'; state: OverrideState }
  | { t: 'prepare'; id: number; raw: unknown }
  | { t: 'commit'; id: number }
  | { t: 'abort'; id: number }
  | { t: 'stats'; id: number }
  | { t: 'metrics'; id: number }
  | { t: 'shutdown'; drainMs: number };
export interface EndpointStats {
  service: string;
  id: string;
  active: number;
  connections: number;
  failures: number;
  latency: number;
}
export type FromWorker =
  | { t: 'hello' }
  | { t: 'ready' }
  | { t: 'stats'; id: number; open: number; endpoints: EndpointStats[] }
  | { t: 'metrics'; id: number; json: MetricsJson }
  | { t: 'prepared'; id: number; ok: boolean; error?: string };

/** How long a worker may take to prepare a reload (bind, read TLS files) before the reload is called off everywhere. */
export const PREPARE_TIMEOUT_MS = 5000;

export function toMsg(snap: ProviderSnapshot): SnapshotMsg {
  return { t: 'snapshot', provider: snap.provider, services: [...snap.services].map(([k, v]) => [k, [...v]]) };
}

