"""The maildrop: sendmail keeps a message that ternd cannot take (stopped,
or refusing for now) in spool/maildrop, and ternd's parent picks it up at
start and while it runs, as the file's owner.  Also sendmail -bs (SMTP on
standard input and output) and the trace of who submitted (Received:,
log).

Every test runs the real ternd and the real ternctl.  Unprivileged users
run a copy of ternctl installed as `make install` does: setgid to the
drop group (rc/deps.sh creates the group; so does the fixture below)."""
import grp
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import stat
import struct
import subprocess
import time
import zlib

import pytest

from conftest import TERNCTL, SMTPConn, wait_for

pytestmark = pytest.mark.usefixtures("sanitizer_check")

NOBODY = pwd.getpwnam("nobody")
DROP_GROUP = "terndrop"


@pytest.fixture(scope="module", autouse=True)
def drop_group():
    """The group ternctl is installed setgid to, as rc/deps.sh makes it."""
    try:
        grp.getgrnam(DROP_GROUP)
    except KeyError:
        subprocess.run(["groupadd", "--system", DROP_GROUP], check=True)
    return grp.getgrnam(DROP_GROUP)


@pytest.fixture
def sendmail(tmpbase):
    """ternctl as `sendmail`, as root runs it (no setgid needed)."""
    link = tmpbase / "sendmail"
    if not link.exists():
        os.symlink(TERNCTL.resolve(), link)
    return link


@pytest.fixture
def sgid_sendmail(tmpbase, drop_group):
    """A copy installed as `make install` does: root:terndrop, 2755."""
    d = tmpbase / "sbin"
    d.mkdir(exist_ok=True)
    ctl = d / "ternctl"
    shutil.copy(TERNCTL.resolve(), ctl)
    os.chown(ctl, 0, drop_group.gr_gid)
    os.chmod(ctl, 0o2755)
    link = d / "sendmail"
    if not link.exists():
        os.symlink("ternctl", link)
    return link


@pytest.fixture
def d(make_daemon, tmpbase):
    """A daemon that ran once (so the maildrop exists), now stopped."""
    dm = make_daemon()
    dm.start()
    dm.stop()
    dm.maildrop = dm.spool / "maildrop"
    dm.corrupt = dm.spool / "corrupt"
    return dm


def run(conf, sendmail, args, data=b"", user=None, timeout=60):
    env = dict(os.environ, TERN_CONF=str(conf))
    cmd = [str(sendmail), *args]
    if user:
        cmd = ["runuser", "-u", user, "--", "env", f"TERN_CONF={conf}", *cmd]
    return subprocess.run(cmd, input=data, capture_output=True,
                          timeout=timeout, env=env)


def ok(r):
    assert r.returncode == 0, (r.returncode, r.stderr.decode(errors="replace"))
    return r


def drops(d):
    return sorted(p.name for p in d.maildrop.iterdir())


def corrupt(d):
    return sorted(p.name for p in d.corrupt.iterdir())


def mail_of(d, user, count=1, timeout=15):
    assert d.wait_mail(user, count, timeout), (user, d.logtext()[-3000:])
    files = d.maildir(user)
    assert len(files) == count, files
    return [f.read_bytes() for f in files]


def other_conf(d, tmpbase):
    """The same spool, another submit socket: a sendmail that finds no
    daemon while this one runs (as during a restart)."""
    conf = tmpbase / "other.conf"
    conf.write_text(d.conf.read_text().replace(
        f'submit-socket "{tmpbase}/submit.sock"',
        f'submit-socket "{tmpbase}/nowhere.sock"'))
    return conf


def rec(tag, data):
    return bytes([tag]) + struct.pack(">I", len(data)) + data


def drop_file(uid, user, rcpts=(b"demo@example.test",),
              sender=b"someone@example.test", msg=b"Subject: forged\n\nx\n",
              program=b"forger"):
    """A maildrop file in lib/drop.c's format, made by hand."""
    b = b"TERNDRP\x01" + rec(1, struct.pack(">Q", uid)) + rec(2, user)
    b += rec(3, program) + rec(4, struct.pack(">Q", int(time.time())))
    b += rec(5, sender) + b"".join(rec(6, r) for r in rcpts) + rec(7, msg)
    return b + rec(0xFF, struct.pack(">I", zlib.crc32(b) & 0xFFFFFFFF))


