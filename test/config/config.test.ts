import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { configFromFlags } from '../../src/config/flags.js';
import { loadConfig } from '../../src/config/source.js';

const loadConfigFile = async (path: string, overrides = {}) => (await loadConfig({ path, overrides })).config;
import { parseDuration, parseEndpoint, parseHostPort } from '../../src/config/parse.js';
import { sendExpectProtocol } from '../../src/runtime/health-wiring.js';
import { H2_FRONT_NODE, validateConfig } from '../../src/config/validate.js';
import { ConfigError } from '../../src/core/errors.js';

function issues(fn: () => unknown): string[] {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return e.issues.map((i) => `${i.path}: ${i.message}`);
    throw e;
  }
  return [];
}

t.test('durations', async (t) => {
  t.same(parseDuration('250ms'), { ok: true, value: 250 });
  t.same(parseDuration('2s'), { ok: true, value: 2000 });
  t.same(parseDuration('1m'), { ok: true, value: 60000 });
  t.same(parseDuration('1.5s'), { ok: true, value: 1500 });
  for (const bad of ['10', 'soon', '-1s', '2 weeks', '']) t.equal(parseDuration(bad).ok, false, bad);
});

t.test('addresses and endpoints', async (t) => {
  t.same(parseHostPort('127.0.0.1:80'), { ok: true, value: { host: '127.0.0.1', port: 80 } });
  t.same(parseHostPort('[::1]:8080'), { ok: true, value: { host: '::1', port: 8080 } });
  t.same(parseHostPort('8080', { defaultHost: '0.0.0.0' }), { ok: true, value: { host: '0.0.0.0', port: 8080 } });
  t.equal(parseHostPort('8080').ok, false, 'endpoints need a host');
  t.equal(parseHostPort('h:70000').ok, false);
  t.equal(parseHostPort('h:0').ok, false);
  t.same(parseEndpoint('10.0.0.5:80,weight=3'), { ok: true, value: { id: '10.0.0.5:80', host: '10.0.0.5', port: 80, weight: 3, source: 'static' } });
  t.equal(parseEndpoint('10.0.0.5:80,weight=1001').ok, false);
  t.equal(parseEndpoint('10.0.0.5:80,wieght=3').ok, false);
});

const good = {
  listeners: [{ name: 'web', bind: '127.0.0.1:0', service: 'web', timeouts: { connect: '2s', idle: '60s' } }],
  services: { web: { balance: 'round-robin', endpoints: ['10.0.0.5:80,weight=3', '10.0.0.6:80'] } },
  admin: { bind: 'off' },
};

t.test('a good config normalizes', async (t) => {
  const c = validateConfig(good);
  t.equal(c.listeners[0]!.timeouts.connect, 2000);
  t.equal(c.listeners[0]!.timeouts.idle, 60000);
  t.equal(c.listeners[0]!.mode, 'tcp');
  t.equal(c.services.get('web')!.endpoints[0]!.weight, 3);
  t.equal(c.admin, null);
  t.equal(c.drainTimeout, 30000);
  const d = validateConfig({ listeners: [{ bind: '9000', service: 's' }], services: { s: {} } });
  t.same(d.admin, { host: '127.0.0.1', port: 9901 }, 'admin defaults to 127.0.0.1:9901');
  t.equal(d.services.get('s')!.balance, 'least-conn', 'tcp default balance');
  t.equal(d.listeners[0]!.name, 'listener-0');
});

t.test('every error is reported at once, each with its path', async (t) => {
  const errs = issues(() =>
    validateConfig({
      listeners: [
        { bind: 'nope', service: 'web', colour: 'red', timeouts: { connect: '2 seconds' } },
        { bind: '127.0.0.1:9000', service: 'missing', mode: 'sctp' },
      ],
      services: { web: { balance: 'fastest', endpoints: ['10.0.0.1'] } },
      extra: 1,
    }),
  );
  t.match(errs, [
    /^listeners\[0\]\.bind: expected \[host:\]port/,
    /^listeners\[0\]\.timeouts\.connect: expected a duration/,
    /^listeners\[0\]\.colour: unknown key/,
    /^listeners\[1\]\.mode: expected tcp, http or udp/,
    /^services\.web\.balance: expected one of round-robin/,
    /^services\.web\.endpoints\[0\]: expected host:port/,
    /^extra: unknown key/,
  ]);
  t.equal(errs.length, 7, errs.join('\n'));
});

