"""Durability of the spool across restarts, retries and crashes.

The contract under test (src/queue/spool.h, DESIGN.md "The spool"): a 250 to
DATA means the message is in queue/ and survives SIGTERM or SIGKILL; nothing
in incoming/ is ever delivered; broken queue entries are dropped (orphans) or
quarantined (corrupt envelopes) without stopping the server.

Delivery is blocked with a regular FILE where the Maildir code must create a
domain directory (tests run as root, so permissions would not stop it):
mkdir <maildir_root>/<domain>/<user> then fails with ENOTDIR.
"""
import os
import re
import signal
import smtplib
import socket
import subprocess
import time
import uuid
import zlib

import pytest

from conftest import log_events, wait_event


def block_domain(hk, domain="localhost"):
    os.makedirs(hk.mailroot, exist_ok=True)
    path = os.path.join(hk.mailroot, domain)
    with open(path, "w") as f:
        f.write("not a directory\n")
    return path


def unblock_domain(hk, domain="localhost"):
    os.unlink(os.path.join(hk.mailroot, domain))


def message(token, subject="durability"):
    return (f"Subject: {subject} {token}\r\nMessage-ID: <{token}@test.example>\r\n\r\n"
            f"body {token}\r\n").encode()


def send(hk, tokens, rcpts=("alice@localhost",)):
    """Send one message per token on one connection; every one must get 250."""
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=10) as s:
        for t in tokens:
            refused = s.sendmail("bob@example.net", list(rcpts), message(t))
            assert refused == {}


def contents(paths):
    out = []
    for p in paths:
        with open(p, "rb") as f:
            out.append(f.read())
    return out


def tokens_in(hk, user, domain="localhost"):
    """Sorted tokens (from the Subject) of everything delivered to user."""
    found = []
    for data in contents(hk.delivered(user, domain)):
        for line in data.split(b"\n"):
            if line.startswith(b"Subject: "):
                found.append(line.split()[-1].decode())
                break
    return sorted(found)


def pairs(files):
    """{qid: set(ext)} of a queue/ or incoming/ listing ("" for a message
    file; "msg"/"env" for the halves of an old two-file message)."""
    out = {}
    for name in files:
        qid, _, ext = name.partition(".")
        out.setdefault(qid, set()).add(ext)
    return out


SPOOL_MAGIC = b"HKMSG\x00\x01\n"


REC_END, REC_CONTENT_OFF = 14, 18  # src/queue/record.h


def env_records(env):
    """[(type, payload)] of an envelope image up to and without END, and the
    octets after END (MARK records)."""
    assert env[:8] == b"HKENV\x00\x01\n"
    out, i = [], 8
    while True:
        t, n = env[i], int.from_bytes(env[i + 1:i + 5], "big")
        if t == REC_END:
            return out, env[i + 5 + n:]
        out.append((t, env[i + 5:i + 5 + n]))
        i += 5 + n


def old_envelope(env):
    """The envelope as versions before REC_CONTENT_OFF wrote it: without
    that record, with the END CRC over what is left."""
    recs, rest = env_records(env)
    img = b"HKENV\x00\x01\n" + b"".join(
        bytes([t]) + len(p).to_bytes(4, "big") + p for t, p in recs if t != REC_CONTENT_OFF)
    return img + bytes([REC_END]) + (4).to_bytes(4, "big") + \
        zlib.crc32(img).to_bytes(4, "big") + rest


def content_off(env):
    recs, _ = env_records(env)
    for t, p in recs:
        if t == REC_CONTENT_OFF:
            return int.from_bytes(p, "big")
    return 16


