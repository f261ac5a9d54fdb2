"""Filtering and abuse control (issue 11): access lists (config and a file
that reloads on SIGHUP), DNS block and allow lists answered by a test DNS
server, early talkers and improper pipelining, rate limits held across two
smtpd processes, greylisting (first try, early retry, late retry, after a
restart), the HELO name and sender domain checks.

Loopback is 127.0.0.0/8: a client binds its own source address (127.0.0.2,
127.0.0.3, ...) to be a different client. The DNS lists look loopback
clients up only with policy.fcrdns_loopback, as FCrDNS does."""
import base64
import os
import signal
import socket
import time

import pytest

from conftest import RawSMTP, log_events, wait_event
from dns_server import DnsServer

ALICE = "alice@example.org"
PW = "correct horse battery"


class Client(RawSMTP):
    """RawSMTP from a chosen loopback source address."""

    def __init__(self, port, src="127.0.0.1", timeout=10, greet=True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(src, 0))
        self.buf = b""
        self.greeting = self.reply() if greet else None


@pytest.fixture
def clients():
    made = []

    def factory(port, src="127.0.0.1", **kw):
        c = Client(port, src, **kw)
        made.append(c)
        return c

    yield factory
    for c in made:
        c.close()


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


def assert_clean(hk):
    log = hk.log()
    assert "Sanitizer" not in log and "runtime error" not in log, log[-4000:]


# ---- access lists ------------------------------------------------------------

def test_deny_at_connect(hikyaku, clients):
    """A denied network hears 554 5.7.1 instead of the greeting and is
    disconnected; a more specific allow entry wins over the deny."""
    hk = hikyaku(access={"deny": ["127.0.0.0/24"], "allow": ["127.0.0.1"]})
    c = clients(hk.port, "127.0.0.2")
    code, lines = c.greeting
    assert code == 554 and lines[0].startswith("554 5.7.1 "), lines
    assert "Access denied" in lines[0]
    assert c.closed()
    ok = clients(hk.port, "127.0.0.1")
    assert ok.greeting[0] == 220
    ok.begin()
    assert wait_event(hk, "access", list="deny")
    assert_clean(hk)


def test_deny_at_rcpt_with_reason_from_file(hikyaku, clients, tmp_path):
    """access.reject_at rcpt: the session goes on to RCPT, which gets the
    554 5.7.1 with the file's reason; other clients are untouched."""
    f = tmp_path / "access"
    f.write_text("# local list\n\ndeny 127.0.0.2/32 Listed locally, ask postmaster\n"
                 "allow ::1\n")
    os.chmod(tmp_path, 0o755)
    hk = hikyaku(access={"file": str(f), "reject_at": "rcpt"})
    c = clients(hk.port, "127.0.0.2")
    assert c.greeting[0] == 220
    c.ehlo()
    c.ok("MAIL FROM:<a@example.net>", 250)
    lines = c.ok("RCPT TO:<alice@localhost>", 554, "5.7.1")
    assert "Listed locally, ask postmaster" in lines[0]
    clients(hk.port, "127.0.0.3").begin()


def test_access_file_reloads_on_sighup(hikyaku, clients, tmp_path):
    """The file is read again by the new smtpds of a reload; a broken file
    refuses the reload (the running lists stay)."""
    f = tmp_path / "access"
    f.write_text("deny 127.0.0.3\n")
    os.chmod(tmp_path, 0o755)
    hk = hikyaku(access={"file": str(f)})
    assert clients(hk.port, "127.0.0.3").greeting[0] == 554
    assert clients(hk.port, "127.0.0.4").greeting[0] == 220
    f.write_text("deny 127.0.0.4\n")
    hk.proc.send_signal(signal.SIGHUP)
    hk.wait_log("event=reload status=ok")
    deadline = time.time() + 10
    while time.time() < deadline:  # until the new smtpd accepts
        c = clients(hk.port, "127.0.0.4")
        if c.greeting[0] == 554:
            break
        time.sleep(0.1)
    assert c.greeting[0] == 554
    assert clients(hk.port, "127.0.0.3").greeting[0] == 220
    f.write_text("deny 127.0.0.5\nbogus line\n")
    hk.proc.send_signal(signal.SIGHUP)
    hk.wait_log("event=reload status=failed")
    assert "line 2" in hk.log()
    assert clients(hk.port, "127.0.0.4").greeting[0] == 554
    assert clients(hk.port, "127.0.0.5").greeting[0] == 220


