"""Remote delivery against real peers: MX hosts are aiosmtpd servers on
127.0.0.x addresses, found through a real DNS server on loopback."""
import email
import email.policy
import os
import re
import smtplib
import ssl
import subprocess
import time

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from conftest import TERND, free_port, wait_for
from dnsserver import DNSServer

RELAY = "trusted-network 127.0.0.0/8\nretry-min 1s\nretry-max 2s\n"


class Sink:
    """An MX host: records what it accepts; replies can be scripted."""

    def __init__(self):
        self.messages = []          # (mail_from, [rcpts], bytes)
        self.ehlos = 0
        self.rcpt_reply = {}        # address -> reply string
        self.data_reply = None
        self.auth = []

    async def handle_EHLO(self, server, session, envelope, hostname,
                          responses):
        self.ehlos += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server, session, envelope, address, options):
        reply = self.rcpt_reply.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_reply:
            return self.data_reply
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                              envelope.original_content))
        return "250 2.0.0 accepted"


class MX:
    def __init__(self, host, port, **kw):
        self.sink = Sink()
        self.ctl = Controller(self.sink, hostname=host, port=port,
                              ready_timeout=10, **kw)

    def __enter__(self):
        self.ctl.start()
        return self.sink

    def __exit__(self, *a):
        self.ctl.stop()


ZONES = {
    "remote.test.": {"MX": [(10, "mx1.remote.test."),
                            (20, "mx2.remote.test.")]},
    "mx1.remote.test.": {"A": ["127.0.0.2"]},
    "mx2.remote.test.": {"A": ["127.0.0.3"]},
    "sender.test.": {"MX": [(10, "mx.sender.test.")]},
    "mx.sender.test.": {"A": ["127.0.0.5"]},
    "nullmx.test.": {"MX": [(0, ".")]},
    "exists.test.": {"A": ["127.0.0.6"]},
    "nxd.test.": {"A": ["127.0.0.9"]},     # its subdomains do not exist
}


@pytest.fixture
def remote(make_daemon):
    """(daemon factory, port) with DNS up; MX servers are up to the test."""
    port = free_port()
    servers = []

    def make(extra=""):
        d = make_daemon(RELAY + f"remote-port {port}\n" + extra)
        dns = DNSServer(ZONES, port=d.dns_port).start()
        servers.append(dns)
        d.dns = dns
        return d.start()
    yield make, port
    for s in servers:
        s.stop()


def send(d, rcpts, subject="t", sender="someone@sender.test", body=b"x"):
    msg = f"Subject: {subject}\r\nFrom: <{sender}>\r\n\r\n".encode() + body
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
        s.sendmail(sender, rcpts, msg + b"\r\n")


def empty(d):
    return "Mail queue is empty" in d.ctl("queue").stdout


def dsn_of(d, user="demo"):
    """The multipart/report in user's Maildir, parsed, or None."""
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


def test_relays_to_first_mx_in_one_transaction(remote):
    make, port = remote
    with MX("127.0.0.2", port) as mx1:
        d = make()
        send(d, ["a@remote.test", "b@remote.test"], "grouped",
             body=b"line\r\n.leading dot\r\n")
        assert wait_for(lambda: len(mx1.messages) == 1, 20), d.logtext()
        assert wait_for(lambda: empty(d), 10)
    frm, rcpts, data = mx1.messages[0]
    assert frm == "someone@sender.test"
    assert sorted(rcpts) == ["a@remote.test", "b@remote.test"]
    assert b"Subject: grouped" in data and b"\r\n.leading dot\r\n" in data
    assert b"by mx.example.test (Tern)" in data
    log = d.logtext()
    assert re.search(r"to=<a@remote.test>.*relay=mx1.remote.test\[127.0.0.2\]"
                     r".*status=sent", log), log
    assert ("remote.test", "MX", "udp") in d.dns.log


def test_falls_over_to_second_mx(remote):
    make, port = remote
    with MX("127.0.0.3", port) as mx2:      # nothing listens on mx1
        d = make()
        send(d, ["c@remote.test"], "fallover")
        assert wait_for(lambda: len(mx2.messages) == 1, 20), d.logtext()
    # The sink records the message before it replies; the queue logs the
    # outcome only after the reply reached it.
    assert wait_for(lambda: "relay=mx2.remote.test[127.0.0.3]" in
                    d.logtext(), 10), d.logtext()
    # Why the first host failed, with the system's reason.
    assert re.search(r"cannot connect with mx1\.remote\.test\[127\.0\.0\.2\]"
                     r":\d+ while in connect: Connection refused",
                     d.logtext()), d.logtext()


