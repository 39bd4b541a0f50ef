/**
 * Loads a CommonJS package the first time it is needed, not when berth starts.
 *
 * dockerode, undici, node-forge and pino-pretty together are ~16 MB of live
 * JavaScript heap once loaded, and every major GC marks all of it. A proxy that
 * streams bytes triggers major GCs often (node allocates each socket read as an
 * ArrayBuffer, and V8 starts a mark-compact per ~64 MB of them), so a berth that
 * has no Docker discovery, no http listener or no certificate to make should not
 * carry them: see bench/RESULTS.md (bulk TCP on Node 24). Load at configure time
 * (a listener or provider being built), never inside a request.
 */
import { createRequire } from 'node:module';

const load = createRequire(import.meta.url);

export function lazy<T>(id: string): () => T {
  let mod: T | undefined;
  return () => (mod ??= load(id) as T);
}
