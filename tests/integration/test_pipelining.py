"""PIPELINING (RFC 2920): replies in order for commands sent in one write,
large bursts, byte-by-byte input, and commands pipelined after the end of
data that must run only after the message's 250."""
import socket
import time

from conftest import qid_of, wait_event


def test_transaction_in_one_write(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.ehlo()
    c.send("MAIL FROM:<a@example.net>\r\nRCPT TO:<r1@localhost>\r\nRCPT TO:<nobody@remote.example>\r\n"
           "RCPT TO:<r3@localhost>\r\nDATA\r\n")
    c.expect(250, "2.1.0")
    c.expect(250, "2.1.5")
    c.expect(554, "5.7.1")
    c.expect(250, "2.1.5")
    c.expect(354)
    c.send("Subject: piped\r\n\r\nx\r\n.\r\n")
    c.expect(250, "2.0.0")
    hk.wait_delivered("r1")
    hk.wait_delivered("r3")


def test_whole_session_in_one_write(hikyaku, raw):
    """RFC 2920 §3.1: the client may send through DATA and beyond; the text
    after DATA is message content once 354 is due."""
    hk = hikyaku()
    c = raw(hk.port)
    c.send("EHLO x\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<r1@localhost>\r\n"
           "RCPT TO:<r2@localhost>\r\nRCPT TO:<r3@localhost>\r\nDATA\r\n"
           "Subject: one write\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    assert c.reply()[0] == 250
    for code in (250, 250, 250, 250, 354, 250, 221):
        assert c.reply()[0] == code
    assert c.closed()
    for u in ("r1", "r2", "r3"):
        (m,) = hk.read_delivered(u)
        assert m.endswith(b"Subject: one write\n\nbody\n")


def test_noop_burst(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.ehlo()
    c.send("NOOP\r\n" * 50 + "VRFY x\r\n")
    for _ in range(50):
        c.expect(250, "2.0.0")
    c.expect(252, "2.5.2")


def test_large_burst_with_unread_replies(hikyaku, raw):
    """The client writes a lot before reading: the server must not drop
    commands or replies (it stops reading while its output is backed up)."""
    hk = hikyaku()
    c = raw(hk.port)
    c.ehlo()
    n = 20000
    c.send(b"NOOP\r\n" * n + b"QUIT\r\n")
    time.sleep(0.2)                 # let the replies pile up unread
    data = c.buf
    while True:
        chunk = c.sock.recv(65536)
        if not chunk:
            break
        data += chunk
    assert data == b"250 2.0.0 Ok\r\n" * n + b"221 2.0.0 mx.test.example Bye\r\n"


def test_byte_by_byte_session(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    script = (b"EHLO bytewise.example\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<alice@localhost>\r\n"
              b"DATA\r\nSubject: bytes\r\n\r\n..dot\r\nline\r\n.\r\n"
              b"MAIL FROM:<b@example.net>\r\nRCPT TO:<bob@localhost>\r\nBDAT 16 LAST\r\n"
              b"Subject: b2\r\n\r\nx" + b"QUIT\r\n")
    for b in script:
        c.sock.sendall(bytes([b]))
    assert c.reply()[0] == 250                         # EHLO
    c.expect(250, "2.1.0")
    c.expect(250, "2.1.5")
    c.expect(354)
    qid_of(c.expect(250, "2.0.0"))
    c.expect(250, "2.1.0")
    c.expect(250, "2.1.5")
    qid_of(c.expect(250, "2.0.0"))
    c.expect(221, "2.0.0")
    (m,) = hk.read_delivered("alice")
    assert m.endswith(b"Subject: bytes\n\n.dot\nline\n")
    assert b"Received: from bytewise.example" in m
    (m,) = hk.read_delivered("bob")
    assert m.endswith(b"Subject: b2\n\nx")


def test_commands_after_end_of_data(hikyaku, raw):
    """Commands in the same packet as CRLF.CRLF run after the 250, and a
    transaction in them sees the first message as finished."""
    hk = hikyaku()
    c = raw(hk.port)
    c.begin()
    c.ok("DATA", 354)
    c.send("Subject: first\r\n\r\none\r\n.\r\nMAIL FROM:<b@example.net>\r\n"
           "RCPT TO:<bob@localhost>\r\nDATA\r\nSubject: second\r\n\r\ntwo\r\n.\r\nNOOP\r\n")
    q1 = qid_of(c.expect(250, "2.0.0"))
    c.expect(250, "2.1.0")
    c.expect(250, "2.1.5")
    c.expect(354)
    q2 = qid_of(c.expect(250, "2.0.0"))
    c.expect(250, "2.0.0")
    assert q1 != q2
    (m1,) = hk.read_delivered("alice")
    (m2,) = hk.read_delivered("bob")
    assert m1.endswith(b"\none\n") and b"second" not in m1
    assert m2.endswith(b"\ntwo\n")


def test_pipelined_errors_keep_order(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.ehlo()
    c.send("RCPT TO:<alice@localhost>\r\nMAIL FROM:<bad address>\r\nMAIL FROM:<a@example.net>\r\n"
           "FOO\r\nRCPT TO:<alice@localhost>\r\nRSET\r\nDATA\r\n")
    c.expect(503, "5.5.1")
    c.expect(501, "5.1.7")
    c.expect(250, "2.1.0")
    c.expect(500, "5.5.2")
    c.expect(250, "2.1.5")
    c.expect(250, "2.0.0")
    c.expect(503, "5.5.1")


def test_rejected_data_with_pipelined_content(hikyaku, raw):
    """All RCPTs refused, DATA refused: the pipelined content that follows
    is then read as commands (RFC 2920 §3.1 client duty), each refused, and
    nothing is delivered."""
    hk = hikyaku(limits={"errors": 50})
    c = raw(hk.port)
    c.ehlo()
    c.send("MAIL FROM:<a@example.net>\r\nRCPT TO:<x@remote.example>\r\nDATA\r\n"
           "Subject: orphan\r\n.\r\nNOOP\r\n")
    c.expect(250, "2.1.0")
    c.expect(554, "5.7.1")
    code, lines = c.reply()
    assert code in (503, 554), lines
    c.expect(500, "5.5.2")     # "Subject: orphan"
    c.expect(500, "5.5.2")     # "."
    c.expect(250, "2.0.0")
    time.sleep(0.1)
    assert hk.queue_files() == []


def read_all(c):
    data = c.buf
    while True:
        chunk = c.sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_half_close_after_data_gets_250(hikyaku, raw):
    """A client that shuts down its sending side right after the final dot
    (nc -N, scripts) is still owed the 250: the message is accepted, so
    dropping the reply would make the client resend it (a duplicate)."""
    hk = hikyaku()
    for i in range(3):
        c = raw(hk.port)
        c.send("EHLO x\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<alice@localhost>\r\nDATA\r\n"
               "Subject: half %d\r\n\r\nx\r\n.\r\n" % i)
        c.sock.shutdown(socket.SHUT_WR)
        data = read_all(c)
        assert data.rstrip(b"\r\n").rsplit(b"\r\n", 1)[1].startswith(b"250 2.0.0 Ok: queued as ")
    assert len(hk.wait_delivered("alice", count=3)) == 3


def test_half_close_after_bdat_gets_250(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.send(b"EHLO x\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<alice@localhost>\r\n"
           b"BDAT 9 LAST\r\nS: x\r\n\r\ny")
    c.sock.shutdown(socket.SHUT_WR)
    last = read_all(c).rstrip(b"\r\n").rsplit(b"\r\n", 1)[1]
    assert last.startswith(b"250 2.0.0 Ok: queued as "), last
    hk.wait_delivered("alice")


def test_half_close_after_commands(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.send("EHLO x\r\n" + "NOOP\r\n" * 100 + "VRFY x\r\n")
    c.sock.shutdown(socket.SHUT_WR)
    data = read_all(c)
    assert data.count(b"250 2.0.0 Ok\r\n") == 100
    assert data.endswith(b"252 2.5.2 Cannot VRFY user, but will accept message and attempt "
                         b"delivery\r\n")


def test_half_close_mid_data_delivers_nothing(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.begin()
    c.ok("DATA", 354)
    c.send("Subject: cut\r\n\r\nno end")
    c.sock.shutdown(socket.SHUT_WR)
    assert read_all(c) == b""
    assert wait_event(hk, "lost")
    assert hk.delivered("alice") == []
    assert hk.queue_files() == []


def test_abrupt_disconnects_leave_server_healthy(hikyaku, raw):
    hk = hikyaku()
    for script in (b"EHLO x\r\nMAIL FROM:<a@example.net>\r\n",
                   b"EHLO x\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<alice@localhost>\r\nDATA\r\nSub",
                   b"EHLO x\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<alice@localhost>\r\nBDAT 100\r\nab",
                   b"BDAT 50\r\nxx", b"NOOP " + b"x" * 2000):
        s = socket.create_connection(("127.0.0.1", hk.port))
        s.sendall(script)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()                 # RST
    c = raw(hk.port)
    c.begin()
    c.data("Subject: alive\r\n\r\nx\r\n")
    (m,) = hk.read_delivered("alice")
    assert b"Subject: alive" in m
