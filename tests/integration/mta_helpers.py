"""Scripted remote MTAs (aiosmtpd) for the outbound delivery tests: the
servers hikyaku delivers to, on a loopback port or a unix socket, in SMTP or
LMTP mode, recording every session.

    mta = ScriptedMTA(rcpt={"bad@example.net": ["550 5.1.1 no such user"]},
                      data=["451 4.3.0 try later", "250 2.0.0 ok"]).start()
    ... mta.port ... mta.wait_messages(1) ... mta.sessions ...
    mta.stop()

Scripts (a list is one reply per attempt, the last one repeating):
  mail=[reply, ...]          replies to MAIL FROM (default 250)
  rcpt={addr: [reply, ...]}  replies to RCPT TO per recipient (default 250)
  data=[reply, ...]          replies to the end of DATA (default 250); for
                             LMTP, lmtp_replies={addr: [reply, ...]} gives
                             one reply per accepted recipient (RFC 2033)
  a reply may also be DROP (close without replying: the connection is lost
  after the dot), DROP_MID (close after the first line of the data) or
  ("STALL", seconds) (wait, then 250).
Options: pipelining=False hides PIPELINING (offered by default); tls=True
offers STARTTLS with a self-signed certificate (require_starttls off),
tls="broken" offers it with only TLS 1.0/1.1 (the handshake fails);
tls="client_cert" offers TLS 1.2 only and demands a client certificate
(the handshake fails after the server's certificate was seen);
starttls_reply="454 ..." offers STARTTLS and refuses it with that reply;
size_limit=N offers SIZE N; auth={"user": "pass"} offers AUTH PLAIN/LOGIN
and requires it before MAIL; smtputf8=False hides SMTPUTF8; ehlo_caps=False
answers EHLO with 500 (HELO only); greeting="554 ..." refuses the session,
greeting=("STALL", seconds) accepts the connection and never greets.

DsnMTA is a small hand-written asyncio SMTP server for what aiosmtpd cannot
do: it offers DSN (RFC 3461) in its EHLO reply, where aiosmtpd offers no DSN
and refuses NOTIFY/ORCPT/RET/ENVID, and it records the MAIL and RCPT command
lines exactly as they arrived. It accepts every transaction.

    mta = DsnMTA().start()
    tx = mta.wait_messages(1)[0]   # tx.mail_line, tx.rcpt_lines, tx.data
    mta.stop()

Run as a script (`python3 mta_helpers.py --host H --port 25 --outdir D`), it
is a recording server for a network namespace: each message is written to
D/<n>.json (envelope, TLS, data as latin-1), and D/ready when listening.
"""
import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

DROP = "DROP"
DROP_MID = "DROP_MID"


def make_cert(directory, cn="mx1.example.net"):
    """A self-signed P-256 certificate for cn: (certfile, keyfile)."""
    cert = os.path.join(directory, f"{cn}.crt")
    key = os.path.join(directory, f"{cn}.key")
    if not os.path.exists(cert):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={cn}",
             "-addext", f"subjectAltName=DNS:{cn}"],
            check=True, capture_output=True, timeout=30)
    return cert, key


class Tx:
    """One transaction as the server saw it."""

    def __init__(self, mail_from, mail_options):
        self.mail_from = mail_from
        self.mail_options = list(mail_options)
        self.rcpts = []
        self.rcpt_options = []
        self.data = None   # bytes, dot-unstuffed, CRLF line ends
        self.reply = None  # what the server answered to the dot


class Sess:
    """One connection."""

    def __init__(self, peer):
        self.peer = peer
        self.hello = None
        self.tls = False
        self.auth_login = None
        self.txs = []
        self.opened = time.time()
        self.closed = None
        self.quit = None  # when the client sent QUIT


def _pick(script, n):
    """Reply n (0-based) of a per-attempt script; the last one repeats."""
    if script is None:
        return None
    if isinstance(script, (str, tuple)):
        return script
    return script[min(n, len(script) - 1)]


