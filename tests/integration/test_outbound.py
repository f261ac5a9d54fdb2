"""Outbound delivery end to end (issue 4): hikyaku accepts a message over
SMTP and delivers it by MX (dnslib zone on loopback, delivery.smtp_port set
to a scripted aiosmtpd server), through routes and a smarthost, with
retries, DSNs and bounces (parsed with Python's email package) that land in
the sender's local Maildir.

Servers: tests/integration/mta_helpers.py (ScriptedMTA; DsnMTA where the next
hop must offer DSN, which aiosmtpd cannot), DNS:
tests/integration/dns_server.py. LMTP goes to a real dovecot-lmtpd when it is
installed (started hermetically, root; RCPT-time refusals) and to aiosmtpd's
LMTP mode (per-recipient replies after the dot, RFC 2033 §4.2). One test uses
real port 25 on a host in a network namespace (root only). The expiry test
waits for the minimum delivery.max_lifetime (1m, ~62 s) and is marked slow.
"""
import email
import os
import random
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import log_events, wait_event
from dns_server import DnsServer
from mta_helpers import DROP, DROP_MID, DsnMTA, ScriptedMTA, strip_received
from tls_probe import TlsProbeMTA

HERE = os.path.dirname(os.path.abspath(__file__))

ZONE = """
example.net.          60 IN MX 10 mx1.example.net.
mx1.example.net.      60 IN A 127.0.0.1
other.test.           60 IN MX 10 mx1.example.net.
fallback.test.        60 IN MX 20 live.fallback.test.
fallback.test.        60 IN MX 10 dead.fallback.test.
dead.fallback.test.   60 IN A 127.0.0.2
live.fallback.test.   60 IN A 127.0.0.1
eq.test.              60 IN MX 10 a.eq.test.
eq.test.              60 IN MX 10 b.eq.test.
a.eq.test.            60 IN A 127.0.0.1
b.eq.test.            60 IN A 127.0.0.3
nullmx.test.          60 IN MX 0 .
down.test.            60 IN MX 10 mx.down.test.
mx.down.test.         60 IN A 127.0.0.4
tls.test.             60 IN MX 10 mx1.tls.test.
mx1.tls.test.         60 IN A 127.0.0.1
implicit.test.        60 IN A 127.0.0.1
v6.test.              60 IN MX 10 mx.v6.test.
mx.v6.test.           60 IN AAAA ::1
relayhost.test.       60 IN A 127.0.0.1
"""

MSG = (b"From: Bob <bob@localhost>\r\n"
       b"To: Carol <carol@example.net>\r\n"
       b"Subject: outbound test\r\n"
       b"Message-ID: <outbound-1@localhost>\r\n"
       b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
       b"\r\n"
       b"Hello Carol,\r\n"
       b".a line that starts with a dot\r\n"
       b"..and two dots\r\n"
       b"\r\n"
       b" trailing space \r\n"
       b"last line\r\n")


@pytest.fixture(scope="module")
def dns():
    srv = DnsServer(ZONE)
    srv.servfail.add("servfail.test.")
    srv.start()
    yield srv
    srv.stop()


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


@pytest.fixture
def dsn_mta():
    made = []

    def factory(**kw):
        m = DsnMTA(**kw).start()
        made.append(m)
        return m

    yield factory
    for m in made:
        m.stop()


def outbound(hikyaku, dns, port=9, delivery=None, **kw):
    """hikyaku with our DNS, MX port `port` and relaying allowed from
    loopback."""
    d = {"smtp_port": port}
    d.update(delivery or {})
    return hikyaku(dns={"forwarders": [dns.forwarder]}, delivery=d,
                   relay={"trusted_networks": ["127.0.0.0/8"]}, **kw)


def send(hk, rcpts, sender="bob@localhost", msg=MSG, mail_options=(), rcpt_options=()):
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=10) as s:
        s.ehlo("client.test")
        refused = s.sendmail(sender, list(rcpts), msg, mail_options=list(mail_options),
                             rcpt_options=list(rcpt_options))
        assert refused == {}


def dsn_of(raw):
    """(report, [per-recipient field blocks], third part) of a DSN,
    asserting the RFC 3464 / RFC 6522 structure."""
    m = email.message_from_bytes(raw)
    assert m.get_content_type() == "multipart/report", m
    assert m.get_param("report-type") == "delivery-status"
    assert m["From"].lower().startswith("mailer-daemon@") or "MAILER-DAEMON" in m["From"]
    assert m["Auto-Submitted"] == "auto-replied"
    parts = m.get_payload()
    assert parts[0].get_content_type() == "text/plain"
    assert parts[1].get_content_type() == "message/delivery-status"
    blocks = parts[1].get_payload()
    assert blocks[0]["Reporting-MTA"] == "dns; mx.test.example"
    return m, blocks[1:], parts[2] if len(parts) > 2 else None


def wait_bounces(hk, count=1, user="bob", timeout=15):
    files = hk.wait_delivered(user, "localhost", count, timeout=timeout)
    out = []
    for p in files:
        with open(p, "rb") as f:
            out.append(f.read())
    return out


def deliveries(hk, **match):
    return [e for e in log_events(hk, "delivery")
            if all(e.get(k) == v for k, v in match.items())]


# --- delivery by MX ----------------------------------------------------------

def test_mx_delivery_byte_exact(hikyaku, dns, mtas):
    mta = mtas()
    hk = outbound(hikyaku, dns, mta.port)
    send(hk, ["carol@example.net"])
    tx = mta.wait_messages(1)[0]
    assert tx.mail_from == "bob@localhost"
    assert tx.rcpts == ["carol@example.net"]
    assert strip_received(tx.data) == MSG
    assert tx.data.startswith(b"Received: from client.test")
    assert mta.sessions[0].hello == "mx.test.example"
    hk.wait_queue_empty()
    ev = deliveries(hk, to="carol@example.net", status="sent")
    assert len(ev) == 1 and ev[0]["dsn"].startswith("2.")
    assert "mx1.example.net[127.0.0.1]" in ev[0]["relay"]


def test_mx_fallback_order(hikyaku, dns, mtas):
    """MX 10 is 127.0.0.2 (refused), MX 20 is us: tried in order, delivered
    via the second in the same attempt."""
    mta = mtas()
    hk = outbound(hikyaku, dns, mta.port)
    send(hk, ["dave@fallback.test"])
    mta.wait_messages(1)
    hk.wait_queue_empty()
    ev = deliveries(hk, to="dave@fallback.test")
    assert [e["status"] for e in ev] == ["sent"], ev
    assert "live.fallback.test[127.0.0.1]" in ev[0]["relay"]
    assert "smtpc: connect relay=dead.fallback.test addr=127.0.0.2" in hk.log()
    log = hk.log()
    assert log.index("relay=dead.fallback.test") < log.index("relay=live.fallback.test")


def test_equal_preferences_both_used(hikyaku, dns, mtas):
    a = mtas(host="127.0.0.1")
    b = mtas(host="127.0.0.3", port=a.port)
    hk = outbound(hikyaku, dns, a.port)
    for i in range(12):
        send(hk, [f"u{i}@eq.test"])
    deadline = time.time() + 15
    while len(a.messages) + len(b.messages) < 12 and time.time() < deadline:
        time.sleep(0.05)
    assert len(a.messages) + len(b.messages) == 12
    # 2 * 2^-12 that a correct random order picks one host every time
    assert a.messages and b.messages, (len(a.messages), len(b.messages))


def test_one_transaction_per_domain(hikyaku, dns, mtas):
    mta = mtas()
    hk = outbound(hikyaku, dns, mta.port)
    send(hk, ["carol@example.net", "dan@EXAMPLE.net", "erin@other.test"])
    mta.wait_messages(2)
    hk.wait_queue_empty()
    assert len(mta.messages) == 2
    by_n = sorted(mta.messages, key=lambda t: len(t.rcpts))
    assert by_n[0].rcpts == ["erin@other.test"]
    assert sorted(r.lower() for r in by_n[1].rcpts) == ["carol@example.net", "dan@example.net"]
    # one session per destination, one transaction each
    assert sorted(len(s.txs) for s in mta.sessions) == [1, 1]


@pytest.mark.parametrize("where", ["rcpt", "data"])
def test_retry_after_4xx(hikyaku, dns, mtas, where):
    if where == "rcpt":
        mta = mtas(rcpt={"carol@example.net": ["451 4.3.0 greylisted", "250 2.1.5 OK"]})
    else:
        mta = mtas(data=["451 4.3.0 try again later", "250 2.0.0 OK"])
    hk = outbound(hikyaku, dns, mta.port)
    t0 = time.time()
    send(hk, ["carol@example.net"])
    mta.wait_messages(1, timeout=15)
    hk.wait_queue_empty()
    assert time.time() - t0 >= 0.9  # retry_min is 1s
    ev = deliveries(hk, to="carol@example.net")
    assert [e["status"] for e in ev] == ["deferred", "sent"], ev
    assert ev[0]["dsn"] == "4.3.0" and "451 4.3.0" in ev[0]["reason"]
    assert wait_event(hk, "deferred", timeout=0)
    assert hk.delivered("bob") == []  # no notification for a retry


