"""Faults (issue 8): the queue role killed under load, idle connection
floods, and a daemon short of file descriptors.  Each test measures what a
client sees (every session answered promptly, nothing acknowledged lost,
no duplicate from a reply that lied) and prints its figures; each is
bounded and stops everything it started."""
import os
import re
import signal
import socket
import threading
import time

import pytest

from conftest import wait_for

# Any sanitizer report from the daemon fails the test (ASan build).
pytestmark = pytest.mark.usefixtures("sanitizer_check")

RELAY = "trusted-network 127.0.0.0/8\n"
PROMPT = 10.0       # "promptly": far below the 300 s a stuck session waits


def role_pids(d, role):
    """Pids of a role, oldest first, from the parent's spawn lines."""
    return [int(p) for p in re.findall(
        rf"event=spawn result=ok role={role} pid=(\d+)", d.logtext())]


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def cpu_seconds(pid):
    """utime + stime of a process, in seconds (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Client:
    """A raw SMTP client whose every reply must come within PROMPT
    seconds; reply() raises socket.timeout otherwise."""

    def __init__(self, port, src="127.0.0.1", timeout=PROMPT):
        self.sock = socket.socket()
        self.sock.settimeout(timeout)
        self.sock.bind((src, 0))
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""

    def reply(self):
        lines = []
        while True:
            i = self.buf.find(b"\n")
            if i < 0:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise EOFError("closed")
                self.buf += chunk
                continue
            line, self.buf = self.buf[:i + 1], self.buf[i + 1:]
            line = line.rstrip(b"\r\n").decode("utf-8", "replace")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return int(line[:3]), "\n".join(lines)

    def cmd(self, line):
        self.sock.sendall(line.encode() + b"\r\n")
        return self.reply()

    def close(self):
        self.sock.close()


# ---- the queue role killed under load ----------------------------------------

class Load:
    """Clients sending one message after another, each with a token, and
    what happened to every token.  A 4xx other than "outcome unknown" is
    retried with the same token, as a sending MTA would; an unknown
    outcome is not (the client was told not to trust the transaction)."""

    def __init__(self, port, nclients=8):
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked = {}         # token -> queue id from the 250
        self.unknown = set()    # tokens answered 421 4.3.0 outcome unknown
        self.refused = set()    # tokens answered 4xx and retried
        self.stalled = []       # (where, seconds) replies that never came
        self.dropped = []       # closed without a reply after the data
        self.worst = 0.0
        self.threads = [threading.Thread(target=self.run, args=(n,))
                        for n in range(nclients)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(3 * PROMPT)
        assert not any(t.is_alive() for t in self.threads)

    def timed(self, f, *a):
        t0 = time.monotonic()
        try:
            return f(*a)
        finally:
            dt = time.monotonic() - t0
            with self.lock:
                self.worst = max(self.worst, dt)

    def run(self, n):
        i = 0
        c = None
        while not self.stop.is_set():
            token = f"t{n}-{i}"
            i += 1
            for _ in range(20):             # retries of one token
                if self.stop.is_set():
                    break
                try:
                    if c is None:
                        c = Client(self.port)
                        code, _ = self.timed(c.reply)
                        if code != 220 or self.timed(c.cmd, "EHLO load")[0] \
                                != 250:
                            c.close()
                            c = None
                            time.sleep(0.2)
                            continue
                    outcome = self.one(c, token)
                except socket.timeout as e:
                    with self.lock:
                        self.stalled.append((token, repr(e)))
                    outcome = "reconnect"
                except (EOFError, OSError):
                    outcome = "reconnect"
                if outcome in ("reconnect", "unknown", "closed"):
                    if c is not None:
                        c.close()
                    c = None
                if outcome in ("ok", "unknown", "dropped"):
                    break
                time.sleep(0.05)
        if c is not None:
            c.close()

    def one(self, c, token):
        """One transaction; returns ok, unknown, dropped, retry, closed or
        reconnect."""
        if self.timed(c.cmd, "MAIL FROM:<s@example.org>")[0] != 250:
            return "retry"
        if self.timed(c.cmd, "RCPT TO:<held@remote.example>")[0] != 250:
            return "retry"
        code, text = self.timed(c.cmd, "DATA")
        if code != 354:
            with self.lock:
                self.refused.add(token)
            return "closed" if code == 421 else "retry"
        c.sock.sendall(b"Subject: fault %s\r\nX-Token: %s\r\n\r\nx\r\n.\r\n"
                       % (token.encode(), token.encode()))
        try:
            code, text = self.timed(c.reply)
        except EOFError:
            with self.lock:
                self.dropped.append(token)
            return "dropped"
        m = re.search(r"queued as ([0-9A-F]{16})", text)
        with self.lock:
            if code == 250 and m:
                self.acked[token] = m.group(1)
                return "ok"
            if code == 421 and "4.3.0" in text and "unknown" in text:
                self.unknown.add(token)
                return "unknown"
            self.refused.add(token)
        return "closed" if code == 421 else "retry"


def spool_tokens(d):
    """token -> queue ids of the committed messages (envelope present)."""
    qdir = d.spool / "queue"
    found = {}
    for env in qdir.glob("*.env"):
        qid = env.name[:-4]
        try:
            head = (qdir / (qid + ".msg")).read_bytes()[:4096]
        except FileNotFoundError:
            continue
        m = re.search(rb"X-Token: (\S+)", head)
        if m:
            found.setdefault(m.group(1).decode(), []).append(qid)
    return found


def kill_queue(d, smtp_pid, hold_smtp):
    """kill -9 the queue role and wait for its successor.  With hold_smtp
    the smtp process is stopped meanwhile, as a busy one would be: the new
    queue channel and the old one's end then reach it in one batch."""
    before = role_pids(d, "queue")
    if hold_smtp:
        os.kill(smtp_pid, signal.SIGSTOP)
    try:
        os.kill(before[-1], signal.SIGKILL)
        assert wait_for(lambda: len(role_pids(d, "queue")) > len(before), 15)
        if hold_smtp:
            time.sleep(0.3)     # the parent sends the channel after its log
    finally:
        if hold_smtp:
            os.kill(smtp_pid, signal.SIGCONT)


