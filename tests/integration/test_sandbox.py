"""The mail sandbox (issue 13): a sandbox listener captures every message
into sandbox.dir instead of delivering it, and the http process serves a
Mailpit-compatible API over the store. Checked here with real clients:
smtplib sends (with and without AUTH logins, which name the inboxes), the
API lists with Mailpit's field names, searches, downloads raw, headers
and parts, marks read, deletes; two inboxes are isolated by their tokens;
an SSE event arrives; a release reaches a local aiosmtpd sink; retention
removes the oldest; CSRF is refused; nothing leaves the host; a restart
keeps the captured mail; `hikyaku sandbox` runs without a configuration."""
import base64
import http.client
import json
import os
import smtplib
import socket
import subprocess
import threading
import time

import pytest

from conftest import free_port, hikyaku_bin, wait_event
from mta_helpers import ScriptedMTA


@pytest.fixture
def sink():
    m = ScriptedMTA().start()
    yield m
    m.stop()


def start(hikyaku, tmp_path, sink_port, sandbox=None, **kw):
    port = free_port()
    # relative: the daemon runs in its own temp directory (hk.tmp)
    sbx = {"enabled": True, "dir": "sbx", "anonymous_inbox": "default"}
    sbx.update(sandbox or {})
    hk = hikyaku(http={"listen": f"127.0.0.1:{port}"},
                 listener={"tls": "none", "plaintext_auth": True},
                 sandbox=sbx,
                 # a sink for every remote domain: what reaches it left the host
                 routes=[{"domain": d, "transport": "relay", "address": f"127.0.0.1:{sink_port}",
                          "tls": "none"} for d in ("remote.test", "sink.test")],
                 **kw)
    hk.http_port = port
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    return hk


def sbxdir(hk):
    import pathlib
    return pathlib.Path(hk.tmp) / "sbx"


def call(hk, method, path, body=None, token=None, headers=None, basic=None):
    c = http.client.HTTPConnection("127.0.0.1", hk.http_port, timeout=15)
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    if basic is not None:
        h["Authorization"] = "Basic " + base64.b64encode(basic.encode()).decode()
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    raw = r.read()
    c.close()
    ct = r.getheader("Content-Type", "")
    return r.status, (json.loads(raw) if ct.startswith("application/json") else raw), r


def send(hk, sender, rcpts, subject, body="hello", login=None, extra=""):
    msg = (f"From: Sender <{sender}>\r\nTo: {', '.join(rcpts)}\r\nSubject: {subject}\r\n"
           f"Message-ID: <{subject.replace(' ', '.')}@test>\r\n{extra}\r\n{body}\r\n")
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=10) as s:
        if login:
            s.login(login, "any password")
        s.sendmail(sender, rcpts, msg)


def wait_count(hk, n, token=None, timeout=10):
    deadline = time.time() + timeout
    while True:
        st, j, _ = call(hk, "GET", "/api/v1/messages", token=token)
        assert st == 200, j
        if j["total"] >= n or time.time() > deadline:
            return j
        time.sleep(0.1)


def tokens(hk, *names):
    out = subprocess.run([hikyaku_bin(), "sandbox", "inboxes", "-c", hk.config, *names],
                         capture_output=True, text=True, timeout=30, cwd=hk.tmp)
    assert out.returncode == 0, out.stderr
    res = {}
    for line in out.stdout.splitlines()[1:]:
        f = line.split()
        res[f[0]] = f[2]
    return res