@pytest.mark.parametrize("drop", [DROP, DROP_MID])
def test_dropped_connection_is_retried(hikyaku, dns, mtas, drop):
    """The server drops the connection in the middle of the data, or after
    the dot before its reply (delivery status unknown): the message is
    deferred and sent again (a duplicate is acceptable, a loss is not)."""
    mta = mtas(data=[drop, "250 2.0.0 OK"])
    hk = outbound(hikyaku, dns, mta.port)
    big = MSG + b"x" * 998 + b"\r\n" + (b"line of filler\r\n" * 20000)
    send(hk, ["carol@example.net"], msg=big)
    tx = mta.wait_messages(1, timeout=15)[0]
    assert strip_received(tx.data) == big
    hk.wait_queue_empty()
    ev = deliveries(hk, to="carol@example.net")
    assert [e["status"] for e in ev] == ["deferred", "sent"], ev
    assert ev[0]["dsn"].startswith("4.")
    assert mta.data_attempts == 2


def test_stalled_server_times_out_and_defers(hikyaku, dns, mtas):
    mta = mtas(data=[("STALL", 5), "250 2.0.0 OK"])
    hk = outbound(hikyaku, dns, mta.port, delivery={"data_timeout": "1s"})
    send(hk, ["carol@example.net"])
    ev = wait_event(hk, "delivery", to="carol@example.net", status="deferred")
    assert ev and "timeout" in ev[0]["reason"], hk.log()[-3000:]
    hk.wait_queue_empty(timeout=15)
    assert deliveries(hk, to="carol@example.net")[-1]["status"] == "sent"


def test_implicit_mx(hikyaku, dns, mtas):
    """No MX: the domain's own address is the exchanger (RFC 5321 §5.1)."""
    mta = mtas()
    hk = outbound(hikyaku, dns, mta.port)
    send(hk, ["ivy@implicit.test"])
    assert mta.wait_messages(1)[0].rcpts == ["ivy@implicit.test"]
    hk.wait_queue_empty()


def test_ipv6_exchanger(hikyaku, dns, mtas):
    if not socket.has_ipv6 or not os.path.exists("/proc/net/if_inet6"):
        pytest.skip("no IPv6")
    mta = mtas(host="::1")
    hk = outbound(hikyaku, dns, mta.port)
    send(hk, ["six@v6.test"])
    assert mta.wait_messages(1)[0].rcpts == ["six@v6.test"]
    ev = wait_event(hk, "delivery", to="six@v6.test", status="sent")
    assert ev and "[::1]" in ev[0]["relay"], ev


def test_refusing_greeting_tries_next_mx(hikyaku, dns, mtas):
    """MX 10 greets with 554 (RFC 5321 §3.1): QUIT, then MX 20."""
    live = mtas(host="127.0.0.1")
    bad = mtas(host="127.0.0.2", port=live.port, greeting="554 5.7.1 not today")
    hk = outbound(hikyaku, dns, live.port)
    send(hk, ["dave@fallback.test"])
    live.wait_messages(1)
    hk.wait_queue_empty()
    assert bad.connections == 1 and bad.messages == []
    assert [e["status"] for e in deliveries(hk, to="dave@fallback.test")] == ["sent"]


def test_helo_fallback(hikyaku, dns, mtas):
    mta = mtas(ehlo_caps=False)
    hk = outbound(hikyaku, dns, mta.port)
    send(hk, ["carol@example.net"])
    tx = mta.wait_messages(1)[0]
    assert mta.sessions[0].hello == "mx.test.example"
    # HELO: no ESMTP parameters at all
    assert tx.mail_options == [] and tx.rcpt_options == [[]]
    assert strip_received(tx.data) == MSG


def test_size_and_body_declared(hikyaku, dns, mtas):
    mta = mtas(size_limit=100000)
    hk = outbound(hikyaku, dns, mta.port)
    msg = MSG.replace(b"Hello Carol", "Héllo Carol".encode())
    send(hk, ["carol@example.net"], msg=msg, mail_options=["BODY=8BITMIME"])
    tx = mta.wait_messages(1)[0]
    assert "BODY=8BITMIME" in tx.mail_options
    size = [o for o in tx.mail_options if o.startswith("SIZE=")]
    assert size == [f"SIZE={len(tx.data)}"], (tx.mail_options, len(tx.data))
    assert strip_received(tx.data) == msg


def test_too_big_for_server_bounces_without_sending(hikyaku, dns, mtas):
    mta = mtas(size_limit=200)
    hk = outbound(hikyaku, dns, mta.port)
    send(hk, ["carol@example.net"])
    raw = wait_bounces(hk)[0]
    _, rcpts, _ = dsn_of(raw)
    assert rcpts[0]["Status"] == "5.3.4"
    assert all(not s.txs for s in mta.sessions)


def test_large_message_dot_stuffing_across_chunks(hikyaku, dns, mtas):
    """~400 KiB with dot lines at every alignment: the client sends the body
    in 64 KiB chunks; stuffing must not depend on where a chunk ends."""
    mta = mtas()
    hk = outbound(hikyaku, dns, mta.port)
    lines = [b"From: bob@localhost", b"Subject: big", b""]
    n = 0
    i = 0
    while n < 400000:
        line = b"." * (i % 3 + 1) + b"x" * (i % 97)
        lines.append(line)
        n += len(line) + 2
        i += 1
    msg = b"\r\n".join(lines) + b"\r\n."  # last line "." without CRLF: added by us
    send(hk, ["carol@example.net"], msg=msg[:-1])
    tx = mta.wait_messages(1, timeout=20)[0]
    assert strip_received(tx.data) == msg[:-1]


def test_relay_route_by_host_name(hikyaku, dns, mtas):
    mta = mtas()
    hk = outbound(hikyaku, dns, routes=[{"domain": "routed.test", "transport": "relay",
                                         "address": f"relayhost.test:{mta.port}",
                                         "tls": "none"}])
    send(hk, ["ann@routed.test"])
    assert mta.wait_messages(1)[0].rcpts == ["ann@routed.test"]
    assert dns.count("relayhost.test.", "A") >= 1
    assert dns.count("relayhost.test.", "MX") == 0


@pytest.mark.parametrize("where", ["mail", "data"])
def test_5xx_to_mail_or_data_bounces_all(hikyaku, dns, mtas, where):
    if where == "mail":
        mta = mtas(mail=["550 5.7.1 sender refused"])
    else:
        mta = mtas(data=["554 5.6.0 content rejected"])
    hk = outbound(hikyaku, dns, mta.port)
    send(hk, ["carol@example.net", "dan@example.net"])
    raw = wait_bounces(hk)[0]
    _, rcpts, _ = dsn_of(raw)
    assert sorted(r["Final-Recipient"] for r in rcpts) == [
        "rfc822; carol@example.net", "rfc822; dan@example.net"]
    want = "5.7.1" if where == "mail" else "5.6.0"
    assert all(r["Status"] == want for r in rcpts), rcpts
    assert all(want in r["Diagnostic-Code"] for r in rcpts)
    hk.wait_queue_empty()


@pytest.mark.parametrize("pipelining", [True, False])
def test_all_rcpts_refused(hikyaku, dns, mtas, pipelining):
    mta = mtas(pipelining=pipelining, rcpt={"a@example.net": ["550 5.1.1 no a"],
                                            "b@example.net": ["553 5.1.3 no b"]})
    hk = outbound(hikyaku, dns, mta.port)
    send(hk, ["a@example.net", "b@example.net"])
    raw = wait_bounces(hk)[0]
    _, rcpts, _ = dsn_of(raw)
    got = {r["Final-Recipient"]: (r["Status"], r["Diagnostic-Code"]) for r in rcpts}
    assert got["rfc822; a@example.net"][0] == "5.1.1" and "no a" in got["rfc822; a@example.net"][1]
    assert got["rfc822; b@example.net"][0] == "5.1.3" and "no b" in got["rfc822; b@example.net"][1]
    assert mta.data_attempts == 0
    hk.wait_queue_empty()


