#!/usr/bin/python3
"""Per-message cost of each ternd role: system calls and CPU time.

    /usr/bin/python3 regress/bench/profile.py --messages 300
    /usr/bin/python3 regress/bench/profile.py --messages 300 --reuse
    /usr/bin/python3 regress/bench/profile.py --conf 'local-worker-idle 0'
    /usr/bin/python3 regress/bench/profile.py --perf obj/bench/perf.data

One client sends --messages 4 KiB messages to a virtual user (delivered to
its Maildir), one connection per message (or one for all with --reuse),
commands one at a time.  Counts, not rates, so that a busy host does not
change the figures much:

* strace -c attached to each role (the parent with -f, so the delivery
  workers it forks are counted with it): system calls per message, per
  role, and the most frequent ones;
* CPU time (utime + stime from /proc) per message and role, the parent's
  reaped children (its delivery workers) included; the CPU time is
  measured in a second run without strace, which slows everything down;
* with --perf FILE, `perf record -g` (cpu-clock, every ternd process) over
  that second run; `perf report -i FILE --no-children` shows where the
  time goes.

Accept and delivery are apart because they are different processes: the
smtp process runs the sessions, the queue process commits and schedules,
the parent checks each local delivery and the workers (its children)
write the Maildir.
"""
import argparse
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench  # noqa: E402

ROLES = ("smtp", "queue", "parent", "vault")


def send(port, n, reuse, body, clients=1):
    """n messages to the virtual user; the queue ids acknowledged."""
    if clients > 1:     # one connection each, as the bench's levels
        rcpt = "%s@%s" % (bench.VUSER, bench.LOCAL_DOMAIN)
        S = bench.send_messages("127.0.0.1", port, clients,
                                [("m%d" % i, body) for i in range(n)],
                                [rcpt], 600)
        if S["n_errors"] or S["refused"]:
            raise bench.BenchError("clients: %s" % S["errors"][:3])
        return [q for q, _, _ in S["acked"]]
    rcpt = b"RCPT TO:<%s@%s>\r\n" % (bench.VUSER.encode(),
                                     bench.LOCAL_DOMAIN.encode())
    mail = b"MAIL FROM:<bench@client.bench.test> SIZE=%d\r\n" % len(body)
    ids, conn = [], None
    for _ in range(n):
        if conn is None:
            conn = bench.Conn(port)
            conn.hello()
        for c, want in ((mail, 250), (rcpt, 250), (b"DATA\r\n", 354),
                        (body, 250)):
            code, line = conn.cmd(c)
            if code != want:
                raise bench.BenchError("%r: %r" % (c[:10], line))
        ids.append(line.split()[-1].decode())
        if not reuse:
            conn.close()
            conn = None
    if conn:
        conn.close()
    return ids


def roles(d):
    out = {}
    for p in d.pids():
        r = d.role(p)
        try:
            with open(f"/proc/{p}/comm") as f:
                if f.read().strip().startswith("ternd: local"):
                    r = "worker"
        except OSError:
            pass
        out.setdefault(r, []).append(p)
    return out


def cpu(d):
    """{role: seconds}: utime+stime; the parent's reaped children count
    as 'worker' (delivery workers are its only short-lived children)."""
    tck = os.sysconf("SC_CLK_TCK")
    out = {}
    for r, pids in roles(d).items():
        for p in pids:
            try:
                with open(f"/proc/{p}/stat") as f:
                    st = f.read()
            except OSError:
                continue
            f = st[st.rindex(")") + 2:].split()
            out[r] = out.get(r, 0.0) + (int(f[11]) + int(f[12])) / tck
            if r == "parent":
                out["worker"] = out.get("worker", 0.0) + \
                    (int(f[13]) + int(f[14])) / tck
    return out


def delivered(d, ids, timeout):
    want = set(ids)
    return bench.wait_for(lambda: not (want - d.maildir_ids()[0]), timeout,
                          0.1)


def start(a, base):
    d = bench.Daemon(pathlib.Path(a.build), base, 100)
    if a.conf:
        lines = d.conf.read_text().splitlines()
        keys = {c.split()[0] for c in a.conf}
        lines = [x for x in lines if not x.split() or x.split()[0] not in keys]
        d.conf.write_text("\n".join(lines + a.conf) + "\n")
    return d.start()