def test_bad_access_file_refuses_start(hikyaku, tmp_path):
    f = tmp_path / "access"
    f.write_text("deny 10.0.0.0/8\ndeny 192.0.2.1/24 host bits\n")
    os.chmod(tmp_path, 0o755)
    hk = hikyaku(access={"file": str(f)}, start=False)
    hk.start(wait=False)
    assert hk.proc.wait(10) != 0
    hk.proc = None  # its exit status was the point
    assert "line 2: address has bits set beyond the prefix" in hk.log()


# ---- DNS lists -----------------------------------------------------------------

BL = ("2.0.0.127.bl.test. 300 IN A 127.0.0.2\n"
      "2.0.0.127.bl.test. 300 IN TXT \"listed\"\n"
      "3.0.0.127.bl.test. 300 IN A 127.0.0.4\n"
      "2.0.0.127.bl2.test. 300 IN A 127.0.0.10\n"
      "4.0.0.127.wl.test. 300 IN A 127.0.10.2\n"
      "4.0.0.127.bl.test. 300 IN A 127.0.0.2\n"
      "5.0.0.127.bl.test. 300 IN A 127.255.255.254\n")


def dnsbl_hk(hikyaku, srv, lists, allow_lists=(), **kw):
    return hikyaku(dns={"forwarders": [srv.forwarder]},
                   policy={"fcrdns_loopback": True},
                   dnsbl={"lists": list(lists), "allow_lists": list(allow_lists), **kw},
                   **kw.pop("extra", {}))


def test_dnsbl_listed_refused_at_rcpt(hikyaku, clients, dns_zone):
    """Looked up at connect, applied at RCPT: 554 5.7.1 naming the list;
    an unlisted client and an answer outside the codes pass."""
    srv = dns_zone(BL)
    hk = dnsbl_hk(hikyaku, srv, [{"zone": "bl.test", "codes": "127.0.0.2, 127.0.0.8/29"}])
    c = clients(hk.port, "127.0.0.2")
    c.ehlo()
    c.ok("MAIL FROM:<a@example.net>", 250)
    lines = c.ok("RCPT TO:<alice@localhost>", 554, "5.7.1")
    assert "blocked using bl.test" in lines[0], lines
    assert srv.count("2.0.0.127.bl.test.", "A") == 1
    clients(hk.port, "127.0.0.3").begin()  # 127.0.0.4: not a counted code
    clients(hk.port, "127.0.0.5").begin()  # 127.255.255.254: never counts
    clients(hk.port, "127.0.0.6").begin()  # not listed
    ev = wait_event(hk, "dnsbl", client="127.0.0.2")
    assert ev and ev[-1]["score"] == "1" and ev[-1]["list"] == "bl.test"
    assert_clean(hk)