def picked_up(d, n=1):
    return d.logtext().count("event=pickup result=ok") >= n


# ---- sendmail while ternd is down --------------------------------------------

def test_layout_no_world_writable_hole(d, drop_group):
    st = os.stat(d.maildrop)
    assert stat.S_IMODE(st.st_mode) == 0o1730, oct(st.st_mode)
    assert st.st_uid == 0 and st.st_gid == drop_group.gr_gid
    # Others may pass through the spool to it, not list it.
    assert stat.S_IMODE(os.stat(d.spool).st_mode) == 0o711


def test_down_sendmail_exits_0_and_start_delivers_exactly_once(d, sendmail):
    r = ok(run(d.conf, sendmail, ["demo@example.test"],
               b"Subject: kept\n\nwhile ternd was down\n"))
    assert r.stderr == b""          # cron and PHP see plain success
    [name] = drops(d)
    assert re.fullmatch(r"[0-9A-F]{16}", name), name
    d.start()
    [msg] = mail_of(d, "demo")
    assert b"Subject: kept\n" in msg and msg.endswith(b"while ternd was down\n")
    assert wait_for(lambda: drops(d) == [], 10), drops(d)
    assert f"event=pickup result=ok file={name} uid=0" in d.logtext()
    # Exactly once: the next scans find nothing, and nothing is queued.
    time.sleep(2)
    assert len(d.maildir("demo")) == 1
    assert wait_for(lambda: d.queue_files() == [], 10)


def test_root_drop_is_delivered_as_root(d, sendmail):
    # cron's mail for root: the pickup runs as nobody (never as root) but
    # the parent names the file's owner to the smtp process.
    ok(run(d.conf, sendmail, ["-f", "cron@example.test", "demo@example.test"],
           b"Subject: cron output\n\nx\n"))
    d.start()
    [msg] = mail_of(d, "demo")
    assert re.search(rb"Received: by mx\.example\.test \(Tern, from "
                     rb"local:uid=0\(root\)", msg), msg
    assert msg.startswith(b"Return-Path: <cron@example.test>\n")


def test_down_unprivileged_user_through_setgid_ternctl(d, sgid_sendmail):
    ok(run(d.conf, sgid_sendmail, ["demo@example.test"],
           b"Subject: from nobody\n\nx\n", user="nobody"))
    [name] = drops(d)
    st = os.stat(d.maildrop / name)
    assert st.st_uid == NOBODY.pw_uid and stat.S_IMODE(st.st_mode) == 0o600
    d.start()
    [msg] = mail_of(d, "demo")
    assert msg.startswith(b"Return-Path: <nobody@example.test>\n"), msg
    assert b"local:uid=%d(nobody)" % NOBODY.pw_uid in msg
    assert wait_for(lambda: drops(d) == [], 10)


def test_without_the_drop_group_a_user_cannot_drop(d, tmpbase):
    # A plain (not setgid) ternctl: the maildrop is not world-writable, so
    # the user is told, and the exit status says try again.
    plain = tmpbase / "plain"
    plain.mkdir()
    os.symlink(TERNCTL.resolve(), plain / "sendmail")
    r = run(d.conf, plain / "sendmail", ["demo@example.test"], b"x\n",
            user="nobody")
    assert r.returncode == 75, r
    err = r.stderr.decode()
    assert "cannot connect to" in err and "could not be kept" in err, err
    assert drops(d) == []


def test_setgid_group_is_given_up_at_once(d, sgid_sendmail, tmpbase):
    # The queue commands run by a user of the copy never hold the group:
    # ternctl reads -f's file only as the user.
    secret = tmpbase / "group-only.conf"
    secret.write_text("hostname x\n")
    os.chown(secret, 0, grp.getgrnam(DROP_GROUP).gr_gid)
    os.chmod(secret, 0o640)
    ctl = sgid_sendmail.parent / "ternctl"
    r = subprocess.run(["runuser", "-u", "nobody", "--", str(ctl), "-f",
                        str(secret), "queue"], capture_output=True, timeout=30)
    assert r.returncode == 1 and b"Permission denied" in r.stderr, r
    # Neither does sendmail, but for the drop itself.
    r = run(secret, sgid_sendmail, ["demo@example.test"], b"x\n",
            user="nobody")
    assert r.returncode != 0 and b"Permission denied" in r.stderr, r


