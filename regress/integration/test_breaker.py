"""Abuse limits and the circuit breaker: per-account limits on messages
and recipients an hour and a day (with per-account `limit` overrides),
counted by the queue process; an account whose sending jumps far above its
usual rate, or whose recipients are mostly rejected, is suspended: new
submissions get 451 4.7.1, its queued mail is held, the postmaster is told,
and `ternctl user release` undoes it.  sendmail(1) users are limited as
"local:NAME".  Remote recipients stay queued: the test DNS is dead.
"""
import re
import shutil
import subprocess

import pytest

from conftest import free_port, wait_for
from test_sendmail import run, sendmail  # noqa: F401 (fixture)
from test_tls import Client, make_server_ca

pytestmark = pytest.mark.usefixtures("sanitizer_check")

PASSWORD = "Sub-mission-Pw-4kQ9z"
ANNA = "anna@example.test"
BOB = "bob@example.test"


def breaker_daemon(make_daemon, tmpbase, knobs):
    ca = tmpbase / "ca"
    ctx = make_server_ca(ca)
    msa = free_port()
    d = make_daemon(f'tls-cert "{ca}/leaf.pem"\ntls-key "{ca}/leaf.key"\n'
                    f"listen msa 127.0.0.1 port {msa}\n" + knobs,
                    vusers=("demo", "alice", "bob", "anna"))
    d.write_aliases("postmaster: alice\n")
    for who in (ANNA, BOB):
        d.ctl("user", "add", who, input=PASSWORD + "\n", check=True)
    d.msa, d.ctx = msa, ctx
    return d.start()


def login(d, who):
    c = Client(d.msa)
    c.ehlo()
    c.starttls(context=d.ctx)
    c.ehlo()
    code, text = c.login(who, PASSWORD)
    assert code == 235, text
    return c


def submit(c, sender, rcpts, subject="x"):
    """One transaction; the first refusal for the limits (at MAIL, at a
    RCPT, at DATA), else the reply to the end of the data."""
    code, text = c.mail(sender)
    if code != 250:
        return code, text.decode()
    for r in rcpts:
        code, text = c.rcpt(r)
        if code in (451, 452):
            c.rset()
            return code, text.decode()
    code, text = c.docmd("DATA")
    if code != 354:
        return code, text.decode()
    c.send(f"From: {sender}\r\nSubject: {subject}\r\n\r\nbody\r\n.\r\n"
           .encode())
    code, text = c.getreply()
    return code, text.decode()


def queued(d):
    """Queue ids listed by ternctl queue, with their hold mark."""
    out = d.ctl("queue", check=True).stdout
    return re.findall(r"^([0-9A-F]{16})([ !])", out, re.M)


def test_hourly_limit_refuses_the_next_message(make_daemon, tmpbase):
    d = breaker_daemon(make_daemon, tmpbase, "limit-messages-hour 3\n")
    with login(d, ANNA) as c:
        for i in range(3):
            code, text = submit(c, ANNA, ["friend@elsewhere.example"])
            assert code == 250, text
        code, text = submit(c, ANNA, ["friend@elsewhere.example"])
        assert code == 451 and text.startswith("4.7.1 sending limit of 3 "
                                               "messages an hour reached "
                                               "for anna@example.test"), text
    assert len(queued(d)) == 3, d.ctl("queue").stdout
    log = d.logtext()
    assert "event=limit result=refused account=<anna@example.test> " \
        "limit=messages-hour" in log, log
    # Recipients are limited too (452 4.5.3), and bob has his own count.
    with login(d, BOB) as c:
        code, text = submit(c, BOB, ["a@elsewhere.example"])
        assert code == 250, text


def test_recipient_limit_and_override(make_daemon, tmpbase):
    d = breaker_daemon(make_daemon, tmpbase,
                       "limit-messages-hour 2\nlimit-recipients-hour 3\n"
                       f"limit {ANNA} messages-hour 5 recipients-hour 50\n")
    assert "limit \"anna@example.test\" messages-hour 5 recipients-hour " \
        "50" in _effective(d)
    with login(d, ANNA) as c:                   # the list's sender
        for i in range(5):
            code, text = submit(c, ANNA, ["x@elsewhere.example",
                                          "y@elsewhere.example"])
            assert code == 250, (i, text)
        code, text = submit(c, ANNA, ["x@elsewhere.example"])
        assert code == 451 and "5 messages an hour" in text, text
    with login(d, BOB) as c:                    # the defaults
        code, text = submit(c, BOB, ["p@elsewhere.example",
                                     "q@elsewhere.example",
                                     "r@elsewhere.example",
                                     "s@elsewhere.example"])
        assert code == 452 and text.startswith(
            "4.5.3 sending limit of 3 recipients an hour reached for "
            "bob@example.test"), text
        assert submit(c, BOB, ["p@elsewhere.example"])[0] == 250
        assert submit(c, BOB, ["q@elsewhere.example"])[0] == 250
        code, text = submit(c, BOB, ["r@elsewhere.example"])
        assert code == 451 and "2 messages an hour" in text, text
    assert len(queued(d)) == 7