def strace_run(a, base, body):
    d = start(a, base / "strace")
    tracers, files = [], {}
    try:
        send(d.port, 20, a.reuse, body)          # warm up
        delivered(d, [], 1)
        for r, pids in roles(d).items():
            path = base / f"strace.{r}"
            files[r] = path
            # -f: the queue's commit thread; the parent's forked workers
            args = ["strace", "-qq", "-f", "-c", "-o", str(path)]
            for p in pids:
                args += ["-p", str(p)]
            tracers.append(subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL))
        time.sleep(1.0)
        ids = send(d.port, a.messages, a.reuse, body, a.clients)
        if not delivered(d, ids, 120):
            raise bench.BenchError("not all delivered")
        time.sleep(0.5)
    finally:
        for t in tracers:
            t.send_signal(signal.SIGINT)
        for t in tracers:
            t.wait(30)
        d.stop()
    out = {}
    for r, path in files.items():
        calls = {}
        for line in path.read_text().splitlines():
            f = line.split()
            if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
                calls[f[-1]] = int(f[3])
        out[r] = calls
    return out


def cpu_run(a, base, body):
    d = start(a, base / "cpu")
    perf = None
    try:
        send(d.port, 20, a.reuse, body)
        time.sleep(0.5)
        before = cpu(d)
        if a.perf:
            pids = ",".join(str(p) for p in d.pids())
            perf = subprocess.Popen(
                ["perf", "record", "-q", "-g", "-e", "cpu-clock", "-F",
                 "2000", "--inherit", "-o", a.perf, "-p", pids],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        t0 = time.monotonic()
        ids = send(d.port, a.messages, a.reuse, body, a.clients)
        t1 = time.monotonic()
        if not delivered(d, ids, 120):
            raise bench.BenchError("not all delivered")
        t2 = time.monotonic()
        time.sleep(0.3)
        after = cpu(d)
    finally:
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait(60)
        d.stop()
    used = {r: after.get(r, 0.0) - before.get(r, 0.0)
            for r in set(after) | set(before)}
    return used, t1 - t0, t2 - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="obj/normal")
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--clients", type=int, default=1,
                    help="concurrent clients, one connection each")
    ap.add_argument("--reuse", action="store_true",
                    help="one connection for every message")
    ap.add_argument("--conf", action="append", default=[],
                    help="a config line added to (or replacing) the "
                    "daemon's, e.g. 'local-worker-idle 0'")
    ap.add_argument("--perf", help="perf record -g into this file")
    ap.add_argument("--no-strace", action="store_true")
    ap.add_argument("--tmpdir", default=None,
                    help="where the daemon's spool and Maildir go")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("profile.py: run as root (ternd drops to its users)")
    base = pathlib.Path(tempfile.mkdtemp(prefix="tern-profile-",
                                         dir=a.tmpdir))
    os.chmod(base, 0o755)
    body = bench.make_body(a.size, to=f"{bench.VUSER}@{bench.LOCAL_DOMAIN}")
    n = a.messages
    try:
        print("profile: %d messages of %d bytes to a Maildir, %s%s" % (
            n, a.size, "%d clients, one connection each" % a.clients
            if a.clients > 1 else "one connection for all" if a.reuse else
            "one connection per message",
            "; " + "; ".join(a.conf) if a.conf else ""))
        if not a.no_strace and shutil.which("strace"):
            sc = strace_run(a, base, body)
            print("system calls per message (strace -c; parent -f: with "
                  "the workers it forks; worker: the long-lived ones)")
            for r in ("smtp", "queue", "parent", "worker", "vault"):
                calls = sc.get(r, {})
                tot = sum(calls.values())
                top = sorted(calls.items(), key=lambda x: -x[1])[:40]
                print("  %-7s %7.1f  %s" % (r, tot / n, " ".join(
                    "%s=%.1f" % (k, v / n) for k, v in top)))
        used, send_s, all_s = cpu_run(a, base, body)
        print("CPU ms per message (utime+stime; 'worker' is the parent's "
              "reaped children, the forked deliveries)")
        tot = 0.0
        for r in ("smtp", "queue", "parent", "worker", "vault"):
            v = used.get(r, 0.0)
            tot += v
            print("  %-7s %6.3f" % (r, 1000 * v / n))
        print("  %-7s %6.3f   (%.0f msg/s sent, %.0f msg/s delivered; "
              "wall clock, host load included)" % (
                  "total", 1000 * tot / n, n / send_s, n / all_s))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
