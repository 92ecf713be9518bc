"""SPF at MAIL FROM on the MX, against the real daemon and a loopback DNS
(RFC 7208; policy: fail 550 5.7.23 at RCPT, temperror 451 4.7.24, the rest
accepted with a Received-SPF header)."""
import socket

import pytest

from conftest import Daemon, SMTPConn, wait_for
from dnsserver import DNSServer

ZONES = {
    "pass.test": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
    "fail.test": {"TXT": ["v=spf1 ip4:192.0.2.1 -all"]},
    "exp.test": {"TXT": ["v=spf1 -all exp=why.exp.test"]},
    "why.exp.test": {"TXT": ["Mail from %{d} \x01is\r\nnot welcome"]},
    "soft.test": {"TXT": ["v=spf1 ~all"]},
    "none.test": {"A": ["192.0.2.9"]},
    "broken.test": {"TXT": ["v=spf1 ip4:1.2.3.4 -all moo"]},
    "servfail.test": {"behaviour": "servfail"},
    "slow.test": {"behaviour": "drop"},
    "helo.test": {"TXT": ["v=spf1 -all"]},
    "xn--bcher-kva.test": {"TXT": ["v=spf1 -all"]},
}


@pytest.fixture
def spfd(tmpbase):
    d = Daemon(tmpbase, extra="spf yes\nspf-timeout 3s")
    dns = DNSServer(ZONES, port=d.dns_port)
    dns.start()
    d.dns = dns
    d.start()
    yield d
    d.stop()
    dns.stop()


def transaction(d, sender, rcpt="demo@example.test", helo="client.test"):
    with SMTPConn(d.port) as c:
        c.cmd("EHLO " + helo)
        mail = c.cmd(f"MAIL FROM:<{sender}>")
        if mail[0] != 250:
            return mail, None
        r = c.cmd(f"RCPT TO:<{rcpt}>")
        if r[0] == 250:
            assert c.cmd("DATA")[0] == 354
            c.send("Subject: t\r\n\r\nbody\r\n.\r\n")
            assert c.reply()[0] == 250
        c.cmd("QUIT")
        return mail, r


def test_pass_delivered_with_header(spfd):
    _, r = transaction(spfd, "a@pass.test")
    assert r[0] == 250
    assert spfd.wait_mail("demo")
    msg = spfd.maildir("demo")[0].read_bytes()
    assert (b"\nReceived-SPF: pass (mx.example.test: domain of "
            b"pass.test designates 127.0.0.1") in msg
    assert b"identity=mailfrom;" in msg
    assert wait_for(lambda: "event=spf result=pass identity=mailfrom "
                    "domain=<pass.test>" in spfd.logtext())


def test_fail_refused_at_rcpt(spfd):
    _, r = transaction(spfd, "a@fail.test")
    assert r[0] == 550 and "5.7.23" in r[1]
    assert "fail.test does not designate 127.0.0.1" in r[1]
    assert "event=spf result=fail" in spfd.logtext()


def test_fail_explanation_sanitised(spfd):
    _, r = transaction(spfd, "a@exp.test")
    assert r[0] == 550 and "5.7.23" in r[1]
    assert "\n" not in r[1] and "\x01" not in r[1]
    assert "exp.test" in r[1]


def test_softfail_none_permerror_accepted_and_recorded(spfd):
    for n, (dom, res) in enumerate([("soft.test", "softfail"),
                                    ("none.test", "none"),
                                    ("broken.test", "permerror")], 1):
        _, r = transaction(spfd, "a@" + dom)
        assert r[0] == 250, (dom, r)
        assert spfd.wait_mail("demo", n)
        msgs = [m.read_bytes() for m in spfd.maildir("demo")]
        assert any(b"\nReceived-SPF: " + res.encode() + b" " in m
                   for m in msgs), msgs