def test_mixed_local_and_remote_no_duplicates(hikyaku, dns, mtas):
    """alice@localhost is delivered in the first attempt; carol (451 once)
    and erin (another domain, 250) are remote: the retry sends carol's copy
    only, and alice's is not delivered again."""
    mta = mtas(rcpt={"carol@example.net": ["451 4.3.0 later", "250 2.1.5 OK"]})
    hk = outbound(hikyaku, dns, mta.port)
    send(hk, ["alice@localhost", "carol@example.net", "erin@other.test"])
    hk.wait_queue_empty(timeout=15)
    got = sorted(r for t in mta.messages for r in t.rcpts)
    assert got == ["carol@example.net", "erin@other.test"], [t.rcpts for t in mta.messages]
    assert len(hk.delivered("alice")) == 1
    assert [e["status"] for e in deliveries(hk, to="erin@other.test")] == ["sent"]
    assert [e["status"] for e in deliveries(hk, to="alice@localhost")] == ["sent"]


def _wait_data(mta, n=1, timeout=10):
    deadline = time.time() + timeout
    while mta.data_attempts < n and time.time() < deadline:
        time.sleep(0.02)
    assert mta.data_attempts == n


def test_shutdown_during_delivery_then_restart(hikyaku, dns, mtas):
    """SIGTERM while the remote server sits on the end of data for longer
    than the stop waits (5 s): a clean exit (status 0), the attempt
    abandoned, the message kept and delivered after the restart."""
    mta = mtas(data=[("STALL", 8), "250 2.0.0 OK"])
    hk = outbound(hikyaku, dns, mta.port)
    send(hk, ["carol@example.net"])
    _wait_data(mta)
    t0 = time.time()
    assert hk.stop() == 0
    assert 4.5 < time.time() - t0 < 8
    assert "event=drain_timeout active=1" in hk.log()
    assert len(hk.queue_files()) == 1
    hk.start()
    hk.wait_queue_empty(timeout=15)
    assert mta.data_attempts >= 2


def test_shutdown_with_dns_pending(hikyaku, dns):
    dns.drop.add("blackhole.test.")
    try:
        hk = outbound(hikyaku, dns)
        send(hk, ["x@blackhole.test"])
        deadline = time.time() + 5
        while dns.count("blackhole.test.", "MX") == 0 and time.time() < deadline:
            time.sleep(0.02)
        assert dns.count("blackhole.test.", "MX") >= 1
        assert hk.stop() == 0
        assert len(hk.queue_files()) == 1
    finally:
        dns.drop.discard("blackhole.test.")


def test_total_concurrency(hikyaku, dns, mtas):
    mta = mtas(data=[("STALL", 0.4)])
    hk = outbound(hikyaku, dns, mta.port, delivery={"total_concurrency": 1})
    for dom in ("example.net", "other.test", "implicit.test", "example.net"):
        send(hk, [f"t@{dom}"])
    mta.wait_messages(4, timeout=20)
    hk.wait_queue_empty()
    assert mta.max_active == 1


# --- bounces -----------------------------------------------------------------

@pytest.mark.parametrize("ret,pipelining", [("HDRS", True), ("FULL", False)])
def test_permanent_failure_bounce(hikyaku, dns, mtas, ret, pipelining):
    mta = mtas(pipelining=pipelining,
               rcpt={"nobody@example.net": ["550 5.1.1 <nobody@example.net>: no such user"]})
    hk = outbound(hikyaku, dns, mta.port)
    send(hk, ["nobody@example.net", "carol@example.net"], mail_options=[f"RET={ret}",
                                                                        "ENVID=env-42"])
    mta.wait_messages(1)
    raw = wait_bounces(hk)[0]
    hk.wait_queue_empty()
    m, rcpts, orig = dsn_of(raw)
    assert m["To"] == "bob@localhost" or "<bob@localhost>" in m["To"]
    per_msg = m.get_payload()[1].get_payload()[0]
    assert per_msg["Original-Envelope-Id"] == "env-42"
    assert per_msg["Arrival-Date"]
    assert len(rcpts) == 1, rcpts  # carol was delivered
    r = rcpts[0]
    assert r["Final-Recipient"] == "rfc822; nobody@example.net"
    assert r["Action"] == "failed"
    assert r["Status"] == "5.1.1"
    assert "550 5.1.1" in r["Diagnostic-Code"] and "no such user" in r["Diagnostic-Code"]
    assert r["Diagnostic-Code"].startswith("smtp;")
    assert r["Remote-MTA"] == "dns; mx1.example.net"
    # the Return-Path of the bounce is empty (RFC 3461 §6.1 / RFC 5321 §4.5.5)
    assert raw.startswith(b"Return-Path: <>\n")  # Maildir: LF line ends
    if ret == "FULL":
        assert orig.get_content_type() == "message/rfc822"
        inner = orig.get_payload()[0]
        assert inner["Subject"] == "outbound test"
        assert b".a line that starts with a dot" in raw
    else:
        assert orig.get_content_type() == "text/rfc822-headers"
        assert "Subject: outbound test" in orig.get_payload()
        assert b"last line" not in raw
    ev = deliveries(hk, to="nobody@example.net")
    assert [e["status"] for e in ev] == ["bounced"]


def test_null_mx_bounces_at_once(hikyaku, dns, mtas):
    mta = mtas()
    hk = outbound(hikyaku, dns, mta.port)
    send(hk, ["x@nullmx.test"])
    raw = wait_bounces(hk)[0]
    _, rcpts, _ = dsn_of(raw)
    assert rcpts[0]["Action"] == "failed"
    assert rcpts[0]["Status"] == "5.1.10"
    assert mta.connections == 0
    assert "smtpc: connect" not in hk.log()
    assert len(deliveries(hk, to="x@nullmx.test")) == 1


def test_nxdomain_bounces(hikyaku, dns):
    hk = outbound(hikyaku, dns)
    send(hk, ["x@no-such-domain.test"])
    raw = wait_bounces(hk)[0]
    _, rcpts, _ = dsn_of(raw)
    assert rcpts[0]["Status"] == "5.1.2"
    assert "no-such-domain.test" in rcpts[0]["Diagnostic-Code"]
    hk.wait_queue_empty()


def test_servfail_defers(hikyaku, dns):
    hk = outbound(hikyaku, dns)
    send(hk, ["x@servfail.test"])
    ev = wait_event(hk, "delivery", count=2, to="x@servfail.test", status="deferred")
    assert len(ev) >= 2, hk.log()[-3000:]
    assert ev[0]["dsn"] == "4.4.3"
    assert hk.delivered("bob") == []
    assert len(hk.queue_files()) >= 1
    assert deliveries(hk, status="bounced") == []


def test_null_sender_failure_goes_to_postmaster_once(hikyaku, dns, mtas):
    mta = mtas(rcpt={"nobody@example.net": ["550 5.1.1 no such user"]})
    hk = outbound(hikyaku, dns, mta.port)
    send(hk, ["nobody@example.net"], sender="")
    raw = wait_bounces(hk, user="postmaster")[0]
    _, rcpts, _ = dsn_of(raw)
    assert rcpts[0]["Final-Recipient"] == "rfc822; nobody@example.net"
    hk.wait_queue_empty()
    time.sleep(1)
    assert len(hk.delivered("postmaster")) == 1
    assert len(log_events(hk, "notify")) == 1


