"""LMTP (RFC 2033) as a route transport and for local-delivery lmtp:
several recipients in one transaction with one reply each after the data,
RCPT checked against the LMTP server (probe, cache, failing closed) or a
map, and the recipient limit of trusted clients.  The LMTP server here is
aiosmtpd's, answering after the data the way Mailman's runner does (one
line per recipient); test_lmtp_peers.py runs the real Dovecot and Mailman."""
import smtplib

import pytest
from aiosmtpd.controller import Controller, UnixSocketController
from aiosmtpd.lmtp import LMTP

from conftest import free_port, wait_for

pytestmark = pytest.mark.usefixtures("sanitizer_check")


class Store:
    """Knows `known` addresses (None: everyone) at RCPT; after the data
    answers each recipient in turn, `later` ones with 452, `refuse` 550."""

    def __init__(self, known=None, later=(), refuse=()):
        self.known, self.later, self.refuse = known, later, refuse
        self.rcpts_seen = []        # every RCPT, probes included
        self.txns = []              # (sender, [rcpts], data)

    async def handle_RCPT(self, server, session, envelope, address, options):
        self.rcpts_seen.append(address)
        if self.known is not None and address not in self.known:
            return "550 5.1.1 <%s> User doesn't exist" % address
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 ok"

    async def handle_DATA(self, server, session, envelope):
        self.txns.append((envelope.mail_from, list(envelope.rcpt_tos),
                          envelope.original_content))
        out = []
        for r in envelope.rcpt_tos:
            if r in self.later:
                out.append("452 4.2.2 <%s> over quota" % r)
            elif r in self.refuse:
                out.append("550 5.2.1 <%s> mailbox disabled" % r)
            else:
                out.append("250 2.0.0 <%s> saved" % r)
        return "\r\n".join(out)


class TCPLMTP(Controller):
    def factory(self):
        return LMTP(self.handler, **self.SMTP_kwargs)


class UnixLMTP(UnixSocketController):
    def factory(self):
        return LMTP(self.handler, **self.SMTP_kwargs)


@pytest.fixture
def lmtp_tcp():
    made = []

    def make(store):
        port = free_port()
        c = TCPLMTP(store, hostname="127.0.0.1", port=port, ready_timeout=10)
        c.start()
        made.append(c)
        return port
    yield make
    for c in made:
        c.stop()


def log_lines(d, *needles):
    return [l for l in d.logtext().splitlines()
            if all(n in l for n in needles)]


def post(d, rcpts, subject="t", sender="poster@example.org"):
    """One transaction; returns the RCPT codes and the DATA reply."""
    codes = {}
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
        s.ehlo("client.example.org")
        s.mail(sender)
        for r in rcpts:
            codes[r] = s.rcpt(r)
        if not any(c == 250 for c, _ in codes.values()):
            return codes, None
        reply = s.data(b"Subject: " + subject.encode() + b"\r\n\r\nbody\r\n")
    return codes, reply


def test_route_via_lmtp_one_transaction_per_recipient_replies(
        make_daemon, lmtp_tcp):
    """Part 5 and 7: a domain routed via lmtp gets one LMTP transaction for
    all its recipients, and each recipient its own outcome from the replies
    after the data (sent, deferred, bounced)."""
    a, b, c = ("list@lists.example.test", "list-owner@lists.example.test",
               "other@lists.example.test")
    store = Store(later=(b,), refuse=(c,))
    port = lmtp_tcp(store)
    d = make_daemon(f'route "lists.example.test" via lmtp 127.0.0.1 '
                    f'port {port}').start()
    codes, (code, text) = post(d, [a, b, c], "three")
    assert all(v[0] == 250 for v in codes.values()), codes
    assert code == 250, text
    qid = text.decode().split()[-1]
    assert wait_for(lambda: log_lines(d, qid, "status=sent") and
                    log_lines(d, qid, "status=deferred") and
                    log_lines(d, qid, "status=bounced"), 15), \
        d.logtext()[-3000:]
    assert len(store.txns) == 1, store.txns
    frm, rcpts, data = store.txns[0]
    assert frm == "poster@example.org" and rcpts == [a, b, c]
    assert b"Subject: three" in data
    assert f"to=<{a}>" in log_lines(d, qid, "status=sent")[0]
    assert "over quota" in log_lines(d, qid, f"to=<{b}>",
                                     "status=deferred")[0]
    assert "mailbox disabled" in log_lines(d, qid, f"to=<{c}>",
                                           "status=bounced")[0]
    # Never HELO or EHLO to an LMTP server (Mailman: 500 not recognized).
    assert not log_lines(d, "not recognized")


