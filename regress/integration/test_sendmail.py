"""sendmail(1): ternctl invoked as "sendmail" reads a message on stdin and
submits it over the daemon's unix submit socket.  Every test runs the real
ternd and the real binary, through a symlink named sendmail, with TERN_CONF
pointing at the test's config."""
import os
import pwd
import re
import signal
import smtplib
import subprocess
import time

import pytest

from conftest import TERNCTL, wait_for

# Any sanitizer report from the daemon fails the test (ASan build).
try:
    from conftest import SANITIZER_MARKS  # noqa: F401  (with its fixture)
    pytestmark = pytest.mark.usefixtures("sanitizer_check")
except ImportError:
    pass

ME = pwd.getpwuid(os.getuid()).pw_name
HOST = "mx.example.test"
ORIGIN = "example.test"     # the first local-domain: bare names get it


def submit_line(base):
    return f'submit-socket "{base}/submit.sock"'


@pytest.fixture
def sm_daemon(make_daemon, tmpbase):
    """A daemon whose config has a submit socket in the test's temp dir."""
    def make(extra="", start=True, **kw):
        d = make_daemon(extra, **kw)
        if "submit-socket" not in d.conf.read_text():
            d = make_daemon(submit_line(tmpbase) + "\n" + extra, **kw)
        d.submit = tmpbase / "submit.sock"
        if start:
            d.start()
            assert wait_for(d.submit.exists, 10), d.logtext()
        return d
    return make


@pytest.fixture
def d(sm_daemon):
    return sm_daemon()


@pytest.fixture
def sendmail(tmpbase):
    link = tmpbase / "sendmail"
    if not link.exists():
        os.symlink(TERNCTL.resolve(), link)
    return link


def run(d, sendmail, args, data=b"", user=None, conf=None, timeout=60):
    env = dict(os.environ, TERN_CONF=str(conf or d.conf))
    cmd = [str(sendmail), *args]
    if user:
        cmd = ["runuser", "-u", user, "--", "env",
               f"TERN_CONF={env['TERN_CONF']}", *cmd]
    return subprocess.run(cmd, input=data, capture_output=True,
                          timeout=timeout, env=env)


def ok(r):
    assert r.returncode == 0, (r.returncode, r.stderr.decode(errors="replace"))
    return r


def mail_of(d, user, count=1):
    assert d.wait_mail(user, count), (user, d.logtext()[-3000:])
    files = d.maildir(user)
    assert len(files) == count, files
    return [f.read_bytes() for f in files]


def head_body(msg):
    head, sep, body = msg.partition(b"\n\n")
    assert sep, msg
    return head + b"\n", body


def nothing_delivered(d, users=("demo", "alice", "bob")):
    time.sleep(1.0)
    for u in users:
        assert d.maildir(u) == [], u
    assert d.queue_files() == [], d.ctl("queue").stdout


# ---- plain submission ------------------------------------------------------------

def test_plain_lf_message_delivered_with_added_fields(d, sendmail):
    body = b"line one\n.leading dot\n..two dots\n\nlast line\n"
    ok(run(d, sendmail, ["demo@example.test"],
           b"Subject: plain\nX-Test: yes\n\n" + body))
    [msg] = mail_of(d, "demo")
    assert b"\r" not in msg                 # Maildir files are LF
    head, got = head_body(msg)
    assert got == body
    assert f"Return-Path: <{ME}@{ORIGIN}>".encode() in head
    assert b"\nSubject: plain\n" in head and b"\nX-Test: yes\n" in head
    assert re.search(rb"\nFrom: (.* )?<?%s@%s>?\n" % (ME.encode(),
                     ORIGIN.encode()), head), head
    assert re.search(rb"\nDate: [A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} "
                     rb"\d{2}:\d{2}:\d{2} [+-]\d{4}\n", head), head
    assert re.search(rb"\nMessage-ID: <[^<>@\s]+@mx\.example\.test>\n",
                     head), head
    assert re.search(rb"Received: by mx\.example\.test .*local:uid=%d\(%s\)"
                     % (os.getuid(), ME.encode()), head), head
    # The Maildir file appears before the queue removes its copy.
    assert wait_for(lambda: d.queue_files() == [], 10), d.ctl("queue").stdout


