"""The credential store and `ternctl user`: accounts added, changed,
locked, unlocked and deleted with the password on standard input; weak
passwords refused with libpwquality's reason; the store root's and mode
0600, holding yescrypt hashes and never the password; the hashes in the
vault's memory alone, replaced (and the old ones wiped) when ternctl
changes the store under a running daemon; a virtual account receiving
mail in the virtual-maildir pattern's Maildir.
"""
import os
import pwd
import re
import smtplib
import stat
import subprocess

from conftest import TERNCTL, Daemon, SMTPConn, wait_for

PASSWORD = "Tern-test-Pw-9f3Kq"
OTHER = "Other-test-Pw-4hZw"
HASH = re.compile(rb"\$y\$j9T\$[./A-Za-z0-9]+\$[./A-Za-z0-9]+")


def hashes(path):
    """The yescrypt hashes in the store file, in file order."""
    return HASH.findall(path.read_bytes())


def hash_of(path):
    """{account: hash} from the store, read with Berkeley DB's own dump."""
    out = subprocess.run(["db5.3_dump", "-p", str(path)], check=True,
                         capture_output=True, text=True).stdout
    lines = out.split("HEADER=END\n", 1)[1].splitlines()
    pairs = {}
    for k, v in zip(lines[0::2], lines[1::2]):
        m = HASH.search(v.encode())
        if m:
            pairs[k.strip()] = m.group(0)
    return pairs


def listing(d):
    r = d.ctl("user", "list", check=True)
    rows = {}
    for line in r.stdout.splitlines()[1:]:
        col = line.split()
        rows[col[0]] = col[1]
    return rows