def _effective(d):
    import subprocess
    from conftest import TERND
    r = subprocess.run([str(TERND), "-P", "-f", str(d.conf)],
                       capture_output=True, text=True)
    return r.stdout + r.stderr


def test_burst_trips_the_breaker_and_release_undoes_it(make_daemon, tmpbase):
    d = breaker_daemon(make_daemon, tmpbase,
                       "breaker-floor 3\nbreaker-factor 10\n")
    with login(d, BOB) as c:                    # another account
        assert submit(c, BOB, ["b1@elsewhere.example"])[0] == 250
    with login(d, ANNA) as c:
        for i in range(4):                      # the 4th trips it
            code, text = submit(c, ANNA, [f"r{i}@elsewhere.example"])
            assert code == 250, (i, text)
        code, text = submit(c, ANNA, ["r9@elsewhere.example"])
        assert code == 451 and text.startswith(
            "4.7.1 account anna@example.test suspended for unusual "
            "sending; the postmaster has been told"), text
    log = d.logtext()
    assert re.search(r"event=breaker result=tripped account=<anna@example"
                     r"\.test> held=4 reason=\"4 messages in the last hour",
                     log), log
    # The postmaster (alias of alice) is told what happened and what to do.
    assert d.wait_mail("alice"), d.logtext()
    q = queued(d)
    assert sorted(m for _, m in q) == [" ", "!", "!", "!", "!"], q
    note = d.maildir("alice")[0].read_text()
    assert "Subject: Account anna@example.test suspended" in note
    assert "4 messages in the last hour" in note
    assert "ternctl user release anna@example.test" in note
    # bob is unaffected.
    with login(d, BOB) as c:
        assert submit(c, BOB, ["b2@elsewhere.example"])[0] == 250
    # The suspension survives a restart (the queue's state file).
    d.stop()
    d.start()
    with login(d, ANNA) as c:
        assert submit(c, ANNA, ["r9@elsewhere.example"])[0] == 451
    r = d.ctl("user", "release", ANNA)
    assert r.returncode == 0 and "4 held message(s) released" in r.stdout, \
        (r.stdout, r.stderr)
    assert all(m == " " for _, m in queued(d)), d.ctl("queue").stdout
    assert "event=breaker result=released account=<anna@example.test> " \
        "released=4" in d.logtext()
    with login(d, ANNA) as c:
        assert submit(c, ANNA, ["again@elsewhere.example"])[0] == 250
    assert d.ctl("user", "release", ANNA).returncode != 0   # not suspended


def test_rejected_recipients_trip_the_breaker(make_daemon, tmpbase):
    d = breaker_daemon(make_daemon, tmpbase,
                       "breaker-reject-percent 50\nbreaker-reject-min 3\n")
    with login(d, ANNA) as c:
        code, text = submit(c, ANNA, ["nobody1@example.test",
                                      "nobody2@example.test",
                                      "nobody3@example.test",
                                      "friend@elsewhere.example"])
        assert code == 250, text
        code, text = submit(c, ANNA, ["friend@elsewhere.example"])
        assert code == 451 and "suspended" in text, text
    assert "reason=\"3 of 4 recipients in the last hour were rejected" \
        in d.logtext()
    assert d.wait_mail("alice"), d.logtext()       # the notice
    assert [m for _, m in queued(d)] == ["!"]


def test_limits_apply_to_sendmail_per_local_user(make_daemon, tmpbase,
                                                  sendmail):
    d = make_daemon("limit-messages-hour 2\n").start()
    for i in range(2):
        r = run(d, sendmail, ["demo@example.test"], b"Subject: s\n\nx\n",
                user="nobody")
        assert r.returncode == 0, r.stderr
    r = run(d, sendmail, ["demo@example.test"], b"Subject: s\n\nx\n",
            user="nobody")
    assert r.returncode != 0 and b"sending limit of 2 messages an hour " \
        b"reached for local:nobody" in r.stderr, (r.returncode, r.stderr)
    assert wait_for(lambda: len(d.maildir("demo")) == 2)
    # Another local user has a count of its own.
    r = run(d, sendmail, ["demo@example.test"], b"Subject: s\n\nx\n")
    assert r.returncode == 0, r.stderr
    assert "account=<local:nobody>" in d.logtext()


# ---- asked early (MAIL, RCPT), held at DATA -----------------------------------

