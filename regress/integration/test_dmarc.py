"""DMARC (RFC 7489) at the end of data on the MX, against the real daemon
and a loopback DNS serving _dmarc records: reject is 550 5.7.1 with
nothing queued, quarantine is delivered into the Maildir's .Junk folder,
`dmarc monitor` only records, the organizational domain's record applies
to subdomains, and every evaluation is kept in spool/dmarc/."""
import base64
import os
import struct
import subprocess
import zlib

import dkim
import pytest

from conftest import Daemon, SMTPConn, wait_for
from dnsserver import DNSServer

pytestmark = pytest.mark.usefixtures("sanitizer_check")

ZONES = {
    # SPF passes for the loopback client, DMARC p=reject
    "aligned.test": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
    "_dmarc.aligned.test": {"TXT": ["v=DMARC1; p=reject; aspf=r"]},
    "mail.aligned.test": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
    # SPF softfail (accepted at RCPT), DMARC p=reject
    "reject.test": {"TXT": ["v=spf1 ~all"]},
    "_dmarc.reject.test": {"TXT": ["v=DMARC1; p=reject; "
                                   "rua=mailto:agg@reject.test"]},
    "quar.test": {"TXT": ["v=spf1 ~all"]},
    "_dmarc.quar.test": {"TXT": ["v=DMARC1; p=quarantine"]},
    "nopolicy.test": {"TXT": ["v=spf1 ~all"]},
    "strict.test": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
    "_dmarc.strict.test": {"TXT": ["v=DMARC1; p=reject; aspf=s"]},
    "bounce.strict.test": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
    "temp.test": {"TXT": ["v=spf1 ~all"]},
    "_dmarc.temp.test": {"behaviour": "servfail"},
    "other.test": {"TXT": ["v=spf1 ~all"]},
}

KEY = {}


def dkim_key():
    """An RSA-2048 key (PEM) and its p= value, made once per run."""
    if not KEY:
        pem = subprocess.run(["openssl", "genpkey", "-algorithm", "RSA",
                              "-pkeyopt", "rsa_keygen_bits:2048"],
                             check=True, capture_output=True).stdout
        der = subprocess.run(["openssl", "pkey", "-pubout", "-outform",
                              "DER"], input=pem, check=True,
                             capture_output=True).stdout
        KEY["pem"], KEY["p"] = pem, base64.b64encode(der).decode()
    return KEY["pem"], KEY["p"]


def key_zones():
    """ZONES with the key published for reject.test and other.test."""
    p = dkim_key()[1]
    rec = [[f"v=DKIM1; k=rsa; p={p}"[i:i + 250]
            for i in range(0, len(f"v=DKIM1; k=rsa; p={p}"), 250)]]
    z = dict(ZONES)
    z["s1._domainkey.reject.test"] = {"TXT": rec}
    z["s1._domainkey.other.test"] = {"TXT": rec}
    return z


def dkim_sign(body, domain):
    """dkimpy's signature for body by domain (selector s1)."""
    sig = dkim.sign(body.encode(), b"s1", domain.encode(), dkim_key()[0],
                    include_headers=[b"from", b"to", b"subject"])
    return sig.decode() + body

HDR = ("From: Someone <someone@{dom}>\r\nTo: demo@example.test\r\n"
       "Subject: dmarc\r\nMessage-ID: <m{n}@{dom}>\r\n\r\nhello\r\n")


def start(tmpbase, extra="dmarc enforce", zones=None):
    d = Daemon(tmpbase, extra="spf yes\nspf-timeout 3s\n" + extra)
    dns = DNSServer(zones or ZONES, port=d.dns_port)
    dns.start()
    d.dns = dns
    d.start()
    return d


@pytest.fixture
def dmarcd(tmpbase):
    d = start(tmpbase)
    yield d
    d.stop()
    d.dns.stop()


@pytest.fixture
def make_dmarcd(tmpbase):
    made = []

    def make(extra, zones=None):
        d = start(tmpbase, extra, zones)
        made.append(d)
        return d
    yield make
    for d in made:
        d.stop()
        d.dns.stop()


def send(d, sender, body, rcpt="demo@example.test"):
    """One transaction; the reply to the end of data (or an earlier
    refusal)."""
    with SMTPConn(d.port) as c:
        c.cmd("EHLO client.test")
        r = c.cmd(f"MAIL FROM:<{sender}>")
        if r[0] != 250:
            return r
        r = c.cmd(f"RCPT TO:<{rcpt}>")
        if r[0] != 250:
            return r
        assert c.cmd("DATA")[0] == 354
        c.send(body.replace("\r\n.", "\r\n..") + ".\r\n")
        r = c.reply()
        c.cmd("QUIT")
        return r


