/**
 * --log-format auto (the default): pretty lines for a person at a terminal, JSON for
 * everything else (a container, a pipe, a file). The built logger, in a child whose
 * stdout is a pipe that says it is, or is not, a terminal.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import t from 'tap';

const LOG = pathToFileURL(fileURLToPath(new URL('../../dist/log.js', import.meta.url))).href;

function logLine(format: string, tty: boolean): Promise<string> {
  const code = `${tty ? 'process.stdout.isTTY = true;' : ''} const { createLogger } = await import(${JSON.stringify(LOG)}); createLogger('info', ${JSON.stringify(format)}).info({ a: 1 }, 'hello there');`;
  return new Promise((resolve, reject) =>
    execFile(process.execPath, ['--input-type=module', '-e', code], { timeout: 20_000 }, (err, stdout) => (err ? reject(err) : resolve(stdout))),
  );
}

t.test('auto: pretty at a terminal, JSON otherwise; json and pretty as asked', async (t) => {
  const piped = await logLine('auto', false);
  t.match(JSON.parse(piped.trim()), { level: 30, msg: 'hello there', a: 1 }, 'a pipe gets JSON');
  const tty = await logLine('auto', true);
  t.match(tty, /INFO.*hello there/, 'a terminal gets a readable line');
  t.throws(() => JSON.parse(tty.trim()), 'not JSON');
  t.match(JSON.parse((await logLine('json', true)).trim()), { msg: 'hello there' }, 'json is json, terminal or not');
  t.match(await logLine('pretty', false), /INFO.*hello there/);
});
