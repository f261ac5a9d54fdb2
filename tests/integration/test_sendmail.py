"""Local submission: `sendmail` (and `hikyaku sendmail`) as cron, PHP's
mail(), git send-email and scripts call it; the caller's uid as identity
(SO_PEERCRED on <spool>/public/submit); the maildrop fallback while the
daemon is down (docs/ARCHITECTURE.md, "Local submission")."""
import os
import re
import subprocess
import time

import pytest

from conftest import hikyaku_bin, wait_event

ROOT = os.geteuid() == 0
# An unprivileged caller other than the service user (nobody): Debian's
# "daemon" account, uid 1.
CALLER = "daemon"
EX_USAGE, EX_NOUSER = 64, 67


def sendmail(hk, *args, data=b"", user=None, argv0=None, timeout=30):
    """Run sendmail with hk's configuration, as user (via setpriv) if given."""
    cmd = [argv0 or hikyaku_bin()]
    if argv0 is None:
        cmd.append("sendmail")
    cmd += ["-C", hk.config, *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] + cmd
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1")
    return subprocess.run(cmd, input=data, capture_output=True, timeout=timeout, env=env)


def read_one(hk, user, domain="localhost", count=1):
    return hk.read_delivered(user, domain, count)[-1]


def header_block(msg):
    return msg.split(b"\n\n", 1)[0]


def test_cron_style_t_oi(hikyaku):
    hk = hikyaku()
    # -oi: a lone dot is content, not the end (cron output can have one)
    r = sendmail(hk, "-t", "-oi", data=b"To: alice@localhost\nSubject: Cron <root@host> job\n"
                 b"\nline one\n.\nline after the dot\n")
    assert r.returncode == 0, r.stderr
    msg = read_one(hk, "alice")
    assert b"\n.\nline after the dot" in msg.replace(b"\r\n", b"\n")


def test_lone_dot_ends_input_without_i(hikyaku):
    hk = hikyaku()
    r = sendmail(hk, "alice@localhost", data=b"Subject: dot\n\nkept\n.\nnot sent\n")
    assert r.returncode == 0, r.stderr
    msg = read_one(hk, "alice").replace(b"\r\n", b"\n")
    assert b"kept\n" in msg and b"not sent" not in msg


def test_php_mail_style_bcc_removed(hikyaku):
    hk = hikyaku()
    r = sendmail(hk, "-t", "-i", data=(
        b"To: \"Alice A.\" <alice@localhost>\n"
        b"Cc: bob@localhost (Bob)\n"
        b"Bcc: undisclosed: carol@localhost, dave@example.org;\n"
        b"Subject: php\n\nhello\n"))
    assert r.returncode == 0, r.stderr
    for user, dom in (("alice", "localhost"), ("bob", "localhost"), ("carol", "localhost"),
                      ("dave", "example.org")):
        msg = read_one(hk, user, dom)
        assert b"\nBcc:" not in header_block(msg.replace(b"\r\n", b"\n")), user
    # the To/Cc recipients never learn of the Bcc ones
    assert b"carol" not in read_one(hk, "alice") and b"dave" not in read_one(hk, "bob")


def test_t_adds_command_line_recipients(hikyaku):
    # Postfix: with -t the command line's recipients are added
    hk = hikyaku()
    r = sendmail(hk, "-t", "bob@localhost", data=b"To: alice@localhost\n\nboth\n")
    assert r.returncode == 0, r.stderr
    read_one(hk, "alice")
    read_one(hk, "bob")


def test_git_send_email_style(hikyaku):
    hk = hikyaku()
    r = sendmail(hk, "-i", "-f", "dev@example.net", "alice@localhost", "bob@example.org",
                 data=b"From: Dev <dev@example.net>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n"
                 b"Message-ID: <patch.1@example.net>\nSubject: [PATCH] x\n\ndiff\n")
    assert r.returncode == 0, r.stderr
    msg = read_one(hk, "alice")
    assert msg.startswith(b"Return-Path: <dev@example.net>")
    hdr = header_block(msg.replace(b"\r\n", b"\n"))
    assert hdr.count(b"\nMessage-ID:") == 1 and b"<patch.1@example.net>" in hdr
    assert hdr.count(b"\nDate:") == 1 and hdr.count(b"\nFrom:") == 1
    read_one(hk, "bob", "example.org")


