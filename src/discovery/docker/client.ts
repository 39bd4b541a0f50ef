/**
 * The dockerode adapter: the only module that imports dockerode. It makes GET
 * requests and reads the event stream, nothing else (berth never changes the
 * engine's state, so the socket can be mounted read-only and filtered).
 */
import type Docker from 'dockerode';
import { lazy } from '../../core/lazy.js';
import type { ContainerInfo, DockerClient, SwarmService, SwarmTask } from './types.js';

/** dockerode (and its request stack) only where Docker or Swarm discovery is configured. */
const dockerode = lazy<typeof Docker>('dockerode');

/** dockerode options for "unix:///path", "tcp://host:port" or "http://host:port". */
export function dockerOptions(url: string): Docker.DockerOptions {
  if (url.startsWith('unix://')) return { socketPath: url.slice('unix://'.length) };
  const m = /^(tcp|http|https):\/\/([^:/]+|\[[^\]]+\]):(\d+)\/?$/.exec(url);
  if (!m) throw new Error(`docker host must be unix:///path or tcp://host:port, got "${url}"`);
  return { host: m[2]!.replace(/^\[|\]$/g, ''), port: Number(m[3]), protocol: m[1] === 'https' ? 'https' : 'http' };
}

function statusCode(err: unknown): number | undefined {
  if (typeof err === 'object' && err !== null && 'statusCode' in err) {
    const c = (err as { statusCode: unknown }).statusCode;
    return typeof c === 'number' ? c : undefined;
  }
  return undefined;
}

export function dockerClient(url: string): DockerClient {
  const DockerCtor = dockerode();
  const docker = new DockerCtor(dockerOptions(url));
  return {
    async listRunning() {
      const list = await docker.listContainers({ filters: JSON.stringify({ status: ['running', 'paused'] }) });
      return list.map((c) => c.Id);
    },
    async inspect(id) {
      try {
        return (await docker.getContainer(id).inspect()) as unknown as ContainerInfo;
      } catch (err) {
        if (statusCode(err) === 404) return null;
        throw err;
      }
    },
    async events() {
      return docker.getEvents({ filters: JSON.stringify({ type: ['container', 'network'] }) });
    },
    async services() {
      return (await docker.listServices()) as unknown as SwarmService[];
    },
    async tasks() {
      return (await docker.listTasks({ filters: JSON.stringify({ 'desired-state': ['running', 'shutdown'] }) })) as unknown as SwarmTask[];
    },
    async swarmEvents() {
      return docker.getEvents({ filters: JSON.stringify({ type: ['service', 'container'] }) });
    },
  };
}
