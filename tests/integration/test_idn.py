"""Internationalized domains (issue 8, Interop 2; RFC 6531, RFC 5890):
hikyaku compares, routes and looks up domains by their A-label form and
accepts either form in the configuration and on the wire. Real Postfix in
both directions: Postfix sends 用户@例子.test to hikyaku, and hikyaku sends a
UTF-8 domain to a Postfix found by the MX of its A-label."""
import os
import smtplib
import subprocess

import pytest

from conftest import RawSMTP, hikyaku_bin, log_events
from dns_server import DnsServer
from postfix_helpers import postfix_instance  # noqa: F401 (fixture)

ULABEL = "例子.test"
ALABEL = "xn--fsqu00a.test"
USER = "用户"

MSG = ("From: 寄件人 <sender@pf.test>\r\n"
       f"To: {USER}@{ULABEL}\r\n"
       "Subject: 你好\r\n"
       "Message-ID: <idn-1@pf.test>\r\n"
       "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
       "\r\n"
       "UTF-8 body: 你好\r\n").encode()


def test_local_domain_in_either_form(hikyaku):
    """local_domains: [例子.test] loads (it was refused as invalid); RCPT
    with SMTPUTF8 to either form is accepted (it got 554 5.7.1) and lands
    in one Maildir, under the A-label."""
    hk = hikyaku(local_domains=[ULABEL, "localhost"])
    c = RawSMTP(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<sender@example.net> SMTPUTF8", 250, "2.1.0")
    c.ok(f"RCPT TO:<{USER}@{ULABEL}>", 250, "2.1.5")
    c.ok(f"RCPT TO:<bob@{ALABEL.upper()}>", 250, "2.1.5")
    c.data("Subject: x\r\n\r\nhi\r\n")
    c.close()
    assert len(hk.wait_delivered(USER, ALABEL, 1)) == 1
    assert len(hk.wait_delivered("bob", ALABEL, 1)) == 1
    assert not os.path.exists(os.path.join(hk.mailroot, ULABEL))


def test_users_file_either_form(hikyaku):
    """A user written with the U-label is found by the A-label and back."""
    hk = hikyaku(local_domains=[ALABEL], users=[f"{USER}@{ULABEL}", f"ann@{ALABEL}"])
    c = RawSMTP(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<sender@example.net> SMTPUTF8", 250, "2.1.0")
    c.ok(f"RCPT TO:<{USER}@{ALABEL}>", 250, "2.1.5")
    c.ok(f"RCPT TO:<ann@{ULABEL}>", 250, "2.1.5")
    c.ok(f"RCPT TO:<nobody@{ULABEL}>", 550, "5.1.1")
    c.close()


def test_invalid_idn_refused_precisely(hikyaku):
    """A domain that IDNA2008 refuses gets 553 5.1.3 at RCPT and 553 5.1.7
    at MAIL, not a relay refusal; without SMTPUTF8 it is 553 5.6.7."""
    hk = hikyaku(local_domains=[ULABEL])
    c = RawSMTP(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<a@☃.test> SMTPUTF8", 553, "5.1.7")
    c.ok("MAIL FROM:<sender@example.net> SMTPUTF8", 250, "2.1.0")
    c.ok("RCPT TO:<a@☃.test>", 553, "5.1.3")
    c.ok("RCPT TO:<a@\u05d0a.test>", 553, "5.1.3")  # RFC 5893 bidi rule
    c.ok(f"RCPT TO:<{USER}@{ULABEL}>", 250, "2.1.5")
    c.ok("RSET")
    c.ok("MAIL FROM:<sender@example.net>", 250, "2.1.0")
    c.ok(f"RCPT TO:<bob@{ULABEL}>", 553, "5.6.7")
    c.close()


def test_config_refuses_invalid_idn(hikyaku):
    hk = hikyaku(local_domains=["☃.test"], start=False)
    r = subprocess.run([hikyaku_bin(), "check", "-c", hk.config], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0
    assert 'local_domains: invalid domain "☃.test"' in r.stderr + r.stdout


def test_postfix_sends_utf8_domain_to_hikyaku(hikyaku, postfix_instance):
    """Postfix (smtputf8_enable = yes) relays 用户@例子.test to hikyaku,
    which delivers it to its Maildir."""
    hk = hikyaku(local_domains=[ULABEL], users=[f"{USER}@{ULABEL}"])
    pf = postfix_instance(relayhost=f"[127.0.0.1]:{hk.port}",
                          main_cf={"smtp_tls_security_level": "none"})
    pf.submit("sender@pf.test", [f"{USER}@{ULABEL}"], MSG, smtputf8=True)
    pf.wait_log(r"status=sent")
    got = hk.read_delivered(USER, ALABEL, 1)[0]
    assert "你好".encode() in got
    assert f"Delivered-To: {USER}@{ULABEL}".encode() in got


@pytest.fixture
def idn_dns():
    srv = DnsServer(f"""
{ALABEL}.          60 IN MX 10 mx.{ALABEL}.
mx.{ALABEL}.       60 IN A 127.0.0.1
""")
    srv.start()
    yield srv
    srv.stop()


def test_hikyaku_sends_utf8_domain_by_mx_to_postfix(hikyaku, idn_dns, postfix_instance):
    """Outbound, the MX of the A-label is looked up (the mail used to
    bounce 5.1.2 at once) and the message reaches Postfix with the
    recipient as the client wrote it."""
    pf = postfix_instance(mailbox_domains=[ALABEL, ULABEL])
    hk = hikyaku(dns={"forwarders": [idn_dns.forwarder]},
                 delivery={"smtp_port": pf.port, "tls": "none"},
                 relay={"trusted_networks": ["127.0.0.0/8"]})
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=10) as s:
        s.ehlo("client.test")
        assert s.sendmail("bob@localhost", [f"{USER}@{ULABEL}"], MSG,
                          mail_options=["SMTPUTF8", "BODY=8BITMIME"]) == {}
    got = pf.wait_maildir(1)[0]
    assert "你好".encode() in got
    hk.wait_queue_empty()
    assert idn_dns.count(ALABEL + ".", "MX") >= 1
    ev = [e for e in log_events(hk, "delivery") if e.get("status") == "sent"]
    assert len(ev) == 1, hk.log()
    assert pf.wait_log(rf"to=<{USER}@{ULABEL}>.*status=sent")


def test_route_for_utf8_domain_written_either_way(hikyaku, postfix_instance):
    """A routes[] entry written with the U-label routes the A-label form of
    the domain (and back) to its relay."""
    pf = postfix_instance(mailbox_domains=[ALABEL, ULABEL])
    hk = hikyaku(routes=[{"domain": ULABEL, "transport": "relay",
                          "address": f"127.0.0.1:{pf.port}", "tls": "none"}],
                 relay={"trusted_networks": ["127.0.0.0/8"]})
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=10) as s:
        s.ehlo("client.test")
        assert s.sendmail("bob@localhost", [f"ann@{ALABEL}"], MSG) == {}
    pf.wait_maildir(1)
    hk.wait_queue_empty()
