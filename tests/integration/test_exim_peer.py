"""hikyaku and a real Exim (Debian 12's 4.96, GnuTLS) in both directions,
over STARTTLS. Exim logged "The TLS connection was non-properly terminated"
for every session with hikyaku while hikyaku closed TLS without a
close_notify (issue 8): these tests fail on such a log line, as server and
as client."""
import smtplib

import pytest

from conftest import wait_event
from exim_helpers import TLS_TRUNCATION, exim_instance  # noqa: F401 (fixture)


def test_exim_relays_to_hikyaku(hikyaku, exim_instance):
    hk = hikyaku()
    ex = exim_instance(relay_to=hk.port)
    ex.send("sender@ex.test", ["alice@localhost"],
            "From: sender@ex.test\nSubject: via exim\n\nhello\n")
    # "=>" is a delivery; X= is the TLS cipher suite it went over.
    ex.wait_log(r"=> alice@localhost R=to_hikyaku T=remote_smtp "
                r"H=127\.0\.0\.1 \[127\.0\.0\.1\] X=TLS1\.[23]:\S+")
    body = hk.read_delivered("alice", "localhost", 1)[0]
    assert b"Subject: via exim" in body
    log = ex.all_logs()
    assert "Completed" in log, log
    assert not TLS_TRUNCATION.search(log), log


@pytest.mark.parametrize("idle", ["0", None], ids=["quit_at_once", "quit_when_idle"])
def test_hikyaku_routes_to_exim(hikyaku, exim_instance, idle):
    """Exim as server logs nothing when the client closes TLS without
    close_notify: after 221 it shuts TLS down and waits for the client's
    close_notify (gnutls_bye, SHUT_RDWR), and ignores the result. Its TLS
    debug output shows the result: a record header read that hits EOF
    (GnuTLS' recv_headers, GNUTLS_E_PREMATURE_TERMINATION, the "non-properly
    terminated" error) instead of the close_notify alert. hikyaku quits
    right after the transaction, or (by default) when the cached connection
    has been idle for delivery.idle_timeout."""
    ex = exim_instance(serve=True, debug="-all+tls")
    settings = {}
    if idle is not None:
        settings["delivery"] = {"idle_timeout": idle}
    hk = hikyaku(routes=[{"domain": "ex.test", "transport": "relay",
                          "address": f"127.0.0.1:{ex.port}", "tls": "may"}],
                 relay={"trusted_networks": ["127.0.0.0/8"]}, **settings)
    with smtplib.SMTP("127.0.0.1", hk.port) as s:
        s.sendmail("me@localhost", ["bob@ex.test"],
                   b"From: me@localhost\r\nSubject: to exim\r\n\r\nhi\r\n")
    got = ex.wait_maildir(1)[0]
    assert b"Subject: to exim" in got
    assert wait_event(hk, "delivery", to="bob@ex.test", status="sent")
    # Exim received it over TLS ("<=" line with X=) ...
    ex.wait_log(r"<= me@localhost H=\S+ \[127\.0\.0\.1\] .*X=TLS1\.[23]:")
    # ... and logs the end of the session: hikyaku's QUIT, then its close.
    ex.wait_log(r"SMTP connection from \S+ \[127\.0\.0\.1\] closed by QUIT")
    log = ex.all_logs()
    assert not TLS_TRUNCATION.search(log), log
    shutdown = tls_shutdowns(ex.debug_log())
    assert len(shutdown) == 1, ex.debug_log()[-4000:]
    assert "[recv_headers]" not in shutdown[0], shutdown[0]


def tls_shutdowns(debug):
    """Exim's debug lines from each server-side TLS shutdown to the end of
    that session, one string per session."""
    out, open_ = [], {}
    for line in debug.splitlines():
        pid = line.split(" ", 1)[0]
        if "tls_close(): shutting down TLS (with response-wait)" in line:
            open_[pid] = [line]
        elif pid in open_:
            open_[pid].append(line)
            if "closed by QUIT" in line or "terminating with rc" in line:
                out.append("\n".join(open_.pop(pid)))
    out.extend("\n".join(v) for v in open_.values())
    return out