t.test('cross-field checks', async (t) => {
  const errs = issues(() =>
    validateConfig({
      listeners: [
        { name: 'a', bind: '127.0.0.1:9000', service: 'nope' },
        { name: 'a', bind: '127.0.0.1:9000', service: 'web' },
      ],
      services: { web: { endpoints: ['h:1', 'h:1'] } },
    }),
  );
  t.same(errs, [
    'listeners[0].service: unknown service "nope"; define it under services (or enable discovery)',
    'listeners[1].name: duplicate listener name "a"',
    'listeners[1].bind: 127.0.0.1:9000 is already bound by listeners[0]',
    'services.web.endpoints[1]: duplicate endpoint h:1',
  ]);
  t.match(issues(() => validateConfig({ listeners: [] })), [/^listeners: at least one listener/]);
});

t.test('http listeners: routes, timeouts, limits and their checks', async (t) => {
  const c = validateConfig({
    listeners: [
      {
        name: 'web',
        bind: '8080',
        mode: 'http',
        routes: [{ host: 'API.example.com', pathPrefix: '/v1', service: 'api' }, { host: '*.example.com', service: 'web' }],
        timeouts: { headers: '5s', response: '30s' },
        http: { maxHeaderSize: 8192, trustedProxies: ['10.0.0.0/8', '::1'], accessLog: true },
      },
      { bind: '9000', service: 'web' },
    ],
    services: { api: {}, web: {} },
  });
  const l = c.listeners[0]!;
  t.equal(l.mode, 'http');
  t.equal(l.service, undefined);
  t.same(l.routes[0], { host: 'api.example.com', pathPrefix: '/v1', service: 'api' }, 'host lowercased');
  t.equal(l.timeouts.idle, 60_000, 'http idle default is 60s');
  t.equal(c.listeners[1]!.timeouts.idle, 3_600_000, 'tcp idle default stays 1h');
  t.equal(l.timeouts.headers, 5000);
  t.equal(l.timeouts.response, 30_000);
  t.equal(l.http.maxHeaderSize, 8192);
  t.equal(l.http.upstreamKeepAlive, 4000);
  t.equal(c.services.get('api')!.balance, 'p2c', 'a routed service defaults to p2c');
  const errs = issues(() =>
    validateConfig({
      listeners: [
        { bind: '1', mode: 'http' },
        { bind: '2', mode: 'tcp', routes: [{ service: 'x' }] },
        { bind: '3', mode: 'http', routes: [{ host: 'bad host', pathPrefix: 'v1', service: 'x' }], http: { trustedProxies: ['10.0.0.0/33', 'nope'] } },
        { bind: '4', mode: 'http', routes: [{ service: 'ghost' }] },
        { bind: '5', mode: 'ftp', service: 'x' },
      ],
      services: { x: {} },
    }),
  );
  t.match(errs, [
    /listeners\[2\]\.routes\[0\]\.host: expected a host name/,
    /listeners\[2\]\.routes\[0\]\.pathPrefix: expected a path starting with \//,
    /listeners\[2\]\.http\.trustedProxies\[0\]: expected an IP address or CIDR/,
    /listeners\[2\]\.http\.trustedProxies\[1\]: expected an IP address or CIDR/,
    /listeners\[4\]\.mode: expected tcp, http or udp/,
  ]);
  const cross = issues(() => validateConfig({ listeners: [{ bind: '1', mode: 'http' }, { bind: '2', routes: [{ service: 'x' }] }, { bind: '4', mode: 'http', routes: [{ service: 'ghost' }] }], services: { x: {} } }));
  t.same(cross, [
    'listeners[0].service: an http listener needs a service, routes, or docker discovery (berth.http.* labels)',
    'listeners[2].routes[0].service: unknown service "ghost"; define it under services (or enable discovery)',
  ]);
});

