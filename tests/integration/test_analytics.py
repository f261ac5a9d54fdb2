"""Delivery analytics (issue 13): traffic to a sink that takes the mail
(over STARTTLS), one that defers (451), one that rejects (550) and a local
Maildir; /api/v1/analytics/{series,domains,delays,reasons,tls} answer the
right counts, delays and reasons from <spool>/stats.db; a restart keeps
them; the retention and the per-hour domain bound hold; the token is
needed; DMARC results come from the aggregate-report records."""
import http.client
import json
import os
import smtplib
import socket
import sqlite3
import time

import pytest

from conftest import free_port, wait_event
from mta_helpers import ScriptedMTA
from test_dmarc import dns_zone, rsa_key  # noqa: F401 (fixtures)

TOKEN = "analytics-token-for-tests-0123456789"


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


def start(hikyaku, tmp_path, routes=(), **kw):
    port = free_port()
    tf = tmp_path / "token"
    tf.write_text(TOKEN + "\n")
    os.chmod(tf, 0o600)
    analytics = {"flush_interval": "200ms"}
    analytics.update(kw.pop("analytics", {}))
    hk = hikyaku(http={"listen": f"127.0.0.1:{port}", "token_file": str(tf)},
                 relay={"trusted_networks": ["127.0.0.0/8"]},
                 queue={"retry_min": "1h", "retry_max": "1h"},
                 analytics=analytics, routes=list(routes), **kw)
    hk.http_port = port
    wait_http(hk)
    return hk


def wait_http(hk):
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", hk.http_port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("no http listener")


def call(hk, path, token=TOKEN):
    c = http.client.HTTPConnection("127.0.0.1", hk.http_port, timeout=15)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    c.request("GET", path, headers=headers)
    r = c.getresponse()
    body = r.read()
    c.close()
    if r.getheader("Content-Type", "").startswith("application/json"):
        body = json.loads(body)
    return r.status, body


def api(hk, kind, **q):
    now = int(time.time())
    q.setdefault("from", now - 7200)
    q.setdefault("to", now + 3600)
    qs = "&".join(f"{k}={v}" for k, v in q.items())
    st, body = call(hk, f"/api/v1/analytics/{kind}?{qs}")
    assert st == 200, body
    assert body["kind"] == kind
    return body


def wait_api(hk, kind, pred, timeout=15, **q):
    """Poll until pred(answer) holds (the queue writes every 200 ms)."""
    deadline = time.time() + timeout
    while True:
        try:
            body = api(hk, kind, **q)
        except (AssertionError, OSError):
            if time.time() > deadline:  # 503 while a queue restarts
                raise
            time.sleep(0.2)
            continue
        if pred(body):
            return body
        if time.time() > deadline:
            raise AssertionError(f"{kind}: {json.dumps(body)}")
        time.sleep(0.2)


def send(hk, sender, rcpts):
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=10) as s:
        assert s.sendmail(sender, rcpts, "Subject: analytics\r\n\r\nbody\r\n") == {}


def by_domain(body, key="destination"):
    return {d["domain"]: d for d in body[key]}


def traffic(hikyaku, tmp_path, mtas):
    ok = mtas(tls=True)
    defer = mtas(rcpt={"carl@defer.test": ["451 4.2.0 Mailbox busy, try later"],
                       "cora@defer.test": ["451 4.2.0 Mailbox busy, try later"]})
    reject = mtas(rcpt={"rob@reject.test": ["550 5.1.1 <rob@reject.test>: User unknown"]})
    routes = [
        {"domain": "ok.test", "transport": "relay", "address": f"127.0.0.1:{ok.port}",
         "tls": "may"},
        {"domain": "defer.test", "transport": "relay", "address": f"127.0.0.1:{defer.port}",
         "tls": "none"},
        {"domain": "reject.test", "transport": "relay", "address": f"127.0.0.1:{reject.port}",
         "tls": "none"},
    ]
    hk = start(hikyaku, tmp_path, routes)
    # 8 recipients from app@example.org: 3 sent, 2 deferred, 1 bounced,
    # 2 into Maildirs; the bounce goes back to app@example.org (local).
    send(hk, "app@example.org", ["ann@ok.test"])
    send(hk, "app@example.org", ["ben@ok.test", "bea@ok.test"])
    send(hk, "app@example.org", ["carl@defer.test", "cora@defer.test"])
    send(hk, "app@example.org", ["rob@reject.test"])
    send(hk, "app@example.org", ["alice@localhost", "bob@localhost"])
    ok.wait_messages(2)
    wait_event(hk, "delivery", count=8, timeout=20)
    hk.wait_delivered("app", "example.org", 1, timeout=20)  # the bounce
    return hk