def test_route_via_lmtp_unix_socket(make_daemon, tmpbase):
    store = Store()
    sock = tmpbase / "lmtp.sock"
    ctl = UnixLMTP(store, unix_socket=str(sock), ready_timeout=10)
    ctl.start()
    try:
        sock.chmod(0o666)
        d = make_daemon(f'route "lists.example.test" via lmtp "unix:{sock}"'
                        ).start()
        rcpts = [f"m{i}@lists.example.test" for i in range(5)]
        codes, (code, text) = post(d, rcpts, "unix")
        assert code == 250, (codes, text)
        assert wait_for(lambda: len(store.txns) == 1 and
                        len(log_lines(d, "status=sent",
                                      "relay=unix:")) == 5, 15), \
            d.logtext()[-3000:]
        assert store.txns[0][1] == rcpts
    finally:
        ctl.stop()


def test_probe_refuses_unknown_at_rcpt_and_caches(make_daemon, lmtp_tcp):
    """Part 6: RCPT asks the LMTP server; an unknown list is refused in the
    dialogue (no accept-then-bounce), answers are cached."""
    store = Store(known={"team@lists.example.test"})
    port = lmtp_tcp(store)
    d = make_daemon(f'route "lists.example.test" via lmtp 127.0.0.1 '
                    f'port {port}').start()
    for _ in range(2):
        codes, _r = post(d, ["team@lists.example.test",
                             "nolist@lists.example.test"])
        assert codes["team@lists.example.test"][0] == 250
        assert codes["nolist@lists.example.test"][0] == 550, codes
    # One probe each: the second session was answered from the cache.
    probes = [r for r in store.rcpts_seen]
    assert probes.count("nolist@lists.example.test") == 1, probes
    assert wait_for(lambda: len(store.txns) == 2, 15)
    assert all(t[1] == ["team@lists.example.test"] for t in store.txns)
    assert log_lines(d, "event=verify", "result=reject",
                     "nolist@lists.example.test")


def test_probe_fails_closed_when_server_down(make_daemon):
    port = free_port()      # nothing listens there
    d = make_daemon(f'route "lists.example.test" via lmtp 127.0.0.1 '
                    f'port {port}').start()
    codes, _r = post(d, ["team@lists.example.test"])
    code, text = codes["team@lists.example.test"]
    assert code == 451 and b"4.4.1" in text, codes
    assert log_lines(d, "event=rcpt", "result=tempfail", "esc=4.4.1")


def test_map_instead_of_probe(make_daemon, lmtp_tcp, tmpbase):
    store = Store()
    port = lmtp_tcp(store)
    m = tmpbase / "lmtp-recipients"
    m.write_text("# lists\nteam@lists.example.test\n@all.example.test\n")
    m.chmod(0o644)
    d = make_daemon(f'route "lists.example.test" via lmtp 127.0.0.1 '
                    f'port {port}\n'
                    f'route "all.example.test" via lmtp 127.0.0.1 '
                    f'port {port}\n'
                    f'lmtp-verify map\nlmtp-recipients "{m}"').start()
    codes, (code, _t) = post(d, ["team@lists.example.test",
                                 "x@lists.example.test",
                                 "anyone@all.example.test"])
    assert codes["team@lists.example.test"][0] == 250
    assert codes["x@lists.example.test"][0] == 550
    assert codes["anyone@all.example.test"][0] == 250
    assert code == 250
    assert store.rcpts_seen == [] or "x@lists.example.test" not in \
        store.rcpts_seen[:1]
    assert wait_for(lambda: len(store.txns) == 2, 15)