def test_attached_f_and_r(hikyaku):
    hk = hikyaku()
    assert sendmail(hk, "-fone@example.net", "alice@localhost", data=b"\nx\n").returncode == 0
    assert sendmail(hk, "-r", "two@example.net", "alice@localhost",
                    data=b"\ny\n").returncode == 0
    msgs = hk.read_delivered("alice", count=2)
    paths = sorted(m.split(b"\n", 1)[0] for m in msgs)
    assert paths == [b"Return-Path: <one@example.net>", b"Return-Path: <two@example.net>"]


def test_null_sender(hikyaku):
    hk = hikyaku()
    r = sendmail(hk, "-f", "<>", "alice@localhost", data=b"Subject: n\n\nnull\n")
    assert r.returncode == 0, r.stderr
    msg = read_one(hk, "alice")
    assert msg.startswith(b"Return-Path: <>")
    assert b"<MAILER-DAEMON@mx.test.example>" in header_block(msg)


def test_missing_headers_added_and_F(hikyaku):
    hk = hikyaku()
    r = sendmail(hk, "-F", "Cron Daemon", "alice@localhost", data=b"Subject: s\n\nbody\n")
    assert r.returncode == 0, r.stderr
    hdr = header_block(read_one(hk, "alice").replace(b"\r\n", b"\n"))
    assert re.search(rb"\nFrom: \"Cron Daemon\" <[^@>]+@mx\.test\.example>\n", hdr), hdr
    assert b"\nDate: " in hdr and b"\nMessage-ID: <" in hdr
    assert b"Received: by mx.test.example (hikyaku, from userid" in hdr


def test_bs_smtp_dialogue(hikyaku):
    hk = hikyaku()
    dialogue = (b"EHLO client\r\nMAIL FROM:<s@example.net>\r\nRCPT TO:<alice@localhost>\r\n"
                b"DATA\r\nSubject: bs\r\n\r\nvia -bs\r\n.\r\nQUIT\r\n")
    r = sendmail(hk, "-bs", data=dialogue)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert out.startswith("220 ")
    assert "250 2.0.0 Ok: queued as" in out and "221 " in out
    assert b"via -bs" in read_one(hk, "alice")


def test_bs_lf_lines(hikyaku):
    # a person at a terminal: LF line ends
    hk = hikyaku()
    r = sendmail(hk, "-bs", data=b"HELO x\nMAIL FROM:<>\nRCPT TO:<alice@localhost>\nDATA\n"
                 b"\nlf\n.\nQUIT\n")
    assert r.returncode == 0
    assert "queued as" in r.stdout.decode()
    read_one(hk, "alice")


def test_bp_and_mailq(hikyaku, tmp_path):
    hk = hikyaku()
    # a remote recipient stays queued (DNS goes nowhere in tests)
    r = sendmail(hk, "bob@remote.example", data=b"Subject: q\n\nqueued\n")
    assert r.returncode == 0, r.stderr  # a local caller may relay
    qid = wait_event(hk, "accept")[0]["qid"]
    r = sendmail(hk, "-bp")
    assert r.returncode == 0, r.stderr
    assert qid in r.stdout.decode()
    link = tmp_path / "mailq"
    link.symlink_to(hikyaku_bin())
    r = subprocess.run([str(link), "-c", hk.config], capture_output=True, timeout=30)
    assert r.returncode == 0 and qid in r.stdout.decode()
    # without -c, the configuration sendmail would use ($HIKYAKU_CONFIG)
    r = subprocess.run([str(link)], capture_output=True, timeout=30,
                       env=dict(os.environ, HIKYAKU_CONFIG=hk.config))
    assert r.returncode == 0 and qid in r.stdout.decode()


def test_argv0_sendmail_and_newaliases(hikyaku, tmp_path):
    hk = hikyaku()
    link = tmp_path / "sendmail"
    link.symlink_to(hikyaku_bin())
    r = sendmail(hk, "-t", data=b"To: alice@localhost\n\nby name\n", argv0=str(link))
    assert r.returncode == 0, r.stderr
    read_one(hk, "alice")
    na = tmp_path / "newaliases"
    na.symlink_to(hikyaku_bin())
    r = subprocess.run([str(na)], capture_output=True, timeout=30)
    assert r.returncode == 0 and b"nothing to compile" in r.stdout


def test_exit_codes(hikyaku):
    hk = hikyaku()
    assert sendmail(hk, data=b"\nno rcpt\n").returncode == EX_USAGE
    assert sendmail(hk, "-t", data=b"Subject: none\n\nx\n").returncode == EX_USAGE
    assert sendmail(hk, "-Q", "a@localhost").returncode == EX_USAGE
    assert sendmail(hk, "-f").returncode == EX_USAGE
    r = sendmail(hk, "bad address@", data=b"\nx\n")
    assert r.returncode == EX_NOUSER and b"bad recipient" in r.stderr
    assert sendmail(hk, "-f", "a b@@c", "alice@localhost",
                    data=b"\nx\n").returncode == EX_NOUSER
    r = subprocess.run([hikyaku_bin(), "sendmail", "-C", "/nonexistent.yaml", "a@localhost"],
                       input=b"\nx\n", capture_output=True, timeout=30)
    assert r.returncode == 78  # EX_CONFIG
    assert hk.delivered("alice") == []