t.test('Layer 4: tcp routes by sni (and alpn), acceptProxy, the preread timeout; each misuse named', async (t) => {
  const c = validateConfig({
    listeners: [
      {
        name: 'edge',
        bind: '5432',
        routes: [{ sni: 'DB1.example.com', service: 'db1' }, { sni: '*.example.com', alpn: ['postgresql'], service: 'db2' }, { service: 'fallback' }],
        timeouts: { preread: '2s' },
        acceptProxy: { trusted: ['127.0.0.1/32'] },
      },
      { name: 'web', bind: '80', mode: 'http', service: 'db1', acceptProxy: { trusted: ['10.0.0.0/8'], untrusted: 'ignore' } },
    ],
    services: { db1: {}, db2: {}, fallback: {} },
  });
  const edge = c.listeners[0]!;
  t.equal(edge.mode, 'tcp');
  t.equal(edge.service, '', 'no listener service: the routes name them');
  t.same(edge.routes.map((r) => [r.sni, r.alpn, r.service]), [['db1.example.com', undefined, 'db1'], ['*.example.com', ['postgresql'], 'db2'], [undefined, undefined, 'fallback']]);
  t.equal(edge.timeouts.preread, 2000);
  t.same(edge.acceptProxy, { trusted: ['127.0.0.1/32'], untrusted: 'refuse' });
  t.same(c.listeners[1]!.acceptProxy, { trusted: ['10.0.0.0/8'], untrusted: 'ignore' });
  t.equal(c.listeners[1]!.timeouts.preread, 5000, 'default 5s');
  t.equal(c.services.get('db2')!.balance, 'least-conn', 'a service an sni route names takes the tcp default');
  const errs = issues(() =>
    validateConfig({
      listeners: [
        { bind: '1', mode: 'tcp' },
        { bind: '2', routes: [{ host: 'a.example', service: 'x' }, { alpn: ['h2'], service: 'x' }] },
        { bind: '3', mode: 'http', routes: [{ sni: 'a.example', service: 'x' }] },
        { bind: '4', routes: [{ sni: 'a.example', service: 'x' }], tls: { cert: '/c', key: '/k' } },
        { bind: '5', service: 'x', acceptProxy: { trusted: [] } },
        { bind: '6', service: 'x', acceptProxy: { trusted: ['nope'], untrusted: 'maybe' } },
        { bind: '7', service: 'x', acceptProxy: { trusted: ['10.0.0.0/8'] }, tls: { cert: '/c', key: '/k' } },
        { bind: '8', routes: [{ sni: 'bad name', service: 'x' }] },
      ],
      services: { x: {} },
    }),
  );
  t.same(errs, [
    'listeners[4].acceptProxy.trusted: expected at least one address or CIDR',
    'listeners[5].acceptProxy.trusted[0]: expected an IP address or CIDR such as 10.0.0.0/8',
    'listeners[5].acceptProxy.untrusted: expected refuse or ignore',
    'listeners[7].routes[0].sni: expected a host name, "*.suffix" or [ipv6]',
  ]);
  const cross = issues(() =>
    validateConfig({
      listeners: [
        { bind: '1', mode: 'tcp' },
        { bind: '2', routes: [{ host: 'a.example', service: 'x' }, { alpn: ['h2'], service: 'x' }] },
        { bind: '3', mode: 'http', routes: [{ sni: 'a.example', service: 'x' }] },
        { bind: '4', routes: [{ sni: 'a.example', service: 'x' }], tls: { cert: '/c', key: '/k' } },
        { bind: '7', service: 'x', acceptProxy: { trusted: ['10.0.0.0/8'] }, tls: { cert: '/c', key: '/k' } },
      ],
      services: { x: {} },
    }),
  );
  t.same(cross, [
    'listeners[0].service: a tcp listener needs a service, routes by sni, or docker discovery (berth.tls.sni labels)',
    'listeners[1].routes[0]: host and pathPrefix are for http listeners; a tcp route takes sni (and alpn)',
    'listeners[1].routes[1].alpn: alpn goes with sni',
    'listeners[2].routes[0]: sni and alpn are for tcp listeners (TLS passthrough); an http route takes host and pathPrefix',
    'listeners[3].routes: sni routes pass TLS through unterminated; a listener with tls terminates it (route by SNI with tls.sni certificates instead)',
  ]);
});