def test_4xx_is_retried_then_delivered(remote):
    make, port = remote
    with MX("127.0.0.2", port) as mx1, MX("127.0.0.3", port) as mx2:
        mx1.rcpt_reply["later@remote.test"] = "451 4.7.1 greylisted"
        mx2.rcpt_reply["later@remote.test"] = "451 4.7.1 greylisted"
        d = make()
        send(d, ["later@remote.test"], "retry")

        def deferred():
            return "4.7.1 greylisted" in d.ctl("queue").stdout
        assert wait_for(deferred, 20), d.logtext()
        qid = re.search(r"^([0-9A-F]{16})", d.ctl("queue").stdout, re.M)[1]
        show = d.ctl("show", qid).stdout
        assert "status: pending" in show and "next try:" in show
        del mx1.rcpt_reply["later@remote.test"]
        assert wait_for(lambda: len(mx1.messages) == 1, 20), d.logtext()
        assert wait_for(lambda: empty(d), 10)
    assert "status=deferred" in d.logtext()


def test_restart_in_the_middle_of_retries(remote):
    make, port = remote
    with MX("127.0.0.2", port) as mx1, MX("127.0.0.3", port) as mx2:
        for mx in (mx1, mx2):
            mx.rcpt_reply["r@remote.test"] = "421 4.3.2 busy"
        d = make()
        send(d, ["r@remote.test"], "restart")
        assert wait_for(lambda: "4.3.2 busy" in d.ctl("queue").stdout, 20)
        d.stop()
        d.start()
        assert "r@remote.test" in d.ctl("queue").stdout
        del mx1.rcpt_reply["r@remote.test"]
        d.ctl("flush")
        assert wait_for(lambda: len(mx1.messages) == 1, 20), d.logtext()
        assert wait_for(lambda: empty(d), 10)


def test_5xx_bounces_with_rfc3464_dsn(remote):
    make, port = remote
    with MX("127.0.0.2", port) as mx1:
        mx1.rcpt_reply["nobody@remote.test"] = "550 5.1.1 no such user here"
        d = make()
        send(d, ["nobody@remote.test", "fine@remote.test"], "bounceme",
             sender="demo@example.test")
        assert wait_for(lambda: dsn_of(d) is not None, 20), d.logtext()
        assert wait_for(lambda: len(mx1.messages) == 1, 10)
        assert wait_for(lambda: empty(d), 10), d.ctl("queue").stdout
    assert mx1.messages[0][1] == ["fine@remote.test"]
    r = dsn_of(d)
    assert r.get_param("report-type") == "delivery-status"
    raw = d.maildir("demo")[0].read_bytes()
    assert b"Return-Path: <>" in raw            # sent from the null sender
    blocks = status_blocks(r)
    assert len(blocks) == 1
    b = blocks[0]
    assert "nobody@remote.test" in b["Final-Recipient"]
    assert b["Action"] == "failed" and b["Status"] == "5.1.1"
    assert "550 5.1.1 no such user here" in b["Diagnostic-Code"]
    assert "mx1.remote.test" in b["Remote-MTA"]
    assert "Subject: bounceme" in r.as_string()   # original headers


def test_null_mx_bounces_at_once(remote):
    make, port = remote
    d = make()
    send(d, ["x@nullmx.test"], "nullmx", sender="demo@example.test")
    assert wait_for(lambda: dsn_of(d) is not None, 20), d.logtext()
    b = status_blocks(dsn_of(d))[0]
    assert b["Status"] == "5.1.10" and b["Action"] == "failed"
    assert wait_for(lambda: empty(d), 10)


def test_nonexistent_domain_bounces(remote):
    make, port = remote
    d = make()
    send(d, ["x@missing.nxd.test"], "nx", sender="demo@example.test")
    assert wait_for(lambda: dsn_of(d) is not None, 20), d.logtext()
    assert status_blocks(dsn_of(d))[0]["Status"] == "5.1.2"


def test_no_bounce_to_null_sender_goes_to_postmaster(remote):
    make, port = remote
    d = make()
    d.write_aliases("postmaster: alice\n")
    send(d, ["x@nullmx.test"], "double", sender="")
    assert wait_for(lambda: dsn_of(d, "alice") is not None, 20), d.logtext()
    assert wait_for(lambda: empty(d), 10)


def test_domain_without_mx_uses_its_address(remote):
    make, port = remote
    with MX("127.0.0.6", port) as host:
        d = make()
        send(d, ["x@exists.test"], "implicit")
        assert wait_for(lambda: len(host.messages) == 1, 20), d.logtext()


def test_connection_reused_for_next_message(remote):
    make, port = remote
    with MX("127.0.0.2", port) as mx1:
        d = make("max-domain-connections 1\n")
        for i in range(3):
            send(d, [f"u{i}@remote.test"], f"reuse{i}")
        assert wait_for(lambda: len(mx1.messages) == 3, 30), d.logtext()
    assert mx1.ehlos == 1, mx1.ehlos


