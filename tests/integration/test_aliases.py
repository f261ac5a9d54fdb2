"""The aliases file (issue 4, routing): alias to local users, catch-all,
+tag, remote targets, loops refused at RCPT with 550 5.4.6, unknown local
targets skipped, postmaster always deliverable, `hikyaku check` count."""
import json
import subprocess

from conftest import hikyaku_bin, wait_event

USERS = ["alice@localhost", "bob@localhost", "carol@localhost", "postmaster@localhost",
         "boss@localhost"]

ALIASES = """\
# test aliases
team@localhost: alice@localhost, bob@localhost
everyone@localhost: team@localhost,
    carol@localhost, Alice@localhost
far@localhost: alice@localhost, someone@remote.test
loop1@localhost: loop2@localhost
loop2@localhost: loop1@localhost
ghosts@localhost: ghost@localhost, bob@localhost
allghosts@localhost: ghost@localhost, ghost2@localhost
postmaster@localhost: boss@localhost
@example.org: carol@localhost
"""

MSG = "Subject: alias test\r\n\r\nhello\r\n"


def start(hikyaku, tmp_path, text=ALIASES, **kw):
    f = tmp_path / "aliases"
    f.write_text(text)
    return hikyaku(users=USERS, aliases_file=str(f), **kw)


def send(hk, raw, rcpts):
    c = raw(hk.port)
    c.begin(rcpts=rcpts)
    qid = c.data(MSG)
    c.ok("QUIT", 221)
    return qid


def test_alias_to_two_local_users(hikyaku, raw, tmp_path):
    hk = start(hikyaku, tmp_path)
    send(hk, raw, ["team@localhost"])
    assert len(hk.wait_delivered("alice")) == 1
    assert len(hk.wait_delivered("bob")) == 1
    hk.wait_queue_empty()
    assert len(hk.delivered("alice")) == 1 and len(hk.delivered("bob")) == 1
    assert hk.delivered("team") == []


def test_nested_alias_deduplicated(hikyaku, raw, tmp_path):
    hk = start(hikyaku, tmp_path)
    # everyone -> team (alice, bob), carol, Alice: alice only once; and the
    # same alice again through a direct RCPT is still one copy.
    send(hk, raw, ["everyone@localhost", "alice@localhost", "team@localhost"])
    for u in ("alice", "bob", "carol"):
        hk.wait_delivered(u)
    hk.wait_queue_empty()
    for u in ("alice", "bob", "carol"):
        assert len(hk.delivered(u)) == 1, u


def test_catch_all(hikyaku, raw, tmp_path):
    hk = start(hikyaku, tmp_path)
    send(hk, raw, ["anything@example.org"])
    assert len(hk.wait_delivered("carol")) == 1


def test_tag_on_alias(hikyaku, raw, tmp_path):
    hk = start(hikyaku, tmp_path)
    send(hk, raw, ["team+news@localhost"])
    hk.wait_delivered("alice")
    hk.wait_delivered("bob")


def test_alias_to_remote_is_queued(hikyaku, raw, tmp_path):
    hk = start(hikyaku, tmp_path)
    send(hk, raw, ["far@localhost"])
    hk.wait_delivered("alice")
    # The conftest's DNS answers nothing: the remote target is deferred.
    ev = wait_event(hk, "delivery", to="someone@remote.test", status="deferred")
    assert ev, hk.log()[-3000:]


def test_alias_loop_refused(hikyaku, raw, tmp_path):
    hk = start(hikyaku, tmp_path)
    c = raw(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<s@example.net>", 250)
    c.ok("RCPT TO:<loop1@localhost>", 550, "5.4.6")
    c.ok("RCPT TO:<alice@localhost>", 250)
    c.ok("QUIT", 221)


def test_unknown_target_skipped(hikyaku, raw, tmp_path):
    hk = start(hikyaku, tmp_path)
    c = raw(hk.port)
    c.ehlo()
    c.ok("MAIL FROM:<s@example.net>", 250)
    c.ok("RCPT TO:<allghosts@localhost>", 550, "5.1.1")
    c.ok("RCPT TO:<ghosts@localhost>", 250, "2.1.5")
    c.data(MSG)
    hk.wait_delivered("bob")
    assert "event=alias_skip" in hk.log()
    assert hk.delivered("ghost") == []


def test_postmaster_alias(hikyaku, raw, tmp_path):
    hk = start(hikyaku, tmp_path)
    send(hk, raw, ["postmaster@localhost"])
    hk.wait_delivered("boss")
    hk.wait_queue_empty()
    assert hk.delivered("postmaster") == []


def test_postmaster_without_alias_still_deliverable(hikyaku, raw, tmp_path):
    # postmaster of example.org is caught by no user: still accepted, and
    # its catch-all alias does not take it from the postmaster mailbox.
    hk = start(hikyaku, tmp_path, text="@example.org: carol@localhost\n")
    send(hk, raw, ["postmaster@example.org"])
    hk.wait_delivered("postmaster", "example.org")


def test_orcpt_is_the_alias(hikyaku, raw, tmp_path):
    """Targets carry ORCPT rfc822;<the alias> (RFC 3461 §4.2) when the
    client gave none, so a DSN names the address the sender used."""
    hk = start(hikyaku, tmp_path)
    qid = send(hk, raw, ["far+x@localhost"])
    wait_event(hk, "delivery", to="someone@remote.test", status="deferred")
    r = subprocess.run([hikyaku_bin(), "queue", "-c", hk.config, "--json", "show", qid],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    rcpts = {x["address"]: x for x in json.loads(r.stdout)["recipients"]}
    assert rcpts["someone@remote.test"]["orcpt"] == "rfc822;far+2Bx@localhost"
    assert "rcpt=far+x@localhost targets=2" in hk.log()


def test_check_counts_aliases(hikyaku, tmp_path):
    hk = start(hikyaku, tmp_path, start=False)
    r = subprocess.run([hikyaku_bin(), "check", "-c", hk.config],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "9 aliases" in r.stdout


def test_bad_aliases_file_refused(hikyaku, tmp_path):
    hk = start(hikyaku, tmp_path, text="ok@localhost: alice@localhost\nbroken line\n",
               start=False)
    r = subprocess.run([hikyaku_bin(), "check", "-c", hk.config],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "aliases:2:" in r.stderr
