"""SMTP protocol conformance: greeting, EHLO/HELO, command set, ordering,
syntax errors, ESMTP parameters (SIZE, DSN, SMTPUTF8), the queue id and the
Received header (RFC 5321, 1870, 3461, 6531)."""
import re

import pytest

from conftest import log_events, qid_of, wait_event

# A bad value of a known parameter: RFC 5321 §4.2.4 allows 501 (syntax error
# in parameters) or 555 (parameter not recognized / not implemented).
BADVAL = (501, 555)


def test_greeting_and_ehlo_keywords(hikyaku, raw):
    hk = hikyaku(limits={"message_size": "10K"})
    c = raw(hk.port)
    assert c.greeting == (220, ["220 mx.test.example ESMTP hikyaku"])
    lines = c.ehlo("client.example")
    assert lines[0] == "250-mx.test.example Hello client.example [127.0.0.1]"
    kw = [ln[4:] for ln in lines[1:]]
    # STARTTLS: the test config has a (self-signed) certificate; no AUTH
    # without TLS and without a users file.
    assert kw == ["PIPELINING", "SIZE 10240", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8",
                  "CHUNKING", "STARTTLS", "DSN"]
    assert all(ln.startswith("250-") for ln in lines[:-1]) and lines[-1].startswith("250 ")


def test_ehlo_without_tls_has_no_starttls(hikyaku, raw):
    hk = hikyaku(listener={"tls": "none"})
    c = raw(hk.port)
    kw = [ln[4:] for ln in c.ehlo("client.example")[1:]]
    assert "STARTTLS" not in kw and not any(k.startswith("AUTH") for k in kw)


