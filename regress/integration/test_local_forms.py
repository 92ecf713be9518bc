"""Local delivery forms beyond Maildir: mbox spool files, |command and
/file aliases, :include: lists, ~/.forward, LMTP; and who each runs as
(never root: a root-owned aliases file's commands run as nobody)."""
import asyncio
import grp
import os
import pwd
import re
import smtplib
import socket
import stat
import struct
import subprocess
import time

import pytest
from aiosmtpd.controller import UnixSocketController
from aiosmtpd.lmtp import LMTP

from conftest import wait_for

pytestmark = pytest.mark.usefixtures("sanitizer_check")

NOBODY = pwd.getpwnam("nobody").pw_uid
VMAIL = pwd.getpwnam("vmail").pw_uid    # the default virtual-user
ASCTIME = r"[A-Z][a-z]{2} [A-Z][a-z]{2} [ 123]\d \d\d:\d\d:\d\d \d{4}"


def send(d, rcpts, subject="t", sender="s@example.org", body=b"hello\r\n"):
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as s:
        s.ehlo("client.example.org")
        s.mail(sender)
        for r in rcpts:
            code, text = s.rcpt(r)
            assert code == 250, (r, code, text)
        code, text = s.data(b"Subject: " + subject.encode() + b"\r\n\r\n"
                            + body)
        assert code == 250, text
        m = re.search(r"queued as ([0-9A-F]+)", text.decode())
        assert m, text
        return m.group(1)


def settle(d, timeout=15):
    assert wait_for(lambda: d.queue_files() == [], timeout), \
        (d.queue_files(), d.ctl("queue").stdout, d.logtext()[-3000:])


def log_lines(d, *needles):
    return [l for l in d.logtext().splitlines()
            if all(n in l for n in needles)]


