import t from 'tap';
import { seededRandom } from '../../src/core/random.js';
import { Flag, type EndpointSpec, type ProviderSnapshot } from '../../src/core/types.js';
import { Pool, type PoolEvent } from '../../src/pool/pool.js';
import { ManualClock } from '../helpers/clock.js';

function ep(id: string, weight = 1, source: EndpointSpec['source'] = 'static'): EndpointSpec {
  const [host, port] = id.split(':');
  return { id, host: host!, port: Number(port), weight, source };
}
function snap(provider: string, services: Record<string, EndpointSpec[]>): ProviderSnapshot {
  return { provider, services: new Map(Object.entries(services)) };
}
function picks(pool: Pool, service: string, n: number): Set<string> {
  const out = new Set<string>();
  const s = pool.service(service)!;
  for (let i = 0; i < n; i++) {
    const r = s.pick();
    if (r.type === 'ok') out.add(r.host.id);
  }
  return out;
}

t.test('full snapshots in, minimal change out', async (t) => {
  const pool = new Pool({ random: seededRandom(1) });
  const events: PoolEvent[] = [];
  pool.on((e) => events.push(e));
  pool.configureService('web', 'round-robin');
  t.equal(pool.applySnapshot(snap('static', { web: [ep('10.0.0.1:80'), ep('10.0.0.2:80')] })), 2);
  t.equal(pool.applySnapshot(snap('static', { web: [ep('10.0.0.1:80'), ep('10.0.0.2:80')] })), 0, 'duplicate snapshot changes nothing');
  t.equal(pool.applySnapshot(snap('static', { web: [ep('10.0.0.1:80', 5), ep('10.0.0.2:80')] })), 1, 'one weight change');
  t.equal(pool.service('web')!.endpoints.get('10.0.0.1:80')!.weight, 5);
  t.same(
    events.filter((e) => e.type !== 'picker-updated').map((e) => e.type),
    ['endpoint-added', 'endpoint-added', 'endpoint-updated'],
  );
  t.same(picks(pool, 'web', 10), new Set(['10.0.0.1:80', '10.0.0.2:80']));
});

t.test('weight 0, flags and draining endpoints get no new connections', async (t) => {
  const pool = new Pool({ random: seededRandom(1) });
  pool.configureService('web', 'round-robin');
  pool.applySnapshot(snap('static', { web: [ep('a:1'), ep('b:1', 0), ep('c:1'), ep('d:1')] }));
  t.same(picks(pool, 'web', 20), new Set(['a:1', 'c:1', 'd:1']), 'weight 0 excluded');
  pool.setFlag('web', 'c:1', Flag.ActiveUnhealthy, true, 'test: unhealthy');
  t.same(picks(pool, 'web', 20), new Set(['a:1', 'd:1']), 'unhealthy excluded');
  const s = pool.service('web')!;
  pool.acquire(s.endpoints.get('d:1')!);
  pool.applySnapshot(snap('static', { web: [ep('a:1'), ep('b:1', 0), ep('c:1')] }));
  const d = s.endpoints.get('d:1');
  t.ok(d, 'removed endpoint with an open connection stays, draining');
  t.ok(d!.flags & Flag.Draining);
  t.same(picks(pool, 'web', 20), new Set(['a:1']), 'draining excluded');
  pool.release(d!);
  t.notOk(s.endpoints.has('d:1'), 'removed when its last connection closes');
  pool.setFlag('web', 'c:1', Flag.ActiveUnhealthy, false, 'test: healthy');
  t.same(picks(pool, 'web', 20), new Set(['a:1', 'c:1']));
});

t.test('a draining endpoint that comes back is live again', async (t) => {
  const pool = new Pool({ random: seededRandom(1) });
  pool.configureService('web', 'least-conn');
  pool.applySnapshot(snap('static', { web: [ep('a:1')] }));
  const a = pool.service('web')!.endpoints.get('a:1')!;
  pool.acquire(a);
  pool.applySnapshot(snap('static', { web: [] }));
  t.ok(a.flags & Flag.Draining);
  t.equal(pool.service('web')!.pick().type, 'none');
  pool.applySnapshot(snap('static', { web: [ep('a:1')] }));
  t.equal(a.flags, 0);
  t.equal(pool.service('web')!.pick().type, 'ok');
  pool.release(a);
  t.ok(pool.service('web')!.endpoints.has('a:1'), 'not removed: it is wanted again');
});