def test_user_commands_with_password_on_stdin(tmpbase):
    d = Daemon(tmpbase)
    store = tmpbase / "credentials.db"
    r = d.ctl("user", "list", check=True)
    assert r.stdout == "(no accounts)\n"
    assert not store.exists()
    # add: a virtual account (its domain is a local-domain) and a system one
    r = d.ctl("user", "add", "Anna@Example.TEST", input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    assert "anna@example.test: added" in r.stdout
    assert "ternd is not running" in r.stdout
    r = d.ctl("user", "add", "tern", input=OTHER + "\r\n")
    assert r.returncode == 0, r.stderr
    st = store.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == 0
    data = store.read_bytes()
    assert PASSWORD.encode() not in data and OTHER.encode() not in data
    first = hashes(store)
    assert len(first) == 2
    assert listing(d) == {"anna@example.test": "active", "tern": "active"}
    # the name is taken; unknown domains and accounts are refused
    r = d.ctl("user", "add", "anna@example.test", input=OTHER + "\n")
    assert r.returncode == 1 and "already exists" in r.stderr
    r = d.ctl("user", "add", "anna@elsewhere.test", input=OTHER + "\n")
    assert r.returncode == 1 and "not a local-domain" in r.stderr
    r = d.ctl("user", "add", "no-such-account-x", input=OTHER + "\n")
    assert r.returncode == 1 and "no system account" in r.stderr
    r = d.ctl("user", "add", "an/na@example.test", input=OTHER + "\n")
    assert r.returncode == 1 and "bad account name" in r.stderr
    assert hashes(store) == first
    # passwd: a new salt and hash; the first line only
    r = d.ctl("user", "passwd", "anna@example.test",
              input=OTHER + "\nignored second line\n")
    assert r.returncode == 0, r.stderr
    second = hashes(store)
    assert len(second) == 2 and second != first
    assert set(first) & set(second)     # tern's is untouched
    r = d.ctl("user", "passwd", "nobody-here@example.test",
              input=OTHER + "\n")
    assert r.returncode == 1 and "no account" in r.stderr
    # lock, unlock
    d.ctl("user", "lock", "anna@example.test", check=True)
    assert listing(d)["anna@example.test"] == "locked"
    assert hashes(store) == second
    d.ctl("user", "unlock", "anna@example.test", check=True)
    assert listing(d)["anna@example.test"] == "active"
    # del
    d.ctl("user", "del", "tern", check=True)
    assert listing(d) == {"anna@example.test": "active"}
    assert len(hashes(store)) == 1
    r = d.ctl("user", "del", "tern")
    assert r.returncode == 1 and "no account tern" in r.stderr
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    # no temporary file is left behind
    assert sorted(p.name for p in tmpbase.iterdir()
                  if p.name.startswith("credentials")) == \
        ["credentials.db", "credentials.db.lock"]


def test_weak_or_missing_passwords_are_refused(tmpbase):
    d = Daemon(tmpbase)
    store = tmpbase / "credentials.db"
    for pw, reason in (("password", "dictionary"),
                       ("abc", "shorter than"),
                       ("anna2024Xyz!!q", "user name"),
                       ("", "empty")):
        r = d.ctl("user", "add", "anna@example.test", input=pw + "\n")
        assert r.returncode == 1, (pw, r.stdout)
        assert reason in r.stderr, (pw, r.stderr)
    r = d.ctl("user", "add", "anna@example.test", input="")
    assert r.returncode == 1 and "no password" in r.stderr
    r = d.ctl("user", "add", "anna@example.test",
              input="Aa1-" + "x" * 1100 + "\n")
    assert r.returncode == 1 and "longer than 1024" in r.stderr
    assert not store.exists()
    d.ctl("user", "add", "anna@example.test", input=PASSWORD + "\n",
          check=True)
    before = store.read_bytes()
    r = d.ctl("user", "passwd", "anna@example.test", input="password\n")
    assert r.returncode == 1 and "password refused" in r.stderr
    assert store.read_bytes() == before


def test_store_open_to_others_is_refused(tmpbase):
    d = Daemon(tmpbase)
    store = tmpbase / "credentials.db"
    d.ctl("user", "add", "anna@example.test", input=PASSWORD + "\n",
          check=True)
    os.chmod(store, 0o644)
    r = d.ctl("user", "list")
    assert r.returncode == 1 and "0600" in r.stderr
    r = d.ctl("user", "add", "bob@example.test", input=OTHER + "\n")
    assert r.returncode == 1 and "0600" in r.stderr
    os.chmod(store, 0o600)
    assert d.ctl("user", "list").returncode == 0


def test_only_root_may_use_the_store(tmpbase):
    d = Daemon(tmpbase)
    nobody = 65534
    r = subprocess.run([str(TERNCTL), "-f", str(d.conf), "user", "list"],
                       capture_output=True, text=True, timeout=30,
                       user=nobody, group=nobody, extra_groups=[])
    assert r.returncode == 1 and "only root" in r.stderr


def test_hashes_in_the_vault_alone(make_daemon, tmpbase):
    from test_privsep import memory_has, role_pids
    d = make_daemon()
    d.ctl("user", "add", "anna@example.test", input=PASSWORD + "\n",
          check=True)
    d.ctl("user", "add", "tern", input=OTHER + "\n", check=True)
    store = tmpbase / "credentials.db"
    h = hash_of(store)
    anna, tern = h["anna@example.test"], h["tern"]
    d.start()
    assert "event=credentials result=ok accounts=2" in d.logtext()
    assert wait_for(lambda: re.search(r"vault: event=start result=ok .*"
                                      r"accounts=2", d.logtext()))
    pids = role_pids(d)
    assert memory_has(pids["vault"], anna)
    assert memory_has(pids["vault"], tern)
    for role in ("smtp", "queue"):
        assert not memory_has(pids[role], anna), role
        assert not memory_has(pids[role], tern), role
    for role in ("smtp", "queue", "vault"):
        assert not memory_has(pids[role], PASSWORD.encode()), role
        assert not memory_has(pids[role], OTHER.encode()), role
    # What the vault got at start is wiped too once replaced.
    d.ctl("user", "passwd", "anna@example.test", input=OTHER + "\n",
          check=True)
    new = hash_of(store)["anna@example.test"]
    assert new != anna
    assert wait_for(lambda: memory_has(pids["vault"], new))
    assert not memory_has(pids["vault"], anna)


def test_changes_reach_the_running_vault(daemon, tmpbase):
    from test_privsep import memory_has, role_pids
    store = tmpbase / "credentials.db"
    pids = role_pids(daemon)
    r = daemon.ctl("user", "add", "anna@example.test", input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    assert "ternd reads the credential store again" in r.stdout
    (first,) = hashes(store)
    assert wait_for(lambda: "vault: event=reload result=ok routes=0 "
                    "accounts=1" in daemon.logtext()), daemon.logtext()
    assert memory_has(pids["vault"], first)
    for role in ("smtp", "queue"):
        assert not memory_has(pids[role], first), role
    # A new password: the new hash there, the old one wiped.
    daemon.ctl("user", "passwd", "anna@example.test", input=OTHER + "\n",
               check=True)
    (second,) = hashes(store)
    assert wait_for(lambda: memory_has(pids["vault"], second))
    assert not memory_has(pids["vault"], first)
    # Deleted: gone from the vault too.
    daemon.ctl("user", "del", "anna@example.test", check=True)
    assert wait_for(lambda: "vault: event=reload result=ok routes=0 "
                    "accounts=0" in daemon.logtext())
    assert not memory_has(pids["vault"], second)
    # No role was restarted for it; the parent says what it read.
    assert role_pids(daemon) == pids
    assert "parent: event=credentials result=ok accounts=0" in \
        daemon.logtext()


def test_a_damaged_store_keeps_the_accounts(daemon, tmpbase):
    store = tmpbase / "credentials.db"
    daemon.ctl("user", "add", "anna@example.test", input=PASSWORD + "\n",
               check=True)
    assert wait_for(lambda: "vault: event=reload result=ok routes=0 "
                    "accounts=1" in daemon.logtext())
    mark = len(daemon.logtext())
    os.chmod(store, 0o644)
    r = daemon.ctl("user", "lock", "anna@example.test")
    assert r.returncode == 1 and "0600" in r.stderr
    os.kill(daemon.proc.pid, 1)         # a reload reads it too
    assert wait_for(lambda: "vault: event=reload" in
                    daemon.logtext()[mark:])
    later = daemon.logtext()[mark:]
    assert "parent: event=credentials result=error" in later
    assert "group or others have access" in later
    assert "accounts=1 action=keep" in later
    assert "vault: event=reload result=ok routes=0 accounts=1" in later
    assert "accounts=0" not in later


def rcpt(d, addr):
    with SMTPConn(d.port) as c:
        assert c.cmd("EHLO client.example")[0] == 250
        assert c.cmd("MAIL FROM:<someone@example.org>")[0] == 250
        return c.cmd(f"RCPT TO:<{addr}>")[0]


def vmaildir(d, domain, local, sub="new"):
    p = d.base / "vmail" / domain / local / "Maildir" / sub
    return sorted(p.iterdir()) if p.is_dir() else []


def test_a_virtual_account_receives_mail(daemon):
    assert rcpt(daemon, "carol@example.test") == 550
    daemon.ctl("user", "add", "carol@example.test", input=PASSWORD + "\n",
               check=True)
    assert wait_for(lambda: re.search(r"smtp: event=reload result=ok "
                                      r"accounts=1", daemon.logtext()))
    assert wait_for(lambda: re.search(r"queue: event=reload result=ok "
                                      r"accounts=1", daemon.logtext()))
    assert rcpt(daemon, "carol@example.test") == 250
    assert rcpt(daemon, "Carol+news@Example.TEST") == 250
    assert rcpt(daemon, "dave@example.test") == 550
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as s:
        s.sendmail("someone@example.org", ["carol@example.test"],
                   b"Subject: welcome\r\n\r\nhello carol\r\n")
    assert wait_for(lambda: len(vmaildir(daemon, "example.test",
                                         "carol")) == 1, 20), \
        daemon.logtext()
    msg = vmaildir(daemon, "example.test", "carol")[0]
    assert b"hello carol" in msg.read_bytes()
    # Written as virtual-user; root made the pattern's fixed part only.
    vmail = pwd.getpwnam("vmail")
    md = daemon.base / "vmail" / "example.test" / "carol" / "Maildir"
    for p in (msg, md, md.parent, md.parent.parent, daemon.base / "vmail"):
        assert p.stat().st_uid == vmail.pw_uid, p
    assert stat.S_IMODE(md.stat().st_mode) == 0o700
    # Deleted: no longer a recipient.
    daemon.ctl("user", "del", "carol@example.test", check=True)
    assert wait_for(lambda: re.search(r"smtp: event=reload result=ok "
                                      r"accounts=0", daemon.logtext()))
    assert rcpt(daemon, "carol@example.test") == 550


def test_accounts_of_the_store_at_start_and_aliases_first(make_daemon):
    d = make_daemon()
    d.write_aliases("postmaster: alice\nerin: alice\n")
    for name in ("erin@example.test", "frank@localhost"):
        d.ctl("user", "add", name, input=PASSWORD + "\n", check=True)
    d.start()
    assert rcpt(d, "frank@localhost") == 250
    assert rcpt(d, "frank@example.test") == 550     # another domain
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
        s.sendmail("someone@example.org",
                   ["frank@localhost", "erin@example.test"],
                   b"Subject: two\r\n\r\nfor frank and erin\r\n")
    assert wait_for(lambda: len(vmaildir(d, "localhost", "frank")) == 1,
                    20), d.logtext()
    # erin is an alias too: the alias decides where her mail goes.
    assert wait_for(lambda: len(d.maildir("alice")) == 1, 20), d.logtext()
    assert vmaildir(d, "example.test", "erin") == []


def test_a_large_store_goes_in_chunks(make_daemon, tmpbase):
    """6000 accounts: the secrets (~700 KB) and the names (~160 KB) are
    larger than one datagram (192 KiB) and reach the vault, smtp and queue
    in chunks, applied whole."""
    d = make_daemon()
    store = tmpbase / "credentials.db"
    d.ctl("user", "add", "anna@example.test", input=PASSWORD + "\n",
          check=True)
    (h,) = hashes(store)

    def rec(tag, data):
        return bytes([tag]) + len(data).to_bytes(4, "big") + data

    value = b"\x01" + rec(1, h) + rec(2, bytes(8)) + rec(3, bytes(8)) + \
        rec(4, bytes(8))
    esc = "".join(f"\\{b:02x}" for b in value)
    n = 6000
    lines = []
    for i in range(n):
        lines.append(f"user{i:05d}-with-a-longer-name@example.test")
        lines.append(esc)
    text = tmpbase / "store.txt"
    text.write_text("\n".join(lines) + "\n")
    os.unlink(store)
    subprocess.run(["db5.3_load", "-T", "-t", "btree", "-f", str(text),
                    str(store)], check=True)
    os.chmod(store, 0o600)
    r = d.ctl("user", "list", check=True)
    assert len(r.stdout.splitlines()) == n + 1
    d.start()
    assert wait_for(lambda: f"vault: event=start result=ok routes=0 srs=yes "
                    f"accounts={n}" in d.logtext(), 20), d.logtext()
    last = f"user{n - 1:05d}-with-a-longer-name@example.test"
    assert rcpt(d, last) == 250
    assert rcpt(d, "user00000-with-a-longer-name@example.test") == 250
    # A change under the running daemon: sent again, in chunks.
    d.ctl("user", "del", last, check=True)
    assert wait_for(lambda: f"vault: event=reload result=ok routes=0 "
                    f"accounts={n - 1}" in d.logtext(), 20), d.logtext()
    assert wait_for(lambda: f"smtp: event=reload result=ok "
                    f"accounts={n - 1}" in d.logtext(), 20)
    assert rcpt(d, last) == 550
