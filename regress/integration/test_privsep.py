"""Privilege separation, read from the running daemon in /proc: each role
(smtp, queue, vault) is its own exec'd process with its own title, runs as
the unprivileged user with no capabilities under a seccomp filter, holds no
descriptor of the parent's but the sockets it serves, and only the vault
holds the SRS key and route passwords.  Delivery workers hold no listener.
A process that writes into every descriptor a role holds cannot make the
parent reload, stop or deliver.
"""
import ctypes
import os
import pwd
import re
import signal
import smtplib
import time

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from conftest import free_port, wait_for
from test_remote import make_ca

ROLES = ("smtp", "queue", "vault")
LIBC = ctypes.CDLL(None, use_errno=True)
SYS_KCMP, KCMP_FILE, SYS_PIDFD_GETFD = 312, 0, 438
IS_X86_64 = os.uname().machine == "x86_64"


def roles(d):
    """{role: pid} of the daemon's role processes, by their titles."""
    out = {}
    for pid in d.pids()[1:]:
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        m = re.match(rb"ternd: (\w+)\x00*$", cmd)
        if m:
            out.setdefault(m.group(1).decode(), []).append(pid)
    return out


def role_pids(d):
    assert wait_for(lambda: all(len(roles(d).get(r, [])) == 1
                                for r in ROLES), 10), roles(d)
    return {r: p[0] for r, p in roles(d).items()}


def status(pid):
    out = {}
    for line in open(f"/proc/{pid}/status"):
        k, _, v = line.partition(":")
        out[k] = v.split()
    return out


def fds(pid):
    out = {}
    for n in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(n)] = os.readlink(f"/proc/{pid}/fd/{n}")
        except OSError:
            pass
    return out


def same_file(pid1, fd1, pid2, fd2):
    r = LIBC.syscall(SYS_KCMP, pid1, pid2, KCMP_FILE, fd1, fd2)
    assert r >= 0, os.strerror(ctypes.get_errno())
    return r == 0


def listening_inodes():
    """Inodes of every listening TCP and Unix socket on the machine."""
    inodes = set()
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(f).readlines()[1:]:
            col = line.split()
            if col[3] == "0A":
                inodes.add(col[9])
    for line in open("/proc/net/unix").readlines()[1:]:
        col = line.split()
        if int(col[3], 16) & 0x10000:       # __SO_ACCEPTCON
            inodes.add(col[6])
    return inodes


def socket_inode(target):
    m = re.match(r"socket:\[(\d+)\]", target)
    return m.group(1) if m else None


def memory_has(pid, needle):
    """Whether needle is anywhere in pid's readable, writable memory."""
    found = False
    with open(f"/proc/{pid}/maps") as maps, \
            open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            col = line.split()
            lo, hi = (int(x, 16) for x in col[0].split("-"))
            name = col[5] if len(col) > 5 else ""
            # Writable data only: text and read-only data hold no secret,
            # and sanitizer shadow maps are huge and sparse.
            if "r" not in col[1] or "w" not in col[1] or \
                    name.startswith("[v") or hi - lo > (256 << 20):
                continue
            try:
                mem.seek(lo)
                if needle in mem.read(hi - lo):
                    found = True
            except (OSError, ValueError, OverflowError):
                continue
    return found


def test_roles_are_exec_d_with_their_own_titles(daemon):
    pids = role_pids(daemon)
    for role, pid in pids.items():
        assert open(f"/proc/{pid}/comm").read().strip() == f"ternd: {role}"
        # exec'd: a fresh image, not a fork sharing the parent's memory
        assert os.readlink(f"/proc/{pid}/exe") == \
            os.readlink(f"/proc/{daemon.proc.pid}/exe")
    assert len(set(pids.values())) == 3


def test_roles_unprivileged_and_confined(daemon):
    tern = pwd.getpwnam("tern")
    pids = role_pids(daemon)
    # A role enters its filter at the end of its start-up (the vault after
    # warming OpenSSL up): wait for that, not for the listener.
    assert wait_for(lambda: all(status(p)["Seccomp"] == ["2"]
                                for p in pids.values()), 15), pids
    for role, pid in pids.items():
        st = status(pid)
        assert st["Uid"] == [str(tern.pw_uid)] * 4, (role, st["Uid"])
        assert st["Gid"] == [str(tern.pw_gid)] * 4, (role, st["Gid"])
        assert st["Groups"] == [str(tern.pw_gid)], (role, st["Groups"])
        assert int(st["CapEff"][0], 16) == 0, role
        assert int(st["CapPrm"][0], 16) == 0, role
        assert st["Seccomp"] == ["2"], role
        assert st["NoNewPrivs"] == ["1"], role
    assert status(daemon.proc.pid)["Uid"][0] == "0"


