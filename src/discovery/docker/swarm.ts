/**
 * The Swarm provider (on a manager): services labelled like containers
 * (berth.enable, berth.service, berth.port, ...; service labels, `docker service
 * create --label`) and the addresses of their running tasks on the chosen overlay
 * network. Swarm's VIP is not used: berth balances and checks each task itself.
 *
 * Followed by service and container events (a reconcile at once) and a periodic
 * reconcile (every second), so a change is seen within a second even when no event
 * reaches this node. A task that Swarm wants stopped (desired state shutdown, or its
 * container being killed here) is marked stopping at once: no new connections,
 * open ones drain.
 */
import { backoffDelay, nullDiscoveryObserver, type DiscoveryObserver } from '../../core/discovery.js';
import type { EndpointSpec, ProviderSnapshot } from '../../core/types.js';
import type { Logger } from '../../log.js';
import { onEventLines } from './events.js';
import { endpointSpec, offeredPorts, poolPorts, readLabels, ServiceProtocols } from './endpoint-spec.js';
import { reportSkipped, selfContainerId } from './provider.js';
import type { DockerClient, DockerEvent, SwarmService, SwarmTask } from './types.js';

export interface SwarmBuildOptions {
  readonly labelPrefix: string;
  readonly exposedByDefault: boolean;
  /** Network to take task addresses from when a service has no network label ("" = the one shared with berth; the first when berth's own networks are unknown). */
  readonly network: string;
  readonly selfNetworks: readonly string[];
}

export interface SkippedService {
  readonly name: string;
  readonly reason: string;
}

/** Services and tasks → a full snapshot. PURE. `stopping`: task ids seen being killed. */
export function buildSwarmSnapshot(services: readonly SwarmService[], tasks: readonly SwarmTask[], stopping: ReadonlySet<string>, opts: SwarmBuildOptions): { snapshot: ProviderSnapshot; skipped: SkippedService[] } {
  const out = new Map<string, EndpointSpec[]>();
  const skipped: SkippedService[] = [];
  const prefix = opts.labelPrefix;
  const byService = new Map<string, SwarmTask[]>();
  for (const t of tasks) {
    if (t.Status.State !== 'running') continue;
    const list = byService.get(t.ServiceID) ?? [];
    list.push(t);
    byService.set(t.ServiceID, list);
  }
  const protocols = new ServiceProtocols();
  for (const svc of [...services].sort((a, b) => (a.Spec.Name < b.Spec.Name ? -1 : a.Spec.Name > b.Spec.Name ? 1 : 0))) {
    const name = svc.Spec.Name;
    const labels = svc.Spec.Labels ?? {};
    const verdict = readLabels(labels, prefix, opts.exposedByDefault);
    if (verdict.kind === 'skip') skipped.push({ name, reason: verdict.reason });
    if (verdict.kind !== 'route') continue;
    const l = verdict.labels;
    const published = (svc.Spec.EndpointSpec?.Ports ?? []).flatMap((p) => (p.TargetPort !== undefined ? [{ port: p.TargetPort, protocol: p.Protocol ?? 'tcp' }] : []));
    const ports = poolPorts(l.pools, offeredPorts(published), 'published');
    if (!ports.ok) {
      skipped.push({ name, reason: ports.reason });
      continue;
    }
    const want = l.network ?? (opts.network !== '' ? opts.network : undefined);
    // Where each running task is reached (the same for every pool of the service).
    const reach: { readonly taskId: string; readonly taskName: string; readonly host: string; readonly network: string; readonly leaving: boolean }[] = [];
    for (const t of byService.get(svc.ID) ?? []) {
      const atts = (t.NetworksAttachments ?? []).filter((a) => a.Network.Spec.Name !== 'ingress' && (a.Addresses ?? []).length > 0);
      // An overlay address is reachable only from a container on that overlay: when
      // berth knows its own networks, a task sharing none of them is skipped (sending
      // there would leave through the default route), unless a network is named.
      const shared = atts.find((a) => opts.selfNetworks.includes(a.Network.Spec.Name));
      const att = want !== undefined ? atts.find((a) => a.Network.Spec.Name === want || a.Network.ID === want) : opts.selfNetworks.length > 0 ? shared : atts[0];
      const taskName = `${name}.${t.Slot ?? t.NodeID ?? ''}.${t.ID.slice(0, 12)}`;
      if (att === undefined) {
        const on = atts.map((a) => a.Network.Spec.Name).join(', ');
        skipped.push({
          name: taskName,
          reason:
            want !== undefined ? `task not on network ${want}`
            : atts.length === 0 ? 'task has no overlay network address'
            : `no network shared with berth (the task is on ${on}; berth is on ${opts.selfNetworks.join(', ')}): attach berth to one or set ${prefix}.network`,
        });
        continue;
      }
      reach.push({ taskId: t.ID, taskName, host: att.Addresses![0]!.split('/')[0]!, network: att.Network.Spec.Name, leaving: t.DesiredState !== 'running' || stopping.has(t.ID) });
    }
    for (const { pool, port, why } of ports.ports) {
      const service = pool.service ?? name;
      const clash = protocols.claim(service, pool.protocol, name);
      if (clash !== undefined) {
        skipped.push({ name, reason: clash });
        continue;
      }
      const serviceWhy = pool.from !== `${prefix}.` ? `label ${pool.from}*` : pool.service !== undefined ? `label ${prefix}.service` : 'swarm service name';
      const list = out.get(service) ?? [];
      for (const r of reach) {
        list.push(
          endpointSpec(pool, {
            id: r.taskName,
            host: r.host,
            port,
            source: 'swarm',
            explain: { task: r.taskId.slice(0, 12), service: `${service} (${serviceWhy})`, network: r.network, port: `${port} (${why})` },
            stopping: r.leaving,
          }),
        );
      }
      out.set(service, list);
    }
  }
  return { snapshot: { provider: 'swarm', services: out }, skipped };
}

