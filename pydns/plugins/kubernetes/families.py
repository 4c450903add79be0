"""AAAA by the cluster's IP families (``ipv6 auto|on|off``).

On a single-stack IPv4 cluster half of all questions are AAAA, and no name in the cluster
has one.  Whether AAAA questions for in-cluster names can have answers:

* ``on`` (the default): the cluster may have IPv6 (CoreDNS's behaviour);
* ``off``: the cluster is IPv4-only;
* ``auto``: IPv6 exists once any Service has an IPv6 cluster IP or any EndpointSlice an
  IPv6 address (what a Service's ``ipFamilies`` give it: its cluster IPs, and its
  endpoints' address type, follow them); until the first sync (or a snapshot) it is
  taken to exist, as with ``on``.

Where IPv6 does not exist, the plugin answers every AAAA question in its forward zones
itself: a name that exists gets its AAAA records if it has any, else NODATA with the SOA
(also before the first sync, when the name is known: it cannot have one); an
ExternalName service gets its CNAME alone, the target's AAAA not looked up; a name that
does not exist gets NXDOMAIN and is never handed on by ``fallthrough``.  So no AAAA
question for a cluster name leaves the server.
"""

from __future__ import annotations

from typing import Callable


class Families:
    def __init__(self, mode: str, store, learned: Callable[[], bool]):
        self.mode = mode
        self.store = store
        self.learned = learned  # whether the store holds the cluster's state (synced or from a snapshot)

    def ipv6(self) -> bool:
        """Whether AAAA questions for in-cluster names may have answers."""
        if self.mode == "on":
            return True
        if self.mode == "off":
            return False
        return not self.learned() or self.store.v6_holders > 0
