"""A private Postfix instance as a real peer of hikyaku in the integration
tests: a client that sends to hikyaku (with SASL, SMTPUTF8, STARTTLS as
Postfix does them) and a server that receives from it.

    pf = PostfixInstance(relayhost=f"[127.0.0.1]:{hk.port}").start()
    pf.submit("a@pf.test", ["bob@example.org"], msg)   # into Postfix by SMTP
    pf.wait_log(r"status=sent")                       # Postfix's own log
    pf.stop()

or, as the receiving side, a mailbox domain whose mail lands in one Maildir:

    pf = PostfixInstance(mailbox_domains=["pf.test"]).start()
    ... hikyaku routes pf.test to 127.0.0.1:pf.port ...
    pf.wait_maildir(1)

The `postfix_instance` fixture stops every instance a test made. Each
instance has its own config_directory, queue_directory, data_directory and
log file (postlogd) under a fresh directory in /var/tmp; the system's
default instance is never used or changed (`postfix -c DIR` needs no
alternate_config_directories entry when run by root, postfix(1)). It needs
root (Postfix's master runs as root) and the Debian postfix package
(scripts/install-deps.sh --test installs it with 'No configuration').
Everything listens on 127.0.0.1 only; the SMTP client never uses DNS (the
relayhost and transport entries are numeric, in brackets).
"""
import glob
import os
import re
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import free_port

POSTFIX = "/usr/sbin/postfix"


# The Debian master.cf minus local delivery, the pipe transports and
# chroot: what a private loopback instance needs.
MASTER_CF = """\
# service          type  private unpriv chroot wakeup maxproc command
{listen}    inet  n       -      n      -      -       smtpd
pickup             unix  n       -      n      60     1       pickup
cleanup            unix  n       -      n      -      0       cleanup
qmgr               unix  n       -      n      300    1       qmgr
tlsmgr             unix  -       -      n      1000?  1       tlsmgr
rewrite            unix  -       -      n      -      -       trivial-rewrite
bounce             unix  -       -      n      -      0       bounce
defer              unix  -       -      n      -      0       bounce
trace              unix  -       -      n      -      0       bounce
verify             unix  -       -      n      -      1       verify
flush              unix  n       -      n      1000?  0       flush
proxymap           unix  -       -      n      -      -       proxymap
showq              unix  n       -      n      -      -       showq
error              unix  -       -      n      -      -       error
retry              unix  -       -      n      -      -       error
discard            unix  -       -      n      -      -       discard
virtual            unix  -       n      n      -      -       virtual
smtp               unix  -       -      n      -      -       smtp
relay              unix  -       -      n      -      -       smtp
anvil              unix  -       -      n      -      1       anvil
scache             unix  -       -      n      -      1       scache
postlog            unix-dgram n  -      n      -      1       postlogd
"""