def test_local_delivery_lmtp_knows_only_server_users(make_daemon, tmpbase):
    """Part 6 with local-delivery lmtp: a user only the LMTP server knows is
    accepted and delivered; one it does not know is refused at RCPT."""
    store = Store(known={"dove@localhost"})
    sock = tmpbase / "lmtp.sock"
    ctl = UnixLMTP(store, unix_socket=str(sock), ready_timeout=10)
    ctl.start()
    try:
        sock.chmod(0o666)
        d = make_daemon(f'local-delivery lmtp\nlmtp "unix:{sock}"').start()
        codes, (code, text) = post(d, ["dove@localhost", "nobody1@localhost",
                                       "demo@example.test"])
        assert codes["dove@localhost"][0] == 250, codes
        assert codes["nobody1@localhost"][0] == 550, codes
        assert codes["demo@example.test"][0] == 250     # virtual: Maildir
        assert code == 250
        assert wait_for(lambda: len(store.txns) == 1 and
                        d.wait_mail("demo", 1, 0.1), 15), d.logtext()[-3000:]
        assert store.txns[0][1] == ["dove@localhost"]
        assert not log_lines(d, "status=bounced")
    finally:
        ctl.stop()


def test_trusted_client_recipient_limit(make_daemon):
    """Part 8: a trusted client (a list manager) may send 500 recipients in
    one transaction; the MX keeps max-recipients for everyone else."""
    d = make_daemon("trusted-network 127.0.0.0/8").start()
    rcpts = [f"m{i}@members.example.net" for i in range(500)]
    codes, (code, text) = post(d, rcpts)
    assert all(c == 250 for c, _ in codes.values()), \
        [(r, c) for r, c in codes.items() if c[0] != 250][:3]
    assert code == 250, text
    d.stop()
    d2 = make_daemon("").start()
    with smtplib.SMTP("127.0.0.1", d2.port, timeout=30) as s:
        s.ehlo("x")
        s.mail("a@example.org")
        replies = [s.rcpt("demo@example.test")[0] for _ in range(101)]
    assert replies[:100] == [250] * 100 and replies[100] == 452, replies


def test_pipelined_rcpts_wait_for_the_probe(make_daemon, lmtp_tcp):
    """A client that pipelines its envelope (RFC 2920) gets every reply in
    order while the probes run, and the message goes to the known ones."""
    import socket
    store = Store(known={"a@lists.example.test", "c@lists.example.test"})
    port = lmtp_tcp(store)
    d = make_daemon(f'route "lists.example.test" via lmtp 127.0.0.1 '
                    f'port {port}').start()
    with socket.create_connection(("127.0.0.1", d.port), 10) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"220")
        s.sendall(b"EHLO client.example.org\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        s.sendall(b"MAIL FROM:<p@example.org>\r\n"
                  b"RCPT TO:<a@lists.example.test>\r\n"
                  b"RCPT TO:<b@lists.example.test>\r\n"
                  b"RCPT TO:<c@lists.example.test>\r\n"
                  b"DATA\r\n")
        codes = [f.readline()[:3] for _ in range(5)]
        assert codes == [b"250", b"250", b"550", b"250", b"354"], codes
        s.sendall(b"Subject: piped\r\n\r\nx\r\n.\r\nQUIT\r\n")
        assert f.readline().startswith(b"250")
    assert wait_for(lambda: len(store.txns) == 1, 15)
    assert store.txns[0][1] == ["a@lists.example.test", "c@lists.example.test"]