def test_refused_recipient_exit_and_oem(hikyaku):
    hk = hikyaku(users=["alice@example.org"])
    r = sendmail(hk, "nobody-here@example.org", "alice@example.org", data=b"\nx\n")
    assert r.returncode == EX_NOUSER and b"nobody-here@example.org" in r.stderr
    read_one(hk, "alice", "example.org")  # the other one got it
    # -oem: the error is mailed back to the sender, exit 0
    r = sendmail(hk, "-oem", "-f", "alice@example.org", "ghost@example.org", data=b"\nx\n")
    assert r.returncode == 0, r.stderr
    msg = hk.read_delivered("alice", "example.org", 2)
    assert any(b"ghost@example.org" in m and b"Undeliverable" in m for m in msg)


@pytest.mark.skipif(not ROOT, reason="needs root to run as another user")
def test_caller_uid_recorded(hikyaku):
    import pwd
    uid = pwd.getpwnam(CALLER).pw_uid
    hk = hikyaku()
    # an unprivileged user may set the envelope sender (as with Postfix),
    # but the uid the kernel gave is what is recorded
    r = sendmail(hk, "-f", "ceo@example.net", "alice@localhost", data=b"\nforged?\n",
                 user=CALLER)
    assert r.returncode == 0, r.stderr
    msg = read_one(hk, "alice")
    assert f"(hikyaku, from userid {uid})".encode() in msg
    ev = wait_event(hk, "accept")[0]
    assert ev["uid"] == str(uid) and ev["client"] == "local"
    # without -f: the account name at our host name
    r = sendmail(hk, "alice@localhost", data=b"\nplain\n", user=CALLER)
    assert r.returncode == 0
    msgs = hk.read_delivered("alice", count=2)
    assert any(m.startswith(f"Return-Path: <{CALLER}@mx.test.example>".encode()) for m in msgs)


@pytest.mark.skipif(not ROOT, reason="needs root to run as another user")
def test_bs_records_caller_uid(hikyaku):
    import pwd
    uid = pwd.getpwnam(CALLER).pw_uid
    hk = hikyaku()
    r = sendmail(hk, "-bs", user=CALLER, data=(
        b"EHLO x\r\nMAIL FROM:<s@example.net>\r\nRCPT TO:<alice@localhost>\r\n"
        b"DATA\r\n\r\nbs as daemon\r\n.\r\nQUIT\r\n"))
    assert r.returncode == 0
    assert f"(hikyaku, from userid {uid})".encode() in read_one(hk, "alice")
    # no AUTH, no STARTTLS on the local socket: the kernel says who it is
    assert b"AUTH" not in r.stdout and b"STARTTLS" not in r.stdout


@pytest.mark.skipif(not ROOT, reason="needs root to run as another user")
def test_xuid_refused_to_others(hikyaku):
    hk = hikyaku()
    sock = os.path.join(hk.spool, "public", "submit")
    script = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\n"
              "f=s.makefile('rb')\nf.readline()\ns.sendall(b'XUID 0\\r\\n')\n"
              "print(f.readline().decode().strip())\n")
    r = subprocess.run(["setpriv", f"--reuid={CALLER}", f"--regid={CALLER}", "--clear-groups",
                        "/usr/bin/python3", "-c", script, sock],
                       capture_output=True, timeout=30)
    assert r.stdout.decode().startswith("550 5.7.0"), (r.stdout, r.stderr)


