"""SMTP AUTH (RFC 4954) against the real daemon (issue 3): swaks with
PLAIN, LOGIN and CRAM-MD5; a SCRAM-SHA-256 client (RFC 5802, RFC 7677)
written here and checked against RFC 7677's test vector; AUTH only over TLS
unless the listener allows plaintext; the failure replies (535 5.7.8, 501,
503, 504, 500 for an over-long response); the per-address lock-out; and no
credential in the log."""
import base64
import hashlib
import hmac
import subprocess
import time

import pytest

from conftest import log_events, wait_event

ALICE = "alice@example.org"
PW = "correct horse battery"


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def plain(user=ALICE, pw=PW, authzid=""):
    return b64(f"{authzid}\0{user}\0{pw}")


def tls_ready(hk, raw):
    """A session after STARTTLS and the second EHLO: (client, EHLO lines)."""
    c = raw(hk.port)
    c.ehlo()
    c.starttls()
    return c, c.ehlo()


def auth_keywords(ehlo_lines):
    for ln in ehlo_lines:
        if ln[4:].startswith("AUTH "):
            return ln[9:].split()
    return None


# ---- SCRAM-SHA-256 client (RFC 5802 §3, §7) --------------------------------

def _hmac(key, msg):
    return hmac.new(key, msg.encode() if isinstance(msg, str) else msg,
                    hashlib.sha256).digest()


def scram_final(password, client_first_bare, server_first, gs2_header="n,,"):
    """(client-final-message, expected server signature, base64) for a
    server-first-message."""
    attrs = dict(a.split("=", 1) for a in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]),
                                 int(attrs["i"]))
    client_key = _hmac(salted, "Client Key")
    stored_key = hashlib.sha256(client_key).digest()
    without_proof = f"c={b64(gs2_header)},r={attrs['r']}"
    auth_message = f"{client_first_bare},{server_first},{without_proof}"
    client_sig = _hmac(stored_key, auth_message)
    proof = bytes(a ^ b for a, b in zip(client_key, client_sig))
    server_sig = _hmac(_hmac(salted, "Server Key"), auth_message)
    return f"{without_proof},p={b64(proof)}", b64(server_sig)


def test_scram_client_matches_rfc7677_vector():
    cfb = "n=user,r=rOprNGfwEbeRWgbNEkqO"
    sf = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    final, server_sig = scram_final("pencil", cfb, sf)
    assert final == ("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                     "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    assert server_sig == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def scram_exchange(c, user, password, cnonce="fyko+d2lbbFgONRv9qkxdawL"):
    """Run AUTH SCRAM-SHA-256 on c; returns the server's v= line check
    result and the final reply."""
    cfb = f"n={user},r={cnonce}"
    code, lines = c.cmd("AUTH SCRAM-SHA-256 " + b64("n,," + cfb))
    assert code == 334, lines
    server_first = base64.b64decode(lines[0][4:]).decode()
    assert server_first.startswith(f"r={cnonce}") and len(server_first) > len(cnonce) + 10
    final, want_sig = scram_final(password, cfb, server_first)
    code, lines = c.cmd(b64(final))
    return code, lines, want_sig


def test_scram_sha256_real_exchange(hikyaku, raw):
    hk = hikyaku(users_secrets={ALICE: ("SCRAM-SHA-256", PW)})
    c, ehlo = tls_ready(hk, raw)
    assert "SCRAM-SHA-256" in auth_keywords(ehlo)
    code, lines, want_sig = scram_exchange(c, ALICE, PW)
    assert code == 334, lines
    assert base64.b64decode(lines[0][4:]).decode() == f"v={want_sig}"
    c.ok("", 235, "2.7.0")
    c.ok("MAIL FROM:<alice@example.org>", 250)
    ev = wait_event(hk, "auth", mech="SCRAM-SHA-256", user=ALICE)
    assert ev


def test_scram_wrong_password(hikyaku, raw):
    hk = hikyaku(users_secrets={ALICE: ("SCRAM-SHA-256", PW)})
    c, _ = tls_ready(hk, raw)
    code, lines, _ = scram_exchange(c, ALICE, "not the password")
    assert (code, lines[0][4:9]) == (535, "5.7.8"), lines
    # an unknown user gets a server-first too (no enumeration), then 535
    code, lines, _ = scram_exchange(c, "nobody@example.org", PW)
    assert (code, lines[0][4:9]) == (535, "5.7.8"), lines


def test_scram_not_offered_without_scram_users(hikyaku, raw):
    hk = hikyaku(users_secrets={ALICE: ("CRYPT", PW)})
    c, ehlo = tls_ready(hk, raw)
    assert auth_keywords(ehlo) == ["PLAIN", "LOGIN"]


# ---- swaks -----------------------------------------------------------------

@pytest.mark.parametrize("mech,scheme", [("PLAIN", "CRYPT"), ("LOGIN", "SHA512-CRYPT"),
                                         ("CRAM-MD5", "CRAM-MD5"), ("PLAIN", "BLF-CRYPT")])
def test_swaks_auth_delivers(hikyaku, mech, scheme):
    # bob's {CRYPT} secret would keep CRAM-MD5 from being offered by default
    hk = hikyaku(users=["bob@example.org"], users_secrets={ALICE: (scheme, PW)},
                 listener={"submission": True}, auth={"mechanisms": ["PLAIN", "LOGIN", mech]})
    r = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{hk.port}", "-tls", "--auth", mech,
         "--auth-user", ALICE, "--auth-password", PW, "--from", ALICE,
         "--to", "bob@example.org", "--header", f"Subject: swaks {mech}",
         "--helo", "swaks.example", "--timeout", "10"],
        capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "235 2.7.0" in r.stdout
    (msg,) = hk.read_delivered("bob", "example.org")
    assert f"Subject: swaks {mech}".encode() in msg
    assert b"with ESMTPSA id" in msg
    assert wait_event(hk, "auth", mech=mech, user=ALICE)
    assert PW not in hk.log()


