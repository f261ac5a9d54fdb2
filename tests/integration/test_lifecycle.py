"""Lifecycle: the graceful stop (SIGTERM). Listeners close at once (a new
connection is refused), a session in a transaction finishes it and gets its
250, a session between transactions gets 421 4.3.2, the queue drains, and
the master exits 0 within timeouts.shutdown plus its margin."""
import signal
import socket
import time

import pytest


def recv_reply(sock, timeout=10):
    """One whole (possibly multi-line) reply, as text."""
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data.decode(errors="replace")
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) >= 2 and len(lines[-2]) >= 4 and lines[-2][3:4] == b" ":
            return data.decode(errors="replace")


def cmd(sock, line):
    sock.sendall(line.encode() + b"\r\n")
    return recv_reply(sock)


def session(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert recv_reply(s).startswith("220")
    assert cmd(s, "EHLO client.test").startswith("250")
    return s


def wait_refused(port, timeout=5):
    """A connection made in the instant the listeners close may sit in the
    backlog and be reset; after that, the port refuses."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                c.settimeout(1)
                try:
                    last = c.recv(512)
                except (socket.timeout, ConnectionResetError) as e:
                    last = e
        except ConnectionRefusedError:
            return
        time.sleep(0.05)
    raise AssertionError(f"a new connection was still accepted ({last!r})")


def test_sigterm_lets_a_transaction_in_data_finish(hikyaku):
    hk = hikyaku(timeouts={"shutdown": "10s"})
    busy = session(hk.port)
    assert cmd(busy, "MAIL FROM:<sender@example.net>").startswith("250")
    assert cmd(busy, "RCPT TO:<alice@localhost>").startswith("250")
    assert cmd(busy, "DATA").startswith("354")
    busy.sendall(b"Subject: in flight\r\n\r\nfirst half\r\n")
    idle = session(hk.port)

    t0 = time.time()
    hk.proc.send_signal(signal.SIGTERM)
    # Between transactions: told at once, and closed.
    try:
        reply = recv_reply(idle, timeout=5)
    except socket.timeout:
        reply = "(no reply)"
    assert reply.startswith("421 4.3.2"), reply + hk.log()[-6000:]
    assert idle.recv(100) == b""
    idle.close()
    # Listeners are closed: refused, not left waiting in a backlog.
    wait_refused(hk.port)
    assert hk.proc.poll() is None, "exited before the transaction in DATA ended"

    # The transaction in DATA goes on, gets its 250, then the 421.
    time.sleep(0.5)
    busy.sendall(b"second half\r\n.\r\n")
    reply = recv_reply(busy)
    assert reply.startswith("250 2.0.0"), reply
    if "421" not in reply:
        reply = recv_reply(busy, timeout=5)
    assert reply.startswith("421 4.3.2") or "\r\n421 4.3.2" in reply, reply
    assert busy.recv(100) == b""
    busy.close()

    rc = hk.proc.wait(timeout=10 + 15)
    elapsed = time.time() - t0
    hk.proc = None
    assert rc == 0, hk.log()[-4000:]
    assert elapsed < 10, f"stopped after {elapsed:.1f}s with no session left"
    log = hk.log()
    assert "event=shutdown_timeout" not in log
    assert "event=stopped" in log

    # The message acknowledged during the stop is kept: delivered before
    # the queue stopped, or on the next start.
    if not hk.delivered("alice"):
        assert hk.queue_files(), "neither delivered nor in the queue"
        hk.start()
    hk.wait_delivered("alice", count=1)
    body = hk.read_delivered("alice")[0]
    assert b"first half\r\nsecond half" in body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def test_sigterm_is_bounded_by_timeouts_shutdown(hikyaku):
    hk = hikyaku(timeouts={"shutdown": "2s"})
    stuck = session(hk.port)
    assert cmd(stuck, "MAIL FROM:<sender@example.net>").startswith("250")
    assert cmd(stuck, "RCPT TO:<alice@localhost>").startswith("250")
    assert cmd(stuck, "DATA").startswith("354")
    stuck.sendall(b"Subject: never ends\r\n\r\n")
    t0 = time.time()
    hk.proc.send_signal(signal.SIGTERM)
    rc = hk.proc.wait(timeout=2 + 15)
    elapsed = time.time() - t0
    hk.proc = None
    stuck.close()
    assert rc == 0, hk.log()[-4000:]
    assert 1.5 <= elapsed < 2 + 5 + 3, f"stopped after {elapsed:.1f}s"
    assert "event=shutdown_timeout sessions=1" in hk.log()
    assert not hk.delivered("alice")


def test_timeouts_shutdown_in_config_reference(hikyaku):
    import subprocess
    from conftest import hikyaku_bin
    out = subprocess.run([hikyaku_bin(), "config", "reference"], capture_output=True,
                         text=True, check=True).stdout
    assert "timeouts.shutdown" in out


def test_sigterm_bdat_transaction_ends_and_pipelined_commands_are_not_started(hikyaku):
    """A transaction open at SIGTERM (after RCPT) still gets its BDAT LAST
    through; the MAIL pipelined behind it is not started: 421 instead."""
    hk = hikyaku(timeouts={"shutdown": "10s"})
    s = session(hk.port)
    assert cmd(s, "MAIL FROM:<sender@example.net>").startswith("250")
    assert cmd(s, "RCPT TO:<bob@localhost>").startswith("250")
    hk.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    body = b"Subject: bdat\r\n\r\nchunked\r\n"
    s.sendall(b"BDAT %d LAST\r\n" % len(body) + body + b"MAIL FROM:<again@example.net>\r\n")
    s.settimeout(10)
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    lines = data.decode().split("\r\n")
    assert lines[0].startswith("250 "), data
    assert lines[1].startswith("421 4.3.2"), data
    assert len([l for l in lines if l]) == 2, data
    assert hk.proc.wait(timeout=25) == 0
    hk.proc = None
    if not hk.delivered("bob"):
        hk.start()
    assert b"chunked" in hk.read_delivered("bob")[0]
