"""Local delivery: virtual users, +tag addresses, aliases (lists, chains,
duplicates, commands, files and includes, live replacement of aliases.db), system accounts' ~/Maildir, and the admin's view of what
stays in the queue (mailq, ternctl show)."""
import os
import pwd
import re
import smtplib
import subprocess
import time

import pytest

from conftest import TERNCTL, SMTPConn, wait_for

# Any sanitizer report from the daemon fails the test (ASan build).
pytestmark = pytest.mark.usefixtures("sanitizer_check")

RELAY = "trusted-network 127.0.0.0/8\n"


def send(d, rcpts, subject="t", sender="s@example.org", body=b"hello\r\n"):
    """Send one message; returns the 250 reply text of DATA."""
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as s:
        s.ehlo("client.example.org")
        s.mail(sender)
        for r in rcpts:
            code, text = s.rcpt(r)
            assert code == 250, (r, code, text)
        code, text = s.data(b"Subject: " + subject.encode() + b"\r\n\r\n"
                            + body)
        assert code == 250, text
        return text.decode()


def queued_as(text):
    m = re.search(r"queued as ([0-9A-Fa-f]+)", text)
    assert m, text
    return m.group(1)


def with_subject(d, user, subject):
    tag = b"Subject: " + subject.encode() + b"\n"
    return [p for p in d.maildir(user) if tag in p.read_bytes()]


def settle(d, timeout=10):
    """Wait until nothing is left in the queue (all delivered)."""
    assert wait_for(lambda: d.queue_files() == [], timeout), \
        (d.queue_files(), d.ctl("queue").stdout, d.logtext()[-3000:])


def rcpt_code(d, rcpt):
    with SMTPConn(d.port) as c:
        assert c.cmd("EHLO client.example.org")[0] == 250
        assert c.cmd("MAIL FROM:<s@example.org>")[0] == 250
        return c.cmd(f"RCPT TO:<{rcpt}>")


# ---- virtual users, +tag -------------------------------------------------------

def test_virtual_users_each_get_one_copy(daemon):
    send(daemon, ["demo@example.test", "alice@example.test",
                  "bob@example.test"], "vusers")
    settle(daemon)
    for u in ("demo", "alice", "bob"):
        files = daemon.maildir(u)
        assert len(files) == 1, (u, files)
        msg = files[0].read_bytes()
        assert b"Subject: vusers" in msg
        assert f"Delivered-To: {u}@example.test\n".encode() in msg
    # Maildir discipline: nothing left in tmp/; virtual mailboxes are
    # written as the virtual-user account (default "vmail"), neither root
    # nor "tern", the account the network-facing smtp process runs as.
    for u in ("demo", "alice", "bob"):
        assert daemon.maildir(u, "tmp") == []
    if os.geteuid() == 0:
        vmail = pwd.getpwnam("vmail").pw_uid
        assert vmail != pwd.getpwnam("tern").pw_uid
        for u in ("demo", "alice", "bob"):
            assert os.stat(daemon.maildir(u)[0]).st_uid == vmail, u


def test_maildir_file_names_unique(daemon):
    for i in range(5):
        send(daemon, ["demo@example.test"], f"n{i}")
    assert daemon.wait_mail("demo", 5)
    names = [p.name for p in daemon.maildir("demo")]
    assert len(set(names)) == 5
    for i in range(5):
        assert len(with_subject(daemon, "demo", f"n{i}")) == 1


@pytest.mark.parametrize("rcpt", ["alice+news@example.test",
                                  "alice+a+b@example.test",
                                  "Alice+Tag@Example.Test"])
def test_plus_tag_reaches_user(daemon, rcpt):
    send(daemon, [rcpt], "tagged")
    settle(daemon)
    files = with_subject(daemon, "alice", "tagged")
    assert len(files) == 1
    assert daemon.maildir("demo") == [] and daemon.maildir("bob") == []


def test_plus_tag_of_unknown_user_refused(daemon):
    code, text = rcpt_code(daemon, "nobody-here+tag@example.test")
    assert code == 550 and text.startswith("550 5.1.1"), text


# ---- aliases ----------------------------------------------------------------------

def test_alias_to_several_users(daemon):
    daemon.write_aliases("postmaster: alice\nteam: alice, bob, demo\n")
    send(daemon, ["team@example.test"], "team")
    settle(daemon)
    for u in ("alice", "bob", "demo"):
        assert len(with_subject(daemon, u, "team")) == 1, u
        assert len(daemon.maildir(u)) == 1, u


