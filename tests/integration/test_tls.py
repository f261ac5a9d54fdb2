"""TLS (issue 3): STARTTLS (RFC 3207) and implicit TLS (RFC 8314) against
the real daemon, with openssl s_client and Python's ssl module as clients:
protocol versions and ciphers, SNI certificate choice, session resumption
with and without tickets, SIGHUP certificate reload, and the negative cases
(STARTTLS command injection, a second STARTTLS, STARTTLS in a transaction,
garbage instead of a ClientHello, a client stalling mid-handshake)."""
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import threading
import time

import pytest

from conftest import log_events, tls_client_context, wait_event

S_CLIENT_TIMEOUT = 10


def s_client(port, *args, starttls=True, sess_out=None, sess_in=None, servername=None):
    """Run `openssl s_client` against 127.0.0.1:port: send EHLO and HELP once
    the handshake is done, wait for HELP's reply (so TLS 1.3 tickets,
    which follow the handshake, are read and -sess_out saves them), then
    close stdin. Returns (returncode, all output)."""
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-crlf"]
    if starttls:
        cmd += ["-starttls", "smtp"]
    if sess_out:
        cmd += ["-sess_out", sess_out]
    if sess_in:
        cmd += ["-sess_in", sess_in]
    cmd += ["-servername", servername] if servername else ["-noservername"]
    cmd += list(args)
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    timer = threading.Timer(S_CLIENT_TIMEOUT, p.kill)
    timer.start()
    out = []
    try:
        sent = False
        for line in p.stdout:
            out.append(line)
            if not sent and line.startswith("---") and any(
                    x.startswith(("New,", "Reused,")) for x in out):
                # HELP's 214 marks the end: s_client may echo a stale
                # "250 DSN" of the plaintext EHLO at this point
                sent = True
                try:
                    p.stdin.write("EHLO sclient.example\nHELP\n")
                    p.stdin.flush()
                except BrokenPipeError:  # the handshake failed
                    pass
            elif sent and line.startswith("214 "):
                try:
                    p.stdin.close()
                except BrokenPipeError:
                    pass
        p.wait()
    finally:
        timer.cancel()
        try:
            p.stdin.close()
        except (BrokenPipeError, OSError):
            pass
    return p.returncode, "".join(out)


def session_line(out):
    """The "New, TLSv1.3, Cipher is X" / "Reused, ..." line, or None."""
    m = re.search(r"^(New|Reused), (\S+), Cipher is (\S+)$", out, re.M)
    return m.groups() if m else None


def subject_cn(out):
    m = re.search(r"^subject=.*CN\s*=\s*([^,\s]+)", out, re.M)
    return m.group(1) if m else None


def make_cert(path_dir, name, tag="a"):
    """A self-signed ECDSA P-256 pair for name; returns (cert, key)."""
    cert = os.path.join(path_dir, f"{name}-{tag}.crt")
    key = os.path.join(path_dir, f"{name}-{tag}.key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", f"/CN={name}", "-addext",
         f"subjectAltName=DNS:{name}", "-keyout", key, "-out", cert],
        check=True, capture_output=True)
    return cert, key


def test_default_is_tls13_and_received_records_it(hikyaku):
    hk = hikyaku()
    rc, out = s_client(hk.port)
    assert rc == 0, out
    new, proto, cipher = session_line(out)
    assert (new, proto) == ("New", "TLSv1.3"), out
    assert cipher in ("TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
                      "TLS_AES_128_GCM_SHA256")
    assert "250-STARTTLS" not in out.split("New, TLSv1.3")[1], \
        "STARTTLS must not be offered again once TLS is on"
    assert wait_event(hk, "tls", resumed="no")


def test_tls12_gives_ecdhe_aead(hikyaku):
    hk = hikyaku()
    rc, out = s_client(hk.port, "-tls1_2")
    assert rc == 0, out
    new, proto, cipher = session_line(out)
    assert proto == "TLSv1.2"
    assert re.fullmatch(r"ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)",
                        cipher), cipher


