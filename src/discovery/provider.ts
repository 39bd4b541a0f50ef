/**
 * What every discovery provider is to the runtime, and the registry of the kinds
 * berth has. A provider emits full snapshots (through the callback it was built
 * with) and says how it is doing; the runtime starts, replaces and stops them all
 * through this one interface (runtime/providers.ts), never by name.
 */
import type { ProviderSnapshot } from '../core/types.js';

/** Something a provider was asked to route but cannot, with the reason (a container, a Swarm task, ...). */
export interface SkippedItem {
  readonly name: string;
  readonly reason: string;
}

export interface Provider {
  /** Also the provider name in its snapshots. */
  readonly name: string;
  /** First sync; rejects when the source cannot be read at all (the caller decides what that means). */
  start(): Promise<void>;
  stop(): void;
  /** The source answers now (an engine connection is open, every name resolves). */
  readonly connected: boolean;
  /** A full sync has completed once (readiness). */
  readonly synced: boolean;
  /** Wall-clock ms of the last full sync, 0 before the first. */
  readonly lastSyncAt: number;
  readonly skipped: readonly SkippedItem[];
}

/** What a provider kind needs to build one: where its snapshots go. */
export interface ProviderDeps {
  readonly onSnapshot: (snap: ProviderSnapshot) => void;
}

/**
 * A kind of provider: how to build one from its settings, what its failure to
 * start means to a user, and what readiness waits for.
 */
export interface ProviderKind<S> {
  readonly name: string;
  create(settings: S, deps: ProviderDeps): Provider;
  /** The error a failed first sync becomes (a coded BerthError, with the reason). */
  startError(settings: S, err: unknown): Error;
  /** The readiness reason while a provider of this kind has not synced. */
  readonly notSynced: string;
}

/** The kinds, in the order they start (and are listed in the admin API). */
export class ProviderRegistry<K extends Record<string, unknown>> {
  private readonly kinds: { readonly key: keyof K & string; readonly kind: ProviderKind<never> }[] = [];

  define<N extends keyof K & string>(key: N, kind: ProviderKind<K[N]>): this {
    this.kinds.push({ key, kind: kind as ProviderKind<never> });
    return this;
  }

  list(): readonly { readonly key: keyof K & string; readonly kind: ProviderKind<unknown> }[] {
    return this.kinds as { readonly key: keyof K & string; readonly kind: ProviderKind<unknown> }[];
  }
}
