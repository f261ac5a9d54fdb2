"""ARC (RFC 8617) in the daemon (issue 10): the chain of inbound mail is
verified beside DKIM and reported as arc= in our Authentication-Results
(with smtp.remote-ip) and in the event=dauth log line; mail that an alias
re-routes off-site is sealed (ARC-Authentication-Results with our results,
ARC-Message-Signature, ARC-Seal with cv= from the verification), the key
staying in the keys process, and dkimpy (Debian python3-dkim) accepts the
seal.

Upstream seals are made by dkimpy's arc_sign; the keys are served by
dns_server.py. The client is on loopback: dauth.loopback makes hikyaku
check it like any client. The forwarded copy goes to an aiosmtpd sink
(mta_helpers.ScriptedMTA) through a routes[] relay entry."""
import re
import smtplib
import time

import pytest

dkim = pytest.importorskip("dkim")

from conftest import wait_event  # noqa: E402
from dns_server import DnsServer  # noqa: E402
from mta_helpers import ScriptedMTA  # noqa: E402
from test_dkim import keygen  # noqa: E402
from test_dmarc import AUTHSERV  # noqa: E402
from test_dmarc import top_fields as lf_top_fields  # noqa: E402

UP_DOMAIN, UP_SEL = "relay.example", "arc1"     # the upstream sealer (dkimpy)
OUR_DOMAIN, OUR_SEL = "fwd.example", "seal"      # our dkim.sign entry with arc: true


def message(subject="arc", body=b"Hello ARC.\r\n.. a stuffed line\r\nlast line\r\n"):
    return (f"From: Bob <bob@sender.example>\r\nTo: list@relay.example\r\n"
            f"Subject: {subject}\r\nDate: Thu, 03 Dec 2026 20:00:00 +0000\r\n"
            f"Message-ID: <{time.time()}@t>\r\n").encode() + b"\r\n" + body


def upstream_seal(key, msg, ar="spf=pass smtp.mailfrom=sender.example"):
    """One ARC set by dkimpy, as a mailing list at relay.example adds it."""
    msg = f"Authentication-Results: mx.relay.example; {ar}\r\n".encode() + msg
    hdrs = dkim.arc_sign(msg, UP_SEL.encode(), UP_DOMAIN.encode(), open(key, "rb").read(),
                         b"mx.relay.example")
    return b"".join(hdrs) + msg


def txt_value(record):
    """The TXT text of a `hikyaku dkim keygen` line, strings joined."""
    return "".join(re.findall(r'"([^"]*)"', record.split(" IN TXT ", 1)[1]))


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    import os
    tmp = str(tmp_path_factory.mktemp("arckeys"))
    os.chmod(tmp, 0o755)
    up, up_rec = keygen(tmp, UP_DOMAIN, UP_SEL, "rsa")
    ours, our_rec = keygen(tmp, OUR_DOMAIN, OUR_SEL, "rsa")
    ed, _ = keygen(tmp, OUR_DOMAIN, "ed", "ed25519")
    return {"up": up, "ours": ours, "ed": ed,
            "records": {f"{UP_SEL}._domainkey.{UP_DOMAIN}.": txt_value(up_rec),
                        f"{OUR_SEL}._domainkey.{OUR_DOMAIN}.": txt_value(our_rec)}}


@pytest.fixture(scope="module")
def dns(keys):
    lines = ['sender.example. 300 IN TXT "v=spf1 ip4:127.0.0.1 -all"',
             '_dmarc.reject.example. 300 IN TXT "v=DMARC1; p=reject"']
    for name, text in keys["records"].items():
        parts = [text[i:i + 250] for i in range(0, len(text), 250)]
        lines.append(f"{name} 300 IN TXT " + " ".join(f'"{p}"' for p in parts))
    srv = DnsServer("\n".join(lines) + "\n")
    srv.drop.add("drop.example.")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def sink():
    made = []

    def factory():
        m = ScriptedMTA().start()
        made.append(m)
        return m

    yield factory
    for m in made:
        m.stop()


def dnsfunc(keys):
    def f(name, timeout=5):
        t = keys["records"].get(name.decode() if isinstance(name, bytes) else name)
        return t.encode() if t is not None else None
    return f


