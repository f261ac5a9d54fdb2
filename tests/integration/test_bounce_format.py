"""Bounce (DSN) format as another mail program reads it: the bytes that
bounce_build() makes for the fixed cases in tests/bounce/bounce_dump.c,
parsed by Python's email package (RFC 6522 multipart/report, RFC 3464
message/delivery-status, RFC 6533 global types, RFC 3834 Auto-Submitted).

The helper comes from $HIKYAKU_BOUNCE_DUMP, else <repo>/build/tests/bounce_dump.
"""
import email
import email.policy
import email.utils
import os
import re
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QID = "4F3A2B1C0D"
MTA = "mail.example.org"
T0 = 1700000000  # bounce_dump's DUMP_T0, in seconds


def dump_bin():
    path = os.environ.get("HIKYAKU_BOUNCE_DUMP") or os.path.join(
        REPO, "build", "tests", "bounce_dump")
    if not os.path.exists(path):
        pytest.fail(f"bounce_dump not found at {path}; build first or set HIKYAKU_BOUNCE_DUMP")
    return path


def dump(name, tmp_path):
    out = tmp_path / (name + ".eml")
    subprocess.run([dump_bin(), name, str(out)], check=True, timeout=60)
    return out.read_bytes()


def parse(raw):
    return email.message_from_bytes(raw, policy=email.policy.default)


def dsn_blocks(m, raw):
    """The DSN's header blocks: per-message first, then one per recipient.
    Python splits message/delivery-status itself; message/global-delivery-status
    it reads as one message (and its body with replacement characters), so
    that one is split here from the raw bytes."""
    part = list(m.iter_parts())[1]
    if part.get_content_type() == "message/delivery-status":
        return part.get_payload()
    body = raw_part_body(raw, m.get_boundary(), 1)
    return [parse(chunk + b"\r\n") for chunk in body.split(b"\r\n\r\n") if chunk.strip()]


def unfold(v):
    return re.sub(r"\r?\n[ \t]", " ", u(v))


def u(v):
    """A header value as text: message_from_bytes keeps raw UTF-8 (RFC 6532)
    as surrogate escapes; undo that."""
    s = str(v)
    try:
        return s.encode("ascii", "surrogateescape").decode("utf-8")
    except UnicodeError:
        return s


def raw_part_body(raw, boundary, index):
    """The bytes of part index (from 0) after its own header section."""
    delim = b"\r\n--" + boundary.encode() + b"\r\n"
    part = raw.split(delim)[index + 1]
    part = part.split(b"\r\n--" + boundary.encode() + b"--")[0]
    return part.split(b"\r\n\r\n", 1)[1]


