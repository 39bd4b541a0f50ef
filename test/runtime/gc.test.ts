import t from 'tap';
import { gcTuning, gcTuningFor } from '../../src/runtime/gc.js';
import { startBerth } from '../helpers/net.js';

t.test('which V8 gets the flag', async (t) => {
  t.same(gcTuningFor('13.6.233.17-node.41', 'v24.22.3'), { apply: true, why: '' }, 'node 24: set, nothing to say');
  t.same(gcTuningFor('14.1.146.11-node.14', 'v25.2.0'), { apply: false, why: '' }, 'newer: V8 does it itself');
  const n22 = gcTuningFor('12.4.254.21-node.33', 'v22.21.1');
  t.equal(n22.apply, false, 'node 22: not set');
  t.match(n22.why, /V8 12\.4\.254\.21-node\.33 \(node v22\.21\.1\) lacks --external-memory-accounted-in-global-limit/);
  t.equal(gcTuningFor('11.3.244.8-node.30', 'v20.20.2').apply, false, 'node 20: not set');
});

t.test('berth says at start, in one line, when this node lacks it, and is silent where it has it', async (t) => {
  const b = await startBerth(['run', '--listen', '127.0.0.1:0', '--backend', '127.0.0.1:9', '--admin', 'off']);
  t.teardown(() => b.kill('SIGKILL'));
  // berth is this node (process.execPath): the same V8 as this test.
  const lines = b.logs.filter((l) => typeof l.msg === 'string' && l.msg.includes('--external-memory-accounted-in-global-limit'));
  if (gcTuning.why === '') t.equal(lines.length, 0, `node ${process.version}: nothing said`);
  else {
    t.equal(lines.length, 1, `node ${process.version}: one line`);
    t.match(lines[0]!.msg, /lacks .*node 24 has it/);
  }
});