@pytest.fixture
def users():
    """Factory of system accounts (useradd -m), removed afterwards."""
    made = []

    def make():
        name = f"tf{os.getpid() % 100000}x{len(made)}"
        subprocess.run(["userdel", "-r", name], capture_output=True)
        r = subprocess.run(["useradd", "-m", "-s", "/usr/sbin/nologin", name],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.fail(f"useradd failed: {r.stderr}")
        made.append(name)
        return pwd.getpwnam(name)
    yield make
    for name in made:
        subprocess.run(["userdel", "-r", name], capture_output=True)


@pytest.fixture
def outdir(tmpbase):
    """Where commands running as other accounts may write (like /tmp)."""
    d = tmpbase / "out"
    d.mkdir()
    os.chmod(d, 0o1777)
    return d


def script(tmpbase, name, body):
    p = tmpbase / name
    p.write_text("#!/bin/sh\n" + body)
    os.chmod(p, 0o755)
    return p


def recorder(tmpbase, outdir, status=0, say=""):
    """A command that writes its uid, environment and stdin to outdir."""
    return script(tmpbase, f"rec{status}.sh",
                  f'f={outdir}/run.$$\n'
                  f'{{ id -u; echo ---; env | sort; echo ---; cat; }} > "$f"\n'
                  f'chmod 644 "$f"\n'
                  + (f'echo "{say}"\n' if say else "")
                  + f"exit {status}\n")


def runs(outdir):
    out = []
    for p in sorted(outdir.glob("run.*")):
        uid, env, stdin = p.read_text().split("---\n", 2)
        env = dict(l.split("=", 1) for l in env.splitlines() if "=" in l)
        out.append((int(uid), env, stdin))
    return out


def mail_spool(tmpbase):
    """Debian's /var/mail: root:mail 2775."""
    d = tmpbase / "mail-spool"
    d.mkdir()
    os.chown(d, 0, grp.getgrnam("mail").gr_gid)
    os.chmod(d, 0o2775)
    return d


# ---- mbox ---------------------------------------------------------------------

def test_mbox_two_messages_from_lines_and_quoting(make_daemon, tmpbase, users):
    spool = mail_spool(tmpbase)
    pw = users()
    d = make_daemon(f'local-delivery mbox\nmbox-dir "{spool}"').start()
    body = (b"first line\r\nFrom here on, quoted\r\n>From already quoted\r\n"
            b"From\r\n.dot line\r\n")
    send(d, [f"{pw.pw_name}@localhost"], "one", body=body)
    settle(d)
    send(d, [f"{pw.pw_name}@example.test"], "two", sender="")
    settle(d)
    box = spool / pw.pw_name
    data = box.read_bytes()
    assert b"\r" not in data
    msgs = re.split(rb"\n\n(?=From )", data)
    assert len(msgs) == 2, data
    assert re.match(rb"From s@example\.org " + ASCTIME.encode() + b"\n",
                    msgs[0]), msgs[0][:200]
    assert re.match(rb"From MAILER-DAEMON " + ASCTIME.encode() + b"\n",
                    msgs[1]), msgs[1][:200]
    assert b"\nReturn-Path: <s@example.org>\n" in msgs[0]
    assert f"\nDelivered-To: {pw.pw_name}@localhost\n".encode() in msgs[0]
    assert b"\nReturn-Path: <>\n" in msgs[1]
    assert b"\nSubject: one\n" in msgs[0] and b"\nSubject: two\n" in msgs[1]
    # mboxrd: "From " lines get one more '>', ">From " lines too.
    assert b"\n>From here on, quoted\n" in msgs[0]
    assert b"\n>>From already quoted\n" in msgs[0]
    assert b"\nFrom\n" in msgs[0]        # not "From " with a space
    assert msgs[0].endswith(b"\n.dot line")  # then the blank line
    assert data.endswith(b"\n\n")
    st = box.stat()
    assert st.st_uid == pw.pw_uid
    assert st.st_gid == grp.getgrnam("mail").gr_gid     # the setgid spool
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert sorted(p.name for p in spool.iterdir()) == [pw.pw_name], \
        "no .lock (or anything else) is left behind"
    assert log_lines(d, "status=sent", f"delivered to mailbox {box}")


def test_mbox_existing_file_appended(make_daemon, tmpbase, users):
    spool = mail_spool(tmpbase)
    pw = users()
    box = spool / pw.pw_name
    old = b"From a@b Mon Jan  1 00:00:00 2024\nSubject: old\n\nold body\n\n"
    box.write_bytes(old)
    os.chown(box, pw.pw_uid, grp.getgrnam("mail").gr_gid)
    os.chmod(box, 0o660)            # Debian's usual mode stays accepted
    d = make_daemon(f'local-delivery mbox\nmbox-dir "{spool}"').start()
    send(d, [f"{pw.pw_name}@localhost"], "new")
    settle(d)
    data = box.read_bytes()
    assert data.startswith(old)
    assert b"Subject: new" in data[len(old):]


def test_mbox_symlink_refused(make_daemon, tmpbase, users):
    spool = mail_spool(tmpbase)
    pw = users()
    victim = tmpbase / "victim"
    victim.write_bytes(b"")
    os.symlink(victim, spool / pw.pw_name)
    d = make_daemon(f'local-delivery mbox\nmbox-dir "{spool}"').start()
    qid = send(d, [f"{pw.pw_name}@localhost"], "link")
    assert wait_for(lambda: log_lines(d, qid, "symbolic link"), 10), \
        d.logtext()[-2000:]
    assert victim.read_bytes() == b""
    assert f"{qid}.env" in d.queue_files()


# ---- |command -----------------------------------------------------------------

def test_pipe_alias_environment_and_input(make_daemon, tmpbase, outdir):
    os.environ["TERN_TEST_LEAK"] = "must-not-reach-commands"
    try:
        d = make_daemon().start()
    finally:
        del os.environ["TERN_TEST_LEAK"]
    cmd = recorder(tmpbase, outdir)
    d.write_aliases(f'postmaster: alice\nprog: "|{cmd} arg"\n')
    send(d, ["prog+tag@example.test"], "piped",
         body=b"line one\r\nFrom me\r\n")
    settle(d)
    (uid, env, stdin), = runs(outdir)
    # The aliases file is root's: its commands run as nobody.
    assert uid == NOBODY
    assert env["PATH"] == "/usr/bin:/bin"
    assert env["SHELL"] == "/bin/sh"
    assert env["USER"] == env["LOGNAME"] == "nobody"
    assert env["HOME"] == pwd.getpwnam("nobody").pw_dir
    assert env["SENDER"] == "s@example.org"
    assert env["RECIPIENT"] == "prog+tag@example.test"
    assert env["ORIGINAL_RECIPIENT"] == "prog+tag@example.test"
    assert env["EXTENSION"] == "tag"
    assert env["LOCAL"] == "prog+tag"
    assert env["DOMAIN"] == "example.test"
    assert "TERN_TEST_LEAK" not in env and "TERN_BUILD" not in env
    assert stdin.startswith("Return-Path: <s@example.org>\n"
                            "Delivered-To: prog+tag@example.test\n")
    assert "\r" not in stdin
    assert "\nSubject: piped\n\nline one\nFrom me\n" in stdin
    assert log_lines(d, "status=sent", "delivered to command")


def test_pipe_extension_empty_without_tag(make_daemon, tmpbase, outdir):
    d = make_daemon().start()
    cmd = recorder(tmpbase, outdir)
    d.write_aliases(f"postmaster: alice\nprog: |{cmd}\n")
    send(d, ["prog@example.test"], "plain")
    settle(d)
    (uid, env, _), = runs(outdir)
    assert env["EXTENSION"] == "" and env["LOCAL"] == "prog"


def test_pipe_envelope_never_interpolated(make_daemon, tmpbase, outdir):
    d = make_daemon().start()
    cmd = recorder(tmpbase, outdir)
    d.write_aliases(f"postmaster: alice\nprog: |{cmd}\n")
    pwned = outdir / "pwned"
    tag = "`touch${IFS}" + str(pwned) + "`"
    send(d, [f"prog+{tag}@example.test"], "evil",
         sender=f"x+$(touch${{IFS}}{pwned})@example.org")
    settle(d)
    (uid, env, _), = runs(outdir)
    assert env["EXTENSION"] == tag.lower() or env["EXTENSION"] == tag
    assert not pwned.exists()


def test_pipe_exit_75_stays_queued(make_daemon, tmpbase, outdir):
    d = make_daemon().start()
    cmd = recorder(tmpbase, outdir, status=75, say="try later")
    d.write_aliases(f"postmaster: alice\nprog: |{cmd}\n")
    qid = send(d, ["prog@example.test"], "tempfail")

    def deferred():
        out = d.ctl("show", qid).stdout
        return out if "command exited 75" in out else None
    out = wait_for(deferred, 10)
    assert out, (d.ctl("show", qid), d.logtext()[-2000:])
    assert "status: pending" in out and "try later" in out
    assert f"{qid}.env" in d.queue_files()
    assert log_lines(d, qid, "status=deferred", "command exited 75")


def test_pipe_exit_1_fails(make_daemon, tmpbase, outdir):
    d = make_daemon().start()
    cmd = recorder(tmpbase, outdir, status=1, say="no such list here")
    d.write_aliases(f"postmaster: alice\nprog: |{cmd}\n")
    qid = send(d, ["prog@example.test"], "permfail",
               sender="demo@example.test")
    assert wait_for(lambda: log_lines(d, qid, "status=bounced"), 10), \
        d.logtext()[-2000:]
    line, = log_lines(d, qid, "status=bounced")
    assert "command exited 1: no such list here" in line
    # The sender hears about it (a DSN to demo, a local virtual user).
    assert d.wait_mail("demo"), d.logtext()[-2000:]
    dsn = d.maildir("demo")[0].read_bytes()
    assert b"no such list here" in dsn


def test_pipe_killed_by_signal_is_temporary(make_daemon, tmpbase):
    d = make_daemon().start()
    # exec: the shell itself is the process that dies by the signal.
    cmd = script(tmpbase, "die.sh", "kill -TERM $$\n")
    d.write_aliases(f'postmaster: alice\nprog: "|exec {cmd}"\n')
    qid = send(d, ["prog@example.test"], "signal")
    assert wait_for(lambda: log_lines(d, qid, "status=deferred",
                                      "signal 15"), 10), d.logtext()[-2000:]
    assert f"{qid}.env" in d.queue_files()


def test_pipe_runs_as_aliases_owner(make_daemon, tmpbase, outdir, users):
    pw = users()
    d = make_daemon().start()
    cmd = recorder(tmpbase, outdir)
    d.write_aliases(f"postmaster: alice\nprog: |{cmd}\n")
    os.chown(d.aliases, pw.pw_uid, pw.pw_gid)
    send(d, ["prog@example.test"], "owner")
    settle(d)
    (uid, env, _), = runs(outdir)
    assert uid == pw.pw_uid and env["USER"] == pw.pw_name
    assert env["HOME"] == pw.pw_dir


def test_pipe_command_does_not_read_input(make_daemon, tmpbase):
    d = make_daemon().start()
    cmd = script(tmpbase, "true.sh", "exit 0\n")
    d.write_aliases(f"postmaster: alice\nprog: |{cmd}\n")
    send(d, ["prog@example.test"], "big", body=b"x" * 998 + b"\r\n" * 1
         + (b"y" * 500 + b"\r\n") * 2000)
    settle(d)


# ---- /file ----------------------------------------------------------------------

def file_target(tmpbase, mode=0o600):
    box = tmpbase / "filebox"
    box.write_bytes(b"")
    os.chown(box, NOBODY, -1)       # a root-owned aliases file: as nobody
    os.chmod(box, mode)
    return box


def test_file_alias_appended_as_mbox(make_daemon, tmpbase):
    d = make_daemon().start()
    box = file_target(tmpbase)
    d.write_aliases(f"postmaster: alice\narchive: {box}, bob\n")
    send(d, ["archive@example.test"], "a1", body=b"From the start\r\n")
    send(d, ["archive@example.test"], "a2")
    settle(d)
    data = box.read_bytes()
    assert len(re.findall(rb"(?m)^From s@example\.org ", data)) == 2
    assert b"\nDelivered-To: archive@example.test\n" in data
    assert b"\n>From the start\n" in data
    assert len(d.maildir("bob")) == 2
    assert not (tmpbase / "filebox.lock").exists()


@pytest.mark.parametrize("mode", [0o620, 0o602])
def test_file_alias_writable_by_others_refused(make_daemon, tmpbase, mode):
    d = make_daemon().start()
    box = file_target(tmpbase, mode)
    d.write_aliases(f"postmaster: alice\narchive: {box}\n")
    qid = send(d, ["archive@example.test"], "w")
    assert wait_for(lambda: log_lines(d, qid, "group or world writable"),
                    10), d.logtext()[-2000:]
    assert box.read_bytes() == b""
    assert f"{qid}.env" in d.queue_files()


def test_file_alias_symlink_refused(make_daemon, tmpbase):
    d = make_daemon().start()
    real = file_target(tmpbase)
    link = tmpbase / "link"
    os.symlink(real, link)
    d.write_aliases(f"postmaster: alice\narchive: {link}\n")
    qid = send(d, ["archive@example.test"], "l")
    assert wait_for(lambda: log_lines(d, qid, "symbolic link"), 10), \
        d.logtext()[-2000:]
    assert real.read_bytes() == b""


def test_file_alias_dev_null_discards(make_daemon):
    d = make_daemon().start()
    d.write_aliases("postmaster: alice\ndevnull: /dev/null\n")
    qid = send(d, ["devnull@example.test"], "void")
    settle(d)
    assert log_lines(d, qid, "status=sent", "/dev/null")


# ---- :include: ------------------------------------------------------------------

def test_include_two_users_and_owner_runs_command(make_daemon, tmpbase,
                                                  outdir, users):
    pw = users()
    d = make_daemon().start()
    cmd = recorder(tmpbase, outdir)
    inc = tmpbase / "list.inc"
    inc.write_text(f"# members\nalice\n\nbob@example.test, |{cmd}\n")
    os.chown(inc, pw.pw_uid, pw.pw_gid)
    os.chmod(inc, 0o644)
    d.write_aliases(f"postmaster: alice\nlist: :include:{inc}\n")
    send(d, ["list@example.test"], "inc")
    settle(d)
    assert len(d.maildir("alice")) == 1 and len(d.maildir("bob")) == 1
    assert d.maildir("demo") == []
    (uid, env, _), = runs(outdir)
    assert uid == pw.pw_uid, "an include's command runs as its owner"


def test_include_owned_by_root_runs_as_nobody(make_daemon, tmpbase, outdir):
    d = make_daemon().start()
    cmd = recorder(tmpbase, outdir)
    inc = tmpbase / "list.inc"
    inc.write_text(f"|{cmd}\n")
    os.chmod(inc, 0o644)
    d.write_aliases(f"postmaster: alice\nlist: :include:{inc}\n")
    send(d, ["list@example.test"], "inc")
    settle(d)
    (uid, _, _), = runs(outdir)
    assert uid == NOBODY


# ---- ~/.forward -----------------------------------------------------------------

def sys_maildir(pw):
    d = os.path.join(pw.pw_dir, "Maildir", "new")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def write_forward(pw, text, mode=0o644):
    p = os.path.join(pw.pw_dir, ".forward")
    with open(p, "w") as f:
        f.write(text)
    os.chown(p, pw.pw_uid, pw.pw_gid)
    os.chmod(p, mode)


def test_forward_self_other_and_command(make_daemon, tmpbase, outdir, users):
    pw = users()
    d = make_daemon().start()
    cmd = recorder(tmpbase, outdir)
    write_forward(pw, f"# mine\n\\{pw.pw_name}, bob@example.test\n|{cmd}\n")
    send(d, [f"{pw.pw_name}@localhost"], "fwd")
    settle(d)
    assert len(sys_maildir(pw)) == 1, d.logtext()[-3000:]
    assert len(d.maildir("bob")) == 1
    (uid, env, stdin), = runs(outdir)
    assert uid == pw.pw_uid, "~/.forward commands run as the account"
    assert env["USER"] == pw.pw_name and env["HOME"] == pw.pw_dir
    assert env["RECIPIENT"] == f"{pw.pw_name}@localhost"
    assert "Subject: fwd" in stdin
    assert log_lines(d, "event=forward", "to=<bob@example.test>",
                     "result=ok")


def test_forward_elsewhere_only(make_daemon, users):
    pw = users()
    d = make_daemon().start()
    write_forward(pw, "alice@example.test\n")
    send(d, [f"{pw.pw_name}@localhost"], "away")
    settle(d)
    assert sys_maildir(pw) == []
    assert len(d.maildir("alice")) == 1


def test_forward_loop_back_to_self_one_copy(make_daemon, users):
    pw = users()
    d = make_daemon().start()
    d.write_aliases(f"postmaster: alice\nback: {pw.pw_name}\n")
    write_forward(pw, f"\\{pw.pw_name}, back@example.test, bob\n")
    send(d, [f"{pw.pw_name}@example.test"], "loop")
    settle(d)
    time.sleep(0.5)
    assert len(sys_maildir(pw)) == 1
    assert len(d.maildir("bob")) == 1


def test_forward_unsafe_ignored(make_daemon, users):
    pw = users()
    d = make_daemon().start()
    write_forward(pw, "bob@example.test\n", mode=0o666)
    send(d, [f"{pw.pw_name}@localhost"], "unsafe")
    settle(d)
    assert len(sys_maildir(pw)) == 1
    assert d.maildir("bob") == []
    assert log_lines(d, "status=sent", "~/.forward ignored: group or world "
                     "writable")


def test_forward_with_mbox_delivery(make_daemon, tmpbase, outdir, users):
    spool = mail_spool(tmpbase)
    pw = users()
    d = make_daemon(f'local-delivery mbox\nmbox-dir "{spool}"').start()
    cmd = recorder(tmpbase, outdir)
    write_forward(pw, f"{pw.pw_name}, |{cmd}\n")
    send(d, [f"{pw.pw_name}@localhost"], "both")
    settle(d)
    assert b"Subject: both" in (spool / pw.pw_name).read_bytes()
    (uid, _, _), = runs(outdir)
    assert uid == pw.pw_uid
    # The command ran without the mail group the mbox delivery uses.
    gid = grp.getgrnam("mail").gr_gid
    assert gid not in os.getgrouplist(pw.pw_name, pw.pw_gid)


# ---- LMTP ----------------------------------------------------------------------

class LMTPStore:
    """Accepts one account, refuses another with 550, one with 451."""

    def __init__(self, accept, refuse, later=None):
        self.accept, self.refuse, self.later = accept, refuse, later
        self.messages = []
        self.peers = []

    async def handle_RCPT(self, server, session, envelope, address, options):
        sock = server.transport.get_extra_info("socket")
        cred = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                               struct.calcsize("3i"))
        self.peers.append(struct.unpack("3i", cred)[1])
        if address.split("@")[0] == self.refuse:
            return "550 5.1.1 <%s> no such mailbox" % address
        if self.later and address.split("@")[0] == self.later:
            return "451 4.2.0 mailbox busy"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 ok"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                              envelope.original_content))
        return "250 2.0.0 saved"


