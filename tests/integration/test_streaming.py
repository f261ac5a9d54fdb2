"""Streaming delivery (docs/ARCHITECTURE.md, "Streaming delivery"): Maildir,
the SMTP/LMTP client and bounces read the spool file through a bounded
window, so the memory of a delivery attempt does not grow with the message.

40 messages of 20 MiB are accepted while the remote sink holds back its
greeting, so all 40 attempts are in flight together (half to local
Maildirs, half through a route to a small SMTP sink on 127.0.0.1); then
the sink lets them in. Every copy must arrive byte-exact, and the peak RSS
(VmHWM) summed over the server's process tree must stay under a bound.

The bound is about the content, not about the sanitizer: with the ASan
build the server runs with ASAN_OPTIONS that stop ASan from holding freed
memory (quarantine_size_mb=0, thread_local_quarantine_size_kb=0,
malloc_context_size=0), and the bound adds the server's own idle VmHWM,
measured first under the same options (shadow memory and ASan's own
allocator metadata are there before any mail). With
HIKYAKU_RELEASE_BIN (a build without sanitizers) the bound is the plain
128 MiB. Both figures are printed (pytest -s shows them).
"""
import hashlib
import os
import re
import socket
import threading
import time

import pytest

N_MSGS = 40
MSG_MIB = 20
RSS_BOUND_KIB = 128 * 1024
ASAN_QUIET = ("quarantine_size_mb=0:thread_local_quarantine_size_kb=0:"
              "malloc_context_size=0:detect_leaks=0")


def _body(size):
    """size octets of CRLF lines: printable, 8-bit octets, lines that start
    with one or two dots (dot-stuffing), an empty line after the headers."""
    rnd = hashlib.sha256(b"stream").digest()
    lines = []
    n = 0
    i = 0
    while n < size:
        r = rnd[i % 32]
        if i % 97 == 0:
            line = b"." + b"x" * (r % 40)
        elif i % 101 == 0:
            line = b".."
        elif i % 13 == 0:
            line = "\u00e9t\u00e9 caf\u00e9 ".encode() * (1 + r % 20)
        else:
            line = (b"%06d " % i) + bytes(0x21 + (j * 7 + r) % 90 for j in range(r % 120))
        lines.append(line + b"\r\n")
        n += len(line) + 2
        i += 1
    return b"".join(lines)


BODY = None


def body():
    global BODY
    if BODY is None:
        BODY = _body(MSG_MIB * 1024 * 1024 - 200)
    return BODY


def message(n):
    return (b"From: <s@example.net>\r\nTo: <r%d@x>\r\nSubject: stream %d\r\n"
            b"Message-ID: <stream-%d@test>\r\n\r\n" % (n, n, n)) + body()


def stuffed(data):
    return (b"." + data if data.startswith(b".") else data).replace(b"\r\n.", b"\r\n..")


