/**
 * Docker labels → endpoint settings. PURE: no I/O, table-tested.
 *
 * Every label under the prefix must be one berth knows; a typo such as
 * `berth.wieght` is an error (the container is skipped with that reason), the same
 * rule as unknown keys in the config file.
 *
 * A container (or Swarm service) gives one pool with the plain labels
 * (`berth.port`, `berth.weight` ...), or several with `berth.services.<name>.<label>`
 * — the same labels, one set per pool, the pool named `<name>`. `berth.enable` and
 * `berth.network` are the container's, for every pool. Mixing the plain pool labels
 * with `berth.services.*` is an error: it would be unclear which pool they mean.
 */
export type PortProtocol = 'tcp' | 'udp';
/** What `health.type` may say on a container (the other check kinds need settings of the service's). */
export type HealthLabelType = 'tcp' | 'http' | 'grpc';

/** One pool a container asks to be in. */
export interface PoolLabels {
  /** `berth.services.<name>`: the name; plain labels: `berth.service` (undefined: the builder's default name). */
  readonly service: string | undefined;
  /** The labels' own prefix, for messages: "berth." or "berth.services.dns.". */
  readonly from: string;
  readonly port: number | undefined;
  readonly protocol: PortProtocol;
  readonly weight: number;
  readonly httpHost: string | undefined;
  readonly httpPathPrefix: string | undefined;
  readonly healthPath: string | undefined;
  readonly healthType: HealthLabelType | undefined;
  /** The HTTP version the container speaks (http listeners). */
  readonly httpVersion: '1.1' | '2' | undefined;
  /** Lowercase SNI names (exact or `*.suffix`) routed to this pool on tcp listeners that route by SNI. */
  readonly sni: readonly string[];
  readonly maxConnections: number | undefined;
}

export interface ParsedLabels {
  readonly enable: boolean | undefined;
  readonly network: string | undefined;
  /** At least one. */
  readonly pools: readonly PoolLabels[];
}