def test_tls12_cbc_and_non_pfs_ciphers_refused(hikyaku):
    hk = hikyaku()
    for cipher in ("ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384",
                   "AES128-GCM-SHA256"):
        rc, out = s_client(hk.port, "-tls1_2", "-cipher", cipher)
        assert session_line(out) is None or session_line(out)[2] == "(NONE)", out


@pytest.mark.parametrize("proto", ["-tls1_1", "-tls1"])
def test_old_protocols_refused(hikyaku, proto):
    hk = hikyaku()
    # SECLEVEL=0 so that the client really offers the old version: the
    # refusal must come from the server.
    rc, out = s_client(hk.port, proto, "-cipher", "DEFAULT@SECLEVEL=0")
    assert rc != 0
    line = session_line(out)
    assert line is None or line[2] == "(NONE)", out
    ev = wait_event(hk, "tls_failed")
    assert ev and ev[0]["handshake"] == "incomplete", hk.log()[-2000:]
    assert "unsupported protocol" in ev[0]["reason"]
    # one line per failure: not libevent's SSL_get_error() code as well
    assert not [e for e in log_events(hk, "tls_failed") if "lib(0)" in e["reason"]]
    # and the server still works
    rc, out = s_client(hk.port)
    assert session_line(out)[1] == "TLSv1.3"


def test_sni_picks_certificate(hikyaku, tmp_path):
    c1, k1 = make_cert(str(tmp_path), "mx1.test")
    c2, k2 = make_cert(str(tmp_path), "mx2.test")
    hk = hikyaku(tls={"certificates": [{"cert": c1, "key": k1}, {"cert": c2, "key": k2}]})
    cases = [("mx2.test", "mx2.test"), ("MX2.Test", "mx2.test"), ("mx1.test", "mx1.test"),
             ("unknown.test", "mx1.test"), (None, "mx1.test")]
    for sni, want in cases:
        rc, out = s_client(hk.port, servername=sni)
        assert rc == 0, out
        assert subject_cn(out) == want, (sni, out)


def test_session_resumption_tls12_and_tls13(hikyaku, tmp_path):
    hk = hikyaku()
    for proto in ("-tls1_2", "-tls1_3"):
        sess = str(tmp_path / f"sess{proto}")
        rc, out = s_client(hk.port, proto, sess_out=sess)
        assert session_line(out)[0] == "New", out
        assert os.path.exists(sess), f"{proto}: no session saved\n{out}"
        rc, out = s_client(hk.port, proto, sess_in=sess)
        assert session_line(out)[0] == "Reused", (proto, out)
    assert len(wait_event(hk, "tls", count=2, resumed="yes")) == 2


def test_session_tickets_off(hikyaku, tmp_path):
    # The session-ID cache is per smtpd process (tickets, whose keys all
    # smtpds share, resume on any): one process, so both connections meet it.
    hk = hikyaku(tls={"session_tickets": False}, processes={"smtpd": 1})
    # TLS 1.3: no NewSessionTicket at all (src/tls/tls.h), so no resumption.
    sess = str(tmp_path / "s13")
    rc, out = s_client(hk.port, "-tls1_3", sess_out=sess)
    assert session_line(out)[:2] == ("New", "TLSv1.3"), out
    assert "TLS session ticket" not in out
    if os.path.exists(sess):
        rc, out = s_client(hk.port, "-tls1_3", sess_in=sess)
        assert session_line(out)[0] == "New", out
    # TLS 1.2: no ticket extension, but the session-ID cache resumes.
    sess = str(tmp_path / "s12")
    rc, out = s_client(hk.port, "-tls1_2", sess_out=sess)
    assert session_line(out)[0] == "New"
    assert "TLS session ticket lifetime hint" not in out, out
    rc, out = s_client(hk.port, "-tls1_2", sess_in=sess)
    assert session_line(out)[0] == "Reused", out