def test_drop_while_running_is_picked_up(make_daemon, tmpbase, sgid_sendmail):
    d = make_daemon().start()
    d.maildrop = d.spool / "maildrop"
    conf = other_conf(d, tmpbase)
    ok(run(conf, sgid_sendmail, ["demo@example.test"],
           b"Subject: during a restart\n\nx\n", user="nobody"))
    # inotify: well before the minute's scan.
    [msg] = mail_of(d, "demo", timeout=10)
    assert b"Subject: during a restart" in msg
    assert wait_for(lambda: drops(d) == [], 10)


def test_refused_recipient_bounces_to_the_sender(d, sendmail):
    # As Postfix's pickup: the others get it, the sender gets a notice.
    ok(run(d.conf, sendmail, ["-f", "alice@example.test", "demo@example.test",
                              "nosuch@example.test"],
           b"Subject: half known\n\nx\n"))
    d.start()
    [msg] = mail_of(d, "demo")
    assert b"Subject: half known" in msg
    [dsn] = mail_of(d, "alice")
    assert dsn.startswith(b"Return-Path: <>\n"), dsn[:200]
    assert b"Final-Recipient: rfc822; nosuch@example.test" in dsn
    assert b"Status: 5.1.1" in dsn and b"Action: failed" in dsn
    assert b"Subject: half known" in dsn      # the original, returned
    assert wait_for(lambda: drops(d) == [], 10)
    line = [l for l in d.logtext().splitlines()
            if "event=pickup result=ok" in l][0]
    assert "nosuch@example.test" in line and "bounced" in line, line


def test_several_drops_all_delivered(d, sendmail):
    for i in range(5):
        ok(run(d.conf, sendmail, ["demo@example.test", "bob@example.test"],
               b"Subject: n%d\n\nx\n" % i))
    assert len(drops(d)) == 5
    d.start()
    mail_of(d, "demo", 5)
    mail_of(d, "bob", 5)
    assert wait_for(lambda: drops(d) == [], 10)


def test_temporary_refusal_keeps_the_file_for_later(d, sendmail):
    # The aliases map unreadable: ternd answers 451 for an alias.  The
    # file stays (not moved aside, not lost) and goes at the next try.
    d.write_aliases("postmaster: alice\nteam: demo\n")
    ok(run(d.conf, sendmail, ["team@example.test"], b"Subject: later\n\nx\n"))
    [name] = drops(d)
    db = d.aliases.with_name(d.aliases.name + ".db")
    os.chmod(db, 0)
    try:
        d.start()
        assert wait_for(lambda: "event=pickup result=deferred" in
                        d.logtext(), 10), d.logtext()[-3000:]
    finally:
        os.chmod(db, 0o644)
    log = d.logtext()
    assert f"file={name} uid=0 user=\"root\" attempts=1 retry=60s" in log
    assert "451" in log and drops(d) == [name] and corrupt(d) == []
    d.stop()
    d.start()                       # the scan at start tries it at once
    [msg] = mail_of(d, "demo")
    assert b"Subject: later" in msg
    assert wait_for(lambda: drops(d) == [], 10)


# ---- forged and malformed files ----------------------------------------------

def put(d, name, data, uid=0, gid=0):
    p = d.maildrop / name
    p.write_bytes(data)
    os.chown(p, uid, gid)
    return p


