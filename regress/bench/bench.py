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
   address routed to a dead loopback port, so each message gets one
   refused connection, is deferred for an hour and stays queued, and the
   figure is acceptance alone; "maildir" mode delivers to a virtual
   user's Maildir as well.  Afterwards every queue id a client got in a
   250 reply is looked up in the spool (queue/ID.env and queue/ID.msg, or
   the Maildir once delivered) and cross-checked with `ternctl queue`.
3. the ratio of each acceptance rate to the fsync rate.  A daemon doing
   one sync per message can at best reach about 1; group commit (one
   syncfs and one directory fsync per batch, see queue/commit.c) is what
   lets many clients go above it.
4. daemon memory (parent and all its descendants): sum of VmRSS and sum
   of Pss (smaps_rollup, shared pages counted once), idle and with N open
   idle connections that got the greeting and said EHLO.
5. relay: N messages to recipients at a remote domain whose MX (served
   by regress/integration/dnsserver.py on loopback) is an aiosmtpd sink
   on 127.0.0.2, in its own process; ternd relays them (trusted-network).
   Accept rate, delivered rate (messages at the sink per second from the
   first 250 to the last arrival), the time from the last 250 until the
   queue is empty, and every acknowledged message checked at the sink by
   its Message-ID.  The sink's own rate at the same concurrency is
   measured too, as the limit the relay rate is compared with.
6. AUTH: logins per second (a connection each: STARTTLS, AUTH PLAIN on
   an msa listener) with 1 and N clients, each from its own 127.0.1.x
   address as its own account, against the cost of one password check
   (libcrypt's yescrypt at the vault's cost, timed in the bench).
7. acceptance over STARTTLS+AUTH against plain: the held-mode levels
   again on the MX port and on the msa port, with one connection per
   client and with one connection (and login) per message.
8. the brute-force throttle: wrong passwords for one account from one
   address, and from many at once, for a bounded time: guesses made,
   the delays, when the refusals (454 4.7.0) start.
10. DKIM signing cost (--dkim-messages N, off by default; --dkim-only
   runs it alone): N messages over one connection from a trusted client
   (dkim-sign-trusted yes) with a From: in the local domain, to a daemon
   with no key, with an RSA-2048 key and with an Ed25519 key (made by
   ternctl dkim keygen); the median and mean time from the end of the
   data to the 250, and the difference to the unsigned run: the cost of
   hashing, the vault's signature and the write of the field.
11. the MX's message checks on against off (--checks-clients, default
   10; 0: skip): held-mode acceptance from a client that is not in a
   trusted network, one daemon with `spf no`, `dkim-verify no` and
   `dmarc off`, one with all three on; the loopback DNS server publishes
   the sender domain's SPF record, its DKIM key (RSA-2048) and a DMARC
   p=reject, and every message carries a dkimpy signature that passes.
   Printed: both rates and on/off.

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
SINK_DOMAIN = "sink.bench.test"                 # relay: its MX is the sink
SINK_MX = "mx." + SINK_DOMAIN
SINK_IP = "127.0.0.2"
# Relay daemons: a deferral is retried soon, so one does not stall the
# drain for the default minute (deferrals are counted and shown).
RELAY_CONF = ["retry-min 1s", "retry-max 5s", "dnssec-trust-anchor none"]
RELAY_KNOBS = ("max-domain-connections", "max-deliveries",
               "max-transaction-recipients", "retry-min", "retry-max")

CRED_COST = 5               # auth/credstore.h: yescrypt, as the vault checks

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


