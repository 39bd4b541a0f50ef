import type { Random } from '../core/random.js';

/**
 * What a balancer sees of an endpoint. The pool hands balancers only eligible
 * endpoints (weight > 0, no health flag set); `active` and `latency` are live values
 * the pool and proxy keep current, read at pick time.
 */
export interface BalancerHost {
  readonly id: string;
  /** Effective weight, > 0 (slow start may lower it below the configured weight). */
  readonly weight: number;
  /** Open connections (tcp) or in-flight requests (http) right now. */
  readonly active: number;
  /** Peak-EWMA latency in ms (connect time for tcp); 0 while unknown. */
  readonly latency: number;
}

export interface PickContext<H> {
  /** Hash key for source-hash (the client IP). */
  readonly key?: string | undefined;
  /** Endpoints already tried for this connection: a retry must go elsewhere. */
  readonly exclude?: ReadonlySet<H> | undefined;
}

export type NoneReason = 'empty' | 'all-excluded' | 'at-capacity';
export type PickResult<H> = { readonly type: 'ok'; readonly host: H } | { readonly type: 'none'; readonly reason: NoneReason };

export interface Balancer<H extends BalancerHost> {
  readonly size: number;
  pick(ctx?: PickContext<H>): PickResult<H>;
}

export interface BalancerDeps {
  readonly random: Random;
}

export type BalancerFactory = <H extends BalancerHost>(hosts: readonly H[], deps: BalancerDeps) => Balancer<H>;

export const NONE_EMPTY: PickResult<never> = Object.freeze({ type: 'none', reason: 'empty' });
export const NONE_EXCLUDED: PickResult<never> = Object.freeze({ type: 'none', reason: 'all-excluded' });
export const NONE_FULL: PickResult<never> = Object.freeze({ type: 'none', reason: 'at-capacity' });

export function ok<H>(host: H): PickResult<H> {
  return { type: 'ok', host };
}