class Sink:
    """SMTP on 127.0.0.1: PIPELINING, 8BITMIME, SIZE; holds the greeting
    until open() so that every attempt is in flight at once; keeps the
    unstuffed DATA of each transaction (on disk, not in our memory)."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.gate = threading.Event()
        self.lock = threading.Lock()
        self.got = []  # (rcpts, path)
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(c,), daemon=True).start()

    def _session(self, c):
        c.settimeout(120)
        self.gate.wait(120)
        f = c.makefile("rb")
        c.sendall(b"220 sink\r\n")
        rcpts = []
        try:
            while True:
                line = f.readline()
                if not line:
                    return
                cmd = line[:4].upper()
                if cmd in (b"EHLO", b"LHLO"):
                    c.sendall(b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                              b"250 SIZE 100000000\r\n")
                elif cmd == b"MAIL":
                    rcpts = []
                    c.sendall(b"250 ok\r\n")
                elif cmd == b"RCPT":
                    addr = line[8:].strip().split(b" ")[0].strip(b"<>").decode()
                    if addr.startswith("bad"):
                        c.sendall(b"550 5.1.1 no such user\r\n")
                        continue
                    rcpts.append(addr)
                    c.sendall(b"250 ok\r\n")
                elif cmd == b"DATA":
                    c.sendall(b"354 go\r\n")
                    self._data(f, list(rcpts))
                    c.sendall(b"250 stored\r\n")
                elif cmd == b"RSET":
                    c.sendall(b"250 ok\r\n")
                elif cmd == b"QUIT":
                    c.sendall(b"221 bye\r\n")
                    return
                else:
                    c.sendall(b"500 what\r\n")
        finally:
            c.close()

    def _data(self, f, rcpts):
        with self.lock:
            path = os.path.join(self.tmp, "sink-%d" % len(self.got))
            self.got.append((rcpts, path))
        with open(path, "wb") as out:
            while True:
                line = f.readline()
                if line == b".\r\n" or not line:
                    break
                out.write(line[1:] if line.startswith(b".") else line)

    def close(self):
        self.stop = True
        self.sock.close()


def send(port, n, rcpt, sender="s@example.net", ret="", msg=None):
    s = socket.create_connection(("127.0.0.1", port), timeout=120)
    f = s.makefile("rb")

    def reply():
        while True:
            line = f.readline()
            if line[3:4] != b"-":
                return line

    assert reply().startswith(b"220")
    s.sendall(b"EHLO client.test\r\n")
    assert reply().startswith(b"250")
    s.sendall(b"MAIL FROM:<%s> BODY=8BITMIME%s\r\n" % (sender.encode(), ret.encode()))
    assert reply().startswith(b"250")
    s.sendall(b"RCPT TO:<%s>\r\n" % rcpt.encode())
    assert reply().startswith(b"250")
    s.sendall(b"DATA\r\n")
    assert reply().startswith(b"354")
    s.sendall(stuffed(msg if msg is not None else message(n)) + b".\r\n")
    r = reply()
    assert r.startswith(b"250"), r
    s.sendall(b"QUIT\r\n")
    s.close()


def tree_hwm_kib(pid):
    """VmHWM summed over pid and its descendants (KiB)."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(x) for x in f.read().split()]
        except FileNotFoundError:
            pass
    return total


RECEIVED = re.compile(rb"\AReceived: [^\n]*\n(?:[ \t][^\n]*\n)*")


def check_copy(data, n, lf):
    """data is one delivered copy: our Received, then message(n) exactly."""
    m = RECEIVED.match(data) if lf else RECEIVED.match(data.replace(b"\r\n", b"\n"))
    assert m, data[:300]
    want = message(n)
    if lf:
        want = want.replace(b"\r\n", b"\n")
        rest = data[m.end():]
    else:
        rest = data[len(data) - len(want):]
        assert data[:len(data) - len(want)].replace(b"\r\n", b"\n") == m.group(0)
    assert len(rest) == len(want) and hashlib.sha256(rest).digest() == \
        hashlib.sha256(want).digest(), f"copy {n} differs"


def test_streaming_40_by_20mib(hikyaku, monkeypatch, tmp_path):
    release = os.environ.get("HIKYAKU_RELEASE_BIN")
    if release:
        monkeypatch.setenv("HIKYAKU_BIN", release)
    else:
        monkeypatch.setenv("ASAN_OPTIONS", ":".join(
            x for x in (os.environ.get("ASAN_OPTIONS"), ASAN_QUIET) if x))
    body()
    sink = Sink(str(tmp_path))
    try:
        hk = hikyaku(limits={"message_size": "64M"},
                     routes=[{"domain": "sink.test", "transport": "relay",
                              "address": f"127.0.0.1:{sink.port}", "tls": "none"}],
                     relay={"trusted_networks": ["127.0.0.0/8"]},
                     log_level="info")
        idle_kib = tree_hwm_kib(hk.proc.pid)
        t0 = time.time()
        rcpt = {n: (f"u{n}@localhost" if n % 2 == 0 else f"r{n}@sink.test")
                for n in range(N_MSGS)}
        senders = [threading.Thread(target=send, args=(hk.port, n, rcpt[n]))
                   for n in range(N_MSGS)]
        for t in senders:
            t.start()
        for t in senders:
            t.join()
        accepted = time.time()
        sink.gate.set()
        for n in range(0, N_MSGS, 2):
            hk.wait_delivered(f"u{n}", "localhost", 1, timeout=120)
        deadline = time.time() + 120
        while len(sink.got) < N_MSGS // 2 and time.time() < deadline:
            time.sleep(0.05)
        hk.wait_queue_empty(timeout=120)
        done = time.time()
        peak_kib = tree_hwm_kib(hk.proc.pid)
        print(f"\nstreaming: {'release' if release else 'asan'} idle VmHWM "
              f"{idle_kib / 1024:.1f} MiB, peak {peak_kib / 1024:.1f} MiB, "
              f"above idle {(peak_kib - idle_kib) / 1024:.1f} MiB; "
              f"accept {accepted - t0:.1f}s, deliver {done - accepted:.1f}s")
        # every copy, byte-exact
        assert len(sink.got) == N_MSGS // 2
        for rcpts, path in sink.got:
            assert len(rcpts) == 1
            n = int(rcpts[0][1:rcpts[0].index("@")])
            with open(path, "rb") as f:
                check_copy(f.read(), n, lf=False)
        for n in range(0, N_MSGS, 2):
            (path,) = hk.delivered(f"u{n}", "localhost")
            with open(path, "rb") as f:
                data = f.read()
            assert int(path.rsplit(",S=", 1)[1]) == len(data)
            head = b"Return-Path: <s@example.net>\nDelivered-To: u%d@localhost\n" % n
            assert data.startswith(head)
            check_copy(data[len(head):], n, lf=True)
        bound = RSS_BOUND_KIB + (0 if release else idle_kib)
        assert peak_kib < bound, f"peak VmHWM {peak_kib} KiB >= {bound} KiB"
    finally:
        sink.close()