@pytest.mark.skipif(not ROOT, reason="needs root to run as another user")
def test_maildrop_while_down(hikyaku, monkeypatch):
    import pwd
    uid = pwd.getpwnam(CALLER).pw_uid
    # the harness gives what a test planted in the spool to the service
    # user at start; a drop is the caller's and must stay so
    real_lchown = os.lchown
    monkeypatch.setattr(os, "lchown", lambda p, u, g: None if "/maildrop/" in p
                        else real_lchown(p, u, g))
    hk = hikyaku()
    hk.stop()
    r = sendmail(hk, "-t", "-oi", data=b"To: alice@localhost\nSubject: down\n\nwhile down\n",
                 user=CALLER)
    assert r.returncode == 0, r.stderr
    drop = os.path.join(hk.spool, "maildrop")
    names = os.listdir(drop)
    assert len(names) == 1 and names[0].startswith("d")
    st = os.stat(os.path.join(drop, names[0]))
    assert st.st_uid == uid
    # another user (not the service user, who owns it) cannot list the
    # directory, so cannot find the file to read it
    r = subprocess.run(["setpriv", "--reuid=bin", "--regid=bin", "--clear-groups",
                        "ls", drop], capture_output=True)
    assert r.returncode != 0
    hk.start()
    msg = read_one(hk, "alice")
    assert b"while down" in msg
    assert f"(hikyaku, from userid {uid})".encode() in msg
    assert wait_event(hk, "pickup", uid=str(uid))
    assert os.listdir(drop) == []


@pytest.mark.skipif(not ROOT, reason="planted files stand for another user's")
def test_maildrop_hostile_files(hikyaku):
    hk = hikyaku()
    drop = os.path.join(hk.spool, "maildrop")
    bad = "d" + "0" * 32
    link = "d" + "1" * 32
    with open(os.path.join(drop, bad), "wb") as f:
        f.write(b"HKDROP1\nS\xff\xff\xff\xffjunk")
    os.symlink("/etc/passwd", os.path.join(drop, link))
    assert len(wait_event(hk, "maildrop_refused", count=2, timeout=15)) == 2, hk.log()[-3000:]
    # the bad file is kept aside for the operator, the link is removed
    assert sorted(os.listdir(drop)) == ["x" + "0" * 32]
    assert os.path.exists("/etc/passwd")


def test_submit_socket_modes(hikyaku):
    hk = hikyaku()
    import stat
    s = os.stat(os.path.join(hk.spool, "public", "submit"))
    assert stat.S_ISSOCK(s.st_mode) and stat.S_IMODE(s.st_mode) == 0o666
    assert stat.S_IMODE(os.stat(os.path.join(hk.spool, "maildrop")).st_mode) == 0o1733
    assert stat.S_IMODE(os.stat(os.path.join(hk.spool, "public")).st_mode) == 0o755
    # the spool: searchable by everyone (to reach public/ and maildrop/),
    # never listable by others
    assert stat.S_IMODE(os.stat(hk.spool).st_mode) & 0o007 == 0o001


def test_more_recipients_than_limit_sent_in_rounds(hikyaku):
    # 452 4.5.3 past limits.recipients: the rest go in a further transaction
    hk = hikyaku(limits={"recipients": 2})
    rcpts = [f"u{i}@localhost" for i in range(5)]
    r = sendmail(hk, *rcpts, data=b"Subject: many\n\nall of them\n")
    assert r.returncode == 0, r.stderr
    for i in range(5):
        read_one(hk, f"u{i}")
    assert len(wait_event(hk, "accept", count=3)) == 3
    assert os.listdir(os.path.join(hk.spool, "maildrop")) == []


def test_body_without_headers(hikyaku):
    # echo hello | sendmail user: the text stays the body, under our From
    hk = hikyaku()
    r = sendmail(hk, "alice@localhost", data=b"hello: not a header? yes it is\nplain text\n")
    assert r.returncode == 0, r.stderr
    r = sendmail(hk, "alice@localhost", data=b"just text, no colon first\nsecond line\n")
    assert r.returncode == 0, r.stderr
    msgs = hk.read_delivered("alice", count=2)
    body = [m for m in msgs if b"just text" in m][0].split(b"\n\n", 1)
    assert body[1] == b"just text, no colon first\nsecond line\n"
    assert b"\nFrom: " in body[0]


def test_busy_daemon_parks_in_maildrop(hikyaku):
    # a 421 at the greeting (local connections share one per-IP slot) is a
    # temporary failure: the message waits in the maildrop, exit 0, and the
    # pickup delivers it once the slot is free
    import socket
    hk = hikyaku(limits={"connections_per_ip": 1})
    held = socket.socket(socket.AF_UNIX)
    held.connect(os.path.join(hk.spool, "public", "submit"))
    assert held.recv(512).startswith(b"220 ")
    r = sendmail(hk, "-v", "alice@localhost", data=b"Subject: busy\n\nparked\n")
    assert r.returncode == 0, r.stderr
    assert b"maildrop" in r.stderr
    assert len(os.listdir(os.path.join(hk.spool, "maildrop"))) == 1
    held.close()
    hk.wait_delivered("alice", timeout=15)  # the pickup scans every 5 s
    assert b"parked" in read_one(hk, "alice")
