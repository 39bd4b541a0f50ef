import { readFile } from 'node:fs/promises';
import { parseDocument } from 'yaml';
import { BerthError, ConfigError } from '../core/errors.js';

/** Reads and parses a YAML or JSON file (JSON is YAML) without validating it. */
export async function readConfigFile(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new BerthError('BERTH_ERR_CONFIG_READ', `cannot read config file ${path}: ${reason}`, { cause: err });
  }
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((e) => ({ path: '', message: `${path}: ${e.message.split('\n')[0]}` })),
      'BERTH_ERR_CONFIG_READ',
    );
  }
  let value: unknown;
  try {
    // yaml refuses documents whose aliases expand past a bound ("billion laughs").
    value = doc.toJS();
  } catch (err) {
    throw new ConfigError([{ path: '', message: `${path}: ${err instanceof Error ? err.message : String(err)}` }], 'BERTH_ERR_CONFIG_READ');
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new ConfigError([{ path: '', message: `${path}: expected a mapping at the top level` }], 'BERTH_ERR_CONFIG_READ');
  }
  return value;
}

export interface ConfigOverrides {
  /** --balance: applies to every service. */
  readonly balance?: string | undefined;
  /** --admin: "off" or [host:]port. */
  readonly admin?: string | undefined;
  /** --docker / --docker-host: turn on (or point) Docker discovery. */
  readonly docker?: boolean | undefined;
  readonly dockerHost?: string | undefined;
  /** --swarm: Swarm services from the engine (--docker-host names it for both). */
  readonly swarm?: boolean | undefined;
  /** --admin-token-file. */
  readonly adminTokenFile?: string | undefined;
  /** --dns: the DNS interface's address. */
  readonly dns?: string | undefined;
  /** --etcd (repeatable), --host-id, --advertise: registration through etcd. */
  readonly etcd?: readonly string[] | undefined;
  readonly hostId?: string | undefined;
  readonly advertise?: string | undefined;
}

/** The mapping under `key` of a raw document (a copy), or an empty one where there is none. */
function mappingAt(doc: Record<string, unknown>, key: string): Record<string, unknown> {
  const v = doc[key];
  return typeof v === 'object' && v !== null ? { ...(v as Record<string, unknown>) } : {};
}

/** Applies flag overrides to a raw document (before validation, so errors still name fields). */
export function applyOverrides(raw: unknown, o: ConfigOverrides): unknown {
  if (raw === null || typeof raw !== 'object') return raw;
  const doc: Record<string, unknown> = { ...(raw as Record<string, unknown>) };
  if (o.admin !== undefined) doc['admin'] = { ...mappingAt(doc, 'admin'), bind: o.admin };
  if (o.adminTokenFile !== undefined) doc['admin'] = { ...mappingAt(doc, 'admin'), tokenFile: o.adminTokenFile };
  if (o.dns !== undefined) doc['dns'] = { ...mappingAt(doc, 'dns'), bind: o.dns };
  // --docker-host alone means --docker (as it always has); with --swarm it names the engine of both.
  if (o.docker || (o.dockerHost !== undefined && !o.swarm)) {
    const discovery = mappingAt(doc, 'discovery');
    doc['discovery'] = { ...discovery, docker: { ...mappingAt(discovery, 'docker'), ...(o.dockerHost !== undefined ? { host: o.dockerHost } : {}) } };
  }
  if (o.swarm) {
    const discovery = mappingAt(doc, 'discovery');
    doc['discovery'] = { ...discovery, swarm: { ...mappingAt(discovery, 'swarm'), ...(o.dockerHost !== undefined ? { host: o.dockerHost } : {}) } };
  }
  if ((o.etcd !== undefined && o.etcd.length > 0) || o.hostId !== undefined || o.advertise !== undefined) {
    const discovery = mappingAt(doc, 'discovery');
    doc['discovery'] = {
      ...discovery,
      etcd: {
        ...mappingAt(discovery, 'etcd'),
        ...(o.etcd !== undefined && o.etcd.length > 0 ? { endpoints: [...o.etcd] } : {}),
        ...(o.hostId !== undefined ? { host: o.hostId } : {}),
        ...(o.advertise !== undefined ? { advertise: o.advertise } : {}),
      },
    };
  }
  if (o.balance !== undefined && typeof doc['services'] === 'object' && doc['services'] !== null) {
    const services: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(doc['services'] as Record<string, unknown>)) {
      services[k] = typeof v === 'object' && v !== null ? { ...v, balance: o.balance } : v;
    }
    doc['services'] = services;
  }
  return doc;
}
