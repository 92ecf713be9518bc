"""A small authoritative DNS server on loopback for tests (UDP and TCP).

    zones = {
        "example.test.": {"MX": [(10, "mx1.example.test.")],
                          "A": ["127.0.0.2"], "TXT": ["v=spf1 -all"]},
        "mx1.example.test.": {"A": ["127.0.0.2"], "AAAA": ["::1"]},
        "alias.example.test.": {"CNAME": "example.test."},
        "127.0.0.2": {"PTR": ["mx1.example.test."]},    # IP -> reverse name
        "slow.example.test.": {"behaviour": "drop"},
    }
    with DNSServer(zones) as dns:       # or dns.start() ... dns.stop()
        ... resolver 127.0.0.1 port dns.port ...
        assert ("example.test", "MX", "udp") in dns.log

Names are case-insensitive, the trailing dot optional; an IP address key
stands for its in-addr.arpa / ip6.arpa name.  Record values: A, AAAA, PTR,
NS: lists of strings; MX: list of (preference, host); TXT: list of strings,
or of lists of strings (several character-strings in one record); CNAME: a
string.  "TTL" sets the records' TTL (default 300).

A name is inside a zone when a configured name is a suffix of it; the zone
apex is the shortest such name, or the nearest one with a "SOA" entry, a
(ttl, minimum) pair (default (3600, 300)).  Unknown names inside a zone get
NXDOMAIN, known names without the type NODATA, both with the apex SOA in
the authority section; names outside every zone get REFUSED.  CNAMEs are
followed within the zones, as a recursive server would.

Per-name "behaviour" (also set_behaviour(name, b) while running):
  "servfail"      answer SERVFAIL
  "refused"       answer REFUSED
  "drop"          never answer (the client times out)
  "truncate"      over UDP answer TC=1 with no records; TCP answers fully
  "formerr_edns"  FORMERR to queries carrying an EDNS0 OPT record
A behaviour may be a dict by type, e.g. {"MX": "drop"}.

log is a list of (qname, qtype, transport): qname lower-case without the
trailing dot, qtype like "MX", transport "udp" or "tcp".
"""
import ipaddress
import select
import socket
import struct
import threading

from dnslib import (AAAA, CNAME, DNSRecord, MX, NS, PTR, QTYPE, RCODE, RR,
                    SOA, TXT, A)

_RDATA = {
    "A": A, "AAAA": AAAA, "PTR": PTR, "NS": NS, "CNAME": CNAME,
}


def _norm(name):
    """Lower-case, no trailing dot; an IP literal becomes its PTR name."""
    name = str(name).strip()
    try:
        return ipaddress.ip_address(name).reverse_pointer
    except ValueError:
        return name.rstrip(".").lower()


