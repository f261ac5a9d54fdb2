"""Shared fixtures for the integration tests: start the real hikyaku daemon
on a free loopback port with its own temp spool and Maildir root.

Use the `hikyaku` factory fixture:

    def test_x(hikyaku):
        hk = hikyaku()                       # embedded-default-like config
        hk = hikyaku(limits={"recipients": 3}, users=["alice@example.org"])
        hk = hikyaku(users_secrets={"alice@example.org": ("CRYPT", "pw")})
        with smtplib.SMTP("127.0.0.1", hk.port) as s: ...
        hk.wait_delivered("alice", "localhost", 1)

The binary comes from $HIKYAKU_BIN, else <repo>/build/hikyaku.
"""
import glob
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import time
import zlib

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def hikyaku_bin():
    path = os.environ.get("HIKYAKU_BIN") or os.path.join(REPO, "build", "hikyaku")
    if not os.path.exists(path):
        pytest.exit(f"hikyaku binary not found at {path}; build first or set HIKYAKU_BIN")
    return path


def free_port():
    """A free port below the kernel's ephemeral range (32768-60999 on
    Linux). An ephemeral port would let a client that reconnects while the
    server is down (the crash test) connect to itself on that very port,
    and the restarted server could not bind it."""
    import random
    for _ in range(200):
        port = random.randrange(20000, 32000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def _yaml_value(v, indent):
    pad = " " * indent
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        if not v:
            return "[]"
        return "\n" + "\n".join(f"{pad}- {_yaml_value(x, indent + 2)}" for x in v)
    if isinstance(v, dict):
        return "\n" + "\n".join(f"{pad}{k}: {_yaml_value(x, indent + 2)}" for k, x in v.items())
    raise TypeError(v)


def to_yaml(d):
    return "\n".join(f"{k}: {_yaml_value(v, 2)}" for k, v in d.items()) + "\n"


def user_add(ufile, name, password, scheme="CRYPT", cmd="add"):
    """`hikyaku user add|passwd NAME --scheme S -f ufile`, password on stdin."""
    r = subprocess.run(
        [hikyaku_bin(), "user", cmd, name, "--scheme", scheme, "-f", ufile],
        input=password + "\n", capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"hikyaku user {cmd} {name}: {r.returncode} {r.stderr}")
    return r


# The unprivileged user the daemon runs as when the tests run as root.
SERVICE_USER = "nobody"


class Hikyaku:
    def __init__(self, tmp, settings, users=None, users_secrets=None):
        self.tmp = tmp
        self.preexec = None  # run in the child before exec (e.g. setrlimit)
        self.port = free_port()
        self.spool = os.path.join(tmp, "spool")
        self.mailroot = os.path.join(tmp, "mail")
        self.logfile = os.path.join(tmp, "hikyaku.log")
        self.config = os.path.join(tmp, "hikyaku.yaml")
        conf = {
            "hostname": "mx.test.example",
            "listen": [f"127.0.0.1:{self.port}"],
            "spool_dir": self.spool,
            "maildir_root": self.mailroot,
            "local_domains": ["localhost", "example.org"],
            "accept_any_user": users is None,
            "log_level": "debug",
            # STARTTLS is on by default on every listener: give it a
            # certificate (generated at the first start, ~1 ms for P-256).
            "tls": {"self_signed_dir": os.path.join(tmp, "tls")},
            # Hermetic: DNS goes to a local port where nothing answers, so
            # a remote recipient is deferred instead of leaving the machine.
            # Tests of outbound delivery bring their own DNS server.
            "dns": {"forwarders": ["127.0.0.1@9"], "timeout": "1s"},
            # Retries come quickly in tests; the schedule (persisted in the
            # spool) then also lets a restarted server deliver at once.
            "queue": {"retry_min": "1s", "retry_max": "2s"},
        }
        # Started as root, hikyaku needs a service user for smtpd and the
        # queue (it refuses to run without one), as on a real machine; the
        # test's directory must then be reachable by that user.
        if os.geteuid() == 0:
            conf["user"] = SERVICE_USER
            os.chmod(tmp, 0o755)
        # users_secrets={"alice@example.org": ("CRYPT", "pw")}: users with
        # real secrets, written by `hikyaku user add` (a scheme per user).
        if users_secrets and users is None:
            users = []
            conf["accept_any_user"] = False
        if users is not None:
            ufile = os.path.join(tmp, "users")
            with open(ufile, "w") as f:
                for u in users:
                    f.write(f"{u}:{{CRYPT}}$y$invalid::::::\n")
            for name, (scheme, password) in (users_secrets or {}).items():
                user_add(ufile, name, password, scheme)
            conf["users_file"] = ufile
            self.users_file = ufile
        # listener={...}: options of the one listener (tls, submission, ...)
        listener = settings.pop("listener", None)
        self.implicit_tls = (listener or {}).get("tls") == "implicit"
        if listener is not None:
            conf["listen"] = [{"address": f"127.0.0.1:{self.port}", **listener}]
        for k, v in settings.items():
            if isinstance(v, dict) and isinstance(conf.get(k), dict):
                conf[k].update(v)
            else:
                conf[k] = v
        with open(self.config, "w") as f:
            f.write(to_yaml(conf))
        self.proc = None
        self._log = None

    def start(self, wait=True):
        if os.geteuid() == 0:
            # What a test planted in the spool or the Maildirs (as root)
            # stands for what the service user left there.
            import pwd
            pw = pwd.getpwnam(SERVICE_USER)
            for top in (self.spool, self.mailroot):
                if not os.path.isdir(top) or os.path.islink(top):
                    continue
                for d, dirs, files in os.walk(top):
                    for n in [d] + [os.path.join(d, x) for x in dirs + files]:
                        try:
                            os.lchown(n, pw.pw_uid, pw.pw_gid)
                        except OSError:
                            pass
        self._log = open(self.logfile, "ab")
        self.proc = subprocess.Popen(
            [hikyaku_bin(), "serve", "-c", self.config],
            stdout=self._log, stderr=self._log, cwd=self.tmp, preexec_fn=self.preexec,
        )
        if wait:
            self.wait_port()
        return self

    def wait_port(self, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hikyaku exited {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if not self.implicit_tls:  # else the greeting needs a handshake
                        s.recv(512)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("hikyaku did not start listening:\n" + self.log())

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self.proc = None
        if self._log:
            self._log.close()
        return rc

    def kill(self):
        return self.stop(signal.SIGKILL)

    def restart(self):
        self.stop()
        return self.start()

    def child_pids(self, role, timeout=10):
        """PIDs of the running children of one role ("smtpd", "queue"):
        the master starts them as "hikyaku: ROLE". Waits until one runs."""
        deadline = time.time() + timeout
        while True:
            out = []
            for d in os.listdir("/proc"):
                if not d.isdigit():
                    continue
                try:
                    with open(f"/proc/{d}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                    with open(f"/proc/{d}/cmdline", "rb") as f:
                        argv0 = f.read().split(b"\0")[0]
                except (OSError, ValueError, IndexError):
                    continue
                if ppid == self.proc.pid and argv0 == f"hikyaku: {role}".encode():
                    out.append(int(d))
            if out or time.time() > deadline:
                return sorted(out)
            time.sleep(0.05)

    def log(self):
        try:
            with open(self.logfile, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def maildir(self, user, domain="localhost"):
        return os.path.join(self.mailroot, domain, user, "Maildir")

    def delivered(self, user, domain="localhost"):
        """Paths of delivered messages (new/) for user@domain."""
        return sorted(glob.glob(os.path.join(self.maildir(user, domain), "new", "*")))

    def wait_delivered(self, user, domain="localhost", count=1, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            files = self.delivered(user, domain)
            if len(files) >= count:
                return files
            time.sleep(0.02)
        raise AssertionError(
            f"expected {count} messages for {user}@{domain}, have "
            f"{len(self.delivered(user, domain))}\n{self.log()[-4000:]}")

    def read_delivered(self, user, domain="localhost", count=1):
        out = []
        for p in self.wait_delivered(user, domain, count):
            with open(p, "rb") as f:
                out.append(f.read())
        return out

    def queue_files(self):
        return sorted(os.listdir(os.path.join(self.spool, "queue")))

    def spool_files(self, sub):
        """Names in <spool>/<sub> ([] if the directory does not exist)."""
        try:
            return sorted(os.listdir(os.path.join(self.spool, sub)))
        except FileNotFoundError:
            return []

    def wait_queue_empty(self, timeout=10):
        """Wait until <spool>/queue holds no file; AssertionError otherwise."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.queue_files():
                return
            time.sleep(0.02)
        raise AssertionError(
            f"queue not empty after {timeout}s: {self.queue_files()[:10]}\n"
            f"{self.log()[-4000:]}")

    def set_arrival(self, qid, arrival_us):
        """Rewrite the ARRIVAL record of a queued message, for tests of
        expiry that cannot wait days. The spool file (docs/ARCHITECTURE.md,
        "The spool format") is a 16-octet header (magic, u64be offset E of
        the envelope), the content, then the envelope (src/queue/record.h):
        its magic, then type:u8 len:u32be payload records up to END, which
        holds the CRC-32 of the envelope before it; MARK records follow.
        Only while the daemon is stopped: it owns the file otherwise."""
        assert self.proc is None, "stop the daemon first"
        path = os.path.join(self.spool, "queue", qid)
        with open(path, "rb") as f:
            data = bytearray(f.read())
        assert data[:8] == b"HKMSG\0\1\n", data[:16]
        env = struct.unpack(">Q", data[8:16])[0]
        assert data[env:env + 8] == b"HKENV\0\1\n", data[env:env + 8]
        off = env + 8
        while True:
            rtype, rlen = data[off], struct.unpack(">I", data[off + 1:off + 5])[0]
            if rtype == 2:  # REC_ARRIVAL, u64
                data[off + 5:off + 13] = struct.pack(">Q", arrival_us)
            if rtype == 14:  # REC_END
                crc = zlib.crc32(bytes(data[env:off]))
                data[off + 5:off + 9] = struct.pack(">I", crc)
                break
            off += 5 + rlen
        tmp = os.path.join(self.spool, "incoming", qid)  # never in queue/
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, path)

    def append_schedule(self, qid, next_try_us, attempts, flags=0):
        """Append a MARK record (src/queue/record.h: no recipients, a
        schedule, its CRC-32) as the queue does after an attempt, e.g. one
        written under a clock that has since gone back. Daemon stopped."""
        assert self.proc is None, "stop the daemon first"
        body = struct.pack(">IB", 0, 1) + struct.pack(">QII", next_try_us, attempts, flags)
        head = bytes([17]) + struct.pack(">I", len(body) + 4) + body
        with open(os.path.join(self.spool, "queue", qid), "ab") as f:
            f.write(head + struct.pack(">I", zlib.crc32(head)))

    def wait_log(self, text, count=1, timeout=10):
        """Wait until text occurs at least count times in the log."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.log().count(text) >= count:
                return
            time.sleep(0.02)
        raise AssertionError(f"{text!r} not logged {count} times\n{self.log()[-4000:]}")


@pytest.fixture
def hikyaku():
    made = []

    def factory(users=None, start=True, users_secrets=None, **settings):
        tmp = tempfile.mkdtemp(prefix="hk-test-")
        hk = Hikyaku(tmp, settings, users=users, users_secrets=users_secrets)
        made.append(hk)
        if start:
            hk.start()
        return hk

    yield factory
    for hk in made:
        rc = hk.stop()
        # A clean shutdown is part of the contract; SIGKILLed ones return None
        # or -9, and ASan reports would show up as a non-zero exit.
        if rc not in (None, 0, -signal.SIGKILL):
            log = hk.log()
            shutil.rmtree(hk.tmp, ignore_errors=True)
            pytest.fail(f"hikyaku exited with {rc}:\n{log[-4000:]}")
        shutil.rmtree(hk.tmp, ignore_errors=True)


def tls_client_context(**kw):
    """A client context that accepts the test servers' self-signed
    certificates; kw sets attributes (minimum_version=..., ...)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


class RawSMTP:
    """A raw socket SMTP client for byte-exact tests. implicit_tls=True
    starts TLS before the greeting (RFC 8314 port 465 style)."""

    def __init__(self, port, timeout=10, implicit_tls=False):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        if implicit_tls:
            self.sock = tls_client_context().wrap_socket(self.sock)
        self.greeting = self.reply()

    def starttls(self, ctx=None, server_hostname=None):
        """STARTTLS (asserting 220 2.0.0), then the TLS handshake. Anything
        the server sent after the 220 in plaintext would be a bug: it must
        not be sitting in the buffer."""
        self.ok("STARTTLS", 220, "2.0.0")
        assert self.buf == b"", f"plaintext after the 220: {self.buf!r}"
        self.sock = (ctx or tls_client_context()).wrap_socket(
            self.sock, server_hostname=server_hostname)
        return self.sock

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def reply(self):
        """One whole (possibly multiline) reply: (code, [lines])."""
        lines = []
        while True:
            ln = self.line()
            lines.append(ln)
            if len(ln) < 4 or ln[3] != "-":
                return int(ln[:3]), lines

    def cmd(self, text):
        self.send(text + "\r\n")
        return self.reply()

    def closed(self, timeout=5):
        """True if the server closes the connection (EOF) within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (socket.timeout, ConnectionResetError):
            return False

    def expect(self, code, enh=None):
        """Read one reply; assert its code (and enhanced code); return lines."""
        got, lines = self.reply()
        assert got == code, f"expected {code}, got {lines}"
        if enh is not None:
            assert all(ln[4:].startswith(enh + " ") for ln in lines), \
                f"expected {code} {enh}, got {lines}"
        return lines

    def ok(self, text, code=250, enh=None):
        """Send one command; assert the reply code (and enhanced code)."""
        self.send(text + "\r\n")
        return self.expect(code, enh)

    def ehlo(self, name="client.example"):
        return self.ok(f"EHLO {name}")

    def begin(self, sender="sender@example.net", rcpts=("alice@localhost",), ehlo=True):
        """EHLO (optional), MAIL, RCPTs, each asserted 250."""
        if ehlo:
            self.ehlo()
        self.ok(f"MAIL FROM:<{sender}>", 250, "2.1.0")
        for r in rcpts:
            self.ok(f"RCPT TO:<{r}>", 250, "2.1.5")

    def data(self, body):
        """DATA with a body already dot-stuffed and CRLF-terminated (no
        final dot); returns the queue id from the 250."""
        self.ok("DATA", 354)
        if isinstance(body, str):
            body = body.encode()
        self.send(body + b".\r\n")
        return qid_of(self.expect(250, "2.0.0"))

    def close(self):
        self.sock.close()


QID_RE = re.compile(r"^250 2\.0\.0 Ok: queued as ([0-9A-Za-z]{16})$")


def qid_of(lines):
    """The queue id of a final 250 reply (its lines from RawSMTP.reply)."""
    m = QID_RE.match(lines[-1])
    assert m, f"no queue id in {lines}"
    return m.group(1)


_KV_RE = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def log_events(hk, event):
    """Log lines of one event kind (the line's first key=value pair must be
    event=<event>), each as a dict of its key=value pairs, quoted values
    unquoted."""
    out = []
    for line in hk.log().splitlines():
        pairs = _KV_RE.findall(line.split(": ", 1)[-1])
        if not pairs or pairs[0] != ("event", event):
            continue
        kv = {}
        for k, v in pairs:
            if v.startswith('"') and len(v) >= 2:
                v = re.sub(r'\\(.)', r'\1', v[1:-1])
            kv[k] = v
        out.append(kv)
    return out


def wait_event(hk, event, count=1, timeout=10, **match):
    """Wait for count log lines of event whose keys equal match."""
    deadline = time.time() + timeout
    while True:
        got = [e for e in log_events(hk, event)
               if all(e.get(k) == v for k, v in match.items())]
        if len(got) >= count or time.time() > deadline:
            return got
        time.sleep(0.02)


@pytest.fixture
def raw():
    opened = []

    def factory(port, timeout=10, implicit_tls=False):
        c = RawSMTP(port, timeout, implicit_tls)
        opened.append(c)
        return c

    yield factory
    for c in opened:
        c.close()


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: waits on real time (e.g. queue expiry, ~1 min)")
