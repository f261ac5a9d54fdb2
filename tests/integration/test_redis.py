"""Shared state in Redis (issue 11, state.redis): three hikyaku nodes, each
in its own network namespace, share one redis-server (Debian's, started
here on a bridge address in the root namespace, with AUTH) for the
per-address message rate and greylisting; Redis down or stopped gives each
node its state.redis_failure (tempfail: 451 4.3.0, accept: passes) within
state.redis_timeout, and once it is back the limits hold again.

Needs root (namespaces, a bridge) and `ip`, `redis-server`; skipped
otherwise. Everything it makes (namespaces, veths, bridge, redis) is torn
down in a finally block, the redis by its PID."""
import os
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import Hikyaku, free_port, hikyaku_bin

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("redis-server") is None,
    reason="needs root, ip and redis-server")

NET = "10.77.0"
HOST_ADDR = f"{NET}.1"
RATE = 5          # limits.message_rate per client address, across the nodes
TIMEOUT_MS = 400  # state.redis_timeout
SMTPD_PROCS = 2   # processes.smtpd of each node


def sh(*args, check=True):
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


class Net:
    """A bridge in the root namespace (HOST_ADDR) and n namespaces on it."""

    def __init__(self, n):
        tag = f"{os.getpid() % 100000}"
        self.bridge = f"hkbr{tag}"
        self.ns = [f"hkr{tag}-{i}" for i in range(n)]
        self.addrs = [f"{NET}.{11 + i}" for i in range(n)]
        self.veths = [f"hkv{tag}{i}" for i in range(n)]

    def up(self):
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{HOST_ADDR}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for ns, addr, veth in zip(self.ns, self.addrs, self.veths):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "link", "set", veth, "master", self.bridge, "up")
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def down(self):
        for ns, veth in zip(self.ns, self.veths):
            sh("ip", "link", "del", veth, check=False)
            sh("ip", "netns", "del", ns, check=False)
        sh("ip", "link", "del", self.bridge, check=False)


