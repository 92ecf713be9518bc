"""SMTP AUTH on submission (RFC 4954): PLAIN and LOGIN, offered on msa
listeners inside TLS only, checked by the vault against the credential
store; submission needs AUTH before MAIL; an authenticated account relays,
but only as the senders and From: addresses it owns (its own, and what
allow-sender grants); submitted mail gets Date: and Message-ID: when it
has none.  Clients verify the daemon against a test CA.
"""
import base64
import os
import re
import signal
import smtplib
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import SMTPConn, free_port, wait_for
from test_privsep import memory_has, role_pids, roles
from test_tls import Client, make_server_ca

pytestmark = pytest.mark.usefixtures("sanitizer_check")

PASSWORD = "Sub-mission-Pw-4kQ9z"
ANNA = "anna@example.test"


def b64(s):
    return base64.b64encode(s.encode()).decode()


@pytest.fixture
def sub(make_daemon, tmpbase):
    """mx (STARTTLS, no AUTH), msa on d.msa (STARTTLS) and d.smtps
    (implicit TLS); account anna@example.test, who may also send as
    board@example.test and anyone @league.test."""
    return submission(make_daemon, tmpbase)


def submission(make_daemon, tmpbase, extra=""):
    ca = tmpbase / "ca"
    ctx = make_server_ca(ca)
    msa, smtps = free_port(), free_port()
    d = make_daemon(f'tls-cert "{ca}/leaf.pem"\ntls-key "{ca}/leaf.key"\n'
                    f"listen msa 127.0.0.1 port {msa}\n"
                    f"listen msa 127.0.0.1 port {smtps} tls implicit\n"
                    'local-domain "league.test"\n'
                    f"allow-sender {ANNA} board@example.test @league.test\n"
                    + extra,
                    vusers=("demo", "alice", "bob", "anna"))
    d.ctl("user", "add", ANNA, input=PASSWORD + "\n", check=True)
    d.msa, d.smtps, d.ctx = msa, smtps, ctx
    return d.start()


def tls_session(d, port=None):
    c = Client(port or d.msa)
    c.ehlo()
    c.starttls(context=d.ctx)
    c.ehlo()
    return c


def raw_tls(d):
    """A raw session on the msa port after STARTTLS (for AUTH by hand)."""
    import ssl
    c = SMTPConn(d.msa)
    c.cmd("EHLO client.example.org")
    assert c.cmd("STARTTLS")[0] == 220
    c.sock = d.ctx.wrap_socket(c.sock, server_hostname="mx.example.test")
    c.buf = b""
    code, text = c.cmd("EHLO client.example.org")
    assert code == 250, text
    return c


def test_auth_offered_only_inside_tls_on_submission(sub):
    with Client(sub.msa) as c:
        c.ehlo()
        assert not c.has_extn("auth")
        c.starttls(context=sub.ctx)
        c.ehlo()
        assert c.esmtp_features.get("auth", "").split() == ["PLAIN",
                                                             "LOGIN"]
    with Client(sub.smtps, sub.ctx, implicit=True) as c:
        c.ehlo()
        assert c.has_extn("auth")
    with Client(sub.port) as c:                 # the MX: never
        c.ehlo()
        c.starttls(context=sub.ctx)
        c.ehlo()
        assert not c.has_extn("auth")
        code, text = c.docmd("AUTH", "PLAIN " + b64(f"\0{ANNA}\0{PASSWORD}"))
        assert code == 502, text


def test_auth_before_tls_refused_and_mail_needs_auth(sub):
    with SMTPConn(sub.msa) as c:
        c.cmd("EHLO client.example.org")
        code, text = c.cmd("AUTH PLAIN " + b64(f"\0{ANNA}\0{PASSWORD}"))
        assert code == 538 and text.startswith("538 5.7.11"), text
        code, text = c.cmd("MAIL FROM:<anna@example.test>")
        assert code == 530 and text.startswith("530 5.7.0"), text
    with tls_session(sub) as c:
        code, text = c.mail(ANNA)
        assert code == 530, text


