// Lint rules, including the module dependency direction of ARCHITECTURE.md for every
// folder: core <- balancer <- pool <- proxy; discovery, health, config and tls import
// core; metrics reads core and the pool; only the composition root (main.ts, runtime/;
// cluster/ wraps runtime/) wires everything together; only metrics/ imports prom-client, only
// discovery/docker/client.ts dockerode, only tls/certs.ts node-forge, only
// proxy/http/ undici; only src/pool imports the writable MutableEndpoint. Where
// Clock and Random are injected (balancer, pool, proxy), Date.now, Math.random and
// raw timers are refused.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** Endpoint state is written by the pool alone: its writable class stays inside src/pool. */
const poolOnly = {
  group: ['**/pool/endpoint.js'],
  importNames: ['MutableEndpoint'],
  message: 'only src/pool writes endpoint state: use the read-only EndpointState and the Pool methods',
};
const restrict = (patterns, paths = [], inPool = false) => ({
  'no-restricted-imports': ['error', { patterns: inPool ? patterns : [...patterns, poolOnly], paths }],
});
const third = [
  { name: 'prom-client', message: 'only src/metrics imports prom-client' },
  { name: 'dockerode', message: 'only src/discovery/docker imports dockerode' },
  { name: 'node-forge', message: 'only src/tls/certs.ts imports node-forge' },
  { name: 'undici', message: 'only src/proxy/http/ imports undici' },
];
const thirdBut = (name) => third.filter((t) => t.name !== name);
/** Time and randomness are injected here (Clock, Random): the real ones are not called directly. */
const noAmbientTimeOrRandom = {
  'no-restricted-properties': [
    'error',
    { object: 'Date', property: 'now', message: 'use the injected Clock (pool.clock / deps.clock)' },
    { object: 'Math', property: 'random', message: 'use the injected Random' },
  ],
  // Timers run on the injected clock (Clock.after / cancel), so tests drive them.
  'no-restricted-globals': [
    'error',
    ...['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval'].map((name) => ({ name, message: 'use the injected Clock (after / cancel)' })),
  ],
};
const onlyCore = () => ({
  group: ['../*', '!../core'],
  message: 'this layer may import only src/core (see ARCHITECTURE.md)',
});

