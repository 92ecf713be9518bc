"""Long-lived local delivery workers (smtpd/lworker.c): one process per
account takes many Maildir deliveries, runs as that account and nothing
else, leaves when idle, and a worker killed with a delivery in hand loses
nothing (the delivery is retried)."""
import grp
import os
import pwd
import re
import signal
import smtplib
import subprocess

import pytest

from conftest import wait_for

pytestmark = pytest.mark.usefixtures("sanitizer_check")

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="workers drop to accounts as root")

BASE = "trusted-network 127.0.0.0/8\nretry-min 1s\nretry-max 2s\n"


def send(d, rcpts, subject):
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as s:
        s.ehlo("client.example.org")
        s.mail("s@example.org")
        for r in rcpts:
            assert s.rcpt(r)[0] == 250, r
        code, text = s.data(b"Subject: " + subject.encode() + b"\r\n\r\nhi\r\n")
        assert code == 250, text


def pid_of(path):
    """The delivering process's pid, from the Maildir name (...P<pid>N...)."""
    m = re.search(r"\.M\d+P(\d+)N\d+Q", os.path.basename(str(path)))
    assert m, path
    return int(m.group(1))


def workers(d):
    """Pids of the long-lived workers ("ternd: local") under the daemon."""
    out = []
    for p in d.pids():
        try:
            with open(f"/proc/{p}/comm") as f:
                if f.read().strip() == "ternd: local":
                    out.append(p)
        except OSError:
            pass
    return out


def ids(pid):
    """(uids, gids, groups) of a live process, from /proc."""
    uids = gids = groups = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k == "Uid":
                uids = set(map(int, v.split()))
            elif k == "Gid":
                gids = set(map(int, v.split()))
            elif k == "Groups":
                groups = set(map(int, v.split()))
    return uids, gids, groups


def with_subject(paths, subject):
    tag = b"Subject: " + subject.encode() + b"\n"
    return [p for p in paths if tag in open(p, "rb").read()]


@pytest.fixture
def two_users():
    names = [f"ternlw{os.getpid() % 10000}{c}" for c in "ab"]
    made = []
    try:
        for n in names:
            subprocess.run(["userdel", "-r", n], capture_output=True)
            r = subprocess.run(["useradd", "-m", "-s", "/usr/sbin/nologin",
                                n], capture_output=True, text=True)
            if r.returncode != 0:
                pytest.fail(f"useradd failed: {r.stderr}")
            made.append(n)
        yield [pwd.getpwnam(n) for n in names]
    finally:
        for n in made:
            subprocess.run(["userdel", "-r", n], capture_output=True)


def sys_new(pw):
    d = os.path.join(pw.pw_dir, "Maildir", "new")
    return sorted(os.path.join(d, n) for n in os.listdir(d)) \
        if os.path.isdir(d) else []


@needs_root
def test_one_worker_many_deliveries_then_idle_exit(make_daemon):
    d = make_daemon(BASE + "local-worker-idle 3s").start()
    for i in range(3):
        send(d, ["demo@example.test"], f"w{i}")
        assert d.wait_mail("demo", i + 1), d.logtext()[-2000:]
    files = d.maildir("demo")
    pids = {pid_of(p) for p in files}
    # One process delivered all three: no fork per message.
    assert len(pids) == 1, files
    (pid,) = pids
    assert pid in workers(d)
    # Idle for local-worker-idle: the parent lets it go and it exits.
    assert wait_for(lambda: pid not in workers(d), 20), workers(d)
    send(d, ["demo@example.test"], "w3")
    assert d.wait_mail("demo", 4)
    new = [p for p in d.maildir("demo") if p not in files]
    assert len(new) == 1 and pid_of(new[0]) != pid


@needs_root
def test_worker_runs_as_the_account_never_root(make_daemon):
    d = make_daemon(BASE + "local-worker-idle 60s").start()
    send(d, ["demo@example.test"], "priv")
    assert d.wait_mail("demo")
    pid = pid_of(d.maildir("demo")[0])
    assert pid in workers(d)
    vm = pwd.getpwnam("vmail")
    uids, gids, groups = ids(pid)
    assert uids == {vm.pw_uid} and vm.pw_uid != 0
    assert gids == {vm.pw_gid}
    assert groups == set(os.getgrouplist("vmail", vm.pw_gid))
    with open(f"/proc/{pid}/status") as f:
        caps = [l for l in f if l.startswith(("CapEff", "CapPrm"))]
    assert all(int(l.split()[1], 16) == 0 for l in caps), caps
    # It holds nothing of the parent's: its channel and the standard ones.
    fds = os.listdir(f"/proc/{pid}/fd")
    assert len(fds) <= 5, [os.readlink(f"/proc/{pid}/fd/{x}") for x in fds]


