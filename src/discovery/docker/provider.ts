/**
 * The Docker provider: lists running containers, then follows the event stream,
 * and after every change hands the pool a FULL snapshot built by build.ts.
 *
 * - kill/stop mark a container stopping at once (no new connections; open ones go
 *   on); die/destroy remove it. Traefik only reacts to die, after the app has begun
 *   shutting down — the cause of its 502s on rolling deploys.
 * - Engine loss: the last snapshot stays in the pool (nothing is emitted), the
 *   stream is re-opened with capped exponential backoff, and a full resync on
 *   return catches every event missed while away.
 */
import { readFile } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { systemClock, type Clock, type Timer } from '../../core/clock.js';
import { backoffDelay, nullDiscoveryObserver, type DiscoveryObserver } from '../../core/discovery.js';
import { systemRandom, type Random } from '../../core/random.js';
import type { ProviderSnapshot } from '../../core/types.js';
import type { Logger } from '../../log.js';
import { onEventLines } from './events.js';
import { buildDockerSnapshot, containerName, type DockerBuildOptions, type SkippedContainer } from './build.js';
import type { ContainerInfo, DockerClient, DockerEvent } from './types.js';

export interface DockerProviderOptions extends Omit<DockerBuildOptions, 'selfNetworks'> {
  readonly client: DockerClient;
  readonly log: Logger;
  readonly onSnapshot: (snap: ProviderSnapshot) => void;
  readonly observer?: DiscoveryObserver;
  /** Reconnect backoff, ms. */
  readonly backoffBaseMs?: number;
  readonly backoffCapMs?: number;
  /** Override self-detection (tests): networks berth's own container is on. */
  readonly selfNetworks?: readonly string[];
  /** Reconnect backoff runs on this clock, its jitter from this random (tests inject both). */
  readonly clock?: Clock;
  readonly random?: Random;
}

function onReconnectDue(p: DockerProvider): void {
  p.reconnect();
}

/** Actions that change what a container should be in the pool. */
const REINSPECT = new Set(['start', 'restart', 'unpause', 'pause', 'rename', 'update', 'connect', 'disconnect', 'health_status']);
/** Signals that stop a container whatever its StopSignal (by number: the engine reports "15", or a name). */
const STOPPING_SIGNALS = new Set([15, 9, 2, 3]);

/** A signal as its number: "15", "SIGTERM", "TERM"; NaN when it is none of these. */
function signalNumber(s: string | undefined): number {
  if (s === undefined || s === '') return NaN;
  if (/^\d+$/.test(s)) return Number(s);
  const name = (s.toUpperCase().startsWith('SIG') ? s.toUpperCase() : `SIG${s.toUpperCase()}`) as keyof typeof osConstants.signals;
  return osConstants.signals[name] ?? NaN;
}

/** Whether a `kill` with `signal` stops the container: TERM, KILL, INT, QUIT, or its own StopSignal (not a HUP or USR1 that asks for a reload). */
export function killStops(signal: string | undefined, stopSignal: string | undefined): boolean {
  const n = signalNumber(signal);
  if (Number.isNaN(n)) return false;
  return STOPPING_SIGNALS.has(n) || n === signalNumber(stopSignal);
}

export class DockerProvider {
  readonly name: string;
  private readonly opts: DockerProviderOptions;
  private readonly observer: DiscoveryObserver;
  private readonly containers = new Map<string, ContainerInfo>();
  private readonly stopping = new Set<string>();
  private selfNetworks: readonly string[] = [];
  private stream: NodeJS.ReadableStream | null = null;
  private reconnectTimer: Timer | null = null;
  private readonly clock: Clock;
  private readonly random: Random;
  private attempt = 0;
  private stopped = false;
  private emitScheduled = false;
  /** Per container id: events queued while an inspect for it is in flight, handled in order. */
  private readonly chains = new Map<string, Promise<void>>();
  private lastSkipped = new Map<string, string>();
  /** Containers whose events were handled while a resync was listing: their event state wins. */
  private touched: Set<string> | null = null;
  /** True while the event stream is open. */
  connected = false;
  /** True once a full sync has completed (readiness). */
  synced = false;
  lastSyncAt = 0;
  lastError = '';
  skipped: readonly SkippedContainer[] = [];

