/**
 * Labels → the parts of an endpoint spec that containers and Swarm services share
 * (enable, bad labels, weight, cap, routes, health path, explanation). PURE; both
 * builders (build.ts for containers, swarm.ts for Swarm services) go through it,
 * so a label means the same wherever it is set.
 */
import type { EndpointSpec, RouteSpec } from '../../core/types.js';
import { parseLabels, type ParsedLabels } from './labels.js';

export type LabelVerdict =
  /** Not berth's to route (not enabled): ignored without a word. */
  | { readonly kind: 'ignore' }
  /** Asked to be routed, but the labels are wrong: skipped with the reason. */
  | { readonly kind: 'skip'; readonly reason: string }
  | { readonly kind: 'route'; readonly labels: ParsedLabels };

/** Whether a container or service with these labels is routed, and with what. */
export function readLabels(all: Readonly<Record<string, string>> | null | undefined, prefix: string, exposedByDefault: boolean): LabelVerdict {
  const parsed = parseLabels(all, prefix);
  if (!parsed.ok) {
    const enableRaw = all?.[`${prefix}.enable`];
    // Something that is not enabled is none of our business, even with odd labels.
    if (enableRaw === 'true' || (exposedByDefault && enableRaw !== 'false')) return { kind: 'skip', reason: `bad labels: ${parsed.errors.join('; ')}` };
    return { kind: 'ignore' };
  }
  return parsed.labels.enable ?? exposedByDefault ? { kind: 'route', labels: parsed.labels } : { kind: 'ignore' };
}

/** Where the endpoint is and what the builder found out about it, for the spec. */
export interface SpecBase {
  readonly id: string;
  readonly host: string;
  readonly port: number;
  readonly source: 'docker' | 'swarm';
  /** Facts for the explain endpoint (container, network chosen and why ...). */
  readonly explain: Readonly<Record<string, string>>;
  readonly health?: EndpointSpec['health'];
  readonly stopping?: boolean;
  readonly paused?: boolean;
}

/** The endpoint spec for labels `l`: typed routes and health path, labels kept as explanation. */
export function endpointSpec(l: ParsedLabels, b: SpecBase): EndpointSpec {
  const explain: Record<string, string> = { ...b.explain, weight: String(l.weight) };
  if (l.maxConnections !== undefined) explain['maxConnections'] = String(l.maxConnections);
  if (l.httpHost !== undefined) explain['http.host'] = l.httpHost;
  if (l.httpPathPrefix !== undefined) explain['http.pathPrefix'] = l.httpPathPrefix;
  if (l.healthPath !== undefined) explain['health.path'] = l.healthPath;
  const routes: RouteSpec[] = l.httpHost !== undefined || l.httpPathPrefix !== undefined ? [{ host: l.httpHost, pathPrefix: l.httpPathPrefix }] : [];
  return {
    id: b.id,
    host: b.host,
    port: b.port,
    weight: l.weight,
    source: b.source,
    labels: explain,
    ...(routes.length > 0 ? { routes } : {}),
    ...(l.healthPath !== undefined ? { healthPath: l.healthPath } : {}),
    ...(l.maxConnections !== undefined && l.maxConnections > 0 ? { maxConnections: l.maxConnections } : {}),
    ...(b.health !== undefined ? { health: b.health } : {}),
    ...(b.stopping ? { stopping: true } : {}),
    ...(b.paused ? { paused: true } : {}),
  };
}