t.test('udp listeners: defaults, bounds, and what is not for them', async (t) => {
  const c = validateConfig({ listeners: [{ name: 'dns', bind: '53', mode: 'udp', service: 'dns', udp: { responses: 1 } }, { name: 'dns-tcp', bind: '53', service: 'dns' }], services: { dns: {} } });
  const u = c.listeners[0]!;
  t.equal(u.mode, 'udp');
  t.same(u.mode === 'udp' ? u.udp : null, { idleTimeout: 60_000, maxSessions: 1024, responses: 1, requests: 0 });
  t.equal(c.services.get('dns')!.balance, 'least-conn');
  t.equal(c.listeners.length, 2, '53/udp and 53/tcp are two listeners, no clash');
  const cross = issues(() =>
    validateConfig({
      listeners: [
        { bind: '1', mode: 'udp' },
        { bind: '2', mode: 'udp', service: 'x', routes: [{ sni: 'a.example', service: 'x' }], proxyProtocol: 'v1', acceptProxy: { trusted: ['10.0.0.0/8'] }, maxConnections: 5 },
        { bind: '3', mode: 'udp', service: 'x', udp: { maxSessions: 0 } },
        { bind: '4', mode: 'udp', service: 'x' },
        { bind: '4', mode: 'udp', service: 'x' },
      ],
      services: { x: {} },
    }),
  );
  t.same(cross, ['listeners[2].udp.maxSessions: Too small: expected number to be >=1']);
  const cross2 = issues(() =>
    validateConfig({
      listeners: [
        { bind: '1', mode: 'udp' },
        { bind: '2', mode: 'udp', service: 'x', routes: [{ sni: 'a.example', service: 'x' }], proxyProtocol: 'v1', acceptProxy: { trusted: ['10.0.0.0/8'] }, maxConnections: 5 },
        { bind: '4', mode: 'udp', service: 'x' },
        { bind: '4', mode: 'udp', service: 'x' },
      ],
      services: { x: {} },
    }),
  );
  t.same(cross2, [
    'listeners[0].service: a udp listener needs a service',
    'listeners[1].routes: routes is not for udp listeners (datagrams, sessions by client address)',
    'listeners[1].proxyProtocol: proxyProtocol is not for udp listeners (datagrams, sessions by client address)',
    'listeners[1].maxConnections: maxConnections is not for udp listeners (datagrams, sessions by client address)',
    'listeners[3].bind: udp 0.0.0.0:4 is already bound by listeners[2]',
  ]);
});

