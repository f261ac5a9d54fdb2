"""The RFC 7208 test suite (openspf.org 2014.04, as Debian's python3-spf
ships it: /usr/share/doc/python3-spf/rfc7208-tests.yml.gz) against hikyaku's
SPF evaluator (src/dauth/spf.c).

Each case's zone data goes to the driver tests/spf/spf_suite.c, which
answers the evaluator's lookups from it through an injected resolver on
the event loop, as pyspf's own driver (testspf.py) does: SPF-type records
become TXT records when a name has no TXT, TIMEOUT entries time out. Where
the suite lists alternative results, any of them is accepted; where it
gives an explanation, it must match (the default one is "DEFAULT").

The driver comes from $HIKYAKU_SPF_SUITE, else <repo>/build/tests/spf_suite.
"""
import gzip
import ipaddress
import os
import subprocess

import pytest

try:
    import yaml  # Debian python3-yaml (scripts/install-deps.sh --test)
except ImportError:
    yaml = None

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUITE = "/usr/share/doc/python3-spf/rfc7208-tests.yml.gz"
SUITE_CASES = 203  # the number of cases in the 2014.04 release


def suite_bin():
    path = os.environ.get("HIKYAKU_SPF_SUITE") or os.path.join(REPO, "build", "tests", "spf_suite")
    if not os.path.exists(path):
        pytest.fail(f"spf_suite not found at {path}; build first or set HIKYAKU_SPF_SUITE")
    return path


def load_scenarios():
    if yaml is None or not os.path.exists(SUITE):
        return []
    with gzip.open(SUITE, "rb") as f:
        return [s for s in yaml.safe_load_all(f) if s]


SCENARIOS = load_scenarios()
CASES = [(f"{i}:{name}", i, name) for i, s in enumerate(SCENARIOS) for name in s["tests"]]
if not CASES:
    CASES = [("missing:suite", 0, "suite")]  # so that the fixture reports it


def wire_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        b = label.encode("utf-8")
        if b:
            out += bytes([min(len(b), 255)]) + b[:255]
    return out + b"\0"


def txt_rdata(strings):
    out = b""
    for s in strings:
        b = s.encode("utf-8")
        chunks = [b[i:i + 255] for i in range(0, len(b), 255)] or [b""]
        for c in chunks:
            out += bytes([len(c)]) + c
    return out


def rdata(rtype, v):
    if rtype == "A":
        return ipaddress.IPv4Address(v).packed
    if rtype == "AAAA":
        return ipaddress.IPv6Address(v).packed
    if rtype == "MX":
        return int(v[0]).to_bytes(2, "big") + wire_name(v[1])
    if rtype in ("PTR", "CNAME"):
        return wire_name(v)
    if rtype == "TXT":
        return txt_rdata(v)
    return None


def zone_records(name, rrs):
    """pyspf testspf.py getrdata(): SPF records also appear as TXT when the
    name has no TXT record at all; a value "NONE" is no record."""
    out, generated, gen = [], [], True
    for m in rrs:
        if m == "TIMEOUT":
            out.append((name, "TIMEOUT", None))
            continue
        for t, v in m.items():
            if t in ("TXT", "SPF") and isinstance(v, str):
                v = [v]
            if t == "TXT":
                gen = False
            elif t == "SPF" and gen:
                generated.append(("TXT", v))
            if v != ["NONE"]:
                out.append((name, t, v))
    if gen:
        out += [(name, t, v) for t, v in generated]
    return out


def hexs(s):
    return s.encode("utf-8").hex() or "-"


def case_lines(scenario, name):
    lines = []
    for dname, rrs in (scenario.get("zonedata") or {}).items():
        for owner, t, v in zone_records(dname, rrs):
            if t == "TIMEOUT":
                lines.append(f"Z {hexs(owner)} TIMEOUT -")
            elif v == "TIMEOUT":
                lines.append(f"Z {hexs(owner)} {t} TIMEOUT")
            else:
                rd = rdata(t, v)
                if rd is not None:
                    lines.append(f"Z {hexs(owner)} {t} {rd.hex() or '-'}")
    test = scenario["tests"][name]
    lines.append(f"Q {name} {test['host']} {hexs(test.get('mailfrom') or '')} "
                 f"{hexs(test.get('helo') or '')}")
    return lines


@pytest.fixture(scope="module")
def outcomes():
    if not SCENARIOS:
        # CI installs both (scripts/install-deps.sh --test): a missing suite
        # must not pass as skipped
        pytest.fail(f"needs {SUITE} (Debian python3-spf) and python3-yaml")
    lines = []
    for _, i, name in CASES:
        lines += case_lines(SCENARIOS[i], name)
    p = subprocess.run([suite_bin()], input="\n".join(lines) + "\n", capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    res = []
    for line in p.stdout.splitlines():
        cid, result, exp, reason = line.split(" ")
        unhex = (lambda h: "" if h == "-" else bytes.fromhex(h).decode("utf-8", "replace"))
        res.append((cid, result, unhex(exp), unhex(reason)))
    assert len(res) == len(CASES), p.stderr
    return {CASES[k][0]: r for k, r in enumerate(res)}


def judge(case_id, got):
    i, name = case_id.split(":", 1)
    test = SCENARIOS[int(i)]["tests"][name]
    want = test["result"]
    want = want if isinstance(want, list) else [want]
    _, result, exp, reason = got
    if result not in want:
        return f"{name}: {result} ({reason}), want {'|'.join(want)}"
    if "explanation" in test and exp != test["explanation"]:
        return f"{name}: explanation {exp!r}, want {test['explanation']!r}"
    return None


@pytest.mark.parametrize("case_id", [c[0] for c in CASES])
def test_rfc7208_case(outcomes, case_id):
    problem = judge(case_id, outcomes[case_id])
    assert problem is None, problem


def test_rfc7208_count(outcomes, capsys):
    """All of the suite ran, and how much of it passes (the count is shown
    in the run's output, -q or not)."""
    bad = [p for p in (judge(c, outcomes[c]) for c in outcomes) if p]
    summary = f"RFC 7208 suite: {len(outcomes) - len(bad)} of {len(outcomes)} cases pass"
    with capsys.disabled():
        print(f"\n{summary}")
    assert len(outcomes) == SUITE_CASES, summary
    assert not bad, summary + "\n" + "\n".join(bad)