export default tseslint.config(
  // docs/research: measurement scripts kept as they were run (CommonJS, python), not part of berth.
  { ignores: ['dist/**', 'node_modules/**', '.tap/**', 'coverage/**', 'bench/out/**', 'docs/research/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: { fetch: 'readonly', process: 'readonly', console: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', setImmediate: 'readonly', Buffer: 'readonly', URL: 'readonly' },
    },
    rules: {
      ...restrict([]),
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-console': 'off',
    },
  },
  {
    files: ['src/core/**/*.ts'],
    rules: restrict([{ group: ['../*', '!../core'], message: 'src/core imports nothing else from src' }, { group: ['pino', 'yargs'], message: 'src/core does no I/O' }], third),
  },
  {
    files: ['src/balancer/**/*.ts'],
    rules: { ...restrict([onlyCore()], third), ...noAmbientTimeOrRandom },
  },
  {
    files: ['src/config/**/*.ts', 'src/health/**/*.ts'],
    rules: restrict([onlyCore()], third),
  },
  {
    // The checker's intervals run on the injected clock (the probes' own timeouts are I/O, at the edge).
    files: ['src/health/checker.ts'],
    rules: { ...restrict([onlyCore()], third), ...noAmbientTimeOrRandom },
  },
  {
    files: ['src/discovery/*.ts'],
    rules: restrict([{ group: ['../*', '!../core', '!../log.js'], message: 'discovery imports only src/core' }], third),
  },
  {
    files: ['src/pool/**/*.ts'],
    rules: { ...restrict([{ group: ['../*', '!../core', '!../balancer', '!../log.js'], message: 'pool imports core and balancer only' }], third, true), ...noAmbientTimeOrRandom },
  },
  {
    files: ['src/proxy/*.ts'],
    rules: { ...restrict([{ group: ['../*', '!../core', '!../balancer', '!../pool', '!../log.js'], message: 'proxy imports core, balancer and pool only' }], third), ...noAmbientTimeOrRandom },
  },
  {
    // A mode's folder (proxy/tcp, later udp ...): the proxy modules beside it, core, balancer and pool.
    files: ['src/proxy/*/**/*.ts'],
    ignores: ['src/proxy/http/**/*.ts'],
    rules: { ...restrict([{ group: ['../../*', '!../../core', '!../../balancer', '!../../pool', '!../../log.js'], message: 'proxy imports core, balancer and pool only' }], third), ...noAmbientTimeOrRandom },
  },
  {
    files: ['src/proxy/http/**/*.ts'],
    rules: { ...restrict([{ group: ['../../*', '!../../core', '!../../balancer', '!../../pool', '!../../log.js'], message: 'proxy imports core, balancer and pool only' }], thirdBut('undici')), ...noAmbientTimeOrRandom },
  },
  {
    // Docker discovery: core, the logger and the discovery helpers beside it; dockerode only in client.ts.
    files: ['src/discovery/docker/**/*.ts'],
    ignores: ['src/discovery/docker/client.ts'],
    rules: restrict([{ group: ['../../*', '!../../core', '!../../log.js'], message: 'discovery/docker imports only src/core and the logger' }], third),
  },
  {
    // The container provider's reconnect backoff runs on the injected clock and random.
    files: ['src/discovery/docker/provider.ts'],
    rules: { ...restrict([{ group: ['../../*', '!../../core', '!../../log.js'], message: 'discovery/docker imports only src/core and the logger' }], third), ...noAmbientTimeOrRandom },
  },
  {
    files: ['src/discovery/docker/client.ts'],
    rules: restrict([{ group: ['../../*', '!../../core', '!../../log.js'], message: 'discovery/docker imports only src/core and the logger' }], thirdBut('dockerode')),
  },
  {
    // TLS: core and the logger; node-forge only in certs.ts.
    files: ['src/tls/**/*.ts'],
    ignores: ['src/tls/certs.ts'],
    rules: restrict([{ group: ['../*', '!../core', '!../log.js'], message: 'tls imports only src/core and the logger' }], third),
  },
  {
    files: ['src/tls/certs.ts'],
    rules: restrict([{ group: ['../*', '!../core', '!../log.js'], message: 'tls imports only src/core and the logger' }], thirdBut('node-forge')),
  },
  {
    // Metrics: reads core types and the pool; the only prom-client import.
    files: ['src/metrics/**/*.ts'],
    rules: restrict([{ group: ['../*', '!../core', '!../pool', '!../log.js'], message: 'metrics imports core and pool only' }], thirdBut('prom-client')),
  },
  {
    // The runtime wires every layer, but never the cluster that wraps it.
    files: ['src/runtime/**/*.ts'],
    rules: restrict([{ group: ['../cluster/*'], message: 'runtime does not know about the cluster: cluster/ wraps runtime/' }], third),
  },
  {
    // The cluster wraps the runtime: it starts Berth instances and passes messages, it does not proxy or discover itself.
    files: ['src/cluster/**/*.ts'],
    rules: restrict([{ group: ['../*', '!../runtime', '!../config', '!../core', '!../pool', '!../metrics', '!../log.js'], message: 'cluster imports runtime, config, core, pool and metrics only' }], third),
  },
  {
    // The DNS interface reads the pool through the view the runtime hands it: core and the logger only.
    files: ['src/resolver/**/*.ts'],
    rules: restrict([{ group: ['../*', '!../core', '!../log.js'], message: 'resolver imports core (and the logger) only: the runtime hands it the pool view' }], third),
  },
  {
    files: ['src/admin/**/*.ts', 'src/cli/**/*.ts', 'src/log.ts'],
    rules: restrict([], third),
  },
);
