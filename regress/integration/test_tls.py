"""TLS on our own listeners: STARTTLS on mx and msa listeners, implicit TLS
(RFC 8314) on `tls implicit` ones, one engine; the certificate the root
parent reads (or the self-signed one it makes) and hands to the smtp
process; input hygiene around STARTTLS; the Received: header; resumption.
Clients verify against a test CA whose server certificate names
mx.example.test and 127.0.0.1.
"""
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from conftest import TERND, SMTPConn, free_port, wait_for
from test_privsep import memory_has, role_pids
from test_remote import make_ca

# Any sanitizer report from the daemon fails the test (ASan build).
pytestmark = pytest.mark.usefixtures("sanitizer_check")

HOST = "mx.example.test"
FROM = "someone@example.org"
MSG = b"Subject: tls\r\nFrom: <someone@example.org>\r\n\r\nover TLS\r\n"


def make_server_ca(tmp):
    """A test CA and a server certificate for HOST and 127.0.0.1, signed
    by it, as make_ca (test_remote.py) makes them; the clients' context."""
    def run(*a):
        subprocess.run(a, check=True, capture_output=True, cwd=tmp)
    tmp.mkdir(exist_ok=True)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
        "2", "-subj", "/CN=Tern test CA", "-keyout", "ca.key", "-out",
        "ca.pem")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj",
        f"/CN={HOST}", "-keyout", "leaf.key", "-out", "leaf.csr")
    (tmp / "ext").write_text(f"subjectAltName=DNS:{HOST},IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem",
        "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile",
        "ext", "-out", "leaf.pem")
    ctx = ssl.create_default_context(cafile=str(tmp / "ca.pem"))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    return ctx


@pytest.fixture
def tls(make_daemon, tmpbase):
    """A daemon with the test CA's certificate: mx (STARTTLS), msa on
    d.msa (STARTTLS) and d.smtps (implicit TLS); d.ctx verifies it."""
    ca = tmpbase / "ca"
    ctx = make_server_ca(ca)
    msa, smtps = free_port(), free_port()
    d = make_daemon(f'tls-cert "{ca}/leaf.pem"\ntls-key "{ca}/leaf.key"\n'
                    f"listen msa 127.0.0.1 port {msa} auth-required no\n"
                    f"listen msa 127.0.0.1 port {smtps} tls implicit "
                    "auth-required no\n")
    d.msa, d.smtps, d.ctx, d.ca = msa, smtps, ctx, ca
    return d.start()


class Client(smtplib.SMTP):
    """smtplib on 127.0.0.1, TLS from the first byte when implicit."""

    def __init__(self, port, ctx=None, implicit=False):
        self.implicit_ctx = ctx if implicit else None
        super().__init__("127.0.0.1", port, "client.example.org", 30)

    def _get_socket(self, host, port, timeout):
        sock = socket.create_connection((host, port), timeout)
        if self.implicit_ctx:
            sock = self.implicit_ctx.wrap_socket(sock,
                                                 server_hostname=host)
        return sock


def starttls(c, ctx):
    """STARTTLS on an SMTPConn; its socket becomes the TLS one."""
    code, text = c.cmd("STARTTLS")
    assert code == 220 and text.startswith("220 2.0.0"), text
    assert c.buf == b""
    c.sock = ctx.wrap_socket(c.sock, server_hostname="127.0.0.1")
    return c


def ehlo_kw(c):
    code, text = c.cmd("EHLO client.example.org")
    assert code == 250, text
    return [l[4:] for l in text.split("\n")[1:]]


def smtp_fds(d):
    pid = role_pids(d)["smtp"]
    return pid, len(os.listdir(f"/proc/{pid}/fd"))


def s_client(port, *args, starttls=True, stdin="QUIT\n"):
    """openssl s_client against port; (exit code, output)."""
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
           "-ign_eof", "-crlf", *args]
    if starttls:
        cmd[2:2] = ["-starttls", "smtp"]
    r = subprocess.run(cmd, input=stdin, capture_output=True, text=True,
                       timeout=30)
    return r.returncode, r.stdout + r.stderr


