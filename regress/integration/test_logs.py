"""Log lines are key=value records that tools parse: a value that came
from the network is escaped, so no peer can end it early and forge a
key=value of its own (a fake status=sent, say)."""
import re

import pytest

from conftest import SMTPConn, wait_for

try:
    from conftest import SANITIZER_MARKS  # noqa: F401
    pytestmark = pytest.mark.usefixtures("sanitizer_check")
except ImportError:
    pass


def test_forged_key_value_in_an_address_is_escaped(daemon):
    forged = '"x\\" status=sent> y"@elsewhere.example'
    with SMTPConn(daemon.port) as c:
        assert c.cmd("EHLO client.example")[0] == 250
        assert c.cmd("MAIL FROM:<a@example.org>")[0] == 250
        code, text = c.cmd(f"RCPT TO:<{forged}>")
        assert code == 554, text
    assert wait_for(lambda: "relaying denied" in daemon.logtext(), 10)
    line = next(l for l in daemon.logtext().splitlines()
                if "relaying denied" in l)
    # One to= value, and no status= key outside it.
    assert "status=" not in re.sub(r"to=<[^<>]*>", "", line), line
    assert '\\"' in line and "\\x3e" in line, line


def test_quotes_inside_a_reason_are_escaped(make_daemon):
    # An alias to an account that does not exist: the deferral's reason
    # quotes the name, and the value still ends at its own closing quote.
    d = make_daemon()
    d.write_aliases("info: nosuchaccount\n")
    d.start()
    with SMTPConn(d.port) as c:
        assert c.cmd("EHLO client.example")[0] == 250
        assert c.cmd("MAIL FROM:<a@example.org>")[0] == 250
        assert c.cmd("RCPT TO:<info@example.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(b"Subject: q\r\n\r\nx\r\n.\r\n")
        assert c.reply()[0] == 250
    assert wait_for(lambda: "status=deferred" in d.logtext(), 10), \
        d.logtext()
    line = next(l for l in d.logtext().splitlines()
                if "status=deferred" in l)
    m = re.search(r'reason="((?:[^"\\]|\\.)*)"(.*)$', line)
    assert m and m.group(2) == "", line
    assert '\\"nosuchaccount\\"' in m.group(1), line
