#!/usr/bin/python3
"""bench/state_bench.py — the cost of keeping the rate limits in Redis
(state.redis) against shared memory, on accepting mail, in the same run
(issue 11).

Starts hikyaku twice, one after the other, with the same connection,
message and recipient rate limits (high enough that nothing is refused):
  memory  the default: shared memory on this host;
  redis   state.redis on a redis-server this script starts on 127.0.0.1
          (--save '' --appendonly no, a temporary directory; killed by its
          PID at the end).
Each runs the load of filter_bench.py: --sessions sessions over --threads
clients, each from its own 127.1.x.y address (a fresh key per session),
connect, EHLO, MAIL, RCPT, QUIT: three Redis round trips a session
(connection, message, recipient). Prints sessions/second, the median
session time and the ratio.

    bench/state_bench.py [--bin build/hikyaku] [--sessions 2000] [--threads 20]

A benchmark, not a test: run it as root (hikyaku then needs `user:
nobody`) on an otherwise idle machine."""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from filter_bench import free_port, run  # noqa: E402

LIMITS = "limits: {connections_per_ip: 1000, connections: 10000, " \
         "connection_rate: 1000000, message_rate: 1000000, recipient_rate: 1000000, " \
         "rate_window: 1h}"


def main():
    ap = argparse.ArgumentParser(prog="state_bench.py")
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "build", "hikyaku"))
    ap.add_argument("--sessions", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=20)
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    tmp = tempfile.mkdtemp(prefix="hk-bench-redis-")
    port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", tmp],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True,
                             text=True).stdout.strip() != "PONG":
            if time.time() > deadline:
                raise SystemExit("redis-server did not start")
            time.sleep(0.05)
        # The same limits in both runs (they replace filter_bench's line).
        memory = run(args, "memory", [], limits=LIMITS)
        inredis = run(args, "redis", [f"state: {{redis: '127.0.0.1:{port}'}}"], limits=LIMITS)
        keys = subprocess.run(["redis-cli", "-p", str(port), "DBSIZE"], capture_output=True,
                              text=True).stdout.strip()
    finally:
        redis.kill()
        redis.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'':8} {'sessions/s':>11} {'median ms':>10} {'refused':>8}")
    for name, r in (("memory", memory), ("redis", inredis)):
        print(f"{name:8} {r['rate']:11.0f} {r['median_ms']:10.2f} {r['refused']:8d}")
    print(f"redis/memory sessions/s: {inredis['rate'] / memory['rate']:.2f} "
          f"(keys in Redis after the run: {keys})")


if __name__ == "__main__":
    main()
