"""DKIM (RFC 6376, RFC 8463) interop with dkimpy (Debian python3-dkim), both
ways, with keys served by a dnslib server: hikyaku's RSA, Ed25519 and dual
signatures verify with dkimpy; dkimpy's signatures (every canonicalization,
l=, RSA and Ed25519, and its RFC 8463 test message) verify with hikyaku;
tampered body and header, revoked and missing keys, and a DNS server that
never answers (temperror, never a hang).

Runs the test driver tests/dkim/dkim_probe.c: $HIKYAKU_DKIM_PROBE, else
<repo>/build/tests/dkim_probe.
"""
import base64
import json
import os
import subprocess
import signal
import time

import pytest

dkim = pytest.importorskip("dkim")
from cryptography.hazmat.primitives import serialization  # noqa: E402

from dns_server import DnsServer  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DKIMPY_DATA = "/usr/lib/python3/dist-packages/dkim/tests/data"

MSG = (b"From: Alice <alice@example.org>\r\n"
       b"To: Bob <bob@example.com>\r\n"
       b"Subject: interop  test\r\n"
       b"Date: Thu, 03 Dec 2026 20:00:00 +0000\r\n"
       b"Message-ID: <interop.1@example.org>\r\n"
       b"MIME-Version: 1.0\r\n"
       b"Content-Type: text/plain; charset=us-ascii\r\n"
       b"\r\n"
       b"Hello  world, \t with trailing space \r\n"
       b"\r\n"
       b"..a line that was dot-stuffed\r\n"
       b"last line\r\n"
       b"\r\n\r\n")


def probe_bin():
    path = os.environ.get("HIKYAKU_DKIM_PROBE") or os.path.join(REPO, "build", "tests",
                                                                "dkim_probe")
    if not os.path.exists(path):
        pytest.fail(f"dkim_probe not found at {path}; build it or set HIKYAKU_DKIM_PROBE")
    return path


def txt_record(name, text):
    """A zone line for a TXT record, split into <= 255-octet strings."""
    parts = [text[i:i + 250] for i in range(0, len(text), 250)] or [""]
    return f'{name} 300 IN TXT ' + " ".join(f'"{p}"' for p in parts)


def dkimpy_data(name):
    return open(os.path.join(DKIMPY_DATA, name)).read().strip()


def public_record(pem_path):
    k = serialization.load_pem_private_key(open(pem_path, "rb").read(), None)
    pub = k.public_key()
    try:
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        kt = "ed25519"
    except ValueError:
        raw = pub.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
        kt = "rsa"
    return f"v=DKIM1; k={kt}; p={base64.b64encode(raw).decode()}"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("dkimkeys")
    rsa, ed = str(d / "rsa.pem"), str(d / "ed.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:2048", "-out", rsa], check=True, capture_output=True)
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", ed],
                   check=True, capture_output=True)
    return {"rsa": rsa, "ed25519": ed}


@pytest.fixture(scope="module")
def zone(keys):
    recs = {
        "rsa1._domainkey.example.org.": public_record(keys["rsa"]),
        "ed1._domainkey.example.org.": public_record(keys["ed25519"]),
        "revoked._domainkey.example.org.": "v=DKIM1; k=rsa; p=",
        "strict._domainkey.example.org.": public_record(keys["rsa"]) + "; t=s",
        "test._domainkey.football.example.com.":
            open(os.path.join(DKIMPY_DATA, "test.txt")).read().strip(),
        "brisbane._domainkey.football.example.com.":
            "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
        # dkimpy's own test keys: Ed25519, RSA-2048 as SPKI and as bare RSAPublicKey
        "dkimpy-ed._domainkey.example.com.": "v=DKIM1; " + dkimpy_data("ed25519test.dns"),
        "test3._domainkey.example.com.": dkimpy_data("2048_testkey_wo_markers.pub.txt"),
        "test4._domainkey.example.com.": dkimpy_data("2048_testkey_wo_markers.pub.rsa.txt"),
    }
    return recs