def checking(hikyaku, dns, keys, tmp_path, sink_port=None, seal="forwarded", key_arc=True,
             **kw):
    aliases = tmp_path / "aliases"
    aliases.write_text("fwd@localhost: someone@remote.test\n"
                       "both@localhost: alice@localhost, someone@remote.test\n"
                       "inside@localhost: alice@localhost\n")
    settings = dict(dns={"forwarders": [dns.forwarder], "timeout": "5s"},
                    dauth={"loopback": True, "timeout": "3s"},
                    arc={"seal": seal}, aliases_file=str(aliases))
    settings["dkim"] = {"sign": [{"domain": OUR_DOMAIN, "selector": OUR_SEL,
                                  "key": keys["ours"],
                                  "arc": key_arc}]}
    if sink_port is not None:
        settings["routes"] = [{"domain": "remote.test", "transport": "relay",
                               "address": f"127.0.0.1:{sink_port}", "tls": "none"}]
    settings.update(kw)
    return hikyaku(**settings)


def send(hk, msg, rcpts=("alice@localhost",)):
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=30) as s:
        s.ehlo("client.sender.example")
        assert s.sendmail("bob@sender.example", list(rcpts), msg) == {}


def crlf(data):
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def top_fields(data):
    """Header fields, unfolded, of a Maildir (LF) or an SMTP (CRLF) copy."""
    return lf_top_fields(data.replace(b"\r\n", b"\n"))


def ar_of(data):
    (ar,) = [f for f in top_fields(data) if f.lower().startswith("authentication-results:")
             and AUTHSERV in f]
    return ar


def arc_fields(data, name, inst):
    return [f for f in top_fields(data)
            if f.lower().startswith(name.lower() + ":") and re.match(
                rf"{name}:\s*i={inst};", f, re.I)]


# ---- verification ------------------------------------------------------------------

def test_sealed_by_dkimpy_is_arc_pass(hikyaku, dns, keys, tmp_path):
    hk = checking(hikyaku, dns, keys, tmp_path)
    send(hk, upstream_seal(keys["up"], message()))
    ar = ar_of(hk.read_delivered("alice")[0])
    assert re.search(r";\s*arc=pass \(i=1\) smtp\.remote-ip=127\.0\.0\.1", ar), ar
    assert re.search(r"spf=pass", ar), ar
    assert wait_event(hk, "dauth", arc="pass")


def test_two_hops_pass(hikyaku, dns, keys, tmp_path):
    hk = checking(hikyaku, dns, keys, tmp_path)
    one = upstream_seal(keys["up"], message())
    two = upstream_seal(keys["up"], one, ar="arc=pass")
    send(hk, two)
    ar = ar_of(hk.read_delivered("alice")[0])
    assert re.search(r"arc=pass \(i=2\)", ar), ar


def test_no_arc_is_none(hikyaku, dns, keys, tmp_path):
    hk = checking(hikyaku, dns, keys, tmp_path)
    send(hk, message())
    ar = ar_of(hk.read_delivered("alice")[0])
    assert re.search(r";\s*arc=none smtp\.remote-ip=127\.0\.0\.1", ar), ar
    assert wait_event(hk, "dauth")[0]["arc"] == "none"


def test_tampered_body_is_fail(hikyaku, dns, keys, tmp_path):
    hk = checking(hikyaku, dns, keys, tmp_path)
    sealed = upstream_seal(keys["up"], message())
    send(hk, sealed.replace(b"last line", b"last LINE"))
    ar = ar_of(hk.read_delivered("alice")[0])
    assert re.search(r"arc=fail \(latest ARC-Message-Signature body hash mismatch\)", ar), ar
    assert wait_event(hk, "dauth")[0]["arc"] == "fail"


def test_broken_chains_fail(hikyaku, dns, keys, tmp_path):
    hk = checking(hikyaku, dns, keys, tmp_path)
    # 1. the last hop saw a broken chain and said so: cv=fail
    bad = upstream_seal(keys["up"], message(subject="one")).replace(b"last line", b"last LINE")
    cvfail = upstream_seal(keys["up"], bad, ar="arc=fail")
    assert b"cv=fail" in cvfail
    send(hk, cvfail)
    # 2. instance 1 missing under instance 2
    one = upstream_seal(keys["up"], message(subject="two"))
    two = upstream_seal(keys["up"], one, ar="arc=pass")
    lines = re.split(rb"\r\n(?![ \t])", two)
    gap = b"\r\n".join(line for line in lines if not re.match(rb"ARC-[A-Za-z-]+:\s*i=1;", line))
    assert gap.count(b"i=2;") == 3 and b"i=1;" not in gap
    send(hk, gap)
    # 3. a 51st instance: more than RFC 8617 allows
    many = b"ARC-Seal: i=51; a=rsa-sha256; cv=pass; d=x.example; s=s; b=AAAA\r\n" + \
        upstream_seal(keys["up"], message(subject="three"))
    send(hk, many)
    got = {}
    for data in hk.read_delivered("alice", count=3):
        subj = [f for f in top_fields(data) if f.startswith("Subject:")][0]
        got[subj.split()[-1]] = ar_of(data)
    assert "arc=fail (ARC-Seal cv= breaks the chain)" in got["one"], got["one"]
    assert "arc=fail (ARC set missing or incomplete)" in got["two"], got["two"]
    assert "arc=fail (ARC field without a valid instance)" in got["three"], got["three"]


