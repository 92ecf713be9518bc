"""Per-destination pacing: a receiver that says "slow down" (a 421, a
4.7.0 "try again later") is heard as the destination speaking, not as one
message's bad luck.  MX hosts are aiosmtpd servers (and one raw socket
server for a 421 greeting) on 127.0.0.x, found through the loopback DNS
server."""
import re
import socket
import threading
import time

import pytest

from conftest import free_port, wait_for
from dnsserver import DNSServer
from test_remote import MX, ZONES, Sink, empty, send

try:
    from conftest import SANITIZER_MARKS  # noqa: F401
    pytestmark = pytest.mark.usefixtures("sanitizer_check")
except ImportError:
    pass


@pytest.fixture
def world(make_daemon):
    """(daemon factory, port): DNS up; MX servers are up to the test."""
    port = free_port()
    servers = []

    def make(extra=""):
        d = make_daemon("trusted-network 127.0.0.0/8\n"
                        f"remote-port {port}\n" + extra)
        servers.append(DNSServer(ZONES, port=d.dns_port).start())
        return d.start()
    yield make, port
    for s in servers:
        s.stop()


class Greet421:
    """A host that greets every client with a 421 and closes."""

    def __init__(self, host, port):
        self.conns = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.conns += 1
            try:
                c.sendall(b"421 4.7.0 Too many connections from you, "
                          b"try again later\r\n")
            finally:
                c.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


def queued_ids(d):
    return re.findall(r"^([0-9A-F]{16})", d.ctl("queue").stdout, re.M)


def dest_line(d, domain):
    out = d.ctl("destinations").stdout
    for line in out.splitlines():
        if line.split() and line.split()[0] == domain:
            return line.split()
    return None


def test_recipients_of_a_message_are_retried_together(world):
    # Every recipient is greylisted once (a 4xx that is not about the
    # destination): they keep the per-recipient schedule, and come due
    # together, so the retry is one transaction, not ten.
    make, port = world
    with MX("127.0.0.2", port) as mx1:
        seen = set()
        orig = Sink.handle_RCPT

        async def grey(server, session, envelope, address, options):
            if address not in seen:
                seen.add(address)
                return "451 4.7.1 greylisted, come back later"
            return await orig(mx1, server, session, envelope, address,
                              options)
        mx1.handle_RCPT = grey
        d = make("retry-min 20s\nretry-max 20s\n")
        rcpts = [f"p{i}@remote.test" for i in range(10)]
        send(d, rcpts, "together")
        assert wait_for(lambda: sum(len(r) for _, r, _ in mx1.messages)
                        == 10, 60), (mx1.messages, d.logtext())
        assert wait_for(lambda: empty(d), 10)
    assert len(mx1.messages) == 1, [r for _, r, _ in mx1.messages]
    assert sorted(mx1.messages[0][1]) == sorted(rcpts)


def test_421_greeting_stops_the_destination(world):
    # Both MX hosts greet with 421: the first 421 says "stop" for the
    # destination; the other queued messages wait instead of each trying
    # both hosts.
    make, port = world
    with Greet421("127.0.0.2", port) as g1, Greet421("127.0.0.3", port) as g2:
        d = make("retry-min 1h\nretry-max 1h\nmax-domain-connections 1\n")
        for i in range(5):
            send(d, [f"g{i}@remote.test"], f"greet{i}")
        assert wait_for(lambda: "4.7.0" in d.ctl("queue").stdout, 20), \
            d.logtext()
        # Before pacing: 5 messages x 2 hosts, at once.
        assert not wait_for(lambda: g1.conns + g2.conns > 1, 3), \
            (g1.conns, g2.conns, d.logtext())
        line = dest_line(d, "remote.test")
        assert line is not None, d.ctl("destinations").stdout
        assert line[4] == "5" and line[6] != "now", line   # queued, next
        assert "result=throttled" in d.logtext()


class Refuser(Sink):
    """Refuses every recipient with a rate-limit reply; counts them."""

    def __init__(self, reply):
        super().__init__()
        self.reply = reply
        self.refused = 0

    async def handle_RCPT(self, server, session, envelope, address, options):
        self.refused += 1
        return self.reply


