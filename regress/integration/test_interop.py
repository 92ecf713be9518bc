"""Interop: Tern's delivery agent against a real MTA from Debian's packages.

The peer is Postfix (interop/postfix.py), a private instance on 127.0.0.9
with its own config, queue, Maildirs and log under the test's temp dir, a
certificate for mx.interop.test signed by a CA made here, and a verbose log
of the session's dialogue and socket reads.  OpenSMTPD 6.8 (Debian 12) offers
no PIPELINING and refuses pipelined input, so it cannot show it.  A real DNS
server on loopback gives interop.test its MX; Tern verifies the certificate
against the CA (tls-verify yes).

rc/deps.sh installs postfix as root when no other MTA is installed (the
package would replace it); without it, or without root, these tests skip.
"""
import email
import email.policy
import re
import smtplib
import socket
import subprocess

import pytest

from conftest import wait_for
from dnsserver import DNSServer
from interop.policy import PolicyServer
from interop.postfix import Postfix, unavailable

# Under the ASan build, fail a test whose ternd wrote a sanitizer report.
pytestmark = pytest.mark.usefixtures("sanitizer_check")

MX_ADDR = "127.0.0.9"
MX_NAME = "mx.interop.test"
ZONES = {
    "interop.test.": {"MX": [(10, MX_NAME + ".")]},
    MX_NAME + ".": {"A": [MX_ADDR]},
}
MAILBOXES = ["someone@interop.test", "a1@interop.test", "a2@interop.test",
             "a3@interop.test"]
SENDER = "demo@example.test"        # a virtual user of Tern: gets the DSNs


def free_port(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def make_ca(tmp, name):
    """A CA and a leaf for name signed by it: (ca.pem, leaf.pem, leaf.key)."""
    tmp.mkdir(exist_ok=True)

    def run(*a):
        subprocess.run(a, check=True, capture_output=True, cwd=tmp,
                       timeout=60)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
        "2", "-subj", "/CN=Tern interop test CA", "-keyout", "ca.key",
        "-out", "ca.pem")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj",
        f"/CN={name}", "-keyout", "leaf.key", "-out", "leaf.csr")
    (tmp / "ext").write_text(f"subjectAltName=DNS:{name}\n"
                             "basicConstraints=CA:FALSE\n"
                             "extendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem",
        "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile",
        "ext", "-out", "leaf.pem")
    return tmp / "ca.pem", tmp / "leaf.pem", tmp / "leaf.key"


class Interop:
    """Tern (d) relaying to the Postfix instance (pf) through DNS (dns)."""

    def __init__(self, d, pf, dns, ca, pol):
        self.d, self.pf, self.dns, self.ca, self.pol = d, pf, dns, ca, pol

    def policy_requests(self, state="MAIL"):
        return [r for r in self.pol.snapshot()
                if r.get("protocol_state") == state]

    def send(self, rcpts, body, subject="interop", mail_options=()):
        msg = (f"From: <{SENDER}>\r\nTo: {', '.join(rcpts)}\r\n"
               f"Subject: {subject}\r\nMessage-ID: <{subject}@example.test>"
               "\r\n\r\n").encode() + body
        with smtplib.SMTP("127.0.0.1", self.d.port, timeout=30) as s:
            refused = s.sendmail(SENDER, rcpts, msg,
                                 mail_options=list(mail_options))
        assert refused == {}, refused
        return msg

    def queue_empty(self, timeout=30):
        return wait_for(lambda: "Mail queue is empty" in
                        self.d.ctl("queue").stdout, timeout, 0.2)

    def pf_log(self, *rcpts, timeout=30):
        """The Postfix log once it records the delivery to each of rcpts.
        postlogd writes the log from datagrams, behind the processes that
        sent them, so a copy can be in its Maildir before the session's
        lines are in the file; the delivery agent's status=sent line is
        sent after all of them."""
        def logged():
            text = self.pf.logtext()
            return text if all(re.search(rf"to=<{re.escape(r)}>, .*"
                                         r"status=sent", text)
                               for r in rcpts) else None
        text = wait_for(logged, timeout, 0.2)
        assert text, self.diag()
        return text

    def diag(self):
        return ("\n=== ternd.log\n" + self.d.logtext()[-8000:] +
                "\n=== postfix (dialogue and events)\n" +
                self.pf.summary()[-12000:])