def test_key_lookup_timeout_is_fail_not_a_hang(hikyaku, dns, keys, tmp_path):
    hk = checking(hikyaku, dns, keys, tmp_path)
    key = open(keys["up"], "rb").read()
    msg = b"Authentication-Results: mx.drop.example; none\r\n" + message()
    sealed = b"".join(dkim.arc_sign(msg, b"s", b"drop.example", key, b"mx.drop.example")) + msg
    t0 = time.time()
    send(hk, sealed)
    took = time.time() - t0
    ar = ar_of(hk.read_delivered("alice")[0])
    assert re.search(r"arc=fail \((key lookup timed out|key lookup failed)", ar), ar
    assert took < 12, took  # dauth.timeout is 3 s


def test_verify_off_leaves_arc_out(hikyaku, dns, keys, tmp_path):
    hk = checking(hikyaku, dns, keys, tmp_path, arc={"verify": False, "seal": "never"})
    send(hk, upstream_seal(keys["up"], message()))
    ar = ar_of(hk.read_delivered("alice")[0])
    assert not re.search(r";\s*arc=", ar), ar
    assert wait_event(hk, "dauth")[0]["arc"] == "-"


# ---- sealing -------------------------------------------------------------------------

def test_forwarded_mail_is_sealed_and_dkimpy_accepts(hikyaku, dns, keys, tmp_path, sink):
    mta = sink()
    hk = checking(hikyaku, dns, keys, tmp_path, sink_port=mta.port)
    send(hk, upstream_seal(keys["up"], message()), rcpts=["fwd@localhost"])
    (tx,) = mta.wait_messages(1, timeout=20)
    assert tx.rcpts == ["someone@remote.test"]
    data = tx.data
    (aar,) = arc_fields(data, "ARC-Authentication-Results", 2)
    assert re.match(rf"ARC-Authentication-Results: i=2; {AUTHSERV};", aar), aar
    assert re.search(r"spf=pass", aar) and re.search(r"arc=pass \(i=1\)", aar), aar
    (seal,) = arc_fields(data, "ARC-Seal", 2)
    assert "cv=pass" in seal and f"d={OUR_DOMAIN}" in seal and f"s={OUR_SEL}" in seal, seal
    assert len(arc_fields(data, "ARC-Message-Signature", 2)) == 1
    cv, results, why = dkim.arc_verify(crlf(data), dnsfunc=dnsfunc(keys))
    assert cv == b"pass" and len(results) == 2, (cv, why)
    (ev,) = wait_event(hk, "arc_sealed")
    assert ev["d"] == OUR_DOMAIN
    # a later change breaks our seal for dkimpy too
    cv, _, _ = dkim.arc_verify(crlf(data).replace(b"last line", b"last LINE"),
                               dnsfunc=dnsfunc(keys))
    assert cv == b"fail"


def test_first_seal_has_cv_none(hikyaku, dns, keys, tmp_path, sink):
    mta = sink()
    hk = checking(hikyaku, dns, keys, tmp_path, sink_port=mta.port)
    send(hk, message(), rcpts=["both@localhost"])
    (tx,) = mta.wait_messages(1, timeout=20)
    (seal,) = arc_fields(tx.data, "ARC-Seal", 1)
    assert "cv=none" in seal, seal
    cv, results, why = dkim.arc_verify(crlf(tx.data), dnsfunc=dnsfunc(keys))
    assert cv == b"pass" and len(results) == 1, (cv, why)
    # the local copy of the same transaction carries the same seal
    local = hk.read_delivered("alice")[0]
    assert arc_fields(local, "ARC-Seal", 1)


def test_broken_chain_is_sealed_with_cv_fail(hikyaku, dns, keys, tmp_path, sink):
    mta = sink()
    hk = checking(hikyaku, dns, keys, tmp_path, sink_port=mta.port)
    bad = upstream_seal(keys["up"], message()).replace(b"last line", b"last LINE")
    send(hk, bad, rcpts=["fwd@localhost"])
    (tx,) = mta.wait_messages(1, timeout=20)
    (seal,) = arc_fields(tx.data, "ARC-Seal", 2)
    assert "cv=fail" in seal, seal
    # dkimpy: our AMS validates (else "Most recent ARC-Message-Signature did
    # not validate"), and the cv=fail we sealed ends the chain (result None)
    cv, _, why = dkim.arc_verify(crlf(tx.data), dnsfunc=dnsfunc(keys))
    assert cv is None and "ARC-Seal[2] reported failure" in why, (cv, why)