def test_throttle_reply_holds_the_whole_destination(world):
    # 20 messages to a destination that answers 451 4.7.0 "try again
    # later": the first refusal closes the destination for all of them;
    # only the transactions already in flight are refused.
    make, port = world
    with MX("127.0.0.2", port) as mx1:
        ref = Refuser("451 4.7.0 Temporarily rate limited, try again later")
        mx1.handle_RCPT = ref.handle_RCPT
        d = make("retry-min 1h\nretry-max 1h\n")
        n = 20
        for i in range(n):
            send(d, [f"h{i}@remote.test"], f"hold{i}")
        assert wait_for(lambda: ref.refused >= 1, 20), d.logtext()
        assert wait_for(lambda: len(queued_ids(d)) == n, 20)
        # Before pacing every message was refused at once.
        assert not wait_for(lambda: ref.refused > 5, 3), ref.refused
        assert wait_for(lambda: (dest_line(d, "remote.test") or
                                 [""] * 5)[4] == str(n), 20), \
            d.ctl("destinations").stdout
        line = dest_line(d, "remote.test")
        assert line[1] != "-" and line[6] != "now", line
        # The admin's flush opens it again (the learned rate stays).
        before = ref.refused
        d.ctl("flush", "remote.test")
        assert wait_for(lambda: ref.refused > before, 20), d.logtext()


class ReuseRefuser(Sink):
    """Answers the second MAIL on a connection with 421 and closes it,
    once."""

    def __init__(self):
        super().__init__()
        self.mails = {}
        self.armed = True

    async def handle_EHLO(self, server, session, envelope, hostname,
                          responses):
        # Commands come pipelined, as from a real MX: the 421 arrives
        # while the client still waits for the replies to RCPT and DATA.
        session.host_name = hostname
        return responses[:1] + ["250-PIPELINING"] + responses[1:]

    async def handle_MAIL(self, server, session, envelope, address,
                          mail_options):
        n = self.mails.get(id(session), 0) + 1
        self.mails[id(session)] = n
        if n == 2 and self.armed:
            # The reply and the close at once, before the pipelined
            # commands behind MAIL are answered.
            self.armed = False
            server.transport.write(b"421 4.7.0 mx1 closing connection, "
                                   b"try again later\r\n")
            server.transport.close()
            return "421 4.7.0 closed"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"


def test_421_on_a_reused_connection_delivers_once(world):
    # The first message leaves a kept connection; the second reuses it and
    # gets a 421 to MAIL.  Every recipient the second message reaches is
    # delivered exactly once (a reconnect that delivered them but reported
    # them deferred sent them twice).
    make, port = world
    with MX("127.0.0.2", port) as mx1:
        rr = ReuseRefuser()
        rr.messages = mx1.messages
        mx1.handle_MAIL = rr.handle_MAIL
        mx1.handle_EHLO = rr.handle_EHLO
        # The kept connection outlives any pause a loaded machine makes
        # between the two messages: the test is about its reuse.
        d = make("retry-min 1s\nretry-max 2s\nconnection-idle-time 5m\n")
        send(d, ["first@remote.test"], "first")
        assert wait_for(lambda: len(mx1.messages) == 1, 20), d.logtext()
        assert wait_for(lambda: empty(d), 10)
        send(d, ["second@remote.test", "third@remote.test"], "second")
        assert wait_for(lambda: empty(d), 30), d.logtext()
        assert not rr.armed, d.logtext()      # the 421 was given
    got = [r for _, rcpts, _ in mx1.messages for r in rcpts]
    assert got.count("second@remote.test") == 1, (got, d.logtext())
    assert got.count("third@remote.test") == 1, (got, d.logtext())