def test_limits_answered_at_mail_and_rcpt(make_daemon, tmpbase):
    d = breaker_daemon(make_daemon, tmpbase,
                       "limit-messages-hour 1\nlimit-recipients-hour 2\n")
    with login(d, ANNA) as c:
        assert c.mail(ANNA)[0] == 250
        assert c.rcpt("a@elsewhere.example")[0] == 250
        assert c.rcpt("b@elsewhere.example")[0] == 250
        # The third recipient is over the limit: refused at RCPT, the
        # transaction goes on with the two it has.
        code, text = c.rcpt("c@elsewhere.example")
        assert code == 452 and text.startswith(
            b"4.5.3 sending limit of 2 recipients an hour reached for "
            b"anna@example.test"), text
        code, text = c.data(b"Subject: two\r\n\r\nx\r\n")
        assert code == 250, text
        # The account's message limit is reached: MAIL says so at once.
        code, text = c.mail(ANNA)
        assert code == 451 and text.startswith(
            b"4.7.1 sending limit of 1 messages an hour reached for "
            b"anna@example.test"), text
        assert c.noop()[0] == 250               # the session goes on
    assert len(queued(d)) == 1
    log = d.logtext()
    assert re.search(r"event=rcpt result=tempfail code=452 reason=\"4\.5\.3 "
                     r"sending limit of 2 recipients an hour[^\"]*\" "
                     r"account=<anna@example\.test> from=<anna@example\.test>"
                     r" to=<c@elsewhere\.example>", log), log
    assert re.search(r"event=mail result=tempfail code=451 ", log), log
    assert "event=limit result=refused account=<anna@example.test>" in log


def test_two_sessions_cannot_both_take_the_last_place(make_daemon, tmpbase):
    d = breaker_daemon(make_daemon, tmpbase, "limit-messages-hour 1\n")
    a = login(d, ANNA)
    assert a.mail(ANNA)[0] == 250
    assert a.rcpt("a@elsewhere.example")[0] == 250
    code, text = a.docmd("DATA")
    assert code == 354, text
    # While a's message is being received, its place is held: b is
    # refused, though nothing is committed yet.
    with login(d, ANNA) as b:
        code, text = submit(b, ANNA, ["b@elsewhere.example"])
        assert code == 451 and b"1 messages an hour" in text.encode(), text
    a.send(b"Subject: a\r\n\r\nx\r\n.\r\n")
    assert a.getreply()[0] == 250
    a.quit()
    assert len(queued(d)) == 1, d.ctl("queue").stdout


def test_a_dropped_session_gives_its_place_back(make_daemon, tmpbase):
    d = breaker_daemon(make_daemon, tmpbase, "limit-messages-hour 1\n")
    a = login(d, ANNA)
    assert a.mail(ANNA)[0] == 250
    assert a.rcpt("a@elsewhere.example")[0] == 250
    assert a.docmd("DATA")[0] == 354
    a.send(b"Subject: half\r\n\r\nnever ends")
    a.close()                                   # gone mid-data
    # Once the queue drops the half message, the place is free again.
    def sent():
        with login(d, ANNA) as b:
            return submit(b, ANNA, ["b@elsewhere.example"])[0] == 250
    assert wait_for(sent, 20), d.logtext()
    assert len(queued(d)) == 1


# ---- per program: a web form's mail() apart from cron's ----------------------

def shell_named(tmpbase, name):
    """A copy of /bin/sh called name: the program that runs sendmail
    (its name reaches the daemon as XPROGRAM, from /proc/PPID/comm)."""
    p = tmpbase / name
    if not p.exists():
        shutil.copy("/bin/sh", p)
    return p


def sendmail_from(d, prog, sendmail, rcpt, subject):
    """sendmail run as nobody by the program prog, as PHP's mail() or
    cron runs it."""
    return subprocess.run(
        ["runuser", "-u", "nobody", "--", "env", f"TERN_CONF={d.conf}",
         str(prog), "-c", f'"$0" {rcpt}; exit $?', str(sendmail)],
        input=f"Subject: {subject}\n\nx\n".encode(), capture_output=True,
        timeout=60)


