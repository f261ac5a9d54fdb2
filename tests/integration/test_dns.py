"""src/dns against a dnslib server on loopback: MX order and shuffling, null
MX (RFC 7505), NXDOMAIN, SERVFAIL, implicit MX (RFC 5321 §5.1), exchangers
without addresses, CNAMEs, an unanswering server, caching, the address cap,
TCP fallback, cancellation and freeing with lookups pending.

Runs the test driver tests/dns/dns_probe.c: $HIKYAKU_DNS_PROBE, else
<repo>/build/tests/dns_probe.
"""
import json
import os
import subprocess
import time

import pytest
from dnslib import MX, QTYPE, RR, DNSLabel

from dns_server import DnsServer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MANY = "\n".join(f"many.test. 300 IN MX {i} h{i}.many.test.\n"
                 f"h{i}.many.test. 300 IN A 192.0.2.{100 + i}" for i in range(20))
BIG = "\n".join(f"big.test. 300 IN A 198.51.100.{i}" for i in range(1, 61))
WIDE = "\n".join(f"wide.test. 300 IN A 192.0.2.{200 + i}\n"
                 f"wide.test. 300 IN AAAA 2001:db8::{200 + i:x}" for i in range(10))

ZONE = f"""
example.test.        300 IN MX 20 mx2.example.test.
example.test.        300 IN MX 10 mx1.example.test.
mx1.example.test.    300 IN A 192.0.2.1
mx1.example.test.    300 IN AAAA 2001:db8::1
mx2.example.test.    300 IN A 192.0.2.2
eq.test.             300 IN MX 10 a.eq.test.
eq.test.             300 IN MX 10 b.eq.test.
a.eq.test.           300 IN A 192.0.2.10
b.eq.test.           300 IN A 192.0.2.11
nullmx.test.         300 IN MX 0 .
implicit.test.       300 IN A 192.0.2.20
implicit.test.       300 IN AAAA 2001:db8::20
noaddr.test.         300 IN MX 10 nohost.noaddr.test.
nohost.noaddr.test.  300 IN TXT "no address here"
gone.test.           300 IN MX 10 missing.gone.test.
cname.test.          300 IN CNAME example.test.
mxcname.test.        300 IN MX 10 alias.mxcname.test.
alias.mxcname.test.  300 IN CNAME mx2.example.test.
partial.test.        300 IN MX 10 host.servfail.test.
partial.test.        300 IN MX 20 mx2.example.test.
tempaddr.test.       300 IN MX 10 host.servfail.test.
dup.test.            300 IN MX 10 mx2.example.test.
dup.test.            300 IN MX 20 MX2.example.test.
cache.test.          300 IN MX 10 mx.cache.test.
mx.cache.test.       300 IN A 192.0.2.30
bigmx.test.          300 IN MX 10 big.test.
txt.test.            300 IN TXT "v=spf1 -all"
txt.test.            300 IN TXT "v=DKIM1; k=ed25519; p=" "{"A" * 200}" "{"A" * 100}"
{MANY}
{BIG}
{WIDE}
"""


def probe_bin():
    path = os.environ.get("HIKYAKU_DNS_PROBE") or os.path.join(REPO, "build", "tests", "dns_probe")
    if not os.path.exists(path):
        pytest.fail(f"dns_probe not found at {path}; build it or set HIKYAKU_DNS_PROBE")
    return path


@pytest.fixture(scope="module")
def dns():
    srv = DnsServer(ZONE)
    srv.servfail.add("servfail.test.")
    srv.drop.add("drop.test.")
    srv.truncate.add("big.test.")
    # Exchanger names that are not host names (RFC 5321 §2.3.5): skipped.
    for owner, pref, labels in [("badmx.test.", 10, [b"bad host", b"test"]),
                                ("badmx.test.", 20, [b"mx2", b"example", b"test"]),
                                ("allbad.test.", 10, [b"a\\.b", b"test"]),
                                ("allbad.test.", 20, [b"x\x00y", b"test"])]:
        srv.records.append(RR(owner, QTYPE.MX, ttl=300, rdata=MX(DNSLabel(labels), pref)))
    srv.start()
    yield srv
    srv.stop()


def probe(srv, *names, mode="mx", repeat=1, extra=(), timeout=60):
    args = [probe_bin(), "-f", srv.forwarder, "-m", mode, "-r", str(repeat), *extra, *names]
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    done = lines[-1]
    assert done["event"] == "done"
    assert done["sync"] == 0, "a callback ran from inside dns_resolve_*()"
    return lines[:-1], done, r.stderr


def one(srv, name, **kw):
    results, _, _ = probe(srv, name, **kw)
    assert len(results) == 1
    return results[0]


def test_mx_order_and_addresses(dns):
    r = one(dns, "example.test")
    assert r["status"] == "OK" and r["error"] is None and not r["implicit"]
    assert [(h["name"], h["pref"]) for h in r["hosts"]] == [("mx1.example.test", 10),
                                                             ("mx2.example.test", 20)]
    assert r["hosts"][0]["addrs"] == ["2001:db8::1", "192.0.2.1"]
    assert r["hosts"][1]["addrs"] == ["192.0.2.2"]
    assert r["secure"] is False  # no trust anchor: nothing is validated