def unix_paths():
    """{inode: path} of bound Unix sockets."""
    out = {}
    for line in open("/proc/net/unix").readlines()[1:]:
        col = line.split()
        if len(col) > 7:
            out[col[6]] = col[7]
    return out


def listener_kind(d, inode, paths):
    path = paths.get(inode)
    if path is None:
        return "tcp"
    return os.path.basename(path)


def test_roles_share_no_descriptor_with_parent_but_their_sockets(daemon):
    parent = daemon.proc.pid
    listening = listening_inodes()
    paths = unix_paths()
    pfds = fds(parent)
    # The parent's own: event loop, signal pipe, channels, pidfile...
    private = [n for n, t in pfds.items()
               if n > 2 and socket_inode(t) not in listening]
    assert any("eventpoll" in pfds[n] for n in private), pfds
    allowed = {"smtp": {"tcp", "submit.sock"}, "queue": {"control.sock"},
               "vault": set()}
    for role, pid in role_pids(daemon).items():
        held = set()
        for n, t in fds(pid).items():
            if n <= 2:
                continue
            for m in private:
                assert not same_file(pid, n, parent, m), \
                    (role, n, t, m, pfds[m])
            inode = socket_inode(t)
            if inode in listening:
                held.add(listener_kind(daemon, inode, paths))
        assert held == allowed[role], (role, held)


def test_delivery_worker_holds_no_listener(daemon):
    daemon.write_aliases("postmaster: alice\nslow: |/bin/sleep 30\n")
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as s:
        s.sendmail("a@example.org", ["slow@example.test"],
                   b"Subject: slow\r\n\r\nx\r\n")

    def sleeper():
        for pid in daemon.pids():
            try:
                if open(f"/proc/{pid}/cmdline", "rb").read() == \
                        b"/bin/sleep\x0030\x00":
                    return pid
            except OSError:
                pass
        return None
    assert wait_for(lambda: sleeper() is not None, 15), daemon.logtext()
    sleep = sleeper()
    parent = daemon.proc.pid
    chain = [sleep]             # the command, any shell, the worker
    while int(status(chain[-1])["PPid"][0]) != parent:
        chain.append(int(status(chain[-1])["PPid"][0]))
        assert len(chain) < 5, chain
    listening = listening_inodes()
    pfds = fds(parent)
    for pid in chain:
        st = status(pid)
        assert st["Uid"][0] != "0" and int(st["CapEff"][0], 16) == 0
        for n, t in fds(pid).items():
            assert socket_inode(t) not in listening, (pid, n, t)
            if n > 2:
                for m, pt in pfds.items():
                    # only the message it delivers is the parent's too
                    if same_file(pid, n, parent, m):
                        assert "/queue/" in pt, (pid, n, t, pt)
    os.kill(sleep, signal.SIGKILL)


class AuthSink:
    def __init__(self):
        self.messages = []
        self.logins = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.original_content)
        return "250 2.0.0 accepted"


def test_secrets_only_in_the_vault(make_daemon, tmpbase):
    password = "Pw-route-7f3a9c-only-in-vault"
    secret = tmpbase / "relay.secret"
    secret.write_text(f"relayuser:{password}\n")
    os.chmod(secret, 0o600)
    port = free_port()
    sink = AuthSink()

    def check(server, session, envelope, mechanism, auth_data):
        sink.logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == password.encode())
    ctx = make_ca(tmpbase, "smart.relay.test")
    ctl = Controller(sink, hostname="127.0.0.4", port=port, ready_timeout=10,
                     tls_context=ctx, require_starttls=True,
                     auth_required=True, authenticator=check)
    ctl.start()
    try:
        d = make_daemon(f'route * via 127.0.0.4 port {port} tls required auth '
                        f'"{secret}"\ntrusted-network 127.0.0.0/8\n').start()
        key = (tmpbase / "srs.key").read_bytes()
        assert len(key) >= 16
        pids = role_pids(d)
        # The scan finds them where they are...
        assert memory_has(pids["vault"], password.encode())
        assert memory_has(pids["vault"], key)
        # ...and nowhere else.
        for role in ("smtp", "queue"):
            assert not memory_has(pids[role], password.encode()), role
            assert not memory_has(pids[role], key), role
        # A delivery through the route logs in; the smtp process forgets.
        with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
            s.sendmail("a@example.test", ["x@elsewhere.test"],
                       b"Subject: routed\r\n\r\nx\r\n")
        assert wait_for(lambda: len(sink.messages) == 1, 20), d.logtext()
        assert sink.logins == [(b"relayuser", password.encode())]
        assert wait_for(lambda: "status=sent" in d.logtext(), 10)
        assert not memory_has(pids["smtp"], password.encode())
        assert not memory_has(pids["queue"], password.encode())
    finally:
        ctl.stop()