def test_queue_killed_under_load(make_daemon):
    # Kills spaced as the restart throttle allows: the first after 10 s
    # of life (restarted at once), then 1, 2, 3, 4 and 5 s delays.
    d = make_daemon(RELAY).start()
    started = time.monotonic()
    smtp_pid = role_pids(d, "smtp")[-1]
    load = Load(d.port).start()
    kills = 0
    try:
        assert wait_for(lambda: len(load.acked) >= 20, 20), load.stalled
        time.sleep(max(0.0, 10.5 - (time.monotonic() - started)))
        for k in range(6):
            n = len(load.acked)
            kill_queue(d, smtp_pid, hold_smtp=k % 2 == 1)
            kills += 1
            # The new queue takes commits again before the next kill.
            assert wait_for(lambda: len(load.acked) > n + 5, 20), \
                (kills, load.stalled)
    finally:
        load.finish()
    assert alive(smtp_pid)
    found = spool_tokens(d)
    lost = [t for t, q in load.acked.items() if q not in found.get(t, [])]
    dup = {t: q for t, q in found.items() if len(q) > 1}
    unknown_queued = [t for t in load.unknown if t in found]
    logged = len(re.findall(r"event=queued result=unknown", d.logtext()))
    print(f"\nkills={kills} acknowledged={len(load.acked)} lost={len(lost)} "
          f"duplicated={len(dup)} unknown-421={len(load.unknown)} "
          f"(queued after all: {len(unknown_queued)}) "
          f"refused-4xx={len(load.refused)} stalled={len(load.stalled)} "
          f"dropped={len(load.dropped)} worst-reply={load.worst:.2f}s")
    assert load.stalled == [], load.stalled
    assert load.dropped == [], load.dropped
    assert lost == [], lost
    # A message refused with 4xx and sent again must not be there twice:
    # a refusal means it was not queued.
    assert dup == {}, dup
    assert logged == len(load.unknown), (logged, len(load.unknown))