t.test('providers merge by endpoint id; precedence decides the spec; each removal is its own', async (t) => {
  const pool = new Pool({ random: seededRandom(1) });
  pool.applySnapshot(snap('docker', { web: [ep('x:80', 2, 'docker'), ep('y:80', 1, 'docker')] }));
  pool.applySnapshot(snap('static', { web: [ep('x:80', 7)] }));
  const s = pool.service('web')!;
  t.equal(s.endpoints.get('x:80')!.weight, 7, 'static wins over docker');
  t.same([...s.endpoints.get('x:80')!.sources.keys()].sort(), ['docker', 'static']);
  pool.applySnapshot(snap('static', { web: [] }));
  t.equal(s.endpoints.get('x:80')!.weight, 2, 'docker spec applies once static drops it');
  pool.applySnapshot(snap('docker', {}));
  t.equal(s.endpoints.size, 0);
});

t.test('balance change rebuilds the picker', async (t) => {
  const pool = new Pool({ random: seededRandom(1) });
  pool.configureService('web', 'round-robin');
  pool.applySnapshot(snap('static', { web: [ep('a:1'), ep('b:1')] }));
  pool.configureService('web', 'source-hash');
  const s = pool.service('web')!;
  const first = s.pick({ key: '1.2.3.4' });
  for (let i = 0; i < 10; i++) t.same(s.pick({ key: '1.2.3.4' }), first);
});

t.test('peak EWMA takes slow samples at once and decays toward fast ones', async (t) => {
  const clock = new ManualClock();
  const pool = new Pool({ clock });
  pool.applySnapshot(snap('static', { web: [ep('a:1')] }));
  const a = pool.service('web')!.endpoints.get('a:1')!;
  pool.report(a, 'answered', 10);
  clock.set(1000);
  pool.report(a, 'answered', 100);
  t.equal(a.latency, 100);
  clock.set(11_000);
  pool.report(a, 'answered', 10);
  t.ok(a.latency < 50 && a.latency > 10, `decayed to ${a.latency}`);
});

t.test('connect time (tcp) and response time (http) are two averages; balancing reads the response time where there is one', async (t) => {
  const pool = new Pool({ clock: new ManualClock() });
  pool.applySnapshot(snap('static', { web: [ep('a:1')] }));
  const a = pool.service('web')!.endpoints.get('a:1')!;
  pool.report(a, 'connected', 2);
  t.equal(a.connectLatency, 2);
  t.equal(a.responseLatency, 0);
  t.equal(a.latency, 2, 'only a connect time known: that one');
  pool.report(a, 'answered', 40);
  t.equal(a.connectLatency, 2, 'a response time does not move the connect average');
  t.equal(a.latency, 40);
  pool.report(a, 'connected', 1);
  t.equal(a.responseLatency, 40, 'a connect time does not move the response average');
  t.equal(a.latency, 40);
});

t.test('maxConnections: an endpoint at its cap is passed over; all full is none', async (t) => {
  const pool = new Pool({ random: seededRandom(1) });
  pool.configureService('web', 'round-robin');
  pool.applySnapshot(snap('static', { web: [{ ...ep('a:1'), maxConnections: 2 }, { ...ep('b:1'), maxConnections: 1 }] }));
  const s = pool.service('web')!;
  const taken: string[] = [];
  for (let i = 0; i < 3; i++) {
    const r = s.pick();
    if (r.type !== 'ok') break;
    pool.acquire(r.host);
    taken.push(r.host.id);
  }
  t.same(taken.sort(), ['a:1', 'a:1', 'b:1']);
  t.same(s.pick(), { type: 'none', reason: 'at-capacity' });
  pool.release(s.endpoints.get('b:1')!);
  const r = s.pick();
  t.equal(r.type === 'ok' && r.host.id, 'b:1');
});

t.test('provider-reported health, stopping and paused take an endpoint out', async (t) => {
  const pool = new Pool({ random: seededRandom(1) });
  pool.configureService('web', 'round-robin');
  const d = (id: string, extra: Partial<EndpointSpec>) => ({ ...ep(id, 1, 'docker'), ...extra });
  pool.applySnapshot(snap('docker', { web: [d('a:1', { health: 'starting' }), d('b:1', {})] }));
  t.same(picks(pool, 'web', 10), new Set(['b:1']), 'starting is not routed');
  pool.applySnapshot(snap('docker', { web: [d('a:1', { health: 'healthy' }), d('b:1', { stopping: true })] }));
  t.same(picks(pool, 'web', 10), new Set(['a:1']), 'healthy routed, stopping not');
  t.ok(pool.service('web')!.endpoints.get('b:1')!.flags & Flag.Stopping);
  pool.applySnapshot(snap('docker', { web: [d('a:1', { health: 'unhealthy' }), d('b:1', { paused: true })] }));
  t.equal(pool.service('web')!.pick().type, 'none');
  t.match(pool.service('web')!.endpoints.get('a:1')!.history.at(-1)!.what, /out: docker-unhealthy/);
  // An active-check flag set by berth survives a provider update.
  pool.setFlag('web', 'a:1', Flag.ActiveUnhealthy, true, 'check failed');
  pool.applySnapshot(snap('docker', { web: [d('a:1', { health: 'healthy' }), d('b:1', {})] }));
  t.ok(pool.service('web')!.endpoints.get('a:1')!.flags & Flag.ActiveUnhealthy);
  t.same(picks(pool, 'web', 10), new Set(['b:1']));
});

