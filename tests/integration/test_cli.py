"""The binary's other faces: check, config dump, config reference."""
import os
import shutil
import subprocess

import pytest

from conftest import REPO, hikyaku_bin


def run(*args, cwd=None):
    return subprocess.run([hikyaku_bin(), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=30)


def test_config_reference_matches_docs():
    r = run("config", "reference")
    assert r.returncode == 0
    with open(os.path.join(REPO, "docs", "CONFIG.md")) as f:
        assert r.stdout == f.read(), "docs/CONFIG.md is stale: regenerate with " \
            "`hikyaku config reference > docs/CONFIG.md`"


def test_config_dump_reloads(tmp_path):
    r = run("config", "dump")
    assert r.returncode == 0
    assert "127.0.0.1:2525" in r.stdout
    f = tmp_path / "dumped.yaml"
    f.write_text(r.stdout)
    again = run("config", "dump", "-c", str(f))
    assert again.returncode == 0
    # Same settings; only the first comment line (the source) differs.
    assert again.stdout.splitlines()[1:] == r.stdout.splitlines()[1:]


def test_check_reports_errors_with_position(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("listen:\n  - 127.0.0.1:2525\nlimits:\n  recipients: lots\n"
                 "tls:\n  self_signed_dir: tls\n")
    r = run("check", "-c", str(f))
    assert r.returncode == 2
    assert f"{f}:4:" in r.stderr


def test_check_unknown_key(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("listen: ['127.0.0.1:2525']\nmaildir: /tmp\ntls: {self_signed_dir: tls}\n")
    r = run("check", "-c", str(f))
    assert r.returncode == 2
    assert f"{f}:2:1" in r.stderr


def test_check_ok_with_warnings(tmp_path):
    f = tmp_path / "ok.yaml"
    f.write_text("listen: ['*:2525']\nlocal_domains: [example.org]\naccept_any_user: true\n"
                 "tls: {self_signed_dir: tls}\n")
    r = run("check", "-c", str(f))
    assert r.returncode == 0, r.stderr
    assert "configuration ok" in r.stdout
    assert "warning" in r.stdout


EMBEDDED_SCRIPT = r"""
import os, smtplib, socket, subprocess, sys, time
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
p = subprocess.Popen([sys.argv[1], "serve"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                     text=True)
try:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", 2525), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    with smtplib.SMTP("127.0.0.1", 2525) as s:
        s.sendmail("you@example.org", ["alice@localhost"], b"Subject: tour\r\n\r\nhi\r\n")
    new = "var/mail/localhost/alice/Maildir/new"
    for _ in range(200):
        if os.path.isdir(new) and os.listdir(new):
            break
        time.sleep(0.05)
    print("delivered", len(os.listdir(new)))
finally:
    p.terminate()
    out, _ = p.communicate(timeout=10)
    print(out)
    print("exit", p.returncode)
"""


def test_embedded_default_end_to_end(tmp_path):
    """`hikyaku serve` with no config, exactly as the README tour runs it: in a
    private network namespace so that 127.0.0.1:2525 is the test's own."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) for a private loopback")
    # As root the default runs smtpd and the queue as nobody, who must be
    # able to enter the working directory (a checkout is 0755; pytest's
    # directories are 0700).
    os.chmod(tmp_path, 0o755)
    r = subprocess.run(["unshare", "-n", "/usr/bin/python3", "-c", EMBEDDED_SCRIPT,
                        hikyaku_bin()], capture_output=True, text=True, cwd=tmp_path,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert "delivered 1" in r.stdout
    assert "SMTP on 127.0.0.1:2525" in r.stdout
    assert "any user at localhost" in r.stdout
    assert "./var/mail/localhost/<user>/Maildir" in r.stdout
    assert "./var/spool" in r.stdout
    assert "exit 0" in r.stdout
    assert os.path.isdir(tmp_path / "var" / "spool" / "queue")


def test_usage_on_bad_command():
    r = run("frobnicate")
    assert r.returncode == 2
    assert "usage:" in r.stderr
