// The Docker provider against a fake engine (test/helpers/fake-docker.ts): events,
// the race between a resync and events, and engine loss with reconnect on an
// injected clock. The real engine is exercised in test/e2e/docker.test.ts.
import t from 'tap';
import { seededRandom } from '../../src/core/random.js';
import type { ProviderSnapshot } from '../../src/core/types.js';
import { DockerProvider } from '../../src/discovery/docker/provider.js';
import { ManualClock } from '../helpers/clock.js';
import { container, FakeDocker, gate } from '../helpers/fake-docker.js';
import { until } from '../helpers/net.js';
import { silent } from '../helpers/proxy.js';

const routed = { 'berth.enable': 'true', 'berth.service': 'web' };

function rig(fake: FakeDocker) {
  const clock = new ManualClock();
  const snaps: ProviderSnapshot[] = [];
  const p = new DockerProvider({
    client: fake,
    log: silent,
    onSnapshot: (s) => snaps.push(s),
    labelPrefix: 'berth',
    exposedByDefault: false,
    network: '',
    selfNetworks: [],
    backoffBaseMs: 100,
    backoffCapMs: 1000,
    clock,
    random: seededRandom(1),
  });
  /** The last snapshot's web endpoints: "name" or "name(stopping)". */
  const web = () => (snaps.at(-1)?.services.get('web') ?? []).map((e) => `${e.id}${e.stopping ? '(stopping)' : ''}`).sort();
  return { p, clock, snaps, web };
}

t.test('events: start adds, kill (a stopping signal) marks stopping, HUP does not, die removes', async (t) => {
  const fake = new FakeDocker();
  const a = container('a', 'a', '172.17.0.2', routed);
  fake.containers.set(a.Id, a);
  const { p, web } = rig(fake);
  t.teardown(() => p.stop());
  await p.start();
  t.same(web(), ['a'], 'the first sync');
  t.ok(p.connected && p.synced);
  const b = container('b', 'b', '172.17.0.3', routed);
  fake.containers.set(b.Id, b);
  fake.container('start', b.Id);
  await until(() => web().length === 2, 2000, 'b added on its start event');
  fake.container('kill', a.Id, { signal: 'SIGTERM' });
  await until(() => web().includes('a(stopping)'), 2000, 'a stopping on kill SIGTERM');
  fake.container('kill', b.Id, { signal: 'HUP' });
  fake.container('die', a.Id);
  fake.containers.delete(a.Id);
  await until(() => !web().some((x) => x.startsWith('a')), 2000, 'a gone on die');
  t.same(web(), ['b'], 'kill -s HUP asks for a reload: b stays, not stopping');
  t.equal(fake.openStreams, 1, 'one event stream');
});

t.test('resync race: an event during the resync wins over the stale answer of the listing', async (t) => {
  const fake = new FakeDocker();
  const a = container('a', 'a', '172.17.0.2', routed);
  fake.containers.set(a.Id, a);
  const held = gate();
  fake.holdInspect.set(a.Id, held);
  const { p, web, snaps } = rig(fake);
  t.teardown(() => p.stop());
  const started = p.start();
  await until(() => fake.calls.includes(`inspect ${a.Id}`), 2000, 'the resync is inspecting a (and its answer says running)');
  // a dies while the resync's inspect answer is on its way, and b starts.
  fake.containers.delete(a.Id);
  fake.container('die', a.Id);
  const b = container('b', 'b', '172.17.0.3', routed);
  fake.containers.set(b.Id, b);
  fake.container('start', b.Id);
  await until(() => fake.calls.includes(`inspect ${b.Id}`), 2000, 'b inspected on its event');
  held.open();
  await started;
  await until(() => web().includes('b'), 2000, 'b in');
  t.same(web(), ['b'], 'a is not resurrected by the stale listing; b, which started after the listing, is in');
  t.notOk(
    snaps.some((s) => (s.services.get('web') ?? []).some((e) => e.id === 'a')),
    'no snapshot ever held a',
  );
});

t.test('engine loss: the last endpoints stay, reconnect with backoff on the clock, a full resync catches what changed while away', async (t) => {
  const fake = new FakeDocker();
  const a = container('a', 'a', '172.17.0.2', routed);
  fake.containers.set(a.Id, a);
  const { p, clock, snaps, web } = rig(fake);
  t.teardown(() => p.stop());
  await p.start();
  const before = snaps.length;
  fake.down = true;
  fake.dropStream();
  await until(() => !p.connected, 2000, 'the loss is seen');
  t.equal(snaps.length, before, 'nothing emitted: the pool keeps serving the last endpoints');
  t.same(clock.dueIn(), [100], 'first retry after the base backoff');
  // While away: a goes, b comes.
  fake.containers.delete(a.Id);
  const b = container('b', 'b', '172.17.0.3', routed);
  fake.containers.set(b.Id, b);
  clock.advance(100);
  await until(() => clock.pending === 1, 2000, 'the failed retry schedules the next');
  const [second] = clock.dueIn();
  t.ok(second! >= 100 && second! <= 200, `second backoff within [100, 200]: ${second}`);
  t.equal(snaps.length, before, 'still nothing emitted while the engine is down');
  fake.down = false;
  clock.advance(second!);
  await until(() => p.connected, 2000, 'reconnected');
  t.same(web(), ['b'], 'the resync replaces what was missed');
  t.equal(fake.openStreams, 1, 'one event stream again');
  t.equal(clock.pending, 0, 'no retry left scheduled');
  // Events flow again on the new stream.
  fake.container('kill', b.Id, { signal: 'SIGKILL' });
  await until(() => web().includes('b(stopping)'), 2000, 'events from the new stream');
});

t.test('stop: no reconnect is scheduled after the provider is stopped', async (t) => {
  const fake = new FakeDocker();
  const { p, clock } = rig(fake);
  await p.start();
  fake.down = true;
  fake.dropStream();
  await until(() => !p.connected, 2000, 'loss seen');
  p.stop();
  t.equal(clock.pending, 0, 'the pending retry is cancelled');
  const calls = fake.calls.length;
  fake.down = false;
  clock.advance(10_000);
  t.equal(fake.calls.length, calls, 'no reconnect attempt after stop');
});
