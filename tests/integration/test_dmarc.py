"""Sender domain authentication on inbound mail (issue 10): SPF from MAIL
FROM, DKIM verified as the content streams, DMARC at the end of data, one
Authentication-Results field (RFC 8601) and Received-SPF above the message,
forged Authentication-Results removed, and the enforcement: DMARC reject
(550 5.7.1), quarantine (the recipient's .Junk folder), DNS that does not
answer (a recorded temperror, or 451 with dauth.temperror: tempfail; never
a hang).

The client is on loopback (127.0.0.1): dauth.loopback makes hikyaku check
it like any client, against zones served by dns_server.py. Signed mail is
signed with dkimpy (Debian python3-dkim)."""
import os
import re
import smtplib
import subprocess
import time

import pytest

dkim = pytest.importorskip("dkim")

from dns_server import DnsServer  # noqa: E402
from test_dkim import public_record, txt_record  # noqa: E402

AUTHSERV = "mx.test.example"  # the conftest hostname: the default authserv-id


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


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("dmarckeys") / "rsa.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:2048", "-out", path], check=True, capture_output=True)
    return path


def checking(hikyaku, srv, **dauth):
    return hikyaku(dns={"forwarders": [srv.forwarder], "timeout": "5s"},
                   dauth={"loopback": True, "timeout": "3s", **dauth})


def message(frm="Bob <bob@sender.example>", subject="dmarc", extra=b""):
    return (f"From: {frm}\r\nTo: alice@localhost\r\nSubject: {subject}\r\n"
            f"Date: Thu, 03 Dec 2026 20:00:00 +0000\r\nMessage-ID: <{time.time()}@t>\r\n"
            ).encode() + extra + b"\r\nHello DMARC.\r\n.. a stuffed line\r\n"


def send(hk, msg, sender="bob@sender.example"):
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=20) as s:
        s.ehlo("client.sender.example")
        assert s.sendmail(sender, ["alice@localhost"], msg) == {}


def top_fields(data):
    """The header fields of a delivered message, unfolded, in order, without
    the Return-Path and Delivered-To that Maildir delivery adds."""
    head = data.split(b"\n\n", 1)[0].decode()
    fields = [f.replace("\n", "") for f in re.split(r"\n(?![ \t])", head)]
    while fields and fields[0].split(":")[0] in ("Return-Path", "Delivered-To"):
        fields.pop(0)
    return fields


def ar_of(data):
    (ar,) = [f for f in top_fields(data) if f.lower().startswith("authentication-results:")]
    return ar


def junk_message(hk):
    """The one message in alice's .Junk folder (Maildir++), waited for."""
    junk = os.path.join(hk.maildir("alice"), ".Junk", "new")
    for _ in range(500):
        if os.path.isdir(junk) and os.listdir(junk):
            break
        time.sleep(0.02)
    (name,) = os.listdir(junk)
    with open(os.path.join(junk, name), "rb") as f:
        return f.read()


def zone(*lines):
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("record,servfail,want", [
    ('"v=spf1 ip4:127.0.0.1 -all"', False, "pass"),
    ('"v=spf1 -all"', False, "fail"),
    ('"v=spf1 ~all"', False, "softfail"),
    (None, False, "none"),
    (None, True, "temperror"),
    ('"v=spf1 ip4:127.0.0.1 bogus:x -all"', False, "permerror"),
])
def test_spf_result_in_authentication_results(hikyaku, dns_zone, record, servfail, want):
    lines = ["sender.example. 300 IN A 192.0.2.1"]
    if record:
        lines.append(f"sender.example. 300 IN TXT {record}")
    srv = dns_zone(zone(*lines), **({"servfail": {"sender.example."}} if servfail else {}))
    hk = checking(hikyaku, srv)
    send(hk, message())
    (data,) = hk.read_delivered("alice")
    fields = top_fields(data)
    # Ours come first: Authentication-Results, then Received-SPF, then Received.
    assert fields[0].startswith(f"Authentication-Results: {AUTHSERV};"), fields[:3]
    assert fields[1].startswith(f"Received-SPF: {want}"), fields[:3]
    assert fields[2].startswith("Received: from"), fields[:3]
    ar = fields[0]
    assert re.search(rf";\s*spf={want}\b", ar), ar
    assert "smtp.mailfrom=bob@sender.example" in ar, ar
    assert re.search(r";\s*dkim=none", ar) and re.search(r";\s*arc=none", ar), ar
    assert "header.from=sender.example" in ar, ar
    assert hk.log().count("event=dauth ") == 1


