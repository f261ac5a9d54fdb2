"""A private Exim (Debian 12's exim4-daemon-light, GnuTLS) as a real peer of
hikyaku in the integration tests.

Debian's exim4 packages conflict with postfix (both provide
mail-transport-agent), and postfix is a test peer too, so exim4 is not
installed: scripts/fetch-exim.sh (run by scripts/install-deps.sh --test)
downloads the .debs (with libidn12, which Exim links and nothing else here
installs) and extracts them under EXIM_ROOT. Nothing is downloaded at test
time; without the binary a test fails under scripts/test.sh
(HIKYAKU_REQUIRE_PEERS=1) and is skipped otherwise. The binary is run as root with its own config (-C; root keeps
its privileges with -C) inside a private mount namespace (unshare -m) where
/etc/passwd and /etc/group are copies with the Debian-exim user added:
Exim looks that user up (compiled in) before it reads any config, and the
host's user database is left alone.

As a client relaying everything to hikyaku (one delivery, in the
foreground):

    ex = exim_instance(relay_to=hk.port)
    ex.send("a@ex.test", ["bob@localhost"], msg)

As a server (daemon on a free port, STARTTLS with a self-signed
certificate) delivering the domain ex.test into one Maildir:

    ex = exim_instance(serve=True)
    ... hikyaku routes ex.test to 127.0.0.1:ex.port ...
    ex.wait_maildir(1)

The `exim_instance` fixture stops every daemon it started (by PID) and
removes its directory. Everything is on 127.0.0.1; Exim never uses DNS.
"""
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import free_port

EXIM_ROOT = os.path.join(os.environ.get("HIKYAKU_EXIM_CACHE", "/var/cache/hikyaku-test/exim"),
                         "root")
EXIM = os.path.join(EXIM_ROOT, "usr/sbin/exim4")
EXIM_LIBS = os.path.join(EXIM_ROOT, "usr/lib/x86_64-linux-gnu")
LOADER = "/lib64/ld-linux-x86-64.so.2"
# Inside the namespace only; any uid that is free on the host.
EXIM_UID = 64999

# What the GnuTLS side logs when the peer closes without close_notify.
TLS_TRUNCATION = re.compile(r"non-properly terminated|TLS session: \(gnutls_record_recv\)")

CONFIG = """\
# Exim config of a test instance, written by exim_helpers.py
exim_path = {exim}
primary_hostname = ex.test
qualify_domain = ex.test
spool_directory = {dir}/spool
log_file_path = {dir}/log/%slog
pid_file_path = {dir}/exim.pid
daemon_smtp_ports = {port}
local_interfaces = 127.0.0.1
keep_environment =
host_lookup =
rfc1413_hosts =
rfc1413_query_timeout = 0s
log_selector = +tls_cipher +tls_peerdn +smtp_connection +received_recipients
tls_certificate = {dir}/cert.pem
tls_privatekey = {dir}/key.pem
tls_advertise_hosts = *
acl_smtp_rcpt = acl_rcpt
acl_smtp_data = acl_data

begin acl
acl_rcpt:
  accept hosts = 127.0.0.0/8
  deny
acl_data:
  accept

begin routers
mailbox:
  driver = accept
  domains = ex.test
  transport = maildir
{relay_router}
begin transports
maildir:
  driver = appendfile
  directory = {dir}/Maildir
  maildir_format
  create_directory
  delivery_date_add
  envelope_to_add
  return_path_add
  user = Debian-exim
  group = Debian-exim
remote_smtp:
  driver = smtp
  port = {relay_port}
  allow_localhost
  hosts_require_tls = *
  tls_verify_certificates =

begin retry
*  *  F,1m,10s
"""

RELAY_ROUTER = """\
to_hikyaku:
  driver = manualroute
  domains = ! ex.test
  transport = remote_smtp
  route_list = * 127.0.0.1
  self = send
"""


