/**
 * The discovery watcher is the one dedupe and the memory of every provider's last
 * snapshot (issue 15's reproduced defects: a label-only change lost, a Swarm label
 * update dropped, a worker given only the latest provider's endpoints).
 */
import { PassThrough } from 'node:stream';
import t from 'tap';
import { SnapshotWatcher, canonical } from '../../src/discovery/watcher.js';
import { SwarmProvider } from '../../src/discovery/docker/swarm.js';
import type { DockerClient, SwarmService, SwarmTask } from '../../src/discovery/docker/types.js';
import type { EndpointSpec, ProviderSnapshot } from '../../src/core/types.js';
import { until } from '../helpers/net.js';
import { silent } from '../helpers/proxy.js';

const spec = (id: string, over: Partial<EndpointSpec> = {}): EndpointSpec => ({ id, host: '10.0.0.1', port: 80, weight: 1, source: 'docker', ...over });
const snap = (provider: string, services: Record<string, EndpointSpec[]>): ProviderSnapshot => ({ provider, services: new Map(Object.entries(services)) });

t.test('drops a snapshot equal to its provider\'s last (whatever the order), passes any change, labels included', async (t) => {
  const applied: ProviderSnapshot[] = [];
  const w = new SnapshotWatcher((s) => applied.push(s));
  t.ok(w.publish(snap('docker', { web: [spec('a'), spec('b')] })));
  t.notOk(w.publish(snap('docker', { web: [spec('b'), spec('a')] })), 'same endpoints in another order: dropped');
  t.notOk(w.publish(snap('docker', { web: [{ ...spec('a'), labels: undefined } as unknown as EndpointSpec, spec('b')] })), 'an absent and an undefined field are alike');
  t.ok(w.publish(snap('docker', { web: [spec('a', { labels: { 'http.host': 'a.example' } }), spec('b')] })), 'a label-only change passes');
  t.ok(w.publish(snap('docker', { web: [spec('a', { labels: { 'http.host': 'b.example' } }), spec('b')] })), 'and so does the next one');
  t.ok(w.publish(snap('dns', { other: [spec('c', { source: 'dns' })] })), 'another provider is its own');
  t.equal(applied.length, 4);
  t.same(
    w.snapshots().map((s) => s.provider),
    ['docker', 'dns'],
    'every provider\'s last snapshot is kept (a new worker gets them all)',
  );
  t.equal(canonical(w.snapshots()[0]!), canonical(applied[2]!));
});

t.test('a Swarm service\'s label update reaches the pool (the provider no longer dedupes on a partial key)', async (t) => {
  let labels: Record<string, string> = { 'berth.enable': 'true', 'berth.port': '8080', 'berth.http.host': 'a.example' };
  const services = (): SwarmService[] => [{ ID: 's1', Spec: { Name: 'web', Labels: labels, EndpointSpec: { Ports: [] } } }];
  const tasks: SwarmTask[] = [{ ID: 't1aaaaaaaaaaaa', ServiceID: 's1', Slot: 1, DesiredState: 'running', Status: { State: 'running' }, NetworksAttachments: [{ Network: { ID: 'n', Spec: { Name: 'front' } }, Addresses: ['10.0.1.1/24'] }] }];
  const client = {
    services: async () => services(),
    tasks: async () => tasks,
    swarmEvents: async () => new PassThrough(),
    events: async () => new PassThrough(),
    inspect: async () => null,
    listRunning: async () => [],
  } as unknown as DockerClient;
  const applied: ProviderSnapshot[] = [];
  const w = new SnapshotWatcher((s) => applied.push(s));
  const p = new SwarmProvider({ client, log: silent, onSnapshot: (s) => w.publish(s), labelPrefix: 'berth', exposedByDefault: false, network: '', reconcileMs: 3_600_000 });
  await p.start();
  t.teardown(() => p.stop());
  t.equal(applied.length, 1);
  p.reconcile();
  await new Promise((r) => setImmediate(r));
  labels = { ...labels, 'berth.http.host': 'b.example' };
  p.reconcile();
  await until(() => applied.length === 2, 5000, 'the label update applied');
  t.equal(applied[1]!.services.get('web')![0]!.labels?.['http.host'], 'b.example');
});