def make_ca(tmp, name):
    def run(*a):
        subprocess.run(a, check=True, capture_output=True, cwd=tmp)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
        "2", "-subj", "/CN=Tern test CA", "-keyout", "ca.key", "-out",
        "ca.pem")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj",
        f"/CN={name}", "-keyout", "leaf.key", "-out", "leaf.csr")
    (tmp / "ext").write_text(f"subjectAltName=DNS:{name}\n")
    run("openssl", "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem",
        "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile",
        "ext", "-out", "leaf.pem")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp / "leaf.pem", tmp / "leaf.key")
    return ctx


def test_starttls_with_verified_certificate(remote, tmpbase):
    make, port = remote
    ctx = make_ca(tmpbase, "mx1.remote.test")
    with MX("127.0.0.2", port, tls_context=ctx) as mx1:
        d = make(f'tls-verify yes\nca-file "{tmpbase}/ca.pem"\n')
        send(d, ["t@remote.test"], "tls")
        assert wait_for(lambda: len(mx1.messages) == 1, 20), d.logtext()
    assert re.search(r"event=tls relay=mx1.remote.test\[127.0.0.2\]:\d+ "
                     r"protocol=TLSv1\.[23] .*verified=yes", d.logtext())

def test_starttls_verified_through_hashed_ca_path(remote, tmpbase):
    # The default trust store is a c_rehash directory, read on demand; a
    # CA found there by subject hash verifies, and without it nothing does.
    make, port = remote
    ctx = make_ca(tmpbase, "mx1.remote.test")
    cadir = tmpbase / "cadir"
    cadir.mkdir()
    h = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in",
                        str(tmpbase / "ca.pem")], check=True,
                       capture_output=True, text=True).stdout.strip()
    (cadir / f"{h}.0").write_bytes((tmpbase / "ca.pem").read_bytes())
    with MX("127.0.0.2", port, tls_context=ctx) as mx1:
        d = make(f'tls-verify yes\nca-path "{cadir}"\n')
        shown = subprocess.run([str(TERND), "-P", "-f", str(d.conf)],
                               capture_output=True, text=True).stdout
        assert "ca-file is not set" in shown and str(cadir) in shown
        send(d, ["t@remote.test"], "tls-path")
        assert wait_for(lambda: len(mx1.messages) == 1, 20), d.logtext()
    assert re.search(r"event=tls relay=mx1.remote.test\[127.0.0.2\]:\d+ "
                     r"protocol=TLSv1\.[23] .*verified=yes", d.logtext())



def test_unverifiable_certificate_defers_when_verifying(remote, tmpbase):
    make, port = remote
    other = tmpbase / "other"
    other.mkdir()
    make_ca(other, "unused.test")             # a CA that signed nothing
    ctx = make_ca(tmpbase, "mx1.remote.test")
    with MX("127.0.0.2", port, tls_context=ctx) as mx1:
        d = make(f'tls-verify yes\nca-file "{other}/ca.pem"\n')
        send(d, ["t@remote.test"], "tls-bad")
        assert wait_for(lambda: "t@remote.test" in d.ctl("queue").stdout
                        and "status=deferred" in d.logtext(), 20)
        time.sleep(1)
        assert mx1.messages == []


def test_smarthost_with_auth(remote, tmpbase):
    make, port = remote
    ctx = make_ca(tmpbase, "smart.relay.test")
    secret = tmpbase / "relay.secret"
    secret.write_text("alice:s3cret pass\n")
    os.chmod(secret, 0o600)

    def check(server, session, envelope, mechanism, auth_data):
        ok = (auth_data.login, auth_data.password) == (b"alice",
                                                       b"s3cret pass")
        sink.auth.append((mechanism, auth_data.login))
        return AuthResult(success=ok)
    mx = MX("127.0.0.4", port, tls_context=ctx, require_starttls=True,
            auth_required=True, authenticator=check)
    sink = mx.sink
    with mx:
        d = make(f'route * via 127.0.0.4 port {port} tls required auth '
                 f'"{secret}"\n')
        send(d, ["anyone@remote.test"], "smarthost")
        assert wait_for(lambda: len(sink.messages) == 1, 20), d.logtext()
    assert sink.auth and sink.auth[0][1] == b"alice"
    assert "relay=127.0.0.4[127.0.0.4]" in d.logtext()
    assert ("remote.test", "MX", "udp") not in d.dns.log


