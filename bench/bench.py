#!/usr/bin/python3
"""bench.py - measuring half of bench/run.sh (stdlib only, run by /usr/bin/python3).

Subcommands:
  freeport                 print a free TCP port on 127.0.0.1
  waitport  --port P --pid PID [--timeout S]
                           wait until 127.0.0.1:P accepts a connection (fails early
                           if PID exits)
  measure   ...            drive one MTA with smtp-source, write a JSON result; with
                           --sink-out (run.sh --relay) "delivered" means received by
                           smtp-sink, counted from its -c counters
  report    A.json B.json  print the side-by-side table and the ratios (the relay
                           table when the results are from --relay)
  tls       ...            drive one MTA with tlsload (STARTTLS), write a JSON result:
                           --phases load (handshakes, one message per session, many
                           messages per session) or --phases idle (memory per idle
                           TLS connection)
  tlsreport FILE...        the TLS table and ratios

Everything talks to 127.0.0.1 only. Every loop is bounded in time.
"""

import argparse
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time

POLL_S = 0.05  # delivery poll interval (the brief: 50 ms)
FSYNC_RE = re.compile(r"\b(fsync|fdatasync|sync_file_range|syncfs|msync)\(")


def log(msg):
    print("  [bench] " + msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- small tools

def cmd_freeport(_args):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()
    return 0


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cmd_waitport(args):
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if args.pid and not pid_alive(args.pid):
            print("process %d exited before listening" % args.pid, file=sys.stderr)
            return 1
        try:
            with socket.create_connection(("127.0.0.1", args.port), timeout=1):
                return 0
        except OSError:
            time.sleep(0.1)
    print("127.0.0.1:%d not listening after %gs" % (args.port, args.timeout), file=sys.stderr)
    return 1


def count_new(path):
    """Messages in a Maildir new/ directory (dot files are not messages)."""
    n = 0
    try:
        with os.scandir(path) as it:
            for e in it:
                if not e.name.startswith("."):
                    n += 1
    except FileNotFoundError:
        return 0
    return n


SINK_RE = re.compile(rb"sess=(\d+) quit=(\d+) mesg=(\d+)")


def sink_counters(path):
    """(sessions, messages) smtp-sink -c has counted so far: it writes a
    "sess=N quit=N mesg=N" line, each after a carriage return, to its stdout
    at every session end, QUIT and "." (flushed each time). Only the file's
    tail is read."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256))
            tail = f.read()
    except OSError:
        return 0, 0
    # The counters only grow; a line cut by a concurrent write can only show
    # fewer digits of its last number ("mesg=1" of "mesg=12"), so the
    # largest values seen are the counts.
    sess = mesg = 0
    for m in SINK_RE.finditer(tail):
        sess = max(sess, int(m.group(1)))
        mesg = max(mesg, int(m.group(3)))
    return sess, mesg


def count_delivered(args):
    """Messages delivered so far: files in the Maildir's new/, or with
    --sink-out messages received by smtp-sink."""
    if getattr(args, "sink_out", None):
        return sink_counters(args.sink_out)[1]
    return count_new(args.maildir_new)


def proc_tree(root):
    """root and all its descendants, from /proc (pids only, no names)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_cpu_s(root):
    """utime+stime+cutime+cstime summed over the tree: CPU seconds used by the
    MTA, including children that already exited and were reaped."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in proc_tree(root):
        try:
            with open("/proc/%d/stat" % p) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


def tree_roles(root):
    """'name xN, ...' for the processes of the tree: the first word of each
    command line ('hikyaku: smtpd ...' counts as smtpd; Postfix's daemons by
    their program name), to show what ran, e.g. how many smtpd processes."""
    counts = {}
    for p in proc_tree(root):
        try:
            with open("/proc/%d/cmdline" % p, "rb") as f:
                words = f.read().replace(b"\0", b" ").decode("utf-8", "replace").split()
        except OSError:
            continue
        if not words:
            continue
        name = words[1] if words[0] == "hikyaku:" and len(words) > 1 else \
            os.path.basename(words[0])
        counts[name] = counts.get(name, 0) + 1
    return ", ".join("%s x%d" % (k, v) if v > 1 else k for k, v in sorted(counts.items()))


def proc_mem_kib(pid):
    """Proportional set size (shared pages split among their users, so a
    multi-process MTA is not billed its shared libraries once per process);
    VmRSS where smaps_rollup is unreadable (not root)."""
    for path, key in (("/proc/%d/smaps_rollup" % pid, "Pss:"), ("/proc/%d/status" % pid, "VmRSS:")):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(key):
                        return int(line.split()[1])
        except (OSError, ValueError):
            continue
    return 0


def tree_mem_kib(root):
    return sum(proc_mem_kib(p) for p in proc_tree(root))


# ---------------------------------------------------------------- load

def source_argv(args, count, sessions):
    argv = [args.smtp_source, "-c", "-l", str(args.size), "-m", str(count),
            "-s", str(sessions), "-M", "bench.src",
            "-f", "sender@bench.src", "-t", args.to]
    if args.reuse:
        argv.append("-d")
    argv.append("127.0.0.1:%d" % args.port)
    return argv


def poll_load(args, proc, t0, target, timeout):
    """Wait for smtp-source and for the Maildir to reach `target` files."""
    t_accept = t_deliver = None
    rc = None
    delivered = 0
    peak_mem = 0
    next_scan = next_mem = t0
    while True:
        if rc is None:
            # Waiting on the child gives the accept time to the
            # millisecond without a busy loop.
            try:
                rc = proc.wait(timeout=POLL_S)
                t_accept = time.monotonic() - t0
            except subprocess.TimeoutExpired:
                pass
        now = time.monotonic()
        # The last delivery cannot precede the last 250, so while
        # smtp-source runs the directory is scanned only once a second
        # (scanning 20k entries costs ~10 ms of CPU both MTAs need);
        # after it exits, every 50 ms. The sink's counter (--relay) is the
        # tail of one file: read every 50 ms throughout, since relaying
        # overlaps accepting.
        if rc is not None or now >= next_scan:
            delivered = count_delivered(args)
            next_scan = now + (POLL_S if getattr(args, "sink_out", None) else 1.0)
            if delivered >= target and t_deliver is None:
                t_deliver = time.monotonic() - t0
        if args.mta_pid and now >= next_mem:
            peak_mem = max(peak_mem, tree_mem_kib(args.mta_pid))
            next_mem = now + 1.0
        if rc is not None and t_deliver is not None:
            break
        if rc is not None and rc != 0 and now - t0 - t_accept > 10:
            # smtp-source aborts on the first unexpected reply; give
            # delivery of what was accepted a short grace period only.
            break
        if now - t0 > timeout:
            break
        if rc is not None:
            time.sleep(POLL_S)
    return rc, t_accept, t_deliver, delivered, peak_mem


def run_load(args, count, sessions, tag, timeout):
    """Send `count` messages, wait until they are all in new/.

    Returns a dict with accept/deliver times measured from the start of
    smtp-source. Bounded by `timeout` seconds overall."""
    base = count_delivered(args)
    target = base + count
    outpath = os.path.join(args.log_dir, "%s-%s.smtp-source.out" % (args.label, tag))
    cpu0 = tree_cpu_s(args.mta_pid) if args.mta_pid else None
    sink_pid = getattr(args, "sink_pid", 0)
    sink_cpu0 = tree_cpu_s(sink_pid) if sink_pid else None
    sink_sess0 = sink_counters(args.sink_out)[0] if getattr(args, "sink_out", None) else None
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    m0 = machine_ticks()
    with open(outpath, "wb") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen(source_argv(args, count, sessions), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        rc = None
        try:
            rc, t_accept, t_deliver, delivered, peak_mem = poll_load(
                args, proc, t0, target, timeout)
        finally:
            if proc.poll() is None:
                log("%s/%s: stopping smtp-source pid %d" % (args.label, tag, proc.pid))
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if rc is None:
            log("%s/%s: smtp-source still running after %gs, stopped" % (args.label, tag, timeout))
            rc = proc.returncode
    cpu1 = tree_cpu_s(args.mta_pid) if args.mta_pid else None
    sink_cpu1 = tree_cpu_s(sink_pid) if sink_pid else None
    sink_sess1 = sink_counters(args.sink_out)[0] if sink_sess0 is not None else None
    # smtp-source (reaped above) is this process's only child in this span:
    # strace is started and reaped outside run_load.
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    m1 = machine_ticks()
    with open(outpath, "rb") as f:
        raw = f.read().decode("utf-8", "replace")
    counters = re.findall(r"(\d+)\r", raw)
    errors = [ln for ln in raw.replace("\r", "\n").splitlines() if "fatal" in ln or "warning" in ln]
    return {
        "count": count,
        "sessions": sessions,
        "rc": rc,
        "data_completed": int(counters[-1]) if counters else 0,
        "errors": errors[:5],
        "t_accept": t_accept,
        "t_deliver": t_deliver,
        "delivered": delivered - base,
        "cpu_s": (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None,
        "peak_mem_kib": peak_mem or None,
        "source_cpu_s": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
        "sink_cpu_s": (sink_cpu1 - sink_cpu0) if sink_cpu0 is not None else None,
        # Connections the MTA opened to the sink (sessions that ended in the
        # span; one still open at the end is not counted).
        "sink_sessions": (sink_sess1 - sink_sess0) if sink_sess0 is not None else None,
        "machine_busy": (m1[0] - m0[0]) / (m1[1] - m0[1]) if m1[1] > m0[1] else None,
    }


# ---------------------------------------------------------------- fsync probe

def traced(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("TracerPid:"):
                    return int(line.split()[1]) != 0
    except OSError:
        return True  # gone: nothing to wait for
    return False


def fsync_probe(args):
    """Trace the whole MTA process tree (and children forked meanwhile) while
    it takes and delivers a few messages over one session; count sync calls."""
    if args.probe <= 0 or not args.mta_pid:
        return None
    strace = "/usr/bin/strace"
    if not os.access(strace, os.X_OK):
        return {"skipped": "strace not installed"}
    out = os.path.join(args.log_dir, "%s-fsync.strace" % args.label)
    pids = proc_tree(args.mta_pid)
    argv = [strace, "-f", "-qq", "-o", out,
            "-e", "trace=fsync,fdatasync,sync_file_range,syncfs,msync"]
    for p in pids:
        argv += ["-p", str(p)]
    st = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(traced(p) for p in pids):
        time.sleep(0.05)
    try:
        res = run_load(args, args.probe, 1, "probe", 60)
    finally:
        time.sleep(0.2)
        st.send_signal(signal.SIGINT)  # strace detaches on SIGINT
        try:
            st.wait(10)
        except subprocess.TimeoutExpired:
            st.kill()
            st.wait()
    calls = {}
    try:
        with open(out, errors="replace") as f:
            for line in f:
                m = FSYNC_RE.search(line)
                if m:
                    calls[m.group(1)] = calls.get(m.group(1), 0) + 1
    except OSError:
        pass
    total = sum(calls.values())
    return {"messages": args.probe, "delivered": res["delivered"], "calls": calls,
            "total": total, "per_message": total / args.probe}


# ---------------------------------------------------------------- measure

def cmd_measure(args):
    os.makedirs(args.log_dir, exist_ok=True)
    result = {"label": args.label, "messages": args.messages, "sessions": args.sessions,
              "size": args.size, "reuse": args.reuse,
              "mode": "relay" if args.sink_out else "local"}
    log("%s: fsync probe (%d messages, 1 session, under strace)" % (args.label, args.probe))
    result["fsync"] = fsync_probe(args)
    if args.warmup > 0:
        log("%s: warm-up (%d messages, %d sessions)" % (args.label, args.warmup, args.sessions))
        w = run_load(args, args.warmup, args.sessions, "warmup", args.timeout)
        result["warmup"] = w
        if w["rc"] != 0 or w["t_deliver"] is None:
            log("%s: warm-up failed: rc=%s delivered=%d/%d %s"
                % (args.label, w["rc"], w["delivered"], args.warmup, "; ".join(w["errors"])))
    # Let writeback from earlier phases settle so it is not billed to this run.
    os.sync()
    time.sleep(1)
    log("%s: measured run (%d messages, %d sessions, %d bytes)"
        % (args.label, args.messages, args.sessions, args.size))
    r = run_load(args, args.messages, args.sessions, "run", args.timeout)
    result["run"] = r
    result["processes"] = tree_roles(args.mta_pid)
    log("%s: processes (the tree whose CPU is counted): %s" % (args.label, result["processes"]))
    n = args.messages
    result["accepted_per_s"] = n / r["t_accept"] if r["t_accept"] and r["rc"] == 0 else None
    result["delivered_per_s"] = n / r["t_deliver"] if r["t_deliver"] else None
    if r["t_deliver"] is None:
        # Partial: report how far it got within the bound.
        result["partial_delivered"] = r["delivered"]
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    ok = r["rc"] == 0 and r["t_deliver"] is not None
    log("%s: accepted %s/s, %s %s/s%s" % (
        args.label, fmt(result["accepted_per_s"]),
        "relayed (end-to-end)" if args.sink_out else "delivered", fmt(result["delivered_per_s"]),
        "" if ok else "  (INCOMPLETE: rc=%s, delivered %d/%d, %s)"
        % (r["rc"], r["delivered"], n, "; ".join(r["errors"]) or "no smtp-source error")))
    return 0 if ok else 2


# ---------------------------------------------------------------- report

def fmt(v, nd=0):
    if v is None:
        return "n/a"
    return "%.*f" % (nd, v)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "n/a"
    return "%.2fx" % (a / b)


def fsync_text(fs):
    if fs is None:
        return "not probed"
    if "skipped" in fs:
        return "not probed (%s)" % fs["skipped"]
    parts = ", ".join("%s %d" % kv for kv in sorted(fs["calls"].items())) or "none"
    return "%d sync calls for %d messages (%.1f/msg: %s)" % (
        fs["total"], fs["messages"], fs["per_message"], parts)


def median(vals):
    vals = sorted(v for v in vals if v is not None)
    if not vals:
        return None
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


def summarize(runs):
    """One column of the table from one MTA's rounds (medians across rounds;
    a failed round makes the rate n/a rather than flattering the median)."""
    acc_ok = all(r["run"]["rc"] == 0 for r in runs)
    dlv_ok = all(r["run"]["t_deliver"] is not None for r in runs)
    ok = acc_ok and dlv_ok
    n = sum(r["messages"] for r in runs)
    cpu = [r["run"]["cpu_s"] for r in runs]
    mem = [r["run"]["peak_mem_kib"] for r in runs if r["run"]["peak_mem_kib"]]
    return {
        "ok": ok,
        "acc": median(r.get("accepted_per_s") for r in runs) if acc_ok else None,
        "dlv": median(r.get("delivered_per_s") for r in runs) if dlv_ok else None,
        "acc_all": [r.get("accepted_per_s") for r in runs],
        "dlv_all": [r.get("delivered_per_s") for r in runs],
        "t_accept": median(r["run"]["t_accept"] for r in runs),
        "t_deliver": median(r["run"]["t_deliver"] for r in runs),
        "lag": median(r["run"]["t_deliver"] - r["run"]["t_accept"] for r in runs
                      if r["run"]["t_deliver"] is not None and r["run"]["t_accept"] is not None),
        "delivered": "%d/%d" % (sum(r["run"]["delivered"] for r in runs), n),
        "rc": ",".join(str(r["run"]["rc"]) for r in runs),
        "cpu_ms": (1000 * sum(cpu) / n) if None not in cpu else None,
        "mem": max(mem) / 1024 if mem else None,
        "fsync": runs[0].get("fsync"),
        "errors": [e for r in runs for e in r["run"]["errors"]],
        # --relay extras (None for older or local-delivery results).
        "relay": any(r.get("mode") == "relay" for r in runs),
        "sink_cpu_ms": per_msg(runs, "sink_cpu_s"),
        "source_cpu_ms": per_msg(runs, "source_cpu_s"),
        "sink_sess": per_msg(runs, "sink_sessions", 1),
        "mta_busy": median(busy(r, "cpu_s") for r in runs),
        "sink_busy": median(busy(r, "sink_cpu_s") for r in runs),
        "source_busy": median(busy(r, "source_cpu_s") for r in runs),
        "machine_busy": median(r["run"].get("machine_busy") for r in runs),
    }


def per_msg(runs, key, scale=1000):
    """sum of run[key] over rounds / messages (x1000: ms per message)."""
    vals = [r["run"].get(key) for r in runs]
    if not vals or None in vals:
        return None
    return scale * sum(vals) / sum(r["messages"] for r in runs)


def busy(r, key):
    """CPU seconds of run[key] / wall seconds until all were delivered (or
    until smtp-source exited when delivery did not finish): cores busy."""
    run = r["run"]
    wall = run.get("t_deliver") or run.get("t_accept")
    v = run.get(key)
    return v / wall if v is not None and wall else None


def cmd_report(args):
    by = {}
    for p in args.files:
        with open(p) as f:
            r = json.load(f)
        by.setdefault(r["label"], []).append(r)
    labels = list(by)
    rounds = max(len(v) for v in by.values())
    col = {k: summarize(v) for k, v in by.items()}
    if any(c["relay"] for c in col.values()):
        return relay_report(labels, rounds, col)
    w = max(14, max(len(x) for x in labels) + 2)
    med = " (median)" if rounds > 1 else ""
    rows = [
        ("accepted msg/s" + med, lambda c: fmt(c["acc"])),
        ("delivered msg/s" + med, lambda c: fmt(c["dlv"])),
        ("smtp-source wall s", lambda c: fmt(c["t_accept"], 2)),
        ("all delivered at s", lambda c: fmt(c["t_deliver"], 2)),
        ("delivery lag s", lambda c: fmt(c["lag"], 2)),
        ("delivered / sent", lambda c: c["delivered"]),
        ("smtp-source rc", lambda c: c["rc"]),
        ("MTA CPU ms/msg", lambda c: fmt(c["cpu_ms"], 2)),
        ("MTA peak PSS MiB", lambda c: fmt(c["mem"], 1)),
    ]
    name_w = 27
    print()
    print("%-*s" % (name_w, "") + "".join("%*s" % (w, x) for x in labels))
    print("-" * (name_w + w * len(labels)))
    for name, fn in rows:
        print("%-*s" % (name_w, name) + "".join("%*s" % (w, fn(col[x])) for x in labels))
    if rounds > 1:
        print()
        for x in labels:
            print("%-8s rounds accepted/s: %s; delivered/s: %s" % (
                x, " ".join(fmt(v) for v in col[x]["acc_all"]),
                " ".join(fmt(v) for v in col[x]["dlv_all"])))
    print()
    if "hikyaku" in col and "postfix" in col:
        h, p = col["hikyaku"], col["postfix"]
        print("ratio hikyaku/postfix  accepted msg/s:  %s" % ratio(h["acc"], p["acc"]))
        print("ratio hikyaku/postfix  delivered msg/s: %s" % ratio(h["dlv"], p["dlv"]))
        print()
    print("fsync check (sync syscalls under strace, whole process tree, 1 session):")
    for x in labels:
        print("  %-8s %s" % (x, fsync_text(col[x]["fsync"])))
    bad = [x for x in labels if not col[x]["ok"]]
    if bad:
        print()
        print("INCOMPLETE: %s (a round failed or timed out; see the logs)" % ", ".join(bad))
        for x in bad:
            if col[x]["errors"]:
                print("  %s: %s" % (x, " | ".join(col[x]["errors"][:5])))
    return 1 if bad else 0


def relay_report(labels, rounds, col):
    """run.sh --relay: the table, the ratios, the 2x target, fsync."""
    w = max(14, max(len(x) for x in labels) + 2)
    both = "hikyaku" in col and "postfix" in col
    med = " (median)" if rounds > 1 else ""
    ncpu = os.cpu_count() or 1
    rows = [
        ("accepted msg/s" + med, "acc", 0, True),
        ("relayed msg/s (end-to-end)" + med, "dlv", 0, True),
        ("smtp-source wall s", "t_accept", 2, False),
        ("all at the sink at s", "t_deliver", 2, False),
        ("relay lag s", "lag", 2, False),
        ("at the sink / sent", "delivered", None, False),
        ("smtp-source rc", "rc", None, False),
        ("sink connections per msg", "sink_sess", 2, False),
        ("MTA CPU ms/msg", "cpu_ms", 2, True),
        ("MTA CPU cores busy", "mta_busy", 2, False),
        ("MTA peak PSS MiB", "mem", 1, False),
        ("sink CPU ms/msg", "sink_cpu_ms", 3, False),
        ("sink CPU cores busy", "sink_busy", 2, False),
        ("smtp-source CPU ms/msg", "source_cpu_ms", 3, False),
        ("smtp-source CPU cores busy", "source_busy", 2, False),
        ("all %d CPUs busy (/proc/stat)" % ncpu, "machine_busy", 2, False),
    ]
    name_w = 32
    head = "%-*s" % (name_w, "") + "".join("%*s" % (w, x) for x in labels)
    if both:
        head += "%*s" % (w + 2, "hikyaku/postfix")
    print()
    print(head)
    print("-" * len(head))
    for name, key, nd, show_ratio in rows:
        vals = [col[x][key] for x in labels]
        line = "%-*s" % (name_w, name) + "".join(
            "%*s" % (w, v if nd is None else fmt(v, nd)) for v in vals)
        if both and show_ratio:
            line += "%*s" % (w + 2, ratio(col["hikyaku"][key], col["postfix"][key]))
        print(line)
    if rounds > 1:
        print()
        for x in labels:
            print("%-8s rounds accepted/s: %s; relayed/s: %s" % (
                x, " ".join(fmt(v) for v in col[x]["acc_all"]),
                " ".join(fmt(v) for v in col[x]["dlv_all"])))
    print()
    if both:
        h, p = col["hikyaku"], col["postfix"]
        print("ratio hikyaku/postfix  accepted msg/s:             %s" % ratio(h["acc"], p["acc"]))
        print("ratio hikyaku/postfix  relayed msg/s (end-to-end): %s" % ratio(h["dlv"], p["dlv"]))
        if h["dlv"] is not None and p["dlv"]:
            q = h["dlv"] / p["dlv"]
            print("target (issue 4): relayed >= 2x Postfix with fsync on accept: %s (%.2fx)"
                  % ("met" if q >= 2 else "NOT met", q))
        print()
    print("fsync check (sync syscalls under strace, whole process tree, 1 session):")
    for x in labels:
        print("  %-8s %s" % (x, fsync_text(col[x]["fsync"])))
    bad = [x for x in labels if not col[x]["ok"]]
    if bad:
        print()
        print("INCOMPLETE: %s (a round failed or timed out; see the logs)" % ", ".join(bad))
        for x in bad:
            if col[x]["errors"]:
                print("  %s: %s" % (x, " | ".join(col[x]["errors"][:5])))
    return 1 if bad else 0


# ---------------------------------------------------------------- TLS (run.sh --tls)

def tree_mem_detail(root):
    """RSS and PSS (KiB) summed over the tree from smaps_rollup, and the
    number of processes. RSS counts shared pages once per process (so it
    overstates a multi-process MTA); PSS splits them among their users."""
    rss = pss = nproc = 0
    for p in proc_tree(root):
        try:
            with open("/proc/%d/smaps_rollup" % p) as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
            nproc += 1
        except (OSError, ValueError, IndexError):
            continue
    return {"rss_kib": rss, "pss_kib": pss, "procs": nproc}


def machine_ticks():
    """(busy, total) jiffies of all CPUs from /proc/stat; busy excludes idle
    and iowait and includes softirq (loopback TCP is processed there, often
    not billed to either process) and steal."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7], sum(v)