@pytest.fixture(scope="module")
def dns(zone):
    srv = DnsServer("\n".join(txt_record(n, t) for n, t in zone.items()))
    srv.drop.add("drop.test.")
    srv.servfail.add("servfail.test.")
    # a key record with a NUL octet before the real key: not a key record at
    # all (read as a C string it would look revoked)
    from dnslib import QTYPE, RR, TXT
    srv.records.append(RR("nul._domainkey.example.org.", QTYPE.TXT, ttl=300,
                          rdata=TXT([b"v=DKIM1; k=rsa; p=\x00" + zone["rsa1._domainkey.example.org."]
                                     .split("p=", 1)[1].encode()[:200]])))
    srv.start()
    yield srv
    srv.stop()


def dnsfunc_for(zone):
    def dnsfunc(name, timeout=5):
        t = zone.get(name.decode() if isinstance(name, bytes) else name)
        return t.encode() if t is not None else None
    return dnsfunc


def hk_sign(pairs, msg=MSG, extra=()):
    args = [probe_bin(), "sign", *extra]
    for key, domain, sel in pairs:
        args += ["-k", key, "-d", domain, "-s", sel]
    r = subprocess.run(args, input=msg, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def hk_verify(dns, msg, extra=(), timeout=60):
    args = [probe_bin(), "verify", "-f", dns.forwarder, *extra]
    r = subprocess.run(args, input=msg, capture_output=True, timeout=timeout)
    assert r.returncode == 0, r.stderr.decode()
    lines = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert lines[-1]["event"] == "done"
    return lines[:-1]


def crlf(b):
    return b.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@pytest.mark.parametrize("kinds", [["rsa"], ["ed25519"], ["rsa", "ed25519"]])
def test_hikyaku_signature_verifies_with_dkimpy(keys, zone, kinds):
    sel = {"rsa": "rsa1", "ed25519": "ed1"}
    signed = hk_sign([(keys[k], "example.org", sel[k]) for k in kinds])
    d = dkim.DKIM(signed)
    for i in range(len(kinds)):
        assert d.verify(idx=i, dnsfunc=dnsfunc_for(zone)), f"dkimpy rejects signature {i}"
    # From, To, Subject and Date are oversigned: adding one breaks the signature
    assert not dkim.verify(b"Subject: forged\r\n" + signed, dnsfunc=dnsfunc_for(zone))


def test_hikyaku_signature_verifies_with_hikyaku_any_chunking(dns, keys):
    signed = hk_sign([(keys["rsa"], "example.org", "rsa1"), (keys["ed25519"], "example.org", "ed1")],
                     extra=["-c", "3"])
    for chunk in ("0", "1", "7", "4096"):
        res = hk_verify(dns, signed, ["-c", chunk])
        assert [r["result"] for r in res] == ["pass", "pass"], (chunk, res)
        assert [r["a"] for r in res] == ["rsa-sha256", "ed25519-sha256"]
        assert res[0]["bits"] == 2048 and res[0]["d"] == "example.org"


@pytest.mark.parametrize("alg", ["rsa-sha256", "ed25519-sha256"])
@pytest.mark.parametrize("canon", [(b"simple", b"simple"), (b"relaxed", b"simple"),
                                   (b"simple", b"relaxed"), (b"relaxed", b"relaxed")])
def test_dkimpy_signature_verifies_with_hikyaku(dns, keys, alg, canon):
    key = open(keys["rsa" if alg.startswith("rsa") else "ed25519"], "rb").read()
    if alg.startswith("ed"):
        # dkimpy takes the raw 32-octet Ed25519 seed, base64
        k = serialization.load_pem_private_key(key, None)
        key = base64.b64encode(k.private_bytes(serialization.Encoding.Raw,
                                               serialization.PrivateFormat.Raw,
                                               serialization.NoEncryption()))
    sel = b"rsa1" if alg.startswith("rsa") else b"ed1"
    sig = dkim.sign(MSG, sel, b"example.org", key, canonicalize=canon,
                    signature_algorithm=alg.encode())
    res = hk_verify(dns, sig + MSG)
    assert len(res) == 1 and res[0]["result"] == "pass", res
    assert res[0]["a"] == alg and res[0]["s"] == sel.decode()


def test_rsa_sha1_is_reported_never_a_pass(dns, keys):
    key = open(keys["rsa"], "rb").read()
    sig = dkim.sign(MSG, b"rsa1", b"example.org", key, signature_algorithm=b"rsa-sha1")
    res = hk_verify(dns, sig + MSG)
    assert res[0]["a"] == "rsa-sha1" and res[0]["result"] == "policy", res
    assert "RFC 8301" in res[0]["reason"]


def test_dkimpy_rfc8463_message(dns):
    msg = crlf(open(os.path.join(DKIMPY_DATA, "rfc6376.signed.msg"), "rb").read())
    res = hk_verify(dns, msg)
    by_alg = {r["a"]: r for r in res}
    assert by_alg["ed25519-sha256"]["result"] == "pass", res
    assert by_alg["rsa-sha256"]["result"] == "pass", res
    assert by_alg["rsa-sha256"]["bits"] == 1024
    msg = crlf(open(os.path.join(DKIMPY_DATA, "rfc6376.signed.rsa.msg"), "rb").read())
    assert [r["result"] for r in hk_verify(dns, msg)] == ["pass"]


@pytest.mark.parametrize("canon", [(b"simple", b"simple"), (b"relaxed", b"relaxed")])
def test_dkimpy_test_keys(dns, canon):
    """dkimpy's Ed25519 and RSA-2048 test keys and messages (its
    test_dkim_ed25519.py, test_dkim_rsavariants.py) verify with hikyaku."""
    msg = crlf(open(os.path.join(DKIMPY_DATA, "ed25519test.msg"), "rb").read())
    ed = dkimpy_data("ed25519test.key").encode()
    sig = dkim.sign(msg, b"dkimpy-ed", b"example.com", ed, canonicalize=canon,
                    signature_algorithm=b"ed25519-sha256")
    res = hk_verify(dns, sig + msg)
    assert res[0]["result"] == "pass" and res[0]["a"] == "ed25519-sha256", res
    msg = crlf(open(os.path.join(DKIMPY_DATA, "test.message"), "rb").read())
    rsa = open(os.path.join(DKIMPY_DATA, "2048_testkey.key"), "rb").read()
    for sel in (b"test3", b"test4"):
        sig = dkim.sign(msg, sel, b"example.com", rsa, canonicalize=canon)
        res = hk_verify(dns, sig + msg)
        assert res[0]["result"] == "pass" and res[0]["bits"] == 2048, (sel, res)
    # and hikyaku signs with dkimpy's PKCS#1 PEM: dkimpy verifies
    signed = hk_sign([(os.path.join(DKIMPY_DATA, "2048_testkey.key"), "example.com", "test3")],
                     msg=msg)
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5:
                       dkimpy_data("2048_testkey_wo_markers.pub.txt").encode())


