import { readFileSync } from 'node:fs';
import t from 'tap';
import { buildDockerSnapshot, type DockerBuildOptions } from '../../src/discovery/docker/build.js';
import { parseLabels } from '../../src/discovery/docker/labels.js';
import { buildSwarmSnapshot } from '../../src/discovery/docker/swarm.js';
import type { ContainerInfo, SwarmService, SwarmTask } from '../../src/discovery/docker/types.js';

/** Inspect answers captured from a real engine (Docker 20.10), see test/fixtures/docker. */
function fx(name: string): ContainerInfo {
  return JSON.parse(readFileSync(new URL(`../fixtures/docker/${name}.json`, import.meta.url), 'utf8')) as ContainerInfo;
}
const all = ['fx-web', 'fx-plain', 'fx-portlabel', 'fx-noport', 'fx-badlabel', 'fx-health', 'fx-twonets'].map(fx);
const opts: DockerBuildOptions = { labelPrefix: 'berth', exposedByDefault: false, network: '', selfNetworks: [] };

t.test('labels: table', async (t) => {
  const cases: [Record<string, string>, string][] = [
    [{ 'berth.enable': 'true' }, 'ok'],
    [{ 'berth.enable': 'yes' }, 'berth.enable: expected true or false'],
    [{ 'berth.port': '0' }, 'berth.port: expected a port'],
    [{ 'berth.port': '70000' }, 'berth.port: expected a port'],
    [{ 'berth.weight': '1001' }, 'berth.weight: expected an integer from 0 to 1000'],
    [{ 'berth.weight': '-1' }, 'berth.weight: expected an integer'],
    [{ 'berth.service': 'has space' }, 'berth.service: expected a name'],
    [{ 'berth.wieght': '2' }, 'berth.wieght: unknown label'],
    [{ 'berth.http.host': '*.example.com', 'berth.http.pathPrefix': '/api' }, 'ok'],
    [{ 'berth.http.pathPrefix': 'api' }, 'berth.http.pathPrefix: expected a path'],
    [{ 'berth.maxConnections': '10', 'other.label': 'anything' }, 'ok'],
    [{ 'berth.protocol': 'udp', 'berth.port': '53' }, 'ok'],
    [{ 'berth.protocol': 'sctp' }, 'berth.protocol: expected tcp or udp'],
    [{ 'berth.tls.sni': 'db1.example.com, *.db.example.com' }, 'ok'],
    [{ 'berth.tls.sni': 'db1.example.com,,x' }, 'berth.tls.sni: expected server names'],
    [{ 'berth.tls.sni': '*' }, 'berth.tls.sni: expected server names'],
    [{ 'berth.protocol': 'udp', 'berth.tls.sni': 'a.example.com' }, 'berth.tls.sni: a udp pool has no TLS'],
    [{ 'berth.protocol': 'udp', 'berth.http.host': 'a.example.com' }, 'berth.http.host: a udp pool has no HTTP'],
    [{ 'berth.services.dns.port': '53', 'berth.services.dns.protocol': 'udp', 'berth.services.metrics.port': '9153', 'berth.enable': 'true', 'berth.network': 'n' }, 'ok'],
    [{ 'berth.services.dns.port': '53', 'berth.port': '80' }, 'berth.<label> and berth.services.<name>.<label> mixed'],
    [{ 'berth.services.dns.port': '53', 'berth.service': 'x' }, 'mixed'],
    [{ 'berth.services.dns.service': 'x' }, "berth.services.dns.service: unknown label (the pool's name is <name> in berth.services.dns)"],
    [{ 'berth.services.dns.wieght': '1' }, 'berth.services.dns.wieght: unknown label'],
    [{ 'berth.services.dns': '1' }, 'berth.services.dns: expected berth.services.<name>.<label>'],
    [{ 'berth.services.a.b.port': '1' }, 'berth.services.a.b.port: unknown label'],
    [{ 'berth.services.-x.port': '1' }, 'expected a pool name'],
    [{ 'berth.services.dns.port': '0' }, 'berth.services.dns.port: expected a port'],
  ];
  for (const [labels, want] of cases) {
    const r = parseLabels(labels, 'berth');
    if (want === 'ok') t.ok(r.ok, JSON.stringify(labels));
    else t.match(r.ok ? 'ok' : r.errors.join('; '), want, JSON.stringify(labels));
  }
  const custom = parseLabels({ 'lb.enable': 'true', 'lb.port': '81', 'berth.port': 'ignored' }, 'lb');
  t.ok(custom.ok && custom.labels.pools[0]!.port === 81, 'prefix is configurable');
});

