"""The submission service (issue 3, RFC 6409, RFC 8314): smtplib over
STARTTLS and over implicit TLS with AUTH, the Received field (ESMTPSA, TLS
version, the user only when configured), AUTH before MAIL, the sender
ownership policy (relay.senders, relay.sender_login_match), relaying for
authenticated users and trusted networks only, `hikyaku check`'s warning,
and `hikyaku user add|passwd|del|list`."""
import base64
import os
import re
import smtplib
import subprocess

from conftest import hikyaku_bin, log_events, tls_client_context, user_add, wait_event

ALICE = "alice@example.org"
PW = "s3cret pass"
MSG = b"Subject: submitted\r\nFrom: alice@example.org\r\n\r\nhello\r\n"


def received_of(msg):
    """The first Received field (unfolded lines joined) of a delivered
    message (Maildir files use LF)."""
    m = re.search(rb"^Received: .*?(?=^\S)", msg, re.M | re.S)
    assert m, msg[:500]
    return m.group(0).decode()


def plain(user=ALICE, pw=PW):
    return base64.b64encode(f"\0{user}\0{pw}".encode()).decode()


def submission(hikyaku, **kw):
    kw.setdefault("users", ["bob@example.org"])
    kw.setdefault("users_secrets", {ALICE: ("CRYPT", PW)})
    listener = {"submission": True, **kw.pop("listener", {})}
    return hikyaku(listener=listener, **kw)


def authed(hk, raw, user=ALICE, pw=PW):
    c = raw(hk.port)
    c.ehlo()
    c.starttls()
    c.ehlo()
    c.ok("AUTH PLAIN " + plain(user, pw), 235, "2.7.0")
    return c


def test_smtplib_starttls_login(hikyaku):
    hk = submission(hikyaku)
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=10) as s:
        s.ehlo("mua.example")
        assert not s.has_extn("auth"), "AUTH before TLS"
        s.starttls(context=tls_client_context())
        s.ehlo("mua.example")
        assert s.has_extn("auth")
        assert s.login(ALICE, PW) == (235, b"2.7.0 Authentication successful")
        s.sendmail(ALICE, ["bob@example.org"], MSG)
    (msg,) = hk.read_delivered("bob", "example.org")
    rcv = received_of(msg)
    assert "with ESMTPSA id" in rcv
    assert re.search(r"\(using TLSv1\.3 TLS_\w+ \(\d+/\d+ bits\)\)", rcv), rcv
    # privacy by default: the login is not named
    assert "alice" not in rcv.lower() and "Authenticated" not in rcv, rcv
    assert "from mua.example (localhost [127.0.0.1])" in rcv


def test_smtplib_implicit_tls(hikyaku):
    hk = submission(hikyaku, listener={"tls": "implicit"})
    with smtplib.SMTP_SSL("127.0.0.1", hk.port, timeout=10,
                          context=tls_client_context()) as s:
        s.ehlo("mua.example")
        assert not s.has_extn("starttls")
        s.login(ALICE, PW)
        s.sendmail(ALICE, ["bob@example.org"], MSG)
    (msg,) = hk.read_delivered("bob", "example.org")
    rcv = received_of(msg)
    assert "with ESMTPSA id" in rcv and "(using TLSv1.3 " in rcv, rcv
    assert "alice" not in rcv.lower()


def test_received_show_user(hikyaku):
    hk = submission(hikyaku, listener={"tls": "implicit"}, auth={"received_show_user": True})
    with smtplib.SMTP_SSL("127.0.0.1", hk.port, timeout=10,
                          context=tls_client_context()) as s:
        s.login(ALICE, PW)
        s.sendmail(ALICE, ["bob@example.org"], MSG)
    rcv = received_of(hk.read_delivered("bob", "example.org")[0])
    assert f"(Authenticated sender: {ALICE})" in rcv, rcv
    assert "with ESMTPSA id" in rcv


