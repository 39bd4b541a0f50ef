import t from 'tap';
import { leastConn } from '../../src/balancer/least-conn.js';
import { countPicks, hosts } from '../helpers/hosts.js';

t.test('picks the endpoint with the fewest connections per weight', async (t) => {
  const hs = hosts({ a: 1, b: 1, c: 1 });
  hs[0]!.active = 5;
  hs[1]!.active = 1;
  hs[2]!.active = 3;
  const b = leastConn(hs);
  const r = b.pick();
  t.equal(r.type === 'ok' && r.host.id, 'b');
});

t.test('weight scales capacity: 10 open on weight 10 beats 2 open on weight 1', async (t) => {
  const hs = hosts({ heavy: 10, light: 1 });
  hs[0]!.active = 10;
  hs[1]!.active = 2;
  const r = leastConn(hs).pick();
  t.equal(r.type === 'ok' && r.host.id, 'heavy');
});

t.test('as connections accumulate, shares follow weights', async (t) => {
  const hs = hosts({ a: 3, b: 1 });
  const b = leastConn(hs);
  for (let i = 0; i < 400; i++) {
    const r = b.pick();
    if (r.type === 'ok') r.host.active++;
  }
  t.equal(hs[0]!.active, 300);
  t.equal(hs[1]!.active, 100);
});

t.test('ties rotate instead of piling onto the first', async (t) => {
  const b = leastConn(hosts({ a: 1, b: 1, c: 1 }));
  t.same(countPicks(() => b.pick(), 300), { a: 100, b: 100, c: 100 });
});

t.test('idle endpoints (sequential connections) share by weight, not all to the heaviest', async (t) => {
  const b = leastConn(hosts({ light: 1, heavy: 2 }));
  t.same(countPicks(() => b.pick(), 300), { light: 100, heavy: 200 });
});

t.test('exclude', async (t) => {
  const hs = hosts({ a: 1, b: 1 });
  hs[1]!.active = 100;
  const r = leastConn(hs).pick({ exclude: new Set([hs[0]!]) });
  t.equal(r.type === 'ok' && r.host.id, 'b');
  t.equal(leastConn(hs).pick({ exclude: new Set(hs) }).type, 'none');
});
