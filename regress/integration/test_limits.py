"""Input discipline and limits: SMTP smuggling (bare CR/LF in commands and
in DATA), NUL bytes, overlong commands and lines, message size, recipient
count, error count, early talkers, connection limits and timeouts.  Each
refusal must be a clear 5xx/4xx with its enhanced code, the session must
survive where the contract says so, and nothing refused may be delivered."""
import re
import socket
import time

import pytest

from conftest import SMTPConn, wait_for

# Any sanitizer report from the daemon fails the test (ASan build).
pytestmark = pytest.mark.usefixtures("sanitizer_check")


def ehlo(c):
    code, text = c.cmd("EHLO client.example.org")
    assert code == 250, text


def start_data(c, rcpts=("demo@example.test",), sender="a@example.org"):
    assert c.cmd(f"MAIL FROM:<{sender}>")[0] == 250
    for r in rcpts:
        code, text = c.cmd(f"RCPT TO:<{r}>")
        assert code == 250, text
    code, text = c.cmd("DATA")
    assert code == 354, text


def assert_alive(c):
    """The session still takes commands and has no stray replies queued:
    NOOP answers 250, then QUIT answers 221."""
    code, text = c.cmd("NOOP")
    assert code == 250 and text.startswith("250 2.0.0"), text
    code, text = c.cmd("QUIT")
    assert code == 221, text


def nothing_delivered(d, users=("demo", "alice", "bob")):
    # A refused message is never written to any Maildir and leaves no
    # queue file; give a wrongly accepted one a moment to show up.
    time.sleep(0.3)
    for u in users:
        assert d.maildir(u) == [], (u, d.logtext())
    assert d.queue_files() == []
    # The smtp child refuses at once; the queue child removes the file it
    # had handed out for the message when the abort reaches it.
    assert wait_for(lambda: d.unfinished() == [], 10), \
        d.unfinished()


def set_knob(d, name, value):
    """Replace a knob the fixture already set (a knob may be set once)."""
    lines = [l for l in d.conf.read_text().splitlines()
             if not l.startswith(name + " ")]
    lines.append(f"{name} {value}")
    d.conf.write_text("\n".join(lines) + "\n")


def probe_gone(d):
    """Wait until the fixture's start-up probe session has ended, so that
    connection counts start from zero.  A slow start can leave more than
    one probe behind (one gave up waiting for the greeting and the next
    got it): every session that opened must have closed."""
    def gone():
        text = d.logtext()
        opened = set(re.findall(r"s=([0-9a-f]+) event=connect ", text))
        closed = set(re.findall(r"s=([0-9a-f]+) (?:q=\S+ )?"
                                r"event=disconnect ", text))
        return 'reason="client closed"' in text and opened <= closed
    assert wait_for(gone, 10), d.logtext()


# ---- commands: bare CR / LF, NUL, length -------------------------------------