def parse_tlsload(path):
    """The last JSON line tlsload printed, or None."""
    try:
        with open(path, errors="replace") as f:
            lines = [ln for ln in f if ln.startswith("{")]
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def tlsload_run(args, tag, mode, count, sessions, per_session, expect_msgs, timeout):
    """Run tlsload in one of its load modes and wait (bounded) until the
    messages it sent are in new/. MTA CPU is measured over the same span."""
    base = count_new(args.maildir_new)
    outpath = os.path.join(args.log_dir, "%s-tls-%s.out" % (args.label, tag))
    argv = [args.tlsload, "-p", str(args.port), "-m", mode, "-n", str(count),
            "-s", str(sessions), "-k", str(per_session), "-l", str(args.size),
            "-T", str(int(min(timeout, 3600)))]
    cpu0 = tree_cpu_s(args.mta_pid)
    m0 = machine_ticks()
    with open(outpath, "wb") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        rc = None
        try:
            rc, t_accept, t_deliver, delivered, peak_mem = poll_load(
                args, proc, t0, base + expect_msgs, timeout)
        finally:
            if proc.poll() is None:
                log("%s/%s: stopping tlsload pid %d" % (args.label, tag, proc.pid))
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    cpu1 = tree_cpu_s(args.mta_pid)
    m1 = machine_ticks()
    res = parse_tlsload(outpath) or {}
    r = {
        "mode": mode, "count": count, "sessions": sessions, "rc": rc,
        "messages": expect_msgs, "t_accept": t_accept, "t_deliver": t_deliver,
        "delivered": delivered - base, "mta_cpu_s": cpu1 - cpu0, "peak_pss_kib": peak_mem,
        "machine_busy": (m1[0] - m0[0]) / (m1[1] - m0[1]) if m1[1] > m0[1] else None,
        "done": res.get("done"), "handshakes": res.get("handshakes"),
        "errors": res.get("errors"), "first_error": res.get("first_error"),
        "client_cpu_s": res.get("client_cpu_s"), "client_wall_s": res.get("wall_s"),
        "tls": "%s %s %s" % (res.get("proto"), res.get("cipher"), res.get("group"))
        if res else None,
    }
    ok = rc == 0 and (expect_msgs == 0 or t_deliver is not None)
    r["ok"] = ok
    wall = t_accept or 0
    log("%s/%s: rc=%s %s in %.2fs, MTA CPU %.2fs, client CPU %s s%s" % (
        args.label, tag, rc, "%s sessions" % res.get("handshakes"), wall, r["mta_cpu_s"],
        fmt(r["client_cpu_s"], 2),
        "" if ok else "  (INCOMPLETE: delivered %d/%d, %s)" % (
            r["delivered"], expect_msgs, r["first_error"] or "no tlsload error")))
    return r


