/**
 * The one catalogue of coded errors. Callers branch on `err.code`, never on the
 * message. docs/errors.md documents every code; a test keeps the two in step.
 */
export const ErrorCodes = {
  BERTH_ERR_CONFIG: 'invalid configuration (file, flags or environment)',
  BERTH_ERR_ARGS: 'invalid command-line arguments',
  BERTH_ERR_CONFIG_READ: 'the config file could not be read or parsed',
  BERTH_ERR_LISTEN: 'a listener or the admin server could not bind its address',
  BERTH_ERR_DOCKER: 'the Docker engine could not be reached at start',
  BERTH_ERR_NO_ENDPOINT: 'no usable endpoint for a service',
  BERTH_ERR_UPSTREAM_CONNECT: 'connecting to an endpoint failed',
  BERTH_ERR_UPSTREAM_TIMEOUT: 'connecting to an endpoint timed out',
  BERTH_ERR_TLS: 'TLS material (certificate, key, CA, CRL) could not be loaded',
  BERTH_ERR_RELOAD: 'a reload asks for a change that needs a restart',
  BERTH_ERR_ADMIN_TOKEN: 'the admin token file could not be read or is empty',
  BERTH_ERR_HOST_ID: 'another berth holds this host id in the registry',
} as const;
export type ErrorCode = keyof typeof ErrorCodes;

/** Exit codes of the CLI (INTERFACE.md). */
export const ExitCode = { Ok: 0, Invalid: 1, Runtime: 2 } as const;

export class BerthError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'BerthError';
  }
}

/** One problem in a config, with the path of the field it concerns. */
export interface ConfigIssue {
  /** e.g. "listeners[0].bind" (empty for the document root). */
  readonly path: string;
  readonly message: string;
}

export class ConfigError extends BerthError {
  readonly issues: readonly ConfigIssue[];
  constructor(issues: readonly ConfigIssue[], code: ErrorCode = 'BERTH_ERR_CONFIG') {
    super(code, issues.map(formatIssue).join('\n'));
    this.issues = issues;
    this.name = 'ConfigError';
  }
}

export function formatIssue(i: ConfigIssue): string {
  return i.path ? `${i.path}: ${i.message}` : i.message;
}

export function isBerthError(e: unknown): e is BerthError {
  return e instanceof BerthError;
}
