"""DKIM verification on the MX (RFC 6376, RFC 8463, RFC 8301) and the
Authentication-Results field (RFC 8601), against the real daemon and a
loopback DNS server publishing the keys.  Messages are signed by dkimpy
(python3-dkim), an independent implementation: RSA and Ed25519, every
canonicalization, l=; then the negatives (tampered body or header,
expired x=, the wrong key, a revoked key, a 512-bit key, rsa-sha1, h=
without From).  Forged Authentication-Results fields claiming our
authserv-id are removed; a slow key lookup for one session does not hold
up another's message."""
import base64
import re
import select
import socket
import subprocess
import time

import dkim
import nacl.encoding
import nacl.signing
import pytest

from conftest import Daemon, SMTPConn, wait_for
from dnsserver import DNSServer

pytestmark = pytest.mark.usefixtures("sanitizer_check")

DOM = "sender.test"
AUTHSERV = "mx.example.test"


def rsa_key(bits):
    """(PEM private key, p= value) of a new RSA key."""
    pem = subprocess.run(["openssl", "genpkey", "-algorithm", "RSA",
                          "-pkeyopt", f"rsa_keygen_bits:{bits}"],
                         check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubout", "-outform", "DER"],
                         input=pem, check=True, capture_output=True).stdout
    return pem, base64.b64encode(der).decode()


def ed_key():
    sk = nacl.signing.SigningKey.generate()
    return (base64.b64encode(bytes(sk)),
            base64.b64encode(bytes(sk.verify_key)).decode())


KEYS = {}


def keys():
    """Made once per run: generating RSA keys costs."""
    if not KEYS:
        KEYS["rsa"] = rsa_key(2048)
        KEYS["rsa1024"] = rsa_key(1024)
        KEYS["other"] = rsa_key(2048)
        KEYS["short"] = rsa_key(512)
        KEYS["ed"] = ed_key()
    return KEYS


def txt(s):
    """One TXT record, in character-strings of at most 255 octets."""
    return [[s[i:i + 250] for i in range(0, len(s), 250)]]


