import yargs, { type Argv } from 'yargs';
import { balanceAlgorithms } from '../core/types.js';
import { logLevels, type LogFormat } from '../log.js';
import type { OverrideCommand } from './override.js';

/** Options of `berth run`, as parsed from flags and BERTH_* variables. */
export interface RunArgs {
  readonly config?: string | undefined;
  readonly listen: string[];
  readonly backend: string[];
  readonly mode?: string | undefined;
  readonly balance?: string | undefined;
  readonly service?: string | undefined;
  readonly admin?: string | undefined;
  readonly adminTokenFile?: string | undefined;
  readonly drainTimeout?: string | undefined;
  /** --dns: the DNS interface's address. */
  readonly dns?: string | undefined;
  readonly docker: boolean;
  readonly dockerHost?: string | undefined;
  readonly swarm: boolean;
  /** --etcd (repeatable): register in and read other hosts from etcd. */
  readonly etcd: string[];
  readonly hostId?: string | undefined;
  readonly advertise?: string | undefined;
  /** Worker processes: a number or "auto" (one per core). */
  readonly workers?: number | 'auto' | undefined;
  /** --workers: one listening socket per worker (SO_REUSEPORT): auto, on or off. */
  readonly reusePort: 'auto' | 'on' | 'off';
  readonly logLevel: string;
  readonly logFormat: LogFormat;
}

export interface DemoArgs {
  readonly listen: string;
  readonly admin: string;
  readonly balance: string;
  readonly logLevel: string;
  readonly logFormat: LogFormat;
}

export type Command =
  | { readonly name: 'run'; readonly args: RunArgs }
  | { readonly name: 'check'; readonly config: string }
  | { readonly name: 'status'; readonly admin: string; readonly adminTokenFile?: string | undefined }
  | { readonly name: 'override'; readonly override: OverrideCommand }
  | { readonly name: 'certs-ca'; readonly out: string; readonly cn: string; readonly days: number; readonly force: boolean }
  | {
      readonly name: 'certs-issue';
      readonly ca: string;
      readonly out: string;
      readonly certName: string;
      readonly san: string;
      readonly usage: 'server' | 'client' | 'both';
      readonly days: number;
      readonly force: boolean;
    }
  | { readonly name: 'demo'; readonly args: DemoArgs };

/**
 * Repeatable flags also come from BERTH_* variables as one string; split those on
 * whitespace ("BERTH_BACKEND='a:80 b:80'"). Commas stay: they separate endpoint options.
 */
function list(v: unknown): string[] {
  const items = Array.isArray(v) ? v : v === undefined ? [] : [v];
  return items.flatMap((x) => String(x).split(/\s+/)).filter((x) => x !== '');
}

function str(v: unknown): string | undefined {
  return v === undefined ? undefined : String(v);
}

function logOptions<T>(y: Argv<T>) {
  return y
    .option('log-level', { type: 'string', choices: logLevels as string[], default: 'info', describe: 'pino log level' })
    .option('log-format', { type: 'string', choices: ['auto', 'json', 'pretty'], default: 'auto', describe: 'log output format: auto is pretty at a terminal, JSON otherwise' });
}

/** The flags each command takes, for BERTH_<FLAG> environment variables. */
const COMMAND_FLAGS: Readonly<Record<string, readonly { name: string; kind: 'string' | 'array' | 'boolean' }[]>> = {
  run: [
    { name: 'config', kind: 'string' },
    { name: 'listen', kind: 'array' },
    { name: 'mode', kind: 'string' },
    { name: 'backend', kind: 'array' },
    { name: 'balance', kind: 'string' },
    { name: 'service', kind: 'string' },
    { name: 'admin', kind: 'string' },
    { name: 'admin-token-file', kind: 'string' },
    { name: 'drain-timeout', kind: 'string' },
    { name: 'dns', kind: 'string' },
    { name: 'docker', kind: 'boolean' },
    { name: 'docker-host', kind: 'string' },
    { name: 'swarm', kind: 'boolean' },
    { name: 'etcd', kind: 'array' },
    { name: 'host-id', kind: 'string' },
    { name: 'advertise', kind: 'string' },
    { name: 'workers', kind: 'string' },
    { name: 'reuse-port', kind: 'string' },
    { name: 'log-level', kind: 'string' },
    { name: 'log-format', kind: 'string' },
  ],
  check: [{ name: 'config', kind: 'string' }],
  status: [
    { name: 'admin', kind: 'string' },
    { name: 'admin-token-file', kind: 'string' },
  ],
  certs: [],
  demo: [
    { name: 'listen', kind: 'string' },
    { name: 'admin', kind: 'string' },
    { name: 'balance', kind: 'string' },
    { name: 'log-level', kind: 'string' },
    { name: 'log-format', kind: 'string' },
  ],
};
const ALIASES: Readonly<Record<string, string>> = { c: 'config', l: 'listen' };