def test_smtp_and_vault_killed_under_load_lose_nothing(make_daemon):
    # kill -9 of the other roles, one at a time, under the same load: the
    # vault's death costs no session anything (nothing in this load needs
    # it); the smtp process's drops the connections it held, and every
    # message acknowledged before is still queued, whole.
    d = make_daemon(RELAY).start()
    started = time.monotonic()
    load = Load(d.port).start()
    kills = {"vault": 0, "smtp": 0}
    try:
        assert wait_for(lambda: len(load.acked) >= 20, 20), load.stalled
        time.sleep(max(0.0, 10.5 - (time.monotonic() - started)))
        for role in ("vault", "smtp", "vault", "smtp"):
            n = len(load.acked)
            pid = role_pids(d, role)[-1]
            os.kill(pid, signal.SIGKILL)
            kills[role] += 1
            assert wait_for(lambda: role_pids(d, role)[-1] != pid, 20)
            assert wait_for(lambda: len(load.acked) > n + 5, 20), \
                (kills, load.stalled)
    finally:
        load.finish()
    found = spool_tokens(d)
    lost = [t for t, q in load.acked.items() if q not in found.get(t, [])]
    dup = {t: q for t, q in found.items() if len(q) > 1}
    print(f"\nkills={kills} acknowledged={len(load.acked)} lost={len(lost)} "
          f"duplicated={len(dup)} dropped={len(load.dropped)} "
          f"stalled={len(load.stalled)} worst-reply={load.worst:.2f}s")
    assert lost == [], lost
    assert load.stalled == [], load.stalled
    # Only a session the killed smtp process held can lose its reply; a
    # message committed just before such a drop may be sent again.
    assert len(dup) <= len(load.dropped), (dup, load.dropped)


# ---- descriptors: the open-file limit against max-connections ---------------

def start_with_nofile(d, soft, hard):
    """Daemon.start(), with the open-file limit a shell or an init system
    might have given it."""
    import resource
    import subprocess
    from conftest import TERND

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    d.logf = open(d.log, "ab")
    d.proc = subprocess.Popen([str(TERND), "-d", "-f", str(d.conf)],
                              stdout=d.logf, stderr=d.logf,
                              preexec_fn=limit)
    assert wait_for(d.listening, 15), d.logtext()
    return d


def open_many(port, n, srcs=("127.0.0.1",)):
    """n connections (non-blocking connects), spread over source
    addresses; those the kernel refuses are left out."""
    socks = []
    for i in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.bind((srcs[i % len(srcs)], 0))
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            continue
        socks.append(s)
    return socks


def first_replies(socks, timeout):
    """The first reply code each socket gets within timeout (None if none,
    0 if closed without one)."""
    import selectors
    sel = selectors.DefaultSelector()
    got = {}
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while len(got) < len(socks) and time.monotonic() < deadline:
        for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
            s = key.fileobj
            try:
                data = s.recv(512)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            got[s] = int(data[:3]) if data[:3].isdigit() else 0
            sel.unregister(s)
    sel.close()
    return [got.get(s) for s in socks]


def connected(s):
    """Whether a non-blocking connect has completed (the kernel took it
    into the listener's backlog)."""
    try:
        s.getpeername()
        return True
    except OSError:
        return False


def close_all(socks):
    for s in socks:
        s.close()


