"""Prometheus /metrics on the http process (issue 12): the values move by
the right amounts after real traffic (smtplib), the exposition parses, the
http process is sandboxed like the others, and the HTTP parser's bounds
answer hostile requests with their status codes."""
import http.client
import os
import re
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from conftest import free_port, hikyaku_bin, tls_client_context, wait_event

ALICE = "alice@example.org"
PW = "correct horse battery staple"

_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text):
    """{(name, frozenset(labels.items())): value}; checks the format as it
    goes (every sample's family has TYPE and HELP before it)."""
    samples, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram"), line
            typed.add(name)
            continue
        if line.startswith("#") or not line:
            continue
        m = _SAMPLE_RE.match(line)
        assert m, f"not an exposition line: {line!r}"
        name, labels = m.group(1), dict(_LABEL_RE.findall(m.group(3) or ""))
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or family in typed, f"no TYPE for {name}"
        samples[(name, frozenset(labels.items()))] = float(m.group(4))
    return samples


def scrape(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/metrics")
    r = c.getresponse()
    body = r.read().decode()
    assert r.status == 200, body
    assert r.getheader("Content-Type").startswith("text/plain; version=0.0.4")
    c.close()
    return parse_exposition(body)


def val(s, name, **labels):
    return s.get((name, frozenset(labels.items())), 0.0)


def start(hikyaku, **kw):
    port = free_port()
    hk = hikyaku(http={"listen": f"127.0.0.1:{port}"}, **kw)
    hk.http_port = port
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    return hk


def send(hk, rcpts, n=1):
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=10) as s:
        for i in range(n):
            s.sendmail("sender@example.net", rcpts, f"Subject: m{i}\r\n\r\nbody\r\n")


def test_counters_move_by_the_traffic(hikyaku):
    hk = start(hikyaku)
    listener = f"127.0.0.1:{hk.port}"
    before = scrape(hk.http_port)
    send(hk, ["alice@localhost"], n=3)
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=10) as s:
        s.ehlo()
        code, _ = s.rcpt("x@elsewhere.example") if s.mail("a@example.net")[0] == 250 else (0, 0)
        assert code == 554  # relay denied: class policy
    hk.wait_delivered("alice", count=3)
    wait_event(hk, "delivery", count=3, status="sent")
    time.sleep(1.2)  # the queue's gauges are set each second
    after = scrape(hk.http_port)

    def d(name, **labels):
        return val(after, name, **labels) - val(before, name, **labels)

    assert d("hikyaku_smtp_connections_total", listener=listener, result="accepted") == 2
    assert d("hikyaku_messages_accepted_total") == 3
    assert d("hikyaku_messages_rejected_total", **{"class": "policy"}) == 1
    assert d("hikyaku_deliveries_total", transport="local", status="sent") == 3
    assert d("hikyaku_accept_latency_seconds_count") == 3
    assert d("hikyaku_accept_latency_seconds_bucket", le="+Inf") == 3
    assert d("hikyaku_delivery_latency_seconds_count") == 3
    assert val(after, "hikyaku_accept_latency_seconds_sum") > 0
    # Buckets are cumulative: never decreasing with le.
    buckets = sorted(((float(dict(k[1])["le"]), v) for k, v in after.items()
                      if k[0] == "hikyaku_accept_latency_seconds_bucket"))
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))
    assert val(after, "hikyaku_queue_messages", state="active") == 0
    assert val(after, "hikyaku_queue_oldest_message_age_seconds") == 0


def test_tls_version_and_auth_failure_counted(hikyaku):
    hk = start(hikyaku, users_secrets={ALICE: ("CRYPT", PW)})
    before = scrape(hk.http_port)
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=10) as s:
        s.starttls(context=tls_client_context(maximum_version=ssl.TLSVersion.TLSv1_2))
        s.ehlo()
        s.user, s.password = ALICE, "wrong password"
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.auth("PLAIN", s.auth_plain)  # one exchange (login() tries several)
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=10) as s:
        s.starttls(context=tls_client_context())
        s.ehlo()
        s.login(ALICE, PW)
    after = scrape(hk.http_port)

    def d(name, **labels):
        return val(after, name, **labels) - val(before, name, **labels)

    assert d("hikyaku_tls_sessions_total", version="TLSv1.2") == 1
    assert d("hikyaku_tls_sessions_total", version="TLSv1.3") == 1
    assert d("hikyaku_auth_total", result="failure") == 1
    assert d("hikyaku_auth_total", result="success") == 1


def test_deferred_delivery_and_queue_gauges(hikyaku):
    # DNS goes nowhere (conftest): a remote recipient is deferred.
    hk = start(hikyaku, relay={"trusted_networks": ["127.0.0.0/8"]})
    send(hk, ["bob@remote.example"], n=1)
    wait_event(hk, "delivery", count=1, status="deferred", timeout=15)
    time.sleep(1.2)
    s = scrape(hk.http_port)
    assert val(s, "hikyaku_deliveries_total", transport="smtp", status="deferred") >= 1
    assert val(s, "hikyaku_dns_lookups_total") >= 1
    assert val(s, "hikyaku_dns_errors_total") >= 1
    assert (val(s, "hikyaku_queue_messages", state="deferred")
            + val(s, "hikyaku_queue_messages", state="active")) == 1
    assert val(s, "hikyaku_queue_oldest_message_age_seconds") > 0


def test_http_process_is_sandboxed_and_restarted(hikyaku):
    hk = start(hikyaku)
    pids = hk.child_pids("http")
    assert len(pids) == 1
    with open(f"/proc/{pids[0]}/status") as f:
        st = f.read()
    assert re.search(r"^NoNewPrivs:\s+1$", st, re.M)
    assert re.search(r"^Seccomp:\s+2$", st, re.M)
    if os.geteuid() == 0:
        assert not re.search(r"^Uid:\s+0\s", st, re.M)
    # What http could open after its start: nothing.
    out = subprocess.run([hikyaku_bin(), "__probe", "http", "-c",
                          hk.config, "/etc/passwd", hk.config], capture_output=True,
                         timeout=30).stdout.decode()
    assert "/etc/passwd: refused" in out and f"{hk.config}: refused" in out, out
    os.kill(pids[0], 9)
    wait_event(hk, "spawn", count=2, role="http", timeout=10)
    deadline = time.time() + 10
    while True:
        try:
            scrape(hk.http_port)
            break
        except OSError:
            assert time.time() < deadline
            time.sleep(0.1)


def raw_http(port, data, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except (socket.timeout, ConnectionResetError):
        pass
    s.close()
    return out


@pytest.mark.parametrize("req,status", [
    (b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", 413),
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET /metrics HTTP/1.1\r\n" + b"X-A: b\r\n" * 40 + b"\r\n", 431),
    (b"GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    (b"GET /metrics HTTP/2.0\r\n\r\n", 505),
    (b"GET /metrics HTTP/1.1\nHost: x\n\n", 400),
    (b"GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    (b"POST /metrics HTTP/1.1\r\n\r\n", 405),
    (b"GET /nothing HTTP/1.1\r\n\r\n", 404),
])
def test_hostile_requests(hikyaku, req, status):
    hk = start(hikyaku)
    out = raw_http(hk.http_port, req)
    assert out.startswith(b"HTTP/1.1 %d " % status), out[:200]
    # The server is still there.
    scrape(hk.http_port)


def test_keep_alive_and_pipelined_requests(hikyaku):
    hk = start(hikyaku)
    out = raw_http(hk.http_port, b"GET /metrics HTTP/1.1\r\n\r\n"
                   b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert out.count(b"HTTP/1.1 200 OK") == 2
