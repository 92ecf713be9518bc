"""The RFC 7208 test suite (rfc7208-tests.yml, shipped in Debian's
python3-spf documentation) as scenarios to run against a loopback DNS.

load() gives a list of (scenario, zones, cases).  zones is in
dnsserver.py's format: the suite's SPF records are served as TXT where a
name has no TXT of its own (as the suite's drivers do; RFC 7208 dropped
type SPF), "TXT: NONE" means no TXT, TIMEOUT never answers.  Every
top-level label the suite uses gets an empty zone with an SOA, so unknown
names are NXDOMAIN, not REFUSED.
"""
import gzip
import os

import yaml
from dnslib import RCODE

from dnsserver import DNSServer

SUITE = "/usr/share/doc/python3-spf/rfc7208-tests.yml.gz"


class SuiteDNS(DNSServer):
    """dnsserver.DNSServer, but a name outside every zone does not exist
    (NXDOMAIN, as the root would say), instead of REFUSED."""

    def _answer(self, reply, qname, qtype, wire_qname):
        if self._apex(qname) is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return
        DNSServer._answer(self, reply, qname, qtype, wire_qname)


def _strings(v):
    """A TXT record's character-strings, none over 255 bytes."""
    parts = v if isinstance(v, list) else [str(v)]
    out = []
    for p in parts:
        b = str(p).encode("utf-8")
        out += [b[i:i + 255] for i in range(0, len(b), 255)] or [b""]
    return out or [b""]


def _zones(data):
    zones = {}
    tlds = {"com", "net", "org", "test", "example", "arpa", "local"}
    for name, recs in (data or {}).items():
        name = str(name)
        z = {}
        spf = []
        txt_none = False
        timeout = False
        for r in recs or []:
            if r == "TIMEOUT":
                timeout = True
                continue
            (rtype, val), = r.items()
            if rtype == "SPF":
                spf.append(val)
            elif rtype == "TXT" and val == "NONE":
                txt_none = True
            elif rtype == "MX":
                z.setdefault("MX", []).append((val[0], str(val[1])))
            elif rtype == "CNAME":
                z["CNAME"] = str(val)
            else:
                z.setdefault(rtype, []).append(val)
        if timeout:
            # Beside real TXT records only type SPF times out.
            z["behaviour"] = {"SPF": "drop"} if "TXT" in z else "drop"
        if spf and "TXT" not in z and not txt_none:
            z["TXT"] = spf
        if "TXT" in z:
            z["TXT"] = [_strings(v) for v in z["TXT"]]
        zones[name.rstrip(".").lower()] = z
        tlds.add(name.rstrip(".").lower().split(".")[-1])
    for t in tlds:
        zones.setdefault(t, {})
        zones[t]["SOA"] = (3600, 300)
    return zones


def load():
    if not os.path.exists(SUITE):
        return None
    with gzip.open(SUITE, "rt", encoding="utf-8") as f:
        docs = list(yaml.safe_load_all(f))
    out = []
    for doc in docs:
        if not doc:
            continue
        cases = []
        for name, t in doc["tests"].items():
            res = t["result"]
            cases.append({
                "name": name,
                "host": str(t["host"]),
                "helo": str(t["helo"]),
                "mailfrom": str(t.get("mailfrom", "")),
                "result": res if isinstance(res, list) else [res],
                "explanation": t.get("explanation"),
            })
        out.append((doc["description"], _zones(doc.get("zonedata")), cases))
    return out