def test_sighup_reloads_certificate_live_session_survives(hikyaku, tmp_path):
    d = str(tmp_path)
    c1, k1 = make_cert(d, "old.test")
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    os.rename(c1, cert)
    os.rename(k1, key)
    hk = hikyaku(tls={"certificates": [{"cert": cert, "key": key}]})
    assert subject_cn(s_client(hk.port)[1]) == "old.test"

    live = smtplib.SMTP("127.0.0.1", hk.port, timeout=10)
    live.starttls(context=tls_client_context())
    live.ehlo("live.example")

    c2, k2 = make_cert(d, "new.test")
    os.rename(k2, key)
    os.rename(c2, cert)
    hk.proc.send_signal(signal.SIGHUP)
    hk.wait_log("event=reload status=ok")
    # status=ok is said when the new config is loaded; the new smtpds then
    # start and the old ones retire (stop listening): until they have, a
    # connection may still reach an old one. Bounded: 10 s.
    deadline = time.monotonic() + 10
    cn = subject_cn(s_client(hk.port)[1])
    while cn != "new.test" and time.monotonic() < deadline:
        time.sleep(0.2)
        cn = subject_cn(s_client(hk.port)[1])
    assert cn == "new.test"

    # the session opened before the reload still works over its old keys
    live.sendmail("bob@example.net", ["alice@localhost"], b"Subject: live\r\n\r\nhi\r\n")
    live.quit()
    (msg,) = hk.read_delivered("alice")
    assert b"Subject: live" in msg and b"with ESMTPS id" in msg


