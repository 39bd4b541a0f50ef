import t from 'tap';
import { decideReusePort, nodeHasReusePort } from '../../src/cluster/reuse-port.js';

t.test('node has the reusePort listen option from 22.12 and 23.1 on', async (t) => {
  t.same(
    ['20.20.2', '22.11.0', '22.12.0', '23.0.0', '23.1.0', '24.22.3'].map(nodeHasReusePort),
    [false, false, true, false, true, true],
  );
});

t.test('auto: a socket per worker only where the kernel migrates a dying socket\'s waiting connections', async (t) => {
  const linux24 = { node: '24.22.3', platform: 'linux' };
  t.same(decideReusePort('auto', { ...linux24, migrateReq: '1\n' }), { perWorker: true, why: "net.ipv4.tcp_migrate_req is 1: a dying worker's waiting connections go to the others", warn: false });
  const off = decideReusePort('auto', { ...linux24, migrateReq: '0\n' });
  t.equal(off.perWorker, false);
  t.match(off.why, /tcp_migrate_req is not 1.*set it to 1 \(sysctl\) or use --reuse-port on/);
  t.equal(off.warn, false, 'a safe default is no warning');
  t.equal(decideReusePort('auto', { ...linux24, migrateReq: null }).perWorker, false, 'unknown (no /proc): shared');
});

t.test('on: per worker even without migration, with a warning; impossible: shared, saying what is missing', async (t) => {
  const on = decideReusePort('on', { node: '24.22.3', platform: 'linux', migrateReq: '0' });
  t.same([on.perWorker, on.warn], [true, true]);
  t.match(on.why, /resets the connections waiting in its accept queue/);
  const old = decideReusePort('on', { node: '20.20.2', platform: 'linux', migrateReq: '1' });
  t.same([old.perWorker, old.warn], [false, true]);
  t.equal(old.why, 'a socket per worker needs node 22.12 or later (this is 20.20.2)');
  t.match(decideReusePort('on', { node: '24.1.0', platform: 'darwin', migrateReq: null }).why, /Linux only \(this is darwin\)/);
  t.same(decideReusePort('off', { node: '24.1.0', platform: 'linux', migrateReq: '1' }), { perWorker: false, why: '--reuse-port off', warn: false });
});
