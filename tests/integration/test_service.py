"""What `meson install` ships besides the binary: the systemd unit (its
syntax, systemd-analyze verify when systemd is installed, and the master
running under exactly its capability bounding set with no_new_privs), the
example production configuration and the packaged default (both pass
`hikyaku check` with their paths moved into a temporary directory)."""
import os
import re
import shutil
import signal
import smtplib
import subprocess
import time

import pytest

from conftest import REPO, SERVICE_USER, free_port, hikyaku_bin

UNIT_IN = os.path.join(REPO, "dist", "hikyaku.service.in")
EXAMPLE = os.path.join(REPO, "docs", "examples", "hikyaku.yaml")
DEFAULT = os.path.join(REPO, "dist", "hikyaku.yaml.default")

# linux/capability.h
KNOWN_CAPS = {
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
}


def unit_text():
    with open(UNIT_IN) as f:
        text = f.read()
    return (text.replace("@BINDIR@", os.path.dirname(hikyaku_bin()))
            .replace("@SYSCONFDIR@", "/etc"))


def unit_parse(text):
    sections, cur = {}, None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        m = re.fullmatch(r"\[([A-Za-z]+)\]", line)
        if m:
            cur = sections.setdefault(m.group(1), {})
            continue
        m = re.fullmatch(r"([A-Za-z]+)=(.*)", line)
        assert m and cur is not None, f"line {n}: {line!r}"
        cur.setdefault(m.group(1), []).append(m.group(2))
    return sections


def test_unit_file():
    u = unit_parse(unit_text())
    assert set(u) == {"Unit", "Service", "Install"}
    s = u["Service"]
    assert s["ExecStart"] == [f"{hikyaku_bin()} serve -c /etc/hikyaku/hikyaku.yaml"]
    assert s["NoNewPrivileges"] == ["yes"] and s["ProtectSystem"] == ["strict"]
    for k in ("PrivateTmp", "ProtectHome", "ProtectKernelTunables", "ProtectKernelModules",
              "LockPersonality"):
        assert s[k] == ["yes"], k
    assert s["SystemCallArchitectures"] == ["native"]
    assert set(s["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    rw = s["ReadWritePaths"][0].split()
    assert "-/var/spool/hikyaku" in rw and "-/var/mail/vhosts" in rw
    caps = s["CapabilityBoundingSet"][0].split()
    assert set(caps) <= KNOWN_CAPS, set(caps) - KNOWN_CAPS
    assert "CAP_NET_BIND_SERVICE" in caps and "CAP_SYS_ADMIN" not in caps
    # The stop bound covers timeouts.shutdown (30 s) and the queue (5 s).
    assert int(s["TimeoutStopSec"][0]) >= 35
    assert s["KillMode"] == ["mixed"]
    assert u["Install"]["WantedBy"] == ["multi-user.target"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd not installed")
def test_unit_systemd_analyze_verify(tmp_path):
    path = tmp_path / "hikyaku.service"
    path.write_text(unit_text())
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "hikyaku.service" not in r.stderr, r.stderr


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv (util-linux)")
def test_master_runs_with_the_units_capabilities(hikyaku):
    """The master as systemd starts it: only the unit's bounding set and
    no_new_privs. It binds, hands the roots over, starts and signals its
    children, receives and delivers, and stops with 0."""
    caps = unit_parse(unit_text())["Service"]["CapabilityBoundingSet"][0].split()
    hk = hikyaku(start=False)
    bset = "-all," + ",".join("+" + c[4:].lower() for c in caps)
    log = open(hk.logfile, "ab")
    hk.proc = subprocess.Popen(
        ["setpriv", f"--bounding-set={bset}", "--no-new-privs", "--",
         hikyaku_bin(), "serve", "-c", hk.config],
        stdout=log, stderr=log, cwd=hk.tmp)
    hk._log = log
    hk.wait_port(timeout=20)
    with smtplib.SMTP("127.0.0.1", hk.port) as s:
        s.sendmail("a@example.net", ["alice@localhost"], b"Subject: caps\r\n\r\nok\r\n")
    hk.wait_delivered("alice")
    # SIGHUP: new children, which still drop to the service user.
    hk.proc.send_signal(signal.SIGHUP)
    time.sleep(1)
    assert "event=reload status=ok" in hk.log(), hk.log()[-3000:]
    assert hk.stop() == 0, hk.log()[-3000:]
    assert "Operation not permitted" not in hk.log()


def moved(text, tmp, replace):
    for a, b in replace:
        text = text.replace(a, b)
    return text


def test_example_configuration_checks(tmp_path):
    """docs/examples/hikyaku.yaml, its paths moved under tmp_path (and its
    certificate made), passes hikyaku check; with the dkim block too when
    this hikyaku knows the dkim section."""
    etc = tmp_path / "etc"
    (etc / "le").mkdir(parents=True)
    key, cert = etc / "le" / "privkey.pem", etc / "le" / "fullchain.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=mx.example.org",
                    "-keyout", str(key), "-out", str(cert), "-days", "2"],
                   check=True, capture_output=True)
    os.chmod(key, 0o600)
    users = etc / "users"
    subprocess.run([hikyaku_bin(), "user", "add", "alice@example.org", "-f", str(users)],
                   input="secret\n", text=True, check=True, capture_output=True)
    os.chmod(users, 0o600)
    (etc / "aliases").write_text("postmaster@example.org: alice@example.org\n")
    with open(EXAMPLE) as f:
        text = f.read()
    text = moved(text, tmp_path, [
        ("/etc/letsencrypt/live/mx.example.org", str(etc / "le")),
        ("/etc/hikyaku", str(etc)),
        ("/var/spool/hikyaku", str(tmp_path / "spool")),
        ("/var/mail/vhosts", str(tmp_path / "mail")),
        ("user: hikyaku", f"user: {SERVICE_USER}" if os.geteuid() == 0 else "user: \"\""),
    ])
    conf = tmp_path / "hikyaku.yaml"
    conf.write_text(text)
    r = subprocess.run([hikyaku_bin(), "check", "-c", str(conf)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "configuration ok (0 warnings)" in r.stdout, r.stdout
    assert "users file" in r.stdout and "aliases file" in r.stdout
    # What the example says it does.
    dump = subprocess.run([hikyaku_bin(), "config", "dump", "-c", str(conf)],
                          capture_output=True, text=True, check=True).stdout
    for want in ("*:25", "*:587", "*:465", "implicit", "example.org"):
        assert want in dump, want


def test_packaged_default_configuration_checks(tmp_path):
    with open(DEFAULT) as f:
        text = f.read()
    assert "@HOSTNAME@" in text
    text = moved(text, tmp_path, [
        ("@HOSTNAME@", "host.test.example"),
        ("/var/spool/hikyaku", str(tmp_path / "spool")),
        ("/var/mail/vhosts", str(tmp_path / "mail")),
        ("/var/lib/hikyaku", str(tmp_path / "lib")),
        ("127.0.0.1:25", f"127.0.0.1:{free_port()}"),
        ("user: hikyaku", f"user: {SERVICE_USER}" if os.geteuid() == 0 else "user: \"\""),
    ])
    conf = tmp_path / "hikyaku.yaml"
    conf.write_text(text)
    r = subprocess.run([hikyaku_bin(), "check", "-c", str(conf)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "configuration ok (0 warnings)" in r.stdout, r.stdout
