"""The SMTP dialogue as a client sees it: replies, enhanced status codes,
sequencing, address syntax, ESMTP parameters, pipelining, dot-stuffing,
big messages, unknown users, relaying and the queue commands that go with
a message that cannot be delivered yet."""
import random
import re
import smtplib

import pytest

from conftest import SMTPConn, wait_for

# Any sanitizer report from the daemon fails the test (ASan build).
pytestmark = pytest.mark.usefixtures("sanitizer_check")

RELAY = "trusted-network 127.0.0.0/8\n"


def ehlo(c, name="client.example.org"):
    code, text = c.cmd(f"EHLO {name}")
    assert code == 250, text
    return text


def strip_trace(msg):
    """The message as the client sent it: drop the Return-Path,
    Delivered-To and Received header lines the MTA prepended."""
    lines = msg.split(b"\n")
    i = 0
    assert lines[i].startswith(b"Return-Path: "), msg[:300]
    i += 1
    assert lines[i].startswith(b"Delivered-To: "), msg[:300]
    i += 1
    assert lines[i].startswith(b"Received: "), msg[:300]
    i += 1
    while i < len(lines) and lines[i][:1] in (b"\t", b" "):
        i += 1
    return b"\n".join(lines[i:])


def only_mail(d, user, timeout=15):
    assert d.wait_mail(user, 1, timeout), d.logtext()
    files = d.maildir(user)
    assert len(files) == 1, files
    return files[0].read_bytes()


def queued_ids(d):
    return sorted(n[:-4] for n in d.queue_files() if n.endswith(".env"))


def queued_as(text):
    m = re.search(r"queued as ([0-9A-Fa-f]+)", text)
    assert m, text
    return m.group(1)


def transaction(c, sender, rcpts, body, mail_params=""):
    """MAIL, RCPTs, DATA and the body on an SMTPConn; returns the final
    reply.  body is bytes with CRLF line ends, already dot-stuffed."""
    code, text = c.cmd(f"MAIL FROM:<{sender}>{mail_params}".encode())
    assert code == 250, text
    for r in rcpts:
        code, text = c.cmd(f"RCPT TO:<{r}>".encode())
        assert code == 250, text
    code, text = c.cmd("DATA")
    assert code == 354, text
    c.send(body + b".\r\n")
    return c.reply()


# ---- greeting, EHLO, HELO --------------------------------------------------

def test_greeting_is_220_with_hostname(daemon):
    with SMTPConn(daemon.port) as c:
        code, text = c.greeting
        assert code == 220
        assert text.startswith("220 mx.example.test")


def test_ehlo_lists_extensions(daemon):
    with SMTPConn(daemon.port) as c:
        lines = ehlo(c).split("\n")
    assert lines[0] == "250-mx.example.test"
    assert all(l.startswith("250-") for l in lines[:-1])
    assert lines[-1].startswith("250 ")
    kw = [l[4:] for l in lines[1:]]
    for ext in ("PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"):
        assert ext in kw, lines
    sizes = [k for k in kw if k.startswith("SIZE ")]
    assert sizes == ["SIZE %d" % (35 * 1024 * 1024)], lines
    # STARTTLS (with the self-signed certificate made at first start);
    # nothing this build cannot do is offered.
    assert "STARTTLS" in kw, lines
    assert not any(k.startswith("AUTH") for k in kw), lines


def test_ehlo_size_follows_config(make_daemon):
    d = make_daemon("max-message-size 10K").start()
    with SMTPConn(d.port) as c:
        assert "250-SIZE 10240" in ehlo(c).split("\n")


def test_helo_works_and_delivers(daemon):
    with SMTPConn(daemon.port) as c:
        code, text = c.cmd("HELO client.example.org")
        assert code == 250 and text == "250 mx.example.test"
        # ESMTP parameters need EHLO.
        code, text = c.cmd("MAIL FROM:<a@example.org> BODY=8BITMIME")
        assert code == 501 and text.startswith("501 5.5.4"), text
        code, text = transaction(c, "a@example.org", ["demo@example.test"],
                                 b"Subject: via helo\r\n\r\nhi\r\n")
        assert code == 250 and text.startswith("250 2.0.0"), text
    msg = only_mail(daemon, "demo")
    assert b"Subject: via helo" in msg
    assert b"with SMTP id" in msg


@pytest.mark.parametrize("arg", ["a b", "exa_mple..org", "a" * 300,
                                 "[999.1.1.1]"])
