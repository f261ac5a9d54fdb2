"""DMARC aggregate reports (issue 10, RFC 7489 §7.2): smtpd records every
message whose From domain publishes a policy (a DMARC_RECORD frame to the
queue, appended to <spool>/dmarc/YYYYMMDD), and `hikyaku dmarc report`
sends one gzip-compressed Appendix C feedback document per policy domain to
its rua addresses, through the local submission socket and the normal
queue, here to an aiosmtpd sink (the rua domains' MX is 127.0.0.1).

Checked: the XML validates against the RFC's schema (xmllint --schema
tests/data/dmarc/rfc7489.xsd), counts and dispositions, the §7.2.1.1
Subject and file name, the §7.1 external-destination authorization, the
rua !size limit, a second run sends nothing, and a torn day file is read up
to the tear (and repaired by the queue before it appends again)."""
import email
import gzip
import os
import shutil
import smtplib
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest

dkim = pytest.importorskip("dkim")

from mta_helpers import ScriptedMTA
from test_dmarc import dns_zone, message, rsa_key, signed, zone  # noqa: F401 (fixtures)
from test_dkim import public_record, txt_record

HERE = os.path.dirname(os.path.abspath(__file__))
XSD = os.path.join(HERE, "..", "data", "dmarc", "rfc7489.xsd")
NS = {"d": "http://dmarc.org/dmarc-xml/0.1"}

PASS_DMARC = ("v=DMARC1; p=reject; rua=mailto:agg@pass.example,mailto:agg@reports.test,"
              "mailto:agg@unauth.test,mailto:tiny@reports.test!1k")
FAIL_DMARC = "v=DMARC1; p=reject; rua=mailto:agg@reports.test"


def report_zone(rsa_key):  # noqa: F811
    return zone(
        'pass.example. 300 IN TXT "v=spf1 ip4:127.0.0.1 -all"',
        f'_dmarc.pass.example. 300 IN TXT "{PASS_DMARC}"',
        txt_record("sel._domainkey.pass.example.", public_record(rsa_key)),
        "pass.example. 300 IN A 127.0.0.1",
        'fail.example. 300 IN TXT "v=spf1 -all"',
        f'_dmarc.fail.example. 300 IN TXT "{FAIL_DMARC}"',
        "reports.test. 300 IN A 127.0.0.1",
        "unauth.test. 300 IN A 127.0.0.1",
        # §7.1: reports.test takes reports for both; unauth.test for none
        'pass.example._report._dmarc.reports.test. 300 IN TXT "v=DMARC1"',
        'fail.example._report._dmarc.reports.test. 300 IN TXT "v=DMARC1"',
    )


@pytest.fixture
def sink():
    m = ScriptedMTA(hostname="sink.test").start()
    yield m
    m.stop()


def send_from(hk, domain, msg=None, expect_reject=False):
    msg = msg or message(frm=f"Bob <bob@{domain}>")
    with smtplib.SMTP("127.0.0.1", hk.port, timeout=20) as s:
        s.ehlo(f"client.{domain}")
        if expect_reject:
            with pytest.raises(smtplib.SMTPDataError) as ei:
                s.sendmail(f"bob@{domain}", ["alice@localhost"], msg)
            assert ei.value.smtp_code == 550
        else:
            assert s.sendmail(f"bob@{domain}", ["alice@localhost"], msg) == {}


def today():
    return time.strftime("%Y%m%d", time.gmtime())


def run_cli(hk, *args, check=True):
    bin_ = os.environ.get("HIKYAKU_BIN", "hikyaku")
    p = subprocess.run([bin_, "dmarc", *args, "-c", hk.config], capture_output=True, text=True,
                       timeout=60)
    if check:
        assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    return p


def day_file(hk):
    return os.path.join(hk.spool, "dmarc", today())


def wait_records(hk, n, timeout=10):
    """The queue appends asynchronously: wait until stats shows n."""
    deadline = time.time() + timeout
    while True:
        out = run_cli(hk, "stats", "--day", today()).stdout
        if f": {n} messages" in out or time.time() > deadline:
            return out
        time.sleep(0.1)


