"""Addresses end to end (lib/addr.c): quoted local parts, which must be
delivered or refused at RCPT and never sit in the queue; a quoted local
part that needs no quotes is the same mailbox; SMTPUTF8 and IDNA, with
U-labels sent as A-labels and UTF-8 local parts only to peers that offer
SMTPUTF8.  Peers are aiosmtpd servers on 127.0.0.x found through the
loopback DNS server."""
import email
import email.policy
import re
import smtplib
import socket

import pytest
from aiosmtpd.controller import Controller

from conftest import SMTPConn, free_port, wait_for
from dnsserver import DNSServer

pytestmark = pytest.mark.usefixtures("sanitizer_check")

RELAY = "trusted-network 127.0.0.0/8\nretry-min 1s\nretry-max 2s\n"

ZONES = {
    "remote.test.": {"MX": [(10, "mx.remote.test.")]},
    "mx.remote.test.": {"A": ["127.0.0.2"]},
    "sender.test.": {"MX": [(10, "mx.sender.test.")]},
    "mx.sender.test.": {"A": ["127.0.0.5"]},
    # bücher.test and münchen.test, as DNS knows them
    "xn--bcher-kva.test.": {"MX": [(10, "mx.xn--bcher-kva.test.")]},
    "mx.xn--bcher-kva.test.": {"A": ["127.0.0.2"]},
    "xn--mnchen-3ya.test.": {"MX": [(10, "mx.xn--mnchen-3ya.test.")]},
    "mx.xn--mnchen-3ya.test.": {"A": ["127.0.0.3"]},
}

BUECHER = "b\u00fccher.test"
JOERG = "j\u00f6rg"


class Sink:
    def __init__(self):
        self.messages = []          # (mail_from, [rcpts], options, bytes)
        self.rcpt_reply = {}

    async def handle_RCPT(self, server, session, envelope, address, options):
        reply = self.rcpt_reply.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                              list(envelope.mail_options),
                              envelope.original_content))
        return "250 2.0.0 accepted"


class MX:
    def __init__(self, host, port, utf8=False):
        self.sink = Sink()
        self.ctl = Controller(self.sink, hostname=host, port=port,
                              ready_timeout=10, enable_SMTPUTF8=utf8)

    def __enter__(self):
        self.ctl.start()
        return self.sink

    def __exit__(self, *a):
        self.ctl.stop()


def peer_port():
    """A port free on every peer address (free_port() asks 127.0.0.1 only,
    and other test runs on this host may hold it on 127.0.0.2)."""
    for _ in range(50):
        port = free_port()
        try:
            for host in ("127.0.0.2", "127.0.0.3", "127.0.0.5"):
                with socket.socket() as s:
                    s.bind((host, port))
            return port
        except OSError:
            continue
    raise AssertionError("no port free on every peer address")


@pytest.fixture
def remote(make_daemon):
    port = peer_port()
    servers = []

    def make(extra="", aliases=None):
        d = make_daemon(RELAY + f"remote-port {port}\n" + extra)
        dns = DNSServer(ZONES, port=d.dns_port).start()
        servers.append(dns)
        d.dns = dns
        if aliases is not None:
            d.aliases.write_text(aliases)
        d.start()
        if aliases is not None:
            d.ctl("newaliases", check=True)
        return d
    yield make, port
    for s in servers:
        s.stop()


def session(d, sender, rcpts, utf8=False, body=b"hello\r\n"):
    """One transaction with smtplib; returns the RCPT replies."""
    replies = []
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
        s.ehlo("client.example.org")
        code, text = s.mail(sender, ["SMTPUTF8"] if utf8 else [])
        assert code == 250, text
        for r in rcpts:
            replies.append(s.rcpt(r))
        if any(c == 250 for c, _ in replies):
            code, text = s.data(b"Subject: addr\r\n\r\n" + body)
            assert code == 250, text
    return replies


def empty(d):
    return "Mail queue is empty" in d.ctl("queue").stdout


def dsn_of(d, user="demo"):
    for p in d.maildir(user):
        m = email.message_from_bytes(p.read_bytes(),
                                     policy=email.policy.default)
        if m.get_content_type() == "multipart/report":
            return m
    return None


