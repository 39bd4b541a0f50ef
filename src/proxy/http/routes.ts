/**
 * The HTTP routing table: Host (exact or `*.suffix`) and path prefix to a service.
 * Rules come from the listener's config and from container labels
 * (berth.http.host / berth.http.pathPrefix). The most specific rule wins: an exact
 * host before a wildcard (longer suffix first) before any host, then the longest
 * path prefix; on a full tie a config rule beats a label rule.
 */
export interface RouteRule {
  /** Lowercase exact host, "*.suffix", or undefined for any host. */
  readonly host?: string | undefined;
  /** Starts with "/"; default "/". */
  readonly pathPrefix?: string | undefined;
  readonly service: string;
  readonly source: 'config' | 'label' | 'default';
}

interface Compiled {
  readonly rule: RouteRule;
  readonly exact: string | null;
  /** ".example.com" for "*.example.com". */
  readonly suffix: string | null;
  readonly prefix: string;
  /** The prefix ends a segment by itself ("/" or "/api/"). */
  readonly open: boolean;
}

const sourceRank = { config: 0, label: 1, default: 2 } as const;

function hostRank(c: Compiled): number {
  return c.exact !== null ? 2 : c.suffix !== null ? 1 : 0;
}

/** Lowercase host without port or trailing dot; "" when absent. */
export function normalizeHost(host: string | undefined): string {
  if (host === undefined || host === '') return '';
  let h = host;
  if (h.charCodeAt(0) === 91 /* [ */) {
    const end = h.indexOf(']');
    h = end > 0 ? h.slice(0, end + 1) : h;
  } else {
    const colon = h.indexOf(':');
    if (colon >= 0) h = h.slice(0, colon);
  }
  if (h.endsWith('.')) h = h.slice(0, -1);
  return h.toLowerCase();
}

export class Router {
  private readonly rules: readonly Compiled[];

  constructor(rules: readonly RouteRule[]) {
    const compiled: Compiled[] = rules.map((rule) => {
      const h = rule.host?.toLowerCase();
      const prefix = rule.pathPrefix ?? '/';
      return {
        rule,
        exact: h !== undefined && !h.startsWith('*.') ? h : null,
        suffix: h !== undefined && h.startsWith('*.') ? h.slice(1) : null,
        prefix,
        open: prefix.endsWith('/'),
      };
    });
    compiled.sort(
      (a, b) =>
        hostRank(b) - hostRank(a) ||
        (b.suffix?.length ?? 0) - (a.suffix?.length ?? 0) ||
        b.prefix.length - a.prefix.length ||
        sourceRank[a.rule.source] - sourceRank[b.rule.source] ||
        (a.rule.service < b.rule.service ? -1 : a.rule.service > b.rule.service ? 1 : 0),
    );
    this.rules = compiled;
  }

  get size(): number {
    return this.rules.length;
  }

  /** The rule for a request, or undefined (404). `host` is normalized; `path` is the request target (query allowed). */
  match(host: string, path: string): RouteRule | undefined {
    for (const c of this.rules) {
      if (c.exact !== null ? host !== c.exact : c.suffix !== null && !(host.length > c.suffix.length && host.endsWith(c.suffix))) continue;
      if (!path.startsWith(c.prefix)) continue;
      if (!c.open && path.length > c.prefix.length) {
        const next = path.charCodeAt(c.prefix.length);
        // "/v1" matches "/v1", "/v1/..." and "/v1?...", not "/v10".
        if (next !== 47 /* / */ && next !== 63 /* ? */) continue;
      }
      return c.rule;
    }
    return undefined;
  }
}
