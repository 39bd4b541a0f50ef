/**
 * Containers → a docker provider snapshot. PURE: the provider does the I/O and
 * hands this the inspected containers; fixtures from a real engine test it.
 */
import type { EndpointSpec, ProviderSnapshot } from '../../core/types.js';
import { endpointSpec, offeredPorts, poolPorts, readLabels, ServiceProtocols, type OfferedPorts } from './endpoint-spec.js';
import type { ContainerInfo } from './types.js';

export interface DockerBuildOptions {
  /** Label prefix, default "berth". */
  readonly labelPrefix: string;
  /** Route containers without `<prefix>.enable=true` too. */
  readonly exposedByDefault: boolean;
  /** Network to take addresses from when a container has no network label ("" = none). */
  readonly network: string;
  /** Networks berth's own container is attached to (empty when berth runs on the host or in another container's namespace). */
  readonly selfNetworks: readonly string[];
  /** Provider instance name, default "docker". */
  readonly provider?: string;
}

/** Lifecycle facts the provider learned from events, by container id. */
export interface ContainerMarks {
  /** kill/stop seen: no new connections. */
  readonly stopping: ReadonlySet<string>;
}

export interface SkippedContainer {
  readonly id: string;
  readonly name: string;
  readonly reason: string;
}

export interface DockerBuildResult {
  readonly snapshot: ProviderSnapshot;
  /** Containers that asked to be routed (or would be by default) but cannot be. */
  readonly skipped: readonly SkippedContainer[];
}

export function containerName(c: ContainerInfo): string {
  return c.Name.replace(/^\//, '');
}

/** The ports the image exposes ("8080/tcp", "53/udp"). */
function exposed(c: ContainerInfo): OfferedPorts {
  return offeredPorts(
    Object.keys(c.Config.ExposedPorts ?? {}).map((k) => {
      const [port, protocol] = k.split('/');
      return { port: Number(port), protocol: protocol ?? 'tcp' };
    }),
  );
}

/**
 * The host port the engine publishes a container port on for every host address
 * (`-p 8080:80`, or `-p 0.0.0.0:8080:80`): what other hosts can reach. A binding to
 * one address only (`-p 127.0.0.1:8080:80`) is not reachable from elsewhere.
 */
export function publishedPort(c: ContainerInfo, port: number, protocol: string): number | undefined {
  for (const b of c.NetworkSettings.Ports?.[`${port}/${protocol}`] ?? []) {
    const ip = b.HostIp ?? '';
    const hostPort = Number(b.HostPort);
    if ((ip === '' || ip === '0.0.0.0' || ip === '::') && Number.isInteger(hostPort) && hostPort > 0 && hostPort <= 65535) return hostPort;
  }
  return undefined;
}

export function buildDockerSnapshot(containers: Iterable<ContainerInfo>, opts: DockerBuildOptions, marks: ContainerMarks = { stopping: new Set() }): DockerBuildResult {
  const services = new Map<string, EndpointSpec[]>();
  const skipped: SkippedContainer[] = [];
  const prefix = opts.labelPrefix;
  const protocols = new ServiceProtocols();
  // In name order: which container fixes a service's kind of port does not depend on the engine's listing.
  for (const c of [...containers].sort((a, b) => (a.Name < b.Name ? -1 : a.Name > b.Name ? 1 : 0))) {
    const name = containerName(c);
    const skip = (reason: string) => skipped.push({ id: c.Id, name, reason });
    const labelsAll = c.Config.Labels ?? {};
    const verdict = readLabels(labelsAll, prefix, opts.exposedByDefault);
    if (verdict.kind === 'skip') skip(verdict.reason);
    if (verdict.kind !== 'route') continue;
    const l = verdict.labels;
    if (!c.State.Running) continue;

    const networks = c.NetworkSettings.Networks ?? {};
    const names = Object.keys(networks).sort();
    let network: string | undefined;
    let networkWhy: string;
    if (l.network !== undefined) {
      if (!(l.network in networks)) {
        skip(`${prefix}.network=${l.network} but the container is on ${names.length ? names.join(', ') : 'no network'}`);
        continue;
      }
      network = l.network;
      networkWhy = `label ${prefix}.network`;
    } else if (opts.network !== '' && opts.network in networks) {
      network = opts.network;
      networkWhy = 'discovery.docker.network';
    } else {
      network = names.find((n) => opts.selfNetworks.includes(n));
      networkWhy = 'shared with berth';
      // berth in a container on its own networks reaches only those (Docker isolates
      // bridges from each other, overlays from the host): a container sharing none of
      // them is skipped rather than sent to through the default route. On the host
      // (or with the host's network) every bridge address is reachable: the first.
      const isolated = opts.selfNetworks.length > 0 && !opts.selfNetworks.includes('host');
      if (network === undefined && isolated && names.length > 0) {
        skip(`no network shared with berth (the container is on ${names.join(', ')}; berth is on ${opts.selfNetworks.join(', ')}): attach berth to one or set ${prefix}.network`);
        continue;
      }
      if (network === undefined) {
        network = names.find((n) => (networks[n]?.IPAddress ?? '') !== '' || (networks[n]?.GlobalIPv6Address ?? '') !== '');
        networkWhy = 'first network';
      }
    }
    const net = network !== undefined ? networks[network] : undefined;
    const host = net?.IPAddress || net?.GlobalIPv6Address || '';
    if (network === undefined || host === '') {
      skip(network === undefined ? 'no network with an IP address (host or none network mode?)' : `no IP address on network ${network}`);
      continue;
    }

    const ports = poolPorts(l.pools, exposed(c), 'exposed');
    if (!ports.ok) {
      skip(ports.reason);
      continue;
    }
    const health = c.State.Health?.Status;
    for (const { pool, port, why } of ports.ports) {
      const service = pool.service ?? labelsAll['com.docker.compose.service'] ?? name;
      const clash = protocols.claim(service, pool.protocol, name);
      if (clash !== undefined) {
        skip(clash);
        continue;
      }
      const serviceWhy =
        pool.from !== `${prefix}.` ? `label ${pool.from}*`
        : pool.service !== undefined ? `label ${prefix}.service`
        : labelsAll['com.docker.compose.service'] !== undefined ? 'compose service name'
        : 'container name';
      const explain: Record<string, string> = {
        container: c.Id.slice(0, 12),
        image: c.Config.Image ?? '',
        service: `${service} (${serviceWhy})`,
        network: `${network} (${networkWhy})`,
        port: `${port} (${why})`,
      };
      if (health !== undefined && health !== 'none') explain['docker-health'] = health;
      const hostPort = publishedPort(c, port, pool.protocol);
      if (hostPort !== undefined) explain['published'] = `host port ${hostPort} (other hosts reach it at the advertise address)`;
      const spec = endpointSpec(pool, {
        id: name,
        host,
        port,
        source: 'docker',
        explain,
        ...(health !== undefined && health !== 'none' ? { health: health === 'healthy' ? 'healthy' : health === 'unhealthy' ? 'unhealthy' : 'starting' } : {}),
        stopping: marks.stopping.has(c.Id),
        paused: c.State.Paused === true,
        ...(hostPort !== undefined ? { hostPort } : {}),
      });
      let list = services.get(service);
      if (!list) services.set(service, (list = []));
      list.push(spec);
    }
  }
  return { snapshot: { provider: opts.provider ?? 'docker', services }, skipped };
}