# ---- quoted local parts ----------------------------------------------------

def test_quoted_space_recipient_relayed_quoted(remote):
    """Accepted with 250, so it must leave the queue, correctly quoted
    (it used to stay until queue-lifetime: "malformed job")."""
    make, port = remote
    with MX("127.0.0.2", port) as mx:
        d = make()
        r = session(d, "s@sender.test", ['"john doe"@remote.test',
                                         '"a\\"b\\\\c"@remote.test'])
        assert [c for c, _ in r] == [250, 250], r
        assert wait_for(lambda: len(mx.messages) == 1, 20), d.logtext()
        assert wait_for(lambda: empty(d), 10), d.ctl("queue").stdout
    frm, rcpts, _, _ = mx.messages[0]
    assert sorted(rcpts) == ['"a\\"b\\\\c"@remote.test',
                             '"john doe"@remote.test']
    assert "malformed job" not in d.logtext()
    # logs escape the quotes and backslashes inside to=<...>
    assert 'to=<\\"john doe\\"@remote.test>' in d.logtext()


def test_quoted_space_sender_relayed_quoted(remote):
    make, port = remote
    with MX("127.0.0.2", port) as mx:
        d = make()
        r = session(d, '"john doe"@sender.test', ["x@remote.test"])
        assert r[0][0] == 250
        assert wait_for(lambda: len(mx.messages) == 1, 20), d.logtext()
    assert mx.messages[0][0] == '"john doe"@sender.test'


def test_needless_quotes_name_the_same_mailbox(remote):
    """"bob"@example.test is bob@example.test (it was refused 550 5.1.1);
    so is "b\\ob"; the stored form carries no quotes."""
    make, _ = remote
    d = make()
    r = session(d, '"s"@sender.test', ['"bob"@example.test',
                                       '"b\\ob"@example.test'])
    assert [c for c, _ in r] == [250, 250], r
    assert d.wait_mail("bob"), d.logtext()
    # the queue logs the delivery once the worker has reported it
    assert wait_for(lambda: "to=<bob@example.test>" in d.logtext(), 10), \
        d.logtext()
    assert "from=<s@sender.test>" in d.logtext()


def test_local_part_that_cannot_exist_refused_at_rcpt(remote):
    """No account, alias or virtual user can be called "john doe": 550
    5.1.1 at RCPT, never accept-then-bounce."""
    make, _ = remote
    d = make()
    with SMTPConn(d.port) as c:
        assert c.cmd("EHLO client.example.org")[0] == 250
        assert c.cmd("MAIL FROM:<s@sender.test>")[0] == 250
        code, text = c.cmd('RCPT TO:<"john doe"@example.test>')
        assert code == 550 and "5.1.1" in text, text
        code, text = c.cmd('RCPT TO:<"bob smith"@example.test>')
        assert code == 550 and "5.1.1" in text, text
    assert d.queue_files() == []


def test_quoted_addresses_survive_the_envelope_and_a_restart(remote):
    make, port = remote
    odd = '"x \\"y\\" \\\\z"@remote.test'
    with MX("127.0.0.2", port) as mx:
        mx.rcpt_reply['"x \\"y\\" \\\\z"@remote.test'] = "451 4.3.2 later"
        d = make()
        session(d, '"john doe"@sender.test', [odd])
        assert wait_for(lambda: "4.3.2 later" in d.ctl("queue").stdout, 20)
        d.stop()
        d.start()
        q = d.ctl("queue").stdout
        assert 'x \\"y\\" \\\\z' in q or '"x' in q, q
        assert list((d.spool / "corrupt").iterdir()) == []
        del mx.rcpt_reply['"x \\"y\\" \\\\z"@remote.test']
        d.ctl("flush")
        assert wait_for(lambda: len(mx.messages) == 1, 20), d.logtext()
    assert mx.messages[0][0] == '"john doe"@sender.test'
    assert mx.messages[0][1] == [odd]