def test_length_tag_allows_appended_text(dns, keys):
    key = open(keys["rsa"], "rb").read()
    sig = dkim.sign(MSG, b"rsa1", b"example.org", key, length=True,
                    canonicalize=(b"relaxed", b"relaxed"))
    assert b"l=" in sig
    res = hk_verify(dns, sig + MSG + b"appended by a mailing list\r\n")
    assert res[0]["result"] == "pass", res


def test_tampered_body_is_a_body_hash_mismatch(dns, keys):
    signed = hk_sign([(keys["ed25519"], "example.org", "ed1")])
    res = hk_verify(dns, signed.replace(b"last line", b"last  line!"))
    assert res[0]["result"] == "fail" and res[0]["bh_mismatch"] is True, res


def test_tampered_header_is_a_signature_fail(dns, keys):
    signed = hk_sign([(keys["rsa"], "example.org", "rsa1")])
    res = hk_verify(dns, signed.replace(b"Subject: interop  test", b"Subject: interop  TEST"))
    assert res[0]["result"] == "fail" and res[0]["bh_mismatch"] is False, res
    assert "signature" in res[0]["reason"]


def test_revoked_and_missing_keys(dns, keys):
    signed = hk_sign([(keys["rsa"], "example.org", "revoked"),
                      (keys["rsa"], "example.org", "nokey")])
    res = hk_verify(dns, signed)
    assert [r["result"] for r in res] == ["permerror", "permerror"], res
    assert "revoked" in res[0]["reason"] and "no key" in res[1]["reason"]
    res = hk_verify(dns, hk_sign([(keys["rsa"], "example.org", "nul")]))
    assert res[0]["result"] == "permerror" and "no key" in res[0]["reason"], res