def test_alias_continuation_lines(daemon):
    daemon.write_aliases("postmaster: alice\nteam: alice,\n\tbob,\n  demo\n")
    send(daemon, ["team@example.test"], "cont")
    settle(daemon)
    for u in ("alice", "bob", "demo"):
        assert len(with_subject(daemon, u, "cont")) == 1, u


def test_alias_chain(daemon):
    daemon.write_aliases("postmaster: alice\nfirst: second\n"
                         "second: third\nthird: alice\n")
    send(daemon, ["first@example.test"], "chain")
    settle(daemon)
    assert len(with_subject(daemon, "alice", "chain")) == 1
    assert daemon.maildir("bob") == [] and daemon.maildir("demo") == []


def test_alias_plus_tag(daemon):
    daemon.write_aliases("postmaster: alice\nteam: bob\n")
    send(daemon, ["team+urgent@example.test"], "teamtag")
    settle(daemon)
    assert len(with_subject(daemon, "bob", "teamtag")) == 1


def test_alias_duplicate_within_expansion_one_copy(daemon):
    daemon.write_aliases("postmaster: alice\n"
                         "dup: alice, again, alice@example.test, bob\n"
                         "again: alice\n")
    send(daemon, ["dup@example.test"], "dup")
    settle(daemon)
    assert len(daemon.maildir("alice")) == 1
    assert len(daemon.maildir("bob")) == 1


def test_recipient_twice_via_two_aliases_one_copy(daemon):
    daemon.write_aliases("postmaster: alice\nlist1: alice, bob\n"
                         "list2: alice, demo\n")
    send(daemon, ["list1@example.test", "list2@example.test"], "twolists")
    settle(daemon)
    assert len(daemon.maildir("bob")) == 1
    assert len(daemon.maildir("demo")) == 1
    assert len(daemon.maildir("alice")) == 1, \
        "alice is in both lists and must get one copy"


@pytest.mark.parametrize("second", ["alice@example.test",
                                    "ALICE@example.test"])
def test_recipient_twice_in_envelope_one_copy(daemon, second):
    send(daemon, ["alice@example.test", second], "twice")
    settle(daemon)
    assert len(daemon.maildir("alice")) == 1


def test_alias_loop_does_not_deliver_forever(daemon):
    daemon.write_aliases("postmaster: alice\nloopa: loopb\nloopb: loopa\n"
                         "mixed: loopa, bob\n")
    code, text = rcpt_code(daemon, "mixed@example.test")
    if code == 250:
        send(daemon, ["mixed@example.test"], "loop")
        assert daemon.wait_mail("bob")
        time.sleep(0.5)
        assert len(daemon.maildir("bob")) == 1
    else:
        assert code // 100 in (4, 5), text


@pytest.mark.parametrize("form,kind", [
    ("|/bin/cat", "command"),
    ('"|/bin/cat -u"', "command"),
    ("{base}/drop/alias-file", "file"),
])
@pytest.mark.parametrize("alone", [False, True])
def test_alias_forms_delivered(daemon, tmpbase, form, kind, alone):
    # Commands and files of a root-owned aliases file run as nobody: the
    # file goes in a directory nobody may write (like /tmp).
    drop = tmpbase / "drop"
    drop.mkdir()
    os.chmod(drop, 0o1777)
    form = form.format(base=tmpbase)
    daemon.write_aliases(f"postmaster: alice\nmixed: "
                         f"{form if alone else 'bob, ' + form}\n")
    code, text = rcpt_code(daemon, "mixed@example.test")
    assert code == 250 and text.startswith("250 2.1.5"), text
    qid = queued_as(send(daemon, ["mixed@example.test"], "mixed"))
    settle(daemon)
    assert len(with_subject(daemon, "bob", "mixed")) == (0 if alone else 1)
    assert re.search(r"q=%s event=deliver .*status=sent reason=\"delivered "
                     r"to %s" % (qid, kind), daemon.logtext()), \
        daemon.logtext()[-2000:]
    if kind == "file":
        box = drop / "alias-file"
        assert box.stat().st_uid == pwd.getpwnam("nobody").pw_uid
        data = box.read_bytes()
        assert data.startswith(b"From s@example.org ")
        assert b"Subject: mixed" in data
    # A flush does not deliver bob a second copy.
    assert daemon.ctl("flush").returncode == 0
    time.sleep(0.5)
    assert len(daemon.maildir("bob")) == (0 if alone else 1)


