"""`hikyaku check` on ownership and modes (keys, users file, spool, Maildir
root) and `hikyaku fix-permissions`, which gives the spool and Maildir
trees to `user:` without following a link planted there."""
import os
import pwd
import subprocess

import pytest

from conftest import SERVICE_USER, hikyaku_bin

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="owners can only be changed as root")


def run(*args):
    return subprocess.run([hikyaku_bin(), *args], capture_output=True, text=True, timeout=60)


def owner(path):
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def make_tree(hk):
    """A spool and Maildir left behind by another user (root here)."""
    for d in ("queue", "incoming", "deferred/ab"):
        os.makedirs(os.path.join(hk.spool, d), exist_ok=True)
    with open(os.path.join(hk.spool, "queue", "0123ABCD"), "w") as f:
        f.write("x")
    md = os.path.join(hk.mailroot, "localhost", "alice", "Maildir")
    for d in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(md, d), exist_ok=True)
    with open(os.path.join(md, "new", "1.msg"), "w") as f:
        f.write("Subject: x\n\nx\n")
    os.chmod(os.path.join(md, "new", "1.msg"), 0o4777)  # set-uid, world-writable


def test_check_reports_bad_owners_and_modes(hikyaku, tmp_path):
    key = tmp_path / "key.pem"
    cert = tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=mx.test.example",
                    "-keyout", str(key), "-out", str(cert), "-days", "2"],
                   check=True, capture_output=True)
    os.chmod(key, 0o644)
    hk = hikyaku(start=False, users=["alice@localhost"],
                 tls={"certificates": [{"cert": str(cert), "key": str(key)}]})
    os.chmod(hk.users_file, 0o666)
    make_tree(hk)
    r = run("check", "-c", hk.config)
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout
    assert f"error: tls key {key} is readable by others (mode 0644)" in out
    assert f"error: users_file {hk.users_file} is writable by group or others (mode 0666)" in out
    assert f"error: {hk.spool} is owned by 0:0 mode 0755, not by {SERVICE_USER}" in out
    assert f"not by {SERVICE_USER}" in out
    assert "run hikyaku fix-permissions" in out
    assert f"{hk.mailroot}/localhost is owned by 0:0" in out
    assert "errors" in out.splitlines()[-1]

    os.chmod(key, 0o600)
    os.chmod(hk.users_file, 0o600)
    assert run("fix-permissions", "-c", hk.config).returncode == 0
    r = run("check", "-c", hk.config)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "configuration ok" in r.stdout


def test_fix_permissions_follows_no_link(hikyaku, tmp_path):
    hk = hikyaku(start=False)
    make_tree(hk)
    pw = pwd.getpwnam(SERVICE_USER)
    # Files of the system, stood for by root's files outside the trees.
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0::/root:/bin/bash\n")
    os.chmod(secret, 0o644)
    secret_dir = tmp_path / "etc"
    secret_dir.mkdir()
    (secret_dir / "shadow").write_text("root:*:1::::::\n")
    hard = tmp_path / "hard-target"
    hard.write_text("y")
    # What a service user could plant in its spool and Maildirs.
    os.symlink(secret, os.path.join(hk.spool, "queue", "evil"))
    os.symlink(secret_dir, os.path.join(hk.spool, "deferred", "evil-dir"))
    os.symlink(secret, os.path.join(hk.mailroot, "localhost", "alice", "Maildir", "new", "l"))
    same_fs = os.stat(hk.spool).st_dev == os.stat(tmp_path).st_dev
    if same_fs:
        os.link(hard, os.path.join(hk.spool, "queue", "hardlink"))

    r = run("fix-permissions", "-c", hk.config)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "is a symbolic link: left alone, not followed" in r.stdout
    # The trees are the service user's now ...
    for top in (hk.spool, hk.mailroot):
        for d, dirs, files in os.walk(top):
            for n in [d] + [os.path.join(d, x) for x in dirs + files]:
                if os.path.islink(n) or n.endswith("hardlink"):
                    continue
                assert owner(n) == (pw.pw_uid, pw.pw_gid), n
    msg = os.path.join(hk.mailroot, "localhost", "alice", "Maildir", "new", "1.msg")
    assert os.stat(msg).st_mode & 0o7777 == 0o644
    # ... and nothing a link pointed at changed hands.
    for n in (secret, secret_dir, secret_dir / "shadow", hard):
        assert owner(n) == (0, 0), n
    assert os.stat(secret).st_mode & 0o7777 == 0o644
    for n in (os.path.join(hk.spool, "queue", "evil"), os.path.join(hk.spool, "deferred", "evil-dir")):
        assert os.path.islink(n)
    if same_fs:
        assert "hard links: left alone" in r.stdout

    # The server starts on the repaired trees and delivers into them.
    os.unlink(os.path.join(hk.spool, "queue", "evil"))
    os.unlink(os.path.join(hk.spool, "queue", "0123ABCD"))
    if same_fs:
        os.unlink(os.path.join(hk.spool, "queue", "hardlink"))
    import smtplib
    hk.start()
    with smtplib.SMTP("127.0.0.1", hk.port) as s:
        s.sendmail("a@example.net", ["alice@localhost"], b"Subject: after\r\n\r\nok\r\n")
    hk.wait_delivered("alice", count=2)


def test_fix_permissions_needs_a_user(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text(f"listen: ['127.0.0.1:2525']\nspool_dir: {tmp_path}/spool\n"
                    f"maildir_root: {tmp_path}/mail\ntls: {{self_signed_dir: {tmp_path}/tls}}\n")
    r = run("fix-permissions", "-c", str(conf))
    assert r.returncode == 1
    assert "no user:" in r.stdout