/**
 * BERTH_<FLAG> variables as extra arguments, for the flags of the command being
 * run only; a flag given on the command line wins. Other BERTH_* variables (say
 * BERTH_REQUIRE_DOCKER of the test suite) are not berth's flags and are ignored,
 * rather than failing strict parsing as yargs' .env() would.
 */
export function envArgs(argv: readonly string[], env: NodeJS.ProcessEnv): string[] {
  const first = argv.find((a) => !a.startsWith('-'));
  const command = first !== undefined && first in COMMAND_FLAGS ? first : 'run';
  const given = new Set<string>();
  for (const a of argv) {
    const m = /^--?(?:no-)?([A-Za-z][\w-]*)/.exec(a);
    if (m) given.add(ALIASES[m[1]!] ?? m[1]!);
  }
  const out: string[] = [];
  for (const f of COMMAND_FLAGS[command]!) {
    const value = env[`BERTH_${f.name.toUpperCase().replace(/-/g, '_')}`];
    if (value === undefined || given.has(f.name)) continue;
    if (f.kind === 'boolean') out.push(/^(1|true|yes|on)$/i.test(value.trim()) ? `--${f.name}` : `--no-${f.name}`);
    else if (f.kind === 'array') for (const item of value.split(/\s+/).filter((x) => x !== '')) out.push(`--${f.name}`, item);
    else out.push(`--${f.name}`, value);
  }
  return out;
}

/**
 * Parses argv into a Command. Invalid arguments print the message and usage to
 * stderr and exit 1 (INTERFACE.md); --help and --version exit 0.
 */