def test_smtputf8_to_server_without_it_bounces(hikyaku, dns, mtas):
    mta = mtas(smtputf8=False)
    hk = outbound(hikyaku, dns, mta.port)
    msg = "From: bob@localhost\r\nSubject: Grüße\r\n\r\nUTF-8 body\r\n".encode()
    send(hk, ["jörg@example.net"], msg=msg, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    raw = wait_bounces(hk)[0]
    m = email.message_from_bytes(raw)
    assert m.get_content_type() == "multipart/report"
    status = m.get_payload()[1]
    # RFC 6533: the recipient is non-ASCII, so the report is "global"
    assert status.get_content_type() == "message/global-delivery-status"
    text = status.as_bytes().decode("utf-8")
    assert "Final-Recipient: rfc822; jörg@example.net" in text or \
        "Final-Recipient: utf-8; jörg@example.net" in text, text
    assert re.search(r"^Status: 5\.6\.7$", text, re.M), text
    assert re.search(r"^Action: failed$", text, re.M), text
    assert re.search(r"^Diagnostic-Code: .*SMTPUTF8", text, re.M), text
    assert mta.messages == []
    assert all(not s.txs for s in mta.sessions)  # never got as far as MAIL


# --- DSN NOTIFY ----------------------------------------------------------------

def test_notify_success(hikyaku, dns, mtas):
    mta = mtas()
    hk = outbound(hikyaku, dns, mta.port)
    send(hk, ["carol@example.net"], rcpt_options=["NOTIFY=SUCCESS"])
    mta.wait_messages(1)
    raw = wait_bounces(hk)[0]
    _, rcpts, _ = dsn_of(raw)
    assert len(rcpts) == 1
    assert rcpts[0]["Final-Recipient"] == "rfc822; carol@example.net"
    # RFC 3464 §2.3.3 / RFC 3461 §5.2.2: the next hop offered no DSN, so
    # hikyaku's notice is the last: "relayed" ("delivered" is final delivery).
    assert rcpts[0]["Action"] == "relayed"
    assert rcpts[0]["Status"] == "2.0.0"


def test_double_bounce_goes_to_postmaster(hikyaku, dns, mtas):
    """The sender is in a domain with a null MX: its bounce fails too, and
    goes to the postmaster once; nothing more."""
    mta = mtas(rcpt={"nobody@example.net": ["550 5.1.1 no such user"]})
    hk = outbound(hikyaku, dns, mta.port)
    send(hk, ["nobody@example.net"], sender="someone@nullmx.test")
    raw = wait_bounces(hk, user="postmaster")[0]
    _, rcpts, _ = dsn_of(raw)
    assert rcpts[0]["Final-Recipient"] == "rfc822; someone@nullmx.test"
    assert rcpts[0]["Status"] == "5.1.10"
    hk.wait_queue_empty()
    time.sleep(0.5)
    assert len(hk.delivered("postmaster")) == 1
    assert len(log_events(hk, "notify")) == 2


def test_notify_success_relayed_action(hikyaku, dns, mtas):
    """RFC 3461 §5.2.2: relayed to a server without DSN (aiosmtpd offers
    none), the DSN parameters stay here and hikyaku's notice says
    "relayed", naming the server that took the message."""
    mta = mtas()
    hk = outbound(hikyaku, dns, mta.port)
    send(hk, ["carol@example.net"], mail_options=["RET=HDRS", "ENVID=env+2B1"],
         rcpt_options=["NOTIFY=SUCCESS"])
    tx = mta.wait_messages(1)[0]
    assert not any(o.startswith(("RET=", "ENVID=")) for o in tx.mail_options), tx.mail_options
    assert tx.rcpt_options == [[]]
    raw = wait_bounces(hk)[0]
    m, rcpts, _ = dsn_of(raw)
    assert m["Subject"] == "Successful Mail Relay Report"
    assert rcpts[0]["Action"] == "relayed"
    assert rcpts[0]["Remote-MTA"] == "dns; mx1.example.net"
    assert "250" in rcpts[0]["Diagnostic-Code"]
    assert [e["kind"] for e in log_events(hk, "notify")] == ["relayed"]
    assert log_events(hk, "notify_passed") == []


def test_notify_success_local_and_relayed(hikyaku, dns, mtas):
    """One message, NOTIFY=SUCCESS for a Maildir recipient and a relayed
    one: final delivery says "delivered", the relay "relayed", each in its
    own notice; nobody gets a copy twice."""
    mta = mtas()
    hk = outbound(hikyaku, dns, mta.port)
    send(hk, ["alice@localhost", "carol@example.net"], rcpt_options=["NOTIFY=SUCCESS"])
    raws = wait_bounces(hk, count=2)
    hk.wait_queue_empty()
    got = {}
    for raw in raws:
        _, rcpts, third = dsn_of(raw)
        assert len(rcpts) == 1
        got[rcpts[0]["Final-Recipient"]] = rcpts[0]["Action"]
        # issue 8: wording of a success report; Maildir has no remote reply
        # to put in a Diagnostic-Code (RFC 3464 §2.3.6)
        label = third["Content-Description"]
        if rcpts[0]["Action"] == "delivered":
            assert label == "Delivered Message Headers", label
            assert rcpts[0]["Diagnostic-Code"] is None, rcpts[0]
            assert b"delivered to maildir" not in raw.split(b"message/delivery-status", 1)[1]
        else:
            assert label == "Relayed Message Headers", label
            assert rcpts[0]["Diagnostic-Code"].startswith("smtp; 250"), rcpts[0]
    assert got == {"rfc822; alice@localhost": "delivered",
                   "rfc822; carol@example.net": "relayed"}
    assert sorted(e["kind"] for e in log_events(hk, "notify")) == ["relayed", "success"]
    assert len(hk.delivered("alice")) == 1 and len(mta.messages) == 1
    time.sleep(0.5)
    assert len(hk.delivered("bob")) == 2


def test_dsn_passed_to_next_hop_that_offers_it(hikyaku, dns, dsn_mta, tmp_path):
    """RFC 3461 §5.2.1: the next hop offers DSN, so RET and ENVID go with
    MAIL, NOTIFY and ORCPT with each RCPT (xtext as received, or as
    hikyaku encodes the address an alias was written as), and reporting
    the success is the next hop's job: hikyaku sends no notice and logs
    why."""
    mta = dsn_mta()
    aliases = tmp_path / "aliases"
    aliases.write_text("far@localhost: someone@example.net\n")
    hk = outbound(hikyaku, dns, mta.port, users=["bob@localhost"],
                  aliases_file=str(aliases))
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=10) as s:
        s.ehlo("client.test")
        assert s.has_extn("dsn")
        assert s.mail("bob@localhost", ["RET=HDRS", "ENVID=QQ+2B314159+3Dx"])[0] == 250
        assert s.rcpt("carol@example.net", ["NOTIFY=SUCCESS,FAILURE",
                                            "ORCPT=rfc822;carol+2Btag+3Dx@example.net"])[0] == 250
        assert s.rcpt("far+x@localhost", ["NOTIFY=SUCCESS"])[0] == 250
        assert s.data(MSG)[0] == 250
    tx = mta.wait_messages(1)[0]
    mail = tx.mail_line.split(" ")
    assert mail[:2] == ["MAIL", "FROM:<bob@localhost>"], tx.mail_line
    assert "RET=HDRS" in mail[2:] and "ENVID=QQ+2B314159+3Dx" in mail[2:], tx.mail_line
    assert tx.rcpt_lines == [
        "RCPT TO:<carol@example.net> NOTIFY=SUCCESS,FAILURE "
        "ORCPT=rfc822;carol+2Btag+3Dx@example.net",
        "RCPT TO:<someone@example.net> NOTIFY=SUCCESS ORCPT=rfc822;far+2Bx@localhost",
    ], mta.lines
    assert strip_received(tx.data) == MSG

    hk.wait_queue_empty()
    passed = wait_event(hk, "notify_passed", count=2)
    assert sorted(e["to"] for e in passed) == ["carol@example.net", "someone@example.net"]
    assert all(e["kind"] == "success" and "mx1.example.net" in e["relay"] for e in passed)
    assert [e["status"] for e in deliveries(hk)] == ["sent", "sent"]
    time.sleep(0.5)
    assert log_events(hk, "notify") == []
    assert hk.delivered("bob") == []


def test_failure_notice_the_spool_refused_is_sent_later(hikyaku, dns, mtas):
    """The spool cannot take the bounce (incoming/ made immutable, which
    even root cannot write into): the failed recipient stays queued instead
    of being marked done, and the sender gets exactly one bounce once the
    spool works again."""
    mta = mtas(rcpt={"nobody@example.net": ["451 4.3.0 later", "550 5.1.1 no such user"]})
    hk = outbound(hikyaku, dns, mta.port)
    incoming = os.path.join(hk.spool, "incoming")
    send(hk, ["nobody@example.net"])
    assert wait_event(hk, "deferred")
    if subprocess.run(["chattr", "+i", incoming], capture_output=True).returncode != 0:
        pytest.skip("chattr +i not supported here")
    try:
        assert wait_event(hk, "bounce_deferred", to="nobody@example.net")
        assert log_events(hk, "bounce_failed")
        assert hk.queue_files()  # still queued
        assert hk.delivered("bob") == []
    finally:
        subprocess.run(["chattr", "-i", incoming], check=True)
    raw = wait_bounces(hk)[0]
    _, rcpts, _ = dsn_of(raw)
    assert rcpts[0]["Final-Recipient"] == "rfc822; nobody@example.net"
    assert rcpts[0]["Status"] == "5.1.1"
    hk.wait_queue_empty()
    time.sleep(1.5)
    assert len(hk.delivered("bob")) == 1


def test_notify_never_no_bounce(hikyaku, dns, mtas):
    mta = mtas(rcpt={"nobody@example.net": ["550 5.1.1 no such user"]})
    hk = outbound(hikyaku, dns, mta.port)
    send(hk, ["nobody@example.net"], rcpt_options=["NOTIFY=NEVER"])
    hk.wait_queue_empty()
    assert deliveries(hk, to="nobody@example.net", status="bounced")
    time.sleep(0.5)
    assert hk.delivered("bob") == []
    assert log_events(hk, "notify") == []


def test_delay_warning(hikyaku, dns, mtas):
    mta = mtas(rcpt={"carol@example.net": ["451 4.3.0 busy"]})
    hk = outbound(hikyaku, dns, mta.port, delivery={"delay_warning": "2s"})
    send(hk, ["carol@example.net"], rcpt_options=["NOTIFY=DELAY,FAILURE"])
    raw = wait_bounces(hk, timeout=15)[0]
    m, rcpts, _ = dsn_of(raw)
    assert rcpts[0]["Action"] == "delayed"
    assert rcpts[0]["Status"] == "4.3.0"
    assert "451 4.3.0 busy" in rcpts[0]["Diagnostic-Code"]
    assert rcpts[0]["Will-Retry-Until"]
    # still queued, and warned only once
    time.sleep(3)
    assert len(hk.delivered("bob")) == 1
    assert hk.queue_files()