t.test('flags build a config and errors name the flag', async (t) => {
  const c = configFromFlags({ listen: ['127.0.0.1:0'], backend: ['127.0.0.1:1', '127.0.0.1:2,weight=2'], balance: 'random' });
  t.equal(c.services.get('default')!.balance, 'random');
  t.equal(c.services.get('default')!.endpoints.length, 2);
  t.same(issues(() => configFromFlags({ listen: ['x'], backend: ['a:1', 'b'], balance: 'nope', admin: 'bad admin' })), [
    '--listen: expected [host:]port, got "x"',
    '--balance: expected one of round-robin, least-conn, p2c, source-hash, random',
    '--backend[1]: expected host:port[,weight=N], got "b"',
    '--admin: expected [host:]port, got "bad admin"',
  ]);
  t.match(issues(() => configFromFlags({ listen: [], backend: [] })), [/^--listen: /, /^--backend: /]);
  // --swarm is discovery of its own (it needs no --backend); --docker-host names its engine.
  const swarm = configFromFlags({ listen: ['127.0.0.1:0'], backend: [], swarm: true, dockerHost: 'tcp://127.0.0.1:2375' });
  t.match(swarm.discovery.swarm, { host: 'tcp://127.0.0.1:2375' });
  t.equal(swarm.discovery.docker, null, '--docker-host with --swarm does not also turn on container discovery');
  const both = configFromFlags({ listen: ['127.0.0.1:0'], backend: [], swarm: true, docker: true });
  t.ok(both.discovery.swarm !== null && both.discovery.docker !== null, '--docker --swarm: both');
});

t.test('admin: off as a plain string, as --admin off; anything else is named', async (t) => {
  t.equal(validateConfig({ ...good, admin: 'off' }).admin, null);
  t.equal(validateConfig({ ...good, admin: { bind: 'off' } }).admin, null);
  t.match(issues(() => validateConfig({ ...good, admin: 'on' })), [/^admin: /]);
});

t.test('YAML and JSON files; syntax errors; overrides', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'berth-config-'));
  const yml = join(dir, 'c.yaml');
  await writeFile(yml, 'listeners:\n  - bind: 127.0.0.1:0\n    service: web\nservices:\n  web:\n    endpoints: ["127.0.0.1:1"]\n');
  const c = await loadConfigFile(yml, { balance: 'p2c', admin: '127.0.0.1:9999' });
  t.equal(c.services.get('web')!.balance, 'p2c');
  t.same(c.admin, { host: '127.0.0.1', port: 9999 });
  const json = join(dir, 'c.json');
  await writeFile(json, JSON.stringify(good));
  t.equal((await loadConfigFile(json)).listeners[0]!.name, 'web');
  const broken = join(dir, 'broken.yaml');
  await writeFile(broken, 'listeners: [\n  bind: x\n');
  await t.rejects(loadConfigFile(broken), { code: 'BERTH_ERR_CONFIG_READ' });
  await t.rejects(loadConfigFile(join(dir, 'missing.yaml')), { code: 'BERTH_ERR_CONFIG_READ' });
  const dup = join(dir, 'dup.yaml');
  await writeFile(dup, 'listeners: []\nlisteners: []\n');
  await t.rejects(loadConfigFile(dup), { code: 'BERTH_ERR_CONFIG_READ' });
});

t.test('tls, proxyProtocol and upstreamTls: accepted and checked', async (t) => {
  const c = validateConfig({
    listeners: [
      { name: 'a', bind: '1', service: 's', proxyProtocol: 'v2', tls: { cert: '/c.pem', key: '/k.pem', clientCa: '/ca.pem', allow: ['URI:spiffe://shop/x', 'DNS:*.internal', 'CN=billing'] } },
      { name: 'b', bind: '2', mode: 'http', service: 's', tls: { cert: '/c.pem', key: '/k.pem', minVersion: 'TLSv1.3', sni: [{ cert: '/a.pem', key: '/a-key.pem' }] } },
    ],
    services: { s: { upstreamTls: { ca: '/ca.pem', cert: '/c.pem', key: '/k.pem', serverName: 'web.internal' } } },
  });
  t.equal(c.listeners[0]!.proxyProtocol, 'v2');
  t.equal(c.listeners[0]!.tls?.minVersion, 'TLSv1.2', 'TLS 1.2 minimum by default');
  t.equal(c.listeners[1]!.tls?.minVersion, 'TLSv1.3');
  t.equal(c.services.get('s')!.upstreamTls?.serverName, 'web.internal');
  const errs = issues(() =>
    validateConfig({
      listeners: [
        { bind: '1', service: 's', tls: { cert: '/c.pem', key: '/k.pem', allow: ['URI:spiffe://x'] } },
        { bind: '2', service: 's', tls: { cert: '/c.pem', key: '/k.pem', clientCa: '/ca', allow: ['spiffe://x'], minVersion: 'TLSv1.1' } },
        { bind: '3', mode: 'http', service: 's', proxyProtocol: 'v2' },
      ],
      services: { s: { upstreamTls: { cert: '/c.pem' } } },
    }),
  );
  t.match(errs, [
    /listeners\[0\]\.tls\.allow: allow needs clientCa/,
    /listeners\[1\]\.tls\.allow\[0\]: expected URI:<uri>, DNS:<name or \*\.suffix> or CN=<name>/,
    /listeners\[1\]\.tls\.minVersion: expected TLSv1\.2 or TLSv1\.3/,
  ]);
  const cross = issues(() => validateConfig({ listeners: [{ bind: '3', mode: 'http', service: 's', proxyProtocol: 'v2' }], services: { s: { upstreamTls: { cert: '/c.pem' } } } }));
  t.same(cross, ['listeners[0].proxyProtocol: PROXY protocol is for tcp listeners (http listeners send X-Forwarded-*)', 'services.s.upstreamTls: cert and key go together']);
});