def test_null_sender_reports_helo(hikyaku, dns_zone):
    srv = dns_zone(zone('client.sender.example. 300 IN TXT "v=spf1 ip4:127.0.0.1 -all"'))
    hk = checking(hikyaku, srv)
    send(hk, message(), sender="")
    ar = ar_of(hk.read_delivered("alice")[0])
    assert re.search(r"spf=pass\b", ar) and "smtp.helo=client.sender.example" in ar, ar


def signed(rsa_key, msg, domain=b"sender.example"):
    sig = dkim.sign(msg, b"sel", domain, open(rsa_key, "rb").read(),
                    include_headers=[b"from", b"to", b"subject", b"date"])
    return sig + msg


def dkim_zone(rsa_key, dmarc=None, spf='"v=spf1 -all"'):
    lines = [txt_record("sel._domainkey.sender.example.", public_record(rsa_key)),
             f"sender.example. 300 IN TXT {spf}"]
    if dmarc:
        lines.append(f'_dmarc.sender.example. 300 IN TXT "{dmarc}"')
    return zone(*lines)


def test_good_dkim_signature_passes_dmarc(hikyaku, dns_zone, rsa_key):
    """SPF fails, but an aligned DKIM pass is a DMARC pass: p=reject does
    not refuse it."""
    srv = dns_zone(dkim_zone(rsa_key, "v=DMARC1; p=reject"))
    hk = checking(hikyaku, srv)
    msg = signed(rsa_key, message())
    b = re.search(rb"b=([A-Za-z0-9+/]{8})", msg.split(b"bh=", 1)[1]).group(1).decode()
    send(hk, msg)
    data = hk.read_delivered("alice")[0]
    ar = ar_of(data)
    assert re.search(r"dkim=pass\b", ar), ar
    assert "header.d=sender.example" in ar and "header.s=sel" in ar, ar
    assert f"header.b={b}" in ar, ar
    assert re.search(r"dmarc=pass\b", ar) and re.search(r"spf=fail\b", ar), ar
    # The signed content arrives byte for byte as it was given to smtplib
    # (which dot-stuffs it; Maildir stores LF line ends), below our fields.
    assert data.endswith(msg.replace(b"\r\n", b"\n")), data


@pytest.mark.parametrize("tamper", ["body", "header"])
def test_tampered_message_fails_dkim(hikyaku, dns_zone, rsa_key, tamper):
    srv = dns_zone(dkim_zone(rsa_key))
    hk = checking(hikyaku, srv)
    msg = signed(rsa_key, message())
    if tamper == "body":
        msg = msg.replace(b"Hello DMARC.", b"Hello DMARX.")
    else:
        msg = msg.replace(b"Subject: dmarc", b"Subject: DMARC")
    send(hk, msg)
    ar = ar_of(hk.read_delivered("alice")[0])
    assert re.search(r"dkim=fail\b", ar), ar
    if tamper == "body":
        assert "body hash" in ar, ar
    assert re.search(r"dmarc=none\b", ar), ar


def test_dmarc_reject(hikyaku, dns_zone):
    srv = dns_zone(zone('sender.example. 300 IN TXT "v=spf1 -all"',
                        '_dmarc.sender.example. 300 IN TXT "v=DMARC1; p=reject"'))
    hk = checking(hikyaku, srv)
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=20) as s:
        with pytest.raises(smtplib.SMTPDataError) as ei:
            s.sendmail("bob@sender.example", ["alice@localhost"], message())
        assert ei.value.smtp_code == 550 and b"5.7.1" in ei.value.smtp_error
        # the session goes on: the next transaction is accepted
        s.rset()
        assert s.noop()[0] == 250
    assert hk.delivered("alice") == []
    assert "event=eod_reject" in hk.log()


def test_dmarc_org_domain_policy_and_sp(hikyaku, dns_zone):
    """No record at the subdomain: the organizational domain's sp applies
    (quarantine here, though p is reject)."""
    srv = dns_zone(zone('mail.sender.example. 300 IN TXT "v=spf1 -all"',
                        '_dmarc.sender.example. 300 IN TXT "v=DMARC1; p=reject; sp=quarantine"'))
    hk = checking(hikyaku, srv)
    send(hk, message(frm="bob@mail.sender.example"), sender="bob@mail.sender.example")
    data = junk_message(hk)
    assert re.search(r"dmarc=fail \(p=reject sp=quarantine dis=quarantine\)", ar_of(data))