def msg(dom, n=0):
    return HDR.format(dom=dom, n=n)


def store_entries(d):
    """Every evaluation in spool/dmarc/*: a list of {tag: [values]}."""
    out = []
    ddir = d.spool / "dmarc"
    for f in sorted(ddir.iterdir()) if ddir.is_dir() else []:
        data = f.read_bytes()
        off = 0
        while off < len(data):
            assert data[off:off + 4] == b"DMR1"
            (n,) = struct.unpack(">I", data[off + 4:off + 8])
            payload = data[off + 8:off + 8 + n]
            (crc,) = struct.unpack(">I", data[off + 8 + n:off + 12 + n])
            assert crc == zlib.crc32(payload)
            ent, p = {}, 0
            while p < len(payload):
                tag = payload[p]
                (ln,) = struct.unpack(">I", payload[p + 1:p + 5])
                ent.setdefault(tag, []).append(payload[p + 5:p + 5 + ln])
                p += 5 + ln
            out.append(ent)
            off += 12 + n
    return out


# DS_* tags of auth/dmarc.h
DS_IP, DS_FROM, DS_SPF, DS_P, DS_RESULT, DS_DISP, DS_OVERRIDE, DS_RUA = \
    2, 3, 5, 9, 13, 14, 17, 18


def s(ent, tag):
    return ent[tag][0].decode()


def nothing_queued(d):
    return (d.queue_files("queue") == [] and
            d.unfinished() == [] and
            "event=queued" not in d.logtext())


def test_reject_without_aligned_pass_is_550_at_end_of_data(dmarcd):
    """RFC 7489 6.6.2, 10.3: p=reject, SPF softfail, no DKIM."""
    r = send(dmarcd, "a@reject.test", msg("reject.test"))
    assert r[0] == 550 and "5.7.1" in r[1], r
    assert "reject.test" in r[1] and "DMARC" in r[1]
    assert wait_for(lambda: nothing_queued(dmarcd))
    assert dmarcd.maildir("demo") == []
    log = dmarcd.logtext()
    assert "event=dmarc result=fail from_domain=<reject.test> " \
        "policy=reject disposition=reject action=reject" in log
    assert wait_for(lambda: len(store_entries(dmarcd)) == 1)
    e = store_entries(dmarcd)[0]
    assert s(e, DS_FROM) == "reject.test" and s(e, DS_IP) == "127.0.0.1"
    assert s(e, DS_RESULT) == "fail" and s(e, DS_DISP) == "reject"
    assert s(e, DS_SPF) == "softfail" and s(e, DS_P) == "reject"
    assert s(e, DS_RUA) == "mailto:agg@reject.test"


def test_unaligned_spf_pass_is_refused(dmarcd):
    """RFC 7489 3.1.2: SPF passes for another domain than From:'s."""
    r = send(dmarcd, "a@aligned.test", msg("reject.test"))
    assert r[0] == 550 and "5.7.1" in r[1]
    assert wait_for(lambda: nothing_queued(dmarcd))


def test_aligned_spf_pass_is_delivered(dmarcd):
    """RFC 7489 3.1.2, relaxed: the same domain and a subdomain."""
    assert send(dmarcd, "a@aligned.test", msg("aligned.test", 1))[0] == 250
    assert send(dmarcd, "b@mail.aligned.test",
                msg("aligned.test", 2))[0] == 250
    assert dmarcd.wait_mail("demo", 2)
    assert "event=dmarc result=pass from_domain=<aligned.test>" in \
        dmarcd.logtext()
    assert wait_for(lambda: len(store_entries(dmarcd)) == 2)
    assert [s(e, DS_RESULT) for e in store_entries(dmarcd)] == \
        ["pass", "pass"]


def test_strict_spf_alignment(dmarcd):
    """RFC 7489 3.1.2, aspf=s: a subdomain's SPF pass is not aligned."""
    r = send(dmarcd, "b@bounce.strict.test", msg("strict.test"))
    assert r[0] == 550 and "5.7.1" in r[1]
    assert send(dmarcd, "b@strict.test", msg("strict.test", 2))[0] == 250


