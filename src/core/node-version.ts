/** What the running node can do, by its version (pure: the version is passed in). */

/** node's `reusePort` option, for net listeners and dgram sockets alike: v22.12 and v23.1 on. */
export function nodeHasReusePort(version: string): boolean {
  const [major = 0, minor = 0] = version.split('.').map(Number);
  return major >= 24 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12);
}