def tls_load(args, result):
    ok = True
    if args.warmup > 0:
        log("%s: warm-up (%d messages, one STARTTLS session each, %d sessions)"
            % (args.label, args.warmup, args.sessions))
        w = tlsload_run(args, "warmup", "new", args.warmup, args.sessions, 1, args.warmup,
                        args.timeout)
        result["warmup"] = w
    os.sync()
    time.sleep(1)
    phases = [
        ("hs", "hs", args.messages, args.sessions, 1, 0),
        ("new", "new", args.messages, args.sessions, 1, args.messages),
        ("reuse", "reuse", args.sessions, args.sessions, args.per_session,
         args.sessions * args.per_session),
    ]
    for tag, mode, count, sessions, per, msgs in phases:
        log("%s: %s (%s)" % (args.label, tag, {
            "hs": "%d STARTTLS sessions without mail, %d concurrent" % (count, sessions),
            "new": "%d messages, one STARTTLS session each, %d concurrent" % (count, sessions),
            "reuse": "%d STARTTLS sessions x %d messages" % (sessions, per)}[tag]))
        r = tlsload_run(args, tag, mode, count, sessions, per, msgs, args.timeout)
        result[tag] = r
        ok = ok and r["ok"]
        os.sync()
        time.sleep(1)
    return ok


