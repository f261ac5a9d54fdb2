"""Milters at every stage (issue 11): one milter connection per SMTP
session, asked at CONNECT, HELO, MAIL, each RCPT and at the end of data,
each answer applied at its stage. The scripted milter (milter_server.py)
refuses, tempfails, answers with its own reply code, discards, accepts
early, skips steps, dies or goes silent at each stage."""
import time

import pytest

from conftest import RawSMTP, free_port, log_events, wait_event
import milter_server as ms
from test_milter import MSG, conf, delivered, milter, msess  # noqa: F401 (fixture)


def session(hk, greeting=220):
    c = RawSMTP(hk.port)
    if greeting is not None and c.greeting[0] != greeting:
        pytest.fail(f"greeting {c.greeting}\n{hk.log()[-4000:]}")
    return c


def finish(c, code=250):
    c.ok("DATA", 354)
    c.send(MSG.encode() + b".\r\n")
    got, lines = c.reply()
    assert got == code, lines
    return lines


# ---- refusals at each stage ----

@pytest.mark.parametrize("reply,code,enh,text", [
    (ms.REJECT, 554, "5.7.1", None),
    (ms.TEMPFAIL, 421, "4.7.0", None),
    (ms.replycode("554 5.7.1 Go away, spammer"), 554, "5.7.1", "Go away, spammer"),
    (ms.replycode("450 4.7.1 Later please"), 421, "4.7.1", "Later please"),
])
def test_connect_refused(hikyaku, milter, reply, code, enh, text):
    m = milter(replies={"C": reply})
    hk = hikyaku(milters=conf(m.socket))
    c = session(hk, None)
    got, lines = c.greeting
    assert got == code and lines[0][4:].startswith(enh), lines
    if text:
        assert text in lines[0]
    assert c.closed()
    ev = log_events(hk, "milter_reject")
    assert ev and ev[-1]["stage"] == "connect"


@pytest.mark.parametrize("cmd,verb", [("H", "EHLO client.example"),
                                      ("M", "MAIL FROM:<sender@example.net>")])
@pytest.mark.parametrize("reply,code,enh,text", [
    (ms.REJECT, 550, "5.7.1", "Command rejected"),
    (ms.TEMPFAIL, 451, "4.7.1", None),
    (ms.replycode("553 5.7.0 Not from you"), 553, "5.7.0", "Not from you"),
    # an enhanced code of the other class is dropped, ours of the right one used
    (ms.replycode("550 4.2.0 mixed up"), 550, "5.7.1", "mixed up"),
    (ms.replycode("450 no enhanced code"), 450, "4.7.1", "no enhanced code"),
])
def test_helo_mail_refused(hikyaku, milter, cmd, verb, reply, code, enh, text):
    m = milter(replies={cmd: reply})
    hk = hikyaku(milters=conf(m.socket))
    c = session(hk)
    assert c.greeting[0] == 220
    if cmd == "M":
        c.ehlo()
    lines = c.ok(verb, code, enh)
    if text:
        assert text in lines[-1]
    # the session goes on: the command can be tried again
    c.ok("NOOP", 250)
    c.cmd("QUIT")
    c.close()
    time.sleep(0.2)
    assert hk.delivered("alice") == []


def test_rcpt_per_recipient(hikyaku, milter):
    """One recipient refused, one tempfailed, one with the milter's own
    code, one accepted, in the same transaction: the message goes to the
    accepted one only."""
    m = milter(rcpt_replies={"bob@localhost": ms.REJECT,
                             "carol@localhost": ms.TEMPFAIL,
                             "dave@localhost": ms.replycode("550 5.1.1 No such user here")},
               eob=[ms.ACCEPT])
    hk = hikyaku(milters=conf(m.socket))
    c = session(hk)
    c.ehlo()
    c.ok("MAIL FROM:<sender@example.net>", 250)
    c.ok("RCPT TO:<bob@localhost>", 550, "5.7.1")
    c.ok("RCPT TO:<carol@localhost>", 451, "4.7.1")
    assert "No such user here" in c.ok("RCPT TO:<dave@localhost>", 550, "5.1.1")[0]
    c.ok("RCPT TO:<alice@localhost>", 250)
    finish(c)
    c.cmd("QUIT")
    c.close()
    assert "Subject: hello" in delivered(hk)
    assert hk.delivered("bob") == []
    log = msess(m)
    rcpts = [ms.parse_strs(d)[0] for cmd, d in log if cmd == "R"]
    assert rcpts == ["<bob@localhost>", "<carol@localhost>", "<dave@localhost>",
                     "<alice@localhost>"]
    # the RCPT macros are sent with each RCPT, in order
    assert [cmd for cmd, _ in log].count("E") == 1