def test_srs_forward_and_bounce_back(remote):
    make, port = remote
    with MX("127.0.0.2", port) as mx1, MX("127.0.0.5", port) as orig:
        d = make()
        d.write_aliases("postmaster: alice\nfwd: friend@remote.test\n")
        send(d, ["fwd@example.test"], "forwarded", sender="x@sender.test")
        assert wait_for(lambda: len(mx1.messages) == 1, 20), d.logtext()
        srs = mx1.messages[0][0]
        assert re.match(r"SRS0=[^=]{4}=[A-Z2-7]{2}=sender\.test=x@"
                        r"example\.test$", srs, re.I), srs
        assert mx1.messages[0][1] == ["friend@remote.test"]
        # The remote end bounces to the SRS address; it must come back to
        # the original sender.
        with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
            s.sendmail("", [srs], b"Subject: bounce\r\n\r\nsorry\r\n")
        assert wait_for(lambda: len(orig.messages) == 1, 20), d.logtext()
        assert orig.messages[0][1] == ["x@sender.test"]
        # A forged SRS address is refused at RCPT.
        bad = "SRS0=AAAA=" + srs.split("=", 2)[2]
        with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
            s.ehlo("x")
            s.mail("")
            code, _ = s.rcpt(bad)
            assert code == 550


def test_delay_warning(remote):
    make, port = remote
    with MX("127.0.0.2", port) as mx1, MX("127.0.0.3", port) as mx2:
        for mx in (mx1, mx2):
            mx.rcpt_reply["slow@remote.test"] = "450 4.2.0 mailbox busy"
        d = make("delay-warning 2s\n")
        send(d, ["slow@remote.test"], "slowly", sender="demo@example.test")
        assert wait_for(lambda: dsn_of(d) is not None, 30), d.logtext()
        b = status_blocks(dsn_of(d))[0]
        assert b["Action"] == "delayed" and b["Status"].startswith("4.")
        assert "slow@remote.test" in d.ctl("queue").stdout   # still queued
        time.sleep(2)
        assert len(d.maildir("demo")) == 1                   # only one notice


def test_hold_release_and_summary(remote):
    make, port = remote
    with MX("127.0.0.2", port) as mx1:
        mx1.data_reply = "451 4.3.0 not now"
        d = make()
        send(d, ["h@remote.test"], "hold")
        assert wait_for(lambda: "4.3.0 not now" in d.ctl("queue").stdout, 20)
        qid = re.search(r"^([0-9A-F]{16})", d.ctl("queue").stdout, re.M)[1]
        assert d.ctl("hold", qid).returncode == 0
        assert "held: by the admin" in d.ctl("show", qid).stdout
        summary = d.ctl("summary").stdout
        assert re.search(r"remote\.test\s+1\s+1", summary), summary
        # With retries every 1-2 s an attempt may have been under way when
        # the hold came; let it end (refused, 451) before the sink starts
        # accepting: no transaction in flight for the domain (conns 0).
        assert wait_for(lambda: re.search(
            r"(?m)^remote\.test\s+1\s+1\s+\d+m\s+0\s",
            d.ctl("summary").stdout), 20), d.ctl("summary").stdout
        mx1.data_reply = None
        d.ctl("flush")
        time.sleep(2)
        assert mx1.messages == []               # held: not tried
        assert d.ctl("release", qid).returncode == 0
        assert wait_for(lambda: len(mx1.messages) == 1, 20), d.logtext()
        assert wait_for(lambda: empty(d), 10)


def test_flush_one_domain(remote):
    make, port = remote
    d = make()
    send(d, ["a@remote.test"], "f1")
    assert wait_for(lambda: "a@remote.test" in d.ctl("queue").stdout, 10)
    r = d.ctl("flush", "remote.test")
    assert r.returncode == 0 and "remote.test" in r.stdout
    assert d.ctl("flush", "bad..domain").returncode == 1


def test_dot_forward_to_remote_uses_srs(remote):
    import pwd
    name = f"tr{os.getpid() % 100000}"
    subprocess.run(["userdel", "-r", name], capture_output=True)
    subprocess.run(["useradd", "-m", "-s", "/usr/sbin/nologin", name],
                   check=True, capture_output=True)
    try:
        pw = pwd.getpwnam(name)
        fwd = os.path.join(pw.pw_dir, ".forward")
        with open(fwd, "w") as f:
            f.write("away@remote.test\n")
        os.chown(fwd, pw.pw_uid, pw.pw_gid)
        os.chmod(fwd, 0o644)
        make, port = remote
        with MX("127.0.0.2", port) as mx1:
            d = make()
            send(d, [f"{name}@localhost"], "dotfwd", sender="x@sender.test")
            assert wait_for(lambda: len(mx1.messages) == 1, 20), d.logtext()
        frm, rcpts, _ = mx1.messages[0]
        assert rcpts == ["away@remote.test"]
        assert re.match(r"SRS0=[^=]{4}=[A-Z2-7]{2}=sender\.test=x@", frm,
                        re.I), frm
    finally:
        subprocess.run(["userdel", "-r", name], capture_output=True)
