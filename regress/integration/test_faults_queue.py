"""Faults on the queue side (issue 8): what a crash, a stop or a full disk
leaves behind must be cleaned up or reported truly.

* an orphaned queue/ID.msg (no envelope) is removed at start;
"""
import re
import smtplib

import pytest

# Any sanitizer report from the daemon fails the test (ASan build).
pytestmark = pytest.mark.usefixtures("sanitizer_check")


def send(d, rcpts, subject="t", body=b"hello\r\n"):
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
        code, text = s.sendmail("s@example.org", rcpts, b"Subject: " +
                                subject.encode() + b"\r\n\r\n" + body) or \
            (250, b"")
    return code


def with_subject(d, user, subject):
    tag = b"Subject: " + subject.encode() + b"\n"
    return [p for p in d.maildir(user) if tag in p.read_bytes()]


# ---- recovery ---------------------------------------------------------------

def test_orphan_message_removed_at_start_committed_one_kept(make_daemon):
    # A message whose envelope is gone was never committed (or is done):
    # recovery removes it and says so.  One with its envelope stays and is
    # delivered.  The kept one is made by a delivery that defers (a command
    # exiting 75), then the alias is pointed at a mailbox while stopped.
    d = make_daemon()
    d.write_aliases("postmaster: alice\nlater: \"|exit 75\"\n")
    d.start()
    send(d, ["later@example.test"], "kept")
    d.stop()
    kept = [n for n in d.queue_files() if n.endswith(".env")]
    assert len(kept) == 1, d.queue_files()
    orphan = d.spool / "queue" / "5F000000DEADBEEF.msg"
    orphan.write_bytes(b"Subject: orphan\r\n\r\nx\r\n")
    d.write_aliases("postmaster: alice\nlater: demo\n")
    d.start()
    d.ctl("queue", check=True)          # served once recovery is done
    assert not orphan.exists(), d.queue_files()
    assert re.search(r'q=5F000000DEADBEEF event=recover result=removed '
                     r'reason="message without envelope"', d.logtext()), \
        d.logtext()[-3000:]
    assert re.search(r"event=recover result=ok messages=1 removed_partial=1",
                     d.logtext()), d.logtext()[-3000:]
    assert d.ctl("flush").returncode == 0
    assert d.wait_mail("demo"), d.logtext()[-3000:]
    assert len(with_subject(d, "demo", "kept")) == 1