def test_helo_bad_domain_refused(daemon, arg):
    with SMTPConn(daemon.port) as c:
        code, text = c.cmd("EHLO " + arg)
        assert code == 501 and text.startswith("501 5.5.4"), text
        code, text = c.cmd("EHLO [127.0.0.1]")     # literals are fine
        assert code == 250, text


def test_helo_without_argument_refused(daemon):
    with SMTPConn(daemon.port) as c:
        code, text = c.cmd("EHLO")
        assert code == 501 and text.startswith("501 5.5.4"), text
        code, text = c.cmd("MAIL FROM:<a@example.org>")
        assert code == 503, text


# ---- sequencing ---------------------------------------------------------------

def test_mail_before_helo_503(daemon):
    with SMTPConn(daemon.port) as c:
        code, text = c.cmd("MAIL FROM:<a@example.org>")
        assert code == 503 and text.startswith("503 5.5.1"), text
        ehlo(c)
        code, text = c.cmd("MAIL FROM:<a@example.org>")
        assert code == 250 and text.startswith("250 2.1.0"), text


def test_nested_mail_503(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        assert c.cmd("MAIL FROM:<a@example.org>")[0] == 250
        code, text = c.cmd("MAIL FROM:<b@example.org>")
        assert code == 503 and text.startswith("503 5.5.1"), text
        # The first transaction is still open.
        code, text = c.cmd("RCPT TO:<demo@example.test>")
        assert code == 250 and text.startswith("250 2.1.5"), text


def test_rcpt_before_mail_503(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        code, text = c.cmd("RCPT TO:<demo@example.test>")
        assert code == 503 and text.startswith("503 5.5.1"), text


def test_data_without_mail_or_rcpt(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        code, text = c.cmd("DATA")
        assert code == 503 and text.startswith("503 5.5.1"), text
        assert c.cmd("MAIL FROM:<a@example.org>")[0] == 250
        code, text = c.cmd("DATA")
        assert code in (503, 554) and text[4:9] == "5.5.1", text
        # DATA was refused, so the next line is a command, not data.
        code, text = c.cmd("NOOP")
        assert code == 250, text
    assert daemon.queue_files() == []


def test_rset_clears_transaction(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        assert c.cmd("MAIL FROM:<a@example.org>")[0] == 250
        assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
        code, text = c.cmd("RSET")
        assert code == 250 and text.startswith("250 2.0.0"), text
        code, text = c.cmd("RCPT TO:<bob@example.test>")
        assert code == 503, text            # no sender any more
        code, text = c.cmd("DATA")
        assert code == 503, text
        # A new transaction: only its own recipient gets the message.
        code, text = transaction(c, "b@example.org", ["bob@example.test"],
                                 b"Subject: after rset\r\n\r\nx\r\n")
        assert code == 250, text
    msg = only_mail(daemon, "bob")
    assert b"Return-Path: <b@example.org>" in msg
    assert daemon.maildir("alice") == []


def test_noop_help(daemon):
    with SMTPConn(daemon.port) as c:
        code, text = c.cmd("NOOP")
        assert code == 250 and text.startswith("250 2.0.0"), text
        code, text = c.cmd("HELP")
        assert code == 214 and text.startswith("214"), text
        code, text = c.cmd("noop")           # verbs are case-insensitive
        assert code == 250, text


@pytest.mark.parametrize("line", ["VRFY demo", "VRFY <demo@example.test>",
                                  "EXPN postmaster"])
def test_vrfy_expn_disabled(daemon, line):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        code, text = c.cmd(line)
        assert code == 502 and text.startswith("502 5.5.1"), text
        assert "demo@" not in text and "alice" not in text


def test_unknown_command_500_and_session_survives(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        code, text = c.cmd("FROBNICATE now")
        assert code == 500 and text.startswith("500 5.5.2"), text
        code, text = c.cmd("NOOP")
        assert code == 250, text
        code, text = transaction(c, "a@example.org", ["demo@example.test"],
                                 b"Subject: survived\r\n\r\nx\r\n")
        assert code == 250, text
    assert b"Subject: survived" in only_mail(daemon, "demo")


def test_quit_221_and_close(daemon):
    with SMTPConn(daemon.port) as c:
        code, text = c.cmd("QUIT")
        assert code == 221 and text.startswith("221 2.0.0"), text
        assert c.closed()


# ---- addresses -------------------------------------------------------------

def test_quoted_local_part_parses(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        code, text = c.cmd('MAIL FROM:<"john doe"@example.org>')
        assert code == 250, text
        code, text = c.cmd('RCPT TO:<"a b"@example.test>')
        assert code == 550 and text.startswith("550 5.1.1"), text


def test_quoted_local_part_sender_delivered(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        code, text = transaction(c, '"john doe"@example.org',
                                 ["demo@example.test"],
                                 b"Subject: q\r\n\r\nx\r\n")
        assert code == 250, text
    assert b'Return-Path: <"john doe"@example.org>' in only_mail(daemon,
                                                                  "demo")


BAD_PATHS = [
    "bob@example.org",             # no angle brackets
    "<bob@example.org",            # unclosed
    "<bob@@example.org>",
    "<bob@>",
    "<@example.org>",
    "<bob smith@example.org>",
    "<bob@-example.org>",
    "<bob@exa mple.org>",
    "<bob..x@example.org>",
    "<bob@[300.1.1.1]>",
    '<"unterminated@example.org>',
]


@pytest.mark.parametrize("path", BAD_PATHS)
def test_malformed_sender_501(daemon, path):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        code, text = c.cmd(f"MAIL FROM:{path}")
        assert code == 501 and text.startswith("501 5.1.7"), text
        # The refusal left no sender behind.
        assert c.cmd("RCPT TO:<demo@example.test>")[0] == 503


@pytest.mark.parametrize("path", BAD_PATHS)
def test_malformed_recipient_501(daemon, path):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        assert c.cmd("MAIL FROM:<a@example.org>")[0] == 250
        code, text = c.cmd(f"RCPT TO:{path.replace('example.org', 'example.test')}")
        assert code == 501 and text.startswith("501 5.1.3"), text
        code, text = c.cmd("DATA")
        assert code in (503, 554), text


def test_null_sender_accepted(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        code, text = transaction(c, "", ["demo@example.test"],
                                 b"Subject: bounce\r\n\r\nx\r\n")
        assert code == 250, text
    assert b"Return-Path: <>" in only_mail(daemon, "demo")


def test_null_recipient_refused(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        assert c.cmd("MAIL FROM:<a@example.org>")[0] == 250
        code, text = c.cmd("RCPT TO:<>")
        assert code == 501, text


@pytest.mark.parametrize("rcpt", ["<Postmaster>", "<postmaster>",
                                  "<POSTMASTER@example.test>"])
def test_postmaster_delivered_via_alias(daemon, rcpt):
    daemon.write_aliases("postmaster: alice\n")
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        assert c.cmd("MAIL FROM:<a@example.org>")[0] == 250
        code, text = c.cmd(f"RCPT TO:{rcpt}")
        assert code == 250 and text.startswith("250 2.1.5"), text
        assert c.cmd("DATA")[0] == 354
        c.send(b"Subject: to postmaster\r\n\r\nhello\r\n.\r\n")
        code, text = c.reply()
        assert code == 250, text
    msg = only_mail(daemon, "alice")
    assert b"Subject: to postmaster" in msg
    assert wait_for(lambda: daemon.queue_files() == [], 10)


# ---- ESMTP parameters ------------------------------------------------------

def test_size_too_big_552(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        code, text = c.cmd("MAIL FROM:<a@example.org> SIZE=%d"
                           % (35 * 1024 * 1024 + 1))
        assert code == 552 and text.startswith("552 5.3.4"), text
        assert c.cmd("RCPT TO:<demo@example.test>")[0] == 503
        code, text = c.cmd("MAIL FROM:<a@example.org> SIZE=1000")
        assert code == 250, text
        assert c.cmd("RCPT TO:<demo@example.test>")[0] == 250


def test_size_malformed_refused(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        code, text = c.cmd("MAIL FROM:<a@example.org> SIZE=abc")
        assert code in (501, 555) and text[4:6] == "5.", text


def test_unknown_mail_parameter_refused(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        code, text = c.cmd("MAIL FROM:<a@example.org> FROB=1")
        assert code in (501, 555) and text[4:6] == "5.", text
        assert c.cmd("RCPT TO:<demo@example.test>")[0] == 503


def test_body_8bitmime_delivered_intact(daemon):
    body = "Subject: caf\u00e9\r\n\r\nna\u00efve r\u00e9sum\u00e9 \u20ac\r\n"
    body = body.encode("utf-8")
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        code, text = transaction(c, "a@example.org", ["demo@example.test"],
                                 body, " BODY=8BITMIME")
        assert code == 250, text
    msg = only_mail(daemon, "demo")
    assert strip_trace(msg) == body.replace(b"\r\n", b"\n")


def test_body_7bit_accepted(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        code, text = c.cmd("MAIL FROM:<a@example.org> BODY=7BIT")
        assert code == 250, text


def test_smtputf8_sender_accepted(daemon):
    sender = "j\u00f6rg@b\u00fccher.example"
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        code, text = transaction(c, sender, ["demo@example.test"],
                                 b"Subject: utf8\r\n\r\nx\r\n",
                                 " SMTPUTF8")
        assert code == 250, text
    msg = only_mail(daemon, "demo")
    assert ("Return-Path: <%s>" % sender).encode() in msg


def test_utf8_sender_without_smtputf8_553(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        code, text = c.cmd("MAIL FROM:<j\u00f6rg@example.org>".encode())
        assert code == 553 and text.startswith("553 5.6.7"), text
        assert c.cmd("RCPT TO:<demo@example.test>")[0] == 503
        code, text = c.cmd("NOOP")
        assert code == 250, text


def test_malformed_utf8_sender_refused(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        code, text = c.cmd(b"MAIL FROM:<j\xc3\x28rg@example.org> SMTPUTF8")
        assert 500 <= code < 600, text


# ---- pipelining, dot-stuffing, size -----------------------------------------

def test_pipelining_replies_in_order(daemon):
    with SMTPConn(daemon.port) as c:
        c.send(b"EHLO client.example.org\r\n"
               b"MAIL FROM:<a@example.org>\r\n"
               b"RCPT TO:<demo@example.test>\r\n"
               b"RCPT TO:<nosuchuser@example.test>\r\n"
               b"RCPT TO:<alice@example.test>\r\n"
               b"DATA\r\n")
        replies = [c.reply() for _ in range(6)]
        codes = [r[0] for r in replies]
        assert codes == [250, 250, 250, 550, 250, 354], replies
        assert replies[0][1].startswith("250-mx.example.test")
        assert replies[1][1].startswith("250 2.1.0")
        assert replies[2][1].startswith("250 2.1.5")
        assert replies[3][1].startswith("550 5.1.1")
        c.send(b"Subject: pipelined\r\n\r\nbody\r\n.\r\nNOOP\r\nQUIT\r\n")
        code, text = c.reply()
        assert code == 250 and text.startswith("250 2.0.0"), text
        assert c.reply()[0] == 250
        assert c.reply()[0] == 221
    for u in ("demo", "alice"):
        assert b"Subject: pipelined" in only_mail(daemon, u)
    assert daemon.maildir("bob") == []


def test_pipelining_two_messages_one_write(daemon):
    one = (b"MAIL FROM:<a@example.org>\r\nRCPT TO:<%s@example.test>\r\n"
           b"DATA\r\nSubject: %s\r\n\r\nx\r\n.\r\n")
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        c.send(one % (b"demo", b"first") + one % (b"bob", b"second"))
        codes = [c.reply()[0] for _ in range(8)]
        assert codes == [250, 250, 354, 250, 250, 250, 354, 250]
    assert b"Subject: first" in only_mail(daemon, "demo")
    assert b"Subject: second" in only_mail(daemon, "bob")


def test_pipelined_command_flood_answered_in_order(daemon):
    # Far more replies than any output buffer: none lost, none reordered.
    n = 20000
    with SMTPConn(daemon.port, timeout=30) as c:
        ehlo(c)
        c.send(b"NOOP\r\n" * n + b"HELP\r\n")
        codes = [c.reply()[0] for _ in range(n + 1)]
        assert codes == [250] * n + [214]
        assert c.cmd("QUIT")[0] == 221


def test_concurrent_sessions_interleaved(daemon):
    # Two clients in DATA at once, their chunks interleaved: each
    # message arrives whole and unmixed.
    a, b = SMTPConn(daemon.port), SMTPConn(daemon.port)
    try:
        for c, u in ((a, "alice"), (b, "bob")):
            ehlo(c)
            assert c.cmd("MAIL FROM:<%s@example.org>" % u)[0] == 250
            assert c.cmd("RCPT TO:<%s@example.test>" % u)[0] == 250
            assert c.cmd("DATA")[0] == 354
        a.send(b"Subject: from a\r\n\r\n")
        b.send(b"Subject: from b\r\n\r\n")
        for i in range(50):
            a.send(b"a line %d\r\n" % i)
            b.send(b"b line %d\r\n" % i)
        b.send(b".\r\n")
        assert b.reply()[0] == 250
        a.send(b".\r\n")
        assert a.reply()[0] == 250
    finally:
        a.close()
        b.close()
    for u, tag in (("alice", b"a"), ("bob", b"b")):
        got = strip_trace(only_mail(daemon, u))
        want = b"Subject: from %s\n\n" % tag + b"".join(
            b"%s line %d\n" % (tag, i) for i in range(50))
        assert got == want


def test_dot_stuffing(daemon):
    body = (b"Subject: dots\r\n\r\n"
            b"..one dot\r\n"
            b"...two dots\r\n"
            b"..\r\n"
            b"middle . dot\r\n"
            b"last\r\n")
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        code, text = transaction(c, "a@example.org", ["demo@example.test"],
                                 body)
        assert code == 250, text
    got = strip_trace(only_mail(daemon, "demo"))
    assert got == (b"Subject: dots\n\n.one dot\n..two dots\n.\n"
                   b"middle . dot\nlast\n")


def test_big_message_arrives_intact(daemon):
    rnd = random.Random(5321)
    alphabet = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                "0123456789 .,:;-_=+!?()<>\t")
    lines = [b"Subject: big", b"X-Test: intact", b""]
    size = 0
    while size < 6 * 1024 * 1024:
        n = rnd.choice((0, 1, 10, 76, 200, 998, 4000))
        line = "".join(rnd.choice(alphabet) for _ in range(min(n, 80)))
        line = (line * (n // max(len(line), 1) + 1))[:n]
        if rnd.random() < 0.02:
            line = "." + line       # smtplib stuffs these
        lines.append(line.encode())
        size += n + 2
    body = b"\r\n".join(lines) + b"\r\n"
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=60) as s:
        s.sendmail("a@example.org", ["demo@example.test"], body)
    got = strip_trace(only_mail(daemon, "demo", timeout=30))
    assert len(got) == len(body) - len(lines)   # CRLF -> LF
    assert got == body.replace(b"\r\n", b"\n")


def test_message_without_final_newline_handled(daemon):
    # smtplib appends CRLF when the body lacks one; the stored message
    # must end with exactly one line end.
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=10) as s:
        s.sendmail("a@example.org", ["demo@example.test"],
                   b"Subject: nonl\r\n\r\nno newline")
    got = strip_trace(only_mail(daemon, "demo"))
    assert got == b"Subject: nonl\n\nno newline\n"


# ---- recipients: unknown, relaying ------------------------------------------

def test_unknown_local_user_550_nothing_queued(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        assert c.cmd("MAIL FROM:<a@example.org>")[0] == 250
        for r in ("nosuchuser@example.test", "nosuchuser@localhost",
                  "NoSuch+tag@EXAMPLE.TEST"):
            code, text = c.cmd(f"RCPT TO:<{r}>")
            assert code == 550 and text.startswith("550 5.1.1"), text
        code, text = c.cmd("DATA")
        assert code in (503, 554), text
        assert c.cmd("NOOP")[0] == 250
    assert daemon.queue_files() == []
    assert daemon.unfinished() == []
    assert "Mail queue is empty" in daemon.ctl("queue", check=True).stdout


def test_recipient_case_insensitive(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        code, text = transaction(c, "a@example.org", ["Demo@Example.TEST"],
                                 b"Subject: case\r\n\r\nx\r\n")
        assert code == 250, text
    assert b"Subject: case" in only_mail(daemon, "demo")


def test_relaying_denied_when_not_trusted(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        assert c.cmd("MAIL FROM:<a@example.org>")[0] == 250
        for r in ("someone@remote.example", "alice@example.test.evil",
                  "bob@[127.0.0.1]"):
            code, text = c.cmd(f"RCPT TO:<{r}>")
            assert code == 554 and text.startswith("554 5.7.1"), text
            assert "relay" in text.lower()
        # A local recipient in the same transaction still works.
        assert c.cmd("RCPT TO:<demo@example.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(b"Subject: mixed\r\n\r\nx\r\n.\r\n")
        assert c.reply()[0] == 250
    assert b"Subject: mixed" in only_mail(daemon, "demo")
    assert wait_for(lambda: daemon.queue_files() == [], 10)


def test_source_route_to_remote_is_not_relayed(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        assert c.cmd("MAIL FROM:<a@example.org>")[0] == 250
        code, text = c.cmd("RCPT TO:<@example.test:victim@remote.example>")
        assert code != 250, text
    assert daemon.queue_files() == []


def test_trusted_relay_queued_show_remove(make_daemon):
    d = make_daemon(RELAY).start()
    with SMTPConn(d.port) as c:
        ehlo(c)
        code, text = transaction(c, "a@example.org",
                                 ["someone@remote.example"],
                                 b"Subject: relay\r\n\r\nx\r\n")
        assert code == 250 and text.startswith("250 2.0.0"), text
        qid = queued_as(text)
    assert queued_ids(d) == [qid]

    # The test DNS is unreachable: the relayed copy waits in the queue.
    def held():
        out = d.ctl("queue", check=True).stdout
        return out if "MX lookup for remote.example failed" in out else None
    out = held() or wait_for(held, 10)
    assert out, d.ctl("queue").stdout
    assert qid in out and "someone@remote.example" in out
    assert "a@example.org" in out

    r = d.ctl("show", qid)
    assert r.returncode == 0, r.stderr
    assert f"id: {qid}" in r.stdout
    assert "sender: <a@example.org>" in r.stdout
    assert "recipient: <someone@remote.example>" in r.stdout
    assert "status: pending" in r.stdout
    assert "MX lookup for remote.example failed" in r.stdout

    r = d.ctl("remove", qid)
    assert r.returncode == 0, r.stderr
    assert qid in r.stdout
    assert wait_for(lambda: queued_ids(d) == [], 10), d.queue_files()
    assert "Mail queue is empty" in d.ctl("queue", check=True).stdout
    r = d.ctl("show", qid)
    assert r.returncode == 1
    r = d.ctl("remove", qid)
    assert r.returncode == 1


def test_show_reports_envelope_flags(make_daemon):
    d = make_daemon(RELAY).start()
    with SMTPConn(d.port) as c:
        ehlo(c)
        code, text = transaction(c, "j\u00f6rg@example.org",
                                 ["x@remote.example"],
                                 b"Subject: flags\r\n\r\nx\r\n",
                                 " BODY=8BITMIME SMTPUTF8")
        assert code == 250, text
        qid = queued_as(text)
    out = d.ctl("show", qid).stdout
    assert "body: 8BITMIME SMTPUTF8" in out, out
    assert "helo: client.example.org" in out, out
    assert "protocol: ESMTP" in out, out


def test_remove_survives_restart(make_daemon):
    d = make_daemon(RELAY).start()
    with SMTPConn(d.port) as c:
        ehlo(c)
        code, text = transaction(c, "a@example.org", ["x@remote.example"],
                                 b"Subject: gone\r\n\r\nx\r\n")
        assert code == 250, text
        qid = queued_as(text)
    assert d.ctl("remove", qid).returncode == 0
    d.stop()
    d.start()
    assert queued_ids(d) == []
    assert "Mail queue is empty" in d.ctl("queue", check=True).stdout


def test_flush_retries_deferred_message(make_daemon):
    d = make_daemon(RELAY).start()
    with SMTPConn(d.port) as c:
        ehlo(c)
        code, text = transaction(c, "a@example.org", ["x@remote.example"],
                                 b"Subject: flush\r\n\r\nx\r\n")
        assert code == 250, text
        qid = queued_as(text)

    def attempts():
        m = re.search(r"attempts: (\d+)", d.ctl("show", qid).stdout)
        return int(m.group(1)) if m else 0
    assert wait_for(lambda: attempts() >= 1, 10)
    # the first try over (its MX lookup times out): not one in flight
    assert wait_for(lambda: "last error" in d.ctl("show", qid).stdout, 20)
    before = attempts()
    r = d.ctl("flush")
    assert r.returncode == 0, r.stderr
    assert wait_for(lambda: attempts() > before, 10), d.ctl("show", qid).stdout
    out = d.ctl("show", qid).stdout
    assert "status: pending" in out       # still not deliverable
    assert queued_ids(d) == [qid]


def test_flush_on_empty_queue(daemon):
    r = daemon.ctl("flush")
    assert r.returncode == 0, r.stderr
    assert "Mail queue is empty" in daemon.ctl("queue", check=True).stdout