def test_bounce_to_a_quoted_sender(remote):
    """The DSN for a failed recipient goes to "john doe"@sender.test,
    quoted on the wire and in its To: field."""
    make, port = remote
    with MX("127.0.0.2", port) as mx, MX("127.0.0.5", port) as smx:
        mx.rcpt_reply["gone@remote.test"] = "550 5.1.1 no such user"
        d = make()
        session(d, '"john doe"@sender.test', ["gone@remote.test"])
        assert wait_for(lambda: len(smx.messages) == 1, 30), d.logtext()
    frm, rcpts, _, data = smx.messages[0]
    assert frm in ("", "<>") and rcpts == ['"john doe"@sender.test']
    m = email.message_from_bytes(data, policy=email.policy.default)
    assert m.get_content_type() == "multipart/report"
    assert '"john doe"@sender.test' in str(m["To"])


# ---- SMTPUTF8 and IDNA -----------------------------------------------------

def test_ehlo_offers_smtputf8(remote):
    make, _ = remote
    d = make()
    with SMTPConn(d.port) as c:
        code, text = c.cmd("EHLO client.example.org")
    assert code == 250 and "SMTPUTF8" in text


def test_u_label_domain_sent_as_a_label_to_peer_without_smtputf8(remote):
    """user@bücher.test used to be bounced 5.1.2; now DNS is asked for the
    A-label and a peer without SMTPUTF8 gets the A-label, no SMTPUTF8."""
    make, port = remote
    with MX("127.0.0.2", port, utf8=False) as mx:
        d = make()
        r = session(d, "s@sender.test", [f"user@{BUECHER}"], utf8=True)
        assert r[0][0] == 250, r
        assert wait_for(lambda: len(mx.messages) == 1, 20), d.logtext()
        assert wait_for(lambda: empty(d), 10)
    frm, rcpts, opts, _ = mx.messages[0]
    assert rcpts == ["user@xn--bcher-kva.test"]
    assert "SMTPUTF8" not in [o.upper() for o in opts]
    assert ("xn--bcher-kva.test", "MX", "udp") in d.dns.log
    assert "5.1.2" not in d.logtext()


def test_utf8_local_part_to_peer_without_smtputf8_bounces_5_6_7(remote):
    make, port = remote
    with MX("127.0.0.3", port, utf8=False) as mx:
        d = make()
        r = session(d, "demo@example.test", [f"{JOERG}@m\u00fcnchen.test"],
                    utf8=True)
        assert r[0][0] == 250, r
        assert wait_for(lambda: dsn_of(d) is not None, 30), d.logtext()
    assert mx.messages == []
    part = next(p for p in dsn_of(d).walk()
                if p.get_content_type() == "message/delivery-status")
    blocks = [dict(b.items()) for b in part.get_payload()][1:]
    assert blocks[0]["Status"] == "5.6.7", blocks


def test_utf8_local_part_to_peer_with_smtputf8(remote):
    make, port = remote
    with MX("127.0.0.3", port, utf8=True) as mx:
        d = make()
        r = session(d, "s@sender.test", [f"{JOERG}@m\u00fcnchen.test"],
                    utf8=True)
        assert r[0][0] == 250, r
        assert wait_for(lambda: len(mx.messages) == 1, 20), d.logtext()
    frm, rcpts, opts, _ = mx.messages[0]
    # an SMTPUTF8 peer gets the domain as the client wrote it (RFC 6531)
    assert rcpts == [f"{JOERG}@m\u00fcnchen.test"]
    assert "SMTPUTF8" in [o.upper() for o in opts]
    assert ("xn--mnchen-3ya.test", "MX", "udp") in d.dns.log


def test_utf8_header_to_peer_without_smtputf8_bounces(remote):
    """An SMTPUTF8 message whose header carries UTF-8 must not go to a
    peer without SMTPUTF8, even with an ASCII envelope (RFC 6531 3.5)."""
    make, port = remote
    with MX("127.0.0.2", port, utf8=False) as mx:
        d = make()
        with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
            s.ehlo("client.example.org")
            s.mail("demo@example.test", ["SMTPUTF8"])
            s.rcpt("x@remote.test")
            s.data("Subject: Gr\u00fc\u00dfe\r\n\r\nhi\r\n".encode())
        assert wait_for(lambda: dsn_of(d) is not None, 30), d.logtext()
    assert mx.messages == []