def test_dead_lmtp_server_does_not_block_checks_for_another(make_daemon,
                                                            lmtp_tcp):
    """Probes to one LMTP server that accepts and never speaks (a hung
    host) fill only that server's share: a recipient of another LMTP
    server is still checked and accepted meanwhile."""
    import socket
    from conftest import SMTPConn
    store = Store(known={"team@team.example.test"})
    good = lmtp_tcp(store)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(128)
    dead = silent.getsockname()[1]
    d = make_daemon(f'max-connections-per-ip 100\n'
                    f'route "lists.example.test" via lmtp 127.0.0.1 '
                    f'port {dead}\n'
                    f'route "team.example.test" via lmtp 127.0.0.1 '
                    f'port {good}').start()
    held, accepted = [], []
    try:
        for i in range(40):
            c = SMTPConn(d.port)
            c.cmd("EHLO client.example.org")
            c.send(f"MAIL FROM:<p@example.org>\r\n"
                   f"RCPT TO:<u{i}@lists.example.test>\r\n")
            held.append(c)
        silent.settimeout(0.2)

        def take():
            try:
                while True:
                    accepted.append(silent.accept()[0])
            except socket.timeout:
                pass
            return len(accepted) >= 32
        assert wait_for(take, 15)
        codes, _r = post(d, ["team@team.example.test"])
        assert codes["team@team.example.test"][0] == 250, codes
    finally:
        for c in held:
            c.close()
        for a in accepted:
            a.close()
        silent.close()


def test_probe_names_u_label_domain_as_delivery_does(make_daemon):
    """A recipient written with U-labels is asked about as the delivery
    will name it to a server without SMTPUTF8: by its A-labels (and with
    no UTF-8 on a command line that did not announce it)."""
    from conftest import SMTPConn
    store = Store(known={"a@xn--bcher-kva.example.test"})
    port = free_port()
    ctl = TCPLMTP(store, hostname="127.0.0.1", port=port, ready_timeout=10,
                  enable_SMTPUTF8=False)
    ctl.start()
    d = make_daemon(f'route "xn--bcher-kva.example.test" via lmtp '
                    f'127.0.0.1 port {port}').start()
    try:
        with SMTPConn(d.port) as c:
            c.cmd("EHLO client.example.org")
            assert c.cmd("MAIL FROM:<p@example.org> SMTPUTF8")[0] == 250
            r = c.cmd("RCPT TO:<a@b\u00fccher.example.test>")
            c.cmd("QUIT")
    finally:
        ctl.stop()
    assert r[0] == 250, r
    assert store.rcpts_seen == ["a@xn--bcher-kva.example.test"]


# ---- a system account's ~/.forward under local-delivery lmtp ------------------------

@pytest.fixture
def sysuser():
    import os
    import pwd
    import subprocess
    name = f"tk{os.getpid() % 100000}"
    subprocess.run(["userdel", "-r", name], capture_output=True)
    r = subprocess.run(["useradd", "-m", "-s", "/usr/sbin/nologin", name],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"useradd failed: {r.stderr}")
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", "-r", name], capture_output=True)


def write_forward(pw, text):
    import os
    p = os.path.join(pw.pw_dir, ".forward")
    with open(p, "w") as f:
        f.write(text)
    os.chown(p, pw.pw_uid, pw.pw_gid)
    os.chmod(p, 0o644)


class DeferOnce(Store):
    """Knows everyone at RCPT; the first transaction's recipients get 452
    after the data, later ones 250."""

    async def handle_DATA(self, server, session, envelope):
        self.txns.append((envelope.mail_from, list(envelope.rcpt_tos),
                          envelope.original_content))
        code = "452 4.2.2 over quota" if len(self.txns) == 1 else \
            "250 2.0.0 saved"
        return "\r\n".join(code for _ in envelope.rcpt_tos)


