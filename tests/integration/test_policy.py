"""The asynchronous policy engine (src/policy, issue 9): the client's
forward-confirmed reverse DNS (FCrDNS) at connect, in Received as Postfix
writes it ("from helo (name [addr])") and in the log; policy.require_fcrdns
refusing clients without it (450 4.7.25 at MAIL); commands pipelined behind
a check that answers later keep their reply order.

The clients are on loopback, which hikyaku names "localhost" without a
lookup; policy.fcrdns_loopback makes it ask the test DNS server
(dns_server.py, dns.forwarders) for 127.0.0.1 like for any address, so each
test serves its own PTR and A records for 127.0.0.1. The PTR lookup of
src/dns is tested on its own at the end, through tests/dns/dns_probe.c."""
import json
import re
import socket
import subprocess
import time

import pytest
from dnslib import PTR, QTYPE, RR, DNSLabel

from conftest import RawSMTP, log_events
from dns_server import DnsServer
from mta_helpers import ScriptedMTA
from test_dns import probe_bin

PTR_NAME = "1.0.0.127.in-addr.arpa."
MSG = "Subject: policy\r\n\r\nhello\r\n"


@pytest.fixture
def dns_zone():
    made = []

    def factory(zone, **kw):
        srv = DnsServer(zone)
        for k, v in kw.items():
            getattr(srv, k).update(v)
        srv.start()
        made.append(srv)
        return srv

    yield factory
    for s in made:
        s.stop()


def looking_up(hikyaku, srv, **policy):
    return hikyaku(dns={"forwarders": [srv.forwarder]},
                   policy={"fcrdns_loopback": True, **policy})


def assert_clean_exit(hk):
    """Stopped by SIGTERM with exit status 0: nothing for ASan/UBSan to say."""
    rc = hk.stop()
    log = hk.log()
    assert "Sanitizer" not in log and "runtime error" not in log, log[-4000:]
    assert rc == 0, rc


def received_of(hk):
    (msg,) = hk.read_delivered("alice")
    m = re.search(rb"Received: from ([^\n]*)\n", msg)
    assert m, msg
    return m.group(1).decode()


def send_one(hk):
    c = RawSMTP(hk.port)
    c.begin(rcpts=["alice@localhost"])
    c.data(MSG)
    c.ok("QUIT", 221)
    c.close()


def test_loopback_is_localhost_without_lookup(hikyaku, dns_zone):
    """By default a loopback client needs no DNS: it is "localhost",
    confirmed, and the DNS server is never asked."""
    srv = dns_zone("")
    hk = hikyaku(dns={"forwarders": [srv.forwarder]})
    send_one(hk)
    assert received_of(hk) == "client.example (localhost [127.0.0.1])"
    assert srv.count(PTR_NAME, "PTR") == 0
    hk.wait_log("event=disconnect")
    assert log_events(hk, "disconnect")[-1]["rdns"] == "localhost"


def test_fcrdns_confirmed(hikyaku, dns_zone):
    """PTR 127.0.0.1 -> two names, one of which points back: that one is
    confirmed and named in Received and in the log."""
    srv = dns_zone(f"{PTR_NAME} 300 IN PTR other.client.test.\n"
                   f"{PTR_NAME} 300 IN PTR mail.client.test.\n"
                   "other.client.test. 300 IN A 192.0.2.7\n"
                   "mail.client.test. 300 IN A 192.0.2.8\n"
                   "mail.client.test. 300 IN A 127.0.0.1\n")
    hk = looking_up(hikyaku, srv)
    send_one(hk)
    assert received_of(hk) == "client.example (mail.client.test [127.0.0.1])"
    hk.wait_log("event=disconnect")
    f = log_events(hk, "fcrdns")[-1]
    assert (f["rdns"], f["status"], f["client"]) == ("mail.client.test", "confirmed", "127.0.0.1")
    assert log_events(hk, "disconnect")[-1]["rdns"] == "mail.client.test"
    assert srv.count(PTR_NAME, "PTR") >= 1
    assert srv.count("mail.client.test.", "A") >= 1
    assert_clean_exit(hk)


