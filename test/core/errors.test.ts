import { readFileSync } from 'node:fs';
import t from 'tap';
import { BerthError, ConfigError, ErrorCodes } from '../../src/core/errors.js';

t.test('docs/errors.md lists exactly the codes of the catalogue', async (t) => {
  const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
  const documented = [...doc.matchAll(/^\| `(BERTH_ERR_[A-Z_]+)` \|/gm)].map((m) => m[1]).sort();
  t.same(documented, Object.keys(ErrorCodes).sort());
});

t.test('coded errors carry their code and every issue', async (t) => {
  const e = new ConfigError([
    { path: 'listeners[0].bind', message: 'expected host:port' },
    { path: '', message: 'root problem' },
  ]);
  t.ok(e instanceof BerthError);
  t.equal(e.code, 'BERTH_ERR_CONFIG');
  t.equal(e.message, 'listeners[0].bind: expected host:port\nroot problem');
});
