"""ternctl dns DOMAIN [--check]: the records a local domain needs (MX, the
host's A and PTR, SPF for the domain and the HELO name, DKIM for each
dkim-key, DMARC), printed in zone-file syntax; with --check, looked up
through the configured resolver (here the loopback DNS server) and judged
line by line: `ok|missing|wrong|danger|error KIND NAME: ...`, exit 0 when
all are ok, 1 when one is not, 2 for a usage or config error.

The correct zone is written here by hand (the DKIM record from the key
file by openssl, not by ternctl); each broken case changes one thing and
must produce its line.  The printed records, parsed by dnslib's zone-file
reader and served, must pass --check (round trip), and dkimpy must verify
a signature it makes with the key file against the printed DKIM record as
the loopback server serves it.
"""
import base64
import copy
import os
import shutil
import subprocess
import sys
import textwrap

import dkim
import pytest
from dnslib import QTYPE, RR, DNSRecord

from conftest import Daemon
from dnsserver import DNSServer

HERE = os.path.dirname(os.path.abspath(__file__))
HOST_IP = "198.18.0.10"         # RFC 2544 space: no resolver blocks it


def openssl_key(path, bits=None, kind="RSA"):
    args = ["openssl", "genpkey", "-algorithm", kind, "-out", str(path)]
    if bits:
        args += ["-pkeyopt", f"rsa_keygen_bits:{bits}"]
    subprocess.run(args, check=True, capture_output=True)
    path.chmod(0o600)


def openssl_p(path):
    """The base64 SubjectPublicKeyInfo of a key file, as openssl says."""
    der = subprocess.run(["openssl", "pkey", "-in", str(path), "-pubout",
                          "-outform", "DER"], check=True,
                         capture_output=True).stdout
    return base64.b64encode(der).decode()


def split255(s):
    return [s[i:i + 255] for i in range(0, len(s), 255)]


def good_zones(p):
    return {
        "example.test.": {"MX": [(10, "mx.example.test.")],
                          "TXT": ["v=spf1 mx -all"]},
        "mx.example.test.": {"A": [HOST_IP], "TXT": ["v=spf1 a -all"]},
        HOST_IP: {"PTR": ["mx.example.test."]},
        "s1._domainkey.example.test.": {
            "TXT": [split255("v=DKIM1; k=rsa; p=" + p)]},
        "_dmarc.example.test.": {
            "TXT": ["v=DMARC1; p=none; rua=mailto:postmaster@example.test"]},
        "other.test.": {"A": ["198.18.0.99"]},
        "back.test.": {"A": [HOST_IP]},
    }


def make(tmpbase, key=True):
    """A config (never started) with a public mx listen address and, if
    key, dkim-key example.test s1; d.p is its public key (openssl)."""
    kpath = tmpbase / "s1.key"
    openssl_key(kpath, 2048)
    extra = f"listen mx {HOST_IP} port 25\n"
    if key:
        extra += f'dkim-key example.test s1 "{kpath}"\n'
    d = Daemon(tmpbase, extra=extra)
    d.key, d.p = kpath, openssl_p(kpath)
    return d


def run(d, *args):
    r = d.ctl("dns", *args)
    for mark in ("AddressSanitizer", "runtime error:", "LeakSanitizer"):
        assert mark not in r.stderr, r.stderr
    return r


def check(d, zones):
    with DNSServer(zones, port=d.dns_port):
        r = run(d, "example.test", "--check")
    lines = [l for l in r.stdout.splitlines() if not l.startswith(";")]
    bad = [l for l in lines if not l.startswith("ok ")]
    return r.returncode, lines, bad


def test_correct_zone_all_ok(tmpbase):
    d = make(tmpbase)
    rc, lines, bad = check(d, good_zones(d.p))
    assert rc == 0 and bad == [], lines
    kinds = [l.split()[1] + " " + l.split()[2] for l in lines]
    assert kinds == ["MX example.test:", "A mx.example.test:",
                     f"PTR {HOST_IP}:", "SPF example.test:",
                     "SPF mx.example.test:",
                     "DKIM s1._domainkey.example.test:",
                     "DMARC _dmarc.example.test:"], lines
    assert "ok DKIM s1._domainkey.example.test: rsa-sha256, 2048 bits" in \
        "\n".join(lines) or "ok DKIM s1._domainkey.example.test: rsa" in \
        "\n".join(lines)


def short_key_p(tmpbase):
    k = tmpbase / "short.key"
    openssl_key(k, 512)
    return openssl_p(k)


def other_key_p(tmpbase):
    k = tmpbase / "other.key"
    openssl_key(k, 2048)
    return openssl_p(k)


