import t from 'tap';
import { buildSwarmSnapshot } from '../../src/discovery/docker/swarm.js';
import type { SwarmService, SwarmTask } from '../../src/discovery/docker/types.js';

const opts = { labelPrefix: 'berth', exposedByDefault: false, network: '', selfNetworks: ['front'] };
const svc = (id: string, name: string, labels: Record<string, string>, ports: number[] = []): SwarmService => ({ ID: id, Spec: { Name: name, Labels: labels, EndpointSpec: { Ports: ports.map((p) => ({ TargetPort: p, Protocol: 'tcp' })) } } });
const att = (name: string, addr: string) => ({ Network: { ID: `id-${name}`, Spec: { Name: name } }, Addresses: [`${addr}/24`] });
const task = (id: string, service: string, slot: number, state: string, desired: string, atts = [att('ingress', '10.0.0.9'), att('back', '10.0.2.5'), att('front', `10.0.1.${slot}`)]): SwarmTask => ({
  ID: id,
  ServiceID: service,
  Slot: slot,
  DesiredState: desired,
  Status: { State: state },
  NetworksAttachments: atts,
});

t.test('running tasks of labelled services, on the network shared with berth', async (t) => {
  const r = buildSwarmSnapshot(
    [svc('s1', 'web', { 'berth.enable': 'true', 'berth.port': '8080', 'berth.http.host': 'web.test' }), svc('s2', 'db', {}), svc('s3', 'api', { 'berth.enable': 'true', 'berth.service': 'api-pool' }, [9000])],
    [
      task('t1aaaaaaaaaaaa', 's1', 1, 'running', 'running'),
      task('t2bbbbbbbbbbbb', 's1', 2, 'running', 'shutdown'),
      task('t3cccccccccccc', 's1', 3, 'starting', 'running'),
      task('t4dddddddddddd', 's2', 1, 'running', 'running'),
      task('t5eeeeeeeeeeee', 's3', 1, 'running', 'running'),
      task('t6ffffffffffff', 's1', 4, 'running', 'running'),
    ],
    new Set(['t6ffffffffffff']),
    opts,
  );
  const web = r.snapshot.services.get('web')!;
  t.same(
    web.map((e) => [e.id, e.host, e.port, e.stopping === true]),
    [
      ['web.1.t1aaaaaaaaaa', '10.0.1.1', 8080, false],
      ['web.2.t2bbbbbbbbbb', '10.0.1.2', 8080, true],
      ['web.4.t6ffffffffff', '10.0.1.4', 8080, true],
    ],
    'desired shutdown or killed: stopping (drain); not yet running: absent',
  );
  t.equal(web[0]!.labels?.['http.host'], 'web.test');
  t.same(r.snapshot.services.get('api-pool')!.map((e) => [e.host, e.port]), [['10.0.1.1', 9000]], 'port from the only published port; service from the label');
  t.notOk(r.snapshot.services.has('db'), 'unlabelled service ignored');
});

t.test('network label, missing port, bad labels', async (t) => {
  const r = buildSwarmSnapshot(
    [svc('s1', 'web', { 'berth.enable': 'true', 'berth.port': '80', 'berth.network': 'back' }), svc('s2', 'noport', { 'berth.enable': 'true' }), svc('s3', 'typo', { 'berth.enable': 'true', 'berth.wieght': '2' }), svc('s4', 'elsewhere', { 'berth.enable': 'true', 'berth.port': '80', 'berth.network': 'nope' })],
    [task('t1aaaaaaaaaaaa', 's1', 1, 'running', 'running'), task('t2aaaaaaaaaaaa', 's4', 1, 'running', 'running')],
    new Set(),
    opts,
  );
  t.same(r.snapshot.services.get('web')!.map((e) => e.host), ['10.0.2.5']);
  // (Services are read in name order.)
  const why = Object.fromEntries(r.skipped.map((s) => [s.name, s.reason]));
  t.same(Object.keys(why).sort(), ['elsewhere.1.t2aaaaaaaaaa', 'noport', 'typo']);
  t.match(why['noport'], /no berth\.port label and no published TCP port/);
  t.match(why['typo'], /bad labels: .*wieght/);
  t.match(why['elsewhere.1.t2aaaaaaaaaa'], /not on network nope/);
});

t.test('a task on no overlay berth is attached to is skipped, not sent to (the first network only when berth runs outside a container)', async (t) => {
  const services = [svc('s1', 'web', { 'berth.enable': 'true', 'berth.port': '80' })];
  const tasks = [task('t1aaaaaaaaaaaa', 's1', 1, 'running', 'running', [att('ingress', '10.0.0.9'), att('other-stack', '10.0.7.3')]), task('t2aaaaaaaaaaaa', 's1', 2, 'running', 'running')];
  const r = buildSwarmSnapshot(services, tasks, new Set(), opts);
  t.same(r.snapshot.services.get('web')!.map((e) => e.host), ['10.0.1.2'], 'only the task on the shared overlay');
  t.same(r.skipped.map((s) => s.name), ['web.1.t1aaaaaaaaaa']);
  t.match(r.skipped[0]!.reason, /no network shared with berth \(the task is on other-stack; berth is on front\): attach berth to one or set berth\.network/);
  const named = buildSwarmSnapshot([svc('s1', 'web', { 'berth.enable': 'true', 'berth.port': '80', 'berth.network': 'other-stack' })], tasks, new Set(), opts);
  t.same(named.snapshot.services.get('web')!.map((e) => e.host), ['10.0.7.3'], 'a named network is believed');
  const outside = buildSwarmSnapshot(services, tasks, new Set(), { ...opts, selfNetworks: [] });
  t.same(outside.snapshot.services.get('web')!.map((e) => e.host), ['10.0.7.3', '10.0.2.5'], 'berth not in a container: the first attachment, never ingress');
});