def test_no_delay_warning_without_notify_delay(hikyaku, dns, mtas):
    mta = mtas(rcpt={"carol@example.net": ["451 4.3.0 busy"]})
    hk = outbound(hikyaku, dns, mta.port, delivery={"delay_warning": "1s"})
    send(hk, ["carol@example.net"])
    wait_event(hk, "delivery", count=3, to="carol@example.net", status="deferred", timeout=15)
    assert hk.delivered("bob") == []


@pytest.mark.slow
def test_expiry_bounces_after_max_lifetime(hikyaku, dns, mtas):
    """~62 s: max_lifetime cannot be set below 1m. A delay notice first
    (NOTIFY=DELAY, delay_warning 20s), then the expiry bounce (4.4.7) with
    the last error."""
    mta = mtas(rcpt={"carol@example.net": ["451 4.3.0 busy"]})
    hk = outbound(hikyaku, dns, mta.port, delivery={"max_lifetime": "1m",
                                                    "delay_warning": "20s"})
    t0 = time.time()
    send(hk, ["carol@example.net"], rcpt_options=["NOTIFY=DELAY,FAILURE"])
    raws = wait_bounces(hk, count=2, timeout=80)
    assert time.time() - t0 >= 59
    actions = [dsn_of(r)[1][0]["Action"] for r in raws]
    assert sorted(actions) == ["delayed", "failed"], actions
    failed = [dsn_of(r)[1][0] for r in raws if dsn_of(r)[1][0]["Action"] == "failed"][0]
    assert failed["Status"] == "4.4.7"
    diag = " ".join(failed["Diagnostic-Code"].split())  # unfolded
    assert "451 4.3.0 busy" in diag and "expired" in diag, diag
    assert failed["Remote-MTA"] == "dns; mx1.example.net"  # the server that said 451
    hk.wait_queue_empty()
    last = deliveries(hk, to="carol@example.net")[-1]
    assert last["status"] == "bounced" and last["relay"].startswith("mx1.example.net["), last


# --- routes, smarthost, TLS ------------------------------------------------------

def test_route_relay(hikyaku, dns, mtas):
    mta = mtas()
    hk = outbound(hikyaku, dns, routes=[{"domain": "routed.test", "transport": "relay",
                                         "address": f"127.0.0.1:{mta.port}", "tls": "none"}])
    send(hk, ["ann@routed.test"])
    tx = mta.wait_messages(1)[0]
    assert tx.rcpts == ["ann@routed.test"]
    hk.wait_queue_empty()
    # routed.test has no DNS at all: the route did not look it up
    assert dns.count("routed.test.", "MX") == 0


def test_route_mx_port(hikyaku, dns, mtas):
    """issue 8: a mx route names its own port; other domains keep
    delivery.smtp_port. Both domains' MX is the same host (127.0.0.1)."""
    default = mtas()
    partner = mtas()
    hk = outbound(hikyaku, dns, default.port, routes=[
        {"domain": "other.test", "transport": "mx", "port": partner.port}])
    send(hk, ["carol@example.net", "olga@other.test"])
    assert partner.wait_messages(1)[0].rcpts == ["olga@other.test"]
    assert default.wait_messages(1)[0].rcpts == ["carol@example.net"]
    hk.wait_queue_empty()
    ev = wait_event(hk, "delivery", to="olga@other.test", status="sent")
    assert ev and ev[0]["relay"] == "mx1.example.net[127.0.0.1]", ev
    assert dns.count("other.test.", "MX") >= 1  # still looked up by MX


def test_smarthost_auth_over_starttls(hikyaku, dns, mtas, tmp_path):
    mta = mtas(tls=True, auth={"relayuser": "s3cret:pw"})
    cred = tmp_path / "cred"
    cred.write_text("relayuser:s3cret:pw\n")
    os.chmod(cred, 0o600)
    hk = outbound(hikyaku, dns, delivery={"smarthost": f"127.0.0.1:{mta.port}",
                                          "smarthost_tls": "encrypt",
                                          "smarthost_credentials": str(cred)})
    send(hk, ["carol@smart-only.test", "zed@nullmx.test"])
    tx = mta.wait_messages(1)[0]
    assert sorted(tx.rcpts) == ["carol@smart-only.test", "zed@nullmx.test"]
    sess = [s for s in mta.sessions if s.txs][0]
    assert sess.tls and sess.auth_login == "relayuser"
    assert mta.auth_attempts == [("PLAIN", "relayuser", True)]
    hk.wait_queue_empty()
    # the smarthost takes everything: no MX lookup (zed's null MX would bounce)
    assert dns.count("smart-only.test.", "MX") == 0
    assert "s3cret" not in hk.log()


def test_smarthost_wrong_password_defers(hikyaku, dns, mtas, tmp_path):
    mta = mtas(tls=True, auth={"relayuser": "right"})
    cred = tmp_path / "cred"
    cred.write_text("relayuser:wrong\n")
    os.chmod(cred, 0o600)
    hk = outbound(hikyaku, dns, delivery={"smarthost": f"127.0.0.1:{mta.port}",
                                          "smarthost_tls": "encrypt",
                                          "smarthost_credentials": str(cred)})
    send(hk, ["carol@example.net"])
    ev = wait_event(hk, "delivery", to="carol@example.net", status="deferred")
    assert ev and ev[0]["reason"].startswith("535"), hk.log()[-3000:]
    assert mta.messages == []
    assert hk.delivered("bob") == []


def test_smarthost_credentials_line_too_long_is_refused(hikyaku, dns, mtas, tmp_path):
    """A credentials line longer than the reader takes is an error, never a
    password silently cut short."""
    mta = mtas(tls=True, auth={"relayuser": "x" * 700})
    cred = tmp_path / "cred"
    cred.write_text("relayuser:" + "x" * 700 + "\n")
    os.chmod(cred, 0o600)
    hk = outbound(hikyaku, dns, delivery={"smarthost": f"127.0.0.1:{mta.port}",
                                          "smarthost_tls": "encrypt",
                                          "smarthost_credentials": str(cred)})
    send(hk, ["carol@example.net"])
    assert wait_event(hk, "credentials_error", reason="line too long")
    assert wait_event(hk, "delivery", to="carol@example.net", status="deferred")
    assert mta.auth_attempts == [] and mta.messages == []
    assert "x" * 40 not in hk.log()


