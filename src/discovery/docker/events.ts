import type { DockerEvent } from './types.js';

/**
 * Reads the engine's event stream (one JSON object per line, lines split across
 * chunks) and hands each event to `onEvent`; a line that is not JSON goes to `onBad`.
 */
export function onEventLines(stream: NodeJS.ReadableStream, onEvent: (ev: DockerEvent) => void, onBad: (line: string) => void): void {
  let buf = '';
  stream.on('data', (chunk: Buffer | string) => {
    buf += chunk.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (line === '') continue;
      let ev: DockerEvent;
      try {
        ev = JSON.parse(line) as DockerEvent;
      } catch {
        onBad(line);
        continue;
      }
      onEvent(ev);
    }
  });
}
