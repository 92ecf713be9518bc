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