t.test('panic: nothing healthy → fail turns clients away, spread uses every endpoint that is not leaving', async (t) => {
  const pool = new Pool({ random: seededRandom(1) });
  pool.configureService('web', { balance: 'round-robin', panic: 'spread' });
  pool.applySnapshot(snap('static', { web: [ep('a:1'), ep('b:1'), ep('c:1')] }));
  pool.setFlag('web', 'a:1', Flag.ActiveUnhealthy, true, 'x');
  t.same(picks(pool, 'web', 10), new Set(['b:1', 'c:1']), 'healthy ones while there are some');
  t.equal(pool.service('web')!.inPanic, false);
  pool.setFlag('web', 'b:1', Flag.Outlier, true, 'x');
  const c = pool.service('web')!.endpoints.get('c:1')!;
  pool.acquire(c);
  pool.applySnapshot(snap('static', { web: [ep('a:1'), ep('b:1')] }));
  t.ok(c.flags & Flag.Draining, 'c is leaving');
  t.equal(pool.service('web')!.inPanic, true);
  t.same(picks(pool, 'web', 10), new Set(['a:1', 'b:1']), 'panic spreads over the unfit, never the draining');
  pool.configureService('web', { balance: 'round-robin', panic: 'fail' });
  t.equal(pool.service('web')!.pick().type, 'none', 'fail fast');
  t.equal(pool.service('web')!.inPanic, false);
  pool.release(c);
});

t.test('outlier detection: consecutive failures eject, time multiplies, no cascade past the max share', async (t) => {
  const clock = new ManualClock();
  const pool = new Pool({ random: seededRandom(1), clock });
  pool.configureService('web', { balance: 'round-robin', outlier: { consecutiveFailures: 3, ejectFor: 60, maxEjectFor: 100, maxEjectedPercent: 50 } });
  pool.applySnapshot(snap('static', { web: [ep('a:1'), ep('b:1'), ep('c:1'), ep('d:1')] }));
  const e = (id: string) => pool.service('web')!.endpoints.get(id)!;
  pool.report(e('a:1'), 'failed');
  pool.report(e('a:1'), 'failed');
  pool.report(e('a:1'), 'connected', 1);
  pool.report(e('a:1'), 'failed');
  pool.report(e('a:1'), 'failed');
  t.equal(e('a:1').flags & Flag.Outlier, 0, 'a success resets the count');
  pool.report(e('a:1'), 'failed');
  t.ok(e('a:1').flags & Flag.Outlier, 'three in a row eject');
  t.match(e('a:1').history.at(-1)!.what, /ejected for 60ms after 3 connect failures in a row \(ejection 1\)/);
  // Half the pool failing: only up to 50% may be ejected.
  for (const id of ['b:1', 'c:1', 'd:1']) for (let i = 0; i < 3; i++) pool.report(e(id), 'failed');
  const ejected = ['a:1', 'b:1', 'c:1', 'd:1'].filter((id) => e(id).flags & Flag.Outlier);
  t.equal(ejected.length, 2, `no cascade: ${ejected}`);
  t.match(e('d:1').history.at(-1)!.what, /not ejected \(would exceed 50% ejected\)/);
  clock.advance(59);
  t.ok(e('a:1').flags & Flag.Outlier, 'still ejected at 59 ms');
  clock.advance(1);
  t.equal(e('a:1').flags & Flag.Outlier, 0, 'the ejection ends at 60 ms on the pool clock');
  for (let i = 0; i < 3; i++) pool.report(e('a:1'), 'failed');
  t.match(e('a:1').history.at(-1)!.what, /ejected for 100ms .*ejection 2/, 'second ejection: 2 × 60 capped at 100');
});

