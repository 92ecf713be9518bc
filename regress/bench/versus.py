"""Tern against Postfix in the same run (bench part 9).

For each client level, the same messages (N of --size bytes, each with its
own Message-ID) are sent by the same client code (bench.send_messages: one
connection per client, one command at a time) first to a ternd, then to a
private Postfix instance (regress/integration/interop/postfix.py: Debian's
Postfix as root on loopback, its own config, queue and log), both
delivering to one virtual user's Maildir.  Figures per server:

* accept/s: 250s per second from the common start to the last 250;
* deliv/s: messages found in the Maildir per second, from the start to
  the last arrival (the Maildir is polled every 20 ms);
* CPU ms per message: utime + stime of every process of the server from
  just before the start until everything was delivered, the processes
  that ended meanwhile included (their parent's cutime: ternd's delivery
  workers, Postfix's daemons reaped by master);
* lost: acknowledged and never found in the Maildir (within the drain).

The ratios are Tern's over Postfix's; the disk's fsync rate (bench part 1,
and again just before each level) is printed next to them.
"""
import os
import pathlib
import subprocess
import sys
import time

import bench

sys.path.insert(0, str(bench.ROOT / "regress" / "integration" / "interop"))
import postfix as pfmod  # noqa: E402

POLL_S = 0.02


def clk():
    return os.sysconf("SC_CLK_TCK")


def proc_cpu(pid, children=False):
    """utime+stime (and cutime+cstime) of pid, in seconds, or 0."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except OSError:
        return 0.0
    f = st[st.rindex(")") + 2:].split()
    t = int(f[11]) + int(f[12])
    if children:
        t += int(f[13]) + int(f[14])
    return t / clk()


def tern_cpu(d):
    pids = d.pids()
    return sum(proc_cpu(p, children=(i == 0)) for i, p in enumerate(pids))


def postfix_cpu(pf):
    sid = pf.master_pid()
    if not sid:
        return 0.0
    return sum(proc_cpu(p, children=(p == sid))
               for p in pfmod._session(sid))


class MaildirWatch:
    """Message-IDs arriving in a Maildir's new/, with the time first seen."""

    def __init__(self, newdir):
        self.dir = pathlib.Path(newdir)
        self.seen = set()
        self.mids = {}
        self.dups = 0

    def poll(self):
        try:
            names = os.listdir(self.dir)
        except OSError:
            return
        now = time.monotonic()
        for n in names:
            if n in self.seen:
                continue
            try:
                with open(self.dir / n, "rb") as f:
                    head = f.read(4096)
            except OSError:
                continue
            self.seen.add(n)
            i = head.find(b"\nMessage-ID: <")
            if i >= 0:
                mid = head[i + 14:].split(b">", 1)[0].decode(errors="replace")
                if mid in self.mids:
                    self.dups += 1
                else:
                    self.mids[mid] = now


def run_one(name, send_to, cpu_fn, watch, nclients, msgs, rcpt, drain_s,
            time_cap):
    cpu0 = cpu_fn()
    S = bench.send_messages("127.0.0.1", send_to, nclients, msgs, [rcpt],
                            time_cap)
    want = {mid for _, mid, _ in S["acked"]}
    deadline = time.monotonic() + drain_s
    while time.monotonic() < deadline:
        watch.poll()
        if not (want - set(watch.mids)):
            break
        time.sleep(POLL_S)
    watch.poll()
    cpu1 = cpu_fn()
    got = want & set(watch.mids)
    last = max((watch.mids[m] for m in got), default=None)
    n = len(S["acked"])
    return {
        "server": name,
        "acked": n,
        "refused": S["refused"],
        "errors": S["errors"][:3],
        "n_errors": S["n_errors"],
        "accept_per_s": S["rate"],
        "delivered": len(got),
        "lost": len(want - got),
        "duplicates": watch.dups,
        "deliver_per_s": round(len(got) / max(1e-9, last - S["start"]), 1)
        if last else 0.0,
        "cpu_ms_per_msg": round(1000 * (cpu1 - cpu0) / max(1, n), 3),
        "lat_ms_p50": S["lat_ms_p50"],
        "lat_ms_p99": S["lat_ms_p99"],
        "client_cpu_pct": S["client_cpu_pct"],
    }


def self_signed(base):
    cert, key = base / "pf-cert.pem", base / "pf-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                    "-subj", "/CN=" + bench.HOSTNAME, "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    return str(cert), str(key)


def unavailable():
    return pfmod.unavailable()