def test_streaming_bounce_quotes_from_the_spool(hikyaku, monkeypatch, tmp_path):
    """A failure report read from the spool file in windows and written
    into the new spool file in pieces: RET=FULL quotes a 9 MiB message
    whole, byte for byte; a 12 MiB one (past the 10 MiB cap) only its
    header section, as before. The server's peak RSS stays within 8 MiB of
    its idle figure (main, which built the report in memory: +39 MiB)."""
    monkeypatch.setenv("ASAN_OPTIONS", ":".join(
        x for x in (os.environ.get("ASAN_OPTIONS"), ASAN_QUIET) if x))
    import email
    import email.policy
    sink = Sink(str(tmp_path))
    sink.gate.set()
    try:
        hk = hikyaku(limits={"message_size": "64M"},
                     routes=[{"domain": "sink.test", "transport": "relay",
                              "address": f"127.0.0.1:{sink.port}", "tls": "none"}],
                     relay={"trusted_networks": ["127.0.0.0/8"]}, log_level="info")
        idle_kib = tree_hwm_kib(hk.proc.pid)
        head = b"From: <s@localhost>\r\nSubject: big\r\n\r\n"
        def lines(n):  # about n octets of body(), whole lines
            return body()[:body().rindex(b"\r\n", 0, n) + 2]
        full = head + lines(9 * 1024 * 1024)
        capped = head + lines(12 * 1024 * 1024)
        send(hk.port, 0, "bad0@sink.test", sender="s@localhost", ret=" RET=FULL", msg=full)
        send(hk.port, 1, "bad1@sink.test", sender="s@localhost", ret=" RET=FULL", msg=capped)
        paths = hk.wait_delivered("s", "localhost", 2, timeout=60)
        hk.wait_queue_empty(timeout=60)
        peak_kib = tree_hwm_kib(hk.proc.pid)
        print(f"\nbounces: idle VmHWM {idle_kib / 1024:.1f} MiB, peak {peak_kib / 1024:.1f} MiB")
        quoted = {}
        for p in paths:
            with open(p, "rb") as f:
                m = email.message_from_bytes(f.read(), policy=email.policy.compat32)
            parts = m.get_payload()
            assert parts[1].get_content_type() == "message/delivery-status"
            q = parts[2]
            raw = q.as_bytes().split(b"\n\n", 1)[1]  # past the part's own header
            quoted[q.get_content_type()] = raw
        assert set(quoted) == {"message/rfc822", "text/rfc822-headers"}
        # Maildir keeps LF line ends; our Received comes first
        want_full = full.replace(b"\r\n", b"\n")
        got = quoted["message/rfc822"]
        i = got.index(b"From: <s@localhost>")
        assert got[:i].startswith(b"Received: ")
        assert got[i:].rstrip(b"\n") == want_full.rstrip(b"\n")
        hdrs = quoted["text/rfc822-headers"]
        assert b"Subject: big" in hdrs and len(hdrs) < 4096
        assert peak_kib < idle_kib + 8 * 1024, f"peak VmHWM {peak_kib} KiB"
    finally:
        sink.close()
