"""The daemon as a service: config checking, reload on SIGHUP without
dropping sessions, orderly stop on SIGTERM, children restarted when they
die, privileges dropped."""
import os
import pwd
import re
import signal
import smtplib
import socket
import subprocess

import pytest

from conftest import TERNCTL, TERND, wait_for, free_port


def greet(port):
    with socket.create_connection(("127.0.0.1", port), 5) as s:
        s.settimeout(5)
        return s.recv(512).decode()


def children(d):
    return [p for p in d.pids() if p != d.proc.pid]


def test_check_config_ok_and_error(tmpbase):
    good = tmpbase / "good.conf"
    good.write_text("listen mx 127.0.0.1 port 2525\n")
    r = subprocess.run([str(TERND), "-n", "-f", str(good)],
                       capture_output=True, text=True)
    assert r.returncode == 0
    bad = tmpbase / "bad.conf"
    bad.write_text("listen mx 127.0.0.1 port 2525\nmax-message-size lots\n")
    r = subprocess.run([str(TERND), "-n", "-f", str(bad)],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert re.match(rf"{re.escape(str(bad))}:2: ", r.stderr), r.stderr


def test_print_effective_settings(daemon):
    r = subprocess.run([str(TERND), "-P", "-f", str(daemon.conf)],
                       capture_output=True, text=True)
    assert r.returncode == 0
    assert "max-message-size" in r.stdout
    assert f"port {daemon.port}" in r.stdout


def test_embedded_config_checks():
    r = subprocess.run([str(TERND), "-n", "-D"], capture_output=True,
                       text=True)
    assert r.returncode == 0


def test_embedded_config_serves_the_demo_delivery(tmpbase):
    # What `make run` does: ternd -D in a fresh directory, mail to the
    # demo user lands in ./run/mail/demo/Maildir/new/.
    for port in (2525, 2587, 2465):     # mx, msa (STARTTLS, implicit)
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                pytest.skip(f"port {port} is in use")
    cwd = tmpbase / "demo"
    cwd.mkdir()
    os.chmod(tmpbase, 0o755)
    log = open(tmpbase / "demo.log", "wb")
    proc = subprocess.Popen([str(TERND), "-D", "-d"], cwd=cwd, stdout=log,
                            stderr=log)
    try:
        def up():
            with socket.socket() as c:
                return c.connect_ex(("127.0.0.1", 2525)) == 0
        assert wait_for(up, 15), (tmpbase / "demo.log").read_text()
        with smtplib.SMTP("127.0.0.1", 2525, timeout=10) as s:
            s.sendmail("someone@example.org", ["demo@localhost"],
                       b"Subject: demo\r\n\r\nhello\r\n")
        new = cwd / "run" / "mail" / "demo" / "Maildir" / "new"
        assert wait_for(lambda: new.is_dir() and any(new.iterdir()), 15), \
            (tmpbase / "demo.log").read_text()
        msg = next(new.iterdir())
        assert b"Subject: demo" in msg.read_bytes()
        if os.geteuid() == 0:
            # Root starts it: the mailbox is vmail's, the spool tern's.
            assert msg.stat().st_uid == pwd.getpwnam("vmail").pw_uid
            assert (cwd / "run" / "spool").stat().st_uid == \
                pwd.getpwnam("tern").pw_uid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_children_run_unprivileged(daemon):
    if os.geteuid() != 0:
        return
    tern = pwd.getpwnam("tern").pw_uid
    # The greeting shows only that the smtp child is up: the queue child
    # drops its privileges before it serves the control socket, so wait
    # for that before looking at its uids.
    daemon.ctl("queue", check=True)
    kids = children(daemon)
    assert len(kids) >= 2
    for p in kids:
        with open(f"/proc/{p}/status") as f:
            uids = next(l for l in f if l.startswith("Uid:")).split()[1:]
        assert all(int(u) == tern for u in uids), (p, uids)
    with open(f"/proc/{daemon.proc.pid}/status") as f:
        assert next(l for l in f if l.startswith("Uid:")).split()[1] == "0"


def test_reload_keeps_sessions_and_applies_config(daemon):
    old = smtplib.SMTP("127.0.0.1", daemon.port, timeout=10)
    old.ehlo("old")
    old.mail("a@example.org")
    port2 = free_port()
    text = daemon.conf.read_text().replace('"mx.example.test"',
                                           '"mx2.example.test"')
    daemon.conf.write_text(text + f"listen mx 127.0.0.1 port {port2}\n")
    daemon.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "mx2.example.test" in greet(daemon.port), 10)
    assert "mx2.example.test" in greet(port2)
    # The session opened before the reload completes its transaction.
    old.rcpt("demo@example.test")
    code, _ = old.data(b"Subject: across reload\r\n\r\nx\r\n")
    assert code == 250
    old.quit()
    assert daemon.wait_mail("demo")


def test_bad_reload_keeps_old_config(daemon):
    good = daemon.conf.read_text()
    daemon.conf.write_text(good + "no-such-knob 1\n")
    daemon.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "reload result=refused" in daemon.logtext(), 10)
    assert "no-such-knob" in daemon.logtext()
    assert greet(daemon.port).startswith("220 mx.example.test")
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=10) as s:
        s.sendmail("a@example.org", ["demo@example.test"], b"x\r\n")
    assert daemon.wait_mail("demo")