def test_discard_at_rcpt(hikyaku, milter):
    m = milter(rcpt_replies={"alice@localhost": ms.DISCARD}, eob=[ms.ACCEPT])
    hk = hikyaku(milters=conf(m.socket))
    c = session(hk)
    c.begin()
    lines = finish(c)
    assert lines[-1].startswith("250 2.0.0"), lines
    c.cmd("QUIT")
    c.close()
    assert wait_event(hk, "milter_discard")
    hk.wait_queue_empty()
    time.sleep(0.3)
    assert hk.delivered("alice") == []
    assert "E" not in [cmd for cmd, _ in msess(m)]  # not asked at the end of body


def test_discard_at_connect_drops_every_message(hikyaku, milter):
    """The first milter discards at CONNECT: the second is never asked
    (nor counted as failed), every message of the session is dropped."""
    m = milter(replies={"C": ms.DISCARD})
    m2 = milter()
    hk = hikyaku(milters=conf(m.socket, m2.socket))
    c = session(hk)
    assert c.greeting[0] == 220
    for _ in range(2):
        c.begin(ehlo=False) if _ else c.begin()
        finish(c)
    c.cmd("QUIT")
    c.close()
    time.sleep(0.5)
    assert hk.delivered("alice") == []
    assert not log_events(hk, "milter_failed")
    assert all(cmd != "M" for log in m2.sessions for cmd, _ in log)


@pytest.mark.parametrize("at,gone", [("C", "HMRE"), ("M", "RE"), ("R", "E")])
def test_accept_early(hikyaku, milter, at, gone):
    """SMFIR_ACCEPT: the milter is not asked again in the session (at
    CONNECT or HELO) or the transaction (later); the message is delivered
    unchanged."""
    m = milter(replies={at: ms.ACCEPT}, eob=[ms.addheader("X-Never", "1"), ms.ACCEPT])
    hk = hikyaku(milters=conf(m.socket))
    c = session(hk)
    c.begin()
    finish(c)
    c.cmd("QUIT")
    c.close()
    text = delivered(hk)
    assert "Subject: hello" in text and "X-Never" not in text
    log = msess(m, "C")
    cmds = [cmd for cmd, _ in log if cmd != "D"]
    for g in gone:
        assert g not in cmds, cmds


def test_accept_at_mail_lasts_one_transaction(hikyaku, milter):
    """An accept at MAIL spares the milter the rest of that transaction
    only: the next one is asked again."""
    m = milter(replies={"M": ms.ACCEPT}, eob=[ms.ACCEPT])
    hk = hikyaku(milters=conf(m.socket))
    c = session(hk)
    c.begin()
    finish(c)
    c.ok("MAIL FROM:<sender@example.net>", 250)
    c.ok("RCPT TO:<alice@localhost>", 250)
    finish(c)
    c.cmd("QUIT")
    c.close()
    cmds = [cmd for cmd, _ in msess(m)]
    assert cmds.count("M") == 2 and "R" not in cmds


def test_noconnect_norcpt_flags(hikyaku, milter):
    m = milter(protocol=0x1 | 0x8, eob=[ms.addheader("X-Seen", "yes"), ms.ACCEPT])
    hk = hikyaku(milters=conf(m.socket))
    c = session(hk)
    c.begin(rcpts=("alice@localhost", "bob@localhost"))
    finish(c)
    c.cmd("QUIT")
    c.close()
    assert "X-Seen: yes" in delivered(hk)
    cmds = [cmd for cmd, _ in msess(m)]
    assert "C" not in cmds and "R" not in cmds, cmds
    assert "H" in cmds and "M" in cmds and "E" in cmds


def test_no_reply_flags(hikyaku, milter):
    """NR_CONN, NR_HELO, NR_MAIL, NR_RCPT: those steps are sent and not
    waited for; a reply would be one not asked for."""
    m = milter(protocol=0x1000 | 0x2000 | 0x4000 | 0x8000, eob=[ms.ACCEPT])
    hk = hikyaku(milters=conf(m.socket))
    c = session(hk)
    c.begin()
    finish(c)
    c.cmd("QUIT")
    c.close()
    assert "Subject: hello" in delivered(hk)
    cmds = [cmd for cmd, _ in msess(m)]
    for want in "CHMRE":
        assert want in cmds
    assert not log_events(hk, "milter_failed")


