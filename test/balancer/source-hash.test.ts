import t from 'tap';
import { buildMaglevTable, sourceHash } from '../../src/balancer/source-hash.js';
import { seededRandom } from '../../src/core/random.js';
import { hosts, type TestHost } from '../helpers/hosts.js';

const deps = { random: seededRandom(1) };
const keys = Array.from({ length: 20000 }, (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);

function assign(hs: TestHost[]): Map<string, string> {
  const b = sourceHash(hs, deps);
  const out = new Map<string, string>();
  for (const k of keys) {
    const r = b.pick({ key: k });
    if (r.type === 'ok') out.set(k, r.host.id);
  }
  return out;
}

function pool(n: number): Record<string, number> {
  return Object.fromEntries(Array.from({ length: n }, (_, i) => [`ep-${i}`, 1]));
}

t.test('the same key always goes to the same endpoint', async (t) => {
  const b = sourceHash(hosts(pool(5)), deps);
  const first = b.pick({ key: '192.0.2.7' });
  for (let i = 0; i < 100; i++) t.same(b.pick({ key: '192.0.2.7' }), first);
});

t.test('table slots follow weights', async (t) => {
  const table = buildMaglevTable(hosts({ a: 1, b: 2, c: 1 }));
  const counts = [0, 0, 0];
  for (const i of table) counts[i]!++;
  t.ok(Math.abs(counts[1]! / table.length - 0.5) < 0.01, `counts ${counts}`);
  t.ok(Math.abs(counts[0]! / table.length - 0.25) < 0.01, `counts ${counts}`);
});

t.test('keys spread evenly over equal endpoints', async (t) => {
  const a = assign(hosts(pool(8)));
  const per = new Map<string, number>();
  for (const id of a.values()) per.set(id, (per.get(id) ?? 0) + 1);
  for (const [id, n] of per) t.ok(Math.abs(n / keys.length - 1 / 8) < 0.02, `${id}: ${n}`);
});

t.test('remap bound: when one of N leaves, only its keys move (plus < 1%)', async (t) => {
  for (const n of [3, 10, 25]) {
    const all = hosts(pool(n));
    const before = assign(all);
    const gone = all[Math.floor(n / 2)]!.id;
    const after = assign(all.filter((h) => h.id !== gone));
    let ownMoved = 0;
    let otherMoved = 0;
    for (const k of keys) {
      if (before.get(k) === after.get(k)) continue;
      if (before.get(k) === gone) ownMoved++;
      else otherMoved++;
    }
    const ownShare = [...before.values()].filter((id) => id === gone).length;
    t.equal(ownMoved, ownShare, `n=${n}: every key of the removed endpoint moved`);
    t.ok(otherMoved / keys.length < 0.01, `n=${n}: keys of other endpoints moved: ${((100 * otherMoved) / keys.length).toFixed(2)}%`);
  }
});

t.test('adding one endpoint moves about 1/(N+1) of keys', async (t) => {
  const base = hosts(pool(9));
  const before = assign(base);
  const after = assign(hosts(pool(10)));
  let moved = 0;
  for (const k of keys) if (before.get(k) !== after.get(k)) moved++;
  t.ok(Math.abs(moved / keys.length - 0.1) < 0.02, `moved ${moved}`);
});

t.test('retry walks to a different endpoint, deterministically', async (t) => {
  const hs = hosts(pool(4));
  const b = sourceHash(hs, deps);
  const first = b.pick({ key: '198.51.100.1' });
  t.equal(first.type, 'ok');
  if (first.type !== 'ok') return;
  const second = b.pick({ key: '198.51.100.1', exclude: new Set([first.host]) });
  t.equal(second.type, 'ok');
  if (second.type === 'ok') t.not(second.host.id, first.host.id);
  t.same(b.pick({ key: '198.51.100.1', exclude: new Set([first.host]) }), second);
  t.equal(b.pick({ key: 'x', exclude: new Set(hs) }).type, 'none');
});
