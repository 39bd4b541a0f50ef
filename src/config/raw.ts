import type { ConfigOverrides } from './load.js';
import { applyOverrides, readConfigFile } from './load.js';

/**
 * The config document after flag overrides, before validation: plain JSON, so the
 * --workers primary can hand exactly what it validated to its workers.
 */
export async function readRawConfig(path: string, overrides: ConfigOverrides): Promise<unknown> {
  return applyOverrides(await readConfigFile(path), overrides);
}