def test_one_connection_per_session_abort_on_rset(hikyaku, milter):
    m = milter(eob=[ms.ACCEPT])
    hk = hikyaku(milters=conf(m.socket))
    c = session(hk)
    c.begin()
    c.ok("RSET", 250)
    c.ok("MAIL FROM:<sender@example.net>", 250)
    c.ok("RCPT TO:<alice@localhost>", 250)
    finish(c)
    c.ok("MAIL FROM:<sender@example.net>", 250)
    c.ok("RCPT TO:<alice@localhost>", 250)
    finish(c)
    c.cmd("QUIT")
    c.close()
    assert _wait(lambda: len(hk.delivered("alice")) == 2)
    log = msess(m)
    cmds = [cmd for cmd, _ in log if cmd != "D"]
    assert cmds.count("O") == 1 and cmds.count("C") == 1
    assert cmds.count("M") == 3 and cmds.count("E") == 2
    # the RSET aborted the first transaction; a finished one needs none
    assert cmds.index("A") < cmds.index("E")
    assert cmds.count("A") == 1
    assert _wait(lambda: log[-1][0] == "Q", 5)  # QUIT at the session's end


def test_chained_milters_see_earlier_changes(hikyaku, milter):
    m1 = milter(eob=[ms.addheader("X-One", "1"), ms.chgheader(1, "Subject", "[1] hello"),
                     ms.ACCEPT])
    m2 = milter(eob=[ms.addheader("X-Two", "2"), ms.ACCEPT])
    hk = hikyaku(milters=conf(m1.socket, m2.socket))
    c = session(hk)
    c.begin()
    finish(c)
    c.cmd("QUIT")
    c.close()
    text = delivered(hk)
    assert "X-One: 1" in text and "X-Two: 2" in text and "Subject: [1] hello" in text
    headers = [ms.parse_strs(d) for cmd, d in msess(m2) if cmd == "L"]
    assert ["X-One", "1"] in headers and ["Subject", "[1] hello"] in headers


def test_second_milter_refuses_rcpt(hikyaku, milter):
    """Milters are asked in order; the second refuses one recipient."""
    m1 = milter()
    m2 = milter(rcpt_replies={"bob@localhost": ms.REJECT})
    hk = hikyaku(milters=conf(m1.socket, m2.socket))
    c = session(hk)
    c.ehlo()
    c.ok("MAIL FROM:<sender@example.net>", 250)
    c.ok("RCPT TO:<bob@localhost>", 550, "5.7.1")
    c.ok("RCPT TO:<alice@localhost>", 250)
    finish(c)
    c.cmd("QUIT")
    c.close()
    assert "Subject: hello" in delivered(hk)


# ---- a dead or silent milter at each stage, under each failure mode ----

@pytest.mark.parametrize("stage", ["C", "H", "M", "R", "E"])
@pytest.mark.parametrize("kind", ["dead", "slow"])
@pytest.mark.parametrize("failure", ["tempfail", "accept"])
def test_failure_at_stage(hikyaku, milter, stage, kind, failure):
    m = None
    if kind == "dead" and stage == "C":
        sock = f"inet:127.0.0.1:{free_port()}"  # refused
    else:
        m = milter()
        sock = m.socket
    hk = hikyaku(milters=conf(sock, failure=failure))
    # from now on (the fixture's readiness probes had their answers)
    if m is not None and kind == "dead":
        m.die_at = stage
    elif m is not None:
        m.slow_at = stage
    t0 = time.time()
    c = session(hk, None)
    if stage == "C" and failure == "tempfail":
        got, lines = c.greeting
        assert got == 421 and lines[0].startswith("421 4.7.0"), lines
        assert c.closed()
    else:
        assert c.greeting[0] == 220
        steps = [("H", "EHLO client.example", 250), ("M", "MAIL FROM:<sender@example.net>", 250),
                 ("R", "RCPT TO:<alice@localhost>", 250), ("D", "DATA", 354),
                 ("E", MSG + ".", 250)]
        for st, line, ok in steps:
            got, lines = c.cmd(line)
            if st == stage and failure == "tempfail":
                assert got == 451 and lines[-1].startswith("451 4.7.1"), lines
                break
            assert got == ok, (st, lines)
        c.cmd("QUIT")
        c.close()
    assert time.time() - t0 < 8
    if failure == "accept":
        assert "Subject: hello" in delivered(hk)
    else:
        time.sleep(0.3)
        assert hk.delivered("alice") == []
    ev = log_events(hk, "milter_failed")
    assert ev and ev[0]["failure"] == failure, ev


def test_pipelined_slow_milter_keeps_order(hikyaku, milter):
    """PIPELINING with a milter that takes its time at each RCPT: the
    replies come in command order, the refused recipient's in its place."""
    m = milter(rcpt_replies={"bob@localhost": ms.REJECT}, delay={"R": 0.2, "M": 0.2},
               eob=[ms.ACCEPT])
    hk = hikyaku(milters=conf(m.socket))
    c = session(hk)
    c.ehlo()
    c.send("MAIL FROM:<sender@example.net>\r\nRCPT TO:<alice@localhost>\r\n"
           "RCPT TO:<bob@localhost>\r\nRCPT TO:<alice@localhost>\r\nDATA\r\n")
    got = [c.reply()[0] for _ in range(5)]
    assert got == [250, 250, 550, 250, 354], got
    c.send(MSG.encode() + b".\r\n")
    assert c.reply()[0] == 250
    c.cmd("QUIT")
    c.close()
    assert "Subject: hello" in delivered(hk)


