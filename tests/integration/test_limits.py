"""Resource limits and timeouts: command and text line lengths, recipients,
errors, message and header size, Received hops, timeouts, the session
deadline and connection admission (RFC 5321 §4.5.3)."""
import os
import resource
import smtplib
import socket
import subprocess
import time

import pytest

from conftest import log_events, wait_event

LIMITS = {"command_line": 512, "recipients": 3, "errors": 5, "message_size": "10K",
          "header_size": "2K", "received_hops": 5, "connections": 3, "connections_per_ip": 2}


@pytest.fixture
def hk(hikyaku):
    h = hikyaku(limits=dict(LIMITS))
    # the fixture's readiness probe is a connection too: let it go first
    assert wait_event(h, "disconnect")
    return h


def pad_cmd(total):
    """A NOOP command line of exactly total octets including CRLF."""
    return b"NOOP " + b"x" * (total - 7) + b"\r\n"


def test_command_line_limit(hk, raw):
    c = raw(hk.port)
    c.ehlo()
    c.send(pad_cmd(512))
    c.expect(250, "2.0.0")           # exactly at the limit
    c.send(pad_cmd(513))
    lines = c.expect(500, "5.5.2")
    assert "512" in lines[0]
    c.ok("NOOP", 250, "2.0.0")       # the rest of the line was not obeyed
    c.begin(ehlo=False)
    c.data("Subject: x\r\n\r\nx\r\n")
    hk.wait_delivered("alice")


def test_command_line_limit_split_writes(hk, raw):
    """An over-long line arriving in pieces gets one 500, and its tail,
    even if it looks like a command, is not executed."""
    c = raw(hk.port)
    c.ehlo()
    c.send(b"NOOP " + b"y" * 600)
    c.expect(500, "5.5.2")
    c.send(b"z" * 600)
    time.sleep(0.1)
    c.send(b" QUIT\r\nNOOP\r\n")
    c.expect(250, "2.0.0")           # only the NOOP after the long line answered
    c.ok("RSET", 250, "2.0.0")


def test_long_mail_line_not_executed(hk, raw):
    c = raw(hk.port)
    c.ehlo()
    c.send(b"MAIL FROM:<" + b"a" * 600 + b"@example.net>\r\n")
    c.expect(500, "5.5.2")
    c.ok("RCPT TO:<alice@localhost>", 503, "5.5.1")   # no transaction opened


def test_text_line_limit(hk, raw):
    c = raw(hk.port)
    c.begin()
    c.ok("DATA", 354)
    ok_line = b"a" * 998 + b"\r\n"           # 1000 with CRLF: allowed
    c.send(b"Subject: ok\r\n\r\n" + ok_line + b".\r\n")
    c.expect(250, "2.0.0")
    c.begin(ehlo=False)
    c.ok("DATA", 354)
    c.send(b"Subject: long\r\n\r\n" + b"b" * 999 + b"\r\nend\r\n.\r\n")
    code, lines = c.reply()
    assert code // 100 == 5 and lines[0][4:9] in ("5.6.0", "5.5.2", "5.3.4"), lines
    c.ok("NOOP", 250)
    (msg,) = hk.read_delivered("alice")
    assert ok_line[:998] in msg
    time.sleep(0.1)
    assert len(hk.delivered("alice")) == 1


def test_recipient_limit(hk, raw):
    c = raw(hk.port)
    c.begin(rcpts=["r1@localhost", "r2@localhost", "r3@localhost"])
    c.ok("RCPT TO:<r4@localhost>", 452, "4.5.3")
    c.ok("RCPT TO:<r1@localhost>", 452, "4.5.3")
    c.data("Subject: three\r\n\r\nx\r\n")
    for u in ("r1", "r2", "r3"):
        hk.wait_delivered(u)
    assert hk.delivered("r4") == []


def test_error_limit(hk, raw):
    c = raw(hk.port)
    c.ehlo()
    for _ in range(4):
        c.ok("BOGUS", 500, "5.5.2")
    c.ok("NOOP", 250)                       # four errors: still open
    c.send("BOGUS\r\n")
    c.expect(500, "5.5.2")
    lines = c.expect(421, "4.7.0")
    assert "mx.test.example" in lines[0]
    assert c.closed()
    assert wait_event(hk, "error_limit", errors="5")


