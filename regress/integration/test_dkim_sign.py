"""DKIM signing of submitted mail (RFC 6376, RFC 8463): mail from an
authenticated msa session and from sendmail(1) is signed with the From:
domain's keys (RSA-2048 and Ed25519: both signatures when both are
configured), relaxed/relaxed, From oversigned, t= set.  The keys are made
by `ternctl dkim keygen`, read by the root parent and held by the vault
alone.  The delivered messages are verified by two independent
implementations: dkimpy (python3-dkim) and OpenDKIM (opendkim-testmsg,
which looks the key up in the DNS: it runs in its own network and mount
namespace, with a loopback DNS server on port 53 serving the record).
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap

import dkim
import pytest

from conftest import TERND, SMTPConn, free_port, wait_for
from test_privsep import memory_has, role_pids, roles
from test_remote import MX
from test_sendmail import run as sendmail_run, sendmail  # noqa: F401
from test_tls import Client, make_server_ca

pytestmark = pytest.mark.usefixtures("sanitizer_check")

PASSWORD = "Sign-me-Pw-8xQ2v"
ANNA = "anna@example.test"
HERE = os.path.dirname(os.path.abspath(__file__))


def keygen(d, selector, kind):
    """ternctl dkim keygen: the key file and the TXT record's value."""
    r = d.ctl("dkim", "keygen", "example.test", selector, kind, check=True)
    path = re.search(r"^; the key: (\S+) \(mode 0600\)$", r.stdout,
                     re.M).group(1)
    rec = re.search(r'^%s\._domainkey\.example\.test\. IN TXT \((.*?)\)$'
                    % selector, r.stdout, re.M | re.S).group(1)
    txt = "".join(re.findall(r'"([^"]*)"', rec))
    assert re.search(r"^;   dkim-key example\.test %s %s$" % (selector, path),
                     r.stdout, re.M), r.stdout
    return path, txt


def make_signer(make_daemon, tmpbase, extra=""):
    """msa (STARTTLS) on d.msa, account anna@example.test, a submit socket,
    keys rsa1 (RSA-2048) and ed1 (Ed25519) for example.test; d.txt maps
    the record names to their TXT values."""
    ca = tmpbase / "ca"
    ctx = make_server_ca(ca)
    msa = free_port()
    d = make_daemon(f'tls-cert "{ca}/leaf.pem"\ntls-key "{ca}/leaf.key"\n'
                    f"listen msa 127.0.0.1 port {msa}\n"
                    f'dkim-key-dir "{tmpbase}/dkim"\n' + extra,
                    vusers=("demo", "alice", "bob", "anna"))
    d.txt, d.keys = {}, {}
    lines = []
    for sel, kind in (("rsa1", "rsa"), ("ed1", "ed25519")):
        path, txt = keygen(d, sel, kind)
        assert os.stat(path).st_mode & 0o777 == 0o600
        d.txt[f"{sel}._domainkey.example.test."] = txt
        d.keys[sel] = path
        lines.append(f'dkim-key example.test {sel} "{path}"\n')
    with open(d.conf, "a") as f:
        f.writelines(lines)
    d.ctl("user", "add", ANNA, input=PASSWORD + "\n", check=True)
    d.msa, d.ctx = msa, ctx
    d.submit = tmpbase / "submit.sock"
    d.start()
    assert wait_for(d.submit.exists, 10), d.logtext()
    return d


@pytest.fixture
def signer(make_daemon, tmpbase):
    return make_signer(make_daemon, tmpbase)


def submit(d, msg, rcpt="alice@example.test"):
    with Client(d.msa) as c:
        c.ehlo()
        c.starttls(context=d.ctx)
        c.ehlo()
        c.login(ANNA, PASSWORD)
        c.sendmail(ANNA, [rcpt], msg)


def delivered(d, user="alice", count=1):
    assert d.wait_mail(user, count), d.logtext()[-3000:]
    files = d.maildir(user)
    assert len(files) == count, files
    # The Maildir file has LF line ends; the message on the wire, CRLF.
    return [re.sub(rb"\r?\n", b"\r\n", f.read_bytes()) for f in files]


