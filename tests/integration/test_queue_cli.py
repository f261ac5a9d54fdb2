"""Queue control: `hikyaku queue list|show|flush|delete|hold|release`, its
--json output and `mailq` (issue 4), against the real daemon over its
control socket <spool>/control.sock.

Messages are kept in the queue by blocking local delivery: a regular FILE
where the Maildir code must create a domain directory (as in
test_durability.py); tests run as root, so permissions would not stop it.
"""
import email
import json
import os
import smtplib
import socket
import stat
import struct
import subprocess
import time
import uuid

from conftest import hikyaku_bin, wait_event

# A long retry schedule: nothing is retried by itself during a test, so only
# a flush (or a release) can make a message go.
SLOW = {"queue": {"retry_min": "1h", "retry_max": "1h"}}


def block_domain(hk, domain="localhost"):
    os.makedirs(hk.mailroot, exist_ok=True)
    with open(os.path.join(hk.mailroot, domain), "w") as f:
        f.write("not a directory\n")


def unblock_domain(hk, domain="localhost"):
    os.unlink(os.path.join(hk.mailroot, domain))


def queue(hk, *args, check=True, binary=None, config=True):
    cmd = [binary or hikyaku_bin()]
    if binary is None:
        cmd.append("queue")
    if config:
        cmd += ["-c", hk.config]
    r = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=30)
    if check:
        assert r.returncode == 0, f"{args}: rc={r.returncode} {r.stderr}\n{hk.log()[-3000:]}"
    return r


def queue_json(hk, *args):
    return json.loads(queue(hk, "--json", *args).stdout)


def send(hk, rcpts, token=None, sender="bob@example.net"):
    """One message; returns (qid, token)."""
    token = token or uuid.uuid4().hex
    msg = (f"Subject: queue {token}\r\nMessage-ID: <{token}@test.example>\r\n\r\n"
           f"body {token}\r\n").encode()
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=10) as s:
        s.ehlo("client.example")
        s.mail(sender)
        for r in rcpts:
            code, _ = s.rcpt(r)
            assert code == 250
        code, reply = s.data(msg)
        assert code == 250
    return reply.decode().split()[-1], token


def wait_deferred(hk, qids, timeout=10):
    for qid in qids:
        got = wait_event(hk, "deferred", timeout=timeout, qid=qid)
        assert got, f"{qid} not deferred\n{hk.log()[-3000:]}"


def wait_state(hk, qid, state, timeout=10):
    deadline = time.time() + timeout
    while True:
        items = {m["qid"]: m for m in queue_json(hk, "list")}
        if qid in items and items[qid]["state"] == state:
            return items[qid]
        if time.time() > deadline:
            raise AssertionError(f"{qid} not {state}: {items.get(qid)}\n{hk.log()[-3000:]}")
        time.sleep(0.05)


def tokens_delivered(hk, user, domain="localhost"):
    out = set()
    for p in hk.delivered(user, domain):
        with open(p, "rb") as f:
            for line in f.read().split(b"\n"):
                if line.startswith(b"Subject: queue "):
                    out.add(line.split()[-1].decode())
    return out


def in_spool(hk, qid):
    return any(n.startswith(qid) for n in hk.queue_files())


def test_list_human_and_json(hikyaku):
    hk = hikyaku(**SLOW)
    block_domain(hk)
    q1, _ = send(hk, ["alice@localhost", "carol@localhost"])
    q2, _ = send(hk, ["dave@localhost"], sender="")
    wait_deferred(hk, [q1, q2])

    out = queue(hk, "list").stdout
    assert q1 in out and q2 in out
    assert "alice@localhost" in out and "carol@localhost" in out and "dave@localhost" in out
    assert "deferred, next try" in out
    assert "last error:" in out and "Not a directory" in out
    assert "from <bob@example.net>" in out and "from <>" in out
    assert out.rstrip().endswith("-- 2 messages, 3 recipients pending")

    items = queue_json(hk, "list")
    assert isinstance(items, list)
    byqid = {m["qid"]: m for m in items}
    assert set(byqid) == {q1, q2}
    m = byqid[q1]
    assert m["state"] == "deferred" and m["held"] is False
    assert m["sender"] == "bob@example.net"
    assert m["size"] > 0 and m["attempts"] == 1
    assert m["recipients_total"] == 2 and m["recipients_pending"] == 2
    assert [r["address"] for r in m["recipients"]] == ["alice@localhost", "carol@localhost"]
    assert all(r["done"] is False for r in m["recipients"])
    assert "Not a directory" in m["last_error"]
    assert m["arrival"].endswith("Z") and m["arrival_us"] > 0
    # next try is about an hour away (retry_min: 1h)
    assert m["next_try_us"] / 1e6 - time.time() > 3000
    assert byqid[q2]["sender"] == ""