def test_message_ids_are_unique(d, sendmail):
    for i in range(3):
        ok(run(d, sendmail, ["demo@example.test"], b"Subject: n%d\n\nx\n" % i))
    ids = {re.search(rb"Message-ID: (\S+)", m).group(1)
           for m in mail_of(d, "demo", 3)}
    assert len(ids) == 3


def test_existing_fields_not_duplicated(d, sendmail):
    head = (b"From: Someone <someone@example.org>\n"
            b"Date: Mon, 01 Jan 2024 00:00:00 +0000\n"
            b"Message-ID: <fixed.1@example.org>\n"
            b"Subject: mine\n\nbody\n")
    ok(run(d, sendmail, ["demo@example.test"], head))
    [msg] = mail_of(d, "demo")
    h, body = head_body(msg)
    for name in (b"From:", b"Date:", b"Message-ID:"):
        assert len(re.findall(rb"(?m)^" + name, h)) == 1, (name, h)
    assert b"Message-ID: <fixed.1@example.org>" in h and body == b"body\n"


def test_crlf_and_lone_cr_input_normalised(d, sendmail):
    ok(run(d, sendmail, ["demo@example.test"],
           b"Subject: crlf\r\n\r\none\r\ntwo\rthree\nfour"))
    [msg] = mail_of(d, "demo")
    assert b"\r" not in msg
    assert head_body(msg)[1] == b"one\ntwo\nthree\nfour\n"


def test_input_without_separator_all_header(d, sendmail):
    ok(run(d, sendmail, ["demo@example.test"], b"Subject: only header\n"))
    [msg] = mail_of(d, "demo")
    h, body = head_body(msg)
    assert b"\nSubject: only header\n" in h and body == b""
    assert b"\nDate: " in h


def test_input_without_header_is_all_body(d, sendmail):
    text = b"just some text: not a header\nsecond line\n"
    ok(run(d, sendmail, ["demo@example.test"], text))
    [msg] = mail_of(d, "demo")
    h, body = head_body(msg)
    assert body == text
    assert b"\nFrom: " in h and b"\nMessage-ID: " in h


def test_8bit_and_utf8_message(d, sendmail):
    text = "Subject: Grüße\n\nçà va ☃\n".encode()
    ok(run(d, sendmail, ["demo@example.test"], text))
    [msg] = mail_of(d, "demo")
    assert "Subject: Grüße\n".encode() in msg
    assert head_body(msg)[1] == "çà va ☃\n".encode()


def test_large_message_intact(d, sendmail):
    body = b"".join(b"%06d " % i + b"x" * 70 + b"\n" for i in range(20000))
    body += b".\n" + b".starts with a dot\n"   # -i: the lone dot is data
    ok(run(d, sendmail, ["-i", "demo@example.test"],
           b"Subject: big\n\n" + body))
    [msg] = mail_of(d, "demo")
    assert head_body(msg)[1] == body


# ---- the lone dot ----------------------------------------------------------------

def test_lone_dot_ends_input_without_i(d, sendmail):
    ok(run(d, sendmail, ["demo@example.test"],
           b"Subject: dot\n\nbefore\n.\nafter\n"))
    [msg] = mail_of(d, "demo")
    assert head_body(msg)[1] == b"before\n"


def test_lone_dot_crlf_ends_input_without_i(d, sendmail):
    ok(run(d, sendmail, ["demo@example.test"],
           b"Subject: dot\r\n\r\nbefore\r\n.\r\nafter\r\n"))
    [msg] = mail_of(d, "demo")
    assert head_body(msg)[1] == b"before\n"


@pytest.mark.parametrize("flag", ["-i", "-oi"])
def test_lone_dot_kept_with_i(d, sendmail, flag):
    ok(run(d, sendmail, [flag, "demo@example.test"],
           b"Subject: dot\n\nbefore\n.\nafter\n"))
    [msg] = mail_of(d, "demo")
    assert head_body(msg)[1] == b"before\n.\nafter\n"


# ---- -t ----------------------------------------------------------------------------

def test_t_takes_to_cc_bcc_and_removes_bcc(d, sendmail):
    text = (b'To: "Demo, User" <demo@example.test>, undisclosed-recipients:;\n'
            b"Cc: (the list) Alice (A.) <alice@example.test>,\n"
            b"\tFriends: alice@example.test;\n"
            b"Bcc: Hidden\n"
            b"  <bob@example.test>\n"
            b"Subject: minus t\n\nbody\n")
    ok(run(d, sendmail, ["-t"], text))
    for u in ("demo", "alice", "bob"):
        [msg] = mail_of(d, u)
        assert b"Subject: minus t" in msg
        assert not re.search(rb"(?im)^bcc:", msg), (u, msg)
        assert b"Hidden" not in msg
        assert b'To: "Demo, User" <demo@example.test>' in msg
        assert b"\tFriends: alice@example.test;\n" in msg


