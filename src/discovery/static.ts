import type { EndpointSpec, ProviderSnapshot } from '../core/types.js';

/** The static provider: the endpoints written in the config, as one full snapshot. */
export function staticSnapshot(services: Iterable<{ readonly name: string; readonly endpoints: readonly EndpointSpec[] }>): ProviderSnapshot {
  const map = new Map<string, readonly EndpointSpec[]>();
  for (const s of services) map.set(s.name, s.endpoints);
  return { provider: 'static', services: map };
}
