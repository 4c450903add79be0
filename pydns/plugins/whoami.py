"""whoami — tells the client its own address, port and transport.

Syntax::

    whoami

The answer's additional section holds an A or AAAA record with the client's address under
the query name, and an SRV record ``_udp.<qname>`` / ``_tcp.<qname>`` carrying its port.
"""

from __future__ import annotations

import ipaddress

from dnslib import AAAA, RR, SRV, A, QTYPE

from pydns.plugin import Plugin, register
from pydns.wire import Answer, Request


@register("whoami")
class Whoami(Plugin):
    def serve(self, req: Request) -> Answer:
        host, port = req.remote[0], req.remote[1]
        ip = ipaddress.ip_address(host.split("%")[0])
        if ip.version == 6 and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        name = req.label
        if ip.version == 4:
            addr = RR(name, QTYPE.A, ttl=0, rdata=A(str(ip)))
        else:
            addr = RR(name, QTYPE.AAAA, ttl=0, rdata=AAAA(str(ip)))
        srv = RR(name.add(f"_{req.proto}"), QTYPE.SRV, ttl=0, rdata=SRV(0, 0, port, "."))
        return Answer.build(name, req.qtype, additional=[addr, srv], plugin=self.name)
