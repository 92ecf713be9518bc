"""The DSN extension (RFC 3461): NOTIFY, ORCPT, RET and ENVID accepted
and checked at MAIL and RCPT, kept in the envelope, honoured in our
notices (failure, success) and passed on to a next hop that offers DSN
(an aiosmtpd peer taught DSN, which records what it got) but not to one
that does not.  Also the SMTP client's BDAT for BINARYMIME mail."""
import os
import socket
import threading

import pytest

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from conftest import SMTPConn, wait_for
from test_chunking import MSG, bdat
from test_remote import MX, Sink, dsn_of, empty, remote, status_blocks  # noqa: F401
from test_local_forms import users  # noqa: F401
from test_smtp import ehlo

# Under the ASan build, fail a test whose ternd wrote a sanitizer report.
pytestmark = pytest.mark.usefixtures("sanitizer_check")

DSN_KEYS = ("NOTIFY", "ORCPT", "RET", "ENVID")


def split_dsn(arg):
    """The command argument without DSN parameters, and those."""
    keep, got = [], {}
    for tok in arg.split(" "):
        k = tok.split("=", 1)[0].upper()
        if k in DSN_KEYS and "=" in tok:
            got[k] = tok.split("=", 1)[1]
        else:
            keep.append(tok)
    return " ".join(keep), got


class DSNSink(Sink):
    """A peer that offers DSN and records the parameters it was given."""

    def __init__(self):
        super().__init__()
        self.mail_params = []
        self.rcpt_params = []

    async def handle_EHLO(self, server, session, envelope, hostname,
                          responses):
        responses = await super().handle_EHLO(server, session, envelope,
                                              hostname, responses)
        return responses[:-1] + ["250-DSN"] + responses[-1:]


class DSNParams:
    """Takes the DSN parameters off MAIL and RCPT and records them."""

    async def smtp_MAIL(self, arg):
        arg, got = split_dsn(arg or "")
        self.event_handler.mail_params.append(got)
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg):
        arg, got = split_dsn(arg or "")
        self.event_handler.rcpt_params.append(got)
        await super().smtp_RCPT(arg)


class DSNServer(DSNParams, SMTP):
    pass


class DSNController(Controller):
    def factory(self):
        return DSNServer(self.handler, **self.SMTP_kwargs)


class DSNMX(MX):
    def __init__(self, host, port):
        self.sink = DSNSink()
        self.ctl = DSNController(self.sink, hostname=host, port=port,
                                 ready_timeout=10)


def submit(d, rcpts, mail="", body=b"x\r\n", sender="demo@example.test"):
    """One transaction over DATA with the given parameters."""
    with SMTPConn(d.port) as c:
        ehlo(c)
        code, text = c.cmd(f"MAIL FROM:<{sender}>{mail}")
        assert code == 250, text
        for r, p in rcpts:
            code, text = c.cmd(f"RCPT TO:<{r}>{p}")
            assert code == 250, text
        assert c.cmd("DATA")[0] == 354
        c.send(MSG + body + b".\r\n")
        code, text = c.reply()
        assert code == 250, text


def test_dsn_parameters_checked(daemon):
    cases = [
        ("MAIL FROM:<a@example.org> RET=PART", 501),
        ("MAIL FROM:<a@example.org> ENVID=" + "x" * 101, 501),
        ("MAIL FROM:<a@example.org> ENVID=a+0D", 501),
        ("MAIL FROM:<a@example.org> RET=HDRS RET=FULL", 555),
        ("RCPT TO:<demo@example.test> NOTIFY=NEVER,SUCCESS", 501),
        ("RCPT TO:<demo@example.test> NOTIFY=SOMETIMES", 501),
        ("RCPT TO:<demo@example.test> ORCPT=demo@example.test", 501),
        ("RCPT TO:<demo@example.test> ORCPT=rfc822;a+0A@b", 501),
        ("RCPT TO:<demo@example.test> ORCPT=rfc822;" + "a" * 500, 501),
        ("RCPT TO:<demo@example.test> FROB=1", 555),
    ]
    for line, want in cases:
        with SMTPConn(daemon.port) as c:
            ehlo(c)
            if line.startswith("RCPT"):
                assert c.cmd("MAIL FROM:<a@example.org>")[0] == 250
            code, text = c.cmd(line)
            assert code == want and text[4:9] == "5.5.4", (line, text)
    with SMTPConn(daemon.port) as c:
        ehlo(c)
        code, text = c.cmd("MAIL FROM:<a@example.org> RET=HDRS "
                           "ENVID=QQ+2B1")
        assert code == 250, text
        code, text = c.cmd("RCPT TO:<demo@example.test> "
                           "NOTIFY=SUCCESS,DELAY ORCPT=rfc822;x+2By@b.test")
        assert code == 250, text


