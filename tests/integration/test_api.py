"""The HTTP JSON API (issue 12): the bearer token (401 without it or with a
wrong one), each queue operation (the same control protocol and JSON as
`hikyaku queue --json`), the search, and docs/openapi.yaml checked against
the server: every documented path and method exists and the answers have
the documented fields."""
import http.client
import json
import os
import re
import signal
import smtplib
import socket
import subprocess
import time

import pytest
import yaml

from conftest import free_port, hikyaku_bin, wait_event

TOKEN = "s3cret-token-for-tests-0123456789"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPENAPI = os.path.join(ROOT, "docs", "openapi.yaml")


def start(hikyaku, tmp_path, **kw):
    port = free_port()
    tf = tmp_path / "token"
    tf.write_text(TOKEN + "\n")
    os.chmod(tf, 0o600)  # root's only: the http process reads it before dropping
    # Held mail stays put: nothing is delivered (DNS goes nowhere).
    hk = hikyaku(http={"listen": f"127.0.0.1:{port}", "token_file": str(tf)},
                 relay={"trusted_networks": ["127.0.0.0/8"]},
                 queue={"retry_min": "1h", "retry_max": "1h"}, **kw)
    hk.http_port = port
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    return hk


def call(hk, method, path, token=TOKEN):
    c = http.client.HTTPConnection("127.0.0.1", hk.http_port, timeout=15)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    c.request(method, path, headers=headers)
    r = c.getresponse()
    body = r.read()
    c.close()
    ct = r.getheader("Content-Type", "")
    return r.status, (json.loads(body) if ct.startswith("application/json") else body), r


def queue_mail(hk, sender, rcpts):
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=10) as s:
        s.sendmail(sender, rcpts, "Subject: api\r\n\r\nbody\r\n")
    ev = wait_event(hk, "accept", count=1, **{"from": f"<{sender}>"})
    return ev[-1]["qid"]


def wait_deferred(hk, qid):
    wait_event(hk, "delivery", qid=qid, timeout=15)


@pytest.mark.parametrize("token", [None, "wrong-token-0000000000000000000", TOKEN + "x", ""])
def test_token_required(hikyaku, tmp_path, token):
    hk = start(hikyaku, tmp_path)
    st, body, r = call(hk, "GET", "/api/v1/queue", token=token)
    assert st == 401, body
    assert r.getheader("WWW-Authenticate", "").startswith("Bearer")
    assert "error" in body
    # /metrics needs none.
    st, _, _ = call(hk, "GET", "/metrics", token=None)
    assert st == 200


def test_api_off_without_token_file(hikyaku):
    port = free_port()
    hk = hikyaku(http={"listen": f"127.0.0.1:{port}"})
    hk.http_port = port
    time.sleep(0.5)
    st, body, _ = call(hk, "GET", "/api/v1/queue")
    assert st == 404 and "token_file" in body["error"]


def test_unreadable_token_file_refuses_start(tmp_path):
    import subprocess as sp
    port = free_port()
    conf = tmp_path / "c.yaml"
    conf.write_text(f"listen: [\"127.0.0.1:{free_port()}\"]\nspool_dir: {tmp_path}/spool\n"
                    f"maildir_root: {tmp_path}/mail\ntls: {{self_signed_dir: {tmp_path}/tls}}\n"
                    f"user: nobody\nhttp: {{listen: \"127.0.0.1:{port}\", "
                    f"token_file: {tmp_path}/missing}}\n")
    os.chmod(tmp_path, 0o755)
    p = sp.run([hikyaku_bin(), "serve", "-c", str(conf)], capture_output=True, timeout=30)
    assert p.returncode != 0 and b"http.token_file" in p.stderr, p.stderr


def test_reload_reads_a_new_token(hikyaku, tmp_path):
    hk = start(hikyaku, tmp_path)
    assert call(hk, "GET", "/api/v1/queue")[0] == 200
    new = "another-token-after-reload-42"
    (tmp_path / "token").write_text(new + "\n")
    hk.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            if call(hk, "GET", "/api/v1/queue", token=new)[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.1)
    while time.time() < deadline and len(hk.child_pids("http")) != 1:
        time.sleep(0.05)  # the old one has gone (it shared the listener)
    assert len(hk.child_pids("http")) == 1
    assert call(hk, "GET", "/api/v1/queue", token=new)[0] == 200
    assert call(hk, "GET", "/api/v1/queue")[0] == 401