def dnsfunc(d):
    def lookup(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        v = d.txt.get(name if name.endswith(".") else name + ".")
        return v.encode() if v else None
    return lookup


def signatures(msg):
    head = msg.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    return re.findall(rb"^DKIM-Signature:.*?(?=\r\n(?! |\t))", head,
                      re.M | re.S)


def verify_all(d, msg):
    """dkimpy's verdict on every signature, by selector."""
    out = {}
    sigs = signatures(msg)
    for i, sig in enumerate(sigs):
        sel = re.search(rb"\bs=([^;]+);", sig).group(1).decode()
        try:
            out[sel] = dkim.DKIM(msg, minkey=1024).verify(
                idx=i, dnsfunc=dnsfunc(d))
        except dkim.DKIMException:
            out[sel] = False
    return out


def tags(sig):
    val = re.sub(rb"\s+", b"", sig.split(b":", 1)[1]).decode()
    return dict(t.split("=", 1) for t in val.split(";") if t)


BODY_CASES = {
    "plain": b"Hello.\r\n",
    "empty": b"",
    "trailing-ws": b"line with blanks   \r\n\tindented\t \r\n  \r\n\r\n",
    "no-final-crlf": b"no newline at the end",
    "blank-lines-end": b"x\r\n\r\n\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(BODY_CASES))
def test_msa_mail_signed_rsa_and_ed25519(signer, case):
    msg = (b"From: Anna <anna@example.test>\r\n"
           b"To: alice@example.test\r\n"
           b"Subject: a long subject that is folded over several lines"
           b"\r\n\tso that the\r\n   relaxed header canonicalization\r\n"
           b" \tmatters   here\r\n"
           b"X-Unsigned: not in h=\r\n"
           # a field far longer than the 4 KiB the From: check keeps
           b"References: " + b"\r\n ".join(
               b"<%d.long-thread-message-id@example.test>" % i
               for i in range(150)) + b"\r\n"
           b"\r\n" + BODY_CASES[case])
    submit(signer, msg)
    (got,) = delivered(signer)
    sigs = signatures(got)
    assert len(sigs) == 2, got.split(b"\r\n\r\n")[0].decode()
    t = [tags(s) for s in sigs]
    assert sorted(x["a"] for x in t) == ["ed25519-sha256", "rsa-sha256"]
    for x in t:
        assert x["c"] == "relaxed/relaxed" and x["d"] == "example.test"
        assert x["h"].split(":").count("from") == 2       # oversigned
        assert "x-unsigned" not in x["h"] and "references" in x["h"]
        assert "date" in x["h"] and "message-id" in x["h"]   # ours, added
        assert abs(int(x["t"]) - int(__import__("time").time())) < 3600
    assert verify_all(signer, got) == {"rsa1": True, "ed1": True}
    assert "event=dkim-sign result=ok d=example.test s=rsa1,ed1" in \
        signer.logtext()


def test_tampered_message_fails(signer):
    submit(signer, b"From: anna@example.test\r\nSubject: t\r\n\r\n"
                   b"pay 10 euros\r\n")
    (got,) = delivered(signer)
    assert verify_all(signer, got) == {"rsa1": True, "ed1": True}
    body = got.replace(b"pay 10 euros", b"pay 99 euros")
    assert verify_all(signer, body) == {"rsa1": False, "ed1": False}
    head = got.replace(b"Subject: t", b"Subject: T!")
    assert verify_all(signer, head) == {"rsa1": False, "ed1": False}
    # A second From: above the first is what oversigning catches.
    extra = got.replace(b"From: anna", b"From: mallory@evil.test\r\n"
                        b"From: anna", 1)
    assert verify_all(signer, extra) == {"rsa1": False, "ed1": False}
    # The wrong key in the DNS fails too.
    signer.txt["rsa1._domainkey.example.test."], \
        signer.txt["ed1._domainkey.example.test."] = \
        keygen(signer, "other", "rsa")[1], keygen(signer, "other2",
                                                  "ed25519")[1]
    assert verify_all(signer, got) == {"rsa1": False, "ed1": False}


def test_relayed_message_verifies(make_daemon, tmpbase):
    """Relayed to a remote MX (aiosmtpd, through a route): what arrives
    there verifies, both signatures."""
    port = free_port()
    with MX("127.0.0.7", port) as sink:
        d = make_signer(make_daemon, tmpbase,
                        f"route remote.test via 127.0.0.7 port {port}\n")
        submit(d, b"From: Anna <anna@example.test>\r\nTo: x@remote.test"
                  b"\r\nSubject: out\r\n\r\n.leading dot\r\n..two\r\n",
               rcpt="x@remote.test")
        assert wait_for(lambda: len(sink.messages) == 1, 20), d.logtext()
    msg = sink.messages[0][2]
    assert b"\r\n.leading dot\r\n..two\r\n" in msg
    assert verify_all(d, msg) == {"rsa1": True, "ed1": True}
    assert dkim.verify(msg, dnsfunc=dnsfunc(d))


def test_reload_adds_a_key_and_bad_keys_are_config_errors(signer, tmpbase):
    path, txt = keygen(signer, "ed2", "ed25519")
    signer.txt["ed2._domainkey.example.test."] = txt
    good = signer.conf.read_text()
    # A key that is not one, or too short, is refused (ternd -n, reload).
    junk = tmpbase / "junk.key"
    junk.write_text("not a key\n")
    short = tmpbase / "short.key"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:1024", "-out", str(short)], check=True,
                   capture_output=True)
    for bad, why in ((junk, "not a PEM private key"),
                     (short, "RSA key of 1024 bits"),
                     (tmpbase / "missing.key", "No such file")):
        signer.conf.write_text(good + f'dkim-key example.test x "{bad}"\n')
        r = subprocess.run([str(TERND), "-n", "-f", str(signer.conf)],
                           capture_output=True, text=True)
        assert r.returncode != 0 and why in r.stderr + r.stdout, r
    signer.conf.write_text(good + f'dkim-key example.test ed2 "{path}"\n')
    old = role_pids(signer)["smtp"]
    signer.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "event=reload result=ok" in signer.logtext(), 10)
    # Sessions go to the new smtp process once the old one is gone.
    assert wait_for(lambda: roles(signer).get("smtp", [old]) != [old] and
                    old not in roles(signer).get("smtp", [old]), 15)
    submit(signer, b"From: anna@example.test\r\nSubject: r\r\n\r\nx\r\n")
    (got,) = delivered(signer)
    assert verify_all(signer, got) == {"rsa1": True, "ed1": True,
                                       "ed2": True}


