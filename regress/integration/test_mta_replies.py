"""The SMTP client's reply reader (queue/reply.c) against a peer that
writes its replies by hand: how they are cut into reads must not matter,
and a peer that breaks the rules (codes that change inside a reply, too
many lines, lines too long) is left with the message deferred, never
half understood."""
import select
import socket
import threading

import pytest

from conftest import wait_for
from test_remote import empty, remote, send  # noqa: F401 (fixture)

LONG = 4096            # REPLY_LINE_MAX


class ScriptedPeer:
    """An MX on host:port.  greeting: a list of byte strings, sent one
    after the other; before each but the first it waits (up to 3 s) for
    the client to hang up, which a client that took the part before as
    a broken reply does at once.  replies: verb -> bytes (or a list of
    them, written one by one) sent for it.  Records the messages it
    takes, and how many connections ended early."""

    def __init__(self, host, port, greeting, replies=None):
        self.greeting = greeting
        self.replies = replies or {}
        self.messages = []
        self.hangups = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(5)
        self.sock.settimeout(0.2)
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *a):
        self.stop = True
        self.t.join(10)
        self.sock.close()

    def run(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.settimeout(10)
                try:
                    self.serve(conn)
                except (OSError, ValueError):
                    pass

    def hung_up(self, conn):
        r, _, _ = select.select([conn], [], [], 3)
        return bool(r) and conn.recv(1, socket.MSG_PEEK) == b""

    def serve(self, conn):
        for i, part in enumerate(self.greeting):
            if i > 0 and self.hung_up(conn):
                self.hangups += 1
                return
            conn.sendall(part)
        f = conn.makefile("rb")
        for _ in range(50):
            line = f.readline()
            if not line:
                self.hangups += 1
                return
            verb = line[:4].upper()
            if verb in self.replies:
                reply = self.replies[verb]
                for part in [reply] if isinstance(reply, bytes) else reply:
                    conn.sendall(part)
            elif verb == b"EHLO":
                conn.sendall(b"250-peer.test\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                conn.sendall(b"354 go ahead\r\n")
                body = b""
                while not body.endswith(b"\r\n.\r\n"):
                    chunk = f.readline()
                    if not chunk:
                        return
                    body += chunk
                self.messages.append(body)
                conn.sendall(b"250 2.0.0 taken\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:
                conn.sendall(b"250 ok\r\n")


def test_longest_line_with_its_cr_and_lf_in_two_reads(remote):  # noqa: F811
    # A greeting line of the longest length: its CR ends one write and
    # its LF begins the next, so the client has read the CR first.  The
    # reader counted the CR in the line and hung up ("too long").
    make, port = remote
    line = b"220 " + b"x" * (LONG - 4)
    with ScriptedPeer("127.0.0.2", port, [line + b"\r", b"\n"]) as peer:
        d = make()
        send(d, ["rcpt@remote.test"])
        assert wait_for(lambda: peer.messages, 20), d.logtext()
        assert wait_for(lambda: empty(d), 10)
    assert peer.hangups == 0


@pytest.mark.parametrize("ehlo", [
    # lines and the reply cut where writes may end
    [b"250-peer.test\r\n250-PIPE", b"LINING\r\n250 8BIT", b"MIME\r", b"\n"],
    # bare LF ends a line, as peers that forget the CR send it
    [b"250-peer.test\n250-PIPELINING\n250 8BITMIME\n"],
], ids=["cut", "bare-lf"])
def test_replies_cut_anywhere_are_read_whole(remote, ehlo):  # noqa: F811
    make, port = remote
    with ScriptedPeer("127.0.0.2", port, [b"220 peer.test ESMTP\r\n"],
                      {b"EHLO": ehlo}) as peer:
        d = make()
        send(d, ["rcpt@remote.test"])
        assert wait_for(lambda: peer.messages, 20), d.logtext()
        assert wait_for(lambda: empty(d), 10)
    assert peer.hangups == 0


@pytest.mark.parametrize("rcpt, why", [
    (b"250-2.1.5 ok\r\n550 5.1.1 no\r\n", "malformed reply"),
    (b"".join(b"250-line\r\n" for _ in range(200)) + b"250 ok\r\n",
     "malformed reply"),
    # the same words however the line came (it was "malformed" when
    # its end came in the read that made it too long)
    (b"250 " + b"y" * LONG + b"\r\n", "too long"),
    (b"250ok\r\n", "malformed reply"),
    (b"250 o\0k\r\n25\0 x\r\n", "malformed reply"),
], ids=["codes-differ", "201-lines", "line-too-long", "no-space",
        "nul-in-code"])
def test_broken_replies_defer_the_message(remote, rcpt, why):  # noqa: F811
    make, port = remote
    with ScriptedPeer("127.0.0.2", port, [b"220 peer.test ESMTP\r\n"],
                      {b"RCPT": rcpt}) as peer:
        d = make()
        send(d, ["rcpt@remote.test"])
        assert wait_for(lambda: why in d.logtext(), 20), d.logtext()
        assert not peer.messages
        assert not empty(d)
