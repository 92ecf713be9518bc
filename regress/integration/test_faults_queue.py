"""Faults on the queue side (issue 8): what a crash, a stop or a full disk
leaves behind must be cleaned up or reported truly.

* an orphaned queue/ID.msg (no envelope) is removed at start;
* SIGTERM under load neither duplicates nor loses a local delivery;
* a Maildir's tmp/ loses the files a killed delivery left (36 hours old);
* a full disk is reported with its real cause, wherever the write fell
  short (the spool, a Maildir).
"""
import os
import pwd
import re
import smtplib
import subprocess
import threading
import time

import pytest

from conftest import wait_for

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


# ---- stop -------------------------------------------------------------------

STOP_USERS = ("demo", "alice", "bob")


def load_client(d, n, acked, lock, done):
    """Send until done, reconnecting while the daemon is down; note every
    (subject, recipient) whose message got its 250."""
    i = 0
    while not done.is_set():
        try:
            with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
                s.ehlo("load.example.org")
                while not done.is_set():
                    i += 1
                    subj = f"stop-{n}-{i}"
                    rcpts = [f"{STOP_USERS[i % 3]}@example.test"]
                    if i % 4 == 0:
                        rcpts.append("slow@example.test")
                    s.mail("s@example.org")
                    for r in rcpts:
                        s.rcpt(r)
                    code, _ = s.data(f"Subject: {subj}\r\n\r\nx\r\n"
                                     .encode())
                    if code == 250:
                        with lock:
                            acked.extend((subj, r.split("@")[0])
                                         for r in rcpts)
                    time.sleep(0.03)
        except (OSError, smtplib.SMTPException):
            time.sleep(0.1)     # stopped under us: try again


def delivered_copies(d, drop):
    """(subject, mailbox) -> number of copies, over the Maildirs and the
    files the slow command wrote."""
    found = {}
    paths = [(u, p) for u in STOP_USERS for sub in ("new", "cur")
             for p in d.maildir(u, sub)]
    paths += [("slow", p) for p in drop.iterdir()]
    for box, p in paths:
        m = re.search(rb"^Subject: (\S+)$", p.read_bytes(), re.M)
        key = (m.group(1).decode() if m else "?" + p.name, box)
        found[key] = found.get(key, 0) + 1
    return found


def test_sigterm_under_load_delivers_each_message_once(make_daemon, tmpbase):
    # Several clients send to Maildirs, every fourth message also to a
    # slow command (1 s), while the daemon is stopped with SIGTERM and
    # started again, several times.  A clean stop waits for the local
    # deliveries in flight and records them: after a last start and
    # drain, every acknowledged message is in each of its mailboxes
    # exactly once.
    drop = tmpbase / "drop"
    drop.mkdir()
    os.chmod(drop, 0o1777)              # the command runs as nobody
    slow = tmpbase / "slow.sh"
    slow.write_text("#!/bin/sh\nsleep 1\n"
                    f"f=$(mktemp {drop}/m.XXXXXX) || exit 75\n"
                    'exec cat >"$f"\n')
    os.chmod(slow, 0o755)
    d = make_daemon("retry-min 1s\n")
    d.write_aliases(f"postmaster: alice\nslow: |{slow}\n")
    d.start()
    acked, lock, done = [], threading.Lock(), threading.Event()
    clients = [threading.Thread(target=load_client,
                                args=(d, n, acked, lock, done))
               for n in range(4)]
    for t in clients:
        t.start()
    stops, started = 5, time.monotonic()
    try:
        for _ in range(stops):
            assert wait_for(lambda: len(acked) >= 8, 10)
            time.sleep(1.5)
            d.stop(timeout=40)
            d.start()
        time.sleep(1)
    finally:
        done.set()
        for t in clients:
            t.join(20)
    # The slow command runs as one account (nobody), which takes at most
    # max-account-deliveries (4) at once: the drain takes a second for
    # every four of its deliveries, on top of the Maildir ones.
    slow_acked = sum(1 for _, r in acked if r == "slow")
    assert wait_for(lambda: d.queue_files() == [], 40 + slow_acked / 2), \
        (slow_acked, d.queue_files(), d.ctl("queue").stdout)
    got = delivered_copies(d, drop)
    want = set(acked)
    dups = {k: n for k, n in got.items() if n > 1}
    lost = sorted(want - set(got))
    log = d.logtext()
    inflight = re.findall(r"queue: event=stop result=wait deliveries=(\d+)",
                          log)
    print(f"\nsigterm-load: stops={stops} in-flight-at-stop={inflight} "
          f"acknowledged={len(want)} (messages "
          f"{len({s for s, _ in want})}) delivered={sum(got.values())} "
          f"duplicates={sum(n - 1 for n in dups.values())} "
          f"lost={len(lost)} seconds={time.monotonic() - started:.1f}")
    assert len(want) >= 50, len(want)
    assert not dups, sorted(dups.items())[:20]
    assert not lost, lost[:20]
    assert "event=stop result=forced" not in log
    assert log.count("queue: event=stop result=ok") == stops, \
        log[-3000:]


@pytest.fixture
def sysuser():
    name = f"tq{os.getpid() % 100000}"
    subprocess.run(["userdel", "-r", name], capture_output=True)
    r = subprocess.run(["useradd", "-m", "-s", "/usr/sbin/nologin", name],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"useradd failed: {r.stderr}")
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", "-r", name], capture_output=True)


