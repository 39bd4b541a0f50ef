/**
 * The one signal path, for a single process and a --workers primary alike
 * (workers ignore signals: the primary tells them what to do). SIGTERM and SIGINT
 * stop once; SIGHUP reloads, one reload at a time in signal order, and a reload
 * that fails leaves the running config in place.
 */
import { ConfigError, formatIssue } from '../core/errors.js';
import type { Logger } from '../log.js';

export interface SignalHandlers {
  readonly log: Logger;
  /** SIGTERM / SIGINT: drain and exit; called once. */
  stop(signal: string): void;
  /** SIGHUP: reload; resolves with the fields of the "config reloaded" line. Null: nothing to reload from (flags). */
  readonly reload: (() => Promise<object>) | null;
  /** A reload failed: the running config stays (counted by the caller). */
  reloadFailed(): void;
}

export function handleSignals(h: SignalHandlers): void {
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    h.stop(signal);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  let reloading: Promise<void> = Promise.resolve();
  process.on('SIGHUP', () => {
    const reload = h.reload;
    if (reload === null) {
      h.log.warn('SIGHUP: no config file to reload (started from flags)');
      return;
    }
    reloading = reloading.then(async () => {
      try {
        h.log.info(await reload(), 'config reloaded');
      } catch (err) {
        h.reloadFailed();
        const errors = err instanceof ConfigError ? err.issues.map(formatIssue) : [err instanceof Error ? err.message : String(err)];
        h.log.error({ errors }, 'config reload failed; keeping the running config');
      }
    });
  });
}