@needs_root
def test_worker_never_serves_another_account(make_daemon, two_users):
    a, b = two_users
    d = make_daemon(BASE + "local-worker-idle 60s").start()
    # Alternating, and both in one message, and a virtual user between.
    send(d, [f"{a.pw_name}@localhost"], "a1")
    send(d, [f"{b.pw_name}@localhost"], "b1")
    send(d, [f"{a.pw_name}@localhost", f"{b.pw_name}@localhost",
             "demo@example.test"], "ab")
    send(d, [f"{b.pw_name}@localhost"], "b2")
    assert wait_for(lambda: len(sys_new(a)) == 2 and len(sys_new(b)) == 3
                    and len(d.maildir("demo")) == 1, 20), d.logtext()[-3000:]
    pa = {pid_of(p) for p in sys_new(a)}
    pb = {pid_of(p) for p in sys_new(b)}
    pv = {pid_of(p) for p in d.maildir("demo")}
    assert not (pa & pb) and not (pa & pv) and not (pb & pv), (pa, pb, pv)
    for pids, pw in ((pa, a), (pb, b)):
        for pid in pids:
            if pid in workers(d):
                assert ids(pid)[0] == {pw.pw_uid}
    for p in sys_new(a):
        assert os.stat(p).st_uid == a.pw_uid
    for p in sys_new(b):
        assert os.stat(p).st_uid == b.pw_uid