@pytest.fixture
def interop(make_daemon, tmpbase):
    why = unavailable()
    if why:
        pytest.skip(why)
    ca, cert, key = make_ca(tmpbase / "tls", MX_NAME)
    port = free_port(MX_ADDR)
    started, daemons = [], []
    try:
        def make(extra_main=""):
            # The policy service is asked at MAIL FROM, before the reply.
            pol = PolicyServer().start()
            started.append(pol)
            extra_main = ("smtpd_delay_reject = no\n"
                          "smtpd_sender_restrictions = check_policy_service "
                          f"inet:127.0.0.1:{pol.port}\n" + extra_main)
            pf = Postfix(tmpbase / "postfix", MX_ADDR, port, (cert, key),
                         MAILBOXES, hostname=MX_NAME, extra_main=extra_main)
            started.append(pf)
            pf.start()
            d = make_daemon("trusted-network 127.0.0.0/8\n"
                            f"remote-port {port}\n"
                            "tls-verify yes\n"
                            f'ca-file "{ca}"\n'
                            "retry-min 1s\n")
            daemons.append(d)
            dns = DNSServer(ZONES, port=d.dns_port).start()
            started.append(dns)
            d.start()
            return Interop(d, pf, dns, ca, pol)
        yield make
    finally:
        # Tern first (it may hold a connection to Postfix open), then DNS,
        # Postfix and its policy service.
        for d in daemons:
            d.stop()
        for s in reversed(started):
            s.stop()


# ---- reading the Postfix log ------------------------------------------------

def smtpd_sessions(text):
    """The smtpd sessions in the Postfix log: lists of message texts (what
    follows "postfix/smtpd[pid]: "), one list per client connection."""
    sessions, current = [], {}
    for line in text.splitlines():
        m = re.search(r" postfix/smtpd\[(\d+)\]: (.*)$", line)
        if not m:
            continue
        pid, msg = m.groups()
        if msg.startswith("connect from "):
            current[pid] = [msg]
            sessions.append(current[pid])
        elif pid in current:
            current[pid].append(msg)
            if msg.startswith("disconnect from "):
                del current[pid]
    return sessions


def client_lines(session):
    """(index, command) for each line the server read from the client."""
    return [(i, m.split(": ", 1)[1]) for i, m in enumerate(session)
            if re.match(r"< \S+: ", m)]


def verb(command):
    """The command word: "MAIL" for "MAIL FROM:<a@b> SIZE=1"."""
    return re.split(r"[ :]", command, 1)[0].upper()


def delivery_session(text, sender=SENDER):
    """The (one) smtpd session that carried mail from sender."""
    found = [s for s in smtpd_sessions(text)
             if any(c.upper().startswith(f"MAIL FROM:<{sender.upper()}>")
                    for _, c in client_lines(s))]
    assert len(found) == 1, found
    return found[0]


def body_of(raw):
    """The body of a delivered copy (Postfix's Maildir uses LF)."""
    return raw.split(b"\n\n", 1)[1]


def dsn_of(d, user="demo"):
    for p in d.maildir(user):
        m = email.message_from_bytes(p.read_bytes(),
                                     policy=email.policy.default)
        if m.get_content_type() == "multipart/report":
            return m
    return None


def status_blocks(report):
    part = next(p for p in report.walk()
                if p.get_content_type() == "message/delivery-status")
    return [dict(b.items()) for b in part.get_payload()][1:]


# ---- tests --------------------------------------------------------------------

BODY = (b"Hello from Tern to Postfix.\r\n"
        b".a line that starts with a dot\r\n"
        b"..two dots\r\n"
        b".\r\n"                          # "." alone, inside the body
        b"trailing spaces   \r\n"
        + b"0123456789" * 99 + b"01234567\r\n"   # 998 octets, RFC 5321's most
        + b"".join(b"line %d of many\r\n" % i for i in range(2000))
        + b"last line\r\n")