def test_urgent_mail_goes_first(world):
    # The destination is closed (a 421); five messages wait for it; the
    # last one is marked urgent and is the first to go when it reopens.
    make, port = world
    with MX("127.0.0.2", port) as mx1:
        state = {"armed": True}
        orig = Sink.handle_RCPT

        async def once(server, session, envelope, address, options):
            if state["armed"]:
                state["armed"] = False
                return "421 4.7.0 try again later"
            return await orig(mx1, server, session, envelope, address,
                              options)
        mx1.handle_RCPT = once
        d = make("retry-min 4s\nretry-max 4s\n")
        send(d, ["u0@remote.test"], "u0")
        assert wait_for(lambda: not state["armed"], 20), d.logtext()
        assert wait_for(lambda: (dest_line(d, "remote.test") or
                                 [""] * 7)[6] != "now", 10)
        for i in range(1, 5):
            send(d, [f"u{i}@remote.test"], f"u{i}")
        ids = queued_ids(d)
        last = None
        for q in ids:
            if "u4@remote.test" in d.ctl("show", q).stdout:
                last = q
        assert last, d.ctl("queue").stdout
        r = d.ctl("flush", "--urgent", last)
        assert "marked urgent" in r.stdout, r
        assert wait_for(lambda: len(mx1.messages) >= 1, 30), d.logtext()
        assert mx1.messages[0][1] == ["u4@remote.test"], \
            [m[1] for m in mx1.messages]
        d.ctl("flush")
        assert wait_for(lambda: len(mx1.messages) == 5, 60), d.logtext()


class Bucket(Sink):
    """Takes a burst of recipients, then a few a second (a token bucket
    per server); refuses the rest with a rate-limit reply."""

    def __init__(self, burst, rate):
        super().__init__()
        self.tokens, self.burst, self.rate = burst, burst, rate
        self.t = time.monotonic()
        self.refused = 0

    async def handle_RCPT(self, server, session, envelope, address, options):
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.t) *
                          self.rate)
        self.t = now
        if self.tokens < 1:
            self.refused += 1
            return "450 4.7.0 rate limited, try again later"
        self.tokens -= 1
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"


def test_learns_the_rate_and_delivers_everything_once(world):
    # 40 recipients in 4 messages of 10 to a receiver that takes 3 at once
    # and then 8 a second: pacing learns a rate, everything arrives, and
    # nothing twice.
    make, port = world
    with MX("127.0.0.2", port) as mx1:
        b = Bucket(3, 8)
        mx1.handle_RCPT = b.handle_RCPT
        d = make("retry-min 1s\nretry-max 2s\n")
        want = []
        for m in range(4):
            rc = [f"l{m}x{i}@remote.test" for i in range(10)]
            want += rc
            send(d, rc, f"learn{m}")
        assert wait_for(lambda: empty(d), 120), \
            (d.ctl("destinations").stdout, d.logtext()[-3000:])
        line = dest_line(d, "remote.test")
    got = sorted(r for _, rcpts, _ in mx1.messages for r in rcpts)
    assert got == sorted(want)
    assert b.refused >= 1
    assert line and line[1] != "-", line         # a rate was learned


def test_fallback_relay_takes_mail_deferred_too_long(world):
    # The destination keeps saying "later"; once a message has waited
    # fallback-after and was tried more than once, it leaves through the
    # fallback relay, and the throttled MX never gets it.
    make, port = world
    with MX("127.0.0.2", port) as mx1, MX("127.0.0.7", port) as relay:
        ref = Refuser("451 4.7.0 try again later")
        mx1.handle_RCPT = ref.handle_RCPT
        d = make("retry-min 1s\nretry-max 1s\nfallback-after 2s\n"
                 f"fallback-relay 127.0.0.7:{port}\n")
        send(d, ["fb@remote.test"], "fallback")
        assert wait_for(lambda: len(relay.messages) == 1, 60), d.logtext()
        assert wait_for(lambda: empty(d), 10)
    assert relay.messages[0][1] == ["fb@remote.test"]
    assert ref.refused >= 1 and mx1.messages == []
    assert re.search(r"to=<fb@remote.test>.*relay=127\.0\.0\.7.*status=sent",
                     d.logtext()), d.logtext()