def test_empty_queue(hikyaku):
    hk = hikyaku()
    assert queue(hk, "list").stdout == "Mail queue is empty\n"
    assert queue_json(hk, "list") == []


def test_show(hikyaku):
    hk = hikyaku(**SLOW)
    block_domain(hk)
    qid, token = send(hk, ["alice@localhost"])
    wait_deferred(hk, [qid])
    out = queue(hk, "show", qid).stdout
    assert f"Queue ID:    {qid}" in out
    assert "Sender:      <bob@example.net>" in out
    assert "pending  alice@localhost" in out
    assert f"Subject: queue {token}" in out
    assert f"body {token}" not in out  # header section only
    assert "EHLO client.example" in out

    m = queue_json(hk, "show", qid)
    assert isinstance(m, dict)
    assert m["qid"] == qid and m["state"] == "deferred"
    assert m["client_addr"] == "127.0.0.1" and m["helo"] == "client.example"
    assert m["recipients"] == [{"address": "alice@localhost", "done": False, "notify": None,
                                "orcpt": None}]
    assert f"Subject: queue {token}\r\n" in m["headers"]
    assert m["headers"].startswith("Received: ")
    assert f"body {token}" not in m["headers"]


def test_hold_then_flush_delivers_only_the_others_and_release(hikyaku):
    hk = hikyaku(**SLOW)
    block_domain(hk)
    sent = [send(hk, ["alice@localhost"]) for _ in range(3)]
    qids = [q for q, _ in sent]
    wait_deferred(hk, qids)
    held_qid, held_token = sent[0]

    r = queue(hk, "hold", held_qid)
    assert r.stdout.strip() == f"{held_qid}: held"
    assert wait_event(hk, "held", qid=held_qid)
    m = wait_state(hk, held_qid, "held")
    assert m["held"] is True and m["next_try"] is None
    assert "held" in queue(hk, "list").stdout
    # holding twice is harmless
    assert "already held" in queue(hk, "hold", held_qid).stdout
    # a held message is not flushed by qid
    r = queue(hk, "flush", held_qid, check=False)
    assert r.returncode == 1 and "held" in r.stderr

    unblock_domain(hk)
    out = queue(hk, "flush").stdout
    assert "2 messages flushed" in out
    hk.wait_delivered("alice", count=2)
    time.sleep(0.5)
    assert tokens_delivered(hk, "alice") == {t for _, t in sent[1:]}
    assert in_spool(hk, held_qid)
    assert [m["qid"] for m in queue_json(hk, "list")] == [held_qid]

    assert queue(hk, "release", held_qid).stdout.strip() == f"{held_qid}: released"
    hk.wait_delivered("alice", count=3)
    hk.wait_queue_empty()
    assert held_token in tokens_delivered(hk, "alice")
    r = queue(hk, "release", held_qid, check=False)
    assert r.returncode == 1


def test_hold_survives_restart(hikyaku):
    hk = hikyaku(**SLOW)
    block_domain(hk)
    qid, token = send(hk, ["alice@localhost"])
    wait_deferred(hk, [qid])
    queue(hk, "hold", qid)
    hk.restart()
    unblock_domain(hk)
    wait_state(hk, qid, "held")
    queue(hk, "flush")
    time.sleep(0.5)
    assert hk.delivered("alice") == []
    queue(hk, "release", qid)
    hk.wait_delivered("alice")
    assert tokens_delivered(hk, "alice") == {token}