# Expected per case: kind-specific subject and action, the recipients' fields,
# which part 3 type, and what part 3 must or must not contain.
SUBJ_FAILED = "Undelivered Mail Returned to Sender"
CASES = {
    "failed_hdrs": dict(
        subject=SUBJ_FAILED, sender="alice@example.org", action="failed", global_=False,
        part3="text/rfc822-headers", envid=None,
        rcpts=[dict(final="rfc822; bob@example.net", status="5.1.1", orcpt=None,
                    remote="dns; mx.example.net",
                    diag="smtp; 550 5.1.1 <bob@example.net>: User unknown")],
        has=["Subject: lunch on friday"], lacks=["Shall we meet"]),
    "failed_full": dict(
        subject=SUBJ_FAILED, sender="alice@example.org", action="failed", global_=False,
        part3="message/rfc822", envid="QQ+314159",
        rcpts=[dict(final="rfc822; bob@example.net", status="5.1.1",
                    orcpt="rfc822;bob+tag@example.net", remote="dns; mx.example.net",
                    diag="smtp; 550 5.1.1 x Bcc: victim@evil Injected body"),
               dict(final="rfc822; carol@example.com", status="5.2.2",
                    orcpt="rfc822;carol@example.com", remote="dns; mx.example.com",
                    diag="smtp; 552 5.2.2 Mailbox full")],
        has=["Shall we meet"], lacks=[]),
    "delayed": dict(
        subject="Delayed Mail (still being retried)", sender="alice@example.org",
        action="delayed", global_=False, part3="text/rfc822-headers", envid=None,
        rcpts=[dict(final="rfc822; dave@example.com", status="4.4.1", orcpt=None,
                    remote="dns; mx.example.com", diag="smtp; Connection timed out")],
        has=["Subject: lunch on friday"], lacks=["Shall we meet"]),
    "delivered": dict(
        subject="Successful Mail Delivery Report", sender="alice@example.org",
        action="delivered", global_=False, part3="text/rfc822-headers", envid="env-7",
        rcpts=[dict(final="rfc822; erin@example.com", status="2.0.0",
                    orcpt="rfc822;erin@example.com", remote=None, diag=None)],
        has=["Subject: lunch on friday"], lacks=["Shall we meet"]),
    "relayed": dict(
        subject="Successful Mail Relay Report", sender="alice@example.org",
        action="relayed", global_=False, part3="text/rfc822-headers", envid="env+8",
        rcpts=[dict(final="rfc822; frank@example.com", status="2.0.0",
                    orcpt="rfc822;frank+news@example.com", remote="dns; mx.example.com",
                    diag="smtp; 250 2.0.0 Ok: queued as 4711")],
        has=["Subject: lunch on friday"], lacks=["Shall we meet"]),
    "long_diag": dict(
        subject=SUBJ_FAILED, sender="alice@example.org", action="failed", global_=False,
        part3="text/rfc822-headers", envid=None,
        rcpts=[dict(final="rfc822; bob@example.net", status="5.1.1", orcpt=None,
                    remote="dns; mx.example.net", diag=None)],
        has=["Subject: lunch on friday"], lacks=[]),
    "nosep": dict(
        subject=SUBJ_FAILED, sender="alice@example.org", action="failed", global_=False,
        part3="text/rfc822-headers", envid=None,
        rcpts=[dict(final="rfc822; bob@example.net", status="5.1.1", orcpt=None,
                    remote="dns; mx.example.net",
                    diag="smtp; 550 5.1.1 <bob@example.net>: User unknown")],
        has=["Subject: no body at all", "From: Alice"], lacks=[]),
    "huge_full": dict(
        subject=SUBJ_FAILED, sender="alice@example.org", action="failed", global_=False,
        part3="text/rfc822-headers", envid=None,
        rcpts=[dict(final="rfc822; bob@example.net", status="5.1.1", orcpt=None,
                    remote="dns; mx.example.net",
                    diag="smtp; 550 5.1.1 <bob@example.net>: User unknown")],
        has=["Subject: a very large message"], lacks=["xxxxxxxx"]),
    "utf8": dict(
        subject=SUBJ_FAILED, sender="j\u00f6rg@example.org", action="failed", global_=True,
        part3="message/global-headers", envid=None,
        rcpts=[dict(final="utf-8; \u7530\u4e2d\\x{2B}x@example.jp", status="5.1.1", orcpt=None,
                    remote="dns; mx.example.jp",
                    diag="smtp; 550 5.1.1 \u53d7\u4fe1\u8005\u304c\u3044\u307e\u305b\u3093")],
        has=["Subject: Gr\u00fc\u00dfe"], lacks=[]),
}


def test_dump_lists_every_case():
    out = subprocess.run([dump_bin(), "--list"], check=True, capture_output=True,
                         text=True, timeout=30).stdout.split()
    assert sorted(out) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_wire_format(name, tmp_path):
    raw = dump(name, tmp_path)
    # RFC 5322 section 2.1.1 and 2.3: CRLF only, no line over 998 octets.
    assert raw.endswith(b"\r\n")
    assert re.search(rb"(?<!\r)\n", raw) is None, "bare LF"
    assert re.search(rb"\r(?!\n)", raw) is None, "bare CR"
    for line in raw.split(b"\r\n"):
        assert len(line) <= 998
    if not CASES[name]["global_"]:
        assert max(raw) < 0x80, "an ASCII report must not need SMTPUTF8 or 8BITMIME"


@pytest.mark.parametrize("name", sorted(CASES))
def test_top_level(name, tmp_path):
    exp = CASES[name]
    m = parse(dump(name, tmp_path))
    assert m.defects == []
    assert m.is_multipart()
    assert m.get_content_type() == "multipart/report"
    assert m.get_param("report-type") == "delivery-status"
    boundary = m.get_boundary()
    assert QID in boundary and re.search(r"[0-9a-f]{16}$", boundary)
    assert str(m["Subject"]) == exp["subject"]
    assert m["From"].addresses[0].addr_spec == "MAILER-DAEMON@" + MTA
    assert m["From"].addresses[0].display_name == "Mail Delivery System"
    assert u(m["To"].addresses[0].addr_spec) == exp["sender"]
    assert str(m["Auto-Submitted"]) == "auto-replied"
    assert str(m["MIME-Version"]) == "1.0"
    assert re.fullmatch(r"<%s\.[0-9a-f]{16}@%s>" % (QID, re.escape(MTA)), str(m["Message-ID"]))
    assert email.utils.parsedate_to_datetime(str(m["Date"])).timestamp() == T0 + 7200
    assert m["Bcc"] is None


