"""The resolver in dns/ against a real DNS server (dnsserver.py) on loopback.

dns_probe.c is compiled here against the build's libtern.a (TERN_BUILD,
default obj/normal; an ASan build gets the sanitizers too) and runs
lookups through dns_lookup on an event loop, printing one line per answer.
"""
import os
import pathlib
import shlex
import socket
import subprocess

import pytest

from dnsserver import DNSServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = ROOT / os.environ.get("TERN_BUILD", "obj/normal")
HERE = pathlib.Path(__file__).resolve().parent

ZONES = {
    "example.test.": {
        "MX": [(20, "mx2.example.test."), (10, "MX1.example.test."),
               (30, "backup.example.net.")],
        "A": ["127.0.0.2", "127.0.0.3"],
        "AAAA": ["2001:db8::25"],
        "TXT": [["v=spf1 ", "ip4:192.0.2.0/24 ", "-all"], "second record"],
    },
    "mx1.example.test.": {"A": ["127.0.0.2"], "AAAA": ["::1"]},
    "alias.example.test.": {"CNAME": "target.example.test."},
    "target.example.test.": {"MX": [(5, "mx.target.example.test.")],
                             "TTL": 60},
    "big.example.test.": {"TXT": ["answered over tcp"],
                          "behaviour": "truncate"},
    "broken.example.test.": {"behaviour": "servfail"},
    "slow.example.test.": {"behaviour": "drop"},
    "old.example.test.": {"A": ["127.0.0.9"], "behaviour": "formerr_edns"},
    "short.example.test.": {"A": ["127.0.0.4"], "TTL": 1},
    "neg.example.test.": {"SOA": (60, 600), "A": ["127.0.0.5"]},
    "127.0.0.2": {"PTR": ["mx1.example.test."]},
    "2001:db8::25": {"PTR": ["v6.Example.TEST."]},
}


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    lib = BUILD / "libtern.a"
    assert lib.exists(), f"{lib} missing: run make first"
    out = tmp_path_factory.mktemp("probe") / "dns_probe"
    libs = subprocess.run(["pkg-config", "--libs", "libevent"],
                          capture_output=True, text=True).stdout.split()
    san = ["-fsanitize=address,undefined"] if "asan" in BUILD.name else []
    cmd = (["cc", "-std=c11", "-D_GNU_SOURCE", "-g", "-Wall", "-Wextra",
            "-Werror", "-Wno-unused-parameter"] + san +
           ["-I", str(ROOT), str(HERE / "dns_probe.c"), str(lib)] +
           libs + ["-lunbound", "-ldb", "-lcrypt", "-lssl", "-lcrypto", "-o", str(out)])
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, shlex.join(cmd) + "\n" + r.stderr
    return out


@pytest.fixture
def dns():
    with DNSServer(ZONES) as server:
        yield server


class Result:
    def __init__(self, fields):
        self.round = int(fields[0])
        self.name, self.type, self.status = fields[1], fields[2], fields[3]
        self.ttl = int(fields[4]) if len(fields) > 4 else None
        self.sec = fields[5] if len(fields) > 5 else None
        self.why = fields[6] if len(fields) > 6 else None
        self.values = fields[7:]

    def __repr__(self):
        return f"<{self.round} {self.name} {self.type} {self.status} " \
               f"ttl={self.ttl} why={self.why} {self.values}>"


def run(probe, servers, qtype, *names, timeout_ms=300, attempts=1,
        rounds=2, wait_ms=0, cancel=False, anchor=None, answers=None):
    """Run the probe; returns (results, extra lines as a dict)."""
    hosts = ",".join(h for h, _ in servers)
    ports = ",".join(str(p) for _, p in servers)
    cmd = [str(probe), "-t", str(timeout_ms), "-a", str(attempts),
           "-r", str(rounds), "-w", str(wait_ms)]
    if cancel:
        cmd.append("-C")
    if anchor:
        cmd += ["-K", str(anchor)]
    if answers:
        cmd += ["-n", str(answers)]
    cmd += [hosts, ports, qtype, *names]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    results, extra = [], {}
    for line in p.stdout.splitlines():
        fields = line.split("\t")
        if fields[0].isdigit():
            results.append(Result(fields))
        else:
            extra[fields[0]] = int(fields[1])
    return results, extra


