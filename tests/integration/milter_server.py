"""A scripted milter for the tests: the Sendmail milter protocol version 6
written by hand with struct (no libmilter, no PyPI).

    m = MilterServer(eob=[mod("h", b"X-Spam", b"yes"), ACCEPT]).start()
    ... config milters: [{name: t, socket: m.socket}] ...
    m.stop()

It answers every command with SMFIR_CONTINUE (or what `replies` says for a
command code; `rcpt_replies` maps a recipient address, without <>, to the
reply to its RCPT), and the end of body with the frames of `eob`.
mode="slow" accepts connections and never answers. `die_at` names a
command at which the milter closes the connection instead of answering,
`slow_at` one that it never answers, `delay` maps a command to seconds to
wait before answering it. Every connection's commands are recorded in
`sessions` as lists of (cmd, data)."""
import os
import socket
import struct
import threading
import time

SMFIF_ALL = 0xFF
# SMFIP_NR_*: the commands the milter does not answer when it asked so
NR = {"C": 0x1000, "H": 0x2000, "M": 0x4000, "R": 0x8000, "T": 0x10000, "L": 0x80,
      "N": 0x40000, "B": 0x80000}


def frame(cmd, data=b""):
    if isinstance(cmd, str):
        cmd = cmd.encode()
    return struct.pack("!I", len(data) + 1) + cmd + data


def z(*strs):
    return b"".join((s.encode() if isinstance(s, str) else s) + b"\0" for s in strs)


ACCEPT = frame("a")
CONTINUE = frame("c")
REJECT = frame("r")
TEMPFAIL = frame("t")
DISCARD = frame("d")


def replycode(text):
    return frame("y", z(text))


def addheader(name, value):
    return frame("h", z(name, value))


def insheader(idx, name, value):
    return frame("i", struct.pack("!I", idx) + z(name, value))


def chgheader(idx, name, value):
    return frame("m", struct.pack("!I", idx) + z(name, value))


def chgfrom(addr):
    return frame("e", z(addr))


def addrcpt(addr):
    return frame("+", z(addr))


def delrcpt(addr):
    return frame("-", z(addr))


def quarantine(reason):
    return frame("q", z(reason))


def replbody(data):
    return frame("b", data)


def parse_strs(data):
    return [s.decode("utf-8", "replace") for s in data.split(b"\0")[:-1]]


class MilterServer:
    def __init__(self, eob=(ACCEPT,), replies=None, mode="normal", protocol=0, unix_path=None,
                 rcpt_replies=None, die_at=None, slow_at=None, delay=None):
        self.eob = list(eob)
        self.replies = replies or {}
        self.rcpt_replies = rcpt_replies or {}
        self.die_at = die_at
        self.slow_at = slow_at
        self.delay = delay or {}
        self.mode = mode
        self.protocol = protocol
        self.sessions = []
        self.unix_path = unix_path
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(unix_path)
            os.chmod(unix_path, 0o777)
            self.socket = "unix:" + unix_path
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(("127.0.0.1", 0))
            self.port = self.sock.getsockname()[1]
            self.socket = f"inet:127.0.0.1:{self.port}"
        self.sock.listen(16)
        self.stopping = False
        self.conns = []

    def start(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self):
        self.stopping = True
        try:
            self.sock.close()
        except OSError:
            pass
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _read(c, n):
        out = b""
        while len(out) < n:
            chunk = c.recv(n - len(out))
            if not chunk:
                raise EOFError
            out += chunk
        return out

    def _serve(self, c):
        log = []
        self.sessions.append(log)
        try:
            while True:
                (n,) = struct.unpack("!I", self._read(c, 4))
                body = self._read(c, n)
                cmd, data = chr(body[0]), body[1:]
                log.append((cmd, data))
                if self.mode == "slow" or cmd == self.slow_at:
                    continue
                if cmd == self.die_at:
                    return
                if cmd in self.delay:
                    time.sleep(self.delay[cmd])
                if cmd == "O":
                    ver, act, proto = struct.unpack("!III", data[:12])
                    c.sendall(frame("O", struct.pack("!III", 6, SMFIF_ALL & act,
                                                     self.protocol & proto)))
                elif cmd in ("D", "A"):
                    continue  # macros and abort get no reply
                elif cmd == "Q":
                    return
                elif cmd == "E":
                    c.sendall(b"".join(self.eob))
                elif self.protocol & NR.get(cmd, 0):
                    continue
                elif cmd == "R" and parse_strs(data)[0].strip("<>") in self.rcpt_replies:
                    c.sendall(self.rcpt_replies[parse_strs(data)[0].strip("<>")])
                elif cmd in self.replies:
                    c.sendall(self.replies[cmd])
                else:
                    c.sendall(CONTINUE)
        except (EOFError, OSError):
            pass
        finally:
            c.close()