def test_swaks_wrong_password_535(hikyaku):
    hk = hikyaku(users_secrets={ALICE: ("CRAM-MD5", PW)})
    r = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{hk.port}", "-tls", "--auth", "CRAM-MD5",
         "--auth-user", ALICE, "--auth-password", "wrong", "--to", "bob@example.org",
         "--quit-after", "AUTH", "--timeout", "10"],
        capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "535 5.7.8" in r.stdout, r.stdout


# ---- AUTH and TLS ----------------------------------------------------------

def test_auth_needs_tls(hikyaku, raw):
    hk = hikyaku(users_secrets={ALICE: ("CRYPT", PW)})
    c = raw(hk.port)
    ehlo = c.ehlo()
    assert auth_keywords(ehlo) is None, ehlo
    assert "250-STARTTLS" in ehlo
    c.ok("AUTH PLAIN " + plain(), 530, "5.7.0")
    c.starttls()
    assert auth_keywords(c.ehlo()) == ["PLAIN", "LOGIN"]
    c.ok("AUTH PLAIN " + plain(), 235, "2.7.0")
    c.ok("AUTH PLAIN " + plain(), 503, "5.5.1")  # already authenticated
    assert auth_keywords(c.ehlo()) is None


def test_plaintext_auth_listener(hikyaku, raw):
    hk = hikyaku(users_secrets={ALICE: ("CRYPT", PW)}, listener={"plaintext_auth": True})
    c = raw(hk.port)
    assert auth_keywords(c.ehlo()) == ["PLAIN", "LOGIN"]
    c.ok("AUTH PLAIN " + plain(), 235, "2.7.0")


def test_no_auth_without_users_file(hikyaku, raw):
    hk = hikyaku(listener={"plaintext_auth": True})
    c = raw(hk.port)
    assert auth_keywords(c.ehlo()) is None
    c.ok("AUTH PLAIN " + plain(), 503, "5.5.1")


def test_auth_needs_ehlo(hikyaku, raw):
    hk = hikyaku(users_secrets={ALICE: ("CRYPT", PW)}, listener={"plaintext_auth": True})
    c = raw(hk.port)
    c.ok("HELO client.example", 250)
    c.ok("AUTH PLAIN " + plain(), 503, "5.5.1")


# ---- the exchanges ---------------------------------------------------------

def test_login_and_plain_without_initial_response(hikyaku, raw):
    hk = hikyaku(users_secrets={ALICE: ("CRYPT", PW)})
    c, _ = tls_ready(hk, raw)
    lines = c.ok("AUTH LOGIN", 334)
    assert base64.b64decode(lines[0][4:]) == b"Username:"
    lines = c.ok(b64(ALICE), 334)
    assert base64.b64decode(lines[0][4:]) == b"Password:"
    c.ok(b64("wrong"), 535, "5.7.8")
    c.ok("AUTH PLAIN", 334)
    c.ok(plain(), 235, "2.7.0")