def _as_service_user(hikyaku, dns, user, **kw):
    """hikyaku started as root with `user:` set: it drops privileges after
    binding. Its temporary directory must be traversable by that user."""
    hk = outbound(hikyaku, dns, start=False, user=user, **kw)
    os.chmod(hk.tmp, 0o755)
    return hk


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_smarthost_root_only_credentials_after_privilege_drop(hikyaku, dns, mtas, tmp_path):
    """issue 8: the credentials file as documented (root's, mode 0600) is
    read before the drop to `user: nobody`, and the smarthost gets AUTH."""
    mta = mtas(tls=True, auth={"relayuser": "s3cret"})
    cred = tmp_path / "cred"  # under pytest's 0700 directory: root only
    cred.write_text("relayuser:s3cret\n")
    os.chmod(cred, 0o600)
    hk = _as_service_user(hikyaku, dns, "nobody", delivery={
        "smarthost": f"127.0.0.1:{mta.port}", "smarthost_tls": "encrypt",
        "smarthost_credentials": str(cred)})
    hk.start()
    assert wait_event(hk, "privileges", user="nobody"), hk.log()[-2000:]
    send(hk, ["carol@example.net"])
    tx = mta.wait_messages(1)[0]
    assert tx.rcpts == ["carol@example.net"]
    assert mta.auth_attempts == [("PLAIN", "relayuser", True)]
    assert not log_events(hk, "credentials_error")
    assert "s3cret" not in hk.log()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_smarthost_credentials_error_has_errno_and_sighup_rereads(hikyaku, dns, mtas):
    """issue 8: a credentials file that cannot be read is logged with its
    errno and the mail waits (4.7.0); once the file is fixed, SIGHUP reads
    it again (a new queue process, as root) and the mail goes, also when
    the file is root's only."""
    import pwd
    nobody = pwd.getpwnam("nobody")
    mta = mtas(tls=True, auth={"relayuser": "s3cret"})
    d = tempfile.mkdtemp(prefix="hk-cred-")
    os.chmod(d, 0o755)
    cred = os.path.join(d, "cred")  # missing at the start
    try:
        hk = _as_service_user(hikyaku, dns, "nobody", delivery={
            "smarthost": f"127.0.0.1:{mta.port}", "smarthost_tls": "encrypt",
            "smarthost_credentials": cred})
        hk.start()
        ev = wait_event(hk, "credentials_error")
        assert ev and ev[0]["reason"] == "cannot read: No such file or directory", ev
        send(hk, ["carol@example.net"])
        ev = wait_event(hk, "delivery", to="carol@example.net", status="deferred")
        assert ev and ev[0]["dsn"] == "4.7.0", hk.log()[-3000:]
        # fixed: readable by the service user, which reads it at SIGHUP
        with open(cred, "w") as f:
            f.write("relayuser:s3cret\n")
        os.chown(cred, nobody.pw_uid, nobody.pw_gid)
        os.chmod(cred, 0o600)
        hk.proc.send_signal(signal.SIGHUP)
        assert wait_event(hk, "credentials_loaded"), hk.log()[-3000:]
        hk.proc.send_signal(signal.SIGUSR1)
        assert mta.wait_messages(1)[0].rcpts == ["carol@example.net"]
        assert mta.auth_attempts[-1] == ("PLAIN", "relayuser", True)
        # root's only, mode 0600, as documented: a reload starts a new
        # queue process, which reads it as root before dropping privileges
        os.chown(cred, 0, 0)
        hk.proc.send_signal(signal.SIGHUP)
        ev = wait_event(hk, "credentials_loaded", count=2)
        assert len(ev) == 2, hk.log()[-3000:]
        # A transaction that spans the queue's restart may get 451 (its
        # message file was the old queue's); a client sends again.
        try:
            send(hk, ["dave@example.net"])
        except smtplib.SMTPDataError as e:
            assert e.smtp_code == 451, e
            time.sleep(0.5)
            send(hk, ["dave@example.net"])
        assert mta.wait_messages(2)[1].rcpts == ["dave@example.net"]
        assert "s3cret" not in hk.log()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_starttls_opportunistic(hikyaku, dns, mtas):
    mta = mtas(tls=True, cn="mx1.tls.test")
    hk = outbound(hikyaku, dns, mta.port)
    send(hk, ["t@tls.test"])
    mta.wait_messages(1)
    sess = [s for s in mta.sessions if s.txs][0]
    assert sess.tls
    assert "smtpc: relay=mx1.tls.test tls=" in hk.log()


def test_starttls_may_falls_back_to_plaintext(hikyaku, dns, mtas):
    """Opportunistic TLS (RFC 7435): the server offers STARTTLS but the
    handshake fails; the mail goes in plaintext on a new connection instead
    of being deferred forever."""
    mta = mtas(tls="broken", cn="mx1.tls.test")
    hk = outbound(hikyaku, dns, mta.port)
    send(hk, ["t@tls.test"])
    tx = mta.wait_messages(1)[0]
    assert tx.rcpts == ["t@tls.test"]
    sess = [s for s in mta.sessions if s.txs][0]
    assert not sess.tls
    assert mta.connections == 2
    assert wait_event(hk, "delivery", to="t@tls.test", status="sent")
    assert [e["status"] for e in deliveries(hk, to="t@tls.test")] == ["sent"]
    ev = wait_event(hk, "tls_fallback", relay="mx1.tls.test", timeout=0)
    assert ev
    # issue 8: the real cause, not a verification nobody asked for
    # (aiosmtpd hangs up without sending its alert)
    assert "verification" not in ev[0]["reason"], ev
    assert "closed by the server during the handshake" in ev[0]["reason"], ev
    # a downgrade to plaintext is worth more than a debug line
    line = [ln for ln in hk.log().splitlines() if "event=tls_fallback" in ln][0]
    assert " warn hikyaku/queue[" in line, line


@pytest.mark.parametrize("policy", ["may", "encrypt"])
def test_tls_failure_after_certificate_names_the_cause(hikyaku, dns, mtas, policy):
    """issue 8: the server sees our (missing) client certificate and ends
    the handshake, after we received its self-signed certificate. Nothing
    was verified under may and encrypt: the reason is how the handshake
    ended, not "certificate verification failed: self-signed"."""
    mta = mtas(tls="client_cert", cn="mx1.tls.test")
    hk = outbound(hikyaku, dns, mta.port, delivery={"tls": policy})
    send(hk, ["t@tls.test"])
    if policy == "may":
        ev = wait_event(hk, "tls_fallback", relay="mx1.tls.test")
    else:
        ev = wait_event(hk, "delivery", to="t@tls.test", status="deferred")
    assert ev, hk.log()[-3000:]
    assert "verification" not in ev[0]["reason"] and "self-signed" not in ev[0]["reason"], ev
    # the server hangs up without an alert (asyncio does not flush it)
    assert "closed by the server during the handshake" in ev[0]["reason"], ev


@pytest.mark.parametrize("policy", ["may", "encrypt", "verify"])
def test_tls_protocol_alert_is_the_reason(hikyaku, dns, tmp_path, policy):
    """issue 8: a server that speaks TLS 1.1 at most refuses our ClientHello
    with a protocol_version alert: that alert is the reason, under every
    policy, and never a certificate verification."""
    probe = TlsProbeMTA(str(tmp_path), cn="mx1.tls.test", old=True).start()
    try:
        hk = outbound(hikyaku, dns, probe.port, delivery={"tls": policy})
        send(hk, ["t@tls.test"])
        if policy == "may":
            ev = wait_event(hk, "tls_fallback", relay="mx1.tls.test")
        else:
            ev = wait_event(hk, "delivery", to="t@tls.test", status="deferred")
        assert ev, hk.log()[-3000:]
        assert "verification" not in ev[0]["reason"], ev
        assert "alert protocol version" in ev[0]["reason"], ev
        assert probe.sessions[0]["handshake_error"] is not None
        if policy == "may":  # then in plaintext on a new connection
            assert wait_event(hk, "delivery", to="t@tls.test", status="sent", tls="none")
    finally:
        probe.stop()


def test_starttls_refused_fallback_is_logged(hikyaku, dns, mtas):
    """STARTTLS offered, then refused with 454: plaintext under tls: may,
    and the log says so above debug level, with the server's reply."""
    mta = mtas(starttls_reply="454 4.7.0 TLS not available due to temporary reason",
               tls=True, cn="mx1.tls.test")
    hk = outbound(hikyaku, dns, mta.port)
    send(hk, ["t@tls.test"])
    mta.wait_messages(1)
    ev = wait_event(hk, "tls_fallback", relay="mx1.tls.test")
    assert ev and ev[0]["reason"].startswith("STARTTLS refused: 454"), hk.log()[-3000:]
    assert wait_event(hk, "delivery", to="t@tls.test", status="sent", tls="none")


@pytest.mark.parametrize("policy", ["encrypt", "verify"])
def test_tls_required_handshake_failure_defers(hikyaku, dns, mtas, policy):
    mta = mtas(tls="broken", cn="mx1.tls.test")
    hk = outbound(hikyaku, dns, mta.port, delivery={"tls": policy})
    send(hk, ["t@tls.test"])
    ev = wait_event(hk, "delivery", to="t@tls.test", status="deferred")
    assert ev and ev[0]["dsn"] == "4.7.5", hk.log()[-3000:]
    # issue 8: the server hangs up, under every policy: even under verify
    # that is the cause, not its certificate
    assert "verification" not in ev[0]["reason"], ev
    assert "closed by the server during the handshake" in ev[0]["reason"], ev
    assert mta.messages == []
    assert all(not s.txs for s in mta.sessions)


def test_tls_verify_self_signed_defers(hikyaku, dns, mtas):
    mta = mtas(tls=True, cn="mx1.tls.test")
    hk = outbound(hikyaku, dns, mta.port, delivery={"tls": "verify"})
    send(hk, ["t@tls.test"])
    ev = wait_event(hk, "delivery", to="t@tls.test", status="deferred")
    assert ev and ev[0]["dsn"] == "4.7.5" and "certificate" in ev[0]["reason"], ev
    assert mta.messages == []


def test_delivery_log_names_tls(hikyaku, dns, mtas):
    """issue 8: the delivery line says which TLS carried the mail, as one
    token version:cipher, and tls=none for plaintext."""
    mta = mtas(tls=True, cn="mx1.tls.test")
    plain = mtas()
    hk = outbound(hikyaku, dns, mta.port, routes=[
        {"domain": "plain.test", "transport": "relay",
         "address": f"127.0.0.1:{plain.port}", "tls": "none"}])
    send(hk, ["t@tls.test", "p@plain.test"])
    ev = wait_event(hk, "delivery", to="t@tls.test", status="sent")
    assert ev and re.fullmatch(r"TLSv1\.[23]:[A-Z0-9_-]+", ev[0]["tls"]), ev
    ev = wait_event(hk, "delivery", to="p@plain.test", status="sent")
    assert ev and ev[0]["tls"] == "none", ev


