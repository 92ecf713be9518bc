"""Fixtures for integration tests: the real ternd on loopback ports.

Each test gets its own daemon (config, spool and Maildirs under a fresh
temp dir), talks to it with real SMTP clients and stops it afterwards.
"""
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = ROOT / os.environ.get("TERN_BUILD", "obj/normal")
TERND = BUILD / "ternd"
TERNCTL = BUILD / "ternctl"


_ports_given = set()


def free_port():
    """A port the kernel has free and this run has not handed out yet:
    the kernel may give a just-closed port again, and two listeners of
    one config on the same port refuse to start."""
    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port
    raise RuntimeError("no free port not handed out before")


def wait_for(pred, timeout=10.0, step=0.05):
    """Poll pred() until it is true or timeout seconds pass; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


class Daemon:
    def __init__(self, base, extra="", vusers=("demo", "alice", "bob")):
        self.base = pathlib.Path(base)
        self.port = free_port()
        self.dns_port = free_port()
        self.conf = self.base / "tern.conf"
        self.spool = self.base / "spool"
        self.maildirs = self.base / "mail"
        self.aliases = self.base / "aliases"
        self.log = self.base / "ternd.log"
        self.vusers = vusers
        self.proc = None
        lines = [
            'hostname "mx.example.test"',
            f'spool "{self.spool}"',
            f'pidfile "{self.base}/ternd.pid"',
            f'control-socket "{self.base}/control.sock"',
            f'submit-socket "{self.base}/submit.sock"',
            f'srs-secret "{self.base}/srs.key"',
            f'credentials "{self.base}/credentials.db"',
            f'virtual-maildir "{self.base}/vmail/%d/%u/Maildir"',
            f'aliases "{self.aliases}"',
            'local-domain "example.test"',
            'local-domain "localhost"',
            f"listen mx 127.0.0.1 port {self.port}",
            # Nothing answers there: remote destinations stay deferred
            # unless a test starts its own DNS server and points here.
            f"resolver 127.0.0.1 port {self.dns_port}",
            "greeting-delay 0",
        ]
        # SPF (on by default on mx listeners) needs a DNS answer per
        # MAIL; tests that check it turn it on (test_spf.py).
        if "spf " not in extra:
            lines.append("spf no")
        # DMARC (on by default on mx listeners) needs a DNS answer per
        # message; tests that check it turn it on (test_dmarc.py).
        if "dmarc " not in extra:
            lines.append("dmarc off")
        # DKIM verification likewise (test_dkim_verify.py).
        if "dkim-verify " not in extra:
            lines.append("dkim-verify no")
        # The loopback DNS server is not signed: no DNSSEC validation.
        if "dnssec-trust-anchor " not in extra:
            lines.append("dnssec-trust-anchor none")
        for u in vusers:
            lines.append(f'virtual "{u}@example.test" maildir '
                         f'"{self.maildirs}/{u}/Maildir"')
        self.conf.write_text("\n".join(lines) + "\n" + extra + "\n")
        if not self.aliases.exists():
            self.aliases.write_text("postmaster: alice\n")

    def write_aliases(self, text):
        self.aliases.write_text(text)
        self.ctl("newaliases", check=True)

    def start(self, wait=True):
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen([str(TERND), "-d", "-f", str(self.conf)],
                                     stdout=self.logf, stderr=self.logf)
        if wait:
            ok = wait_for(self.listening, 15)
            if not ok:
                self.stop()
                raise RuntimeError("ternd did not start:\n" + self.logtext())
        return self

    def listening(self):
        if self.proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), 0.5) as s:
                s.settimeout(2)
                return s.recv(512).startswith(b"220")
        except OSError:
            return False

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        self.proc = None
        if getattr(self, "logf", None):
            self.logf.close()
            self.logf = None

    def pids(self):
        """The parent and every descendant (children, workers)."""
        if not self.proc:
            return []
        out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="],
                             capture_output=True, text=True).stdout
        pairs = [tuple(map(int, l.split())) for l in out.strip().splitlines()]
        found, queue = [], [self.proc.pid]
        while queue and len(found) < 10000:     # bounded, even if ps lies
            p = queue.pop()
            found.append(p)
            queue.extend(c for c, pp in pairs if pp == p)
        return found

    def kill9(self):
        for p in self.pids():
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc:
            self.proc.wait(10)
        self.proc = None

    def logtext(self):
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def ctl(self, *args, check=False, input=None):
        r = subprocess.run([str(TERNCTL), "-f", str(self.conf), *args],
                           capture_output=True, text=True, timeout=30,
                           input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"ternctl {args} failed: {r.stderr}")
        return r

    def maildir(self, user, sub="new"):
        d = self.maildirs / user / "Maildir" / sub
        return sorted(d.iterdir()) if d.is_dir() else []

    def wait_mail(self, user, count=1, timeout=15):
        return wait_for(lambda: len(self.maildir(user)) >= count, timeout)

    def unfinished(self):
        """Files of messages that were never committed: anything in
        incoming/, and a queue/ID.msg without its ID.env (a message's file
        is written there from its first byte)."""
        q = self.queue_files("queue")
        return self.queue_files("incoming") + sorted(
            n for n in q if n.endswith(".msg") and n[:-4] + ".env" not in q)

    def queue_files(self, sub="queue"):
        d = self.spool / sub
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


@pytest.fixture
def tmpbase():
    d = tempfile.mkdtemp(prefix="tern-test-")
    os.chmod(d, 0o755)      # the unprivileged children must reach it
    yield pathlib.Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def daemon(tmpbase):
    d = Daemon(tmpbase).start()
    yield d
    d.stop()


@pytest.fixture
def make_daemon(tmpbase):
    """Factory for tests that need their own config; stops what it made."""
    made = []

    def make(extra="", **kw):
        d = Daemon(tmpbase, extra, **kw)
        made.append(d)
        return d
    yield make
    for d in made:
        d.stop()


class SMTPConn:
    """A raw SMTP client for tests that must control every byte sent.

    reply() reads one complete (possibly multi-line) reply and returns
    (code, text); text holds the lines joined by "\\n" without CRLF.
    Every read is bounded by the socket timeout.
    """

    def __init__(self, port, timeout=10, greet=True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.greeting = self.reply() if greet else None

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _line(self):
        for _ in range(100000):
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[:i + 1], self.buf[i + 1:]
                return line
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed; got %r" % self.buf)
            self.buf += chunk
        raise AssertionError("reply line never ended")

    def reply(self):
        lines = []
        for _ in range(1000):
            line = self._line().rstrip(b"\r\n").decode("utf-8", "replace")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return int(line[:3]), "\n".join(lines)
        raise AssertionError("reply too long")

    def cmd(self, line):
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def closed(self, timeout=5):
        """True if the server closes the connection (any unread data is
        returned through self.rest)."""
        self.sock.settimeout(timeout)
        self.rest = self.buf
        self.buf = b""
        try:
            for _ in range(1000):
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.rest += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "runtime error:", "SUMMARY: UndefinedBehaviorSanitizer")


@pytest.fixture
def sanitizer_check(tmpbase):
    """Opt-in (pytest.mark.usefixtures): after the test, fail it if any
    daemon it ran wrote a sanitizer report to ternd.log.  Set up before
    the daemon fixtures, so it runs after they stopped the daemon."""
    yield
    log = tmpbase / "ternd.log"
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return
    hits = [m for m in SANITIZER_MARKS if m in text]
    if hits:
        i = min(text.find(m) for m in hits)
        pytest.fail("sanitizer report in ternd.log:\n" + text[max(0, i - 2000):i + 6000],
                    pytrace=False)
