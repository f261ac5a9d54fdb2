"""Crash tests: SIGKILL (and SIGTERM) the server at random moments under
concurrent load and check that no acknowledged message is ever lost.

A message counts as acknowledged only when smtplib's sendmail() returned
normally, i.e. the server sent 250 to the end of DATA: by the spool contract
(src/queue/spool.h) it was then durable in queue/. After the last restart the
queue is drained and every acknowledged (token, recipient) must be in that
recipient's Maildir exactly once. Losses fail, and so do duplicates: a
Maildir file's name comes from the queue id and the recipient, so a
delivery repeated after a crash between the Maildir write and the spool
update finds its earlier copy. (A crash between commit and the 250 cannot
duplicate here: the load never resends a message that got no 250.)

Reproduce a run with HK_CRASH_SEED=<seed> (printed; shown with pytest -s or
on failure). HK_CRASH_KILLS sets the number of kills (default 6).
"""
import collections
import glob
import os
import random
import signal
import smtplib
import threading
import time
import uuid

USERS_LOCAL = ["alice", "bob", "carol"]
RCPT_SETS = [
    ("alice@localhost",),
    ("bob@localhost",),
    ("alice@localhost", "bob@localhost", "dave@example.org"),
    ("carol@localhost", "dave@example.org"),
]


def crash_seed():
    seed = int(os.environ.get("HK_CRASH_SEED") or time.time_ns() % 1_000_000_007)
    print(f"crash test: seed={seed} (rerun with HK_CRASH_SEED={seed})")
    return seed


