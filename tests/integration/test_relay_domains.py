"""Gateway and backup-MX domains (issue 8, Interop 5): relay_domains are
accepted from any client and passed on to their route (LMTP or relay; MX
when there is none), as Postfix's relay_domains; with the route's
verify_recipients, the route's server is asked at RCPT time (an LMTP or
SMTP RCPT probe) so an unknown user gets 550 during the session instead of
a bounce later. A domain that is neither local nor relayed is still 554."""
import os
import socket
import time

import pytest

from conftest import RawSMTP, log_events
from mta_helpers import ScriptedMTA
from test_outbound import dovecot  # noqa: F401 (fixture)

MSG = "Subject: gateway\r\nFrom: someone@example.net\r\n\r\nhello\r\n"


@pytest.fixture
def mtas(tmp_path):
    made = []

    def factory(**kw):
        kw.setdefault("cert_dir", str(tmp_path))
        m = ScriptedMTA(**kw).start()
        made.append(m)
        return m

    yield factory
    for m in made:
        m.stop()


def lmtp_route(domain, address, **kw):
    return {"domain": domain, "transport": "lmtp", "address": address, "tls": "none", **kw}


def deliveries(hk, **match):
    return [e for e in log_events(hk, "delivery")
            if all(e.get(k) == v for k, v in match.items())]


def test_relay_domain_from_anyone_over_lmtp(hikyaku, mtas):
    """An unauthenticated client from an untrusted address (no
    relay.trusted_networks) may send to a relay domain; any user is taken
    (no verification) and the message goes to the domain's LMTP route."""
    mta = mtas(lmtp=True)
    hk = hikyaku(relay_domains=["gw.test"],
                 routes=[lmtp_route("gw.test", f"127.0.0.1:{mta.port}")])
    c = RawSMTP(hk.port)
    c.begin(sender="someone@example.net", rcpts=["anyone@gw.test", "Other@GW.test"])
    c.ok("RCPT TO:<x@not-ours.test>", 554, "5.7.1")
    c.data(MSG)
    c.close()
    tx = mta.wait_messages(1)[0]
    assert sorted(tx.rcpts) == ["Other@gw.test", "anyone@gw.test"]
    hk.wait_queue_empty()


def test_relay_domain_over_relay_route(hikyaku, mtas):
    """A backup MX: the domain's route is SMTP to the primary."""
    mta = mtas()
    hk = hikyaku(relay_domains=["backup.test"],
                 routes=[{"domain": "backup.test", "transport": "relay",
                          "address": f"127.0.0.1:{mta.port}", "tls": "none"}])
    c = RawSMTP(hk.port)
    c.begin(sender="someone@example.net", rcpts=["user@backup.test"])
    c.data(MSG)
    c.close()
    tx = mta.wait_messages(1)[0]
    assert tx.rcpts == ["user@backup.test"]
    hk.wait_queue_empty()


def test_non_relay_non_local_domain_still_refused(hikyaku, mtas):
    mta = mtas(lmtp=True)
    hk = hikyaku(relay_domains=["gw.test"],
                 routes=[lmtp_route("gw.test", f"127.0.0.1:{mta.port}"),
                         lmtp_route("routed-only.test", f"127.0.0.1:{mta.port}")])
    c = RawSMTP(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<someone@example.net>", 250)
    c.ok("RCPT TO:<a@routed-only.test>", 554, "5.7.1")
    c.ok("RCPT TO:<a@sub.gw.test>", 554, "5.7.1")
    c.ok("RCPT TO:<a@elsewhere.test>", 554, "5.7.1")
    c.close()