def one(results, name, round_=1):
    found = [r for r in results if r.name == name and r.round == round_]
    assert len(found) == 1, results
    return found[0]


def srv(dns):
    return [(dns.host, dns.port)]


def test_mx_sorted_by_preference(probe, dns):
    res, extra = run(probe, srv(dns), "MX", "Example.TEST.")
    r = one(res, "Example.TEST.")
    assert r.status == "OK" and r.ttl == 300 and r.why == "ok"
    assert r.values == ["10:mx1.example.test", "20:mx2.example.test",
                        "30:backup.example.net"]


def test_a_and_aaaa(probe, dns):
    res, _ = run(probe, srv(dns), "A", "example.test", "mx1.example.test")
    assert sorted(one(res, "example.test").values) == ["127.0.0.2",
                                                       "127.0.0.3"]
    assert one(res, "mx1.example.test").values == ["127.0.0.2"]
    res, _ = run(probe, srv(dns), "AAAA", "example.test", "mx1.example.test")
    assert one(res, "example.test").values == ["2001:db8::25"]
    assert one(res, "mx1.example.test").values == ["::1"]


def test_txt_strings_joined_per_record(probe, dns):
    res, _ = run(probe, srv(dns), "TXT", "example.test")
    r = one(res, "example.test")
    assert r.status == "OK"
    assert r.values == ["v=spf1 ip4:192.0.2.0/24 -all", "second record"]


def test_ptr_ipv4_and_ipv6(probe, dns):
    res, _ = run(probe, srv(dns), "PTR", "127.0.0.2", "2001:db8::25")
    assert one(res, "127.0.0.2").values == ["mx1.example.test"]
    assert one(res, "2001:db8::25").values == ["v6.example.test"]
    names = {q[0] for q in dns.queries(qtype="PTR")}
    assert "2.0.0.127.in-addr.arpa" in names
    assert ("5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0."
            "8.b.d.0.1.0.0.2.ip6.arpa") in names


def test_cname_to_mx(probe, dns):
    res, _ = run(probe, srv(dns), "MX", "alias.example.test")
    r = one(res, "alias.example.test")
    assert r.status == "OK" and r.values == ["5:mx.target.example.test"]
    assert r.ttl == 60


def test_nxdomain_and_nodata_apart(probe, dns):
    res, _ = run(probe, srv(dns), "MX", "nope.example.test",
                 "mx1.example.test", "nope.neg.example.test",
                 "neg.example.test")
    nx = one(res, "nope.example.test")
    assert nx.status == "NXDOMAIN" and nx.ttl == 300   # min(3600, 300)
    nodata = one(res, "mx1.example.test")
    assert nodata.status == "NODATA" and nodata.ttl == 300
    # RFC 2308: min(SOA TTL 60, MINIMUM 600)
    assert one(res, "nope.neg.example.test").status == "NXDOMAIN"
    assert one(res, "nope.neg.example.test").ttl == 60
    assert one(res, "neg.example.test").status == "NODATA"
    assert one(res, "neg.example.test").ttl == 60
    # negative answers are cached too
    assert len(dns.queries("nope.example.test")) == 1
    assert len(dns.queries("mx1.example.test")) == 1
    assert one(res, "nope.example.test", 2).status == "NXDOMAIN"


def test_servfail_and_drop_are_tempfail(probe, dns):
    res, extra = run(probe, srv(dns), "MX", "broken.example.test",
                     "slow.example.test", timeout_ms=200, attempts=2)
    for rnd in (1, 2):
        b = one(res, "broken.example.test", rnd)
        assert b.status == "TEMPFAIL" and b.why == "servfail"
        # libunbound gives up (SERVFAIL) or our deadline does
        s = one(res, "slow.example.test", rnd)
        assert s.status == "TEMPFAIL" and s.why in ("servfail", "timeout")
        assert s.ttl == 0 and b.ttl == 0
    assert dns.queries("broken.example.test")
    assert dns.queries("slow.example.test")


