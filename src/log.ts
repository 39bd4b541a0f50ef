import { pino, type Logger, type LevelWithSilent } from 'pino';
import type pinoPretty from 'pino-pretty';
import { lazy } from './core/lazy.js';

export type { Logger } from 'pino';

/** pino-pretty only for --log-format pretty. */
const pretty = lazy<typeof pinoPretty>('pino-pretty');
export type LogFormat = 'json' | 'pretty';
export const logLevels: readonly LevelWithSilent[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/**
 * The root logger. JSON to stdout by default (what log shippers want); "pretty" for
 * people at a terminal. Modules take `root.child({ module })`.
 */
export function createLogger(level: LevelWithSilent = 'info', format: LogFormat = 'json'): Logger {
  const opts = { level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime };
  if (format === 'pretty') return pino(opts, pretty()({ colorize: process.stdout.isTTY === true, sync: true, ignore: 'pid,hostname' }));
  return pino(opts);
}