class LMTPController(UnixSocketController):
    def factory(self):
        return LMTP(self.handler, **self.SMTP_kwargs)


def test_lmtp_per_recipient_outcome(make_daemon, tmpbase, users):
    """The LMTP server's word is taken at RCPT (a probe): a refused account
    gets 550 and a busy one 451 in the dialogue, never a bounce later; the
    accepted one is delivered.  More in test_lmtp.py."""
    ok, bad, busy = users(), users(), users()
    store = LMTPStore(ok.pw_name, bad.pw_name, busy.pw_name)
    sock = tmpbase / "lmtp.sock"
    ctl = LMTPController(store, unix_socket=str(sock), ready_timeout=10)
    ctl.start()
    try:
        os.chmod(sock, 0o666)
        d = make_daemon(f'local-delivery lmtp\nlmtp "unix:{sock}"').start()
        with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as s:
            s.ehlo("client.example.org")
            s.mail("demo@example.test")
            assert s.rcpt(f"{bad.pw_name}@localhost")[0] == 550
            assert s.rcpt(f"{busy.pw_name}@localhost")[0] == 451
        qid = send(d, [f"{ok.pw_name}@localhost"], "lmtp",
                   sender="demo@example.test", body=b".leading dot\r\n")
        assert wait_for(lambda: store.messages and
                        log_lines(d, qid, f"to=<{ok.pw_name}@localhost>",
                                  "status=sent"), 15), \
            d.logtext()[-3000:]
        (frm, rcpts, data), = store.messages
        assert frm == "demo@example.test"
        assert rcpts == [f"{ok.pw_name}@localhost"]
        assert b"Subject: lmtp" in data and b"\r\n.leading dot\r\n" in data
        assert not log_lines(d, "status=bounced")
        # The smtp process (the unprivileged user) speaks LMTP.
        assert set(store.peers) == {pwd.getpwnam("tern").pw_uid}
    finally:
        ctl.stop()


def test_lmtp_server_down_fails_closed(make_daemon, tmpbase, users):
    pw = users()
    d = make_daemon(f'local-delivery lmtp\nlmtp "unix:{tmpbase}/none.sock"'
                    ).start()
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as s:
        s.ehlo("client.example.org")
        s.mail("demo@example.test")
        code, text = s.rcpt(f"{pw.pw_name}@localhost")
    assert code == 451 and b"4.4.1" in text, (code, text)


# ---- the parent's check ------------------------------------------------------------

def test_parent_check_is_unit_tested():
    """A request the queue forges (a path or account the config does not
    give the original recipient) cannot be made from here: the test drives
    the daemon only through SMTP.  resolve_check(), the function the parent
    runs on every request, is covered by regress/unit/test_resolve.c."""
    src = open(os.path.join(os.path.dirname(__file__), "..", "unit",
                            "test_resolve.c")).read()
    assert "resolve_check" in src
