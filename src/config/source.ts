/**
 * The one way berth loads its config, at start and on every reload, in a single
 * process and in a --workers primary: a file (with flag overrides) or the flags
 * alone. It yields the validated config and the plain document it came from; a
 * primary hands exactly that document to its workers, which never read the file.
 */
import { loadedFromFlags, type FlagConfig } from './flags.js';
import type { ConfigOverrides } from './load.js';
import { readRawConfig } from './raw.js';
import type { Config } from './schema.js';
import { validateConfig } from './validate.js';

export type ConfigSource = { readonly path: string; readonly overrides: ConfigOverrides } | { readonly flags: FlagConfig };

export interface LoadedConfig {
  /** The document after flag overrides, before validation: plain JSON. */
  readonly raw: unknown;
  readonly config: Config;
}

export async function loadConfig(source: ConfigSource): Promise<LoadedConfig> {
  if ('flags' in source) return loadedFromFlags(source.flags);
  const raw = await readRawConfig(source.path, source.overrides);
  return { raw, config: validateConfig(raw) };
}

/** Whether SIGHUP can re-read this source (flags cannot change while running). */
export function reloadable(source: ConfigSource): boolean {
  return 'path' in source;
}
