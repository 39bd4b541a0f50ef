import t from 'tap';
import { seededRandom } from '../../src/core/random.js';
import { HealthChecker, type CheckChange, type CheckTarget } from '../../src/health/checker.js';
import { until } from '../helpers/net.js';

/** A target whose probe answers from a script: true = pass. */
function scripted(key: string, script: boolean[], extra: Partial<CheckTarget> = {}): CheckTarget & { calls: number } {
  const target: CheckTarget & { calls: number } = {
    calls: 0,
    key,
    host: '127.0.0.1',
    port: 1,
    intervalMs: 5,
    jitter: 0,
    rise: 2,
    fall: 3,
    initial: 'pending' as const,
    settingsKey: 's',
    probe: async (): Promise<{ ok: boolean; detail: string }> => {
      const ok: boolean = script[Math.min(target.calls, script.length - 1)]!;
      target.calls++;
      return { ok, detail: ok ? 'ok' : 'refused' };
    },
    ...extra,
  };
  return target;
}

t.test('pending → healthy on the first pass; fall failures to go out; rise passes to come back', async (t) => {
  const changes: CheckChange[] = [];
  const c = new HealthChecker((ch) => changes.push(ch), seededRandom(1));
  t.teardown(() => c.stopAll());
  const target = scripted('a', [true, true, false, false, false, true, true, true]);
  c.sync([target]);
  await until(() => changes.length === 3, 2000, 'three transitions');
  t.same(
    changes.map((ch) => `${ch.from}->${ch.to}`),
    ['pending->healthy', 'healthy->unhealthy', 'unhealthy->healthy'],
  );
  t.equal(changes[1]!.detail, 'refused');
  // healthy after call 1; out after calls 3,4,5 fail (the 3rd failure); back after calls 6,7 pass.
  t.ok(target.calls >= 7);
});

t.test('a pending endpoint that keeps failing becomes unhealthy after fall; initial healthy skips pending', async (t) => {
  const changes: CheckChange[] = [];
  const c = new HealthChecker((ch) => changes.push(ch), seededRandom(1));
  t.teardown(() => c.stopAll());
  c.sync([scripted('p', [false]), scripted('h', [true], { initial: 'healthy' })]);
  await until(() => changes.some((ch) => ch.key === 'p'), 2000, 'p decided');
  t.same(changes.filter((ch) => ch.key === 'p').map((ch) => ch.to), ['unhealthy']);
  t.equal(c.state('h')?.state, 'healthy');
  t.notOk(changes.some((ch) => ch.key === 'h'), 'no transition for an endpoint that starts healthy and stays so');
});

t.test('sync stops removed targets and restarts changed ones', async (t) => {
  const c = new HealthChecker(() => {}, seededRandom(1));
  t.teardown(() => c.stopAll());
  const a = scripted('a', [true]);
  c.sync([a]);
  await until(() => a.calls >= 2, 2000, 'running');
  c.sync([]);
  const stoppedAt = a.calls;
  await new Promise((r) => setTimeout(r, 50));
  t.ok(a.calls <= stoppedAt + 1, 'no more probes once removed');
  t.equal(c.state('a'), undefined);
  const b1 = scripted('b', [true], { settingsKey: 'v1' });
  c.sync([b1]);
  const b2 = scripted('b', [true], { settingsKey: 'v2' });
  c.sync([b2]);
  await until(() => b2.calls >= 1, 2000, 'restarted with new settings');
  t.pass();
});

t.test('jitter spreads the interval within its bounds', async (t) => {
  const c = new HealthChecker(() => {}, seededRandom(3));
  t.teardown(() => c.stopAll());
  const times: number[] = [];
  const target = scripted('j', [true], { intervalMs: 40, jitter: 0.5 });
  const probe = target.probe;
  c.sync([{ ...target, probe: async (h, p) => (times.push(performance.now()), probe(h, p)) }]);
  await until(() => times.length >= 8, 5000, 'eight probes');
  const gaps = times.slice(1).map((x, i) => x - times[i]!);
  t.ok(gaps.every((g) => g >= 18 && g < 120), `gaps within 20–60 ms (+ timer slack): ${gaps.map((g) => g.toFixed(0)).join(', ')}`);
  t.ok(new Set(gaps.map((g) => Math.round(g / 5))).size > 1, 'not all the same');
});
