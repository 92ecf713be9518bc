"""The foundation's promise: a message sent to a local user lands in its
Maildir, and the queue is empty afterwards."""
import smtplib

from conftest import wait_for


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
    assert wait_for(lambda: daemon.queue_files() == [], 10), \
        daemon.ctl("queue").stdout


def test_swaks_delivers(daemon):
    import subprocess
    r = subprocess.run(["swaks", "--to", "alice@example.test", "--from",
                        "someone@example.org", "--server",
                        f"127.0.0.1:{daemon.port}", "--header",
                        "Subject: via swaks"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout
    assert "250 2.0.0 Ok: queued as" in r.stdout
    assert daemon.wait_mail("alice")
    assert b"Subject: via swaks" in daemon.maildir("alice")[0].read_bytes()


def test_session_fed_one_byte_at_a_time(daemon):
    """The line reader must not depend on how TCP splits the input."""
    import socket
    s = socket.create_connection(("127.0.0.1", daemon.port), 10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rb")
    assert f.readline().startswith(b"220")
    script = (b"EHLO bytes.example\r\nMAIL FROM:<a@example.org>\r\n"
              b"RCPT TO:<bob@example.test>\r\nDATA\r\n")
    for b in script:
        s.send(bytes([b]))
    replies = [f.readline()]
    for _ in range(50):                                # EHLO's lines
        if replies[-1].startswith(b"250 "):
            break
        replies.append(f.readline())
    replies += [f.readline() for _ in range(3)]
    assert replies[-1].startswith(b"354"), replies
    body = b"Subject: slow\r\n\r\n..dot\r\nend\r\n.\r\n"
    for b in body:
        s.send(bytes([b]))
    assert f.readline().startswith(b"250 2.0.0")
    s.close()
    assert daemon.wait_mail("bob")
    got = daemon.maildir("bob")[0].read_bytes()
    assert b"\n.dot\nend\n" in got