def test_dns_timeout_is_temperror_not_a_hang(dns, keys):
    signed = hk_sign([(keys["rsa"], "drop.test", "s1"), (keys["rsa"], "servfail.test", "s1"),
                      (keys["rsa"], "example.org", "rsa1")])
    t0 = time.monotonic()
    res = hk_verify(dns, signed, ["-T", "1500"], timeout=30)
    assert time.monotonic() - t0 < 15
    assert [r["result"] for r in res] == ["temperror", "temperror", "pass"], res


def test_expired_signature(dns, keys):
    signed = hk_sign([(keys["rsa"], "example.org", "rsa1")],
                     extra=["-n", str(int(time.time()) - 7200), "-x", "3600"])
    res = hk_verify(dns, signed)
    assert res[0]["result"] == "policy" and "expired" in res[0]["reason"], res


def test_strict_key_refuses_subdomain_identity(dns, keys):
    key = open(keys["rsa"], "rb").read()
    sig = dkim.sign(MSG, b"strict", b"example.org", key, identity=b"@sub.example.org")
    res = hk_verify(dns, sig + MSG)
    assert res[0]["result"] == "policy" and res[0]["i"] == "@sub.example.org", res


def test_unsigned_message_has_no_results(dns):
    assert hk_verify(dns, MSG) == []


# ---- the CLI, the configuration and the keys process ------------------------------

def hk_cli(*args, timeout=60):
    from conftest import hikyaku_bin
    return subprocess.run([hikyaku_bin(), *args], capture_output=True, text=True,
                          timeout=timeout)


def keygen(tmp, domain, sel, kind="rsa"):
    out = os.path.join(tmp, f"{domain}.{sel}.key")
    r = hk_cli("dkim", "keygen", "--domain", domain, "--selector", sel, "--type", kind,
               "--out", out)
    assert r.returncode == 0, r.stderr
    record = r.stdout.strip()
    assert record.startswith(f"{sel}._domainkey.{domain}. IN TXT \"v=DKIM1; k={kind}; p=")
    strings = record.split(" IN TXT ", 1)[1]
    assert all(len(s) <= 255 for s in strings.strip('"').split('" "'))
    return out, record


def test_keygen_writes_a_private_key_and_the_record(tmp_path):
    out, record = keygen(str(tmp_path), "example.net", "s1", "rsa")
    assert os.stat(out).st_mode & 0o777 == 0o600
    # the record holds the key's public half, the key is RSA-2048
    k = serialization.load_pem_private_key(open(out, "rb").read(), None)
    assert k.key_size == 2048
    txt = "".join(record.split(" IN TXT ", 1)[1].strip('"').split('" "'))
    assert txt == public_record(out)
    # never overwritten
    r = hk_cli("dkim", "keygen", "--domain", "example.net", "--selector", "s1", "--out", out)
    assert r.returncode == 1 and "not overwritten" in r.stderr
    out2, record2 = keygen(str(tmp_path), "example.net", "e1", "ed25519")
    assert "k=ed25519" in record2 and len(record2) < 255