def test_forged_drop_files_are_not_delivered_as_someone_else(d):
    root_names_nobody = put(d, "6B15270000000001",
                            drop_file(NOBODY.pw_uid, b"nobody"))
    nobody_names_root = put(d, "6B15270000000002", drop_file(0, b"root"),
                            NOBODY.pw_uid)
    wrong_name = put(d, "6B15270000000003",
                     drop_file(NOBODY.pw_uid, b"root"), NOBODY.pw_uid)
    ghost = 54321                   # a uid without an account
    assert not any(p.pw_uid == ghost for p in pwd.getpwall())
    no_account = put(d, "6B15270000000004", drop_file(ghost, b"ghost"),
                     ghost)
    tern = pwd.getpwnam("tern")     # ternd's own user plants nothing
    own_user = put(d, "6B15270000000005", drop_file(tern.pw_uid, b"tern"),
                   tern.pw_uid)
    d.start()
    names = [p.name for p in (root_names_nobody, nobody_names_root,
                              wrong_name, no_account, own_user)]
    assert wait_for(lambda: corrupt(d) == ["maildrop." + n for n in names],
                    10), (corrupt(d), d.logtext()[-3000:])
    log = d.logtext()
    assert ("file=6B15270000000001 uid=0 user=\"root\" reason=\"forged drop "
            f"file: it names user id {NOBODY.pw_uid} but belongs to user id "
            "0\"") in log, log
    assert (f"file=6B15270000000002 uid={NOBODY.pw_uid} user=\"nobody\" "
            "reason=\"forged drop file: it names user id 0") in log
    assert "file=6B15270000000003" in log and "names user root" in log
    assert (f"file=6B15270000000004 uid={ghost} user=\"?\" reason=\"the "
            "owner has no account\"") in log, log
    assert "file=6B15270000000005" in log and "ternd's own user" in log
    time.sleep(1)
    assert d.maildir("demo") == [] and d.queue_files() == []
    assert "event=queued" not in log


def test_malformed_files_moved_aside_and_daemon_keeps_running(d, sendmail,
                                                              tmpbase):
    good = drop_file(0, b"root")
    put(d, "6B15270000000011", b"garbage")
    put(d, "6B15270000000012", good[:-9])                   # truncated
    put(d, "6B15270000000013", good[:-1] + bytes([good[-1] ^ 1]))  # CRC
    os.symlink("/etc/passwd", d.maildrop / "6B15270000000014")
    os.mkfifo(d.maildrop / "6B15270000000015")
    other = tmpbase / "elsewhere"
    other.write_bytes(good)
    os.link(other, d.maildrop / "6B15270000000016")         # two links
    put(d, "not-a-drop-name", good)
    put(d, ".tmp.6B15270000000017", good)    # still being written: kept
    d.start()
    want = ["maildrop.6B1527000000001%d" % i for i in range(1, 7)] + \
        ["maildrop.not-a-drop-name"]
    assert wait_for(lambda: corrupt(d) == want, 10), (corrupt(d),
                                                       d.logtext()[-3000:])
    log = d.logtext()
    for why in ("malformed drop file: bad magic", "truncated",
                "bad checksum", "a symbolic link", "not a regular file",
                "a file with other links", "not a drop file's name"):
        assert why in log, why
    assert drops(d) == [".tmp.6B15270000000017"]
    assert d.proc.poll() is None
    # The daemon still works, the pickup included.
    ok(run(d.conf, sendmail, ["demo@example.test"], b"Subject: after\n\nx\n"))
    mail_of(d, "demo")
    assert "event=seccomp" not in log


# ---- the trace: who and what submitted ---------------------------------------

@pytest.fixture
def php(tmpbase):
    """A shell called php-fpm8.2: the program that runs sendmail."""
    p = tmpbase / "php-fpm8.2"
    shutil.copy("/bin/sh", p)
    return p


def test_trace_names_user_and_program(make_daemon, tmpbase, sendmail, php):
    d = make_daemon().start()
    r = subprocess.run([str(php), "-c", f'"$0" demo@example.test; exit $?',
                        str(sendmail)], input=b"Subject: php\n\nx\n",
                       capture_output=True, timeout=60,
                       env=dict(os.environ, TERN_CONF=str(d.conf)))
    ok(r)
    [msg] = mail_of(d, "demo")
    assert re.search(rb"Received: by mx\.example\.test \(Tern, from "
                     rb"local:uid=0\(root\) program=php-fpm8\.2\)", msg), msg
    assert re.search(r"event=queued result=ok from=<root@example\.test> "
                     r"nrcpt=1 size=\d+ program=php-fpm8\.2 "
                     r"client=local:uid=0\(root\)", d.logtext()), d.logtext()