t.test('real containers → endpoints, with reasons', async (t) => {
  const r = buildDockerSnapshot(all, opts);
  const web = r.snapshot.services.get('web')!;
  t.equal(web.length, 1);
  const w = web[0]!;
  t.equal(w.id, 'fx-web');
  t.equal(w.port, 8080, 'the only exposed TCP port');
  t.equal(w.weight, 3);
  t.match(w.host, /^\d+\.\d+\.\d+\.\d+$/);
  t.equal(w.labels?.['network'], 'bridge (first network)');
  t.equal(w.labels?.['port'], '8080 (only exposed TCP port)');
  t.notOk(r.snapshot.services.has('fx-plain'), 'not enabled: not routed');

  const api = r.snapshot.services.get('api')!;
  t.equal(api[0]!.port, 9000, 'port label');
  t.equal(api[0]!.labels?.['service'], 'api (compose service name)');

  const health = r.snapshot.services.get('fx-health')!;
  t.equal(health[0]!.health, 'starting', 'HEALTHCHECK state carried');

  const two = r.snapshot.services.get('fx-twonets')!;
  t.equal(two[0]!.labels?.['network'], 'berth-fixture-net (label berth.network)');
  const fixtureNet = fx('fx-twonets').NetworkSettings.Networks!['berth-fixture-net']!.IPAddress;
  t.equal(two[0]!.host, fixtureNet);

  const skipped = Object.fromEntries(r.skipped.map((s) => [s.name, s.reason]));
  t.same(Object.keys(skipped).sort(), ['fx-badlabel', 'fx-noport']);
  t.match(skipped['fx-noport'], /no berth.port label and no exposed TCP port/);
  t.match(skipped['fx-badlabel'], /berth.weight: expected an integer.*berth.wieght: unknown label/);
});

t.test('network choice: shared with berth beats first; configured network; missing label network', async (t) => {
  const two = fx('fx-twonets');
  const noLabel: ContainerInfo = { ...two, Config: { ...two.Config, Labels: { 'berth.enable': 'true' } } };
  const first = buildDockerSnapshot([noLabel], opts).snapshot.services.get('fx-twonets')![0]!;
  t.equal(first.labels?.['network'], 'berth-fixture-net (first network)', 'alphabetical first');
  const shared = buildDockerSnapshot([noLabel], { ...opts, selfNetworks: ['bridge'] }).snapshot.services.get('fx-twonets')![0]!;
  t.equal(shared.labels?.['network'], 'bridge (shared with berth)');
  // berth in a container on networks the target is not on: skipped with the reason, not
  // sent to an address Docker's isolation (or the default route) would swallow.
  const apart = buildDockerSnapshot([noLabel], { ...opts, selfNetworks: ['front'] });
  t.equal(apart.snapshot.services.size, 0);
  t.match(apart.skipped[0]!.reason, /no network shared with berth \(the container is on berth-fixture-net, bridge; berth is on front\): attach berth to one or set berth\.network/);
  const hostNet = buildDockerSnapshot([noLabel], { ...opts, selfNetworks: ['host'] }).snapshot.services.get('fx-twonets')![0]!;
  t.equal(hostNet.labels?.['network'], 'berth-fixture-net (first network)', 'berth with the host network reaches every bridge: the first');
  const configured = buildDockerSnapshot([noLabel], { ...opts, network: 'bridge' }).snapshot.services.get('fx-twonets')![0]!;
  t.equal(configured.labels?.['network'], 'bridge (discovery.docker.network)');
  const wrong: ContainerInfo = { ...two, Config: { ...two.Config, Labels: { 'berth.enable': 'true', 'berth.network': 'nope' } } };
  const r = buildDockerSnapshot([wrong], opts);
  t.equal(r.snapshot.services.size, 0);
  t.match(r.skipped[0]!.reason, /berth.network=nope but the container is on berth-fixture-net, bridge/);
});

t.test('exposedByDefault, stopping and paused marks', async (t) => {
  const r = buildDockerSnapshot(all, { ...opts, exposedByDefault: true }, { stopping: new Set([fx('fx-web').Id]) });
  t.ok(r.snapshot.services.has('fx-plain'), 'routed without a label when exposed by default');
  t.equal(r.snapshot.services.get('web')![0]!.stopping, true);
  const paused: ContainerInfo = { ...fx('fx-web'), State: { ...fx('fx-web').State, Paused: true } };
  t.equal(buildDockerSnapshot([paused], opts).snapshot.services.get('web')![0]!.paused, true);
  const stopped: ContainerInfo = { ...fx('fx-web'), State: { ...fx('fx-web').State, Running: false } };
  t.equal(buildDockerSnapshot([stopped], opts).snapshot.services.size, 0);
});

