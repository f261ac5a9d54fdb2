"""SMTP AUTH as real clients and an attacker meet it (issue 8): what is
advertised must work for every user (curl and Postfix pick the strongest
offered mechanism and never retry), auth.mechanisms, the lock-out under
parallel connections, no user enumeration through SCRAM, the dummy hash of
an unknown user, and no AUTH state surviving STARTTLS (RFC 3207 §4.2)."""
import base64
import socket
import subprocess

import pytest

from conftest import log_events, wait_event
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
