"""End-to-end delivery: real clients (swaks, curl, smtplib), subaddressing,
the users file, relay refusal, postmaster, duplicate recipients, the
trace headers and the log lines (RFC 5321 §4.4, §4.5.1, §3.6.2)."""
import concurrent.futures
import smtplib
import subprocess
import time

import pytest

from conftest import log_events, qid_of, wait_event


def test_swaks_delivers(hikyaku):
    hk = hikyaku()
    r = subprocess.run(["swaks", "--server", f"127.0.0.1:{hk.port}", "--to", "alice@localhost",
                        "--from", "swaks@example.net", "--helo", "swaks.example",
                        "--header", "Subject: via swaks", "--body", "swaks body"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "<-  250 2.0.0 Ok: queued as " in r.stdout
    (msg,) = hk.read_delivered("alice")
    assert b"Subject: via swaks\n" in msg
    assert b"swaks body" in msg
    assert msg.startswith(b"Return-Path: <swaks@example.net>\nDelivered-To: alice@localhost\n")


def test_swaks_pipelining_bdat_multiple_rcpts(hikyaku):
    hk = hikyaku()
    r = subprocess.run(["swaks", "--server", f"127.0.0.1:{hk.port}", "--pipeline",
                        "--to", "alice@localhost,bob@example.org",
                        "--from", "swaks@example.net", "--body", "piped body"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    (a,) = hk.read_delivered("alice")
    (b,) = hk.read_delivered("bob", "example.org")
    assert b"piped body" in a and b"piped body" in b
    assert b"Delivered-To: bob@example.org\n" in b


def test_curl_delivers(hikyaku):
    hk = hikyaku()
    mail = (b"From: curl@example.net\r\nTo: alice@localhost\r\nSubject: via curl\r\n\r\n"
            b"curl body\r\n.leading dot\r\n")
    r = subprocess.run(["curl", "-sS", f"smtp://127.0.0.1:{hk.port}", "--mail-from",
                        "curl@example.net", "--mail-rcpt", "alice@localhost",
                        "--upload-file", "-"], input=mail, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    (msg,) = hk.read_delivered("alice")
    assert msg.endswith(b"Subject: via curl\n\ncurl body\n.leading dot\n")
    assert msg.startswith(b"Return-Path: <curl@example.net>\n")


def test_curl_unknown_user_fails(hikyaku):
    hk = hikyaku(users=["alice@localhost"])
    r = subprocess.run(["curl", "-sS", f"smtp://127.0.0.1:{hk.port}", "--mail-from",
                        "curl@example.net", "--mail-rcpt", "nobody@localhost",
                        "--upload-file", "-"], input=b"Subject: x\r\n\r\nx\r\n",
                       capture_output=True, timeout=30)
    assert r.returncode != 0
    assert b"550" in r.stderr


def test_subaddress(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.begin(rcpts=["alice+lists@localhost", "Bob+x+y@LOCALHOST"])
    c.data("Subject: tagged\r\n\r\nx\r\n")
    (m,) = hk.read_delivered("alice")
    assert b"Delivered-To: alice+lists@localhost\n" in m
    (m,) = hk.read_delivered("bob")
    assert b"Subject: tagged" in m


def test_users_file(hikyaku, raw):
    hk = hikyaku(users=["alice@localhost", "carol@example.org"])
    c = raw(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<a@example.net>", 250)
    lines = c.ok("RCPT TO:<nobody@localhost>", 550, "5.1.1")
    assert "nobody@localhost" in lines[0]
    c.ok("RCPT TO:<carol@localhost>", 550, "5.1.1")     # user of another domain
    c.ok("RCPT TO:<alice@example.org>", 550, "5.1.1")
    c.ok("RCPT TO:<alice@localhost>", 250, "2.1.5")
    c.ok("RCPT TO:<ALICE+tag@localhost>", 250, "2.1.5")
    c.ok("RCPT TO:<carol@example.org>", 250, "2.1.5")
    c.data("Subject: users\r\n\r\nx\r\n")
    hk.wait_delivered("alice")
    hk.wait_delivered("carol", "example.org")
    assert hk.delivered("nobody") == []
    rej = [e for e in log_events(hk, "reject") if e.get("code") == "550"]
    assert len(rej) == 3 and all(e.get("cmd") == "RCPT" for e in rej)


@pytest.mark.parametrize("rcpt", [
    "victim@remote.example",
    "victim@localhost.evil.com",
    "victim@example.org.evil.com",
    "victim@evil-localhost",
    "victim@[10.0.0.1]",
    "@localhost:victim@remote.example",     # source route to a remote target
])
def test_no_relay(hikyaku, raw, rcpt):
    hk = hikyaku()
    c = raw(hk.port)
    c.begin(rcpts=[])
    c.send(f"RCPT TO:<{rcpt}>\r\n")
    code, lines = c.reply()
    assert code in (554, 550, 501), lines
    if code == 554:
        assert lines[0][4:9] == "5.7.1"
    c.send("DATA\r\n")
    assert c.reply()[0] in (503, 554)
    assert wait_event(hk, "reject")


@pytest.mark.parametrize("rcpt", [
    "user@localhost@evil.com",
    "user%evil.com@localhost",
    "user!evil.com@localhost",
    "evil.com!user@localhost",
    "user@[127.0.0.1]",
    "\"user@evil.com\"@localhost",
    "@remote.example:user@localhost",
    "../user@localhost",
    "a/b@localhost",
    ".user@localhost",
])
def test_tricky_addresses_never_relayed(hikyaku, raw, rcpt):
    """Either refused, or delivered to a local Maildir and nowhere else."""
    hk = hikyaku()
    c = raw(hk.port)
    c.begin(rcpts=[])
    c.send(f"RCPT TO:<{rcpt}>\r\n")
    code, lines = c.reply()
    if code != 250:
        assert code // 100 == 5, lines
        assert "event=reject" in hk.log()
        return
    c.data("Subject: tricky\r\n\r\nx\r\n")
    (d,) = wait_event(hk, "delivery")
    assert d.get("relay") == "maildir" and d.get("status") == "sent", d
    assert d.get("to", "").endswith("@localhost"), d


@pytest.mark.parametrize("rcpt", ["postmaster@localhost", "postmaster", "POSTMASTER",
                                  "PostMaster@example.org"])
def test_postmaster_always_accepted(hikyaku, raw, rcpt):
    hk = hikyaku(users=["alice@localhost"])
    c = raw(hk.port)
    c.begin(rcpts=[rcpt])
    c.data("Subject: to postmaster\r\n\r\nx\r\n")
    dom = "example.org" if "example.org" in rcpt else "localhost"
    (m,) = hk.read_delivered("postmaster", dom)
    assert b"Subject: to postmaster" in m


def test_duplicate_recipients_deliver_once(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.begin(rcpts=["alice@localhost", "alice@localhost", "ALICE@LOCALHOST", "bob@localhost"])
    qid = c.data("Subject: dup\r\n\r\nx\r\n")
    hk.wait_delivered("alice")
    hk.wait_delivered("bob")
    time.sleep(0.2)
    assert len(hk.delivered("alice")) == 1
    (acc,) = wait_event(hk, "accept", qid=qid)
    assert acc["nrcpt"] == "2"


def test_trace_headers_and_log(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.begin(sender="bob@example.net", rcpts=["alice@localhost", "carol@localhost"])
    body = b"Subject: logged\r\n\r\n" + b"0123456789" * 10 + b"\r\n"
    qid = c.data(body)
    c.ok("MAIL FROM:<bob@example.net>", 250)
    c.ok("RCPT TO:<x@remote.example>", 554, "5.7.1")
    for u in ("alice", "carol"):
        (m,) = hk.read_delivered(u)
        assert m.startswith(b"Return-Path: <bob@example.net>\nDelivered-To: %s@localhost\n"
                            b"Received: from client.example (localhost [127.0.0.1])\n" % u.encode())
        assert f"id {qid}".encode() in m
    (acc,) = wait_event(hk, "accept")
    assert acc["qid"] == qid
    assert acc["from"] == "<bob@example.net>"
    assert acc["nrcpt"] == "2"
    assert int(acc["size"]) >= len(body)
    deliveries = wait_event(hk, "delivery", count=2, qid=qid, status="sent")
    assert sorted(d["to"] for d in deliveries) == ["alice@localhost", "carol@localhost"]
    rej = wait_event(hk, "reject", code="554")
    assert rej and rej[0]["dsn"] == "5.7.1" and rej[0]["cmd"] == "RCPT"
    assert rej[0]["client"] == "127.0.0.1"


def test_smtplib_many_messages_one_session(hikyaku):
    hk = hikyaku()
    with smtplib.SMTP("127.0.0.1", hk.port) as s:
        s.ehlo("lib.example")
        for i in range(10):
            s.sendmail("a@example.net", ["alice@localhost"],
                       b"Subject: n%d\r\n\r\nbody %d\r\n" % (i, i))
    msgs = hk.read_delivered("alice", count=10)
    assert sorted(int(m.rsplit(b"body ", 1)[1]) for m in msgs) == list(range(10))
    assert len(wait_event(hk, "accept", count=10)) == 10


def test_smtplib_bdat_not_used_but_smtputf8(hikyaku):
    hk = hikyaku()
    with smtplib.SMTP("127.0.0.1", hk.port) as s:
        s.ehlo("lib.example")
        assert s.has_extn("smtputf8") and s.has_extn("chunking")
        s.sendmail("ünï@example.net", ["ålice@localhost"],
                   "Subject: ütf\r\n\r\nbödy\r\n".encode(), mail_options=["SMTPUTF8"])
    (m,) = hk.read_delivered("ålice")
    assert "bödy".encode() in m


def test_rejected_message_logged(hikyaku, raw):
    hk = hikyaku(limits={"message_size": "1K"})
    c = raw(hk.port)
    c.begin()
    c.ok("DATA", 354)
    c.send(b"Subject: big\r\n\r\n" + (b"x" * 98 + b"\r\n") * 20 + b".\r\n")
    c.expect(552, "5.3.4")
    rej = wait_event(hk, "reject", code="552")
    assert rej and rej[0]["dsn"] == "5.3.4" and rej[0]["qid"] != "-"
    assert log_events(hk, "accept") == []


def big_body(n_lines, tag):
    return b"Subject: big %s\r\n\r\n" % tag + b"".join(
        b"%08d %s\r\n" % (i, b"z" * 80) for i in range(n_lines))


def test_large_message_data_and_bdat(hikyaku, raw):
    """Bigger than the in-memory spill threshold, via DATA and via BDAT."""
    hk = hikyaku()
    c = raw(hk.port)
    body = big_body(12000, b"data")             # ~1.1 MB
    c.begin(rcpts=["alice@localhost"])
    c.data(body)
    body2 = big_body(12000, b"bdat")
    c.begin(ehlo=False, rcpts=["bob@localhost"])
    step = 300000
    for i in range(0, len(body2), step):
        part = body2[i:i + step]
        last = i + step >= len(body2)
        c.send(b"BDAT %d%s\r\n" % (len(part), b" LAST" if last else b"") + part)
        c.expect(250, "2.0.0")
    (a,) = hk.read_delivered("alice")
    (b,) = hk.read_delivered("bob")
    assert a.split(b"Subject: big data\n", 1)[1] == \
        b"\n" + body.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n")
    assert b.endswith(body2.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n"))


def test_parallel_sessions(hikyaku):
    hk = hikyaku()

    def client(i):
        with smtplib.SMTP("127.0.0.1", hk.port, timeout=20) as s:
            s.ehlo("c%d.example" % i)
            for j in range(5):
                refused = s.sendmail("a@example.net", ["u%d@localhost" % i, "all@localhost"],
                                     b"Subject: %d/%d\r\n\r\nx\r\n" % (i, j))
                assert refused == {}

    with concurrent.futures.ThreadPoolExecutor(10) as ex:
        list(ex.map(client, range(10)))
    assert len(hk.wait_delivered("all", count=50)) == 50
    for i in range(10):
        assert len(hk.wait_delivered("u%d" % i, count=5)) == 5
    accepts = wait_event(hk, "accept", count=50)
    assert len({a["qid"] for a in accepts}) == 50
