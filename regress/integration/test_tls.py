"""TLS on our own listeners: the certificate the root parent reads (or the
self-signed one it makes) and hands to the smtp process.
"""
import os
import subprocess

import pytest

from conftest import TERND, Daemon
from test_remote import make_ca

HOST = "mx.example.test"


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
