"""Smoke test: one message through smtplib lands in the Maildir."""
import smtplib


def test_smtplib_delivers(hikyaku):
    hk = hikyaku()
    with smtplib.SMTP("127.0.0.1", hk.port) as s:
        code, _ = s.ehlo("client.example")
        assert code == 250
        s.sendmail("bob@example.net", ["alice@localhost"], b"Subject: hi\r\n\r\nbody\r\n")
    (msg,) = hk.read_delivered("alice")
    assert msg.startswith(b"Return-Path: <bob@example.net>\nDelivered-To: alice@localhost\n")
    assert b"Subject: hi\n" in msg
    assert b"with ESMTP id " in msg