def test_notify_never_means_no_bounce(remote):
    make, port = remote
    with MX("127.0.0.2", port) as mx1:
        mx1.rcpt_reply["nobody@remote.test"] = "550 5.1.1 no such user"
        d = make()
        submit(d, [("nobody@remote.test", " NOTIFY=NEVER")])
        assert wait_for(lambda: empty(d), 20), d.ctl("queue").stdout
        assert wait_for(lambda: "event=dsn result=suppressed" in
                        d.logtext(), 10), d.logtext()
    assert dsn_of(d) is None
    assert d.maildir("alice") == []          # nor to the postmaster


def test_failure_dsn_carries_envid_orcpt_and_ret_hdrs(remote):
    make, port = remote
    with MX("127.0.0.2", port) as mx1:
        mx1.rcpt_reply["nobody@remote.test"] = "550 5.1.1 no such user"
        d = make()
        submit(d, [("nobody@remote.test",
                    " NOTIFY=FAILURE ORCPT=rfc822;Old+2Bname@remote.test")],
               mail=" RET=HDRS ENVID=env+2D42", body=b"secret body\r\n")
        assert wait_for(lambda: dsn_of(d) is not None, 20), d.logtext()
    r = dsn_of(d)
    parts = [p.get_content_type() for p in r.walk()]
    assert "text/rfc822-headers" in parts and "message/rfc822" not in parts
    assert "secret body" not in r.as_string()
    b = status_blocks(r)[0]
    assert b["Action"] == "failed"
    assert "Old+name@remote.test" in b["Original-Recipient"]
    part = next(p for p in r.walk()
                if p.get_content_type() == "message/delivery-status")
    assert part.get_payload()[0]["Original-Envelope-Id"] == "env-42"


def test_success_dsn_for_local_delivery(daemon):
    submit(daemon, [("alice@example.test",
                     " NOTIFY=SUCCESS ORCPT=rfc822;alice@example.test")],
           mail=" ENVID=QQ1")
    assert daemon.wait_mail("alice", 1, 15), daemon.logtext()
    assert wait_for(lambda: dsn_of(daemon) is not None, 20), daemon.logtext()
    r = dsn_of(daemon)
    assert "Successful" in r["Subject"]
    b = status_blocks(r)[0]
    assert b["Action"] == "delivered" and b["Status"] == "2.0.0", b
    assert "alice@example.test" in b["Original-Recipient"]
    parts = [p.get_content_type() for p in r.walk()]
    assert "message/rfc822" not in parts      # a success returns headers


def test_no_success_dsn_without_notify_success(daemon):
    submit(daemon, [("alice@example.test", " NOTIFY=FAILURE")])
    assert daemon.wait_mail("alice", 1, 15)
    assert wait_for(lambda: empty(daemon), 10)
    assert dsn_of(daemon) is None


def test_success_relayed_to_peer_without_dsn(remote):
    make, port = remote
    with MX("127.0.0.2", port) as mx1:
        d = make()
        submit(d, [("fine@remote.test", " NOTIFY=SUCCESS,FAILURE")],
               mail=" ENVID=abc")
        assert wait_for(lambda: len(mx1.messages) == 1, 20), d.logtext()
        assert wait_for(lambda: dsn_of(d) is not None, 20), d.logtext()
    b = status_blocks(dsn_of(d))[0]
    assert b["Action"] == "relayed", b
    assert "mx1.remote.test" in b.get("Remote-MTA", ""), b


