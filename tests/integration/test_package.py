"""The Debian package, end to end: `dpkg-buildpackage -us -uc` on a copy of
the working tree builds a .deb that passes lintian with no error; installed
with apt in a clean Debian 12 chroot (debootstrap --variant=minbase) it
creates the service user, the directories and a configuration, enables
the unit, and, started as the init would start it (no systemd in a
chroot), receives a message on port 25 (in a network namespace of its
own) and delivers it into the Maildir; SIGTERM stops it with 0; purge
removes the configuration and the spool and keeps the mailboxes.

The message goes in with `sendmail` when the package has it (the sendmail
branch installs /usr/sbin/sendmail), else by SMTP (smtplib) to port 25.

Needs root (chroot, mounts, namespaces). Skipped, saying why, only when
there is no Debian 12 base to start from (no debootstrap, or it cannot
reach the archive) or apt in the chroot cannot reach the archive. The base
is cached: $HIKYAKU_DEB_BASE, else ../shared/fresh-check.sh's tarball,
else a debootstrap made once into /var/cache/hikyaku-test/."""
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import REPO

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: chroot, mounts")

CACHE = "/var/cache/hikyaku-test/bookworm-minbase.tar"
BASES = [os.environ.get("HIKYAKU_DEB_BASE", ""), "/var/tmp/hikyaku-fresh-base.tar", CACHE]


def sh(cmd, timeout=600, check=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd} exited {r.returncode}:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return r


def mirror():
    for path in ["/etc/apt/sources.list"] + glob.glob("/etc/apt/sources.list.d/*.sources"):
        try:
            with open(path) as f:
                for line in f:
                    w = line.split()
                    if len(w) >= 3 and w[0] == "deb" and w[1].startswith("http") and w[2] == "bookworm":
                        return w[1]
                    if len(w) >= 2 and w[0] == "URIs:" and w[1].startswith("http"):
                        return w[1]
        except OSError:
            pass
    return "http://deb.debian.org/debian"


def base_tarball():
    for b in BASES:
        if b and os.path.isfile(b) and os.path.getsize(b) > 0:
            return b
    if shutil.which("debootstrap") is None:
        pytest.skip("no Debian 12 base: debootstrap is not installed "
                    "(scripts/install-deps.sh --test installs it)")
    os.makedirs(os.path.dirname(CACHE), exist_ok=True)
    d = tempfile.mkdtemp(prefix="hk-debootstrap-", dir="/var/tmp")
    try:
        r = sh(["debootstrap", "--variant=minbase", "bookworm", d, mirror()], timeout=1200,
               check=False)
        if r.returncode != 0:
            pytest.skip("no Debian 12 base: debootstrap failed (no network to the archive?): "
                        + (r.stderr or r.stdout)[-500:])
        sh(["tar", "-C", d, "-cf", CACHE + ".tmp", "."])
        os.rename(CACHE + ".tmp", CACHE)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return CACHE


def build_deb(work):
    for tool in ("dpkg-buildpackage", "dh", "lintian", "pandoc"):
        assert shutil.which(tool), f"{tool} missing: run scripts/install-deps.sh --test"
    src = os.path.join(work, "hikyaku")
    os.makedirs(src)
    # The working tree as git sees it (committed or not, ignored files
    # out): dpkg-buildpackage writes its results next to the tree, here
    # in work/, never beside the developer's repository.
    files = sh(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO).stdout
    subprocess.run(["tar", "--null", "-cf", "-", "-T", "-"], input=files.encode(), cwd=REPO,
                   stdout=open(os.path.join(work, "src.tar"), "wb"), check=True)
    sh(["tar", "-xf", os.path.join(work, "src.tar"), "-C", src])
    env = dict(os.environ, DEB_BUILD_OPTIONS="nocheck parallel=2")
    env.pop("MAKEFLAGS", None)
    sh(["dpkg-buildpackage", "-us", "-uc"], cwd=src, timeout=1800, env=env)
    debs = glob.glob(os.path.join(work, "hikyaku_*.deb"))
    changes = glob.glob(os.path.join(work, "hikyaku_*.changes"))
    assert len(debs) == 1 and len(changes) == 1, os.listdir(work)
    return debs[0], changes[0]


class Chroot:
    def __init__(self, root):
        self.root = root
        self.mounts = []
        self.pids = []

    def mount(self, *args, target):
        sh(["mount", *args, os.path.join(self.root, target)])
        self.mounts.append(os.path.join(self.root, target))

    def run(self, script, timeout=600, check=True, netns=None):
        cmd = ["chroot", self.root, "/bin/sh", "-ec", script]
        if netns:
            cmd = ["nsenter", "-t", str(netns), "-n"] + cmd
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
               "LC_ALL": "C", "HOME": "/root"}
        return sh(cmd, timeout=timeout, check=check, env=env)

    def path(self, p):
        return os.path.join(self.root, p.lstrip("/"))

    def cleanup(self):
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for m in reversed(self.mounts):
            subprocess.run(["umount", "-l", m], capture_output=True)
        subprocess.run(["rm", "-rf", "--one-file-system", self.root], capture_output=True)


