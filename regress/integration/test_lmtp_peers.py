"""The real LMTP peers Tern's users run beside it: Dovecot's LMTP server
(dovecot-lmtpd) and GNU Mailman 3's LMTP runner, each a private instance
on loopback with its own config, state and mail under the test's temp dir.
Skipped only where the binary is missing (rc/deps.sh installs both)."""
import os
import pathlib
import pwd
import shutil
import smtplib
import subprocess

import pytest

from conftest import free_port, wait_for

pytestmark = pytest.mark.usefixtures("sanitizer_check")

DOVECOT = "/usr/sbin/dovecot"
MAILMAN = shutil.which("mailman") or "/usr/bin/mailman"


def listening(port):
    import socket
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5):
            return True
    except OSError:
        return False


def stop_master(pidfile, stop_cmd):
    """Stop a daemon's master and wait until it has gone (bounded)."""
    try:
        pid = int(pathlib.Path(pidfile).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pid = None
    subprocess.run(stop_cmd, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=60)
    if pid and not wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 60):
        os.kill(pid, 9)


def log_lines(d, *needles):
    return [l for l in d.logtext().splitlines()
            if all(n in l for n in needles)]


# ---- Dovecot -------------------------------------------------------------------

@pytest.fixture
def dovecot(tmpbase):
    if not os.path.exists(DOVECOT):
        pytest.skip("dovecot-lmtpd is not installed")
    base = tmpbase / "dovecot"
    (base / "run").mkdir(parents=True)
    (base / "mail").mkdir()
    vm = pwd.getpwnam("vmail")
    os.chown(base / "mail", vm.pw_uid, vm.pw_gid)
    port = free_port()
    users = base / "users"
    # A passwd-file userdb: these users exist in Dovecot alone.
    users.write_text("dove@localhost::::::\nfinch@localhost::::::\n")
    conf = base / "dovecot.conf"
    conf.write_text(f"""
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = lmtp
listen = 127.0.0.1
ssl = no
mail_location = maildir:{base}/mail/%n/Maildir
first_valid_uid = {vm.pw_uid}
userdb {{
  driver = passwd-file
  args = {users}
  default_fields = uid={vm.pw_uid} gid={vm.pw_gid} home={base}/mail/%n
}}
passdb {{
  driver = passwd-file
  args = {users}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
  unix_listener lmtp {{
    mode = 0666
  }}
}}
service anvil {{
  chroot =
}}
""")
    # The master keeps its standard descriptors: give it none of ours.
    r = subprocess.run([DOVECOT, "-c", str(conf)], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=30)
    assert r.returncode == 0, (base / "dovecot.log").read_text(
        errors="replace") if (base / "dovecot.log").exists() else r
    try:
        assert wait_for(lambda: listening(port), 15), \
            (base / "dovecot.log").read_text(errors="replace")
        yield port, base
    finally:
        stop_master(base / "run" / "master.pid",
                    [DOVECOT, "-c", str(conf), "stop"])


def test_dovecot_lmtp_users_and_one_transaction(make_daemon, dovecot):
    """A user only Dovecot knows receives mail; one it does not know is
    refused at RCPT; the two Dovecot users get one LMTP transaction."""
    port, base = dovecot
    d = make_daemon(f'local-delivery lmtp\nlmtp "127.0.0.1:{port}"').start()
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
        s.ehlo("client.example.org")
        s.mail("someone@example.org")
        assert s.rcpt("dove@localhost")[0] == 250
        assert s.rcpt("finch@localhost")[0] == 250
        code, text = s.rcpt("ghost@localhost")
        assert code == 550, (code, text)
        code, text = s.data(b"Subject: to dovecot\r\n\r\nhello\r\n")
        assert code == 250, text
    qid = text.decode().split()[-1]
    for u in ("dove", "finch"):
        new = base / "mail" / u / "Maildir" / "new"
        assert wait_for(lambda: new.is_dir() and len(list(new.iterdir()))
                        == 1, 20), (d.logtext()[-3000:],
                                    (base / "dovecot.log").read_text())
        assert b"Subject: to dovecot" in next(new.iterdir()).read_bytes()
    assert wait_for(lambda: len(log_lines(d, qid, "status=sent")) == 2, 15)
    assert all("127.0.0.1" in l for l in log_lines(d, qid, "status=sent"))
    assert not log_lines(d, "status=bounced")
    # One connection for both: Dovecot logged one session with two saves.
    dlog = (base / "dovecot.log").read_text(errors="replace")
    assert dlog.count("saved mail to INBOX") == 2, dlog[-2000:]


