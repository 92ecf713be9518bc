"""Mail loops: a message that has crossed too many hosts (RFC 5321 6.3,
counted in Received: header fields) is refused at the end of DATA, in the
dialogue, so it never goes round again."""
import time

import pytest

from conftest import SMTPConn

try:
    from conftest import SANITIZER_MARKS  # noqa: F401
    pytestmark = pytest.mark.usefixtures("sanitizer_check")
except ImportError:
    pass


def received(n):
    return b"".join(b"Received: from hop%d.example by hop%d.example;\r\n"
                    b"\tTue, 1 Dec 2026 10:00:00 +0000\r\n" % (i, i + 1)
                    for i in range(n))


def send_raw(d, head, body=b"x\r\n"):
    with SMTPConn(d.port) as c:
        assert c.cmd("EHLO client.example")[0] == 250
        assert c.cmd("MAIL FROM:<a@example.org>")[0] == 250
        assert c.cmd("RCPT TO:<demo@example.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(head + b"Subject: hops\r\n\r\n" + body + b".\r\n")
        code, text = c.reply()
        # The session goes on after a refusal.
        assert c.cmd("NOOP")[0] == 250
    return code, text


def test_too_many_hops_refused_in_dialogue(daemon):
    # 100 Received: fields with ours: still accepted; 101: a loop.
    code, text = send_raw(daemon, received(99))
    assert code == 250, text
    assert daemon.wait_mail("demo")
    code, text = send_raw(daemon, received(100))
    assert code == 554 and text.startswith("554 5.4.6"), text
    assert "hops" in text
    time.sleep(0.3)
    assert len(daemon.maildir("demo")) == 1
    assert daemon.unfinished() == []
    assert "reason=hops" in daemon.logtext()


def test_received_lines_in_the_body_do_not_count(daemon):
    body = received(150) + b"end\r\n"
    code, text = send_raw(daemon, b"", body)
    assert code == 250, text
    assert daemon.wait_mail("demo")


def test_max_hops_is_a_setting(make_daemon):
    d = make_daemon("max-hops 10\n").start()
    code, text = send_raw(d, received(10))
    assert code == 554 and text.startswith("554 5.4.6"), text
    code, text = send_raw(d, received(9))
    assert code == 250, text
