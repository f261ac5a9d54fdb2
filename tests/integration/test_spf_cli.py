"""`hikyaku spf check -c FILE IP SENDER [HELO]` against a test DNS server
(dns_server.py, dnslib) through the configuration's dns.forwarders: the
result, its reason, the terms and lookups it shows, the explanation and the
Received-SPF field; a DNS server that does not answer gives temperror
within the check's deadline, never a hang."""
import os
import subprocess
import time

import pytest

from conftest import hikyaku_bin, to_yaml
from dns_server import DnsServer

ZONE = """
example.test.          60 IN TXT "v=spf1 ip4:192.0.2.0/24 include:_spf.example.test -all exp=why.example.test"
_spf.example.test.     60 IN TXT "v=spf1 a:mail.example.test ~all"
mail.example.test.     60 IN A 198.51.100.7
why.example.test.      60 IN TXT "%{i} is not one of %{d}'s senders"
helo.example.test.     60 IN TXT "v=spf1 mx -all"
helo.example.test.     60 IN MX 10 mx1.helo.example.test.
mx1.helo.example.test. 60 IN AAAA 2001:db8::25
bad.example.test.      60 IN TXT "v=spf1 ip4:192.0.2.0/40 -all"
evil.example.test.     60 IN TXT "v=spf1 -all exp=evil-exp.example.test"
evil-exp.example.test. 60 IN TXT "bad\\027[31mred"
evil2.example.test.    60 IN TXT "v=spf1 \\027[31mred -all"
slow.example.test.     60 IN TXT "v=spf1 -all"
"""


@pytest.fixture(scope="module")
def spf_dns():
    srv = DnsServer(ZONE)
    srv.drop.add("slow.example.test.")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def conf(spf_dns, tmp_path):
    path = tmp_path / "hikyaku.yaml"
    path.write_text(to_yaml({
        "hostname": "mx.receiver.test",
        "listen": ["127.0.0.1:2525"],
        "tls": {"self_signed_dir": str(tmp_path / "tls")},
        "spool_dir": str(tmp_path / "spool"),
        "dns": {"forwarders": [spf_dns.forwarder], "timeout": "2s"},
    }))
    return str(path)


def spf(conf, *args, timeout=60):
    return subprocess.run([hikyaku_bin(), "spf", "check", "-c", conf, *args],
                          capture_output=True, text=True, timeout=timeout)


def test_pass_by_ip4(conf):
    r = spf(conf, "192.0.2.10", "alice@example.test")
    assert r.returncode == 0, r.stderr
    assert "mailfrom: pass" in r.stdout
    assert "reason: mechanism ip4:192.0.2.0/24 matched" in r.stdout
    assert "lookup TXT example.test" in r.stdout
    assert "Received-SPF: pass (mx.receiver.test: domain of alice@example.test" in r.stdout
    assert "receiver=mx.receiver.test;" in r.stdout


def test_pass_through_include(conf):
    r = spf(conf, "198.51.100.7", "alice@example.test")
    assert "mailfrom: pass" in r.stdout, r.stdout
    assert "reason: mechanism include:_spf.example.test matched" in r.stdout
    assert "lookup A mail.example.test" in r.stdout
    assert "lookups: 2 (void: 0)" in r.stdout


def test_fail_with_explanation(conf):
    r = spf(conf, "203.0.113.5", "alice@example.test")
    assert "mailfrom: fail" in r.stdout, r.stdout
    assert "explanation: 203.0.113.5 is not one of example.test's senders" in r.stdout
    assert "mechanism=-all;" in r.stdout


def test_null_sender_and_helo_identity(conf):
    r = spf(conf, "2001:db8::25", "<>", "helo.example.test")
    assert "check MAIL FROM identity" in r.stdout and "check HELO identity" in r.stdout
    assert "mailfrom: pass" in r.stdout, r.stdout
    assert "identity: postmaster@helo.example.test" in r.stdout
    assert "helo: pass" in r.stdout
    assert "lookup MX helo.example.test" in r.stdout
    assert "lookup AAAA mx1.helo.example.test" in r.stdout


def test_none_and_permerror(conf):
    r = spf(conf, "192.0.2.1", "bob@nothing.example.test")
    assert "mailfrom: none" in r.stdout, r.stdout
    r = spf(conf, "192.0.2.1", "bob@bad.example.test")
    assert "mailfrom: permerror" in r.stdout, r.stdout
    assert "problem=" in r.stdout


def test_hostile_text_is_not_printed_raw(conf):
    # an explanation with a control octet is no macro-string: the default
    r = spf(conf, "192.0.2.1", "bob@evil.example.test")
    assert "mailfrom: fail" in r.stdout, r.stdout
    assert "\x1b" not in r.stdout
    assert "explanation: sender is not authorized" in r.stdout
    # a record with one is a permerror, and the trace shows it defused
    r = spf(conf, "192.0.2.1", "bob@evil2.example.test")
    assert "mailfrom: permerror" in r.stdout, r.stdout
    assert "\x1b" not in r.stdout
    assert "record evil2.example.test: v=spf1 ?[31mred -all" in r.stdout


def test_unanswered_dns_is_temperror(conf):
    t0 = time.monotonic()
    r = spf(conf, "192.0.2.1", "bob@slow.example.test")
    assert "mailfrom: temperror" in r.stdout, r.stdout
    assert time.monotonic() - t0 < 30


def test_usage(conf):
    r = subprocess.run([hikyaku_bin(), "spf", "check", "192.0.2.1"], capture_output=True,
                       text=True)
    assert r.returncode == 2
    assert "usage: hikyaku spf check" in r.stderr
    r = subprocess.run([hikyaku_bin(), "spf", "check", "not-an-ip", "a@b.c"],
                       capture_output=True, text=True)
    assert r.returncode == 2
