// The floor for an HTTP/2 proxy on node's http2: a proxy with no logic at all (no
// routing, limits, timers, retries, metrics), node's stream API on both sides, one
// session to the endpoint. What it costs per request is node's share of any proxy
// built on node's http2; the h2 benchmark runs it beside berth, so berth's own share is
// berth's rate against this one. Usage: node h2-floor.mjs LISTEN_PORT ENDPOINT_PORT
import http2 from 'node:http2';

const [listen, target] = process.argv.slice(2).map(Number);
const up = http2.connect(`http://127.0.0.1:${target}`, { peerMaxConcurrentStreams: 100 });
up.on('error', () => process.exit(1));
const server = http2.createServer({ settings: { maxConcurrentStreams: 100 } });
server.on('stream', (s, h) => {
  s.on('error', () => {});
  const u = up.request({ ':method': h[':method'], ':path': h[':path'], ':authority': h[':authority'], ':scheme': 'http' }, { endStream: true });
  u.on('error', () => s.destroy());
  u.on('response', (rh) => {
    if (s.destroyed) return u.close();
    s.respond({ ':status': rh[':status'], 'content-type': rh['content-type'] });
    u.on('data', (d) => s.write(d));
    u.on('end', () => s.end());
  });
});
server.listen(listen, '127.0.0.1');