def exim_missing():
    """Why Exim cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (Exim runs with -C and in a private mount namespace)"
    if not os.access(EXIM, os.X_OK):
        return (f"no Exim binary at {EXIM}: run scripts/fetch-exim.sh or "
                "scripts/install-deps.sh --test (they download and extract Debian's "
                "exim4-daemon-light)")
    return None


class EximInstance:
    def __init__(self, relay_to=None, serve=False, debug=None):
        why = exim_missing()
        if why:
            # Under scripts/test.sh install-deps has run: a missing Exim is
            # a failure there, not a skip.
            if os.environ.get("HIKYAKU_REQUIRE_PEERS"):
                pytest.fail(why)
            pytest.skip(why)
        self.port = free_port()
        self.serve = serve
        self.debug = debug  # e.g. "-all+tls": the daemon's -d selectors
        self.dir = tempfile.mkdtemp(prefix="hk-exim-", dir="/var/tmp")
        os.chmod(self.dir, 0o755)
        for d in ("spool", "log", "etc"):
            os.makedirs(os.path.join(self.dir, d))
        os.chown(os.path.join(self.dir, "spool"), EXIM_UID, EXIM_UID)
        os.chown(os.path.join(self.dir, "log"), EXIM_UID, EXIM_UID)
        os.chown(self.dir, EXIM_UID, EXIM_UID)  # the Maildir is created in it
        self.maildir = os.path.join(self.dir, "Maildir")
        # passwd and group copies with Debian-exim, bind-mounted over the
        # real ones in Exim's mount namespace only.
        for name, line in (("passwd", f"Debian-exim:x:{EXIM_UID}:{EXIM_UID}::/nonexistent:"
                                      "/usr/sbin/nologin\n"),
                           ("group", f"Debian-exim:x:{EXIM_UID}:\n")):
            with open(f"/etc/{name}") as f:
                text = f.read()
            with open(os.path.join(self.dir, "etc", name), "w") as f:
                f.write(text + line)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                        "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                        "-subj", "/CN=ex.test", "-keyout", os.path.join(self.dir, "key.pem"),
                        "-out", os.path.join(self.dir, "cert.pem")],
                       check=True, capture_output=True, timeout=30)
        os.chown(os.path.join(self.dir, "key.pem"), EXIM_UID, EXIM_UID)
        # Exim re-executes exim_path (for each delivery, queue run, ...)
        # with ids of its own, as a secure exec where the loader ignores
        # LD_LIBRARY_PATH: a wrapper names libidn.so.12's directory to the
        # loader on its command line instead.
        self.wrapper = os.path.join(self.dir, "exim")
        with open(self.wrapper, "w") as f:
            f.write(f'#!/bin/sh\nexec {LOADER} --library-path {EXIM_LIBS} {EXIM} "$@"\n')
        os.chmod(self.wrapper, 0o755)
        self.conf = os.path.join(self.dir, "exim.conf")
        with open(self.conf, "w") as f:
            f.write(CONFIG.format(exim=self.wrapper, dir=self.dir, port=self.port,
                                  relay_port=relay_to or 25,
                                  relay_router=RELAY_ROUTER if relay_to else ""))
        os.chmod(self.conf, 0o644)
        self.proc = None

    def argv(self, *args):
        """The command line that runs Exim with args in its namespace."""
        etc = os.path.join(self.dir, "etc")
        script = (f"mount --bind {etc}/passwd /etc/passwd && "
                  f"mount --bind {etc}/group /etc/group && "
                  'exec "$0" "$@"')
        return ["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                self.wrapper, "-C", self.conf, *args]

    def run(self, *args, input=None, timeout=60):
        return subprocess.run(self.argv(*args), input=input, capture_output=True,
                              timeout=timeout)

    def start(self, timeout=30):
        if not self.serve:
            return self
        # -bdf: the daemon stays in the foreground, so its PID is ours to stop.
        # Its stderr (and debug output, from it and its children) goes to
        # a file: a pipe nobody reads would block it.
        args = ["-bdf", "-oX", str(self.port)]
        if self.debug:
            args.insert(0, "-d" + self.debug)
        self.debugfile = os.path.join(self.dir, "log", "debug")
        with open(self.debugfile, "wb") as err:
            self.proc = subprocess.Popen(self.argv(*args), stdout=subprocess.DEVNULL,
                                         stderr=err)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"Exim exited {self.proc.returncode}: "
                                     f"{self.debug_log()}\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.settimeout(5)
                    if s.recv(512).startswith(b"220"):
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"Exim did not start:\n{self.log()}")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def send(self, sender, rcpts, msg):
        """Submit msg (bytes or str) on stdin (-bm -i) and deliver it at once
        (-odf): returns when Exim's delivery attempt is over."""
        if isinstance(msg, str):
            msg = msg.encode("utf-8")
        r = self.run("-odf", "-i", "-f", sender, "--", *rcpts, input=msg)
        assert r.returncode == 0, (f"exim -odf: {r.returncode} "
                                   f"{r.stderr.decode(errors='replace')}\n{self.log()}")
        return r

    def log(self, which="main"):
        try:
            with open(os.path.join(self.dir, "log", f"{which}log"),
                      encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def debug_log(self):
        """The daemon's stderr: its debug output when started with debug=."""
        try:
            with open(self.debugfile, encoding="utf-8", errors="replace") as f:
                return f.read()
        except (AttributeError, FileNotFoundError):
            return ""

    def all_logs(self):
        return "".join(f"== {w}log\n{self.log(w)}" for w in ("main", "reject", "panic"))

    def wait_log(self, pattern, timeout=30):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log())
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"no /{pattern}/ in Exim's log:\n{self.all_logs()[-3000:]}")
            time.sleep(0.2)

    def maildir_files(self):
        return sorted(glob.glob(os.path.join(self.maildir, "new", "*")))

    def wait_maildir(self, count=1, timeout=30):
        deadline = time.monotonic() + timeout
        while len(self.maildir_files()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.maildir_files())} of {count} messages in "
                                     f"Exim's Maildir:\n{self.all_logs()[-3000:]}")
            time.sleep(0.2)
        return [open(p, "rb").read() for p in self.maildir_files()]


@pytest.fixture
def exim_instance():
    made = []

    def factory(**kw):
        ex = EximInstance(**kw)
        made.append(ex)
        return ex.start()

    yield factory
    for ex in made:
        ex.stop()
