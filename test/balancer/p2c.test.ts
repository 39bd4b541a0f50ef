import t from 'tap';
import { cost, p2c } from '../../src/balancer/p2c.js';
import { seededRandom } from '../../src/core/random.js';
import { countPicks, hosts } from '../helpers/hosts.js';

t.test('idle endpoints share by weight', async (t) => {
  const b = p2c(hosts({ a: 1, b: 1, c: 2 }), { random: seededRandom(1) });
  const c = countPicks(() => b.pick(), 40000);
  // With equal load the cheaper of two is the heavier; c (weight 2) gets the most.
  t.ok(c['c']! > c['a']! && c['c']! > c['b']!, JSON.stringify(c));
  t.ok(Math.abs(c['a']! - c['b']!) < 1500, `a and b even: ${JSON.stringify(c)}`);
});

t.test('a loaded endpoint is avoided', async (t) => {
  const hs = hosts({ a: 1, b: 1, c: 1, d: 1 });
  hs[0]!.active = 50;
  const b = p2c(hs, { random: seededRandom(7) });
  const c = countPicks(() => b.pick(), 10000);
  // "a" wins only when both draws are "a", which the distinct-draw loop prevents.
  t.equal(c['a'] ?? 0, 0, JSON.stringify(c));
});

t.test('latency-aware: a slow endpoint gets less', async (t) => {
  const hs = hosts({ fast: 1, slow: 1 });
  hs[0]!.latency = 1;
  hs[1]!.latency = 20;
  t.ok(cost(hs[1]!) > cost(hs[0]!));
  const b = p2c(hs, { random: seededRandom(3) });
  const c = countPicks(() => b.pick(), 1000);
  t.equal(c['slow'] ?? 0, 0);
});

t.test('single endpoint, exclusion, empty', async (t) => {
  const hs = hosts({ only: 1 });
  const b = p2c(hs, { random: seededRandom(1) });
  t.equal(b.pick().type, 'ok');
  t.same(b.pick({ exclude: new Set(hs) }), { type: 'none', reason: 'all-excluded' });
  const hs3 = hosts({ a: 1, b: 1, c: 1 });
  const b3 = p2c(hs3, { random: seededRandom(2) });
  const c = countPicks(() => b3.pick({ exclude: new Set([hs3[0]!, hs3[1]!]) }), 100);
  t.same(c, { c: 100 });
  t.same(p2c([], { random: seededRandom(1) }).pick(), { type: 'none', reason: 'empty' });
});