def start_fails(d):
    """Start d's config in the foreground; it must refuse: its stderr."""
    r = subprocess.run([str(TERND), "-d", "-f", str(d.conf)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, r.stderr
    return r.stderr


def conf_line(d, prefix):
    """1-based line number of the first config line starting with prefix."""
    lines = d.conf.read_text().splitlines()
    return next(i + 1 for i, l in enumerate(lines) if l.startswith(prefix))


# ---- the certificate -------------------------------------------------------

def test_unreadable_tls_cert_refuses_to_start(make_daemon, tmpbase):
    missing = tmpbase / "no-such-chain.pem"
    d = make_daemon(f'tls-cert "{missing}"')
    err = start_fails(d)
    n = conf_line(d, "tls-cert")
    assert f"{d.conf}:{n}: tls-cert {missing}: No such file or directory" \
        in err, err
    # ternd -n says the same, without starting anything.
    r = subprocess.run([str(TERND), "-n", "-f", str(d.conf)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and f"{d.conf}:{n}: tls-cert" in r.stderr


def test_tls_cert_that_is_no_certificate_or_wrong_key_refuses(make_daemon,
                                                             tmpbase):
    make_ca(tmpbase, HOST)
    other = tmpbase / "other"
    other.mkdir()
    make_ca(other, HOST)
    junk = tmpbase / "junk.pem"
    junk.write_text("not a certificate\n")
    d = make_daemon(f'tls-cert "{junk}"\ntls-key "{tmpbase}/leaf.key"')
    err = start_fails(d)
    assert f"{d.conf}:{conf_line(d, 'tls-cert')}: tls-cert {junk}: no " \
        "certificate found" in err, err
    # A key that belongs to another certificate: named with its line.
    d.conf.write_text(d.conf.read_text().replace(str(junk),
                                                 str(tmpbase / "leaf.pem"))
                      .replace(f"{tmpbase}/leaf.key", f"{other}/leaf.key"))
    err = start_fails(d)
    assert f"{d.conf}:{conf_line(d, 'tls-key')}: tls-key {other}/leaf.key: " \
        "the private key does not belong to the certificate" in err, err


def test_self_signed_certificate_made_once_and_reused(daemon):
    cert = daemon.base / "selfsigned-cert.pem"
    key = daemon.base / "selfsigned-key.pem"
    for f in (cert, key):
        st = f.stat()
        assert st.st_mode & 0o777 == 0o600, oct(st.st_mode)
        assert st.st_uid == os.geteuid()
    text = subprocess.run(["openssl", "x509", "-noout", "-subject", "-ext",
                           "subjectAltName", "-in", str(cert)],
                          capture_output=True, text=True, check=True).stdout
    assert f"CN = {HOST}" in text and f"DNS:{HOST}" in text, text
    assert "created a self-signed TLS certificate" in daemon.logtext()
    before = (cert.read_bytes(), key.read_bytes())
    daemon.stop()
    daemon.start()
    assert (cert.read_bytes(), key.read_bytes()) == before
    assert daemon.logtext().count("created a self-signed TLS") == 1
    # A new hostname gets a new certificate.
    daemon.stop()
    daemon.conf.write_text(daemon.conf.read_text().replace(
        f'hostname "{HOST}"', 'hostname "mx2.example.test"'))
    daemon.start()
    text = subprocess.run(["openssl", "x509", "-noout", "-subject", "-in",
                           str(cert)], capture_output=True, text=True,
                          check=True).stdout
    assert "CN = mx2.example.test" in text, text
    assert daemon.logtext().count("created a self-signed TLS") == 2


def test_self_signed_certificate_is_served_and_pins(daemon):
    # No tls-cert: the certificate served is the self-signed file, and a
    # client that pins it (its own trust anchor) verifies the host name.
    pem = (daemon.base / "selfsigned-cert.pem").read_text()
    ctx = ssl.create_default_context(cadata=pem)
    with Client(daemon.port) as s:
        s.ehlo()
        assert s.has_extn("starttls")
        s._host = HOST          # the name to verify
        s.starttls(context=ctx)
        der = s.sock.getpeercert(binary_form=True)
    assert der == ssl.PEM_cert_to_DER_cert(pem)


# ---- STARTTLS and implicit TLS with verification ---------------------------

@pytest.mark.parametrize("listener", ["mx", "msa"])
def test_starttls_verified_delivers(tls, listener):
    port = tls.port if listener == "mx" else tls.msa
    with Client(port) as s:
        code, _ = s.ehlo()
        assert code == 250 and s.has_extn("starttls"), s.esmtp_features
        code, text = s.starttls(context=tls.ctx)
        assert code == 220, text
        assert s.sock.version() in ("TLSv1.2", "TLSv1.3")
        # Inside TLS: EHLO again, and STARTTLS is no longer offered.
        code, _ = s.ehlo()
        assert code == 250 and not s.has_extn("starttls"), s.esmtp_features
        s.sendmail(FROM, ["alice@example.test"], MSG)
    assert tls.wait_mail("alice"), tls.logtext()
    assert re.search(r"smtp: s=\w+ event=tls result=ok protocol=TLSv1\.[23] "
                     r"cipher=\S+ bits=\d+ resumed=no", tls.logtext())


def test_implicit_tls_verified_delivers(tls):
    with Client(tls.smtps, tls.ctx, implicit=True) as s:
        assert s.sock.version() in ("TLSv1.2", "TLSv1.3")
        code, _ = s.ehlo()
        # Already in TLS: nothing to STARTTLS.
        assert code == 250 and not s.has_extn("starttls"), s.esmtp_features
        s.sendmail(FROM, ["bob@example.test"], MSG)
    assert tls.wait_mail("bob"), tls.logtext()
    assert f"event=connect listener=127.0.0.1:{tls.smtps} tls=implicit" in \
        tls.logtext()


def test_plaintext_to_the_implicit_port_is_a_failed_handshake(tls):
    c = SMTPConn(tls.smtps, greet=False)
    c.send("EHLO client.example.org\r\n")
    assert c.closed(10)
    assert not c.rest.startswith(b"220"), c.rest
    assert wait_for(lambda: "event=tls result=fail" in tls.logtext())


def test_swaks_tls_and_tls_on_connect(tls):
    for port, mode in ((tls.msa, "--tls"), (tls.smtps, "--tlsc")):
        r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port",
                            str(port), mode, "--tls-verify", "--tls-ca-path",
                            str(tls.ca / "ca.pem"), "--from", FROM, "--to",
                            "alice@example.test", "--helo",
                            "client.example.org", "--timeout", "30"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert re.search(r"TLS started with cipher TLSv1\.[23]", r.stdout), \
            r.stdout
        assert "250 2.0.0 Ok: queued as" in r.stdout, r.stdout
    assert tls.wait_mail("alice", 2), tls.logtext()


# ---- input hygiene -----------------------------------------------------------

def test_commands_pipelined_after_starttls_are_refused(tls):
    # CVE-2011-0411: "RSET" read in plaintext must never be answered as
    # if said inside TLS.  The session is refused, its input discarded.
    with SMTPConn(tls.port) as c:
        ehlo_kw(c)
        c.send("STARTTLS\r\nRSET\r\n")
        code, text = c.reply()
        assert code == 421 and text.startswith("421 4.7.0"), text
        assert "pipelined after STARTTLS" in text
        assert c.closed(10)
        assert b"250" not in c.rest, c.rest
    assert "event=starttls result=reject" in tls.logtext()


def test_starttls_twice_and_in_a_transaction(tls):
    with SMTPConn(tls.port) as c:
        ehlo_kw(c)
        assert c.cmd(f"MAIL FROM:<{FROM}>")[0] == 250
        code, text = c.cmd("STARTTLS")
        assert code == 503 and text.startswith("503 5.5.1"), text
        assert c.cmd("RSET")[0] == 250
        starttls(c, tls.ctx)
        # RFC 3207: the EHLO before TLS is forgotten; STARTTLS is gone.
        code, text = c.cmd(f"MAIL FROM:<{FROM}>")
        assert code == 503 and "HELO or EHLO first" in text, text
        assert "STARTTLS" not in ehlo_kw(c)
        code, text = c.cmd("STARTTLS")
        assert code == 503 and text.startswith("503 5.5.1"), text
        assert c.cmd("NOOP")[0] == 250      # the session goes on


def test_no_starttls_where_not_offered(make_daemon):
    msa = free_port()
    d = make_daemon(f"listen msa 127.0.0.1 port {msa} tls none").start()
    with SMTPConn(msa) as c:
        assert "STARTTLS" not in ehlo_kw(c)
        code, text = c.cmd("STARTTLS")
        assert code == 502 and text.startswith("502 5.5.1"), text
    # Nor on the local submission socket.
    with socket.socket(socket.AF_UNIX) as u:
        u.connect(str(d.base / "submit.sock"))
        u.settimeout(10)
        f = u.makefile("rwb")
        assert f.readline().startswith(b"220")
        f.write(b"EHLO localhost\r\n")
        f.flush()
        lines = []
        while not lines or lines[-1][3:4] != b" ":
            lines.append(f.readline())
        assert not any(b"STARTTLS" in l for l in lines), lines


def test_failed_handshakes_leak_nothing(tls):
    pid, before = smtp_fds(tls)
    for i in range(5):
        with SMTPConn(tls.port) as c:       # STARTTLS, then junk
            ehlo_kw(c)
            assert c.cmd("STARTTLS")[0] == 220
            c.send(b"\x16\x03\x01\x00\x05hello")
            assert c.closed(10)
        c = SMTPConn(tls.smtps, greet=False)   # not TLS at all
        c.send(b"GET / HTTP/1.0\r\n\r\n")
        assert c.closed(10)
        c.close()
        with socket.create_connection(("127.0.0.1", tls.smtps)) as raw:
            pass                            # gone before the handshake
    assert wait_for(lambda: tls.logtext().count("event=tls result=fail")
                    >= 15), tls.logtext()
    assert wait_for(lambda: smtp_fds(tls) == (pid, before)), \
        (smtp_fds(tls), before)
    # The same process serves on.
    with Client(tls.msa) as s:
        s.starttls(context=tls.ctx)
        s.sendmail(FROM, ["alice@example.test"], MSG)
    assert role_pids(tls)["smtp"] == pid


def test_msa_relays_only_for_trusted_networks(tls):
    # No AUTH yet: TLS alone does not make a client a relay.
    with Client(tls.msa) as s:
        s.starttls(context=tls.ctx)
        s.ehlo()
        s.mail(FROM)
        code, text = s.rcpt("someone@elsewhere.example")
        assert code == 554 and b"relaying denied" in text, text


# ---- protocol versions, ciphers, resumption --------------------------------

def test_tls_1_1_is_refused(tls):
    # The client is made willing (security level 0); the server refuses.
    rc, out = s_client(tls.port, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert rc != 0 and "alert protocol version" in out, out
    rc, out = s_client(tls.smtps, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0",
                       starttls=False)
    assert rc != 0 and "alert protocol version" in out, out
    rc, out = s_client(tls.port, "-tls1_2")
    assert rc == 0 and "New, TLSv1.2" in out, out


def test_client_cipher_preference_is_honoured(tls):
    a, b = "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384"
    for first, second in ((a, b), (b, a)):
        rc, out = s_client(tls.port, "-tls1_2", "-cipher",
                           f"{first}:{second}")
        assert rc == 0 and f"Cipher is {first}" in out, out


@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
@pytest.mark.parametrize("implicit", [False, True])
def test_session_resumption(tls, tmpbase, version, implicit):
    port = tls.smtps if implicit else tls.port
    sess = tmpbase / "session.pem"
    rc, out = s_client(port, version, "-sess_out", str(sess),
                       starttls=not implicit)
    assert rc == 0 and "New, TLSv1." in out and "221 2.0.0" in out, out
    # The server keeps the session itself: no stateless ticket (TLS 1.2:
    # resumed by session id; TLS 1.3: a stateful ticket).
    if version == "-tls1_2":
        assert "TLS session ticket:" not in out, out
    rc, out = s_client(port, version, "-sess_in", str(sess),
                       starttls=not implicit)
    assert rc == 0 and "Reused, TLSv1." in out, out
    assert "resumed=yes" in tls.logtext()


# ---- the Received: header ------------------------------------------------------

def received(msg):
    m = re.search(rb"^Received: .*?;\r?\n\t[^\r\n]+", msg, re.M | re.S)
    assert m, msg[:400]
    return m.group(0).decode()


def test_received_header_names_esmtps_and_the_tls_version(tls):
    with Client(tls.port) as s:
        s.starttls(context=tls.ctx)
        s.sendmail(FROM, ["alice@example.test"], MSG)
        version = s.sock.version()
        cipher = s.sock.cipher()[0]
    with Client(tls.smtps, tls.ctx, implicit=True) as s:
        s.sendmail(FROM, ["bob@example.test"], MSG)
    with Client(tls.port) as s:
        s.sendmail(FROM, ["demo@example.test"], MSG)
    for user in ("alice", "bob", "demo"):
        assert tls.wait_mail(user), tls.logtext()
    r = received(tls.maildir("alice")[0].read_bytes())
    assert f"(using {version} with cipher {cipher} (" in r, r
    assert " with ESMTPS id " in r, r
    r = received(tls.maildir("bob")[0].read_bytes())
    assert re.search(r"\(using TLSv1\.[23] with cipher \S+ \(\d+/\d+ bits\)\)",
                     r) and " with ESMTPS id " in r, r
    r = received(tls.maildir("demo")[0].read_bytes())
    assert " with ESMTP id " in r and "using" not in r, r


# ---- the key: read by the parent, held by smtp alone ---------------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_root_only_key_file_is_read_by_the_parent(make_daemon, tmpbase):
    ca = tmpbase / "ca"
    ctx = make_server_ca(ca)
    private = tmpbase / "private"      # as certbot's live/ and archive/
    private.mkdir(mode=0o700)
    key = private / "privkey.pem"
    key.write_bytes((ca / "leaf.key").read_bytes())
    os.chown(private, 0, 0)
    os.chown(key, 0, 0)
    os.chmod(key, 0o600)
    d = make_daemon(f'tls-cert "{ca}/leaf.pem"\ntls-key "{key}"').start()
    # smtp runs as tern, which cannot open it...
    smtp = role_pids(d)["smtp"]
    assert os.stat(f"/proc/{smtp}").st_uid != 0
    r = subprocess.run(["setpriv", f"--reuid={os.stat(f'/proc/{smtp}').st_uid}",
                        "--regid=65534", "--clear-groups", "cat", str(key)],
                       capture_output=True)
    assert r.returncode != 0
    # ...and serves the certificate all the same.
    with Client(d.port) as s:
        s.starttls(context=ctx)
        assert s.noop()[0] == 250


def key_needles(path):
    """Pieces of a PEM key that no other text holds: its base64 lines."""
    lines = [l for l in path.read_text().splitlines()
             if l and not l.startswith("-----")]
    return [l.encode() for l in lines[1:-1] if len(l) == 64][:3]


def test_tls_key_only_in_parent_and_smtp_memory(tls):
    needles = key_needles(tls.ca / "leaf.key")
    assert needles
    # A TLS session, so the key has been used.
    with Client(tls.port) as s:
        s.starttls(context=tls.ctx)
        s.noop()
    pids = role_pids(tls)
    # The scan finds it where the PEM text is kept (the parent holds it
    # for the next smtp process)...
    assert any(memory_has(tls.proc.pid, n) for n in needles)
    # ...and not in the queue and vault, nor as text in smtp, which
    # wiped it once loaded.
    for role in ("queue", "vault", "smtp"):
        for n in needles:
            assert not memory_has(pids[role], n), role


# ---- reload: a renewed certificate ----------------------------------------------

def served_cert(port, ctx):
    with Client(port) as s:
        s.starttls(context=ctx)
        return s.sock.getpeercert(binary_form=True)


def test_reload_picks_up_a_renewed_certificate(tls, tmpbase):
    old = served_cert(tls.port, tls.ctx)
    # certbot renews: new files at the same paths, then `systemctl reload`.
    new = tmpbase / "renewed"
    make_server_ca(new)
    pem = (new / "leaf.pem").read_bytes()
    (tls.ca / "leaf.pem").write_bytes(pem)
    (tls.ca / "leaf.key").write_bytes((new / "leaf.key").read_bytes())
    ctx = ssl.create_default_context(cafile=str(new / "ca.pem"))
    mark = len(tls.logtext())
    tls.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "event=reload result=ok" in tls.logtext()[mark:])
    assert wait_for(lambda: _served_or_none(tls.port, ctx) ==
                    ssl.PEM_cert_to_DER_cert(pem.decode()), 15)
    assert old != ssl.PEM_cert_to_DER_cert(pem.decode())
    # A renewal gone wrong (key of another certificate) is refused, and
    # the certificate in use stays.
    (tls.ca / "leaf.key").write_bytes((tls.ca / "ca.key").read_bytes())
    mark = len(tls.logtext())
    tls.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "event=reload result=refused" in
                    tls.logtext()[mark:])
    assert "tls-key" in tls.logtext()[mark:]
    time.sleep(1)
    assert served_cert(tls.port, ctx) == ssl.PEM_cert_to_DER_cert(pem.decode())


def _served_or_none(port, ctx):
    try:
        return served_cert(port, ctx)
    except (ssl.SSLError, OSError, smtplib.SMTPException):
        return None