def fs_journal(fstype, dev):
    """For ext3/ext4: whether the filesystem has a journal (jbd2 lists one
    per journaled device), which changes what file creation costs."""
    if fstype not in ("ext3", "ext4"):
        return ""
    name = os.path.basename(os.path.realpath(dev))
    try:
        found = any(e.startswith(name + "-") for e in os.listdir("/proc/fs/jbd2"))
    except OSError:
        found = False
    return " with a journal" if found else " without a journal"


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
    rename: the daemon's group commit (queue/commit.c) for a batch of one.
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

    def __init__(self, build, base, max_conn, relay=None, msa=False):
        """relay: None for the acceptance levels (remote mail kept off
        the network), else a dict with the DNS server's port, the sink's
        port and extra config lines, for the relay levels.  msa: also a
        submission listener (STARTTLS, AUTH; the certificate is the one
        ternd makes itself at first start) on self.msa_port."""
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
        self.offline = False
        self.msa_port = free_port() if msa else None
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
        if msa:
            lines.append(f"listen msa 127.0.0.1 port {self.msa_port}")
            # The bench's accounts send thousands of messages a minute:
            # no sending limits, no breaker, or they are held after 50.
            lines += ["limit-messages-hour 0", "limit-messages-day 0",
                      "limit-recipients-hour 0", "limit-recipients-day 0",
                      "breaker-factor 0", "breaker-reject-percent 0"]
        self.conf.write_text("\n".join(lines) + "\n")
        lines += self.relocations()
        if relay is None:
            # Keep the held mode off the network and its delivery work to
            # one failed attempt per message: DNS and the route go to a
            # loopback port nobody listens on, so the connection is
            # refused at once and the recipient is deferred for an hour.
            # The limits are lifted so that no message waits for a
            # delivery slot: with the default 5 per destination, all the
            # others would be re-resolved and have their envelope
            # rewritten every second (queue_rcpt_finish, "wait"), work
            # that grows with the queue and is not acceptance.  Only with
            # a build that knows these statements (checked by -n).
            dead = free_port()
            extra = [f"resolver 127.0.0.1 port {dead}",
                     f"route {REMOTE_DOMAIN} via 127.0.0.1:{dead}",
                     "max-domain-connections 1000",
                     f"max-deliveries {HELD_DELIVERIES}",
                     "retry-min 1h", "retry-max 1h"]
        else:
            extra = [f"resolver 127.0.0.1 port {relay['dns_port']}",
                     f"remote-port {relay['sink_port']}"]
            user = list(relay.get("conf", []))
            knobs = {u.split()[0] for u in user if u.split()}
            extra += [x for x in RELAY_CONF if x.split()[0] not in knobs]
            extra += user
        self.conf.write_text("\n".join(lines + extra) + "\n")
        if self.check():
            lines += extra
            self.offline = relay is None
        elif relay is not None:
            raise BenchError("this ternd does not take the relay "
                             "config:\n" + self.check_error())
        self.extra = extra
        self.conf.write_text("\n".join(lines) + "\n")
        self.aliases.write_text(f"postmaster: {VUSER}\n"
                                f"{SINK_ALIAS}: {REMOTE_ADDR}\n")

    def knobs(self, names):
        """{knob: value} as `ternd -P` shows them (the effective config)."""
        try:
            r = subprocess.run([str(self.build / "ternd"), "-P", "-f",
                                str(self.conf)], capture_output=True,
                               text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return {}
        out = {}
        for line in r.stdout.splitlines()[:2000]:
            parts = line.split(None, 1)
            if len(parts) == 2 and parts[0] in names:
                out[parts[0]] = parts[1].strip()
        return out

    def check_error(self):
        try:
            r = subprocess.run([str(self.build / "ternd"), "-n", "-f",
                                str(self.conf)], capture_output=True,
                               text=True, timeout=30)
            return (r.stderr or r.stdout).strip()[:2000]
        except (OSError, subprocess.TimeoutExpired) as e:
            return str(e)

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

    def ctl(self, *args, timeout=60, input=None):
        return subprocess.run([str(self.build / "ternctl"), "-f",
                               str(self.conf), *args], input=input,
                              capture_output=True, text=True, timeout=timeout)

    def add_user(self, name, password):
        """An account in the credential store (ternctl, as root; the
        password on standard input)."""
        r = self.ctl("user", "add", name, input=password + "\n")
        if r.returncode != 0:
            raise BenchError("ternctl user add %s failed: %s" % (
                name, (r.stderr or r.stdout).strip()[:500]))

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
        found, queue = [], [self.proc.pid]
        while queue and len(found) < 10000:
            p = queue.pop()
            found.append(p)
            queue.extend(children.get(p, []))
        return found

    def role(self, pid):
        """parent, vault (`ternd: vault`), queue (holds the spool's
        queue/ open) or smtp."""
        if self.proc and pid == self.proc.pid:
            return "parent"
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read(256)
            if cmd.startswith(b"ternd: vault") or \
                    cmd.split(b"\0")[1:3] == [b"-X", b"vault"]:
                return "vault"
        except OSError:
            pass
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
                # A held message's id ends in '!' (mailq's mark).
                tok = line.split()[0].rstrip("!*")
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

    def __init__(self, port, timeout=IO_TIMEOUT, src=None, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout,
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

    def starttls(self, ctx):
        """STARTTLS, the handshake, EHLO again (after hello())."""
        code, line = self.cmd(b"STARTTLS\r\n")
        if code != 220:
            raise BenchError("STARTTLS: %r" % line)
        if self.buf:
            raise BenchError("data after the STARTTLS reply")
        self.sock = ctx.wrap_socket(self.sock, server_hostname=HOSTNAME)
        code, line = self.cmd(b"EHLO client.bench.test\r\n")
        if code != 250:
            raise BenchError("EHLO after STARTTLS: %r" % line)

    def auth_plain(self, user, password):
        """AUTH PLAIN with the initial response: (code, line)."""
        import base64
        resp = base64.b64encode(b"\0" + user.encode() + b"\0" +
                                password.encode())
        return self.cmd(b"AUTH PLAIN " + resp + b"\r\n")

    def close(self):
        try:
            self.sock.sendall(b"QUIT\r\n")
            self.sock.settimeout(2)
            self.reply()
        except (OSError, BenchError, ValueError):
            pass
        self.sock.close()


def make_body(size, msgid="bench@client.bench.test",
              to=f"{SINK_ALIAS}@{LOCAL_DOMAIN}",
              frm="bench@client.bench.test", date=False):
    """A message of exactly size bytes (CRLF lines, dot-terminated apart).
    date: with a Date: header (a submission without one gets one)."""
    head = (f"From: <{frm}>\r\n"
            f"To: <{to}>\r\n"
            "Subject: tern benchmark\r\n" +
            ("Date: Thu, 1 Jan 2026 00:00:00 +0000\r\n" if date else "") +
            f"Message-ID: <{msgid}>\r\n\r\n").encode()
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


def tagged_bodies(size, tag, n, to):
    """n messages of size bytes, each with its own Message-ID
    <TAG-SEQ@client.bench.test> (SEQ 0..n-1, six digits): [(mid, body)]."""
    mid0 = "%s-%06d@client.bench.test" % (tag, 0)
    ph = "#" * len(mid0)
    tmpl = make_body(size, ph, to)
    out = []
    for i in range(n):
        mid = "%s-%06d@client.bench.test" % (tag, i)
        out.append((mid, tmpl.replace(ph.encode(), mid.encode(), 1)))
    return out


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


def run_level(daemon, nclients, seconds, rcpt, body, strace_path=None,
              worker=None):
    """nclients threads sending for seconds; merged results.  worker:
    instead of client_worker, worker(k, start_at, deadline, hard_end,
    ready, out, stop) for client k."""
    out, threads = [], []
    ready = threading.Semaphore(0)
    stop = threading.Event()
    gate = threading.Event()
    setup_s = 10.0 + 0.05 * nclients
    params = {}

    def runner(k):
        if not gate.wait(setup_s + 5):
            return
        if worker:
            worker(k, params["start"], params["deadline"],
                   params["hard_end"], ready, out, stop)
        else:
            client_worker(daemon.port, rcpt, body, params["start"],
                          params["deadline"], params["hard_end"], ready,
                          out, stop)

    tracer = Strace(daemon, strace_path) if strace_path else None
    # Every client connects and says EHLO first; all start sending at one
    # instant fixed ahead, long enough for the connections on loopback.
    for k in range(nclients):
        t = threading.Thread(target=runner, args=(k,), daemon=True)
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
    msg_lat = sorted(x for r in out for x in r.get("msg_lat", ()))
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
        "msg_ms_p50": round(percentile(msg_lat, 50) * 1000, 2)
        if msg_lat else None,
        "msg_ms_p99": round(percentile(msg_lat, 99) * 1000, 2)
        if msg_lat else None,
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


def count_worker(host, port, rcpts, msgs, start_at, hard_end, ready, res,
                 stop):
    """Send the (mid, body) messages msgs on one connection from start_at,
    one command at a time; (queue id or None, mid, time) per 250."""
    conn = None
    try:
        conn = Conn(port, host=host)
        conn.hello()
    except (OSError, BenchError) as e:
        res["errors"].append("connect: %s" % e)
        ready.release()
        if conn:
            conn.sock.close()
        return
    ready.release()
    cmds = [b"RCPT TO:<%s>\r\n" % r.encode() for r in rcpts]
    try:
        while time.monotonic() < start_at and not stop.is_set():
            time.sleep(min(0.01, max(0.0, start_at - time.monotonic())))
        for mid, body in msgs:
            t0 = time.monotonic()
            if stop.is_set() or t0 >= hard_end:
                break
            mail = b"MAIL FROM:<bench@client.bench.test> SIZE=%d\r\n" % \
                len(body)
            refused = None
            for c, want in [(mail, 250)] + [(x, 250) for x in cmds] + \
                    [(b"DATA\r\n", 354)]:
                code, line = conn.cmd(c)
                if code != want:
                    refused = line
                    break
            if refused is None:
                code, line = conn.cmd(body)
                t1 = time.monotonic()
                if code == 250:
                    qid = line.split()[-1].decode(errors="replace") \
                        if b"queued" in line else None
                    res["acked"].append((qid, mid, t1))
                    res["lat"].append(t1 - t0)
                    continue
                refused = line
            else:
                conn.cmd(b"RSET\r\n")
            res["refused"] += 1
            if len(res["refusals"]) < 5:
                res["refusals"].append(refused.decode(errors="replace"))
    except (OSError, BenchError, ValueError) as e:
        res["errors"].append("session: %s" % e)
    finally:
        conn.close()


def send_messages(host, port, nclients, msgs, rcpts, time_cap):
    """Send msgs [(mid, body)] over nclients connections (client k sends
    msgs[k::nclients]), every client connected and past EHLO before they
    all start at one instant.  Bounded by time_cap seconds of sending."""
    out, threads = [], []
    ready = threading.Semaphore(0)
    stop = threading.Event()
    setup_s = 10.0 + 0.05 * nclients
    start = time.monotonic() + 0.3 + 0.01 * nclients
    hard_end = start + time_cap
    for k in range(nclients):
        res = {"acked": [], "refused": 0, "errors": [], "refusals": [],
               "lat": []}
        out.append(res)
        t = threading.Thread(target=count_worker, daemon=True, args=(
            host, port, rcpts, msgs[k::nclients], start, hard_end, ready,
            res, stop))
        threads.append(t)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    for t in threads:
        t.start()
    got = 0
    while got < nclients and time.monotonic() < start + setup_s:
        if ready.acquire(timeout=0.5):
            got += 1
    late = time.monotonic() > start
    try:
        for t in threads:
            t.join(max(0.0, hard_end + IO_TIMEOUT - time.monotonic()))
    except KeyboardInterrupt:
        stop.set()
        raise
    stop.set()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    acked = sorted((a for r in out for a in r["acked"]), key=lambda a: a[2])
    lat = sorted(x for r in out for x in r["lat"])
    errors = [e for r in out for e in r["errors"]]
    wall = max(1e-9, (acked[-1][2] if acked else time.monotonic()) - start)
    return {
        "start": start,
        "acked": acked,
        "refused": sum(r["refused"] for r in out),
        "refusal_samples": [e for r in out for e in r["refusals"]][:10],
        "errors": errors[:10],
        "n_errors": len(errors),
        "stuck_clients": sum(1 for t in threads if t.is_alive()),
        "late_start": late,
        "rate": round(len(acked) / wall, 1) if acked else 0.0,
        "lat_ms_p50": round(percentile(lat, 50) * 1000, 2) if lat else None,
        "lat_ms_p99": round(percentile(lat, 99) * 1000, 2) if lat else None,
        "client_cpu_pct": round(100.0 * ((cpu1.ru_utime + cpu1.ru_stime) -
                                         (cpu0.ru_utime + cpu0.ru_stime)) /
                                max(1e-9, time.monotonic() - start), 1),
    }


def held_attempts(daemon):
    """Delivery attempts the held daemon logged (event=deliver lines):
    total, messages tried, the most tries of one message, outcomes."""
    per, status = {}, {}
    try:
        with open(daemon.log, errors="replace") as f:
            for line in f:
                if "event=deliver " not in line:
                    continue
                i = line.find(" q=")
                q = line[i + 3:].split(None, 1)[0] if i >= 0 else "?"
                per[q] = per.get(q, 0) + 1
                j = line.find(" status=")
                st = line[j + 8:].split(None, 1)[0] if j >= 0 else "?"
                status[st] = status.get(st, 0) + 1
    except OSError:
        pass
    return {"total": sum(per.values()), "messages": len(per),
            "max_per_message": max(per.values()) if per else 0,
            "status": status}


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


# ---- 5. relay: accept to a remote sink -------------------------------------

def serve_sink(hostport, logpath):
    """The sink, run as a child (bench.py --serve-sink HOST:PORT --sink-log
    FILE): an aiosmtpd server that accepts everything and appends to FILE
    one line per message, "M <monotonic time> <Message-ID> <rcpt,...>",
    and one per EHLO, "E <time>" (a file, not a pipe: a slow reader must
    not slow the sink down).  It says READY on stdout and runs until its
    stdin closes (so it ends with the bench, whatever happens to it) or
    SIGTERM."""
    from aiosmtpd.controller import Controller
    host, port = hostport.rsplit(":", 1)
    fd = os.open(logpath, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def out(text):
        os.write(fd, text.encode())

    class Handler:
        async def handle_EHLO(self, server, session, envelope, hostname,
                              responses):
            session.host_name = hostname
            out("E %.6f\n" % time.monotonic())
            return responses

        async def handle_DATA(self, server, session, envelope):
            head = (envelope.original_content or b"")[:16384]
            i = head.find(b"\nMessage-ID: <")
            j = head.find(b">", i) if i >= 0 else -1
            mid = head[i + 14:j].decode("ascii", "replace") \
                if j > i >= 0 else "-"
            out("M %.6f %s %s\n" % (time.monotonic(), mid or "-",
                                    ",".join(envelope.rcpt_tos)))
            return "250 2.0.0 accepted"

    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    ctl = Controller(Handler(), hostname=host, port=int(port),
                     ready_timeout=10)
    ctl.start()
    try:
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        sys.stdin.read()
    finally:
        ctl.stop()
    return 0


class Sink:
    """The sink process on SINK_IP:port and what it received, by tag (the
    Message-ID up to its last '-')."""

    def __init__(self, port, logpath):
        self.port = port
        self.path = logpath
        self.msgs = {}          # tag -> [(time, mid, (rcpts))]
        self.pairs = {}         # tag -> number of distinct (mid, rcpt)
        self.seen = set()
        self.ehlos = 0
        self.off = 0
        self.partial = b""
        self.errpath = pathlib.Path(str(logpath) + ".stderr")
        with open(self.errpath, "ab") as errf:
            self.proc = subprocess.Popen(
                [sys.executable, str(pathlib.Path(__file__).resolve()),
                 "--serve-sink", "%s:%d" % (SINK_IP, port), "--sink-log",
                 str(logpath)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=errf)
        line = self.readline_bounded(20)
        if line != "READY":
            err = self.stop()
            raise BenchError("the sink did not start (%r): %s" % (line, err))

    def readline_bounded(self, timeout):
        box = []
        t = threading.Thread(target=lambda: box.append(
            self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(timeout)
        return box[0].decode(errors="replace").strip() if box else None

    def refresh(self):
        """Take in the lines the sink appended since the last call."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.off)
                data = f.read(64 << 20)
        except OSError:
            return
        self.off += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        for raw in lines:
            f = raw.decode(errors="replace").split()
            if f and f[0] == "E":
                self.ehlos += 1
            elif len(f) >= 3 and f[0] == "M":
                t, mid = float(f[1]), f[2]
                rcpts = tuple(f[3].split(",")) if len(f) > 3 else ()
                tag = mid.split("@")[0].rsplit("-", 1)[0]
                self.msgs.setdefault(tag, []).append((t, mid, rcpts))
                for r in rcpts:
                    if (mid, r) not in self.seen:
                        self.seen.add((mid, r))
                        self.pairs[tag] = self.pairs.get(tag, 0) + 1

    def npairs(self, tag):
        self.refresh()
        return self.pairs.get(tag, 0)

    def received(self, tag):
        self.refresh()
        return list(self.msgs.get(tag, []))

    def connections(self):
        self.refresh()
        return self.ehlos

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def cpu_seconds(self):
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                st = f.read()
            v = st[st.rindex(")") + 2:].split()
            return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError, AttributeError):
            return None

    def stop(self):
        """Close its stdin (it exits), else SIGTERM, else SIGKILL."""
        p, self.proc = self.proc, None
        if p is None:
            return ""
        try:
            p.stdin.close()
        except OSError:
            pass
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None and p.poll() is None:
                p.send_signal(sig)
            try:
                p.wait(5)
                break
            except subprocess.TimeoutExpired:
                pass
        try:
            p.stdout.close()
            err = self.errpath.read_text(errors="replace")[-4000:]
        except (OSError, ValueError):
            err = ""
        return err.strip()


class DNS:
    """regress/integration/dnsserver.py on loopback: SINK_DOMAIN has one MX,
    SINK_MX, whose address is SINK_IP."""

    def __init__(self):
        sys.path.insert(0, str(ROOT / "regress" / "integration"))
        try:
            from dnsserver import DNSServer
        except ImportError as e:
            raise BenchError("relay: cannot load the DNS server (%s); "
                             "make deps installs python3-dnslib" % e)
        finally:
            sys.path.pop(0)
        self.server = DNSServer({
            SINK_DOMAIN + ".": {"MX": [(10, SINK_MX + ".")]},
            SINK_MX + ".": {"A": [SINK_IP]},
        }).start()
        self.port = self.server.port

    def stop(self):
        if self.server:
            self.server.stop()
            self.server = None


def free_port_on(addr):
    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


def relay_rcpts(nrcpt):
    return ["rcpt%d@%s" % (i, SINK_DOMAIN) for i in range(1, nrcpt + 1)]


def sink_capacity(sink, nclients, nmsgs, nrcpt, size, tag):
    """The sink's own rate: the same messages sent to it directly over
    nclients connections, one command at a time (as the bench's clients
    talk to ternd)."""
    msgs = tagged_bodies(size, tag, nmsgs, relay_rcpts(nrcpt)[0])
    c0 = sink.cpu_seconds()
    t0 = time.monotonic()
    r = send_messages(SINK_IP, sink.port, nclients, msgs, relay_rcpts(nrcpt),
                      60.0)
    t1 = time.monotonic()
    c1 = sink.cpu_seconds()
    wait_for(lambda: sink.npairs(tag) >= len(r["acked"]) * nrcpt, 5, 0.01)
    return {"clients": nclients, "msgs_per_s": r["rate"],
            "acked": len(r["acked"]), "n_errors": r["n_errors"],
            "errors": r["errors"][:3],
            "received": len(sink.received(tag)),
            "lat_ms_p50": r["lat_ms_p50"],
            "sink_cpu_pct": None if c0 is None or c1 is None else
            round(100.0 * (c1 - c0) / max(1e-9, t1 - t0), 1),
            "client_cpu_pct": r["client_cpu_pct"]}


def log_counts(path, words):
    """How many lines of the log contain each word."""
    out = dict.fromkeys(words, 0)
    try:
        with open(path, errors="replace") as f:
            for line in f:
                for w in words:
                    if w in line:
                        out[w] += 1
    except OSError:
        pass
    return out


def relay_level(d, sink, nclients, nmsgs, nrcpt, size, drain_cap, tag):
    """N messages to nrcpt recipients at SINK_DOMAIN through ternd, which
    relays them to the sink: accept rate, delivered rate, drain time, and
    every acknowledged message checked at the sink and gone from the
    queue."""
    rcpts = relay_rcpts(nrcpt)
    msgs = tagged_bodies(size, tag, nmsgs, rcpts[0])
    conns0 = sink.connections()
    s0, dcpu0 = sink.cpu_seconds(), d.cpu_seconds()
    r = send_messages("127.0.0.1", d.port, nclients, msgs, rcpts,
                      max(60.0, drain_cap))
    acked = r["acked"]
    t_last_ack = acked[-1][2] if acked else time.monotonic()
    want = len(acked) * nrcpt
    # Wait (bounded) for every acknowledged message at the sink, then for
    # the queue to be empty; the poll is 10 ms.
    wait_for(lambda: sink.npairs(tag) >= want or not d.alive(), drain_cap,
             0.01)

    def empty():
        env, msg = d.queue_ids()
        return not env and not msg
    t_arrived = time.monotonic()
    wait_for(lambda: empty() or not d.alive(), max(5.0, drain_cap -
                                                   (t_arrived - t_last_ack)),
             0.01)
    t_empty = time.monotonic() if empty() else None
    s1, dcpu1 = sink.cpu_seconds(), d.cpu_seconds()
    t_end = time.monotonic()
    wall = max(1e-9, t_end - r["start"])
    got = sink.received(tag)
    by_mid = {}
    for t, mid, rc in got:
        by_mid.setdefault(mid, []).append((t, rc))
    missing, dup_pairs, e2e, last_arrival = [], 0, [], None
    env, msgf = d.queue_ids()
    for qid, mid, t_ack in acked:
        arr = by_mid.get(mid, [])
        seen = [x for _, rc in arr for x in rc]
        dup_pairs += len(seen) - len(set(seen))
        if set(rcpts) - set(seen):
            missing.append((qid, mid))
            continue
        t_done = max(t for t, _ in arr)
        e2e.append(t_done - t_ack)
        last_arrival = t_done if last_arrival is None else \
            max(last_arrival, t_done)
    delivered = len(acked) - len(missing)
    still_queued = sum(1 for q, _ in missing if q in env)
    lost = len(missing) - still_queued     # neither at the sink nor queued
    e2e.sort()
    first_ack = acked[0][2] if acked else None
    span = (last_arrival - first_ack) if delivered and first_ack else None
    ctl = d.ctl_queue_ids()
    logc = log_counts(d.log, ("status=sent", "status=deferred",
                              "status=bounced"))
    return {
        "clients": nclients, "rcpts_per_msg": nrcpt, "messages": nmsgs,
        "acked": len(acked), "refused": r["refused"],
        "refusal_samples": r["refusal_samples"],
        "n_errors": r["n_errors"], "errors": r["errors"],
        "stuck_clients": r["stuck_clients"], "late_start": r["late_start"],
        "accept_per_s": r["rate"],
        "accept_lat_ms_p50": r["lat_ms_p50"],
        "accept_lat_ms_p99": r["lat_ms_p99"],
        "delivered": delivered,
        "sink_transactions": len(got),
        "delivered_per_s": round(delivered / span, 1) if span else None,
        "drain_s": round(t_empty - t_last_ack, 3) if t_empty else None,
        "e2e_ms_p50": round(percentile(e2e, 50) * 1000, 1) if e2e else None,
        "e2e_ms_p99": round(percentile(e2e, 99) * 1000, 1) if e2e else None,
        "e2e_ms_max": round(e2e[-1] * 1000, 1) if e2e else None,
        "sink_connections": sink.connections() - conns0,
        "duplicate_deliveries": dup_pairs,
        "missing": len(missing), "still_queued": still_queued, "lost": lost,
        "missing_sample": [q for q, _ in missing[:5]],
        "queue_empty": t_empty is not None,
        "ternctl_queue": len(ctl) if ctl is not None else None,
        "log": logc,
        "client_cpu_pct": r["client_cpu_pct"],
        "daemon_cpu_pct_by_role": {
            k: round(100.0 * (dcpu1.get(k, 0) - dcpu0.get(k, 0)) / wall, 1)
            for k in sorted(dcpu1)},
        "daemon_cpu_pct": round(100.0 * (sum(dcpu1.values()) -
                                         sum(dcpu0.values())) / wall, 1),
        "sink_cpu_pct": None if s0 is None or s1 is None else
        round(100.0 * (s1 - s0) / wall, 1),
    }


# ---- 6.-8. submission: AUTH, TLS against plain, the brute-force throttle ----

def client_tls_context():
    """TLS for the bench's clients: the daemon's certificate is the
    self-signed one it made at its first start, so it is not verified."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def bench_password(name):
    """A password libpwquality takes (not containing the name), its own
    per account."""
    import hashlib
    return "Xk7-%s-mQ2z" % hashlib.sha256(name.encode()).hexdigest()[:12]


def hash_cost(seconds):
    """The time of one password check as the vault does it: libcrypt's
    crypt() against a yescrypt setting made by crypt_gensalt("$y$", cost
    CRED_COST (5), from getrandom).  Checks repeated for about seconds
    (at least 5): {"ms_p50", "ms_min", "checks", "setting"}."""
    import ctypes
    import ctypes.util
    lib = None
    for name in (ctypes.util.find_library("crypt"), "libcrypt.so.1"):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            pass
    if lib is None:
        raise BenchError("cannot load libcrypt for the hash cost")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = (ctypes.c_char_p, ctypes.c_ulong,
                                  ctypes.c_char_p, ctypes.c_int)
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
    setting = lib.crypt_gensalt(b"$y$", CRED_COST, None, 0)
    if not setting or not setting.startswith(b"$y$"):
        raise BenchError("crypt_gensalt($y$, %d) failed" % CRED_COST)
    h = lib.crypt(b"Bench-hash-Pw-4kQ9z", setting)
    if not h or not h.startswith(setting):
        raise BenchError("crypt() with %r failed" % setting)
    times = []
    t_end = time.perf_counter() + seconds
    while len(times) < 1000 and (len(times) < 5 or
                                 time.perf_counter() < t_end):
        t0 = time.perf_counter()
        lib.crypt(b"Bench-wrong-Pw-4kQ9z", h)
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"ms_p50": round(percentile(times, 50) * 1000, 2),
            "ms_min": round(times[0] * 1000, 2), "checks": len(times),
            "setting": setting.decode()[:7] + "...", "cost": CRED_COST}


def tls_session(port, ctx, src):
    """Connected from src, greeting, EHLO, STARTTLS, EHLO: the Conn and
    the times (s) of the plain part and of the TLS part."""
    t0 = time.monotonic()
    c = Conn(port, src=(src, 0))
    try:
        c.hello()
        t1 = time.monotonic()
        c.starttls(ctx)
    except BaseException:
        c.sock.close()
        raise
    return c, t1 - t0, time.monotonic() - t1


def login_worker(port, ctx, src, user, pw, start_at, deadline, hard_end,
                 ready, res, stop):
    """Log in again and again until deadline: a connection each time
    (connect, EHLO, STARTTLS, EHLO, AUTH PLAIN, QUIT), the time of each
    part recorded."""
    ready.release()
    while time.monotonic() < start_at and not stop.is_set():
        time.sleep(min(0.01, max(0.0, start_at - time.monotonic())))
    while len(res["total"]) < MAX_MSGS_PER_CLIENT and not stop.is_set():
        t0 = time.monotonic()
        if t0 >= deadline or t0 >= hard_end:
            break
        c = None
        try:
            c, t_plain, t_tls = tls_session(port, ctx, src)
            t1 = time.monotonic()
            code, line = c.auth_plain(user, pw)
            t2 = time.monotonic()
            if code != 235:
                res["errors"].append("AUTH %s: %s" % (
                    user, line.decode(errors="replace")))
                break
            c.close()
            c = None
            t3 = time.monotonic()
        except (OSError, BenchError, ValueError) as e:
            res["errors"].append("login: %s" % e)
            break
        finally:
            if c is not None:
                c.sock.close()
        res["plain"].append(t_plain)
        res["tls"].append(t_tls)
        res["auth"].append(t2 - t1)
        res["quit"].append(t3 - t2)
        res["total"].append(t3 - t0)
        if t2 <= deadline:
            res["in_time"] += 1


def auth_level(d, nclients, seconds, accounts, srcs, ctx):
    """nclients log in for seconds, each from its own address as its own
    account: logins per second and the time of each part."""
    out, threads = [], []
    ready = threading.Semaphore(0)
    stop = threading.Event()
    start = time.monotonic() + 0.3 + 0.01 * nclients
    deadline, hard_end = start + seconds, start + seconds + 60.0
    for k in range(nclients):
        res = {"plain": [], "tls": [], "auth": [], "quit": [], "total": [],
               "in_time": 0, "errors": []}
        out.append(res)
        threads.append(threading.Thread(target=login_worker, daemon=True,
                                        args=(d.msa_port, ctx, srcs[k],
                                              accounts[k],
                                              bench_password(accounts[k]),
                                              start, deadline, hard_end,
                                              ready, res, stop)))
    dcpu0 = d.cpu_seconds()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join(max(0.0, hard_end + IO_TIMEOUT - time.monotonic()))
    except KeyboardInterrupt:
        stop.set()
        raise
    stop.set()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    dcpu1 = d.cpu_seconds()
    wall = max(1e-9, time.monotonic() - start)
    errors = [e for r in out for e in r["errors"]]

    def p50(key):
        v = sorted(x for r in out for x in r[key])
        return round(percentile(v, 50) * 1000, 2) if v else None
    in_time = sum(r["in_time"] for r in out)
    logins = sum(len(r["total"]) for r in out)
    vcpu = dcpu1.get("vault", 0) - dcpu0.get("vault", 0)
    return {"clients": nclients, "seconds": seconds,
            "logins": logins,
            "vault_cpu_ms_per_login": round(1000.0 * vcpu / logins, 2)
            if logins and "vault" in dcpu1 else None,
            "logins_in_time": in_time,
            "logins_per_s": round(in_time / seconds, 1),
            "ms_p50": {k: p50(k) for k in ("plain", "tls", "auth", "quit",
                                           "total")},
            "auth_ms_p99": (lambda v: round(percentile(v, 99) * 1000, 2)
                            if v else None)(
                                sorted(x for r in out for x in r["auth"])),
            "errors": errors[:10], "n_errors": len(errors),
            "stuck_clients": sum(1 for t in threads if t.is_alive()),
            "client_cpu_pct": round(100.0 * ((cpu1.ru_utime + cpu1.ru_stime)
                                             - (cpu0.ru_utime +
                                                cpu0.ru_stime)) / wall, 1),
            "daemon_cpu_pct_by_role": {
                r: round(100.0 * (dcpu1.get(r, 0) - dcpu0.get(r, 0)) / wall,
                         1) for r in sorted(dcpu1)}}


def submit_worker(d, ctx, mode, src, user, rcpt, body, k, start_at,
                  deadline, hard_end, ready, out, stop):
    """client_worker for the TLS comparison.  mode plain: the MX port,
    one connection; tls: the msa port, STARTTLS and AUTH once, then the
    messages on that connection; tls1: a new connection with STARTTLS
    and AUTH for every message (closed with QUIT after the 250).
    lat is MAIL to 250, msg_lat the whole message (from the connect in
    tls1)."""
    res = {"acked": [], "acked_in_time": 0, "refused": 0, "errors": [],
           "refusals": [], "lat": [], "msg_lat": []}
    out.append(res)
    pw = bench_password(user)

    def session():
        if mode == "plain":
            c = Conn(d.port, src=(src, 0))
            try:
                c.hello()
            except BaseException:
                c.sock.close()
                raise
            return c
        c = tls_session(d.msa_port, ctx, src)[0]
        try:
            code, line = c.auth_plain(user, pw)
            if code != 235:
                raise BenchError("AUTH %s: %r" % (user, line))
        except BaseException:
            c.sock.close()
            raise
        return c
    conn = None
    if mode != "tls1":
        try:
            conn = session()
        except (OSError, BenchError, ValueError) as e:
            res["errors"].append("connect: %s" % e)
            ready.release()
            return
    ready.release()
    mail = b"MAIL FROM:<%s> SIZE=%d\r\n" % (user.encode(), len(body))
    rcpt_cmd = b"RCPT TO:<%s>\r\n" % rcpt.encode()
    try:
        while time.monotonic() < start_at and not stop.is_set():
            time.sleep(min(0.01, max(0.0, start_at - time.monotonic())))
        n = 0
        while n < MAX_MSGS_PER_CLIENT and not stop.is_set():
            t_start = time.monotonic()
            if t_start >= deadline or t_start >= hard_end:
                break
            n += 1
            if mode == "tls1":
                conn = session()
            t0 = time.monotonic()
            refused = None
            for c, want in ((mail, 250), (rcpt_cmd, 250), (b"DATA\r\n", 354)):
                code, line = conn.cmd(c)
                if code != want:
                    refused = line
                    break
            if refused is None:
                code, line = conn.cmd(body)
                t1 = time.monotonic()
                if code == 250:
                    res["acked"].append(line.split()[-1].decode()
                                        if b"queued" in line else None)
                    res["lat"].append(t1 - t0)
                    res["msg_lat"].append(t1 - t_start)
                    if t1 <= deadline:
                        res["acked_in_time"] += 1
                else:
                    refused = line
            else:
                conn.cmd(b"RSET\r\n")
            if refused is not None:
                res["refused"] += 1
                if len(res["refusals"]) < 5:
                    res["refusals"].append(refused.decode(errors="replace"))
            if mode == "tls1":
                c, conn = conn, None
                c.close()
    except (OSError, BenchError, ValueError) as e:
        res["errors"].append("session: %s" % e)
    finally:
        if conn is not None:
            conn.close()


TLS_MODES = ("plain", "tls", "tls1")


def tls_levels(build, base, max_conn, levels, seconds, size, ctx, notes,
               daemons, hash_seconds):
    """For each client level: plain on the MX port, STARTTLS+AUTH on the
    msa port with one connection per client, and with one connection per
    message; each run with its own daemon, the same messages (From: the
    client's account, with Date:), every client from its own address as
    its own account.  Returns the levels; the daemons go to daemons
    (for the cleanup).  Before each tls1 run, the hash is timed again
    (hash_seconds), the limit of that run."""
    rcpt = "%s@%s" % (SINK_ALIAS, LOCAL_DOMAIN)
    accounts = ["tls%d@%s" % (i + 1, LOCAL_DOMAIN)
                for i in range(max(levels))]
    srcs = ["127.0.2.%d" % (i + 1) for i in range(max(levels))]
    creds = None
    out = []
    for n in levels:
        row = {"clients": n}
        for mode in TLS_MODES:
            print("bench: TLS against plain, %s, %d client(s), %.1f s ..." % (
                mode, n, seconds), file=sys.stderr)
            d = Daemon(build, base / ("tls-%s-%d" % (mode, n)), max_conn,
                       msa=True)
            daemons.append(d)
            if creds is None:
                for a in accounts:
                    d.add_user(a, bench_password(a))
                creds = d.knobs(("credentials",)).get(
                    "credentials", "").strip('"')
            else:
                # The same store, copied: no hashing per daemon.
                dst = d.knobs(("credentials",)).get(
                    "credentials", "").strip('"')
                shutil.copyfile(creds, dst)
                os.chmod(dst, 0o600)
            d.start()
            hadj = hash_cost(hash_seconds) if mode == "tls1" else None
            bodies = [make_body(size, to=rcpt, frm=accounts[k], date=True)
                      for k in range(n)]
            L = run_level(d, n, seconds, rcpt, None, worker=(
                lambda k, *rest, mode=mode, d=d: submit_worker(
                    d, ctx, mode, srcs[k], accounts[k], rcpt, bodies[k], k,
                    *rest)))
            if not d.alive():
                raise BenchError("ternd died during the TLS level (%s, %d "
                                 "clients):\n%s" % (mode, n, d.logtail()))
            ids = L.pop("_ids")
            L["verify"] = verify(d, "held", ids, 30 + seconds * 2)
            L["hash_adjacent"] = hadj
            row[mode] = L
            what = "TLS against plain, %s, %d clients" % (mode, n)
            if L["verify"]["lost"]:
                notes.append("%s: %d acknowledged message(s) not found in "
                             "the spool: %s" % (
                                 what, L["verify"]["lost"],
                                 L["verify"]["missing_sample"]))
            if L["n_errors"] or L["stuck_clients"]:
                notes.append("%s: %d client error(s), %d stuck: %s" % (
                    what, L["n_errors"], L["stuck_clients"],
                    "; ".join(L["errors"][:3])))
            if L["refused"]:
                notes.append("%s: %d message(s) refused (never "
                             "acknowledged): %s" % (
                                 what, L["refused"],
                                 "; ".join(L["refusal_samples"][:3])))
            d.stop()
        p = row["plain"]["msgs_per_s"]
        row["ratio"] = {m: round(row[m]["msgs_per_s"] / p, 3) if p else None
                        for m in ("tls", "tls1")}
        out.append(row)
    return out


def brute_worker(port, ctx, src, user, start, deadline, retry_s, res, stop):
    """Wrong passwords for user from src, one at a time, each sent as
    soon as the previous answer came (after a 454 refusal, retry_s
    later), until deadline; a closed session is opened again.  Records
    (sent, answer time, code) with times from start."""
    conn = None
    i = 0
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            if conn is None:
                try:
                    conn = tls_session(port, ctx, src)[0]
                    res["sessions"] += 1
                except (OSError, BenchError, ValueError) as e:
                    res["errors"].append("connect: %s" % e)
                    if len(res["errors"]) > 20:
                        return
                    time.sleep(0.5)
                    continue
            i += 1
            t0 = time.monotonic()
            try:
                # An answer still held back at the deadline is not waited
                # for: the run stays bounded.
                conn.sock.settimeout(max(0.05, deadline - t0))
                code, line = conn.auth_plain(user, "Wrong-%d-%s" % (i, src))
            except (socket.timeout, TimeoutError):
                res["pending_at_end"] += 1
                return
            except (OSError, BenchError, ValueError):
                conn.sock.close()       # closed by the server: again
                conn = None
                res["closed"] += 1
                continue
            t1 = time.monotonic()
            res["events"].append((t0 - start, t1 - t0, code))
            if code == 535:
                continue
            if code == 454:
                time.sleep(retry_s)
                continue
            if code == 421:             # max-errors: a new session
                conn.sock.close()
                conn = None
                res["closed"] += 1
                continue
            res["errors"].append("AUTH answered %r" % line)
            if code == 235:
                return
            conn.cmd(b"RSET\r\n")
    finally:
        if conn is not None:
            conn.sock.close()


def brute_run(d, user, srcs, seconds, retry_s, ctx):
    """len(srcs) clients, each from its own address, guess user's
    password for seconds."""
    out, threads = [], []
    stop = threading.Event()
    start = time.monotonic()
    deadline = start + seconds
    for src in srcs:
        res = {"events": [], "errors": [], "sessions": 0, "closed": 0,
               "pending_at_end": 0}
        out.append(res)
        threads.append(threading.Thread(target=brute_worker, daemon=True,
                                        args=(d.msa_port, ctx, src, user,
                                              start, deadline, retry_s,
                                              res, stop)))
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join(max(0.0, deadline + IO_TIMEOUT - time.monotonic()))
    except KeyboardInterrupt:
        stop.set()
        raise
    stop.set()
    ev = sorted(e for r in out for e in r["events"])
    checked = sorted((e for e in ev if e[2] == 535),
                     key=lambda e: e[0] + e[1])     # in order of answer
    refused = [e for e in ev if e[2] == 454]
    first_ref = refused[0] if refused else None
    errors = [e for r in out for e in r["errors"]]
    logc = log_counts(d.log, ("vault: event=auth result=fail",
                              "vault: event=auth result=tempfail",
                              "vault: event=auth result=ok"))
    return {"addresses": len(srcs), "account": user, "seconds": seconds,
            "guesses": len(checked),
            "guesses_per_min": round(len(checked) * 60.0 / seconds, 2),
            "delays_s": [round(e[1], 2) for e in checked],
            "answered_s": [round(e[0] + e[1], 2) for e in checked],
            "refused": len(refused),
            "first_refusal_s": round(first_ref[0], 2) if first_ref else None,
            "guesses_before_refusal": sum(1 for e in checked
                                          if first_ref is None or
                                          e[0] < first_ref[0])
            if first_ref else None,
            "refusal_ms_p50": round(percentile(sorted(
                e[1] for e in refused), 50) * 1000, 2) if refused else None,
            "sessions": sum(r["sessions"] for r in out),
            "closed_by_server": sum(r["closed"] for r in out),
            "pending_at_end": sum(r["pending_at_end"] for r in out),
            "accepted": sum(1 for e in ev if e[2] == 235),
            "errors": errors[:10], "n_errors": len(errors),
            "stuck_clients": sum(1 for t in threads if t.is_alive()),
            "vault_log": logc}


# ---- output ----------------------------------------------------------------

def mib(kib):
    return None if kib is None else kib / 1024.0


def fmt(v, spec, width):
    if v is None:
        return "-".rjust(width)
    return format(v, spec).rjust(width)


def print_relay(R):
    X = R.get("relay")
    if not X or not X.get("levels"):
        return
    k = X.get("knobs", {})
    print("5. relay: accepted, then delivered to a remote sink (%s, the MX "
          "of %s, found" % (X["sink"], SINK_DOMAIN))
    print("   through dnsserver.py; aiosmtpd in its own process), %d "
          "messages of %d B per run" % (R["params"]["relay_messages"],
                                        R["params"]["size"]))
    print("   ternd: " + ", ".join("%s %s" % (n, k[n]) for n in RELAY_KNOBS
                                   if n in k))
    hdr = ("rcpt", "clients", "accept", "deliv", "d/a", "sink", "d/sink",
           "drain s", "e2e p50", "p99", "max", "acked", "deliv", "txns",
           "conns", "defer", "lost", "ternd", "queue", "smtp", "sink")
    w = (4, 7, 7, 7, 5, 7, 6, 7, 7, 7, 7, 5, 5, 5, 5, 5, 4, 5, 5, 5, 5)
    print("   " + " " * (sum(w[:2]) + 2) + "-- msg/s --".center(
        sum(w[2:4]) + 1) + " " * (w[4] + 1) + "cap/s".rjust(w[5]) + " " +
        " " * (w[6] + w[7] + 2) + "- end to end, ms -".center(
            sum(w[8:11]) + 2) + " " * (sum(w[11:17]) + 7) +
        "CPU % of a core".center(sum(w[17:]) + 3))
    print("   " + " ".join(h.rjust(x) for h, x in zip(hdr, w)))
    for L in X["levels"]:
        c = L["sink_capacity"]
        ro = L["daemon_cpu_pct_by_role"]
        row = [str(L["rcpts_per_msg"]).rjust(w[0]),
               str(L["clients"]).rjust(w[1]),
               fmt(L["accept_per_s"], ".1f", w[2]),
               fmt(L["delivered_per_s"], ".1f", w[3]),
               fmt(L["delivered_per_s"] / L["accept_per_s"]
                   if L["delivered_per_s"] and L["accept_per_s"] else None,
                   ".2f", w[4]),
               fmt(c["msgs_per_s"], ".0f", w[5]),
               fmt(L["ratio_to_sink"], ".3f", w[6]),
               fmt(L["drain_s"], ".2f", w[7]),
               fmt(L["e2e_ms_p50"], ".0f", w[8]),
               fmt(L["e2e_ms_p99"], ".0f", w[9]),
               fmt(L["e2e_ms_max"], ".0f", w[10]),
               str(L["acked"]).rjust(w[11]),
               str(L["delivered"]).rjust(w[12]),
               str(L["sink_transactions"]).rjust(w[13]),
               str(L["sink_connections"]).rjust(w[14]),
               str(L["log"].get("status=deferred", 0)).rjust(w[15]),
               str(L["lost"]).rjust(w[16]),
               fmt(L["daemon_cpu_pct"], ".0f", w[17]),
               fmt(ro.get("queue"), ".0f", w[18]),
               fmt(ro.get("smtp"), ".0f", w[19]),
               fmt(L["sink_cpu_pct"], ".0f", w[20])]
        print("   " + " ".join(row))
    print("   accept: 250s per second from the start to the last 250; deliv: "
          "messages whose every")
    print("   recipient reached the sink, per second from the first 250 to "
          "the last arrival; d/a = deliv/accept;")
    print("   sink cap/s: the same messages sent straight to the sink at the "
          "same concurrency (the")
    print("   bench's client, one command at a time), d/sink = deliv / that "
          "limit; drain: from the last")
    print("   250 until the queue is empty; e2e: from a message's 250 to its "
          "arrival; txns: transactions")
    print("   the sink got (several recipients share one when grouped), "
          "conns: EHLOs it saw;")
    print("   defer: status=deferred in ternd's log; lost: acknowledged, "
          "neither at the sink nor queued")
    for L in X["levels"]:
        c = L["sink_capacity"]
        print("   %d rcpt, %2d clients: acked %d, all at the sink: %s, queue "
              "empty: %s (ternctl queue: %s); accept p50/p99 %s/%s ms; "
              "sink cap run: sink CPU %s%%" % (
                  L["rcpts_per_msg"], L["clients"], L["acked"],
                  "yes" if not L["missing"] else "NO, %d missing (%d still "
                  "queued)" % (L["missing"], L["still_queued"]),
                  "yes" if L["queue_empty"] else "NO",
                  L["ternctl_queue"], fmt(L["accept_lat_ms_p50"], ".1f", 0),
                  fmt(L["accept_lat_ms_p99"], ".1f", 0),
                  fmt(c["sink_cpu_pct"], ".0f", 0)))
    print()

def print_submission(R):
    """6. AUTH rate, 7. TLS against plain, 8. the brute-force throttle."""
    H = R.get("hash")
    if not H:
        return
    hms = H["ms_p50"]
    limit = 1000.0 / hms if hms else None
    print("6.-8. submission: the msa listener, STARTTLS (ternd's self-signed "
          "certificate, not verified)")
    print("   and AUTH PLAIN; every client from its own 127.0.x.y address "
          "as its own account")
    print("   one password check (libcrypt in the bench's process, %s cost "
          "%d, as the vault), timed" % (H["setting"], H["cost"]))
    print("   first: %.2f ms p50, min %.2f, %d checks; the vault checks one "
          "at a time: at most %.1f" % (hms, H["ms_min"], H["checks"], limit))
    print("   checks/s, %.0f a minute (the limit of 8.; 6. and 7. time it "
          "again next to their runs)" % (limit * 60))
    print()
    if R.get("auth"):
        print("6. AUTH: logins per second, %.1f s per level; a connection "
              "per login: connect, EHLO;" % R["params"]["auth_seconds"])
        print("   STARTTLS, handshake, EHLO; AUTH PLAIN to 235; QUIT to 221")
        hdr = ("clients", "logins/s", "hash ms", "ratio", "connect", "tls",
               "auth", "quit", "total", "auth p99", "auth/hash",
               "vault ms", "errors", "client", "ternd", "smtp", "vault")
        w = (7, 8, 7, 5, 7, 5, 6, 5, 6, 8, 9, 8, 6, 6, 5, 5, 5)
        print("   " + " " * (sum(w[:4]) + 4) +
              "--- ms per login, p50 ---".center(sum(w[4:9]) + 4) + " " *
              (sum(w[9:13]) + 4) + "CPU % of a core".center(sum(w[13:]) + 3))
        print("   " + " ".join(h.rjust(x) for h, x in zip(hdr, w)))
        for L in R["auth"]:
            m, ro = L["ms_p50"], L["daemon_cpu_pct_by_role"]
            h = (L.get("hash_adjacent") or H)["ms_p50"]
            row = [str(L["clients"]).rjust(w[0]),
                   fmt(L["logins_per_s"], ".1f", w[1]),
                   fmt(h, ".1f", w[2]),
                   fmt(L["logins_per_s"] * h / 1000.0 if h else None, ".2f",
                       w[3]),
                   fmt(m["plain"], ".2f", w[4]), fmt(m["tls"], ".2f", w[5]),
                   fmt(m["auth"], ".1f", w[6]), fmt(m["quit"], ".2f", w[7]),
                   fmt(m["total"], ".1f", w[8]),
                   fmt(L["auth_ms_p99"], ".1f", w[9]),
                   fmt(m["auth"] / h if m["auth"] and h else None,
                       ".2f", w[10]),
                   fmt(L.get("vault_cpu_ms_per_login"), ".1f", w[11]),
                   str(L["n_errors"]).rjust(w[12]),
                   fmt(L["client_cpu_pct"], ".0f", w[13]),
                   fmt(sum(ro.values()), ".0f", w[14]),
                   fmt(ro.get("smtp"), ".0f", w[15]),
                   fmt(ro.get("vault"), ".0f", w[16])]
            print("   " + " ".join(row))
        print("   hash ms: one check timed again just before the level "
              "(p50); ratio = logins/s / the checks/s")
        print("   one vault can hash at that cost (1000 / hash ms); auth/hash "
              "= the AUTH round trip (p50) /")
        print("   one check: what a login costs beyond the hash (with several "
              "clients, the wait for the")
        print("   vault's one check at a time too); vault ms: the vault's CPU "
              "time per login; connect =")
        print("   connect, greeting, EHLO")
        print()
    if R.get("tls"):
        print("7. acceptance over TLS against plain: held mode (as 2.), %.1f "
              "s per run, one daemon per run;" % R["params"]["seconds"])
        print("   plain: the MX port, one connection per client; tls: "
              "STARTTLS and AUTH once, then the")
        print("   messages on that connection; tls1: a connection with "
              "STARTTLS and AUTH for every message")
        hdr = ("clients", "mode", "msg/s", "/plain", "/hash", "p50 ms",
               "p99 ms", "msg p50", "acked", "lost", "client", "ternd",
               "smtp", "queue", "vault")
        w = (7, 5, 8, 6, 6, 7, 7, 7, 7, 4, 6, 6, 6, 6, 6)
        print("   " + " " * (sum(w[:10]) + 10) +
              "CPU % of a core".center(sum(w[10:]) + 4))
        print("   " + " ".join(h.rjust(x) for h, x in zip(hdr, w)))
        for row in R["tls"]:
            p = row["plain"]["msgs_per_s"]
            for mode in TLS_MODES:
                L = row[mode]
                ro = L["daemon_cpu_pct_by_role"]
                cells = [str(row["clients"]).rjust(w[0]), mode.rjust(w[1]),
                         fmt(L["msgs_per_s"], ".1f", w[2]),
                         fmt(L["msgs_per_s"] / p if p else None, ".3f",
                             w[3]),
                         fmt(L["msgs_per_s"] * L["hash_adjacent"]["ms_p50"]
                             / 1000.0 if L.get("hash_adjacent") else None,
                             ".2f", w[4]),
                         fmt(L["lat_ms_p50"], ".2f", w[5]),
                         fmt(L["lat_ms_p99"], ".2f", w[6]),
                         fmt(L["msg_ms_p50"], ".1f", w[7]),
                         str(L["acked"]).rjust(w[8]),
                         str(L["verify"]["lost"]).rjust(w[9]),
                         fmt(L["client_cpu_pct"], ".0f", w[10]),
                         fmt(L["daemon_cpu_pct"], ".0f", w[11]),
                         fmt(ro.get("smtp"), ".0f", w[12]),
                         fmt(ro.get("queue"), ".0f", w[13]),
                         fmt(ro.get("vault"), ".0f", w[14])]
                print("   " + " ".join(cells))
        print("   /plain = msg/s / the plain run's at the same level (TLS/"
              "plain); /hash (tls1) = msg/s / the")
        print("   checks/s one vault can hash, the hash timed again just "
              "before the run (%s ms);" % ", ".join(
                  "%.1f" % row["tls1"]["hash_adjacent"]["ms_p50"]
                  for row in R["tls"] if row["tls1"].get("hash_adjacent")))
        print("   p50/p99: MAIL to 250; msg p50: a whole message (in tls1 "
              "from the connect); lost:")
        print("   acknowledged and not in the spool")
        print()
    B = R.get("bruteforce")
    if B:
        one, many = B["one_address"], B["many_addresses"]
        print("8. brute force against the throttle: wrong passwords for %s "
              "(AUTH PLAIN inside TLS)," % one["account"])
        print("   one at a time per address, each as soon as the answer "
              "came (%.1f s later after a 454), for" %
              B["retry_after_refusal_s"])
        print("   %.0f s; one daemon per run, the two runs at the same time"
              % one["seconds"])
        hdr = ("addresses", "guesses", "/minute", "ratio", "refused",
               "1st refusal", "after", "refusal ms", "sessions", "pending")
        w = (9, 7, 7, 8, 7, 11, 7, 10, 8, 7)
        print("   " + " ".join(h.rjust(x) for h, x in zip(hdr, w)))
        for X in (one, many):
            cells = [str(X["addresses"]).rjust(w[0]),
                     str(X["guesses"]).rjust(w[1]),
                     fmt(X["guesses_per_min"], ".1f", w[2]),
                     fmt(X["guesses_per_min"] / (limit * 60) if limit
                         else None, ".4f", w[3]),
                     str(X["refused"]).rjust(w[4]),
                     ("-" if X["first_refusal_s"] is None else
                      "%.1f s" % X["first_refusal_s"]).rjust(w[5]),
                     fmt(X["guesses_before_refusal"], "d", w[6]),
                     fmt(X["refusal_ms_p50"], ".2f", w[7]),
                     str(X["sessions"]).rjust(w[8]),
                     str(X["pending_at_end"]).rjust(w[9])]
            print("   " + " ".join(cells))
        for X in (one, many):
            print("   %d address(es): delays, s (the answer time of each "
                  "checked guess, in order of answer):" % X["addresses"])
            print("      " + (" ".join("%.1f" % x for x in X["delays_s"])
                              or "-"))
            print("      answered at, s from the start: " +
                  (" ".join("%.1f" % x for x in X["answered_s"]) or "-"))
            v = X["vault_log"]
            print("      vault log: %d failures, %d refusals (tempfail), %d "
                  "logins; closed by the server: %d" % (
                      v.get("vault: event=auth result=fail", 0),
                      v.get("vault: event=auth result=tempfail", 0),
                      v.get("vault: event=auth result=ok", 0),
                      X["closed_by_server"]))
        print("   guesses: 535 answers (each a password checked) within the "
              "run; /minute = guesses per")
        print("   minute over the run; ratio = that / the checks a minute "
              "one vault could hash unthrottled;")
        print("   refused: 454 4.7.0 answers (no check); 1st refusal: when "
              "the first refused attempt was")
        print("   sent, after: guesses sent before it; pending: a guess "
              "whose answer was still held at the end")
        print()


def print_table(R):
    env = R["env"]
    print()
    print("Tern benchmark  %s  build %s" % (env["date"], env["build"]))
    print("host: %s, %d CPUs, kernel %s; spool on %s (%s%s, %s)" % (
        env["host"], env["cpus"], env["kernel"], env["tmpdir"],
        env["fs_type"], env.get("fs_journal", ""), env["fs_device"]))
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
        print("   for comparison, the syncfs way of the daemon's commit "
              "(it times both ways and takes")
        print("   the cheaper): %.1f files/s; per file, us: %s" % (
            f["files_per_s"], ", ".join("%s %.0f" % (k, v) for k, v in
                                        f["us_per_step"].items())))
    print()
    for mode, levels in R["accept"].items():
        if mode == "held":
            off = all(L.get("offline") for L in levels)
            what = ("recipient %s@%s, an alias of %s:\n   accepted and kept "
                    "in the queue, not delivered%s" % (
                        SINK_ALIAS, LOCAL_DOMAIN, REMOTE_ADDR,
                        " (its route goes to a dead loopback port: one "
                        "refused\n   connection per message, deferred for "
                        "1 h, no delivery slot limit)" if off else
                        " (this build takes no resolver/route/limits "
                        "config)"))
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
                at = L.get("delivery_attempts")
                if at:
                    print("      delivery attempts logged: %d for %d messages"
                          " (at most %d for one), %s" % (
                              at["total"], at["messages"],
                              at["max_per_message"], ", ".join(
                                  "%s %d" % kv for kv in
                                  sorted(at["status"].items())) or "-"))
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
    if R.get("versus"):
        import versus
        versus.print_versus(R["versus"], R["fsync"]["files_per_s"])
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
    print_relay(R)
    print_submission(R)
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
    ap.add_argument("--relay-messages", type=int, default=150, metavar="N",
                    help="messages per relay level (0: no relay levels)")
    ap.add_argument("--sink-messages", type=int, default=1000, metavar="N",
                    help="messages per run of the sink's own rate")
    ap.add_argument("--relay-rcpts", default="1,5",
                    help="comma-separated recipients per message at the "
                    "sink domain, one relay run per value and level")
    ap.add_argument("--relay-drain", type=float, default=90.0,
                    metavar="SECONDS",
                    help="longest wait for the relayed messages to reach "
                    "the sink and leave the queue, after the last 250")
    ap.add_argument("--relay-conf", action="append", default=[],
                    metavar="LINE",
                    help="a config line for the relay daemons, e.g. "
                    "'max-domain-connections 20' (repeatable)")
    ap.add_argument("--auth-clients", default="1,4", metavar="LEVELS",
                    help="comma-separated client levels of the AUTH rate "
                    "(logins per second); '' or 0: none")
    ap.add_argument("--auth-seconds", type=float, default=5.0,
                    help="duration of each AUTH level")
    ap.add_argument("--hash-seconds", type=float, default=1.0,
                    help="how long to time the password hash (at least 5 "
                    "checks)")
    ap.add_argument("--tls-clients", default="1,10", metavar="LEVELS",
                    help="comma-separated client levels of the TLS against "
                    "plain acceptance (each --seconds long, 3 runs per "
                    "level); '' or 0: none")
    ap.add_argument("--bruteforce-seconds", type=float, default=100.0,
                    metavar="SECONDS",
                    help="duration of the brute-force runs against the "
                    "throttle (0: none)")
    ap.add_argument("--bruteforce-addrs", type=int, default=16, metavar="N",
                    help="source addresses of the many-address brute-force "
                    "run")
    ap.add_argument("--bruteforce-retry", type=float, default=0.2,
                    metavar="SECONDS",
                    help="pause of a brute-force client after a refusal "
                    "(454), before it tries again")
    ap.add_argument("--serve-sink", help=argparse.SUPPRESS)
    ap.add_argument("--sink-log", help=argparse.SUPPRESS)
    ap.add_argument("--idle", type=int, default=500,
                    help="idle connections for the memory figure")
    ap.add_argument("--tmpdir", default=None,
                    help="where the temp dir (spool) goes; default $TMPDIR "
                    "or /tmp")
    ap.add_argument("--json", default="obj/bench/results.json")
    ap.add_argument("--strace", action="store_true",
                    help="count the daemon's file and sync syscalls per "
                    "message with strace -c (slows the daemon down)")
    ap.add_argument("--versus-clients", default="1,10,50", metavar="LEVELS",
                    help="9.: client levels of the runs against Postfix "
                    "('' to leave them out)")
    ap.add_argument("--messages", type=int, default=2000, metavar="N",
                    help="9.: messages per level against Postfix (300 "
                    "for a short run)")
    ap.add_argument("--dkim-messages", type=int, default=0, metavar="N",
                    help="10.: messages per DKIM signing run (0: off)")
    ap.add_argument("--checks-clients", type=int, default=10, metavar="N",
                    help="11.: clients for the checks on/off runs (0: skip)")
    ap.add_argument("--checks-only", action="store_true",
                    help="run only the checks on/off comparison")
    ap.add_argument("--dkim-only", action="store_true",
                    help="run 10. (DKIM signing cost) alone")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temp dir (for inspection)")
    a = ap.parse_args()
    a.levels = [int(x) for x in a.clients.split(",") if x.strip()]
    if a.serve_sink:
        return a
    try:
        a.rcpt_levels = [int(x) for x in a.relay_rcpts.split(",")
                         if x.strip()]
    except ValueError:
        ap.error("--relay-rcpts: numbers")
    if not a.rcpt_levels or min(a.rcpt_levels) < 1 or \
            max(a.rcpt_levels) > 100:
        ap.error("--relay-rcpts: from 1 to 100")
    if not 0 <= a.relay_messages <= 100000:
        ap.error("--relay-messages: 0 to 100000")
    if not 1 <= a.sink_messages <= 100000:
        ap.error("--sink-messages: 1 to 100000")
    if not 1 <= a.relay_drain <= 3600:
        ap.error("--relay-drain: 1 to 3600 s")
    if not a.levels or min(a.levels) < 1 or max(a.levels) > 1000:
        ap.error("--clients: levels from 1 to 1000")
    try:
        a.auth_levels = [int(x) for x in a.auth_clients.split(",")
                         if x.strip() and int(x) != 0]
        a.tls_levels = [int(x) for x in a.tls_clients.split(",")
                        if x.strip() and int(x) != 0]
    except ValueError:
        ap.error("--auth-clients, --tls-clients: numbers")
    if any(not 1 <= n <= 250 for n in a.auth_levels + a.tls_levels):
        ap.error("--auth-clients, --tls-clients: levels from 1 to 250 "
                 "(one 127.0.x.y address each)")
    if not 1 <= a.bruteforce_addrs <= 250:
        ap.error("--bruteforce-addrs: 1 to 250")
    if not (0 < a.auth_seconds <= 600 and 0 < a.hash_seconds <= 600 and
            0 <= a.bruteforce_seconds <= 3600 and
            0 <= a.bruteforce_retry <= 60):
        ap.error("--auth-seconds, --hash-seconds: up to 600 s; "
                 "--bruteforce-seconds: up to 3600 s, "
                 "--bruteforce-retry: up to 60 s")
    if not (0 < a.seconds <= 600 and 0 < a.fsync_seconds <= 600 and
            0 <= a.fsync_adjacent <= 600 and 0 <= a.syncfs_seconds <= 600):
        ap.error("durations from 0 to 600 s")
    if a.size < 512 or a.size > 16 << 20:
        ap.error("--size: 512 bytes to 16 MiB")
    if a.idle < 0 or a.idle > 20000:
        ap.error("--idle: 0 to 20000")
    try:
        a.versus_levels = [int(x) for x in a.versus_clients.split(",")
                           if x.strip() and int(x) != 0]
    except ValueError:
        ap.error("--versus-clients: numbers")
    if any(not 1 <= n <= 1000 for n in a.versus_levels) or \
            not 1 <= a.messages <= 100000:
        ap.error("--versus-clients: 1 to 1000; --messages: 1 to 100000")
    return a


# Deliveries in flight in the held mode: far above what a level keeps
# busy (each attempt is refused at once), and small enough that the smtp
# process's descriptor budget (2 per connection, 3 per delivery) fits a
# hard limit of 20000.
HELD_DELIVERIES = 2000


def run_versus(build, base, a, max_conn, daemons, R):
    """9.: Tern against Postfix; 1 if Tern lost or failed something."""
    import versus
    why = versus.unavailable()
    if why:
        R["notes"].append("9. against Postfix left out: " + why)
        return 0
    try:
        R["versus"] = versus.versus(build, base, a.versus_levels,
                                    a.messages, a.size, max_conn, daemons)
    except versus.pfmod.PostfixError as e:
        R["notes"].append("9. against Postfix: Postfix failed: %s" %
                          str(e).splitlines()[0])
        return 0
    status = 0
    for row in R["versus"]["levels"]:
        t = row["tern"]
        if t["lost"] or t["n_errors"] or t["duplicates"]:
            status = 1
            R["notes"].append("9., %d clients: ternd lost %d, %d client "
                              "error(s), %d duplicate(s): %s" % (
                                  row["clients"], t["lost"], t["n_errors"],
                                  t["duplicates"], "; ".join(t["errors"])))
        if row["postfix"]["lost"]:
            R["notes"].append("9., %d clients: Postfix did not deliver %d "
                              "within the drain" % (row["clients"],
                                                    row["postfix"]["lost"]))
    return status


def dkim_sign_cost(build, base, max_conn, n, size, daemons):
    """10.: per-message latency unsigned, RSA-2048 and Ed25519 signed."""
    import re
    out = {"messages": n, "runs": {}}
    for kind in ("none", "rsa", "ed25519"):
        print("bench: DKIM signing, %s, %d messages ..." % (kind, n),
              file=sys.stderr)
        d = Daemon(build, base / ("dkim-" + kind), max_conn)
        daemons.append(d)
        # dkim-key-dir is in the temp dir already (relocations).
        conf = d.conf.read_text() + "dkim-sign-trusted yes\n"
        d.conf.write_text(conf)
        if kind != "none":
            r = d.ctl("dkim", "keygen", LOCAL_DOMAIN, "b" + kind, kind)
            m = re.search(r"^; the key: (\S+) ", r.stdout, re.M)
            if r.returncode != 0 or not m:
                raise BenchError("ternctl dkim keygen: " + r.stderr.strip())
            d.conf.write_text(conf + 'dkim-key %s b%s "%s"\n' % (
                LOCAL_DOMAIN, kind, m.group(1)))
        d.start()
        msgs = [(mid, b.replace(b"From: <bench@client.bench.test>",
                                b"From: <bench@" + LOCAL_DOMAIN.encode() +
                                b">", 1))
                for mid, b in tagged_bodies(size, "dkim-" + kind, n,
                                            "%s@%s" % (SINK_ALIAS,
                                                       LOCAL_DOMAIN))]
        res = send_messages("127.0.0.1", d.port, 1, msgs,
                            ["%s@%s" % (SINK_ALIAS, LOCAL_DOMAIN)], 600)
        lat = [b - a for a, b in zip([res["start"]] +
                                     [x[2] for x in res["acked"]],
                                     [x[2] for x in res["acked"]])]
        signed = log_counts(d.log, ["event=dkim-sign result=ok"])[
            "event=dkim-sign result=ok"]
        d.stop()
        if res["n_errors"] or len(res["acked"]) != n or \
                signed != (0 if kind == "none" else n):
            raise BenchError("DKIM %s: %d of %d acknowledged, %d signed, "
                             "%s" % (kind, len(res["acked"]), n, signed,
                                     "; ".join(res["errors"][:2])))
        out["runs"][kind] = {"p50_ms": res["lat_ms_p50"],
                             "mean_ms": round(1000 * sum(lat) / len(lat),
                                              3),
                             "rate": res["rate"], "signed": signed}
    base_ms = out["runs"]["none"]
    for kind in ("rsa", "ed25519"):
        r = out["runs"][kind]
        r["cost_p50_ms"] = round(r["p50_ms"] - base_ms["p50_ms"], 3)
        r["cost_mean_ms"] = round(r["mean_ms"] - base_ms["mean_ms"], 3)
    return out


def print_dkim(D):
    print("10. DKIM signing, %d messages each, one client (ms per "
          "message)" % D["messages"])
    print("   %-10s %9s %9s %9s %11s %11s" % ("key", "p50", "mean",
                                              "msg/s", "cost p50",
                                              "cost mean"))
    for kind in ("none", "rsa", "ed25519"):
        r = D["runs"][kind]
        print("   %-10s %9.3f %9.3f %9.1f %11s %11s" % (
            kind, r["p50_ms"], r["mean_ms"], r["rate"],
            "%.3f" % r["cost_p50_ms"] if "cost_p50_ms" in r else "-",
            "%.3f" % r["cost_mean_ms"] if "cost_mean_ms" in r else "-"))


def checks_cost(build, base, a, max_conn, daemons):
    """11.: acceptance with SPF, DKIM verification and DMARC off, then
    on (the sender's domain publishes p=reject; every message passes)."""
    import base64
    import re
    try:
        import dkim
    except ImportError as e:
        raise BenchError("checks: python3-dkim missing (%s)" % e)
    pem = subprocess.run(["openssl", "genpkey", "-algorithm", "RSA",
                          "-pkeyopt", "rsa_keygen_bits:2048"],
                         capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubout", "-outform", "DER"],
                         input=pem, capture_output=True, check=True).stdout
    p = "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()
    sys.path.insert(0, str(ROOT / "regress" / "integration"))
    try:
        from dnsserver import DNSServer
    finally:
        sys.path.pop(0)
    dns = DNSServer({
        "client.bench.test.": {"TXT": ["v=spf1 ip4:127.0.0.0/8 -all"]},
        "_dmarc.client.bench.test.": {"TXT": ["v=DMARC1; p=reject"]},
        "b._domainkey.client.bench.test.": {
            "TXT": [[p[i:i + 250] for i in range(0, len(p), 250)]]},
    }).start()
    body = make_body(a.size)
    msg = body[:-3]                 # without the final "."
    body = dkim.sign(msg, b"b", b"client.bench.test", pem,
                     canonicalize=(b"relaxed", b"relaxed")) + body
    rcpt = "%s@%s" % (SINK_ALIAS, LOCAL_DOMAIN)
    out = {"clients": a.checks_clients, "seconds": a.seconds}
    try:
        for mode in ("off", "on"):
            print("bench: checks %s, %d client(s), %.1f s ..." % (
                mode, a.checks_clients, a.seconds), file=sys.stderr)
            d = Daemon(build, base / ("checks-" + mode), max_conn)
            daemons.append(d)
            conf = d.conf.read_text().replace(
                "trusted-network 127.0.0.0/8\n", "")
            conf = re.sub(r"(?m)^resolver .*$", "resolver 127.0.0.1 port %d"
                          % dns.port, conf)
            yes = "yes" if mode == "on" else "no"
            d.conf.write_text(conf + "spf %s\ndkim-verify %s\ndmarc %s\n" % (
                yes, yes, "enforce" if mode == "on" else "off"))
            d.start()
            L = run_level(d, a.checks_clients, a.seconds, rcpt, body)
            L.pop("_ids")
            passed = log_counts(d.log, ["event=dkim result=pass"])[
                "event=dkim result=pass"]
            dmarc = log_counts(d.log, ["event=dmarc result=pass"])[
                "event=dmarc result=pass"]
            d.stop()
            if L["n_errors"] or L["refused"] or (
                    mode == "on" and (passed < L["acked"] or
                                      dmarc < L["acked"])):
                raise BenchError("checks %s: %d acknowledged, %d refused, "
                                 "%d DKIM passes, %d DMARC passes, %s" % (
                                     mode, L["acked"], L["refused"], passed,
                                     dmarc,
                                     "; ".join(L["errors"][:2] +
                                               L["refusal_samples"][:2])))
            out[mode] = {"msgs_per_s": L["msgs_per_s"],
                         "lat_ms_p50": L["lat_ms_p50"],
                         "daemon_cpu_pct": L["daemon_cpu_pct"],
                         "dkim_pass": passed, "dmarc_pass": dmarc}
    finally:
        dns.stop()
    off = out["off"]["msgs_per_s"]
    out["ratio"] = round(out["on"]["msgs_per_s"] / off, 3) if off else None
    return out


def print_checks(C):
    print("11. MX checks (SPF + DKIM verification + DMARC) on vs off, %d clients, "
          "%.1f s each" % (C["clients"], C["seconds"]))
    print("   %-6s %9s %9s %10s" % ("checks", "msg/s", "p50 ms", "cpu %"))
    for mode in ("off", "on"):
        r = C[mode]
        print("   %-6s %9.1f %9s %10.1f" % (mode, r["msgs_per_s"],
                                           r["lat_ms_p50"],
                                           r["daemon_cpu_pct"]))
    print("   on/off ratio: %s" % C["ratio"])


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
    if a.serve_sink:
        return serve_sink(a.serve_sink, a.sink_log)
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
    nofile = raise_nofile(2 * max_conn + 3 * HELD_DELIVERIES + 256)

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
                "fs_journal": fs_journal(fstype, dev),
                "fs_device": dev, "python": sys.version.split()[0],
                "rlimit_nofile": nofile},
        "params": {"seconds": a.seconds, "fsync_seconds": a.fsync_seconds,
                   "fsync_adjacent_seconds": a.fsync_adjacent,
                   "clients": a.levels, "size": a.size, "mode": a.mode,
                   "idle_connections": a.idle, "message_bytes": len(body),
                   "relay_messages": a.relay_messages,
                   "sink_messages": a.sink_messages,
                   "relay_rcpts": a.rcpt_levels,
                   "relay_drain_s": a.relay_drain,
                   "relay_conf": a.relay_conf,
                   "auth_clients": a.auth_levels,
                   "auth_seconds": a.auth_seconds,
                   "tls_clients": a.tls_levels,
                   "bruteforce_seconds": a.bruteforce_seconds,
                   "bruteforce_addrs": a.bruteforce_addrs},
        "aims": {"ratio": {str(k): v for k, v in AIM_RATIO.items()},
                 "idle_connections_mib": AIM_IDLE_MIB},
        "accept": {},
        "notes": [],
        "json": str(jpath),
    }
    daemons = []
    sink = dns = None
    status = 0
    if a.checks_only:
        try:
            R["checks"] = checks_cost(build, base, a, max_conn, daemons)
            print_checks(R["checks"])
        except BenchError as e:
            print("bench: error: %s" % e, file=sys.stderr)
            status = 1
        finally:
            for d in daemons:
                d.stop()
            shutil.rmtree(base, ignore_errors=True)
        return status
    if a.dkim_only:
        try:
            R["dkim_sign"] = dkim_sign_cost(build, base, max_conn,
                                            a.dkim_messages or 300, a.size,
                                            daemons)
            print_dkim(R["dkim_sign"])
        except BenchError as e:
            print("bench: error: %s" % e, file=sys.stderr)
            status = 1
        finally:
            for d in daemons:
                d.stop()
            shutil.rmtree(base, ignore_errors=True)
        return status
    try:
        if a.checks_clients:
            R["checks"] = checks_cost(build, base, a, max_conn, daemons)
        if a.dkim_messages:
            R["dkim_sign"] = dkim_sign_cost(build, base, max_conn,
                                            a.dkim_messages, a.size,
                                            daemons)
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
                if mode == "held":
                    L["offline"] = d.offline
                    L["delivery_attempts"] = held_attempts(d)
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

        if a.versus_levels:
            status |= run_versus(build, base, a, max_conn, daemons, R)

        # Submission (6.-8.): before the relay runs, whose deliveries
        # delete files (see below).
        if a.auth_levels or a.tls_levels or a.bruteforce_seconds:
            print("bench: the cost of one password check (yescrypt, cost "
                  "%d) ..." % CRED_COST, file=sys.stderr)
            R["hash"] = hash_cost(a.hash_seconds)
            ctx = client_tls_context()
        if a.auth_levels:
            d = Daemon(build, base / "auth", max_conn, msa=True)
            daemons.append(d)
            accounts = ["auth%d@%s" % (i + 1, LOCAL_DOMAIN)
                        for i in range(max(a.auth_levels))]
            srcs = ["127.0.1.%d" % (i + 1) for i in range(len(accounts))]
            for acct in accounts:
                d.add_user(acct, bench_password(acct))
            d.start()
            R["auth"] = []
            for n in a.auth_levels:
                print("bench: AUTH, %d client(s), %.1f s ..." % (
                    n, a.auth_seconds), file=sys.stderr)
                hadj = hash_cost(a.hash_seconds)
                L = auth_level(d, n, a.auth_seconds, accounts, srcs, ctx)
                L["hash_adjacent"] = hadj
                if not d.alive():
                    raise BenchError("ternd died during the AUTH level:\n" +
                                     d.logtail())
                R["auth"].append(L)
                if L["n_errors"] or L["stuck_clients"]:
                    status = 1
                    R["notes"].append("AUTH, %d clients: %d error(s), %d "
                                      "stuck: %s" % (
                                          n, L["n_errors"],
                                          L["stuck_clients"],
                                          "; ".join(L["errors"][:3])))
            d.stop()
        if a.tls_levels:
            R["tls"] = tls_levels(build, base, max_conn, a.tls_levels,
                                  a.seconds, a.size, ctx, R["notes"],
                                  daemons, a.hash_seconds)
            if any(row[m]["verify"]["lost"] or row[m]["n_errors"] or
                   row[m]["stuck_clients"]
                   for row in R["tls"] for m in TLS_MODES):
                status = 1
        if a.bruteforce_seconds:
            print("bench: brute force against the throttle, one address and "
                  "%d addresses, %.0f s ..." % (a.bruteforce_addrs,
                                                a.bruteforce_seconds),
                  file=sys.stderr)
            runs = [("one", ["127.0.3.1"]),
                    ("many", ["127.0.4.%d" % (i + 1)
                              for i in range(a.bruteforce_addrs)])]
            victim = "victim@" + LOCAL_DOMAIN
            bds = []
            for tag, srcs in runs:
                d = Daemon(build, base / ("brute-" + tag), max_conn,
                           msa=True)
                daemons.append(d)
                d.add_user(victim, bench_password(victim))
                d.start()
                bds.append(d)
            res = [None, None]

            def brute(i):
                res[i] = brute_run(bds[i], victim, runs[i][1],
                                   a.bruteforce_seconds,
                                   a.bruteforce_retry, ctx)
            ths = [threading.Thread(target=brute, args=(i,), daemon=True)
                   for i in range(2)]
            for t in ths:
                t.start()
            for t in ths:
                t.join(a.bruteforce_seconds + 2 * IO_TIMEOUT)
            for d in bds:
                if not d.alive():
                    raise BenchError("ternd died during the brute-force "
                                     "run:\n" + d.logtail())
                d.stop()
            if None in res:
                raise BenchError("the brute-force run did not end")
            R["bruteforce"] = {"one_address": res[0],
                               "many_addresses": res[1],
                               "retry_after_refusal_s": a.bruteforce_retry}
            for B in res:
                if B["n_errors"] or B["accepted"] or B["stuck_clients"]:
                    status = 1
                    R["notes"].append("brute force, %d address(es): %d "
                                      "error(s), %d accepted, %d stuck: %s"
                                      % (B["addresses"], B["n_errors"],
                                         B["accepted"], B["stuck_clients"],
                                         "; ".join(B["errors"][:3])))

        # Relay last: its deliveries delete files, which would slow the
        # file creations of the levels above on some filesystems.
        if a.relay_messages:
            dns = DNS()
            sink = Sink(free_port_on(SINK_IP), base / "sink.log")
            R["relay"] = {"sink": "%s:%d" % (SINK_IP, sink.port),
                          "levels": []}
            for nrcpt in a.rcpt_levels:
                for n in a.levels:
                    tag = "r%d-c%d" % (nrcpt, n)
                    print("bench: relay, %d recipient(s) per message, %d "
                          "client(s), %d messages ..." % (
                              nrcpt, n, a.relay_messages), file=sys.stderr)
                    cap = sink_capacity(sink, n, a.sink_messages, nrcpt,
                                        a.size, "cap-" + tag)
                    d = Daemon(build, base / ("relay-" + tag), max_conn,
                               relay={"dns_port": dns.port,
                                      "sink_port": sink.port,
                                      "conf": a.relay_conf})
                    daemons.append(d)
                    if "knobs" not in R["relay"]:
                        R["relay"]["knobs"] = d.knobs(RELAY_KNOBS)
                        R["relay"]["conf"] = d.extra
                    d.start()
                    L = relay_level(d, sink, n, a.relay_messages, nrcpt,
                                    a.size, a.relay_drain, "relay-" + tag)
                    if not d.alive():
                        raise BenchError("ternd died during the relay "
                                         "level:\n" + d.logtail())
                    if not sink.alive():
                        raise BenchError("the sink died: " + sink.stop())
                    L["sink_capacity"] = cap
                    L["ratio_to_sink"] = round(
                        L["delivered_per_s"] / cap["msgs_per_s"], 3) \
                        if L["delivered_per_s"] and cap["msgs_per_s"] \
                        else None
                    R["relay"]["levels"].append(L)
                    what = "relay, %d rcpt, %d clients" % (nrcpt, n)
                    if L["missing"] or not L["queue_empty"]:
                        status = 1
                        R["notes"].append(
                            "%s: %d acknowledged message(s) not at the sink "
                            "%.0f s after the last 250 (%d still queued, %d "
                            "lost: %s); queue %s" % (
                                what, L["missing"], a.relay_drain,
                                L["still_queued"], L["lost"],
                                " ".join(L["missing_sample"]),
                                "empty" if L["queue_empty"] else
                                "not empty"))
                    if L["n_errors"] or L["stuck_clients"] or \
                            cap["n_errors"]:
                        status = 1
                        R["notes"].append("%s: %d client error(s), %d stuck, "
                                          "%d sink-capacity error(s): %s" % (
                                              what, L["n_errors"],
                                              L["stuck_clients"],
                                              cap["n_errors"], "; ".join(
                                                  (L["errors"] +
                                                   cap["errors"])[:3])))
                    if L["refused"]:
                        R["notes"].append("%s: %d message(s) refused (never "
                                          "acknowledged): %s" % (
                                              what, L["refused"], "; ".join(
                                                  L["refusal_samples"][:3])))
                    if L["duplicate_deliveries"]:
                        R["notes"].append("%s: %d recipient(s) got a message "
                                          "twice" % (
                                              what,
                                              L["duplicate_deliveries"]))
                    d.stop()
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
        for what, x in (("the sink", sink), ("the DNS server", dns)):
            try:
                if x is not None:
                    x.stop()
            except Exception as e:          # keep cleaning up
                print("bench: stopping %s: %s" % (what, e), file=sys.stderr)
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
    if "dkim_sign" in R:
        print_dkim(R["dkim_sign"])
    if "checks" in R:
        print_checks(R["checks"])
    return status


if __name__ == "__main__":
    sys.modules["bench"] = sys.modules[__name__]    # for versus.py
    sys.exit(main())