def test_t_adds_to_command_line_recipients(d, sendmail):
    ok(run(d, sendmail, ["-t", "bob@example.test"],
           b"To: demo@example.test\nSubject: both\n\nx\n"))
    mail_of(d, "demo")
    mail_of(d, "bob")
    time.sleep(0.5)
    assert d.maildir("alice") == []


def test_bcc_removed_without_t(d, sendmail):
    ok(run(d, sendmail, ["demo@example.test"],
           b"Subject: x\nBcc: alice@example.test\n\nx\n"))
    [msg] = mail_of(d, "demo")
    assert b"Bcc" not in msg
    time.sleep(0.5)
    assert d.maildir("alice") == []      # without -t headers are not read


def test_t_resent_fields_take_precedence(d, sendmail):
    ok(run(d, sendmail, ["-t"],
           b"Resent-To: alice@example.test\nResent-Bcc: bob@example.test\n"
           b"To: demo@example.test\nSubject: resent\n\nx\n"))
    for u in ("alice", "bob"):
        [msg] = mail_of(d, u)
        assert b"Resent-Bcc" not in msg and b"Resent-To: alice" in msg
    time.sleep(0.5)
    assert d.maildir("demo") == []


def test_t_without_any_recipient(d, sendmail):
    r = run(d, sendmail, ["-t"],
            b"To: undisclosed-recipients:;\nSubject: none\n\nx\n")
    assert r.returncode == 64, r
    assert b"no recipients" in r.stderr
    nothing_delivered(d)


def test_t_unknown_header_recipient_sends_nothing(d, sendmail):
    r = run(d, sendmail, ["-t"],
            b"To: demo@example.test, Nobody <nosuch@example.test>\n\nx\n")
    assert r.returncode == 67, r
    assert b"nosuch@example.test" in r.stderr
    nothing_delivered(d)


# ---- sender and author ---------------------------------------------------------

@pytest.mark.parametrize("args", [["-f", "other@example.org"],
                                  ["-fother@example.org"],
                                  ["-r", "other@example.org"],
                                  ["-f", "<other@example.org>"]])
def test_f_sets_envelope_sender(d, sendmail, args):
    ok(run(d, sendmail, args + ["demo@example.test"], b"Subject: f\n\nx\n"))
    [msg] = mail_of(d, "demo")
    h, _ = head_body(msg)
    assert h.startswith(b"Return-Path: <other@example.org>\n"), h
    assert b"\nFrom: other@example.org\n" in h


@pytest.mark.parametrize("sender", ["", "<>"])
def test_null_sender(d, sendmail, sender):
    ok(run(d, sendmail, ["-f", sender, "demo@example.test"],
           b"Subject: null\n\nx\n"))
    [msg] = mail_of(d, "demo")
    assert msg.startswith(b"Return-Path: <>\n"), msg[:200]


def test_F_full_name_in_from(d, sendmail):
    ok(run(d, sendmail, ["-F", "Full Name", "demo@example.test"],
           b"Subject: F\n\nx\n"))
    [msg] = mail_of(d, "demo")
    assert f"\nFrom: Full Name <{ME}@{ORIGIN}>\n".encode() in msg, msg


def test_F_name_with_specials_is_quoted(d, sendmail):
    ok(run(d, sendmail, ["-F", 'Doe, "J." Jr', "-f", "jd@example.org",
                         "demo@example.test"], b"Subject: F\n\nx\n"))
    [msg] = mail_of(d, "demo")
    assert b'\nFrom: "Doe, \\"J.\\" Jr" <jd@example.org>\n' in msg, msg


def test_F_non_ascii_name_is_encoded(d, sendmail):
    ok(run(d, sendmail, ["-F", "Zoë Ünïcode", "demo@example.test"],
           b"Subject: F\n\nx\n"))
    [msg] = mail_of(d, "demo")
    m = re.search(rb"\nFrom: =\?UTF-8\?B\?([A-Za-z0-9+/=]+)\?= <", msg)
    assert m, msg
    import base64
    assert base64.b64decode(m.group(1)).decode() == "Zoë Ünïcode"