@pytest.mark.parametrize("zone", [
    # a PTR whose name points elsewhere
    f"{PTR_NAME} 300 IN PTR liar.client.test.\nliar.client.test. 300 IN A 192.0.2.1\n",
    # a PTR whose name does not exist
    f"{PTR_NAME} 300 IN PTR gone.client.test.\nclient.test. 300 IN A 192.0.2.2\n",
    # a PTR "name" that spells the address itself: never taken as one
    f"{PTR_NAME} 300 IN PTR 127.0.0.1.\n",
    # no PTR at all
    "client.test. 300 IN A 192.0.2.3\n",
], ids=["mismatch", "nxdomain_name", "address_as_name", "no_ptr"])
def test_fcrdns_unconfirmed(hikyaku, dns_zone, zone):
    """Not confirmed: Received says "unknown", as Postfix does, and the
    mail is accepted (policy.require_fcrdns is off by default)."""
    srv = dns_zone(zone)
    hk = looking_up(hikyaku, srv)
    send_one(hk)
    assert received_of(hk) == "client.example (unknown [127.0.0.1])"
    hk.wait_log("event=disconnect")
    f = log_events(hk, "fcrdns")[-1]
    assert (f["rdns"], f["status"]) == ("unknown", "none")
    assert log_events(hk, "disconnect")[-1]["rdns"] == "unknown"


def test_fcrdns_timeout(hikyaku, dns_zone):
    """The DNS server does not answer: at policy.fcrdns_timeout the name is
    unknown (tempfail in the log) and the session goes on; MAIL waited for
    it."""
    srv = dns_zone(f"{PTR_NAME} 300 IN PTR mail.client.test.\n",
                   drop={"in-addr.arpa."})
    hk = looking_up(hikyaku, srv, fcrdns_timeout="1s")
    c = RawSMTP(hk.port)
    c.ehlo()
    t0 = time.time()
    c.ok("MAIL FROM:<sender@example.net>", 250, "2.1.0")
    waited = time.time() - t0
    assert 0.5 < waited < 5, waited
    c.ok("RCPT TO:<alice@localhost>", 250, "2.1.5")
    c.data(MSG)
    c.close()
    assert received_of(hk) == "client.example (unknown [127.0.0.1])"
    f = log_events(hk, "fcrdns")[-1]
    assert (f["rdns"], f["status"]) == ("unknown", "tempfail")
    t = log_events(hk, "policy_timeout")[-1]
    assert (t["check"], t["stage"], t["action"]) == ("fcrdns", "connect", "accept")
    assert_clean_exit(hk)


@pytest.mark.parametrize("zone,drop", [
    (f"{PTR_NAME} 300 IN PTR liar.client.test.\nliar.client.test. 300 IN A 192.0.2.1\n",
     set()),
    (f"{PTR_NAME} 300 IN PTR mail.client.test.\n", {"in-addr.arpa."}),
], ids=["unconfirmed", "timeout"])
def test_require_fcrdns_refuses(hikyaku, dns_zone, zone, drop):
    """policy.require_fcrdns: a client without a confirmed name (or whose
    lookup timed out) gets 450 4.7.25 at MAIL (RFC 7372, Postfix's
    reject_unknown_client_hostname), every time; the session stays usable."""
    srv = dns_zone(zone, drop=drop)
    hk = looking_up(hikyaku, srv, require_fcrdns=True, fcrdns_timeout="1s")
    c = RawSMTP(hk.port)
    c.ehlo()
    lines = c.ok("MAIL FROM:<sender@example.net>", 450, "4.7.25")
    assert "Client host rejected: cannot find your hostname, [127.0.0.1]" in lines[-1], lines
    c.ok("MAIL FROM:<sender@example.net>", 450, "4.7.25")
    c.ok("RCPT TO:<alice@localhost>", 503)
    c.ok("NOOP", 250)
    c.ok("QUIT", 221)
    c.close()
    (r,) = [e for e in log_events(hk, "reject") if e["dsn"] == "4.7.25"][:1]
    assert r["cmd"] == "MAIL" and r["code"] == "450"