def test_release_after_max_lifetime_gets_one_attempt(hikyaku):
    """Held mail does not expire while held (a restart and a flush leave it
    alone). Released after delivery.max_lifetime it gets one more attempt,
    as in Postfix: a recipient that can be delivered is delivered, one that
    fails temporarily bounces at once with 4.4.7. Instead of waiting the 1m
    minimum, the arrivals are moved 2 minutes back while the daemon is
    stopped."""
    hk = hikyaku(delivery={"max_lifetime": "1m", "delay_warning": 0}, **SLOW)
    block_domain(hk, "example.org")
    block_domain(hk, "localhost")
    q_fail, token = send(hk, ["carol@example.org"], sender="bob@localhost")
    q_ok, ok_token = send(hk, ["alice@localhost"], sender="bob@localhost")
    wait_deferred(hk, [q_fail, q_ok])
    for qid in (q_fail, q_ok):
        assert queue(hk, "hold", qid).stdout.strip() == f"{qid}: held"
        wait_state(hk, qid, "held")
    hk.stop()
    for qid in (q_fail, q_ok):
        hk.set_arrival(qid, int((time.time() - 120) * 1e6))
    unblock_domain(hk, "localhost")  # example.org stays blocked
    hk.start()

    for qid in (q_fail, q_ok):
        wait_state(hk, qid, "held")
    queue(hk, "flush")
    time.sleep(0.5)
    assert in_spool(hk, q_fail) and in_spool(hk, q_ok)
    assert hk.delivered("bob") == [] and hk.delivered("alice") == []

    for qid in (q_fail, q_ok):
        out = queue(hk, "release", qid).stdout.strip()
        assert out == f"{qid}: released past delivery.max_lifetime: one attempt, then it bounces (4.4.7)"
        assert wait_event(hk, "released", qid=qid, expired="yes")
    hk.wait_delivered("alice")
    assert tokens_delivered(hk, "alice") == {ok_token}
    (path,) = hk.wait_delivered("bob")  # the bounce of q_fail
    hk.wait_queue_empty()
    got = wait_event(hk, "delivery", qid=q_fail, to="carol@example.org")
    assert [(e["status"], e["dsn"]) for e in got] == [("deferred", "4.3.0"),
                                                      ("bounced", "4.4.7")]
    assert "expired" in got[-1]["reason"]
    with open(path, "rb") as f:
        dsn = email.message_from_bytes(f.read())
    assert dsn.get_content_type() == "multipart/report"
    status = dsn.get_payload()[1].get_payload()
    assert status[1]["Action"] == "failed" and status[1]["Status"] == "4.4.7"
    assert "carol@example.org" in status[1]["Final-Recipient"]
    assert token.encode() in dsn.get_payload()[2].as_bytes()


def test_flush_by_qid_and_by_domain(hikyaku):
    hk = hikyaku(**SLOW)
    block_domain(hk, "localhost")
    block_domain(hk, "example.org")
    qa, ta = send(hk, ["alice@localhost"])
    qb, tb = send(hk, ["bob@example.org"])
    qc, tc = send(hk, ["carol@localhost"])
    wait_deferred(hk, [qa, qb, qc])
    unblock_domain(hk, "localhost")
    unblock_domain(hk, "example.org")

    assert queue(hk, "flush", qa).stdout.strip() == f"{qa}: flushed"
    hk.wait_delivered("alice")
    time.sleep(0.5)
    assert hk.delivered("bob", "example.org") == [] and hk.delivered("carol") == []

    assert queue(hk, "flush", "EXAMPLE.ORG").stdout.strip() == "1 message flushed"
    hk.wait_delivered("bob", "example.org")
    time.sleep(0.5)
    assert hk.delivered("carol") == []
    assert wait_event(hk, "flush", domain="EXAMPLE.ORG")

    assert queue_json(hk, "flush", "localhost") == {
        "ok": True, "count": 1, "message": "1 message flushed"}
    hk.wait_delivered("carol")
    hk.wait_queue_empty()
    assert tokens_delivered(hk, "alice") == {ta}
    assert tokens_delivered(hk, "bob", "example.org") == {tb}


def test_delete(hikyaku):
    hk = hikyaku(**SLOW)
    block_domain(hk)
    qa, ta = send(hk, ["alice@localhost"])
    qb, tb = send(hk, ["alice@localhost"])
    wait_deferred(hk, [qa, qb])
    assert queue(hk, "delete", qa).stdout.strip() == f"{qa}: deleted"
    assert not in_spool(hk, qa)
    assert wait_event(hk, "deleted", qid=qa)
    assert [m["qid"] for m in queue_json(hk, "list")] == [qb]
    r = queue(hk, "show", qa, check=False)
    assert r.returncode == 1 and "no such message" in r.stderr

    unblock_domain(hk)
    queue(hk, "flush")
    hk.wait_delivered("alice")
    hk.wait_queue_empty()
    time.sleep(0.5)
    assert tokens_delivered(hk, "alice") == {tb}


def test_delete_held_message(hikyaku):
    hk = hikyaku(**SLOW)
    block_domain(hk)
    qid, _ = send(hk, ["alice@localhost"])
    wait_deferred(hk, [qid])
    queue(hk, "hold", qid)
    queue(hk, "delete", qid)
    assert not in_spool(hk, qid)
    assert queue_json(hk, "list") == []


def test_hold_during_an_attempt_applies_when_it_ends(hikyaku):
    """A remote recipient whose DNS never answers keeps the attempt in flight
    for the resolver timeout: the hold is recorded and applied after it."""
    hk = hikyaku(relay={"trusted_networks": ["127.0.0.0/8"]},
                 dns={"forwarders": ["127.0.0.1@9"], "timeout": "3s"}, **SLOW)
    qid, _ = send(hk, ["someone@remote.test"])
    out = queue(hk, "hold", qid).stdout
    assert out.strip() in (f"{qid}: held",
                           f"{qid}: will be held when its current delivery attempt ends")
    if "will be held" in out:
        m = {m["qid"]: m for m in queue_json(hk, "list")}[qid]
        assert m["state"] == "held" or (m["state"] == "active" and m["pending_action"] == "hold")
    m = wait_state(hk, qid, "held", timeout=20)
    assert m["pending_action"] is None
    assert wait_event(hk, "held", qid=qid)
    assert queue(hk, "release", qid).stdout.strip() == f"{qid}: released"
    assert queue(hk, "delete", qid).returncode == 0
    deadline = time.time() + 20
    while in_spool(hk, qid) and time.time() < deadline:
        time.sleep(0.1)
    assert not in_spool(hk, qid)