t.test('hardening defaults: outlier detection on (off with "off"), replay opt-in, handshake timeout, connection cap', async (t) => {
  const c = validateConfig({ listeners: [{ bind: '127.0.0.1:0', service: 'web', tls: undefined }], services: { web: { endpoints: ['127.0.0.1:1'] }, quiet: { endpoints: ['127.0.0.1:2'], outlier: 'off', replay: true } } });
  t.match(c.services.get('web')!.outlier, { consecutiveFailures: 5, ejectFor: 1000, maxEjectFor: 30_000 }, 'a peer that keeps refusing leaves the pick set by default, briefly at first');
  t.equal(c.services.get('web')!.replay, false, 'no replay after an accepted connection unless asked for');
  t.equal(c.services.get('quiet')!.outlier, undefined);
  t.equal(c.services.get('quiet')!.replay, true);
  t.equal(c.listeners[0]!.timeouts.handshake, 10_000, 'the handshake bound defaults to the headers timeout');
  t.equal(c.listeners[0]!.maxConnections, 0);
  const d = validateConfig({ listeners: [{ bind: '127.0.0.1:0', service: 'web', timeouts: { headers: '3s', handshake: '2s' }, maxConnections: 500 }], services: { web: {} } });
  t.equal(d.listeners[0]!.timeouts.handshake, 2000);
  t.equal(d.listeners[0]!.maxConnections, 500);
  t.throws(() => validateConfig({ listeners: [{ bind: '127.0.0.1:0', service: 'web', maxConnections: -1 }], services: { web: {} } }), /listeners\[0\]\.maxConnections/);
  t.throws(() => validateConfig({ listeners: [{ bind: '127.0.0.1:0', service: 'web' }], services: { web: { outlier: 'sometimes' } } }), /services\.web\.outlier: expected off/);
  const discovered = validateConfig({ listeners: [{ bind: '127.0.0.1:0', service: 'found' }], services: {}, discovery: { docker: {} } });
  t.match(discovered.services.get('found')!.outlier, { consecutiveFailures: 5 }, 'discovered services get it too');
});

