#!/usr/bin/python3
"""Tern benchmark: disk commit rate, SMTP acceptance rate, daemon memory.

Run by `make bench` as

    /usr/bin/python3 regress/bench/bench.py --build obj/normal

It prints figures; it asserts no performance threshold.  It exits non-zero
only when something broke: the daemon would not start or died, a client
could not talk to it, or a message acknowledged with 250 is missing from
the spool afterwards (the durability contract: 250 only once on disk).

What it measures, all in one temp dir on one filesystem:

1. fsync rate: the minimal durable commit for one message done by hand,
   one file at a time: create a temp file, write 4 KiB, fsync it, rename
   it into a second directory, fsync that directory.  Files per second.
2. acceptance: messages per second accepted (250 after DATA) by a real
   ternd on a loopback port, with 1, 10 and 50 concurrent clients, each
   keeping one connection open and sending 4 KiB messages back to back,
   one command at a time (MAIL, RCPT, DATA, body; each reply awaited).
   By default ("held" mode) the recipient is an alias to a remote
   address, so the queue keeps the message (no remote delivery yet) and
   the figure is acceptance alone; "maildir" mode delivers to a virtual
   user's Maildir as well.  Afterwards every queue id a client got in a
   250 reply is looked up in the spool (queue/ID.env and queue/ID.msg, or
   the Maildir once delivered) and cross-checked with `ternctl queue`.
3. the ratio of each acceptance rate to the fsync rate.  A daemon doing
   one sync per message can at best reach about 1; group commit (one
   syncfs and one directory fsync per batch, see queue/queue.c) is what
   lets many clients go above it.
4. daemon memory (parent and all its descendants): sum of VmRSS and sum
   of Pss (smaps_rollup, shared pages counted once), idle and with N open
   idle connections that got the greeting and said EHLO.

Every loop is bounded in time and count; the daemon and the temp dir are
removed on the way out, also on error or Ctrl-C.
"""
import argparse
import json
import os
import pathlib
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]

HOSTNAME = "mx.example.test"
LOCAL_DOMAIN = "example.test"
SINK_ALIAS = "benchsink"                        # alias -> remote address
REMOTE_DOMAIN = "relay.bench.invalid"           # RFC 2606: never resolves
REMOTE_ADDR = "sink@" + REMOTE_DOMAIN           # never delivered
VUSER = "bench"                                 # virtual user, Maildir

AIM_RATIO = {1: 0.8, 50: 4.0}
AIM_IDLE_MIB = 16.0

MAX_FSYNC_FILES = 200000
MAX_MSGS_PER_CLIENT = 1000000
IO_TIMEOUT = 30.0


class BenchError(Exception):
    pass


# ---- small helpers ---------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def fs_of(path):
    """(mount point, fs type, device) holding path, from /proc/mounts."""
    path = os.path.realpath(path)
    best = ("/", "?", "?")
    try:
        with open("/proc/mounts") as f:
            for line in f:
                dev, mnt, typ = line.split()[:3]
                mnt = mnt.replace("\\040", " ")
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) \
                        and len(mnt) >= len(best[0]):
                    best = (mnt, typ, dev)
    except OSError:
        pass
    return best