def test_dnsbl_weights_threshold_and_allow_list(hikyaku, clients, dns_zone):
    """Weights add up to the threshold; a DNSWL listing subtracts; an
    access.allow network is not even looked up."""
    srv = dns_zone(BL)
    hk = hikyaku(dns={"forwarders": [srv.forwarder]}, policy={"fcrdns_loopback": True},
                 dnsbl={"lists": [{"zone": "bl.test", "weight": 2}, "bl2.test"],
                        "allow_lists": [{"zone": "wl.test", "weight": 5,
                                         "codes": "127.0.0.0/16"}],
                        "threshold": 3},
                 access={"allow": ["127.0.0.7"]})
    c = clients(hk.port, "127.0.0.2")  # bl (2) + bl2 (1) = 3
    c.ehlo()
    c.ok("MAIL FROM:<a@example.net>", 250)
    assert "blocked using bl.test" in c.ok("RCPT TO:<alice@localhost>", 554, "5.7.1")[0]
    clients(hk.port, "127.0.0.3").begin()  # bl's 127.0.0.4 counts (default codes): 2 < 3
    clients(hk.port, "127.0.0.4").begin()  # bl 2 - wl 5
    clients(hk.port, "127.0.0.7").begin()
    assert srv.count("7.0.0.127.bl.test.", "A") == 0
    ev = wait_event(hk, "dnsbl", client="127.0.0.4")
    assert ev[-1]["dnswl"] == "yes" and ev[-1]["score"] == "-3"


def test_dnsbl_timeout_fails_open(hikyaku, clients, dns_zone):
    """A list that never answers holds commands after EHLO at most
    dnsbl.timeout, then does not count."""
    srv = dns_zone(BL, drop={"slow.test."})
    hk = hikyaku(dns={"forwarders": [srv.forwarder]}, policy={"fcrdns_loopback": True},
                 dnsbl={"lists": ["slow.test"], "timeout": "1s"})
    c = clients(hk.port, "127.0.0.2")
    t0 = time.time()
    c.begin()
    assert time.time() - t0 < 5
    hk.wait_log("event=policy_timeout check=dnsbl_wait")


# ---- early talkers and pipelining ---------------------------------------------

def start_delayed(hikyaku, **kw):
    hk = hikyaku(start=False, **kw)
    hk.start(wait=False)
    hk.wait_log("event=listening")
    return hk


def test_early_talker_refused(hikyaku, clients):
    hk = start_delayed(hikyaku, filter={"greet_delay": "1s"})
    c = clients(hk.port, "127.0.0.2", greet=False)
    c.send("EHLO early.example\r\n")
    lines = c.expect(554, "5.5.0")
    assert "talking before the greeting" in lines[0]
    assert c.closed()
    assert wait_event(hk, "early_talker", client="127.0.0.2")
    # a patient client is greeted after the delay
    t0 = time.time()
    p = clients(hk.port, "127.0.0.3")
    assert p.greeting[0] == 220 and time.time() - t0 >= 0.9
    p.begin()
    # an allowed network is greeted at once
    hk2 = start_delayed(hikyaku, filter={"greet_delay": "3s"}, access={"allow": ["127.0.0.9"]})
    t0 = time.time()
    assert clients(hk2.port, "127.0.0.9").greeting[0] == 220
    assert time.time() - t0 < 2


def test_unauth_pipelining(hikyaku, clients):
    """Commands sent ahead of their reply without PIPELINING in effect:
    behind EHLO before its reply, or in a HELO session."""
    hk = hikyaku(filter={"reject_unauth_pipelining": True})
    c = clients(hk.port)
    c.send("EHLO a.example\r\nMAIL FROM:<a@example.net>\r\n")
    c.expect(554, "5.5.0")
    assert c.closed()
    c = clients(hk.port)
    c.ok("HELO a.example")
    c.send("MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@localhost>\r\n")
    c.expect(554, "5.5.0")
    assert c.closed()
    # after EHLO's reply, pipelining is fine (RFC 2920)
    c = clients(hk.port)
    c.ehlo()
    c.send("MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@localhost>\r\nRSET\r\n")
    c.expect(250)
    c.expect(250)
    c.expect(250)
    assert len(wait_event(hk, "unauth_pipelining", count=2)) >= 2


# ---- rate limits across two smtpd processes ----------------------------------