def test_sendmail_mail_signed(signer, sendmail):  # noqa: F811
    r = sendmail_run(signer, sendmail, ["-f", "root@example.test",
                                        "alice@example.test"],
                     b"From: Root <root@example.test>\nSubject: local\n\n"
                     b"trailing   \nno newline at end")
    assert r.returncode == 0, r.stderr
    (got,) = delivered(signer)
    assert verify_all(signer, got) == {"rsa1": True, "ed1": True}


def test_mx_mail_not_signed_and_other_domains_not_signed(signer):
    with SMTPConn(signer.port) as c:
        c.cmd("EHLO client.example.org")
        c.cmd("MAIL FROM:<x@example.org>")
        assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        assert c.cmd("From: anna@example.test\r\nSubject: mx\r\n\r\nx\r\n"
                     ".")[0] == 250
    (got,) = delivered(signer)
    assert signatures(got) == []
    # An account's other domain with no key: sent unsigned.
    with open(signer.conf, "a") as f:
        f.write(f"allow-sender {ANNA} @league.test\n")
    signer.stop()
    signer.start()
    submit(signer, b"From: news@league.test\r\nSubject: l\r\n\r\nx\r\n")
    got = delivered(signer, count=2)
    assert [signatures(m) for m in got] == [[], []]


def test_trusted_network_signed_when_configured(make_daemon, tmpbase):
    d = make_daemon(f'dkim-key-dir "{tmpbase}/dkim"\n'
                    "trusted-network 127.0.0.0/8\ndkim-sign-trusted yes\n")
    path, txt = keygen(d, "ed1", "ed25519")
    with open(d.conf, "a") as f:
        f.write(f'dkim-key example.test ed1 "{path}"\n')
    d.txt = {"ed1._domainkey.example.test.": txt}
    d.start()
    with SMTPConn(d.port) as c:
        c.cmd("EHLO client.example.org")
        c.cmd("MAIL FROM:<app@example.test>")
        assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        assert c.cmd("From: app@example.test\r\n\r\nx\r\n.")[0] == 250
    (got,) = delivered(d)
    assert verify_all(d, got) == {"ed1": True}


OPENDKIM_HELPER = textwrap.dedent("""\
    import subprocess, sys
    sys.path.insert(0, sys.argv[1])
    from dnsserver import DNSServer
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["mount", "--bind", sys.argv[2], "/etc/resolv.conf"],
                   check=True)
    zones = {}
    for arg in sys.argv[4:]:
        name, txt = arg.split("=", 1)
        zones[name] = {"TXT": [[txt[i:i + 250]
                                for i in range(0, len(txt), 250)]]}
    with DNSServer(zones, port=53):
        r = subprocess.run(["opendkim-testmsg"], stdin=open(sys.argv[3],
                           "rb"), capture_output=True, timeout=30)
    sys.stdout.write("rc=%d %s" % (r.returncode,
                                   (r.stdout + r.stderr).decode()))
""")