def test_static_shaping_limits_recipients_per_transaction(world):
    # The admin knows the receiver takes two recipients at a time.
    make, port = world
    with MX("127.0.0.2", port) as mx1:
        d = make("destination remote.test recipients 2 connections 1\n")
        rcpts = [f"s{i}@remote.test" for i in range(5)]
        send(d, rcpts, "shaped")
        assert wait_for(lambda: empty(d), 30), d.logtext()
    sizes = sorted(len(r) for _, r, _ in mx1.messages)
    assert sizes == [1, 2, 2], sizes
    got = sorted(r for _, rc, _ in mx1.messages for r in rc)
    assert got == sorted(rcpts)


def test_priority_urgent_header_counts_only_from_authenticated_senders(
        make_daemon, tmpbase):
    # "Priority: urgent" (RFC 2156) from an authenticated account marks the
    # message urgent; the same header from an unauthenticated client does
    # not.  Nothing answers for remote.test here: the mail stays queued.
    from test_tls import Client, make_server_ca
    ca = tmpbase / "ca"
    ctx = make_server_ca(ca)
    msa = free_port()
    anna, pw = "anna@example.test", "Urgent-Sub-Pw-7yT2q"
    d = make_daemon(f'tls-cert "{ca}/leaf.pem"\ntls-key "{ca}/leaf.key"\n'
                    f"listen msa 127.0.0.1 port {msa}\n"
                    "trusted-network 127.0.0.0/8\n",
                    vusers=("demo", "alice", "bob", "anna"))
    d.ctl("user", "add", anna, input=pw + "\n", check=True)
    d.start()
    msg = (b"Subject: games cancelled\r\nFrom: <anna@example.test>\r\n"
           b"Priority: urgent\r\n\r\ntonight's games are cancelled\r\n")
    with Client(msa) as c:
        c.ehlo()
        c.starttls(context=ctx)
        c.ehlo()
        assert c.login(anna, pw)[0] == 235
        c.sendmail(anna, ["parent1@remote.test"], msg)
    send(d, ["parent2@remote.test"], "plain", body=b"x")
    import smtplib
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
        s.sendmail("someone@sender.test", ["parent3@remote.test"],
                   msg.replace(b"anna@example.test", b"someone@sender.test"))
    assert wait_for(lambda: len(queued_ids(d)) == 3, 20), d.ctl("queue")
    urgent = {}
    for q in queued_ids(d):
        show = d.ctl("show", q).stdout
        rcpt = re.search(r"recipient: <([^>]+)>", show)[1]
        urgent[rcpt] = "urgent:" in show
    assert urgent == {"parent1@remote.test": True,
                      "parent2@remote.test": False,
                      "parent3@remote.test": False}, urgent


def test_domains_sharing_an_mx_host_are_paced_together(make_daemon):
    # other.test is served by remote.test's MX host.  Once the queue knows
    # that (a delivery told it), both domains use one pacing state: the
    # host's "slow down" for remote.test closes other.test too (mail to
    # either drains in arrival order through the one window).
    port = free_port()
    zones = dict(ZONES)
    zones["other.test."] = {"MX": [(10, "mx1.remote.test.")]}
    d = make_daemon("trusted-network 127.0.0.0/8\n"
                    f"remote-port {port}\nretry-min 1h\nretry-max 1h\n")
    dns = DNSServer(zones, port=d.dns_port).start()
    try:
        with MX("127.0.0.2", port) as mx1:
            # Connections are kept and their handler with them: the switch
            # to refusing is a flag the handler reads.
            ref = Refuser("451 4.7.0 Temporarily rate limited, try again "
                          "later")
            state = {"refuse": False}
            orig = Sink.handle_RCPT

            async def rcpt(server, session, envelope, address, options):
                if state["refuse"]:
                    return await ref.handle_RCPT(server, session, envelope,
                                                 address, options)
                return await orig(mx1, server, session, envelope, address,
                                  options)
            mx1.handle_RCPT = rcpt
            d.start()
            send(d, ["x@other.test"], "before")
            assert wait_for(lambda: len(mx1.messages) == 1, 20), d.logtext()
            assert wait_for(lambda: empty(d), 10)
            state["refuse"] = True
            send(d, ["a@remote.test"], "throttled")
            assert wait_for(lambda: "domain=remote.test via=mx:mx1.remote."
                            "test result=throttled" in d.logtext(), 20), \
                d.logtext()
            send(d, ["b@other.test"], "waits")
            assert wait_for(lambda: len(queued_ids(d)) == 2, 20)
            # other.test never refused anything itself, yet it shows the
            # host's learned rate, concurrency and next start: one state.
            r = dest_line(d, "remote.test")
            o = dest_line(d, "other.test")
            assert r and o and r[1] == o[1] != "-", (r, o)
            assert r[2] == o[2] and r[6] == o[6], (r, o)
    finally:
        dns.stop()