def read_ready(proc, timeout):
    """The 'ready OK FAILED' line of tlsload -m idle, bounded in time."""
    import select
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        r, _, _ = select.select([proc.stdout], [], [], 1.0)
        if not r:
            continue
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            return None
        buf += chunk
        if b"\n" in buf:
            parts = buf.split(b"\n", 1)[0].split()
            if len(parts) == 3 and parts[0] == b"ready":
                return int(parts[1]), int(parts[2]), buf.split(b"\n", 1)[1]
            return None
    return None


def tls_idle(args, result):
    """Memory before and after opening args.idle TLS connections (each
    EHLO, STARTTLS, handshake, EHLO) that then stay idle."""
    # Warm-up: a few sequential sessions so lazily built state (TLS context,
    # worker threads, Postfix's tlsmgr/cleanup/...) exists before "before".
    # For Postfix this leaves one idle smtpd that the first idle connection
    # reuses: an error of 1/N on the per-connection figure.
    w = tlsload_run(args, "idle-warmup", "new", 20, 1, 1, 20, args.timeout)
    result["idle_warmup"] = w
    time.sleep(2)
    before = tree_mem_detail(args.mta_pid)
    cpu0 = tree_cpu_s(args.mta_pid)
    argv = [args.tlsload, "-p", str(args.port), "-m", "idle", "-n", str(args.idle),
            "-s", str(min(args.sessions, args.idle)), "-T", str(int(min(args.timeout, 3600))),
            "-H", str(int(min(args.timeout + 120, 3600)))]
    log("%s: idle (%d TLS connections, opened by %d threads, then idle)"
        % (args.label, args.idle, min(args.sessions, args.idle)))
    outpath = os.path.join(args.log_dir, "%s-tls-idle.out" % args.label)
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    after = None
    ready = None
    tail = b""
    try:
        ready = read_ready(proc, args.timeout)
        t_open = time.monotonic() - t0
        if ready is not None:
            # Let the MTA settle (Postfix's master, anvil, ...), then take the
            # largest of three samples a second apart.
            time.sleep(2)
            samples = []
            for _ in range(3):
                samples.append(tree_mem_detail(args.mta_pid))
                time.sleep(1)
            after = max(samples, key=lambda m: m["pss_kib"])
        cpu1 = tree_cpu_s(args.mta_pid)
    finally:
        try:
            proc.stdin.close()  # tlsload QUITs everything and exits
        except OSError:
            pass
        try:
            tail = proc.stdout.read() if proc.wait(60) is not None else b""
        except subprocess.TimeoutExpired:
            log("%s/idle: tlsload did not exit, killing pid %d" % (args.label, proc.pid))
            proc.kill()
            proc.wait()
    ok_n, failed = (ready[0], ready[1]) if ready else (0, args.idle)
    with open(outpath, "wb") as f:
        f.write((ready[2] if ready else b"") + tail)
    res = parse_tlsload(outpath) or {}
    r = {"count": args.idle, "ok": ok_n, "failed": failed, "before": before, "after": after,
         "t_open": t_open if ready else None, "mta_cpu_s": cpu1 - cpu0,
         "client_cpu_s": res.get("client_cpu_s"), "first_error": res.get("first_error"),
         "rc": proc.returncode}
    if after and ok_n:
        r["rss_kib_per_conn"] = (after["rss_kib"] - before["rss_kib"]) / ok_n
        r["pss_kib_per_conn"] = (after["pss_kib"] - before["pss_kib"]) / ok_n
    result["idle"] = r
    log("%s/idle: %d open (%d failed) in %s s; PSS %d -> %d KiB (%s KiB/conn), %d -> %d procs"
        % (args.label, ok_n, failed, fmt(r["t_open"], 1), before["pss_kib"],
           after["pss_kib"] if after else 0, fmt(r.get("pss_kib_per_conn"), 1),
           before["procs"], after["procs"] if after else 0))
    return bool(after) and failed == 0