class Redis:
    """redis-server on HOST_ADDR and 127.0.0.1, or (unix=True) only on a
    unix socket in tmp."""

    def __init__(self, tmp, password, unix=False):
        self.tmp = tmp
        self.port = 0 if unix else free_port()
        self.sock = os.path.join(tmp, "redis.sock") if unix else None
        self.password = password
        self.proc = None

    def start(self):
        where = (["--port", "0", "--unixsocket", self.sock, "--unixsocketperm", "777"]
                 if self.sock else
                 ["--port", str(self.port), "--bind", HOST_ADDR, "127.0.0.1"])
        self.proc = subprocess.Popen(
            ["redis-server", *where,
             "--save", "", "--appendonly", "no", "--dir", self.tmp,
             "--requirepass", self.password, "--protected-mode", "no",
             "--logfile", os.path.join(self.tmp, "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                if self.cli("PING").strip() == "PONG":
                    return
            except subprocess.CalledProcessError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def cli(self, *args):
        env = dict(os.environ, REDISCLI_AUTH=self.password)
        where = ["-s", self.sock] if self.sock else ["-h", "127.0.0.1", "-p", str(self.port)]
        return subprocess.run(["redis-cli", *where, *args],
                              check=True, capture_output=True, text=True, env=env).stdout

    def ttls(self, pattern):
        """The PTTL of each key matching pattern (keys are binary: asked in Lua)."""
        out = self.cli("EVAL", "local t={} for i,k in ipairs(redis.call('KEYS',ARGV[1])) "
                       "do t[i]=redis.call('PTTL',k) end return t", "0", pattern)
        return [int(x) for x in out.split()]

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # by its PID
            self.proc.wait()
        self.proc = None


class NsHikyaku(Hikyaku):
    """A hikyaku listening on addr inside network namespace ns."""

    def __init__(self, tmp, settings, ns, addr):
        self.ns = ns
        self.addr = addr
        super().__init__(tmp, settings)
        with open(self.config) as f:
            text = f.read()
        with open(self.config, "w") as f:
            f.write(text.replace(f"127.0.0.1:{self.port}", f"{addr}:{self.port}"))

    def start(self, wait=True):
        self._log = open(self.logfile, "ab")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, hikyaku_bin(), "serve", "-c", self.config],
            stdout=self._log, stderr=self._log, cwd=self.tmp)
        if wait:
            self.wait_port()
        return self

    def wait_port(self, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hikyaku exited {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection((self.addr, self.port), timeout=0.5) as s:
                    s.recv(512)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("hikyaku did not start listening:\n" + self.log())

    def smtp(self):
        s = smtplib.SMTP(self.addr, self.port, timeout=10)
        s.ehlo("client.example")
        return s


def mail(node, sender="s@example.net"):
    """MAIL FROM on node: its (code, text)."""
    s = node.smtp()
    try:
        return s.docmd("MAIL", f"FROM:<{sender}>")
    finally:
        s.close()


def wait_connected(nodes, times=1, timeout=10):
    """Every smtpd process of each node has connected `times` times (each
    logs one line per connect)."""
    for n in nodes:
        n.wait_log("event=redis status=connected", count=SMTPD_PROCS * times,
                   timeout=timeout)


@pytest.fixture
def cluster(request):
    """Three nodes sharing one Redis; a test may add limits by
    parametrizing it indirectly."""
    extra = getattr(request, "param", {})
    tmp = tempfile.mkdtemp(prefix="hk-redis-")
    os.chmod(tmp, 0o755)
    net = Net(3)
    redis = Redis(tmp, "s3cret-pw")
    nodes = []
    try:
        net.up()
        redis.start()
        pwfile = os.path.join(tmp, "redis.pw")
        with open(pwfile, "w") as f:
            f.write(redis.password + "\n")
        os.chmod(pwfile, 0o600)
        for i, (ns, addr) in enumerate(zip(net.ns, net.addrs)):
            d = os.path.join(tmp, f"node{i}")
            os.mkdir(d)
            hk = NsHikyaku(d, {
                "processes": {"smtpd": SMTPD_PROCS},
                "limits": {"message_rate": RATE, "rate_window": "1h", **extra},
                "greylist": {"enabled": True, "delay": "1s"},
                "state": {"redis": f"{HOST_ADDR}:{redis.port}",
                          "redis_password_file": pwfile,
                          "redis_timeout": f"{TIMEOUT_MS}ms",
                          # the last node lets mail through while Redis is away
                          "redis_failure": "accept" if i == 2 else "tempfail"},
            }, ns, addr)
            nodes.append(hk)
            hk.start()
        wait_connected(nodes)
        yield redis, nodes
    finally:
        for hk in nodes:
            rc = hk.stop()
            assert rc in (None, 0), hk.log()[-3000:]
        redis.stop()
        net.down()
        shutil.rmtree(tmp, ignore_errors=True)


def test_rate_shared(cluster):
    """A client spread over three nodes gets RATE messages in all, not 3 x RATE."""
    redis, nodes = cluster
    codes = [mail(nodes[i % 3])[0] for i in range(3 * RATE)]
    accepted = codes.count(250)
    assert RATE - 1 <= accepted <= RATE + 1, codes
    assert set(codes) == {250, 450}, codes
    # Redis holds the count, with its window's expiry.
    ttls = redis.ttls("hk:r:*")
    assert len(ttls) == 1 and 0 < ttls[0] <= 2 * 3600 * 1000, ttls


def test_greylist_shared(cluster):
    """Greylisting learned on one node lets the retry pass on another."""
    redis, nodes = cluster
    s = nodes[0].smtp()
    s.docmd("MAIL", "FROM:<grey@example.net>")
    code, text = s.docmd("RCPT", "TO:<alice@localhost>")
    s.close()
    assert code == 451 and b"4.7.1" in text, (code, text)
    assert len(redis.ttls("hk:g:*")) == 1
    time.sleep(1.5)
    s = nodes[1].smtp()
    s.docmd("MAIL", "FROM:<grey@example.net>")
    code, text = s.docmd("RCPT", "TO:<alice@localhost>")
    s.close()
    assert code == 250, (code, text)
    # Passed: remembered for the retention (35 days).
    ttls = redis.ttls("hk:g:*")
    assert len(ttls) == 1 and 34 * 86400 * 1000 < ttls[0] <= 35 * 86400 * 1000, ttls
    s = nodes[2].smtp()
    s.docmd("MAIL", "FROM:<grey@example.net>")
    assert s.docmd("RCPT", "TO:<alice@localhost>")[0] == 250
    s.close()


def test_redis_down_and_back(cluster):
    redis, nodes = cluster
    # Down: refused at once; tempfail nodes 451 4.3.0, the accept node passes.
    redis.stop()
    for i, n in enumerate(nodes):
        t0 = time.time()
        code, text = mail(n)
        took = time.time() - t0
        assert took < TIMEOUT_MS / 1000 + 1.0, took
        if i == 2:
            assert code == 250, (code, text)
        else:
            assert code == 451 and b"4.3.0" in text, (code, text)
    nodes[0].wait_log("event=redis status=")
    # Back (the same port): the nodes reconnect (back-off at most 5 s) and
    # the shared limit holds again.
    redis.start()
    wait_connected(nodes, times=2, timeout=15)
    codes = [mail(nodes[i % 3])[0] for i in range(3 * RATE)]
    assert RATE - 1 <= codes.count(250) <= RATE + 1, codes


def test_redis_slow(cluster):
    """A Redis that accepts but does not answer (SIGSTOP): each check waits
    state.redis_timeout, then follows its failure mode; no session hangs."""
    redis, nodes = cluster
    mail(nodes[0])  # connected and answering
    os.kill(redis.proc.pid, 19)  # SIGSTOP, by PID
    try:
        for i, n in enumerate(nodes):
            t0 = time.time()
            code, text = mail(n)
            took = time.time() - t0
            assert TIMEOUT_MS / 1000 * 0.8 < took < TIMEOUT_MS / 1000 + 1.5, took
            if i == 2:
                assert code == 250, (code, text)
            else:
                assert code == 451 and b"4.3.0" in text, (code, text)
        # Logged, rate-suppressed: at most 5 lines a minute per smtpd
        # process, however many requests fail.
        for _ in range(12):
            assert mail(nodes[0])[0] == 451
        nodes[0].wait_log("event=redis status=timeout")
        lines = [ln for ln in nodes[0].log().splitlines() if "event=redis status=" in ln
                 and "status=connected" not in ln]
        assert len(lines) <= 5 * SMTPD_PROCS, lines
    finally:
        os.kill(redis.proc.pid, 18)  # SIGCONT
    # Answering again (possibly after a reconnect): a rate verdict, not a
    # failure. The requests that timed out may have been counted when the
    # server caught up (a stricter limit, never a looser one): 250 or 450.
    deadline = time.time() + 15
    code = None
    while time.time() < deadline:
        code = mail(nodes[0])[0]
        if code in (250, 450):
            break
        time.sleep(0.2)
    assert code in (250, 450)
    assert mail(nodes[1])[0] in (250, 450)


def test_unix_socket(hikyaku):
    """unix:/path, with the first connect failing (Redis not up yet): the
    reconnect from inside smtpd's sandbox (Landlock, seccomp) succeeds."""
    tmp = tempfile.mkdtemp(prefix="hk-redis-")
    os.chmod(tmp, 0o755)
    redis = Redis(tmp, "pw-unix", unix=True)
    try:
        pwfile = os.path.join(tmp, "redis.pw")
        with open(pwfile, "w") as f:
            f.write(redis.password)
        os.chmod(pwfile, 0o600)
        hk = hikyaku(processes={"smtpd": 1}, limits={"message_rate": 2, "rate_window": "1h"},
                     state={"redis": f"unix:{redis.sock}", "redis_password_file": pwfile})
        hk.wait_log("event=redis status=connect_failed")
        redis.start()
        hk.wait_log("event=redis status=connected", timeout=15)
        codes = []
        for _ in range(4):
            s = smtplib.SMTP("127.0.0.1", hk.port, timeout=10)
            s.ehlo("client.example")
            codes.append(s.docmd("MAIL", "FROM:<s@example.net>")[0])
            s.close()
        assert codes == [250, 250, 450, 450], codes
        assert len(redis.ttls("hk:r:*")) == 1
    finally:
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_password_file_must_be_roots(hikyaku):
    """A password file others may read stops smtpd at start."""
    tmp = tempfile.mkdtemp(prefix="hk-redis-")
    try:
        pwfile = os.path.join(tmp, "redis.pw")
        with open(pwfile, "w") as f:
            f.write("pw\n")
        os.chmod(pwfile, 0o644)
        hk = hikyaku(start=False, state={"redis": "127.0.0.1:1", "redis_password_file": pwfile})
        hk.start(wait=False)
        deadline = time.time() + 10
        while time.time() < deadline and "redis_password_file" not in hk.log():
            time.sleep(0.1)
        assert "mode 0600 or 0400" in hk.log()
        hk.kill()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("cluster", [{"connection_rate": 4}], indirect=True)
def test_connection_rate_shared(cluster):
    """limits.connection_rate with Redis: 4 connections in all over the
    three nodes, then 421 4.7.0 at accept."""
    redis, nodes = cluster
    redis.cli("FLUSHALL")  # the fixture's own connections (wait_port) counted
    greetings = []
    for i in range(12):
        n = nodes[i % 3]
        with socket.create_connection((n.addr, n.port), timeout=5) as s:
            greetings.append(s.recv(512)[:9])
    assert greetings.count(b"220 mx.te") == 4, greetings
    assert greetings.count(b"421 4.7.0") == 8, greetings
    # Redis away: the tempfail nodes refuse (421) within the timeout, the
    # accept node lets the client in.
    redis.stop()
    for i, n in enumerate(nodes):
        t0 = time.time()
        with socket.create_connection((n.addr, n.port), timeout=5) as s:
            g = s.recv(512)
        assert time.time() - t0 < TIMEOUT_MS / 1000 + 1.0
        assert g.startswith(b"220" if i == 2 else b"421"), g