def test_message_and_recipient_rates_across_processes(hikyaku, clients):
    """limits.message_rate 3 and recipient_rate 5, with two smtpd processes:
    each client network gets exactly that many over all its connections,
    whichever process takes them; another address has its own count."""
    hk = hikyaku(processes={"smtpd": 2},
                 limits={"message_rate": 3, "recipient_rate": 5, "rate_window": "1h"})
    assert len(hk.child_pids("smtpd")) == 2
    codes = []
    for i in range(6):
        c = clients(hk.port, "127.0.0.2")
        c.ehlo()
        code, lines = c.cmd("MAIL FROM:<a@example.net>")
        codes.append(code)
        if code == 450:
            assert lines[0].startswith("450 4.7.1 ") and "too many messages" in lines[0]
        c.cmd("QUIT")
    assert codes == [250, 250, 250, 450, 450, 450], codes
    rc = []
    c = clients(hk.port, "127.0.0.3")
    c.ehlo()
    c.ok("MAIL FROM:<a@example.net>")
    for i in range(7):
        code, lines = c.cmd(f"RCPT TO:<u{i}@localhost>")
        rc.append(code)
    assert rc == [250] * 5 + [450] * 2, rc
    assert "too many recipients" in lines[0] and lines[0].startswith("450 4.7.1 ")


def test_connection_rate_and_concurrency(hikyaku, clients):
    """limits.connection_rate 4 per window: the 5th connection gets 421
    4.7.0 instead of the greeting, over both processes; limits.
    connections_per_ip 2: a third concurrent connection too."""
    hk = hikyaku(processes={"smtpd": 2},
                 limits={"connection_rate": 4, "rate_window": "1h", "connections_per_ip": 2})
    got = []
    for i in range(6):
        c = clients(hk.port, "127.0.0.2")
        got.append(c.greeting[0])
        if c.greeting[0] == 220:
            c.cmd("QUIT")
        else:
            assert c.greeting[1][0].startswith("421 4.7.0 ")
        assert c.closed()
    assert got == [220] * 4 + [421] * 2, got
    a = clients(hk.port, "127.0.0.3")
    b = clients(hk.port, "127.0.0.3")
    assert (a.greeting[0], b.greeting[0]) == (220, 220)
    time.sleep(0.2)
    c = clients(hk.port, "127.0.0.3")
    assert c.greeting[0] == 421 and c.greeting[1][0].startswith("421 4.7.0 ")
    assert wait_event(hk, "refuse", reason="connection_rate")
    assert wait_event(hk, "refuse", reason="per_ip_limit")


def test_user_message_rate(hikyaku, clients):
    """An authenticated user counts per login, whatever the address."""
    hk = hikyaku(users_secrets={ALICE: ("CRYPT", PW)}, listener={"plaintext_auth": True},
                 processes={"smtpd": 2},
                 limits={"user_message_rate": 2, "message_rate": 100, "rate_window": "1h",
                         "user_recipient_rate": 3, "recipient_rate": 100})
    plain = base64.b64encode(f"\0{ALICE}\0{PW}".encode()).decode()
    codes = []
    for src in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        c = clients(hk.port, src)
        c.ehlo()
        c.ok("AUTH PLAIN " + plain, 235)
        codes.append(c.cmd(f"MAIL FROM:<{ALICE}>")[0])
        if codes[-1] == 250:
            codes.append(c.cmd("RCPT TO:<bob@example.net>")[0])
            codes.append(c.cmd("RCPT TO:<carol@example.net>")[0])
    # MAIL, RCPT, RCPT; MAIL, RCPT, RCPT (the 4th recipient); MAIL
    assert codes == [250, 250, 250, 250, 250, 450, 450], codes
    lines = clients(hk.port, "127.0.0.5").cmd("EHLO x.example")
    assert lines[0] == 250  # the address itself is not limited


# ---- greylisting ---------------------------------------------------------------

def grey_try(hk, clients, src="127.0.0.2", rcpt="alice@localhost"):
    c = clients(hk.port, src)
    c.ehlo()
    c.ok("MAIL FROM:<a@example.net>")
    code, lines = c.cmd(f"RCPT TO:<{rcpt}>")
    c.cmd("QUIT")
    return code, lines