def reporting(hikyaku, srv, sink, **kw):
    return hikyaku(dns={"forwarders": [srv.forwarder], "timeout": "5s"},
                   dauth={"loopback": True, "timeout": "3s"},
                   delivery={"smtp_port": sink.port},
                   dmarc={"report_org_name": "Test & <Org>", "report_from": "dmarc@mx.test.example"},
                   **kw)


def rcpts_seen(sink):
    with sink.cond:
        return sorted(r for tx in sink.messages for r in tx.rcpts)


def wait_rcpts(sink, want, timeout=20):
    deadline = time.time() + timeout
    while rcpts_seen(sink) != sorted(want) and time.time() < deadline:
        time.sleep(0.1)
    return rcpts_seen(sink)


def attachment(raw, tmp_path):
    """The report: (message, file name, XML bytes), the XML checked
    against the RFC 7489 schema."""
    m = email.message_from_bytes(raw)
    parts = [p for p in m.walk() if p.get_content_type() == "application/gzip"]
    assert len(parts) == 1, m
    name = parts[0].get_filename()
    xml = gzip.decompress(parts[0].get_payload(decode=True))
    path = tmp_path / name.replace("!", "_")
    path.write_bytes(xml)
    v = subprocess.run(["xmllint", "--noout", "--schema", XSD, str(path)],
                       capture_output=True, text=True)
    assert v.returncode == 0, (v.stderr, xml.decode())
    return m, name, xml


def rows(xml):
    root = ET.fromstring(xml)
    out = []
    for rec in root.findall("d:record", NS):
        out.append({
            "ip": rec.findtext("d:row/d:source_ip", namespaces=NS),
            "count": int(rec.findtext("d:row/d:count", namespaces=NS)),
            "disposition": rec.findtext("d:row/d:policy_evaluated/d:disposition", namespaces=NS),
            "dkim": rec.findtext("d:row/d:policy_evaluated/d:dkim", namespaces=NS),
            "spf": rec.findtext("d:row/d:policy_evaluated/d:spf", namespaces=NS),
            "header_from": rec.findtext("d:identifiers/d:header_from", namespaces=NS),
            "envelope_to": rec.findtext("d:identifiers/d:envelope_to", namespaces=NS),
            "dkim_auth": [(d.findtext("d:domain", namespaces=NS),
                           d.findtext("d:selector", namespaces=NS),
                           d.findtext("d:result", namespaces=NS))
                          for d in rec.findall("d:auth_results/d:dkim", NS)],
            "spf_auth": rec.findtext("d:auth_results/d:spf/d:result", namespaces=NS),
        })
    return root, out