def test_check_compares_the_published_record(tmp_path, dns):
    tmp = str(tmp_path)
    good, record = keygen(tmp, "check.test", "s1", "ed25519")
    other, _ = keygen(tmp, "check.test", "s2", "rsa")
    from dnslib import RR
    dns.records += RR.fromZone(record.replace(" IN TXT ", " 300 IN TXT "))
    dns.records += RR.fromZone(txt_record("s2._domainkey.check.test.", "v=DKIM1; k=rsa; p="))
    conf = os.path.join(tmp, "hikyaku.yaml")
    with open(conf, "w") as f:
        f.write(f"listen: [{{ address: '127.0.0.1:2525', tls: none }}]\nlocal_domains: [localhost]\n"
                f"dns: {{ forwarders: ['{dns.forwarder}'], timeout: 2s }}\n"
                f"dkim:\n  sign:\n"
                f"    - {{ domain: check.test, selector: s1, key: {good}, type: ed25519 }}\n"
                f"    - {{ domain: check.test, selector: s2, key: {other} }}\n"
                f"    - {{ domain: check.test, selector: s3, key: {other} }}\n")
    r = hk_cli("dkim", "check", "check.test", "s1", "-c", conf)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr
    r = hk_cli("dkim", "check", "check.test", "s2", "-c", conf)
    assert r.returncode == 1 and "revoked" in r.stdout, r.stdout
    r = hk_cli("dkim", "check", "check.test", "s3", "-c", conf)
    assert r.returncode == 1 and "no record" in r.stdout, r.stdout
    r = hk_cli("dkim", "check", "check.test", "s1", "-c", conf, "-k", other)
    assert r.returncode == 1 and "k=ed25519" in r.stdout, r.stdout
    r = hk_cli("dkim", "check", "check.test", "nope", "-c", conf)
    assert r.returncode == 2 and "no dkim.sign entry" in r.stderr
    # `hikyaku check`: modes and types of the keys
    os.chmod(other, 0o644)
    with open(conf, "a") as f:
        f.write(f"    - {{ domain: check.test, selector: s4, key: {good}, type: rsa }}\n")
    r = hk_cli("check", "-c", conf)
    # a private key others can read is an error, as for TLS keys (exit 1)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"error: dkim key {other} is readable by others" in r.stdout
    assert f"dkim key {other} is writable by its group or open to others" in r.stdout
    assert f"dkim key {good} is not an RSA" in r.stdout
    assert "selector s1 are listed twice" not in r.stdout
    bad = os.path.join(tmp, "bad.yaml")
    with open(bad, "w") as f:
        f.write("listen: [{ address: '127.0.0.1:2525', tls: none }]\n"
                "dkim: { sign: [ { domain: x.test, selector: 'a b', key: /k } ] }\n")
    r = hk_cli("check", "-c", bad)
    assert r.returncode == 2 and "selector" in r.stderr


def test_keys_process_loads_the_dkim_keys(hikyaku, tmp_path):
    import smtplib
    tmp = str(tmp_path)
    rsa, _ = keygen(tmp, "example.org", "rsa1", "rsa")
    ed, _ = keygen(tmp, "example.org", "ed1", "ed25519")
    hk = hikyaku(dkim={"sign": [{"domain": "example.org", "selector": "rsa1", "key": rsa},
                                {"domain": "example.org", "selector": "ed1", "key": ed,
                                 "type": "ed25519"}]})
    assert hk.child_pids("keys")
    with smtplib.SMTP("127.0.0.1", hk.port) as s:
        s.sendmail("a@example.org", ["bob@localhost"], MSG)
    hk.wait_delivered("bob", "localhost", 1)


def test_keys_process_refuses_a_key_of_the_wrong_type(hikyaku, tmp_path):
    tmp = str(tmp_path)
    ed, _ = keygen(tmp, "example.org", "ed1", "ed25519")
    hk = hikyaku(start=False, dkim={"sign": [{"domain": "example.org", "selector": "ed1",
                                              "key": ed}]})
    try:
        hk.start(wait=False)
        hk.wait_log("not a PEM RSA private key", timeout=15)
    finally:
        hk.stop(signal.SIGKILL)


