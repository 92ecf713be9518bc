"""CHUNKING (RFC 3030, BDAT) and BINARYMIME on the server: the same line
hygiene, size limit and durable commit as DATA, and the smuggling cases
(chunk boundaries splitting CRLF.CRLF, BDAT mixed with DATA, BDAT LAST 0,
BDAT out of a transaction, sizes that cannot be kept in step)."""
import pytest

from conftest import SMTPConn
from test_smtp import ehlo, only_mail, strip_trace

# Under the ASan build, fail a test whose ternd wrote a sanitizer report.
pytestmark = pytest.mark.usefixtures("sanitizer_check")

MSG = b"Subject: chunks\r\nFrom: <a@example.org>\r\n\r\n"


def lf(b):
    """Maildir files hold LF line ends."""
    return b.replace(b"\r\n", b"\n")


def envelope(c, rcpt="demo@example.test", params=""):
    ehlo(c)
    assert c.cmd(f"MAIL FROM:<a@example.org>{params}")[0] == 250
    assert c.cmd(f"RCPT TO:<{rcpt}>")[0] == 250


def bdat(c, data, last=False):
    c.send(b"BDAT %d%s\r\n" % (len(data), b" LAST" if last else b"") + data)
    return c.reply()


def test_ehlo_offers_chunking_binarymime_dsn(daemon):
    with SMTPConn(daemon.port) as c:
        kw = [l[4:] for l in ehlo(c).split("\n")[1:]]
    for ext in ("CHUNKING", "BINARYMIME", "DSN", "8BITMIME"):
        assert ext in kw, kw


def test_bdat_chunks_delivered_byte_for_byte(daemon):
    body = b"line one\r\n.\r\n..two dots stay\r\nend\r\n"
    with SMTPConn(daemon.port) as c:
        envelope(c)
        code, text = bdat(c, MSG)
        assert code == 250 and "octets" in text, text
        code, text = bdat(c, body, last=True)
        assert code == 250 and "queued as" in text, text
    got = strip_trace(only_mail(daemon, "demo"))
    assert got == lf(MSG + body), got


def test_chunk_boundary_splitting_crlf_dot_crlf_does_not_end(daemon):
    """".\\r" ends one chunk and "\\n" starts the next: it is a line of
    the message, and a command after it is message text too."""
    with SMTPConn(daemon.port) as c:
        envelope(c)
        assert bdat(c, MSG + b"first\r\n")[0] == 250
        assert bdat(c, b".\r")[0] == 250
        code, text = bdat(c, b"\nMAIL FROM:<evil@example.org>\r\n"
                          b"RCPT TO:<alice@example.test>\r\n", last=True)
        assert code == 250 and "queued as" in text, text
        assert c.cmd("NOOP")[0] == 250
    got = strip_trace(only_mail(daemon, "demo"))
    assert got.endswith(b"first\n.\nMAIL FROM:<evil@example.org>\n"
                        b"RCPT TO:<alice@example.test>\n"), got
    assert daemon.maildir("alice") == []


def test_bare_lf_in_a_chunk_is_refused(daemon):
    with SMTPConn(daemon.port) as c:
        envelope(c)
        assert bdat(c, MSG + b"a\n.\n")[0] == 250
        code, text = bdat(c, b"b\r\n", last=True)
        assert code == 554 and "5.5.2" in text, text
        code, text = c.cmd("NOOP")
        assert code == 250, text
        envelope_again = c.cmd("MAIL FROM:<a@example.org>")
        assert envelope_again[0] == 250, envelope_again
    assert daemon.maildir("demo") == []


def test_bare_cr_and_nul_in_a_chunk_are_refused(daemon):
    for bad, esc in ((b"a\rb\r\n", "5.5.2"), (b"a\x00b\r\n", "5.6.0")):
        with SMTPConn(daemon.port) as c:
            envelope(c)
            code, text = bdat(c, MSG + bad, last=True)
            assert code == 554 and esc in text, (bad, text)
    assert daemon.maildir("demo") == []


def test_data_after_bdat_is_503_and_transaction_lost(daemon):
    with SMTPConn(daemon.port) as c:
        envelope(c)
        assert bdat(c, MSG)[0] == 250
        code, text = c.cmd("DATA")
        assert code == 503 and "5.5.1" in text, text
        # The BDAT transaction goes on: DATA was refused, not taken.
        code, text = bdat(c, b"x\r\n", last=True)
        assert code == 250 and "queued as" in text, text
    assert only_mail(daemon, "demo")


def test_bdat_last_0_ends_the_message(daemon):
    with SMTPConn(daemon.port) as c:
        envelope(c)
        assert bdat(c, MSG + b"body\r\n")[0] == 250
        code, text = bdat(c, b"", last=True)
        assert code == 250 and "queued as" in text, text
    assert strip_trace(only_mail(daemon, "demo")) == lf(MSG + b"body\r\n")


