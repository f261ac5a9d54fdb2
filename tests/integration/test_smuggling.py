"""SMTP smuggling (2023) and the DATA terminator: only CRLF "." CRLF ends a
message (RFC 5321 §4.1.1.4); a bare CR or LF "." line must neither end it
nor let the commands after it run. Dot-unstuffing (RFC 5321 §4.5.2)."""
import time

import pytest

SMUGGLED = (b"MAIL FROM:<evil@example.net>\r\nRCPT TO:<smuggled@localhost>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nevil\r\n")

SEPARATORS = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r.\r\n", b"\n.\r",
              b"\r\n.\r\r\n", b"\r\n.\n\r\n"]


def assert_session_usable(hk, c):
    c.ok("NOOP", 250, "2.0.0")
    c.begin(ehlo=False, rcpts=["after@localhost"])
    c.data("Subject: after\r\n\r\nclean\r\n")
    (msg,) = hk.read_delivered("after")
    assert msg.endswith(b"\nclean\n")


@pytest.mark.parametrize("sep", SEPARATORS, ids=lambda b: b.hex())
def test_smuggling_rejected(hikyaku, raw, sep):
    hk = hikyaku()
    c = raw(hk.port)
    c.begin(rcpts=["alice@localhost"])
    c.ok("DATA", 354)
    c.send(b"Subject: outer\r\n\r\nhello" + sep + SMUGGLED + b".\r\n")
    # exactly one reply, for the whole message, at the real CRLF.CRLF
    c.expect(550, "5.6.0")
    c.sock.settimeout(0.15)
    with pytest.raises(OSError):
        c.line()          # no stray replies to the smuggled commands
    c.sock.settimeout(10)
    assert_session_usable(hk, c)
    assert hk.delivered("smuggled") == []
    assert hk.delivered("alice") == []
    assert "event=reject" in hk.log()


@pytest.mark.parametrize("sep", [b"\n.\n", b"\r\n.\n", b"\r.\r"], ids=lambda b: b.hex())
def test_smuggling_split_writes(hikyaku, raw, sep):
    """The bare terminator split over several TCP segments is still no end."""
    hk = hikyaku()
    c = raw(hk.port)
    c.begin(rcpts=["alice@localhost"])
    c.ok("DATA", 354)
    c.send(b"Subject: outer\r\n\r\nhello")
    for b in sep:
        time.sleep(0.02)
        c.send(bytes([b]))
    time.sleep(0.02)
    c.send(SMUGGLED)
    time.sleep(0.02)
    c.send(b".\r\n")
    c.expect(550, "5.6.0")
    assert_session_usable(hk, c)
    assert hk.delivered("smuggled") == []


def test_bare_lf_in_content_rejected(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.begin()
    c.ok("DATA", 354)
    c.send(b"Subject: lf\r\n\r\nline one\nline two\r\n.\r\n")
    c.expect(550, "5.6.0")
    c.ok("NOOP", 250)
    assert hk.delivered("alice") == []


def test_smuggling_with_pipelined_data_end(hikyaku, raw):
    """Smuggled end plus a real end in one write, then a real command."""
    hk = hikyaku()
    c = raw(hk.port)
    c.begin(rcpts=["alice@localhost"])
    c.ok("DATA", 354)
    c.send(b"Subject: outer\r\n\r\nx\n.\n" + SMUGGLED + b".\r\nNOOP\r\n")
    c.expect(550, "5.6.0")
    c.expect(250, "2.0.0")
    assert hk.delivered("smuggled") == []


@pytest.mark.parametrize("sent,delivered", [
    (b"..x\r\n", b".x\n"),
    (b"..\r\n", b".\n"),
    (b"...\r\n", b"..\n"),
    (b"..\r\n..\r\n", b".\n.\n"),
    (b"a.\r\n.a\r\n", b"a.\na\n"),      # ".a" (unstuffed by a broken client) loses its dot
    (b" .\r\n", b" .\n"),
    (b"x\r\n..\r\nafter\r\n", b"x\n.\nafter\n"),
])
def test_dot_unstuffing(hikyaku, raw, sent, delivered):
    hk = hikyaku()
    c = raw(hk.port)
    c.begin()
    c.ok("DATA", 354)
    c.send(b"Subject: dots\r\n\r\n" + sent + b".\r\n")
    c.expect(250, "2.0.0")
    (msg,) = hk.read_delivered("alice")
    body = msg.split(b"Subject: dots\n\n", 1)[1]
    assert body == delivered


def test_dot_line_in_headers(hikyaku, raw):
    """A dot-stuffed line right after DATA (first line of the content)."""
    hk = hikyaku()
    c = raw(hk.port)
    c.begin()
    c.ok("DATA", 354)
    c.send(b"..Subject-ish: y\r\nSubject: z\r\n\r\nb\r\n.\r\n")
    c.expect(250, "2.0.0")
    (msg,) = hk.read_delivered("alice")
    assert b"\n.Subject-ish: y\nSubject: z\n\nb\n" in msg


def test_empty_message(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.begin()
    c.ok("DATA", 354)
    c.send(b".\r\n")
    c.expect(250, "2.0.0")
    (msg,) = hk.read_delivered("alice")
    assert msg.startswith(b"Return-Path: <sender@example.net>\n")
    assert b"Received: from client.example" in msg


def test_terminator_split_across_writes(hikyaku, raw):
    """A legitimate CRLF.CRLF split at every possible point still ends it."""
    hk = hikyaku()
    c = raw(hk.port)
    c.ehlo()
    term = b"\r\n.\r\n"
    for i in range(1, len(term)):
        c.begin(ehlo=False)
        c.ok("DATA", 354)
        c.send(b"Subject: split %d\r\n\r\nbody" % i + term[:i])
        time.sleep(0.05)
        c.send(term[i:])
        c.expect(250, "2.0.0")
    msgs = hk.read_delivered("alice", count=len(term) - 1)
    assert all(m.endswith(b"\nbody\n") for m in msgs)


@pytest.mark.parametrize("line", [b"NOOP\n", b"NOOP\rRSET\r\n", b"NO\x00OP\r\n",
                                  b"MAIL FROM:<a@example.net>\n"])
def test_command_line_needs_crlf(hikyaku, raw, line):
    """A bare LF or CR never ends or splits a command (RFC 5321 §2.3.8)."""
    hk = hikyaku()
    c = raw(hk.port)
    c.ehlo()
    c.send(line + b"RCPT TO:<alice@localhost>\r\n")
    c.expect(500, "5.5.2")
    c.expect(503, "5.5.1")      # no MAIL was executed


def test_smuggling_in_command_mode(hikyaku, raw):
    """After a refused DATA, a bare-LF "." and a smuggled transaction are
    just bad command lines."""
    hk = hikyaku(limits={"errors": 50})
    c = raw(hk.port)
    c.ehlo()
    c.send(b"NOOP\n.\nMAIL FROM:<e@example.net>\nRCPT TO:<smuggled@localhost>\nDATA\n"
           b"x\n.\r\nNOOP\r\n")
    for _ in range(7):          # each LF-ended piece is one refused line
        c.expect(500, "5.5.2")
    c.expect(250, "2.0.0")
    c.ok("RCPT TO:<smuggled@localhost>", 503, "5.5.1")
    assert hk.delivered("smuggled") == []