def test_temperror_servfail(spfd):
    _, r = transaction(spfd, "a@servfail.test")
    assert r[0] == 451 and "4.7.24" in r[1]


def test_u_label_sender_domain_checked_as_a_labels(spfd):
    """A MAIL FROM domain written with U-labels (SMTPUTF8) is the same
    domain as its A-labels: its SPF record is looked up there (RFC 8616
    4), so writing the domain in Unicode does not escape its -all."""
    with SMTPConn(spfd.port) as c:
        c.cmd("EHLO client.test")
        assert c.cmd("MAIL FROM:<a@b\u00fccher.test> SMTPUTF8")[0] == 250
        r = c.cmd("RCPT TO:<demo@example.test>")
        c.cmd("QUIT")
    assert r[0] == 550 and "5.7.23" in r[1], r
    assert spfd.dns.queries("xn--bcher-kva.test", "TXT")


def test_null_sender_checks_helo(spfd):
    _, r = transaction(spfd, "", helo="helo.test")
    assert r[0] == 550 and "5.7.23" in r[1]
    assert "identity=helo domain=<helo.test>" in spfd.logtext()


def test_null_sender_helo_with_trailing_blanks(spfd):
    """Blanks after the HELO name are not part of the name: a bounce from
    a HELO name whose record says -all is refused with or without them."""
    _, r = transaction(spfd, "", helo="helo.test  ")
    assert r[0] == 550 and "5.7.23" in r[1], r
    assert "identity=helo domain=<helo.test>" in spfd.logtext()


def test_address_literal_identity_is_none_without_dns(spfd):
    """An address literal is not a domain (RFC 7208 4.3): a bounce from a
    client that says HELO [IP], or a sender at an address literal, gets
    none at once, and no question about "[...]" goes to the resolver."""
    for sender, helo in (("", "[127.0.0.1]"), ("a@[127.0.0.1]", "c.test")):
        _, r = transaction(spfd, sender, helo=helo)
        assert r[0] == 250, (sender, helo, r)
    assert not [q for q in spfd.dns.log if q[0].startswith("[")]
    assert "event=spf result=none" in spfd.logtext()


def test_srs_bounce_skips_spf(spfd):
    # A bounce to an SRS address of ours is judged by the vault, not SPF.
    with SMTPConn(spfd.port) as c:
        c.cmd("EHLO helo.test")
        assert c.cmd("MAIL FROM:<>")[0] == 250
        r = c.cmd("RCPT TO:<SRS0=xxxx=AB=example.org=u@example.test>")
        assert not (r[0] == 550 and "5.7.23" in r[1]), r


def test_slow_dns_does_not_delay_other_sessions(spfd):
    """One session waits on a DNS server that never answers; another
    session's whole transaction completes meanwhile."""
    slow = SMTPConn(spfd.port)
    slow.cmd("EHLO client.test")
    slow.send("MAIL FROM:<a@slow.test>\r\n")
    # The slow lookup has reached the DNS server before the other starts.
    assert wait_for(lambda: spfd.dns.queries("slow.test"), 10)
    _, r = transaction(spfd, "a@pass.test")
    assert r[0] == 250
    # ...and the slow one is still waiting for its MAIL reply.
    slow.sock.settimeout(0.01)
    with pytest.raises(socket.timeout):
        slow.sock.recv(1)
    slow.sock.settimeout(20)
    code, text = slow.reply()           # the spf-timeout ends the wait
    assert code == 250
    r = slow.cmd("RCPT TO:<demo@example.test>")
    assert r[0] == 451 and "4.7.24" in r[1]
    slow.close()


def test_trusted_network_skips(tmpbase):
    d = Daemon(tmpbase, extra="spf yes\ntrusted-network 127.0.0.0/8")
    with DNSServer(ZONES, port=d.dns_port) as dns:
        d.start()
        try:
            _, r = transaction(d, "a@fail.test")
            assert r[0] == 250
            assert not dns.queries("fail.test")
        finally:
            d.stop()