def test_require_fcrdns_accepts_confirmed(hikyaku, dns_zone):
    srv = dns_zone(f"{PTR_NAME} 300 IN PTR mail.client.test.\n"
                   "mail.client.test. 300 IN A 127.0.0.1\n")
    hk = looking_up(hikyaku, srv, require_fcrdns=True)
    send_one(hk)
    assert received_of(hk) == "client.example (mail.client.test [127.0.0.1])"


def test_require_fcrdns_exempts_trusted_networks(hikyaku, dns_zone):
    srv = dns_zone(f"{PTR_NAME} 300 IN PTR liar.client.test.\n"
                   "liar.client.test. 300 IN A 192.0.2.1\n")
    hk = hikyaku(dns={"forwarders": [srv.forwarder]},
                 policy={"fcrdns_loopback": True, "require_fcrdns": True},
                 relay={"trusted_networks": ["127.0.0.0/8"]})
    send_one(hk)
    assert received_of(hk) == "client.example (unknown [127.0.0.1])"


def test_pipelined_commands_wait_for_slow_connect_check(hikyaku, dns_zone):
    """The PTR answer takes a second: EHLO is answered at once, the MAIL and
    RCPTs pipelined behind it wait for the check (the session reads
    nothing meanwhile) and are answered in order."""
    srv = dns_zone(f"{PTR_NAME} 300 IN PTR mail.client.test.\n"
                   "mail.client.test. 300 IN A 127.0.0.1\n",
                   delay={"in-addr.arpa.": 1.0})
    hk = looking_up(hikyaku, srv)
    c = RawSMTP(hk.port)
    t0 = time.time()
    c.send("EHLO client.example\r\nMAIL FROM:<sender@example.net>\r\n"
           "RCPT TO:<x@not-ours.test>\r\nRCPT TO:<alice@localhost>\r\nDATA\r\n")
    assert c.reply()[0] == 250  # EHLO
    assert time.time() - t0 < 0.8
    codes = [c.reply()[0] for _ in range(4)]
    assert time.time() - t0 >= 0.8
    assert codes == [250, 554, 250, 354], codes
    c.send(MSG + ".\r\n")
    c.expect(250, "2.0.0")
    c.close()
    assert received_of(hk) == "client.example (mail.client.test [127.0.0.1])"


def test_pipelined_rcpts_keep_order_behind_slow_check(hikyaku, tmp_path):
    """One RCPT's check answers a second later (its route's server never
    greets the probe: 450 at relay.verify_timeout); the RCPTs pipelined
    behind it, whose checks answer at once, get their replies after it, in
    command order."""
    mta = ScriptedMTA(lmtp=True, cert_dir=str(tmp_path), greeting=("STALL", 30)).start()
    try:
        hk = hikyaku(users=["alice@localhost"], relay_domains=["gw.test"],
                     routes=[{"domain": "gw.test", "transport": "lmtp",
                              "address": f"127.0.0.1:{mta.port}", "tls": "none",
                              "verify_recipients": True}],
                     relay={"verify_timeout": "1s"})
        c = RawSMTP(hk.port)
        c.ehlo()
        t0 = time.time()
        c.send("MAIL FROM:<sender@example.net>\r\n"
               "RCPT TO:<slow@gw.test>\r\n"
               "RCPT TO:<nobody@localhost>\r\n"
               "RCPT TO:<alice@localhost>\r\n"
               "RCPT TO:<x@not-ours.test>\r\n"
               "NOOP\r\n")
        replies = [c.reply() for _ in range(6)]
        assert time.time() - t0 >= 0.8
        assert [r[0] for r in replies] == [250, 450, 550, 250, 554, 250], replies
        assert "slow@gw.test" in str(replies[1]), replies[1]
        assert "nobody@localhost" in str(replies[2]), replies[2]
        assert "alice@localhost" in str(replies[3]), replies[3]
        c.ok("QUIT", 221)
        c.close()
        assert_clean_exit(hk)
    finally:
        mta.stop()


