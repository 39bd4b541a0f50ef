import { once } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';

/** The first flight node's TLS client sends for `servername` and `alpn`, as bytes. */
export async function captureHello(opts: { servername?: string; alpn?: string[] }): Promise<Buffer> {
  let done: (b: Buffer) => void = () => {};
  const got = new Promise<Buffer>((r) => (done = r));
  const server = net.createServer((s) => {
    const parts: Buffer[] = [];
    s.on('error', () => {});
    s.on('data', (d: Buffer) => {
      parts.push(d);
      // A whole first record (node sends its hello in one): the hello is in.
      const b = Buffer.concat(parts);
      if (b.length >= 5 && b.length >= 5 + b.readUInt16BE(3)) done(b);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  const c = tls.connect({ host: '127.0.0.1', port, ...(opts.servername !== undefined ? { servername: opts.servername } : {}), ...(opts.alpn ? { ALPNProtocols: opts.alpn } : {}), rejectUnauthorized: false });
  c.on('error', () => {});
  const hello = await got;
  c.destroy();
  server.close();
  return hello;
}