def cmd_tls(args):
    os.makedirs(args.log_dir, exist_ok=True)
    result = {"label": args.label, "messages": args.messages, "sessions": args.sessions,
              "size": args.size, "per_session": args.per_session, "phases": args.phases}
    if args.phases == "load":
        ok = tls_load(args, result)
    else:
        ok = tls_idle(args, result)
    result["ok"] = ok
    result["processes"] = tree_roles(args.mta_pid)
    log("%s: processes (the tree whose CPU is counted): %s" % (args.label, result["processes"]))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    return 0 if ok else 2


def per(a, b):
    return a / b if a is not None and b else None


NCPU = os.cpu_count() or 1


def tls_ratio(a, b):
    if a is None or b is None or b == 0:
        return "n/a"
    q = a / b
    return "%.2fx" % q if q >= 0.1 else "%.3fx" % q


def tls_column(runs):
    """One MTA's column of the TLS table: medians over rounds."""
    def med(fn):
        vals = []
        for r in runs:
            try:
                vals.append(fn(r))
            except (KeyError, TypeError, ZeroDivisionError):
                vals.append(None)
        return median(vals)

    def rate(r, ph, key):
        x = r[ph]
        if not x["ok"]:
            return None
        return x[key] / x["t_accept"] if key == "handshakes" else x["messages"] / x[key]

    load = [r for r in runs if r["phases"] == "load"]
    idle = [r for r in runs if r["phases"] == "idle"]
    c = {"ok": all(r["ok"] for r in runs)}
    if load:
        c.update({
            "hs_rate": med(lambda r: rate(r, "hs", "handshakes")),
            "hs_cpu_ms": med(lambda r: 1000 * r["hs"]["mta_cpu_s"] / r["hs"]["handshakes"]),
            "hs_per_core": med(lambda r: r["hs"]["handshakes"] / r["hs"]["mta_cpu_s"]),
            "hs_client": med(lambda r: r["hs"]["client_cpu_s"] / r["hs"]["t_accept"]),
            "hs_mta": med(lambda r: r["hs"]["mta_cpu_s"] / r["hs"]["t_accept"]),
            "hs_busy": med(lambda r: r["hs"]["machine_busy"]),
            "new_acc": med(lambda r: rate(r, "new", "t_accept")),
            "new_dlv": med(lambda r: rate(r, "new", "t_deliver")),
            "new_hs_rate": med(lambda r: rate(r, "new", "handshakes")),
            "new_cpu_ms": med(lambda r: 1000 * r["new"]["mta_cpu_s"] / r["new"]["messages"]),
            "new_per_core": med(lambda r: r["new"]["handshakes"] / r["new"]["mta_cpu_s"]),
            "new_client": med(lambda r: r["new"]["client_cpu_s"] / r["new"]["t_accept"]),
            "new_mta": med(lambda r: r["new"]["mta_cpu_s"] / r["new"]["t_accept"]),
            "new_busy": med(lambda r: r["new"]["machine_busy"]),
            "reuse_acc": med(lambda r: rate(r, "reuse", "t_accept")),
            "reuse_dlv": med(lambda r: rate(r, "reuse", "t_deliver")),
            "reuse_cpu_ms": med(lambda r: 1000 * r["reuse"]["mta_cpu_s"]
                                / r["reuse"]["messages"]),
            "reuse_client": med(lambda r: r["reuse"]["client_cpu_s"] / r["reuse"]["t_accept"]),
            "reuse_mta": med(lambda r: r["reuse"]["mta_cpu_s"] / r["reuse"]["t_accept"]),
            "reuse_busy": med(lambda r: r["reuse"]["machine_busy"]),
            "tls": load[0]["hs"].get("tls"),
            "load_errors": [r[ph]["first_error"] for r in load for ph in ("hs", "new", "reuse")
                            if r[ph].get("first_error") or not r[ph]["ok"]],
            "new_sent": "%d/%d" % (sum(r["new"]["delivered"] for r in load),
                                   sum(r["new"]["messages"] for r in load)),
            "reuse_sent": "%d/%d" % (sum(r["reuse"]["delivered"] for r in load),
                                     sum(r["reuse"]["messages"] for r in load)),
        })
    if idle:
        c.update({
            "idle_n": "%d/%d" % (min(r["idle"]["ok"] for r in idle), idle[0]["idle"]["count"]),
            "idle_t": med(lambda r: r["idle"]["t_open"]),
            "idle_cpu_ms": med(lambda r: 1000 * r["idle"]["mta_cpu_s"] / r["idle"]["ok"]),
            "rss0": med(lambda r: r["idle"]["before"]["rss_kib"] / 1024),
            "rss1": med(lambda r: r["idle"]["after"]["rss_kib"] / 1024),
            "pss0": med(lambda r: r["idle"]["before"]["pss_kib"] / 1024),
            "pss1": med(lambda r: r["idle"]["after"]["pss_kib"] / 1024),
            "procs": "%s -> %s" % (idle[0]["idle"]["before"]["procs"],
                                   (idle[0]["idle"]["after"] or {}).get("procs", "?")),
            "rss_per": med(lambda r: r["idle"]["rss_kib_per_conn"]),
            "pss_per": med(lambda r: r["idle"]["pss_kib_per_conn"]),
            "idle_errors": [r["idle"]["first_error"] for r in idle
                            if r["idle"].get("first_error")],
        })
    return c


