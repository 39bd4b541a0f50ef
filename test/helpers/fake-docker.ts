import { PassThrough } from 'node:stream';
import type { ContainerInfo, DockerClient, DockerEvent, SwarmService, SwarmTask } from '../../src/discovery/docker/types.js';

/** A promise with its resolve, for holding a call of the fake client open. */
export interface Gate {
  readonly promise: Promise<void>;
  open(): void;
}

export function gate(): Gate {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

/**
 * An in-memory Docker engine for provider unit tests: containers to list and
 * inspect, an event stream the test writes to (one JSON line per event, as the
 * engine sends them), and the ways an engine fails: `down` (every call rejects),
 * `dropStream()` (the event stream ends), and gates that hold an `inspect` answer
 * (taken at the call, delivered late) so a test can interleave events with a resync.
 */
export class FakeDocker implements DockerClient {
  readonly containers = new Map<string, ContainerInfo>();
  down = false;
  /** While set, inspect of these ids waits for the gate. */
  readonly holdInspect = new Map<string, Gate>();
  readonly calls: string[] = [];
  private streams: PassThrough[] = [];

  private check(what: string): void {
    this.calls.push(what);
    if (this.down) throw Object.assign(new Error('connect ECONNREFUSED /var/run/docker.sock'), { code: 'ECONNREFUSED' });
  }

  async listRunning(): Promise<string[]> {
    this.check('list');
    return [...this.containers.values()].filter((c) => c.State.Running).map((c) => c.Id);
  }

  async inspect(id: string): Promise<ContainerInfo | null> {
    this.check(`inspect ${id}`);
    // The engine answers now; a held answer arrives late (stale) when the gate opens.
    const answer = this.containers.get(id) ?? null;
    const g = this.holdInspect.get(id);
    if (g !== undefined) await g.promise;
    return answer;
  }

  async events(): Promise<NodeJS.ReadableStream> {
    this.check('events');
    const s = new PassThrough();
    this.streams.push(s);
    return s;
  }

  async services(): Promise<SwarmService[]> {
    this.check('services');
    return [];
  }

  async tasks(): Promise<SwarmTask[]> {
    this.check('tasks');
    return [];
  }

  async swarmEvents(): Promise<NodeJS.ReadableStream> {
    return this.events();
  }

  /** Open event streams (a provider keeps one). */
  get openStreams(): number {
    return this.streams.filter((s) => !s.destroyed && !s.writableEnded).length;
  }

  /** Sends an event on every open stream. */
  emit(ev: DockerEvent): void {
    for (const s of this.streams) if (!s.destroyed && !s.writableEnded) s.write(`${JSON.stringify(ev)}\n`);
  }

  /** A container event, as the engine words it. */
  container(action: string, id: string, attributes: Record<string, string> = {}): void {
    this.emit({ Type: 'container', Action: action, Actor: { ID: id, Attributes: attributes } } as DockerEvent);
  }

  /** The engine goes away: every stream ends. */
  dropStream(): void {
    for (const s of this.streams) s.end();
    this.streams = [];
  }
}

/** A running container on network `net` with labels, as inspect returns it (the fields the builder reads). */
export function container(id: string, name: string, ip: string, labels: Record<string, string>, net = 'bridge'): ContainerInfo {
  return {
    Id: id.padEnd(64, '0'),
    Name: `/${name}`,
    Config: { Labels: labels, Image: 'berth-test/web', ExposedPorts: { '8080/tcp': {} } },
    State: { Running: true, Paused: false, Status: 'running' },
    NetworkSettings: { Networks: { [net]: { IPAddress: ip, NetworkID: `id-${net}` } } },
  } as unknown as ContainerInfo;
}
