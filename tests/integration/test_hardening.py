"""Hardening against hostile clients and a hostile service user (issue 8,
"Security" items 1, 5, 7, 8, 9): log flooding, root's chown at start,
terminal escapes in `hikyaku queue`, the spool's free-space guard, the
Received header's HELO name, the directories' modes, the allocation rule.
"""
import os
import re

from conftest import REPO


def test_source_has_no_raw_allocation():
    """STYLE.md: allocation wrappers abort on out-of-memory; callers never
    check for NULL. Only src/lib/alloc.c may call the libc allocators."""
    raw = re.compile(r"(?<![\w.>])(malloc|calloc|realloc|reallocarray|strdup|strndup)\s*\(")
    found = []
    for root, _, files in os.walk(os.path.join(REPO, "src")):
        for name in files:
            path = os.path.join(root, name)
            if not name.endswith(".c") or path.endswith(os.path.join("lib", "alloc.c")):
                continue
            with open(path, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    code = line.split("//")[0]
                    if raw.search(code) and not code.lstrip().startswith(("*", "/*")):
                        found.append(f"{os.path.relpath(path, REPO)}:{n}: {line.strip()}")
    assert not found, "raw allocation calls:\n" + "\n".join(found)


# ---- item 7: terminal escapes in `hikyaku queue list|show` ----

def _queue_hostile_message(hk, raw):
    """One message whose recipient (SMTPUTF8) carries U+009B (a one-octet
    CSI to many terminals) and whose Subject carries ESC, U+009B and a lone
    0x9b octet; kept in the queue by a blocked Maildir domain."""
    from test_queue_cli import block_domain, wait_deferred
    block_domain(hk)
    c = raw(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<bob@example.net> SMTPUTF8", 250, "2.1.0")
    rcpt = "evil\u009b31m@localhost".encode()
    c.send(b"RCPT TO:<" + rcpt + b">\r\n")
    c.expect(250, "2.1.5")
    body = (b"Subject: hi \x1b[2J \xc2\x9b31m \x9b1m there\r\n"
            b"X-Bell: \x07\x7f\r\n\r\nbody\r\n")
    qid = c.data(body)
    wait_deferred(hk, [qid])
    return qid


def _assert_no_raw_controls(data):
    for bad in (b"\x1b", b"\xc2\x9b", b"\x9b", b"\x07", b"\x7f"):
        assert bad not in data, f"{bad!r} reached the terminal: {data!r}"


def test_queue_list_and_show_escape_terminal_controls(hikyaku, raw):
    import subprocess
    from conftest import hikyaku_bin
    hk = hikyaku(queue={"retry_min": "1h", "retry_max": "1h"})
    qid = _queue_hostile_message(hk, raw)
    for locale in ("C", "C.UTF-8"):
        env = dict(os.environ, LC_ALL=locale)
        for args in (["list"], ["show", qid]):
            r = subprocess.run([hikyaku_bin(), "queue", "-c", hk.config] + args,
                               capture_output=True, env=env, timeout=30)
            assert r.returncode == 0, r.stderr
            _assert_no_raw_controls(r.stdout)
            assert qid.encode() in r.stdout
            # escaped, not dropped: the operator sees what was there
            assert b"\\x1b[2J" in r.stdout or args == ["list"]
            assert b"evil\\xc2\\x9b31m@localhost" in r.stdout
        # --json is escaped as well (\u009b), and still valid JSON
        r = subprocess.run([hikyaku_bin(), "queue", "-c", hk.config, "--json", "show", qid],
                           capture_output=True, env=env, timeout=30)
        assert r.returncode == 0, r.stderr
        _assert_no_raw_controls(r.stdout)
        import json
        m = json.loads(r.stdout)
        assert m["recipients"][0]["address"] == "evil\u009b31m@localhost"


def test_queue_show_prints_printable_utf8_in_a_utf8_locale(hikyaku, raw):
    import subprocess
    from conftest import hikyaku_bin
    from test_queue_cli import block_domain, wait_deferred
    hk = hikyaku(queue={"retry_min": "1h", "retry_max": "1h"})
    block_domain(hk)
    c = raw(hk.port)
    c.begin()
    qid = c.data("Subject: caf\u00e9 \u65e5\u672c\r\n\r\nbody\r\n".encode())
    wait_deferred(hk, [qid])
    show = lambda loc: subprocess.run(  # noqa: E731
        [hikyaku_bin(), "queue", "-c", hk.config, "show", qid], capture_output=True,
        env=dict(os.environ, LC_ALL=loc), timeout=30).stdout
    assert "Subject: caf\u00e9 \u65e5\u672c".encode() in show("C.UTF-8")
    assert b"Subject: caf\\xc3\\xa9 \\xe6\\x97\\xa5\\xe6\\x9c\\xac" in show("C")


# ---- item 1: one connection cannot flood the log ----

def _sid_lines(hk, sid):
    return [ln for ln in hk.log().splitlines() if f"sid={sid} " in ln + " "]


def test_recipient_flood_ends_in_421_with_bounded_log(hikyaku, raw):
    """Thousands of RCPTs past limits.recipients: after
    limits.recipient_overshoot (1000 by default) 452 4.5.3 replies, each
    further one counts as an error, and limits.errors of them end the
    session with 421 4.7.0. The rejections are logged a few times, then
    summed up in one event=suppressed line."""
    import threading
    from conftest import log_events
    hk = hikyaku(limits={"recipients": 2, "errors": 20}, log_level="info")
    c = raw(hk.port)
    c.ehlo()
    n = 3000
    burst = b"MAIL FROM:<a@example.net>\r\n" + b"".join(
        b"RCPT TO:<r%d@localhost>\r\n" % i for i in range(n))

    def sender():
        try:
            c.sock.sendall(burst)
        except OSError:
            pass  # the server hung up before it read everything: expected

    t = threading.Thread(target=sender)
    t.start()
    c.expect(250, "2.1.0")
    codes = []
    while True:
        code, lines = c.reply()
        codes.append((code, lines[-1][4:9]))
        if code == 421:
            break
    t.join(10)
    assert codes[-1] == (421, "4.7.0")
    assert codes[:2] == [(250, "2.1.5")] * 2
    assert all(cd == (452, "4.5.3") for cd in codes[2:-1])
    assert len(codes) - 3 == 1000 + 20  # overshoot, then limits.errors
    assert c.closed()
    sid = log_events(hk, "error_limit")[0]["sid"]
    wait_event = __import__("conftest").wait_event
    assert wait_event(hk, "disconnect", sid=sid)
    rejects = [e for e in log_events(hk, "reject") if e["sid"] == sid]
    assert len(rejects) == 5
    supp = [e for e in log_events(hk, "suppressed") if e.get("sid") == sid]
    assert len(supp) == 1 and supp[0]["cmd"] == "RCPT"
    assert int(supp[0]["count"]) == 1020 - 5
    # connect, the five rejects, the summary, error_limit, disconnect
    assert len(_sid_lines(hk, sid)) <= 12, _sid_lines(hk, sid)


def test_every_rejection_class_counts_toward_the_error_limit(hikyaku, raw):
    """550, 554 and 452 replies (not only 5xx syntax errors) end the session
    at limits.errors."""
    hk = hikyaku(limits={"errors": 4}, users=["alice@example.org"])
    c = raw(hk.port)
    c.begin(sender="a@example.net", rcpts=())
    c.ok("RCPT TO:<nobody@example.org>", 550, "5.1.1")
    c.ok("RCPT TO:<x@elsewhere.example>", 554, "5.7.1")
    c.ok("RCPT TO:<nobody2@example.org>", 550, "5.1.1")
    c.send("RCPT TO:<x2@elsewhere.example>\r\n")
    c.expect(554, "5.7.1")
    c.expect(421, "4.7.0")
    assert c.closed()


# ---- item 8: the spool's free space ----

def test_mail_refused_below_min_free_space(hikyaku, raw):
    """queue.min_free_space above what the disk has: MAIL gets 452 4.3.1
    (RFC 3463 X.3.1), and nothing reaches the spool."""
    hk = hikyaku(queue={"min_free_space": "1000T"})
    c = raw(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<a@example.net>", 452, "4.3.1")
    c.ok("MAIL FROM:<a@example.net> SIZE=100", 452, "4.3.1")
    assert hk.spool_files("incoming") == [] and hk.queue_files() == []
    from conftest import log_events
    assert [e["status"] for e in log_events(hk, "spool_space")] == ["low"]


class _Tmpfs:
    """A small tmpfs of its own (tests run as root), unmounted at the end."""

    def __init__(self, path, size):
        import subprocess
        import pytest
        os.makedirs(path, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755",
                            "tmpfs", path], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        self.path = path

    def close(self):
        import subprocess
        subprocess.run(["umount", "-l", self.path], check=False)
        try:
            os.rmdir(self.path)
        except OSError:
            pass


def _small_spool(hikyaku, size="1m", **settings):
    import tempfile
    mnt = _Tmpfs(tempfile.mkdtemp(prefix="hk-tmpfs-"), size)
    hk = hikyaku(start=False, spool_dir=os.path.join(mnt.path, "spool"), **settings)
    hk.spool = os.path.join(mnt.path, "spool")
    return hk, mnt


def test_declared_size_against_free_space(hikyaku, raw):
    """A message's SIZE= must fit in the free space above the reserve; the
    sizes other transactions declared do not count (idle sessions that
    declare large sizes cannot refuse everyone's mail): on a 1 MiB spool,
    three 400K transactions are each accepted, a 2M one is not."""
    hk, mnt = _small_spool(hikyaku, queue={"min_free_space": "0"})
    try:
        hk.start()
        a, b, c3 = raw(hk.port), raw(hk.port), raw(hk.port)
        for c in (a, b, c3):
            c.ehlo()
        a.ok("MAIL FROM:<a@example.net> SIZE=400000", 250)
        b.ok("MAIL FROM:<a@example.net> SIZE=400000", 250)
        c3.ok("MAIL FROM:<a@example.net> SIZE=2000000", 452, "4.3.1")
        c3.ok("MAIL FROM:<a@example.net> SIZE=400000", 250)
    finally:
        hk.stop()
        mnt.close()


def test_spool_full_during_data_ends_the_transaction(hikyaku, raw):
    """The spool's file system fills up in the middle of DATA: the
    transaction ends with 452 4.3.1, its partial file is gone, the session
    goes on, and the message acknowledged before it is delivered."""
    hk, mnt = _small_spool(hikyaku, queue={"min_free_space": "0"})
    try:
        hk.start()
        c = raw(hk.port)
        c.begin(rcpts=["alice@localhost"])
        c.data("Subject: before\r\n\r\nacknowledged first\r\n")
        c.ok("MAIL FROM:<a@example.net>", 250, "2.1.0")
        c.ok("RCPT TO:<bob@localhost>", 250, "2.1.5")
        c.ok("DATA", 354)
        line = b"x" * 998 + b"\r\n"
        c.send(b"Subject: big\r\n\r\n" + line * 3000 + b".\r\n")  # ~3 MB
        c.expect(452, "4.3.1")
        assert hk.spool_files("incoming") == []
        # the space is back: the next message goes through
        c.begin(ehlo=False, rcpts=["carol@localhost"])
        c.data("Subject: after\r\n\r\nafter the failure\r\n")
        assert b"acknowledged first" in hk.read_delivered("alice")[0]
        assert b"after the failure" in hk.read_delivered("carol")[0]
        assert hk.delivered("bob") == []
        # BDAT: the chunk whose write fails gets the 452, the transaction ends
        c.ok("MAIL FROM:<a@example.net>", 250, "2.1.0")
        c.ok("RCPT TO:<bob@localhost>", 250, "2.1.5")
        chunk = line * 1000
        code = 250
        for _ in range(4):
            c.send(b"BDAT %d\r\n" % len(chunk) + chunk)
            code, lines = c.reply()
            if code != 250:
                break
        assert code == 452 and lines[-1][4:9] == "4.3.1", lines
        c.ok("RCPT TO:<bob@localhost>", 503, "5.5.1")  # no transaction any more
        assert hk.spool_files("incoming") == []
    finally:
        hk.stop()
        mnt.close()


# ---- item 5: root at the next start; item 9: directory modes ----

def _check(path):
    import subprocess
    from conftest import hikyaku_bin
    return subprocess.run([hikyaku_bin(), "check", "-c", str(path)], capture_output=True,
                          text=True, timeout=30)


def _conf(tmp_path, **kv):
    from conftest import to_yaml
    conf = {"listen": [{"address": "127.0.0.1:2525", "tls": "none"}], "local_domains": ["example.org"],
            "accept_any_user": True, "hostname": "mx.test.example"}
    conf.update(kv)
    f = tmp_path / "hk.yaml"
    f.write_text(to_yaml(conf))
    return f


def test_check_refuses_nested_roots(tmp_path):
    base = str(tmp_path)
    cases = [
        (f"{base}/spool", f"{base}/spool/mail", "maildir_root"),
        (f"{base}/var/mail/spool", f"{base}/var/mail", "spool_dir"),
        (f"{base}/same", f"{base}/same/", "spool_dir"),
        (f"{base}/a/../spool", f"{base}/spool/./x", "maildir_root"),
    ]
    for spool, mail, key in cases:
        f = _conf(tmp_path, spool_dir=spool, maildir_root=mail)
        r = _check(f)
        assert r.returncode == 2, (spool, mail, r.stdout, r.stderr)
        assert "inside" in r.stderr and key in r.stderr, r.stderr
    # tls.self_signed_dir is written by root: not inside the service's roots
    f = _conf(tmp_path, spool_dir=f"{base}/spool", maildir_root=f"{base}/mail",
              tls={"self_signed_dir": f"{base}/spool/tls"})
    r = _check(f)
    assert r.returncode == 2 and "tls.self_signed_dir" in r.stderr, r.stderr
    # siblings with a common prefix are fine
    f = _conf(tmp_path, spool_dir=f"{base}/spool", maildir_root=f"{base}/spool2")
    r = _check(f)
    assert r.returncode == 0, r.stderr


def test_start_refuses_roots_nested_through_a_symlink(hikyaku):
    """maildir_root is a symbolic link into spool_dir: the paths as written
    are apart, where they lead is not; the start refuses."""
    hk = hikyaku(start=False)
    os.makedirs(os.path.join(hk.spool, "mail"))
    os.symlink(os.path.join(hk.spool, "mail"), hk.mailroot)
    assert _check(hk.config).returncode == 0
    hk.start(wait=False)
    assert hk.proc.wait(30) != 0
    assert "inside" in hk.log() and "maildir_root" in hk.log()
    hk.proc = None


def _service_user():
    import pwd
    import pytest
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")


def test_root_start_follows_no_symlink_to_chown(hikyaku):
    """Started as root with user: set, a path component of spool_dir that is
    a symbolic link (the service user could have made it) to a root-owned
    directory: the start refuses, and the target stays root's."""
    import stat
    if os.geteuid() != 0:
        import pytest
        pytest.skip("needs root")
    pw = _service_user()
    hk = hikyaku(start=False, user="nobody")
    os.chmod(hk.tmp, 0o755)
    target = os.path.join(hk.tmp, "rootdir")
    os.makedirs(os.path.join(target, "spool"))
    os.symlink(target, os.path.join(hk.tmp, "link"))
    from conftest import to_yaml  # noqa: F401  (config rewritten below)
    with open(hk.config) as f:
        text = f.read()
    text = text.replace(f'spool_dir: "{hk.spool}"',
                        f'spool_dir: "{os.path.join(hk.tmp, "link", "spool")}"')
    with open(hk.config, "w") as f:
        f.write(text)
    hk.start(wait=False)
    assert hk.proc.wait(30) != 0
    assert "symbolic link" in hk.log(), hk.log()
    hk.proc = None
    for p in (target, os.path.join(target, "spool")):
        st = os.lstat(p)
        assert (st.st_uid, st.st_gid) == (0, 0), p
        assert stat.S_ISDIR(st.st_mode)
    assert pw.pw_uid != 0


def test_root_start_creates_roots_0750_for_the_service_user(hikyaku):
    if os.geteuid() != 0:
        import pytest
        pytest.skip("needs root")
    pw = _service_user()
    hk = hikyaku(start=False, user="nobody")
    os.chmod(hk.tmp, 0o755)
    hk.start()
    # the spool also lets everyone through (not list) to public/submit and
    # maildrop/, for sendmail (docs/ARCHITECTURE.md, "Local submission")
    for d, mode in ((hk.spool, 0o751), (hk.mailroot, 0o750)):
        st = os.stat(d)
        assert (st.st_uid, st.st_gid) == (pw.pw_uid, pw.pw_gid), d
        assert st.st_mode & 0o777 == mode, (d, oct(st.st_mode))


# ---- item 9: the Received field carries no client controls ----

def test_received_has_no_controls_with_smtputf8(hikyaku, raw):
    """With SMTPUTF8, UTF-8 may pass into Received, but never a C1 control:
    not from the HELO name, not from the one recipient's address."""
    hk = hikyaku()
    c = raw(hk.port)
    c.send("EHLO h\u009b;x.example\r\n".encode())
    c.expect(250)
    c.ok("MAIL FROM:<a@example.net> SMTPUTF8", 250, "2.1.0")
    c.send("RCPT TO:<b\u009bob@localhost>\r\n".encode())
    c.expect(250, "2.1.5")
    c.data(b"Subject: x\r\n\r\nx\r\n")
    (msg,) = hk.read_delivered("b\u009bob")
    head = msg.split(b"\n\n", 1)[0]
    received = b"Received:" + head.split(b"\nReceived:", 1)[1].split(b"\nSubject:")[0]
    assert b"\xc2\x9b" not in received and b"\x9b" not in received, received
    assert received.startswith(b"Received: from [127.0.0.1] (localhost [127.0.0.1])\n"
                               b"\t(invalid HELO h???x.example)\n"), received
    assert b"for <b??ob@localhost>" in received

    c.send("EHLO \u00e9t\u00e9.example\r\n".encode())  # a U-label: fine with SMTPUTF8
    c.expect(250)
    c.ok("MAIL FROM:<a@example.net> SMTPUTF8", 250, "2.1.0")
    c.ok("RCPT TO:<carol@localhost>", 250, "2.1.5")
    c.data(b"Subject: y\r\n\r\ny\r\n")
    (msg,) = hk.read_delivered("carol")
    assert "\nReceived: from \u00e9t\u00e9.example (localhost [127.0.0.1])\n".encode() in msg
