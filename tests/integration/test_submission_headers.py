"""Message-ID and Date added on submission (issue 8, Interop 6; RFC 6409
§8.3): curl sends neither, and mail it submitted left without them. A
submission listener now adds each one that is missing, once, right after
its Received field; a message that has its own keeps it; mail that is not
submitted (port 25) is left as it came."""
import base64
import email
import email.utils
import re
import subprocess

from conftest import RawSMTP

ALICE = "alice@example.org"
PW = "s3cret pass"


def submission(hikyaku, **kw):
    return hikyaku(listener={"submission": True}, users=["bob@example.org"],
                   users_secrets={ALICE: ("CRYPT", PW)}, **kw)


def curl_submit(hk, body):
    r = subprocess.run(
        ["curl", "-sS", "--ssl-reqd", "-k", f"smtp://127.0.0.1:{hk.port}",
         "--user", f"{ALICE}:{PW}", "--mail-from", ALICE, "--mail-rcpt", "bob@example.org",
         "-T", "-"], input=body, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr


def fields(msg, name):
    return re.findall(rb"^" + name.encode() + rb":[^\n]*\n", msg, re.M | re.I)


def header_of(msg):
    return msg.split(b"\n\n", 1)[0] + b"\n"


def test_curl_submission_gets_message_id_and_date(hikyaku):
    hk = submission(hikyaku)
    curl_submit(hk, b"From: alice@example.org\r\nTo: bob@example.org\r\n"
                    b"Subject: via curl\r\n\r\nbody\r\nDate: not a header\r\n")
    (msg,) = hk.read_delivered("bob", "example.org")
    head = header_of(msg)
    mids, dates = fields(head, "Message-ID"), fields(head, "Date")
    assert len(mids) == 1 and len(dates) == 1, head
    assert re.match(rb"Message-ID: <\d{14}\.[0-9A-Za-z]{16}@mx\.test\.example>\n$", mids[0])
    m = email.message_from_bytes(msg)
    assert m["Date"] is not None and email.utils.parsedate_to_datetime(m["Date"]) is not None
    # after our Received, before the client's own fields
    assert head.index(b"Message-ID:") > head.index(b"Received:")
    assert head.index(b"Date:") < head.index(b"From: alice@example.org")
    assert msg.endswith(b"\n\nbody\nDate: not a header\n")


def test_submission_keeps_own_message_id_and_date(hikyaku):
    hk = submission(hikyaku)
    curl_submit(hk, b"From: alice@example.org\r\nmessage-id : <own@example.org>\r\n"
                    b"DATE: Mon, 1 Jan 2024 00:00:00 +0000\r\nSubject: s\r\n\r\nbody\r\n")
    (msg,) = hk.read_delivered("bob", "example.org")
    head = header_of(msg)
    assert fields(head, "Message-ID") == [] and len(fields(head, "message-id ")) == 1, head
    assert fields(head, "Date") == [b"DATE: Mon, 1 Jan 2024 00:00:00 +0000\n"], head


def test_submission_adds_only_the_missing_one(hikyaku):
    hk = submission(hikyaku)
    curl_submit(hk, b"Message-ID: <own@example.org>\r\nSubject: s\r\n\r\nbody\r\n")
    (msg,) = hk.read_delivered("bob", "example.org")
    head = header_of(msg)
    assert fields(head, "Message-ID") == [b"Message-ID: <own@example.org>\n"], head
    assert len(fields(head, "Date")) == 1, head


def test_header_only_message_over_bdat(hikyaku):
    """A message that is all header (no empty line), sent in BDAT chunks
    split inside field names that only look like ours (Date-x:,
    Message-ID-x:), gets one of each."""
    hk = submission(hikyaku)
    c = RawSMTP(hk.port)
    c.ehlo()
    c.starttls()
    c.ehlo()
    c.ok("AUTH PLAIN " + base64.b64encode(f"\0{ALICE}\0{PW}".encode()).decode(), 235)
    c.ok(f"MAIL FROM:<{ALICE}>", 250)
    c.ok("RCPT TO:<bob@example.org>", 250)
    c.send(b"BDAT 14\r\nSubject: x\r\nDa")
    c.expect(250)
    c.send(b"BDAT 18\r\nte-x: y\r\nMessage-I")
    c.expect(250)
    c.send(b"BDAT 8 LAST\r\nD-x: z\r\n")
    c.expect(250, "2.0.0")
    c.close()
    (msg,) = hk.read_delivered("bob", "example.org")
    assert len(fields(msg, "Date")) == 1 and len(fields(msg, "Message-ID")) == 1, msg


def test_port_25_mail_left_as_is(hikyaku):
    hk = hikyaku()
    c = RawSMTP(hk.port)
    c.begin(rcpts=["alice@localhost"])
    c.data("Subject: no id\r\n\r\nbody\r\n")
    c.close()
    (msg,) = hk.read_delivered("alice")
    assert fields(msg, "Message-ID") == [] and fields(msg, "Date") == []


def test_large_submission_gets_them_before_the_spill(hikyaku):
    """Content past 256 KiB goes to the spool as it arrives: the fields are
    added before the first part is written."""
    hk = submission(hikyaku)
    body = b"".join(b"line %06d of a large message\r\n" % i for i in range(20000))
    curl_submit(hk, b"Subject: big\r\n\r\n" + body)
    (msg,) = hk.read_delivered("bob", "example.org")
    head = header_of(msg)
    assert len(fields(head, "Message-ID")) == 1 and len(fields(head, "Date")) == 1, head
    assert msg.endswith(body.replace(b"\r\n", b"\n"))
