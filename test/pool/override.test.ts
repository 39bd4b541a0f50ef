/**
 * An operator's drain, undrain and weight (Pool.override): the operator's word over
 * discovery — through label and weight changes, resyncs and panic — until undone or
 * the endpoint leaves; a whole service's drain holds for endpoints that join it; the
 * overrides replay into another pool (a --workers worker that starts late).
 */
import t from 'tap';
import { seededRandom } from '../../src/core/random.js';
import type { EndpointSpec, ProviderSnapshot } from '../../src/core/types.js';
import { Pool, type OverrideOp } from '../../src/pool/pool.js';

function ep(id: string, weight = 1, labels: Record<string, string> = {}): EndpointSpec {
  const [host, port] = id.split(':');
  return { id, host: host!, port: Number(port), weight, source: 'docker', labels };
}
const snap = (services: Record<string, EndpointSpec[]>): ProviderSnapshot => ({ provider: 'docker', services: new Map(Object.entries(services)) });
function picks(pool: Pool, service: string, n = 20): string[] {
  const out = new Set<string>();
  for (let i = 0; i < n; i++) {
    const r = pool.service(service)!.pick();
    if (r.type === 'ok') out.add(r.host.id);
  }
  return [...out].sort();
}
const by = '192.0.2.7';
const drain = (service: string, endpoint: string | null): OverrideOp => ({ op: 'drain', service, endpoint, at: 1_000, by });
const undrain = (service: string, endpoint: string | null): OverrideOp => ({ op: 'undrain', service, endpoint, at: 2_000, by });
const weight = (service: string, endpoint: string, w: number | null): OverrideOp => ({ op: 'weight', service, endpoint, weight: w, at: 3_000, by });

t.test('drain: out of the pick set (open connections go on) through updates and resyncs, until undrained', async (t) => {
  const pool = new Pool({ random: seededRandom(1) });
  pool.configureService('web', 'round-robin');
  pool.applySnapshot(snap({ web: [ep('10.0.0.1:80'), ep('10.0.0.2:80')] }));
  const a = pool.service('web')!.endpoints.get('10.0.0.1:80')!;
  pool.acquire(a);
  t.same(pool.override(drain('web', '10.0.0.1:80'))?.map((e) => e.id), ['10.0.0.1:80']);
  t.same(picks(pool, 'web'), ['10.0.0.2:80']);
  t.same(a.outReasons, ['drained-by-admin']);
  t.same(a.override?.drained, { at: 1_000, by });
  t.equal(a.active, 1, 'its open connection is left alone');
  t.same(pool.override(drain('web', '10.0.0.1:80')), [], 'draining twice changes nothing');
  // Discovery moves on: new labels, a new weight, the same snapshot again.
  pool.applySnapshot(snap({ web: [ep('10.0.0.1:80', 3, { v: '2' }), ep('10.0.0.2:80')] }));
  pool.applySnapshot(snap({ web: [ep('10.0.0.1:80', 3, { v: '2' }), ep('10.0.0.2:80')] }));
  t.same(picks(pool, 'web'), ['10.0.0.2:80'], 'still drained after label and weight changes and a resync');
  t.equal(a.configuredWeight, 3, 'the weight discovery says still applies');
  // Nothing else healthy: panic spreads over unfit endpoints, never over a drained one.
  pool.override(drain('web', '10.0.0.2:80'));
  t.same(picks(pool, 'web'), [], 'all drained: none picked, panic or not');
  pool.override(undrain('web', '10.0.0.1:80'));
  pool.override(undrain('web', '10.0.0.2:80'));
  t.same(picks(pool, 'web'), ['10.0.0.1:80', '10.0.0.2:80']);
  t.equal(a.override, null);
  t.match(a.history.map((h) => h.what), ['docker: added 10.0.0.1:80 weight 1', `drained by ${by}`, /docker: updated/, `undrained by ${by}`]);
});

t.test('weight: over discovery\'s until given back; 0 takes it out', async (t) => {
  const pool = new Pool({ random: seededRandom(1) });
  pool.configureService('web', 'round-robin');
  pool.applySnapshot(snap({ web: [ep('10.0.0.1:80', 10), ep('10.0.0.2:80', 10)] }));
  const a = pool.service('web')!.endpoints.get('10.0.0.1:80')!;
  pool.override(weight('web', '10.0.0.1:80', 250));
  t.equal(a.configuredWeight, 250);
  pool.applySnapshot(snap({ web: [ep('10.0.0.1:80', 20), ep('10.0.0.2:80', 10)] }));
  t.equal(a.configuredWeight, 250, 'discovery\'s new weight does not undo the operator\'s');
  pool.override(weight('web', '10.0.0.1:80', 0));
  t.same(picks(pool, 'web'), ['10.0.0.2:80'], 'weight 0: out');
  pool.override(weight('web', '10.0.0.1:80', null));
  t.equal(a.configuredWeight, 20, 'given back: discovery\'s weight');
  t.equal(a.override, null);
  t.same(picks(pool, 'web'), ['10.0.0.1:80', '10.0.0.2:80']);
});

t.test('an endpoint that leaves takes its override with it; unknown services and endpoints are null', async (t) => {
  const pool = new Pool({ random: seededRandom(1) });
  pool.configureService('web', 'round-robin');
  pool.applySnapshot(snap({ web: [ep('10.0.0.1:80'), ep('10.0.0.2:80')] }));
  pool.override(drain('web', '10.0.0.1:80'));
  pool.applySnapshot(snap({ web: [ep('10.0.0.2:80')] }));
  pool.applySnapshot(snap({ web: [ep('10.0.0.1:80'), ep('10.0.0.2:80')] }));
  t.same(picks(pool, 'web'), ['10.0.0.1:80', '10.0.0.2:80'], 'back as a new endpoint, not drained');
  t.equal(pool.override(drain('nope', null)), null);
  t.equal(pool.override(drain('web', '10.9.9.9:80')), null);
});