# ---- Dovecot and a system account's ~/.forward ----------------------------------------
# Under local-delivery lmtp a system account's ~/.forward is read first,
# as under Maildir delivery; only the copy it keeps for the account goes
# to Dovecot.  These accounts' homes are 0700 (Debian 12's default), so
# only root can see their .forward: the parent answers the RCPT check.

@pytest.fixture
def sysusers():
    """Factory of system accounts (useradd -m, home 0700), removed after."""
    made = []

    def make():
        name = f"tl{os.getpid() % 100000}x{len(made)}"
        subprocess.run(["userdel", "-r", name], capture_output=True)
        r = subprocess.run(["useradd", "-m", "-s", "/usr/sbin/nologin", name],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.fail(f"useradd failed: {r.stderr}")
        made.append(name)
        pw = pwd.getpwnam(name)
        os.chmod(pw.pw_dir, 0o700)
        return pw
    yield make
    for name in made:
        subprocess.run(["userdel", "-r", name], capture_output=True)


def write_forward(pw, text, mode=0o644):
    p = os.path.join(pw.pw_dir, ".forward")
    with open(p, "w") as f:
        f.write(text)
    os.chown(p, pw.pw_uid, pw.pw_gid)
    os.chmod(p, mode)


def dovecot_knows(base, *pws):
    """Dovecot's passwd-file userdb is read again when it changes."""
    with open(base / "users", "a") as f:
        for pw in pws:
            f.write(f"{pw.pw_name}@localhost::::::\n")


def dovecot_box(base, name):
    new = base / "mail" / name / "Maildir" / "new"
    return sorted(new.iterdir()) if new.is_dir() else []


def lmtp_daemon(make_daemon, port, extra=""):
    return make_daemon(f'local-delivery lmtp\nlmtp "127.0.0.1:{port}"\n'
                       + extra).start()


def post(d, rcpt, subject):
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
        s.ehlo("client.example.org")
        s.mail("someone@example.org")
        code, text = s.rcpt(rcpt)
        assert code == 250, (rcpt, code, text, d.logtext()[-2000:])
        code, text = s.data(b"Subject: " + subject.encode() +
                            b"\r\n\r\nhello\r\n")
        assert code == 250, text
    return text.decode().split()[-1]


def settle(d, timeout=20):
    assert wait_for(lambda: d.queue_files() == [], timeout), \
        (d.ctl("queue").stdout, d.logtext()[-3000:])


def rcpt_code(d, rcpt):
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
        s.ehlo("client.example.org")
        s.mail("someone@example.org")
        return s.rcpt(rcpt)


def test_dovecot_forward_elsewhere_taken_without_mailbox(make_daemon,
                                                         dovecot, sysusers):
    """An account Dovecot does not know, whose ~/.forward sends its mail
    elsewhere: accepted at RCPT (the forward takes the mail) and
    forwarded; nothing reaches Dovecot."""
    port, base = dovecot
    pw, plain = sysusers(), sysusers()
    write_forward(pw, "bob@example.test\n")
    d = lmtp_daemon(make_daemon, port)
    # Without a .forward, Dovecot's word decides, as before.
    assert rcpt_code(d, f"{plain.pw_name}@localhost")[0] == 550
    qid = post(d, f"{pw.pw_name}@localhost", "away")
    assert d.wait_mail("bob", 1, 20), d.logtext()[-3000:]
    settle(d)
    assert b"Subject: away" in d.maildir("bob")[0].read_bytes()
    assert dovecot_box(base, pw.pw_name) == []
    assert log_lines(d, "event=verify", "result=ok", pw.pw_name,
                     "~/.forward takes the mail")
    assert log_lines(d, qid, "event=forward", "to=<bob@example.test>",
                     "result=ok")
    assert not log_lines(d, "status=bounced")


def test_dovecot_forward_self_and_other_both(make_daemon, dovecot, sysusers):
    """"\\user" plus an address: one copy in the account's Dovecot
    mailbox, one forwarded; a forward back to the account adds none."""
    port, base = dovecot
    pw = sysusers()
    dovecot_knows(base, pw)
    d = lmtp_daemon(make_daemon, port)
    d.write_aliases(f"postmaster: alice\nback: {pw.pw_name}\n")
    write_forward(pw, f"\\{pw.pw_name}, bob@example.test, back@localhost\n")
    qid = post(d, f"{pw.pw_name}@localhost", "both")
    assert wait_for(lambda: dovecot_box(base, pw.pw_name) and
                    d.maildir("bob"), 20), \
        (d.logtext()[-3000:], (base / "dovecot.log").read_text())
    settle(d)
    assert len(dovecot_box(base, pw.pw_name)) == 1
    assert len(d.maildir("bob")) == 1
    assert b"Subject: both" in dovecot_box(base, pw.pw_name)[0].read_bytes()
    sent = log_lines(d, qid, f"to=<{pw.pw_name}@localhost>", "status=sent")
    assert len(sent) == 1 and "127.0.0.1" in sent[0], sent
    assert not log_lines(d, "status=bounced")


def test_dovecot_forward_command_runs_as_account(make_daemon, dovecot,
                                                 sysusers, tmpbase):
    """A |command in ~/.forward runs as the account; with no "\\user" the
    Dovecot mailbox gets nothing."""
    port, base = dovecot
    pw = sysusers()
    dovecot_knows(base, pw)
    out = tmpbase / "out"
    out.mkdir()
    os.chmod(out, 0o1777)
    cmd = tmpbase / "rec.sh"
    cmd.write_text(f'#!/bin/sh\n{{ id -u; cat; }} > {out}/run.$$\n')
    os.chmod(cmd, 0o755)
    write_forward(pw, f"|{cmd}\n")
    d = lmtp_daemon(make_daemon, port)
    post(d, f"{pw.pw_name}@localhost", "piped")
    settle(d)
    runs = list(out.glob("run.*"))
    assert len(runs) == 1, d.logtext()[-3000:]
    uid, body = runs[0].read_text().split("\n", 1)
    assert int(uid) == pw.pw_uid
    assert "Subject: piped" in body
    assert dovecot_box(base, pw.pw_name) == []


def test_dovecot_missing_or_unsafe_forward_as_maildir(make_daemon, dovecot,
                                                      sysusers):
    """No ~/.forward: Dovecot's mailbox.  A group- or world-writable one is
    ignored (logged), as under Maildir delivery: Dovecot's mailbox, no
    forward; and at RCPT it is no reason to take an account Dovecot does
    not know."""
    port, base = dovecot
    none, unsafe, stranger = sysusers(), sysusers(), sysusers()
    dovecot_knows(base, none, unsafe)
    write_forward(unsafe, "bob@example.test\n", mode=0o666)
    write_forward(stranger, "bob@example.test\n", mode=0o620)
    d = lmtp_daemon(make_daemon, port)
    assert rcpt_code(d, f"{stranger.pw_name}@localhost")[0] == 550
    post(d, f"{none.pw_name}@localhost", "plain")
    qid = post(d, f"{unsafe.pw_name}@localhost", "unsafe")
    assert wait_for(lambda: dovecot_box(base, none.pw_name) and
                    dovecot_box(base, unsafe.pw_name), 20), \
        (d.logtext()[-3000:], (base / "dovecot.log").read_text())
    settle(d)
    assert d.maildir("bob") == []
    assert log_lines(d, qid, "event=forward", "result=mailbox",
                     "~/.forward ignored: group or world writable")
    assert not log_lines(d, "status=bounced")


# ---- Mailman 3 -------------------------------------------------------------------

MEMBERS = [f"m{i}@example.test" for i in range(30)]


@pytest.fixture
def mailman(tmpbase):
    if not os.path.exists(MAILMAN):
        pytest.skip("mailman3 is not installed")
    base = tmpbase / "mailman"
    (base / "var").mkdir(parents=True)
    lmtp_port, rest_port = free_port(), free_port()
    cfg = base / "mailman.cfg"
    root = ["--run-as-root"] if os.geteuid() == 0 else []

    def configure(smtp_port):
        cfg.write_text(f"""
[mailman]
site_owner: owner@example.test
layout: here
[paths.here]
var_dir: {base}/var
bin_dir: /usr/lib/mailman3/bin
pid_file: {base}/var/master.pid
[database]
class: mailman.database.sqlite.SQLiteDatabase
url: sqlite:///{base}/var/data/mailman.db
[mta]
incoming: mailman.mta.null.NullMTA
outgoing: mailman.mta.deliver.deliver
lmtp_host: 127.0.0.1
lmtp_port: {lmtp_port}
smtp_host: 127.0.0.1
smtp_port: {smtp_port}
[webservice]
hostname: 127.0.0.1
port: {rest_port}
[runner.rest]
start: no
[archiver.mhonarc]
enable: no
[archiver.mail_archive]
enable: no
[archiver.prototype]
enable: no
""")

    def mm(*args, timeout=120):
        r = subprocess.run([MAILMAN, "-C", str(cfg), *root, *args],
                           capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r

    class MM:
        pass
    m = MM()
    m.base, m.lmtp_port, m.configure, m.mm = base, lmtp_port, configure, mm
    m.started = False

    def start():
        # The master keeps our pipes open: give it none.
        subprocess.run([MAILMAN, "-C", str(cfg), *root, "start"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       stdin=subprocess.DEVNULL, timeout=120, check=True)
        m.started = True
        assert wait_for(lambda: listening(lmtp_port), 60), \
            (base / "var" / "logs" / "mailman.log").read_text(
                errors="replace")[-3000:]
    m.start = start
    yield m
    if m.started:
        stop_master(base / "var" / "master.pid",
                    [MAILMAN, "-C", str(cfg), *root, "stop"])


def test_mailman_list_over_lmtp_route(make_daemon, mailman):
    """A post to a Mailman 3 list with 30 members goes in through Tern's
    LMTP route, comes back from Mailman in one transaction from a trusted
    client (30 recipients, over the MX's max-recipients of 20 here), and
    reaches every member's Maildir exactly once."""
    d = make_daemon(f'route "lists.example.test" via lmtp 127.0.0.1 '
                    f'port {mailman.lmtp_port}\n'
                    f'trusted-network 127.0.0.0/8\nmax-recipients 20',
                    vusers=[m.split("@")[0] for m in MEMBERS]).start()
    mailman.configure(d.port)
    mailman.mm("create", "league@lists.example.test")
    members = mailman.base / "members.txt"
    members.write_text("\n".join(MEMBERS) + "\n")
    mailman.mm("addmembers", "--no-welcome-msg", str(members),
               "league@lists.example.test")
    mailman.start()
    with smtplib.SMTP("127.0.0.1", d.port, timeout=60) as s:
        s.ehlo("client.example.org")
        s.mail(MEMBERS[0])
        assert s.rcpt("nolist@lists.example.test")[0] == 550
        assert s.rcpt("league@lists.example.test")[0] == 250
        code, text = s.data(b"From: " + MEMBERS[0].encode() + b"\r\n"
                            b"To: league@lists.example.test\r\n"
                            b"Subject: game moved to noon\r\n"
                            b"Message-ID: <post1@example.test>\r\n\r\n"
                            b"See you there.\r\n")
        assert code == 250, text

    def posts(user):
        return [p for p in d.maildir(user)
                if b"game moved to noon" in p.read_bytes()]
    assert wait_for(lambda: all(posts(m.split("@")[0])
                                for m in MEMBERS), 120), \
        (d.logtext()[-4000:], (mailman.base / "var" / "logs" /
                               "mailman.log").read_text(errors="replace")
         [-3000:])
    # Once each, even after the queue has settled.
    assert wait_for(lambda: d.queue_files() == [], 30)
    assert all(len(posts(m.split("@")[0])) == 1 for m in MEMBERS)
    assert not log_lines(d, "status=bounced")
    assert not log_lines(d, "HELO\" not recognized")