def test_mail_before_auth_530(hikyaku, raw):
    hk = submission(hikyaku)
    c = raw(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<alice@example.org>", 530, "5.7.0")
    c.starttls()
    c.ehlo()
    c.ok("MAIL FROM:<alice@example.org>", 530, "5.7.0")
    c.ok("AUTH PLAIN " + plain(), 235, "2.7.0")
    c.ok("MAIL FROM:<alice@example.org>", 250, "2.1.0")


def test_implicit_mail_before_auth_530(hikyaku, raw):
    hk = submission(hikyaku, listener={"tls": "implicit"})
    c = raw(hk.port, implicit_tls=True)
    c.ehlo()
    c.ok("MAIL FROM:<alice@example.org>", 530, "5.7.0")


def test_sender_must_be_owned(hikyaku, raw):
    hk = submission(hikyaku)
    c = authed(hk, raw)
    for sender, code in [("bob@example.org", 553), ("alice@example.net", 553),
                         ("alicex@example.org", 553), ("info@example.org", 553),
                         ("alice@example.org", 250), ("ALICE@Example.ORG", 250),
                         ("alice+lists@example.org", 250), ("", 250)]:
        c.ok(f"MAIL FROM:<{sender}>", code, "5.7.1" if code == 553 else "2.1.0")
        if code == 250:
            c.ok("RSET", 250)
    assert wait_event(hk, "reject", count=4, code="553")


def test_relay_senders_grant(hikyaku, raw):
    hk = submission(hikyaku, relay={"senders": [f"info@example.org: {ALICE}",
                                                "@example.com: bob@example.org"]})
    c = authed(hk, raw)
    c.ok("MAIL FROM:<info@example.org>", 250, "2.1.0")
    c.ok("RSET", 250)
    c.ok("MAIL FROM:<info+x@example.org>", 250, "2.1.0")
    c.ok("RSET", 250)
    c.ok("MAIL FROM:<sales@example.com>", 553, "5.7.1")  # granted to bob, not alice
    c.ok("MAIL FROM:<sales@example.org>", 553, "5.7.1")


def test_sender_login_match_off(hikyaku, raw):
    hk = submission(hikyaku, relay={"sender_login_match": False})
    c = authed(hk, raw)
    c.ok("MAIL FROM:<anyone@anywhere.example>", 250, "2.1.0")


def test_authenticated_relay_accepted_and_queued(hikyaku, raw):
    hk = submission(hikyaku)
    c = authed(hk, raw)
    c.ok("MAIL FROM:<alice@example.org>", 250, "2.1.0")
    c.ok("RCPT TO:<someone@remote.example>", 250, "2.1.5")
    qid = c.data("Subject: out\r\n\r\nto the world\r\n")
    ev = wait_event(hk, "delivery", qid=qid, status="deferred")
    assert ev and ev[0]["to"] == "someone@remote.example", hk.log()[-3000:]
    assert any(qid in f for f in hk.queue_files())
    assert not hk.delivered("someone", "remote.example")


def test_unauthenticated_relay_denied(hikyaku, raw):
    hk = hikyaku()
    c = raw(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<x@example.net>", 250)
    c.ok("RCPT TO:<someone@remote.example>", 554, "5.7.1")
    c.ok("RCPT TO:<someone@[192.0.2.1]>", 554, "5.7.1")
    c.ok("RCPT TO:<alice@localhost>", 250, "2.1.5")  # our own domain is fine
    # the same over TLS without AUTH
    c2 = raw(hk.port)
    c2.ehlo()
    c2.starttls()
    c2.ehlo()
    c2.ok("MAIL FROM:<x@example.net>", 250)
    c2.ok("RCPT TO:<someone@remote.example>", 554, "5.7.1")


def test_trusted_networks_relay(hikyaku, raw):
    hk = hikyaku(relay={"trusted_networks": ["127.0.0.0/8"]})
    c = raw(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<app@example.net>", 250)
    c.ok("RCPT TO:<someone@remote.example>", 250, "2.1.5")
    qid = c.data("Subject: app\r\n\r\nx\r\n")
    assert wait_event(hk, "delivery", qid=qid, status="deferred")


def test_trusted_networks_other_net_denied(hikyaku, raw):
    hk = hikyaku(relay={"trusted_networks": ["192.0.2.0/24", "2001:db8::/32"]})
    c = raw(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<app@example.net>", 250)
    c.ok("RCPT TO:<someone@remote.example>", 554, "5.7.1")


def test_check_warns_about_trusted_networks(hikyaku):
    hk = hikyaku(start=False, relay={"trusted_networks": ["127.0.0.0/8", "10.0.0.0/8"]})
    r = subprocess.run([hikyaku_bin(), "check", "-c", hk.config], capture_output=True,
                       text=True, timeout=20)
    out = r.stdout + r.stderr
    assert re.search(r"WARNING: relay\.trusted_networks .*127\.0\.0\.0/8 10\.0\.0\.0/8", out), out
    hk2 = hikyaku(start=False)
    r = subprocess.run([hikyaku_bin(), "check", "-c", hk2.config], capture_output=True,
                       text=True, timeout=20)
    assert "trusted_networks" not in r.stdout + r.stderr


# ---- hikyaku user ----------------------------------------------------------

def user_cmd(ufile, *args, stdin=None):
    return subprocess.run([hikyaku_bin(), "user", *args, "-f", ufile], input=stdin,
                          capture_output=True, text=True, timeout=30)


def test_user_add_passwd_del_list(tmp_path):
    ufile = str(tmp_path / "users")
    user_add(ufile, ALICE, "first-pw")
    user_add(ufile, "bob@example.org", "bob-pw", "SCRAM-SHA-256")
    r = user_cmd(ufile, "list")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"{ALICE} CRYPT", "bob@example.org SCRAM-SHA-256"]
    with open(ufile) as f:
        text = f.read()
    assert "first-pw" not in text and "bob-pw" not in text
    assert re.search(r"^alice@example\.org:\{CRYPT\}\$y\$", text, re.M), text
    assert (os.stat(ufile).st_mode & 0o007) == 0, "users file readable by others"
    # adding an existing user fails and changes nothing
    r = user_cmd(ufile, "add", ALICE, stdin="x\n")
    assert r.returncode != 0
    with open(ufile) as f:
        assert f.read() == text
    # passwd replaces the secret (and may change the scheme)
    user_add(ufile, ALICE, "second-pw", "SHA512-CRYPT", cmd="passwd")
    with open(ufile) as f:
        text2 = f.read()
    assert re.search(r"^alice@example\.org:\{SHA512-CRYPT\}\$6\$", text2, re.M), text2
    assert "bob@example.org:{SCRAM-SHA-256}" in text2
    r = user_cmd(ufile, "passwd", "nobody@example.org", stdin="x\n")
    assert r.returncode != 0
    r = user_cmd(ufile, "del", "bob@example.org")
    assert r.returncode == 0, r.stderr
    assert user_cmd(ufile, "list").stdout.splitlines() == [f"{ALICE} SHA512-CRYPT"]
    assert user_cmd(ufile, "del", "bob@example.org").returncode != 0
    # no password on the command line, ever
    r = subprocess.run([hikyaku_bin(), "user", "add", "x@example.org", "--password", "pw",
                        "-f", ufile], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0
    r = user_cmd(ufile, "add", "y@example.org", stdin="")
    assert r.returncode != 0, "empty password accepted"
    assert user_cmd(ufile, "list").stdout.splitlines() == [f"{ALICE} SHA512-CRYPT"]
    assert not [n for n in os.listdir(tmp_path) if n != "users"], os.listdir(tmp_path)


def test_user_passwd_takes_effect_after_restart(hikyaku, raw):
    hk = submission(hikyaku)
    authed(hk, raw)  # the first password works
    user_add(hk.users_file, ALICE, "new-pw", cmd="passwd")
    hk.restart()
    c = raw(hk.port)
    c.ehlo()
    c.starttls()
    c.ehlo()
    c.ok("AUTH PLAIN " + plain(pw=PW), 535, "5.7.8")
    c.ok("AUTH PLAIN " + plain(pw="new-pw"), 235, "2.7.0")
    assert log_events(hk, "auth_failed")