def test_capture_list_and_nothing_leaves(hikyaku, tmp_path, sink):
    hk = start(hikyaku, tmp_path, sink.port)
    send(hk, "alice@example.com", ["bob@remote.test"], "First one", body="quick brown fox")
    j = wait_count(hk, 1)
    assert j["total"] == 1 and j["unread"] == 1 and j["count"] == 1
    assert j["messages_count"] == 1 and j["start"] == 0 and j["tags"] == []
    m = j["messages"][0]
    for k in ("ID", "MessageID", "Read", "From", "To", "Cc", "Bcc", "ReplyTo", "Subject",
              "Created", "Tags", "Size", "Attachments", "Snippet"):
        assert k in m, k
    assert m["From"] == {"Name": "Sender", "Address": "alice@example.com"}
    assert m["To"] == [{"Name": "", "Address": "bob@remote.test"}]
    assert m["Subject"] == "First one" and m["MessageID"] == "First.one@test"
    assert m["Read"] is False and "quick brown fox" in m["Snippet"]
    # the queue recorded a capture, never a delivery through the route
    wait_event(hk, "sandbox_captured", count=1)
    time.sleep(1)
    assert not any(s.txs for s in sink.sessions)
    assert "relay=sandbox" in hk.log() and "status=sent" in hk.log()
    # the file is on disk under its ID
    assert (sbxdir(hk) / "msg" / (m["ID"] + ".eml")).exists()


def test_search_raw_headers_read_delete_latest(hikyaku, tmp_path, sink):
    hk = start(hikyaku, tmp_path, sink.port)
    send(hk, "alice@example.com", ["bob@remote.test"], "Invoice 42", body="pay the amount")
    send(hk, "carol@example.org", ["dave@remote.test"], "Weekly report", body="numbers went up")
    send(hk, "erin@example.net", ["frank@remote.test"], "Lunch", body="pizza tomorrow")
    j = wait_count(hk, 3)
    ids = {m["Subject"]: m["ID"] for m in j["messages"]}
    assert [m["Subject"] for m in j["messages"]] == ["Lunch", "Weekly report", "Invoice 42"]

    def search(q):
        st, r, _ = call(hk, "GET", "/api/v1/search?query=" + q.replace(" ", "%20"))
        assert st == 200, r
        return sorted(m["Subject"] for m in r["messages"])

    assert search("from:carol@example.org") == ["Weekly report"]
    assert search("to:frank") == ["Lunch"]
    assert search("subject:invoice") == ["Invoice 42"]
    assert search("pizza") == ["Lunch"]
    assert search("-pizza") == ["Invoice 42", "Weekly report"]
    assert search('subject:"weekly report"') == ["Weekly report"]
    st, r, _ = call(hk, "GET", "/api/v1/search?query=from:nobody")
    assert st == 200 and r["messages"] == [] and r["messages_count"] == 0 and r["total"] == 3
    # paging
    st, r, _ = call(hk, "GET", "/api/v1/messages?start=1&limit=1")
    assert r["count"] == 1 and r["start"] == 1 and r["messages"][0]["Subject"] == "Weekly report"

    # raw, headers, the message, latest
    st, raw, resp = call(hk, "GET", f"/api/v1/message/{ids['Lunch']}/raw")
    assert st == 200 and b"pizza tomorrow" in raw and b"Subject: Lunch" in raw
    assert resp.getheader("X-Content-Type-Options") == "nosniff"
    st, hd, _ = call(hk, "GET", f"/api/v1/message/{ids['Lunch']}/headers")
    assert st == 200 and hd["Subject"] == ["Lunch"] and "Received" in hd
    st, latest, _ = call(hk, "GET", "/api/v1/message/latest")
    assert st == 200 and latest["ID"] == ids["Lunch"] and "pizza" in latest["Text"]
    assert latest["From"]["Address"] == "erin@example.net"
    st, _, _ = call(hk, "GET", "/api/v1/message/NoSuchId0000000")
    assert st == 404
    # reading it marked it read
    st, r, _ = call(hk, "GET", "/api/v1/search?query=is:read")
    assert [m["Subject"] for m in r["messages"]] == ["Lunch"]
    # the read flag, both ways
    st, _, _ = call(hk, "PUT", "/api/v1/messages", {"IDs": [ids["Invoice 42"]], "Read": True})
    assert st == 200
    assert search("is:unread") == ["Weekly report"]
    st, _, _ = call(hk, "PUT", "/api/v1/messages", {"IDs": [ids["Lunch"]], "Read": False})
    assert search("is:unread") == ["Lunch", "Weekly report"]
    # delete one, then by search, then all
    st, _, _ = call(hk, "DELETE", "/api/v1/messages", {"IDs": [ids["Invoice 42"]]})
    assert st == 200
    assert not (sbxdir(hk) / "msg" / (ids["Invoice 42"] + ".eml")).exists()
    st, _, _ = call(hk, "DELETE", "/api/v1/search?query=subject:lunch")
    assert st == 200
    st, r, _ = call(hk, "GET", "/api/v1/messages")
    assert [m["Subject"] for m in r["messages"]] == ["Weekly report"]
    st, _, _ = call(hk, "DELETE", "/api/v1/messages", {})
    st, r, _ = call(hk, "GET", "/api/v1/messages")
    assert r["total"] == 0 and r["messages"] == []