def test_error_limit_pipelined(hk, raw):
    """Errors in one pipelined burst: replies stop at the 421, the commands
    after it are not executed."""
    c = raw(hk.port)
    c.ehlo()
    c.send("X\r\n" * 5 + "MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@localhost>\r\n"
           "DATA\r\nSubject: no\r\n\r\nx\r\n.\r\n")
    for _ in range(5):
        c.expect(500, "5.5.2")
    c.expect(421, "4.7.0")
    assert c.closed()
    assert c.buf == b""
    time.sleep(0.2)
    assert hk.delivered("alice") == []


def sized_message(size):
    """A message of exactly size octets (content before the final dot)."""
    body = b"Subject: size\r\n\r\n"
    while size - len(body) > 200:
        body += b"x" * 98 + b"\r\n"
    body += b"y" * (size - len(body) - 2) + b"\r\n"
    assert len(body) == size
    return body


def test_message_size_boundary(hk, raw):
    c = raw(hk.port)
    c.ehlo()
    for size, code, enh in ((10240, 250, "2.0.0"), (10241, 552, "5.3.4")):
        c.begin(ehlo=False)
        c.ok("DATA", 354)
        c.send(sized_message(size) + b".\r\n")
        c.expect(code, enh)
    c.ok("NOOP", 250)
    (msg,) = hk.read_delivered("alice")
    assert msg.endswith(b"y\n")


def test_size_limit_counts_unstuffed_content(hk, raw):
    """Dot-stuffing does not count: 10K of '.'-lines, stuffed, is accepted."""
    c = raw(hk.port)
    head = b"Subject: dots\r\n\r\n"
    line = b"." + b"d" * 97 + b"\r\n"                 # 100 octets unstuffed
    n = (10 * 1024 - len(head)) // len(line)
    body = head + line * n
    c.begin()
    c.ok("DATA", 354)
    c.send(body.replace(b"\r\n.", b"\r\n..") + b".\r\n")
    c.expect(250, "2.0.0")
    (msg,) = hk.read_delivered("alice")
    assert msg.count(b"\n.ddd") == n


def test_header_size_limit(hk, raw):
    c = raw(hk.port)
    hdrs = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"h" * 60) for i in range(40))  # ~3K
    c.begin()
    c.ok("DATA", 354)
    c.send(hdrs + b"\r\nbody\r\n.\r\n")
    c.expect(552)
    # the same octets in the body are fine
    c.begin(ehlo=False)
    c.ok("DATA", 354)
    c.send(b"Subject: s\r\n\r\n" + hdrs + b".\r\n")
    c.expect(250, "2.0.0")
    assert len(hk.read_delivered("alice")) == 1


def received(n):
    return b"".join(b"Received: from h%d.example by h%d.example; Thu, 1 Jan 2026 00:00:00 +0000\r\n"
                    % (i, i + 1) for i in range(n))


def test_received_hops(hk, raw):
    c = raw(hk.port)
    c.begin()
    c.ok("DATA", 354)
    c.send(received(6) + b"Subject: loop\r\n\r\nx\r\n.\r\n")
    c.expect(554, "5.4.6")
    c.begin(ehlo=False)
    c.ok("DATA", 354)                          # N hops is still fine
    c.send(received(5) + b"Subject: ok\r\n\r\nx\r\n.\r\n")
    c.expect(250, "2.0.0")
    c.begin(ehlo=False)
    c.ok("DATA", 354)                          # lower case, folded, still counted
    c.send(received(5) + b"RECEIVED: from x\r\n\tby y; Thu, 1 Jan 2026 00:00:00 +0000\r\n"
           b"Subject: loop2\r\n\r\nx\r\n.\r\n")
    c.expect(554, "5.4.6")
    c.begin(ehlo=False)
    c.ok("DATA", 354)                          # Received: lines in the body do not count
    c.send(b"Subject: body\r\n\r\n" + received(8) + b".\r\n")
    c.expect(250, "2.0.0")
    msgs = hk.read_delivered("alice", count=2)
    assert len(msgs) == 2
    time.sleep(0.1)
    assert len(hk.delivered("alice")) == 2


@pytest.fixture
def hk_fast(hikyaku):
    return hikyaku(limits=dict(LIMITS),
                   timeouts={"command": "1s", "data": "1s", "session": "2s"})