# Each case: (change to the good zone, the line expected (a prefix), and
# the prefixes of lines that follow from it, if any).
def _set(name, rtype, value):
    def f(z, tmpbase):
        if value is None:
            z.get(name, {}).pop(rtype, None)
        else:
            z.setdefault(name, {})[rtype] = value(tmpbase) \
                if callable(value) else value
    return f


def _many(*changes):
    def f(z, tmpbase):
        for c in changes:
            c(z, tmpbase)
    return f


DK = "s1._domainkey.example.test."
# "v=spf1 mx -all" names the MX: without it this host fails SPF too.
SPF_MX = ("wrong SPF example.test: this host's",)
CASES = {
    "no_mx": (_set("example.test.", "MX", None),
              "missing MX example.test: no MX record", SPF_MX),
    "mx_elsewhere": (_set("example.test.", "MX", [(10, "other.test.")]),
                     "wrong MX example.test: points at 10 other.test, "
                     "not at mx.example.test", SPF_MX),
    "null_mx": (_set("example.test.", "MX", [(0, ".")]),
                "wrong MX example.test: a null MX", SPF_MX),
    "no_a": (_set("mx.example.test.", "A", None),
             "missing A mx.example.test: no A or AAAA record"),
    "private_a": (_set("mx.example.test.", "A", ["10.0.0.5"]),
                  "danger A mx.example.test: 10.0.0.5 is a private",
                  ("wrong A mx.example.test: 198.18.0.10 (an mx listen "
                   "address) is not among its addresses",
                   "wrong SPF example.test: this host's 10.0.0.5 gets",
                   "wrong SPF mx.example.test: this host's 10.0.0.5 gets")),
    "no_spf": (_set("example.test.", "TXT", ["some other text"]),
               "missing SPF example.test: no SPF record"),
    "two_spf": (_set("example.test.", "TXT",
                     ["v=spf1 mx -all", "v=spf1 a -all"]),
                "wrong SPF example.test: 2 SPF records"),
    "spf_permerror": (_set("example.test.", "TXT", ["v=spf1 mx -all moo"]),
                      'wrong SPF example.test: "v=spf1 mx -all moo": '),
    "spf_plus_all": (_set("example.test.", "TXT", ["v=spf1 mx +all"]),
                     "danger SPF example.test: ends in +all"),
    "spf_neutral_all": (_set("example.test.", "TXT", ["v=spf1 mx ?all"]),
                        "danger SPF example.test: ends in ?all"),
    "spf_not_this_host": (_set("example.test.", "TXT",
                               ["v=spf1 ip4:192.0.2.1 -all"]),
                          f"wrong SPF example.test: this host's {HOST_IP} "
                          "gets fail, not pass"),
    "spf_too_many_lookups": (_many(
        _set("example.test.", "TXT",
             ["v=spf1 mx include:i1.spf.test include:i2.spf.test -all"]),
        _set("i1.spf.test.", "TXT", ["v=spf1 a mx a:x.test mx:y.test ~all"]),
        _set("i2.spf.test.", "TXT",
             ["v=spf1 include:i3.spf.test exists:z.test ptr ~all"]),
        _set("i3.spf.test.", "TXT", ["v=spf1 a mx a:w.test ~all"])),
        "wrong SPF example.test: 13 DNS-querying terms, includes counted "
        "(more than 10: permerror)"),
    "spf_include_without_record": (_many(
        _set("example.test.", "TXT", ["v=spf1 mx include:gone.test -all"]),
        _set("gone.test.", "A", ["198.18.0.99"])),
        "wrong SPF example.test: gone.test: no SPF record (permerror)"),
    "spf_include_plus_all": (_many(
        _set("example.test.", "TXT", ["v=spf1 mx include:open.test -all"]),
        _set("open.test.", "TXT", ["v=spf1 +all"])),
        "danger SPF example.test: open.test ends in +all"),
    "no_helo_spf": (_set("mx.example.test.", "TXT", None),
                    "missing SPF mx.example.test: no SPF record for the "
                    "HELO name"),
    "no_dkim": (_set(DK, "TXT", None),
                "missing DKIM s1._domainkey.example.test: no TXT record"),
    "dkim_other_key": (_set(DK, "TXT", lambda t: [split255(
        "v=DKIM1; k=rsa; p=" + other_key_p(t))]),
        "wrong DKIM s1._domainkey.example.test: does not match the key"),
    "dkim_short_key": (_set(DK, "TXT", lambda t: [
        "v=DKIM1; k=rsa; p=" + short_key_p(t)]),
        "danger DKIM s1._domainkey.example.test: an RSA key of 512 bits"),
    "dkim_revoked": (_set(DK, "TXT", ["v=DKIM1; k=rsa; p="]),
                     "wrong DKIM s1._domainkey.example.test: p= is empty"),
    "dkim_garbage": (_set(DK, "TXT", ["v=DKIM1; k=rsa; p=not!base64"]),
                     "wrong DKIM s1._domainkey.example.test: not a usable "
                     "key record: p= is not base64"),
    "no_dmarc": (_set("_dmarc.example.test.", "TXT", None),
                 "missing DMARC _dmarc.example.test: no DMARC record"),
    "dmarc_malformed": (_set("_dmarc.example.test.", "TXT",
                             ["v=DMARC1; p=maybe"]),
                        "wrong DMARC _dmarc.example.test: malformed: p= is "
                        "not none, quarantine or reject"),
    "no_ptr": (_set(HOST_IP, "PTR", None),
               f"missing PTR {HOST_IP}: no PTR record"),
    "ptr_not_hostname": (_set(HOST_IP, "PTR", ["back.test."]),
                         f"wrong PTR {HOST_IP}: names back.test, not the "
                         "hostname mx.example.test"),
    "ptr_not_confirmed": (_set(HOST_IP, "PTR", ["other.test."]),
                          f"wrong PTR {HOST_IP}: names other.test, which "
                          f"does not resolve back to {HOST_IP}"),
    "mx_servfail": (_set("example.test.", "behaviour", {"MX": "servfail"}),
                    "error MX example.test: lookup failed (servfail)",
                    SPF_MX),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_zone_reported(tmpbase, case):
    change, want, *also = CASES[case]
    also = also[0] if also else ()
    d = make(tmpbase)
    zones = copy.deepcopy(good_zones(d.p))
    change(zones, tmpbase)
    rc, lines, bad = check(d, zones)
    assert rc == 1, lines
    assert [l for l in bad if l.startswith(want)], (want, lines)
    # Only what was broken is reported (and what follows from it).
    assert len([l for l in bad if l.startswith(want)]) == 1, bad
    assert all(l.startswith(want) or l.startswith(also) for l in bad), bad


def test_dmarc_reject_without_signing(tmpbase):
    d = make(tmpbase, key=False)
    zones = good_zones(d.p)
    del zones["s1._domainkey.example.test."]
    zones["_dmarc.example.test."]["TXT"] = [
        "v=DMARC1; p=reject; rua=mailto:postmaster@example.test"]
    rc, lines, bad = check(d, zones)
    assert rc == 1
    assert bad == [
        "missing DKIM example.test: no dkim-key for the domain in the "
        "config: mail leaves unsigned (ternctl dkim keygen example.test "
        "SELECTOR)",
        "danger DMARC _dmarc.example.test: p=reject while no dkim-key "
        "signs for example.test: forwarded mail fails SPF and is rejected"],\
        lines


def zones_from(text):
    """The records of ternctl dns's output, read by dnslib's zone-file
    parser, as DNSServer zones."""
    zones = {}
    for rr in RR.fromZone(text):
        z = zones.setdefault(str(rr.rname), {})
        t = QTYPE[rr.rtype]
        if t == "MX":
            v = (rr.rdata.preference, str(rr.rdata.label))
        elif t == "TXT":
            v = [s.decode() for s in rr.rdata.data]
        else:
            v = str(rr.rdata)
        z.setdefault(t, []).append(v)
    return zones


def test_printed_records_pass_check(tmpbase):
    d = make(tmpbase)
    r = run(d, "example.test")
    assert r.returncode == 0, r.stderr
    zones = zones_from(r.stdout)
    assert set(zones) == {"example.test.", "mx.example.test.",
                          "10.0.18.198.in-addr.arpa.",
                          "s1._domainkey.example.test.",
                          "_dmarc.example.test."}, r.stdout
    assert zones["example.test."]["MX"] == [(10, "mx.example.test.")]
    assert zones["mx.example.test."]["A"] == [HOST_IP]
    dk = "".join(zones["s1._domainkey.example.test."]["TXT"][0])
    assert dk == "v=DKIM1; k=rsa; p=" + d.p      # openssl's public key
    rc, lines, bad = check(d, zones)
    assert rc == 0 and bad == [], lines


def test_printed_dkim_record_verifies_with_dkimpy(tmpbase):
    """dkimpy signs with the key file and verifies against the printed
    record, fetched over DNS from the loopback server."""
    d = make(tmpbase)
    zones = zones_from(run(d, "example.test").stdout)
    msg = (b"From: anna@example.test\r\nTo: b@example.net\r\n"
           b"Subject: round trip\r\n\r\nHello.\r\n")
    sig = dkim.sign(msg, b"s1", b"example.test", d.key.read_bytes(),
                    include_headers=[b"from", b"to", b"subject"])
    with DNSServer(zones) as dns:
        def txt(name, timeout=5):
            q = DNSRecord.question(name.decode().rstrip("."), "TXT")
            a = DNSRecord.parse(q.send("127.0.0.1", dns.port,
                                       timeout=timeout))
            return b"".join(b"".join(rr.rdata.data) for rr in a.rr
                            if rr.rtype == QTYPE.TXT) or None
        assert dkim.verify(sig + msg, dnsfunc=txt)
        assert ("s1._domainkey.example.test", "TXT", "udp") in dns.log
        # and a record for another key does not verify it
        dns.set_records(DK, "TXT", [split255(
            "v=DKIM1; k=rsa; p=" + other_key_p(tmpbase))])
        assert not dkim.verify(sig + msg, dnsfunc=txt)


def test_ed25519_key_printed_and_checked(tmpbase):
    d = make(tmpbase)
    ek = tmpbase / "e1.key"
    openssl_key(ek, kind="ED25519")
    with open(d.conf, "a") as f:
        f.write(f'dkim-key example.test e1 "{ek}"\n')
    out = run(d, "example.test").stdout
    raw = base64.b64decode(openssl_p(ek))[-32:]      # SPKI ends in the key
    want = "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode()
    assert f'e1._domainkey.example.test. IN TXT ( "{want}" )' in out, out
    zones = zones_from(out)
    rc, lines, bad = check(d, zones)
    assert rc == 0 and bad == [], lines
    assert "ok DKIM e1._domainkey.example.test: ed25519-sha256, 256 bits" \
        in "\n".join(lines)


def test_not_a_local_domain_refused(tmpbase):
    d = make(tmpbase)
    for args in (["elsewhere.example"], ["elsewhere.example", "--check"]):
        r = run(d, *args)
        assert r.returncode == 2
        assert r.stdout == ""
        assert "elsewhere.example is not a local-domain of" in r.stderr


def test_usage_and_config_errors_exit_2(tmpbase):
    d = make(tmpbase)
    assert run(d).returncode == 2
    assert run(d, "example.test", "--bogus").returncode == 2
    assert run(d, "localhost").returncode == 2
    d.conf.write_text(d.conf.read_text() + "no-such-knob 1\n")
    r = run(d, "example.test")
    assert r.returncode == 2 and "no-such-knob" in r.stderr


def test_unknown_addresses_left_to_fill_in(tmpbase):
    """A config listening on 0.0.0.0 only: the A record is either what the
    interfaces say (public ones) or a placeholder comment, never a loopback
    or private address."""
    d = Daemon(tmpbase, extra="listen mx 0.0.0.0 port 25\n")
    out = run(d, "example.test").stdout
    a = [l for l in out.splitlines() if "\tIN A\t" in l or "\tIN AAAA\t" in l]
    assert a, out
    for line in a:
        assert "127.0.0.1" not in line and "\t10." not in line
    assert "; DKIM: no dkim-key for example.test in the config" in out


def test_ipv6_address_printed_and_checked(tmpbase):
    """An mx listener on an IPv6 address: its AAAA and ip6.arpa PTR are
    printed; served, they pass (SPF evaluated for the IPv6 client too);
    without the PTR, the IPv6 address is the one reported."""
    v6 = "3fff::10"                     # RFC 9637 documentation space
    d = make(tmpbase)
    with open(d.conf, "a") as f:
        f.write(f"listen mx {v6} port 25\n")
    out = run(d, "example.test").stdout
    assert f"mx.example.test.\tIN AAAA\t{v6}\n" in out, out
    ptr = "0.1." + "0." * 26 + "f.f.f.3.ip6.arpa."
    assert f"{ptr}\tIN PTR\tmx.example.test.\n" in out, out
    zones = zones_from(out)
    rc, lines, bad = check(d, zones)
    assert rc == 0 and bad == [], lines
    assert f"ok AAAA mx.example.test: {v6}" in lines
    assert f"ok PTR {v6}: mx.example.test (forward-confirmed)" in lines
    del zones[ptr]["PTR"]                # the name stays: NODATA
    rc, lines, bad = check(d, zones)
    assert rc == 1 and len(bad) == 1 and \
        bad[0].startswith(f"missing PTR {v6}: no PTR record"), lines


def test_unanswered_lookup_is_an_error_within_spf_timeout(tmpbase):
    """A nameserver that never answers one name: that line says error
    (timeout), after spf-timeout, and the rest is still checked."""
    d = make(tmpbase)
    with open(d.conf, "a") as f:
        f.write("spf-timeout 1s\n")
    zones = good_zones(d.p)
    zones["_dmarc.example.test."]["behaviour"] = "drop"
    rc, lines, bad = check(d, zones)
    assert rc == 1
    assert bad == ["error DMARC _dmarc.example.test: lookup failed "
                   "(timeout)"], lines
    assert len(lines) == 7


TESTKEY_HELPER = textwrap.dedent("""\
    import subprocess, sys
    sys.path.insert(0, sys.argv[1])
    from dnsserver import DNSServer
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["mount", "--bind", sys.argv[2], "/etc/resolv.conf"],
                   check=True)
    txt = sys.argv[4]
    zones = {"s1._domainkey.example.org": {"TXT": [[
        txt[i:i + 250] for i in range(0, len(txt), 250)]]}}
    with open(sys.argv[5], "w") as f:
        f.write("Nameservers 127.0.0.1\\n")
    with DNSServer(zones, port=53):
        r = subprocess.run(["opendkim-testkey", "-d", "example.org", "-s",
                            "s1", "-k", sys.argv[3], "-x", sys.argv[5],
                            "-vvv"], capture_output=True, timeout=30)
    sys.stdout.write("rc=%d %s" % (r.returncode,
                                   (r.stdout + r.stderr).decode()))
""")


def opendkim_testkey(tmpbase, key, txt):
    """opendkim-testkey: does the record txt hold key's public half?  In
    its own network and mount namespace, where 127.0.0.1:53 serves txt as
    s1._domainkey.example.org (its resolver, libunbound, answers .test
    names itself) and its config names that nameserver."""
    (tmpbase / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    (tmpbase / "testkey.py").write_text(TESTKEY_HELPER)
    r = subprocess.run(["unshare", "--net", "--mount", sys.executable,
                        str(tmpbase / "testkey.py"), HERE,
                        str(tmpbase / "resolv.conf"), str(key), txt,
                        str(tmpbase / "opendkim.conf")],
                       capture_output=True, text=True, timeout=60)
    return r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("opendkim-testkey") is None or
                    shutil.which("unshare") is None or os.getuid() != 0,
                    reason="opendkim-tools, unshare and root needed")
def test_printed_dkim_record_passes_opendkim_testkey(tmpbase):
    d = make(tmpbase)
    zones = zones_from(run(d, "example.test").stdout)
    txt = "".join(zones["s1._domainkey.example.test."]["TXT"][0])
    out = opendkim_testkey(tmpbase, d.key, txt)
    # no DNSSEC here: "key not secure" is its word for a match
    assert out.startswith("rc=0 ") and ("key OK" in out or
                                        "key not secure" in out), out
    other = "v=DKIM1; k=rsa; p=" + other_key_p(tmpbase)
    out = opendkim_testkey(tmpbase, d.key, other)
    assert not out.startswith("rc=0 ") and "keys do not match" in out, out


@pytest.mark.parametrize("line", [
    'route * via "smtp.provider.example" port 587',
    'fallback-relay "smtp.provider.example"'])
def test_smarthost_named_in_spf(tmpbase, line):
    d = Daemon(tmpbase, extra=f"listen mx {HOST_IP} port 25\n{line}\n")
    out = run(d, "example.test").stdout
    assert 'example.test.\tIN TXT\t"v=spf1 mx a:smtp.provider.example ' \
        '-all"\n' in out, out
    assert 'mx.example.test.\tIN TXT\t"v=spf1 a a:smtp.provider.example ' \
        '-all"\n' in out, out


def test_u_label_domain_printed_as_a_labels(tmpbase):
    """A local-domain in U-labels: the records are for its A-labels, and
    its dkim-key (written as A-labels) is found."""
    kpath = tmpbase / "s1.key"
    openssl_key(kpath, 2048)
    d = Daemon(tmpbase, extra=f'local-domain "bücher.test"\n'
                              f"listen mx {HOST_IP} port 25\n"
                              f'dkim-key xn--bcher-kva.test s1 "{kpath}"\n')
    r = run(d, "bücher.test")
    assert r.returncode == 0, r.stderr
    assert "xn--bcher-kva.test.\tIN MX\t10 mx.example.test.\n" in r.stdout
    assert ('s1._domainkey.xn--bcher-kva.test. IN TXT ( "v=DKIM1; k=rsa; '
            'p=' + openssl_p(kpath)[:200]) in r.stdout, r.stdout
    assert "bücher" not in r.stdout
