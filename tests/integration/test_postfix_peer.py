"""hikyaku and a real Postfix (Debian's 3.7) in both directions: Postfix
relays to hikyaku as its relayhost, and hikyaku routes a domain to Postfix,
which delivers it into a Maildir. The fixture itself is exercised here; the
interop tests of single features (AUTH, SMTPUTF8) use it too."""
import smtplib

from conftest import wait_event
from postfix_helpers import postfix_instance  # noqa: F401 (fixture)


def test_postfix_relays_to_hikyaku(hikyaku, postfix_instance):
    hk = hikyaku()
    pf = postfix_instance(relayhost=f"[127.0.0.1]:{hk.port}")
    pf.submit("sender@pf.test", ["alice@localhost"],
              "From: sender@pf.test\r\nSubject: via postfix\r\n\r\nhello\r\n")
    pf.wait_log(r"to=<alice@localhost>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+.*status=sent")
    msg = hk.wait_delivered("alice", "localhost", 1)
    assert msg is not None
    body = hk.read_delivered("alice", "localhost", 1)[0]
    assert b"Subject: via postfix" in body
    # Postfix took STARTTLS (offered by hikyaku on every listener).
    assert "TLS connection established" in pf.log()


def test_hikyaku_routes_to_postfix(hikyaku, postfix_instance):
    pf = postfix_instance(mailbox_domains=["pf.test"])
    hk = hikyaku(routes=[{"domain": "pf.test", "transport": "relay",
                          "address": f"127.0.0.1:{pf.port}", "tls": "may"}],
                 relay={"trusted_networks": ["127.0.0.0/8"]})
    with smtplib.SMTP("127.0.0.1", hk.port) as s:
        s.sendmail("me@localhost", ["bob@pf.test"],
                   b"From: me@localhost\r\nSubject: to postfix\r\n\r\nhi\r\n")
    got = pf.wait_maildir(1)[0]
    assert b"Subject: to postfix" in got
    wait_event(hk, "delivery", to="bob@pf.test", status="sent")