def test_plain_and_login_submit_relay_and_complete_the_header(sub):
    with tls_session(sub) as c:
        code, text = c.login(ANNA, PASSWORD)
        assert code == 235, text
        # Relaying: an address elsewhere is accepted (and queued).
        c.sendmail(ANNA, ["friend@elsewhere.example", "alice@example.test"],
                   b"Subject: plain\r\nFrom: Anna <anna@example.test>\r\n"
                   b"\r\nhello\r\n")
    assert sub.wait_mail("alice"), sub.logtext()
    msg = sub.maildir("alice")[0].read_bytes()
    assert re.search(rb"with ESMTPSA id", msg), msg[:600]
    assert re.search(rb"^Date: ", msg, re.M) and \
        re.search(rb"^Message-ID: <[0-9A-F]{16}@mx\.example\.test>", msg,
                  re.M), msg[:600]
    assert "event=auth result=ok user=<anna@example.test>" in sub.logtext()
    # LOGIN, by hand, with the initial response.
    c = raw_tls(sub)
    code, text = c.cmd("AUTH LOGIN " + b64(ANNA))
    assert code == 334 and text == "334 UGFzc3dvcmQ6", text
    code, text = c.cmd(b64(PASSWORD))
    assert code == 235 and text.startswith("235 2.7.0"), text
    code, text = c.cmd("AUTH PLAIN " + b64(f"\0{ANNA}\0{PASSWORD}"))
    assert code == 503, text                    # once per session
    assert c.cmd("MAIL FROM:<anna@example.test>")[0] == 250
    assert c.cmd("RCPT TO:<bob@example.test>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    # A Date: and Message-ID: of its own are kept.
    c.send("Subject: login\r\nDate: Sun, 6 Dec 2026 10:00:00 +0000\r\n"
           "Message-ID: <own@client.example>\r\nFrom: anna@example.test\r\n"
           "\r\nbody\r\n.\r\n")
    assert c.reply()[0] == 250
    c.close()
    assert sub.wait_mail("bob"), sub.logtext()
    msg = sub.maildir("bob")[0].read_bytes()
    assert msg.count(b"\nDate: ") == 1 and \
        msg.count(b"Message-ID: ") == 1 and b"<own@client.example>" in msg


def test_wrong_password_535_then_slower_and_logged(sub):
    c = raw_tls(sub)
    code, text = c.cmd("AUTH PLAIN " + b64(f"\0{ANNA}\0wrong-{PASSWORD}"))
    assert code == 535 and text.startswith("535 5.7.8"), text
    t0 = time.monotonic()
    code, text = c.cmd("AUTH PLAIN " + b64(f"\0{ANNA}\0wrong-again"))
    slow = time.monotonic() - t0
    assert code == 535, text
    # The throttle answers a repeated failure later, never sooner.
    assert slow >= 0.9, slow
    code, text = c.cmd("AUTH PLAIN " + b64(f"\0nobody@example.test\0x"))
    assert code == 535, text
    c.close()
    log = sub.logtext()
    assert re.search(r"vault: event=auth result=fail "
                     r"user=<anna@example\.test> client=\[127\.0\.0\.1\] "
                     r"failures=\d+ delay=\d+s", log), log
    assert "wrong-" not in log                  # no password in the log


def test_cancel_and_malformed_responses(sub):
    c = raw_tls(sub)
    assert c.cmd("AUTH PLAIN")[0] == 334
    code, text = c.cmd("*")
    assert code == 501, text
    assert c.cmd("AUTH LOGIN")[0] == 334
    code, text = c.cmd("not base64!")
    assert code == 501, text
    code, text = c.cmd("AUTH CRAM-MD5")
    assert code == 504, text
    # authzid other than the user: refused without asking the vault
    code, text = c.cmd("AUTH PLAIN " + b64(f"root\0{ANNA}\0{PASSWORD}"))
    assert code == 535, text
    assert c.cmd("NOOP")[0] == 250              # the session goes on
    c.close()


def test_sender_ownership(sub):
    with tls_session(sub) as c:
        c.login(ANNA, PASSWORD)
        code, text = c.mail("bob@example.test")
        assert code == 553 and b"5.7.1" in text and b"not owned" in text
        code, text = c.mail("")
        assert code == 553, text
        for ok in ("anna+lists@example.test", "board@example.test",
                   "news@league.test"):
            assert c.mail(ok)[0] == 250, ok
            c.rset()
        # The envelope may be right and the header wrong.
        c.mail(ANNA)
        c.rcpt("alice@example.test")
        code, text = c.data(b"Subject: forged\r\n"
                            b"From: \"Bob\" <bob@example.test>\r\n\r\nx\r\n")
        assert code == 553 and b"bob@example.test" in text, text
        c.mail(ANNA)
        c.rcpt("alice@example.test")
        code, text = c.data(b"Subject: board\r\nFrom: The board\r\n"
                            b" <board@example.test>, (comment) "
                            b"anna@example.test\r\n\r\nx\r\n")
        assert code == 250, text
    assert sub.wait_mail("alice"), sub.logtext()
    assert len(sub.maildir("alice")) == 1
    assert "reason=\"sender not owned\"" in sub.logtext()


def test_long_from_address_is_not_cut_to_an_owned_one(sub):
    # The first 511 bytes name anna's own address; the whole does not.
    pad = "x" * (511 - len("anna+@example.test"))
    forged = f"anna+{pad}@example.test.evil.example"
    with tls_session(sub) as c:
        c.login(ANNA, PASSWORD)
        for field in (forged, f"Anna <{forged}>"):
            c.mail(ANNA)
            c.rcpt("alice@example.test")
            code, text = c.data(b"Subject: long\r\nFrom: " +
                                field.encode() + b"\r\n\r\nx\r\n")
            assert code == 553 and b"5.7.1" in text, text


def test_from_forms_that_hid_another_sender_are_refused(sub):
    # Each field names bob in a way a reader sees and the old check did
    # not: an escaped parenthesis that opens no comment, a second <...>,
    # an unclosed quote, the obsolete "From :" form, and a folded line
    # the kept copy of the field had no room for.
    pad = b" (" + b"x" * 4100 + b")"
    fields = (b"From: (\\() bob@example.test\r\n",
              b"From: <bob@example.test> <anna@example.test>\r\n",
              b"From: \"bob@example.test\r\n",
              b"From : bob@example.test\r\n",
              b"From: anna@example.test\r\n ,bob@example.test" + pad +
              b"\r\n")
    with tls_session(sub) as c:
        c.login(ANNA, PASSWORD)
        passed = []
        for field in fields:
            c.mail(ANNA)
            c.rcpt("alice@example.test")
            code, text = c.data(b"Subject: hidden\r\n" + field +
                                b"\r\nx\r\n")
            if code != 553 or b"5.7.1" not in text:
                passed.append((field[:60], code))
        assert not passed, passed
        # Forms a mail program writes still pass.
        c.mail(ANNA)
        c.rcpt("alice@example.test")
        code, text = c.data(b"Subject: ok\r\nFrom: \"Anna (home)\" "
                            b"<anna@example.test> (Anna),\r\n Board: "
                            b"board@example.test;\r\n\r\nx\r\n")
        assert code == 250, text
    assert sub.wait_mail("alice"), sub.logtext()
    assert len(sub.maildir("alice")) == 1


def test_relay_refused_without_auth_on_every_listener(sub):
    with Client(sub.port) as c:                 # MX, even inside TLS
        c.ehlo()
        c.starttls(context=sub.ctx)
        c.ehlo()
        c.mail("x@example.org")
        code, text = c.rcpt("friend@elsewhere.example")
        assert code == 554 and b"relaying denied" in text, text
    for port, implicit in ((sub.msa, False), (sub.smtps, True)):
        with Client(port, sub.ctx, implicit=implicit) as c:
            c.ehlo()
            if not implicit:
                c.starttls(context=sub.ctx)
                c.ehlo()
            code, _ = c.mail("x@example.org")
            assert code == 530


def test_password_not_kept_by_the_smtp_process(sub):
    with tls_session(sub) as c:
        assert c.login(ANNA, PASSWORD)[0] == 235
        pid = role_pids(sub)["smtp"]
        assert not memory_has(pid, PASSWORD.encode())


# ---- the throttle in ternctl: the vault's counts, through the queue --------

def auth_table(d):
    """`ternctl auth` as {(kind, key): (failures, delay, state)}."""
    r = d.ctl("auth", check=True)
    rows = {}
    for line in r.stdout.splitlines()[1:]:
        f = line.split()
        if len(f) >= 5 and f[0] in ("client", "account"):
            rows[(f[0], f[1])] = (int(f[2]), f[3], f[4])
    return rows, r.stdout


def fail_login(d, user, times=1):
    c = raw_tls(d)
    for _ in range(times):
        code, text = c.cmd("AUTH PLAIN " + b64(f"\0{user}\0not-the-pw"))
        assert code == 535, text
    c.close()


def test_ternctl_auth_lists_and_clears_the_throttle(sub):
    rows, out = auth_table(sub)
    assert rows == {} and "no client or account" in out, out
    fail_login(sub, ANNA, 2)
    rows, out = auth_table(sub)
    # Two failures: the next attempt waits 2 s; both the address and the
    # account are counted, with the time their failures are forgotten.
    assert rows[("client", "127.0.0.1")] == (2, "2s", "delayed"), out
    assert rows[("account", ANNA)] == (2, "2s", "delayed"), out
    assert re.search(r"client\s+127\.0\.0\.1\s+2\s+2s\s+delayed\s+-\s+"
                     r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", out), out
    # An unknown name counts against the address alone.
    fail_login(sub, "nobody@example.test")
    rows, out = auth_table(sub)
    assert rows[("client", "127.0.0.1")][0] == 3, out
    assert ("account", "nobody@example.test") not in rows, out
    # Clear the address: the account's count stays.
    r = sub.ctl("auth", "clear", "127.0.0.1")
    assert r.returncode == 0 and "forgotten" in r.stdout, r.stderr
    rows, out = auth_table(sub)
    assert list(rows) == [("account", ANNA)], out
    # An account by any spelling the store accepts.
    r = sub.ctl("auth", "clear", ANNA.upper())
    assert r.returncode == 0, r.stderr
    rows, out = auth_table(sub)
    assert rows == {}, out
    r = sub.ctl("auth", "clear", ANNA)
    assert r.returncode == 1 and "not throttled" in r.stdout + r.stderr, r
    r = sub.ctl("auth", "clear", "bad key")
    assert r.returncode == 1, r
    # Cleared means the vault forgot: the next failure is the first again.
    fail_login(sub, ANNA)
    assert wait_for(lambda: re.search(
        r"vault: event=auth result=fail user=<anna@example\.test> "
        r"client=\[127\.0\.0\.1\] failures=1 delay=0s",
        sub.logtext())), sub.logtext()
    assert re.search(r"event=auth-throttle result=cleared "
                     r"key=<127\.0\.0\.1>", sub.logtext())


def test_ternctl_auth_follows_vault_and_queue_restarts(sub):
    fail_login(sub, "nobody@example.test")
    rows, out = auth_table(sub)
    assert rows[("client", "127.0.0.1")][0] == 1, out
    # The vault restarted: its counts are gone with it, and ternctl auth
    # reaches the new one (the parent pairs it with the queue again).
    pid = role_pids(sub)["vault"]
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: roles(sub).get("vault", [pid]) != [pid], 20)
    assert wait_for(lambda: "no client or account" in
                    sub.ctl("auth").stdout, 20), sub.ctl("auth")
    # The queue restarted: it gets a channel to the running vault.
    fail_login(sub, ANNA)
    pid = role_pids(sub)["queue"]
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: roles(sub).get("queue", [pid]) != [pid], 20)
    assert wait_for(lambda: ("account", ANNA) in auth_table(sub)[0], 20), \
        sub.ctl("auth")


