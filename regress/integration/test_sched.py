"""The scheduler looks at a message when it is due: at a recipient's next
try, at its delay warning, when a delivery slot frees.  These tests pick
settings where a scheduler that only woke at retry times, or forgot the
messages waiting for a slot, would leave mail in the queue."""
import os
import re
import signal
import time

import pytest

from conftest import free_port, wait_for
from dnsserver import DNSServer
from test_remote import MX, ZONES, dsn_of, empty, send, status_blocks

try:
    from conftest import SANITIZER_MARKS  # noqa: F401
    pytestmark = pytest.mark.usefixtures("sanitizer_check")
except ImportError:
    pass


@pytest.fixture
def sched(make_daemon):
    """Like test_remote's fixture, with the retry settings up to the test."""
    port = free_port()
    servers = []

    def make(extra):
        d = make_daemon("trusted-network 127.0.0.0/8\n"
                        f"remote-port {port}\n" + extra)
        servers.append(DNSServer(ZONES, port=d.dns_port).start())
        return d.start()
    yield make, port
    for s in servers:
        s.stop()


def test_delay_warning_comes_between_retries(sched):
    # The next retry is an hour away; the warning is due after 3 s and
    # must not wait for that retry.
    make, port = sched
    with MX("127.0.0.2", port) as mx1, MX("127.0.0.3", port) as mx2:
        for mx in (mx1, mx2):
            mx.rcpt_reply["slow@remote.test"] = "450 4.2.0 mailbox busy"
        d = make("retry-min 1h\nretry-max 1h\ndelay-warning 3s\n")
        # Sent late in a second of the clock: ternd keeps the arrival in
        # whole seconds, and a warning timed from that truncated arrival
        # would come most of a second early.
        assert wait_for(lambda: time.time() % 1 >= 0.7, 2, 0.01)
        t0 = time.monotonic()
        send(d, ["slow@remote.test"], "warn", sender="demo@example.test")
        assert wait_for(lambda: dsn_of(d) is not None, 30), d.logtext()
        # Never before it was due: t0 is before the message arrived, and
        # the warning may come later than 3 s after it but never earlier.
        assert time.monotonic() - t0 >= 3
        b = status_blocks(dsn_of(d))[0]
        assert b["Action"] == "delayed" and b["Status"].startswith("4.2.0")
        listing = d.ctl("queue")
        qid = re.search(r"^([0-9A-F]{16})", listing.stdout, re.M)
        assert qid, (listing, d.logtext())
        qid = qid[1]
        show = d.ctl("show", qid).stdout
        assert "attempts: 1" in show, show         # no retry was made early
        assert len(mx1.messages) + len(mx2.messages) == 0


def test_messages_waiting_for_a_slot_all_go_out(sched):
    # One connection to the destination and two deliveries in flight at
    # most: most messages wait for a slot, and each finished delivery must
    # bring the waiting ones back.  A local recipient shares the limit.
    make, port = sched
    with MX("127.0.0.2", port) as mx1:
        d = make("retry-min 1h\nmax-deliveries 2\n"
                 "max-domain-connections 1\n")
        n = 25
        for i in range(n):
            send(d, [f"w{i}@remote.test"], f"slot{i}")
        send(d, ["demo@example.test"], "local-too")
        assert wait_for(lambda: len(mx1.messages) == n, 60), \
            (len(mx1.messages), d.ctl("queue").stdout)
        assert d.wait_mail("demo")
        assert wait_for(lambda: empty(d), 10), d.ctl("queue").stdout
    got = sorted(r for _, rcpts, _ in mx1.messages for r in rcpts)
    assert got == sorted(f"w{i}@remote.test" for i in range(n))
    # Waiting for a slot is not an attempt: nothing was deferred.
    assert "status=deferred" not in d.logtext()


def deferred_for_an_hour(make, mx1, mx2, rcpt):
    """A daemon holding one message to rcpt, deferred by both MX hosts
    with the next try an hour away; then the hosts accept."""
    for mx in (mx1, mx2):
        mx.rcpt_reply[rcpt] = "451 4.3.0 later"
    d = make("retry-min 1h\nretry-max 1h\n")
    send(d, [rcpt], "later")
    assert wait_for(lambda: "4.3.0 later" in d.ctl("queue").stdout, 20)
    for mx in (mx1, mx2):
        del mx.rcpt_reply[rcpt]
    return d


def test_flush_brings_a_deferred_message_back_at_once(sched):
    make, port = sched
    with MX("127.0.0.2", port) as mx1, MX("127.0.0.3", port) as mx2:
        d = deferred_for_an_hour(make, mx1, mx2, "f@remote.test")
        assert d.ctl("flush", "remote.test").returncode == 0
        assert wait_for(lambda: len(mx1.messages) == 1, 20), d.logtext()
        assert wait_for(lambda: empty(d), 10)


def test_flush_while_the_smtp_process_is_away(sched):
    # A delivery that finds no smtp process waits; the process that comes
    # back must pick it up, not the next unrelated delivery.
    make, port = sched
    with MX("127.0.0.2", port) as mx1, MX("127.0.0.3", port) as mx2:
        d = deferred_for_an_hour(make, mx1, mx2, "g@remote.test")
        smtp = int(re.findall(r"role=smtp pid=(\d+)", d.logtext())[-1])
        os.kill(smtp, signal.SIGKILL)
        assert wait_for(lambda: f"pid={smtp} status=" in d.logtext(), 10)
        assert d.ctl("flush", "remote.test").returncode == 0
        assert wait_for(lambda: len(mx1.messages) == 1, 30), d.logtext()
        assert wait_for(lambda: empty(d), 10)
