/**
 * Docker labels → endpoint settings. PURE: no I/O, table-tested.
 *
 * Every label under the prefix must be one berth knows; a typo such as
 * `berth.wieght` is an error (the container is skipped with that reason), the same
 * rule as unknown keys in the config file.
 */
export interface ParsedLabels {
  readonly enable: boolean | undefined;
  readonly service: string | undefined;
  readonly port: number | undefined;
  readonly weight: number;
  readonly network: string | undefined;
  readonly httpHost: string | undefined;
  readonly httpPathPrefix: string | undefined;
  readonly healthPath: string | undefined;
  readonly maxConnections: number | undefined;
}

export type LabelsResult = { ok: true; labels: ParsedLabels } | { ok: false; errors: string[] };

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

function int(v: string, min: number, max: number): number | undefined {
  if (!/^\d+$/.test(v.trim())) return undefined;
  const n = Number(v.trim());
  return n >= min && n <= max ? n : undefined;
}

export function parseLabels(all: Readonly<Record<string, string>> | null | undefined, prefix: string): LabelsResult {
  const errors: string[] = [];
  const p = `${prefix}.`;
  let enable: boolean | undefined;
  let service: string | undefined;
  let port: number | undefined;
  let weight = 1;
  let network: string | undefined;
  let httpHost: string | undefined;
  let httpPathPrefix: string | undefined;
  let healthPath: string | undefined;
  let maxConnections: number | undefined;
  for (const [key, raw] of Object.entries(all ?? {})) {
    if (!key.startsWith(p)) continue;
    const name = key.slice(p.length);
    const v = raw.trim();
    switch (name) {
      case 'enable':
        if (v === 'true') enable = true;
        else if (v === 'false') enable = false;
        else errors.push(`${key}: expected true or false, got "${raw}"`);
        break;
      case 'service':
        if (NAME.test(v)) service = v;
        else errors.push(`${key}: expected a name of letters, digits, ".", "_" or "-", got "${raw}"`);
        break;
      case 'port': {
        const n = int(v, 1, 65535);
        if (n === undefined) errors.push(`${key}: expected a port from 1 to 65535, got "${raw}"`);
        else port = n;
        break;
      }
      case 'weight': {
        const n = int(v, 0, 1000);
        if (n === undefined) errors.push(`${key}: expected an integer from 0 to 1000, got "${raw}"`);
        else weight = n;
        break;
      }
      case 'network':
        if (v === '') errors.push(`${key}: expected a network name`);
        else network = v;
        break;
      case 'http.host':
        if (!/^(\*\.)?[A-Za-z0-9.-]+$/.test(v)) errors.push(`${key}: expected a host name or *.suffix, got "${raw}"`);
        else httpHost = v.toLowerCase();
        break;
      case 'http.pathPrefix':
        if (!v.startsWith('/')) errors.push(`${key}: expected a path starting with /, got "${raw}"`);
        else httpPathPrefix = v;
        break;
      case 'health.path':
        if (!v.startsWith('/')) errors.push(`${key}: expected a path starting with /, got "${raw}"`);
        else healthPath = v;
        break;
      case 'maxConnections': {
        const n = int(v, 0, 1_000_000);
        if (n === undefined) errors.push(`${key}: expected a non-negative integer, got "${raw}"`);
        else maxConnections = n;
        break;
      }
      default:
        errors.push(`${key}: unknown label`);
    }
  }
  if (errors.length > 0) return { ok: false, errors };
  return { ok: true, labels: { enable, service, port, weight, network, httpHost, httpPathPrefix, healthPath, maxConnections } };
}