def test_trailing_dot_and_case(dns):
    r = one(dns, "EXAMPLE.test.")
    assert r["status"] == "OK"
    # Case may follow the query: DNS names compare case-insensitively.
    assert [h["name"].lower() for h in r["hosts"]] == ["mx1.example.test", "mx2.example.test"]


def test_ipv4_only_skips_aaaa(dns):
    before = dns.count("mx1.example.test.", "AAAA")
    r = one(dns, "example.test", extra=("-4",))
    assert r["hosts"][0]["addrs"] == ["192.0.2.1"]
    assert dns.count("mx1.example.test.", "AAAA") == before


def test_equal_preferences_shuffled(dns):
    results, done, _ = probe(dns, "eq.test", repeat=50)
    assert done["callbacks"] == 50
    orders = {tuple(h["name"] for h in r["hosts"]) for r in results}
    assert orders == {("a.eq.test", "b.eq.test"), ("b.eq.test", "a.eq.test")}


def test_null_mx(dns):
    r = one(dns, "nullmx.test")
    assert r["status"] == "NULL_MX" and r["hosts"] == []
    assert "null MX" in r["error"]


def test_nxdomain(dns):
    r = one(dns, "noexist.test")
    assert r["status"] == "NXDOMAIN" and r["hosts"] == []


def test_servfail_is_tempfail(dns):
    r = one(dns, "servfail.test")
    assert r["status"] == "TEMPFAIL" and r["error"]


def test_implicit_mx(dns):
    r = one(dns, "implicit.test")
    assert r["status"] == "OK" and r["implicit"]
    assert r["hosts"] == [{"name": "implicit.test", "pref": 0,
                           "addrs": ["2001:db8::20", "192.0.2.20"]}]


def test_implicit_without_address(dns):
    # nohost.noaddr.test exists (TXT) but has neither MX nor A/AAAA.
    r = one(dns, "nohost.noaddr.test")
    assert r["status"] == "NO_ADDRESS" and r["implicit"] is True


def test_mx_host_without_address(dns):
    assert one(dns, "noaddr.test")["status"] == "NO_ADDRESS"
    assert one(dns, "gone.test")["status"] == "NO_ADDRESS"  # exchanger is NXDOMAIN


def test_cname_to_mx_domain(dns):
    r = one(dns, "cname.test")
    assert r["status"] == "OK"
    assert [h["name"] for h in r["hosts"]] == ["mx1.example.test", "mx2.example.test"]


def test_mx_target_is_cname(dns):
    r = one(dns, "mxcname.test")
    assert r["status"] == "OK"
    assert r["hosts"] == [{"name": "alias.mxcname.test", "pref": 10, "addrs": ["192.0.2.2"]}]


def test_some_exchangers_tempfail(dns):
    r = one(dns, "partial.test")
    assert r["status"] == "OK"
    assert [h["name"] for h in r["hosts"]] == ["mx2.example.test"]
    r = one(dns, "tempaddr.test")
    assert r["status"] == "TEMPFAIL"


def test_malformed_exchanger_names_skipped(dns):
    r = one(dns, "badmx.test")
    assert r["status"] == "OK"
    assert [(h["name"], h["pref"]) for h in r["hosts"]] == [("mx2.example.test", 20)]
    assert not [k for k in dns.counts if k[0].startswith("bad") and k[1] != "MX"]
    r = one(dns, "allbad.test")
    assert r["status"] == "NO_ADDRESS" and r["error"] == "no usable MX record"


def test_duplicate_exchangers_merged(dns):
    r = one(dns, "dup.test")
    assert [(h["name"].lower(), h["pref"]) for h in r["hosts"]] == [("mx2.example.test", 10)]


def test_hosts_capped(dns):
    r = one(dns, "many.test")
    assert r["status"] == "OK"
    assert [h["pref"] for h in r["hosts"]] == list(range(16))  # DNS_MAX_HOSTS
    assert dns.count("h17.many.test.", "A") == 0


def test_addresses_capped_and_interleaved(dns):
    r = one(dns, "wide.test", mode="host")
    addrs = r["hosts"][0]["addrs"]
    assert len(addrs) == 8  # DNS_MAX_ADDRS
    assert [":" in a for a in addrs] == [True, False] * 4


def test_truncated_answer_retried_over_tcp(dns):
    r = one(dns, "bigmx.test")
    assert r["status"] == "OK"
    assert len(r["hosts"][0]["addrs"]) == 8
    assert dns.tcp_count("big.test.", "A") >= 1


def test_cache(dns):
    results, _, _ = probe(dns, "cache.test", repeat=3)
    assert [r["status"] for r in results] == ["OK"] * 3
    assert dns.count("cache.test.", "MX") == 1
    assert dns.count("mx.cache.test.", "A") == 1