def test_parts_view_and_check(hikyaku, tmp_path, sink):
    hk = start(hikyaku, tmp_path, sink.port)
    mime = ("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n")
    body = ("--XX\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            "<p>Hi <img src=\"https://tracker.example/p.gif\"><script>alert(1)</script></p>\r\n"
            "--XX\r\nContent-Type: application/pdf\r\n"
            "Content-Disposition: attachment; filename=\"r\u00e9sum\u00e9.pdf\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n"
            + base64.b64encode(b"%PDF-1.4 fake").decode() + "\r\n--XX--")
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=10) as s:
        s.sendmail("a@example.com", ["b@remote.test"],
                   ("From: a@example.com\r\nTo: b@remote.test\r\nSubject: parts\r\n"
                    + mime + "\r\n" + body + "\r\n").encode("utf-8"))
    j = wait_count(hk, 1)
    mid = j["messages"][0]["ID"]
    st, m, _ = call(hk, "GET", f"/api/v1/message/{mid}")
    assert st == 200 and len(m["Attachments"]) == 1
    part = m["Attachments"][0]
    st, data, resp = call(hk, "GET", f"/api/v1/message/{mid}/part/{part['PartID']}")
    assert st == 200 and data == b"%PDF-1.4 fake"
    assert resp.getheader("Content-Type") == "application/pdf"
    assert "attachment" in resp.getheader("Content-Disposition")
    assert resp.getheader("X-Content-Type-Options") == "nosniff"
    # a part a browser would run or render is served as octets
    st, m2, _ = call(hk, "GET", f"/api/v1/message/{mid}/part/1")
    assert st == 200
    _, _, resp = call(hk, "GET", f"/api/v1/message/{mid}/part/1")
    assert resp.getheader("Content-Type") == "application/octet-stream", resp.getheaders()
    assert resp.getheader("Cross-Origin-Resource-Policy") == "same-origin"
    st, html, resp = call(hk, "GET", f"/view/{mid}.html")
    assert st == 200 and b"Hi" in html and b"tracker.example" not in html
    csp = resp.getheader("Content-Security-Policy")
    assert "default-src 'none'" in csp and "script-src" not in csp and "sandbox" in csp
    st, html, resp = call(hk, "GET", f"/view/{mid}.html?remote=1")
    assert "https:" in resp.getheader("Content-Security-Policy")
    st, chk, _ = call(hk, "GET", f"/api/v1/message/{mid}/check")
    assert st == 200 and "warnings" in chk and "links" in chk