class PostfixInstance:
    """One private Postfix. main_cf={...} adds or overrides main.cf
    parameters; relayhost="[127.0.0.1]:PORT" sends everything there;
    transports={"domain": "smtp:[127.0.0.1]:PORT"} routes per domain;
    mailbox_domains=[...] delivers those domains to one Maildir
    (self.maildir); sasl=("user", "password") logs in to the relayhost
    (over TLS: Postfix never sends a password in the clear by default)."""

    def __init__(self, main_cf=None, relayhost=None, transports=None,
                 mailbox_domains=(), sasl=None, hostname="pf.test"):
        if os.geteuid() != 0 or not os.path.exists(POSTFIX):
            pytest.skip("needs root and the postfix package")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="hk-postfix-", dir="/var/tmp")
        os.chmod(self.dir, 0o755)  # Postfix's daemons (postfix, nobody) traverse it
        self.cfg = os.path.join(self.dir, "cfg")
        self.queue = os.path.join(self.dir, "queue")
        self.data = os.path.join(self.dir, "data")
        self.mail = os.path.join(self.dir, "mail")
        self.logfile = os.path.join(self.dir, "postfix.log")
        for d in (self.cfg, self.queue, self.data, self.mail):
            os.makedirs(d)
        shutil.chown(self.data, "postfix")
        shutil.chown(self.mail, "nobody", "nogroup")
        self.maildir = os.path.join(self.mail, "all")
        conf = {
            "compatibility_level": "3.6",
            "myhostname": hostname,
            "mydomain": hostname,
            "myorigin": "$myhostname",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "queue_directory": self.queue,
            "data_directory": self.data,
            "maillog_file": self.logfile,
            "maillog_file_prefixes": self.dir,
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_recipient_restrictions": "permit",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            "local_transport": "error:local delivery disabled",
            "default_transport": "smtp",
            "relay_transport": "relay",
            # No DNS anywhere: every next hop is numeric.
            "disable_dns_lookups": "yes",
            "smtp_host_lookup": "native",
            "smtp_tls_security_level": "may",
            "smtp_tls_loglevel": "1",
            # Quick retries: a test waits seconds, not minutes.
            "queue_run_delay": "2s",
            "minimal_backoff_time": "2s",
            "maximal_backoff_time": "4s",
            "smtputf8_enable": "yes",
        }
        if relayhost:
            conf["relayhost"] = relayhost
        if transports:
            tfile = os.path.join(self.cfg, "transport")
            with open(tfile, "w") as f:
                for dom, nexthop in transports.items():
                    f.write(f"{dom} {nexthop}\n")
            conf["transport_maps"] = f"texthash:{tfile}"
        if mailbox_domains:
            conf.update({
                "virtual_mailbox_domains": ", ".join(mailbox_domains),
                "virtual_mailbox_base": self.mail,
                "virtual_mailbox_maps": "static:all/",
                "virtual_uid_maps": "static:%d" % _uid("nobody"),
                "virtual_gid_maps": "static:%d" % _gid("nogroup"),
            })
        if sasl:
            pfile = os.path.join(self.cfg, "sasl_passwd")
            with open(pfile, "w") as f:
                f.write(f"{relayhost} {sasl[0]}:{sasl[1]}\n")
            os.chmod(pfile, 0o600)
            conf.update({
                "smtp_sasl_auth_enable": "yes",
                "smtp_sasl_password_maps": f"texthash:{pfile}",
                "smtp_sasl_security_options": "noanonymous",
                "smtp_tls_security_level": "encrypt",
            })
        conf.update(main_cf or {})
        with open(os.path.join(self.cfg, "main.cf"), "w") as f:
            f.write("# main.cf of a test instance, written by postfix_helpers.py\n")
            for k, v in conf.items():
                f.write(f"{k} = {v}\n")
        with open(os.path.join(self.cfg, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))
        self.started = False

    def postfix(self, *args, check=True):
        return subprocess.run([POSTFIX, "-c", self.cfg, *args], capture_output=True,
                              text=True, timeout=60, check=check)

    def start(self, timeout=30):
        r = self.postfix("start", check=False)
        self.started = True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.settimeout(5)
                    if s.recv(512).startswith(b"220"):
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"Postfix did not start: {r.stdout}{r.stderr}\n{self.log()[-3000:]}")

    def stop(self):
        if not self.started:
            return
        self.started = False
        if self.postfix("stop", check=False).returncode != 0:
            self.postfix("abort", check=False)
        # master's pid file: wait until it is gone (bounded)
        pidfile = os.path.join(self.queue, "pid", "master.pid")
        deadline = time.monotonic() + 15
        while os.path.exists(pidfile) and time.monotonic() < deadline:
            try:
                pid = int(open(pidfile).read().strip() or 0)
                os.kill(pid, 0)
            except (OSError, ValueError):
                break
            time.sleep(0.1)
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        try:
            with open(self.logfile, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, timeout=30):
        """The first match of regex pattern in Postfix's log, waiting for it."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log())
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"no /{pattern}/ in Postfix's log:\n{self.log()[-3000:]}")
            time.sleep(0.2)

    def flush(self):
        """postqueue -f: retry deferred mail now."""
        subprocess.run(["/usr/sbin/postqueue", "-c", self.cfg, "-f"], capture_output=True,
                       timeout=30)

    def submit(self, sender, rcpts, msg, smtputf8=False):
        """Hand a message to this Postfix over SMTP (mynetworks may relay)."""
        opts = ["SMTPUTF8"] if smtputf8 else []
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as s:
            s.ehlo("client.test")
            if isinstance(msg, str):
                msg = msg.encode("utf-8")
            s.sendmail(sender, rcpts, msg, mail_options=opts)

    def maildir_files(self):
        return sorted(glob.glob(os.path.join(self.maildir, "new", "*")))

    def wait_maildir(self, count=1, timeout=30):
        deadline = time.monotonic() + timeout
        while len(self.maildir_files()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.maildir_files())} of {count} messages in "
                                     f"Postfix's Maildir:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        return [open(p, "rb").read() for p in self.maildir_files()]


def _uid(name):
    import pwd
    return pwd.getpwnam(name).pw_uid


def _gid(name):
    import grp
    return grp.getgrnam(name).gr_gid


@pytest.fixture
def postfix_instance():
    made = []

    def factory(**kw):
        pf = PostfixInstance(**kw)
        made.append(pf)
        return pf.start()

    yield factory
    for pf in made:
        pf.stop()