def test_refused_outside_zones_is_tempfail(probe, dns):
    # libunbound tries again, then fails: REFUSED is a SERVFAIL to us
    res, _ = run(probe, srv(dns), "A", "elsewhere.example")
    r = one(res, "elsewhere.example")
    assert r.status == "TEMPFAIL" and r.why == "servfail"
    assert dns.queries("elsewhere.example")


def test_invalid_tld_answered_locally(probe, dns):
    # RFC 6761: .invalid never exists; libunbound says so itself
    res, _ = run(probe, srv(dns), "A", "elsewhere.invalid")
    assert one(res, "elsewhere.invalid").status == "NXDOMAIN"
    assert dns.log == []


def test_truncated_answer_retried_over_tcp(probe, dns):
    res, extra = run(probe, srv(dns), "TXT", "big.example.test")
    r = one(res, "big.example.test")
    assert r.status == "OK" and r.values == ["answered over tcp"]
    assert dns.queries("big.example.test", "TXT", "udp") == [
        ("big.example.test", "TXT", "udp")]
    assert dns.queries("big.example.test", "TXT", "tcp") == [
        ("big.example.test", "TXT", "tcp")]
    assert extra["hits"] == 1


def test_second_lookup_from_cache(probe, dns):
    names = ["example.test", "mx1.example.test", "alias.example.test"]
    res, extra = run(probe, srv(dns), "MX", *names)
    for n in names:
        assert one(res, n, 1).status == one(res, n, 2).status
        assert one(res, n, 1).values == one(res, n, 2).values
        assert len(dns.queries(n, "MX")) == 1
    assert extra["hits"] == 3


def test_cache_expires_with_ttl(probe, dns):
    # unbound's clock counts whole seconds: a TTL of 1 lasts up to 2 s
    res, extra = run(probe, srv(dns), "A", "short.example.test",
                     "example.test", wait_ms=2300)
    assert one(res, "short.example.test", 2).values == ["127.0.0.4"]
    assert len(dns.queries("short.example.test")) == 2
    assert len(dns.queries("example.test", "A")) == 1
    assert extra["hits"] == 1


def test_same_name_at_once_is_one_query(probe, dns):
    res, _ = run(probe, srv(dns), "A", "example.test", "example.test",
                 "EXAMPLE.test", rounds=1)
    assert len([r for r in res if r.status == "OK"]) == 3
    assert len(dns.queries("example.test", "A")) == 1


def test_cancel_means_no_callback(probe, dns):
    res, extra = run(probe, srv(dns), "MX", "example.test",
                     "slow.example.test", cancel=True, rounds=1)
    assert extra["cancelled"] == 0
    assert extra["cancelled-cached"] == 0
    # the cancelled flight still filled the cache for the next lookup
    assert len(dns.queries("example.test", "MX")) == 1
    assert one(res, "example.test").status == "OK"
    assert one(res, "slow.example.test").status == "TEMPFAIL"


def test_formerr_to_edns_retried_without(probe, dns):
    res, _ = run(probe, srv(dns), "A", "old.example.test")
    assert one(res, "old.example.test").values == ["127.0.0.9"]
    assert len(dns.queries("old.example.test")) == 2


def test_next_server_after_timeout_or_refusal(probe, dns):
    dead = DNSServer({"example.test.": {"behaviour": "drop"}}).start()
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()              # nothing listens: ICMP port unreachable
    try:
        # libunbound picks at random among servers of like speed and
        # waits 376 ms, then twice as long each time, for one it does not
        # know yet; the dead one is left once it is far the slower (the
        # deadline, 10 s, covers five timeouts in a row)
        res, _ = run(probe, [(dead.host, dead.port), (dns.host, dns.port)],
                     "MX", "example.test", timeout_ms=5000, rounds=1)
        assert one(res, "example.test").status == "OK"
        assert len(dead.queries("example.test")) <= 5
        assert len(dns.queries("example.test")) == 1
        res, _ = run(probe, [("127.0.0.1", closed_port),
                             (dns.host, dns.port)], "A", "example.test",
                     timeout_ms=5000, rounds=1)
        assert one(res, "example.test").status == "OK"
    finally:
        dead.stop()