def host_cpu():
    """(busy, iowait, total) jiffies over all CPUs, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle, iowait = v[3], v[4] if len(v) > 4 else 0
    total = sum(v[:8])
    return total - idle - iowait, iowait, total


def percentile(sorted_vals, p):
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 *
                                                   (len(sorted_vals) - 1)))))
    return sorted_vals[k]


# ---- 1. fsync rate ---------------------------------------------------------

_libc = None


def syncfs(fd):
    global _libc
    if _libc is None:
        import ctypes
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.syncfs(fd) != 0:
        import ctypes
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def fsync_rate(base, seconds, size, tag="fsync", use_syncfs=False):
    """Create, write, fsync, rename, fsync the directory; files per second.

    With use_syncfs the file fsync is replaced by one syncfs() after the
    rename: the daemon's group commit (queue/queue.c) for a batch of one.
    """
    tmpd = base / (tag + "-tmp")
    newd = base / (tag + "-new")
    tmpd.mkdir()
    newd.mkdir()
    data = b"x" * size
    dfd = os.open(newd, os.O_RDONLY | os.O_DIRECTORY)
    n = 0
    clock = time.perf_counter
    sync = "syncfs" if use_syncfs else "fsync"
    step = {"create": 0.0, "write": 0.0, sync: 0.0, "rename": 0.0,
            "dir_fsync": 0.0}
    try:
        t0 = clock()
        deadline = t0 + seconds
        while n < MAX_FSYNC_FILES:
            name = "%08d" % n
            src = tmpd / name
            t = clock()
            fd = os.open(src, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                step["create"] += clock() - t
                t = clock()
                off = 0
                while off < len(data):
                    off += os.write(fd, data[off:])
                step["write"] += clock() - t
                if not use_syncfs:
                    t = clock()
                    os.fsync(fd)
                    step[sync] += clock() - t
            finally:
                os.close(fd)
            t = clock()
            os.rename(src, newd / name)
            step["rename"] += clock() - t
            if use_syncfs:
                t = clock()
                syncfs(dfd)
                step[sync] += clock() - t
            t = clock()
            os.fsync(dfd)
            now = clock()
            step["dir_fsync"] += now - t
            n += 1
            if now >= deadline:
                break
        elapsed = clock() - t0
    finally:
        os.close(dfd)
    # The files stay until the end of the run: deleting thousands of inodes
    # here would slow the daemon's file creations that follow (ext4 without
    # a journal skips inodes freed in the last ~30 s, one by one).
    return {"files": n, "seconds": round(elapsed, 3),
            "us_per_step": {k: round(v / max(1, n) * 1e6, 1)
                            for k, v in step.items()},
            "files_per_s": round(n / elapsed, 1) if elapsed > 0 else 0.0}


# ---- the daemon ------------------------------------------------------------

class Daemon:
    """A ternd on a loopback port with its own config and spool."""

    def __init__(self, build, base, max_conn):
        self.build = build
        self.base = pathlib.Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)      # the unprivileged children get in
        self.port = free_port()
        self.conf = self.base / "tern.conf"
        self.spool = self.base / "spool"
        self.mail = self.base / "mail"
        self.aliases = self.base / "aliases"
        self.log = self.base / "ternd.log"
        self.proc = None
        self.logf = None
        lines = [
            f'hostname "{HOSTNAME}"',
            f'spool "{self.spool}"',
            f'pidfile "{self.base}/ternd.pid"',
            f'control-socket "{self.base}/control.sock"',
            f'aliases "{self.aliases}"',
            f'local-domain "{LOCAL_DOMAIN}"',
            f"listen mx 127.0.0.1 port {self.port}",
            "greeting-delay 0",
            "trusted-network 127.0.0.0/8",
            f"max-connections {max_conn}",
            f"max-connections-per-ip {max_conn}",
            f'virtual "{VUSER}@{LOCAL_DOMAIN}" maildir '
            f'"{self.mail}/{VUSER}/Maildir"',
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        lines += self.relocations()
        # Once the daemon delivers remote mail, keep the held mode off the
        # network: DNS and the route go to a loopback port nobody listens
        # on, so every attempt fails at once and the message stays queued.
        # Only with a build that knows these statements (checked by -n).
        dead = free_port()
        offline = [f"resolver 127.0.0.1 port {dead}",
                   f"route {REMOTE_DOMAIN} via 127.0.0.1:{dead}"]
        self.conf.write_text("\n".join(lines + offline) + "\n")
        if self.check():
            lines += offline
        self.conf.write_text("\n".join(lines) + "\n")
        self.aliases.write_text(f"postmaster: {VUSER}\n"
                                f"{SINK_ALIAS}: {REMOTE_ADDR}\n")

    def check(self):
        try:
            return subprocess.run([str(self.build / "ternd"), "-n", "-f",
                                   str(self.conf)], capture_output=True,
                                  timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    # Files the daemon owns (sockets, keys, state) whose defaults are
    # system paths: moved into the temp dir, whatever knobs this build has.
    SYSTEM_DIRS = ("/run/tern/", "/var/run/tern/", "/etc/tern/",
                   "/var/spool/tern", "/var/lib/tern/")

    def relocations(self):
        """Statements moving every knob that `ternd -P` shows under a
        system directory of Tern's into the temp dir."""
        try:
            r = subprocess.run([str(self.build / "ternd"), "-P", "-f",
                                str(self.conf)], capture_output=True,
                               text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return []
        out = []
        for line in r.stdout.splitlines()[:1000]:
            parts = line.split(None, 1)
            if len(parts) != 2 or not parts[1].startswith('"/'):
                continue
            knob, val = parts[0], parts[1].strip().strip('"')
            if val.startswith(self.SYSTEM_DIRS):
                out.append(f'{knob} "{self.base}/{knob}.'
                           f'{os.path.basename(val.rstrip("/")) or "x"}"')
        return out

    def ctl(self, *args, timeout=60):
        return subprocess.run([str(self.build / "ternctl"), "-f",
                               str(self.conf), *args],
                              capture_output=True, text=True, timeout=timeout)

    def start(self):
        r = self.ctl("newaliases")
        if r.returncode != 0:
            raise BenchError("ternctl newaliases failed: " + r.stderr.strip())
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [str(self.build / "ternd"), "-d", "-f", str(self.conf)],
            stdin=subprocess.DEVNULL, stdout=self.logf, stderr=self.logf)
        if not wait_for(lambda: self.listening() or not self.alive(), 15) \
                or not self.alive():
            tail = self.logtail()
            self.stop()
            raise BenchError("ternd did not start:\n" + tail)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def listening(self):
        if not self.alive():
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), 0.5) as s:
                s.settimeout(2)
                ok = s.recv(512).startswith(b"220")
                s.sendall(b"QUIT\r\n")
                return ok
        except OSError:
            return False

    @staticmethod
    def starttime(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                st = f.read()
            return int(st[st.rindex(")") + 2:].split()[19])
        except (OSError, ValueError, IndexError):
            return None

    def pids(self):
        """The parent and every descendant, from /proc."""
        if not self.alive():
            return []
        children = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    st = f.read()
            except OSError:
                continue
            ppid = int(st[st.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(d))
        found, todo = [], [self.proc.pid]
        while todo and len(found) < 10000:
            p = todo.pop()
            found.append(p)
            todo.extend(children.get(p, []))
        return found

    def role(self, pid):
        """parent, queue (holds the spool's queue/ open) or smtp."""
        if self.proc and pid == self.proc.pid:
            return "parent"
        qdir = str(self.spool / "queue")
        try:
            for fd in os.listdir(f"/proc/{pid}/fd")[:4096]:
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == qdir:
                        return "queue"
                except OSError:
                    pass
        except OSError:
            return "?"
        return "smtp"

    def memory(self):
        """Per process and total VmRSS and Pss, in KiB."""
        procs = []
        for p in self.pids():
            info = {"pid": p, "role": self.role(p), "rss_kib": 0,
                    "pss_kib": None}
            try:
                with open(f"/proc/{p}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            info["rss_kib"] = int(line.split()[1])
            except OSError:
                continue
            try:
                with open(f"/proc/{p}/smaps_rollup") as f:
                    for line in f:
                        if line.startswith("Pss:"):
                            info["pss_kib"] = int(line.split()[1])
            except OSError:
                pass
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").strip()
                info["cmdline"] = cmd.decode(errors="replace")[:80]
            except OSError:
                pass
            procs.append(info)
        rss = sum(i["rss_kib"] for i in procs)
        pss = None
        if procs and all(i["pss_kib"] is not None for i in procs):
            pss = sum(i["pss_kib"] for i in procs)
        return {"procs": len(procs), "rss_kib": rss, "pss_kib": pss,
                "detail": procs}

    def cpu_seconds(self):
        """utime+stime per role of the daemon's processes, in seconds."""
        tck = os.sysconf("SC_CLK_TCK")
        out = {}
        for p in self.pids():
            try:
                with open(f"/proc/{p}/stat") as f:
                    st = f.read()
            except OSError:
                continue
            fields = st[st.rindex(")") + 2:].split()
            r = self.role(p)
            out[r] = out.get(r, 0.0) + (int(fields[11]) + int(fields[12])) \
                / tck
        return out

    def stop(self, timeout=20):
        if self.alive():
            # (pid, start time): a pid is killed only if still the same
            # process, never one that reused the number.
            mine = [(p, self.starttime(p)) for p in self.pids()]
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(
                    self.starttime(p) == t for p, t in mine[1:]):
                time.sleep(0.1)
            for p, t in mine:
                if t is not None and self.starttime(p) == t:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.proc = None
        if self.logf:
            self.logf.close()
            self.logf = None

    def logtail(self, n=30):
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def queue_ids(self):
        """Committed ids: queue/ID.env present (the commit point)."""
        d = self.spool / "queue"
        if not d.is_dir():
            return set(), set()
        names = os.listdir(d)
        env = {n[:-4] for n in names if n.endswith(".env")}
        msg = {n[:-4] for n in names if n.endswith(".msg")}
        return env, msg

    def ctl_queue_ids(self):
        r = self.ctl("queue")
        if r.returncode != 0:
            return None
        ids = set()
        for line in r.stdout.splitlines():
            if line and not line[0].isspace() and not line.startswith("-"):
                tok = line.split()[0]
                if all(c in "0123456789ABCDEFabcdef" for c in tok) and \
                        len(tok) >= 8:
                    ids.add(tok)
        return ids

    def maildir_ids(self):
        """Queue ids found in delivered messages' Received: header."""
        ids = set()
        d = self.mail / VUSER / "Maildir" / "new"
        if not d.is_dir():
            return ids, 0
        files = os.listdir(d)
        for name in files:
            try:
                with open(d / name, "rb") as f:
                    head = f.read(1024)
            except OSError:
                continue
            i = head.find(b" id ")
            if i >= 0:
                ids.add(head[i + 4:].split(None, 1)[0].rstrip(b";")
                        .decode(errors="replace"))
        return ids, len(files)


# ---- optional syscall counts (--strace) ------------------------------------

STRACE_CALLS = "syncfs,fsync,fdatasync,sync_file_range,openat,open,creat," \
    "renameat,renameat2,rename,linkat,link,unlinkat,unlink"


class Strace:
    """strace -c -f attached to every daemon process, for one level."""

    def __init__(self, daemon, path):
        self.path = path
        self.proc = None
        exe = shutil.which("strace")
        if not exe:
            raise BenchError("--strace: strace is not installed")
        args = [exe, "-f", "-qq", "-c", "-o", str(path), "-e",
                "trace=" + STRACE_CALLS]
        for p in daemon.pids():
            args += ["-p", str(p)]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        time.sleep(0.5)             # let it attach

    def stop(self):
        """Detach; {syscall: calls} from the summary."""
        if self.proc is None:
            return {}
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        calls = {}
        try:
            text = pathlib.Path(self.path).read_text()
        except OSError:
            return calls
        for line in text.splitlines():
            f = line.split()
            if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
                try:
                    calls[f[-1]] = int(f[3])
                except ValueError:
                    pass
        return calls


# ---- SMTP client -----------------------------------------------------------

class Conn:
    """One SMTP connection, one command at a time, replies awaited."""

    def __init__(self, port, timeout=IO_TIMEOUT, src=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout,
                                             source_address=src)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def reply(self):
        """(code, last line) of the next reply, multi-line aware."""
        lines = 0
        while lines < 1000:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise BenchError("connection closed by server")
                self.buf += chunk
                if len(self.buf) > 1 << 20:
                    raise BenchError("reply too long")
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines += 1
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), line
        raise BenchError("reply with too many lines")

    def cmd(self, data):
        self.sock.sendall(data)
        return self.reply()

    def hello(self):
        code, line = self.reply()
        if code != 220:
            raise BenchError("greeting: %r" % line)
        code, line = self.cmd(b"EHLO client.bench.test\r\n")
        if code != 250:
            raise BenchError("EHLO: %r" % line)

    def close(self):
        try:
            self.sock.sendall(b"QUIT\r\n")
            self.sock.settimeout(2)
            self.reply()
        except (OSError, BenchError, ValueError):
            pass
        self.sock.close()


def make_body(size):
    """A message of exactly size bytes (CRLF lines, dot-terminated apart)."""
    head = ("From: <bench@client.bench.test>\r\n"
            f"To: <{SINK_ALIAS}@{LOCAL_DOMAIN}>\r\n"
            "Subject: tern benchmark\r\n"
            "Message-ID: <bench@client.bench.test>\r\n\r\n").encode()
    line = b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\r\n"
    body = head
    while len(body) + len(line) <= size:
        body += line
    pad = size - len(body)
    if pad >= 2:
        body += b"z" * (pad - 2) + b"\r\n"
    elif pad:
        body = body[:-2] + b"z\r\n"         # one byte longer last line
    return body + b".\r\n"


def client_worker(port, rcpt, body, start_at, deadline, hard_end, ready,
                  out, stop):
    """Connect, EHLO, wait for the common start, then send until deadline."""
    res = {"acked": [], "acked_in_time": 0, "refused": 0, "errors": [],
           "refusals": [], "lat": []}
    out.append(res)
    conn = None
    try:
        conn = Conn(port)
        conn.hello()
    except (OSError, BenchError) as e:
        res["errors"].append("connect: %s" % e)
        ready.release()
        return
    ready.release()
    mail = b"MAIL FROM:<bench@client.bench.test> SIZE=%d\r\n" % len(body)
    rcpt_cmd = b"RCPT TO:<%s>\r\n" % rcpt.encode()
    try:
        while time.monotonic() < start_at and not stop.is_set():
            time.sleep(min(0.01, max(0.0, start_at - time.monotonic())))
        n = 0
        while n < MAX_MSGS_PER_CLIENT and not stop.is_set():
            t0 = time.monotonic()
            if t0 >= deadline or t0 >= hard_end:
                break
            n += 1
            refused = None
            for c, want in ((mail, 250), (rcpt_cmd, 250), (b"DATA\r\n", 354)):
                code, line = conn.cmd(c)
                if code != want:
                    refused = line
                    break
            if refused is not None:
                res["refused"] += 1
                if len(res["refusals"]) < 5:
                    res["refusals"].append(refused.decode(errors="replace"))
                conn.cmd(b"RSET\r\n")
                continue
            code, line = conn.cmd(body)
            t1 = time.monotonic()
            if code == 250:
                parts = line.split()
                qid = parts[-1].decode() if b"queued" in line else None
                res["acked"].append(qid)
                res["lat"].append(t1 - t0)
                if t1 <= deadline:
                    res["acked_in_time"] += 1
            else:
                res["refused"] += 1
                if len(res["refusals"]) < 5:
                    res["refusals"].append(line.decode(errors="replace"))
    except (OSError, BenchError, ValueError) as e:
        res["errors"].append("session: %s" % e)
    finally:
        conn.close()


def run_level(daemon, nclients, seconds, rcpt, body, strace_path=None):
    """nclients threads sending for seconds; merged results."""
    out, threads = [], []
    ready = threading.Semaphore(0)
    stop = threading.Event()
    gate = threading.Event()
    setup_s = 10.0 + 0.05 * nclients
    params = {}

    def runner():
        if gate.wait(setup_s + 5):
            client_worker(daemon.port, rcpt, body, params["start"],
                          params["deadline"], params["hard_end"], ready,
                          out, stop)

    tracer = Strace(daemon, strace_path) if strace_path else None
    # Every client connects and says EHLO first; all start sending at one
    # instant fixed ahead, long enough for the connections on loopback.
    for _ in range(nclients):
        t = threading.Thread(target=runner, daemon=True)
        t.start()
        threads.append(t)
    start = time.monotonic() + 0.3 + 0.01 * nclients
    hard_end = start + seconds + 60.0
    params.update(start=start, deadline=start + seconds, hard_end=hard_end)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    dcpu0 = daemon.cpu_seconds()
    host0 = host_cpu()
    gate.set()
    got = 0
    while got < nclients and time.monotonic() < start + setup_s:
        if ready.acquire(timeout=0.5):
            got += 1
    late = time.monotonic() > start
    try:
        for t in threads:
            t.join(max(0.0, hard_end - time.monotonic()))
    except KeyboardInterrupt:
        stop.set()
        raise
    finally:
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        dcpu1 = daemon.cpu_seconds()
        host1 = host_cpu()
        calls = tracer.stop() if tracer else None
    stop.set()
    wall = max(1e-9, time.monotonic() - start)
    alive = sum(1 for t in threads if t.is_alive())
    acked = [q for r in out for q in r["acked"]]
    lat = sorted(x for r in out for x in r["lat"])
    errors = [e for r in out for e in r["errors"]]
    refusals = [e for r in out for e in r["refusals"]]
    in_time = sum(r["acked_in_time"] for r in out)
    ccpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    host = None
    if host0 and host1 and host1[2] > host0[2]:
        ncpu = os.cpu_count() or 1
        tot = host1[2] - host0[2]
        host = {"busy_pct_of_a_core": round(
                    100.0 * ncpu * (host1[0] - host0[0]) / tot, 1),
                "iowait_pct_of_a_core": round(
                    100.0 * ncpu * (host1[1] - host0[1]) / tot, 1),
                "cpus": ncpu}
    return {
        "clients": nclients,
        "seconds": seconds,
        "acked": len(acked),
        "acked_in_time": in_time,
        "msgs_per_s": round(in_time / seconds, 1),
        "refused": sum(r["refused"] for r in out),
        "refusal_samples": refusals[:10],
        "errors": errors[:10],
        "n_errors": len(errors),
        "stuck_clients": alive,
        "late_start": late,
        "lat_ms_p50": round(percentile(lat, 50) * 1000, 2) if lat else None,
        "lat_ms_p99": round(percentile(lat, 99) * 1000, 2) if lat else None,
        "client_cpu_pct": round(100.0 * ccpu / wall, 1),
        "daemon_cpu_pct": round(100.0 * (sum(dcpu1.values()) -
                                         sum(dcpu0.values())) / wall, 1),
        "daemon_cpu_pct_by_role": {
            r: round(100.0 * (dcpu1.get(r, 0) - dcpu0.get(r, 0)) / wall, 1)
            for r in sorted(dcpu1)},
        "host_cpu": host,
        "_ids": acked,
        "syscalls": calls,
    }


def verify(daemon, mode, ids, drain_s):
    """Every 250-acknowledged id is in the spool (or its Maildir)."""
    want = set(i for i in ids if i)
    noid = sum(1 for i in ids if not i)
    dup = len(ids) - noid - len(want)
    res = {"acked": len(ids), "acked_without_id": noid, "duplicate_ids": dup}
    if mode == "held":
        env, msg = daemon.queue_ids()
        ctl = daemon.ctl_queue_ids()
        missing = want - env
        res.update({
            "queue_env_files": len(env),
            "queue_msg_files": len(msg),
            "ternctl_queue": len(ctl) if ctl is not None else None,
            "missing": len(missing),
            "missing_msg": len(want - msg),
            "missing_ternctl": len(want - ctl) if ctl is not None else None,
            "missing_sample": sorted(missing)[:5],
        })
        lost = len(missing) + len(want - msg) + \
            (len(want - ctl) if ctl is not None else 0)
    else:
        # Deliveries continue after the clients stop: wait, bounded.
        def delivered():
            got, _ = daemon.maildir_ids()
            return not (want - got)
        t0 = time.monotonic()
        wait_for(delivered, drain_s, 0.2)
        res["drain_s"] = round(time.monotonic() - t0, 2)
        env, msg = daemon.queue_ids()
        got, nfiles = daemon.maildir_ids()
        missing = want - got - env
        res.update({
            "delivered": len(want & got),
            "still_queued": len(want & env),
            "maildir_files": nfiles,
            "missing": len(missing),
            "missing_sample": sorted(missing)[:5],
        })
        lost = len(missing)
    res["lost"] = lost + noid
    return res


# ---- 4. memory -------------------------------------------------------------

def idle_connections(daemon, n, timeout_s):
    """Open n connections that got 220 and said EHLO; return them."""
    conns = []
    deadline = time.monotonic() + timeout_s
    for i in range(n):
        if time.monotonic() > deadline:
            raise BenchError("opened only %d of %d idle connections in %.0f s"
                             % (i, n, timeout_s))
        c = Conn(daemon.port, timeout=10)
        try:
            c.hello()
        except (OSError, BenchError):
            c.sock.close()
            raise
        conns.append(c)
    return conns


def measure_memory(daemon, nidle, settle_s=0.5):
    out = {}
    time.sleep(settle_s)
    out["idle"] = daemon.memory()
    conns = []
    try:
        conns = idle_connections(daemon, nidle, 60)
        time.sleep(settle_s)
        out["idle_conns"] = daemon.memory()
        out["idle_conns"]["connections"] = len(conns)
    finally:
        for c in conns:
            try:
                c.sock.close()
            except OSError:
                pass
    return out


# ---- output ----------------------------------------------------------------

def mib(kib):
    return None if kib is None else kib / 1024.0


def fmt(v, spec, width):
    if v is None:
        return "-".rjust(width)
    return format(v, spec).rjust(width)


def print_table(R):
    env = R["env"]
    print()
    print("Tern benchmark  %s  build %s" % (env["date"], env["build"]))
    print("host: %s, %d CPUs, kernel %s; spool on %s (%s, %s)" % (
        env["host"], env["cpus"], env["kernel"], env["tmpdir"],
        env["fs_type"], env["fs_device"]))
    print()
    f = R["fsync"]
    print("1. disk: create + write %d B + fsync + rename + dir fsync, "
          "one at a time" % R["params"]["size"])
    print("   %10.1f files/s   (%d files in %.2f s)" % (
        f["files_per_s"], f["files"], f["seconds"]))
    print("   per file, us: " + ", ".join(
        "%s %.0f" % (k, v) for k, v in f["us_per_step"].items()))
    f = R.get("syncfs")
    if f:
        print("   for comparison, the daemon's commit of a batch of one "
              "(syncfs after the rename instead")
        print("   of the file fsync): %.1f files/s; per file, us: %s" % (
            f["files_per_s"], ", ".join("%s %.0f" % (k, v) for k, v in
                                        f["us_per_step"].items())))
    print()
    for mode, levels in R["accept"].items():
        if mode == "held":
            what = ("recipient %s@%s, an alias of %s:\n   accepted and kept "
                    "in the queue (no remote delivery yet), not delivered" % (
                        SINK_ALIAS, LOCAL_DOMAIN, REMOTE_ADDR))
        else:
            what = ("recipient %s@%s, a virtual user:\n   accepted and "
                    "delivered to its Maildir" % (VUSER, LOCAL_DOMAIN))
        print("2./3. acceptance, mode %s: %s" % (mode, what))
        print("   %d-byte messages, %.1f s per level, one connection per "
              "client, commands one at a time" % (
                  R["params"]["size"], R["params"]["seconds"]))
        hdr = ("clients", "msg/s", "ratio", "aim", "fsync/s", "ratio",
               "p50 ms", "p99 ms", "acked", "refused", "lost", "client",
               "ternd", "queue")
        w = (7, 9, 6, 6, 8, 6, 8, 8, 7, 7, 5, 6, 6, 6)
        print("   " + " " * (sum(w[:4]) + 4) +
              "-- adjacent --".center(w[4] + w[5] + 1) +
              " " * (sum(w[6:11]) + 5) +
              "CPU % of a core".center(sum(w[11:]) + 2))
        print("   " + " ".join(h.rjust(x) for h, x in zip(hdr, w)))
        for L in levels:
            v = L["verify"]
            aim = AIM_RATIO.get(L["clients"])
            row = [
                str(L["clients"]).rjust(w[0]),
                fmt(L["msgs_per_s"], ".1f", w[1]),
                fmt(L.get("ratio"), ".2f", w[2]),
                (">=%g" % aim if aim else "").rjust(w[3]),
                fmt((L.get("fsync_adjacent") or {}).get("files_per_s"),
                    ".0f", w[4]),
                fmt(L.get("ratio_adjacent"), ".2f", w[5]),
                fmt(L["lat_ms_p50"], ".2f", w[6]),
                fmt(L["lat_ms_p99"], ".2f", w[7]),
                str(L["acked"]).rjust(w[8]),
                str(L["refused"]).rjust(w[9]),
                str(v["lost"]).rjust(w[10]),
                fmt(L["client_cpu_pct"], ".0f", w[11]),
                fmt(L["daemon_cpu_pct"], ".0f", w[12]),
                fmt(L["daemon_cpu_pct_by_role"].get("queue"), ".0f", w[13]),
            ]
            print("   " + " ".join(row))
        for L in levels:
            v = L["verify"]
            if mode == "held":
                print("   %2d clients: %d acked ids; queue/*.env %d, "
                      "queue/*.msg %d, `ternctl queue` %s; missing %d" % (
                          L["clients"], v["acked"], v["queue_env_files"],
                          v["queue_msg_files"], v["ternctl_queue"],
                          v["missing"]))
            else:
                print("   %2d clients: %d acked ids; delivered %d (the "
                      "last %.1f s after the level), still queued %d; "
                      "missing %d" % (
                          L["clients"], v["acked"], v["delivered"],
                          v["drain_s"], v["still_queued"], v["missing"]))
            h = L.get("host_cpu")
            if h:
                others = h["busy_pct_of_a_core"] - L["client_cpu_pct"] - \
                    L["daemon_cpu_pct"]
                print("      host: %.0f%% of a core busy on %d CPUs (others "
                      "than bench and ternd: %.0f%%), iowait %.0f%%" % (
                          h["busy_pct_of_a_core"], h["cpus"],
                          max(0.0, others), h["iowait_pct_of_a_core"]))
            if L["n_errors"]:
                print("      client errors (%d): %s" % (
                    L["n_errors"], "; ".join(L["errors"][:3])))
            if L["client_cpu_pct"] >= 85:
                print("      note: the client used %.0f%% of a CPU: the "
                      "figure may be client-bound" % L["client_cpu_pct"])
        print("   msg/s counts the 250s received within the level's "
              "duration; ratio = msg/s / the fsync rate of 1.;")
        print("   adjacent: the fsync rate measured again for %g s just "
              "before the level, and the ratio to it" %
              R["params"]["fsync_adjacent_seconds"])
        if any(L.get("syscalls") for L in levels):
            print("   syscalls per accepted message (strace -c -f on all ternd "
                  "processes; rates above are slowed by it):")
            names = ("syncfs", "fsync", "fdatasync", "openat", "renameat",
                     "unlinkat", "linkat")
            print("   clients " + " ".join(n.rjust(9) for n in names) +
                  "  msgs/syncfs")
            for L in levels:
                c = L.get("syscalls") or {}
                n = max(1, L["acked"])
                per = [c.get(x, 0) / n for x in names]
                batch = L["acked"] / c["syncfs"] if c.get("syncfs") else None
                print("   %7d " % L["clients"] + " ".join(
                    ("%9.2f" % x) for x in per) + fmt(batch, ".1f", 13))
        print()
    M = R.get("memory")
    if M:
        print("4. memory of ternd (parent + all descendants)")
        hdr = ("state", "procs", "RSS MiB", "PSS MiB", "aim")
        w = (34, 5, 9, 9, 12)
        print("   " + hdr[0].ljust(w[0]) + " " +
              " ".join(h.rjust(x) for h, x in zip(hdr[1:], w[1:])))
        rows = [("idle", M["idle"], ""),
                ("%d idle connections (EHLO done)" %
                 M["idle_conns"]["connections"], M["idle_conns"],
                 "< %g MiB" % AIM_IDLE_MIB)]
        if "after_load" in M:
            rows.append(("idle, after the %d-client level" %
                         M["after_load_clients"], M["after_load"], ""))
        for name, m, aim in rows:
            print("   " + name.ljust(w[0]) + " " + " ".join([
                str(m["procs"]).rjust(w[1]),
                fmt(mib(m["rss_kib"]), ".2f", w[2]),
                fmt(mib(m["pss_kib"]), ".2f", w[3]),
                aim.rjust(w[4])]))
        per = M.get("per_conn_kib")
        if per:
            print("   per connection: %.1f KiB RSS, %s KiB PSS" % (
                per["rss"], "-" if per["pss"] is None else
                "%.1f" % per["pss"]))
        for m in M["idle_conns"]["detail"]:
            print("      pid %-7d %-7s RSS %7.2f MiB  PSS %s MiB" % (
                m["pid"], m["role"], m["rss_kib"] / 1024.0,
                "-" if m["pss_kib"] is None else
                "%.2f" % (m["pss_kib"] / 1024.0)))
        print()
    for n in R.get("notes", []):
        print("note: " + n)
    print("results: %s" % R["json"])


# ---- main ------------------------------------------------------------------

def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="obj/normal",
                    help="directory holding ternd and ternctl")
    ap.add_argument("--seconds", type=float, default=5.0,
                    help="duration of each acceptance level")
    ap.add_argument("--fsync-seconds", type=float, default=3.0,
                    help="duration of the fsync-rate measurement")
    ap.add_argument("--syncfs-seconds", type=float, default=1.0,
                    help="also time the daemon's way for a batch of one "
                    "(syncfs instead of the file fsync; 0: don't)")
    ap.add_argument("--fsync-adjacent", type=float, default=1.0,
                    metavar="SECONDS",
                    help="also measure the fsync rate for this long just "
                    "before each level (0: don't), for a second ratio less "
                    "exposed to the disk's drift during the run")
    ap.add_argument("--clients", default="1,10,50",
                    help="comma-separated concurrency levels")
    ap.add_argument("--size", type=int, default=4096,
                    help="message size in bytes")
    ap.add_argument("--mode", choices=("held", "maildir", "both"),
                    default="held",
                    help="held: alias to a remote address, kept queued "
                    "(acceptance only, default); maildir: delivered too")
    ap.add_argument("--idle", type=int, default=500,
                    help="idle connections for the memory figure")
    ap.add_argument("--tmpdir", default=None,
                    help="where the temp dir (spool) goes; default $TMPDIR "
                    "or /tmp")
    ap.add_argument("--json", default="obj/bench/results.json")
    ap.add_argument("--strace", action="store_true",
                    help="count the daemon's file and sync syscalls per "
                    "message with strace -c (slows the daemon down)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temp dir (for inspection)")
    a = ap.parse_args()
    a.levels = [int(x) for x in a.clients.split(",") if x.strip()]
    if not a.levels or min(a.levels) < 1 or max(a.levels) > 1000:
        ap.error("--clients: levels from 1 to 1000")
    if not (0 < a.seconds <= 600 and 0 < a.fsync_seconds <= 600 and
            0 <= a.fsync_adjacent <= 600 and 0 <= a.syncfs_seconds <= 600):
        ap.error("durations from 0 to 600 s")
    if a.size < 512 or a.size > 16 << 20:
        ap.error("--size: 512 bytes to 16 MiB")
    if a.idle < 0 or a.idle > 20000:
        ap.error("--idle: 0 to 20000")
    return a


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(hard, need)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def main():
    a = parse_args()
    build = pathlib.Path(a.build)
    if not build.is_absolute():
        build = ROOT / build
    for exe in ("ternd", "ternctl"):
        if not os.access(build / exe, os.X_OK):
            print("bench: %s/%s missing; build first (make)" % (build, exe),
                  file=sys.stderr)
            return 2
    jpath = pathlib.Path(a.json)
    if not jpath.is_absolute():
        jpath = ROOT / jpath
    max_conn = max(1000, a.idle + max(a.levels) + 50)
    nofile = raise_nofile(2 * max_conn + 256)

    # SIGTERM (and SIGHUP) unwind like Ctrl-C, so cleanup runs.
    def on_signal(sig, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    base = pathlib.Path(tempfile.mkdtemp(prefix="tern-bench-",
                                         dir=a.tmpdir))
    os.chmod(base, 0o755)
    mnt, fstype, dev = fs_of(base)
    body = make_body(a.size)
    R = {
        "env": {"date": time.strftime("%Y-%m-%d %H:%M:%S"),
                "build": str(a.build), "host": platform.node(),
                "cpus": os.cpu_count(), "kernel": platform.release(),
                "tmpdir": str(base), "fs_mount": mnt, "fs_type": fstype,
                "fs_device": dev, "python": sys.version.split()[0],
                "rlimit_nofile": nofile},
        "params": {"seconds": a.seconds, "fsync_seconds": a.fsync_seconds,
                   "fsync_adjacent_seconds": a.fsync_adjacent,
                   "clients": a.levels, "size": a.size, "mode": a.mode,
                   "idle_connections": a.idle, "message_bytes": len(body)},
        "aims": {"ratio": {str(k): v for k, v in AIM_RATIO.items()},
                 "idle_connections_mib": AIM_IDLE_MIB},
        "accept": {},
        "notes": [],
        "json": str(jpath),
    }
    daemons = []
    status = 0
    try:
        if nofile < a.idle + 64:
            R["notes"].append("RLIMIT_NOFILE is %d: idle connections "
                              "reduced" % nofile)
            a.idle = max(0, nofile - 64)

        print("bench: fsync rate in %s ..." % base, file=sys.stderr)
        R["fsync"] = fsync_rate(base, a.fsync_seconds, a.size)
        frate = R["fsync"]["files_per_s"]
        if a.syncfs_seconds:
            R["syncfs"] = fsync_rate(base, a.syncfs_seconds, a.size,
                                     "syncfs", use_syncfs=True)

        if a.idle:
            print("bench: memory, idle and %d idle connections ..." % a.idle,
                  file=sys.stderr)
            d = Daemon(build, base / "mem", max_conn)
            daemons.append(d)
            d.start()
            R["memory"] = measure_memory(d, a.idle)
            if not d.alive():
                raise BenchError("ternd died during the memory test:\n" +
                                 d.logtail())
            d.stop()
            m0, m1 = R["memory"]["idle"], R["memory"]["idle_conns"]
            R["memory"]["per_conn_kib"] = {
                "rss": round((m1["rss_kib"] - m0["rss_kib"]) / a.idle, 2),
                "pss": None if m1["pss_kib"] is None or m0["pss_kib"] is None
                else round((m1["pss_kib"] - m0["pss_kib"]) / a.idle, 2)}

        modes = ["held", "maildir"] if a.mode == "both" else [a.mode]
        for mode in modes:
            rcpt = "%s@%s" % (SINK_ALIAS if mode == "held" else VUSER,
                              LOCAL_DOMAIN)
            R["accept"][mode] = []
            for n in a.levels:
                print("bench: %s, %d client(s), %.1f s ..." % (
                    mode, n, a.seconds), file=sys.stderr)
                d = Daemon(build, base / ("%s-%d" % (mode, n)), max_conn)
                adj = None
                if a.fsync_adjacent:
                    adj = fsync_rate(d.base, a.fsync_adjacent, a.size)
                daemons.append(d)
                d.start()
                L = run_level(d, n, a.seconds, rcpt, body,
                              d.base / "strace.txt" if a.strace else None)
                if not d.alive():
                    raise BenchError("ternd died during the %d-client "
                                     "level:\n%s" % (n, d.logtail()))
                ids = L.pop("_ids")
                L["verify"] = verify(d, mode, ids, 30 + a.seconds * 2)
                L["ratio"] = round(L["msgs_per_s"] / frate, 3) \
                    if frate else None
                L["fsync_adjacent"] = adj
                if adj and adj["files_per_s"]:
                    L["ratio_adjacent"] = round(
                        L["msgs_per_s"] / adj["files_per_s"], 3)
                if mode == "held" and n == max(a.levels) and "memory" in R:
                    R["memory"]["after_load"] = d.memory()
                    R["memory"]["after_load_clients"] = n
                R["accept"][mode].append(L)
                if L["verify"]["lost"]:
                    status = 1
                    R["notes"].append(
                        "%s, %d clients: %d acknowledged message(s) not "
                        "found in the spool: %s" % (
                            mode, n, L["verify"]["lost"],
                            L["verify"]["missing_sample"]))
                if L["n_errors"] or L["stuck_clients"]:
                    status = 1
                    R["notes"].append("%s, %d clients: %d client error(s), "
                                      "%d stuck: %s" % (
                                          mode, n, L["n_errors"],
                                          L["stuck_clients"],
                                          "; ".join(L["errors"][:3])))
                if L["refused"]:
                    R["notes"].append("%s, %d clients: %d message(s) refused "
                                      "(not lost: never acknowledged): %s" % (
                                          mode, n, L["refused"], "; ".join(
                                              L["refusal_samples"][:3])))
                if L["late_start"]:
                    R["notes"].append("%s, %d clients: not all clients were "
                                      "connected at the start" % (mode, n))
                d.stop()            # its spool stays until the end (above)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        status = 130
    except BenchError as e:
        print("bench: error: %s" % e, file=sys.stderr)
        R["notes"].append("error: %s" % str(e).splitlines()[0])
        status = 1
    except OSError as e:
        print("bench: error: %s" % e, file=sys.stderr)
        R["notes"].append("error: %s" % e)
        status = 1
    finally:
        # Cleanup is bounded (about 30 s per daemon at worst); a second
        # signal must not cut it short.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        for d in daemons:
            try:
                d.stop()
            except Exception as e:          # keep cleaning up
                print("bench: stopping ternd: %s" % e, file=sys.stderr)
        if a.keep:
            print("bench: kept %s" % base, file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    if status == 130:
        return status
    R["status"] = "ok" if status == 0 else "failed"
    try:
        jpath.parent.mkdir(parents=True, exist_ok=True)
        tmp = jpath.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(R, indent=2) + "\n")
        os.replace(tmp, jpath)
    except OSError as e:
        print("bench: cannot write %s: %s" % (jpath, e), file=sys.stderr)
        status = status or 1
    if "fsync" in R:
        print_table(R)
    return status


if __name__ == "__main__":
    sys.exit(main())
