#!/usr/bin/python3
"""bench/milter_bench.py — the cost of a milter conversation on accepting
mail, against plain accept, in the same run (issue 11).

Starts hikyaku twice, one after the other, on a free port of 127.0.0.1:
  plain   no milters;
  milter  one milter, bench/milter_accept.c (built here with cc into a
          temporary directory): every step negotiated and answered
          (CONTINUE), ACCEPT at the end of body, so each session costs the
          milter connection, OPTNEG, CONNECT, HELO, MAIL, RCPT and per
          message DATA, the header fields, EOH, the body and EOB — about
          ten round-trips plus one per header field.
Each runs the same load: --sessions sessions over --threads concurrent
clients, each connect, greeting, EHLO, then --messages times MAIL, RCPT,
DATA with a small message (8 header fields), then QUIT. Prints sessions/s,
messages/s and the median session time for both, and the ratios.

    bench/milter_bench.py [--bin build/hikyaku] [--sessions 1000] [--threads 20]
                          [--messages 1]

A benchmark, not a test: run it as root (hikyaku then needs `user:
nobody`) on an otherwise idle machine."""
import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from filter_bench import LIMITS, free_port, start  # noqa: E402

MSG = (b"From: a@example.net\r\nTo: u@bench.test\r\nSubject: bench\r\n"
       b"Message-ID: <b@example.net>\r\nDate: Thu, 3 Dec 2026 21:00:00 +0000\r\n"
       b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\nX-Bench: 1\r\n\r\n"
       + b"A line of the body, as plain as it gets.\r\n" * 20 + b".\r\n")


def session(port, messages, times, codes):
    t0 = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    f = s.makefile("rb")

    def reply():
        while True:
            ln = f.readline()
            if not ln or ln[3:4] != b"-":
                return ln[:3]

    reply()
    s.sendall(b"EHLO bench.example\r\n")
    reply()
    for _ in range(messages):
        for c in (b"MAIL FROM:<a@example.net>", b"RCPT TO:<u@bench.test>", b"DATA"):
            s.sendall(c + b"\r\n")
            reply()
        s.sendall(MSG)
        codes.append(reply())
    s.sendall(b"QUIT\r\n")
    reply()
    s.close()
    times.append(time.perf_counter() - t0)


def load(port, args):
    times, codes, nxt = [], [], [0]
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= args.sessions:
                return
            session(port, args.messages, times, codes)

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker) for _ in range(args.threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    return {"rate": args.sessions / wall, "msgs": len(codes) / wall,
            "median_ms": statistics.median(times) * 1000,
            "accepted": sum(1 for c in codes if c == b"250")}


def run(args, name, extra):
    tmp = tempfile.mkdtemp(prefix=f"hk-bench-{name}-")
    port = free_port()
    proc = start(args.bin, tmp, port, extra, LIMITS)
    try:
        return load(port, args)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        if proc.returncode == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"{name}: hikyaku exited {proc.returncode}; see {tmp}/log", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(prog="milter_bench.py")
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "build", "hikyaku"))
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=20)
    ap.add_argument("--messages", type=int, default=1)
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    work = tempfile.mkdtemp(prefix="hk-bench-milter-")
    exe = os.path.join(work, "milter_accept")
    subprocess.run(["cc", "-O2", "-pthread", "-o", exe, os.path.join(HERE, "milter_accept.c")],
                   check=True)
    mport = free_port()
    milter = subprocess.Popen([exe, str(mport)])
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", mport), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        plain = run(args, "plain", [])
        with_milter = run(args, "milter", [
            f"milters: [{{name: bench, socket: 'inet:127.0.0.1:{mport}', failure: tempfail}}]"])
    finally:
        milter.send_signal(signal.SIGTERM)
        milter.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'':8} {'sessions/s':>11} {'messages/s':>11} {'median ms':>10} {'accepted':>9}")
    for name, r in (("plain", plain), ("milter", with_milter)):
        print(f"{name:8} {r['rate']:11.0f} {r['msgs']:11.0f} {r['median_ms']:10.2f} "
              f"{r['accepted']:9d}")
    print(f"milter/plain sessions/s: {with_milter['rate'] / plain['rate']:.2f}, "
          f"messages/s: {with_milter['msgs'] / plain['msgs']:.2f} "
          f"({args.messages} message(s) a session)")
    want = args.sessions * args.messages
    if plain["accepted"] != want or with_milter["accepted"] != want:
        raise SystemExit(f"wrong verdicts: plain accepted {plain['accepted']}, "
                         f"milter accepted {with_milter['accepted']} (want {want})")


if __name__ == "__main__":
    main()