def test_delivers_over_verified_starttls_with_pipelining(interop):
    t = interop()
    t.send(["someone@interop.test"], BODY, "first")
    assert wait_for(lambda: t.pf.messages("someone@interop.test"), 30), \
        t.diag()
    (raw,) = t.pf.messages("someone@interop.test")
    assert body_of(raw) == BODY.replace(b"\r\n", b"\n"), t.diag()
    assert t.queue_empty(), t.d.ctl("queue").stdout + t.diag()

    # Tern: TLS to the MX, certificate verified against our CA; sent.
    log = t.d.logtext()
    relay = rf"{re.escape(MX_NAME)}\[{re.escape(MX_ADDR)}\]:{t.pf.port}"
    assert re.search(rf"event=tls relay={relay} protocol=TLSv1\.[23] "
                     r"cipher=\S+ verified=yes", log), t.diag()
    assert re.search(r"event=deliver to=<someone@interop.test> .*"
                     rf"relay={relay} .*status=sent", log), t.diag()

    # Postfix: the mail came in over TLS, after STARTTLS, as ESMTPS.
    pflog = t.pf_log("someone@interop.test")
    assert re.search(r"postfix/smtpd\[\d+\]: Anonymous TLS connection "
                     r"established from \S+: TLSv1\.[23] with cipher",
                     pflog), t.diag()
    assert re.search(rb"Received: from mx\.example\.test \(unknown "
                     rb"\[127\.0\.0\.1\]\)\n\t\(using TLSv1\.[23] with "
                     rb"cipher ", raw), raw[:1500]
    assert b"with ESMTPS id" in raw, raw[:1500]
    s = delivery_session(pflog)
    cmds = [verb(c) for _, c in client_lines(s)]
    assert cmds[:3] == ["EHLO", "STARTTLS", "EHLO"], cmds

    # Pipelining (RFC 2920): while Postfix was still deciding on MAIL FROM
    # (asking its policy service, before any reply), the RCPT and DATA that
    # follow were already waiting in its socket's receive queue; inside
    # TLS, so they are at least as long as their text.  And Postfix found
    # nothing sent out of turn.
    (req,) = t.policy_requests("MAIL")
    assert req["sender"] == SENDER, req
    assert req["encryption_protocol"].startswith("TLSv1."), req
    ahead = len("RCPT TO:<someone@interop.test>\r\nDATA\r\n")
    assert req["rx_queue"] is not None and req["rx_queue"] >= ahead, \
        f"MAIL, RCPT, DATA not pipelined: {req}\n" + "\n".join(s)
    assert "improper command pipelining" not in pflog, t.diag()
    assert "SMTP protocol synchronization" not in pflog, t.diag()
    assert wait_for(t.pf.queue_empty, 10), t.diag()


