"""The foundation's promise: a message sent to a local user lands in its
Maildir, and the queue is empty afterwards."""
import smtplib


def test_delivers_to_virtual_maildir(daemon):
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=10) as s:
        s.sendmail("sender@example.org", ["demo@example.test"],
                   b"Subject: hello\r\n\r\nbody line\r\n")
    assert daemon.wait_mail("demo")
    msg = daemon.maildir("demo")[0].read_bytes()
    assert b"Subject: hello" in msg
    assert b"Return-Path: <sender@example.org>" in msg
    assert b"Received: from " in msg and b"by mx.example.test (Tern)" in msg
    assert b"\r\n" not in msg       # Maildir files hold LF lines
    assert daemon.queue_files() == [] or daemon.ctl("queue").stdout