def cmd_tlsreport(args):
    by = {}
    for p in args.files:
        with open(p) as f:
            r = json.load(f)
        by.setdefault(r["label"], []).append(r)
    labels = [x for x in ("postfix", "hikyaku") if x in by] + \
        [x for x in by if x not in ("postfix", "hikyaku")]
    col = {k: tls_column(v) for k, v in by.items()}
    both = "hikyaku" in col and "postfix" in col
    w = 14
    name_w = 40
    head = "%-*s" % (name_w, "") + "".join("%*s" % (w, x) for x in labels)
    if both:
        head += "%*s" % (w + 2, "hikyaku/postfix")
    print()
    print(head)
    print("-" * len(head))

    def row(name, key, nd=0, ratio_ok=True):
        vals = [col[x].get(key) for x in labels]
        if all(v is None for v in vals) and not any(key in col[x] for x in labels):
            return
        line = "%-*s" % (name_w, name) + "".join(
            "%*s" % (w, v if isinstance(v, str) else fmt(v, nd)) for v in vals)
        if both and ratio_ok:
            line += "%*s" % (w + 2, tls_ratio(col["hikyaku"].get(key), col["postfix"].get(key)))
        print(line)

    def section(title):
        print(title)

    def cpu_rows(ph):
        # Who used the machine: when all CPUs are busy the rates are bounded
        # by the machine, and the client's share says how much of it the load
        # generator took; the per-MTA-CPU-second rows do not depend on it.
        row("  MTA CPU cores busy", ph + "_mta", 2)
        row("  client CPU cores busy", ph + "_client", 2, ratio_ok=False)
        row("  all %d CPUs busy (/proc/stat)" % NCPU, ph + "_busy", 2, ratio_ok=False)

    any_load = any("hs_rate" in col[x] for x in labels)
    any_idle = any("idle_n" in col[x] for x in labels)
    if any_load:
        section("STARTTLS sessions without mail (EHLO STARTTLS EHLO QUIT)")
        row("  handshakes/s", "hs_rate")
        row("  MTA CPU ms/handshake", "hs_cpu_ms", 2)
        row("  handshakes per MTA CPU-second (/core)", "hs_per_core")
        cpu_rows("hs")
        section("one message per STARTTLS session")
        row("  accepted msg/s (= handshakes/s)", "new_acc")
        row("  delivered msg/s", "new_dlv")
        row("  MTA CPU ms/msg (incl. handshake)", "new_cpu_ms", 2)
        row("  sessions per MTA CPU-second (/core)", "new_per_core")
        cpu_rows("new")
        row("  delivered / sent", "new_sent", ratio_ok=False)
        section("many messages per STARTTLS session")
        row("  accepted msg/s", "reuse_acc")
        row("  delivered msg/s", "reuse_dlv")
        row("  MTA CPU ms/msg", "reuse_cpu_ms", 2)
        cpu_rows("reuse")
        row("  delivered / sent", "reuse_sent", ratio_ok=False)
    if any_idle:
        section("idle TLS connections (EHLO STARTTLS EHLO, then idle)")
        row("  connections held", "idle_n", ratio_ok=False)
        row("  time to open them s", "idle_t", 1)
        row("  MTA CPU ms per connection opened", "idle_cpu_ms", 2)
        row("  MTA processes before -> after", "procs", ratio_ok=False)
        row("  MTA RSS before MiB (sum over procs)", "rss0", 1)
        row("  MTA RSS after MiB", "rss1", 1)
        row("  MTA PSS before MiB", "pss0", 1)
        row("  MTA PSS after MiB", "pss1", 1)
        row("  RSS KiB per idle TLS connection", "rss_per", 1)
        row("  PSS KiB per idle TLS connection", "pss_per", 1)
    print()
    for x in labels:
        if col[x].get("tls"):
            print("negotiated with %-8s %s" % (x + ":", col[x]["tls"]))
    if any_idle and "hikyaku" in col and col["hikyaku"].get("pss_per") is not None:
        v = col["hikyaku"]["pss_per"]
        print("hikyaku PSS per idle TLS connection: %.1f KiB (target < 64 KiB: %s)"
              % (v, "met" if v < 64 else "NOT met"))
    bad = [x for x in labels if not col[x]["ok"]]
    if bad:
        print()
        print("INCOMPLETE: %s (a phase failed or timed out; see the logs)" % ", ".join(bad))
        for x in bad:
            errs = [e for e in col[x].get("load_errors", []) + col[x].get("idle_errors", []) if e]
            if errs:
                print("  %s: %s" % (x, " | ".join(errs[:5])))
    return 1 if bad else 0


