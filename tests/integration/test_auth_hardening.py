"""SMTP AUTH as real clients and an attacker meet it (issue 8): what is
advertised must work for every user (curl and Postfix pick the strongest
offered mechanism and never retry), auth.mechanisms, the lock-out under
parallel connections, no user enumeration through SCRAM, the dummy hash of
an unknown user, and no AUTH state surviving STARTTLS (RFC 3207 §4.2)."""
import base64
import hashlib
import hmac
import socket
import subprocess
import threading
import time

import pytest

from conftest import RawSMTP, hikyaku_bin, log_events, wait_event
from postfix_helpers import postfix_instance  # noqa: F401 (fixture)
from test_auth import ALICE, PW, auth_keywords, b64, plain, scram_exchange, tls_ready

CAROL = "carol@example.org"  # a {CRYPT} user
DAVE = "dave@example.org"    # a {SCRAM-SHA-256} user
MIXED = {ALICE: ("CRAM-MD5", PW), CAROL: ("CRYPT", PW), DAVE: ("SCRAM-SHA-256", PW)}


# ---- Security 6: AUTH does not survive STARTTLS ----------------------------

def test_starttls_forgets_auth(hikyaku, raw):
    # RFC 3207 §4.2: after the handshake the server discards all knowledge
    # from before it. A login made in plaintext (where an attacker on the
    # path could have injected it) must not carry over into TLS.
    hk = hikyaku(users_secrets={CAROL: ("CRYPT", PW)},
                 listener={"submission": True, "plaintext_auth": True})
    c = raw(hk.port)
    c.ehlo()
    c.ok("AUTH PLAIN " + plain(user=CAROL), 235, "2.7.0")
    c.starttls()
    ehlo = c.ehlo()
    assert auth_keywords(ehlo) == ["PLAIN", "LOGIN"], ehlo  # AUTH offered again
    c.ok(f"MAIL FROM:<{CAROL}>", 530, "5.7.0")
    c.ok("AUTH PLAIN " + plain(user=CAROL), 235, "2.7.0")
    c.ok(f"MAIL FROM:<{CAROL}>", 250)


# ---- Interop 1: what is offered works for every user -----------------------

def test_mixed_secrets_offer_only_plain_login(hikyaku, raw):
    hk = hikyaku(users_secrets=MIXED)
    c, ehlo = tls_ready(hk, raw)
    assert auth_keywords(ehlo) == ["PLAIN", "LOGIN"], ehlo
    # every user, whatever the scheme of its secret, logs in with what is
    # offered
    for user in (ALICE, CAROL, DAVE):
        c.ok("AUTH PLAIN " + plain(user=user), 235, "2.7.0")
        c.ok("QUIT", 221)
        c, _ = tls_ready(hk, raw)


