#!/usr/bin/python3
"""bench/filter_bench.py — the cost of DNS block list checks on accepting
mail, against plain accept, in the same run (issue 11).

Starts hikyaku twice, one after the other, on a free port of 127.0.0.1:
  plain   no DNS lists;
  dnsbl   --lists zones in dnsbl.lists, answered by the tests' DNS server
          (tests/integration/dns_server.py, dnslib) on loopback, with
          policy.fcrdns_loopback so that loopback clients are looked up.
Each runs the same load: --sessions sessions over --threads concurrent
clients, each connect, greeting, EHLO, MAIL, RCPT (where the lists'
verdict is applied), QUIT. Every session comes from its own source address
(127.1.x.y) so each is a fresh lookup, not the resolver's cache; one in
--listed of them is listed (and refused at RCPT with 554, as it should).
Prints sessions/second and the median session time for both and the ratio.
The DNS server is a threaded Python program: with fresh lookups it, more
than hikyaku, bounds the dnsbl column.

    bench/filter_bench.py [--bin build/hikyaku] [--sessions 2000] [--threads 20]
                          [--lists 2] [--listed 10]

A benchmark, not a test: run it as root (hikyaku then needs `user:
nobody`) on an otherwise idle machine; it takes a few seconds per 1000
sessions."""
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
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from dns_server import DnsServer  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def source(i):
    return f"127.1.{i // 250}.{i % 250 + 1}"


def zone_text(nlists, sessions, listed):
    lines = []
    for i in range(0, sessions, listed):
        a = source(i).split(".")
        for z in range(nlists):
            lines.append(f"{a[3]}.{a[2]}.{a[1]}.{a[0]}.bl{z}.bench. 300 IN A 127.0.0.2")
    return "\n".join(lines) + "\n"


LIMITS = "limits: {connections_per_ip: 1000, connections: 10000}"


def start(binary, tmp, port, extra, limits=LIMITS):
    os.chmod(tmp, 0o755)
    conf = [
        "hostname: mx.bench.test",
        f"listen: [{{address: '127.0.0.1:{port}', tls: none}}]",
        f"spool_dir: {tmp}/spool",
        f"maildir_root: {tmp}/mail",
        "local_domains: [bench.test]",
        "accept_any_user: true",
        "log_level: warn",
        limits,
    ] + extra
    if os.geteuid() == 0:
        conf.append("user: nobody")
    path = os.path.join(tmp, "hikyaku.yaml")
    with open(path, "w") as f:
        f.write("\n".join(conf) + "\n")
    log = open(os.path.join(tmp, "log"), "ab")
    proc = subprocess.Popen([binary, "serve", "-c", path], stdout=log, stderr=log, cwd=tmp)
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.recv(512)
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("hikyaku did not start; see " + tmp + "/log")


def session(port, i, times, codes):
    t0 = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source(i), 0))
    f = s.makefile("rb")

    def reply():
        while True:
            ln = f.readline()
            if not ln or ln[3:4] != b"-":
                return ln[:3]

    reply()
    for c in (b"EHLO bench.example", b"MAIL FROM:<a@example.net>", b"RCPT TO:<u@bench.test>"):
        s.sendall(c + b"\r\n")
        code = reply()
    codes.append(code)
    s.sendall(b"QUIT\r\n")
    reply()
    s.close()
    times.append(time.perf_counter() - t0)


def load(port, sessions, threads):
    times, codes, nxt = [], [], [0]
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= sessions:
                return
            session(port, i, times, codes)

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    return {"rate": sessions / wall, "median_ms": statistics.median(times) * 1000,
            "refused": sum(1 for c in codes if c == b"554")}


def run(args, name, extra, dns=None, limits=LIMITS):
    tmp = tempfile.mkdtemp(prefix=f"hk-bench-{name}-")
    port = free_port()
    proc = start(args.bin, tmp, port, extra, limits)
    try:
        return load(port, args.sessions, args.threads)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        if proc.returncode == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"{name}: hikyaku exited {proc.returncode}; see {tmp}/log", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(prog="filter_bench.py")
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "build", "hikyaku"))
    ap.add_argument("--sessions", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=20)
    ap.add_argument("--lists", type=int, default=2)
    ap.add_argument("--listed", type=int, default=10)
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    srv = DnsServer(zone_text(args.lists, args.sessions, args.listed))
    srv.start()
    try:
        plain = run(args, "plain", [])
        lists = ", ".join(f"bl{z}.bench" for z in range(args.lists))
        dnsbl = run(args, "dnsbl", [f"dns: {{forwarders: ['{srv.forwarder}']}}",
                                    "policy: {fcrdns_loopback: true}",
                                    f"dnsbl: {{lists: [{lists}]}}"])
    finally:
        srv.stop()
    print(f"{'':8} {'sessions/s':>11} {'median ms':>10} {'refused':>8}")
    for name, r in (("plain", plain), ("dnsbl", dnsbl)):
        print(f"{name:8} {r['rate']:11.0f} {r['median_ms']:10.2f} {r['refused']:8d}")
    print(f"dnsbl/plain sessions/s: {dnsbl['rate'] / plain['rate']:.2f} "
          f"({args.lists} lists, fresh lookups, FCrDNS also asks the DNS server)")
    want = len(range(0, args.sessions, args.listed))
    if plain["refused"] != 0 or dnsbl["refused"] != want:
        raise SystemExit(f"wrong verdicts: plain refused {plain['refused']}, "
                         f"dnsbl refused {dnsbl['refused']} (want {want})")


if __name__ == "__main__":
    main()
