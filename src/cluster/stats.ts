/**
 * The primary's read-only view of endpoint counters: each worker's, summed (the
 * latency: the worst worker's). Built whole from every poll and read by the admin
 * API and the metrics; never written into the primary's pool.
 */
import type { EndpointStats } from './protocol.js';

export function sumWorkerStats(answers: readonly { readonly endpoints: readonly EndpointStats[] }[]): Map<string, EndpointStats> {
  const sum = new Map<string, EndpointStats>();
  for (const a of answers) {
    for (const e of a.endpoints) {
      const k = statsKey(e.service, e.id);
      const t = sum.get(k);
      if (!t) sum.set(k, { ...e });
      else {
        t.active += e.active;
        t.connections += e.connections;
        t.failures += e.failures;
        t.latency = Math.max(t.latency, e.latency);
      }
    }
  }
  return sum;
}

export function statsKey(service: string, id: string): string {
  return `${service}\0${id}`;
}