def test_F_not_used_when_from_present(d, sendmail):
    ok(run(d, sendmail, ["-F", "Full Name", "demo@example.test"],
           b"From: me@example.org\nSubject: F\n\nx\n"))
    [msg] = mail_of(d, "demo")
    assert b"Full Name" not in msg and b"\nFrom: me@example.org\n" in msg


# ---- refusals, all or nothing --------------------------------------------------

def test_unknown_recipient_nothing_delivered(d, sendmail):
    r = run(d, sendmail, ["demo@example.test", "nosuch@example.test"],
            b"Subject: all or nothing\n\nx\n")
    assert r.returncode == 67, r
    err = r.stderr.decode()
    assert "nosuch@example.test" in err and "550" in err, err
    assert "demo@example.test" not in err
    nothing_delivered(d)


def test_server_replies_are_sanitised(d, sendmail):
    # A UTF-8 local part is echoed back in the 550 reply; the terminal
    # only ever sees printable ASCII.
    r = run(d, sendmail, ["nösuch\u2603@example.test"], b"x\n")
    assert r.returncode == 67, r
    assert all(32 <= b < 127 or b == 10 for b in r.stderr), r.stderr


def test_message_over_size_limit(sm_daemon, sendmail):
    d = sm_daemon("max-message-size 10K")
    r = run(d, sendmail, ["demo@example.test"],
            b"Subject: big\n\n" + b"y" * 80 * 300 + b"\n")
    assert r.returncode == 65, r
    assert b"552" in r.stderr
    nothing_delivered(d)


def test_more_recipients_than_one_transaction_holds(sm_daemon, sendmail):
    d = sm_daemon("max-recipients 2")
    ok(run(d, sendmail, ["demo@example.test", "alice@example.test",
                         "bob@example.test"], b"Subject: batches\n\nx\n"))
    for u in ("demo", "alice", "bob"):
        [msg] = mail_of(d, u)
        assert b"Subject: batches" in msg
    time.sleep(0.5)
    assert all(len(d.maildir(u)) == 1 for u in ("demo", "alice", "bob"))


def test_more_recipients_than_one_transaction_one_unknown(sm_daemon,
                                                          sendmail):
    d = sm_daemon("max-recipients 2")
    r = run(d, sendmail, ["demo@example.test", "alice@example.test",
                          "bob@example.test", "nosuch@example.test"],
            b"Subject: batches\n\nx\n")
    assert r.returncode == 67, r
    nothing_delivered(d)


def test_input_over_64_mib_refused_before_connecting(d, sendmail):
    line = b"z" * 1023 + b"\n"
    r = run(d, sendmail, ["demo@example.test"],
            b"Subject: huge\n\n" + line * (65 * 1024), timeout=120)
    assert r.returncode == 73, r.returncode
    assert b"too large" in r.stderr
    assert "local:uid=" not in d.logtext()     # it never connected
    nothing_delivered(d)


def test_daemon_never_started(sm_daemon, sendmail):
    # No maildrop either (ternd makes it): the caller must try again.
    d = sm_daemon(start=False)
    r = run(d, sendmail, ["demo@example.test"], b"Subject: x\n\nx\n",
            timeout=60)
    assert r.returncode == 75, r
    err = r.stderr.decode()
    assert f"cannot connect to {d.submit}" in err and "ternd running" in err
    assert "could not be kept for later either" in err, err


def test_daemon_stopped_after_running_keeps_the_message(d, sendmail):
    # The rest of this is in test_maildrop.py.
    d.stop()
    r = run(d, sendmail, ["demo@example.test"], b"x\n")
    assert r.returncode == 0 and r.stderr == b"", r
    assert len(list((d.spool / "maildrop").iterdir())) == 1


# ---- relaying, queue --------------------------------------------------------------

def test_remote_recipient_is_queued(d, sendmail):
    ok(run(d, sendmail, ["someone@remote.example"], b"Subject: out\n\nx\n"))

    def listed():
        out = d.ctl("queue").stdout
        return out if "someone@remote.example" in out else None
    assert wait_for(listed, 10), d.ctl("queue")
    assert d.queue_files() != []


def test_bare_local_name_gets_origin(d, sendmail):
    # A bare name is name@origin (the first local-domain): cron's "mail to
    # root" stays on the machine.
    d.write_aliases("postmaster: alice\nteam: bob@example.test\n")
    ok(run(d, sendmail, ["team"], b"Subject: bare\n\nx\n"))
    got = mail_of(d, "bob")[0]
    assert b"Delivered-To: bob@example.test" in got