def test_resolve_host(dns):
    r = one(dns, "mx1.example.test", mode="host")
    assert r["status"] == "OK" and not r["implicit"]
    assert r["hosts"] == [{"name": "mx1.example.test", "pref": 0,
                           "addrs": ["2001:db8::1", "192.0.2.1"]}]
    assert one(dns, "noexist.test", mode="host")["status"] == "NXDOMAIN"
    assert one(dns, "nohost.noaddr.test", mode="host")["status"] == "NO_ADDRESS"
    assert one(dns, "servfail.test", mode="host")["status"] == "TEMPFAIL"


@pytest.mark.parametrize("name", ["a..b", ".lead.test", "sp ace.test", "back\\.slash.test",
                                  "x" * 64 + ".test", ("a" * 60 + ".") * 4 + "abcdefghij", ""])
def test_invalid_names_rejected_before_querying(dns, name):
    before = sum(dns.counts.values())
    r = one(dns, name)
    assert r["status"] == "NXDOMAIN" and r["error"] == "invalid domain name"
    assert sum(dns.counts.values()) == before


def test_longest_valid_name_is_queried(dns):
    assert len(("a" * 60 + ".") * 4 + "abcdefghij") == 254
    name = ".".join(["a" * 63] * 3 + ["b" * 61])  # 253 characters
    assert len(name) == 253
    r = one(dns, name)
    assert r["status"] == "NXDOMAIN" and r["error"] != "invalid domain name"


def test_unanswered_server_times_out(dns):
    start = time.monotonic()
    r = one(dns, "drop.test", extra=("-T", "1500"), timeout=30)
    elapsed = time.monotonic() - start
    assert r["status"] == "TEMPFAIL"
    assert 1.3 < elapsed < 15, elapsed


def test_parallel_queries(dns):
    names = ["example.test", "nullmx.test", "noexist.test", "implicit.test", "servfail.test"]
    results, done, _ = probe(dns, *names)
    assert done["callbacks"] == len(names)
    got = {r["name"]: r["status"] for r in results}
    assert got == {"example.test": "OK", "nullmx.test": "NULL_MX", "noexist.test": "NXDOMAIN",
                   "implicit.test": "OK", "servfail.test": "TEMPFAIL"}


def test_cancel_runs_no_callback(dns):
    results, done, _ = probe(dns, "example.test", "drop.test", "a..b", "eq.test", mode="cancel")
    assert results == [] and done["callbacks"] == 0


def test_free_with_pending_lookups(dns):
    results, done, _ = probe(dns, "drop.test", "drop.test", mode="free")
    assert results == [] and done["callbacks"] == 0


def test_free_inside_callback(dns):
    # The first answer frees the context from inside ub_process(); the
    # others (one already answered, one pending) must never be delivered.
    results, done, _ = probe(dns, "nullmx.test", "nullmx.test", "drop.test", mode="freecb")
    assert done["callbacks"] == 1 and len(results) == 1


@pytest.mark.parametrize("host,addr", [("192.0.2.77", "192.0.2.77"), ("[2001:db8::5]", "2001:db8::5"),
                                       ("2001:db8::6", "2001:db8::6")])
def test_resolve_host_address_literal(dns, host, addr):
    # No query for the literal may reach the server. (Counting all queries
    # was flaky: a late retry from an earlier test's lookup can arrive.)
    def literal_queries():
        return sum(v for k, v in dns.counts.items() if addr.lower() in str(k).lower())
    before = literal_queries()
    r = one(dns, host, mode="host")
    assert r["status"] == "OK" and r["hosts"] == [{"name": addr, "pref": 0, "addrs": [addr]}]
    assert literal_queries() == before


def test_dnssec_bogus_is_tempfail(dns, tmp_path):
    # A trust anchor for "test." that the server cannot back (it serves no
    # DNSKEY or RRSIG): every answer below it is bogus.
    ta = tmp_path / "ta.key"
    ta.write_text("test. IN DS 12345 8 2 "
                  "49FD46E6C4B45C55D4AC69CBD3CD34AC1AFE51DE2A4E7EA5A5FB83C9F4E4FA8C\n")
    results, _, stderr = probe(dns, "example.test", "implicit.test", extra=("-a", str(ta)))
    for r in results:
        assert r["status"] == "TEMPFAIL" and r["error"] == "DNSSEC validation failed"
        assert r["secure"] is False
    assert "chain of trust" in stderr


def test_raw_txt_records(dns):
    """dns_resolve_raw: TXT records as the checks read them (SPF, DKIM keys,
    DMARC): character-strings joined, NODATA apart from NXDOMAIN, SERVFAIL
    and an unanswering server as TEMPFAIL."""
    r = one(dns, "txt.test", mode="txt")
    assert r["status"] == "OK"
    assert sorted(r["txt"]) == ["v=DKIM1; k=ed25519; p=" + "A" * 300, "v=spf1 -all"]
    r = one(dns, "implicit.test", mode="txt")  # the name exists, without TXT: NODATA
    assert r["status"] == "OK" and r["txt"] == []
    assert one(dns, "nowhere.test", mode="txt")["status"] == "NXDOMAIN"
    assert one(dns, "servfail.test", mode="txt")["status"] == "TEMPFAIL"
    r = one(dns, "drop.test", mode="txt", extra=("-T", "1500"))
    assert r["status"] == "TEMPFAIL" and "timed out" in r["error"]