def test_dmarc_quarantine_goes_to_junk(hikyaku, dns_zone):
    srv = dns_zone(zone('sender.example. 300 IN TXT "v=spf1 -all"',
                        '_dmarc.sender.example. 300 IN TXT "v=DMARC1; p=quarantine"'))
    hk = checking(hikyaku, srv)
    send(hk, message())
    data = junk_message(hk)
    fields = top_fields(data)
    assert any(f.startswith("X-Hikyaku-Quarantine: dmarc=fail") for f in fields), fields
    assert re.search(r"dmarc=fail\b", ar_of(data))
    assert hk.delivered("alice") == []  # not in the inbox


def test_dmarc_enforce_none_records_only(hikyaku, dns_zone):
    srv = dns_zone(zone('sender.example. 300 IN TXT "v=spf1 -all"',
                        '_dmarc.sender.example. 300 IN TXT "v=DMARC1; p=reject"'))
    hk = checking(hikyaku, srv, dmarc_enforce="none")
    send(hk, message())
    ar = ar_of(hk.read_delivered("alice")[0])
    assert re.search(r"dmarc=fail \(p=reject sp=reject dis=reject\) header.from=sender.example",
                     ar), ar


@pytest.mark.parametrize("frm_fields,why", [
    (b"", "no From field"),
    (b"From: eve@sender.example\r\n", "several From fields"),
])
def test_unusable_from_is_permerror(hikyaku, dns_zone, frm_fields, why):
    """RFC 7489 §6.6.1 (choices in src/dauth/dmarc.h): a message without
    exactly one From is refused under dmarc_enforce reject."""
    srv = dns_zone(zone('sender.example. 300 IN TXT "v=spf1 ip4:127.0.0.1 -all"'))
    hk = checking(hikyaku, srv)
    msg = message(extra=frm_fields)
    if not frm_fields:
        msg = msg.replace(b"From: Bob <bob@sender.example>\r\n", b"")
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=20) as s:
        with pytest.raises(smtplib.SMTPDataError) as ei:
            s.sendmail("bob@sender.example", ["alice@localhost"], msg)
        assert ei.value.smtp_code == 550
    assert f'dmarc=permerror' in hk.log() or "event=dauth" in hk.log()


def test_spf_reject_only_after_dmarc(hikyaku, dns_zone, rsa_key):
    """dauth.spf_reject: SPF fail is refused (550 5.7.23) unless DMARC passed
    (RFC 7489 §10.1)."""
    srv = dns_zone(dkim_zone(rsa_key))
    hk = checking(hikyaku, srv, spf_reject=True)
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=20) as s:
        with pytest.raises(smtplib.SMTPDataError) as ei:
            s.sendmail("bob@sender.example", ["alice@localhost"], message())
        assert ei.value.smtp_code == 550 and b"5.7.23" in ei.value.smtp_error
    srv2 = dns_zone(dkim_zone(rsa_key, "v=DMARC1; p=none"))
    hk2 = checking(hikyaku, srv2, spf_reject=True)
    send(hk2, signed(rsa_key, message()))  # SPF fails, DMARC passes by DKIM
    assert re.search(r"dmarc=pass\b", ar_of(hk2.read_delivered("alice")[0]))


def test_forged_authentication_results_removed(hikyaku, dns_zone):
    srv = dns_zone(zone('sender.example. 300 IN TXT "v=spf1 ip4:127.0.0.1 -all"'))
    hk = checking(hikyaku, srv)
    extra = (b"Authentication-Results: MX.Test.Example;\r\n\tdkim=pass header.d=bank.example\r\n"
             b"Authentication-Results: (comment) mx.test.example; spf=pass\r\n"
             b"Authentication-Results: other.example; spf=fail\r\n")
    send(hk, message(extra=extra))
    data = hk.read_delivered("alice")[0]
    ars = [f for f in top_fields(data) if f.lower().startswith("authentication-results:")]
    assert len(ars) == 2, ars  # ours and the other server's
    assert ars[0].startswith(f"Authentication-Results: {AUTHSERV};")
    assert ars[1] == "Authentication-Results: other.example; spf=fail"
    assert b"bank.example" not in data
    assert hk.log().count("event=forged_ar_removed") == 2