def _wait(pred, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def test_chained_milters_large_message(hikyaku, milter):
    """Past the 256 KiB spill, the first milter's header change copies the
    message into a new file; the second reads that one whole."""
    big = "".join(f"line {i:07d} " + "y" * 60 + "\r\n" for i in range(8000))
    m1 = milter(eob=[ms.addheader("X-One", "1"), ms.ACCEPT])
    m2 = milter(eob=[ms.addheader("X-Two", "2"), ms.ACCEPT])
    hk = hikyaku(milters=conf(m1.socket, m2.socket))
    c = session(hk)
    c.begin()
    c.ok("DATA", 354)
    c.send(MSG.replace("The body.\r\n", big).encode() + b".\r\n")
    assert c.reply()[0] == 250
    c.cmd("QUIT")
    c.close()
    head, body = delivered(hk).split("\n\n", 1)
    assert "X-One: 1" in head and "X-Two: 2" in head
    assert body == big.replace("\r\n", "\n")
    assert b"".join(d for cmd, d in msess(m2) if cmd == "B") == big.encode()
    assert ["X-One", "1"] in [ms.parse_strs(d) for cmd, d in msess(m2) if cmd == "L"]


@pytest.mark.parametrize("stage", ["C", "M", "E"])
def test_client_leaves_while_milter_thinks(hikyaku, milter, stage):
    """The client goes away while a stage waits for the milter: the stage
    is cancelled and that milter connection closed; the next session gets
    a fresh conversation and hikyaku stops cleanly (the fixture checks
    its exit code, ASan's reports included)."""
    m = milter(eob=[ms.ACCEPT])
    hk = hikyaku(milters=conf(m.socket, command_timeout="5s", eob_timeout="5s"))
    m.slow_at = stage
    import socket as so
    s = so.create_connection(("127.0.0.1", hk.port))
    if stage != "C":
        s.recv(512)
        s.sendall(b"EHLO client.example\r\n")
        time.sleep(0.2)
        s.sendall(b"MAIL FROM:<sender@example.net>\r\n")
        if stage == "E":
            s.sendall(b"RCPT TO:<alice@localhost>\r\nDATA\r\n")
            time.sleep(0.3)
            s.sendall(MSG.encode() + b".\r\n")
    time.sleep(0.5)
    s.close()
    n = len(m.sessions)
    m.slow_at = None
    assert _wait(lambda: wait_event(hk, "disconnect"), 5)
    c = session(hk)
    c.begin()
    finish(c)
    c.cmd("QUIT")
    c.close()
    assert "Subject: hello" in delivered(hk)
    assert len(m.sessions) > n


@pytest.mark.parametrize("failure", ["tempfail", "accept"])
def test_parallel_connect(hikyaku, milter, failure):
    """At CONNECT the second milter connects while the first is asked: one
    slow to negotiate is waited for in its turn; one that cannot be
    reached gets its failure mode in its turn."""
    m1 = milter(eob=[ms.addheader("X-One", "1"), ms.ACCEPT])
    m2 = milter(eob=[ms.addheader("X-Two", "2"), ms.ACCEPT])
    dead = f"inet:127.0.0.1:{free_port()}"
    hk = hikyaku(milters=conf(m1.socket, m2.socket, dead, failure=failure,
                              command_timeout="4s"))
    m1.delay = {"C": 1.0}
    m2.delay = {"O": 1.0}  # answers OPTNEG after m1 answered CONNECT
    t0 = time.time()
    c = session(hk, None)
    if failure == "tempfail":
        assert c.greeting[0] == 421, c.greeting
        return
    assert c.greeting[0] == 220, c.greeting
    assert time.time() - t0 < 1.8  # in parallel: not 1.0 + 1.0
    c.begin()
    finish(c)
    c.cmd("QUIT")
    c.close()
    text = delivered(hk)
    assert "X-One: 1" in text and "X-Two: 2" in text
    ev = log_events(hk, "milter_failed")
    assert ev and ev[0]["milter"] == "m2" and ev[0]["stage"] == "connect", ev


def test_quit_mid_transaction_aborts(hikyaku, milter):
    m = milter()
    hk = hikyaku(milters=conf(m.socket))
    c = session(hk)
    c.begin()
    c.cmd("QUIT")
    c.close()
    log = msess(m)
    assert _wait(lambda: log and log[-1][0] == "Q", 5)
    assert [cmd for cmd, _ in log][-2:] == ["A", "Q"]
