import { ConfigError, type ConfigIssue } from '../core/errors.js';
import { applyOverrides } from './load.js';
import type { Config } from './schema.js';
import { validateConfig } from './validate.js';

/** Command-line options that can describe a whole config without a file. */
export interface FlagConfig {
  readonly listen: readonly string[];
  readonly backend: readonly string[];
  readonly mode?: string | undefined;
  readonly balance?: string | undefined;
  readonly service?: string | undefined;
  readonly admin?: string | undefined;
  readonly adminTokenFile?: string | undefined;
  readonly drainTimeout?: string | undefined;
  readonly dns?: string | undefined;
  /** --docker: discover endpoints from the Docker engine. */
  readonly docker?: boolean | undefined;
  readonly dockerHost?: string | undefined;
  /** --swarm: discover Swarm services from the engine (its manager). */
  readonly swarm?: boolean | undefined;
  readonly etcd?: readonly string[] | undefined;
  readonly hostId?: string | undefined;
  readonly advertise?: string | undefined;
}

export const DEFAULT_SERVICE = 'default';

/**
 * Builds a config from flags alone (no --config): one listener per --listen, all
 * in front of one service made of the --backend endpoints. Errors name the flag
 * ("--backend[1]: expected host:port ..."), not a config path the user never wrote.
 */
export function configFromFlags(f: FlagConfig): Config {
  return loadedFromFlags(f).config;
}

/** The flags' config with the document it was validated from (a --workers primary hands that to its workers). */
export function loadedFromFlags(f: FlagConfig): { readonly raw: unknown; readonly config: Config } {
  const issues: ConfigIssue[] = [];
  if (f.listen.length === 0) issues.push({ path: '--listen', message: 'at least one address to listen on is required (or use --config)' });
  const etcd = f.etcd !== undefined && f.etcd.length > 0;
  // Other hosts' endpoints (--etcd) are a source of endpoints as much as --docker.
  if (f.backend.length === 0 && !f.docker && !f.swarm && !etcd) issues.push({ path: '--backend', message: 'at least one endpoint host:port is required (or --docker, --swarm, --etcd, or --config)' });
  if (!etcd && (f.hostId !== undefined || f.advertise !== undefined)) {
    issues.push({ path: '--etcd', message: `${f.hostId !== undefined ? '--host-id' : '--advertise'} is this host's registration in etcd: it needs --etcd URL` });
  }
  if (issues.length > 0) throw new ConfigError(issues);
  const service = f.service ?? DEFAULT_SERVICE;
  const raw = applyOverrides({
    listeners: f.listen.map((bind, i) => ({
      name: f.listen.length === 1 ? service : `${service}-${i}`,
      bind,
      ...(f.mode !== undefined ? { mode: f.mode } : {}),
      service,
    })),
    services: { [service]: { ...(f.balance !== undefined ? { balance: f.balance } : {}), endpoints: [...f.backend] } },
    ...(f.admin !== undefined || f.adminTokenFile !== undefined
      ? { admin: { ...(f.admin !== undefined ? { bind: f.admin } : { bind: '127.0.0.1:9901' }), ...(f.adminTokenFile !== undefined ? { tokenFile: f.adminTokenFile } : {}) } }
      : {}),
    ...(f.drainTimeout !== undefined ? { drainTimeout: f.drainTimeout } : {}),
    ...(f.dns !== undefined ? { dns: { bind: f.dns } } : {}),
  }, { docker: f.docker, swarm: f.swarm, dockerHost: f.dockerHost, etcd: f.etcd, hostId: f.hostId, advertise: f.advertise });
  try {
    return { raw, config: validateConfig(raw) };
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    throw new ConfigError(err.issues.map((i) => ({ path: flagPath(i.path, f.listen.length > 1), message: i.message })));
  }
}

function flagPath(path: string, manyListeners: boolean): string {
  let m = /^listeners\[(\d+)\]\.(bind|mode|service|name)/.exec(path);
  if (m) {
    const flag = m[2] === 'bind' ? '--listen' : m[2] === 'name' ? '--service' : `--${m[2]}`;
    return m[2] === 'bind' && manyListeners ? `${flag}[${m[1]}]` : flag;
  }
  m = /^services\.[^.]+\.endpoints\[(\d+)\]/.exec(path);
  if (m) return `--backend[${m[1]}]`;
  if (/^services\.[^.]+\.balance/.test(path)) return '--balance';
  if (/^services\./.test(path)) return '--service';
  if (path.startsWith('admin.tokenFile')) return '--admin-token-file';
  if (path.startsWith('admin')) return '--admin';
  if (path.startsWith('drainTimeout')) return '--drain-timeout';
  if (path.startsWith('dns')) return '--dns';
  if (path.startsWith('discovery.docker.host') || path.startsWith('discovery.swarm.host')) return '--docker-host';
  if (path.startsWith('discovery.etcd.endpoints')) return `--etcd${path.slice('discovery.etcd.endpoints'.length)}`;
  if (path.startsWith('discovery.etcd.host')) return '--host-id';
  if (path.startsWith('discovery.etcd.advertise')) return '--advertise';
  return path;
}