def test_forged_ar_removed_from_submission_too(hikyaku):
    """Without checks (a loopback client by default), a forged field still
    goes and nothing is added."""
    hk = hikyaku()
    send(hk, message(extra=b"Authentication-Results: mx.test.example; dmarc=pass\r\n"))
    data = hk.read_delivered("alice")[0]
    assert b"Authentication-Results" not in data
    assert top_fields(data)[0].startswith("Received: from")


@pytest.mark.parametrize("temperror,code", [("accept", 250), ("tempfail", 451)])
def test_dns_timeout_is_temperror_never_a_hang(hikyaku, dns_zone, temperror, code):
    srv = dns_zone(zone('sender.example. 300 IN TXT "v=spf1 ip4:127.0.0.1 -all"'),
                   drop={"_dmarc.sender.example."})
    hk = checking(hikyaku, srv, temperror=temperror)
    t0 = time.time()
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=30) as s:
        if code == 250:
            assert s.sendmail("bob@sender.example", ["alice@localhost"], message()) == {}
        else:
            with pytest.raises(smtplib.SMTPDataError) as ei:
                s.sendmail("bob@sender.example", ["alice@localhost"], message())
            assert ei.value.smtp_code == 451
    assert time.time() - t0 < 15  # dauth.timeout is 3s
    if code == 250:
        ar = ar_of(hk.read_delivered("alice")[0])
        assert re.search(r"dmarc=temperror\b", ar) and re.search(r"spf=pass\b", ar), ar


def test_pipelined_commands_keep_order_behind_the_checks(hikyaku, dns_zone):
    """The end-of-data checks answer later; a pipelined RSET/NOOP behind the
    final dot is answered after the 250, in order (RFC 2920)."""
    srv = dns_zone(zone('sender.example. 300 IN TXT "v=spf1 ip4:127.0.0.1 -all"'),
                   delay={"_dmarc.sender.example.": 0.5})
    hk = checking(hikyaku, srv)
    import socket
    c = socket.create_connection(("127.0.0.1", hk.port), timeout=20)
    f = c.makefile("rb")
    f.readline()
    c.sendall(b"EHLO client.sender.example\r\n")
    while not f.readline().startswith(b"250 "):
        pass
    c.sendall(b"MAIL FROM:<bob@sender.example>\r\nRCPT TO:<alice@localhost>\r\nDATA\r\n")
    for want in (b"250", b"250", b"354"):
        assert f.readline().startswith(want)
    c.sendall(message() + b".\r\nNOOP\r\nQUIT\r\n")
    assert f.readline().startswith(b"250 2.0.0 Ok: queued")
    assert f.readline().startswith(b"250")
    assert f.readline().startswith(b"221")
    c.close()


def strip_field(data, name):
    """data without its first header field, which must be name (folded
    continuation lines included)."""
    assert data.startswith(name.encode() + b": "), data[:300]
    lines = data.split(b"\r\n")
    i = 1
    while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
        i += 1
    return b"\r\n".join(lines[i:])


def test_relay_delivery_byte_exact_below_added_fields(hikyaku, dns_zone, tmp_path):
    """Relayed mail goes out with our fields on top and the content as it
    came in, byte for byte (dot-stuffing undone and redone on the way)."""
    from mta_helpers import ScriptedMTA
    mta = ScriptedMTA(cert_dir=str(tmp_path)).start()
    try:
        srv = dns_zone(zone("example.net. 300 IN MX 10 mx1.example.net.",
                            "mx1.example.net. 300 IN A 127.0.0.1",
                            'sender.example. 300 IN TXT "v=spf1 ip4:127.0.0.1 -all"'))
        hk = hikyaku(dns={"forwarders": [srv.forwarder], "timeout": "5s"},
                     dauth={"loopback": True, "timeout": "3s"},
                     delivery={"smtp_port": mta.port},
                     relay={"trusted_networks": ["127.0.0.0/8"]})
        msg = message() + b".starts with a dot\r\n..two\r\n\r\n trailing \r\n"
        with smtplib.SMTP("127.0.0.1", hk.port, timeout=20) as s:
            s.ehlo("client.sender.example")
            assert s.sendmail("bob@sender.example", ["carol@example.net"], msg) == {}
        data = mta.wait_messages(1)[0].data
        rest = strip_field(strip_field(strip_field(data, "Authentication-Results"),
                                       "Received-SPF"), "Received")
        assert rest == msg
        assert re.search(rb"spf=pass", data.split(b"Received-SPF")[0])
    finally:
        mta.stop()


