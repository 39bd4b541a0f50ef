import t from 'tap';
import { roundRobin } from '../../src/balancer/round-robin.js';
import { countPicks, hosts } from '../helpers/hosts.js';

t.test('smooth weighted sequence 5,1,1 is a a b a c a a (nginx)', async (t) => {
  const b = roundRobin(hosts({ a: 5, b: 1, c: 1 }));
  const seq: string[] = [];
  for (let i = 0; i < 14; i++) {
    const r = b.pick();
    if (r.type === 'ok') seq.push(r.host.id);
  }
  t.equal(seq.join(''), 'aabacaaaabacaa');
});

t.test('equal weights rotate strictly', async (t) => {
  const b = roundRobin(hosts({ a: 1, b: 1, c: 1 }));
  const seq = Array.from({ length: 6 }, () => {
    const r = b.pick();
    return r.type === 'ok' ? r.host.id : '-';
  });
  t.same(seq, ['a', 'b', 'c', 'a', 'b', 'c']);
});

t.test('weights honoured exactly over a full cycle', async (t) => {
  const b = roundRobin(hosts({ a: 3, b: 2, c: 5 }));
  t.same(countPicks(() => b.pick(), 1000), { a: 300, b: 200, c: 500 });
});

t.test('no endpoint is picked twice in a row when weights are equal-ish (smoothness)', async (t) => {
  const b = roundRobin(hosts({ a: 2, b: 2, c: 1 }));
  let prev = '';
  let repeats = 0;
  for (let i = 0; i < 500; i++) {
    const r = b.pick();
    const id = r.type === 'ok' ? r.host.id : '';
    if (id === prev) repeats++;
    prev = id;
  }
  t.equal(repeats, 0);
});

t.test('exclude skips tried endpoints; all excluded is none', async (t) => {
  const hs = hosts({ a: 1, b: 1 });
  const b = roundRobin(hs);
  for (let i = 0; i < 10; i++) {
    const r = b.pick({ exclude: new Set([hs[0]!]) });
    t.equal(r.type === 'ok' && r.host.id, 'b');
  }
  t.same(b.pick({ exclude: new Set(hs) }), { type: 'none', reason: 'all-excluded' });
  t.same(roundRobin([]).pick(), { type: 'none', reason: 'empty' });
});