def test_inboxes_isolated_by_token(hikyaku, tmp_path, sink):
    hk = start(hikyaku, tmp_path, sink.port, sandbox={"anonymous_inbox": ""})
    send(hk, "a@example.com", ["x@remote.test"], "for one", login="project1")
    send(hk, "a@example.com", ["y@remote.test"], "for two", login="project2")
    send(hk, "a@example.com", ["z@remote.test"], "for nobody")
    wait_event(hk, "sandbox_captured", count=3)
    t = tokens(hk, "project3")
    assert set(t) >= {"project1", "project2", "project3", "default"}
    for inbox, subj in (("project1", "for one"), ("project2", "for two"),
                        ("default", "for nobody")):
        j = wait_count(hk, 1, token=t[inbox])
        assert [m["Subject"] for m in j["messages"]] == [subj]
        assert j["total"] == 1
    st, j, _ = call(hk, "GET", "/api/v1/messages", token=t["project3"])
    assert st == 200 and j["total"] == 0
    # Basic inbox:token works, a wrong token or none does not
    st, j, _ = call(hk, "GET", "/api/v1/messages", basic="project1:" + t["project1"])
    assert st == 200 and j["total"] == 1
    bad = t["project1"][:-1] + ("1" if t["project1"][-1] == "0" else "0")
    st, _, _ = call(hk, "GET", "/api/v1/messages", token=bad)
    assert st == 401
    st, _, _ = call(hk, "GET", "/api/v1/messages", token="project2." + t["project1"].split(".")[1])
    assert st == 401
    st, _, _ = call(hk, "GET", "/api/v1/messages")
    assert st == 401
    # another inbox's message is not found, nor deleted
    st, j, _ = call(hk, "GET", "/api/v1/messages", token=t["project2"])
    other = j["messages"][0]["ID"]
    st, _, _ = call(hk, "GET", f"/api/v1/message/{other}/raw", token=t["project1"])
    assert st == 404
    call(hk, "DELETE", "/api/v1/messages", {"IDs": [other]}, token=t["project1"])
    st, j, _ = call(hk, "GET", "/api/v1/messages", token=t["project2"])
    assert j["total"] == 1


def test_csrf_refused(hikyaku, tmp_path, sink):
    hk = start(hikyaku, tmp_path, sink.port)
    send(hk, "a@example.com", ["x@remote.test"], "keep me")
    j = wait_count(hk, 1)
    mid = j["messages"][0]["ID"]
    host = {"Host": f"127.0.0.1:{hk.http_port}"}
    body = {"IDs": [mid]}
    st, _, _ = call(hk, "DELETE", "/api/v1/messages", body,
                    headers={**host, "Origin": "http://evil.example"})
    assert st == 403
    st, _, _ = call(hk, "DELETE", "/api/v1/messages", body,
                    headers={**host, "Sec-Fetch-Site": "cross-site"})
    assert st == 403
    st, _, _ = call(hk, "DELETE", "/api/v1/messages", body,
                    headers={**host, "Content-Type": "text/plain"})
    assert st == 415
    st, _, _ = call(hk, "DELETE", "/api/v1/search?query=keep",
                    headers={**host, "Origin": "http://evil.example"})
    assert st == 403
    assert wait_count(hk, 1)["total"] == 1
    # same origin passes
    st, _, _ = call(hk, "PUT", "/api/v1/messages", {"IDs": [mid], "Read": True},
                    headers={**host, "Origin": f"http://127.0.0.1:{hk.http_port}"})
    assert st == 200


