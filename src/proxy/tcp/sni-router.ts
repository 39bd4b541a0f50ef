/**
 * A tcp listener's routes by the TLS ClientHello (passthrough: berth never holds
 * the keys). The most specific name wins: an exact server name, then `*.suffix`
 * (longer first); a route with `alpn` matches only a hello that offers one of its
 * protocols, and beats one without on the same name. Anything else — no TLS, no
 * SNI, no match, a hello too slow or too large — goes to the catch-all when there
 * is one. PURE: no I/O.
 */

export interface SniRouteSpec {
  /** An exact name or "*.suffix"; undefined: the catch-all. */
  readonly sni?: string | undefined;
  readonly alpn?: readonly string[] | undefined;
  readonly service: string;
}

interface Rule {
  readonly alpn: readonly string[] | undefined;
  readonly service: string;
}

export class SniRouter {
  private readonly exact = new Map<string, Rule[]>();
  /** "*.example.com" as ".example.com", longest first. */
  private readonly wildcards: { readonly suffix: string; readonly rules: Rule[] }[] = [];
  /** The catch-all service, if any. */
  readonly fallback: string | undefined;

  constructor(routes: readonly SniRouteSpec[], fallback: string | undefined) {
    // The first route without sni is the catch-all; else the listener's service.
    let catchAll: string | undefined;
    for (const r of routes) {
      if (r.sni === undefined) {
        catchAll ??= r.service;
        continue;
      }
      const name = r.sni.toLowerCase();
      const rule: Rule = { alpn: r.alpn !== undefined && r.alpn.length > 0 ? r.alpn : undefined, service: r.service };
      if (name.startsWith('*.')) {
        const suffix = name.slice(1);
        let w = this.wildcards.find((x) => x.suffix === suffix);
        if (w === undefined) this.wildcards.push((w = { suffix, rules: [] }));
        w.rules.push(rule);
      } else {
        let list = this.exact.get(name);
        if (list === undefined) this.exact.set(name, (list = []));
        list.push(rule);
      }
    }
    this.wildcards.sort((a, b) => b.suffix.length - a.suffix.length);
    for (const list of [...this.exact.values(), ...this.wildcards.map((w) => w.rules)]) list.sort((a, b) => Number(b.alpn !== undefined) - Number(a.alpn !== undefined));
    this.fallback = catchAll ?? fallback;
  }

  /** Whether any route looks at the hello (else the listener never waits for the client). */
  get readsHello(): boolean {
    return this.exact.size > 0 || this.wildcards.length > 0;
  }

  /** The service for a hello's server name and ALPN list; undefined when nothing matches (not even a catch-all). */
  match(sni: string | null, alpn: readonly string[]): { service: string; routed: boolean } | undefined {
    if (sni !== null) {
      const hit = pick(this.exact.get(sni), alpn) ?? this.wild(sni, alpn);
      if (hit !== undefined) return { service: hit, routed: true };
    }
    return this.fallback !== undefined ? { service: this.fallback, routed: false } : undefined;
  }

  private wild(sni: string, alpn: readonly string[]): string | undefined {
    for (const w of this.wildcards) {
      // "*.example.com" matches one label or more before ".example.com", never the bare suffix.
      if (sni.length > w.suffix.length && sni.endsWith(w.suffix)) {
        const hit = pick(w.rules, alpn);
        if (hit !== undefined) return hit;
      }
    }
    return undefined;
  }
}

function pick(rules: readonly Rule[] | undefined, alpn: readonly string[]): string | undefined {
  if (rules === undefined) return undefined;
  for (const r of rules) if (r.alpn === undefined || r.alpn.some((p) => alpn.includes(p))) return r.service;
  return undefined;
}