def test_command_timeout(hk_fast, raw):
    c = raw(hk_fast.port)
    c.ehlo()
    t0 = time.time()
    lines = c.expect(421, "4.4.2")
    assert 0.8 < time.time() - t0 < 2.5
    assert "mx.test.example" in lines[0]
    assert c.closed()
    assert wait_event(hk_fast, "timeout")


def test_partial_command_times_out(hk_fast, raw):
    c = raw(hk_fast.port)
    c.ehlo()
    c.send("NOOP")          # no CRLF ever
    c.expect(421, "4.4.2")
    assert c.closed()


def test_data_timeout(hk_fast, raw):
    c = raw(hk_fast.port)
    c.begin()
    c.ok("DATA", 354)
    c.send("Subject: slow\r\n\r\npartial")
    t0 = time.time()
    c.expect(421, "4.4.2")
    assert time.time() - t0 < 2.5
    assert c.closed()
    time.sleep(0.1)
    assert hk_fast.delivered("alice") == []
    assert hk_fast.queue_files() == []


def test_session_deadline(hk_fast, raw):
    """A client that stays busy (never idle) is still cut off."""
    c = raw(hk_fast.port)
    c.ehlo()
    t0 = time.time()
    while time.time() - t0 < 5:
        c.send("NOOP\r\n")
        code, lines = c.reply()
        if code != 250:
            break
        time.sleep(0.3)
    assert code == 421 and lines[0].startswith("421 4.4.2 "), lines
    assert 1.5 < time.time() - t0 < 3.5
    assert c.closed()
    assert wait_event(hk_fast, "deadline")


def connect_from(port, src):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


def read_reply(s):
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_connections_per_ip(hk, raw):
    a = raw(hk.port)
    b = raw(hk.port)
    assert a.greeting[0] == 220 and b.greeting[0] == 220
    s = connect_from(hk.port, "127.0.0.1")
    assert read_reply(s) == b"421 4.7.0 mx.test.example Too many connections, try again later\r\n"
    assert s.recv(10) == b""
    s.close()
    # another address still gets in, and a freed slot is reusable
    o = connect_from(hk.port, "127.0.0.2")
    assert read_reply(o).startswith(b"220 ")
    a.ok("QUIT", 221)
    assert a.closed()
    deadline = time.time() + 5
    while True:
        c = connect_from(hk.port, "127.0.0.1")
        r = read_reply(c)
        if r.startswith(b"220 ") or time.time() > deadline:
            break
        c.close()
        time.sleep(0.05)
    assert r.startswith(b"220 ")
    c.close()
    o.close()
    assert any(e.get("reason") == "per_ip_limit" for e in log_events(hk, "refuse"))


def test_connections_total(hk, raw):
    socks = [connect_from(hk.port, src) for src in ("127.0.0.1", "127.0.0.2", "127.0.0.3")]
    for s in socks:
        assert read_reply(s).startswith(b"220 ")
    s = connect_from(hk.port, "127.0.0.4")
    assert read_reply(s).startswith(b"421 4.7.0 ")
    s.close()
    # the refused one did not use up a slot; closing one frees one
    socks[0].close()
    deadline = time.time() + 5
    while True:
        s = connect_from(hk.port, "127.0.0.5")
        r = read_reply(s)
        if r.startswith(b"220 ") or time.time() > deadline:
            break
        s.close()
        time.sleep(0.05)
    assert r.startswith(b"220 ")
    # the admitted sessions work
    s.sendall(b"EHLO x\r\n")
    assert read_reply(s).startswith(b"250-")
    s.close()
    for x in socks[1:]:
        x.close()
    assert any(e.get("reason") == "connection_limit" for e in log_events(hk, "refuse"))


def test_recipient_count_resets_per_transaction(hk, raw):
    c = raw(hk.port)
    c.begin(rcpts=["r1@localhost", "r2@localhost", "r3@localhost"])
    c.ok("RSET", 250)
    c.begin(ehlo=False, rcpts=["r4@localhost", "r5@localhost", "r6@localhost"])
    c.data("Subject: x\r\n\r\nx\r\n")
    hk.wait_delivered("r6")



