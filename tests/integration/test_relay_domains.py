"""Gateway and backup-MX domains (issue 8, Interop 5): relay_domains are
accepted from any client and passed on to their route (LMTP or relay; MX
when there is none), as Postfix's relay_domains; with the route's
verify_recipients, the route's server is asked at RCPT time (an LMTP or
SMTP RCPT probe) so an unknown user gets 550 during the session instead of
a bounce later. A domain that is neither local nor relayed is still 554."""
import os
import socket
import subprocess
import threading
import time

import pytest

from conftest import RawSMTP, hikyaku_bin, log_events
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


def test_check_warns_about_relay_domain_without_route(tmp_path):
    f = tmp_path / "gw.yaml"
    f.write_text("listen: [{address: '127.0.0.1:2525', tls: none}]\n"
                 "local_domains: [example.org]\naccept_any_user: true\n"
                 "relay_domains: [backup.test, gw.test, example.org]\n"
                 "routes: [{domain: gw.test, transport: lmtp, address: 'unix:/run/lmtp',"
                 " verify_recipients: true}]\n")
    r = subprocess.run([hikyaku_bin(), "check", "-c", str(f)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    assert "relay domain backup.test has no route" in r.stdout, r.stdout
    assert "relay domain example.org is also local" in r.stdout, r.stdout
    assert "gw.test" not in r.stdout, r.stdout


def test_verify_needs_a_numeric_address(tmp_path):
    f = tmp_path / "gw.yaml"
    f.write_text("listen: [{address: '127.0.0.1:2525', tls: none}]\n"
                 "relay_domains: [gw.test]\n"
                 "routes: [{domain: gw.test, transport: relay, address: 'mx.gw.test:25',"
                 " verify_recipients: true}]\n")
    r = subprocess.run([hikyaku_bin(), "check", "-c", str(f)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0
    assert "verify_recipients needs transport relay or lmtp with a numeric address" in r.stderr


# --- recipient verification at the route's server ---------------------------

def verifying(hikyaku, domain, address, **kw):
    route = lmtp_route(domain, address, verify_recipients=True,
                       **kw.pop("route", {}))
    return hikyaku(relay_domains=[domain], routes=[route], **kw)


def test_verify_with_real_dovecot(hikyaku, dovecot):
    """Dovecot LMTP answers the probe: the unknown user gets Dovecot's
    550 5.1.1 at RCPT (it used to be accepted and bounced later), the known
    one is accepted and delivered over the route."""
    hk = verifying(hikyaku, "dove.test", f"127.0.0.1:{dovecot['port']}")
    c = RawSMTP(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<someone@example.net>", 250)
    lines = c.ok("RCPT TO:<nope@dove.test>", 550, "5.1.1")
    assert "nope@dove.test" in lines[0]
    c.ok("RCPT TO:<ok@dove.test>", 250, "2.1.5")
    c.data(MSG)
    c.close()
    hk.wait_queue_empty()
    deadline = time.time() + 10
    while not (os.path.isdir(dovecot["new"]) and os.listdir(dovecot["new"])):
        assert time.time() < deadline, "nothing delivered to Dovecot"
        time.sleep(0.1)
    assert len(os.listdir(dovecot["new"])) == 1
    assert [e["result"] for e in log_events(hk, "rcpt_verify")] == ["refused", "ok"]


def test_verify_pipelined_replies_keep_order(hikyaku, mtas):
    """RFC 2920: MAIL, RCPTs and DATA in one write; each RCPT waits for its
    probe and the replies come back in command order. A refusal is cached:
    the second RCPT of the same address asks nobody."""
    mta = mtas(lmtp=True, rcpt={"gone@gw.test": "550 5.1.1 <gone@gw.test>: no such user"})
    hk = verifying(hikyaku, "gw.test", f"127.0.0.1:{mta.port}")
    c = RawSMTP(hk.port)
    c.ehlo()
    c.send("MAIL FROM:<someone@example.net>\r\nRCPT TO:<gone@gw.test>\r\n"
           "RCPT TO:<ok@gw.test>\r\nRCPT TO:<gone@gw.test>\r\nNOOP\r\nDATA\r\n")
    c.expect(250, "2.1.0")
    c.expect(550, "5.1.1")
    c.expect(250, "2.1.5")
    c.expect(550, "5.1.1")
    c.expect(250)
    c.expect(354)
    c.send(MSG + ".\r\n")
    c.expect(250, "2.0.0")
    c.close()
    tx = mta.wait_messages(1)[0]
    assert tx.rcpts == ["ok@gw.test"]
    probes = [t for sess in mta.sessions for t in sess.txs if t.data is None]
    assert sorted(r for t in probes for r in t.rcpts) == ["gone@gw.test", "ok@gw.test"]
    assert all(t.mail_from in ("", "<>") for t in probes), [t.mail_from for t in probes]
    hk.wait_queue_empty()


@pytest.fixture
def silent_server():
    """A listening socket that never accepts: connections hang before the
    greeting."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield s.getsockname()[1]
    s.close()


def test_verify_timeout_defers(hikyaku, silent_server):
    hk = verifying(hikyaku, "slow.test", f"127.0.0.1:{silent_server}",
                   relay={"verify_timeout": "1s"})
    c = RawSMTP(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<someone@example.net>", 250)
    t0 = time.time()
    c.ok("RCPT TO:<a@slow.test>", 450, "4.4.1")
    assert time.time() - t0 < 5
    c.ok("NOOP", 250)
    c.close()


def test_verify_timeout_accepts_when_told(hikyaku, silent_server):
    hk = verifying(hikyaku, "slow.test", f"127.0.0.1:{silent_server}",
                   relay={"verify_timeout": "1s"}, route={"verify_tempfail": "accept"})
    c = RawSMTP(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<someone@example.net>", 250)
    c.ok("RCPT TO:<a@slow.test>", 250, "2.1.5")
    c.close()


def test_verify_4xx_defers(hikyaku, mtas):
    mta = mtas(lmtp=True, rcpt={"busy@gw.test": "451 4.3.0 try later"})
    hk = verifying(hikyaku, "gw.test", f"127.0.0.1:{mta.port}")
    c = RawSMTP(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<someone@example.net>", 250)
    c.ok("RCPT TO:<busy@gw.test>", 450, "4.4.1")
    c.ok("RCPT TO:<busy@gw.test>", 450, "4.4.1")  # not cached: asked again
    c.close()
    assert mta.rcpt_attempts["busy@gw.test"] == 2


def test_client_leaves_during_verification(hikyaku, silent_server):
    """The session is parked; a client that hangs up meanwhile is cleaned
    up when the probe times out (ASan checks the rest at exit)."""
    hk = verifying(hikyaku, "slow.test", f"127.0.0.1:{silent_server}",
                   relay={"verify_timeout": "1s"})
    c = RawSMTP(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<someone@example.net>", 250)
    c.send("RCPT TO:<a@slow.test>\r\n")
    c.close()
    hk.wait_log("event=rcpt_verify", timeout=10)
    time.sleep(0.5)
    c2 = RawSMTP(hk.port)
    c2.ok("NOOP", 250)
    c2.close()


def test_relay_domain_refuses_source_routing(hikyaku, mtas):
    """A relay domain takes plain local parts from anyone, but not a
    source-routed one (user%host, host!user, "user@host") from an
    unauthenticated, untrusted client: the server behind us might route it
    on (Postfix: allow_untrusted_routing = no)."""
    mta = mtas(lmtp=True)
    hk = hikyaku(relay_domains=["gw.test"],
                 routes=[lmtp_route("gw.test", f"127.0.0.1:{mta.port}")])
    c = RawSMTP(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<someone@example.net>", 250)
    for rcpt in ("victim%target.org@gw.test", "target.org!victim@gw.test",
                 '"victim@target.org"@gw.test'):
        lines = c.ok(f"RCPT TO:<{rcpt}>", 554, "5.7.1")
        assert "source routing" in lines[-1], lines
    c.ok("RCPT TO:<victim@gw.test>", 250, "2.1.5")
    c.close()


def test_verify_duplicate_rcpt_flood_is_bounded(hikyaku, mtas):
    """One verified address repeated 3000 times in one pipelined burst: the
    repeats are answered without a probe and without a log line each, they
    count toward limits.recipients (then the overshoot, then the error
    limit), so the session ends in 421; the backend is asked once."""
    mta = mtas(lmtp=True)
    hk = verifying(hikyaku, "gw.test", f"127.0.0.1:{mta.port}")
    c = RawSMTP(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<someone@example.net>", 250)
    before = len(hk.log().splitlines())
    burst = b"RCPT TO:<ok@gw.test>\r\n" * 3000

    def sender():
        try:
            c.sock.sendall(burst)
        except OSError:
            pass  # closed by the server after its 421
    t = threading.Thread(target=sender)
    t.start()
    codes = []
    try:
        while True:
            code, _ = c.reply()
            codes.append(code)
            if code == 421:
                break
    finally:
        t.join(10)
    assert codes[-1] == 421, codes[-5:]
    assert codes[0] == 250 and 452 in codes, sorted(set(codes))
    assert len(codes) < 3000
    c.sock.close()
    time.sleep(0.5)
    grown = len(hk.log().splitlines()) - before
    assert grown < 200, grown
    assert mta.rcpt_attempts.get("ok@gw.test") == 1, mta.rcpt_attempts


@pytest.mark.parametrize("script,user,utf8", [
    ({"mail": ["550 5.7.1 no"]}, "user", False),
    ({"greeting": "554 5.3.2 not now"}, "user", False),
    ({"smtputf8": False}, "üser", True)],
    ids=["mail_refused", "greeting_refused", "smtputf8_not_offered"])
def test_verify_message_level_failure_is_tempfail(hikyaku, mtas, script, user, utf8):
    """A 5xx to the probe's greeting or MAIL FROM:<>, or smtpc's own
    refusal (SMTPUTF8 needed, not offered), says nothing about the
    recipient (a misconfigured or overloaded backend): 450 4.4.1, not a 550
    cached for the whole negative TTL; the next RCPT probes again."""
    mta = mtas(lmtp=True, **script)
    hk = verifying(hikyaku, "gw.test", f"127.0.0.1:{mta.port}")
    c = RawSMTP(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<someone@example.net>" + (" SMTPUTF8" if utf8 else ""), 250)
    c.ok(f"RCPT TO:<{user}@gw.test>", 450, "4.4.1")
    c.ok(f"RCPT TO:<{user}@gw.test>", 450, "4.4.1")
    c.close()
    assert len(mta.sessions) == 2, mta.sessions
    assert [e["result"] for e in log_events(hk, "rcpt_verify")] == ["tempfail", "tempfail"]


def test_verify_probes_are_bounded(hikyaku, mtas):
    """A tarpit backend (never greets): each RCPT gets 450 at
    relay.verify_timeout and its probe ends then too; however many
    sessions wait, at most 64 probes are in flight, the others are deferred
    without a connection."""
    mta = mtas(lmtp=True, greeting=("STALL", 30))
    hk = verifying(hikyaku, "gw.test", f"127.0.0.1:{mta.port}",
                   relay={"verify_timeout": "2s"},
                   limits={"connections_per_ip": 200})
    clients = []
    for i in range(80):
        c = RawSMTP(hk.port)
        c.ehlo()
        c.ok("MAIL FROM:<someone@example.net>", 250)
        clients.append(c)
    t0 = time.time()
    for i, c in enumerate(clients):
        c.send(f"RCPT TO:<user{i}@gw.test>\r\n")
    for c in clients:
        c.expect(450, "4.4.1")
    assert time.time() - t0 < 5
    assert 0 < mta.max_active <= 64, mta.max_active
    # the probes ended with their RCPT's answer, not at smtpc's own timeouts
    deadline = time.time() + 2
    while mta.active > 0 and time.time() < deadline:
        time.sleep(0.1)
    assert mta.active == 0, mta.active
    for c in clients:
        c.close()



def test_verify_answer_owed_when_session_ends(hikyaku, silent_server):
    """The session's deadline passes while a RCPT is parked in
    verification: the session ends when the probe does, but the RCPT still
    gets its reply first (it used to be closed without one)."""
    hk = verifying(hikyaku, "slow.test", f"127.0.0.1:{silent_server}",
                   relay={"verify_timeout": "2s"}, timeouts={"session": "1s"})
    c = RawSMTP(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<someone@example.net>", 250)
    c.send("RCPT TO:<a@slow.test>\r\n")
    c.expect(450, "4.4.1")
    assert c.closed()