def test_delete_during_an_attempt_applies_when_it_ends(hikyaku):
    hk = hikyaku(relay={"trusted_networks": ["127.0.0.0/8"]},
                 dns={"forwarders": ["127.0.0.1@9"], "timeout": "3s"}, **SLOW)
    qid, _ = send(hk, ["someone@remote.test"])
    out = queue(hk, "delete", qid).stdout.strip()
    assert out in (f"{qid}: deleted",
                   f"{qid}: will be deleted when its current delivery attempt ends")
    assert wait_event(hk, "deleted", qid=qid, timeout=20)
    assert not in_spool(hk, qid)
    assert queue_json(hk, "list") == []


def test_errors(hikyaku):
    hk = hikyaku()
    unknown = "AAAAAAAAAAAAAAAA"
    for cmd in ("show", "delete", "hold", "release", "flush"):
        r = queue(hk, cmd, unknown, check=False)
        assert r.returncode == 1, cmd
        assert f"{unknown}: no such message in the queue" in r.stderr, cmd
    r = queue(hk, "show", "not-a-qid", check=False)
    assert r.returncode == 1 and "not a queue id" in r.stderr
    r = queue(hk, "frobnicate", check=False)
    assert r.returncode == 2 and "usage" in r.stderr
    r = queue(hk, "show", check=False)
    assert r.returncode == 2


def test_mailq_by_name(hikyaku, tmp_path):
    hk = hikyaku(**SLOW)
    block_domain(hk)
    qid, _ = send(hk, ["alice@localhost"])
    wait_deferred(hk, [qid])
    link = tmp_path / "mailq"
    os.symlink(hikyaku_bin(), link)
    r = queue(hk, binary=str(link))
    assert r.stdout == queue(hk, "list").stdout
    assert qid in r.stdout
    assert [m["qid"] for m in json.loads(queue(hk, "--json", binary=str(link)).stdout)] == [qid]
    r = queue(hk, "delete", qid, binary=str(link), check=False)
    assert r.returncode == 2  # mailq only lists
    assert in_spool(hk, qid)


def test_not_running(hikyaku):
    hk = hikyaku(start=False)
    path = os.path.join(hk.spool, "control.sock")
    r = queue(hk, "list", check=False)
    assert r.returncode == 1
    assert r.stderr.strip() == f"hikyaku is not running (no control socket at {path})"
    hk.start()
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert queue(hk, "list").returncode == 0
    hk.stop()
    assert not os.path.exists(path)
    r = queue(hk, "list", check=False)
    assert r.returncode == 1 and "is not running" in r.stderr


def raw_exchange(hk, data, timeout=5):
    """Send raw octets on the control socket; return everything answered
    until the daemon closes."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(os.path.join(hk.spool, "control.sock"))
    s.sendall(data)
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    return out


def error_text(frame):
    length, ftype = struct.unpack(">IB", frame[:5])
    assert ftype == 0x42 and len(frame) == 4 + length
    tag, flen = struct.unpack(">BI", frame[5:10])
    return frame[10:10 + flen].decode()


def test_bad_frames_are_refused(hikyaku):
    hk = hikyaku()
    # oversized: refused from the length field alone
    assert "too large" in error_text(raw_exchange(hk, struct.pack(">I", 1 << 20)))
    # an answer type sent as a request, and an unknown type
    assert "malformed" in error_text(raw_exchange(hk, struct.pack(">IB", 1, 0x41)))
    assert "unknown frame type" in error_text(raw_exchange(hk, struct.pack(">IB", 1, 0x99)))
    # a field running past its frame
    bad = struct.pack(">IBBI", 7, 2, 1, 50) + b"ab"
    assert "past" in error_text(raw_exchange(hk, bad))
    # list with a stray argument
    req = struct.pack(">IBBI", 6 + 16, 1, 1, 16) + b"AAAAAAAAAAAAAAAA"
    assert "wrong arguments" in error_text(raw_exchange(hk, req))
    # a silent client is dropped after the read timeout; the daemon lives on
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.path.join(hk.spool, "control.sock"))
    s.sendall(b"\x00\x00")
    assert queue(hk, "list").returncode == 0
    s.close()
    # a well-formed raw LIST gets END
    out = raw_exchange(hk, struct.pack(">IB", 1, 1))
    assert out[4] == 0x44
