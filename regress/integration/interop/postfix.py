"""A private Postfix instance for interop tests: a real MTA from Debian's
package, run as root on a loopback address with its own config, queue,
Maildirs and log under one directory.  The system instance's main.cf,
master.cf and queue (/etc/postfix, /var/spool/postfix) are not used, and
nothing there is changed; postfix check reads the package's file lists.

    pf = Postfix(base / "postfix", "127.0.0.9", port, tls=(cert, key),
                 mailboxes=["someone@interop.test"])
    pf.start()          # bounded; raises PostfixError with the log
    ...
    pf.messages("someone@interop.test")    # delivered copies (bytes)
    pf.logtext()
    pf.stop()           # always; kills what is left after a bound

It accepts mail for the mailboxes' domains only (virtual mailbox domains,
delivered by virtual(8) to Maildirs as nobody) and refuses other
recipients at RCPT with 550 5.1.1.  TLS is offered (STARTTLS, opportunistic
for clients) with the given certificate chain, logged at the handshake
("Anonymous TLS connection established from ...") and recorded in the
Received: header.  The smtpd of a session from 127.0.0.1 logs verbosely
(debug_peer_level 1), which includes the dialogue: "< host: MAIL FROM:..."
for each line it read, "> host: 250 ..." for each it sent.
"""
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import time

POSTFIX = "/usr/sbin/postfix"
MASTER = "/usr/lib/postfix/sbin/master"
NOBODY = 65534


class PostfixError(RuntimeError):
    pass


def unavailable():
    """Why a private instance cannot run here, or None when it can."""
    if not os.path.exists(POSTFIX) or not os.path.exists(MASTER):
        return ("Postfix is not installed (rc/deps.sh installs the postfix "
                "package as root when no other MTA is installed)")
    if os.geteuid() != 0:
        return "a Postfix instance needs root (its daemons drop privileges)"
    try:
        import pwd
        import grp
        pwd.getpwnam("postfix")
        grp.getgrnam("postdrop")
    except KeyError:
        return "the postfix user or postdrop group is missing"
    return None


