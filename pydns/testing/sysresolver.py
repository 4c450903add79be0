"""Name lookups of this process answered by a pydns test server.

``SystemResolver(resolver)`` swaps the socket module's lookup functions
(``getaddrinfo``, ``gethostbyname``, ``gethostbyname_ex``, ``gethostbyaddr``,
``getnameinfo``, ``getfqdn``) for dnspython's, asking ``resolver``: every library that
looks names up through the socket module (``http.client``, urllib3, requests, asyncio,
``socket.create_connection``) then resolves through pydns.  ``localhost`` and loopback
addresses stay with the system, as a pod's ``/etc/hosts`` answers them.  ``restore()``
puts back every function.  Needs dnspython (the ``fixture`` extra).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Iterable

# What dnspython's override_system_resolver replaces; all of them are put back on restore
# (dnspython's own restore leaves gethostbyaddr behind).
SOCKET_FUNCTIONS = ("getaddrinfo", "getnameinfo", "getfqdn", "gethostbyname", "gethostbyname_ex", "gethostbyaddr")


def dnspython():
    """The ``dns`` package, or an error that says how to install it."""
    try:
        import dns.message
        import dns.name
        import dns.query
        import dns.rcode
        import dns.resolver
    except ImportError as exc:  # the pytest plugin loads in every run, dnspython or not
        raise ImportError("the pydns fixture's queries need dnspython: pip install 'pydns-cluster[fixture]'") from exc
    return dns


def pod_resolver(host: str, port: int, search: Iterable[str] = ()):
    """A dnspython resolver asking only ``host:port``, without a cache; with a search list,
    short names are completed as a pod's resolver completes them (ndots:5)."""
    dns = dnspython()
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = port
    resolver.timeout = resolver.lifetime = 3.0
    resolver.cache = None
    search = [dns.name.from_text(s) for s in search]
    if search:
        resolver.search = search
        resolver.ndots = 5
        resolver.use_search_by_default = True
    return resolver


def is_local(host) -> bool:
    """localhost names and loopback addresses: what a pod's /etc/hosts answers, not its DNS."""
    if isinstance(host, tuple):  # getnameinfo's sockaddr
        host = host[0]
    if not host:
        return True  # getaddrinfo(None, ...), getfqdn(''): this host itself
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.split("%")[0]).is_loopback
    except ValueError:
        return False


class SystemResolver:
    """The socket module's lookups through ``resolver`` until ``restore()`` (or the ``with`` block's end)."""

    active: "SystemResolver | None" = None

    def __init__(self, resolver):
        dns = dnspython()
        if SystemResolver.active is not None:
            raise RuntimeError("a pydns server already answers socket.getaddrinfo; restore it first")
        self.saved = {name: getattr(socket, name) for name in SOCKET_FUNCTIONS}
        dns.resolver.override_system_resolver(resolver)
        through_dns = {name: getattr(socket, name) for name in SOCKET_FUNCTIONS}
        for name in SOCKET_FUNCTIONS:
            setattr(socket, name, _route(self.saved[name], through_dns[name], name == "getaddrinfo"))
        SystemResolver.active = self

    def restore(self) -> None:
        if SystemResolver.active is not self:
            return
        dnspython().resolver.restore_system_resolver()
        for name, function in self.saved.items():
            setattr(socket, name, function)
        SystemResolver.active = None

    def __enter__(self) -> "SystemResolver":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


def _route(system, through_dns, is_getaddrinfo: bool):
    def lookup(host=None, *args, **kwargs):
        if is_local(host):
            return system(host, *args, **kwargs)
        if is_getaddrinfo:
            # dnspython refuses AI_ADDRCONFIG (asyncio and aiohttp pass it); answering every
            # family the server has is the reading that lets such callers work in a test.
            if len(args) >= 5:
                args = (*args[:4], args[4] & ~socket.AI_ADDRCONFIG, *args[5:])
            elif "flags" in kwargs:
                kwargs["flags"] &= ~socket.AI_ADDRCONFIG
        return through_dns(host, *args, **kwargs)

    lookup.__name__ = lookup.__qualname__ = getattr(system, "__name__", "lookup")
    lookup.__doc__ = getattr(system, "__doc__", None)
    return lookup
