"""Spool files are reused: a removed message's files wait in free/ and
the next message is written over one.  What a user relies on: a message
never carries bytes of an earlier one (a reused file is cut where the new
message ends), a delivery still reading a file never sees it become
another message, and the pool survives a restart."""
import os
import smtplib

from conftest import wait_for

RELAY = "trusted-network 127.0.0.0/8\n"


def send(d, rcpts, body, sender="s@example.org"):
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
        s.sendmail(sender, rcpts, body)


def free_files(d, kind):
    return sorted(n for n in os.listdir(d.spool / "free") if n[0] == kind)


def recovered(d, n):
    """The queue process has read the spool n times (its starts)."""
    return wait_for(lambda: d.logtext().count("event=recover result=ok")
                    >= n, 15)


def queued_ids(d):
    return sorted(n[:-4] for n in d.queue_files() if n.endswith(".env"))


def test_delivered_files_wait_in_free_and_are_written_over(make_daemon):
    d = make_daemon().start()
    big = b"Subject: long one\r\n\r\n" + b"".join(
        b"line %05d of the long message, padded out to be long\r\n" % i
        for i in range(800))
    send(d, ["demo@example.test"], big)
    assert d.wait_mail("demo", 1)
    assert wait_for(lambda: d.queue_files() == [] and
                    free_files(d, "M") and free_files(d, "E"), 10), \
        os.listdir(d.spool / "free")
    inodes = {os.stat(d.spool / "free" / n).st_ino
              for n in os.listdir(d.spool / "free")}
    # The next message takes a file from free/ (same inode), and is only
    # itself: none of the long message's lines follow its end.
    send(d, ["demo@example.test"], b"Subject: short one\r\n\r\nshort body\r\n")
    assert d.wait_mail("demo", 2)
    short = [p.read_bytes() for p in d.maildir("demo")
             if b"Subject: short one" in p.read_bytes()]
    assert len(short) == 1
    assert b"of the long message" not in short[0]
    assert short[0].endswith(b"short body\n") or \
        short[0].endswith(b"short body\r\n"), short[0][-200:]
    assert wait_for(lambda: d.queue_files() == [], 10)
    # the short message's files came back to the pool: the same inodes
    again = {os.stat(d.spool / "free" / n).st_ino
             for n in os.listdir(d.spool / "free")}
    assert again & inodes


def test_queued_message_in_a_reused_file_is_whole_after_restart(make_daemon):
    """A reused file that held a longer message: the queued message read
    back after a restart is exactly what was sent."""
    d = make_daemon(RELAY).start()
    long_body = b"Subject: first\r\n\r\n" + (b"x" * 998 + b"\r\n") * 60
    send(d, ["demo@example.test"], long_body)
    assert d.wait_mail("demo", 1)
    assert wait_for(lambda: free_files(d, "M"), 10)
    send(d, ["someone@remote.example"],
         b"Subject: second\r\n\r\nkept in the queue\r\n")  # stays queued
    ids = queued_ids(d)
    assert len(ids) == 1
    msg = (d.spool / "queue" / (ids[0] + ".msg")).read_bytes()
    assert b"x" * 100 not in msg
    assert msg.endswith(b"kept in the queue\r\n"), msg[-100:]
    d.stop()
    d.start()
    out = d.ctl("queue", check=True).stdout
    assert ids[0] in out
    msg = (d.spool / "queue" / (ids[0] + ".msg")).read_bytes()
    assert msg.endswith(b"kept in the queue\r\n")


def test_a_file_someone_still_reads_is_never_reused(make_daemon):
    """A message file that another process holds open when its message is
    removed is unlinked, not reused: the reader keeps reading that
    message, and later messages never land in its file."""
    d = make_daemon(RELAY).start()
    send(d, ["someone@remote.example"],
         b"Subject: being read\r\n\r\nthe original text\r\n")
    ids = queued_ids(d)
    assert len(ids) == 1
    path = d.spool / "queue" / (ids[0] + ".msg")
    with open(path, "rb") as reader:
        ino = os.fstat(reader.fileno()).st_ino
        before = reader.read()
        free_before = free_files(d, "M")
        d.ctl("remove", ids[0], check=True)
        assert wait_for(lambda: not path.exists(), 10)
        # not in the pool: only files nobody holds are kept
        assert free_files(d, "M") == free_before
        assert all(os.stat(d.spool / "free" / n).st_ino != ino
                   for n in os.listdir(d.spool / "free"))
        for i in range(5):
            send(d, ["demo@example.test"],
                 b"Subject: later %d\r\n\r\nanother message\r\n" % i)
        assert d.wait_mail("demo", 5)
        reader.seek(0)
        assert reader.read() == before
        assert b"the original text" in before
    # an envelope is never handed out: it went to the pool
    assert free_files(d, "E")


def test_pool_is_picked_up_after_a_restart(make_daemon):
    d = make_daemon(RELAY).start()
    for i in range(3):
        send(d, ["demo@example.test"], b"Subject: %d\r\n\r\nx\r\n" % i)
    assert d.wait_mail("demo", 3)
    assert wait_for(lambda: d.queue_files() == [], 10)
    d.stop()
    kept = {os.stat(d.spool / "free" / n).st_ino
            for n in os.listdir(d.spool / "free")}
    assert kept
    (d.spool / "free" / "junk-name").write_bytes(b"not ours")
    d.start()
    assert recovered(d, 2)
    assert not (d.spool / "free" / "junk-name").exists()
    send(d, ["someone@remote.example"], b"Subject: after\r\n\r\ny\r\n")
    ids = queued_ids(d)
    assert os.stat(d.spool / "queue" / (ids[0] + ".msg")).st_ino in kept
    assert os.stat(d.spool / "queue" / (ids[0] + ".env")).st_ino in kept


def test_a_free_name_that_is_also_a_message_is_not_taken(make_daemon):
    """A crash in the middle of a move can leave a file under two names
    (fsck keeps both on a filesystem without a journal): a free/ name of
    a queued message's file must not be written over."""
    d = make_daemon(RELAY).start()
    send(d, ["someone@remote.example"],
         b"Subject: queued\r\n\r\nmust stay as it is\r\n")
    ids = queued_ids(d)
    assert len(ids) == 1
    msg = d.spool / "queue" / (ids[0] + ".msg")
    before = msg.read_bytes()
    d.stop()
    for n in os.listdir(d.spool / "free"):
        os.unlink(d.spool / "free" / n)
    os.link(msg, d.spool / "free" / "M0000000000000FFF")
    d.start()
    assert recovered(d, 2)
    assert not (d.spool / "free" / "M0000000000000FFF").exists()
    for i in range(3):
        send(d, ["demo@example.test"],
             b"Subject: new %d\r\n\r\nanother\r\n" % i)
    assert d.wait_mail("demo", 3)
    assert msg.read_bytes() == before
