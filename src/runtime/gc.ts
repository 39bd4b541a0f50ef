/**
 * One V8 setting berth applies to itself before anything else loads (main.ts
 * imports this module first, in every process: a single berth, the primary and
 * each worker).
 *
 * `--external-memory-accounted-in-global-limit` (V8 13, node 24): ArrayBuffers
 * count against the heap's own growth limit instead of a separate 64 MB trigger.
 * Every socket read that node makes into a buffer of its own (the client leg of a
 * tcp session, http bodies) is such an ArrayBuffer; without the flag, a stream of
 * 1 GB/s makes V8 run a full mark-compact of berth's whole heap every ~70 ms. With
 * it, the young-generation scavenges free those buffers and the mark-compacts
 * become rare: one bulk stream, client to endpoint, 152 → 31 mark-compacts and
 * ~+25% throughput on the same core (bench/RESULTS.md). V8 later made this its
 * default and removed the flag (V8 513bb22991, cf511a65ad; crbug 361124432), so berth
 * sets it only on V8 13, where it exists and is off. Older V8 does not know it:
 * berth runs without it there and says so in one line at start.
 */
import v8 from 'node:v8';

const FLAG = '--external-memory-accounted-in-global-limit';

/**
 * What berth does on this V8 (`process.versions.v8`): set the flag (V8 13: node 24),
 * nothing to say (newer: V8's own behaviour), or run without it and say why (older).
 */
export function gcTuningFor(v8Version: string, nodeVersion: string): { readonly apply: boolean; readonly why: string } {
  const major = Number(v8Version.split('.')[0]);
  if (major === 13) return { apply: true, why: '' };
  if (major > 13) return { apply: false, why: '' };
  return { apply: false, why: `V8 ${v8Version} (node ${nodeVersion}) lacks ${FLAG}; node 24 has it: a bulk stream runs more full GCs here` };
}

export const gcTuning = gcTuningFor(process.versions.v8, process.version);

if (gcTuning.apply) v8.setFlagsFromString(FLAG);