@pytest.mark.parametrize("idle", ["0", "1s"], ids=["quit_at_once", "quit_when_idle"])
def test_client_quit_sends_close_notify(hikyaku, dns, tmp_path, idle):
    """issue 8: after QUIT over TLS the client ends TLS with close_notify,
    whether it quits after the transaction (no reuse) or when a cached
    connection times out; the server reads on and records what came."""
    probe = TlsProbeMTA(str(tmp_path), cn="mx1.tls.test").start()
    try:
        hk = outbound(hikyaku, dns, probe.port, delivery={"idle_timeout": idle})
        send(hk, ["t@tls.test"])
        assert wait_event(hk, "delivery", to="t@tls.test", status="sent")
        (sess,) = probe.wait_sessions(1)
        assert sess["tls"] and sess["messages"] == 1 and sess["quit"], (sess, probe.errors)
        assert sess["close_notify"] is True, (sess, probe.errors)
    finally:
        probe.stop()


def test_log_utf8_as_is_and_null_sender(hikyaku, dns, mtas):
    """issue 8: UTF-8 in logged values is printed as is (not \\xe7\\x94),
    the null sender is from=<>."""
    mta = mtas()
    hk = outbound(hikyaku, dns, mta.port)
    msg = "From: bob@localhost\r\nSubject: x\r\n\r\nbody\r\n".encode()
    send(hk, ["用户@example.net"], msg=msg, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    send(hk, ["carol@example.net"], sender="")
    mta.wait_messages(2)
    assert wait_event(hk, "delivery", to="用户@example.net", status="sent")
    log = hk.log()
    assert "to=用户@example.net" in log, log[-3000:]
    assert "\\xe7\\x94" not in log
    accepts = [ln for ln in log.splitlines() if "event=accept" in ln]
    assert any(" from=<> " in ln for ln in accepts), accepts
    assert not any('from=<"">' in ln for ln in accepts), accepts


def test_tls_encrypt_without_starttls_defers(hikyaku, dns, mtas):
    mta = mtas()
    hk = outbound(hikyaku, dns, mta.port, delivery={"tls": "encrypt"})
    send(hk, ["t@tls.test"])
    ev = wait_event(hk, "delivery", to="t@tls.test", status="deferred")
    assert ev and ev[0]["dsn"] == "4.7.5", ev
    assert mta.messages == []


# --- scheduler -------------------------------------------------------------------

def test_restart_with_loaded_queue(hikyaku, dns, mtas):
    """The MX is down: messages wait in the queue; hikyaku restarts; the MX
    comes up; everything is delivered and the queue empties."""
    from mta_helpers import _free_port
    port = _free_port("127.0.0.1")
    hk = outbound(hikyaku, dns, port)
    for i in range(3):
        send(hk, [f"r{i}@example.net"])
    wait_event(hk, "delivery", count=3, status="deferred")
    assert len(hk.queue_files()) == 3
    hk.restart()
    mta = mtas(port=port)
    mta.wait_messages(3, timeout=15)
    hk.wait_queue_empty()
    assert sorted(r for t in mta.messages for r in t.rcpts) == \
        ["r0@example.net", "r1@example.net", "r2@example.net"]


def test_destination_backoff(hikyaku, dns):
    hk = outbound(hikyaku, dns, 9)
    send(hk, ["a@down.test"])
    send(hk, ["b@down.test"])
    ev = wait_event(hk, "destination_backoff", dest="mx:down.test", timeout=15)
    assert ev, hk.log()[-3000:]
    assert int(ev[0]["failures"]) >= 2
    # while backed off, the destination is not even connected to
    ev2 = wait_event(hk, "delivery", reason="destination backed off after repeated "
                     "connection failures", timeout=10)
    assert ev2, hk.log()[-3000:]


def test_backed_off_destination_gets_one_probe(hikyaku, dns, mtas):
    """A server that accepts connections and never greets (each attempt
    holds a slot until the greeting times out): once the destination is backed off,
    the messages to it that come due together do not all connect again;
    one probes at a time."""
    mta = mtas(greeting=("STALL", 30))
    hk = outbound(hikyaku, dns, mta.port, delivery={"command_timeout": "1s"})
    for i in range(4):
        send(hk, [f"p{i}@example.net"])
    assert wait_event(hk, "destination_backoff", dest="mx:example.net", timeout=15), \
        hk.log()[-3000:]
    deadline = time.time() + 5
    while mta.active and time.time() < deadline:
        time.sleep(0.02)
    with mta.lock:
        first = mta.connections
        mta.max_active = mta.active
    time.sleep(5)
    assert mta.connections > first  # still retried
    assert mta.max_active == 1, (first, mta.connections, mta.max_active)


def test_connection_reuse(hikyaku, dns, mtas):
    mta = mtas()
    hk = outbound(hikyaku, dns, mta.port)
    for i in range(3):
        send(hk, [f"reuse{i}@example.net"])
        mta.wait_messages(i + 1)
    assert mta.connections == 1


def test_idle_timeout_quits_cached_connection(hikyaku, dns, mtas):
    """delivery.idle_timeout 1s: the connection kept after a message gets
    QUIT about 1 s later (not at once, not after the 5 s default), and the
    next message opens a new one."""
    mta = mtas()
    hk = outbound(hikyaku, dns, mta.port, delivery={"idle_timeout": "1s"})
    send(hk, ["idle1@example.net"])
    mta.wait_messages(1)
    t_done = time.time()
    deadline = t_done + 5
    while mta.sessions[0].quit is None and time.time() < deadline:
        time.sleep(0.02)
    sess = mta.sessions[0]
    assert sess.quit is not None, "no QUIT within 5 s"
    assert 0.7 <= sess.quit - t_done <= 2.5, sess.quit - t_done
    assert len(sess.txs) == 1
    send(hk, ["idle2@example.net"])
    mta.wait_messages(2)
    assert mta.connections == 2


def test_idle_timeout_zero_disables_reuse(hikyaku, dns, mtas):
    """delivery.idle_timeout 0: QUIT right after each transaction, a
    connection per message."""
    mta = mtas()
    hk = outbound(hikyaku, dns, mta.port, delivery={"idle_timeout": 0})
    for i in range(3):
        send(hk, [f"noreuse{i}@example.net"])
        mta.wait_messages(i + 1)
    hk.wait_queue_empty()
    deadline = time.time() + 3
    while any(s.quit is None for s in mta.sessions) and time.time() < deadline:
        time.sleep(0.02)
    assert mta.connections == 3
    for sess in mta.sessions:
        assert len(sess.txs) == 1
        assert sess.quit is not None
        # at once, not after an idle timeout
        assert sess.quit - sess.opened < 1.0, sess.quit - sess.opened


def test_destination_concurrency(hikyaku, dns, mtas):
    mta = mtas(data=[("STALL", 0.5)])
    hk = outbound(hikyaku, dns, mta.port, delivery={"destination_concurrency": 2})
    for i in range(10):
        send(hk, [f"c{i}@example.net"])
    mta.wait_messages(10, timeout=20)
    hk.wait_queue_empty()
    assert mta.max_active == 2, mta.max_active


def test_sigusr1_flush(hikyaku, dns, mtas):
    """A deferred message waits for its retry; SIGUSR1 tries it now."""
    mta = mtas(rcpt={"carol@example.net": ["451 4.3.0 busy", "250 2.1.5 OK"]})
    hk = outbound(hikyaku, dns, mta.port, queue={"retry_min": "1m", "retry_max": "1h"})
    send(hk, ["carol@example.net"])
    assert wait_event(hk, "deferred")
    time.sleep(0.3)
    assert mta.messages == []
    hk.proc.send_signal(signal.SIGUSR1)
    mta.wait_messages(1, timeout=5)
    hk.wait_queue_empty()


# --- LMTP: aiosmtpd's LMTP mode, and a real dovecot-lmtpd ---------------------

def test_lmtp_tcp_per_recipient(hikyaku, dns, mtas):
    """aiosmtpd.lmtp.LMTP, not dovecot-lmtpd: one reply per recipient after
    the dot (RFC 2033 §4.2): one 250, one 550 -> one delivered, one bounced."""
    mta = mtas(lmtp=True, lmtp_replies={"gone@mbox.test": ["550 5.1.1 mailbox gone"]})
    hk = outbound(hikyaku, dns, routes=[{"domain": "mbox.test", "transport": "lmtp",
                                         "address": f"127.0.0.1:{mta.port}", "tls": "none"}])
    send(hk, ["ok@mbox.test", "gone@mbox.test"])
    tx = mta.wait_messages(1)[0]
    assert tx.rcpts == ["ok@mbox.test", "gone@mbox.test"]
    assert mta.sessions[0].hello == "mx.test.example"
    raw = wait_bounces(hk)[0]
    _, rcpts, _ = dsn_of(raw)
    assert [r["Final-Recipient"] for r in rcpts] == ["rfc822; gone@mbox.test"]
    assert rcpts[0]["Status"] == "5.1.1" and "mailbox gone" in rcpts[0]["Diagnostic-Code"]
    hk.wait_queue_empty()
    assert [e["status"] for e in deliveries(hk, to="ok@mbox.test")] == ["sent"]


def test_lmtp_unix_socket(hikyaku, dns, mtas):
    d = tempfile.mkdtemp(prefix="hk-lmtp-", dir="/tmp")
    try:
        path = os.path.join(d, "lmtp")
        mta = mtas(lmtp=True, unix_path=path,
                   lmtp_replies={"later@mbox.test": ["452 4.2.2 over quota", "250 2.0.0 OK"]})
        hk = outbound(hikyaku, dns, routes=[{"domain": "mbox.test", "transport": "lmtp",
                                             "address": f"unix:{path}"}])
        send(hk, ["ok@mbox.test", "later@mbox.test"], rcpt_options=["NOTIFY=SUCCESS"])
        hk.wait_queue_empty(timeout=15)
        assert [t.rcpts for t in mta.messages] == [["ok@mbox.test", "later@mbox.test"],
                                                   ["later@mbox.test"]]
        assert [e["status"] for e in deliveries(hk, to="later@mbox.test")] == ["deferred",
                                                                                "sent"]
        # LMTP delivery is final delivery: NOTIFY=SUCCESS gives "delivered"
        raws = wait_bounces(hk, count=2)
        actions = sorted(dsn_of(r)[1][0]["Action"] for r in raws)
        assert actions == ["delivered", "delivered"]
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def dovecot():
    """A real Dovecot LMTP server (dovecot-lmtpd), hermetic: its own config,
    base_dir, users file and mail root in a temp dir, a loopback port and a
    unix socket, started in the foreground and stopped by its PID."""
    binary = "/usr/sbin/dovecot"
    if not os.path.exists(binary) or not os.path.exists("/usr/lib/dovecot/lmtp"):
        pytest.skip("dovecot-lmtpd is not installed")
    if os.geteuid() != 0:
        pytest.skip("dovecot needs root here (it drops to its service users)")
    from mta_helpers import _free_port
    d = tempfile.mkdtemp(prefix="hk-dovecot-", dir="/tmp")
    os.chmod(d, 0o755)
    for sub in ("run", "mail"):
        os.mkdir(os.path.join(d, sub))
    os.chmod(os.path.join(d, "mail"), 0o777)
    port = _free_port("127.0.0.1")
    with open(os.path.join(d, "users"), "w") as f:
        f.write(f"ok:{{PLAIN}}x:65534:65534::{d}/mail/ok::\n")
    conf = os.path.join(d, "dovecot.conf")
    with open(conf, "w") as f:
        f.write(f"""base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = lmtp
listen = 127.0.0.1
ssl = no
mail_location = maildir:~/Maildir
auth_username_format = %n
passdb {{
  driver = passwd-file
  args = {d}/users
}}
userdb {{
  driver = passwd-file
  args = {d}/users
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
  unix_listener {d}/lmtp {{
    mode = 0666
  }}
}}
""")
    proc = subprocess.Popen([binary, "-c", conf, "-F"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, "dovecot exited"
                assert time.time() < deadline, "dovecot did not start"
                time.sleep(0.05)
        yield {"port": port, "unix": os.path.join(d, "lmtp"),
               "new": os.path.join(d, "mail", "ok", "Maildir", "new"),
               "log": os.path.join(d, "dovecot.log")}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("via", ["tcp", "unix"])
def test_lmtp_real_dovecot(hikyaku, dns, dovecot, via):
    """LMTP to a real dovecot-lmtpd: ok is delivered into its Maildir,
    nope is refused by Dovecot (550 5.1.1 at RCPT) and bounced."""
    addr = f"127.0.0.1:{dovecot['port']}" if via == "tcp" else f"unix:{dovecot['unix']}"
    hk = outbound(hikyaku, dns, routes=[{"domain": "dove.test", "transport": "lmtp",
                                         "address": addr, "tls": "none"}])
    send(hk, ["ok@dove.test", "nope@dove.test"])
    raw = wait_bounces(hk)[0]
    _, rcpts, _ = dsn_of(raw)
    assert [r["Final-Recipient"] for r in rcpts] == ["rfc822; nope@dove.test"], \
        hk.log()[-3000:]
    assert rcpts[0]["Status"] == "5.1.1"
    assert "doesn't exist" in rcpts[0]["Diagnostic-Code"]
    hk.wait_queue_empty()
    files = os.listdir(dovecot["new"])
    assert len(files) == 1
    with open(os.path.join(dovecot["new"], files[0]), "rb") as f:
        saved = f.read()
    assert b"Subject: outbound test" in saved
    assert b"\n..and two dots\n" in saved  # dot-stuffing undone by Dovecot
    assert b"Return-Path: <bob@localhost>" in saved


# --- real port 25 in a network namespace ------------------------------------------

def test_port_25_in_netns(hikyaku, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root for a network namespace and port 25")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (ip) is missing")
    tag = f"{random.randrange(1 << 24):06x}"
    ns = f"hk-mx-{tag}"
    x = random.randrange(1, 250)
    host_if, ns_if = f"hkh{tag}", f"hkn{tag}"
    host_ip, ns_ip = f"10.231.{x}.1", f"10.231.{x}.2"
    outdir = tmp_path / "mx"
    outdir.mkdir()
    proc = None
    srv = None

    def ip(*args, check=True):
        return subprocess.run(["ip", *args], check=check, capture_output=True, text=True,
                              timeout=20)

    try:
        r = ip("netns", "add", ns, check=False)
        if r.returncode != 0:
            pytest.skip(f"cannot create a network namespace: {r.stderr.strip()}")
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        ip("link", "set", ns_if, "netns", ns)
        ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("-n", ns, "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        ip("-n", ns, "link", "set", ns_if, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, os.path.join(HERE, "mta_helpers.py"),
             "--host", ns_ip, "--port", "25", "--outdir", str(outdir)],
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "mx.err", "wb"))
        deadline = time.time() + 15
        while not (outdir / "ready").exists():
            assert proc.poll() is None, (tmp_path / "mx.err").read_text()
            assert time.time() < deadline, "the namespace's MX did not start"
            time.sleep(0.05)
        srv = DnsServer(f"ns25.test. 60 IN MX 10 mx.ns25.test.\n"
                        f"mx.ns25.test. 60 IN A {ns_ip}\n").start()
        hk = hikyaku(dns={"forwarders": [srv.forwarder]},
                     relay={"trusted_networks": ["127.0.0.0/8"]})  # smtp_port: default 25
        send(hk, ["ann@ns25.test"])
        hk.wait_queue_empty(timeout=15)
        import json
        got = json.loads((outdir / "0.json").read_text())
        assert got["mail_from"] == "bob@localhost"
        assert got["rcpts"] == ["ann@ns25.test"]
        assert strip_received(got["data"].encode("latin-1")) == MSG
        ev = deliveries(hk, to="ann@ns25.test", status="sent")
        assert ev and f"[{ns_ip}]" in ev[0]["relay"], ev
    finally:
        if srv is not None:
            srv.stop()
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=20)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