def test_org_domain_fallback(dmarcd):
    """RFC 7489 6.6.3 step 3: no _dmarc.sub.reject.test, so
    _dmarc.reject.test's p= applies (no sp=)."""
    dmarcd.dns.clear_log()
    r = send(dmarcd, "a@reject.test", msg("news.sub.reject.test"))
    assert r[0] == 550 and "5.7.1" in r[1]
    names = [q[0] for q in dmarcd.dns.queries(qtype="TXT")]
    assert "_dmarc.news.sub.reject.test" in names
    assert "_dmarc.reject.test" in names
    assert "_dmarc.sub.reject.test" not in names


def test_no_policy_is_accepted(dmarcd):
    """RFC 7489 6.6.3 step 5: no record anywhere, dmarc=none."""
    assert send(dmarcd, "a@nopolicy.test", msg("nopolicy.test"))[0] == 250
    assert dmarcd.wait_mail("demo")
    assert "event=dmarc result=none from_domain=<nopolicy.test>" in \
        dmarcd.logtext()


def junk_ready(d, user="demo"):
    """Deliver once so the Maildir exists, then give it a .Junk folder
    owned like it (the delivery worker runs as the mailbox's owner)."""
    assert send(d, "a@aligned.test", msg("aligned.test", 9))[0] == 250
    assert d.wait_mail(user)
    md = d.maildirs / user / "Maildir"
    st = os.stat(md)
    for sub in ("", "/cur", "/new", "/tmp"):
        p = str(md) + "/.Junk" + sub
        os.mkdir(p, 0o700)
        os.chown(p, st.st_uid, st.st_gid)
    return md


def test_quarantine_lands_in_junk(dmarcd):
    """RFC 7489 6.3 p=quarantine: accepted, into Maildir++'s .Junk."""
    md = junk_ready(dmarcd)
    assert send(dmarcd, "a@quar.test", msg("quar.test", 3))[0] == 250
    assert wait_for(lambda: len(list((md / ".Junk" / "new").iterdir()))
                    == 1)
    assert len(dmarcd.maildir("demo")) == 1     # only the first one
    assert "action=quarantine" in dmarcd.logtext()
    assert wait_for(lambda: any(s(e, DS_DISP) == "quarantine"
                                for e in store_entries(dmarcd)))


def test_quarantine_without_junk_goes_to_inbox(dmarcd):
    """No .Junk folder: delivered to the inbox, not lost."""
    assert send(dmarcd, "a@quar.test", msg("quar.test", 4))[0] == 250
    assert dmarcd.wait_mail("demo")


def test_monitor_override_accepts(make_dmarcd):
    """dmarc monitor: evaluated, recorded, never enforced."""
    d = make_dmarcd("dmarc monitor")
    assert send(d, "a@reject.test", msg("reject.test"))[0] == 250
    assert d.wait_mail("demo")
    assert "action=accept override=local_policy" in d.logtext()
    assert wait_for(lambda: len(store_entries(d)) == 1)
    e = store_entries(d)[0]
    assert s(e, DS_RESULT) == "fail" and s(e, DS_DISP) == "none"
    assert s(e, DS_OVERRIDE) == "local_policy"


def test_monitor_per_listener(tmpbase):
    """The knob on a listen line overrides the global one."""
    d = Daemon(tmpbase, extra="spf yes\ndmarc enforce")
    d.conf.write_text(d.conf.read_text().replace(
        f"listen mx 127.0.0.1 port {d.port}",
        f"listen mx 127.0.0.1 port {d.port} dmarc monitor"))
    dns = DNSServer(ZONES, port=d.dns_port)
    dns.start()
    try:
        d.start()
        assert send(d, "a@reject.test", msg("reject.test"))[0] == 250
    finally:
        d.stop()
        dns.stop()


def test_dmarc_off_skips(make_dmarcd):
    d = make_dmarcd("dmarc off")
    assert send(d, "a@reject.test", msg("reject.test"))[0] == 250
    assert "event=dmarc" not in d.logtext()


def test_trusted_network_skips(make_dmarcd):
    d = make_dmarcd("dmarc enforce\ntrusted-network 127.0.0.0/8")
    assert send(d, "a@reject.test", msg("reject.test"))[0] == 250
    assert "event=dmarc" not in d.logtext()


def test_no_from_field_refused(dmarcd):
    """RFC 7489 6.6.1 with RFC 5322 3.6: no From:, never a silent pass."""
    r = send(dmarcd, "a@aligned.test", "Subject: x\r\n\r\nbody\r\n")
    assert r[0] == 550 and "5.7.1" in r[1] and "From:" in r[1]
    assert wait_for(lambda: nothing_queued(dmarcd))