t.test('a whole service: drained, those that join it too, until undrained; the overrides replay into another pool', async (t) => {
  const pool = new Pool({ random: seededRandom(1) });
  pool.configureService('web', 'round-robin');
  pool.applySnapshot(snap({ web: [ep('10.0.0.1:80'), ep('10.0.0.2:80')] }));
  t.same(pool.override(drain('web', null))?.map((e) => e.id).sort(), ['10.0.0.1:80', '10.0.0.2:80']);
  pool.applySnapshot(snap({ web: [ep('10.0.0.1:80'), ep('10.0.0.2:80'), ep('10.0.0.3:80')] }));
  t.same(pool.service('web')!.endpoints.get('10.0.0.3:80')!.outReasons, ['drained-by-admin'], 'a newcomer joins drained');
  pool.override(undrain('web', '10.0.0.2:80'));
  pool.override(weight('web', '10.0.0.3:80', 7));
  t.same(picks(pool, 'web'), ['10.0.0.2:80']);
  // A worker that starts now: the same snapshot, then the replayed overrides.
  const late = new Pool({ random: seededRandom(1) });
  late.configureService('web', 'round-robin');
  late.applySnapshot(snap({ web: [ep('10.0.0.1:80'), ep('10.0.0.2:80'), ep('10.0.0.3:80')] }));
  late.replaceOverrides(pool.overrideState());
  t.same(picks(late, 'web'), ['10.0.0.2:80'], 'the same pick set');
  t.equal(late.service('web')!.endpoints.get('10.0.0.3:80')!.configuredWeight, 7);
  pool.override(undrain('web', null));
  t.same(picks(pool, 'web'), ['10.0.0.1:80', '10.0.0.2:80', '10.0.0.3:80']);
  t.equal(pool.serviceDrained('web'), undefined);
});

t.test('a worker takes the primary\'s whole state in place of its own: endpoints not here yet get theirs when they come, and only while the latest state names them', async (t) => {
  const pool = new Pool({ random: seededRandom(1) });
  pool.configureService('web', 'round-robin');
  const stamp = { at: 1_000, by };
  pool.replaceOverrides({ services: [['api', stamp]], endpoints: [['web', '10.0.0.1:80', { drained: stamp, weight: null }], ['web', '10.0.0.2:80', { drained: null, weight: { ...stamp, value: 9 } }]] });
  pool.applySnapshot(snap({ web: [ep('10.0.0.1:80'), ep('10.0.0.2:80')], api: [ep('10.0.1.1:80')] }));
  t.same(picks(pool, 'web'), ['10.0.0.2:80']);
  t.equal(pool.service('web')!.endpoints.get('10.0.0.2:80')!.configuredWeight, 9);
  t.same(pool.service('api')!.endpoints.get('10.0.1.1:80')!.outReasons, ['drained-by-admin'], 'a service drained whole');
  t.match(pool.service('web')!.endpoints.get('10.0.0.1:80')!.history.map((h) => h.what), ['docker: added 10.0.0.1:80 weight 1'], 'joined drained: one event, in order');
  // The primary undrained the service and dropped 10.0.0.1's drain while a state for 10.0.0.3 (not here) was pending: the next state replaces all of it.
  pool.replaceOverrides({ services: [], endpoints: [['web', '10.0.0.3:80', { drained: stamp, weight: null }]] });
  pool.replaceOverrides({ services: [], endpoints: [] });
  t.same(picks(pool, 'web'), ['10.0.0.1:80', '10.0.0.2:80']);
  t.equal(pool.service('web')!.endpoints.get('10.0.0.2:80')!.configuredWeight, 1, 'discovery\'s weight again');
  t.same(pool.service('api')!.endpoints.get('10.0.1.1:80')!.outReasons, []);
  pool.applySnapshot(snap({ web: [ep('10.0.0.1:80'), ep('10.0.0.2:80'), ep('10.0.0.3:80')], api: [ep('10.0.1.1:80')] }));
  t.same(picks(pool, 'web'), ['10.0.0.1:80', '10.0.0.2:80', '10.0.0.3:80'], 'a pending override the latest state no longer names is gone');
});

t.test('an endpoint that leaves while it still has connections, and comes back, comes back without the override', async (t) => {
  const pool = new Pool({ random: seededRandom(1) });
  pool.configureService('web', 'round-robin');
  pool.applySnapshot(snap({ web: [ep('10.0.0.1:80'), ep('10.0.0.2:80')] }));
  const a = pool.service('web')!.endpoints.get('10.0.0.1:80')!;
  pool.acquire(a);
  pool.override(drain('web', '10.0.0.1:80'));
  pool.override(weight('web', '10.0.0.1:80', 5));
  pool.applySnapshot(snap({ web: [ep('10.0.0.2:80')] }));
  t.same(a.outReasons, ['draining'], 'leaving: draining its connection, the operator\'s word gone');
  pool.applySnapshot(snap({ web: [ep('10.0.0.1:80'), ep('10.0.0.2:80')] }));
  t.equal(pool.service('web')!.endpoints.get('10.0.0.1:80'), a, 'the same endpoint, back from draining');
  t.equal(a.override, null);
  t.equal(a.configuredWeight, 1);
  t.same(picks(pool, 'web'), ['10.0.0.1:80', '10.0.0.2:80']);
});