def test_trace_survives_the_maildrop(d, sgid_sendmail, php):
    env = dict(os.environ)
    r = subprocess.run(["runuser", "-u", "nobody", "--", "env",
                        f"TERN_CONF={d.conf}", str(php), "-c",
                        f'"$0" demo@example.test; exit $?', str(sgid_sendmail)],
                       input=b"Subject: php later\n\nx\n", capture_output=True,
                       timeout=60, env=env)
    ok(r)
    d.start()
    [msg] = mail_of(d, "demo")
    assert re.search(rb"from local:uid=%d\(nobody\) program=php-fpm8\.2\)"
                     % NOBODY.pw_uid, msg), msg


class UnixConn(SMTPConn):
    """SMTPConn over the submit socket."""

    def __init__(self, path, timeout=10):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buf = b""
        self.greeting = self.reply()


def test_xprogram_on_the_submit_socket_alone(make_daemon, tmpbase):
    d = make_daemon().start()
    with UnixConn(tmpbase / "submit.sock") as c:
        code, text = c.cmd("EHLO localhost")
        assert code == 250 and "\n250-XPROGRAM" in text, text
        assert c.cmd("MAIL FROM:<a@example.test> XPROGRAM=a/b")[0] == 555
        assert c.cmd("MAIL FROM:<a@example.test> XPROGRAM=cron")[0] == 250
    with SMTPConn(d.port) as c:
        code, text = c.cmd("EHLO client.example")
        assert code == 250 and "XPROGRAM" not in text
        code, text = c.cmd("MAIL FROM:<a@example.org> XPROGRAM=forged")
        assert code == 555 and "XPROGRAM" in text, text
        assert c.cmd("MAIL FROM:<a@example.org>")[0] == 250


# ---- sendmail -bs -------------------------------------------------------------

def bs_session(conf, sendmail, user=None):
    """sendmail -bs on one end of a socket pair, smtplib on the other."""
    a, b = socket.socketpair()
    cmd = [str(sendmail), "-bs"]
    if user:
        cmd = ["runuser", "-u", user, "--", "env", f"TERN_CONF={conf}", *cmd]
    p = subprocess.Popen(cmd, stdin=b, stdout=b, stderr=subprocess.PIPE,
                         env=dict(os.environ, TERN_CONF=str(conf)))
    b.close()
    s = smtplib.SMTP()
    s.sock = a
    s.file = None
    code, text = s.getreply()
    assert code == 220 and b"ESMTP" in text, (code, text)
    return p, s


def test_bs_smtplib_dialogue_delivers(make_daemon, tmpbase, sendmail):
    d = make_daemon().start()
    p, s = bs_session(d.conf, sendmail)
    try:
        code, text = s.ehlo("app.example")
        assert code == 250 and s.has_extn("pipelining") and s.has_extn("size")
        assert s.noop()[0] == 250
        s.sendmail("app@example.test", ["demo@example.test",
                                        "alice@example.test"],
                   b"Subject: one\r\n\r\n.leading dot\r\nbody\r\n")
        assert s.rset()[0] == 250
        s.sendmail("", ["bob@example.test"], b"Subject: two\r\n\r\nx\r\n")
        assert s.quit()[0] == 221
    finally:
        s.close()
        assert p.wait(30) == 0, p.stderr.read()
    [m] = mail_of(d, "demo")
    assert m.startswith(b"Return-Path: <app@example.test>\n")
    assert m.endswith(b"\n\n.leading dot\nbody\n"), m
    assert b"\nMessage-ID: " in m and b"\nDate: " in m      # completed
    mail_of(d, "alice")
    [m] = mail_of(d, "bob")
    assert m.startswith(b"Return-Path: <>\n")


def test_bs_pipe_with_lf_line_ends_and_pipelining(make_daemon, tmpbase,
                                                  sendmail):
    d = make_daemon().start()
    script = (b"EHLO app\nMAIL FROM:<app@example.test>\n"
              b"RCPT TO:<demo@example.test>\nDATA\n"
              b"Subject: lf\n\nline\n..dot\n.\nQUIT\n")
    r = subprocess.run([str(sendmail), "-bs"], input=script,
                       capture_output=True, timeout=60,
                       env=dict(os.environ, TERN_CONF=str(d.conf)))
    assert r.returncode == 0, r
    codes = [l[:3] for l in r.stdout.split(b"\r\n") if l[3:4] == b" "]
    assert codes == [b"220", b"250", b"250", b"250", b"354", b"250",
                     b"221"], r.stdout
    [m] = mail_of(d, "demo")
    assert m.endswith(b"\n\nline\n.dot\n"), m