t.test('health checks for udp pools: dns and send-expect, each field for its type only', async (t) => {
  const c = validateConfig({
    listeners: [
      { name: 'dns', bind: '53', mode: 'udp', service: 'dns' },
      { name: 'game', bind: '7777', mode: 'udp', service: 'game' },
      { name: 'redis', bind: '6379', service: 'redis' },
    ],
    services: {
      dns: { health: { type: 'dns', query: 'health.example', interval: '5s' } },
      game: { health: { type: 'send-expect', sendHex: 'ff00', receive: 'pong' } },
      redis: { health: { type: 'send-expect', send: 'PING\r\n', receive: '+PONG' } },
    },
  });
  t.match(c.services.get('dns')!.health, { type: 'dns', query: 'health.example', interval: 5000 });
  t.match(c.services.get('game')!.health, { type: 'send-expect', sendHex: 'ff00', receive: 'pong' });
  // The transport: as said, else the endpoint's port kind, else udp where a udp listener sends.
  const h = c.services.get('game')!.health!;
  t.same(
    [sendExpectProtocol(h, undefined, true), sendExpectProtocol(h, undefined, false), sendExpectProtocol(h, 'udp', false), sendExpectProtocol(h, 'tcp', true), sendExpectProtocol({ ...h, protocol: 'tcp' }, 'udp', true)],
    ['udp', 'tcp', 'udp', 'tcp', 'tcp'],
  );
  const bad = issues(() =>
    validateConfig({
      listeners: [{ bind: '1', mode: 'udp', service: 'a' }],
      services: {
        a: { health: { type: 'dns' } },
        b: { health: { type: 'send-expect' } },
        c: { health: { type: 'send-expect', send: 'x', sendHex: '00', receive: 'y', receiveHex: '01' } },
        d: { health: { type: 'tcp', query: 'x.example', send: 'x', host: 'h' } },
        e: { health: { type: 'send-expect', sendHex: 'abc' } },
        f: { health: { type: 'dns', query: 'x.example', queryType: 'ANY' } },
        g: { health: { type: 'ping' } },
        h: { health: { type: 'dns', query: 'a..example' } },
        i: { health: { type: 'tcp', queryType: 'A' } },
        j: { health: { type: 'http', service: 'api.v1.Users' } },
      },
    }),
  );
  t.same(bad, [
    'services.a.health.query: a dns check needs the name to ask for',
    'services.b.health.send: a send-expect check needs send or sendHex (one of them)',
    'services.c.health.send: a send-expect check needs send or sendHex (one of them)',
    'services.c.health.receive: receive or receiveHex, not both',
    'services.d.health.query: query is for dns checks, not tcp',
    'services.d.health.send: send is for send-expect checks, not tcp',
    'services.d.health.host: host is for http checks, not tcp',
    'services.e.health.sendHex: expected bytes as hex digits, two per byte',
    'services.f.health.queryType: expected one of A, AAAA, CNAME, MX, NS, PTR, SOA, SRV, TXT',
    'services.g.health.type: expected tcp, http, grpc, dns or send-expect',
    'services.h.health.query: expected a domain name (labels of 1 to 63 letters, digits, "-" or "_", 253 characters in all)',
    'services.i.health.queryType: queryType is for dns checks, not tcp',
    'services.j.health.service: service is for grpc checks, not http',
  ]);
});

t.test('httpVersion: 1.1 (default) or 2, as a number or a string; a gRPC service behind an http listener needs 2', async (t) => {
  const c = validateConfig({ listeners: [{ bind: '1', mode: 'http', service: 'a' }], services: { a: { httpVersion: 2 }, b: { httpVersion: '2' }, c: { httpVersion: 1.1 }, d: {} } });
  t.same(['a', 'b', 'c', 'd'].map((n) => c.services.get(n)!.httpVersion), ['2', '2', '1.1', '1.1']);
  t.same(issues(() => validateConfig({ listeners: [{ bind: '1', mode: 'http', service: 'a' }], services: { a: { httpVersion: 3 } } })), ['services.a.httpVersion: expected 1.1 or 2']);
  t.same(issues(() => validateConfig({ listeners: [{ bind: '1', mode: 'http', service: 'a' }], services: { a: { health: { type: 'grpc' } } } })), ['services.a.httpVersion: a gRPC service (health type grpc) behind an http listener needs httpVersion: 2: gRPC does not run over HTTP/1.1']);
  t.doesNotThrow(() => validateConfig({ listeners: [{ bind: '1', service: 'a' }], services: { a: { health: { type: 'grpc' } } } }), 'behind a tcp listener: any');
});