def test_authenticated_submission_is_signed_not_checked(hikyaku, rsa_key, tmp_path):
    """An authenticated submission gets no inbound checks (no
    Authentication-Results) and is DKIM-signed at the end of data with the
    dkim.sign key of its From domain, through the keys process; dkimpy
    verifies the delivered message."""
    from test_submission_headers import ALICE, PW, curl_submit
    key = str(tmp_path / "k.pem")
    with open(rsa_key, "rb") as src, open(key, "wb") as dst:
        dst.write(src.read())
    os.chmod(key, 0o600)
    hk = hikyaku(listener={"submission": True}, users=["bob@example.org"],
                 users_secrets={ALICE: ("CRYPT", PW)},
                 dauth={"loopback": True},
                 dkim={"sign": [{"domain": "example.org", "selector": "sub", "key": key}]})
    curl_submit(hk, b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\n"
                    b"Subject: signed\r\n\r\nbody line\r\n.dot line\r\n")
    (msg,) = hk.read_delivered("bob", "example.org")
    assert b"Authentication-Results" not in msg
    fields = top_fields(msg)
    assert fields[0].startswith("DKIM-Signature: v=1; a=rsa-sha256;"), fields[:2]
    assert "d=example.org" in fields[0] and "s=sub" in fields[0]
    record = public_record(rsa_key).encode()

    def dnsfunc(name, timeout=5):
        assert name == b"sub._domainkey.example.org.", name
        return record
    # Maildir stored LF line ends and Return-Path/Delivered-To on top.
    body = msg.split(b"\n", 2)[2].replace(b"\n", b"\r\n")
    assert dkim.verify(body, dnsfunc=dnsfunc), body[:600]
    assert "event=dkim_signed" in hk.log()


def test_reject_decided_by_the_last_dkim_answer(hikyaku, dns_zone, rsa_key):
    """The DKIM key answers last and the verdict is a refusal, which frees
    the transaction and its verifier: the verdict comes from its own turn of
    the loop, not from inside the verifier's callback, and the server stops
    cleanly under ASan."""
    srv = dns_zone(dkim_zone(rsa_key, "v=DMARC1; p=reject"),
                   delay={"sel._domainkey.sender.example.": 0.5})
    hk = checking(hikyaku, srv)
    msg = signed(rsa_key, message()).replace(b"Hello DMARC.", b"Hello DMARX.")
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=20) as s:
        with pytest.raises(smtplib.SMTPDataError) as ei:
            s.sendmail("bob@sender.example", ["alice@localhost"], msg)
        assert ei.value.smtp_code == 550
        assert s.noop()[0] == 250
    rc = hk.stop()
    log = hk.log()
    assert rc == 0 and "Sanitizer" not in log, log[-3000:]


def test_local_submission_is_signed_not_checked(hikyaku, rsa_key, tmp_path):
    """sendmail (a local submission over the local socket) gets no inbound
    checks and is DKIM-signed with its From domain's key, like an
    authenticated one (issue 10: "authenticated or local senders")."""
    from test_sendmail import sendmail
    key = str(tmp_path / "k.pem")
    with open(rsa_key, "rb") as src, open(key, "wb") as dst:
        dst.write(src.read())
    os.chmod(key, 0o600)
    hk = hikyaku(dauth={"loopback": True},
                 dkim={"sign": [{"domain": "example.org", "selector": "loc", "key": key}]})
    r = sendmail(hk, "-t", "-oi", data=b"From: Carol <carol@example.org>\nTo: alice@localhost\n"
                 b"Subject: from cron\n\nline one\n.\nafter the dot\n")
    assert r.returncode == 0, r.stderr
    (msg,) = hk.read_delivered("alice")
    assert b"Authentication-Results" not in msg
    assert top_fields(msg)[0].startswith("DKIM-Signature: v=1;"), top_fields(msg)[:2]
    record = public_record(rsa_key).encode()
    body = msg.split(b"\n", 2)[2].replace(b"\n", b"\r\n")
    assert dkim.verify(body, dnsfunc=lambda name, timeout=5: record), body[:600]