def test_seal_never_adds_none(hikyaku, dns, keys, tmp_path, sink):
    mta = sink()
    hk = checking(hikyaku, dns, keys, tmp_path, sink_port=mta.port, seal="never")
    send(hk, upstream_seal(keys["up"], message()), rcpts=["fwd@localhost"])
    (tx,) = mta.wait_messages(1, timeout=20)
    assert not arc_fields(tx.data, "ARC-Seal", 2)
    assert len([f for f in top_fields(tx.data) if f.startswith("ARC-Seal:")]) == 1
    assert "event=arc_sealed" not in hk.log()


def test_local_only_is_not_sealed_unless_always(hikyaku, dns, keys, tmp_path):
    hk = checking(hikyaku, dns, keys, tmp_path)
    send(hk, message(), rcpts=["inside@localhost"])
    data = hk.read_delivered("alice")[0]
    assert not [f for f in top_fields(data) if f.startswith("ARC-")]
    hk.stop()
    hk2 = checking(hikyaku, dns, keys, tmp_path, seal="always")
    send(hk2, message(), rcpts=["inside@localhost"])
    data = hk2.read_delivered("alice")[0]
    (seal,) = arc_fields(data, "ARC-Seal", 1)
    cv, _, why = dkim.arc_verify(crlf(data), dnsfunc=dnsfunc(keys))
    assert cv == b"pass", why


def test_no_arc_key_no_seal(hikyaku, dns, keys, tmp_path, sink):
    mta = sink()
    hk = checking(hikyaku, dns, keys, tmp_path, sink_port=mta.port, key_arc=False)
    send(hk, message(), rcpts=["fwd@localhost"])
    (tx,) = mta.wait_messages(1, timeout=20)
    assert not [f for f in top_fields(tx.data) if f.startswith("ARC-")]


def test_arc_key_must_be_one_rsa_entry(tmp_path, keys):
    from test_dkim import hk_cli
    base = "listen: [{ address: '127.0.0.1:2525', tls: none }]\n"
    for body, want in [
        (f"dkim: {{ sign: [ {{ domain: x.test, selector: a, key: {keys['ed']}, "
         "type: ed25519, arc: true } ] }\n", "arc key must be of type rsa"),
        (f"dkim: {{ sign: [ {{ domain: x.test, selector: a, key: {keys['ours']}, arc: true }},"
         f" {{ domain: y.test, selector: b, key: {keys['ours']}, arc: true }} ] }}\n",
         "only one entry may have arc: true"),
        ("arc: { seal: sometimes }\n", "sometimes"),
    ]:
        conf = tmp_path / "c.yaml"
        conf.write_text(base + body)
        r = hk_cli("check", "-c", str(conf))
        assert r.returncode == 2 and want in r.stderr, r.stdout + r.stderr


def test_large_forwarded_message_sealed_across_spills(hikyaku, dns, keys, tmp_path, sink):
    # > 256 KiB: smtpd writes the content to the spool while it arrives
    # (SMTPD_SPILL); the sealer must still see every octet once.
    mta = sink()
    hk = checking(hikyaku, dns, keys, tmp_path, sink_port=mta.port)
    body = b"".join(b"line %06d of a long forwarded message, some text\r\n" % i
                    for i in range(12000))
    send(hk, upstream_seal(keys["up"], message(body=body)), rcpts=["fwd@localhost"])
    (tx,) = mta.wait_messages(1, timeout=30)
    assert len(tx.data) > 600000
    cv, results, why = dkim.arc_verify(crlf(tx.data), dnsfunc=dnsfunc(keys))
    assert cv == b"pass" and len(results) == 2, (cv, why)


def test_refused_message_is_not_sealed(hikyaku, dns, keys, tmp_path, sink):
    mta = sink()
    hk = checking(hikyaku, dns, keys, tmp_path, sink_port=mta.port)
    msg = message().replace(b"From: Bob <bob@sender.example>", b"From: <eve@reject.example>")
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(hk, msg, rcpts=["fwd@localhost"])
    assert e.value.smtp_code == 550
    assert wait_event(hk, "dauth", disposition="reject")
    assert "event=arc_sealed" not in hk.log() and "event=arc_seal_failed" not in hk.log()
