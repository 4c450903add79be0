"""The plain dnslib server the benchmarks compare pydns with.

    python bench/dnslib_reference.py --records records.json --port 5300

This is how a DNS server is usually written in Python: ``dnslib.server.DNSServer`` (a
thread per UDP query, from socketserver) with a ``BaseResolver`` that looks the question up
in a dict and packs a reply with dnslib.  The records (from gen_cluster.py) become dnslib
``RR`` objects once at start, so per query it only parses, looks up and packs.  Same answers
as the cluster's: NODATA for a known name without the type, NXDOMAIN for unknown names in the
zone, REFUSED outside it; SRV answers carry their targets' addresses as additional records.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

from dnslib import AAAA, PTR, QTYPE, RCODE, RR, SRV, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer


class DictResolver(BaseResolver):
    def __init__(self, records: dict[str, dict[str, list[str]]], zone: str, ttl: int):
        self.zone = zone.lower().rstrip(".") + "."
        self.rrs: dict[tuple[str, int], list[RR]] = {}
        for name, types in records.items():
            name = name.lower()
            for rtype, values in types.items():
                self.rrs[(name, getattr(QTYPE, rtype))] = [RR(name, getattr(QTYPE, rtype), ttl=ttl, rdata=_rdata(rtype, v))
                                                           for v in values]
        self.names = {name.lower() for name in records}

    def resolve(self, request, handler):
        reply = request.reply()
        qname = str(request.q.qname).lower()
        rrs = self.rrs.get((qname, request.q.qtype))
        if rrs:
            reply.add_answer(*rrs)
            if request.q.qtype == QTYPE.SRV:
                for rr in rrs:
                    target = str(rr.rdata.target).lower()
                    reply.add_ar(*self.rrs.get((target, QTYPE.A), ()), *self.rrs.get((target, QTYPE.AAAA), ()))
        elif qname in self.names:
            pass  # NODATA
        elif qname.endswith(self.zone) or qname == self.zone:
            reply.header.rcode = RCODE.NXDOMAIN
        else:
            reply.header.rcode = RCODE.REFUSED
        return reply


def _rdata(rtype: str, value: str):
    if rtype == "A":
        return A(value)
    if rtype == "AAAA":
        return AAAA(value)
    if rtype == "PTR":
        return PTR(value)
    if rtype == "SRV":
        prio, weight, port, target = value.split()
        return SRV(int(prio), int(weight), int(port), target)
    raise ValueError(f"unsupported record type {rtype}")


class QuietLogger(DNSLogger):
    """No per-query log lines: they would dominate the cost being measured."""

    def __init__(self):
        super().__init__(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", required=True, help="records.json written by gen_cluster.py")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--address", default="127.0.0.1")
    args = p.parse_args(argv)
    with open(args.records) as fh:
        data = json.load(fh)
    resolver = DictResolver(data["records"], data["zone"], data["ttl"])
    server = DNSServer(resolver, address=args.address, port=args.port, logger=QuietLogger())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"dnslib reference: {len(resolver.rrs)} rrsets on {args.address}:{args.port}", flush=True)
    try:
        server.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