def test_sighup_with_broken_certificate_keeps_old(hikyaku, tmp_path):
    d = str(tmp_path)
    cert, key = make_cert(d, "keep.test")
    hk = hikyaku(tls={"certificates": [{"cert": cert, "key": key}]})
    with open(cert, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    hk.proc.send_signal(signal.SIGHUP)
    hk.wait_log("event=reload status=failed")
    assert subject_cn(s_client(hk.port)[1]) == "keep.test"


def test_starttls_injection_discarded(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.ehlo()
    c.send("STARTTLS\r\nRSET\r\n")
    c.expect(220, "2.0.0")
    assert c.buf == b""
    c.sock = tls_client_context().wrap_socket(c.sock)
    c.send("EHLO again.example\r\n")
    code, lines = c.reply()
    # the first reply after the handshake is the EHLO's, not RSET's 250 Ok
    assert code == 250 and lines[0].startswith("250-mx.test.example Hello again.example"), lines
    assert "250-STARTTLS" not in lines
    c.ok("NOOP", 250, "2.0.0")
    ev = wait_event(hk, "starttls_injection")
    assert ev and ev[0]["discarded"] == str(len("RSET\r\n")), hk.log()[-2000:]
    c.ok("QUIT", 221)


def test_starttls_forgets_ehlo(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.ehlo()
    c.starttls()
    # RFC 3207 §4.2: the client must EHLO again
    c.ok("MAIL FROM:<a@example.net>", 503, "5.5.1")
    c.ehlo()
    c.begin(ehlo=False)


def test_second_starttls_refused(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.ehlo()
    c.starttls()
    c.ehlo()
    c.ok("STARTTLS", 503, "5.5.1")
    c.begin(ehlo=False)  # session still usable


def test_starttls_in_transaction_refused(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<a@example.net>", 250)
    c.ok("STARTTLS", 503, "5.5.1")
    c.ok("RCPT TO:<alice@localhost>", 250, "2.1.5")  # transaction intact, plaintext


def test_starttls_not_offered_on_plain_listener(hikyaku, raw):
    hk = hikyaku(listener={"tls": "none"})
    c = raw(hk.port)
    assert "250-STARTTLS" not in c.ehlo()
    c.ok("STARTTLS", 454, "4.7.0")


def test_starttls_with_argument(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.ehlo()
    c.ok("STARTTLS now", 501, "5.5.4")


def _garbage_closes(hk, raw, sock):
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\x00" * 64)
    sock.settimeout(5)
    data = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    ev = wait_event(hk, "tls_failed")
    assert ev and ev[0]["handshake"] == "incomplete", hk.log()[-2000:]
    assert wait_event(hk, "disconnect", count=1)
    # nothing readable but perhaps a TLS alert record (content type 21)
    assert data == b"" or data[0] == 21, data


def test_garbage_instead_of_clienthello_starttls(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.ehlo()
    c.ok("STARTTLS", 220, "2.0.0")
    _garbage_closes(hk, raw, c.sock)
    # the server keeps serving
    c2 = raw(hk.port)
    c2.ehlo()
    c2.starttls()
    c2.ehlo()
    c2.begin(ehlo=False)
    c2.data("Subject: after\r\n\r\nx\r\n")
    hk.wait_delivered("alice")


def test_garbage_on_implicit_port(hikyaku, raw):
    hk = hikyaku(listener={"tls": "implicit"})
    s = socket.create_connection(("127.0.0.1", hk.port), timeout=5)
    _garbage_closes(hk, raw, s)
    s.close()
    c = raw(hk.port, implicit_tls=True)
    assert c.greeting[0] == 220
    c.ehlo()
    c.ok("QUIT", 221)


@pytest.mark.parametrize("what", ["nothing", "half_hello"])
def test_implicit_handshake_stall_times_out(hikyaku, what):
    hk = hikyaku(listener={"tls": "implicit"}, tls={"handshake_timeout": "2s"})
    s = socket.create_connection(("127.0.0.1", hk.port), timeout=8)
    if what == "half_hello":
        # a real ClientHello, cut in half
        inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = tls_client_context().wrap_bio(inc, outg)
        with pytest.raises(ssl.SSLWantReadError):
            obj.do_handshake()
        hello = outg.read()
        assert hello[0] == 22
        s.sendall(hello[:len(hello) // 2])
    t0 = time.monotonic()
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    elapsed = time.monotonic() - t0
    s.close()
    assert 1.5 <= elapsed < 6, elapsed
    assert wait_event(hk, "timeout") or wait_event(hk, "tls_failed"), hk.log()[-2000:]
    assert wait_event(hk, "disconnect")


def test_starttls_handshake_stall_times_out(hikyaku, raw):
    hk = hikyaku(tls={"handshake_timeout": "2s"})
    c = raw(hk.port)
    c.ehlo()
    c.ok("STARTTLS", 220, "2.0.0")
    t0 = time.monotonic()
    assert c.closed(timeout=8)
    assert 1.5 <= time.monotonic() - t0 < 6
    assert wait_event(hk, "disconnect")


def test_implicit_tls_received_header(hikyaku, raw):
    hk = hikyaku(listener={"tls": "implicit"})
    c = raw(hk.port, implicit_tls=True)
    lines = c.ehlo()
    assert "250-STARTTLS" not in lines
    c.ok("STARTTLS", 503, "5.5.1")
    c.begin(ehlo=False)
    c.data("Subject: s\r\n\r\nbody\r\n")
    (msg,) = hk.read_delivered("alice")
    assert re.search(rb"\(using TLSv1\.3 TLS_\w+ \(\d+/\d+ bits\)\)", msg), msg[:600]
    assert b"with ESMTPS id" in msg
    tls = log_events(hk, "tls")
    assert tls and tls[0]["tls"].startswith("TLSv1.3 ")


class FlightClient:
    """TLS over a memory BIO, so the test decides what goes into one TCP
    write: here the client's Finished and its first command together, as
    fast TLS 1.3 clients send them."""

    def __init__(self, sock, ctx=None):
        self.sock = sock
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = (ctx or tls_client_context()).wrap_bio(self.inc, self.out)
        self.buf = b""

    def _feed(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.inc.write(data)

    def handshake_then(self, first):
        """Complete the handshake, but hold back the last flight and send it
        with first in one write."""
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                if self.out.pending:
                    self.sock.sendall(self.out.read())
                self._feed()
        self.obj.write(first)
        self.sock.sendall(self.out.read())

    def reply(self):
        while True:
            m = re.search(rb"^\d{3} [^\r]*\r\n", self.buf, re.M)
            if m:
                r, self.buf = self.buf[:m.end()], self.buf[m.end():]
                return r.decode()
            try:
                self.buf += self.obj.read(65536)
            except ssl.SSLWantReadError:
                if self.out.pending:
                    self.sock.sendall(self.out.read())
                self._feed()


@pytest.mark.parametrize("auth", [False, True])
def test_ehlo_in_the_finished_flight(hikyaku, raw, tmp_path, auth):
    # The EHLO arrives in the same read as the end of the handshake: the
    # session must already count as TLS when it answers (no second
    # STARTTLS offered; AUTH offered when a users file exists).
    users = {"alice@example.org": ("CRYPT", "pw")} if auth else None
    hk = hikyaku(users_secrets=users)
    for _ in range(5):
        c = raw(hk.port)
        c.ehlo()
        c.ok("STARTTLS", 220, "2.0.0")
        fc = FlightClient(c.sock, tls_client_context(maximum_version=ssl.TLSVersion.TLSv1_3))
        fc.handshake_then(b"EHLO fast.example\r\n")
        ehlo = fc.reply()
        assert ehlo.startswith("250-mx.test.example Hello fast.example"), ehlo
        assert "250-STARTTLS" not in ehlo, ehlo
        assert ("250-AUTH PLAIN LOGIN" in ehlo) == auth, ehlo
        fc.obj.write(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
        fc.sock.sendall(fc.out.read())
        assert fc.reply().startswith("250 2.1.0")
        assert fc.reply().startswith("250 2.1.5")
        assert fc.reply().startswith("354")
        fc.obj.write(b"Subject: fast\r\n\r\nx\r\n.\r\n")
        fc.sock.sendall(fc.out.read())
        assert fc.reply().startswith("250 2.0.0")
    msgs = hk.read_delivered("alice", "example.org", 5)
    assert all(b"with ESMTPS id" in m and b"(using TLSv1.3 " in m for m in msgs)


# --- close_notify (issue 8) ------------------------------------------------------

def gnutls_quit(port, implicit):
    """gnutls-cli (GnuTLS, as in Exim) sends EHLO and QUIT over TLS, keeps
    its stdin open until the server has closed, and reports how the TLS
    connection ended."""
    cmd = ["gnutls-cli", "--insecure", "-p", str(port), "127.0.0.1"]
    if not implicit:
        cmd.insert(1, "--starttls-proto=smtp")
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    timer = threading.Timer(S_CLIENT_TIMEOUT, p.kill)
    timer.start()
    out = []
    try:
        for line in p.stdout:
            out.append(line)
            if line.startswith("- Simple Client Mode"):
                p.stdin.write("EHLO gnutls.example\r\nQUIT\r\n")
                p.stdin.flush()
            if "Peer has closed" in line or "non-properly terminated" in line:
                break
        try:
            p.stdin.close()
        except BrokenPipeError:
            pass
        p.wait()
    finally:
        timer.cancel()
    return "".join(out)


@pytest.mark.skipif(shutil.which("gnutls-cli") is None, reason="gnutls-bin not installed")
@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
def test_quit_sends_close_notify_gnutls(hikyaku, implicit):
    """Exim (GnuTLS) logged "The TLS connection was non-properly terminated"
    for every session: after 221 the server must send close_notify."""
    hk = hikyaku(listener={"tls": "implicit"}) if implicit else hikyaku()
    out = gnutls_quit(hk.port, implicit)
    assert "221 2.0.0" in out, out
    assert "- Peer has closed the GnuTLS connection" in out, out
    assert "non-properly terminated" not in out


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
def test_quit_sends_close_notify_python(hikyaku, implicit):
    """Python's ssl with ragged EOFs not suppressed: after QUIT the read
    ends with b'' (close_notify), not SSLEOFError."""
    hk = hikyaku(listener={"tls": "implicit"}) if implicit else hikyaku()
    ctx = tls_client_context()
    # Python sets this by default: a bare FIN would read as a clean end
    ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    sock = socket.create_connection(("127.0.0.1", hk.port), timeout=10)
    try:
        if not implicit:
            f = sock.makefile("rb")
            assert f.readline().startswith(b"220")
            sock.sendall(b"EHLO py.example\r\n")
            while not f.readline().startswith(b"250 "):
                pass
            sock.sendall(b"STARTTLS\r\n")
            assert f.readline().startswith(b"220")
        tls = ctx.wrap_socket(sock, suppress_ragged_eofs=False)
        buf = b""
        tls.sendall(b"EHLO py.example\r\nQUIT\r\n")
        while True:
            data = tls.recv(4096)  # SSLEOFError on a bare FIN
            if not data:
                break
            buf += data
        assert b"221 2.0.0" in buf, buf
        tls.unwrap()  # our close_notify back; raises if the server's was missing
    finally:
        sock.close()