def test_wrong_password_and_unknown_user_535(hikyaku, raw):
    hk = hikyaku(users_secrets={ALICE: ("CRYPT", PW)})
    c, _ = tls_ready(hk, raw)
    c.ok("AUTH PLAIN " + plain(pw="wrong"), 535, "5.7.8")
    c.ok("AUTH PLAIN " + plain(user="nobody@example.org"), 535, "5.7.8")
    # proxy authorization is not allowed
    c.ok("AUTH PLAIN " + plain(authzid="bob@example.org"), 535, "5.7.8")
    ev = log_events(hk, "auth_failed")
    assert [e["failures"] for e in ev] == ["1", "2", "3"], ev
    c.ok("AUTH PLAIN " + plain(), 235, "2.7.0")


def test_cram_md5_only_for_cram_users(hikyaku, raw):
    # offered by the operator although not every user can use them (by
    # default they would not be: test_auth_hardening.py)
    hk = hikyaku(users_secrets={ALICE: ("CRAM-MD5", PW), "carol@example.org": ("CRYPT", PW),
                                "dave@example.org": ("SCRAM-SHA-256", PW)},
                 auth={"mechanisms": ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"]})
    c, ehlo = tls_ready(hk, raw)
    assert auth_keywords(ehlo) == ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"]
    lines = c.ok("AUTH CRAM-MD5", 334)
    challenge = base64.b64decode(lines[0][4:])
    assert challenge.startswith(b"<") and challenge.endswith(b"@mx.test.example>")
    # a {CRYPT} user has no CRAM-MD5 secret: refused even with the
    # right password
    digest = hmac.new(PW.encode(), challenge, hashlib.md5).hexdigest()
    c.ok(b64(f"carol@example.org {digest}"), 535, "5.7.8")
    # nor a {SCRAM-SHA-256} user
    lines = c.ok("AUTH CRAM-MD5", 334)
    digest = hmac.new(PW.encode(), base64.b64decode(lines[0][4:]), hashlib.md5).hexdigest()
    c.ok(b64(f"dave@example.org {digest}"), 535, "5.7.8")
    # a digest of the old challenge does not pass a new one
    lines = c.ok("AUTH CRAM-MD5", 334)
    challenge2 = base64.b64decode(lines[0][4:])
    assert challenge2 != challenge
    stale = hmac.new(PW.encode(), challenge, hashlib.md5).hexdigest()
    c.ok(b64(f"{ALICE} {stale}"), 535, "5.7.8")
    lines = c.ok("AUTH CRAM-MD5", 334)
    digest = hmac.new(PW.encode(), base64.b64decode(lines[0][4:]), hashlib.md5).hexdigest()
    c.ok(b64(f"{ALICE} {digest}"), 235, "2.7.0")


@pytest.mark.parametrize("scheme", ["CRAM-MD5", "SCRAM-SHA-256"])
def test_plain_serves_every_scheme(hikyaku, raw, scheme):
    # src/auth/passwd.h: a plaintext password verifies against any scheme
    hk = hikyaku(users_secrets={ALICE: (scheme, PW)})
    c, _ = tls_ready(hk, raw)
    c.ok("AUTH PLAIN " + plain(pw="wrong"), 535, "5.7.8")
    c.ok("AUTH PLAIN " + plain(), 235, "2.7.0")


def test_auth_in_transaction_503(hikyaku, raw):
    hk = hikyaku(users_secrets={ALICE: ("CRYPT", PW)}, listener={"plaintext_auth": True})
    c = raw(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<x@example.net>", 250)
    c.ok("AUTH PLAIN " + plain(), 503, "5.5.1")
    c.ok("RSET", 250)
    c.ok("AUTH PLAIN " + plain(), 235, "2.7.0")


def test_cancel_with_star_501(hikyaku, raw):
    hk = hikyaku(users_secrets={ALICE: ("CRYPT", PW)}, listener={"plaintext_auth": True})
    c = raw(hk.port)
    c.ehlo()
    c.ok("AUTH LOGIN", 334)
    c.ok("*", 501)
    c.ok("NOOP", 250, "2.0.0")  # back at the command level
    c.ok("AUTH LOGIN", 334)
    c.ok(b64(ALICE), 334)
    c.ok("*", 501)
    c.ok("AUTH PLAIN " + plain(), 235, "2.7.0")
    assert not log_events(hk, "auth_failed")  # a cancel is not a failure


def test_malformed_base64_501(hikyaku, raw):
    hk = hikyaku(users_secrets={ALICE: ("CRYPT", PW)}, listener={"plaintext_auth": True})
    c = raw(hk.port)
    c.ehlo()
    c.ok("AUTH PLAIN !!!notbase64!!!", 501, "5.5.2")
    c.ok("AUTH LOGIN", 334)
    c.ok("abc", 501, "5.5.2")  # bad length
    c.ok("AUTH PLAIN", 334)
    c.ok(b64("no nul separators"), 501, "5.5.2")  # base64 fine, PLAIN malformed
    c.ok("NOOP", 250)
    c.ok("AUTH PLAIN " + plain(), 235, "2.7.0")


def test_unknown_mechanism_504(hikyaku, raw):
    hk = hikyaku(users_secrets={ALICE: ("CRYPT", PW)}, listener={"plaintext_auth": True})
    c = raw(hk.port)
    c.ehlo()
    c.ok("AUTH GSSAPI", 504, "5.5.4")
    c.ok("AUTH SCRAM-SHA-1 " + b64("n,,n=a,r=b"), 504, "5.5.4")
    c.ok("AUTH", 504, "5.5.4")
    c.ok("AUTH PLAIN " + plain(), 235, "2.7.0")


def test_overlong_response_refused_session_continues(hikyaku, raw):
    hk = hikyaku(users_secrets={ALICE: ("CRYPT", PW)}, listener={"plaintext_auth": True})
    c = raw(hk.port)
    c.ehlo()
    # a response line longer than RFC 4954's 12288 octets
    c.ok("AUTH PLAIN", 334)
    c.ok("A" * 13000, 500, "5.5.2")
    # the exchange is over: the next line is a command, not a response
    c.ok("NOOP", 250, "2.0.0")
    # the same as an initial response
    c.ok("AUTH PLAIN " + "A" * 13000, 500, "5.5.2")
    c.ok("NOOP", 250, "2.0.0")
    # a long but legal response (12000 octets) is read, and is malformed PLAIN
    c.ok("AUTH PLAIN", 334)
    c.ok("A" * 12000, 501, "5.5.2")
    c.ok("AUTH PLAIN " + plain(), 235, "2.7.0")


def test_lockout_after_failures(hikyaku, raw):
    hk = hikyaku(users_secrets={ALICE: ("CRYPT", PW)}, listener={"plaintext_auth": True},
                 auth={"max_failures": 3, "failure_window": "1m"})
    c = raw(hk.port)
    c.ehlo()
    t0 = time.monotonic()
    c.ok("AUTH PLAIN " + plain(pw="bad1"), 535, "5.7.8")
    c.ok("AUTH PLAIN " + plain(pw="bad2"), 535, "5.7.8")
    c.ok("AUTH PLAIN " + plain(pw="bad3"), 535, "5.7.8")
    # slowed down: 200 + 400 + 600 ms of delay before the three 535s
    assert time.monotonic() - t0 >= 1.1
    c.expect(421, "4.7.0")
    assert c.closed()
    assert wait_event(hk, "auth_lockout")
    # a new connection from the same address: refused even with the
    # right password
    c2 = raw(hk.port)
    c2.ehlo()
    c2.ok("AUTH PLAIN " + plain(), 421, "4.7.0")
    assert c2.closed()
    assert len(wait_event(hk, "auth_lockout", count=2)) == 2
    # mail without AUTH is still accepted on this (non-submission) port
    c3 = raw(hk.port)
    c3.begin(rcpts=("alice@example.org",))


def test_credentials_never_logged(hikyaku, raw):
    hk = hikyaku(users_secrets={ALICE: ("CRYPT", PW)}, listener={"plaintext_auth": True})
    payload_ok, payload_bad = plain(), plain(pw="Wr0ngSecret!")
    c = raw(hk.port)
    c.ehlo()
    c.ok("AUTH PLAIN " + payload_bad, 535, "5.7.8")
    c.ok("AUTH LOGIN", 334)
    c.ok(b64(ALICE), 334)
    c.ok(b64("An0therSecret"), 535, "5.7.8")
    c.ok("AUTH PLAIN " + payload_ok, 235, "2.7.0")
    c.ok("QUIT", 221)
    hk.wait_log("event=disconnect")
    log = hk.log()
    assert "event=auth " in log
    for secret in (PW, "Wr0ngSecret!", "An0therSecret", payload_ok, payload_bad,
                   b64("An0therSecret"), b64(ALICE)):
        assert secret not in log, secret