def split_spool_file(path):
    """(content, envelope records) of a spool message file: a 16-octet
    header (magic, big-endian envelope offset), the content (from where
    the envelope's REC_CONTENT_OFF says: smtpd leaves a gap before it for
    header fields added at the end of data), the envelope."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == SPOOL_MAGIC, data[:16]
    off = int.from_bytes(data[8:16], "big")
    assert 16 <= off < len(data)
    env = data[off:]
    start = content_off(env)
    assert 16 <= start <= off
    return data[start:off], env


def to_old_format(path):
    """Rewrite a message file as versions before REC_CONTENT_OFF wrote it:
    the content right after the header."""
    content, env = split_spool_file(path)
    with open(path, "wb") as f:
        f.write(SPOOL_MAGIC + (16 + len(content)).to_bytes(8, "big") + content +
                old_envelope(env))


def new_tokens(n):
    return [uuid.uuid4().hex for _ in range(n)]


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_restart_with_loaded_queue(hikyaku):
    n = 6
    hk = hikyaku(start=False)
    block_domain(hk)
    hk.start()
    toks = new_tokens(n)
    send(hk, toks)
    # Every acknowledged message is committed: N message files in queue/,
    # each with its content and its envelope.
    q = pairs(hk.queue_files())
    assert len(q) == n
    assert all(exts == {""} for exts in q.values()), q
    for qid in q:
        content, env = split_spool_file(os.path.join(hk.spool, "queue", qid))
        assert any(t.encode() in content for t in toks)
        assert env.startswith(b"HKENV\x00\x01\n") and qid.encode() in env
    # Each got its first attempt, which failed and was scheduled for retry.
    hk.wait_log("event=deferred", count=n)
    assert hk.delivered("alice") == []
    assert hk.stop() == 0
    assert len(pairs(hk.queue_files())) == n  # a clean stop keeps the queue

    unblock_domain(hk)
    hk.start()
    assert f"queued={n}" in hk.log()
    hk.wait_delivered("alice", count=n)
    hk.wait_queue_empty()
    assert tokens_in(hk, "alice") == sorted(toks)
    assert hk.spool_files("incoming") == []


def test_retry_without_restart(hikyaku):
    hk = hikyaku(start=False, queue={"retry_min": "1s", "retry_max": "2s"})
    block_domain(hk)
    hk.start()
    toks = new_tokens(2)
    t0 = time.time()
    send(hk, toks)
    # First attempt plus at least one timed retry, both deferred; the
    # backoff reaches the cap (1s, then 2s).
    hk.wait_log("event=deferred", count=4, timeout=10)
    log = hk.log()
    assert "attempts=2 retry_in=2000ms" in log, log[-3000:]
    assert "retry_in=1000ms" in log
    assert hk.delivered("alice") == []
    assert len(pairs(hk.queue_files())) == 2

    unblock_domain(hk)
    hk.wait_delivered("alice", count=2, timeout=6)
    hk.wait_queue_empty()
    assert tokens_in(hk, "alice") == sorted(toks)
    assert time.time() - t0 < 15
    # Nothing was delivered twice by overlapping attempts.
    time.sleep(2.5)
    assert len(hk.delivered("alice")) == 2


def test_retry_backoff_is_capped_and_keeps_queue(hikyaku):
    """A message that keeps failing is retried at retry_max, never dropped."""
    hk = hikyaku(start=False, queue={"retry_min": "1s", "retry_max": "1s"})
    block_domain(hk)
    hk.start()
    send(hk, new_tokens(1))
    hk.wait_log("event=deferred", count=4, timeout=8)
    log = hk.log()
    assert "attempts=3 retry_in=1000ms" in log
    assert "retry_in=2000ms" not in log
    assert len(hk.queue_files()) == 1
    assert hk.stop() == 0


def test_partial_delivery_is_not_repeated_after_restart(hikyaku):
    """One recipient delivered, one deferred: the DONE record in the envelope
    must keep the restart from delivering the first one again."""
    hk = hikyaku(start=False)
    block_domain(hk, "example.org")
    hk.start()
    (tok,) = new_tokens(1)
    send(hk, [tok], rcpts=("alice@localhost", "carol@example.org"))
    hk.wait_delivered("alice", count=1)
    hk.wait_log("event=deferred")
    assert len(pairs(hk.queue_files())) == 1
    assert hk.stop() == 0

    unblock_domain(hk, "example.org")
    hk.start()
    assert "queued=1" in hk.log()
    hk.wait_delivered("carol", "example.org", count=1)
    hk.wait_queue_empty()
    time.sleep(0.3)
    assert tokens_in(hk, "alice") == [tok]
    assert tokens_in(hk, "carol", "example.org") == [tok]


def make_committed(hk, n):
    """Run the server blocked, get n messages acknowledged, stop it, and return
    [(qid, token)] of the committed messages left in queue/ (server stopped,
    domain still blocked)."""
    block_domain(hk)
    hk.start()
    toks = new_tokens(n)
    send(hk, toks)
    hk.wait_log("event=deferred", count=n)
    assert hk.stop() == 0
    out = []
    qdir = os.path.join(hk.spool, "queue")
    for qid in pairs(hk.queue_files()):
        data, _ = split_spool_file(os.path.join(qdir, qid))
        tok = next(t for t in toks if t.encode() in data)
        out.append((qid, tok))
    assert len(out) == n
    return out


def to_old_pair(qdir, qid):
    """Rewrite a message file as the <qid>.msg + <qid>.env pair that earlier
    versions wrote."""
    content, env = split_spool_file(os.path.join(qdir, qid))
    with open(os.path.join(qdir, qid + ".msg"), "wb") as f:
        f.write(content)
    with open(os.path.join(qdir, qid + ".env"), "wb") as f:
        f.write(old_envelope(env))
    os.unlink(os.path.join(qdir, qid))


def test_recovery_cleans_broken_spool(hikyaku):
    hk = hikyaku(start=False)
    (good, g_tok), (inc, i_tok), (old, o_tok), (bad, b_tok), (off, f_tok), (half, h_tok) = \
        make_committed(hk, 6)
    qdir = os.path.join(hk.spool, "queue")
    idir = os.path.join(hk.spool, "incoming")

    # A complete message in incoming/: written but never acknowledged.
    os.rename(os.path.join(qdir, inc), os.path.join(idir, inc))
    # A hand-made half-written message too, with a plausible qid.
    stray = "Zz0123456789abcd"
    with open(os.path.join(idir, stray), "wb") as f:
        f.write(SPOOL_MAGIC + bytes(8) + message("stray-token"))
    # A message in the two-file format of earlier versions: converted.
    to_old_pair(qdir, old)
    # Half of an old pair (its .env, the commit point, is gone): removed.
    to_old_pair(qdir, half)
    os.unlink(os.path.join(qdir, half + ".env"))
    # A corrupt header, and an envelope offset that points elsewhere.
    with open(os.path.join(qdir, bad), "r+b") as f:
        data = f.read(8)
        f.seek(0)
        f.write(bytes(b ^ 0x5A for b in data))
    with open(os.path.join(qdir, off), "r+b") as f:
        f.seek(15)
        c = f.read(1)
        f.seek(15)
        f.write(bytes([c[0] ^ 0x04]))

    unblock_domain(hk)
    hk.start()
    log = hk.log()
    assert "queued=2" in log, log[-3000:]
    assert f"event=spool_converted qid={old}" in log
    hk.wait_delivered("alice", count=2)
    hk.wait_queue_empty()

    # The server still serves new mail.
    (new_tok,) = new_tokens(1)
    send(hk, [new_tok])
    hk.wait_delivered("alice", count=3)
    hk.wait_queue_empty()
    time.sleep(0.3)
    assert tokens_in(hk, "alice") == sorted([g_tok, o_tok, new_tok])

    assert hk.spool_files("incoming") == []
    assert hk.queue_files() == []
    assert hk.spool_files("corrupt") == sorted([bad, off])
    assert f"event=spool_orphan qid={half} file=msg" in log
    assert f"event=spool_corrupt qid={bad}" in log
    assert f"event=spool_corrupt qid={off}" in log
    assert f"event=spool_incoming_removed file={inc}" in log
    assert f"event=spool_incoming_removed file={stray}" in log
    for t in (i_tok, h_tok, b_tok, f_tok, "stray-token"):
        assert t not in tokens_in(hk, "alice")


def test_old_format_file_delivers(hikyaku):
    """A message file of a version before REC_CONTENT_OFF (content right
    after the header, no such record) still loads and delivers byte-exact."""
    hk = hikyaku(start=False)
    ((qid, tok),) = make_committed(hk, 1)
    path = os.path.join(hk.spool, "queue", qid)
    content, _ = split_spool_file(path)
    to_old_format(path)
    with open(path, "rb") as f:
        assert f.read()[16:16 + len(content)] == content
    unblock_domain(hk)
    hk.start()
    hk.wait_delivered("alice", count=1)
    hk.wait_queue_empty()
    (got,) = contents(hk.delivered("alice"))
    # Maildir adds Return-Path and Delivered-To and stores LF line ends.
    assert got.endswith(content.replace(b"\r\n", b"\n")), got


def test_unknown_files_in_queue_do_not_stop_the_server(hikyaku):
    hk = hikyaku(start=False)
    qdir = os.path.join(hk.spool, "queue")
    os.makedirs(qdir)
    os.makedirs(os.path.join(hk.spool, "incoming"))
    for name in ("README", "short.env", "Zz0123456789abc!", "Zz0123456789abc!.env",
                 "Zz0123456789abcd.tmp"):
        with open(os.path.join(qdir, name), "w") as f:
            f.write("x")
    os.mkdir(os.path.join(qdir, "Zz0123456789abce.env"))  # directories, not files
    os.mkdir(os.path.join(qdir, "Zz0123456789abcf"))
    hk.start()
    assert "queued=0" in hk.log()
    (tok,) = new_tokens(1)
    send(hk, [tok])
    hk.wait_delivered("alice")
    assert tokens_in(hk, "alice") == [tok]


def test_sigkill_after_ack_is_delivered_after_restart(hikyaku):
    hk = hikyaku(start=False)
    block_domain(hk)
    hk.start()
    toks = new_tokens(3)
    send(hk, toks)
    hk.kill()  # no chance to deliver, no clean shutdown
    assert len(pairs(hk.queue_files())) == 3
    unblock_domain(hk)
    hk.start()
    assert "queued=3" in hk.log()
    hk.wait_delivered("alice", count=3)
    hk.wait_queue_empty()
    assert tokens_in(hk, "alice") == sorted(toks)


def test_sigkill_right_after_ack_unblocked(hikyaku):
    """Delivery may or may not have run before the kill: either way the
    message arrives (possibly twice, never zero times)."""
    hk = hikyaku()
    (tok,) = new_tokens(1)
    send(hk, [tok])
    hk.kill()
    hk.start()
    hk.wait_delivered("alice", count=1)
    hk.wait_queue_empty()
    assert set(tokens_in(hk, "alice")) == {tok}


def test_sigkill_during_data_leaves_nothing(hikyaku, raw):
    """A message killed mid-DATA was never acknowledged: its incoming/ file
    is removed at start and it is never delivered."""
    hk = hikyaku()
    c = raw(hk.port)
    assert c.cmd("EHLO client.example")[0] == 250
    assert c.cmd("MAIL FROM:<bob@example.net>")[0] == 250
    assert c.cmd("RCPT TO:<alice@localhost>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(b"Subject: never acked\r\n\r\n" + (b"x" * 998 + b"\r\n") * 600)
    # The content goes into an unnamed file in incoming/ (O_TMPFILE) that
    # nothing lists: give smtpd the time to write it, then kill.
    time.sleep(0.5)
    hk.kill()
    c.close()
    hk.start()
    assert hk.spool_files("incoming") == []
    assert "queued=0" in hk.log()
    (tok,) = new_tokens(1)
    send(hk, [tok])
    hk.wait_delivered("alice", count=1)
    time.sleep(0.3)
    assert tokens_in(hk, "alice") == [tok]


def test_sigterm_with_queue_exits_zero_and_keeps_mail(hikyaku):
    hk = hikyaku(start=False)
    block_domain(hk)
    hk.start()
    toks = new_tokens(4)
    send(hk, toks)
    # An idle client connected across the shutdown must not hold it up.
    idle = socket.create_connection(("127.0.0.1", hk.port))
    idle.recv(512)
    t0 = time.time()
    assert hk.stop(signal.SIGTERM) == 0
    assert time.time() - t0 < 10
    idle.close()
    assert "event=stopped" in hk.log()
    assert len(pairs(hk.queue_files())) == 4
    unblock_domain(hk)
    hk.start()
    hk.wait_delivered("alice", count=4)
    hk.wait_queue_empty()
    assert tokens_in(hk, "alice") == sorted(toks)


@pytest.mark.parametrize("rounds", [3])
def test_repeated_restarts_do_not_duplicate(hikyaku, rounds):
    """Delivered and removed messages stay removed across clean restarts."""
    hk = hikyaku()
    toks = []
    for _ in range(rounds):
        t = new_tokens(2)
        toks += t
        send(hk, t)
        hk.wait_delivered("alice", count=len(toks))
        hk.wait_queue_empty()
        assert hk.stop() == 0
        hk.start()
    time.sleep(0.3)
    assert tokens_in(hk, "alice") == sorted(toks)


def test_recovered_burst_to_new_mailboxes_is_not_deferred(hikyaku):
    """Many recovered messages start delivery at once into mailboxes that do
    not exist yet: concurrent Maildir creation must not make any of them fail
    (a spurious deferral here waits retry_min, 5 minutes by default)."""
    hk = hikyaku(start=False, queue={"delivery_threads": 16})
    block_domain(hk)
    hk.start()
    # Consecutive messages (delivered concurrently after recovery, which
    # keeps arrival order) go to the same new mailbox.
    users = [f"u{i}" for i in range(8)]
    toks = new_tokens(128)
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=10) as s:
        for i, t in enumerate(toks):
            assert s.sendmail("bob@example.net", [f"{users[i // 16]}@localhost"],
                              message(t)) == {}
    assert hk.stop() == 0
    unblock_domain(hk)
    skip = len(hk.log())
    hk.start()
    try:
        hk.wait_queue_empty(timeout=5)
    except AssertionError:
        pass
    deferred = [ln for ln in hk.log()[skip:].splitlines() if "status=deferred" in ln]
    assert deferred == [], "\n".join(deferred[:5])
    for u in users:
        assert len(hk.delivered(u)) == 16


def _chattr(flag, path):
    return subprocess.run(["chattr", flag, path], capture_output=True).returncode == 0


def one_deferred(hikyaku, retry_max="1s"):
    """A server with retries every second and localhost blocked, holding one
    deferred message: (hk, qid, token)."""
    hk = hikyaku(start=False, queue={"retry_min": "1s", "retry_max": retry_max})
    block_domain(hk)
    hk.start()
    (tok,) = new_tokens(1)
    send(hk, [tok])
    hk.wait_log("event=deferred")
    (qid,) = pairs(hk.queue_files())
    return hk, qid, tok


def test_failed_removal_is_retried_without_redelivery(hikyaku):
    """All recipients delivered but the queue files cannot be removed (an
    append-only message file refuses unlink even to root): the message must not be
    forgotten in queue/ until the next restart, nor delivered again."""
    hk, qid, tok = one_deferred(hikyaku)
    env = os.path.join(hk.spool, "queue", qid)
    if not _chattr("+a", env):
        pytest.skip("chattr +a not supported here")
    try:
        unblock_domain(hk)
        hk.wait_delivered("alice", count=1, timeout=5)
        hk.wait_log(f"event=spool_remove_failed qid={qid}")
        time.sleep(0.2)
    finally:
        _chattr("-a", env)
    hk.wait_queue_empty(timeout=5)
    log = hk.log()
    # "removed" is only logged once the files are really gone.
    assert log.count(f"event=removed qid={qid}") == 1
    assert log.index(f"event=removed qid={qid}") > log.index("event=spool_remove_failed")
    time.sleep(1.5)
    assert tokens_in(hk, "alice") == [tok]


def test_retry_time_from_a_clock_set_back_is_not_waited_for(hikyaku):
    """A persisted next attempt further ahead than queue.retry_max can only
    come from a clock that has since been set back: the message is due at
    once, not after the step (a day here)."""
    hk, qid, tok = one_deferred(hikyaku, retry_max="2s")
    assert hk.stop() == 0
    hk.append_schedule(qid, int((time.time() + 86400) * 1e6), attempts=1)
    unblock_domain(hk)
    hk.start()
    hk.wait_delivered("alice", timeout=5)
    assert tokens_in(hk, "alice") == [tok]


def test_message_file_removed_by_hand_is_forgotten(hikyaku):
    """A queued message whose file an operator removed is dropped from the
    queue at its next attempt, not retried (and logged) forever."""
    hk, qid, _ = one_deferred(hikyaku)
    os.unlink(os.path.join(hk.spool, "queue", qid))
    assert wait_event(hk, "queue_error", qid=qid, action="forget")
    time.sleep(2.5)  # two more retry periods: no further attempt
    assert len([e for e in log_events(hk, "queue_error") if e.get("qid") == qid]) == 1
    # The server goes on with other mail.
    unblock_domain(hk)
    (tok2,) = new_tokens(1)
    send(hk, [tok2])
    hk.wait_delivered("alice")
    assert tokens_in(hk, "alice") == [tok2]


def test_torn_done_record_is_repaired(hikyaku):
    """A crash in the middle of appending a DONE record leaves a torn record
    at the end of the message file: the message is still recovered (not quarantined),
    the next DONE is appended after cutting the torn one, and no recipient
    is lost or delivered twice."""
    hk = hikyaku(start=False)
    block_domain(hk, "localhost")
    block_domain(hk, "example.org")
    hk.start()
    (tok,) = new_tokens(1)
    send(hk, [tok], rcpts=("alice@localhost", "carol@example.org"))
    hk.wait_log("event=deferred")
    assert hk.stop() == 0
    (qid,) = pairs(hk.queue_files())
    env = os.path.join(hk.spool, "queue", qid)
    with open(env, "ab") as f:
        f.write(b"\x0f\x00\x00\x00\x04\x00\x00")  # DONE, len 4, 2 of 4 octets
    torn_size = os.path.getsize(env)

    unblock_domain(hk, "localhost")
    hk.start()
    assert "queued=1" in hk.log()
    hk.wait_delivered("alice", count=1)
    hk.wait_log("event=deferred", count=2)
    assert hk.stop() == 0
    # Torn 7 octets cut, then one MARK record per attempt: the first with
    # alice done and the schedule (5 + 4 + 4 + 1 + 16 + 4 = 34 octets), the
    # later ones with the schedule only (30 octets).
    grown = os.path.getsize(env) - (torn_size - 7) - 34
    assert grown >= 0 and grown % 30 == 0, grown

    unblock_domain(hk, "example.org")
    hk.start()
    assert "queued=1" in hk.log().rsplit("event=start", 1)[1]
    hk.wait_delivered("carol", "example.org", count=1)
    hk.wait_queue_empty()
    time.sleep(0.3)
    assert tokens_in(hk, "alice") == [tok]
    assert tokens_in(hk, "carol", "example.org") == [tok]
    assert hk.spool_files("corrupt") == []


def test_retry_schedule_survives_restart_and_flush(hikyaku):
    """Issue 4: the queue keeps its retry times across a restart (a SCHED
    record in the envelope), and SIGUSR1 flushes the queue at once."""
    hk = hikyaku(start=False, queue={"retry_min": "10m", "retry_max": "1h"})
    block_domain(hk)
    hk.start()
    (tok,) = new_tokens(1)
    send(hk, [tok])
    hk.wait_log("event=deferred")
    assert "retry_in=600000ms" in hk.log()
    assert hk.stop() == 0
    unblock_domain(hk)
    hk.start()
    # Not retried at start: its next attempt is ~10 minutes away.
    hk.wait_log("event=scheduled")
    start_log = hk.log().rsplit("event=start", 1)[1]
    m = re.search(r"event=scheduled qid=\S+ attempts=1 retry_in=(\d+)s", start_log)
    assert m and 500 < int(m.group(1)) <= 600, start_log[-2000:]
    time.sleep(0.5)
    assert hk.delivered("alice") == []
    hk.proc.send_signal(signal.SIGUSR1)
    hk.wait_delivered("alice", count=1)
    hk.wait_queue_empty()
    assert "event=flush messages=1" in hk.log()


def test_clock_set_back_does_not_expire(hikyaku):
    """A message that arrived "in the future" (the clock was set back since)
    is not older than delivery.max_lifetime: it is retried, not bounced with
    4.4.7 (its age must not wrap around)."""
    hk = hikyaku(start=False, queue={"retry_min": "1s", "retry_max": "1s"})
    block_domain(hk)
    hk.start()
    send(hk, new_tokens(1))
    hk.wait_log("event=deferred", count=1)
    hk.stop()
    (qid,) = hk.queue_files()
    hk.set_arrival(qid, int((time.time() + 86400) * 1e6))
    hk.start()
    hk.wait_log("event=deferred", count=3, timeout=10)
    log = hk.log()
    assert "dsn=4.4.7" not in log and "status=bounced" not in log, log[-3000:]
    assert hk.queue_files() == [qid]