def check_counts(hk):
    body = wait_api(hk, "domains", lambda b: by_domain(b).get("example.org", {}).get(
        "delivered") == 1 and by_domain(b).get("ok.test", {}).get("delivered") == 3)
    d = by_domain(body)
    assert {k: d["ok.test"][k] for k in ("accepted", "delivered", "deferred", "bounced")} == \
        {"accepted": 3, "delivered": 3, "deferred": 0, "bounced": 0}
    assert {k: d["defer.test"][k] for k in ("accepted", "delivered", "deferred", "bounced")} == \
        {"accepted": 2, "delivered": 0, "deferred": 2, "bounced": 0}
    assert {k: d["reject.test"][k] for k in ("accepted", "delivered", "deferred", "bounced")} == \
        {"accepted": 1, "delivered": 0, "deferred": 0, "bounced": 1}
    assert d["localhost"]["accepted"] == 2 and d["localhost"]["delivered"] == 2
    # The bounce: delivered, never accepted (the queue made it).
    assert d["example.org"]["accepted"] == 0 and d["example.org"]["delivered"] == 1
    s = by_domain(body, "sender")
    assert s["example.org"]["accepted"] == 8
    assert s["example.org"]["delivered"] == 5
    assert s["<>"]["delivered"] == 1

    series = api(hk, "series")
    tot = {k: sum(h[k] for h in series["hours"])
           for k in ("accepted", "delivered", "deferred", "bounced")}
    assert tot == {"accepted": 8, "delivered": 6, "deferred": 2, "bounced": 1}
    assert all(h["t"] % 3600 == 0 for h in series["hours"])
    only = api(hk, "series", domain="OK.test")  # domains compare in lower case
    assert sum(h["delivered"] for h in only["hours"]) == 3
    only = api(hk, "series", sender_domain="example.org")
    assert sum(h["accepted"] for h in only["hours"]) == 8

    delays = api(hk, "delays")
    assert delays["all"]["count"] == 6
    assert delays["all"]["p50_ms"] is not None
    assert 0 <= delays["all"]["p50_ms"] <= delays["all"]["p99_ms"] < 60000
    assert sum(b["n"] for b in delays["bins"]) == 6
    assert api(hk, "delays", domain="defer.test")["all"]["count"] == 0

    reasons = api(hk, "reasons")
    assert {"reason": "4.2.0 mailbox busy, try later", "count": 2} in reasons["deferred"]
    assert reasons["bounced"] == [{"reason": "5.1.1 user unknown", "count": 1}]

    tls = api(hk, "tls")
    v = {x["version"]: x["count"] for x in tls["versions"]}
    assert v.get("none") == 2, tls  # defer.test and reject.test: one transaction each
    assert tls["with_tls"] >= 1 and tls["total"] == tls["with_tls"] + 2
    assert any(k.startswith("TLSv1.") for k in v), tls


def test_counts_delays_reasons_and_restart(hikyaku, tmp_path, mtas):
    hk = traffic(hikyaku, tmp_path, mtas)
    check_counts(hk)
    assert os.path.exists(os.path.join(hk.spool, "stats.db"))
    hk.stop()
    hk.start()
    wait_http(hk)
    check_counts(hk)  # the store survived the restart


def test_api_errors_and_token(hikyaku, tmp_path):
    hk = start(hikyaku, tmp_path)
    assert call(hk, "/api/v1/analytics/series", token=None)[0] == 401
    assert call(hk, "/api/v1/analytics/series", token="x" * 40)[0] == 401
    st, body = call(hk, "/api/v1/analytics/nosuch")
    assert st == 404 and "kind" in body["error"]
    assert call(hk, "/api/v1/analytics/series?from=10&to=5")[0] == 400
    assert call(hk, "/api/v1/analytics/series?from=x")[0] == 400
    assert call(hk, "/api/v1/analytics/series?from=0&to=99999999")[0] == 400  # > 400 days
    st, body = call(hk, "/api/v1/analytics/series")  # default: the last 24 hours
    assert st == 200 and body["to"] - body["from"] >= 86399 and body["hours"] == []


def test_off(hikyaku, tmp_path):
    hk = start(hikyaku, tmp_path, analytics={"enabled": False})
    send(hk, "a@localhost", ["b@localhost"])
    hk.wait_delivered("b", "localhost", 1)
    st, body = call(hk, "/api/v1/analytics/series")
    assert st == 503 and "off" in body["error"]
    assert not os.path.exists(os.path.join(hk.spool, "stats.db"))


