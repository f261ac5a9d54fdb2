"""CHUNKING / BDAT (RFC 3030): single and multiple chunks, BDAT 0 LAST,
pipelining, refused chunks that must still be skipped to stay in sync,
mixing with DATA, and byte-exact content (no dot-unstuffing)."""
import time

import pytest

from conftest import qid_of


def bdat(c, data, last=False):
    c.send(b"BDAT %d%s\r\n" % (len(data), b" LAST" if last else b"") + data)


def test_bdat_single_last(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.begin()
    bdat(c, b"Subject: chunk\r\n\r\nhello\r\n", last=True)
    qid = qid_of(c.expect(250, "2.0.0"))
    (msg,) = hk.read_delivered("alice")
    assert f"with ESMTP id {qid}".encode() in msg
    assert msg.endswith(b"Subject: chunk\n\nhello\n")


def test_bdat_several_chunks(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.begin()
    parts = [b"Subject: multi\r\n", b"\r\nfirst ", b"second\r\n", b"third\r\n"]
    total = 0
    for p in parts[:-1]:
        bdat(c, p)
        total += len(p)
        assert c.expect(250, "2.0.0") == [f"250 2.0.0 {total} octets received"]
    bdat(c, parts[-1], last=True)
    qid_of(c.expect(250, "2.0.0"))
    (msg,) = hk.read_delivered("alice")
    assert msg.endswith(b"Subject: multi\n\nfirst second\nthird\n")


def test_bdat_zero_last(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.begin()
    bdat(c, b"Subject: zero\r\n\r\nbody\r\n")
    c.expect(250, "2.0.0")
    c.send("BDAT 0 LAST\r\n")
    qid_of(c.expect(250, "2.0.0"))
    (msg,) = hk.read_delivered("alice")
    assert msg.endswith(b"\nbody\n")


def test_bdat_only_zero_last(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.begin()
    c.send("BDAT 0 LAST\r\n")
    qid_of(c.expect(250, "2.0.0"))
    (msg,) = hk.read_delivered("alice")
    assert msg.startswith(b"Return-Path: <sender@example.net>\n")


def test_bdat_pipelined(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.ehlo()
    c.send(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@localhost>\r\nRCPT TO:<bob@localhost>\r\n"
           b"BDAT 10\r\nSubject: pBDAT 10 LAST\r\n\r\n\r\nbody\r\nNOOP\r\n"
           b"MAIL FROM:<b@example.net>\r\nRCPT TO:<carol@localhost>\r\nBDAT 9 LAST\r\nS: 2\r\n\r\nx"
           b"QUIT\r\n")
    c.expect(250, "2.1.0")
    c.expect(250, "2.1.5")
    c.expect(250, "2.1.5")
    assert c.expect(250, "2.0.0") == ["250 2.0.0 10 octets received"]
    qid1 = qid_of(c.expect(250, "2.0.0"))
    c.expect(250, "2.0.0")                 # NOOP
    c.expect(250, "2.1.0")
    c.expect(250, "2.1.5")
    qid2 = qid_of(c.expect(250, "2.0.0"))
    c.expect(221, "2.0.0")
    assert qid1 != qid2
    (m,) = hk.read_delivered("bob")
    assert m.endswith(b"Subject: p\n\nbody\n")
    (m,) = hk.read_delivered("carol")
    assert m.endswith(b"S: 2\n\nx")


def test_bdat_without_mail_is_skipped(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.ehlo()
    # the chunk looks like commands: it must be skipped, not executed
    chunk = b"QUIT\r\nMAIL FROM:<e@example.net>\r\n"
    bdat(c, chunk)
    c.expect(503, "5.5.1")
    c.ok("NOOP", 250, "2.0.0")             # still in sync, still open
    bdat(c, chunk, last=True)
    c.expect(503, "5.5.1")
    c.ok("RCPT TO:<alice@localhost>", 503, "5.5.1")  # the chunk's MAIL did not run
    c.begin(ehlo=False)
    bdat(c, b"Subject: ok\r\n\r\nok\r\n", last=True)
    c.expect(250, "2.0.0")
    hk.wait_delivered("alice")


def test_bdat_before_ehlo_is_skipped(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.send(b"BDAT 6\r\nQUIT\r\nNOOP\r\n")
    c.expect(503, "5.5.1")
    c.expect(250, "2.0.0")


def test_bdat_without_rcpt_is_skipped(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<a@example.net>", 250)
    c.send(b"BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n")
    code, lines = c.reply()
    assert code in (503, 554) and lines[0][4:9] == "5.5.1", lines
    c.expect(250, "2.0.0")
    c.ok("RCPT TO:<alice@localhost>", 250, "2.1.5")   # transaction still open
    bdat(c, b"S: x\r\n\r\ny\r\n", last=True)
    c.expect(250, "2.0.0")
    hk.wait_delivered("alice")


def test_refused_bdat_chunk_split_across_writes(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.ehlo()
    c.send(b"BDAT 12\r\nQUIT\r\n")
    time.sleep(0.05)
    c.send(b"QUIT\r\n")
    c.expect(503, "5.5.1")
    c.ok("NOOP", 250)


def test_bdat_then_data(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.begin()
    bdat(c, b"Subject: x\r\n")
    c.expect(250, "2.0.0")
    c.ok("DATA", 503, "5.5.1")
    c.ok("RCPT TO:<bob@localhost>", 503, "5.5.1")
    bdat(c, b"\r\nrest\r\n", last=True)
    c.expect(250, "2.0.0")
    (msg,) = hk.read_delivered("alice")
    assert msg.endswith(b"Subject: x\n\nrest\n")
    assert hk.delivered("bob") == []


def test_bdat_content_byte_exact(hikyaku, raw):
    """No dot-unstuffing and no end-of-data detection inside BDAT."""
    hk = hikyaku()
    c = raw(hk.port)
    c.begin()
    content = (b"Subject: exact\r\n\r\n.\r\n..\r\n..x\r\n.\r\n\r\n.\r\n"
               b"\xe9\xff\x00bin\r\nMAIL FROM:<x@y>\r\n" + (b"z" * 998 + b"\r\n") * 5)
    bdat(c, content[:7])
    c.expect(250)
    bdat(c, content[7:23])
    c.expect(250)
    bdat(c, content[23:], last=True)
    c.expect(250, "2.0.0")
    (msg,) = hk.read_delivered("alice")
    body = msg.split(b"Subject: exact\n", 1)[1]
    assert body == content.split(b"Subject: exact\r\n", 1)[1].replace(b"\r\n", b"\n")


def test_bdat_chunk_split_over_many_writes(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.begin()
    data = b"Subject: slow\r\n\r\n" + b"0123456789\r\n" * 20
    c.send(b"BDAT %d LAST\r\n" % len(data))
    for i in range(0, len(data), 37):
        c.send(data[i:i + 37])
        time.sleep(0.005)
    c.expect(250, "2.0.0")
    (msg,) = hk.read_delivered("alice")
    assert msg.endswith(b"\n\n" + b"0123456789\n" * 20)


def test_rset_after_chunk(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.begin(rcpts=["bob@localhost"])
    bdat(c, b"Subject: aborted\r\n")
    c.expect(250)
    c.ok("RSET", 250, "2.0.0")
    c.begin(ehlo=False)
    bdat(c, b"Subject: fresh\r\n\r\nx\r\n", last=True)
    c.expect(250, "2.0.0")
    (msg,) = hk.read_delivered("alice")
    assert b"aborted" not in msg and b"Subject: fresh" in msg
    assert hk.delivered("bob") == []


def test_bdat_total_over_size(hikyaku, raw):
    hk = hikyaku(limits={"message_size": "10K"})
    c = raw(hk.port)
    c.begin()
    chunk = (b"x" * 98 + b"\r\n") * 60    # 6000 octets
    bdat(c, chunk)
    c.expect(250)
    bdat(c, chunk, last=True)
    c.expect(552, "5.3.4")
    c.ok("NOOP", 250)
    assert hk.delivered("alice") == []


def test_bdat_chunk_over_size(hikyaku, raw):
    hk = hikyaku(limits={"message_size": "10K"})
    c = raw(hk.port)
    c.begin()
    c.send(b"BDAT 20000 LAST\r\n")
    c.expect(552, "5.3.4")


@pytest.mark.parametrize("args", ["", "abc", "10 LASTX", "-1", "99999999999999999999999"])
def test_bdat_bad_syntax(hikyaku, raw, args):
    hk = hikyaku()
    c = raw(hk.port)
    c.begin()
    c.send(f"BDAT {args}".rstrip() + "\r\n")
    code, lines = c.reply()
    assert code == 501 and lines[0][4:9] in ("5.5.4", "5.5.2"), lines
    # the server cannot know how much to skip: it must hang up
    assert c.closed()
    assert hk.delivered("alice") == []


def test_bdat_data_timeout(hikyaku, raw):
    hk = hikyaku(timeouts={"command": "1s", "data": "1s"})
    c = raw(hk.port)
    c.begin()
    c.send(b"BDAT 100 LAST\r\nonly a bit")
    c.expect(421, "4.4.2")
    assert c.closed()
    assert hk.delivered("alice") == []