def test_greylisting(hikyaku, clients):
    hk = hikyaku(greylist={"enabled": True, "delay": "2s", "save_interval": "1s"},
                 processes={"smtpd": 2}, access={"allow": ["127.0.0.9"]})
    code, lines = grey_try(hk, clients)
    assert code == 451 and lines[0].startswith("451 4.7.1 ") and "Greylisted" in lines[0]
    code, _ = grey_try(hk, clients)  # early retry
    assert code == 451
    # the same /24 is the same client
    assert grey_try(hk, clients, src="127.0.0.3")[0] == 451
    time.sleep(2.2)
    assert grey_try(hk, clients)[0] == 250  # late retry
    assert grey_try(hk, clients)[0] == 250  # remembered
    assert grey_try(hk, clients, rcpt="bob@localhost")[0] == 451  # another triplet
    assert grey_try(hk, clients, src="127.0.0.9", rcpt="carol@localhost")[0] == 250
    # persisted across a restart
    hk.restart()
    assert os.path.exists(os.path.join(hk.spool, "greylist.db"))
    hk.wait_log("event=greylist_load entries=")
    assert grey_try(hk, clients)[0] == 250
    assert grey_try(hk, clients, rcpt="dave@localhost")[0] == 451


# ---- HELO name and sender domain -----------------------------------------------

def test_helo_syntax(hikyaku, clients):
    hk = hikyaku(filter={"helo_syntax": True})
    c = clients(hk.port)
    c.ok("EHLO bad_name!", 501, "5.5.2")
    c.ok("EHLO 192.0.2.1", 501, "5.5.2")
    c.ok("EHLO [192.0.2.1]", 250)
    c.ok("EHLO mail.example.net", 250)


def test_sender_domain(hikyaku, clients, dns_zone):
    srv = dns_zone("good.test. 300 IN MX 10 mx.good.test.\n"
                   "mx.good.test. 300 IN A 192.0.2.25\n"
                   "plain.test. 300 IN A 192.0.2.26\n",
                   servfail={"broken.test."})
    hk = hikyaku(dns={"forwarders": [srv.forwarder]}, filter={"sender_domain": True})
    c = clients(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<a@good.test>", 250)
    c.ok("RSET")
    c.ok("MAIL FROM:<a@plain.test>", 250)
    c.ok("RSET")
    c.ok("MAIL FROM:<a@nowhere.test>", 550, "5.1.8")
    c.ok("MAIL FROM:<a@broken.test>", 450, "4.1.8")
    c.ok("MAIL FROM:<>", 250)


# ---- IPv6, exemptions, configuration errors -------------------------------------

class Client6(RawSMTP):
    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("::1", port), timeout=timeout)
        self.buf = b""
        self.greeting = self.reply()


def with_v6(hikyaku, **kw):
    """A server that listens on 127.0.0.1 and [::1] (the same port)."""
    from conftest import free_port
    port = free_port()
    hk = hikyaku(start=False, listen=[f"127.0.0.1:{port}", f"[::1]:{port}"], **kw)
    hk.port = port
    hk.start()
    return hk


V6_NIBBLES = "1." + "0." * 31  # ::1, RFC 5782 §2.4


