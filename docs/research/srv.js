// Tiny node:http2 h2c server for attack experiments.
// usage: node srv.js PORT '{"json":"server options"}'
// Paths: /hang -> never respond; anything else -> 200 "ok".
// Logs one JSON line per interesting event to stdout.
'use strict';
const http2 = require('node:http2');
const port = Number(process.argv[2] || 0);
const opts = JSON.parse(process.argv[3] || '{}');
const berth = opts.berth || {}; delete opts.berth; // berth-side policies, see guard()
const { NGHTTP2_ENHANCE_YOUR_CALM, NGHTTP2_NO_ERROR, NGHTTP2_SETTINGS_TIMEOUT } = http2.constants;
const log = (o) => process.stdout.write(JSON.stringify({ t: Date.now() % 100000, ...o }) + '\n');
const fs = require('node:fs');
const tls = opts.tls; delete opts.tls;
const server = tls
  ? http2.createSecureServer({ ...opts, allowHTTP1: true, key: fs.readFileSync(__dirname + '/key.pem'), cert: fs.readFileSync(__dirname + '/cert.pem') })
  : http2.createServer(opts);
let sid = 0;
let streamsSeen = 0, streamsClosedWithErr = 0, aborted = 0;
server.on('session', (s) => {
  const id = ++sid;
  let n = 0, pings = 0, settings = 0;
  log({ ev: 'session', id });
  s.on('error', (e) => log({ ev: 'session.error', id, code: e.code, msg: e.message }));
  s.on('frameError', (type, code, sidd) => log({ ev: 'session.frameError', id, type, code, sid: sidd }));
  s.on('goaway', (code, last) => log({ ev: 'session.goaway(recv)', id, code, last }));
  s.on('ping', () => { pings++; });
  s.on('remoteSettings', () => { settings++; });
  s.on('close', () => log({ ev: 'session.close', id, streamsInJs: n, pings, settings, lastProc: safeState(s) }));
  s.on('stream', () => { n++; });
  const iv = setInterval(() => { if (!s.destroyed) log({ ev: 'state', id, lastProcStreamID: s.state.lastProcStreamID, streamsInJs: n }); }, 500);
  s.on('close', () => clearInterval(iv));
  guard(s, id);
});