class _Handler:
    def __init__(self, mta):
        self.mta = mta

    def _sess(self, server):
        return server._hk_sess

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self._sess(server).hello = hostname
        session.host_name = hostname
        if not self.mta.ehlo_caps:
            return ["500 5.5.1 EHLO not supported"]
        if self.mta.pipelining:  # aiosmtpd reads commands in order anyway
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_HELO(self, server, session, envelope, hostname):
        self._sess(server).hello = hostname
        session.host_name = hostname
        return "250 {}".format(server.hostname)

    async def handle_QUIT(self, server, session, envelope):
        self._sess(server).quit = time.time()
        return "221 2.0.0 Bye"

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        sess = self._sess(server)
        if session.ssl is not None:
            sess.tls = True
        sess.txs.append(Tx(address, mail_options))
        with self.mta.lock:
            n = self.mta.mail_attempts
            self.mta.mail_attempts += 1
        reply = _pick(self.mta.mail_script, n)
        if reply is not None and not reply.startswith("2"):
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        mta = self.mta
        with mta.lock:
            n = mta.rcpt_attempts.get(address.lower(), 0)
            mta.rcpt_attempts[address.lower()] = n + 1
        reply = _pick(mta.rcpt_script.get(address.lower()), n) or "250 2.1.5 OK"
        tx = self._sess(server).txs[-1]
        tx.rcpts.append(address)
        tx.rcpt_options.append(list(rcpt_options))
        if reply.startswith("2"):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return reply

    async def handle_DATA(self, server, session, envelope):
        mta = self.mta
        tx = self._sess(server).txs[-1]
        tx.data = envelope.original_content
        with mta.lock:
            n = mta.data_attempts
            mta.data_attempts += 1
        if mta.lmtp:
            replies = []
            for r in envelope.rcpt_tos:
                with mta.lock:
                    k = mta.lmtp_attempts.get(r.lower(), 0)
                    mta.lmtp_attempts[r.lower()] = k + 1
                replies.append(_pick(mta.lmtp_script.get(r.lower()), k) or "250 2.0.0 OK")
            reply = "\r\n".join(replies)
        else:
            reply = _pick(mta.data_script, n) or "250 2.0.0 OK queued"
        if reply == DROP:
            tx.reply = DROP
            server.transport.close()
            return "250 never sent"  # written to a closed transport
        if isinstance(reply, tuple) and reply[0] == "STALL":
            await asyncio.sleep(reply[1])
            reply = "250 2.0.0 OK after a while"
        tx.reply = reply
        if reply.startswith("2") or mta.lmtp:
            with mta.cond:
                mta.messages.append(tx)
                mta.cond.notify_all()
        return reply


def _wait_messages(mta, count, timeout, who):
    """Block until mta.messages (guarded by mta.cond) has count entries."""
    deadline = time.time() + timeout
    with mta.cond:
        while len(mta.messages) < count:
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError(
                    f"expected {count} messages at {who}, have {len(mta.messages)}")
            mta.cond.wait(left)
        return list(mta.messages)