def opendkim_verify(d, tmpbase, msg, only):
    """opendkim-testmsg on msg with only the signature by selector `only`
    kept (it checks the first signature), in its own network and mount
    namespace where 127.0.0.1:53 serves d.txt."""
    head, body = msg.split(b"\r\n\r\n", 1)
    keep = [s for s in signatures(msg)
            if re.search(rb"\bs=%s;" % only.encode(), s)]
    for s in signatures(msg):
        head = head.replace(s + b"\r\n", b"")
    (tmpbase / "odk.eml").write_bytes(keep[0] + b"\r\n" + head +
                                      b"\r\n\r\n" + body)
    (tmpbase / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    (tmpbase / "odk.py").write_text(OPENDKIM_HELPER)
    r = subprocess.run(["unshare", "--net", "--mount", sys.executable,
                        str(tmpbase / "odk.py"), HERE,
                        str(tmpbase / "resolv.conf"),
                        str(tmpbase / "odk.eml"),
                        *(f"{k}={v}" for k, v in d.txt.items())],
                       capture_output=True, text=True, timeout=60)
    return r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("opendkim-testmsg") is None or
                    shutil.which("unshare") is None or os.getuid() != 0,
                    reason="opendkim-tools, unshare and root needed")
def test_opendkim_verifies(signer, tmpbase):
    submit(signer, b"From: Anna <anna@example.test>\r\nSubject: odk\r\n"
                   b"\r\nbody  with  spaces \r\n\r\n")
    (got,) = delivered(signer)
    bad = got.replace(b"spaces", b"SPACES")
    for sel in ("rsa1", "ed1"):
        out = opendkim_verify(signer, tmpbase, got, sel)
        assert out == "rc=0 ", (sel, out)
        out = opendkim_verify(signer, tmpbase, bad, sel)
        assert not out.startswith("rc=0 ") and \
            "dkim_eom(): Bad signature" in out, (sel, out)


def key_needles(path):
    """Byte strings that only a holder of the private key has: PEM lines
    and the raw private numbers (big- and little-endian)."""
    pem = open(path).read()
    lines = [l.encode() for l in pem.splitlines() if "-----" not in l]
    needles = [l for l in lines if len(l) >= 40][:3]
    der = subprocess.run(["openssl", "pkey", "-in", path, "-text",
                          "-noout"], capture_output=True, text=True).stdout
    for name in ("privateExponent", "priv"):
        m = re.search(name + r":\s*\n((?:\s+[0-9a-f:]+\n)+)", der)
        if m:
            raw = bytes.fromhex(re.sub(r"[\s:]", "", m.group(1)))
            raw = raw.lstrip(b"\0")
            needles += [raw[:24], raw[::-1][:24]]
    return needles


def test_private_keys_never_in_smtp_or_queue_memory(signer):
    submit(signer, b"From: anna@example.test\r\nSubject: m\r\n\r\nx\r\n")
    delivered(signer)
    pids = role_pids(signer)
    for sel, path in signer.keys.items():
        needles = key_needles(path)
        assert len(needles) >= 3, sel
        # The method finds a key where one is: the parent holds the PEM.
        assert any(memory_has(signer.proc.pid, n) for n in needles), sel
        for role in ("smtp", "queue"):
            for n in needles:
                assert not memory_has(pids[role], n), (role, sel)


def test_bdat_submission_signed(signer):
    """A message sent in BDAT chunks (RFC 3030) is signed like one sent by
    DATA: the body hash follows the lines across chunk boundaries."""
    head = (b"From: Anna <anna@example.test>\r\nTo: alice@example.test\r\n"
            b"Subject: chunked\r\n\r\n")
    body = b"first line\r\nsecond line split " + b"x" * 50 + b"\r\nend\r\n"
    msg = head + body
    cut = len(head) + 17          # inside the body's second line
    with Client(signer.msa) as c:
        c.ehlo()
        c.starttls(context=signer.ctx)
        c.ehlo()
        assert c.has_extn("chunking")
        c.login(ANNA, PASSWORD)
        assert c.mail(ANNA)[0] == 250
        assert c.rcpt("alice@example.test")[0] == 250
        c.send(b"BDAT %d\r\n" % cut + msg[:cut])
        assert c.getreply()[0] == 250
        rest = msg[cut:]
        c.send(b"BDAT %d LAST\r\n" % len(rest) + rest)
        code, text = c.getreply()
        assert code == 250, text
    (got,) = delivered(signer)
    assert got.endswith(body), got
    assert verify_all(signer, got) == {"rsa1": True, "ed1": True}