@pytest.mark.parametrize("conf_form", [BUECHER, "xn--bcher-kva.test"])
def test_local_domain_a_and_u_label_are_one_domain(remote, conf_form):
    make, _ = remote
    d = make(f'local-domain "{conf_form}"\n',
             aliases="postmaster: alice\nfriend: bob@example.test\n")
    r = session(d, "s@sender.test", [f"friend@{BUECHER}",
                                     "friend@XN--BCHER-KVA.test"], utf8=True)
    assert [c for c, _ in r] == [250, 250], r
    # one message, one target: both forms are the same mailbox
    assert d.wait_mail("bob"), d.logtext()
    assert wait_for(lambda: empty(d), 10)
    assert len(d.maildir("bob")) == 1


def test_virtual_user_named_with_u_labels(remote, tmpbase):
    make, _ = remote
    md = tmpbase / "anna" / "Maildir"
    d = make(f'local-domain "{BUECHER}"\n'
             f'virtual "anna@{BUECHER}" maildir "{md}"\n')
    r = session(d, "s@sender.test", ["anna@xn--bcher-kva.test",
                                     f"Anna@B\u00dcCHER.test"], utf8=True)
    assert [c for c, _ in r] == [250, 250], r
    assert wait_for(lambda: (md / "new").is_dir() and
                    len(list((md / "new").iterdir())) == 1, 15), d.logtext()
    assert wait_for(lambda: empty(d), 10)


def test_malformed_u_label_refused_553_5_1_3(remote):
    make, _ = remote
    d = make()
    with SMTPConn(d.port) as c:
        assert c.cmd("EHLO client.example.org")[0] == 250
        code, text = c.cmd("MAIL FROM:<s@\u2603.test> SMTPUTF8")
        assert code == 553 and "5.1.3" in text, text
        assert c.cmd("MAIL FROM:<s@sender.test> SMTPUTF8")[0] == 250
        for bad in ("x@\u2603.test", "x@a\uff0eb.test", "x@\u0301a.test"):
            code, text = c.cmd(f"RCPT TO:<{bad}>")
            assert code == 553 and "5.1.3" in text, (bad, text)
    assert d.queue_files() == []


def test_utf8_local_part_needs_smtputf8(remote):
    make, _ = remote
    d = make()
    with SMTPConn(d.port) as c:
        assert c.cmd("EHLO client.example.org")[0] == 250
        code, text = c.cmd(f"MAIL FROM:<{JOERG}@sender.test>")
        assert code == 553 and "5.6.7" in text, text
        assert c.cmd("MAIL FROM:<s@sender.test>")[0] == 250
        code, text = c.cmd(f"RCPT TO:<{JOERG}@remote.test>")
        assert code == 553 and "5.6.7" in text, text
        code, text = c.cmd(f"RCPT TO:<x@{BUECHER}>")
        assert code == 553 and "5.6.7" in text, text


def test_quoted_sender_delivered_locally_and_forwarded(remote):
    """A quoted sender reaches a local mailbox (Return-Path:) and a copy
    an alias forwards elsewhere (SRS cannot encode it: the original
    sender goes out, still quoted)."""
    make, port = remote
    with MX("127.0.0.2", port) as mx:
        d = make(aliases="postmaster: alice\n"
                 "fwd: bob@example.test, away@remote.test\n")
        r = session(d, '"john doe"@sender.test', ["fwd@example.test"])
        assert r[0][0] == 250, r
        assert d.wait_mail("bob"), d.logtext()
        assert wait_for(lambda: len(mx.messages) == 1, 20), d.logtext()
        assert wait_for(lambda: empty(d), 10), d.ctl("queue").stdout
    text = d.maildir("bob")[0].read_bytes()
    assert b'Return-Path: <"john doe"@sender.test>' in text
    frm, rcpts, _, _ = mx.messages[0]
    assert rcpts == ["away@remote.test"]
    assert frm == '"john doe"@sender.test', frm