def versus(build, base, levels, nmsgs, size, max_conn, daemons, drain_s=120):
    """{levels: [{clients, fsync, tern, postfix, ratios}]}."""
    base = pathlib.Path(base)
    rcpt = "%s@%s" % (bench.VUSER, bench.LOCAL_DOMAIN)
    tls = self_signed(base)
    out = []
    for n in levels:
        fdir = base / ("vs-fsync-%d" % n)
        fdir.mkdir()
        adj = bench.fsync_rate(fdir, 1.0, size)
        row = {"clients": n, "messages": nmsgs, "fsync_adjacent": adj}
        # ternd
        print("bench: versus, ternd, %d client(s), %d messages ..." % (
            n, nmsgs), file=sys.stderr)
        d = bench.Daemon(build, base / ("vs-tern-%d" % n), max_conn)
        daemons.append(d)
        d.start()
        msgs = bench.tagged_bodies(size, "vt%d" % n, nmsgs, rcpt)
        w = MaildirWatch(d.mail / bench.VUSER / "Maildir" / "new")
        row["tern"] = run_one("tern", d.port, lambda: tern_cpu(d), w, n,
                              msgs, rcpt, drain_s, 600)
        if not d.alive():
            raise bench.BenchError("ternd died in the versus run:\n" +
                                   d.logtail())
        d.stop()
        # Postfix
        print("bench: versus, postfix, %d client(s), %d messages ..." % (
            n, nmsgs), file=sys.stderr)
        port = bench.free_port()
        pf = pfmod.Postfix(base / ("vs-pf-%d" % n), "127.0.0.1", port, tls,
                           [rcpt], hostname=bench.HOSTNAME,
                           extra_main="debug_peer_list =\n"
                           "smtpd_tls_loglevel = 0\n")
        try:
            pf.start()
            msgs = bench.tagged_bodies(size, "vp%d" % n, nmsgs, rcpt)
            w = MaildirWatch(pf.mail / pf.mbox_dir(rcpt) / "new")
            row["postfix"] = run_one("postfix", port,
                                     lambda: postfix_cpu(pf), w, n, msgs,
                                     rcpt, drain_s, 600)
        finally:
            pf.stop()
        t, p = row["tern"], row["postfix"]

        def ratio(x, y):
            return round(x / y, 2) if x and y else None
        row["ratio"] = {
            "accept": ratio(t["accept_per_s"], p["accept_per_s"]),
            "deliver": ratio(t["deliver_per_s"], p["deliver_per_s"]),
            "cpu": ratio(t["cpu_ms_per_msg"], p["cpu_ms_per_msg"]),
        }
        out.append(row)
    return {"levels": out}


def print_versus(V, frate):
    print("9. Tern against Postfix (Debian's, private instance on loopback), "
          "same clients and messages, Maildir delivery")
    print("   one connection per client, commands one at a time; ratio = "
          "Tern / Postfix; CPU = all server processes per message")
    hdr = ("clients", "msgs", "server", "accept/s", "deliv/s", "CPU ms",
           "p50 ms", "p99 ms", "lost", "fsync/s")
    w = (7, 6, 8, 9, 9, 8, 8, 8, 5, 8)
    print("   " + " ".join(h.rjust(x) for h, x in zip(hdr, w)))
    for row in V["levels"]:
        fs = row["fsync_adjacent"]["files_per_s"] if row.get(
            "fsync_adjacent") else None
        for k in ("tern", "postfix"):
            L = row[k]
            vals = (row["clients"], L["acked"], k, L["accept_per_s"],
                    L["deliver_per_s"], L["cpu_ms_per_msg"], L["lat_ms_p50"],
                    L["lat_ms_p99"], L["lost"], fs if k == "tern" else "")
            print("   " + " ".join(
                (("%.3f" % v) if isinstance(v, float) and k2 == 5 else
                 ("%.1f" % v) if isinstance(v, float) else str(v)).rjust(x)
                for k2, (v, x) in enumerate(zip(vals, w))))
        r = row["ratio"]
        print("   %s ratio: accept %s, deliver %s, CPU per message %s "
              "(aims: >= 3, >= 3, CPU <= 0.5 ms)" % (
                  " " * 13, r["accept"], r["deliver"], r["cpu"]))
        for k in ("tern", "postfix"):
            if row[k]["n_errors"] or row[k]["refused"]:
                print("      %s: %d error(s), %d refused: %s" % (
                    k, row[k]["n_errors"], row[k]["refused"],
                    "; ".join(row[k]["errors"])))
    if frate:
        print("   disk fsync rate (part 1): %.1f files/s" % frate)
    print()
