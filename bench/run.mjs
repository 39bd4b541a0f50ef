#!/usr/bin/env node
// npm run bench -- [tcp|http|h2|tls|udp|sni|dns|scale|docker|metrics] [--reps N] [--seconds S] [--rss-connections N]
// npm run bench -- ab --ref /path/to/another/built/checkout [--reps N] [--seconds S]   (not in the default set)
// Prints a markdown table of medians and ratios, and writes the raw runs to bench/out/.
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { abBench } from './ab.mjs';
import { dockerBench } from './docker.mjs';
import { h2Bench } from './h2.mjs';
import { httpBench } from './http.mjs';
import { metricsBench } from './metrics.mjs';
import { scaleBench } from './scale.mjs';
import { dnsBench } from './dns.mjs';
import { sniBench } from './sni.mjs';
import { tcpBench } from './tcp.mjs';
import { tlsBench } from './tls.mjs';
import { udpBench } from './udp.mjs';

const argv = process.argv.slice(2);
const opt = (name, def) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? Number(argv[i + 1]) : def;
};
const suites = { tcp: tcpBench, http: httpBench, h2: h2Bench, tls: tlsBench, udp: udpBench, sni: sniBench, dns: dnsBench, scale: scaleBench, docker: dockerBench, metrics: metricsBench, ab: abBench };
const chosen = argv.filter((a, i) => !a.startsWith('--') && !(i > 0 && argv[i - 1].startsWith('--')));
const names = chosen.length ? chosen : Object.keys(suites).filter((n) => n !== 'ab');
const refAt = argv.indexOf('--ref');
const params = { reps: opt('reps', 3), seconds: opt('seconds', 5), rssConnections: opt('rss-connections', 5000), iterations: opt('iterations', 10), ref: refAt >= 0 ? argv[refAt + 1] : undefined };

for (const name of names) {
  const suite = suites[name];
  if (!suite) {
    console.error(`unknown benchmark "${name}"; known: ${Object.keys(suites).join(', ')}`);
    process.exit(1);
  }
  const r = await suite(params);
  const outDir = fileURLToPath(new URL('./out/', import.meta.url));
  mkdirSync(outDir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  writeFileSync(`${outDir}/${name}-${stamp}.json`, JSON.stringify(r, null, 2));
  const how = name !== 'docker' ? `${params.reps} reps x ${params.seconds}s, medians` : `${params.iterations} iterations`;
  // berth starts through its shebang (`env node`): the node on PATH, which runs this too.
  console.log(`\n## ${name} (${how}) — ${new Date().toISOString()} — node ${process.version}\n`);
  console.log(r.table);
  if (r.errors) console.log(`\nconnection errors reported by wrk: ${JSON.stringify(r.errors)}`);
}