def test_client_reset_while_check_pending(hikyaku, dns_zone):
    """A client that resets the connection while its MAIL waits for the
    connect check: the check is cancelled and the session freed at once
    (ASan at exit checks nothing was touched after), and the server goes
    on serving."""
    srv = dns_zone(f"{PTR_NAME} 300 IN PTR mail.client.test.\n"
                   "mail.client.test. 300 IN A 127.0.0.1\n",
                   delay={"in-addr.arpa.": 1.5})
    hk = looking_up(hikyaku, srv)
    for _ in range(3):
        c = RawSMTP(hk.port)
        c.send("EHLO client.example\r\nMAIL FROM:<sender@example.net>\r\n")
        assert c.reply()[0] == 250
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.sock.close()
    before = len(log_events(hk, "fcrdns"))  # the start-up probe's session
    hk.wait_log("event=disconnect", count=before + 3, timeout=1.0)
    assert len(log_events(hk, "fcrdns")) == before, "the cancelled checks ended anyway"
    time.sleep(2)
    c = RawSMTP(hk.port)
    c.ok("NOOP", 250)
    c.close()
    assert_clean_exit(hk)


# -- src/dns: the PTR lookup FCrDNS starts with (dns_resolve_ptr) ------------

PTR_ZONE = """
5.3.2.1.in-addr.arpa. 300 IN PTR a.ptr.test.
5.3.2.1.in-addr.arpa. 300 IN PTR b.ptr.test.
5.3.2.1.in-addr.arpa. 300 IN PTR A.PTR.test.
1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.f.4.0.1.0.a.2.ip6.arpa. 300 IN PTR v6.ptr.test.
4.3.2.1.in-addr.arpa. 300 IN A 1.2.3.4
"""


def ptr_probe(srv, *addrs):
    r = subprocess.run([probe_bin(), "-f", srv.forwarder, "-m", "ptr", "-T", "3000", *addrs],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert lines[-1]["event"] == "done" and lines[-1]["sync"] == 0
    return {res["name"]: res for res in lines[:-1]}


def test_dns_ptr_lookup(dns_zone):
    # (not 192.0.2/24 or 2001:db8::/32: libunbound answers their reverse
    # zones itself, as AS112-style default local zones)
    """PTR answers become names (duplicates dropped, in any case); IPv6
    uses the nibble form under ip6.arpa (RFC 3596 §2.5); a malformed name
    in the answer is skipped, the others kept; no PTR, NXDOMAIN and
    SERVFAIL are told apart."""
    srv = dns_zone(PTR_ZONE, servfail={"7.3.2.1.in-addr.arpa."})
    srv.records.append(RR("6.3.2.1.in-addr.arpa.", QTYPE.PTR, ttl=300,
                          rdata=PTR(DNSLabel([b"bad host", b"test"]))))
    srv.records.append(RR("6.3.2.1.in-addr.arpa.", QTYPE.PTR, ttl=300,
                          rdata=PTR(DNSLabel([b"good", b"ptr", b"test"]))))
    got = ptr_probe(srv, "1.2.3.5", "2a01:4f8::1", "1.2.3.6", "1.2.3.4",
                    "1.2.3.9", "1.2.3.7")
    names = {a: [h["name"] for h in r["hosts"]] for a, r in got.items()}
    assert got["1.2.3.5"]["status"] == "OK"
    assert sorted(n.lower() for n in names["1.2.3.5"]) == ["a.ptr.test", "b.ptr.test"]
    assert names["2a01:4f8::1"] == ["v6.ptr.test"]
    assert names["1.2.3.6"] == ["good.ptr.test"]
    assert got["1.2.3.4"]["status"] == "NO_ADDRESS"   # a name, but no PTR
    assert got["1.2.3.9"]["status"] == "NXDOMAIN"
    assert got["1.2.3.7"]["status"] == "TEMPFAIL"
    assert srv.count("5.3.2.1.in-addr.arpa.", "PTR") >= 1