def test_sse_event_arrives(hikyaku, tmp_path, sink):
    hk = start(hikyaku, tmp_path, sink.port)
    s = socket.create_connection(("127.0.0.1", hk.http_port), timeout=15)
    s.sendall(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(4096)
    assert got.startswith(b"HTTP/1.1 200") and b"text/event-stream" in got
    time.sleep(0.7)  # the stream learnt where the store is
    send(hk, "a@example.com", ["x@remote.test"], "live one")
    deadline = time.time() + 10
    while b"event: new" not in got and time.time() < deadline:
        got += s.recv(65536)
    s.close()
    assert b"event: new\ndata: {" in got
    data = got.split(b"event: new\ndata: ", 1)[1].split(b"\n", 1)[0]
    assert json.loads(data)["Subject"] == "live one"


def test_release_reaches_sink(hikyaku, tmp_path, sink):
    """Released through the normal path: the maildrop, smtpd's local
    submission (DKIM-signed for a domain with a key), the queue, the route."""
    key = str(tmp_path / "signer.key")
    r = subprocess.run([hikyaku_bin(), "dkim", "keygen", "--domain", "signer.test", "--selector",
                        "s1", "--type", "ed25519", "--out", key], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    hk = start(hikyaku, tmp_path, sink.port,
               dkim={"sign": [{"domain": "signer.test", "selector": "s1", "key": key,
                               "type": "ed25519"}]})
    send(hk, "a@signer.test", ["x@remote.test"], "to release", body="released body")
    j = wait_count(hk, 1)
    mid = j["messages"][0]["ID"]
    try:
        st, _, _ = call(hk, "POST", f"/api/v1/message/{mid}/release", {"To": ["real@sink.test"]})
    except OSError:
        time.sleep(1)
        raise AssertionError(hk.log())
    assert st == 200
    tx = sink.wait_messages(1, timeout=30)[0]
    assert tx.rcpts == ["real@sink.test"]
    assert b"released body" in tx.data and b"Subject: to release" in tx.data
    assert b"DKIM-Signature:" in tx.data and b"d=signer.test" in tx.data
    assert tx.mail_from == "a@signer.test"
    # To is required
    st, _, _ = call(hk, "POST", f"/api/v1/message/{mid}/release", {})
    assert st == 400


def test_retention_removes_oldest(hikyaku, tmp_path, sink):
    hk = start(hikyaku, tmp_path, sink.port, sandbox={"max_messages": 3})
    for i in range(5):
        send(hk, "a@example.com", ["x@remote.test"], f"msg {i}")
        wait_event(hk, "sandbox_captured", count=i + 1)
    st, j, _ = call(hk, "GET", "/api/v1/messages")
    assert [m["Subject"] for m in j["messages"]] == ["msg 4", "msg 3", "msg 2"]
    assert len(os.listdir(sbxdir(hk) / "msg")) == 3


def test_restart_keeps_mail(hikyaku, tmp_path, sink):
    hk = start(hikyaku, tmp_path, sink.port)
    send(hk, "a@example.com", ["x@remote.test"], "survivor")
    wait_count(hk, 1)
    hk.stop()
    hk.start()
    deadline = time.time() + 10
    while True:
        try:
            st, j, _ = call(hk, "GET", "/api/v1/messages")
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)
    assert st == 200 and [m["Subject"] for m in j["messages"]] == ["survivor"]


def test_sandbox_command_without_config():
    import pathlib
    import shutil
    import tempfile
    smtp, web = free_port(), free_port()
    # root drops the children to nobody: the directory must be reachable
    tmp_path = pathlib.Path(tempfile.mkdtemp(prefix="hk-sbx-"))
    os.chmod(tmp_path, 0o755)
    log = open(tmp_path / "log", "wb")
    p = subprocess.Popen([hikyaku_bin(), "sandbox", "--smtp", f"127.0.0.1:{smtp}",
                          "--http", f"127.0.0.1:{web}", "--dir", str(tmp_path / "var")],
                         stdout=log, stderr=log, cwd=tmp_path)
    try:
        deadline = time.time() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", smtp), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline and p.poll() is None, open(tmp_path / "log").read()
                time.sleep(0.1)
        with smtplib.SMTP("127.0.0.1", smtp, timeout=10) as s:
            s.login("ci-job", "x")
            s.sendmail("a@example.com", ["b@elsewhere.test"],
                       "From: a@example.com\r\nSubject: no config\r\n\r\nhi\r\n")
        with smtplib.SMTP("127.0.0.1", smtp, timeout=10) as s:
            s.sendmail("a@example.com", ["b@elsewhere.test"],
                       "From: a@example.com\r\nSubject: anonymous\r\n\r\nhi\r\n")

        class H:
            http_port = web
        deadline = time.time() + 10
        while True:
            st, j, _ = call(H, "GET", "/api/v1/messages")  # no credentials: "default"
            if j.get("total") == 1 or time.time() > deadline:
                break
            time.sleep(0.1)
        assert st == 200 and [m["Subject"] for m in j["messages"]] == ["anonymous"]
        out = subprocess.run([hikyaku_bin(), "sandbox", "inboxes", "--dir",
                              str(tmp_path / "var")], capture_output=True, text=True)
        tok = [ln.split()[2] for ln in out.stdout.splitlines() if ln.startswith("ci-job")][0]
        st, j, _ = call(H, "GET", "/api/v1/messages", token=tok)
        assert [m["Subject"] for m in j["messages"]] == ["no config"]
        st, page, _ = call(H, "GET", "/")
        assert st == 200
    finally:
        p.terminate()
        p.wait(30)
        log.close()
        shutil.rmtree(tmp_path, ignore_errors=True)


def test_per_listener_sandbox(hikyaku, tmp_path, sink):
    """listen[].sandbox on one listener only: its mail is captured (local
    recipients too), the other listener delivers as usual; the checks of
    the sandbox listener are logged, not enforced (relay denied)."""
    web, sbx_port = free_port(), free_port()
    hk = hikyaku(start=False, http={"listen": f"127.0.0.1:{web}"},
                 listener={"tls": "none"}, sandbox={"dir": "sbx", "anonymous_inbox": "default"})
    hk.http_port = web
    with open(hk.config) as f:
        text = f.read()
    assert "\nlisten: \n" in text
    text = text.replace("\nlisten: \n", f"\nlisten: \n  - address: 127.0.0.1:{sbx_port}\n"
                                        "    tls: none\n    sandbox: true\n", 1)
    with open(hk.config, "w") as f:
        f.write(text)
    hk.start()
    with smtplib.SMTP("127.0.0.1", sbx_port, timeout=10) as s:
        s.sendmail("a@example.com", ["alice@localhost", "far@remote.test"],
                   "From: a@example.com\r\nSubject: caught\r\n\r\nx\r\n")
    send(hk, "a@example.com", ["bob@localhost"], "delivered")
    hk.wait_delivered("bob", "localhost", 1)
    wait_event(hk, "sandbox_captured", count=1)
    st, j, _ = call(hk, "GET", "/api/v1/messages")
    assert st == 200 and [m["Subject"] for m in j["messages"]] == ["caught"]
    assert not hk.delivered("alice", "localhost")
    assert "event=sandbox_not_enforced" in hk.log() and "check=relay" in hk.log()
    # the normal listener still refuses to relay
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=10) as s:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            s.sendmail("a@example.com", ["far@remote.test"], "Subject: no\r\n\r\nx\r\n")


