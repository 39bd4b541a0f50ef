// One plaintext port: HTTP/1.1 and h2c prior knowledge, by peeking the 24-byte preface.
// usage: node dual.js PORT
'use strict';
const net = require('node:net');
const http = require('node:http');
const http2 = require('node:http2');

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const port = Number(process.argv[2] || 0);
const log = (o) => process.stdout.write(JSON.stringify(o) + '\n');

const handler = (req, res) => {
  let n = 0;
  req.on('data', (d) => { n += d.length; });
  req.on('end', () => {
    res.setHeader('content-type', 'text/plain');
    res.end(`proto=${req.httpVersion} ${req.method} ${req.url} body=${n} rawHeaders0=${req.rawHeaders.slice(0, 4).join('|')}\n`);
  });
};
const h1 = http.createServer({ headersTimeout: 2000, requestTimeout: 5000 }, handler);
const h2 = http2.createServer({ settings: { maxConcurrentStreams: 100 } }, handler);
// http.Server starts its headersTimeout/requestTimeout checker on 'listening' only.
// It never listens here, so fire the event by hand (else slowloris limits are dead).
h1.connectionsCheckingInterval = 500;
h1.emit('listening');
h1.on('clientError', (e, s) => { log({ ev: 'h1.clientError', code: e.code }); s.destroy(); });

const PEEK_TIMEOUT_MS = 5000;

function route(socket) {
  let buf = Buffer.alloc(0);
  const timer = setTimeout(() => socket.destroy(), PEEK_TIMEOUT_MS);
  const onReadable = () => {
    let chunk;
    while ((chunk = socket.read()) !== null) buf = Buffer.concat([buf, chunk]);
    const n = Math.min(buf.length, PREFACE.length);
    const prefixMatches = buf.subarray(0, n).equals(PREFACE.subarray(0, n));
    if (prefixMatches && buf.length < PREFACE.length) return; // need more bytes to decide
    socket.removeListener('readable', onReadable);
    socket.removeListener('end', onEnd);
    clearTimeout(timer);
    socket.unshift(buf); // hand the bytes back; both servers pick them up
    const target = prefixMatches ? h2 : h1;
    log({ ev: 'route', to: prefixMatches ? 'h2c' : 'http/1.1', peeked: buf.length });
    target.emit('connection', socket);
  };
  const onEnd = () => { clearTimeout(timer); socket.destroy(); };
  socket.on('readable', onReadable);
  socket.on('end', onEnd);
  socket.on('error', () => {});
}

const front = net.createServer({ noDelay: true }, route);
front.listen(port, '127.0.0.1', () => log({ ev: 'listening', port: front.address().port }));