@pytest.mark.skipif(shutil.which("xmllint") is None, reason="xmllint (libxml2-utils) missing")
def test_reports_sent_validated_and_not_twice(hikyaku, dns_zone, sink, rsa_key, tmp_path):  # noqa: F811
    srv = dns_zone(report_zone(rsa_key))
    # Reports are local mail: signed with the sender domain's key.
    key = str(tmp_path / "k.pem")
    shutil.copyfile(rsa_key, key)
    os.chmod(key, 0o600)
    hk = reporting(hikyaku, srv, sink,
                   dkim={"sign": [{"domain": "mx.test.example", "selector": "rep", "key": key}]})
    for _ in range(2):
        send_from(hk, "pass.example")
    # one with an aligned DKIM signature: a row of its own, with its result
    send_from(hk, "pass.example", signed(rsa_key, message(frm="Bob <bob@pass.example>"),
                                         domain=b"pass.example"))
    for _ in range(2):
        send_from(hk, "fail.example", expect_reject=True)
    # no policy: nothing recorded
    send_from(hk, "nopolicy.example")
    out = wait_records(hk, 5)
    assert f"{today()}: 5 messages, 2 reports" in out, out
    assert "pass.example" in out and "fail.example" in out and "nopolicy" not in out, out

    dry = run_cli(hk, "report", "--day", today(), "--dry-run").stdout
    assert "would send" in dry and "agg@unauth.test not authorized" in dry, dry
    assert rcpts_seen(sink) == []  # a dry run sends nothing

    p = run_cli(hk, "report", "--day", today())
    assert "not authorized" in p.stdout and "takes at most 1024 octets" in p.stdout, p.stdout
    want = ["agg@pass.example", "agg@reports.test", "agg@reports.test"]
    assert wait_rcpts(sink, want) == want
    assert "event=dmarc_report_skip" in p.stdout + p.stderr

    reports = {}
    with sink.cond:
        txs = list(sink.messages)
    record = public_record(rsa_key).encode()
    for tx in txs:
        assert tx.mail_from == "dmarc@mx.test.example"
        assert b"d=mx.test.example" in tx.data and b"s=rep" in tx.data, tx.data[:800]
        assert dkim.verify(tx.data, dnsfunc=lambda name, timeout=5: record), tx.data[:800]
        assert b"\r\nAuto-Submitted: auto-generated\r\n" in tx.data
        m, name, xml = attachment(tx.data, tmp_path)
        root, rs = rows(xml)
        domain = root.findtext("d:policy_published/d:domain", namespaces=NS)
        rid = root.findtext("d:report_metadata/d:report_id", namespaces=NS)
        # §7.2.1.1: the Subject and the file name
        assert m["Subject"] == (f"Report Domain: {domain} Submitter: mx.test.example "
                                f"Report-ID: <{rid}>"), m["Subject"]
        begin = root.findtext("d:report_metadata/d:date_range/d:begin", namespaces=NS)
        end = root.findtext("d:report_metadata/d:date_range/d:end", namespaces=NS)
        assert name == f"mx.test.example!{domain}!{begin}!{end}.xml.gz"
        assert int(end) - int(begin) == 86399
        assert root.findtext("d:report_metadata/d:org_name", namespaces=NS) == "Test & <Org>"
        assert b"Test &amp; &lt;Org&gt;" in xml
        reports.setdefault(domain, []).append((tx.rcpts, rs))

    (pass_rcpts, pass_rows), = [r for r in reports["pass.example"] if
                                r[0] == ["agg@pass.example"]]
    assert sum(r["count"] for r in pass_rows) == 3
    assert all(r["ip"] == "127.0.0.1" and r["disposition"] == "none" and r["spf"] == "pass"
               and r["header_from"] == "pass.example" and r["envelope_to"] == "localhost"
               and r["spf_auth"] == "pass" for r in pass_rows), pass_rows
    signed_rows = [r for r in pass_rows if r["dkim_auth"]]
    assert len(signed_rows) == 1 and signed_rows[0]["count"] == 1, pass_rows
    assert signed_rows[0]["dkim_auth"] == [("pass.example", "sel", "pass")]
    assert signed_rows[0]["dkim"] == "pass"

    (fail_rcpts, fail_rows), = reports["fail.example"]
    assert fail_rcpts == ["agg@reports.test"]
    assert fail_rows == [dict(fail_rows[0], count=2, disposition="reject", dkim="fail",
                              spf="fail", spf_auth="fail")], fail_rows

    # A second run sends nothing again.
    again = run_cli(hk, "report", "--day", today())
    assert again.stdout.count("already sent") == 2, again.stdout
    time.sleep(2)
    assert len(rcpts_seen(sink)) == 3
    # today is not over: its reports are marked, the day is not done
    marks = open(day_file(hk) + ".sent").read().split()
    assert len(marks) == 2 and "done" not in marks, marks
    assert "the day is not over" in p.stdout, p.stdout


