#!/usr/bin/python3
"""sandbox_bench.py — the mail sandbox (issue 13) under load, stdlib only.

1. Fill a sandbox store with N captured messages (default 100,000):
   --fill direct (default) writes the message files and the SQLite rows
   the way the queue does (same schema, FTS5 rows; one transaction per
   1,000 rows instead of one per message, so the fill takes a minute, not
   an hour of fsyncs); --fill smtp sends them all through the daemon.
2. Start hikyaku (the release build) with that store and time, over HTTP
   with keep-alive, the list's first page and several searches (the
   median and the worst of R runs each; target < 200 ms).
3. The accept rates in the same run: M messages through a sandbox
   listener (captured) and M through a normal listener (delivered to a
   Maildir), C concurrent smtplib clients each: accepted per second (250s)
   and finished per second (captured / delivered); target: the sandbox at
   least 80% of the normal rate.

    /usr/bin/python3 bench/sandbox_bench.py --bin build/hikyaku [--messages 100000]

Everything is on 127.0.0.1 in a temporary directory; nothing is left.
"""
import argparse
import http.client
import json
import os
import pwd
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

SCHEMA = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "obs",
                           "sbxstore.c")).read()


def log(msg):
    print("  [sbx-bench] " + msg, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


WORDS = ("invoice report lunch meeting release build failure deploy welcome password reset "
         "newsletter order shipped receipt alert weekly monthly survey ticket update").split()


def message(i):
    w = WORDS[i % len(WORDS)]
    w2 = WORDS[(i * 7) % len(WORDS)]
    subj = f"{w} {w2} number {i}"
    frm = f"user{i % 500}@sender{i % 37}.example"
    to = f"dest{i % 1000}@rcpt{i % 53}.test"
    body = f"Hello,\r\nthis is message {i} about the {w} and the {w2}.\r\nBye\r\n"
    raw = (f"From: User {i % 500} <{frm}>\r\nTo: <{to}>\r\nSubject: {subj}\r\n"
           f"Message-ID: <m{i}@bench>\r\nDate: Fri, 04 Dec 2026 08:00:00 +0000\r\n\r\n{body}")
    return frm, to, subj, body, raw


def fill_direct(store, n, inbox="default"):
    """The rows and files the queue would write (sbxstore.c's schema)."""
    os.makedirs(os.path.join(store, "msg"), exist_ok=True)
    start = SCHEMA.index("static const char sbx_schema[] =") + len("static const char sbx_schema[] =")
    end = SCHEMA.index(";\n", start)
    ddl = "".join(part.split('"', 1)[1].rsplit('"', 1)[0]
                  for part in SCHEMA[start:end].strip().splitlines()
                  if part.strip().startswith('"'))
    db = sqlite3.connect(os.path.join(store, "index.sqlite"))
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(ddl.replace("\\'", "'"))
    t0 = time.time()
    now_us = int(time.time() * 1e6)
    for base in range(0, n, 1000):
        rows, fts = [], []
        for i in range(base, min(n, base + 1000)):
            frm, to, subj, body, raw = message(i)
            mid = f"B{i:015d}"
            with open(os.path.join(store, "msg", mid + ".eml"), "w") as f:
                f.write(raw)
            addrs = json.dumps({"From": {"Name": f"User {i % 500}", "Address": frm},
                                "To": [{"Name": "", "Address": to}], "Cc": [], "Bcc": [],
                                "ReplyTo": []})[1:-1]
            rows.append((mid, inbox, now_us - (n - i) * 1000, len(raw), f"m{i}@bench", addrs,
                         subj, body.replace("\r\n", " ").strip(), frm, json.dumps([to])))
            fts.append((f"User {i % 500} {frm}", to, subj, body))
        with db:
            for r, f in zip(rows, fts):
                cur = db.execute("INSERT INTO msg(id, inbox, created, size, message_id, addrs,"
                                 " subject, snippet, env_from, env_to) VALUES(?,?,?,?,?,?,?,?,?,?)",
                                 r)
                db.execute("INSERT INTO msg_fts(rowid, fromf, tof, subject, body)"
                           " VALUES(?,?,?,?,?)", (cur.lastrowid,) + f)
    db.close()
    log(f"filled {n} messages directly in {time.time() - t0:.1f} s")


def send_many(port, n, clients, domain):
    done = [0]
    lock = threading.Lock()
    errors = []

    def worker(k):
        import smtplib
        s = smtplib.SMTP("127.0.0.1", port, timeout=60)
        i = k
        while i < n:
            frm, _, subj, body, raw = message(i)
            try:
                s.sendmail(frm, [f"user{i % 50}@{domain}"], raw.encode())
            except Exception as e:  # noqa: BLE001 - reported
                errors.append(repr(e))
                break
            with lock:
                done[0] += 1
            i += clients
        s.quit()

    t0 = time.time()
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    el = time.time() - t0
    if errors:
        log(f"errors: {errors[:3]}")
    return done[0], el


def wait_log(logfile, needle, count, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(logfile, "rb") as f:
            if f.read().count(needle.encode()) >= count:
                return True
        time.sleep(0.05)
    return False


def timed_get(conn, path):
    t0 = time.perf_counter()
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    el = time.perf_counter() - t0
    assert r.status == 200, (path, r.status, body[:200])
    return el, json.loads(body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/hikyaku")
    ap.add_argument("--messages", type=int, default=100000)
    ap.add_argument("--fill", choices=("direct", "smtp"), default="direct")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--rate-messages", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--sandbox-domain", default="remote.test",
                    help="recipient domain of the captured mail (bench.test: a local one)")
    a = ap.parse_args()
    binp = os.path.abspath(a.bin)
    tmp = tempfile.mkdtemp(prefix="hk-sbx-bench-")
    os.chmod(tmp, 0o755)
    proc = None
    try:
        store = os.path.join(tmp, "store")
        smtp_sbx, smtp_norm, web = free_port(), free_port(), free_port()
        conf = os.path.join(tmp, "hikyaku.yaml")
        user = "nobody" if os.geteuid() == 0 else ""
        with open(conf, "w") as f:
            f.write(f"""{'user: ' + user if user else ''}
hostname: bench.test
listen:
  - address: 127.0.0.1:{smtp_sbx}
    tls: none
    sandbox: true
  - address: 127.0.0.1:{smtp_norm}
    tls: none
http:
  listen: 127.0.0.1:{web}
spool_dir: {tmp}/spool
maildir_root: {tmp}/mail
local_domains: [localhost, bench.test]
accept_any_user: true
log_level: info
sandbox:
  dir: {store}
  anonymous_inbox: default
  max_messages: {a.messages + 10 * a.rate_messages}
  max_size: 0
""")
        if a.fill == "direct":
            fill_direct(store, a.messages)
            if user:
                pw = pwd.getpwnam(user)
                for d, dirs, files in os.walk(store):
                    for x in [d] + [os.path.join(d, y) for y in dirs + files]:
                        os.lchown(x, pw.pw_uid, pw.pw_gid)
        logf = os.path.join(tmp, "log")
        proc = subprocess.Popen([binp, "serve", "-c", conf], stdout=open(logf, "wb"),
                                stderr=subprocess.STDOUT, cwd=tmp)
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", smtp_norm), timeout=1).close()
                socket.create_connection(("127.0.0.1", web), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise SystemExit("hikyaku did not start:\n" + open(logf).read()[-3000:])
                time.sleep(0.1)
        if a.fill == "smtp":
            t0 = time.time()
            n, el = send_many(smtp_sbx, a.messages, a.clients, "remote.test")
            wait_log(logf, "event=sandbox_captured", a.messages, 3600)
            log(f"filled {n} messages over SMTP in {time.time() - t0:.1f} s")

        conn = http.client.HTTPConnection("127.0.0.1", web, timeout=60)
        print(f"sandbox store: {a.messages} messages ({a.fill} fill); {a.runs} runs each, "
              "HTTP keep-alive, times in ms (median / worst)")
        queries = [("list, first page (50)", "/api/v1/messages?limit=50"),
                   ("list, page 1000", "/api/v1/messages?start=50000&limit=50")]
        for q in ("from:user42@sender5.example", "to:dest7", "subject:invoice",
                  "shipped", "subject:\"weekly report\"", "is:unread deploy",
                  "nothing-matches-this"):
            queries.append((f"search {q}", "/api/v1/search?query=" + urllib.parse.quote(q)))
        worst_all = 0.0
        for name, path in queries:
            times = []
            for _ in range(a.runs):
                el, j = timed_get(conn, path)
                times.append(el * 1000)
            worst_all = max(worst_all, max(times))
            print(f"  {name:42s} {statistics.median(times):8.1f} / {max(times):8.1f}"
                  f"   ({j['messages_count']} match, total {j['total']})")
        print(f"  target < 200 ms each: {'met' if worst_all < 200 else 'NOT met'}"
              f" (worst {worst_all:.1f} ms)")

        # accept rates in the same run
        before = open(logf, "rb").read().count(b"event=sandbox_captured")
        t0 = time.time()
        n1, el1 = send_many(smtp_sbx, a.rate_messages, a.clients, a.sandbox_domain)
        wait_log(logf, "event=sandbox_captured", before + n1, 600)
        fin1 = time.time() - t0
        before_d = open(logf, "rb").read().count(b"status=sent")
        before_d -= open(logf, "rb").read().count(b"relay=sandbox")
        t0 = time.time()
        n2, el2 = send_many(smtp_norm, a.rate_messages, a.clients, "bench.test")
        # status=sent lines of Maildir deliveries (the captures say relay=sandbox)
        deadline = time.time() + 600
        while time.time() < deadline:
            data = open(logf, "rb").read()
            if data.count(b"status=sent") - data.count(b"relay=sandbox") >= before_d + n2:
                break
            time.sleep(0.05)
        fin2 = time.time() - t0
        acc_sbx, acc_norm = n1 / el1, n2 / el2
        print(f"accept rate, {a.rate_messages} messages, {a.clients} clients each "
              f"(store already holding {a.messages}):")
        print(f"  sandbox listener (captured)   {acc_sbx:8.0f} msg/s accepted, "
              f"{n1 / fin1:8.0f} msg/s captured")
        print(f"  normal listener (Maildir)     {acc_norm:8.0f} msg/s accepted, "
              f"{n2 / fin2:8.0f} msg/s delivered")
        print(f"  sandbox / normal: accepted {100 * acc_sbx / acc_norm:.0f}%, "
              f"finished {100 * (n1 / fin1) / (n2 / fin2):.0f}% (target >= 80%)")
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