def test_default_sender_domain_is_the_first_local_domain(d, sendmail):
    # Not the host name: mail from cron or PHP leaves with an address of a
    # domain the server answers for (SPF, replies).
    ok(run(d, sendmail, ["-f", "www-data", "demo@example.test"],
           b"Subject: origin\n\nx\n"))
    ok(run(d, sendmail, ["demo@example.test"], b"Subject: origin 2\n\nx\n"))
    msgs = mail_of(d, "demo", 2)
    by = {re.search(rb"Subject: (origin( 2)?)\n", m).group(1): m for m in msgs}
    h, _ = head_body(by[b"origin"])
    assert h.startswith(b"Return-Path: <www-data@example.test>\n"), h
    assert b"\nFrom: www-data@example.test\n" in h, h
    h, _ = head_body(by[b"origin 2"])
    assert h.startswith(f"Return-Path: <{ME}@example.test>\n".encode()), h
    assert b"@mx.example.test>\n" not in h.split(b"\nMessage-ID:")[0]


def test_origin_knob_names_the_sender_domain(sm_daemon, sendmail):
    d = sm_daemon('origin "lists.example.test"')
    d.write_aliases("postmaster: alice\nteam: bob@example.test\n")
    ok(run(d, sendmail, ["-f", "cron", "demo@example.test"],
           b"Subject: knob\n\nx\n"))
    [msg] = mail_of(d, "demo")
    assert msg.startswith(b"Return-Path: <cron@lists.example.test>\n"), msg
    assert b"\nFrom: cron@lists.example.test\n" in msg


def test_comma_separated_arguments(d, sendmail):
    ok(run(d, sendmail, ["demo@example.test, alice@example.test"],
           b"Subject: commas\n\nx\n"))
    mail_of(d, "demo")
    mail_of(d, "alice")


def test_bp_prints_the_queue(d, sendmail):
    ok(run(d, sendmail, ["someone@remote.example"], b"Subject: out\n\nx\n"))
    # Wait for the first (failing) attempt too: it changes the listing's
    # status line, which must not happen between the two listings.
    assert wait_for(lambda: "someone@remote.example" in
                    d.ctl("queue").stdout and "MX lookup" in
                    d.ctl("queue").stdout, 10), d.ctl("queue").stdout
    r = ok(run(d, sendmail, ["-bp"]))
    assert b"someone@remote.example" in r.stdout
    assert r.stdout.decode() == d.ctl("queue").stdout


def test_bi_compiles_aliases(d, sendmail):
    d.aliases.write_text("postmaster: alice\nteam: bob\n")
    r = ok(run(d, sendmail, ["-bi"]))
    assert b"newaliases" in r.stdout
    ok(run(d, sendmail, ["team@example.test"], b"Subject: alias\n\nx\n"))
    mail_of(d, "bob")


def test_C_names_the_config(d, sendmail, tmpbase):
    ok(run(d, sendmail, ["-C", str(d.conf), "demo@example.test"],
           b"Subject: C\n\nx\n", conf=tmpbase / "no-such.conf"))
    mail_of(d, "demo")


# ---- options, usage --------------------------------------------------------------

def test_ignored_options_accepted(d, sendmail):
    args = ["-oem", "-oee", "-odb", "-odi", "-oXfoo", "-v", "-m", "-n",
            "-U", "-N", "never", "-R", "hdrs", "-V", "envid", "-B",
            "8BITMIME", "-L", "tag", "-O", "Opt=1", "-bm", "--",
            "demo@example.test"]
    ok(run(d, sendmail, args, b"Subject: opts\n\nx\n"))
    mail_of(d, "demo")


@pytest.mark.parametrize("args,text", [
    ([], b"no recipients"),
    (["-x", "demo@example.test"], b"unknown option"),
    (["-bv", "demo@example.test"], b"not supported"),
    (["-bd"], b"not supported"),
    (["-bt"], b"not supported"),
    (["-q"], b"ternctl flush"),
    (["-q30m"], b"ternctl flush"),
    (["-f"], b"requires an argument"),
    (["demo@example.test", "a<b@example.test"], b"bad recipient"),
    (["a>b@example.test"], b"bad recipient"),
    (["demo@example.test\r\nRCPT TO:<alice@example.test>"], b"bad recipient"),
    (["x@example.test\nDATA"], b"bad recipient"),
    (["-f", "a\r\nRCPT TO:<alice@example.test>", "demo@example.test"],
     b"bad sender"),
])
def test_usage_errors(d, sendmail, args, text):
    r = run(d, sendmail, args, b"Subject: x\n\nx\n")
    assert r.returncode == 64, r
    assert text in r.stderr, r.stderr
    nothing_delivered(d)