def test_include_list_delivered(daemon, tmpbase):
    inc = tmpbase / "members.inc"
    inc.write_text("# league parents\ndemo, alice\n\n  bob\n")
    os.chmod(inc, 0o644)
    daemon.write_aliases(f"postmaster: alice\nleague: :include:{inc}, demo\n")
    send(daemon, ["league@example.test"], "include")
    settle(daemon)
    for u in ("demo", "alice", "bob"):
        assert len(with_subject(daemon, u, "include")) == 1, u
        assert len(daemon.maildir(u)) == 1, u


def test_include_list_edit_used_without_newaliases(daemon, tmpbase):
    inc = tmpbase / "members.inc"
    inc.write_text("alice\n")
    os.chmod(inc, 0o644)
    daemon.write_aliases(f"postmaster: alice\nlist: :include:{inc}\n")
    send(daemon, ["list@example.test"], "one")
    settle(daemon)
    inc.write_text("bob\n")
    send(daemon, ["list@example.test"], "two")
    settle(daemon)
    assert len(with_subject(daemon, "alice", "one")) == 1
    assert len(with_subject(daemon, "bob", "two")) == 1
    assert with_subject(daemon, "alice", "two") == []


def test_include_world_writable_kept_not_delivered(daemon, tmpbase):
    # Anyone could add himself (or a command) to a writable list: the
    # message waits in the queue with the reason instead.
    inc = tmpbase / "open.inc"
    inc.write_text("demo\n")
    os.chmod(inc, 0o666)
    daemon.write_aliases(f"postmaster: alice\nopen: :include:{inc}\n")
    qid = queued_as(send(daemon, ["open@example.test"], "open"))

    def reason():
        out = daemon.ctl("show", qid).stdout
        return out if "writable" in out else None
    out = wait_for(reason, 10)
    assert out, daemon.ctl("show", qid)
    assert "recipient: <open@example.test>" in out
    assert "status: delivered" not in out
    time.sleep(0.3)
    assert daemon.maildir("demo") == []
    assert f"{qid}.env" in daemon.queue_files()


def test_newaliases_while_running_is_used(daemon):
    daemon.write_aliases("postmaster: alice\nrole: alice\n")
    code, text = rcpt_code(daemon, "newrole@example.test")
    assert code == 550, text
    send(daemon, ["role@example.test"], "before")
    settle(daemon)
    assert len(with_subject(daemon, "alice", "before")) == 1

    # Replace the map: role moves to bob, newrole appears.
    time.sleep(1.1)     # a different mtime second, like an admin's edit
    daemon.write_aliases("postmaster: alice\nrole: bob\nnewrole: demo\n")
    send(daemon, ["role@example.test"], "after")
    code, text = rcpt_code(daemon, "newrole@example.test")
    assert code == 250, text
    send(daemon, ["newrole@example.test"], "new")
    settle(daemon)
    assert len(with_subject(daemon, "bob", "after")) == 1
    assert with_subject(daemon, "alice", "after") == []
    assert len(with_subject(daemon, "demo", "new")) == 1


def test_alias_removed_while_running_refused(daemon):
    daemon.write_aliases("postmaster: alice\ntemp: bob\n")
    assert rcpt_code(daemon, "temp@example.test")[0] == 250
    daemon.write_aliases("postmaster: alice\n")
    code, text = rcpt_code(daemon, "temp@example.test")
    assert code == 550 and text.startswith("550 5.1.1"), text


def test_newaliases_refuses_bad_source(daemon):
    daemon.write_aliases("postmaster: alice\ngood: bob\n")
    daemon.aliases.write_text("postmaster: alice\ngood bob no colon\n")
    r = daemon.ctl("newaliases")
    assert r.returncode != 0
    assert r.stderr.strip()
    # The old map stays in force.
    assert rcpt_code(daemon, "good@example.test")[0] == 250


# ---- system accounts -------------------------------------------------------------

@pytest.fixture
def sysuser():
    name = f"terntest{os.getpid() % 100000}"
    subprocess.run(["userdel", "-r", name], capture_output=True)
    r = subprocess.run(["useradd", "-m", "-s", "/usr/sbin/nologin", name],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"useradd failed: {r.stderr}")
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", "-r", name], capture_output=True)


