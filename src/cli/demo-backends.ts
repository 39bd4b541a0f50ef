import net from 'node:net';

/**
 * Tiny endpoints for `berth demo`: each answers any HTTP request (or any line of
 * text, for nc users) with its own name, then closes. No dependencies, no Docker.
 */
export interface DemoBackend {
  readonly name: string;
  readonly port: number;
  close(): Promise<void>;
}

export async function startDemoBackend(name: string): Promise<DemoBackend> {
  const server = net.createServer((socket) => {
    let seen = '';
    socket.setTimeout(10_000, () => socket.destroy());
    socket.on('error', () => socket.destroy());
    socket.on('data', (chunk: Buffer) => {
      seen += chunk.toString('latin1');
      // An HTTP request head ends with a blank line; a plain text line with \n.
      const http = /^[A-Z]+ \S+ HTTP\/1\.[01]\r?\n/.test(seen);
      if (http ? !/\r?\n\r?\n/.test(seen) : !seen.includes('\n')) {
        if (seen.length > 16_384) socket.destroy();
        return;
      }
      // Behind berth's http listener the request carries X-Forwarded-For: say so.
      const xff = /\r?\nx-forwarded-for: *([^\r\n]*)/i.exec(seen)?.[1];
      const body = `hello from ${name}${xff ? ` (berth forwarded a request from ${xff})` : ''}\n`;
      socket.end(http ? `HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\nconnection: close\r\nx-served-by: ${name}\r\n\r\n${body}` : body);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, resolve);
  });
  const port = (server.address() as net.AddressInfo).port;
  return {
    name,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
      }),
  };
}
