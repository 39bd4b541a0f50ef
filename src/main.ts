#!/usr/bin/env -S node --max-semi-space-size=2 --initial-heap-size=64
// A 2 MiB young generation (node's default grows to 16 MiB): per-connection garbage
// is short-lived, and the smaller nursery cuts resident memory per proxied
// connection by about a third with no measurable cost in throughput.
// A 64 MiB initial heap: every 64 KiB socket read is an external buffer, and with
// berth's ~20 MiB of live heap V8 otherwise answers that external memory with a full
// mark-compact every ~40 ms (about 60 in 3 s of one bulk stream); this lets the
// young-generation scavenges free them instead: one TCP stream 5.5 -> 8.4 Gbit/s,
// idle RSS and RSS per held connection unchanged (bench/RESULTS.md).
// Both apply when berth is run as `berth` or ./dist/main.js (and in the image).
// On node 24 that initial heap no longer stops them; runtime/gc.ts (imported first)
// sets the V8 flag that does.
/**
 * berth's entry point: parses the command line, builds the config, starts the
 * proxy and handles signals. Exit codes: 0 ok, 1 invalid config or arguments,
 * 2 runtime failure (INTERFACE.md).
 */
import { gcTuning } from './runtime/gc.js';
import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { Berth } from './runtime/runtime.js';
import { parseArgs, type DemoArgs, type RunArgs } from './cli/args.js';
import { startDemoBackend } from './cli/demo-backends.js';
import { status } from './cli/status.js';
import { override } from './cli/override.js';
import { usableCpus, workerCount } from './cluster/cpus.js';
import { runPrimary } from './cluster/primary.js';
import { runWorker } from './cluster/worker.js';
import { configFromFlags } from './config/flags.js';
import type { Config, ListenerConfig } from './config/schema.js';
import { loadConfig, reloadable, type ConfigSource } from './config/source.js';
import { ConfigError, ExitCode, formatIssue, isBerthError } from './core/errors.js';
import { handleSignals } from './runtime/signals.js';
import { formatHostPort } from './core/types.js';
import { createLogger, type LogFormat, type Logger } from './log.js';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

function printConfigError(err: ConfigError): void {
  process.stderr.write(`berth: invalid configuration (${err.issues.length} error${err.issues.length === 1 ? '' : 's'}):\n`);
  for (const i of err.issues) process.stderr.write(`  ${formatIssue(i)}\n`);
}

/** Maps an error at start-up to the exit code of the contract. */
function exitFor(err: unknown, log?: Logger): never {
  if (err instanceof ConfigError) {
    printConfigError(err);
    process.exit(ExitCode.Invalid);
  }
  if (isBerthError(err) && (err.code === 'BERTH_ERR_CONFIG_READ' || err.code === 'BERTH_ERR_ARGS')) {
    process.stderr.write(`berth: ${err.message}\n`);
    process.exit(ExitCode.Invalid);
  }
  const message = err instanceof Error ? err.message : String(err);
  if (log) log.fatal({ err }, message);
  process.stderr.write(`berth: ${message}\n`);
  process.exit(ExitCode.Runtime);
}

function sourceOf(a: RunArgs): ConfigSource {
  if (a.config !== undefined) return { path: a.config, overrides: { balance: a.balance, admin: a.admin, adminTokenFile: a.adminTokenFile, docker: a.docker, swarm: a.swarm, dockerHost: a.dockerHost, dns: a.dns, etcd: a.etcd, hostId: a.hostId, advertise: a.advertise } };
  return { flags: a };
}

/** Runs a Berth until SIGTERM/SIGINT; SIGHUP reloads through `reloadConfig` when given. */
async function serve(berth: Berth, log: Logger, reloadConfig: (() => Promise<Config>) | null): Promise<void> {
  try {
    await berth.start();
  } catch (err) {
    exitFor(err, log);
  }
  const c = berth.config;
  log.info(
    { version: pkg.version, node: process.version, listeners: c.listeners.length, services: c.services.size, admin: c.admin ? formatHostPort(c.admin) : 'off', drainTimeoutMs: c.drainTimeout },
    'berth started',
  );
  handleSignals({
    log,
    stop: (signal) => {
      const open = berth.openSessions();
      // shutdown() stops accepting before it first waits: the line below is only
      // written once new connections are refused.
      const drained = berth.shutdown(berth.config.drainTimeout);
      log.info({ signal, open, drainTimeoutMs: berth.config.drainTimeout }, 'stopping: no new connections, draining open ones');
      void drained.then((cut) => {
        log.info({ cut }, cut > 0 ? 'drain timeout reached; closed the remaining connections' : 'drained; bye');
        process.exit(ExitCode.Ok);
      });
    },
    reload: reloadConfig === null ? null : async () => berth.reload(await reloadConfig()),
    reloadFailed: () => berth.reloadFailed(),
  });
}

async function run(a: RunArgs): Promise<void> {
  const log = createLogger(a.logLevel as 'info', a.logFormat);
  const workers = workerCount(a.workers, usableCpus(os.availableParallelism()));
  // A worker takes its config from the primary (the one that loaded and validated it).
  if (workers > 1 && cluster.isWorker) return runWorker(log.child({ worker: cluster.worker?.id }), pkg.version);
  if (gcTuning.why !== '') log.info(gcTuning.why);
  const source = sourceOf(a);
  let loaded;
  try {
    loaded = await loadConfig(source);
  } catch (err) {
    exitFor(err);
  }
  const again = reloadable(source) ? () => loadConfig(source) : null;
  if (workers > 1) {
    try {
      await runPrimary(loaded, workers, log, pkg.version, again, a.reusePort);
    } catch (err) {
      exitFor(err, log);
    }
    return;
  }
  const berth = new Berth(loaded.config, { log, version: pkg.version });
  await serve(berth, log, again === null ? null : async () => (await again()).config);
}