def test_dsn_parameters_passed_to_peer_offering_dsn(remote):
    make, port = remote
    with DSNMX("127.0.0.2", port) as mx1:
        d = make()
        submit(d, [("fine@remote.test",
                    " NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb@x.test"),
                   ("other@remote.test", "")],
               mail=" RET=HDRS ENVID=QQ+2B1")
        assert wait_for(lambda: len(mx1.messages) == 1, 20), d.logtext()
        assert wait_for(lambda: empty(d), 10)
    assert mx1.mail_params == [{"RET": "HDRS", "ENVID": "QQ+2B1"}]
    assert mx1.rcpt_params == [
        {"NOTIFY": "SUCCESS,FAILURE", "ORCPT": "rfc822;a+2Bb@x.test"}, {}]
    assert dsn_of(d) is None     # the next hop reports success, not us


class BdatPeer:
    """A minimal MX that offers CHUNKING and BINARYMIME and takes one
    BDAT chunk per transaction; records (MAIL line, body bytes)."""

    def __init__(self, host, port, pipelining=True):
        self.pipelining = pipelining
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(5)
        self.sock.settimeout(0.2)
        self.got = []
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *a):
        self.stop = True
        self.t.join(10)
        self.sock.close()

    def run(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            with conn:
                conn.settimeout(10)
                try:
                    self.serve(conn.makefile("rb"), conn)
                except (OSError, ValueError):
                    pass

    def serve(self, f, conn):
        conn.sendall(b"220 bdat.test ESMTP\r\n")
        mail = None
        for _ in range(100):
            line = f.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb == b"EHLO":
                conn.sendall(b"250-bdat.test\r\n" +
                             (b"250-PIPELINING\r\n" if self.pipelining
                              else b"") +
                             b"250-8BITMIME\r\n250-CHUNKING\r\n"
                             b"250 BINARYMIME\r\n")
            elif verb == b"MAIL":
                mail = line.strip()
                conn.sendall(b"250 ok\r\n")
            elif verb == b"BDAT":
                n = int(line.split()[1])
                self.got.append((mail, f.read(n)))
                conn.sendall(b"250 ok\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:
                conn.sendall(b"250 ok\r\n")


def send_binary(d, rcpt):
    with SMTPConn(d.port) as c:
        ehlo(c)
        assert c.cmd("MAIL FROM:<demo@example.test> BODY=BINARYMIME")[0] \
            == 250
        assert c.cmd(f"RCPT TO:<{rcpt}>")[0] == 250
        code, text = bdat(c, MSG + b"\xff\x80 raw\r\n.\r\nend\r\n",
                          last=True)
        assert code == 250, text


@pytest.mark.parametrize("pipelining", [True, False])
def test_binarymime_relayed_by_bdat(remote, pipelining):
    make, port = remote
    with BdatPeer("127.0.0.2", port, pipelining) as peer:
        d = make()
        send_binary(d, "bin@remote.test")
        assert wait_for(lambda: peer.got, 20), d.logtext()
        assert wait_for(lambda: empty(d), 10)
    mail, body = peer.got[0]
    assert b"BODY=BINARYMIME" in mail, mail
    # As received: no dot-stuffing, CRLF kept, after our Received: field.
    assert body.endswith(MSG + b"\xff\x80 raw\r\n.\r\nend\r\n"), body
    assert body.startswith(b"Received: ")


def test_binarymime_bounced_for_peer_without_chunking(remote):
    make, port = remote
    with MX("127.0.0.2", port) as mx1:
        d = make()
        send_binary(d, "bin@remote.test")
        assert wait_for(lambda: dsn_of(d) is not None, 20), d.logtext()
    assert mx1.messages == []
    b = status_blocks(dsn_of(d))[0]
    assert b["Action"] == "failed" and b["Status"] == "5.6.3", b


# ---- over LMTP ----------------------------------------------------------------

class DSNLMTPStore(DSNSink):
    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                              envelope.original_content))
        return "250 2.0.0 saved"


