"""A small blocking SMTP server with STARTTLS on Python's ssl module, for
what the aiosmtpd servers of mta_helpers.py cannot show: asyncio drops a
TLS alert when a handshake fails (the peer only sees the connection close)
and does not tell a close_notify from a bare FIN. Here the socket is a
plain ssl.SSLSocket: alerts go out before the close, and after QUIT the
server reads on, with ragged EOFs reported, to record whether the client
ended TLS with close_notify (RFC 8446 §6.1).

    probe = TlsProbeMTA(cert_dir, old=False).start()
    ... probe.port ... probe.wait_sessions(1) ... probe.sessions[0] ...
    probe.stop()

old=True speaks TLS 1.0 and 1.1 only: the handshake with a TLS 1.2+ client
fails, and the server says why with a protocol_version alert.
Each session is a dict: tls (handshake done), handshake_error,
close_notify (True, False, or None when there was no TLS), quit (QUIT
seen), messages (count)."""
import socket
import ssl
import threading
import time
import warnings

from mta_helpers import make_cert


class _Lines:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def readline(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                return b""
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def send(self, text):
        self.sock.sendall(text.encode() if isinstance(text, str) else text)


class TlsProbeMTA:
    def __init__(self, cert_dir, cn="mx1.example.net", old=False, host="127.0.0.1"):
        cert, key = make_cert(cert_dir, cn)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
        if old:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                ctx.minimum_version = ssl.TLSVersion.TLSv1
                ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        self.ctx = ctx
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.sessions = []
        self.errors = []
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self._thread is not None:
            self._thread.join(10)

    def wait_sessions(self, count=1, timeout=15, done=True):
        """Wait for count sessions that have ended (done) or begun."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = [s for s in self.sessions if s["ended"] or not done]
            if len(got) >= count:
                return got
            time.sleep(0.02)
        return [s for s in self.sessions if s["ended"] or not done]

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(15)
            sess = {"tls": False, "handshake_error": None, "close_notify": None,
                    "quit": False, "messages": 0, "ended": False}
            self.sessions.append(sess)
            try:
                self._session(conn, sess)
            except (OSError, ssl.SSLError) as e:
                self.errors.append(repr(e))
            finally:
                conn.close()
                sess["ended"] = True

    def _session(self, conn, sess):
        io = _Lines(conn)
        tls = None
        io.send("220 probe.test ESMTP\r\n")
        while True:
            line = io.readline()
            if not line:
                return
            verb = line.split(b" ", 1)[0].upper()
            if verb == b"EHLO":
                caps = "" if tls else "250-STARTTLS\r\n"
                io.send("250-probe.test\r\n" + caps + "250 8BITMIME\r\n")
            elif verb == b"STARTTLS" and tls is None:
                io.send("220 2.0.0 Ready to start TLS\r\n")
                try:
                    tls = self.ctx.wrap_socket(conn, server_side=True,
                                               suppress_ragged_eofs=False)
                except (ssl.SSLError, OSError) as e:
                    sess["handshake_error"] = str(e)
                    return
                sess["tls"] = True
                io = _Lines(tls)
            elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                io.send("250 2.0.0 OK\r\n")
            elif verb == b"DATA":
                io.send("354 go ahead\r\n")
                while io.readline() != b".":
                    pass
                sess["messages"] += 1
                io.send("250 2.0.0 OK queued\r\n")
            elif verb == b"QUIT":
                sess["quit"] = True
                io.send("221 2.0.0 Bye\r\n")
                if tls is not None:
                    try:
                        sess["close_notify"] = tls.recv(1) == b""
                    except (ssl.SSLError, OSError):  # SSLEOFError: a bare FIN
                        sess["close_notify"] = False
                return
            else:
                io.send("502 5.5.1 not here\r\n")