def test_api_survives_queue_restart(hikyaku, tmp_path):
    hk = start(hikyaku, tmp_path)
    assert call(hk, "GET", "/api/v1/queue")[0] == 200
    old = hk.child_pids("queue")
    os.kill(old[0], signal.SIGKILL)
    deadline = time.time() + 15
    st = None
    while time.time() < deadline:
        new = hk.child_pids("queue")
        if new and new != old:
            st = call(hk, "GET", "/api/v1/queue")[0]
            if st == 200:
                break
        time.sleep(0.1)
    assert st == 200


def test_queue_operations(hikyaku, tmp_path):
    hk = start(hikyaku, tmp_path)
    q1 = queue_mail(hk, "one@example.net", ["x@remote.example"])
    q2 = queue_mail(hk, "two@example.net", ["y@other.example", "z@other.example"])
    wait_deferred(hk, q1)
    wait_deferred(hk, q2)

    st, items, _ = call(hk, "GET", "/api/v1/queue")
    assert st == 200
    assert sorted(i["qid"] for i in items) == sorted([q1, q2])
    # The same JSON as the CLI's.
    cli = json.loads(subprocess.run([hikyaku_bin(), "queue", "-c", hk.config, "--json", "list"],
                                    capture_output=True, check=True).stdout)
    stable = ("qid", "arrival_us", "size", "sender", "recipients_total", "recipients")
    assert (sorted([{k: i[k] for k in stable} for i in cli], key=lambda i: i["qid"])
            == sorted([{k: i[k] for k in stable} for i in items], key=lambda i: i["qid"]))
    assert sorted(cli[0]) == sorted(items[0])  # the same fields

    st, one, _ = call(hk, "GET", f"/api/v1/queue/{q2}")
    assert st == 200 and one["qid"] == q2 and one["sender"] == "two@example.net"
    assert [r["address"] for r in one["recipients"]] == ["y@other.example", "z@other.example"]
    assert "Subject: api" in one["headers"]

    st, r, _ = call(hk, "POST", f"/api/v1/queue/{q1}/hold")
    assert st == 200 and r["ok"] is True
    st, one, _ = call(hk, "GET", f"/api/v1/queue/{q1}")
    assert one["held"] is True and one["state"] == "held"
    st, r, _ = call(hk, "POST", f"/api/v1/queue/{q1}/release")
    assert st == 200 and r["ok"] is True
    st, one, _ = call(hk, "GET", f"/api/v1/queue/{q1}")
    assert one["held"] is False

    st, r, _ = call(hk, "POST", f"/api/v1/queue/{q1}/flush")
    assert st == 200 and r["ok"] is True
    st, r, _ = call(hk, "POST", "/api/v1/queue/flush?domain=other.example")
    assert st == 200 and r["count"] == 1
    st, r, _ = call(hk, "POST", "/api/v1/queue/flush")
    assert st == 200 and r["ok"] is True

    st, r, _ = call(hk, "DELETE", f"/api/v1/queue/{q2}")
    assert st == 200 and r["ok"] is True
    deadline = time.time() + 10
    while time.time() < deadline:
        st, items, _ = call(hk, "GET", "/api/v1/queue")
        if [i["qid"] for i in items] == [q1]:
            break
        time.sleep(0.1)
    assert [i["qid"] for i in items] == [q1]

    st, r, _ = call(hk, "GET", f"/api/v1/queue/{q2}")
    assert st == 404, r
    st, r, _ = call(hk, "GET", "/api/v1/queue/not-a-qid")
    assert st == 404
    st, r, _ = call(hk, "PUT", f"/api/v1/queue/{q1}")
    assert st == 405


def test_search(hikyaku, tmp_path):
    hk = start(hikyaku, tmp_path)
    q1 = queue_mail(hk, "alice@example.net", ["bob@remote.example"])
    q2 = queue_mail(hk, "carol@example.net", ["dave@other.example"])
    wait_deferred(hk, q1)
    wait_deferred(hk, q2)

    def search(query):
        st, items, _ = call(hk, "GET", "/api/v1/messages?" + query)
        assert st == 200
        return sorted(i["qid"] for i in items)

    assert search("sender=alice%40example.net") == [q1]
    assert search("sender=CAROL") == [q2]           # case folded, substring
    assert search("recipient=other.example") == [q2]
    assert search(f"qid={q1}") == [q1]
    assert search("sender=nobody") == []
    assert search("") == sorted([q1, q2])
    st, _, _ = call(hk, "GET", "/api/v1/messages?sender=%zz")
    assert st == 400