def test_japanese_charsets_decoded_in_the_confined_processes(hikyaku, tmp_path, sink):
    """A Subject in ISO-2022-JP (RFC 1468, the encoded-word most Japanese
    mail still uses) and a Shift_JIS text body: iconv loads a module for
    each from glibc's gconv directory, which the queue (list summary) and
    the http process (message view) may read under their Landlock rules."""
    hk = start(hikyaku, tmp_path, sink.port)
    subj = "\u98db\u811a\u306e\u30c6\u30b9\u30c8"          # 飛脚のテスト
    text = "\u3053\u3093\u306b\u3061\u306f\u3001\u4e16\u754c"  # こんにちは、世界
    enc_subj = "=?ISO-2022-JP?B?" + base64.b64encode(subj.encode("iso2022_jp")).decode() + "?="
    body = base64.b64encode(text.encode("shift_jis")).decode()
    msg = ("From: a@example.com\r\nTo: b@remote.test\r\nSubject: " + enc_subj + "\r\n"
           "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=Shift_JIS\r\n"
           "Content-Transfer-Encoding: base64\r\n\r\n" + body + "\r\n")
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=10) as s:
        s.sendmail("a@example.com", ["b@remote.test"], msg)
    j = wait_count(hk, 1)
    item = j["messages"][0]
    assert item["Subject"] == subj, item
    assert text in item["Snippet"], item
    st, m, _ = call(hk, "GET", f"/api/v1/message/{item['ID']}")
    assert st == 200 and m["Subject"] == subj and text in m["Text"], m