def test_every_server_failing_is_tempfail(probe, dns):
    dead = DNSServer({"example.test.": {"behaviour": "drop"}}).start()
    try:
        res, _ = run(probe, [(dead.host, dead.port)] * 2, "MX",
                     "example.test", timeout_ms=150, attempts=2, rounds=1)
        assert one(res, "example.test").status == "TEMPFAIL"
        assert 1 <= len(dead.queries("example.test")) <= 4
    finally:
        dead.stop()


def test_slow_name_does_not_delay_others(probe, dns):
    # slow.example.test is never answered and asked first; the others are
    # answered while it waits (the probe stops after two answers, with a
    # deadline of 60 s for the slow one: none of the others waited on it)
    res, extra = run(probe, srv(dns), "A", "slow.example.test",
                     "example.test", "mx1.example.test", timeout_ms=30000,
                     attempts=2, rounds=1, answers=2)
    assert sorted(r.name for r in res) == ["example.test", "mx1.example.test"]
    assert all(r.status == "OK" for r in res)
    assert extra["unanswered"] == 1


def test_slow_name_does_not_fail_others(probe, dns):
    # The server leaving slow.example.test unanswered round after round
    # is not taken for a dead server: a name that must be asked afresh
    # (TTL 1) is still asked and answered.
    res, _ = run(probe, srv(dns), "A", "slow.example.test",
                 "short.example.test", timeout_ms=300, attempts=2,
                 rounds=3, wait_ms=2300)
    for rnd in (1, 2, 3):
        short = one(res, "short.example.test", rnd)
        assert short.status == "OK" and short.values == ["127.0.0.4"], res
        assert one(res, "slow.example.test", rnd).status == "TEMPFAIL"
    assert len(dns.queries("short.example.test")) == 3


def test_dnssec_status_insecure_without_anchor(probe, dns):
    res, _ = run(probe, srv(dns), "MX", "example.test", rounds=1)
    r = one(res, "example.test")
    assert r.status == "OK" and r.sec == "insecure"


ROOT_KEY = pathlib.Path("/usr/share/dns/root.key")


@pytest.mark.skipif(not ROOT_KEY.exists(), reason="no dns-root-data")
def test_dnssec_unsigned_forwarder_with_anchor_is_bogus(probe, dns):
    # With the root's trust anchor, answers the loopback server cannot
    # prove (it serves no DNSKEY for the root) are bogus: a temporary
    # failure, never an answer and never a permanent one.
    res, _ = run(probe, srv(dns), "MX", "example.test", "nope.example.test",
                 rounds=1, timeout_ms=2000, anchor=ROOT_KEY)
    for name in ("example.test", "nope.example.test"):
        r = one(res, name)
        assert r.status == "TEMPFAIL" and r.sec == "bogus", res
        assert r.why == "dnssec bogus" and r.values == []


def test_dnssec_unreadable_anchor_means_no_validation(probe, dns, tmp_path):
    res, _ = run(probe, srv(dns), "MX", "example.test", rounds=1,
                 anchor=tmp_path / "missing.key")
    r = one(res, "example.test")
    assert r.status == "OK" and r.sec == "insecure"


def test_invalid_names_refused(probe, dns):
    res, _ = run(probe, srv(dns), "A", "bad name.test", "a..b", rounds=1)
    assert [r.status for r in res] == ["INVALID", "INVALID"]
    assert dns.log == []


def _ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_server_udp_and_tcp(probe):
    with DNSServer(ZONES, host="::1") as dns6:
        res, _ = run(probe, [("::1", dns6.port)], "TXT", "example.test",
                     "big.example.test", rounds=1)
        assert one(res, "example.test").status == "OK"
        assert one(res, "big.example.test").values == ["answered over tcp"]
        assert dns6.queries("big.example.test", transport="tcp")


def test_server_stops_cleanly():
    dns = DNSServer(ZONES).start()
    port = dns.port
    threads = list(dns._threads)
    dns.stop()
    assert threads and all(not t.is_alive() for t in threads)
    # both ports are free again
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