def test_dnsbl_ipv6_nibbles_and_access_v6(hikyaku, dns_zone):
    srv = dns_zone(f"{V6_NIBBLES}bl.test. 300 IN A 127.0.0.2\n")
    hk = with_v6(hikyaku, dns={"forwarders": [srv.forwarder]},
                 policy={"fcrdns_loopback": True}, dnsbl={"lists": ["bl.test"]})
    c = Client6(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<a@example.net>")
    assert "blocked using bl.test" in c.ok("RCPT TO:<alice@localhost>", 554, "5.7.1")[0]
    c.close()
    assert srv.count(f"{V6_NIBBLES}bl.test.", "A") == 1
    hk2 = with_v6(hikyaku, access={"deny": ["::1/128"]})
    c = Client6(hk2.port)
    assert c.greeting[0] == 554
    c.close()
    c = Client(hk2.port, "127.0.0.2")
    assert c.greeting[0] == 220
    c.close()


def test_authenticated_and_allowed_clients_are_exempt(hikyaku, clients, dns_zone):
    """A listed client that authenticates passes the DNS lists; an allowed
    network passes the rate limits."""
    srv = dns_zone(BL)
    hk = hikyaku(users_secrets={ALICE: ("CRYPT", PW)}, listener={"plaintext_auth": True},
                 dns={"forwarders": [srv.forwarder]}, policy={"fcrdns_loopback": True},
                 dnsbl={"lists": ["bl.test"]},
                 access={"allow": ["127.0.0.8"]},
                 limits={"message_rate": 1, "rate_window": "1h"})
    plain = base64.b64encode(f"\0{ALICE}\0{PW}".encode()).decode()
    c = clients(hk.port, "127.0.0.2")
    c.ehlo()
    c.ok("AUTH PLAIN " + plain, 235)
    c.ok(f"MAIL FROM:<{ALICE}>")
    c.ok("RCPT TO:<bob@example.net>", 250)
    for _ in range(3):
        c = clients(hk.port, "127.0.0.8")
        c.begin(rcpts=[ALICE])
        c.cmd("QUIT")
    # and the limit holds for others
    c = clients(hk.port, "127.0.0.9")
    c.begin(rcpts=[ALICE])
    c = clients(hk.port, "127.0.0.9")
    c.ehlo()
    c.ok("MAIL FROM:<a@example.net>", 450, "4.7.1")


@pytest.mark.parametrize("section,value,message", [
    ("dnsbl", {"lists": [{"zone": "bl.test", "codes": "127.0.0.2,"}]}, "invalid codes"),
    ("dnsbl", {"lists": ["not_a_zone"]}, "invalid zone"),
    ("access", {"deny": ["192.0.2.1/24"]}, "bits set beyond"),
    ("access", {"reject_at": "data"}, "connect or rcpt"),
    ("limits", {"rate_window": "0"}, "limits.rate_window"),
])
def test_config_errors_are_precise(hikyaku, section, value, message):
    hk = hikyaku(start=False, **{section: value})
    hk.start(wait=False)
    assert hk.proc.wait(10) != 0
    hk.proc = None
    log = hk.log()
    assert message in log and "hikyaku.yaml:" in log, log


def test_refusal_log_is_rate_suppressed(hikyaku, clients):
    """A flood past limits.connection_rate costs at most 20 refusal lines
    per 10 s per process; the rest are counted in one suppressed line."""
    # 127.0.0.1 (the fixture's start probes, which may be several) is exempt
    hk = hikyaku(processes={"smtpd": 1}, limits={"connection_rate": 1, "rate_window": "1h"},
                 access={"allow": ["127.0.0.1"]})
    refused = 0
    for i in range(40):
        c = clients(hk.port, "127.0.0.2")
        refused += c.greeting[0] == 421
        c.close()
    assert refused >= 39
    assert len(wait_event(hk, "refuse", count=20, reason="connection_rate")) == 20
    time.sleep(0.3)
    hk.stop()
    got = [e for e in log_events(hk, "refuse") if e.get("reason") == "connection_rate"]
    assert len(got) == 20, len(got)
    held = [e for e in log_events(hk, "suppressed") if e.get("what") == "refuse"]
    assert held and int(held[-1]["count"]) == refused - 20, (held, refused)


def test_greet_delay_spares_submission(hikyaku, clients):
    """A submission listener's clients (mail programs) are greeted at once
    even with a greeting delay."""
    hk = start_delayed(hikyaku, filter={"greet_delay": "3s"},
                       listener={"submission": True, "plaintext_auth": True})
    t0 = time.time()
    assert clients(hk.port, "127.0.0.2").greeting[0] == 220
    assert time.time() - t0 < 2