async function check(path: string): Promise<void> {
  try {
    const { config: c } = await loadConfig({ path, overrides: {} });
    let endpoints = 0;
    for (const s of c.services.values()) endpoints += s.endpoints.length;
    process.stdout.write(`${path}: ok (${c.listeners.length} listener(s), ${c.services.size} service(s), ${endpoints} static endpoint(s))\n`);
  } catch (err) {
    exitFor(err);
  }
}

async function demo(a: DemoArgs): Promise<void> {
  const backends = await Promise.all(['backend-1', 'backend-2', 'backend-3'].map((n) => startDemoBackend(n)));
  let config: Config;
  try {
    config = configFromFlags({
      listen: [a.listen],
      backend: backends.map((b) => `127.0.0.1:${b.port}`),
      balance: a.balance,
      service: 'demo',
      admin: a.admin,
      drainTimeout: '2s',
    });
  } catch (err) {
    exitFor(err);
  }
  // The same endpoints once more behind an http listener on the next port.
  const tcp = config.listeners[0]!;
  const httpListener: ListenerConfig = { ...tcp, name: 'demo-http', mode: 'http', bind: { host: tcp.bind.host, port: tcp.bind.port === 0 ? 0 : tcp.bind.port + 1 }, timeouts: { ...tcp.timeouts, idle: 60_000 } };
  config = { ...config, listeners: [tcp, httpListener] };
  const log = createLogger(a.logLevel as 'info', a.logFormat as LogFormat);
  const berth = new Berth(config, { log, version: pkg.version });
  await serve(berth, log, null);
  const [tcpAddr, httpAddr] = [...berth.listeners.values()].map((l) => formatHostPort({ host: l.address.address, port: l.address.port }));
  const where = tcpAddr ?? a.listen;
  process.stderr.write(
    [
      '',
      `berth demo: ${backends.length} endpoints (${backends.map((b) => `${b.name} on 127.0.0.1:${b.port}`).join(', ')})`,
      `behind a tcp listener on ${where} and an http listener on ${httpAddr}, balance ${a.balance}.`,
      '',
      'Try, in another terminal:',
      `  curl http://${where}/                       # one endpoint answers with its name`,
      `  for i in 1 2 3 4 5 6; do curl -s http://${where}/; done   # answers rotate`,
      `  echo hi | nc ${where.replace(/:(\d+)$/, ' $1')}                         # plain TCP works too`,
      `  curl -si http://${httpAddr}/              # the HTTP listener: the endpoint saw X-Forwarded-For`,
      '',
      ...(berth.adminAddress
        ? [
            `  open http://${formatHostPort(berth.adminAddress)}/ for the status page, /metrics for Prometheus`,
            `  berth status --admin ${formatHostPort(berth.adminAddress)}      # the same in the terminal`,
          ]
        : []),
      '',
      'Ctrl-C stops it (berth drains open connections first).',
      '',
    ].join('\n'),
  );
}

async function main(): Promise<void> {
  const cmd = await parseArgs(process.argv.slice(2), pkg.version);
  switch (cmd.name) {
    case 'run':
      return run(cmd.args);
    case 'check':
      return check(cmd.config);
    case 'demo':
      return demo(cmd.args);
    case 'certs-ca':
      try {
        // node-forge (~2 MB of heap) only for the certificate commands, never in a running proxy.
        const { createCa } = await import('./tls/certs.js');
        const r = await createCa({ out: cmd.out, cn: cmd.cn, days: cmd.days, force: cmd.force });
        process.stdout.write(`wrote ${r.cert} and ${r.key} (mode 0600)\n`);
      } catch (err) {
        exitFor(err);
      }
      return;
    case 'certs-issue': {
      const { issueCert, parseSans } = await import('./tls/certs.js');
      const sans = parseSans(cmd.san);
      if (!sans.ok) {
        process.stderr.write(`berth: --san: ${sans.message}\n`);
        process.exit(ExitCode.Invalid);
      }
      try {
        const r = await issueCert({ ca: cmd.ca, out: cmd.out, name: cmd.certName, sans: sans.sans, usage: cmd.usage, days: cmd.days, force: cmd.force });
        process.stdout.write(`wrote ${r.cert} and ${r.key} (mode 0600)\n`);
      } catch (err) {
        exitFor(err);
      }
      return;
    }
    case 'status':
      try {
        process.stdout.write(await status(cmd.admin, cmd.adminTokenFile));
      } catch (err) {
        process.stderr.write(`berth status: ${err instanceof Error ? err.message : String(err)}\n`);
        process.exit(ExitCode.Runtime);
      }
      return;
    case 'override':
      try {
        process.stdout.write(await override(cmd.override));
      } catch (err) {
        process.stderr.write(`berth ${cmd.override.op}: ${err instanceof Error ? err.message : String(err)}\n`);
        process.exit(ExitCode.Runtime);
      }
      return;
  }
}

main().catch((err: unknown) => exitFor(err));