def test_knob_off(tmpbase):
    d = Daemon(tmpbase, extra="")      # conftest: spf no
    with DNSServer(ZONES, port=d.dns_port) as dns:
        d.start()
        try:
            _, r = transaction(d, "a@fail.test")
            assert r[0] == 250
            assert not dns.queries("fail.test")
        finally:
            d.stop()


def test_ternctl_check(tmpbase):
    d = Daemon(tmpbase, extra="spf yes")
    with DNSServer(ZONES, port=d.dns_port):
        def check(ip, helo, sender):
            r = d.ctl("check", "--client-ip", ip, "--helo", helo,
                      "--mail-from", sender, input="Subject: x\n\nbody\n")
            assert r.returncode == 0, r.stderr
            return r.stdout.splitlines()
        out = check("192.0.2.1", "mail.fail.test", "a@fail.test")
        assert out[0].startswith("Received-SPF: pass (mx.example.test: ")
        assert "Authentication-Results: mx.example.test;" in out
        assert "\tspf=pass smtp.mailfrom=a@fail.test;" in out
        assert "\tdkim=none" in out        # an unsigned message
        assert out[-1] == 'action=accept reason="spf ok"'
        out = check("192.0.2.2", "mail.fail.test", "a@fail.test")
        assert out[-1].startswith('action=reject reason="550 5.7.23 SPF: ')
        out = check("192.0.2.2", "helo.test", "<>")
        assert "\tspf=fail smtp.helo=helo.test;" in out
        assert out[-1].startswith('action=reject')
        out = check("::ffff:192.0.2.1", "x.test", "a@fail.test")
        assert out[-1] == 'action=accept reason="spf ok"'
        out = check("192.0.2.1", "x.test", "a@servfail.test")
        assert out[-1].startswith('action=tempfail reason="451 4.7.24 ')


def test_slow_sessions_do_not_starve_spf_workers(tmpbase):
    """Several sessions whose MAIL FROM domains sit behind a nameserver
    that never answers (more of them than the pipeline starts workers
    with) must not hold back another client's check: its verdict is pass,
    not the temperror its own spf-timeout would give it.  Each slow
    session then starts a second transaction (RSET, MAIL again), which must
    not pile more stuck work on the workers either."""
    zones = dict(ZONES)
    nslow = 6
    for i in range(nslow):
        zones[f"s{i}.drop.test"] = {"behaviour": "drop"}
        zones[f"t{i}.drop.test"] = {"behaviour": "drop"}
    d = Daemon(tmpbase, extra="spf yes\nspf-timeout 4s")
    with DNSServer(zones, port=d.dns_port) as dns:
        d.start()
        slow = []
        try:
            for i in range(nslow):
                c = SMTPConn(d.port)
                c.cmd("EHLO client.test")
                c.send(f"MAIL FROM:<a@s{i}.drop.test>\r\n")
                slow.append(c)
            # Every slow check has reached the DNS server: all of them
            # are being evaluated before the normal client asks.
            assert wait_for(lambda: all(
                dns.queries(f"s{i}.drop.test") for i in range(nslow)), 10)
            _, r = transaction(d, "a@pass.test")
            assert r[0] == 250, r
            assert "domain=<pass.test> client=[127.0.0.1] " \
                "reason=\"timed out\"" not in d.logtext()
            # The slow ones end with their own temperror, then try again.
            for i, c in enumerate(slow):
                c.sock.settimeout(30)
                assert c.reply()[0] == 250
                assert c.cmd("RSET")[0] == 250
                c.send(f"MAIL FROM:<a@t{i}.drop.test>\r\n")
            assert wait_for(lambda: all(
                dns.queries(f"t{i}.drop.test") for i in range(nslow)), 10)
            _, r = transaction(d, "b@pass.test")
            assert r[0] == 250, r
        finally:
            for c in slow:
                c.close()
            d.stop()