def test_helo(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    assert c.ok("HELO client.example") == ["250 mx.test.example"]
    c.begin(ehlo=False)
    qid = c.data("Subject: helo\r\n\r\nx\r\n")
    (msg,) = hk.read_delivered("alice")
    assert f"by mx.test.example (hikyaku) with SMTP id {qid}".encode() in msg


def test_helo_refuses_esmtp_params(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.ok("HELO client.example")
    c.ok("MAIL FROM:<a@example.net> SIZE=10", 555, "5.5.4")
    c.ok("MAIL FROM:<a@example.net>", 250, "2.1.0")


@pytest.mark.parametrize("cmd,code,enh", [
    ("NOOP", 250, "2.0.0"),
    ("NOOP ignored argument", 250, "2.0.0"),
    ("noop", 250, "2.0.0"),
    ("RSET", 250, "2.0.0"),
    ("VRFY alice", 252, "2.5.2"),
    ("VRFY", 501, "5.5.4"),
    ("HELP", 214, "2.0.0"),
    ("FOO bar", 500, "5.5.2"),
    ("EXPN staff", 500, "5.5.2"),
    ("STARTTLS now", 501, "5.5.4"),
    ("RSET now", 501, "5.5.4"),
    ("EHLO", 501, "5.5.4"),
    ("HELO", 501, "5.5.4"),
])
def test_simple_commands(hikyaku, raw, cmd, code, enh):
    hk = hikyaku()
    c = raw(hk.port)
    c.ehlo()
    c.ok(cmd, code, enh)
    c.ok("NOOP", 250, "2.0.0")  # still in sync
    assert c.ok("QUIT", 221, "2.0.0") == ["221 2.0.0 mx.test.example Bye"]
    assert c.closed()


def test_help_lists_commands(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    (line,) = c.ok("HELP", 214)
    for verb in "EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP".split():
        assert verb in line.split()


def test_commands_before_ehlo(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.ok("MAIL FROM:<a@example.net>", 503, "5.5.1")
    c.ok("RCPT TO:<alice@localhost>", 503, "5.5.1")
    c.ok("DATA", 503, "5.5.1")
    c.ok("NOOP", 250, "2.0.0")
    c.ehlo()
    c.ok("MAIL FROM:<a@example.net>", 250, "2.1.0")


def test_out_of_order(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.ehlo()
    c.ok("RCPT TO:<alice@localhost>", 503, "5.5.1")
    c.ok("DATA", 503, "5.5.1")
    c.ok("MAIL FROM:<a@example.net>", 250, "2.1.0")
    c.ok("MAIL FROM:<b@example.net>", 503, "5.5.1")   # nested MAIL
    c.send("DATA\r\n")                                # no recipients yet
    code, lines = c.reply()
    assert code in (503, 554) and lines[0][4:9] == "5.5.1"
    c.ok("RCPT TO:<alice@localhost>", 250, "2.1.5")
    c.ok("RSET", 250, "2.0.0")
    c.ok("RCPT TO:<alice@localhost>", 503, "5.5.1")   # RSET ended the transaction
    c.begin(ehlo=False)
    c.data("Subject: after errors\r\n\r\nx\r\n")
    hk.wait_delivered("alice")


def test_ehlo_in_transaction_resets(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.begin()
    c.ehlo("again.example")
    c.ok("RCPT TO:<alice@localhost>", 503, "5.5.1")
    c.ok("DATA", 503, "5.5.1")


@pytest.mark.parametrize("arg,code,enh", [
    ("FROM:<>", 250, "2.1.0"),                        # null reverse-path
    ("from:<a@example.net>", 250, "2.1.0"),
    ("FROM: <a@example.net>", 250, "2.1.0"),          # tolerated space
    ("FROM:<@relay.example:a@example.net>", 250, "2.1.0"),  # source route ignored
    ("FROM:a@example.net", 501, "5.1.7"),             # no angle brackets
    ("FROM:<a@>", 501, "5.1.7"),
    ("FROM:<@example.net>", 501, "5.1.7"),
    ("FROM:<a b@example.net>", 501, "5.1.7"),
    ("FROM:<a@example.net", 501, "5.1.7"),
    ("FROM:<a@@example.net>", 501, "5.1.7"),
    ("FROM:<a@exa mple.net>", 501, "5.1.7"),
    ("FROM:<a@example.net> FOO=bar", 555, "5.5.4"),
    ("FROM:<a@example.net> SIZE=abc", BADVAL, "5.5.4"),
    ("FROM:<a@example.net> SIZE=10 SIZE=10", BADVAL, "5.5.4"),
    ("FROM:<a@example.net> BODY=8BITMIME", 250, "2.1.0"),
    ("FROM:<a@example.net> BODY=7BIT", 250, "2.1.0"),
    ("FROM:<a@example.net> BODY=BINARYMIME", BADVAL, "5.5.4"),
])
def test_mail_syntax(hikyaku, raw, arg, code, enh):
    hk = hikyaku()
    c = raw(hk.port)
    c.ehlo()
    c.send(f"MAIL {arg}\r\n")
    got, lines = c.reply()
    assert got in (code if isinstance(code, tuple) else (code,)), lines
    assert lines[0][4:].startswith(enh + " "), lines
    if code != 250:   # no transaction was opened
        c.ok("RCPT TO:<alice@localhost>", 503, "5.5.1")
        c.ok("MAIL FROM:<a@example.net>", 250, "2.1.0")


@pytest.mark.parametrize("arg,code,enh", [
    ("TO:<alice@localhost>", 250, "2.1.5"),
    ("to:<Alice@LOCALHOST>", 250, "2.1.5"),
    ("TO:alice@localhost", 501, "5.1.3"),
    ("TO:<>", 501, "5.1.3"),
    ("TO:<alice@>", 501, "5.1.3"),
    ("TO:<alice@localhost", 501, "5.1.3"),
    ("TO:<ali ce@localhost>", 501, "5.1.3"),
    ("TO:<alice@localhost> FOO=1", 555, "5.5.4"),
    ("TO:<alice@localhost> NOTIFY=BOGUS", BADVAL, "5.5.4"),
])
def test_rcpt_syntax(hikyaku, raw, arg, code, enh):
    hk = hikyaku()
    c = raw(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<a@example.net>", 250)
    c.send(f"RCPT {arg}\r\n")
    got, lines = c.reply()
    assert got in (code if isinstance(code, tuple) else (code,)), lines
    assert lines[0][4:].startswith(enh + " "), lines
    c.ok("RCPT TO:<bob@localhost>", 250, "2.1.5")


def test_queue_id_and_received_header(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.begin(sender="bob@example.net", rcpts=["alice@localhost"])
    c.ok("DATA", 354)
    c.send("Subject: qid\r\n\r\nhello\r\n.\r\n")
    lines = c.expect(250, "2.0.0")
    qid = qid_of(lines)
    assert re.fullmatch(r"[0-9A-Za-z]{16}", qid)
    (msg,) = hk.read_delivered("alice")
    m = re.search(rb"Received: from client\.example \(localhost \[127\.0\.0\.1\]\)\n"
                  rb"\tby mx\.test\.example \(hikyaku\) with ESMTP id (\w+)\n"
                  rb"\tfor <alice@localhost>;\n\t[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} ", msg)
    assert m, msg
    assert m.group(1).decode() == qid
    assert msg.endswith(b"Subject: qid\n\nhello\n")
    # a second message in the same session has a different id
    c.begin(ehlo=False)
    qid2 = c.data("Subject: two\r\n\r\nx\r\n")
    assert qid2 != qid


def test_received_hides_multiple_recipients(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.begin(rcpts=["alice@localhost", "bob@localhost"])
    c.data("Subject: bcc\r\n\r\nx\r\n")
    (msg,) = hk.read_delivered("bob")
    assert b"\tfor <" not in msg


def test_size_param(hikyaku, raw):
    hk = hikyaku(limits={"message_size": "10K"})
    c = raw(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<a@example.net> SIZE=10241", 552, "5.3.4")
    c.send("MAIL FROM:<a@example.net> SIZE=99999999999999999999\r\n")
    code, lines = c.reply()
    assert code in BADVAL and lines[0][4:9] == "5.5.4", lines
    c.ok("MAIL FROM:<a@example.net> SIZE=10240", 250, "2.1.0")


def test_message_over_size_in_data(hikyaku, raw):
    hk = hikyaku(limits={"message_size": "10K"})
    c = raw(hk.port)
    c.begin()
    c.ok("DATA", 354)
    c.send(b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 200 + b".\r\n")
    c.expect(552, "5.3.4")
    # the session continues and a small message still goes through
    c.ok("NOOP", 250)
    c.begin(ehlo=False)
    c.data("Subject: small\r\n\r\nx\r\n")
    (msg,) = hk.read_delivered("alice")
    assert b"Subject: small" in msg
    assert len(hk.delivered("alice")) == 1


@pytest.mark.parametrize("mail,rcpt,mcode,rcode", [
    ("RET=FULL ENVID=abc+2Bdef", "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice@localhost", 250, 250),
    ("RET=HDRS", "NOTIFY=NEVER", 250, 250),
    ("", "NOTIFY=DELAY", 250, 250),
    ("", "ORCPT=rfc822;a+40b", 250, 250),
    ("RET=BOGUS", None, BADVAL, None),
    ("RET=FULL RET=HDRS", None, BADVAL, None),
    ("ENVID=" + "x" * 101, None, BADVAL, None),
    ("ENVID=a+zzb", None, BADVAL, None),        # bad xtext hex
    ("", "NOTIFY=NEVER,SUCCESS", 250, 555),
    ("", "NOTIFY=", 250, 555),
    ("", "ORCPT=alice@localhost", 250, 555),    # no addr-type
    ("", "NOTIFY=SUCCESS NOTIFY=FAILURE", 250, 555),
])
def test_dsn_params(hikyaku, raw, mail, rcpt, mcode, rcode):
    hk = hikyaku()
    c = raw(hk.port)
    c.ehlo()
    c.send(f"MAIL FROM:<a@example.net> {mail}".rstrip() + "\r\n")
    code, lines = c.reply()
    assert code in (mcode if isinstance(mcode, tuple) else (mcode,)), lines
    if mcode != 250:
        assert lines[0][4:].startswith(("5.5.4 ", "5.5.2 ")) and lines[0][:1] == "5"
        return
    c.send(f"RCPT TO:<alice@localhost> {rcpt}\r\n")
    code, lines = c.reply()
    if rcode == 250:
        assert code == 250, lines
        c.data("Subject: dsn\r\n\r\nx\r\n")
        hk.wait_delivered("alice")
    else:
        assert code in (501, 555), lines
        assert lines[0][4:9] in ("5.5.4", "5.5.2")
        c.ok("RCPT TO:<alice@localhost> NOTIFY=FAILURE", 250, "2.1.5")


def test_smtputf8_address_requires_param(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<jöran@example.net>", 553, "5.6.7")
    c.ok("MAIL FROM:<a@example.net>", 250)
    c.ok("RCPT TO:<müller@localhost>", 553, "5.6.7")
    c.ok("RSET", 250)
    c.ok("MAIL FROM:<jöran@bücher.example> SMTPUTF8 BODY=8BITMIME", 250, "2.1.0")
    c.ok("RCPT TO:<müller@localhost>", 250, "2.1.5")
    body = "From: jöran@bücher.example\r\nSubject: grüße\r\n\r\nこんにちは\r\n"
    c.ok("DATA", 354)
    c.send(body.encode() + b".\r\n")
    qid = qid_of(c.expect(250, "2.0.0"))
    (msg,) = hk.read_delivered("müller")
    assert "こんにちは\n".encode() in msg
    assert "Return-Path: <jöran@bücher.example>".encode() in msg
    assert f"with UTF8SMTP id {qid}".encode() in msg


def test_8bit_message_delivered_verbatim(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<a@example.net> BODY=8BITMIME", 250)
    c.ok("RCPT TO:<alice@localhost>", 250)
    body = b"Subject: 8bit\r\n\r\n\xe9t\xe9 \xff\x80\r\n"
    c.ok("DATA", 354)
    c.send(body + b".\r\n")
    c.expect(250, "2.0.0")
    (msg,) = hk.read_delivered("alice")
    assert msg.endswith(b"\n\xe9t\xe9 \xff\x80\n")


def test_quit_closes(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.ehlo()
    c.send("QUIT\r\nNOOP\r\n")
    c.expect(221, "2.0.0")
    assert c.closed()
    assert c.buf == b""   # the NOOP after QUIT got no reply


def test_rset_aborts_transaction(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.begin(rcpts=["bob@localhost"])
    c.ok("RSET", 250, "2.0.0")
    c.begin(ehlo=False, rcpts=["alice@localhost"])
    c.data("Subject: r\r\n\r\nx\r\n")
    hk.wait_delivered("alice")
    assert hk.delivered("bob") == []


def test_null_sender_delivered(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.begin(sender="")
    c.data("Subject: bounce\r\n\r\nx\r\n")
    (msg,) = hk.read_delivered("alice")
    assert msg.startswith(b"Return-Path: <>\n")


@pytest.mark.parametrize("params", ["SMTPUTF8", "BODY=8BITMIME", "RET=HDRS", "ENVID=x"])
def test_esmtp_params_need_ehlo(hikyaku, raw, params):
    hk = hikyaku()
    c = raw(hk.port)
    c.ok("HELO client.example")
    c.ok(f"MAIL FROM:<a@example.net> {params}", 555, "5.5.4")


def test_auth_param_ignored(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<a@example.net> AUTH=<>", 250, "2.1.0")


@pytest.mark.parametrize("helo,shown", [
    ("a(b)c", b"[127.0.0.1] (localhost [127.0.0.1])\n\t(invalid HELO a?b?c)"),
    ("[192.0.2.1]", b"[192.0.2.1] (localhost [127.0.0.1])"),
    ("x\xc3\xa9.example", b"[127.0.0.1] (localhost [127.0.0.1])\n\t(invalid HELO x??.example)"),
    ("a;b\xc2\x9bc", b"[127.0.0.1] (localhost [127.0.0.1])\n\t(invalid HELO a?b??c)"),
    ("mail.example.org", b"mail.example.org (localhost [127.0.0.1])"),
])
def test_received_sanitizes_helo(hikyaku, raw, helo, shown):
    """The HELO name is client text in a comment-bearing header: "from"
    gets it only when it is a Domain or address literal (RFC 5321 §4.4);
    otherwise it goes into a comment with no parentheses, no ";", no
    controls (C0 or C1) and no raw 8-bit without SMTPUTF8."""
    hk = hikyaku()
    c = raw(hk.port)
    c.send(b"EHLO " + helo.encode("latin-1") + b"\r\n")
    code, _ = c.reply()
    if code != 250:
        assert code == 501
        return
    c.begin(ehlo=False)
    c.data("Subject: helo\r\n\r\nx\r\n")
    (msg,) = hk.read_delivered("alice")
    assert b"Received: from " + shown + b"\n" in msg
    assert b"\xc2\x9b" not in msg and b";b" not in msg


def test_log_values_quoted(hikyaku, raw):
    """Hostile text in the envelope cannot forge log events or fields."""
    hk = hikyaku()
    c = raw(hk.port)
    c.ehlo()
    c.ok('MAIL FROM:<"x event=accept qid=FAKE"@example.net>', 250)
    c.ok('RCPT TO:<"y\\" code=250 z"@remote.example>', 554, "5.7.1")
    (rej,) = wait_event(hk, "reject", code="554")
    assert rej["from"] == '"x event=accept qid=FAKE"@example.net'
    assert rej["qid"] != "FAKE"
    assert log_events(hk, "accept") == []


def test_ehlo_reply_with_longest_names(hikyaku, raw):
    """A 255-octet host name and a 255-octet EHLO name: the EHLO reply must
    still be complete (a truncated one leaves the client hanging)."""
    host = ".".join(["h" * 63] * 4)[:255]
    helo = ".".join(["e" * 63] * 4)[:255]
    hk = hikyaku(hostname=host, listener={"tls": "none"}, tls={"self_signed_dir": ""})
    c = raw(hk.port, timeout=5)
    lines = c.ehlo(helo)
    assert lines[0] == f"250-{host} Hello {helo} [127.0.0.1]"
    assert lines[-1] == "250 DSN" and len(lines) == 8
    c.ok("NOOP", 250)
    c.ok("EHLO " + helo + "e", 501, "5.5.4")    # 256 octets: refused