def test_bdat_without_mail_is_read_then_503(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        # The chunk holds a command line: read as the chunk, never run.
        code, text = bdat(c, b"MAIL FROM:<x@example.org>\r\n")
        assert code == 503 and "5.5.1" in text, text
        code, text = bdat(c, b"RCPT TO:<demo@example.test>\r\n", last=True)
        assert code == 503, text
        assert c.cmd("NOOP")[0] == 250
        assert c.cmd("RCPT TO:<demo@example.test>")[0] == 503


def test_bdat_without_recipients_is_read_then_554(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        assert c.cmd("MAIL FROM:<a@example.org>")[0] == 250
        code, text = bdat(c, b"NOOP\r\n", last=True)
        assert code == 554 and "5.5.1" in text, text
        assert c.cmd("NOOP")[0] == 250


def test_bdat_malformed_size_501_and_closed(daemon):
    for arg in (b"abc", b"-5", b"99999999999999999999", b"", b"0x10"):
        with SMTPConn(daemon.port) as c:
            envelope(c)
            code, text = c.cmd(b"BDAT " + arg)
            assert code == 501 and "5.5.4" in text, (arg, text)
            assert c.closed(), arg


def test_bdat_bad_keyword_after_size_is_read_then_501(daemon):
    with SMTPConn(daemon.port) as c:
        envelope(c)
        c.send(b"BDAT 6 FIRST\r\nNOOP\r\n")
        code, text = c.reply()
        assert code == 501, text
        assert c.cmd("NOOP")[0] == 250       # in step: the chunk was read
        assert daemon.maildir("demo") == []


def test_bdat_chunk_over_limit_552_and_closed(make_daemon):
    d = make_daemon("max-message-size 10K").start()
    with SMTPConn(d.port) as c:
        envelope(c)
        code, text = c.cmd("BDAT 999999999999 LAST")
        assert code == 552 and "5.3.4" in text, text
        assert c.closed()


def test_bdat_total_over_limit_552_after_the_chunk(make_daemon):
    d = make_daemon("max-message-size 10K").start()
    with SMTPConn(d.port) as c:
        envelope(c)
        half = (b"y" * 98 + b"\r\n") * 60            # 6000 octets
        assert bdat(c, MSG + half)[0] == 250
        code, text = bdat(c, half)
        assert code == 552 and "5.3.4" in text, text
        # In step after the refused chunk; the transaction is gone.
        code, text = bdat(c, b"z\r\n", last=True)
        assert code == 503, text
        assert c.cmd("NOOP")[0] == 250
    assert d.maildir("demo") == []


def test_pipelined_bdat(daemon):
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        part1, part2 = MSG + b"one\r\n", b"two\r\n"
        c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<demo@example.test>\r\n"
               b"RCPT TO:<alice@example.test>\r\n"
               b"BDAT %d\r\n%sBDAT %d LAST\r\n%sQUIT\r\n"
               % (len(part1), part1, len(part2), part2))
        codes = [c.reply()[0] for _ in range(6)]
        assert codes == [250, 250, 250, 250, 250, 221], codes
    for u in ("demo", "alice"):
        assert strip_trace(only_mail(daemon, u)) == lf(MSG + b"one\r\ntwo\r\n")


def test_binarymime_needs_bdat(daemon):
    """BODY=BINARYMIME was taken with DATA although nothing offered it;
    RFC 3030: DATA after BINARYMIME is 503 5.5.1."""
    with SMTPConn(daemon.port) as c:
        envelope(c, params=" BODY=BINARYMIME")
        code, text = c.cmd("DATA")
        assert code == 503 and "5.5.1" in text, text
        code, text = bdat(c, MSG + b"\xff\xfe binary\r\n", last=True)
        assert code == 250 and "queued as" in text, text
    assert strip_trace(only_mail(daemon, "demo")).endswith(b"\xff\xfe binary\n")


def test_bdat_on_submit_socket_offered(daemon):
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(str(daemon.base / "submit.sock"))
    f = s.makefile("rb")
    assert f.readline().startswith(b"220")
    s.sendall(b"EHLO local\r\n")
    lines = []
    for _ in range(50):
        l = f.readline()
        lines.append(l)
        if l[3:4] == b" ":
            break
    s.close()
    assert any(b"CHUNKING" in l for l in lines), lines


def test_bdat_fed_one_byte_at_a_time(daemon):
    """The command, the chunk and the next command in single-byte writes:
    the chunk's lines are cut the same way whatever the reads."""
    import socket
    data = MSG + b"a\r\n.\r\nb\r\n"
    with SMTPConn(daemon.port) as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        envelope(c)
        for byte in b"BDAT %d LAST\r\n" % len(data) + data + b"NOOP\r\n":
            c.send(bytes([byte]))
        code, text = c.reply()
        assert code == 250 and "queued as" in text, text
        assert c.reply()[0] == 250
    assert strip_trace(only_mail(daemon, "demo")) == lf(data)


def test_bdat_last_line_without_crlf(daemon):
    with SMTPConn(daemon.port) as c:
        envelope(c)
        code, text = bdat(c, MSG + b"no line end", last=True)
        assert code == 250 and "queued as" in text, text
    with SMTPConn(daemon.port) as c:
        envelope(c)
        code, text = bdat(c, MSG + b"bare CR at the end\r", last=True)
        assert code == 554 and "5.5.2" in text, text
    assert strip_trace(only_mail(daemon, "demo")) == lf(MSG) + b"no line end\n"


def test_bdat_250_means_durable(make_daemon):
    """The 250 to BDAT LAST comes from the same commit as DATA's: the
    message survives kill -9 right after it, and a remote one is queued."""
    d = make_daemon("trusted-network 127.0.0.0/8\n").start()
    with SMTPConn(d.port) as c:
        envelope(c, rcpt="someone@remote.example")
        code, text = bdat(c, MSG + b"durable\r\n", last=True)
        assert code == 250, text
        d.kill9()                                # no time for anything else
    qid = text.split()[-1]
    d.start()
    out = d.ctl("queue", check=True).stdout
    assert qid in out and "someone@remote.example" in out, out
