import t from 'tap';
import { weightedRandom } from '../../src/balancer/random.js';
import { seededRandom } from '../../src/core/random.js';
import { countPicks, hosts } from '../helpers/hosts.js';

t.test('shares follow weights within 2%', async (t) => {
  const b = weightedRandom(hosts({ a: 1, b: 3, c: 6 }), { random: seededRandom(42) });
  const n = 100000;
  const c = countPicks(() => b.pick(), n);
  t.ok(Math.abs(c['a']! / n - 0.1) < 0.02, JSON.stringify(c));
  t.ok(Math.abs(c['b']! / n - 0.3) < 0.02, JSON.stringify(c));
  t.ok(Math.abs(c['c']! / n - 0.6) < 0.02, JSON.stringify(c));
});

t.test('exclusion keeps relative weights of the rest', async (t) => {
  const hs = hosts({ a: 1, b: 1, c: 3 });
  const b = weightedRandom(hs, { random: seededRandom(5) });
  const n = 20000;
  const c = countPicks(() => b.pick({ exclude: new Set([hs[2]!]) }), n);
  t.notOk('c' in c);
  t.ok(Math.abs(c['a']! / n - 0.5) < 0.03, JSON.stringify(c));
  t.equal(b.pick({ exclude: new Set(hs) }).type, 'none');
});