def test_several_from_fields_refused(dmarcd):
    """RFC 7489 6.6.1: two From: fields (one aligned) are refused."""
    body = ("From: a@aligned.test\r\nFrom: b@reject.test\r\n"
            "Subject: x\r\n\r\nbody\r\n")
    r = send(dmarcd, "a@aligned.test", body)
    assert r[0] == 550 and "several From:" in r[1]


def test_several_domains_in_one_from(dmarcd):
    """RFC 7489 6.6.1: each domain evaluated, the strictest failing one
    decides (aligned.test passes, reject.test fails)."""
    body = ("From: a@aligned.test, b@reject.test\r\nSender: a@aligned.test"
            "\r\nSubject: x\r\n\r\nbody\r\n")
    r = send(dmarcd, "a@aligned.test", body)
    assert r[0] == 550 and "reject.test" in r[1]


def test_temperror_defers(dmarcd):
    """RFC 7489 6.6.3: the policy lookup fails for now: 451, retried."""
    r = send(dmarcd, "a@temp.test", msg("temp.test"))
    assert r[0] == 451 and "4.7.5" in r[1]
    assert wait_for(lambda: nothing_queued(dmarcd))


def test_folded_from_and_bdat(dmarcd):
    """The From: field is read across folds and through BDAT too."""
    body = ("From:\r\n Someone\r\n <x@reject.test>\r\nSubject: x\r\n\r\n"
            "b\r\n").encode()
    with SMTPConn(dmarcd.port) as c:
        c.cmd("EHLO client.test")
        assert c.cmd("MAIL FROM:<a@reject.test>")[0] == 250
        assert c.cmd("RCPT TO:<demo@example.test>")[0] == 250
        c.send(b"BDAT %d LAST\r\n" % len(body) + body)
        r = c.reply()
        assert r[0] == 550 and "5.7.1" in r[1]
    assert wait_for(lambda: nothing_queued(dmarcd))


def test_ternctl_check_action_line(dmarcd):
    """ternctl check: the dmarc= result and the action line."""
    r = dmarcd.ctl("check", "--client-ip", "127.0.0.1", "--helo",
                   "client.test", "--mail-from", "a@reject.test",
                   input=msg("reject.test"))
    assert r.returncode == 0, r.stderr
    assert "dmarc=fail" in r.stdout and "header.from=reject.test" in r.stdout
    assert r.stdout.strip().splitlines()[-1].startswith(
        'action=reject reason="550 5.7.1')
    r = dmarcd.ctl("check", "--client-ip", "127.0.0.1", "--helo",
                   "client.test", "--mail-from", "a@quar.test",
                   input=msg("quar.test"))
    assert r.stdout.strip().splitlines()[-1].startswith("action=quarantine")
    r = dmarcd.ctl("check", "--client-ip", "127.0.0.1", "--helo",
                   "client.test", "--mail-from", "a@aligned.test",
                   input=msg("aligned.test"))
    assert "dmarc=pass" in r.stdout
    assert r.stdout.strip().splitlines()[-1].startswith("action=accept")
    r = dmarcd.ctl("check", "--client-ip", "127.0.0.1", "--helo",
                   "client.test", "--mail-from", "a@temp.test",
                   input=msg("temp.test"))
    assert r.stdout.strip().splitlines()[-1].startswith("action=tempfail")


def test_authentication_results_carry_dmarc(dmarcd):
    """RFC 7489 11.2 / RFC 8601: dmarc= with header.from= and
    policy.dmarc= in our Authentication-Results field."""
    assert send(dmarcd, "a@aligned.test", msg("aligned.test"))[0] == 250
    assert dmarcd.wait_mail("demo")
    m = dmarcd.maildir("demo")[0].read_bytes()
    assert b"Authentication-Results: mx.example.test;" in m
    assert b"dmarc=pass (aligned SPF pass) header.from=aligned.test " \
        b"policy.dmarc=reject" in m
    assert b"X-Tern-DMARC" not in m


def test_quarantine_is_marked(dmarcd):
    """RFC 7489 6.3 p=quarantine: the delivered copy says so."""
    md = junk_ready(dmarcd)
    assert send(dmarcd, "a@quar.test", msg("quar.test", 5))[0] == 250
    assert wait_for(lambda: len(list((md / ".Junk" / "new").iterdir()))
                    == 1)
    m = next((md / ".Junk" / "new").iterdir()).read_bytes()
    assert b"\nX-Tern-DMARC: quarantine; header.from=quar.test\n" in m
    assert b"dmarc=fail (no SPF or DKIM pass) header.from=quar.test " \
        b"policy.dmarc=quarantine" in m