class ScriptedMTA:
    def __init__(self, host="127.0.0.1", port=0, unix_path=None, lmtp=False, tls=False,
                 cert_dir=None, cn="mx1.example.net", auth=None, smtputf8=True,
                 ehlo_caps=True, greeting=None, mail=None, rcpt=None, data=None, lmtp_replies=None,
                 hostname="remote.test", size_limit=0, pipelining=True, starttls_reply=None):
        self.host = host
        self.port = port
        self.unix_path = unix_path
        self.lmtp = lmtp
        self.tls = tls
        self.cert_dir = cert_dir
        self.cn = cn
        self.auth = auth
        self.smtputf8 = smtputf8
        self.ehlo_caps = ehlo_caps
        self.greeting = greeting
        self.mail_script = mail
        self.mail_attempts = 0
        self.rcpt_script = {k.lower(): v for k, v in (rcpt or {}).items()}
        self.data_script = data
        self.lmtp_script = {k.lower(): v for k, v in (lmtp_replies or {}).items()}
        self.hostname = hostname
        self.size_limit = size_limit
        self.pipelining = pipelining
        self.starttls_reply = starttls_reply  # e.g. "454 4.7.0 ...": STARTTLS refused
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.rcpt_attempts = {}
        self.lmtp_attempts = {}
        self.data_attempts = 0
        self.sessions = []
        self.messages = []      # accepted transactions (Tx)
        self.connections = 0    # accepted TCP/unix connections
        self.active = 0
        self.max_active = 0
        self.auth_attempts = []  # (mechanism, login, ok)
        self._loop = None
        self._server = None
        self._thread = None

    # -- the aiosmtpd protocol factory -------------------------------------
    def _factory(self):
        mta = self
        kw = dict(hostname=self.hostname, decode_data=False, enable_SMTPUTF8=self.smtputf8,
                  data_size_limit=self.size_limit, timeout=30)
        if self.tls:
            cert, key = make_cert(self.cert_dir, self.cn)
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cert, key)
            if self.tls == "broken":  # offers STARTTLS, no usable protocol version
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    ctx.minimum_version = ssl.TLSVersion.TLSv1
                    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            if self.tls == "client_cert":  # TLS 1.2, fails after its certificate
                ctx.maximum_version = ssl.TLSVersion.TLSv1_2
                ctx.verify_mode = ssl.CERT_REQUIRED
                ctx.load_verify_locations(cert)
            kw.update(tls_context=ctx, require_starttls=False)
        if self.auth is not None:
            def authenticator(server, session, envelope, mechanism, auth_data):
                ok = (isinstance(auth_data, LoginPassword) and
                      mta.auth.get(auth_data.login.decode()) == auth_data.password.decode())
                login = auth_data.login.decode() if isinstance(auth_data, LoginPassword) else None
                with mta.lock:
                    mta.auth_attempts.append((mechanism, login, ok))
                if ok:
                    server._hk_sess.auth_login = login
                return AuthResult(success=ok, handled=False)
            kw.update(authenticator=authenticator, auth_required=True, auth_require_tls=False)
        base = LMTP if self.lmtp else SMTP

        class Proto(base):
            _hk_counted = False

            def connection_made(self, transport):
                if not self._hk_counted:
                    self._hk_counted = True
                    self._hk_sess = Sess(transport.get_extra_info("peername"))
                    with mta.lock:
                        mta.sessions.append(self._hk_sess)
                        mta.connections += 1
                        mta.active += 1
                        mta.max_active = max(mta.max_active, mta.active)
                super().connection_made(transport)

            def connection_lost(self, error):
                if self._hk_sess.closed is None:
                    self._hk_sess.closed = time.time()
                    with mta.lock:
                        mta.active -= 1
                super().connection_lost(error)

            async def smtp_STARTTLS(self, arg):
                if mta.starttls_reply is not None:
                    await self.push(mta.starttls_reply)
                    return
                await super().smtp_STARTTLS(arg)

            async def smtp_DATA(self, arg):
                with mta.lock:
                    mid = _pick(mta.data_script, mta.data_attempts) == DROP_MID
                    if mid:
                        mta.data_attempts += 1
                if mid:  # 354, one line of the message, then hang up
                    await self.push("354 End data with <CR><LF>.<CR><LF>")
                    await self._reader.readuntil(b"\r\n")
                    self.transport.close()
                    return
                await super().smtp_DATA(arg)

            async def _handle_client(self):
                if isinstance(mta.greeting, tuple):  # ("STALL", seconds): a dead server
                    try:
                        await asyncio.sleep(mta.greeting[1])
                    finally:  # also when the client's EOF cancels us
                        if self.transport is not None:
                            self.transport.close()
                    return
                if mta.greeting is not None:
                    await self.push(mta.greeting)
                    self.transport.close()
                    return
                await super()._handle_client()

        return Proto(_Handler(self), **kw)

    # -- life cycle --------------------------------------------------------
    def start(self):
        ready = threading.Event()
        err = []

        def run():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            try:
                if self.unix_path is not None:
                    coro = self._loop.create_unix_server(self._factory, path=self.unix_path)
                else:
                    if self.port == 0:
                        self.port = _free_port(self.host)
                    coro = self._loop.create_server(self._factory, host=self.host,
                                                    port=self.port, reuse_address=True)
                self._server = self._loop.run_until_complete(coro)
                if self.unix_path is not None:
                    # The daemon's queue runs as an unprivileged user: like
                    # Dovecot's lmtp socket for its mail user, open to it.
                    os.chmod(self.unix_path, 0o666)
                    os.chmod(os.path.dirname(self.unix_path), 0o755)
            except Exception as e:  # reported to the starting thread
                err.append(e)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()
            self._server.close()
            # Sessions still open (a stalled greeting, a client that never
            # quit) are cancelled and awaited, not left to be destroyed.
            pending = asyncio.all_tasks(self._loop)
            for t in pending:
                t.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.run_until_complete(self._server.wait_closed())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        if err:
            raise err[0]
        return self

    def stop(self):
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._thread = None

    # -- waiting -----------------------------------------------------------
    def wait_messages(self, count=1, timeout=10):
        return _wait_messages(self, count, timeout, "the remote MTA")


class DsnTx:
    """One transaction as DsnMTA saw it: the command lines without CRLF."""

    def __init__(self, mail_line):
        self.mail_line = mail_line
        self.rcpt_lines = []
        self.data = None  # bytes, dot-unstuffed, CRLF line ends