def test_package_builds_installs_and_delivers():
    work = tempfile.mkdtemp(prefix="hk-deb-", dir="/var/tmp")
    ch = None
    try:
        deb, changes = build_deb(work)

        # lintian: no errors (warnings are reported, not fatal).
        r = sh(["lintian", "--fail-on", "error", "--tag-display-limit", "0", changes],
               timeout=600, check=False)
        tags = "\n".join(l for l in (r.stdout + r.stderr).splitlines()
                         if not l.startswith("running with root"))
        print("lintian:\n" + (tags or "(no tags)"))
        assert r.returncode == 0, tags
        assert not [l for l in tags.splitlines() if l.startswith("E:")], tags
        contents = sh(["dpkg-deb", "-c", deb]).stdout
        for f in ("./usr/bin/hikyaku", "./lib/systemd/system/hikyaku.service",
                  "./usr/share/man/man8/hikyaku.8.gz", "./usr/share/man/man5/hikyaku.yaml.5.gz",
                  "./usr/share/man/man8/sendmail.8.gz",
                  "./usr/share/doc/hikyaku/examples/hikyaku.yaml"):
            assert f in contents, f
        fields = sh(["dpkg-deb", "-f", deb, "Provides", "Conflicts", "Replaces"]).stdout
        assert fields.count("mail-transport-agent") == 3, fields

        base = base_tarball()
        root = os.path.join(work, "root")
        os.makedirs(root)
        ch = Chroot(root)
        sh(["tar", "-C", root, "-xf", base], timeout=600)
        # A base tarred from a mktemp -d directory has a 0700 /: on a real
        # machine it is 0755, and the service user must traverse it.
        os.chmod(root, 0o755)
        ch.mount("-t", "proc", "proc", target="proc")
        ch.mount("--bind", "/dev", target="dev")
        shutil.copy("/etc/resolv.conf", ch.path("/etc/resolv.conf"))
        shutil.copy(deb, ch.path("/root/hikyaku.deb"))
        r = ch.run("apt-get update -q", check=False)
        if r.returncode != 0:
            pytest.skip("apt in the chroot cannot reach the archive: " + r.stderr[-500:])
        ch.run("apt-get install -y -q --no-install-recommends /root/hikyaku.deb", timeout=900)

        # What postinst and dh_installsystemd did.
        ch.run("getent passwd hikyaku && getent group hikyaku")
        for d in ("/var/spool/hikyaku", "/var/mail/vhosts"):
            st = os.stat(ch.path(d))  # (setgid under /var/mail, 2775: harmless)
            assert st.st_mode & 0o777 == 0o750, (d, oct(st.st_mode))
        out = ch.run("stat -c %U:%G /var/spool/hikyaku /var/mail/vhosts").stdout.split()
        assert out == ["hikyaku:hikyaku"] * 2, out
        assert os.path.islink(ch.path("/etc/systemd/system/multi-user.target.wants/hikyaku.service"))
        with open(ch.path("/etc/hikyaku/hikyaku.yaml")) as f:
            conf = f.read()
        assert "@HOSTNAME@" not in conf and "127.0.0.1:25" in conf
        r = ch.run("hikyaku check -c /etc/hikyaku/hikyaku.yaml")
        assert "configuration ok" in r.stdout, r.stdout

        # The init's start, in a network namespace of its own.
        holder = subprocess.Popen(["unshare", "-n", "sleep", "600"])
        ch.pids.append(holder.pid)
        time.sleep(0.3)
        sh(["nsenter", "-t", str(holder.pid), "-n", "ip", "link", "set", "lo", "up"])
        log = open(os.path.join(work, "serve.log"), "wb")
        server = subprocess.Popen(
            ["nsenter", "-t", str(holder.pid), "-n", "chroot", root,
             "/usr/bin/hikyaku", "serve", "-c", "/etc/hikyaku/hikyaku.yaml"],
            stdout=log, stderr=log, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        ch.pids.append(server.pid)

        def serve_log():
            with open(os.path.join(work, "serve.log"), errors="replace") as f:
                return f.read()[-4000:]

        if os.path.exists(ch.path("/usr/sbin/sendmail")):
            how = "sendmail"
            deadline = time.time() + 30
            while "event=listening" not in serve_log() and time.time() < deadline:
                time.sleep(0.2)
            ch.run("printf 'Subject: from the package\\n\\nhello\\n' | /usr/sbin/sendmail root@localhost",
                   netns=holder.pid, timeout=60)
        else:
            how = "smtp"  # the sendmail branch is not merged here yet
            client = (
                "import smtplib, time\n"
                "for _ in range(150):\n"
                "    try:\n"
                "        s = smtplib.SMTP('127.0.0.1', 25, timeout=10); break\n"
                "    except OSError: time.sleep(0.2)\n"
                "s.sendmail('someone@example.net', ['root@localhost'],\n"
                "           b'Subject: from the package\\r\\n\\r\\nhello\\r\\n')\n"
                "s.quit()\n")
            r = sh(["nsenter", "-t", str(holder.pid), "-n", "/usr/bin/python3", "-c", client],
                   timeout=120, check=False)
            assert r.returncode == 0, r.stderr + serve_log()
        new = ch.path("/var/mail/vhosts/localhost/root/Maildir/new")
        deadline = time.time() + 30
        while time.time() < deadline and not (os.path.isdir(new) and os.listdir(new)):
            time.sleep(0.2)
        assert os.path.isdir(new) and os.listdir(new), f"not delivered ({how}):\n{serve_log()}"
        with open(os.path.join(new, os.listdir(new)[0]), "rb") as f:
            msg = f.read()
        assert b"Subject: from the package" in msg and b"hello" in msg
        print(f"delivered through {how}")

        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0, serve_log()

        # Purge: configuration and spool go, mailboxes stay.
        ch.run("apt-get purge -y -q hikyaku", timeout=300)
        assert not os.path.exists(ch.path("/etc/hikyaku/hikyaku.yaml"))
        assert not os.path.exists(ch.path("/var/spool/hikyaku"))
        assert os.listdir(new)
    except BaseException:
        log = os.path.join(work, "serve.log")
        if os.path.exists(log):
            with open(log, errors="replace") as f:
                print("serve.log:\n" + f.read()[-6000:])
        raise
    finally:
        if ch is not None:
            ch.cleanup()
        shutil.rmtree(work, ignore_errors=True)