def test_aligned_dkim_pass_despite_spf(make_dmarcd):
    """RFC 7489 3.1.1: SPF softfails, but a signature of the From:
    domain (made by dkimpy) verifies: delivered.  dkimpy checks the
    delivered copy's signature too (a second opinion on the pass)."""
    z = key_zones()
    d = make_dmarcd("dmarc enforce\ndkim-verify yes", z)
    body = dkim_sign(msg("reject.test", 7), "reject.test")
    assert send(d, "a@reject.test", body)[0] == 250
    assert d.wait_mail("demo")
    assert "event=dmarc result=pass from_domain=<reject.test>" in \
        d.logtext()
    assert "dkim_aligned=1" in d.logtext()
    m = d.maildir("demo")[0].read_bytes()
    assert b"dmarc=pass (aligned DKIM pass) header.from=reject.test" in m

    def dnsfunc(name, timeout=5):
        rec = z.get(name.decode().rstrip("."), {}).get("TXT", [])
        return "".join(rec[0]).encode() if rec else None
    assert dkim.verify(m, dnsfunc=dnsfunc)


def test_unaligned_dkim_pass_is_refused(make_dmarcd):
    """RFC 7489 3.1.1: a good signature of another domain aligns
    nothing."""
    d = make_dmarcd("dmarc enforce\ndkim-verify yes", key_zones())
    body = dkim_sign(msg("reject.test", 8), "other.test")
    r = send(d, "a@reject.test", body)
    assert r[0] == 550 and "5.7.1" in r[1]
    assert "event=dkim result=pass" in d.logtext()
    assert wait_for(lambda: nothing_queued(d))


def _ar_field(m):
    """Our Authentication-Results field of a delivered copy, unfolded."""
    lines = m.decode().split("\n")
    for i, line in enumerate(lines):
        if line.startswith("Authentication-Results: mx.example.test"):
            f = [line]
            for nxt in lines[i + 1:]:
                if not nxt[:1] in (" ", "\t"):
                    break
                f.append(nxt)
            return "\r\n".join(f)
    return None


def test_authentication_results_parse_with_authres(dmarcd):
    """python3-authres (RFC 8601's reference parser) reads our field:
    dmarc=fail with header.from and policy.dmarc, for a quarantined
    message (the mark after it is a field of its own)."""
    import authres
    import authres.dmarc  # noqa: F401 (registers the dmarc method)
    assert send(dmarcd, "a@quar.test", msg("quar.test", 6))[0] == 250
    assert dmarcd.wait_mail("demo")
    f = _ar_field(dmarcd.maildir("demo")[0].read_bytes())
    r = authres.AuthenticationResultsHeader.parse(f)
    assert r.authserv_id == "mx.example.test"
    got = {x.method: x for x in r.results}
    assert got["spf"].result == "softfail"
    d = got["dmarc"]
    assert d.result == "fail"
    props = {(p.type, p.name): p.value for p in d.properties}
    assert props[("header", "from")] == "quar.test"
    assert props[("policy", "dmarc")] == "quarantine"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_spf_inputs_agree_with_pyspf(dmarcd):
    """The SPF results DMARC aligned on, checked again by pyspf on the
    same zones (a second opinion on the input of 3.1.2)."""
    import dns.resolver
    import spf
    cases = [("a@aligned.test", "aligned.test"),
             ("b@mail.aligned.test", "aligned.test"),
             ("a@reject.test", "reject.test"),
             ("a@nopolicy.test", "nopolicy.test")]
    for n, (sender, dom) in enumerate(cases):
        send(dmarcd, sender, msg(dom, 20 + n))
    assert wait_for(lambda: len(store_entries(dmarcd)) == len(cases))
    ours = [s(e, DS_SPF) for e in store_entries(dmarcd)]
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = ["127.0.0.1"]
    r.port = dmarcd.dns_port
    r.lifetime = 2
    old = dns.resolver.default_resolver
    dns.resolver.default_resolver = r
    try:
        theirs = [spf.check2(i="127.0.0.1", s=snd, h="client.test",
                             querytime=2)[0] for snd, _ in cases]
    finally:
        dns.resolver.default_resolver = old
    assert ours == theirs == ["pass", "pass", "softfail", "softfail"]