  constructor(opts: DockerProviderOptions) {
    this.opts = opts;
    this.name = opts.provider ?? 'docker';
    this.observer = opts.observer ?? nullDiscoveryObserver;
    this.clock = opts.clock ?? systemClock;
    this.random = opts.random ?? systemRandom;
  }

  /**
   * First sync. Rejects when the engine cannot be reached, so `berth run --docker`
   * fails at start (exit 2) rather than serving nothing without saying so.
   */
  async start(): Promise<void> {
    this.selfNetworks = this.opts.selfNetworks ?? (await this.detectSelfNetworks());
    await this.connect();
  }

  stop(): void {
    this.stopped = true;
    this.clock.cancel(this.reconnectTimer);
    this.reconnectTimer = null;
    this.closeStream();
  }

  private closeStream(): void {
    const s = this.stream;
    this.stream = null;
    if (s) {
      s.removeAllListeners();
      s.on('error', () => {});
      (s as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.();
    }
  }

  /** Subscribe to events first, then list: nothing can slip between the two. */
  private async connect(): Promise<void> {
    const stream = await this.opts.client.events();
    if (this.stopped) {
      (stream as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.();
      return;
    }
    this.stream = stream;
    onEventLines(
      stream,
      (ev) => this.onEvent(ev),
      (line) => this.opts.log.warn({ line: line.slice(0, 200) }, 'docker: unparsable event'),
    );
    const lost = (err?: Error) => this.lost(stream, err);
    stream.on('error', lost);
    stream.on('end', () => lost());
    stream.on('close', () => lost());
    await this.resync();
    this.attempt = 0;
    if (!this.connected) {
      this.connected = true;
      this.observer.connected(this.name, true);
    }
  }

  private lost(stream: NodeJS.ReadableStream, err?: Error): void {
    if (stream !== this.stream || this.stopped) return;
    this.closeStream();
    if (this.connected) {
      this.connected = false;
      this.observer.connected(this.name, false);
      this.observer.error(this.name);
      this.opts.log.warn({ err: err?.message ?? 'event stream ended' }, 'docker: engine connection lost; keeping the last known endpoints, reconnecting');
    }
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.reconnectTimer) return;
    const delay = backoffDelay(this.attempt++, this.opts.backoffBaseMs ?? 250, this.opts.backoffCapMs ?? 15_000, () => this.random.next());
    this.reconnectTimer = this.clock.after(delay, onReconnectDue, this);
  }

  /** @internal the backoff is over: try the engine again. */
  reconnect(): void {
    this.reconnectTimer = null;
    if (this.stopped) return;
    this.connect().then(
      () => this.opts.log.info({ containers: this.containers.size }, 'docker: engine connection restored; resynced'),
      (err: unknown) => {
        this.closeStream();
        this.lastError = err instanceof Error ? err.message : String(err);
        if (this.opts.log.isLevelEnabled('debug')) this.opts.log.debug({ err: this.lastError, attempt: this.attempt }, 'docker: reconnect failed');
        this.scheduleReconnect();
      },
    );
  }

  /** Full resync: list every running container and inspect each. */
  private async resync(): Promise<void> {
    this.touched = new Set();
    let infos: (ContainerInfo | null)[];
    try {
      const ids = await this.opts.client.listRunning();
      infos = await Promise.all(ids.map((id) => this.opts.client.inspect(id)));
    } catch (err) {
      this.touched = null;
      throw err;
    }
    const fresh = new Map<string, ContainerInfo>();
    for (const c of infos) if (c && c.State.Running) fresh.set(c.Id, c);
    for (const id of this.touched) {
      const current = this.containers.get(id);
      if (current) fresh.set(id, current);
      else fresh.delete(id);
    }
    this.touched = null;
    this.containers.clear();
    for (const [id, c] of fresh) this.containers.set(id, c);
    for (const id of [...this.stopping]) if (!this.containers.has(id)) this.stopping.delete(id);
    this.synced = true;
    this.lastSyncAt = this.clock.wall();
    this.observer.synced(this.name, this.lastSyncAt);
    this.emitNow();
  }

  private onEvent(ev: DockerEvent): void {
    const action = ev.Action.split(':')[0]!.trim();
    const id = ev.Type === 'network' ? ev.Actor.Attributes?.['container'] : ev.Actor.ID;
    if (!id) return;
    if (ev.Type === 'network' && action !== 'connect' && action !== 'disconnect') return;
    if (ev.Type === 'container' && !REINSPECT.has(action) && !['kill', 'stop', 'die', 'destroy'].includes(action)) return;
    this.observer.event(this.name, action);
    // Events of one container are handled in order, each after the previous inspect.
    const prev = this.chains.get(id) ?? Promise.resolve();
    const next = prev.then(() => this.handle(id, action, ev)).catch((err: unknown) => {
      this.observer.error(this.name);
      this.opts.log.warn({ container: id.slice(0, 12), action, err: err instanceof Error ? err.message : String(err) }, 'docker: could not inspect container');
    });
    this.chains.set(id, next);
    void next.then(() => {
      if (this.chains.get(id) === next) this.chains.delete(id);
    });
  }

  private async handle(id: string, action: string, ev: DockerEvent): Promise<void> {
    this.touched?.add(id);
    switch (action) {
      case 'kill': {
        // `docker kill -s HUP` asks for a reload, not a stop: stay in the pool.
        const c = this.containers.get(id);
        if (c === undefined || !killStops(ev.Actor.Attributes?.['signal'], c.Config.StopSignal)) return;
        this.stopping.add(id);
        this.emitSoon();
        return;
      }
      case 'stop':
        if (!this.containers.has(id)) return;
        this.stopping.add(id);
        this.emitSoon();
        return;
      case 'die':
      case 'destroy':
        this.stopping.delete(id);
        if (this.containers.delete(id)) this.emitSoon();
        return;
    }
    const info = await this.opts.client.inspect(id);
    this.touched?.add(id);
    if (info && info.State.Running) {
      this.containers.set(id, info);
      if (action === 'start' || action === 'restart' || action === 'unpause') this.stopping.delete(id);
    } else {
      this.containers.delete(id);
      this.stopping.delete(id);
    }
    this.emitSoon();
  }

  /** Coalesces a burst of events into one snapshot (the pool drops duplicates anyway). */
  private emitSoon(): void {
    if (this.emitScheduled) return;
    this.emitScheduled = true;
    setImmediate(() => {
      this.emitScheduled = false;
      this.emitNow();
    });
  }

  private emitNow(): void {
    const r = buildDockerSnapshot(this.containers.values(), { ...this.opts, selfNetworks: this.selfNetworks, provider: this.name }, { stopping: this.stopping });
    this.skipped = r.skipped;
    this.lastSkipped = reportSkipped(this.lastSkipped, r.skipped.map((s) => ({ key: s.id, fields: { container: s.name }, reason: s.reason })), () => this.observer.error(this.name), this.opts.log, 'docker: container skipped');
    this.opts.onSnapshot(r.snapshot);
  }

  /** Networks of berth's own container, when berth runs in one (else none). */
  private async detectSelfNetworks(): Promise<string[]> {
    const id = await selfContainerId();
    if (id === null) return [];
    try {
      const me = await this.opts.client.inspect(id);
      const nets = Object.keys(me?.NetworkSettings.Networks ?? {});
      this.opts.log.info({ container: me ? containerName(me) : id.slice(0, 12), networks: nets }, 'docker: berth runs in a container');
      return nets;
    } catch {
      return [];
    }
  }
}

/**
 * Logs and counts each skipped item once per distinct reason, not on every
 * snapshot; returns the map to pass next time.
 */
export function reportSkipped(prev: ReadonlyMap<string, string>, items: readonly { key: string; fields: Record<string, string>; reason: string }[], count: () => void, log: Logger, msg: string): Map<string, string> {
  const now = new Map<string, string>();
  for (const s of items) {
    now.set(s.key, s.reason);
    if (prev.get(s.key) !== s.reason) {
      count();
      log.warn({ ...s.fields, reason: s.reason }, msg);
    }
  }
  return now;
}

/** Our container id, from the mounts Docker makes for /etc/hostname and friends. */
export async function selfContainerId(): Promise<string | null> {
  try {
    const mounts = await readFile('/proc/self/mountinfo', 'utf8');
    const m = /\/containers\/([0-9a-f]{64})\//.exec(mounts);
    return m ? m[1]! : null;
  } catch {
    return null;
  }
}