def test_one_transaction_for_many_recipients_and_dsn_for_refused(interop):
    t = interop()
    good = ["a1@interop.test", "a2@interop.test", "a3@interop.test"]
    bad = "nobody@interop.test"       # not in Postfix's mailbox table
    body = b"One message, three mailboxes, one refusal.\r\n"
    t.send(good[:2] + [bad] + good[2:], body, "many")

    assert wait_for(lambda: all(t.pf.messages(r) for r in good), 30), \
        t.diag()
    assert t.d.wait_mail("demo", 1, 30), t.diag()
    assert t.queue_empty(), t.d.ctl("queue").stdout + t.diag()

    # One copy each, all from the same Postfix queue file: one transaction.
    ids = set()
    for r in good:
        copies = t.pf.messages(r)
        assert len(copies) == 1, (r, len(copies))
        assert body_of(copies[0]) == body.replace(b"\r\n", b"\n")
        m = re.search(rb"with ESMTPS id (\w+)", copies[0])
        assert m, copies[0][:1500]
        ids.add(m.group(1))
    assert len(ids) == 1, ids
    pflog = t.pf_log(*good)
    assert len(re.findall(r"postfix/qmgr\[\d+\]: \w+: from=<demo@example"
                          r"\.test>, size=\d+, nrcpt=3 ", pflog)) == 1, \
        t.diag()
    s = delivery_session(pflog)
    cmds = [c for _, c in client_lines(s)]
    assert sum(c.upper().startswith("MAIL FROM:") for c in cmds) == 1, cmds
    rcpts = [c for c in cmds if c.upper().startswith("RCPT TO:")]
    assert [r[9:-1].lower() for r in rcpts] == \
        [g.lower() for g in good[:2] + [bad] + good[2:]], cmds
    assert re.search(r"reject: RCPT from \S+: 550 5\.1\.1 <nobody@interop"
                     r"\.test>: Recipient address rejected", pflog), t.diag()
    # The four RCPTs and DATA were on their way before the MAIL reply.
    (req,) = t.policy_requests("MAIL")
    ahead = sum(len(f"RCPT TO:<{r}>\r\n") for r in good + [bad]) + 6
    assert req["rx_queue"] is not None and req["rx_queue"] >= ahead, req

    # Tern: three sent, one failed, and a DSN for that one only to demo.
    log = t.d.logtext()
    for r in good:
        assert re.search(rf"event=deliver to=<{re.escape(r)}> .*status=sent",
                         log), t.diag()
    assert re.search(rf"event=deliver to=<{re.escape(bad)}> .*dsn=5\.1\.1 "
                     r"status=bounced", log), t.diag()
    report = dsn_of(t.d)
    assert report is not None, [p.read_bytes()[:2000]
                                for p in t.d.maildir("demo")]
    blocks = status_blocks(report)
    assert len(blocks) == 1, blocks
    (b,) = blocks
    assert b["Action"] == "failed", b
    assert re.fullmatch(r"5\.\d{1,3}\.\d{1,3}", b["Status"]), b
    assert b["Status"] == "5.1.1", b
    assert bad in b["Final-Recipient"], b
    assert "User unknown" in b.get("Diagnostic-Code", ""), b
    assert len(t.d.maildir("demo")) == 1


def test_size_and_8bitmime_parameters(interop):
    """RFC 1870 SIZE and RFC 6152 BODY=8BITMIME reach the peer's MAIL FROM,
    and an 8-bit body arrives byte for byte."""
    t = interop()
    body = ("Grüße aus Tern — 8-bit text, no MIME encoding.\r\n"
            "ÆØÅ æøå ß €\r\n").encode()
    msg = t.send(["someone@interop.test"], body, "eightbit",
                 mail_options=["BODY=8BITMIME"])
    assert wait_for(lambda: t.pf.messages("someone@interop.test"), 30), \
        t.diag()
    (raw,) = t.pf.messages("someone@interop.test")
    assert body_of(raw) == body.replace(b"\r\n", b"\n")
    assert t.queue_empty(), t.diag()
    s = delivery_session(t.pf_log("someone@interop.test"))
    (mail,) = [c for _, c in client_lines(s)
               if c.upper().startswith("MAIL FROM:")]
    assert re.search(r" BODY=8BITMIME(\s|$)", mail), mail
    m = re.search(r" SIZE=(\d+)(\s|$)", mail)
    (req,) = t.policy_requests("MAIL")
    assert m, (f"no SIZE parameter though the peer offers SIZE: {mail}; "
               f"Postfix's policy request has size={req.get('size')}")
    assert int(req["size"]) == int(m.group(1)), req
    # Our spool copy carries our Received: header too.
    assert len(msg) <= int(m.group(1)) <= len(msg) + 2000, (mail, len(msg))


def test_message_over_peer_size_limit_bounces_without_sending(interop):
    """The peer's EHLO SIZE limit is honoured: the message is not sent and
    the sender gets a DSN with 5.3.4."""
    t = interop("message_size_limit = 20000\n")
    t.send(["someone@interop.test"],
           b"".join(b"%070d\r\n" % i for i in range(400)), "big")
    assert t.d.wait_mail("demo", 1, 30), t.diag()
    assert t.queue_empty(), t.diag()
    report = dsn_of(t.d)
    assert report is not None
    (b,) = status_blocks(report)
    assert b["Action"] == "failed" and b["Status"] == "5.3.4", b
    assert t.pf.messages("someone@interop.test") == []
    # Refused before MAIL: no transaction was started at all.
    verbs = [verb(c) for sess in smtpd_sessions(t.pf.logtext())
             for _, c in client_lines(sess)]
    assert "MAIL" not in verbs and "DATA" not in verbs, verbs


