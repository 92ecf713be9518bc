"""The daemon's lookups through dns/ (libunbound) against the loopback DNS
server: MX and address answers cached across deliveries, a lookup that is
never answered or fails DNSSEC validation defers the mail (never a bounce).
"""
import pathlib

import pytest

from conftest import wait_for
from dnsserver import DNSServer
from test_remote import MX, RELAY, dsn_of, empty, send

ZONES = {
    "remote.test.": {"MX": [(10, "mx.shared.test.")]},
    "other.test.": {"MX": [(10, "mx.shared.test.")]},
    "mx.shared.test.": {"A": ["127.0.0.2"]},
    "slowmx.test.": {"behaviour": {"MX": "drop"}},
}

ROOT_KEY = pathlib.Path("/usr/share/dns/root.key")


@pytest.fixture
def resolver(make_daemon, tmpbase):
    from conftest import free_port
    port = free_port()
    servers = []

    def make(extra=""):
        d = make_daemon(RELAY + f"remote-port {port}\n" + extra)
        dns = DNSServer(ZONES, port=d.dns_port).start()
        servers.append(dns)
        d.dns = dns
        return d.start()
    yield make, port
    for s in servers:
        s.stop()


def queue_says(d, text):
    out = d.ctl("queue").stdout
    return out if text in out else None


def test_answers_cached_across_deliveries(resolver):
    make, port = resolver
    with MX("127.0.0.2", port) as mx:
        d = make()
        send(d, ["a@remote.test"], "one")
        assert wait_for(lambda: len(mx.messages) == 1, 20), d.logtext()
        send(d, ["b@other.test"], "two")
        assert wait_for(lambda: len(mx.messages) == 2, 20), d.logtext()
    # the second domain's MX host was known: its address not asked again
    assert len(d.dns.queries("mx.shared.test", "A")) == 1
    assert len(d.dns.queries("remote.test", "MX")) == 1
    assert len(d.dns.queries("other.test", "MX")) == 1


def test_unanswered_mx_lookup_defers_never_bounces(resolver):
    make, port = resolver
    d = make()
    send(d, ["x@slowmx.test"], "slow", sender="demo@example.test")
    out = wait_for(lambda: queue_says(d, "MX lookup for slowmx.test "
                                      "failed"), 30)
    assert out, d.ctl("queue").stdout + d.logtext()
    assert d.dns.queries("slowmx.test", "MX")
    assert dsn_of(d) is None and not empty(d)
    assert "5.1.2" not in out and "bounce" not in d.logtext()


@pytest.mark.skipif(not ROOT_KEY.exists(), reason="no dns-root-data")
def test_bogus_answer_defers_never_bounces(resolver):
    # The root's trust anchor against the unsigned loopback server: the
    # MX answer cannot be validated, so it is not used, for now.
    make, port = resolver
    with MX("127.0.0.2", port) as mx:
        d = make(f'dnssec-trust-anchor "{ROOT_KEY}"\n')
        send(d, ["a@remote.test"], "bogus", sender="demo@example.test")
        out = wait_for(lambda: queue_says(d, "dnssec bogus"), 30)
        assert out, d.ctl("queue").stdout + d.logtext()
        assert "event=bogus" in d.logtext()
        assert mx.messages == [] and dsn_of(d) is None and not empty(d)
