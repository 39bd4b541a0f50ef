import { pino, type Logger, type LevelWithSilent } from 'pino';
import type pinoPretty from 'pino-pretty';
import { lazy } from './core/lazy.js';

export type { Logger } from 'pino';

/** pino-pretty only for --log-format pretty. */
const pretty = lazy<typeof pinoPretty>('pino-pretty');
export type LogFormat = 'json' | 'pretty' | 'auto';
export const logLevels: readonly LevelWithSilent[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/**
 * The root logger to stdout: "json" (what log shippers want), "pretty" (for people),
 * or "auto": pretty when stdout is a terminal, JSON otherwise (a container, a pipe, a
 * file). Modules take `root.child({ module })`.
 */
export function createLogger(level: LevelWithSilent = 'info', format: LogFormat = 'json'): Logger {
  const opts = { level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime };
  if (format === 'pretty' || (format === 'auto' && process.stdout.isTTY === true)) return pino(opts, pretty()({ colorize: process.stdout.isTTY === true, sync: true, ignore: 'pid,hostname' }));
  return pino(opts);
}
