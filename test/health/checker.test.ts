import t from 'tap';
import { seededRandom } from '../../src/core/random.js';
import { HealthChecker, type CheckChange, type CheckTarget } from '../../src/health/checker.js';
import { ManualClock } from '../helpers/clock.js';
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
  const clock = new ManualClock();
  const c = new HealthChecker(() => {}, seededRandom(1), clock);
  t.teardown(() => c.stopAll());
  const a = scripted('a', [true]);
  c.sync([a]);
  await until(() => a.calls === 1 && clock.pending === 1, 2000, 'first probe done, the next one scheduled');
  clock.advance(5);
  await until(() => a.calls === 2 && clock.pending === 1, 2000, 'running');
  c.sync([]);
  t.equal(clock.pending, 0, 'its timer is cancelled');
  clock.advance(1000);
  t.equal(a.calls, 2, 'no more probes once removed');
  t.equal(c.state('a'), undefined);
  const b1 = scripted('b', [true], { settingsKey: 'v1' });
  c.sync([b1]);
  const b2 = scripted('b', [true], { settingsKey: 'v2' });
  c.sync([b2]);
  await until(() => b2.calls >= 1, 2000, 'restarted with new settings');
  t.pass();
});

/** The delays a checker schedules between probes, on a ManualClock. */
async function delays(jitter: number, n: number): Promise<number[]> {
  const clock = new ManualClock();
  const c = new HealthChecker(() => {}, seededRandom(3), clock);
  const target = scripted('j', [true], { intervalMs: 40, jitter });
  c.sync([target]);
  const out: number[] = [];
  for (let i = 1; out.length < n; i++) {
    await until(() => target.calls === i && clock.pending === 1, 2000, `probe ${i} done and the next scheduled`);
    const [d] = clock.dueIn();
    out.push(d!);
    clock.advance(d!);
  }
  c.stopAll();
  return out;
}

t.test('jitter spreads the interval within its bounds; without jitter every interval is the same', async (t) => {
  const spread = await delays(0.5, 20);
  t.ok(spread.every((d) => d >= 20 && d <= 60), `within 40 ms ± 50%: ${spread.map((d) => d.toFixed(1)).join(', ')}`);
  t.ok(new Set(spread.map((d) => Math.round(d))).size >= 10, 'spread over many values');
  t.ok(spread.some((d) => d < 35) && spread.some((d) => d > 45), 'both shorter and longer than the interval');
  t.same(await delays(0, 5), [40, 40, 40, 40, 40], 'jitter 0: exactly the interval');
});