export type LabelsResult = { ok: true; labels: ParsedLabels } | { ok: false; errors: string[] };

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
/** A pool name in `berth.services.<name>.<label>`: no dots (the label after it has them). */
const POOL_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]*$/;
/** A server name for SNI: labels of letters, digits and "-", optionally "*." first. */
const SNI_NAME = /^(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$/;

function int(v: string, min: number, max: number): number | undefined {
  if (!/^\d+$/.test(v)) return undefined;
  const n = Number(v);
  return n >= min && n <= max ? n : undefined;
}

interface PoolDraft {
  service: string | undefined;
  from: string;
  port: number | undefined;
  protocol: PortProtocol;
  weight: number;
  httpHost: string | undefined;
  httpPathPrefix: string | undefined;
  healthPath: string | undefined;
  healthType: HealthLabelType | undefined;
  httpVersion: '1.1' | '2' | undefined;
  sni: string[];
  maxConnections: number | undefined;
  /** Whether any label set this pool (the plain one exists regardless). */
  touched: boolean;
}

function draft(service: string | undefined, from: string): PoolDraft {
  return { service, from, port: undefined, protocol: 'tcp', weight: 1, httpHost: undefined, httpPathPrefix: undefined, healthPath: undefined, healthType: undefined, httpVersion: undefined, sni: [], maxConnections: undefined, touched: false };
}

/** One pool label (`name` without the pool's prefix) into `d`; an error message, or undefined. */
function poolLabel(d: PoolDraft, name: string, key: string, raw: string, plain: boolean): string | undefined {
  const v = raw.trim();
  d.touched = true;
  switch (name) {
    case 'service':
      if (!plain) return `${key}: unknown label (the pool's name is <name> in ${d.from.slice(0, -1)})`;
      if (!NAME.test(v)) return `${key}: expected a name of letters, digits, ".", "_" or "-", got "${raw}"`;
      d.service = v;
      return undefined;
    case 'port': {
      const n = int(v, 1, 65535);
      if (n === undefined) return `${key}: expected a port from 1 to 65535, got "${raw}"`;
      d.port = n;
      return undefined;
    }
    case 'protocol':
      if (v !== 'tcp' && v !== 'udp') return `${key}: expected tcp or udp, got "${raw}"`;
      d.protocol = v;
      return undefined;
    case 'weight': {
      const n = int(v, 0, 1000);
      if (n === undefined) return `${key}: expected an integer from 0 to 1000, got "${raw}"`;
      d.weight = n;
      return undefined;
    }
    case 'http.host':
      if (!/^(\*\.)?[A-Za-z0-9.-]+$/.test(v)) return `${key}: expected a host name or *.suffix, got "${raw}"`;
      d.httpHost = v.toLowerCase();
      return undefined;
    case 'http.pathPrefix':
      if (!v.startsWith('/')) return `${key}: expected a path starting with /, got "${raw}"`;
      d.httpPathPrefix = v;
      return undefined;
    case 'health.path':
      if (!v.startsWith('/')) return `${key}: expected a path starting with /, got "${raw}"`;
      d.healthPath = v;
      return undefined;
    case 'http.version':
      if (v !== '1.1' && v !== '2') return `${key}: expected 1.1 or 2, got "${raw}"`;
      d.httpVersion = v;
      return undefined;
    case 'health.type':
      if (v !== 'tcp' && v !== 'http' && v !== 'grpc') return `${key}: expected tcp, http or grpc, got "${raw}"`;
      d.healthType = v;
      return undefined;
    case 'tls.sni': {
      const names = v.split(',').map((x) => x.trim().toLowerCase());
      const bad = names.find((x) => !SNI_NAME.test(x));
      if (bad !== undefined) return `${key}: expected server names (comma list, *.suffix allowed), got "${raw}"`;
      d.sni = [...new Set(names)];
      return undefined;
    }
    case 'maxConnections': {
      const n = int(v, 0, 1_000_000);
      if (n === undefined) return `${key}: expected a non-negative integer, got "${raw}"`;
      d.maxConnections = n;
      return undefined;
    }
    default:
      return `${key}: unknown label`;
  }
}

export function parseLabels(all: Readonly<Record<string, string>> | null | undefined, prefix: string): LabelsResult {
  const errors: string[] = [];
  const p = `${prefix}.`;
  const sp = `${p}services.`;
  let enable: boolean | undefined;
  let network: string | undefined;
  const plain = draft(undefined, p);
  const named = new Map<string, PoolDraft>();
  // Sorted: the same labels give the same pools and messages in the same order.
  for (const key of Object.keys(all ?? {}).sort()) {
    if (!key.startsWith(p)) continue;
    const raw = all![key]!;
    const name = key.slice(p.length);
    if (name === 'enable') {
      const v = raw.trim();
      if (v === 'true') enable = true;
      else if (v === 'false') enable = false;
      else errors.push(`${key}: expected true or false, got "${raw}"`);
      continue;
    }
    if (name === 'network') {
      if (raw.trim() === '') errors.push(`${key}: expected a network name`);
      else network = raw.trim();
      continue;
    }
    if (key.startsWith(sp)) {
      const rest = key.slice(sp.length);
      const dot = rest.indexOf('.');
      const pool = dot < 0 ? rest : rest.slice(0, dot);
      if (dot < 0 || dot === rest.length - 1) {
        errors.push(`${key}: expected ${sp}<name>.<label>`);
        continue;
      }
      if (!POOL_NAME.test(pool)) {
        errors.push(`${key}: expected a pool name of letters, digits, "_" or "-", got "${pool}"`);
        continue;
      }
      let d = named.get(pool);
      if (d === undefined) named.set(pool, (d = draft(pool, `${sp}${pool}.`)));
      const err = poolLabel(d, rest.slice(dot + 1), key, raw, false);
      if (err !== undefined) errors.push(err);
      continue;
    }
    const err = poolLabel(plain, name, key, raw, true);
    if (err !== undefined) errors.push(err);
  }
  if (plain.touched && named.size > 0) errors.push(`${p}<label> and ${sp}<name>.<label> mixed: with several pools every pool label goes under ${sp}<name>.`);
  const drafts = named.size > 0 ? [...named.values()] : [plain];
  for (const d of drafts) {
    if (d.protocol !== 'udp') continue;
    for (const [label, set] of [
      ['http.host', d.httpHost !== undefined],
      ['http.pathPrefix', d.httpPathPrefix !== undefined],
      ['http.version', d.httpVersion !== undefined],
      ['health.path', d.healthPath !== undefined],
      ['health.type', d.healthType !== undefined],
      ['tls.sni', d.sni.length > 0],
    ] as const) {
      if (set) errors.push(`${d.from}${label}: a udp pool has no ${label.startsWith('tls') ? 'TLS' : label === 'health.type' ? 'TCP, HTTP or gRPC' : 'HTTP'} to route or check`);
    }
  }
  if (errors.length > 0) return { ok: false, errors };
  const pools = drafts.map(({ touched: _, ...rest }): PoolLabels => rest);
  return { ok: true, labels: { enable, network, pools } };
}