def test_curl_crypt_user_among_cram_and_scram_users(hikyaku, tmp_path):
    # curl picks the strongest mechanism offered (it used to be CRAM-MD5,
    # and carol has no CRAM-MD5 secret: "curl: (67) Login denied")
    hk = hikyaku(users_secrets=MIXED, listener={"submission": True})
    msg = tmp_path / "msg.eml"
    msg.write_bytes(b"From: carol@example.org\r\nTo: alice@example.org\r\n"
                    b"Subject: from curl\r\n\r\nhello\r\n")
    r = subprocess.run(
        ["curl", "-sS", "--max-time", "30", f"smtp://127.0.0.1:{hk.port}", "--ssl-reqd", "-k",
         "--user", f"{CAROL}:{PW}", "--mail-from", CAROL, "--mail-rcpt", ALICE,
         "-T", str(msg)],
        capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    (got,) = hk.read_delivered("alice", "example.org")
    assert b"Subject: from curl" in got
    assert wait_event(hk, "auth", user=CAROL)


def test_postfix_client_crypt_user_among_cram_and_scram_users(hikyaku, postfix_instance):
    # Postfix (cyrus-sasl) picks SCRAM-SHA-256 when offered: a {CRYPT}
    # user's mail was deferred with 535 forever
    hk = hikyaku(users_secrets=MIXED, listener={"submission": True})
    pf = postfix_instance(relayhost=f"[127.0.0.1]:{hk.port}", sasl=(CAROL, PW))
    pf.submit(CAROL, ["alice@example.org"],
              "From: carol@example.org\r\nSubject: via postfix sasl\r\n\r\nhi\r\n")
    pf.wait_log(r"to=<alice@example.org>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+.*status=sent")
    (got,) = hk.read_delivered("alice", "example.org")
    assert b"Subject: via postfix sasl" in got
    assert wait_event(hk, "auth", user=CAROL)
    assert not log_events(hk, "auth_failed")


def test_auth_mechanisms_setting(hikyaku, raw):
    # the operator's list is what EHLO offers, and all that AUTH accepts
    hk = hikyaku(users_secrets={CAROL: ("CRYPT", PW)}, listener={"plaintext_auth": True},
                 auth={"mechanisms": ["login"]})
    c = raw(hk.port)
    assert auth_keywords(c.ehlo()) == ["LOGIN"]
    c.ok("AUTH PLAIN " + plain(user=CAROL), 504, "5.5.4")
    c.ok("AUTH LOGIN", 334)
    c.ok(b64(CAROL), 334)
    c.ok(b64(PW), 235, "2.7.0")


def _check(hk):
    return subprocess.run([hikyaku_bin(), "check", "-c", hk.config], capture_output=True,
                          text=True, timeout=30)


def test_auth_mechanisms_unknown_is_a_config_error(hikyaku):
    hk = hikyaku(users_secrets={CAROL: ("CRYPT", PW)}, start=False,
                 auth={"mechanisms": ["PLAIN", "GSSAPI"]})
    r = _check(hk)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "auth.mechanisms" in r.stderr and "GSSAPI" in r.stderr, r.stderr


def test_check_warns_mechanism_some_users_cannot_use(hikyaku):
    hk = hikyaku(users_secrets=MIXED, start=False,
                 auth={"mechanisms": ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"]})
    r = _check(hk)
    assert r.returncode == 0, r.stdout + r.stderr
    warn = [ln for ln in r.stdout.splitlines() if ln.startswith("warning: auth.mechanisms")]
    assert len(warn) == 2, r.stdout
    assert "CRAM-MD5" in warn[0] and "2 of 3 users" in warn[0], warn
    assert "SCRAM-SHA-256" in warn[1] and "2 of 3 users" in warn[1], warn
    hk2 = hikyaku(users_secrets={ALICE: ("CRAM-MD5", PW)}, start=False,
                  auth={"mechanisms": ["CRAM-MD5"]})
    assert "auth.mechanisms" not in _check(hk2).stdout


# ---- Security 3: no user enumeration through SCRAM -------------------------

def scram_salt(c, user):
    """The salt and iteration count of AUTH SCRAM-SHA-256's server-first for
    user; the exchange is then cancelled."""
    code, lines = c.cmd("AUTH SCRAM-SHA-256 " + b64(f"n,,n={user},r=abcdefgh"))
    assert code == 334, lines
    attrs = dict(a.split("=", 1) for a in base64.b64decode(lines[0][4:]).decode().split(","))
    c.ok("*", 501)
    return attrs["s"], attrs["i"]


ALL4 = {"mechanisms": ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"]}


def test_scram_user_without_scram_secret_looks_unknown(hikyaku, raw):
    hk = hikyaku(users_secrets=MIXED, auth=ALL4)
    c, _ = tls_ready(hk, raw)
    # carol has a {CRYPT} secret: a server-first like anyone's, then 535
    for user in (CAROL, "nobody@example.org", DAVE):
        code, lines, _ = scram_exchange(c, user, "wrong password")
        assert (code, lines[0][4:9]) == (535, "5.7.8"), (user, lines)
    # each of them counted as a failure
    assert [e["failures"] for e in log_events(hk, "auth_failed")] == ["1", "2", "3"]
    # the fake salt is stable per name, and looks like a real one
    c, _ = tls_ready(hk, raw)
    s_carol, i_carol = scram_salt(c, CAROL)
    s_nobody, i_nobody = scram_salt(c, "nobody@example.org")
    s_dave, i_dave = scram_salt(c, DAVE)
    assert scram_salt(c, CAROL) == (s_carol, i_carol)
    assert scram_salt(c, "nobody@example.org") == (s_nobody, i_nobody)
    assert len({s_carol, s_nobody, s_dave}) == 3
    assert i_carol == i_nobody == i_dave == "4096"
    assert len(base64.b64decode(s_carol)) == len(base64.b64decode(s_dave)) == 16


def test_cram_user_without_cram_secret_counted(hikyaku, raw):
    hk = hikyaku(users_secrets=MIXED, auth=ALL4)
    c, _ = tls_ready(hk, raw)
    for user in (CAROL, "nobody@example.org"):
        lines = c.ok("AUTH CRAM-MD5", 334)
        digest = hmac.new(PW.encode(), base64.b64decode(lines[0][4:]), hashlib.md5).hexdigest()
        c.ok(b64(f"{user} {digest}"), 535, "5.7.8")
    assert [e["failures"] for e in log_events(hk, "auth_failed")] == ["1", "2"]


def test_mechanism_not_offered_504(hikyaku, raw):
    hk = hikyaku(users_secrets={CAROL: ("CRYPT", PW)}, listener={"plaintext_auth": True})
    c = raw(hk.port)
    assert auth_keywords(c.ehlo()) == ["PLAIN", "LOGIN"]
    c.ok("AUTH SCRAM-SHA-256 " + b64(f"n,,n={CAROL},r=abcdefgh"), 504, "5.5.4")
    c.ok("AUTH CRAM-MD5", 504, "5.5.4")
    c.ok("AUTH PLAIN " + plain(user=CAROL), 235, "2.7.0")


# ---- Security 2: the lock-out holds under parallel connections -------------

def test_parallel_guesses_share_the_limit(hikyaku):
    # 50 connections from one address each send one wrong password before
    # any answer comes back: the limit was checked only when AUTH started,
    # so each got its guess (50 x 535 against a limit of 5)
    hk = hikyaku(users_secrets={CAROL: ("CRYPT", PW)}, listener={"plaintext_auth": True},
                 auth={"max_failures": 5, "failure_window": "1m"},
                 limits={"connections_per_ip": 100})
    conns = []
    try:
        for _ in range(50):
            c = RawSMTP(hk.port, timeout=60)
            c.ehlo()
            conns.append(c)
        for c in conns:
            c.send("AUTH PLAIN " + plain(user=CAROL, pw="wrong") + "\r\n")
        codes = [c.reply()[0] for c in conns]
    finally:
        for c in conns:
            c.close()
    assert 1 <= codes.count(535) <= 5, codes
    assert all(code in (535, 421, 454) for code in codes), codes
    assert len(log_events(hk, "auth_failed")) <= 5
    # and the address stays locked out, even with the right password
    c = RawSMTP(hk.port)
    c.ehlo()
    c.ok("AUTH PLAIN " + plain(user=CAROL), 421, "4.7.0")
    c.close()


def test_successful_logins_do_not_count(hikyaku, raw):
    # a guess is reserved before it is checked and given back when it
    # succeeds: many good logins never lock an address out
    hk = hikyaku(users_secrets={CAROL: ("CRYPT", PW)}, listener={"plaintext_auth": True},
                 auth={"max_failures": 2, "failure_window": "1m"})
    for _ in range(4):
        c = raw(hk.port)
        c.ehlo()
        c.ok("AUTH PLAIN " + plain(user=CAROL), 235, "2.7.0")
        c.ok("QUIT", 221)
    c = raw(hk.port)
    c.ehlo()
    c.ok("AUTH PLAIN " + plain(user=CAROL, pw="wrong"), 535, "5.7.8")
    c.ok("AUTH LOGIN", 334)
    c.ok("*", 501)  # a cancel is not a guess
    c.ok("AUTH PLAIN " + plain(user=CAROL), 235, "2.7.0")
    assert [e["failures"] for e in log_events(hk, "auth_failed")] == ["1"]


def test_abandoned_exchanges_do_not_count(hikyaku, raw):
    # an exchange left before any password was checked (the client went
    # away, or sent an over-long response) gives its reservation back
    hk = hikyaku(users_secrets={CAROL: ("CRYPT", PW)}, listener={"plaintext_auth": True},
                 auth={"max_failures": 2, "failure_window": "1m"})
    for _ in range(3):
        c = raw(hk.port)
        c.ehlo()
        c.ok("AUTH LOGIN", 334)
        c.ok(b64(CAROL), 334)
        c.close()
    c = raw(hk.port)
    c.ehlo()
    for _ in range(3):
        c.ok("AUTH PLAIN", 334)
        c.ok("A" * 13000, 500, "5.5.2")
    hk.wait_log("event=disconnect", count=3)
    c.ok("AUTH PLAIN " + plain(user=CAROL, pw="wrong"), 535, "5.7.8")
    assert [e["failures"] for e in log_events(hk, "auth_failed")] == ["1"]
    c.ok("AUTH PLAIN " + plain(user=CAROL), 235, "2.7.0")