def test_bs_input_hygiene_and_limits(make_daemon, tmpbase, sendmail):
    d = make_daemon("max-message-size 10K").start()
    script = (b"MAIL FROM:<a@example.test>\r\n"        # 503: no EHLO yet
              b"EHLO app\r\n"
              b"NOOP\rRSET\r\n"                         # bare CR: 500
              b"NO\x00OP\r\n"                           # NUL: 500
              + b"X" * 5000 + b"\r\n"                   # too long: 500
              b"BOGUS\r\n"                              # 500
              b"DATA\r\n"                               # 503: no MAIL
              b"MAIL FROM:<a@example.test> XPROGRAM=x\r\n"   # 555
              b"MAIL FROM:<a@example.test> SIZE=20000\r\n"   # 552
              b"MAIL FROM:<a@example.test>\r\n"
              b"RCPT TO:<demo@example.test>\r\n"
              b"DATA\r\nSubject: cr\r\n\r\nbare\rcr\r\n.\r\n"  # 554
              b"MAIL FROM:<a@example.test>\r\n"
              b"RCPT TO:<demo@example.test>\r\n"
              b"DATA\r\n" + (b"y" * 70 + b"\r\n") * 200 + b".\r\n"  # 552
              b"MAIL FROM:<a@example.test>\r\n"
              b"RCPT TO:<nosuch@example.test>\r\n"
              b"RCPT TO:<demo@example.test>\r\n"
              b"DATA\r\nSubject: all or nothing\r\n\r\nx\r\n.\r\n"   # 550
              b"QUIT\r\n")
    r = subprocess.run([str(sendmail), "-bs"], input=script,
                       capture_output=True, timeout=60,
                       env=dict(os.environ, TERN_CONF=str(d.conf)))
    assert r.returncode == 0, r
    codes = [l[:3].decode() for l in r.stdout.split(b"\r\n")
             if l[3:4] == b" "]
    assert codes == ["220", "503", "250", "500", "500", "500", "500", "503",
                     "555", "552", "250", "250", "354", "554", "250", "250",
                     "354", "552", "250", "250", "250", "354", "550",
                     "221"], r.stdout
    time.sleep(1)
    assert d.maildir("demo") == []


def test_bs_with_daemon_down_keeps_the_message(d, sendmail):
    script = (b"EHLO app\r\nMAIL FROM:<app@example.test>\r\n"
              b"RCPT TO:<demo@example.test>\r\nDATA\r\n"
              b"Subject: bs later\r\n\r\nx\r\n.\r\nQUIT\r\n")
    r = subprocess.run([str(sendmail), "-bs"], input=script,
                       capture_output=True, timeout=60,
                       env=dict(os.environ, TERN_CONF=str(d.conf)))
    assert r.returncode == 0 and b"\r\n250 2.0.0 " in r.stdout, r
    assert len(drops(d)) == 1
    d.start()
    [m] = mail_of(d, "demo")
    assert b"Subject: bs later" in m


def test_picked_up_mail_counts_per_program(d, sgid_sendmail, php, tmpbase):
    # Dropped while ternd was down, a form's mail and cron's are picked
    # up as their programs: each counted under its own key
    # (local:USER/PROGRAM), which has its own limits and breaker.
    cron = tmpbase / "cron"
    shutil.copy("/bin/sh", cron)
    for prog, subject in ((php, "form"), (php, "form"), (cron, "cron")):
        ok(subprocess.run(["runuser", "-u", "nobody", "--", "env",
                           f"TERN_CONF={d.conf}", str(prog), "-c",
                           f'"$0" demo@example.test; exit $?',
                           str(sgid_sendmail)],
                          input=f"Subject: {subject}\n\nx\n".encode(),
                          capture_output=True, timeout=60))
    assert len(drops(d)) == 3
    d.start()
    mail_of(d, "demo", 3)
    out = d.ctl("user", "limits", check=True).stdout
    assert re.search(r"^local:nobody/php-fpm8\.2\s+2\s", out, re.M), out
    assert re.search(r"^local:nobody/cron\s+1\s", out, re.M), out