def test_dsn_parameters_passed_over_lmtp(make_daemon, tmpbase, users):
    from aiosmtpd.controller import UnixSocketController
    from aiosmtpd.lmtp import LMTP

    class DSNLMTP(DSNParams, LMTP):
        pass

    class Ctl(UnixSocketController):
        def factory(self):
            return DSNLMTP(self.handler, **self.SMTP_kwargs)

    pw = users()
    store = DSNLMTPStore()
    sock = tmpbase / "lmtp.sock"
    ctl = Ctl(store, unix_socket=str(sock), ready_timeout=10)
    ctl.start()
    try:
        os.chmod(sock, 0o666)
        d = make_daemon(f'local-delivery lmtp\nlmtp "unix:{sock}"').start()
        submit(d, [(f"{pw.pw_name}@localhost",
                    " NOTIFY=SUCCESS ORCPT=rfc822;x+2By@localhost")],
               mail=" ENVID=lm+2B1 RET=HDRS")
        assert wait_for(lambda: store.messages, 15), d.logtext()[-2000:]
        # Delivered here: the success report is ours.
        assert wait_for(lambda: dsn_of(d) is not None, 15), d.logtext()
    finally:
        ctl.stop()
    # The RCPT check at the MX (an LMTP probe: MAIL FROM:<>, RCPT) and our
    # success report come without parameters; the message itself has them.
    assert [p for p in store.mail_params if p] == \
        [{"ENVID": "lm+2B1", "RET": "HDRS"}]
    assert [p for p in store.rcpt_params if p] == \
        [{"NOTIFY": "SUCCESS", "ORCPT": "rfc822;x+2By@localhost"}]
    assert status_blocks(dsn_of(d))[0]["Action"] == "delivered"


def test_notify_without_delay_gets_no_delay_warning(remote):
    make, port = remote
    with MX("127.0.0.2", port) as mx1, MX("127.0.0.3", port) as mx2:
        for mx in (mx1, mx2):
            mx.rcpt_reply["slow@remote.test"] = "450 4.2.0 mailbox busy"
            mx.rcpt_reply["slower@remote.test"] = "450 4.2.0 mailbox busy"
        d = make("delay-warning 2s\n")
        submit(d, [("slow@remote.test", " NOTIFY=FAILURE")])
        assert wait_for(lambda: "type=delay" in d.logtext(), 30), \
            d.logtext()
        # The same delay with NOTIFY=DELAY is reported: the warning time
        # has passed for the first one too, and it got none.
        submit(d, [("slower@remote.test", " NOTIFY=DELAY,FAILURE")])
        assert wait_for(lambda: dsn_of(d) is not None, 30), d.logtext()
    blocks = status_blocks(dsn_of(d))
    assert [b["Action"] for b in blocks] == ["delayed"]
    assert "slower@remote.test" in blocks[0]["Final-Recipient"]
    assert len(d.maildir("demo")) == 1
    lines = [l for l in d.logtext().splitlines()
             if "result=suppressed" in l and "type=delay" in l]
    assert len(lines) == 1, lines            # once, not at every retry


def test_ternctl_show_lists_dsn_parameters(make_daemon):
    d = make_daemon("trusted-network 127.0.0.0/8\n").start()
    with SMTPConn(d.port) as c:
        ehlo(c)
        assert c.cmd("MAIL FROM:<demo@example.test> RET=HDRS "
                     "ENVID=QQ+2B1")[0] == 250
        assert c.cmd("RCPT TO:<someone@remote.example> NOTIFY=DELAY "
                     "ORCPT=rfc822;a+2Bb@x.test")[0] == 250
        assert c.cmd("DATA")[0] == 354
        code, text = c.cmd(MSG + b"x\r\n.")
        assert code == 250, text
    out = d.ctl("show", text.split()[-1], check=True).stdout
    assert "dsn: RET=HDRS ENVID=QQ+2B1" in out, out
    assert "  dsn: NOTIFY=DELAY ORCPT=rfc822;a+2Bb@x.test" in out, out