def test_torn_day_file_read_to_the_tear_then_repaired(hikyaku, dns_zone, sink, rsa_key):  # noqa: F811
    srv = dns_zone(report_zone(rsa_key))
    hk = reporting(hikyaku, srv, sink)
    for _ in range(3):
        send_from(hk, "pass.example")
    wait_records(hk, 3)
    hk.stop()
    path = day_file(hk)
    data = open(path, "rb").read()
    rec_len = len(data) // 3
    # a crash in the middle of a write: half a record at the end
    with open(path, "ab") as f:
        f.write(data[:rec_len // 2])
    out = run_cli(hk, "stats", "--day", today()).stdout
    assert f"{today()}: 3 messages" in out and "damaged 1" in out, out
    # without --day: every day recorded
    out = run_cli(hk, "stats").stdout
    assert out.startswith(f"{today()}: 3 messages, 1 reports"), out
    assert "pass.example report_id=" in out and "pass=3 fail=0 none=3" in out, out
    dry = run_cli(hk, "report", "--day", today(), "--dry-run").stdout
    assert "3 messages" in dry, dry
    # The queue cuts the torn tail before it appends the next record.
    hk.start()
    send_from(hk, "pass.example")
    out = wait_records(hk, 4)
    assert f"{today()}: 4 messages" in out and "damaged 0" in out, out
    assert "event=dmarc_day_repaired" in hk.log()
    assert os.path.getsize(path) == len(data) + rec_len


def test_report_waits_for_the_daemon(hikyaku, dns_zone, sink, rsa_key):  # noqa: F811
    """With the daemon down nothing is marked: exit 3, and a later run sends."""
    srv = dns_zone(report_zone(rsa_key))
    hk = reporting(hikyaku, srv, sink)
    send_from(hk, "fail.example", expect_reject=True)
    wait_records(hk, 1)
    hk.stop()
    p = run_cli(hk, "report", "--day", today(), check=False)
    assert p.returncode == 3, (p.stdout, p.stderr)
    assert not os.path.exists(day_file(hk) + ".sent") or \
        "done" not in open(day_file(hk) + ".sent").read()
    hk.start()
    run_cli(hk, "report", "--day", today())
    assert wait_rcpts(sink, ["agg@reports.test"]) == ["agg@reports.test"]


def test_daemon_catches_up_a_missed_day(hikyaku, dns_zone, sink, rsa_key):  # noqa: F811
    """dmarc.reports: true: the queue sends the finished days it finds not
    done (here yesterday's, planted) shortly after its start, once."""
    srv = dns_zone(report_zone(rsa_key))
    hk = reporting(hikyaku, srv, sink)
    send_from(hk, "fail.example", expect_reject=True)
    wait_records(hk, 1)
    hk.stop()
    yesterday = time.strftime("%Y%m%d", time.gmtime(time.time() - 86400))
    os.rename(day_file(hk), os.path.join(hk.spool, "dmarc", yesterday))
    with open(hk.config) as f:
        conf = f.read()
    assert "dmarc: \n" in conf
    with open(hk.config, "w") as f:
        f.write(conf.replace("dmarc: \n", "dmarc: \n  reports: true\n", 1))
    hk.start()
    assert wait_rcpts(sink, ["agg@reports.test"], timeout=60) == ["agg@reports.test"]
    hk.wait_log("event=dmarc_report day=" + yesterday)
    assert "done" in open(os.path.join(hk.spool, "dmarc", yesterday + ".sent")).read()
    # today's day is not finished: not sent, not marked
    assert not os.path.exists(day_file(hk) + ".sent")


@pytest.mark.skipif(shutil.which("xmllint") is None, reason="xmllint (libxml2-utils) missing")
def test_local_policy_reason_and_out_dir(hikyaku, dns_zone, sink, rsa_key, tmp_path):  # noqa: F811
    """dauth.dmarc_enforce: none delivers a p=reject failure: the report says
    disposition none with the override reason local_policy. --out writes the
    report and the message instead of sending, and marks nothing."""
    srv = dns_zone(report_zone(rsa_key))
    hk = hikyaku(dns={"forwarders": [srv.forwarder], "timeout": "5s"},
                 dauth={"loopback": True, "timeout": "3s", "dmarc_enforce": "none"},
                 delivery={"smtp_port": sink.port})
    send_from(hk, "fail.example")
    wait_records(hk, 1)
    out = tmp_path / "out"
    out.mkdir()
    run_cli(hk, "report", "--day", today(), "--out", str(out))
    names = sorted(os.listdir(out))
    assert len(names) == 2 and names[0].endswith(".eml"), names
    assert names[1].startswith("mx.test.example!fail.example!") and names[1].endswith(".xml.gz")
    raw = (out / names[0]).read_bytes()
    m, name, xml = attachment(raw, tmp_path)
    assert name == names[1] and gzip.decompress((out / name).read_bytes()) == xml
    assert m["From"] == "<postmaster@mx.test.example>" and m["To"] == "<agg@reports.test>"
    _, rs = rows(xml)
    assert [(r["count"], r["disposition"], r["spf"], r["dkim"]) for r in rs] == \
        [(1, "none", "fail", "fail")], rs
    assert b"<type>local_policy</type>" in xml, xml
    assert not os.path.exists(day_file(hk) + ".sent")
    time.sleep(1)
    assert rcpts_seen(sink) == []