export async function parseArgs(argv: string[], version: string): Promise<Command> {
  let command: Command | undefined;
  const parser = yargs([...argv, ...envArgs(argv, process.env)])
    .scriptName('berth')
    .strict()
    .version(version)
    .help()
    .alias('h', 'help')
    .wrap(Math.min(110, process.stdout.columns || 100))
    .command(
      ['run', '$0'],
      'run the proxy (the default command)',
      (y) =>
        logOptions(y)
          .option('config', { alias: 'c', type: 'string', describe: 'YAML or JSON config file; flags override it' })
          .option('listen', { alias: 'l', type: 'string', array: true, describe: '[host:]port to accept on; repeatable (without --config)' })
          .option('mode', { type: 'string', choices: ['tcp', 'http', 'udp'], describe: 'listener mode: tcp, http or udp (without --config; default tcp)' })
          .option('backend', { type: 'string', array: true, describe: 'static endpoint host:port[,weight=N]; repeatable (without --config)' })
          .option('balance', { type: 'string', choices: balanceAlgorithms as string[], describe: 'balancing algorithm (default least-conn for tcp, p2c for http)' })
          .option('service', { type: 'string', describe: 'service name of the --backend endpoints (default "default")' })
          .option('admin', { type: 'string', describe: 'admin/metrics address [host:]port, or "off" (default 127.0.0.1:9901)' })
          .option('admin-token-file', { type: 'string', describe: 'file with a bearer token the admin API then requires (all but /healthz)' })
          .option('drain-timeout', { type: 'string', describe: 'how long SIGTERM waits for open connections, e.g. 30s' })
          .option('dns', { type: 'string', describe: 'DNS interface address [host:]port (udp and tcp): <service>.service.berth. from the pick set' })
          .option('docker', { type: 'boolean', describe: 'discover endpoints from the Docker engine (containers labelled berth.enable=true)' })
          .option('docker-host', { type: 'string', describe: 'Docker engine: unix:///var/run/docker.sock (default) or tcp://host:port' })
          .option('swarm', { type: 'boolean', describe: 'discover Swarm services from the engine, a manager (services labelled berth.enable=true)' })
          .option('etcd', { type: 'string', array: true, describe: 'etcd client URL (repeatable): publish this host\'s endpoints and add other hosts\'' })
          .option('host-id', { type: 'string', describe: 'this host\'s id in etcd (default: the hostname)' })
          .option('advertise', { type: 'string', describe: 'address other hosts reach this host\'s published ports at' })
          .option('workers', { type: 'string', describe: 'worker processes sharing the listeners: N or "auto" (one per core); default 1' })
          .option('reuse-port', {
            type: 'string',
            default: 'auto',
            describe: 'with --workers, a listening socket per worker (SO_REUSEPORT): auto (where the kernel hands a dying worker\'s waiting connections to the others), on, off',
          })
          .check((a) => {
            if (a.workers !== undefined && a.workers !== 'auto' && !/^([1-9]|[1-5][0-9]|6[0-4])$/.test(String(a.workers))) {
              throw new Error(`--workers: expected a number from 1 to 64 or "auto", got "${a.workers}"`);
            }
            if (!['auto', 'on', 'off'].includes(String(a['reuse-port']))) throw new Error(`--reuse-port: expected auto, on or off, got "${String(a['reuse-port'])}"`);
            if (a.config !== undefined) {
              const clash = ['listen', 'backend', 'mode', 'service'].filter((k) => a[k] !== undefined);
              if (clash.length > 0) throw new Error(`--${clash[0]} cannot be combined with --config: describe listeners and services in the file`);
            }
            return true;
          }),
      (a) => {
        command = {
          name: 'run',
          args: {
            config: str(a.config),
            listen: list(a.listen),
            backend: list(a.backend),
            mode: str(a.mode),
            balance: str(a.balance),
            service: str(a.service),
            admin: str(a.admin),
            adminTokenFile: str(a['admin-token-file']),
            drainTimeout: str(a['drain-timeout']),
            dns: str(a.dns),
            docker: a.docker === true || (a['docker-host'] !== undefined && a.swarm !== true),
            swarm: a.swarm === true,
            dockerHost: str(a['docker-host']),
            etcd: list(a.etcd),
            hostId: str(a['host-id']),
            advertise: str(a.advertise),
            workers: a.workers === undefined ? undefined : a.workers === 'auto' ? 'auto' : Number(a.workers),
            reusePort: String(a['reuse-port']) as 'auto' | 'on' | 'off',
            logLevel: String(a['log-level']),
            logFormat: a['log-format'] as LogFormat,
          },
        };
      },
    )
    .command(
      'check',
      'validate a config file: exit 0, or exit 1 and print every error with its path',
      (y) => y.option('config', { alias: 'c', type: 'string', demandOption: true, describe: 'config file to check' }),
      (a) => {
        command = { name: 'check', config: a.config };
      },
    )
    .command(
      'status',
      'print services, endpoints, health and load as a table (from the admin API)',
      (y) =>
        y
          .option('admin', { type: 'string', default: '127.0.0.1:9901', describe: 'admin address or URL of the berth to ask' })
          .option('admin-token-file', { type: 'string', describe: 'file with the bearer token of that admin API' }),
      (a) => {
        command = { name: 'status', admin: a.admin, adminTokenFile: str(a['admin-token-file']) };
      },
    )
    .command(
      'drain [endpoint]',
      'take an endpoint (or a --service, whole) out of the pick set until undrained: open connections go on (admin API; needs its token)',
      (y) => overrideOptions(y),
      (a) => {
        command = overrideCommand('drain', a);
      },
    )
    .command(
      'undrain [endpoint]',
      'put a drained endpoint (or --service) back in the pick set',
      (y) => overrideOptions(y),
      (a) => {
        command = overrideCommand('undrain', a);
      },
    )
    .command(
      'weight <endpoint> <weight>',
      'set an endpoint\'s weight (0-1000) over what discovery says, or "discovery" to give it back',
      (y) => overrideOptions(y).positional('weight', { type: 'string', describe: '0-1000, or discovery' }),
      (a) => {
        const w = String(a['weight']);
        if (w !== 'discovery' && !/^\d{1,4}$/.test(w)) throw new Error(`weight ${w}: an integer 0-1000, or "discovery"`);
        if (w !== 'discovery' && Number(w) > 1000) throw new Error(`weight ${w}: at most 1000`);
        command = overrideCommand('weight', a, w === 'discovery' ? null : Number(w));
      },
    )
    .command('certs', 'make a CA and server/client certificates for mTLS (RSA keys, node-forge)', (y) =>
      y
        .command(
          'ca',
          'create a CA: DIR/ca.pem and DIR/ca-key.pem',
          (c) =>
            c
              .option('out', { type: 'string', demandOption: true, describe: 'directory to write to' })
              .option('cn', { type: 'string', default: 'berth CA', describe: 'common name' })
              .option('days', { type: 'number', default: 3650, describe: 'validity in days' })
              .option('force', { type: 'boolean', default: false, describe: 'overwrite existing files' }),
          (a) => {
            command = { name: 'certs-ca', out: a.out, cn: a.cn, days: a.days, force: a.force };
          },
        )
        .command(
          'issue',
          'issue a certificate signed by the CA: DIR/NAME.pem and DIR/NAME-key.pem',
          (c) =>
            c
              .option('ca', { type: 'string', demandOption: true, describe: 'directory holding ca.pem and ca-key.pem' })
              .option('out', { type: 'string', demandOption: true, describe: 'directory to write to' })
              .option('name', { type: 'string', demandOption: true, describe: 'certificate name (common name and file name)' })
              .option('san', { type: 'string', default: '', describe: 'subject alternative names: DNS:a,IP:1.2.3.4,URI:spiffe://x/y' })
              .option('client', { type: 'boolean', describe: 'client certificate (clientAuth)' })
              .option('server', { type: 'boolean', describe: 'server certificate (serverAuth); default both' })
              .option('days', { type: 'number', default: 825, describe: 'validity in days' })
              .option('force', { type: 'boolean', default: false, describe: 'overwrite existing files' })
              .check((a) => {
                if (a.client && a.server) throw new Error('--client and --server: choose one (neither gives both usages)');
                if (!Number.isInteger(a.days) || a.days < 1) throw new Error('--days: expected a whole number of days >= 1');
                return true;
              }),
          (a) => {
            command = { name: 'certs-issue', ca: a.ca, out: a.out, certName: a.name, san: a.san, usage: a.client ? 'client' : a.server ? 'server' : 'both', days: a.days, force: a.force };
          },
        )
        .demandCommand(1, 'berth certs: choose ca or issue'),
    )
    .command(
      'demo',
      'self-contained demo: three local endpoints behind berth; prints what to try',
      (y) =>
        logOptions(y)
          .option('listen', { alias: 'l', type: 'string', default: '127.0.0.1:8080', describe: 'where the demo proxy listens' })
          .option('admin', { type: 'string', default: '127.0.0.1:9901', describe: 'admin/status page address, or "off"' })
          .option('balance', { type: 'string', choices: balanceAlgorithms as string[], default: 'round-robin' }),
      (a) => {
        command = { name: 'demo', args: { listen: a.listen, admin: a.admin, balance: a.balance, logLevel: String(a['log-level']), logFormat: a['log-format'] as LogFormat } };
      },
    )
    .fail((msg, err) => {
      process.stderr.write(`berth: ${msg ?? err?.message}\nRun "berth --help" for usage.\n`);
      process.exit(1);
    });
  await parser.parseAsync();
  if (command === undefined) process.exit(0);
  return command;
}

function overrideOptions<T>(y: Argv<T>) {
  return y
    .positional('endpoint', { type: 'string', describe: 'endpoint id (as berth status shows it)' })
    .option('service', { type: 'string', describe: 'the service (an endpoint id in several; or, without an endpoint, the whole service)' })
    .option('admin', { type: 'string', default: '127.0.0.1:9901', describe: 'admin address or URL of the berth to change' })
    .option('admin-token-file', { type: 'string', describe: 'file with the bearer token of that admin API' });
}

function overrideCommand(op: 'drain' | 'undrain' | 'weight', a: Record<string, unknown>, weight: number | null = null): Command {
  const endpoint = str(a['endpoint']) ?? null;
  const service = str(a['service']);
  if (endpoint === null && service === undefined) throw new Error(`${op}: name an endpoint, or a --service`);
  return { name: 'override', override: { op, endpoint, service, weight, admin: String(a['admin']), adminTokenFile: str(a['admin-token-file']) } };
}
