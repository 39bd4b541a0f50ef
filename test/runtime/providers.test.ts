// The one path that starts, replaces and stops discovery providers, on fake kinds.
import t from 'tap';
import type { ProviderSnapshot } from '../../src/core/types.js';
import { ProviderRegistry, type Provider, type ProviderKind } from '../../src/discovery/provider.js';
import { Providers, type DiscoverySettings, type WantedProviders } from '../../src/runtime/providers.js';

function fakeKind(name: string, log: string[], fail: Set<string>): ProviderKind<unknown> {
  return {
    name,
    notSynced: `${name} not synced`,
    startError: (_s, err) => new Error(`${name} could not start: ${String(err)}`),
    create: (settings): Provider => {
      const tag = `${name}:${JSON.stringify(settings)}`;
      const p = {
        name,
        connected: true,
        synced: false,
        lastSyncAt: 0,
        skipped: [],
        start: async () => {
          log.push(`start ${tag}`);
          if (fail.has(tag)) throw new Error('refused');
          p.synced = true;
        },
        stop: () => log.push(`stop ${tag}`),
      };
      return p;
    },
  };
}

function rig() {
  const log: string[] = [];
  const fail = new Set<string>();
  const snaps: ProviderSnapshot[] = [];
  const registry = new ProviderRegistry<DiscoverySettings>()
    .define('docker', fakeKind('docker', log, fail) as ProviderKind<DiscoverySettings['docker']>)
    .define('swarm', fakeKind('swarm', log, fail) as ProviderKind<DiscoverySettings['swarm']>)
    .define('dns', fakeKind('dns', log, fail) as ProviderKind<DiscoverySettings['dns']>);
  const synced: string[] = [];
  const providers = new Providers(registry, (s) => snaps.push(s), (p) => synced.push(p.name));
  const want = (o: Partial<Record<'docker' | 'swarm' | 'dns', unknown>>): WantedProviders => ({ docker: null, swarm: null, dns: null, ...o }) as WantedProviders;
  return { log, fail, snaps, providers, want, synced };
}

t.test('every kind through one path: start, keep when unchanged, replace (new starts before old stops), remove (empty snapshot)', async (t) => {
  const { log, snaps, providers, want, synced } = rig();
  await providers.apply(want({ docker: { host: 'a' }, dns: [1] }));
  t.same(log, ['start docker:{"host":"a"}', 'start dns:[1]'], 'in registry order');
  t.same(synced, ['docker', 'dns']);
  t.same(
    providers.views().map((v) => [v.name, v.synced]),
    [
      ['docker', true],
      ['dns', true],
    ],
  );
  log.length = 0;
  await providers.apply(want({ docker: { host: 'a' }, dns: [1] }));
  t.same(log, [], 'unchanged settings: nothing restarted');
  await providers.apply(want({ docker: { host: 'b' }, dns: [1] }));
  t.same(log, ['start docker:{"host":"b"}', 'stop docker:{"host":"a"}'], 'the new one starts before the old one stops');
  t.same(snaps, [], 'a replaced provider empties nothing (its successor reports the same name)');
  log.length = 0;
  await providers.apply(want({ docker: { host: 'b' } }));
  t.same(log, ['stop dns:[1]']);
  t.same(
    snaps.map((s) => [s.provider, s.services.size]),
    [['dns', 0]],
    'a provider removed without a successor takes its endpoints with it',
  );
  t.equal(providers.get('dns'), null);
  providers.stopAll();
  t.same(log.at(-1), 'stop docker:{"host":"b"}');
});

t.test('a replacement that cannot start leaves the running provider in place, and the error is the kind\'s', async (t) => {
  const { log, fail, providers, want } = rig();
  await providers.apply(want({ swarm: { host: 'a' } }));
  fail.add('swarm:{"host":"b"}');
  await t.rejects(providers.apply(want({ swarm: { host: 'b' } })), /swarm could not start: Error: refused/);
  t.same(log, ['start swarm:{"host":"a"}', 'start swarm:{"host":"b"}', 'stop swarm:{"host":"b"}'], 'the failed one is stopped, the running one is not');
  t.ok(providers.get('swarm'), 'still running');
  t.same(providers.notSynced(), []);
});