class DNSServer:
    def __init__(self, zones, host="127.0.0.1", port=0, ttl=300):
        self.host = host
        self.port = port
        self.ttl = ttl
        self.zones = {_norm(k): dict(v) for k, v in zones.items()}
        self.log = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        self._udp = None
        self._tcp = None

    # ---- control ------------------------------------------------------

    def start(self):
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for _ in range(20):
            udp = socket.socket(fam, socket.SOCK_DGRAM)
            udp.bind((self.host, self.port))
            port = udp.getsockname()[1]
            tcp = socket.socket(fam, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((self.host, port))
            except OSError:
                udp.close()
                tcp.close()
                if self.port:
                    raise
                continue
            break
        else:
            raise OSError("no port free for both UDP and TCP")
        tcp.listen(16)
        self._udp, self._tcp, self.port = udp, tcp, port
        for target in (self._udp_loop, self._tcp_loop):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, timeout=2.0):
        self._stop.set()
        for t in list(self._threads):
            t.join(timeout)
        for s in (self._udp, self._tcp):
            if s is not None:
                s.close()
        self._udp = self._tcp = None
        self._threads = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def set_behaviour(self, name, behaviour):
        with self._lock:
            self.zones.setdefault(_norm(name), {})["behaviour"] = behaviour

    def set_records(self, name, rtype, values):
        with self._lock:
            self.zones.setdefault(_norm(name), {})[rtype] = values

    def queries(self, name=None, qtype=None, transport=None):
        """The log entries matching the given fields."""
        with self._lock:
            log = list(self.log)
        return [e for e in log
                if (name is None or e[0] == _norm(name))
                and (qtype is None or e[1] == qtype)
                and (transport is None or e[2] == transport)]

    def clear_log(self):
        with self._lock:
            self.log.clear()

    # ---- serving ------------------------------------------------------

    def _udp_loop(self):
        while not self._stop.is_set():
            r, _, _ = select.select([self._udp], [], [], 0.05)
            if not r:
                continue
            try:
                data, peer = self._udp.recvfrom(65535)
            except OSError:
                continue
            out = self._handle(data, "udp")
            if out is not None:
                try:
                    self._udp.sendto(out, peer)
                except OSError:
                    pass

    def _tcp_loop(self):
        conns = []
        while not self._stop.is_set():
            r, _, _ = select.select([self._tcp], [], [], 0.05)
            if r:
                try:
                    c, _ = self._tcp.accept()
                except OSError:
                    continue
                t = threading.Thread(target=self._tcp_conn, args=(c,),
                                     daemon=True)
                t.start()
                conns.append(t)
            conns = [t for t in conns if t.is_alive()]
        for t in conns:
            t.join(1.0)

    def _recv_exact(self, c, n):
        buf = b""
        while len(buf) < n and not self._stop.is_set():
            r, _, _ = select.select([c], [], [], 0.05)
            if not r:
                continue
            chunk = c.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf if len(buf) == n else None

    def _tcp_conn(self, c):
        c.settimeout(2.0)
        try:
            while not self._stop.is_set():
                hdr = self._recv_exact(c, 2)
                if hdr is None:
                    return
                data = self._recv_exact(c, struct.unpack("!H", hdr)[0])
                if data is None:
                    return
                out = self._handle(data, "tcp")
                if out is None:
                    return          # "drop": close without an answer
                c.sendall(struct.pack("!H", len(out)) + out)
        except OSError:
            pass
        finally:
            c.close()

    # ---- answering ----------------------------------------------------

    def _handle(self, data, transport):
        try:
            req = DNSRecord.parse(data)
        except Exception:
            return None
        if not req.questions:
            return None
        q = req.questions[0]
        qname = _norm(q.qname)
        qtype = QTYPE.get(q.qtype)
        with self._lock:
            self.log.append((qname, qtype, transport))
            behaviour = self.zones.get(qname, {}).get("behaviour")
        if isinstance(behaviour, dict):
            behaviour = behaviour.get(qtype)
        reply = req.reply()
        reply.header.ra = 1
        reply.header.aa = 1
        reply.ar = []
        if behaviour == "drop":
            return None
        if behaviour == "servfail":
            reply.header.rcode = RCODE.SERVFAIL
            return reply.pack()
        if behaviour == "refused":
            reply.header.rcode = RCODE.REFUSED
            return reply.pack()
        if behaviour == "formerr_edns" and any(
                r.rtype == QTYPE.OPT for r in req.ar):
            reply.header.rcode = RCODE.FORMERR
            return reply.pack()
        if behaviour == "truncate" and transport == "udp":
            reply.header.tc = 1
            return reply.pack()
        with self._lock:
            self._answer(reply, qname, qtype, q.qname)
        return reply.pack()

    def _apex(self, name):
        labels = name.split(".")
        suffixes = [".".join(labels[i:]) for i in range(len(labels))]
        for s in suffixes:
            if s in self.zones and "SOA" in self.zones[s]:
                return s
        inside = [s for s in suffixes if s in self.zones]
        return inside[-1] if inside else None

    def _soa(self, reply, apex):
        ttl, minimum = self.zones[apex].get("SOA", (3600, 300))
        reply.add_auth(RR(apex + ".", QTYPE.SOA, ttl=ttl, rdata=SOA(
            "ns1." + apex + ".", "hostmaster." + apex + ".",
            (2024010101, 3600, 600, 86400, minimum))))

    def _records(self, name, rtype, values, ttl):
        out = []
        for v in values:
            if rtype == "MX":
                rdata = MX(v[1], v[0])
            elif rtype == "TXT":
                rdata = TXT(list(v) if isinstance(v, (list, tuple)) else v)
            else:
                rdata = _RDATA[rtype](v)
            out.append(RR(name, getattr(QTYPE, rtype), ttl=ttl, rdata=rdata))
        return out

    def _answer(self, reply, qname, qtype, wire_qname):
        apex = self._apex(qname)
        if apex is None:
            reply.header.rcode = RCODE.REFUSED
            return
        name, owner = qname, wire_qname
        for _ in range(9):
            recs = self.zones.get(name)
            if recs is None:
                reply.header.rcode = RCODE.NXDOMAIN
                self._soa(reply, self._apex(name) or apex)
                return
            ttl = recs.get("TTL", self.ttl)
            if qtype in recs and qtype != "CNAME":
                for rr in self._records(owner, qtype, recs[qtype], ttl):
                    reply.add_answer(rr)
                return
            if "CNAME" in recs:
                target = recs["CNAME"]
                if isinstance(target, (list, tuple)):
                    target = target[0]
                reply.add_answer(RR(owner, QTYPE.CNAME, ttl=ttl,
                                    rdata=CNAME(target)))
                if qtype == "CNAME":
                    return
                name, owner = _norm(target), target
                if self._apex(name) is None:
                    return          # out of our zones: the chain ends here
                continue
            self._soa(reply, self._apex(name) or apex)
            return