def deliver(port, src="127.0.0.1", token="polite", timeout=PROMPT):
    """A well-behaved client: greeting, one message, QUIT; returns the
    seconds it took (raises if it was refused or no reply came)."""
    t0 = time.monotonic()
    c = Client(port, src, timeout)
    try:
        code, text = c.reply()
        assert code == 220, text
        assert c.cmd("EHLO polite.example")[0] == 250
        assert c.cmd("MAIL FROM:<p@example.org>")[0] == 250
        assert c.cmd("RCPT TO:<demo@example.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.sock.sendall(b"Subject: %s\r\n\r\nx\r\n.\r\n" % token.encode())
        code, text = c.reply()
        assert code == 250, text
        c.cmd("QUIT")
    finally:
        c.close()
    return time.monotonic() - t0


def test_low_open_file_limit_lowers_the_connection_cap(make_daemon):
    # 5000 sessions allowed, 512 descriptors at most: ternd cannot raise
    # the hard limit, so it serves fewer sessions and says so, naming the
    # knob and the numbers.  Every connection beyond gets a 421 at once;
    # none is left without a greeting.
    d = make_daemon("max-connections 5000\nmax-connections-per-ip 10000\n")
    start_with_nofile(d, 256, 512)
    m = wait_for(lambda: re.search(
        r"event=start result=warn .*max-connections=5000 effective=(\d+) "
        r"nofile=512", d.logtext()), 10)
    assert m, d.logtext()[-3000:]
    cap = int(m.group(1))
    assert 1 <= cap < 256, cap
    # Fewer than the listen backlog (512): a SYN the kernel drops when the
    # backlog is full is retried by the client 1, 3, 7, 15 s later, which
    # on a loaded machine reads as "silent" though ternd never saw it.
    # The smtp process is held while they connect, as a busy one would
    # be: all of them must still be taken into the backlog (the smtp
    # process once set it back to libevent's 128).
    smtp_pid = role_pids(d, "smtp")[-1]
    socks = []
    os.kill(smtp_pid, signal.SIGSTOP)
    try:
        socks += open_many(d.port, 450)
        try:
            wait_for(lambda: all(connected(s) for s in socks), 10)
            waiting = sum(connected(s) for s in socks)
        finally:
            os.kill(smtp_pid, signal.SIGCONT)
        codes = first_replies(socks, 20)
    finally:
        os.kill(smtp_pid, signal.SIGCONT)
        close_all(socks)
    assert waiting == len(socks), (waiting, len(socks))
    greeted = codes.count(220)
    refused = codes.count(421)
    silent = len([c for c in codes if c is None])
    print(f"\nnofile=512 cap={cap} connections={len(socks)} "
          f"greeted={greeted} refused={refused} silent={silent}")
    assert silent == 0, (greeted, refused, silent)
    assert 1 <= greeted <= cap, (greeted, cap)
    assert wait_for(lambda: deliver(d.port) < PROMPT, 15)


def lower_nofile(pid, soft):
    """Lower a running process's soft open-file limit.  prlimit(2) on
    another process needs CAP_SYS_RESOURCE, which a container may not
    grant, or the target's own uid and gid: so ask as its user."""
    import subprocess
    ids = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Uid", "Gid"):
                ids[k] = int(v.split()[0])

    def become():
        os.setgid(ids["Gid"])
        os.setuid(ids["Uid"])
    subprocess.run(["/usr/bin/python3", "-c",
                    "import resource, sys; p = int(sys.argv[1]); "
                    "h = resource.prlimit(p, resource.RLIMIT_NOFILE)[1]; "
                    "resource.prlimit(p, resource.RLIMIT_NOFILE, "
                    "(int(sys.argv[2]), h))", str(pid), str(soft)],
                   check=True, timeout=30,
                   preexec_fn=become if os.geteuid() == 0 else None)


def test_emfile_pauses_accepting_without_spinning(make_daemon):
    # Descriptors run out at run time (here: the smtp process's limit is
    # lowered under it).  accept() then fails with EMFILE while
    # connections wait: the smtp process must stop accepting for a while
    # and say so, not spin on the error, and serve again once the flood
    # is gone.
    d = make_daemon().start()
    smtp_pid = role_pids(d, "smtp")[-1]
    nfd = len(os.listdir(f"/proc/{smtp_pid}/fd"))
    lower_nofile(smtp_pid, nfd + 8)
    socks = open_many(d.port, 200)
    try:
        time.sleep(1)
        cpu0 = cpu_seconds(smtp_pid)
        time.sleep(3)
        cpu = cpu_seconds(smtp_pid) - cpu0
        logged = wait_for(lambda: re.search(
            r"smtp: event=accept result=error reason=\"Too many open "
            r"files\" action=pause", d.logtext()), 5)
    finally:
        close_all(socks)
    print(f"\nsmtp cpu over 3 s with accept() failing: {cpu:.2f}s")
    assert cpu < 0.5, cpu
    assert logged, d.logtext()[-3000:]
    # Logged once per pause, not once per failed accept().
    assert d.logtext().count("event=accept result=error") < 20
    took = wait_for(lambda: deliver(d.port), 15)
    assert took, d.logtext()[-3000:]
    print(f"polite client after the flood: {took:.2f}s")
    assert d.wait_mail("demo")


# ---- idle connection floods ---------------------------------------------------

class Flood:
    """Idle connections from several 127.0.0.x addresses, kept at n per
    address: one the server closes is opened again, as an attacker
    would.  Counts what the server did to them."""

    def __init__(self, port, srcs, per_src):
        self.port, self.srcs, self.per_src = port, srcs, per_src
        self.socks = {src: [] for src in srcs}
        self.closed_by_server = 0
        self.replies = []

    def fill(self):
        for src in self.srcs:
            have = self.socks[src]
            while len(have) < self.per_src:
                s = socket.socket()
                s.settimeout(5)
                s.bind((src, 0))
                try:
                    s.connect(("127.0.0.1", self.port))
                except OSError:
                    s.close()
                    break
                s.setblocking(False)
                have.append(s)

    def reap(self):
        """Drop the connections the server closed; returns how many."""
        n = 0
        for src, have in self.socks.items():
            keep = []
            for s in have:
                if self.alive(s):
                    keep.append(s)
                    continue
                s.close()
                n += 1
            self.socks[src] = keep
        self.closed_by_server += n
        return n

    def alive(self, s):
        """Read what the server sent (noting every reply but greetings);
        False once it has closed the connection."""
        while True:
            try:
                data = s.recv(4096)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not data:
                return False
            self.replies.extend(l for l in data.decode("utf-8", "replace")
                                .splitlines() if not l.startswith("220"))

    def count(self):
        return sum(len(v) for v in self.socks.values())

    def close(self):
        for have in self.socks.values():
            close_all(have)


def test_idle_flood_with_shipped_limits_locks_nobody_out(make_daemon):
    # The report: 256 idle connections from 13 addresses refused every
    # other client for up to the 5-minute command timeout.  With the
    # shipped limits the same flood leaves room for everyone.
    d = make_daemon().start()
    flood = Flood(d.port, [f"127.0.0.{i}" for i in range(2, 15)], 20)
    try:
        flood.fill()
        time.sleep(0.5)
        flood.reap()
        took = deliver(d.port, "127.0.0.99")
        print(f"\nidle connections={flood.count()} polite client={took:.2f}s")
        assert flood.count() == 13 * 20
    finally:
        flood.close()


def test_idle_flood_full_server_keeps_room_for_newcomers(make_daemon):
    # Every slot taken by idle connections from four addresses, which
    # reconnect whenever they are closed.  A well-behaved client from a
    # fifth address delivers a message every half second throughout: the
    # server makes room by closing the longest-idle session of the
    # address holding the most.
    d = make_daemon("max-connections 200\nmax-connections-per-ip 50\n").start()
    flood = Flood(d.port, [f"127.0.0.{i}" for i in range(2, 6)], 50)
    lat = []
    try:
        flood.fill()
        time.sleep(0.5)
        flood.reap()
        flood.fill()
        assert flood.count() == 200
        end = time.monotonic() + 8
        i = 0
        while time.monotonic() < end:
            lat.append(deliver(d.port, "127.0.0.99", f"polite {i}"))
            i += 1
            flood.reap()
            flood.fill()
            time.sleep(0.5)
        evicted = flood.closed_by_server
    finally:
        flood.close()
    print(f"\nflood=200 idle from 4 addresses, polite deliveries={len(lat)} "
          f"worst latency={max(lat):.2f}s evicted={evicted}")
    assert max(lat) < PROMPT
    assert evicted >= len(lat)
    assert any(r.startswith("421 4.7.0") for r in flood.replies), \
        flood.replies[:5]
    assert d.wait_mail("demo", len(lat))
    assert re.search(r"event=evict ", d.logtext())


def test_stress_shortens_idle_timeouts(make_daemon):
    # Above stress-threshold percent of max-connections, idle sessions get
    # stress-command-timeout instead of command-timeout (5m), old ones
    # too; below it again, the normal timeout is back.
    d = make_daemon("max-connections 40\nmax-connections-per-ip 40\n"
                    "stress-threshold 50\nstress-command-timeout 2s\n").start()
    flood = Flood(d.port, ["127.0.0.2", "127.0.0.3"], 12)
    try:
        flood.fill()            # 24 of 40: over 50%
        assert wait_for(lambda: "event=stress result=on" in d.logtext(), 5)
        t0 = time.monotonic()
        assert wait_for(lambda: flood.reap() is not None and
                        flood.count() == 0, 15), flood.count()
        took = time.monotonic() - t0
    finally:
        flood.close()
    print(f"\n24 idle sessions under stress closed in {took:.1f}s")
    assert any(r.startswith("421 4.4.2") for r in flood.replies)
    assert wait_for(lambda: "event=stress result=off" in d.logtext(), 5)
    # Not under stress: a session idle for longer than 2 s stays.
    c = Client(d.port)
    try:
        assert c.reply()[0] == 220
        time.sleep(3)
        assert c.cmd("NOOP")[0] == 250
    finally:
        c.close()


def test_per_address_cap_and_eviction_fairness(make_daemon):
    # One address may hold max-connections-per-ip sessions; when the
    # server is full a newcomer from a smaller address gets in (the busiest
    # address loses its longest-idle session), one from the busiest
    # address does not.
    d = make_daemon("max-connections 40\nmax-connections-per-ip 30\n").start()
    a = Flood(d.port, ["127.0.0.2"], 31)
    b = Flood(d.port, ["127.0.0.3"], 10)
    try:
        a.fill()
        time.sleep(0.5)
        a.reap()
        assert a.count() == 30, a.count()           # the 31st was refused
        assert any("421 4.7.0" in r and "your address" in r
                   for r in a.replies), a.replies
        b.fill()                                    # now full: 30 + 10
        time.sleep(0.5)
        assert b.reap() == 0 and a.reap() == 0
        c = Client(d.port, "127.0.0.3")             # B's 11th: gets in
        try:
            code, text = c.reply()
            assert code == 220, text
            assert wait_for(lambda: a.reap() == 1 or a.count() == 29, 5)
            assert any(r.startswith("421 4.7.0") for r in a.replies)
        finally:
            c.close()
        time.sleep(0.5)
        e = Client(d.port, "127.0.0.4")             # a third address
        f = None
        try:
            assert e.reply()[0] == 220
            f = Client(d.port, "127.0.0.2")         # the busiest: refused
            code, text = f.reply()
            assert code == 421 and text.startswith("421 4.7.0"), text
        finally:
            e.close()
            if f:
                f.close()
    finally:
        a.close()
        b.close()