def test_bare_lf_in_command_refused(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        c.send(b"MAIL FROM:<a@example.org>\nNOOP\r\n")
        code, text = c.reply()
        assert code == 500 and text.startswith("500 5.5.2"), text
        code, text = c.reply()
        assert code == 250, text            # the NOOP
        # The bare-LF MAIL was not taken.
        code, text = c.cmd("RCPT TO:<demo@example.test>")
        assert code == 503, text
        assert_alive(c)


def test_bare_lf_only_command_refused(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        c.send(b"NOOP\n")
        code, text = c.reply()
        assert code == 500 and text.startswith("500 5.5.2"), text
        assert_alive(c)


def test_bare_cr_in_command_refused(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        # Neither half of a CR-split line may be executed: no 221.
        c.send(b"NOOP\rQUIT\r\n")
        code, text = c.reply()
        assert code == 500 and text.startswith("500 5.5.2"), text
        c.send(b"MAIL FROM:<a@example.org>\rRCPT TO:<demo@example.test>\r\n")
        code, text = c.reply()
        assert code == 500 and text.startswith("500 5.5.2"), text
        assert c.cmd("RCPT TO:<demo@example.test>")[0] == 503
        assert_alive(c)


def test_nul_in_command_refused(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        code, text = c.cmd(b"NO\x00OP")
        assert code == 500 and text.startswith("500 5"), text
        code, text = c.cmd(b"MAIL FROM:<a@example.org>\x00 SIZE=1")
        assert code == 500 and text.startswith("500 5"), text
        assert c.cmd("RCPT TO:<demo@example.test>")[0] == 503
        assert_alive(c)


def test_command_too_long_refused(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        code, text = c.cmd("NOOP " + "x" * 3000)        # default 2048
        assert code == 500 and text.startswith("500 5.5.2"), text
        assert_alive(c)


def test_command_too_long_no_newline_one_reply(daemon):
    # 200 KB with no line end at all, then CRLF: one refusal, then the
    # session goes on with the next command.
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        c.send(b"MAIL FROM:<" + b"a" * 200000 + b"@example.org>\r\nNOOP\r\n")
        code, text = c.reply()
        assert code == 500 and text.startswith("500 5.5.2"), text
        code, text = c.reply()
        assert code == 250, text
        assert c.cmd("RCPT TO:<demo@example.test>")[0] == 503
        assert_alive(c)


def test_max_command_length_knob(make_daemon):
    d = make_daemon("max-command-length 600").start()
    with SMTPConn(d.port) as c:
        ehlo(c)
        code, text = c.cmd("NOOP " + "x" * 700)
        assert code == 500 and text.startswith("500 5.5.2"), text
        code, text = c.cmd("NOOP " + "x" * 595)      # exactly 600 octets
        assert code == 250, text
        code, text = c.cmd("NOOP " + "x" * 596)      # one more
        assert code == 500 and text.startswith("500 5.5.2"), text
        assert_alive(c)


# ---- DATA: smuggling ---------------------------------------------------------

SMUGGLE = (b"MAIL FROM:<x@evil.example>\r\n"
           b"RCPT TO:<bob@example.test>\r\n"
           b"DATA\r\n"
           b"Subject: smuggled\r\n\r\nsmuggled body\r\n")


@pytest.mark.parametrize("fake_end", [b"\n.\r\n", b"\r.\r\n", b"\r\n.\n",
                                      b"\n.\n", b"\r\n.\r", b"\r\n.\r\r\n",
                                      b"\n.\r"])
def test_smuggling_in_data_refused(daemon, fake_end):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        start_data(c)
        c.send(b"Subject: carrier\r\n\r\nhello" + fake_end + SMUGGLE +
               b".\r\n")
        code, text = c.reply()
        # The fake end did not end the message: the first reply after
        # 354 comes at the real end, and it refuses the message.
        assert code == 554 and text.startswith("554 5.5.2"), text
        assert_alive(c)
    nothing_delivered(daemon)


@pytest.mark.parametrize("longline", [1500, 200000])
def test_smuggling_after_overlong_line_refused(make_daemon, longline):
    # An overlong line that ends in a bare LF, then ".\r\n": the bare LF
    # must not count as the CRLF of an end marker, whether the line was
    # complete in the buffer (1500) or discarded piecewise (200000).
    d = make_daemon("max-line-length 1000").start()
    with SMTPConn(d.port, timeout=30) as c:
        ehlo(c)
        start_data(c)
        c.send(b"Subject: carrier\r\n\r\n" + b"y" * longline + b"\n.\r\n" +
               SMUGGLE + b".\r\n")
        code, text = c.reply()
        assert code == 554 and text.startswith("554 5."), text
        assert_alive(c)         # the smuggled MAIL/RCPT/DATA got no reply
    nothing_delivered(d)


@pytest.mark.parametrize("cr", [b"\r", b""])
def test_overlong_line_end_split_across_writes(make_daemon, cr):
    # The overlong line's CR (or its absence) and the LF arrive in
    # separate writes.  With CRLF the following ".\r\n" is the real end
    # and must be answered; with a bare LF it is not an end.
    d = make_daemon("max-line-length 1000").start()
    with SMTPConn(d.port, timeout=15) as c:
        ehlo(c)
        start_data(c)
        c.send(b"Subject: split\r\n\r\n" + b"y" * 300000 + cr)
        time.sleep(0.3)
        if cr:
            c.send(b"\n.\r\n")
        else:
            c.send(b"\n.\r\n" + SMUGGLE + b".\r\n")
        code, text = c.reply()
        assert code == 554 and text.startswith("554 5."), text
        assert_alive(c)
    nothing_delivered(d)


def test_smuggling_pipelined_then_clean_message_ok(daemon):
    # After a refused smuggling attempt the same session can send a
    # clean message, and only that one arrives.
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        start_data(c)
        c.send(b"Subject: carrier\r\n\r\nhello\n.\r\n" + SMUGGLE + b".\r\n")
        code, text = c.reply()
        assert code == 554, text
        start_data(c, rcpts=("alice@example.test",))
        c.send(b"Subject: clean\r\n\r\nok\r\n.\r\n")
        code, text = c.reply()
        assert code == 250, text
    assert daemon.wait_mail("alice")
    assert b"Subject: clean" in daemon.maildir("alice")[0].read_bytes()
    time.sleep(0.3)
    assert daemon.maildir("bob") == [] and daemon.maildir("demo") == []


def test_bare_lf_in_body_refused(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        start_data(c)
        c.send(b"Subject: lf\r\n\r\nline one\nline two\r\n.\r\n")
        code, text = c.reply()
        assert code == 554 and text.startswith("554 5.5.2"), text
        assert_alive(c)
    nothing_delivered(daemon)


def test_nul_in_data_refused(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        start_data(c)
        c.send(b"Subject: nul\r\n\r\nbefore\x00after\r\n.\r\n")
        code, text = c.reply()
        assert code == 554 and text.startswith("554 5.6.0"), text
        assert_alive(c)
    nothing_delivered(daemon)


def test_data_line_too_long_refused(make_daemon):
    d = make_daemon("max-line-length 1000").start()
    with SMTPConn(d.port) as c:
        ehlo(c)
        start_data(c)
        c.send(b"Subject: long\r\n\r\n" + b"y" * 1500 + b"\r\nend\r\n.\r\n")
        code, text = c.reply()
        assert code == 554 and text.startswith("554 5."), text
        assert_alive(c)
    nothing_delivered(d)


def test_data_line_too_long_no_newline_refused(make_daemon):
    # A huge line with no line end at all must not be buffered whole
    # nor end the data early.
    d = make_daemon("max-line-length 1000").start()
    with SMTPConn(d.port, timeout=30) as c:
        ehlo(c)
        start_data(c)
        c.send(b"Subject: long\r\n\r\n" + b"z" * 2000000 + b"\r\n.\r\n")
        code, text = c.reply()
        assert code == 554 and text.startswith("554 5."), text
        assert_alive(c)
    nothing_delivered(d)


def test_data_line_at_limit_accepted(make_daemon):
    d = make_daemon("max-line-length 1000").start()
    line = b"w" * 990
    with SMTPConn(d.port) as c:
        ehlo(c)
        start_data(c)
        c.send(b"Subject: ok\r\n\r\n" + line + b"\r\n.\r\n")
        code, text = c.reply()
        assert code == 250, text
    assert d.wait_mail("demo")
    assert line + b"\n" in d.maildir("demo")[0].read_bytes()


def test_message_too_big_refused_at_end(make_daemon):
    d = make_daemon("max-message-size 10K").start()
    with SMTPConn(d.port) as c:
        ehlo(c)
        start_data(c)
        body = b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 300
        c.send(body + b".\r\n")
        code, text = c.reply()
        assert code == 552 and text.startswith("552 5.3.4"), text
        # The session goes on, and a small message still gets through.
        start_data(c, rcpts=("alice@example.test",))
        c.send(b"Subject: small\r\n\r\nx\r\n.\r\n")
        code, text = c.reply()
        assert code == 250, text
    assert d.wait_mail("alice")
    assert d.maildir("demo") == []
    assert wait_for(lambda: d.queue_files() == [], 10)


def test_message_size_boundary(make_daemon):
    # A message of exactly the advertised SIZE (CRLFs counted, the dot
    # of the end marker not) is accepted; one octet more is refused.
    d = make_daemon("max-message-size 10K").start()
    head = b"Subject: edge\r\n\r\n"
    for extra, want in ((0, 250), (1, 552)):
        fill = 10240 + extra - len(head) - 2
        body = head + b"e" * (fill % 900)
        body += b"\r\n" + (b"f" * 898 + b"\r\n") * (fill // 900)
        assert len(body) == 10240 + extra
        with SMTPConn(d.port) as c:
            ehlo(c)
            start_data(c)
            c.send(body + b".\r\n")
            code, text = c.reply()
            assert code == want, (extra, text)
    assert d.wait_mail("demo")
    time.sleep(0.3)
    assert len(d.maildir("demo")) == 1


def test_declared_size_over_limit_refused(make_daemon):
    d = make_daemon("max-message-size 10K").start()
    with SMTPConn(d.port) as c:
        ehlo(c)
        code, text = c.cmd("MAIL FROM:<a@example.org> SIZE=20000")
        assert code == 552 and text.startswith("552 5.3.4"), text
        code, text = c.cmd("MAIL FROM:<a@example.org> SIZE=10241")
        assert code == 552, text
        code, text = c.cmd("MAIL FROM:<a@example.org> SIZE=10240")
        assert code == 250, text
        assert c.cmd("RSET")[0] == 250
        code, text = c.cmd("MAIL FROM:<a@example.org> SIZE=5000")
        assert code == 250, text


# ---- recipients, errors ----------------------------------------------------

def test_too_many_recipients(make_daemon):
    d = make_daemon("max-recipients 3").start()
    with SMTPConn(d.port) as c:
        ehlo(c)
        assert c.cmd("MAIL FROM:<a@example.org>")[0] == 250
        for r in ("demo", "alice", "bob"):
            code, text = c.cmd(f"RCPT TO:<{r}@example.test>")
            assert code == 250, text
        code, text = c.cmd("RCPT TO:<demo+x@example.test>")
        assert code == 452 and text.startswith("452 4.5.3"), text
        assert c.cmd("DATA")[0] == 354
        c.send(b"Subject: three\r\n\r\nx\r\n.\r\n")
        code, text = c.reply()
        assert code == 250, text
    for u in ("demo", "alice", "bob"):
        assert d.wait_mail(u)
    time.sleep(0.3)
    for u in ("demo", "alice", "bob"):
        assert len(d.maildir(u)) == 1, u      # no copy for demo+x


def test_recipient_limit_is_per_transaction(make_daemon):
    d = make_daemon("max-recipients 1").start()
    with SMTPConn(d.port) as c:
        ehlo(c)
        for u in ("demo", "alice"):
            assert c.cmd("MAIL FROM:<a@example.org>")[0] == 250
            code, text = c.cmd(f"RCPT TO:<{u}@example.test>")
            assert code == 250, text
            assert c.cmd("RCPT TO:<bob@example.test>")[0] == 452
            assert c.cmd("RSET")[0] == 250


def test_max_errors_closes_session(make_daemon):
    d = make_daemon("max-errors 3").start()
    with SMTPConn(d.port) as c:
        ehlo(c)
        for _ in range(2):
            code, text = c.cmd("BOGUS")
            assert code == 500, text
        assert c.cmd("NOOP")[0] == 250          # two errors: still open
        code, text = c.cmd("BOGUS")
        assert code == 500, text
        code, text = c.reply()
        assert code == 421 and text.startswith("421 4."), text
        assert c.closed()


def test_max_errors_counts_refused_recipients(make_daemon):
    # Dictionary attacks on RCPT are errors too.
    d = make_daemon("max-errors 3").start()
    with SMTPConn(d.port) as c:
        ehlo(c)
        assert c.cmd("MAIL FROM:<a@example.org>")[0] == 250
        codes = []
        for i in range(3):
            codes.append(c.cmd(f"RCPT TO:<guess{i}@example.test>")[0])
        assert codes == [550, 550, 550]
        code, text = c.reply()
        assert code == 421, text
        assert c.closed()


# ---- early talkers, connection limits, timeouts ---------------------------

def test_pregreet_client_dropped(make_daemon):
    d = make_daemon()
    set_knob(d, "greeting-delay", "1s")
    d.start()
    s = socket.create_connection(("127.0.0.1", d.port), 5)
    try:
        s.settimeout(5)
        s.sendall(b"EHLO early.example.org\r\nMAIL FROM:<a@example.org>\r\n")
        got = b""
        for _ in range(100):
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
        assert b"220" not in got and b"250" not in got, got
    finally:
        s.close()
    assert "pregreet" in d.logtext()


def test_polite_client_waits_for_greeting(make_daemon):
    d = make_daemon()
    set_knob(d, "greeting-delay", "1s")
    d.start()
    with SMTPConn(d.port, timeout=10) as c:
        code, text = c.greeting
        assert code == 220, text
        ehlo(c)
        start_data(c)
        c.send(b"Subject: patient\r\n\r\nx\r\n.\r\n")
        assert c.reply()[0] == 250
    assert d.wait_mail("demo")


def test_connection_limit_per_ip(make_daemon):
    d = make_daemon("max-connections-per-ip 2").start()
    probe_gone(d)
    a = SMTPConn(d.port)
    b = SMTPConn(d.port)
    try:
        assert a.greeting[0] == 220 and b.greeting[0] == 220
        with SMTPConn(d.port, greet=False) as third:
            code, text = third.reply()
            assert code == 421 and text.startswith("421 4.7.0"), text
            assert third.closed()
        # The two admitted sessions are unaffected.
        assert a.cmd("NOOP")[0] == 250
        assert b.cmd("NOOP")[0] == 250
        b.cmd("QUIT")
        b.close()

        def admitted():
            with SMTPConn(d.port, greet=False) as c:
                return c.reply()[0] == 220
        assert wait_for(admitted, 10)
    finally:
        a.close()
        b.close()


def test_connection_limit_total(make_daemon):
    d = make_daemon("max-connections 2").start()
    probe_gone(d)
    a = SMTPConn(d.port)
    b = SMTPConn(d.port)
    try:
        with SMTPConn(d.port, greet=False) as third:
            code, text = third.reply()
            assert code == 421 and text.startswith("421 4."), text
    finally:
        a.close()
        b.close()


def test_command_timeout(make_daemon):
    d = make_daemon("command-timeout 2s").start()
    with SMTPConn(d.port, timeout=15) as c:
        ehlo(c)
        code, text = c.reply()          # sent by the server while idle
        assert code == 421 and text.startswith("421 4.4.2"), text
        assert c.closed()


def test_data_timeout_covers_trickling_client(make_daemon):
    # data-timeout bounds the whole DATA phase: a client that keeps
    # sending a line now and then cannot hold the session forever.
    d = make_daemon("data-timeout 2s").start()
    with SMTPConn(d.port, timeout=15) as c:
        ehlo(c)
        start_data(c)
        c.sock.settimeout(0.3)
        got = b""
        for i in range(40):                     # at most ~12 s
            try:
                c.send(b"line %d\r\n" % i)
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                chunk = c.sock.recv(4096)
            except socket.timeout:
                continue
            except ConnectionResetError:
                break
            got += chunk
            if not chunk or b"\n" in got:
                break
        assert got.startswith(b"421 4.4.2"), got
    nothing_delivered(d)


def test_data_timeout(make_daemon):
    d = make_daemon("data-timeout 2s").start()
    with SMTPConn(d.port, timeout=15) as c:
        ehlo(c)
        start_data(c)
        c.send(b"Subject: slow\r\n\r\npartial")
        code, text = c.reply()
        assert code == 421 and text.startswith("421 4.4.2"), text
        assert c.closed()
    nothing_delivered(d)
