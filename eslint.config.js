// Lint rules, including the module dependency direction of ARCHITECTURE.md:
// core <- balancer <- pool <- proxy; discovery, health and config import core;
// only main.ts (the composition root) wires everything together; only
// metrics/ imports prom-client, only discovery/docker imports dockerode and
// only tls/certs.ts imports node-forge.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const restrict = (patterns, paths = []) => ({
  'no-restricted-imports': ['error', { patterns, paths }],
});
const third = [
  { name: 'prom-client', message: 'only src/metrics imports prom-client' },
  { name: 'dockerode', message: 'only src/discovery/docker imports dockerode' },
  { name: 'node-forge', message: 'only src/tls/certs.ts imports node-forge' },
  { name: 'undici', message: 'only src/proxy/http*.ts imports undici' },
];
const thirdBut = (name) => third.filter((t) => t.name !== name);
const onlyCore = () => ({
  group: ['../*', '!../core'],
  message: 'this layer may import only src/core (see ARCHITECTURE.md)',
});

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.tap/**', 'coverage/**', 'bench/out/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: { fetch: 'readonly', process: 'readonly', console: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', setImmediate: 'readonly', Buffer: 'readonly', URL: 'readonly' },
    },
    rules: {
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
    rules: restrict([onlyCore()], third),
  },
  {
    files: ['src/config/**/*.ts', 'src/health/**/*.ts'],
    rules: restrict([onlyCore()], third),
  },
  {
    files: ['src/discovery/*.ts'],
    rules: restrict([{ group: ['../*', '!../core', '!../log.js'], message: 'discovery imports only src/core' }], third),
  },
  {
    files: ['src/pool/**/*.ts'],
    rules: restrict([{ group: ['../*', '!../core', '!../balancer', '!../log.js'], message: 'pool imports core and balancer only' }], third),
  },
  {
    files: ['src/proxy/**/*.ts'],
    ignores: ['src/proxy/http*.ts'],
    rules: restrict([{ group: ['../*', '!../core', '!../balancer', '!../pool', '!../log.js'], message: 'proxy imports core, balancer and pool only' }], third),
  },
  {
    files: ['src/proxy/http*.ts'],
    rules: restrict([{ group: ['../*', '!../core', '!../balancer', '!../pool', '!../log.js'], message: 'proxy imports core, balancer and pool only' }], thirdBut('undici')),
  },
  {
    files: ['src/admin/**/*.ts', 'src/cli/**/*.ts', 'src/log.ts'],
    rules: restrict([], third),
  },
);