# ---- ARC (RFC 8617) with dkimpy's arcsign/arcverify --------------------------------

AR_MSG = b"Authentication-Results: relay.example.org; spf=pass smtp.mailfrom=example.org\r\n" + MSG


def hk_arc_seal(key, authres, chain="none", msg=AR_MSG, sel="rsa1"):
    r = subprocess.run([probe_bin(), "arc-seal", "-k", key, "-d", "example.org", "-s", sel,
                        "-r", authres, "-v", chain], input=msg, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def hk_arc_verify(dns, msg, extra=()):
    r = subprocess.run([probe_bin(), "arc-verify", "-f", dns.forwarder, *extra], input=msg,
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout)


def dkimpy_arc_sign(keys, msg, srv_id=b"relay.example.org"):
    key = open(keys["rsa"], "rb").read()
    hdrs = dkim.arc_sign(msg, b"rsa1", b"example.org", key, srv_id)
    return b"".join(hdrs) + msg


def test_hikyaku_seals_verify_with_dkimpy(keys, zone):
    one = hk_arc_seal(keys["rsa"], "mx1.example.org; spf=pass smtp.mailfrom=example.org")
    cv, _, why = dkim.arc_verify(one, dnsfunc=dnsfunc_for(zone))
    assert cv == b"pass", why
    two = hk_arc_seal(keys["rsa"], "mx2.example.org; arc=pass", chain="pass", msg=one)
    cv, results, why = dkim.arc_verify(two, dnsfunc=dnsfunc_for(zone))
    assert cv == b"pass" and len(results) == 2, why
    # a body changed after the last seal breaks the chain for dkimpy too
    cv, _, _ = dkim.arc_verify(two.replace(b"last line", b"last LINE"),
                               dnsfunc=dnsfunc_for(zone))
    assert cv == b"fail"


def test_dkimpy_seals_verify_with_hikyaku(dns, keys):
    one = dkimpy_arc_sign(keys, AR_MSG)
    r = hk_arc_verify(dns, one)
    assert r == {"arc": "pass", "sets": 1, "reason": ""}, r
    # a second hop: dkimpy again, then hikyaku on top of it
    two = dkimpy_arc_sign(keys, b"Authentication-Results: relay.example.org; arc=pass\r\n" + one)
    assert hk_arc_verify(dns, two, ["-c", "5"])["arc"] == "pass"
    three = hk_arc_seal(keys["rsa"], "mx3.example.org; arc=pass", chain="pass", msg=two)
    assert hk_arc_verify(dns, three)["sets"] == 3
    assert hk_arc_verify(dns, three)["arc"] == "pass"
    cv, _, why = dkim.arc_verify(three, dnsfunc=dnsfunc_for({
        "rsa1._domainkey.example.org.": public_record(keys["rsa"])}))
    assert cv == b"pass", why


def test_arc_failures(dns, keys):
    one = dkimpy_arc_sign(keys, AR_MSG)
    r = hk_arc_verify(dns, one.replace(b"last line", b"last LINE"))
    assert r["arc"] == "fail" and "body hash" in r["reason"], r
    r = hk_arc_verify(dns, one.replace(b"spf=pass", b"spf=fail"))
    assert r["arc"] == "fail" and "Seal" in r["reason"], r
    r = hk_arc_verify(dns, one.replace(b"Subject: interop", b"Subject: INTEROP"))
    assert r["arc"] == "fail" and "Message-Signature" in r["reason"], r
    # a set whose seal is missing
    lines = one.split(b"\r\n")
    no_seal = b"\r\n".join(l for l in lines if not l.startswith(b"ARC-Seal"))
    assert hk_arc_verify(dns, no_seal)["arc"] == "fail"
    assert hk_arc_verify(dns, MSG) == {"arc": "none", "sets": 0, "reason": "no ARC sets"}