# ---- known clients: guesses from elsewhere do not lock the user out --------

def login_from(d, source, password):
    """AUTH PLAIN from a loopback source address: (code, text)."""
    c = smtplib.SMTP("127.0.0.1", d.msa, "client.example.org", 60,
                     source_address=(source, 0))
    try:
        c.ehlo()
        c.starttls(context=d.ctx)
        c.ehlo()
        code, text = c.docmd("AUTH", "PLAIN " + b64(f"\0{ANNA}\0{password}"))
        return code, text.decode()
    finally:
        c.close()


def test_known_client_passes_the_account_lockout(sub):
    # The user logs in from her usual address: it becomes known.
    code, text = login_from(sub, "127.0.0.2", PASSWORD)
    assert code == 235, text
    # Someone guesses her password from 127.0.1.1 until the account is
    # refused: ten at once (the throttle holds each answer back a while).
    with ThreadPoolExecutor(max_workers=10) as ex:
        codes = list(ex.map(lambda _: login_from(sub, "127.0.1.1",
                                                 "guess")[0], range(10)))
    assert codes == [535] * 10, codes
    rows, out = auth_table(sub)
    assert rows[("account", ANNA)][2] == "refused", out
    # A never-seen address is refused, the right password or not ...
    code, text = login_from(sub, "127.0.2.1", PASSWORD)
    assert code == 454 and "4.7.0" in text, (code, text)
    # ... her known address (any of its /24) still gets in ...
    code, text = login_from(sub, "127.0.0.3", PASSWORD)
    assert code == 235, (code, text)
    assert wait_for(lambda: re.search(
        r"vault: event=auth result=ok user=<anna@example\.test> "
        r"client=\[127\.0\.0\.3\] failures=0 delay=0s known=yes",
        sub.logtext())), sub.logtext()
    # ... without ending the refusal, which ternctl auth shows with the
    # count of the account's known clients.
    code, text = login_from(sub, "127.0.2.1", PASSWORD)
    assert code == 454, (code, text)
    rows, out = auth_table(sub)
    assert rows[("account", ANNA)][2] == "refused", out
    assert re.search(r"account\s+anna@example\.test\s+\d+\s+-\s+"
                     r"refused\s+1\s+\d{4}-", out), out
    assert re.search(r"client\s+127\.0\.1\.1\s+\d+\s+-\s+refused\s+-\s",
                     out), out