def test_sigterm_during_forward_stage_records_it(make_daemon, tmpbase,
                                                 sysuser):
    # A system account's ~/.forward runs first (here a slow command), then
    # the copy for its own mailbox.  A stop in between must let the mailbox
    # stage run and the whole delivery be recorded: refused, the .forward
    # would run again at the next start.
    pw = sysuser
    drop = tmpbase / "drop"
    drop.mkdir()
    os.chmod(drop, 0o1777)
    slow = tmpbase / "slow.sh"
    slow.write_text(f"#!/bin/sh\ntouch {drop}/started.$$\nsleep 1\n"
                    f"f=$(mktemp {drop}/m.XXXXXX) || exit 75\n"
                    'exec cat >"$f"\n')
    os.chmod(slow, 0o755)
    fwd = os.path.join(pw.pw_dir, ".forward")
    with open(fwd, "w") as f:
        f.write(f"\\{pw.pw_name}\n|{slow}\n")
    os.chown(fwd, pw.pw_uid, pw.pw_gid)
    d = make_daemon("retry-min 1s\n").start()
    send(d, [f"{pw.pw_name}@localhost"], "fwdstop")
    assert wait_for(lambda: list(drop.glob("started.*")), 10), \
        d.logtext()[-3000:]
    d.stop(timeout=40)
    d.start()
    assert wait_for(lambda: d.queue_files() == [], 20), d.logtext()[-3000:]
    new = os.path.join(pw.pw_dir, "Maildir", "new")
    assert len(os.listdir(new)) == 1, d.logtext()[-3000:]
    assert len(list(drop.glob("m.*"))) == 1, d.logtext()[-3000:]


# ---- Maildir tmp/ -----------------------------------------------------------

def test_maildir_tmp_old_files_removed_on_delivery(daemon):
    # A delivery killed between tmp/ and new/ leaves its file in tmp/.
    # The Maildir convention: a file in tmp/ untouched for 36 hours is
    # garbage.  Delivering into the Maildir cleans them; tmp/ is looked at
    # when its atime says nobody did for hours, so it costs one stat in
    # between.
    d = daemon
    send(d, ["demo@example.test"], "first")
    assert d.wait_mail("demo")
    tmp = d.maildirs / "demo" / "Maildir" / "tmp"
    now = time.time()
    old = tmp / "1700000000.M1P1Q1.stale"
    old.write_bytes(b"half a message")
    os.utime(old, (now - 40 * 3600, now - 40 * 3600))
    fresh = tmp / "1700000001.M2P2Q2.fresh"
    fresh.write_bytes(b"a delivery in progress")
    os.utime(fresh, (now - 3600, now - 3600))
    st = tmp.stat()
    os.utime(tmp, (now - 9 * 3600, st.st_mtime))   # not looked at for 9 h
    send(d, ["demo@example.test"], "second")
    assert d.wait_mail("demo", 2)
    assert not old.exists(), d.logtext()[-2000:]
    assert fresh.exists()
    assert re.search(r'event=maildir-clean result=ok removed=1 '
                     r'dir=".*/demo/Maildir/tmp"', d.logtext()), \
        d.logtext()[-2000:]
    # Just looked at: the next delivery leaves tmp/ alone.
    old.write_bytes(b"half a message")
    os.utime(old, (now - 40 * 3600, now - 40 * 3600))
    send(d, ["demo@example.test"], "third")
    assert d.wait_mail("demo", 3)
    assert old.exists()
    assert sorted(p.name for p in tmp.iterdir()) == sorted(
        [old.name, fresh.name])


# ---- full disk ---------------------------------------------------------------

@pytest.fixture
def tmpfs(tmpbase):
    """mount(dir, size, uid): a small tmpfs there; unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = []

    def mount(path, size, uid=0, gid=0):
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o",
                        f"size={size},mode=755,uid={uid},gid={gid}",
                        "tmpfs", str(path)], check=True)
        mounted.append(path)
        return path
    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_full_spool_452_names_the_cause(make_daemon, tmpbase, tmpfs):
    tmpfs(tmpbase / "spool", "1m")
    d = make_daemon("trusted-network 127.0.0.0/8\nmax-message-size 10M\n")
    d.start()
    big = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 2000   # 2 MB
    with pytest.raises(smtplib.SMTPDataError) as e:
        with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
            s.sendmail("s@example.org", ["x@remote.example"], big)
    assert e.value.smtp_code == 452 and b"4.3.1" in e.value.smtp_error
    assert re.search(r"code=452 esc=4\.3\.1 reason=\"[^\"]*No space left "
                     r"on device\"", d.logtext()), d.logtext()[-2000:]
    assert "File exists" not in d.logtext()
    assert wait_for(lambda: d.unfinished() == [], 10)


def test_full_maildir_deferred_with_the_cause(make_daemon, tmpbase, tmpfs):
    # The Maildir's file system fills during the copy: the write comes up
    # short, the next one fails with ENOSPC.  The delivery is deferred,
    # nothing half written stays, and the log says why.
    vmail = pwd.getpwnam("vmail")
    tmpfs(tmpbase / "mail" / "demo", "64k", vmail.pw_uid, vmail.pw_gid)
    d = make_daemon().start()
    body = (b"z" * 998 + b"\r\n") * 200          # 200 kB
    send(d, ["demo@example.test"], "toolarge", body)
    pat = (r"event=deliver to=<demo@example\.test> .*status=deferred "
           r"reason=\"write [^\"]*/Maildir/tmp/[^\"]*: ([^\"]*)\"")
    assert wait_for(lambda: re.search(pat, d.logtext()), 15), \
        d.logtext()[-2000:]
    assert re.search(pat, d.logtext()).group(1) == "No space left on device"
    assert d.maildir("demo", "tmp") == [] and d.maildir("demo") == []
