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
 *
 * It pays only with berth's small young generation (`--max-semi-space-size=2`, which
 * the `berth` executable's shebang and the image pass to node): there scavenges run
 * often and free the read buffers. With node's default 16 MiB semi-spaces the
 * buffers outlive the scavenges, and the flag lets ~55 MiB more of them collect
 * before a mark-compact during a 1 GiB http body (peak RSS growth 102 → 157 MiB,
 * against 97 → 105 with the small nursery). So berth run as `node dist/main.js`
 * without that flag does not set it either, and says so.
 */
import v8 from 'node:v8';

const FLAG = '--external-memory-accounted-in-global-limit';

/** The largest semi-space node was started with, MiB (`--max-semi-space-size`), if given. */
export function semiSpaceMb(execArgv: readonly string[], nodeOptions = ''): number | undefined {
  let mb: number | undefined;
  for (const a of [...execArgv, ...nodeOptions.split(/\s+/)]) {
    const m = /^--max[-_]semi[-_]space[-_]size=(\d+)$/.exec(a);
    if (m) mb = Number(m[1]);
  }
  return mb;
}

/**
 * What berth does on this V8 (`process.versions.v8`) and young generation: set the
 * flag (V8 13, semi-spaces of at most 2 MiB), nothing to say (newer V8: its own
 * behaviour), or run without it and say why (older V8; node's default young generation).
 */
export function gcTuningFor(v8Version: string, nodeVersion: string, semiSpace: number | undefined): { readonly apply: boolean; readonly why: string } {
  const major = Number(v8Version.split('.')[0]);
  if (major > 13) return { apply: false, why: '' };
  if (major < 13) return { apply: false, why: `V8 ${v8Version} (node ${nodeVersion}) lacks ${FLAG}; node 24 has it: a bulk stream runs more full GCs here` };
  if (semiSpace === undefined || semiSpace > 2)
    return { apply: false, why: `running without ${FLAG}: it pays only with a small young generation (node --max-semi-space-size=2, as the berth executable and the image start it; this node has ${semiSpace === undefined ? "node's default" : `${semiSpace} MiB`})` };
  return { apply: true, why: '' };
}

export const gcTuning = gcTuningFor(process.versions.v8, process.version, semiSpaceMb(process.execArgv, process.env['NODE_OPTIONS']));

if (gcTuning.apply) v8.setFlagsFromString(FLAG);