def test_spam_score_from_the_milter_shown_in_checks(hikyaku, tmp_path, sink):
    """With a content filter configured (a milter, as rspamd's proxy is),
    the sandbox keeps the header it adds and the checks carry its score."""
    import milter_server as ms
    m = ms.MilterServer(eob=[ms.addheader("X-Spamd-Result",
                                          "default: True [17.30 / 15.00];\n\tGTUBE(0.00)[]"),
                             ms.CONTINUE]).start()
    try:
        hk = start(hikyaku, tmp_path, sink.port,
                   milters=[{"name": "spam", "socket": m.socket, "failure": "accept",
                             "connect_timeout": "1s", "command_timeout": "2s",
                             "eob_timeout": "2s"}])
        send(hk, "alice@example.com", ["bob@remote.test"], "Scored")
        j = wait_count(hk, 1)
        mid = j["messages"][0]["ID"]
        st, chk, _ = call(hk, "GET", f"/api/v1/message/{mid}/check")
        assert st == 200, chk
        assert chk["spam"] == {"header": "X-Spamd-Result", "score": 17.3, "threshold": 15.0,
                               "isSpam": True}, chk
    finally:
        m.stop()


def test_anonymous_inbox_needs_a_loopback_host(hikyaku, tmp_path, sink):
    """A page that DNS-rebinds its own name to 127.0.0.1 reaches the API
    from loopback but names its own Host (and a matching Origin): no
    anonymous inbox for it; a token still works whatever the Host."""
    hk = start(hikyaku, tmp_path, sink.port)
    send(hk, "alice@example.com", ["bob@remote.test"], "Secret reset link")
    wait_count(hk, 1)
    port = hk.http_port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "127.0.0.1"):
        st, j, _ = call(hk, "GET", "/api/v1/messages", headers={"Host": host})
        assert st == 200 and j["total"] == 1, (host, st, j)
    for host in (f"rebind.evil.example:{port}", "evil.127.0.0.1.nip.example",
                 f"127.0.0.1.evil.example:{port}", f"127.0.0.1:{port}x", ""):
        st, j, _ = call(hk, "GET", "/api/v1/messages", headers={"Host": host})
        assert st == 401, (host, st, j)
        st, j, _ = call(hk, "POST", "/api/v1/message/latest/release",
                        body={"To": ["x@sink.test"]},
                        headers={"Host": host, "Origin": f"http://{host}"})
        assert st in (401, 403), (host, st, j)
    tok = tokens(hk, "default")["default"]
    st, j, _ = call(hk, "GET", "/api/v1/messages", token=tok,
                    headers={"Host": f"mail-sandbox.internal:{port}"})
    assert st == 200 and j["total"] == 1, (st, j)


def test_hostile_address_header_keeps_the_list_valid(hikyaku, tmp_path, sink):
    """A From name of 45 KB of '&' (six octets each in JSON) and 2000
    recipients in To, inside the 100 KiB header bound: the row stays valid
    JSON and the name is cut at 998 octets."""
    hk = start(hikyaku, tmp_path, sink.port)
    name = "&" * 900 + "".join("\r\n " + "&" * 900 for _ in range(49))
    to = ",\r\n ".join(f"r{i}@example.org" for i in range(2000))
    msg = (f'From: "{name}" <a@example.com>\r\nTo: {to}\r\nSubject: hostile\r\n\r\nx\r\n')
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=30) as s:
        s.sendmail("a@example.com", ["b@remote.test"], msg)
    j = wait_count(hk, 1)        # the list parsed as JSON
    m = j["messages"][0]
    assert m["From"]["Address"] == "a@example.com", m["From"]
    assert 0 < len(m["From"]["Name"]) <= 998
    assert len(m["From"]["Name"]) == 998, len(m["From"]["Name"])
    assert 0 < len(m["To"]) <= 2000 and m["To"][0]["Address"] == "r0@example.org"
    st, full, _ = call(hk, "GET", f"/api/v1/message/{m['ID']}")
    assert st == 200 and full["Subject"] == "hostile"


def test_login_that_names_no_inbox_is_refused(hikyaku, tmp_path, sink):
    """sandbox.auth any takes every login that can name an inbox; one with
    a space or a control (no token could ever open its inbox) gets 535."""
    hk = start(hikyaku, tmp_path, sink.port)
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=10) as s:
        s.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login("two words", "pw")
        assert e.value.smtp_code == 535
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=10) as s:
        s.login("ci-job-7", "pw")