def on_term(signum, _frame):
    # run.sh's cleanup sends SIGTERM; unwind so the finally blocks stop
    # smtp-source and strace (our own children, by PID).
    raise SystemExit(128 + signum)


def main():
    signal.signal(signal.SIGTERM, on_term)
    ap = argparse.ArgumentParser(prog="bench.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("freeport")
    w = sub.add_parser("waitport")
    w.add_argument("--port", type=int, required=True)
    w.add_argument("--pid", type=int, default=0)
    w.add_argument("--timeout", type=float, default=30)
    m = sub.add_parser("measure")
    m.add_argument("--label", required=True)
    m.add_argument("--port", type=int, required=True)
    m.add_argument("--maildir-new", required=True)
    m.add_argument("--mta-pid", type=int, default=0)
    m.add_argument("--messages", type=int, default=20000)
    m.add_argument("--sessions", type=int, default=20)
    m.add_argument("--size", type=int, default=4096)
    m.add_argument("--warmup", type=int, default=500)
    m.add_argument("--probe", type=int, default=20)
    m.add_argument("--timeout", type=float, default=300)
    m.add_argument("--reuse", action="store_true")
    m.add_argument("--smtp-source", default="/usr/sbin/smtp-source")
    m.add_argument("--to", default="user@bench.test", help="smtp-source -t")
    m.add_argument("--sink-out", default="",
                   help="--relay: smtp-sink -c output; count what it received instead of new/")
    m.add_argument("--sink-pid", type=int, default=0, help="--relay: smtp-sink's PID (CPU)")
    m.add_argument("--log-dir", required=True)
    m.add_argument("--out", required=True)
    r = sub.add_parser("report")
    r.add_argument("files", nargs="+")
    t = sub.add_parser("tls")
    t.add_argument("--phases", choices=("load", "idle"), required=True)
    t.add_argument("--label", required=True)
    t.add_argument("--port", type=int, required=True)
    t.add_argument("--maildir-new", required=True)
    t.add_argument("--mta-pid", type=int, required=True)
    t.add_argument("--messages", type=int, default=5000)
    t.add_argument("--sessions", type=int, default=20)
    t.add_argument("--per-session", type=int, default=250)
    t.add_argument("--size", type=int, default=4096)
    t.add_argument("--warmup", type=int, default=500)
    t.add_argument("--idle", type=int, default=2000)
    t.add_argument("--timeout", type=float, default=300)
    t.add_argument("--tlsload", required=True)
    t.add_argument("--log-dir", required=True)
    t.add_argument("--out", required=True)
    tr = sub.add_parser("tlsreport")
    tr.add_argument("files", nargs="+")
    args = ap.parse_args()
    return {"freeport": cmd_freeport, "waitport": cmd_waitport,
            "measure": cmd_measure, "report": cmd_report,
            "tls": cmd_tls, "tlsreport": cmd_tlsreport}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