def pidfd_getfd(pidfd, fd):
    r = LIBC.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
    return r if r >= 0 else None


# What a taken-over role might write: signal numbers for a signal pipe,
# IPC headers (reload, peer, config, deliver, seccomp) with no payload.
JUNK = [b"\x01", b"\x0f", b"\x02" * 8, b"\x00\x0a\x00\x00",
        b"\x00\x09\x00\x00", b"\x00\x07\x00\x00", b"\x00\x0f\x00\x00",
        b"\xff" * 64]


@pytest.mark.skipif(not IS_X86_64, reason="syscall numbers are x86_64's")
def test_writes_into_role_descriptors_do_not_drive_the_parent(daemon):
    parent = daemon.proc.pid
    mark = len(daemon.logtext())
    written = 0
    for role, pid in role_pids(daemon).items():
        pidfd = os.pidfd_open(pid)
        try:
            for n in sorted(fds(pid)):
                if n <= 2:
                    continue
                fd = pidfd_getfd(pidfd, n)
                if fd is None:
                    continue
                try:
                    for junk in JUNK:
                        try:
                            os.write(fd, junk)
                            written += 1
                        except OSError:
                            pass
                finally:
                    os.close(fd)
        finally:
            os.close(pidfd)
    assert written > 0
    time.sleep(3)
    log = daemon.logtext()[mark:]
    assert daemon.proc.poll() is None, log
    assert os.path.exists(f"/proc/{parent}")
    said = "\n".join(l for l in log.splitlines() if " parent: " in l)
    for what in ("event=reload", "event=stop", "event=deliver"):
        assert what not in said, log
    # Roles that were sent junk on their channels are restarted; the
    # daemon delivers mail afterwards.
    assert wait_for(lambda: daemon.listening(), 15), log
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as s:
        s.sendmail("a@example.org", ["alice@example.test"],
                   b"Subject: after\r\n\r\nstill here\r\n")
    assert wait_for(lambda: len(daemon.maildir("alice")) == 1, 20), \
        daemon.logtext()[mark:]


def force_syscall(pid, nr):
    """Make pid call system call nr, from inside (gdb calls syscall(2))."""
    import subprocess
    return subprocess.run(
        ["gdb", "-p", str(pid), "-batch", "-nx",
         "-ex", "handle SIGSYS nostop noprint pass",
         "-ex", f"call (long)syscall({nr})"],
        capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(not IS_X86_64, reason="syscall numbers are x86_64's")
@pytest.mark.parametrize("role", ROLES)
def test_call_outside_the_filter_kills_logs_and_restarts(daemon, role):
    # fork (57) is on no role's list: the role dies of SIGSYS, the parent
    # names the call and starts the role again.
    pid = role_pids(daemon)[role]
    force_syscall(pid, 57)
    assert wait_for(lambda: f"event=seccomp result=killed role={role} "
                    f"pid={pid} syscall=fork" in daemon.logtext(), 15), \
        daemon.logtext()
    assert f"role={role} pid={pid} status=159 reason=seccomp" in \
        daemon.logtext()
    assert wait_for(lambda: role_pids(daemon)[role] != pid, 15)
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as s:
        s.sendmail("a@example.org", ["alice@example.test"],
                   b"Subject: after\r\n\r\nstill here\r\n")
    assert wait_for(lambda: len(daemon.maildir("alice")) == 1, 20), \
        daemon.logtext()
