"""The MX's check caches (auth/spfcache.c, auth/txtcache.c) change no
result: an SPF verdict, a DKIM key and a DMARC record are reused only
while every DNS answer they came from holds.  Records published with a
TTL of 0 change between two messages of the same client, sender and
HELO, and the second message gets the new record's verdict; a verdict
reached while DNS failed is not kept; a verdict from the cache is the
one the workers reached (same Received-SPF and Authentication-Results
entries)."""
import re

import pytest

from conftest import Daemon, SMTPConn, wait_for
from dnsserver import DNSServer
from test_dkim_verify import (delivered, dkim_entries, keys, our_ar, sign,
                              stuffed, txt)

pytestmark = pytest.mark.usefixtures("sanitizer_check")

DOM = "sender.test"


def zones():
    k = keys()
    return {
        DOM: {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
        "chg.test": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"], "TTL": 0},
        "flaky.test": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"],
                       "behaviour": "servfail"},
        "other.test": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
        f"rsa._domainkey.{DOM}": {"TXT": txt(
            f"v=DKIM1; k=rsa; p={k['rsa'][1]}")},
        f"chg._domainkey.{DOM}": {"TXT": txt(
            f"v=DKIM1; k=rsa; p={k['rsa'][1]}"), "TTL": 0},
        f"_dmarc.{DOM}": {"TXT": ["v=DMARC1; p=none"], "TTL": 0},
    }


@pytest.fixture
def mx(tmpbase):
    d = Daemon(tmpbase, extra="spf yes\ndkim-verify yes\ndmarc enforce\n"
               "spf-timeout 20s")
    dns = DNSServer(zones(), port=d.dns_port)
    dns.start()
    d.dns = dns
    d.start()
    yield d
    d.stop()
    dns.stop()


def transaction(d, sender, msg=None, helo="client.test"):
    """(RCPT reply, end-of-data reply or None)."""
    msg = msg or (b"From: <a@" + sender.split("@")[1].encode() +
                  b">\r\nSubject: t\r\n\r\nbody\r\n")
    with SMTPConn(d.port) as c:
        c.cmd("EHLO " + helo)
        assert c.cmd(f"MAIL FROM:<{sender}>")[0] == 250
        r = c.cmd("RCPT TO:<demo@example.test>")
        end = None
        if r[0] == 250:
            assert c.cmd("DATA")[0] == 354
            c.sock.sendall(stuffed(msg) + b".\r\n")
            end = c.reply()
        c.cmd("QUIT")
    return r, end


def spf_lines(d, dom):
    return re.findall(r"event=spf result=(\w+) identity=mailfrom "
                      r"domain=<" + re.escape(dom) + ">", d.logtext())


def test_spf_verdict_follows_a_record_changed(mx):
    r, _ = transaction(mx, "a@chg.test")
    assert r[0] == 250
    mx.dns.set_records("chg.test", "TXT", ["v=spf1 ip4:192.0.2.1 -all"])
    r, _ = transaction(mx, "a@chg.test")
    assert r[0] == 550 and "5.7.23" in r[1], r
    assert wait_for(lambda: spf_lines(mx, "chg.test") == ["pass", "fail"])


def test_spf_temperror_not_kept(mx):
    r, _ = transaction(mx, "a@flaky.test")
    assert r[0] == 451 and "4.7.24" in r[1], r
    mx.dns.set_behaviour("flaky.test", None)
    # the resolver may keep the failure a few seconds; our cache none
    assert wait_for(lambda: transaction(mx, "a@flaky.test")[0][0] == 250,
                    timeout=30)


def test_spf_cached_verdict_is_the_same(mx):
    got = []
    for n in (1, 2, 3):
        r, end = transaction(mx, "a@other.test")
        assert r[0] == 250 and end[0] == 250, (r, end)
        got.append(delivered(mx, n))
    spf = [re.search(rb"\nReceived-SPF: [^\r]*(\r\n[ \t][^\r]*)*", m)
           .group(0) for m in got]
    assert spf[0] == spf[1] == spf[2]
    ars = [re.search(r"spf=\S+ smtp\.mailfrom=[^;\s]+", our_ar(m)).group(0)
           for m in got]
    assert ars[0] == ars[1] == ars[2] == "spf=pass smtp.mailfrom=a@other.test"
    assert wait_for(lambda: spf_lines(mx, "other.test") == ["pass"] * 3)


def test_dkim_key_changed_and_revoked(mx):
    body = (b"From: Anna <anna@sender.test>\r\nTo: demo@example.test\r\n"
            b"Subject: key\r\n\r\nHello\r\n")
    msg = sign(body, "chg") + body
    k = keys()
    results = []
    for n, rec in enumerate([None, f"v=DKIM1; k=rsa; p={k['other'][1]}",
                             "v=DKIM1; k=rsa; p=",
                             f"v=DKIM1; k=rsa; p={k['rsa'][1]}"], 1):
        if rec is not None:
            mx.dns.set_records(f"chg._domainkey.{DOM}", "TXT", txt(rec))
        r, end = transaction(mx, "anna@sender.test", msg)
        assert r[0] == 250 and end[0] == 250, (r, end)
        (e,) = dkim_entries(our_ar(delivered(mx, n)))
        results.append((e[0], e[1]))
    assert results == [("pass", ""), ("fail", "signature did not verify"),
                       ("fail", "key revoked"), ("pass", "")], results


def test_dkim_cached_key_passes_again(mx):
    body = (b"From: Anna <anna@sender.test>\r\nTo: demo@example.test\r\n"
            b"Subject: again\r\n\r\nHello\r\n")
    msg = sign(body, "rsa") + body
    for n in (1, 2, 3):
        r, end = transaction(mx, "anna@sender.test", msg)
        assert end[0] == 250, end
        (e,) = dkim_entries(our_ar(delivered(mx, n)))
        assert e[0] == "pass", e


def test_dmarc_record_changed(mx):
    # From: sender.test, SPF passes for other.test (not aligned), no
    # signature: DMARC fails, and the published policy decides.
    msg = b"From: <a@sender.test>\r\nSubject: d\r\n\r\nbody\r\n"
    r, end = transaction(mx, "a@other.test", msg)
    assert end[0] == 250, end
    mx.dns.set_records(f"_dmarc.{DOM}", "TXT", ["v=DMARC1; p=reject"])
    r, end = transaction(mx, "a@other.test", msg)
    assert end[0] == 550 and "DMARC" in end[1], end
    mx.dns.set_records(f"_dmarc.{DOM}", "TXT", ["v=DMARC1; p=none"])
    r, end = transaction(mx, "a@other.test", msg)
    assert end[0] == 250, end