def test_throttle_replies_file_is_read_again_at_reload(world, tmpbase):
    # The admin adds a receiver's own "slow down" text to throttle-replies
    # and reloads: from then on that reply closes the destination; before,
    # it was one recipient's deferral.  A line that is no class is named
    # with file:line and skipped.
    import signal
    make, port = world
    replies = tmpbase / "throttle-replies"
    replies.write_text("ignore 4.7.1\n")
    with MX("127.0.0.2", port) as mx1:
        ref = Refuser("450 4.2.0 Slow down please, buddy")
        mx1.handle_RCPT = ref.handle_RCPT
        d = make(f'throttle-replies "{replies}"\n'
                 "retry-min 1h\nretry-max 1h\n")
        send(d, ["r0@remote.test"], "before")
        assert wait_for(lambda: ref.refused >= 1, 20), d.logtext()
        assert wait_for(lambda: "Slow down" in d.ctl("queue").stdout, 20)
        assert "result=throttled" not in d.logtext()
        replies.write_text("ignore 4.7.1\nslowdown buddy\n"
                           "throttle slow down please\n")
        d.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: f'{replies}:2: not throttle, rcpts or '
                        'ignore' in d.logtext(), 10), d.logtext()[-2000:]
        assert wait_for(lambda: "queue: event=reload result=ok" in
                        d.logtext(), 10)
        d.ctl("flush")
        assert wait_for(lambda: "result=throttled" in d.logtext(), 20), \
            d.logtext()[-3000:]
        # A file that cannot be read keeps the table in force.
        replies.unlink()
        d.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "the throttle replies in force are kept"
                        in d.logtext(), 10), d.logtext()[-2000:]


def test_learned_pacing_survives_a_restart(world):
    # A destination that said "try again later" is closed; the daemon is
    # restarted (an upgrade in the middle of a throttled announcement): a
    # new message to it still waits for the reopening instead of being
    # refused again at once, and `ternctl destinations` shows what was
    # learned.  A line of the file that does not read is skipped and
    # named; the rest is kept.
    make, port = world
    with MX("127.0.0.2", port) as mx1:
        ref = Refuser("451 4.7.0 Temporarily rate limited, try again later")
        mx1.handle_RCPT = ref.handle_RCPT
        d = make("retry-min 1h\nretry-max 1h\n")
        send(d, ["a0@remote.test"], "before")
        assert wait_for(lambda: ref.refused >= 1, 20), d.logtext()
        assert wait_for(lambda: (dest_line(d, "remote.test") or
                                 [""] * 7)[6] not in ("", "now"), 20), \
            d.ctl("destinations").stdout
        d.stop()
        state = d.spool / "pacing"
        assert "remote.test" in state.read_text(), state.read_text()
        bad = len(state.read_text().splitlines()) + 1
        with state.open("a") as f:
            f.write("broken.test - nan 0 1 0 0 0 0 0\n")
        d.start()
        assert wait_for(lambda: "restored what pacing learned about" in
                        d.logtext(), 10), d.logtext()[-2000:]
        assert f"pacing:{bad}: value out of range; line skipped" in \
            d.logtext(), d.logtext()[-2000:]
        line = dest_line(d, "remote.test")
        assert line is not None and line[1] != "-" and line[6] != "now", \
            d.ctl("destinations").stdout
        before = ref.refused
        send(d, ["a1@remote.test"], "after")
        assert wait_for(lambda: len(queued_ids(d)) == 2, 20)
        assert not wait_for(lambda: ref.refused > before, 3), ref.refused