t.test('slow start: a new endpoint ramps from 10% to its full share over slowStart (injected clock)', async (t) => {
  const clock = new ManualClock();
  const pool = new Pool({ random: seededRandom(1), clock });
  pool.configureService('web', { balance: 'round-robin', slowStart: 10_000 });
  pool.applySnapshot(snap('static', { web: [ep('old:1')] }));
  t.equal(pool.service('web')!.endpoints.get('old:1')!.weight, 1, 'the first endpoint has nobody to spare: full weight');
  pool.applySnapshot(snap('static', { web: [ep('old:1'), ep('new:1')] }));
  const share = () => {
    const c = countPicks(pool, 'web', 1100);
    return (c['new:1'] ?? 0) / 1100;
  };
  const s0 = share();
  t.ok(Math.abs(s0 - 0.1 / 1.1) < 0.02, `at 0 s: ${s0.toFixed(3)} (weight 0.1 vs 1)`);
  clock.advance(5000);
  t.equal(pool.service('web')!.endpoints.get('new:1')!.weight, 0.55);
  const s5 = share();
  t.ok(Math.abs(s5 - 0.55 / 1.55) < 0.02, `at 5 s: ${s5.toFixed(3)}`);
  clock.advance(5000);
  const s10 = share();
  t.ok(Math.abs(s10 - 0.5) < 0.02, `at 10 s: ${s10.toFixed(3)}`);
  t.equal(pool.service('web')!.ramping, 0, 'ramp over');
  t.equal(clock.pending, 0, 'no ramp timer left once every ramp is over');
  // Recovery ramps too.
  pool.setFlag('web', 'new:1', Flag.ActiveUnhealthy, true, 'down');
  pool.setFlag('web', 'new:1', Flag.ActiveUnhealthy, false, 'up');
  t.equal(pool.service('web')!.endpoints.get('new:1')!.weight, 0.1, 'a recovered endpoint starts low again');
  t.match(pool.service('web')!.endpoints.get('new:1')!.history.at(-1)!.what, /slow start: ramping/);
});

function countPicks(pool: Pool, service: string, n: number): Record<string, number> {
  const out: Record<string, number> = {};
  const s = pool.service(service)!;
  for (let i = 0; i < n; i++) {
    const r = s.pick();
    if (r.type === 'ok') out[r.host.id] = (out[r.host.id] ?? 0) + 1;
  }
  return out;
}

t.test('outlier detection spares a discovered endpoint for its first 10 s (it may still be starting); a static one is ejected at once', async (t) => {
  const clock = new ManualClock();
  const pool = new Pool({ random: seededRandom(1), clock });
  pool.configureService('web', { balance: 'round-robin', outlier: { consecutiveFailures: 3, ejectFor: 1000, maxEjectFor: 30_000, maxEjectedPercent: 100 } });
  pool.applySnapshot(snap('static', { web: [ep('s:1')] }));
  pool.applySnapshot(snap('docker', { web: [ep('d:1'), ep('d:2')] }));
  const e = (id: string) => pool.service('web')!.endpoints.get(id)!;
  for (let i = 0; i < 5; i++) {
    pool.report(e('s:1'), 'failed');
    pool.report(e('d:1'), 'failed');
  }
  t.ok(e('s:1').flags & Flag.Outlier, 'the static endpoint is ejected');
  t.equal(e('d:1').flags & Flag.Outlier, 0, 'the container that just appeared is not (yet)');
  clock.set(10_001);
  pool.report(e('d:1'), 'failed');
  t.ok(e('d:1').flags & Flag.Outlier, 'still refusing after its first 10 s: ejected');
  pool.report(e('d:2'), 'failed');
  pool.report(e('d:2'), 'connected', 1);
  pool.report(e('d:2'), 'failed');
  t.equal(e('d:2').flags & Flag.Outlier, 0, 'one that started answering has its count reset');
});

t.test('routes endpoints ask for are published as one immutable table, replaced only when a route changes', async (t) => {
  const pool = new Pool({ random: seededRandom(1), clock: new ManualClock() });
  const routed = (id: string, host: string): EndpointSpec => ({ ...ep(id), routes: [{ host, pathPrefix: '/x' }] });
  pool.applySnapshot(snap('docker', { web: [routed('a:1', 'a.example'), routed('b:1', 'a.example')], api: [ep('c:1')] }));
  const first = pool.routes;
  t.same(first, [{ host: 'a.example', pathPrefix: '/x', service: 'web' }], 'one entry per host, prefix and service');
  t.ok(Object.isFrozen(first));
  pool.setFlag('web', 'a:1', Flag.ActiveUnhealthy, true, 'down');
  pool.applySnapshot(snap('docker', { web: [routed('a:1', 'a.example'), routed('b:1', 'a.example')], api: [ep('c:1'), ep('d:1')] }));
  t.equal(pool.routes, first, 'same table (same reference) while no route changed');
  pool.applySnapshot(snap('docker', { web: [routed('a:1', 'a.example'), routed('b:1', 'b.example')], api: [ep('c:1')] }));
  t.not(pool.routes, first, 'a new table when one did');
  t.same(pool.routes.map((r) => r.host), ['a.example', 'b.example']);
});