# --- stopping while deliveries are in flight ------------------------------------

def test_sigterm_waits_for_the_delivery_in_flight(hikyaku, dns, mtas):
    """A stop lets an attempt in flight finish and record its result: the
    remote gets the message once, not again after the restart."""
    mta = mtas(data=[("STALL", 1.5)])
    hk = outbound(hikyaku, dns, mta.port)
    send(hk, ["carol@example.net"])
    _wait_data(mta)  # the remote is sitting on the end of DATA
    t0 = time.time()
    assert hk.stop() == 0
    took = time.time() - t0
    assert 0.5 < took < 4.5, took
    log = hk.log()
    assert "event=draining active=1" in log and "event=drained" in log, log[-3000:]
    assert len(mta.messages) == 1
    hk.start()
    assert "queued=0" in hk.log().rsplit("event=start", 1)[1]
    time.sleep(1)
    assert len(mta.messages) == 1


def test_second_sigterm_stops_at_once(hikyaku, dns, mtas):
    mta = mtas(data=[("STALL", 30)])
    hk = outbound(hikyaku, dns, mta.port)
    send(hk, ["carol@example.net"])
    _wait_data(mta)
    hk.proc.send_signal(signal.SIGTERM)  # draining: the attempt is stuck
    time.sleep(0.3)
    assert hk.proc.poll() is None
    t0 = time.time()
    assert hk.stop() == 0  # the second SIGTERM
    assert time.time() - t0 < 2
    assert len(hk.queue_files()) == 1