class Load:
    """n client threads sending in a loop over fresh or reused connections;
    records (token, rcpts) only for messages the server answered 250."""

    def __init__(self, port, n, seed, multi=True):
        self.port = port
        self.n = n
        self.multi = multi
        self.seed = seed
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.acked = []  # [(token, rcpts)]
        self.attempted = set()
        self.errors = collections.Counter()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(n)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self, timeout=20):
        self.stop_ev.set()
        for t in self.threads:
            t.join(timeout)
        alive = [t for t in self.threads if t.is_alive()]
        assert not alive, f"{len(alive)} load threads did not stop"

    def run(self, idx):
        rnd = random.Random(self.seed * 1000 + idx)
        while not self.stop_ev.is_set():
            s = None
            try:
                s = smtplib.SMTP("127.0.0.1", self.port, timeout=5)
                s.ehlo(f"load{idx}.example")
                for _ in range(rnd.randint(1, 20)):
                    if self.stop_ev.is_set():
                        break
                    self.send_one(s, idx, rnd)
                s.quit()
                s = None
            except Exception as e:  # connection refused/reset, 4xx, timeouts
                name = type(e).__name__
                if isinstance(e, smtplib.SMTPResponseException):
                    name += f"({e.smtp_code})"
                with self.lock:
                    self.errors[name] += 1
                time.sleep(rnd.uniform(0.005, 0.03))
            finally:
                if s is not None:
                    try:
                        s.close()
                    except Exception:
                        pass

    def send_one(self, s, idx, rnd):
        token = f"t{idx}x{uuid.uuid4().hex}"
        rcpts = rnd.choice(RCPT_SETS) if self.multi else RCPT_SETS[0]
        size = rnd.choice([0, 0, 0, 2000, 40000])
        body = (f"Subject: crash {token}\r\nMessage-ID: <{token}@load.example>\r\n"
                f"From: load{idx}@example.net\r\n\r\nbody {token}\r\n").encode()
        body += (b"y" * 76 + b"\r\n") * (size // 78) + b"end " + token.encode() + b"\r\n"
        with self.lock:
            self.attempted.add(token)
        refused = s.sendmail(f"load{idx}@example.net", list(rcpts), body)
        # Returning normally means the end of DATA got 250.
        accepted = tuple(r for r in rcpts if r not in refused)
        with self.lock:
            self.acked.append((token, accepted))


def delivered_tokens(hk):
    """{(token, 'user@domain'): count} over every Maildir, checking that each
    delivered file is whole."""
    counts = collections.Counter()
    bad = []
    for path in glob.glob(os.path.join(hk.mailroot, "*", "*", "Maildir", "new", "*")):
        parts = path.split(os.sep)
        domain, user = parts[-5], parts[-4]
        with open(path, "rb") as f:
            data = f.read()
        token = None
        for line in data.split(b"\n"):
            if line.startswith(b"Subject: crash "):
                token = line.split()[-1].decode()
                break
        # Whole: the last line is there and the ,S= size (Maildir++) matches.
        size_tag = path.rsplit(",S=", 1)
        if (token is None or not data.endswith(b"end " + token.encode() + b"\n") or
                (len(size_tag) == 2 and int(size_tag[1]) != len(data))):
            bad.append(path)
            continue
        counts[(token, f"{user}@{domain}")] += 1
    return counts, bad


def check_no_loss(hk, load, kills, label):
    counts, bad = delivered_tokens(hk)
    lost = []
    dups = 0
    n_expected = 0
    for token, rcpts in load.acked:
        for r in rcpts:
            n_expected += 1
            c = counts.get((token, r), 0)
            if c == 0:
                lost.append((token, r))
            dups += max(0, c - 1)
    # Delivered but never even attempted would be an invention.
    invented = [k for k in counts if k[0] not in load.attempted]
    delivered = sum(counts.values())
    multi = sum(1 for _, r in load.acked if len(r) > 1)
    print(f"{label}: acked={len(load.acked)} (multi-rcpt={multi}) copies_expected={n_expected} "
          f"delivered={delivered} lost={len(lost)} duplicates={dups} kills={kills} "
          f"client_errors={dict(load.errors)}")
    assert not bad, f"damaged deliveries: {bad[:5]}"
    assert not invented, f"delivered tokens never sent: {invented[:5]}"
    assert not lost, (f"{len(lost)} acknowledged deliveries lost, e.g. {lost[:5]}\n"
                      + hk.log()[-6000:])
    assert hk.spool_files("incoming") == []
    assert hk.spool_files("corrupt") == [], "a crash left a corrupt envelope"
    return dups


def drain(hk, timeout=30):
    hk.wait_queue_empty(timeout=timeout)


def test_crash_sigkill_under_load(hikyaku):
    seed = crash_seed()
    rnd = random.Random(seed)
    n_kills = int(os.environ.get("HK_CRASH_KILLS") or 6)
    hk = hikyaku(queue={"retry_min": "1s", "retry_max": "2s"})
    load = Load(hk.port, 8, seed).start()
    t0 = time.time()
    kills = 0
    try:
        for _ in range(n_kills):
            time.sleep(rnd.uniform(0.2, 1.0))
            hk.kill()
            kills += 1
            # Sometimes come back at once, sometimes let the clients fail
            # against a closed port for a moment.
            time.sleep(rnd.choice([0, 0, 0.05, 0.2]))
            hk.start()
        time.sleep(rnd.uniform(0.2, 1.0))
    finally:
        load.stop()
    assert len(load.acked) >= 50, f"the load barely ran: {len(load.acked)} acked"
    drain(hk)
    time.sleep(0.2)
    dups = check_no_loss(hk, load, kills, "crash test")
    assert dups == 0, f"{dups} Maildir copies delivered twice after {kills} kills"
    assert hk.log().count("event=start ") == kills + 1
    # About 1.5 s a kill (up to 1 s of load, up to 0.2 s down, the restart).
    assert time.time() - t0 < 30 + 5 * n_kills


def test_crash_sigkill_with_blocked_domain(hikyaku):
    """Kills while a domain is blocked: messages to it sit in the queue with
    partial DONE records (multi-recipient) across several crashes, then get
    delivered when the domain is fixed; other recipients never lose mail."""
    seed = crash_seed()
    rnd = random.Random(seed)
    hk = hikyaku(start=False, queue={"retry_min": "1s", "retry_max": "1s"})
    os.makedirs(hk.mailroot)
    blocker = os.path.join(hk.mailroot, "example.org")
    with open(blocker, "w") as f:
        f.write("not a directory\n")
    hk.start()
    load = Load(hk.port, 6, seed).start()
    kills = 0
    try:
        for _ in range(4):
            time.sleep(rnd.uniform(0.2, 1.0))
            hk.kill()
            kills += 1
            hk.start()
        time.sleep(0.5)
    finally:
        load.stop()
    blocked = [t for t, r in load.acked if "dave@example.org" in r]
    assert blocked, "no message to the blocked domain was acknowledged"
    # They are all still queued: none could be delivered to dave.
    queued = {n.split(".")[0] for n in hk.queue_files()}
    assert len(queued) >= len(blocked), (len(queued), len(blocked))
    os.unlink(blocker)
    drain(hk)
    time.sleep(0.2)
    dups = check_no_loss(hk, load, kills, "crash test (blocked domain)")
    assert dups == 0, f"{dups} Maildir copies delivered twice after {kills} kills"


def test_sigterm_under_load(hikyaku):
    """SIGTERM during load: exit code 0, in time, nothing acknowledged is
    lost across the restart, and (the queue drains its attempts in flight
    before it stops) next to nothing is delivered twice: only a commit that
    ends as the loop stops can be, the client never having seen its 250."""
    seed = crash_seed()
    rnd = random.Random(seed)
    hk = hikyaku()
    load = Load(hk.port, 8, seed).start()
    stops = 0
    try:
        for _ in range(3):
            time.sleep(rnd.uniform(0.3, 0.8))
            t0 = time.time()
            rc = hk.stop(signal.SIGTERM)
            assert rc == 0, f"SIGTERM exit code {rc}\n{hk.log()[-4000:]}"
            assert time.time() - t0 < 10, "shutdown took too long"
            stops += 1
            hk.start()
        time.sleep(0.3)
    finally:
        load.stop()
    assert hk.log().count("event=stopped") == stops
    drain(hk)
    time.sleep(0.2)
    dups = check_no_loss(hk, load, stops, "sigterm test")
    assert dups == 0, f"{dups} duplicate deliveries after {stops} clean stops"