@pytest.mark.parametrize("name", sorted(CASES))
def test_parts(name, tmp_path):
    exp = CASES[name]
    m = parse(dump(name, tmp_path))
    parts = list(m.iter_parts())
    assert len(parts) == 3
    text, dsn, orig = parts
    assert text.get_content_type() == "text/plain"
    assert text.get_content_charset() == ("utf-8" if exp["global_"] else "us-ascii")
    body = text.get_content()
    for r in exp["rcpts"]:
        addr = r["final"].split("; ", 1)[1].replace("\\x{2B}", "+")
        assert addr in body
        if r["diag"]:
            assert r["diag"].split("; ", 1)[1] in body
    if exp["action"] == "delayed":
        assert "keep trying until" in body
    want_dsn = "message/global-delivery-status" if exp["global_"] else "message/delivery-status"
    assert dsn.get_content_type() == want_dsn
    assert orig.get_content_type() == exp["part3"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_delivery_status_fields(name, tmp_path):
    exp = CASES[name]
    raw = dump(name, tmp_path)
    m = parse(raw)
    blocks = dsn_blocks(m, raw)
    assert len(blocks) == 1 + len(exp["rcpts"])
    per_msg = blocks[0]
    assert str(per_msg["Reporting-MTA"]) == "dns; " + MTA
    assert str(per_msg["X-Hikyaku-Queue-ID"]) == QID
    assert email.utils.parsedate_to_datetime(str(per_msg["Arrival-Date"])).timestamp() == T0
    if exp["envid"] is None:
        assert per_msg["Original-Envelope-Id"] is None
    else:
        assert str(per_msg["Original-Envelope-Id"]) == exp["envid"]
    for blk, r in zip(blocks[1:], exp["rcpts"]):
        assert u(blk["Final-Recipient"]) == r["final"]
        assert str(blk["Action"]) == exp["action"]
        assert str(blk["Status"]) == r["status"]
        assert blk["Bcc"] is None
        for field, key in (("Original-Recipient", "orcpt"), ("Remote-MTA", "remote")):
            if r[key] is None:
                assert blk[field] is None
            else:
                assert str(blk[field]) == r[key]
        if r["diag"] is not None:
            assert unfold(blk["Diagnostic-Code"]) == r["diag"]
        assert blk["Last-Attempt-Date"] is not None
        if exp["action"] == "delayed":
            until = email.utils.parsedate_to_datetime(str(blk["Will-Retry-Until"]))
            assert until.timestamp() == T0 + 5 * 86400
        else:
            assert blk["Will-Retry-Until"] is None


def test_long_diagnostic_is_folded_not_lost(tmp_path):
    raw = dump("long_diag", tmp_path)
    m = parse(raw)
    blk = dsn_blocks(m, raw)[1]
    diag = unfold(blk["Diagnostic-Code"])
    words = re.findall(r"word\d{3}", diag)
    assert words == ["word%03d" % i for i in range(300)]
    assert "z" * 800 in diag
    start = raw.index(b"Diagnostic-Code:")
    field = raw[start:raw.index(b"\r\nLast-Attempt-Date", start)]
    assert field.count(b"\r\n ") > 10
    for line in field.split(b"\r\n"):
        assert len(line) <= 998


def test_injection_makes_no_header(tmp_path):
    raw = dump("failed_full", tmp_path)
    assert re.search(rb"^Bcc:", raw, re.M) is None
    assert re.search(rb"^Injected", raw, re.M) is None


@pytest.mark.parametrize("name", ["failed_hdrs", "nosep", "huge_full", "utf8", "failed_full"])
def test_original_part(name, tmp_path):
    exp = CASES[name]
    raw = dump(name, tmp_path)
    m = parse(raw)
    orig = list(m.iter_parts())[2]
    text = raw_part_body(raw, m.get_boundary(), 2).decode("utf-8")
    for s in exp["has"]:
        assert s in text
    for s in exp["lacks"]:
        assert s not in text
    assert text.endswith("\r\n")
    if orig.get_content_type() == "text/rfc822-headers":
        assert orig.get("Content-Transfer-Encoding") == "7bit"
        assert "\r\n\r\n" not in text, "the header section only"
        inner = email.message_from_string(orig.get_content(), policy=email.policy.default)
    else:
        inner = orig.get_payload()[0]
    assert inner["From"] is not None
    if name == "failed_full":
        assert str(inner["Message-ID"]) == "<orig-1@example.org>"
        assert "Shall we meet at noon?" in inner.get_content()


def test_ids_are_unique(tmp_path):
    a = parse(dump("failed_hdrs", tmp_path))
    b = parse(dump("failed_hdrs", tmp_path))
    assert str(a["Message-ID"]) != str(b["Message-ID"])
    assert a.get_boundary() != b.get_boundary()