def _wait(pred, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


class Postfix:
    def __init__(self, base, host, port, tls, mailboxes, hostname=None,
                 extra_main=""):
        self.base = pathlib.Path(base)
        self.host = host
        self.port = port
        self.hostname = hostname or "mx." + mailboxes[0].split("@")[1]
        self.conf = self.base / "conf"
        self.spool = self.base / "spool"
        self.data = self.base / "data"
        self.mail = self.base / "mail"
        self.log = self.base / "maillog"
        self.mailboxes = list(mailboxes)
        self.proc = None
        self.out = None
        for d in (self.conf, self.spool, self.data, self.mail):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)
        os.chmod(self.spool, 0o755)     # root-owned, as Postfix wants
        shutil.chown(self.data, "postfix", "postfix")
        os.chown(self.mail, NOBODY, NOBODY)
        domains = sorted({m.split("@")[1] for m in self.mailboxes})
        # One Maildir per mailbox, under mail/ (trailing "/" = Maildir).
        (self.conf / "vmailbox").write_text("".join(
            f"{m} {self.mbox_dir(m)}/\n" for m in self.mailboxes))
        cert, key = tls
        main = f"""\
compatibility_level = 3.6
queue_directory = {self.spool}
data_directory = {self.data}
mail_owner = postfix
setgid_group = postdrop
myhostname = {self.hostname}
mydomain = {domains[0]}
myorigin = $myhostname
mydestination =
# Postfix accepts only addresses of an interface here (127.0.0.1 of lo);
# master.cf binds the listener to {host} itself.
inet_interfaces = 127.0.0.1
proxy_interfaces = {host}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains =
alias_maps =
alias_database =
local_recipient_maps =
virtual_mailbox_domains = {", ".join(domains)}
virtual_mailbox_maps = texthash:{self.conf}/vmailbox
virtual_mailbox_base = {self.mail}
virtual_uid_maps = static:{NOBODY}
virtual_gid_maps = static:{NOBODY}
smtpd_banner = $myhostname ESMTP Postfix (interop)
smtpd_peername_lookup = no
smtpd_tls_security_level = may
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_loglevel = 1
smtpd_tls_received_header = yes
smtp_dns_support_level = disabled
notify_classes =
biff = no
maillog_file = {self.log}
maillog_file_prefixes = {self.base}
debug_peer_list = 127.0.0.1
debug_peer_level = 1
{extra_main}
"""
        (self.conf / "main.cf").write_text(main)
        # Only the services this instance needs; nothing chrooted.
        master = f"""\
{host}:{port} inet n - n - - smtpd
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
virtual   unix  - n n - - virtual
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""
        (self.conf / "master.cf").write_text(master)

    def mbox_dir(self, mailbox):
        local, domain = mailbox.split("@")
        return f"{domain}/{local}"

    # ---- control ------------------------------------------------------

    def _postfix(self, *args, timeout=60):
        return subprocess.run([POSTFIX, "-c", str(self.conf), *args],
                              capture_output=True, text=True,
                              timeout=timeout)

    def _tty_diagnostics(self, *args):
        """Postfix commands write their errors to stderr only when it is a
        terminal (else to the log, which needs the instance running): run
        the command again under script(1) to see them."""
        cmd = " ".join([POSTFIX, "-c", str(self.conf), *args])
        try:
            r = subprocess.run(["script", "-qec", cmd, "/dev/null"],
                               capture_output=True, text=True, timeout=60,
                               stdin=subprocess.DEVNULL)
            return r.stdout + r.stderr
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"(cannot rerun under script: {e})"

    def start(self, timeout=30):
        r = self._postfix("check")
        if r.returncode != 0:
            raise PostfixError("postfix check failed:\n" + r.stdout +
                               r.stderr + self._tty_diagnostics("check"))
        self.out = open(self.base / "master.out", "ab")
        # start-fg keeps master in the foreground (as a child of the
        # postfix-script shell): it stops when we stop it, and a session
        # of its own lets us kill the whole group if it does not.
        self.proc = subprocess.Popen(
            [POSTFIX, "-c", str(self.conf), "start-fg"],
            stdin=subprocess.DEVNULL, stdout=self.out, stderr=self.out,
            start_new_session=True)
        if not _wait(self._ready, timeout):
            text = self.describe()
            self.stop()
            raise PostfixError("postfix did not start:\n" + text)
        return self

    def _ready(self):
        if self.proc.poll() is not None:
            raise PostfixError("postfix start-fg exited with "
                               f"{self.proc.returncode}:\n" + self.describe())
        try:
            with socket.create_connection((self.host, self.port), 1) as s:
                s.settimeout(5)
                return s.recv(512).startswith(b"220")
        except OSError:
            return False

    def master_pid(self):
        try:
            return int((self.spool / "pid" / "master.pid").read_text())
        except (OSError, ValueError):
            return None

    def stop(self, timeout=20):
        """Stop the instance: "postfix stop", then, past the bounds, SIGKILL
        for the script, master and any daemon left in master's session."""
        if self.proc is None:
            return
        sid = self.master_pid()
        try:
            if self.proc.poll() is None:
                try:
                    self._postfix("stop", timeout=timeout)
                except subprocess.TimeoutExpired:
                    pass
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass
            # master calls setsid(): its daemons are in its session.
            if sid and not _wait(lambda: not _session(sid), 10):
                for pid in _session(sid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            self.proc = None
            if self.out:
                self.out.close()
                self.out = None

    # ---- results ------------------------------------------------------

    def logtext(self):
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def describe(self):
        try:
            out = (self.base / "master.out").read_text(errors="replace")
        except FileNotFoundError:
            out = ""
        return "--- postfix output\n" + out + "--- maillog\n" + self.logtext()

    def summary(self):
        """The log without the verbose internals: the dialogue ("<", ">"),
        connections, TLS, rejections, queue and delivery events, problems."""
        keep = re.compile(r": (< |> |connect from|disconnect from|lost conn|"
                          r"\w+: (client|from|to|message-id|removed)|"
                          r"NOQUEUE|.*TLS|.*reject|warning|fatal|error|"
                          r"panic|improper|daemon started|starting|stopping)")
        return "\n".join(l for l in self.logtext().splitlines()
                         if keep.search(l))

    def messages(self, mailbox):
        """The delivered copies in mailbox's Maildir (new/), as bytes."""
        d = self.mail / self.mbox_dir(mailbox) / "new"
        if not d.is_dir():
            return []
        return [p.read_bytes() for p in sorted(d.iterdir())]

    def queue_empty(self):
        """No message left in this instance's queue directories."""
        for sub in ("incoming", "active", "deferred", "hold", "maildrop"):
            d = self.spool / sub
            if d.is_dir() and any(f.is_file() for f in d.rglob("*")):
                return False
        return True


def _session(sid):
    """Live (not zombie) processes in session sid."""
    pids = []
    for p in pathlib.Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...; comm may hold spaces.
        fields = stat[stat.rindex(")") + 2:].split()
        if len(fields) > 3 and fields[3] == str(sid) and fields[0] != "Z":
            pids.append(int(p.name))
    return pids