def test_connection_reused_for_second_message(interop):
    """A second message soon after the first goes over the same TLS
    session (RSET, then a new transaction), and Tern ends it with QUIT."""
    t = interop()
    t.send(["someone@interop.test"], b"one\r\n", "one")
    assert wait_for(lambda: len(t.pf.messages("someone@interop.test")) == 1,
                    30), t.diag()
    t.send(["a1@interop.test"], b"two\r\n", "two")
    assert wait_for(lambda: t.pf.messages("a1@interop.test"), 30), t.diag()
    assert t.queue_empty(), t.diag()
    # Tern parks the connection for 10 s, then says QUIT.
    assert wait_for(lambda: re.search(r"disconnect from .* quit=1",
                                      t.pf.logtext()), 30), t.diag()
    sessions = [s for s in smtpd_sessions(t.pf.logtext())
                if any(c.upper().startswith("MAIL FROM:")
                       for _, c in client_lines(s))]
    assert len(sessions) == 1, sessions
    cmds = [verb(c) for _, c in client_lines(sessions[0])]
    assert cmds.count("MAIL") == 2 and cmds.count("STARTTLS") == 1, cmds
    assert cmds[-1] == "QUIT", cmds
    assert "lost connection" not in "\n".join(sessions[0]), sessions[0]


def test_no_pipelining_when_the_peer_does_not_offer_it(interop):
    """With PIPELINING not in Postfix's EHLO reply, Tern waits for each
    reply (RFC 2920 is an extension to negotiate): nothing is waiting on
    Postfix's socket while it decides on MAIL FROM.  This is also the
    control experiment for the measurement the pipelining tests use."""
    t = interop("smtpd_discard_ehlo_keywords = pipelining\n")
    rcpts = ["a1@interop.test", "a2@interop.test"]
    t.send(rcpts, b"step by step\r\n", "lockstep")
    assert wait_for(lambda: all(t.pf.messages(r) for r in rcpts), 30), \
        t.diag()
    assert t.queue_empty(), t.diag()
    s = delivery_session(t.pf_log(*rcpts))
    assert not any(m.startswith("> ") and "PIPELINING" in m for m in s), s
    (req,) = t.policy_requests("MAIL")
    assert req["encryption_protocol"].startswith("TLSv1."), req
    assert req["rx_queue"] == 0, req
    assert "improper command pipelining" not in t.pf.logtext(), t.diag()


def test_dsn_parameters_reach_postfix(interop):
    """Postfix offers DSN: RET and ENVID go with MAIL, NOTIFY and ORCPT
    with RCPT (RFC 3461), re-encoded as xtext."""
    t = interop()
    msg = (f"From: <{SENDER}>\r\nSubject: dsn\r\n\r\n").encode() + BODY[:200]
    with smtplib.SMTP("127.0.0.1", t.d.port, timeout=30) as s:
        s.ehlo()
        assert "dsn" in s.esmtp_features
        refused = s.sendmail(SENDER, ["someone@interop.test"], msg,
                             mail_options=["RET=HDRS", "ENVID=QQ+2B1"],
                             rcpt_options=["NOTIFY=FAILURE,DELAY",
                                           "ORCPT=rfc822;old+2Bx@example.test"])
    assert refused == {}, refused
    assert wait_for(lambda: t.pf.messages("someone@interop.test"), 30), \
        t.diag()
    assert t.queue_empty(), t.diag()
    s = delivery_session(t.pf_log("someone@interop.test"))
    (mail,) = [c for _, c in client_lines(s)
               if c.upper().startswith("MAIL FROM:")]
    (rcpt,) = [c for _, c in client_lines(s)
               if c.upper().startswith("RCPT TO:")]
    assert " RET=HDRS" in mail and " ENVID=QQ+2B1" in mail, mail
    assert " NOTIFY=FAILURE,DELAY" in rcpt, rcpt
    assert " ORCPT=rfc822;old+2Bx@example.test" in rcpt, rcpt
