"""Logs (issue 12): the delivery line carries what Postfix's does (to,
relay, delay, delays=a/b/c/d, tls, dsn, status), and log.format: json
writes every line as one JSON object with the same keys."""
import json
import os
import re
import smtplib
import time

from conftest import wait_event


def send(hk, rcpts, body="Subject: t\r\n\r\nhello\r\n"):
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=10) as s:
        s.sendmail("sender@example.net", rcpts, body)


def wait_json(hk, event, count=1, timeout=10):
    """Every log line as a JSON object, once count lines of event are
    there (or the timeout passed)."""
    deadline = time.time() + timeout
    while True:
        objs = [json.loads(ln) for ln in hk.log().splitlines() if ln.strip()]
        if (sum(o.get("event") == event for o in objs) >= count
                or time.time() > deadline):
            return objs
        time.sleep(0.05)


def check_delays(value, delay):
    parts = value.split("/")
    assert len(parts) == 4, value
    nums = [float(p) for p in parts]
    assert all(n >= 0 for n in nums)
    # The parts are pieces of the whole delay (rounding aside).
    assert sum(nums) <= float(delay) + 0.01, (value, delay)


def test_delivery_line_key_value(hikyaku):
    hk = hikyaku()
    send(hk, ["alice@localhost"])
    ev = wait_event(hk, "delivery", status="sent")
    assert ev, hk.log()[-2000:]
    d = ev[0]
    assert d["to"] == "alice@localhost"
    assert d["from"] == "sender@example.net"
    assert d["relay"] == "maildir"
    assert d["dsn"] == "2.0.0"
    assert d["tls"] == "-"
    assert re.fullmatch(r"\d+\.\d{3}", d["delay"])
    check_delays(d["delays"], d["delay"])
    assert d["qid"]


def test_json_lines(hikyaku):
    hk = hikyaku(log={"format": "json"})
    send(hk, ["alice@localhost", "bob@localhost"])
    objs = wait_json(hk, "delivery", count=2)
    dl = [o for o in objs if o.get("event") == "delivery"]
    # Every line is one JSON object (json.loads above would have raised).
    for o in objs:
        assert {"ts", "level", "proc"} <= set(o), o
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", o["ts"])
    assert sorted(o["to"] for o in dl) == ["alice@localhost", "bob@localhost"]
    for o in dl:
        assert o["level"] == "info"
        assert o["proc"].startswith("hikyaku/queue[")
        assert o["status"] == "sent" and o["dsn"] == "2.0.0" and o["relay"] == "maildir"
        check_delays(o["delays"], o["delay"])
    acc = [o for o in objs if o.get("event") == "accept"]
    assert acc and acc[0]["from"] == "<sender@example.net>"
    # Quoted values come out unquoted and unescaped.
    conn = [o for o in objs if o.get("event") == "connect"]
    assert conn and conn[0]["client"] == "127.0.0.1"


def test_json_escapes_hostile_values(hikyaku):
    hk = hikyaku(log={"format": "json"})
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=10) as s:
        s.ehlo()
        s.mail('"we\\"ird\\\\ x"@example.net')
        s.rcpt("nobody@elsewhere.example")  # refused: logged with from=
    objs = wait_json(hk, "reject")
    rej = [o for o in objs if o.get("event") == "reject"]
    assert rej and rej[0]["from"] == '"we\\"ird\\\\ x"@example.net', rej


def test_syslog_target(hikyaku, tmp_path):
    import socket
    path = str(tmp_path / "log.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    os.chmod(path, 0o666)
    os.chmod(tmp_path, 0o755)
    srv.settimeout(0.2)
    got, stop = [], []

    def reader():  # a syslog daemon reads all the time (the queue holds 10)
        while not stop:
            try:
                got.append(srv.recv(65536).decode())
            except socket.timeout:
                pass

    import threading
    th = threading.Thread(target=reader, daemon=True)
    th.start()
    hk = hikyaku(log={"target": "syslog", "syslog_socket": path})
    try:
        send(hk, ["alice@localhost"])
        hk.wait_delivered("alice")
        deadline = time.time() + 10
        while time.time() < deadline and not any("event=delivery" in g for g in got):
            time.sleep(0.05)
    finally:
        time.sleep(0.3)
        stop.append(1)
        th.join()
        srv.close()
    # One line a datagram, no newline, facility mail: <22> info, <20> warn.
    assert got and all(re.match(r"<(1[6-9]|2[0-3])>hikyaku/", g) for g in got), got[:3]
    assert not any("\n" in g for g in got)
    dl = [g for g in got if "event=delivery" in g]
    assert dl and re.match(r"<22>hikyaku/queue\[\d+\]: event=delivery .*to=alice@localhost"
                           r".* status=sent", dl[0]), dl
    assert any(g.startswith("<22>hikyaku/master: ") for g in got)
    assert any(g.startswith("<22>hikyaku/http[") or g.startswith("<22>hikyaku/smtpd[")
               for g in got)
    # Nothing went to stderr but what came before the socket (none here).
    assert "event=" not in hk.log()