def sys_maildir(pw, sub="new"):
    d = os.path.join(pw.pw_dir, "Maildir", sub)
    return sorted(os.path.join(d, n) for n in os.listdir(d)) \
        if os.path.isdir(d) else []


@pytest.mark.parametrize("domain", ["localhost", "example.test"])
def test_system_account_maildir(daemon, sysuser, domain):
    pw = sysuser
    send(daemon, [f"{pw.pw_name}@{domain}"], "sysuser")
    assert wait_for(lambda: sys_maildir(pw), 15), daemon.logtext()[-3000:]
    files = sys_maildir(pw)
    assert len(files) == 1
    data = open(files[0], "rb").read()
    assert b"Subject: sysuser" in data
    assert f"Delivered-To: {pw.pw_name}@{domain}".encode() in data
    st = os.stat(files[0])
    assert st.st_uid == pw.pw_uid, (st.st_uid, pw.pw_uid)
    for sub in ("", "new", "cur", "tmp"):
        st = os.stat(os.path.join(pw.pw_dir, "Maildir", sub))
        assert st.st_uid == pw.pw_uid, sub
    # Not readable by others.
    assert os.stat(files[0]).st_mode & 0o077 == 0
    settle(daemon)


def test_system_account_plus_tag(daemon, sysuser):
    pw = sysuser
    send(daemon, [f"{pw.pw_name}+box@localhost"], "systag")
    assert wait_for(lambda: sys_maildir(pw), 15), daemon.logtext()[-3000:]
    assert os.stat(sys_maildir(pw)[0]).st_uid == pw.pw_uid


def test_alias_to_system_account(daemon, sysuser):
    pw = sysuser
    daemon.write_aliases(f"postmaster: alice\nowner: {pw.pw_name}, bob\n")
    send(daemon, ["owner@example.test"], "tosys")
    assert wait_for(lambda: sys_maildir(pw), 15), daemon.logtext()[-3000:]
    assert os.stat(sys_maildir(pw)[0]).st_uid == pw.pw_uid
    assert daemon.wait_mail("bob")
    settle(daemon)


def test_system_account_without_home_refused(daemon):
    # Accounts that cannot receive (no home directory) are unknown users.
    code, text = rcpt_code(daemon, "nonexistent-account-xyz@localhost")
    assert code == 550 and text.startswith("550 5.1.1"), text


# ---- mailq, show -------------------------------------------------------------------

def test_mailq_lists_queued_message(make_daemon, tmpbase):
    d = make_daemon(RELAY).start()
    body = b"x" * 3000 + b"\r\n"
    qid = queued_as(send(d, ["far@remote.example"], "mailq",
                         sender="owner@example.org", body=body))
    mailq = tmpbase / "mailq"
    os.symlink(TERNCTL, mailq)

    def listing():
        r = subprocess.run([str(mailq), "-f", str(d.conf)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout if "MX lookup" in r.stdout else None
    out = wait_for(listing, 10)
    assert out, d.ctl("queue").stdout
    lines = out.splitlines()
    row = [l for l in lines if l.startswith(qid)]
    assert len(row) == 1, out
    fields = row[0].split()
    size = int(fields[1])
    assert len(body) <= size < len(body) + 2048, row
    assert "owner@example.org" in row[0]
    assert any("far@remote.example" in l for l in lines), out
    assert "1 Request" in out
    # ternctl queue prints the same listing.
    assert qid in d.ctl("queue", check=True).stdout


def test_mailq_null_sender_shown(make_daemon):
    d = make_daemon(RELAY).start()
    qid = queued_as(send(d, ["far@remote.example"], "bounce", sender=""))
    out = d.ctl("queue", check=True).stdout
    row = [l for l in out.splitlines() if l.startswith(qid)]
    assert row and "MAILER-DAEMON" in row[0], out


def test_mailq_empty(daemon):
    r = daemon.ctl("queue")
    assert r.returncode == 0
    assert "Mail queue is empty" in r.stdout


@pytest.mark.parametrize("bad", ["zzz", "0123456789ABCDEF", "../../etc",
                                 "A" * 40, ""])
def test_show_bad_id_fails(daemon, bad):
    r = daemon.ctl("show", bad)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stderr.strip()
    r = daemon.ctl("remove", bad)
    assert r.returncode == 1, (r.stdout, r.stderr)


def test_ctl_without_daemon_fails(make_daemon):
    d = make_daemon()       # never started
    r = d.ctl("queue")
    assert r.returncode == 1
    assert "ternd" in r.stderr or "control" in r.stderr