# ---- an unprivileged user --------------------------------------------------------

def test_unprivileged_user(d, sendmail):
    nobody = pwd.getpwnam("nobody")
    r = run(d, sendmail, ["demo@example.test"], b"Subject: from nobody\n\nx\n",
            user="nobody")
    ok(r)
    [msg] = mail_of(d, "demo")
    h, _ = head_body(msg)
    assert h.startswith(b"Return-Path: <nobody@example.test>\n"), h
    assert re.search(rb"Received: by mx\.example\.test .*local:uid=%d\(nobody\)"
                     % nobody.pw_uid, h), h
    assert b"<nobody@example.test>" in h


def test_unprivileged_user_cannot_hide_behind_f(d, sendmail):
    # -f sets the envelope sender, but the kernel names the submitter.
    ok(run(d, sendmail, ["-f", "root@example.test", "demo@example.test"],
           b"Subject: forged\n\nx\n", user="nobody"))
    [msg] = mail_of(d, "demo")
    assert b"local:uid=%d(nobody)" % pwd.getpwnam("nobody").pw_uid in msg


def test_lone_dot_ends_input_while_stdin_stays_open(d, sendmail):
    # Like sendmail: the "." line ends the message; no EOF is needed.
    p = subprocess.Popen([str(sendmail), "demo@example.test"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE,
                         env=dict(os.environ, TERN_CONF=str(d.conf)))
    try:
        p.stdin.write(b"Subject: open\n\ntyped\n.\n")
        p.stdin.flush()
        assert p.wait(30) == 0, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
        p.stdin.close()
    [msg] = mail_of(d, "demo")
    assert head_body(msg)[1] == b"typed\n"


# ---- the submit socket across reloads ---------------------------------------------

def reloaded(d, n):
    return d.logtext().count("event=reload result=ok") >= n


def test_submit_after_reload(d, sendmail):
    for n in (1, 2):
        d.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: reloaded(d, n), 10), d.logtext()[-2000:]
        ok(run(d, sendmail, ["demo@example.test"], b"Subject: r%d\n\nx\n" % n))
        mail_of(d, "demo", n)


def test_submit_while_old_smtp_process_drains(d, sendmail):
    old = smtplib.SMTP("127.0.0.1", d.port, timeout=10)
    try:
        old.ehlo("old.example.org")
        old.mail("a@example.org")
        d.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: reloaded(d, 1), 10), d.logtext()[-2000:]
        for i in range(3):
            ok(run(d, sendmail, ["alice@example.test"],
                   b"Subject: during drain %d\n\nx\n" % i))
        mail_of(d, "alice", 3)
        assert old.rcpt("demo@example.test")[0] == 250
        assert old.data(b"Subject: old session\r\n\r\nx\r\n")[0] == 250
        old.quit()
    finally:
        old.close()
    mail_of(d, "demo")


def test_submit_waits_out_a_restarting_smtp_process(d, sendmail):
    # While the smtp child is down the parent still holds the socket, so
    # a submission waits in the backlog for the restarted child.
    for victim in d.pids()[1:]:
        os.kill(victim, signal.SIGKILL)
    ok(run(d, sendmail, ["demo@example.test"], b"Subject: restarted\n\nx\n"))
    assert "action=restart" in d.logtext()
    mail_of(d, "demo")


def test_parallel_submissions(d, sendmail):
    env = dict(os.environ, TERN_CONF=str(d.conf))
    procs = [subprocess.Popen([str(sendmail), "bob@example.test"],
                              stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=env) for _ in range(20)]
    try:
        for i, p in enumerate(procs):
            p.stdin.write(b"Subject: parallel %d\n\nx\n" % i)
            p.stdin.close()
        for p in procs:
            assert p.wait(60) == 0, p.stderr.read()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    msgs = mail_of(d, "bob", 20)
    assert {re.search(rb"Subject: (parallel \d+)", m).group(1)
            for m in msgs} == {b"parallel %d" % i for i in range(20)}