def test_domain_stats(hikyaku, tmp_path):
    hk = start(hikyaku, tmp_path)
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=10) as s:
        for _ in range(2):
            s.sendmail("s@example.net", ["alice@localhost", "bob@localhost"], "Subject: x\r\n\r\n.\r\n")
    q = queue_mail(hk, "d@example.net", ["x@remote.example"])
    hk.wait_delivered("bob", count=2)
    wait_deferred(hk, q)
    deadline = time.time() + 10
    while time.time() < deadline:
        st, rows, _ = call(hk, "GET", "/api/v1/stats/domains")
        assert st == 200
        by = {r["domain"]: r for r in rows}
        if by.get("localhost", {}).get("sent") == 4:
            break
        time.sleep(0.1)
    assert by["localhost"]["sent"] == 4 and by["localhost"]["deferred"] == 0
    assert by["localhost"]["median_delay_seconds"] is not None
    assert by["remote.example"]["deferred"] == 1 and by["remote.example"]["sent"] == 0
    assert by["remote.example"]["median_delay_seconds"] is None
    assert rows[0]["domain"] == "localhost"  # the busiest first
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:00:00Z", rows[0]["hour"])
    # The CLI shows the same.
    out = subprocess.run([hikyaku_bin(), "queue", "-c", hk.config, "stats"],
                         capture_output=True, check=True).stdout.decode()
    assert re.search(r"\s4\s+0\s+0\s+[\d.]+s  localhost$", out, re.M), out


def _resolve(doc, obj):
    while "$ref" in obj:
        node = doc
        for part in obj["$ref"].lstrip("#/").split("/"):
            node = node[part]
        obj = node
    return obj


def _check_schema(doc, schema, value, where):
    schema = _resolve(doc, schema)
    for sub in schema.get("allOf", []):
        _check_schema(doc, sub, value, where)
    t = schema.get("type")
    if t == "array":
        assert isinstance(value, list), where
        for i, v in enumerate(value):
            _check_schema(doc, schema["items"], v, f"{where}[{i}]")
    elif t == "object":
        assert isinstance(value, dict), where
        for k in schema.get("required", []):
            assert k in value, f"{where}: missing {k}"
        for k, sub in schema.get("properties", {}).items():
            if k in value and value[k] is not None:
                _check_schema(doc, sub, value[k], f"{where}.{k}")
    elif t == "string":
        assert isinstance(value, str), where
    elif t == "number":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), where
    elif t == "integer":
        assert isinstance(value, int) and not isinstance(value, bool), where
    elif t == "boolean":
        assert isinstance(value, bool), where


def test_openapi_document_matches_server(hikyaku, tmp_path):
    with open(OPENAPI) as f:
        doc = yaml.safe_load(f)
    assert doc["openapi"].startswith("3.")
    hk = start(hikyaku, tmp_path)
    qid = queue_mail(hk, "oa@example.net", ["r@remote.example"])
    wait_deferred(hk, qid)
    seen = 0
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if method not in ("get", "post", "delete"):
                continue
            real = path.replace("{qid}", qid)
            if method == "delete":
                continue  # checked last, it removes the message
            st, body, r = call(hk, method.upper(), real)
            resp = op["responses"].get(str(st))
            assert resp is not None, f"{method} {path}: undocumented status {st}"
            assert st == 200, (method, path, body)
            content = _resolve(doc, resp)["content"]
            ct = r.getheader("Content-Type").split(";")[0]
            assert ct in content, (path, ct)
            if ct == "application/json":
                _check_schema(doc, content[ct]["schema"], body, f"{method} {path}")
            seen += 1
            # Without a token: 401 where security is required.
            if op.get("security", doc.get("security")) not in (None, []):
                st, body, _ = call(hk, method.upper(), real, token=None)
                assert st == 401 and "401" in op["responses"], path
    st, body, _ = call(hk, "DELETE", f"/api/v1/queue/{qid}")
    assert st == 200
    resp = _resolve(doc, doc["paths"]["/api/v1/queue/{qid}"]["delete"]["responses"]["200"])
    _check_schema(doc, resp["content"]["application/json"]["schema"], body, "delete")
    assert seen >= 7