def test_sigterm_finishes_transaction_in_flight(daemon):
    s = socket.create_connection(("127.0.0.1", daemon.port), 10)
    f = s.makefile("rb")
    f.readline()
    s.sendall(b"HELO c\r\nMAIL FROM:<a@example.org>\r\n"
              b"RCPT TO:<demo@example.test>\r\nDATA\r\n")
    for _ in range(4):
        f.readline()
    idle = socket.create_connection(("127.0.0.1", daemon.port), 10)
    idle.makefile("rb").readline()
    daemon.proc.send_signal(signal.SIGTERM)
    idle.settimeout(10)
    assert idle.recv(512).startswith(b"421 4.3.2")
    s.sendall(b"Subject: finishing\r\n\r\nx\r\n.\r\n")
    assert f.readline().startswith(b"250 ")
    assert f.readline().startswith(b"421 ")
    s.close()
    idle.close()
    daemon.proc.wait(30)
    assert daemon.proc.returncode == 0
    daemon.proc = None
    assert not (daemon.base / "ternd.pid").exists()
    daemon.start()
    assert daemon.wait_mail("demo")


def test_dead_children_are_restarted(daemon):
    for victim in list(children(daemon)):
        os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: "action=restart" in daemon.logtext(), 10)

    def works():
        try:
            with smtplib.SMTP("127.0.0.1", daemon.port, timeout=5) as s:
                s.sendmail("a@example.org", ["demo@example.test"], b"x\r\n")
            return True
        except (OSError, smtplib.SMTPException):
            return False
    assert wait_for(works, 15)
    assert daemon.wait_mail("demo")


@pytest.mark.parametrize("extra", ["", 'virtual-user "nosuch-vu"\n'])
def test_runs_as_plain_user(tmpbase, make_daemon, extra):
    # Started by a normal user, everything is that user's, virtual
    # mailboxes included, whether or not the virtual-user account exists.
    if os.geteuid() != 0:
        return
    d = make_daemon(extra)
    os.chown(tmpbase, pwd.getpwnam("tern").pw_uid, -1)
    for p in tmpbase.iterdir():
        os.chown(p, pwd.getpwnam("tern").pw_uid, -1)
    d.logf = open(d.log, "ab")
    d.proc = subprocess.Popen(["runuser", "-u", "tern", "--", str(TERND),
                               "-d", "-f", str(d.conf)],
                              stdout=d.logf, stderr=d.logf)
    assert wait_for(d.listening, 15), d.logtext()
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
        s.sendmail("a@example.org", ["demo@example.test"], b"x\r\n")
    assert d.wait_mail("demo")
    assert os.stat(d.maildir("demo")[0]).st_uid == pwd.getpwnam("tern").pw_uid


def test_refuses_to_start_when_tern_cannot_reach_the_spool(tmpbase,
                                                            make_daemon):
    # A checkout under /root (mode 0700): the unprivileged children could
    # never open the spool, so the parent says so and stops.
    if os.geteuid() != 0:
        return
    d = make_daemon()
    os.chmod(tmpbase, 0o700)
    d.start(wait=False)
    try:
        assert d.proc.wait(15) == 1
    finally:
        os.chmod(tmpbase, 0o755)
    assert re.search(r"user tern cannot enter \S+, above \S+/spool: ",
                     d.logtext()), d.logtext()


def test_virtual_maildir_below_a_private_directory(tmpbase, make_daemon):
    # The worker enters the Maildir's folder before dropping to vmail, so
    # no level above it needs to be searchable by vmail.
    private = tmpbase / "private"
    private.mkdir(mode=0o700)
    md = private / "priv" / "Maildir"
    d = make_daemon(f'virtual "priv@example.test" maildir "{md}"\n').start()
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
        s.sendmail("a@example.org", ["priv@example.test"],
                   b"Subject: private\r\n\r\nx\r\n")
    assert wait_for(lambda: (md / "new").is_dir() and
                    any((md / "new").iterdir()), 15), d.logtext()
    msg = next((md / "new").iterdir())
    assert b"Subject: private" in msg.read_bytes()
    if os.geteuid() == 0:
        assert msg.stat().st_uid == pwd.getpwnam("vmail").pw_uid
        assert private.stat().st_mode & 0o777 == 0o700


def test_background_start_failure_is_told_on_the_terminal(make_daemon):
    # Without -d, ternd detaches; if it cannot start (the port is taken)
    # the command still exits 1 and says why on stderr, not only in a
    # syslog that may not exist.
    d = make_daemon()
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", d.port))
        busy.listen(1)
        r = subprocess.run([str(TERND), "-f", str(d.conf)],
                           capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "Address already in use" in r.stderr, r.stderr
    assert f"port {d.port}" in r.stderr, r.stderr


def test_control_socket_refusal_names_the_group(daemon):
    # Someone outside control-group is told why, not that ternd is down.
    if os.geteuid() != 0:
        return
    os.chmod(daemon.conf, 0o644)
    r = subprocess.run(["runuser", "-u", "nobody", "--", str(TERNCTL), "-f",
                        str(daemon.conf), "queue"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1
    assert "permission denied" in r.stderr and "control-group" in r.stderr, \
        r.stderr