def test_forward_stage_not_run_again_when_mailbox_deferred(
        make_daemon, lmtp_tcp, sysuser, tmpbase):
    """The ~/.forward stage is a delivery of its own: when the LMTP server
    defers the copy the .forward kept, the retry delivers that copy and
    runs the .forward's command and forward no second time."""
    import os
    pw = sysuser
    out = tmpbase / "out"
    out.mkdir()
    os.chmod(out, 0o1777)
    cmd = tmpbase / "rec.sh"
    cmd.write_text(f"#!/bin/sh\ncat > {out}/run.$$\n")
    os.chmod(cmd, 0o755)
    write_forward(pw, f"\\{pw.pw_name}, |{cmd}, bob@example.test\n")
    store = DeferOnce()
    port = lmtp_tcp(store)
    d = make_daemon(f'local-delivery lmtp\nlmtp "127.0.0.1:{port}"\n'
                    'retry-min 1s\nretry-max 2s\n').start()
    rcpt = f"{pw.pw_name}@localhost"
    codes, (code, _t) = post(d, [rcpt])
    assert code == 250
    assert wait_for(lambda: d.queue_files() == [], 30), \
        (d.ctl("queue").stdout, d.logtext()[-3000:])
    assert len(store.txns) == 2, store.txns
    assert all(t[1] == [rcpt] for t in store.txns)
    assert len(list(out.glob("run.*"))) == 1
    assert len(d.maildir("bob")) == 1
    assert len(log_lines(d, f"to=<{rcpt}>", "status=deferred")) == 1
    assert len(log_lines(d, f"to=<{rcpt}>", "status=sent")) == 1


def test_map_takes_account_whose_forward_takes_the_mail(
        make_daemon, tmpbase, sysuser):
    """lmtp-verify map: an account not in the map is refused, unless its
    ~/.forward takes its mail."""
    m = tmpbase / "lmtp-recipients"
    m.write_text("dove@localhost\n")
    d = make_daemon(f'local-delivery lmtp\nlmtp "unix:{tmpbase}/none.sock"\n'
                    f'lmtp-verify map\nlmtp-recipients "{m}"\n').start()
    rcpt = f"{sysuser.pw_name}@localhost"
    codes, _r = post(d, [rcpt])
    assert codes[rcpt][0] == 550, codes
    write_forward(sysuser, "bob@example.test\n")
    codes, (code, _t) = post(d, [rcpt])
    assert codes[rcpt][0] == 250, codes
    assert d.wait_mail("bob", 1, 20), d.logtext()[-3000:]


def test_accounts_copies_after_their_stages_in_one_transaction(
        make_daemon, lmtp_tcp, tmpbase):
    """Three system accounts of one message, one with a .forward that
    keeps a copy: each account's .forward stage comes first, and the three
    LMTP copies still go in one transaction."""
    import os
    import pwd
    import subprocess
    names = [f"tj{os.getpid() % 10000}x{i}" for i in range(3)]
    try:
        for n in names:
            subprocess.run(["userdel", "-r", n], capture_output=True)
            subprocess.run(["useradd", "-m", "-s", "/usr/sbin/nologin", n],
                           check=True, capture_output=True)
        write_forward(pwd.getpwnam(names[0]),
                      f"\\{names[0]}, bob@example.test\n")
        store = Store()
        port = lmtp_tcp(store)
        d = make_daemon(f'local-delivery lmtp\nlmtp "127.0.0.1:{port}"\n'
                        ).start()
        rcpts = [f"{n}@localhost" for n in names]
        codes, (code, _t) = post(d, rcpts)
        assert code == 250
        assert wait_for(lambda: d.queue_files() == [], 20), \
            (d.ctl("queue").stdout, d.logtext()[-3000:])
        assert len(store.txns) == 1, store.txns
        assert sorted(store.txns[0][1]) == sorted(rcpts)
        assert len(d.maildir("bob")) == 1
    finally:
        for n in names:
            subprocess.run(["userdel", "-r", n], capture_output=True)