t.test('containers and Swarm services: the same labels give the same typed routes, health path, weight and cap', async (t) => {
  const labels = { 'berth.enable': 'true', 'berth.port': '8080', 'berth.weight': '7', 'berth.maxConnections': '12', 'berth.http.host': '*.Example.com', 'berth.http.pathPrefix': '/api', 'berth.health.path': '/ready', 'berth.health.type': 'grpc', 'berth.http.version': '2' };
  const base = fx('fx-web');
  const container = { ...base, Config: { ...base.Config, Labels: labels } };
  const fromDocker = buildDockerSnapshot([container], opts).snapshot.services.get('fx-web')![0]!;
  const swarmSvc: SwarmService = { ID: 's1', Spec: { Name: 'fx-web', Labels: labels } };
  const task: SwarmTask = { ID: 't1aaaaaaaaaaaa', ServiceID: 's1', Slot: 1, DesiredState: 'running', Status: { State: 'running' }, NetworksAttachments: [{ Network: { ID: 'n', Spec: { Name: 'front' } }, Addresses: ['10.0.1.1/24'] }] };
  const fromSwarm = buildSwarmSnapshot([swarmSvc], [task], new Set(), { labelPrefix: 'berth', exposedByDefault: false, network: '', selfNetworks: ['front'] }).snapshot.services.get('fx-web')![0]!;
  for (const [who, e] of [
    ['container', fromDocker],
    ['swarm', fromSwarm],
  ] as const) {
    t.same(e.routes, [{ host: '*.example.com', pathPrefix: '/api' }], `${who}: typed route`);
    t.equal(e.healthPath, '/ready', `${who}: typed health path`);
    t.equal(e.healthType, 'grpc', `${who}: typed health type`);
    t.equal(e.httpVersion, '2', `${who}: typed http version`);
    t.equal(e.weight, 7);
    t.equal(e.maxConnections, 12);
    t.same(
      ['weight', 'maxConnections', 'http.host', 'http.pathPrefix', 'health.path', 'health.type'].map((k) => e.labels?.[k]),
      ['7', '12', '*.example.com', '/api', '/ready', 'grpc'],
      `${who}: the labels stay as explanation`,
    );
  }
  const plain = buildDockerSnapshot([{ ...base, Config: { ...base.Config, Labels: { 'berth.enable': 'true', 'berth.port': '8080' } } }], opts).snapshot.services.get('fx-web')![0]!;
  t.equal(plain.routes, undefined, 'no route labels: no routes');
  t.equal(plain.healthPath, undefined);
  t.equal(plain.healthType, undefined);
  t.equal(plain.httpVersion, undefined);
  const bad = buildDockerSnapshot([{ ...base, Config: { ...base.Config, Labels: { 'berth.enable': 'true', 'berth.port': '8080', 'berth.health.type': 'dns' } } }], opts);
  t.match(bad.skipped, [{ reason: /berth\.health\.type: expected tcp, http or grpc, got "dns"/ }], 'a check kind that needs settings of its own: the container skipped, with why');
  const udp = buildDockerSnapshot([{ ...base, Config: { ...base.Config, Labels: { 'berth.enable': 'true', 'berth.protocol': 'udp', 'berth.health.type': 'grpc' }, ExposedPorts: { '53/udp': {} } } }], opts);
  t.match(udp.skipped, [{ reason: /berth\.health\.type: a udp pool has no TCP, HTTP or gRPC to route or check/ }]);
});