def recv_queue(pid):
    """Bytes waiting in the worker's channel (ss -x), or 0."""
    out = subprocess.run(["ss", "-x", "-a", "-p"], capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        if f"pid={pid}," in line:
            f = line.split()
            try:
                return int(f[2])
            except (IndexError, ValueError):
                pass
    return 0


@needs_root
def test_worker_killed_mid_delivery_loses_nothing(make_daemon):
    d = make_daemon(BASE + "local-worker-idle 60s").start()
    send(d, ["demo@example.test"], "first")
    assert d.wait_mail("demo")
    pid = pid_of(d.maildir("demo")[0])
    assert pid in workers(d)
    # Stopped, it keeps the next delivery in its channel, unanswered.
    os.kill(pid, signal.SIGSTOP)
    try:
        send(d, ["demo@example.test"], "second")
        assert wait_for(lambda: recv_queue(pid) > 0, 15), \
            subprocess.run(["ss", "-x", "-a", "-p"], capture_output=True,
                           text=True).stdout[-2000:]
    finally:
        os.kill(pid, signal.SIGKILL)
    # The parent sees it die with the delivery in hand: deferred, retried
    # by a new worker, delivered once.
    assert d.wait_mail("demo", 2, timeout=20), d.logtext()[-3000:]
    log = d.logtext()
    assert "local worker killed by signal 9" in log
    assert re.search(r"status=deferred.*local worker killed", log)
    assert wait_for(lambda: d.queue_files() == [], 15)
    assert len(with_subject(d.maildir("demo"), "second")) == 1
    assert d.maildir("demo", "tmp") == []
    assert pid_of(with_subject(d.maildir("demo"), "second")[0]) != pid


def test_idle_zero_forks_per_delivery(make_daemon):
    d = make_daemon(BASE + "local-worker-idle 0").start()
    for i in range(2):
        send(d, ["demo@example.test"], f"f{i}")
        assert d.wait_mail("demo", i + 1)
    assert len({pid_of(p) for p in d.maildir("demo")}) == 2
    assert workers(d) == []


@pytest.mark.parametrize("gone", ["tmp", "new", ""])
def test_maildir_folders_removed_between_deliveries_made_again(make_daemon,
                                                               gone):
    import shutil
    d = make_daemon(BASE + "local-worker-idle 60s").start()
    send(d, ["demo@example.test"], "one")
    assert d.wait_mail("demo")
    md = d.maildirs / "demo" / "Maildir"
    shutil.rmtree(md / gone if gone else md)
    send(d, ["demo@example.test"], "two")
    assert d.wait_mail("demo", 1 if gone in ("new", "") else 2), \
        d.logtext()[-2000:]
    assert len(with_subject(d.maildir("demo"), "two")) == 1
    for sub in ("tmp", "new", "cur"):
        assert (md / sub).is_dir(), sub


class _Sink:
    """A remote MX host (aiosmtpd): records the recipients it accepts."""

    def __init__(self):
        self.rcpts = []

    async def handle_DATA(self, server, session, envelope):
        self.rcpts.extend(envelope.rcpt_tos)
        return "250 2.0.0 accepted"


def stop_account_workers(d, uid, sig):
    """Send sig to every long-lived worker of uid; their pids."""
    done = []
    for p in workers(d):
        try:
            if uid in ids(p)[0]:
                os.kill(p, sig)
                done.append(p)
        except (OSError, TypeError):
            pass
    return done


@needs_root
def test_stopped_account_worker_holds_only_its_share(make_daemon, two_users):
    """An account that stops its own workers (SIGSTOP, it runs as her)
    holds at most max-account-deliveries of the max-deliveries slots: mail
    to another account and to a remote host still goes, and hers waits,
    not as a failed attempt, until the workers run again."""
    from aiosmtpd.controller import Controller
    from conftest import free_port
    from dnsserver import DNSServer

    victim, other = two_users
    port = free_port()
    sink = _Sink()
    mx = Controller(sink, hostname="127.0.0.2", port=port, ready_timeout=10)
    mx.start()
    dns = None
    stopped = set()
    try:
        d = make_daemon(BASE + f"remote-port {port}\nlocal-worker-idle 60s\n")
        dns = DNSServer({"remote.test.": {"MX": [(10, "mx.remote.test.")]},
                         "mx.remote.test.": {"A": ["127.0.0.2"]}},
                        port=d.dns_port).start()
        d.start()
        addr = f"{victim.pw_name}@localhost"
        send(d, [addr], "warm")
        assert wait_for(lambda: len(sys_new(victim)) == 1, 20), \
            d.logtext()[-3000:]
        stopped.update(stop_account_workers(d, victim.pw_uid,
                                            signal.SIGSTOP))
        assert stopped
        # More messages to her than max-deliveries (50); every worker of
        # hers that appears meanwhile is stopped too.
        n = 55
        with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as s:
            for i in range(n):
                s.sendmail("s@example.org", [addr],
                           f"Subject: pile{i}\r\n\r\nx\r\n".encode())
                stopped.update(stop_account_workers(d, victim.pw_uid,
                                                    signal.SIGSTOP))
        # Mail to another account and to a remote host is not held up.
        send(d, [f"{other.pw_name}@localhost"], "other")
        send(d, ["someone@remote.test"], "remote")
        ok = wait_for(lambda: len(sys_new(other)) == 1
                      and sink.rcpts == ["someone@remote.test"], 20)
        stopped.update(stop_account_workers(d, victim.pw_uid,
                                            signal.SIGSTOP))
        assert ok, d.logtext()[-3000:]
        # Her mail waited without failing.
        assert "status=bounced" not in d.logtext()
        for p in stopped:
            os.kill(p, signal.SIGCONT)
        stopped.clear()
        assert wait_for(lambda: len(sys_new(victim)) == n + 1, 30), \
            d.logtext()[-3000:]
        assert wait_for(lambda: d.queue_files() == [], 15)
        for i in range(n):
            assert len(with_subject(sys_new(victim), f"pile{i}")) == 1, i
        assert len(sys_new(victim)) == n + 1
    finally:
        for p in stopped:
            try:
                os.kill(p, signal.SIGCONT)
            except OSError:
                pass
        mx.stop()
        if dns:
            dns.stop()


@needs_root
def test_stopped_worker_killed_after_local_worker_timeout(make_daemon):
    """A worker whose Maildir delivery does not end is killed after
    local-worker-timeout, not the 10 minutes other deliveries get, and
    the delivery is retried by a new worker."""
    d = make_daemon(BASE + "local-worker-idle 60s\n"
                    "local-worker-timeout 1s\n").start()
    send(d, ["demo@example.test"], "first")
    assert d.wait_mail("demo")
    pid = pid_of(d.maildir("demo")[0])
    assert pid in workers(d)
    os.kill(pid, signal.SIGSTOP)
    try:
        send(d, ["demo@example.test"], "second")
        assert d.wait_mail("demo", 2, timeout=20), d.logtext()[-3000:]
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except OSError:
            pass
    assert "local worker killed by signal 9" in d.logtext()
    assert pid not in workers(d)
    assert len(with_subject(d.maildir("demo"), "second")) == 1
    assert pid_of(with_subject(d.maildir("demo"), "second")[0]) != pid