class DsnMTA:
    """A scripted SMTP server that offers DSN; see the module comment.
    Replies strictly in order, one per command line, so pipelined commands
    (RFC 2920) get their replies in order too. Loopback only."""

    def __init__(self, host="127.0.0.1", hostname="dsn.test"):
        self.host = host
        self.port = 0
        self.hostname = hostname
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.lines = []       # every command line, in order, over all sessions
        self.messages = []    # completed transactions (DsnTx)
        self.connections = 0
        self._loop = None
        self._server = None
        self._tasks = set()
        self._thread = None

    def _ehlo_reply(self):
        caps = [self.hostname, "PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "DSN"]
        return "".join(f"250{'-' if i < len(caps) - 1 else ' '}{c}\r\n"
                       for i, c in enumerate(caps))

    async def _data(self, reader):
        """The message up to the lone dot, dot-unstuffed (RFC 5321 §4.5.2)."""
        out = []
        while True:
            line = await reader.readline()
            if not line:
                return None
            if line == b".\r\n":
                return b"".join(out)
            out.append(line[1:] if line.startswith(b".") else line)

    def _command(self, cmd, tx):
        """The reply to one command line and the transaction after it."""
        verb = cmd.split(" ", 1)[0].upper()
        if verb in ("EHLO", "LHLO"):
            return self._ehlo_reply(), None
        if verb == "HELO":
            return f"250 {self.hostname}\r\n", None
        if cmd.upper().startswith("MAIL FROM:"):
            return "250 2.1.0 OK\r\n", DsnTx(cmd)
        if cmd.upper().startswith("RCPT TO:"):
            if tx is None:
                return "503 5.5.1 MAIL first\r\n", tx
            tx.rcpt_lines.append(cmd)
            return "250 2.1.5 OK\r\n", tx
        if verb == "DATA":
            if tx is None or not tx.rcpt_lines:
                return "503 5.5.1 no valid recipients\r\n", tx
            return "354 End data with <CR><LF>.<CR><LF>\r\n", tx
        if verb == "RSET":
            return "250 2.0.0 OK\r\n", None
        if verb == "NOOP":
            return "250 2.0.0 OK\r\n", tx
        if verb == "QUIT":
            return "221 2.0.0 Bye\r\n", None
        return "502 5.5.2 not implemented\r\n", tx

    async def _session(self, reader, writer):
        with self.lock:
            self.connections += 1
        tx = None
        try:
            writer.write(f"220 {self.hostname} ESMTP\r\n".encode())
            while True:
                line = await asyncio.wait_for(reader.readline(), 60)
                if not line:
                    break
                if not line.endswith(b"\r\n"):
                    writer.write(b"500 5.5.2 lines end in CRLF\r\n")
                    continue
                cmd = line[:-2].decode("utf-8", "surrogateescape")
                with self.lock:
                    self.lines.append(cmd)
                reply, tx = self._command(cmd, tx)
                writer.write(reply.encode())
                await writer.drain()
                if reply.startswith("221"):
                    break
                if reply.startswith("354"):
                    tx.data = await self._data(reader)
                    if tx.data is None:
                        break
                    with self.cond:
                        self.messages.append(tx)
                        self.cond.notify_all()
                    tx = None
                    writer.write(b"250 2.0.0 OK queued\r\n")
                    await writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def _start_session(self, reader, writer):
        task = asyncio.ensure_future(self._session(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start(self):
        ready = threading.Event()
        err = []

        def run():
            self._loop = asyncio.new_event_loop()
            try:
                self.port = _free_port(self.host)
                self._server = self._loop.run_until_complete(asyncio.start_server(
                    self._start_session, host=self.host, port=self.port,
                    reuse_address=True))
            except Exception as e:  # reported to the starting thread
                err.append(e)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        if err:
            raise err[0]
        return self

    async def _shutdown(self):
        self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._loop.stop()

    def stop(self):
        if self._thread is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            self._thread.join(10)
        self._thread = None

    def wait_messages(self, count=1, timeout=10):
        return _wait_messages(self, count, timeout, "the DSN MTA")


def _free_port(host):
    import random
    for _ in range(200):
        port = random.randrange(20000, 32000)
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def strip_received(data):
    """The message without its first header line(s) if it is our Received
    (with its folded continuation lines): what the sender gave us."""
    assert data.startswith(b"Received: "), data[:200]
    lines = data.split(b"\r\n")
    i = 1
    while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
        i += 1
    return b"\r\n".join(lines[i:])


def _main():
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=25)
    ap.add_argument("--outdir", required=True)
    a = ap.parse_args()
    mta = ScriptedMTA(host=a.host, port=a.port)
    orig = mta.cond.notify_all

    def record():
        for i, tx in enumerate(mta.messages):
            path = os.path.join(a.outdir, f"{i}.json")
            if not os.path.exists(path):
                with open(path + ".tmp", "w") as f:
                    json.dump({"mail_from": tx.mail_from, "rcpts": tx.rcpts,
                               "data": tx.data.decode("latin-1")}, f)
                os.rename(path + ".tmp", path)
        orig()

    mta.cond.notify_all = record
    mta.start()
    with open(os.path.join(a.outdir, "ready"), "w") as f:
        f.write(str(os.getpid()))
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    _main()