def test_retention_and_domain_bound(hikyaku, tmp_path):
    hk = start(hikyaku, tmp_path, analytics={"retention": "2h", "top_domains": 2})
    now_h = int(time.time()) // 3600
    # Six remote domains in one hour (deferred: DNS goes nowhere): while
    # the hour runs, twice top_domains are kept, the rest under (other)
    # (the hour's end folds it to the two busiest: test_analytics.c).
    send(hk, "a@localhost", [f"x@d{i}.test" for i in range(6)])
    body = wait_api(hk, "domains", lambda b: sum(d["accepted"] for d in b["destination"]) == 6)
    names = [d["domain"] for d in body["destination"]]
    assert len(names) == 5 and "(other)" in names, names
    assert by_domain(body)["(other)"]["accepted"] == 2
    hk.stop()
    # Rows from 5 hours ago (older than the 2 h kept) and from the hour
    # before (kept) planted while it is stopped; the first write prunes.
    db = sqlite3.connect(os.path.join(hk.spool, "stats.db"))
    for h, dom in ((now_h - 5, "old.test"), (now_h - 1, "recent.test")):
        db.execute("INSERT INTO traffic VALUES(?,?,?,7,0,0,0,NULL)", (h, dom, "s.test"))
    db.commit()
    db.close()
    hk.start()
    wait_http(hk)
    send(hk, "a@localhost", ["b@localhost"])
    frm = (now_h - 6) * 3600
    # (localhost lands in (other): four domains of this hour are kept already)
    body = wait_api(hk, "domains", lambda b: sum(
        d["accepted"] for d in b["destination"] if d["domain"] != "recent.test") == 7,
        **{"from": frm})
    names = by_domain(body)
    assert "old.test" not in names and names["recent.test"]["accepted"] == 7
    db = sqlite3.connect(os.path.join(hk.spool, "stats.db"))
    hours = [r[0] for r in db.execute("SELECT DISTINCT hour FROM traffic")]
    db.close()
    assert min(hours) >= now_h - 1, hours


def test_dmarc_results(hikyaku, tmp_path, dns_zone, rsa_key):  # noqa: F811
    """The DMARC chart's data: the records smtpd sends the queue for
    aggregate reports (<spool>/dmarc/YYYYMMDD, dmarcrep), counted."""
    from test_dmarc_report import report_zone, send_from
    srv = dns_zone(report_zone(rsa_key))
    hk = start(hikyaku, tmp_path, dns={"forwarders": [srv.forwarder], "timeout": "5s"},
               dauth={"loopback": True, "timeout": "3s"})
    send_from(hk, "pass.example")
    send_from(hk, "pass.example")
    send_from(hk, "fail.example", expect_reject=True)
    body = wait_api(hk, "dmarc", lambda b: b["total"] == 3)
    assert body["pass"] == 2
    assert body["disposition"] == {"none": 2, "quarantine": 0, "reject": 1}
    d = by_domain(body, "domains")
    assert d["pass.example"]["count"] == 2 and d["pass.example"]["pass"] == 2
    assert d["fail.example"]["reject"] == 1 and d["fail.example"]["pass"] == 0
    assert [x["count"] for x in body["days"]] == [3]
    only = api(hk, "dmarc", domain="fail.example")
    assert only["total"] == 1
    old = api(hk, "dmarc", **{"from": 0, "to": 86400 * 3})  # 1970: nothing
    assert old["total"] == 0


def test_reload_and_queue_crash_keep_data(hikyaku, tmp_path):
    """A reload restarts the queue (its last batch is written at its
    stop); a killed queue loses at most what it had not flushed, and the
    new one goes on in the same store."""
    import signal as sig
    hk = start(hikyaku, tmp_path)
    send(hk, "a@localhost", ["b@localhost"])
    wait_api(hk, "series", lambda b: sum(h["delivered"] for h in b["hours"]) == 1)
    old = hk.child_pids("queue")
    hk.proc.send_signal(sig.SIGHUP)
    deadline = time.time() + 20
    while time.time() < deadline and hk.child_pids("queue") == old:
        time.sleep(0.1)
    assert hk.child_pids("queue") != old
    send(hk, "a@localhost", ["c@localhost"])
    wait_api(hk, "series", lambda b: sum(h["delivered"] for h in b["hours"]) == 2)
    # kill -9 the queue after its flush: the master starts another, which
    # answers from the same store.
    time.sleep(0.5)
    os.kill(hk.child_pids("queue")[0], sig.SIGKILL)
    time.sleep(0.5)
    wait_http(hk)
    body = wait_api(hk, "series", lambda b: sum(h["delivered"] for h in b["hours"]) == 2,
                    timeout=20)
    assert sum(h["accepted"] for h in body["hours"]) == 2


def test_cli(hikyaku, tmp_path):
    """`hikyaku queue analytics KIND [DOMAIN]`: the API's JSON over the
    control socket, the last 24 hours."""
    import subprocess
    hk = start(hikyaku, tmp_path)
    send(hk, "a@localhost", ["b@localhost"])
    wait_api(hk, "series", lambda b: sum(h["delivered"] for h in b["hours"]) == 1)
    bin_ = os.environ.get("HIKYAKU_BIN")
    p = subprocess.run([bin_, "queue", "-c", hk.config, "analytics", "domains", "localhost"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    body = json.loads(p.stdout)
    assert by_domain(body)["localhost"]["delivered"] == 1
    p = subprocess.run([bin_, "queue", "-c", hk.config, "analytics", "nosuch"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "unknown analytics kind" in p.stderr
    p = subprocess.run([bin_, "queue", "-c", hk.config, "analytics"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "analytics" in p.stderr
