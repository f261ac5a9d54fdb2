"""`hikyaku log summary` (issue 12): a log with known contents (key=value
and JSON lines mixed, a foreign line) gives the known report; the logs of
a real daemon, in either format, add up to the traffic sent."""
import os
import re
import smtplib
import subprocess
import time

import pytest

from conftest import hikyaku_bin, wait_event

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                    "logsum")


def summary(*files, stdin=None):
    p = subprocess.run([hikyaku_bin(), "log", "summary", *files], input=stdin,
                       capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout.decode()


def totals(report):
    out = {}
    for k in ("received", "delivered", "bounced", "rejected"):
        out[k] = int(re.search(rf"^\s+(\d+)  {k}\b", report, re.M).group(1))
    m = re.search(r"^\s+(\d+)  deferred  \((\d+) deferrals\)", report, re.M)
    out["deferred"], out["deferrals"] = int(m.group(1)), int(m.group(2))
    return out


def test_known_log_known_report():
    with open(os.path.join(DATA, "mixed.expected")) as f:
        want = f.read()
    assert summary(os.path.join(DATA, "mixed.log")) == want
    # The same from stdin ("-").
    with open(os.path.join(DATA, "mixed.log"), "rb") as f:
        assert summary("-", stdin=f.read()) == want


def test_known_log_details():
    r = summary(os.path.join(DATA, "mixed.log"))
    assert totals(r) == {"received": 3, "delivered": 2, "bounced": 1, "rejected": 2,
                         "deferred": 1, "deferrals": 2}
    assert re.search(r"^  0900-1000\s+1\s+1\s+1\s+0\s+0$", r, re.M)
    assert re.search(r"^  2300-0000\s+1\s+0\s+0\s+1\s+0$", r, re.M)
    assert re.search(r"^\s+2  alice@example.net$", r, re.M)
    assert re.search(r"^\s+2\s+0\s+0  example.org$", r, re.M)
    assert re.search(r'^\s+1  550 5.1.1 "eve" unknown user$', r, re.M)
    assert re.search(r"^\s+2  DNS lookup failed: DNS lookup timed out$", r, re.M)
    assert "(1 of 12 lines were not hikyaku log lines)" in r


def test_top_n_and_errors(tmp_path):
    r = subprocess.run([hikyaku_bin(), "log", "summary", "-n", "1",
                        os.path.join(DATA, "mixed.log")], capture_output=True)
    out = r.stdout.decode()
    assert "bob@example.org" in out and "dave@example.org" not in out
    r = subprocess.run([hikyaku_bin(), "log", "summary", str(tmp_path / "missing")],
                       capture_output=True)
    assert r.returncode == 1 and b"missing" in r.stderr
    # Hostile content: control characters never reach the terminal.
    bad = tmp_path / "bad.log"
    bad.write_bytes(b'2026-12-03T01:00:00.000Z info hikyaku/smtpd[1]: event=accept '
                    b'from="<\\x1b[31mx@y>" qid=Q\n' + b"x" * 100000 + b"\n")
    out = summary(str(bad))
    assert "\x1b" not in out and "?[31mx@y" in out


@pytest.mark.parametrize("fmt", ["kv", "json"])
def test_real_daemon_log_adds_up(hikyaku, fmt):
    hk = hikyaku(log={"format": fmt})
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=10) as s:
        for i in range(3):
            s.sendmail("s@example.net", ["alice@localhost", "bob@localhost"], "Subject: x\r\n\r\n.\r\n")
        s.mail("s@example.net")
        assert s.rcpt("x@elsewhere.example")[0] == 554
        s.rset()
    hk.wait_delivered("bob", count=3)
    deadline = time.time() + 10
    while time.time() < deadline:
        t = totals(summary(hk.logfile))
        if t["delivered"] == 6:
            break
        time.sleep(0.1)
    assert t == {"received": 3, "delivered": 6, "bounced": 0, "rejected": 1, "deferred": 0,
                 "deferrals": 0}