t.test('http2: on by default for http listeners, off with false; only for http listeners; h2 in tls.alpn needs it', async (t) => {
  const c = validateConfig({ listeners: [{ bind: '1', mode: 'http', service: 'a' }, { bind: '2', mode: 'http', service: 'a', http2: false }, { bind: '3', service: 'a' }], services: { a: {} } });
  t.same(
    c.listeners.map((l) => l.http2),
    [H2_FRONT_NODE, false, false],
    'on by default on Node 24',
  );
  if (!H2_FRONT_NODE) t.match(issues(() => validateConfig({ listeners: [{ bind: '1', mode: 'http', service: 'a', http2: true }], services: { a: {} } })), [/^listeners\[0\]\.http2: HTTP\/2 from clients needs Node 24/]);
  t.same(issues(() => validateConfig({ listeners: [{ bind: '1', service: 'a', http2: true }], services: { a: {} } })), ['listeners[0].http2: http2 is for http listeners']);
  t.same(issues(() => validateConfig({ listeners: [{ bind: '1', mode: 'http', service: 'a', http2: 'yes' }], services: { a: {} } })), ['listeners[0].http2: Invalid input: expected boolean, received string']);
  t.same(
    issues(() => validateConfig({ listeners: [{ bind: '1', mode: 'http', service: 'a', http2: false, tls: { cert: 'c', key: 'k', alpn: ['h2', 'http/1.1'] } }], services: { a: {} } })),
    ['listeners[0].tls.alpn: h2 offered with http2: false: clients would speak HTTP/2 to a listener that does not'],
  );
});

t.test('grpc checks: the service asked about, "" (the whole server) unless said', async (t) => {
  const c = validateConfig({ listeners: [{ bind: '1', service: 'api' }], services: { api: { health: { type: 'grpc', service: 'api.v1.Users' } }, b: { health: { type: 'grpc' } } } });
  t.match(c.services.get('api')!.health, { type: 'grpc', service: 'api.v1.Users', interval: 2000 });
  t.equal(c.services.get('b')!.health!.service, undefined);
});

t.test('a tcp listener without service or routes routes by berth.tls.sni labels alone, with docker or swarm discovery', async (t) => {
  const c = validateConfig({ listeners: [{ name: 'pg', bind: '5432', postgres: true }], discovery: { docker: {} } });
  t.equal(c.listeners[0]!.mode === 'tcp' ? c.listeners[0]!.service : null, '');
  t.same(issues(() => validateConfig({ listeners: [{ bind: '1', tls: { cert: '/c', key: '/k' } }], discovery: { docker: {} } })), ['listeners[0].service: a tcp listener with tls needs a service']);
});

t.test('the DNS interface: dns.bind, domain and ttl; --dns; bad values named', async (t) => {
  const c = validateConfig({ listeners: [{ bind: '1', service: 'x' }], services: { x: {} }, dns: { bind: '8600', domain: 'Mesh.Example.' } });
  t.same(c.dns, { bind: { host: '127.0.0.1', port: 8600 }, domain: 'mesh.example.', ttl: 0 }, 'loopback by default, the domain lowercased');
  t.equal(validateConfig({ listeners: [{ bind: '1', service: 'x' }], services: { x: {} } }).dns, null, 'off unless asked for');
  t.same(configFromFlags({ listen: ['1'], backend: ['127.0.0.1:2'], dns: '0.0.0.0:53' }).dns, { bind: { host: '0.0.0.0', port: 53 }, domain: 'berth.', ttl: 0 });
  t.same(
    issues(() => validateConfig({ listeners: [{ bind: '1', service: 'x' }], services: { x: {} }, dns: { bind: '8600', domain: 'berth', ttl: -1 } })),
    ['dns.domain: expected a domain ending in "." (e.g. berth.)', 'dns.ttl: Too small: expected number to be >=0'],
  );
  t.throws(() => configFromFlags({ listen: ['1'], backend: ['127.0.0.1:2'], dns: 'nope:port' }), /--dns/);
});
