import t from 'tap';
import { gcTuningFor, semiSpaceMb } from '../../src/runtime/gc.js';
import { startBerth } from '../helpers/net.js';

t.test('which V8 and young generation get the flag', async (t) => {
  const small = 2;
  t.same(gcTuningFor('13.6.233.17-node.41', 'v24.22.3', small), { apply: true, why: '' }, "node 24, berth's nursery: set, nothing to say");
  t.same(gcTuningFor('14.1.146.11-node.14', 'v25.2.0', small), { apply: false, why: '' }, 'newer: V8 does it itself');
  const n22 = gcTuningFor('12.4.254.21-node.33', 'v22.21.1', small);
  t.equal(n22.apply, false, 'node 22: not set');
  t.match(n22.why, /V8 12\.4\.254\.21-node\.33 \(node v22\.21\.1\) lacks --external-memory-accounted-in-global-limit/);
  t.equal(gcTuningFor('11.3.244.8-node.30', 'v20.20.2', small).apply, false, 'node 20: not set');
  const plain = gcTuningFor('13.6.233.17-node.41', 'v24.22.3', undefined);
  t.equal(plain.apply, false, "node 24 with node's default young generation: not set");
  t.match(plain.why, /pays only with a small young generation .*node's default/);
  t.match(gcTuningFor('13.6.233.17-node.41', 'v24.22.3', 16).why, /this node has 16 MiB/);
  t.equal(gcTuningFor('13.6.233.17-node.41', 'v24.22.3', 1).apply, true);
});

t.test('the semi-space node was started with', async (t) => {
  t.equal(semiSpaceMb(['--max-semi-space-size=2', '--initial-heap-size=64']), 2, 'the shebang');
  t.equal(semiSpaceMb([], '--max_semi_space_size=4'), 4, 'NODE_OPTIONS');
  t.equal(semiSpaceMb(['--max-semi-space-size=2'], '--max-semi-space-size=16'), 16, 'NODE_OPTIONS comes after');
  t.equal(semiSpaceMb(['--inspect']), undefined);
});

for (const [how, flags] of [
  ['as the executable starts it (--max-semi-space-size=2)', ['--max-semi-space-size=2', '--initial-heap-size=64']],
  ['under plain node', []],
] as const) {
  t.test(`berth ${how} says in one line when it runs without the flag, and nothing when it sets it`, async (t) => {
    const b = await startBerth(['run', '--listen', '127.0.0.1:0', '--backend', '127.0.0.1:9', '--admin', 'off'], { nodeArgs: [...flags] });
    t.teardown(() => b.kill('SIGKILL'));
    // berth is this node (process.execPath): the same V8 as this test.
    const want = gcTuningFor(process.versions.v8, process.version, semiSpaceMb(flags, process.env['NODE_OPTIONS']));
    const lines = b.logs.filter((l) => typeof l.msg === 'string' && l.msg.includes('--external-memory-accounted-in-global-limit'));
    if (want.why === '') t.equal(lines.length, 0, `node ${process.version}: nothing said`);
    else t.same(lines.map((l) => l.msg), [want.why], `node ${process.version}: one line`);
  });
}