t.test('several pools per container: one endpoint per pool, each port by its label or the only exposed one of its protocol', async (t) => {
  const base = fx('fx-web');
  const make = (labels: Record<string, string>, exposed: string[] = ['8080/tcp']): ContainerInfo => ({ ...base, Config: { ...base.Config, Labels: { 'berth.enable': 'true', ...labels }, ExposedPorts: Object.fromEntries(exposed.map((p) => [p, {}])) } });
  const r = buildDockerSnapshot(
    [
      make(
        {
          'berth.services.dns.protocol': 'udp',
          'berth.services.dns-tcp.port': '53',
          'berth.services.dns-tcp.tls.sni': 'dns.example.com',
          'berth.services.metrics.port': '9153',
          'berth.services.metrics.weight': '2',
        },
        ['53/udp', '53/tcp', '9153/tcp'],
      ),
    ],
    opts,
  );
  t.same(r.skipped, []);
  const dns = r.snapshot.services.get('dns')![0]!;
  t.same([dns.id, dns.port, dns.protocol, dns.weight], ['fx-web', 53, 'udp', 1], 'the only exposed udp port');
  t.equal(dns.labels?.['port'], '53 (only exposed UDP port)');
  t.equal(dns.labels?.['service'], 'dns (label berth.services.dns.*)');
  t.equal(dns.labels?.['protocol'], 'udp');
  const tcp = r.snapshot.services.get('dns-tcp')![0]!;
  t.same([tcp.port, tcp.protocol, tcp.routes], [53, undefined, [{ sni: 'dns.example.com' }]], 'the same port number over tcp is another pool; its SNI route typed');
  t.equal(tcp.labels?.['tls.sni'], 'dns.example.com');
  t.same([r.snapshot.services.get('metrics')![0]!.port, r.snapshot.services.get('metrics')![0]!.weight], [9153, 2]);
  t.equal(r.snapshot.services.get('metrics')![0]!.host, dns.host, 'the same address for every pool');

  const skipped = (labels: Record<string, string>, exposed?: string[]) => buildDockerSnapshot([make(labels, exposed)], opts).skipped.map((k) => k.reason);
  t.match(skipped({ 'berth.services.a.port': '53', 'berth.services.b.port': '53' }), [/berth.services.a and berth.services.b both name tcp port 53/], 'two pools on one port and protocol');
  t.same(skipped({ 'berth.services.a.port': '53', 'berth.services.b.port': '53', 'berth.services.b.protocol': 'udp' }), [], 'one port over tcp and udp: two pools');
  t.match(skipped({ 'berth.services.a.protocol': 'udp' }), [/no berth.services.a.port label and no exposed UDP port/]);
  t.match(skipped({ 'berth.services.a.weight': '1' }, ['80/tcp', '81/tcp']), [/no berth.services.a.port label and several exposed TCP ports \(80, 81\): set berth.services.a.port/]);
  t.match(skipped({ 'berth.services.a.port': '1', 'berth.port': '2' }), [/bad labels: .*mixed/], 'mixing: the container is skipped, with the reason');
  t.same(buildDockerSnapshot([make({ 'berth.services.a.port': '1', 'berth.port': '2' })], opts).snapshot.services.size, 0, 'and no pool of it is routed');

  // One service, one kind of port: the first container (by name) fixes it.
  const mixed = buildDockerSnapshot(
    [
      { ...make({ 'berth.service': 'dns', 'berth.port': '53' }), Name: '/b-tcp' },
      { ...make({ 'berth.service': 'dns', 'berth.port': '53', 'berth.protocol': 'udp' }), Name: '/a-udp' },
    ],
    opts,
  );
  t.same(mixed.snapshot.services.get('dns')!.map((e) => [e.id, e.protocol]), [['a-udp', 'udp']]);
  t.match(mixed.skipped, [{ name: 'b-tcp', reason: /service dns has udp endpoints \(a-udp\); this pool is tcp/ }]);

  // Swarm services: the same labels, the published ports by protocol.
  const svc: SwarmService = {
    ID: 's1',
    Spec: {
      Name: 'resolver',
      Labels: { 'berth.enable': 'true', 'berth.services.dns.protocol': 'udp', 'berth.services.dns-tcp.port': '53' },
      EndpointSpec: { Ports: [{ Protocol: 'udp', TargetPort: 53 }, { Protocol: 'tcp', TargetPort: 53 }] },
    },
  };
  const task: SwarmTask = { ID: 't1aaaaaaaaaaaa', ServiceID: 's1', Slot: 1, DesiredState: 'running', Status: { State: 'running' }, NetworksAttachments: [{ Network: { ID: 'n', Spec: { Name: 'front' } }, Addresses: ['10.0.1.1/24'] }] };
  const sw = buildSwarmSnapshot([svc], [task], new Set(), { labelPrefix: 'berth', exposedByDefault: false, network: '', selfNetworks: ['front'] });
  t.same(sw.skipped, []);
  t.same(
    [...sw.snapshot.services].sort(([a], [b]) => a.localeCompare(b)).map(([name, list]) => [name, list.map((e) => [e.id, e.host, e.port, e.protocol ?? 'tcp'])]),
    [
      ['dns', [['resolver.1.t1aaaaaaaaaa', '10.0.1.1', 53, 'udp']]],
      ['dns-tcp', [['resolver.1.t1aaaaaaaaaa', '10.0.1.1', 53, 'tcp']]],
    ],
  );
  const two = buildSwarmSnapshot([{ ...svc, Spec: { ...svc.Spec, Labels: { 'berth.enable': 'true', 'berth.services.a.port': '53', 'berth.services.b.port': '53' } } }], [task], new Set(), { labelPrefix: 'berth', exposedByDefault: false, network: '', selfNetworks: ['front'] });
  t.match(two.skipped.map((k) => k.reason), [/both name tcp port 53/]);
});