def test_recipient_overshoot_is_not_an_error(hk, raw):
    """RFC 5321 §4.5.3.1.10: a client over the recipient limit gets 452 and
    sends the rest later; the excess must not trip the error limit and take
    the accepted recipients down with the session."""
    c = raw(hk.port)
    c.ehlo()
    c.send("MAIL FROM:<a@example.net>\r\n" +
           "".join(f"RCPT TO:<r{i}@localhost>\r\n" for i in range(12)) + "DATA\r\n")
    c.expect(250, "2.1.0")
    for i in range(12):
        c.expect(250 if i < 3 else 452, "2.1.5" if i < 3 else "4.5.3")
    c.expect(354)
    c.send("Subject: overshoot\r\n\r\nx\r\n.\r\n")
    c.expect(250, "2.0.0")
    for u in ("r0", "r1", "r2"):
        hk.wait_delivered(u)
    assert hk.delivered("r3") == []
    # real errors still count
    for _ in range(4):
        c.ok("BOGUS", 500, "5.5.2")
    c.send("BOGUS\r\n")
    c.expect(500, "5.5.2")
    c.expect(421, "4.7.0")


def test_client_not_reading_is_cut_off(hk_fast):
    """Pipelined commands whose replies are never read: the server stops
    reading (bounded output queue) and the write timeout ends the session."""
    s = socket.create_connection(("127.0.0.1", hk_fast.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    try:
        s.sendall(b"EHLO x\r\n" + b"NOOP\r\n" * 300000)
    except OSError:
        pass                    # the server may already have hung up
    t0 = time.time()
    assert wait_event(hk_fast, "timeout", timeout=5)
    assert time.time() - t0 < 4
    assert wait_event(hk_fast, "disconnect", count=2)
    s.close()


# --- running out of file descriptors ---------------------------------------------

def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_open_file_limit_is_raised_to_what_the_config_needs(hikyaku):
    """Started with a soft limit of 256 (hard one higher), the daemon raises
    it to limits.connections + outbound + idle + margin; with a hard limit
    below that it says so at start."""
    hk = hikyaku(start=False, limits={"connections": 300})
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 1000:
        pytest.skip(f"hard RLIMIT_NOFILE is {hard}")
    hk.preexec = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    hk.start()
    need = 300 + 100 + 64 + 128
    assert wait_event(hk, "rlimit_nofile_raised", to=str(need))
    with open(f"/proc/{hk.proc.pid}/limits") as f:
        line = next(l for l in f if l.startswith("Max open files"))
    assert int(line.split()[3]) == need, line
    hk.stop()

    hk.preexec = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))
    hk.start()
    assert wait_event(hk, "rlimit_nofile_low", have="200", need=str(need))


def test_out_of_file_descriptors_pauses_accepting_and_recovers(hikyaku):
    """When accept() fails with EMFILE the listener pauses instead of
    spinning on the still-readable socket: little CPU, few log lines, and
    once sessions end the clients waiting in the backlog are served."""
    hk = hikyaku(processes={"smtpd": 1})
    (pid,) = hk.child_pids("smtpd")  # the process that accepts
    # smtpd holds a pool of message files the queue sends after its start:
    # count its descriptors once that has settled.
    base, still = -1, 0
    while still < 5:
        n = len(os.listdir(f"/proc/{pid}/fd"))
        still = still + 1 if n == base else 0
        base = n
        time.sleep(0.1)
    limit = base + 8
    # smtpd runs as the service user: lower its limit as that user (root
    # may lack CAP_SYS_RESOURCE for another user's process in a container)
    st = os.stat(f"/proc/{pid}")
    subprocess.run(["setpriv", f"--reuid={st.st_uid}", f"--regid={st.st_gid}", "--clear-groups",
                    "prlimit", f"--pid={pid}", f"--nofile={limit}:{limit}"], check=True)
    held = []
    for _ in range(20):  # more than the limit leaves room for
        s = socket.create_connection(("127.0.0.1", hk.port), timeout=5)
        held.append(s)
    assert wait_event(hk, "accept_error", timeout=5)
    t0 = _cpu_seconds(pid)
    time.sleep(1.5)
    used = _cpu_seconds(pid) - t0
    assert used < 0.5, f"{used:.2f} s of CPU in 1.5 s: the accept loop spins"
    assert len(log_events(hk, "accept_error")) <= 3
    # Sessions that end free descriptors; everyone waiting gets served.
    for s in held:
        s.close()
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=10) as c:
        c.ehlo("client.example")
        code, _ = c.noop()
        assert code == 250