def zones():
    k = keys()
    z = {
        DOM: {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
        f"rsa._domainkey.{DOM}": {"TXT": txt(f"v=DKIM1; k=rsa; p={k['rsa'][1]}")},
        f"r1024._domainkey.{DOM}": {"TXT": txt(f"v=DKIM1; p={k['rsa1024'][1]}")},
        f"ed._domainkey.{DOM}": {"TXT": txt(f"v=DKIM1; k=ed25519; p={k['ed'][1]}")},
        # the record names a key, but not the one that signed
        f"wrong._domainkey.{DOM}": {"TXT": txt(f"v=DKIM1; p={k['other'][1]}")},
        f"revoked._domainkey.{DOM}": {"TXT": ["v=DKIM1; k=rsa; p="]},
        f"short._domainkey.{DOM}": {"TXT": txt(f"v=DKIM1; p={k['short'][1]}")},
        f"slow._domainkey.{DOM}": {"behaviour": "drop"},
        f"fail._domainkey.{DOM}": {"behaviour": "servfail"},
        # a long record, in several character-strings
        f"split._domainkey.{DOM}": {"TXT": [[
            "v=DKIM1; k=rsa; ", "p=" + k["rsa"][1][:200],
            k["rsa"][1][200:]]]},
    }
    return z


@pytest.fixture
def mx(tmpbase):
    d = Daemon(tmpbase, extra="spf yes\ndkim-verify yes\nspf-timeout 20s")
    dns = DNSServer(zones(), port=d.dns_port)
    dns.start()
    d.dns = dns
    d.start()
    yield d
    d.stop()
    dns.stop()


MSG = (b"From: Anna <anna@sender.test>\r\n"
       b"To: demo@example.test\r\n"
       b"Subject: a subject folded\r\n\tover two lines  \r\n"
       b"Date: Sun, 06 Dec 2026 12:00:00 +0000\r\n"
       b"Message-ID: <1@sender.test>\r\n"
       b"\r\n"
       b"Hello,  \r\n\r\n \tindented line\r\n"
       b".a line with a leading dot\r\n\r\n\r\n")


def sign(msg, sel, key="rsa", canon=(b"relaxed", b"relaxed"), alg=None,
         length=False, edit=None):
    """dkimpy's signature field for msg; edit(fields, include_headers)
    may change the tags before it is signed."""
    priv = keys()[key][0]
    if alg is None:
        alg = b"ed25519-sha256" if key == "ed" else b"rsa-sha256"

    class Tweak(dkim.DKIM):
        def gen_header(self, fields, include_headers, *a, **kw):
            if edit:
                fields, include_headers = edit(list(fields), include_headers)
            return super().gen_header(fields, include_headers, *a, **kw)

    return Tweak(msg).sign(sel.encode(), DOM.encode(), priv,
                           signature_algorithm=alg, canonicalize=canon,
                           include_headers=[b"from", b"to", b"subject",
                                            b"date", b"message-id"],
                           length=length)


def stuffed(msg):
    return re.sub(rb"(?m)^\.", b"..", msg)


def send(d, msg, sender="anna@sender.test", bdat=False):
    with SMTPConn(d.port) as c:
        c.cmd("EHLO client.test")
        assert c.cmd(f"MAIL FROM:<{sender}>")[0] == 250
        assert c.cmd("RCPT TO:<demo@example.test>")[0] == 250
        if bdat:
            c.sock.sendall(b"BDAT %d LAST\r\n" % len(msg) + msg)
            r = c.reply()
        else:
            assert c.cmd("DATA")[0] == 354
            c.sock.sendall(stuffed(msg) + b".\r\n")
            r = c.reply()
        c.cmd("QUIT")
    assert r[0] == 250, r
    return r


def delivered(d, count=1):
    assert d.wait_mail("demo", count), d.logtext()[-3000:]
    files = sorted(d.maildir("demo"), key=lambda p: p.stat().st_mtime_ns)
    return re.sub(rb"\r?\n", b"\r\n", files[count - 1].read_bytes())


def header_fields(msg, name):
    head = msg.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    return [f.decode() for f in re.findall(
        rb"(?im)^" + name.encode() + rb":.*?(?=\r\n(?! |\t))", head,
        re.S)]


def our_ar(msg):
    ars = [f for f in header_fields(msg, "Authentication-Results")
           if re.match(r"Authentication-Results:\s*" + re.escape(AUTHSERV)
                       + r"\s*;", f)]
    assert len(ars) == 1, ars
    return re.sub(r"\s+", " ", ars[0])


def dkim_entries(ar):
    return re.findall(r"dkim=(\w+)(?: \(([^)]*)\))? header\.d=(\S+) "
                      r"header\.s=(\S+) header\.b=(\S+?)\s*(?:;|$)", ar)


def verdict(d, msg):
    send(d, msg)
    got = delivered(d)
    return dkim_entries(our_ar(got)), got


CANONS = [(b"relaxed", b"relaxed"), (b"simple", b"simple"),
          (b"relaxed", b"simple"), (b"simple", b"relaxed")]


@pytest.mark.parametrize("canon", CANONS, ids=lambda c: b"/".join(c).decode())
@pytest.mark.parametrize("key", ["rsa", "ed"])
def test_dkimpy_signatures_pass(mx, key, canon):
    sel = "ed" if key == "ed" else "rsa"
    msg = sign(MSG, sel, key, canon) + MSG
    (e,), got = verdict(mx, msg)
    assert e[0] == "pass" and e[2] == DOM and e[3] == sel, e
    b = re.search(rb"\bb=([A-Za-z0-9+/]{8})", msg).group(1).decode()
    assert e[4].strip('"') == b
    ar = our_ar(got)
    assert "spf=pass smtp.mailfrom=anna@sender.test" in ar
    # The field goes at the top, above our Received:.
    assert got.index(b"Authentication-Results: " + AUTHSERV.encode()) < \
        got.index(b"Received-SPF:") < got.index(b"Received: from")
    assert f"event=dkim result=pass d=<{DOM}> s=<{sel}>" in mx.logtext()


def test_several_signatures_and_length(mx):
    """Three signatures, one with l=: each has its entry, in header order;
    the l= one is flagged, and text added below the signed part still
    passes (RFC 6376 8.2: that is what l= allows)."""
    msg = (sign(MSG, "rsa", length=True) +
           sign(MSG, "ed", "ed", (b"simple", b"simple")) +
           sign(MSG, "r1024", "rsa1024") + MSG)
    msg += b"appended below the signed body\r\n"
    ents, _ = verdict(mx, msg)
    assert [(e[0], e[3]) for e in ents] == [("pass", "rsa"), ("fail", "ed"),
                                            ("fail", "r1024")], ents
    assert re.match(r"l=\d+ of \d+ body octets signed", ents[0][1]), ents
    assert ents[1][1] == "body hash did not verify"


def test_split_record_and_bdat(mx):
    """A key record in several character-strings; the message by BDAT."""
    msg = sign(MSG, "split") + MSG
    send(mx, msg, bdat=True)
    (e,) = dkim_entries(our_ar(delivered(mx)))
    assert e[0] == "pass", e


def expired(fields, h):
    now = int(time.time())
    fields = [f for f in fields if f[0] != b"t"]
    fields.insert(-2, (b"t", b"%d" % (now - 7200)))
    fields.insert(-2, (b"x", b"%d" % (now - 3600)))
    return fields, h


def future(fields, h):
    fields = [(k, b"%d" % (int(time.time()) + 86400) if k == b"t" else v)
              for k, v in fields]
    return fields, h


def no_from(fields, h):
    h = tuple(x for x in h if x != b"from")
    return [(k, b":".join(h) if k == b"h" else v) for k, v in fields], h


NEGATIVES = {
    "tampered-body": (lambda: sign(MSG, "rsa") + MSG.replace(b"Hello",
                                                             b"Hullo"),
                      "fail", "body hash did not verify"),
    "tampered-header": (lambda: sign(MSG, "ed", "ed") + MSG.replace(
        b"Subject: a", b"Subject: A"), "fail", "signature did not verify"),
    "expired": (lambda: sign(MSG, "rsa", edit=expired) + MSG, "fail",
                "signature expired"),
    "future": (lambda: sign(MSG, "rsa", edit=future) + MSG, "fail",
               "signed in the future"),
    "wrong-key": (lambda: sign(MSG, "wrong") + MSG, "fail",
                  "signature did not verify"),
    "revoked": (lambda: sign(MSG, "revoked") + MSG, "fail", "key revoked"),
    "512-bit": (lambda: sign(MSG, "short", "short") + MSG, "policy",
                "RSA key under 1024 bits"),
    "rsa-sha1": (lambda: sign(MSG, "rsa", alg=b"rsa-sha1") + MSG, "policy",
                 "rsa-sha1 not accepted"),
    "no-from-in-h": (lambda: sign(MSG, "rsa", edit=no_from) + MSG,
                     "permerror", "h= does not include From"),
    "no-key": (lambda: sign(MSG, "nokey") + MSG, "permerror",
               "no key for signature"),
    "dns-failure": (lambda: sign(MSG, "fail") + MSG, "temperror",
                    "key lookup failed"),
    "ed-key-for-rsa": (lambda: sign(MSG, "ed", "rsa") + MSG, "permerror",
                       "key unsuitable for a="),
}


@pytest.mark.parametrize("case", sorted(NEGATIVES))
def test_negatives(mx, case):
    make, result, why = NEGATIVES[case]
    (e,), _ = verdict(mx, make())
    assert (e[0], e[1]) == (result, why), e


def test_forged_authentication_results_removed(mx):
    """Fields claiming our authserv-id (any case, folded before the id, a
    comment first, quoted) are removed, as RFC 8601 5 asks; another
    server's are kept; ours is the only one left with our id."""
    forged = (b"Authentication-Results: mx.example.test; dkim=pass "
              b"header.d=bank.test\r\n"
              b"Authentication-Results:\r\n\t(a comment) MX.Example.Test;"
              b"\r\n\tspf=pass smtp.mailfrom=bank.test\r\n"
              b"authentication-results: \"mx.example.test\"; dmarc=pass\r\n"
              b"Authentication-Results: other.example; spf=fail\r\n"
              b"Authentication-Results-Not: mx.example.test; x\r\n")
    msg = sign(MSG, "rsa") + forged + MSG
    (e,), got = verdict(mx, msg)
    # The signature did not cover the A-R fields: removing them leaves it
    # intact.
    assert e[0] == "pass"
    ars = header_fields(got, "Authentication-Results")
    assert len(ars) == 2, ars
    assert "bank.test" not in got.decode()
    assert any(a.startswith("Authentication-Results: other.example;")
               for a in ars)
    assert b"Authentication-Results-Not: mx.example.test; x" in got
    assert "event=authres result=removed count=3" in mx.logtext()


def test_no_signature_is_dkim_none(mx):
    send(mx, MSG)
    ar = our_ar(delivered(mx))
    assert re.search(r"; dkim=none\s*$", ar), ar


def test_slow_key_does_not_delay_another_session(mx):
    """Session A's key lookup is never answered (its workers wait up to
    spf-timeout, 20 s); session B's message, sent meanwhile, is accepted
    and delivered while A still waits for its reply."""
    a = SMTPConn(mx.port)
    try:
        a.cmd("EHLO a.test")
        assert a.cmd("MAIL FROM:<anna@sender.test>")[0] == 250
        assert a.cmd("RCPT TO:<demo@example.test>")[0] == 250
        assert a.cmd("DATA")[0] == 354
        a.sock.sendall(stuffed(sign(MSG, "slow") + MSG) + b".\r\n")
        assert wait_for(lambda: any(
            q[0] == f"slow._domainkey.{DOM}" for q in mx.dns.log), 10)
        send(mx, sign(MSG, "rsa") + MSG)
        (e,) = dkim_entries(our_ar(delivered(mx)))
        assert e[0] == "pass"
        # A has had no answer yet: its end of data is still pending.
        r, _, _ = select.select([a.sock], [], [], 0)
        assert r == [], "A's reply came before B was delivered"
    finally:
        a.close()


def test_our_signatures_verified_by_us(make_daemon, tmpbase):
    """Mail our signer signed (RSA-2048 and Ed25519, smtpd/dkimsign.c),
    as delivered, run through `ternctl check` with the keys in the DNS:
    both signatures pass, and a changed body fails both."""
    from test_dkim_sign import delivered as signed_delivered
    from test_dkim_sign import make_signer, submit
    d = make_signer(make_daemon, tmpbase)
    zone = {name: {"TXT": txt(v)} for name, v in d.txt.items()}
    with DNSServer(zone, port=d.dns_port):
        submit(d, b"From: Anna <anna@example.test>\r\nTo: alice@example.test"
                  b"\r\nSubject: signed here\r\n\r\nchecked there\r\n")
        (got,) = signed_delivered(d)

        def check(msg):
            r = d.ctl("check", "--client-ip", "127.0.0.1", "--helo",
                      "client.test", "--mail-from", "anna@example.test",
                      input=msg.decode())
            assert r.returncode == 0, r.stderr
            return r.stdout
        out = check(got)
        assert "dkim=pass d=example.test s=rsa1 reason=\"\"" in out, out
        assert "dkim=pass d=example.test s=ed1 reason=\"\"" in out, out
        ar = re.search(r"^Authentication-Results: mx\.example\.test;\n"
                       r"(\t.*\n)+", out, re.M).group(0)
        assert ar.count("dkim=pass") == 2 and "header.s=ed1" in ar, ar
        out = check(got.replace(b"checked there", b"changed there"))
        assert out.count("dkim=fail") == 4, out     # A-R and summary


def test_dkim_alone_and_timeout(tmpbase):
    """DKIM on, SPF off: the field has dkim= alone.  A key that never
    comes is temperror once spf-timeout (here 2 s) has passed, and the
    message is accepted."""
    d = Daemon(tmpbase, extra="dkim-verify yes\nspf-timeout 2s")
    with DNSServer(zones(), port=d.dns_port) as dns:
        d.dns = dns
        d.start()
        try:
            send(d, sign(MSG, "slow") + MSG)
            ar = our_ar(delivered(d))
            assert "spf=" not in ar, ar
            (e,) = dkim_entries(ar)
            assert e[0] == "temperror", e
        finally:
            d.stop()


def test_large_header_field_goes_where_header_ends(mx):
    """A header larger than the first write (64 KiB): the field cannot
    go to the top any more, it goes where the header ends, and the
    signature (which covers the long field) still passes."""
    refs = b"References: " + b"\r\n ".join(
        b"<%d.a-long-thread-message-id@sender.test>" % i
        for i in range(2000)) + b"\r\n"
    msg = MSG.replace(b"\r\n\r\nHello", b"\r\n" + refs + b"\r\nHello", 1)
    assert len(msg) > 70000
    s = sign(msg, "rsa", edit=lambda f, h: (
        [(k, v + b":references" if k == b"h" else v) for k, v in f],
        h + (b"references",)))
    (e,), got = verdict(mx, s + msg)
    assert e[0] == "pass", e
    head = got.split(b"\r\n\r\n", 1)[0]
    assert head.index(b"Authentication-Results: mx.example.test") > \
        head.index(b"References:")


def test_key_asked_once(mx):
    """Two messages signed with one key: both pass, the key is asked of
    the DNS once (then the cache answers, for the record's TTL)."""
    for i in range(2):
        send(mx, sign(MSG, "rsa") + MSG)
        (e,) = dkim_entries(our_ar(delivered(mx, i + 1)))
        assert e[0] == "pass", e
    assert len(mx.dns.queries(f"rsa._domainkey.{DOM}", "TXT")) == 1


def test_spf_alone(tmpbase):
    """SPF on, DKIM verification off: the field has spf= alone, and a
    forged field is removed all the same."""
    d = Daemon(tmpbase, extra="spf yes")
    with DNSServer(zones(), port=d.dns_port):
        d.start()
        try:
            send(d, b"Authentication-Results: mx.example.test; dkim=pass\r\n"
                 + sign(MSG, "rsa") + MSG)
            got = delivered(d)
            ar = our_ar(got)
            assert "spf=pass" in ar and "dkim" not in ar, ar
            assert got.count(b"Authentication-Results:") == 1
        finally:
            d.stop()