def test_program_has_its_own_limit_within_its_users(make_daemon, tmpbase,
                                                    sendmail):
    php = shell_named(tmpbase, "php-fpm8.2")
    cron = shell_named(tmpbase, "cron")
    d = make_daemon("limit local:nobody/php-fpm8.2 messages-hour 2\n"
                    "limit local:nobody messages-hour 4\n").start()
    for i in range(2):
        r = sendmail_from(d, php, sendmail, "demo@example.test", f"form {i}")
        assert r.returncode == 0, r.stderr
    r = sendmail_from(d, php, sendmail, "demo@example.test", "form 3")
    assert r.returncode != 0 and b"sending limit of 2 messages an hour " \
        b"reached for local:nobody/php-fpm8.2" in r.stderr, \
        (r.returncode, r.stderr)
    # cron's mail of the same user is not stopped by the form's limit...
    r = sendmail_from(d, cron, sendmail, "demo@example.test", "cron 1")
    assert r.returncode == 0, r.stderr
    r = sendmail_from(d, cron, sendmail, "demo@example.test", "cron 2")
    assert r.returncode == 0, r.stderr
    # ... but the user's limit holds over its programs together.
    r = sendmail_from(d, cron, sendmail, "demo@example.test", "cron 3")
    assert r.returncode != 0 and b"sending limit of 4 messages an hour " \
        b"reached for local:nobody" in r.stderr, (r.returncode, r.stderr)
    assert wait_for(lambda: len(d.maildir("demo")) == 4), d.logtext()
    out = d.ctl("user", "limits", check=True).stdout
    assert re.search(r"^local:nobody/php-fpm8\.2\s+2\s", out, re.M), out
    assert re.search(r"^local:nobody/cron\s+2\s", out, re.M), out


def test_breaker_holds_the_programs_mail_not_crons(make_daemon, tmpbase,
                                                   sendmail):
    php = shell_named(tmpbase, "php-fpm8.2")
    cron = shell_named(tmpbase, "cron")
    d = make_daemon("breaker-floor 3\nbreaker-factor 10\n").start()
    d.write_aliases("postmaster: alice\n")
    r = sendmail_from(d, cron, sendmail, "far@elsewhere.example", "cron")
    assert r.returncode == 0, r.stderr
    for i in range(4):                          # the 4th trips it
        r = sendmail_from(d, php, sendmail, f"v{i}@elsewhere.example",
                          f"spam {i}")
        assert r.returncode == 0, (i, r.stderr)
    assert wait_for(lambda: re.search(
        r"event=breaker result=tripped account=<local:nobody/php-fpm8\.2> "
        r"held=4 ", d.logtext())), d.logtext()
    r = sendmail_from(d, php, sendmail, "v9@elsewhere.example", "spam 9")
    assert r.returncode != 0 and b"local:nobody/php-fpm8.2 suspended" in \
        r.stderr, r.stderr
    # The postmaster's notice is delivered (until then it is queued too).
    assert d.wait_mail("alice"), d.logtext()
    # cron's queued message is not held, and cron still sends.
    assert wait_for(lambda: len(queued(d)) == 5), d.ctl("queue").stdout
    q = queued(d)
    assert sorted(m for _, m in q) == [" ", "!", "!", "!", "!"], q
    r = sendmail_from(d, cron, sendmail, "demo@example.test", "cron again")
    assert r.returncode == 0, r.stderr
    assert d.wait_mail("demo"), d.logtext()
    assert "ternctl user release local:nobody/php-fpm8.2" in \
        d.maildir("alice")[0].read_text()
    r = d.ctl("user", "release", "local:nobody/php-fpm8.2")
    assert r.returncode == 0 and "4 held message(s) released" in r.stdout, \
        (r.stdout, r.stderr)
    assert all(m == " " for _, m in queued(d)), d.ctl("queue").stdout


BARE_SUBMIT = r"""
import smtplib, socket, sys
s = smtplib.SMTP()
s.sock = socket.socket(socket.AF_UNIX)
s.sock.connect(sys.argv[1])
s.getreply()
s.ehlo("localhost")
try:
    s.sendmail("nobody@example.test", [sys.argv[2]], b"Subject: bare\r\n\r\nx\r\n")
except smtplib.SMTPException as e:
    print(e)
    sys.exit(1)
s.quit()
"""


def test_users_limit_holds_over_a_session_naming_no_program(make_daemon,
                                                           tmpbase, sendmail):
    """The user's limit counts its programs and its own sessions (no
    XPROGRAM, which is the caller's to send or not) together: what the
    programs took is not available again to a bare session."""
    cron = shell_named(tmpbase, "cron")
    d = make_daemon("limit local:nobody messages-hour 2\n").start()
    for i in range(2):
        r = sendmail_from(d, cron, sendmail, "demo@example.test", f"cron {i}")
        assert r.returncode == 0, r.stderr
    r = subprocess.run(
        ["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c",
         BARE_SUBMIT, str(d.base / "submit.sock"), "demo@example.test"],
        capture_output=True, timeout=60)
    assert r.returncode == 1 and b"sending limit of 2 messages an hour " \
        b"reached for local:nobody" in r.stdout, (r.returncode, r.stdout,
                                                  r.stderr)
    assert wait_for(lambda: len(d.maildir("demo")) == 2), d.logtext()