// ---- what berth would add on top of node's built-in limits ----
// kill(): GOAWAY(code) + close.  sync=true from receive-path events ('stream', 'ping',
// 'remoteSettings'): destroy() runs inside nghttp2's receive loop, terminates the session before
// nghttp2's own flood detector fires, and the GOAWAY is delivered (also over TLS).
// sync=false from stream 'close' handlers: those may run inside nghttp2's *send* loop (a reset node
// sent itself), where an immediate destroy() loses the GOAWAY; defer with setImmediate.
function guard(s, id) {
  const kill = (why, code = NGHTTP2_ENHANCE_YOUR_CALM, sync = true) => {
    if (s.destroyed || s.killed) return;
    s.killed = true;
    log({ ev: 'berth.kill', id, why, code });
    if (berth.killMode === 'graceful') {
      // GOAWAY(code) now, cancel what is open, then close(): close() waits until nghttp2 has no
      // pending output (handle.hasPendingData()), so the GOAWAY is flushed before the socket ends.
      s.goaway(code);
      for (const st of open) st.close(http2.constants.NGHTTP2_CANCEL);
      s.close();
      setTimeout(() => { if (!s.destroyed) s.destroy(); }, 1000).unref(); // hard stop
      return;
    }
    const go = () => { if (!s.destroyed) s.destroy(new Error('h2 abuse: ' + why), code); };
    if (sync && !berth.alwaysDefer) go(); else setImmediate(go);
  };
  let total = 0, resets = 0, pings = 0, settings = 0, lastHidden = 0;
  const win = setInterval(() => {
    resets = 0; pings = 0; settings = 0;
    if (berth.maxHiddenRejectsPerSec && !s.destroyed) {
      // streams the peer opened that never reached JS (node/nghttp2 RST them before 'stream')
      const opened = (s.state.lastProcStreamID + 1) / 2;
      const hidden = opened - total;
      if (hidden - lastHidden > berth.maxHiddenRejectsPerSec) kill('streams rejected before the app: ' + (hidden - lastHidden), NGHTTP2_ENHANCE_YOUR_CALM, false);
      lastHidden = hidden;
      if (berth.maxTotalStreams && opened > berth.maxTotalStreams + 10) kill('total streams incl. rejected', NGHTTP2_ENHANCE_YOUR_CALM, false);
    }
  }, 1000); win.unref();
  s.on('close', () => { clearInterval(win); clearTimeout(ackTimer); });
  s.on('error', () => {});
  let ackTimer;
  if (berth.settingsAckTimeoutMs) {
    ackTimer = setTimeout(() => kill('SETTINGS ack timeout', NGHTTP2_SETTINGS_TIMEOUT, false), berth.settingsAckTimeoutMs);
    s.once('localSettings', () => clearTimeout(ackTimer)); // first ACK of our SETTINGS
  }
  if (berth.maxPingsPerSec) s.on('ping', () => { if (++pings > berth.maxPingsPerSec) kill('PING flood'); });
  if (berth.maxSettingsPerSec) s.on('remoteSettings', () => { if (++settings > berth.maxSettingsPerSec) kill('SETTINGS flood'); });
  const open = new Set();
  s.on('stream', (stream, headers, flags, raw) => {
    total++;
    open.add(stream); stream.once('close', () => open.delete(stream));
    if (berth.maxHeaderBytes || berth.maxHeaderFields) {
      let bytes = 0;
      for (let i = 0; i < raw.length; i += 2) bytes += raw[i].length + raw[i + 1].length + 32;
      const fields = raw.length / 2;
      if (bytes > (berth.maxHeaderBytes || Infinity) || fields > (berth.maxHeaderFields || Infinity)) {
        return kill(`header list ${bytes} bytes / ${fields} fields`);
      }
    }
    if (berth.maxTotalStreams && total === berth.maxTotalStreams) {
      log({ ev: 'berth.goaway', id, why: 'total streams cap', total });
      s.close(); // GOAWAY(NO_ERROR, last=this stream); in-flight ones finish, then the socket closes
    }
    if (berth.maxResetsPerSec) {
      stream.on('close', () => {
        // counts peer RST_STREAM *and* resets node sent for invalid frames (MadeYouReset)
        if (stream.rstCode !== NGHTTP2_NO_ERROR && ++resets > berth.maxResetsPerSec) kill('stream resets', NGHTTP2_ENHANCE_YOUR_CALM, false);
      });
    }
  });
}
function safeState(s) { try { return s.state.lastProcStreamID; } catch { return null; } }
server.on('sessionError', (e) => log({ ev: 'server.sessionError', code: e.code, msg: e.message }));
server.on('stream', (stream, headers) => {
  streamsSeen++;
  stream.on('error', () => {});
  stream.on('aborted', () => { aborted++; });
  stream.on('close', () => { if (stream.rstCode) streamsClosedWithErr++; });
  if (headers[':path'] === '/hang') return; // never answer
  stream.respond({ ':status': 200 });
  stream.end('ok');
});
setInterval(() => {
  const m = process.memoryUsage();
  log({ ev: 'mem', rssMB: +(m.rss / 1048576).toFixed(1), heapMB: +(m.heapUsed / 1048576).toFixed(1), streamsSeen, streamsClosedWithErr, aborted });
}, 1000).unref();
process.on('uncaughtException', (e) => { log({ ev: 'UNCAUGHT', msg: e.stack }); });
server.listen(port, '127.0.0.1', () => log({ ev: 'listening', port: server.address().port }));
process.on('SIGTERM', () => { log({ ev: 'exit' }); process.exit(0); });