def test_auth_known_clients_0_knows_no_client(make_daemon, tmpbase):
    d = submission(make_daemon, tmpbase, "auth-known-clients 0\n")
    assert login_from(d, "127.0.0.2", PASSWORD)[0] == 235
    assert login_from(d, "127.0.1.1", "guess")[0] == 535
    rows, out = auth_table(d)
    assert re.search(r"account\s+anna@example\.test\s+1\s+1s\s+delayed\s+"
                     r"0\s", out), out
    assert login_from(d, "127.0.0.2", PASSWORD)[0] == 235
    assert wait_for(lambda: re.search(
        r"result=ok user=<anna@example\.test> client=\[127\.0\.0\.2\] "
        r"failures=0 delay=1s known=no", d.logtext())), d.logtext()


# ---- a vault that does not answer ---------------------------------------------

def test_stopped_vault_gives_454_not_a_hung_session(make_daemon, tmpbase):
    # The secrets process stopped (or wedged): a password check must not
    # hold the session until the client gives up.  After vault-timeout
    # the client is told to try again later; once the vault runs again,
    # the same login works (its late answer to the first one is dropped).
    d = submission(make_daemon, tmpbase, "vault-timeout 2s\n")
    pid = role_pids(d)["vault"]
    os.kill(pid, signal.SIGSTOP)
    try:
        c = raw_tls(d)
        c.sock.settimeout(30)
        code, text = c.cmd("AUTH PLAIN " + b64(f"\0{ANNA}\0{PASSWORD}"))
        assert code == 454, (code, text)
        assert "4.7.0" in text, text
        # The session goes on: a new attempt is taken, not refused.
        assert c.cmd("NOOP")[0] == 250
    finally:
        os.kill(pid, signal.SIGCONT)
    assert wait_for(lambda: "event=vault result=timeout requests=1" in
                    d.logtext(), 10), d.logtext()[-2000:]
    code, text = c.cmd("AUTH PLAIN " + b64(f"\0{ANNA}\0{PASSWORD}"))
    assert code == 235, (code, text)
    c.close()