export interface SwarmProviderOptions extends Omit<SwarmBuildOptions, 'selfNetworks'> {
  readonly client: DockerClient;
  readonly log: Logger;
  readonly onSnapshot: (snap: ProviderSnapshot) => void;
  readonly observer?: DiscoveryObserver;
  /** Periodic reconcile, ms (default 1000). */
  readonly reconcileMs?: number;
}

export class SwarmProvider {
  readonly name = 'swarm';
  private readonly observer: DiscoveryObserver;
  private selfNetworks: readonly string[] = [];
  private readonly stopping = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private stream: NodeJS.ReadableStream | null = null;
  private streamTimer: NodeJS.Timeout | null = null;
  private attempt = 0;
  private stopped = false;
  private running: Promise<void> | null = null;
  private again = false;
  private lastSkipped = new Map<string, string>();
  connected = false;
  synced = false;
  lastSyncAt = 0;
  skipped: readonly SkippedService[] = [];

  constructor(private readonly opts: SwarmProviderOptions) {
    this.observer = opts.observer ?? nullDiscoveryObserver;
  }

  /** First reconcile (rejects when the engine is not a reachable swarm manager), then follows. */
  async start(): Promise<void> {
    const id = await selfContainerId();
    if (id !== null) {
      const me = await this.opts.client.inspect(id).catch(() => null);
      this.selfNetworks = Object.keys(me?.NetworkSettings.Networks ?? {});
    }
    await this.reconcileNow();
    this.connected = true;
    this.observer.connected(this.name, true);
    this.timer = setInterval(() => this.reconcile(), this.opts.reconcileMs ?? 1000);
    this.timer.unref();
    void this.follow();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.streamTimer) clearTimeout(this.streamTimer);
    (this.stream as (NodeJS.ReadableStream & { destroy?: () => void }) | null)?.destroy?.();
  }

  /** Runs a reconcile now, or right after the one in flight. */
  reconcile(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.reconcileNow()
      .then(
        () => {
          if (!this.connected) {
            this.connected = true;
            this.observer.connected(this.name, true);
            this.opts.log.info('swarm: engine reachable again; resynced');
          }
        },
        (err: unknown) => {
          if (this.connected) {
            this.connected = false;
            this.observer.connected(this.name, false);
            this.observer.error(this.name);
            this.opts.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'swarm: engine unreachable; keeping the last known tasks');
          }
        },
      )
      .finally(() => {
        this.running = null;
        if (this.again) {
          this.again = false;
          this.reconcile();
        }
      });
  }

  private async reconcileNow(): Promise<void> {
    const [services, tasks] = await Promise.all([this.opts.client.services(), this.opts.client.tasks()]);
    // Forget kill marks of tasks that are gone.
    const live = new Set(tasks.map((t) => t.ID));
    for (const id of this.stopping) if (!live.has(id)) this.stopping.delete(id);
    const r = buildSwarmSnapshot(services, tasks, this.stopping, { ...this.opts, selfNetworks: this.selfNetworks });
    this.synced = true;
    this.lastSyncAt = Date.now();
    this.observer.synced(this.name, this.lastSyncAt);
    this.lastSkipped = reportSkipped(this.lastSkipped, r.skipped.map((s) => ({ key: s.name, fields: { service: s.name }, reason: s.reason })), () => this.observer.error(this.name), this.opts.log, 'swarm: skipped');
    this.skipped = r.skipped;
    // Every reconcile: the watcher drops it when nothing changed (labels included).
    this.opts.onSnapshot(r.snapshot);
  }

  /** Service and container events trigger a reconcile; a killed task container is marked stopping first. */
  private async follow(): Promise<void> {
    if (this.stopped) return;
    try {
      const stream = await this.opts.client.swarmEvents();
      if (this.stopped) {
        (stream as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.();
        return;
      }
      this.stream = stream;
      this.attempt = 0;
      onEventLines(
        stream,
        (ev) => this.onEvent(ev),
        (line) => this.opts.log.warn({ line: line.slice(0, 200) }, 'swarm: unparsable event'),
      );
      const lost = () => {
        if (this.stream !== stream) return;
        this.stream = null;
        this.retryFollow();
      };
      stream.on('end', lost);
      stream.on('error', lost);
      stream.on('close', lost);
    } catch {
      this.retryFollow();
    }
  }

  private retryFollow(): void {
    if (this.stopped) return;
    this.streamTimer = setTimeout(() => void this.follow(), backoffDelay(this.attempt++, 200, 10_000, Math.random));
    this.streamTimer.unref();
  }

  private onEvent(ev: DockerEvent): void {
    if (ev.Type === 'container') {
      const task = ev.Actor.Attributes?.['com.docker.swarm.task.id'];
      if (task === undefined) return;
      if (ev.Action === 'kill' || ev.Action === 'stop') {
        this.stopping.add(task);
        this.observer.event(this.name, ev.Action);
        this.reconcile();
      } else if (ev.Action === 'start' || ev.Action === 'die' || ev.Action === 'destroy') {
        this.observer.event(this.name, ev.Action);
        this.reconcile();
      }
      return;
    }
    if (ev.Type === 'service') {
      this.observer.event(this.name, ev.Action);
      this.reconcile();
    }
  }
}
