"""The addresses this server answers on, for the zone's NS records.

As CoreDNS: the server block's bound addresses, or every interface address when it binds
to all; loopback addresses are left out.  When nothing else is left (a server bound to
127.0.0.1 only) the loopback addresses are used, so that ``ns.dns.ZONE`` still resolves
to where the server can be reached.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

_SIOCGIFADDR = 0x8915


def interface_addresses() -> list[str]:
    """Every IPv4 and IPv6 address of this machine's interfaces (Linux)."""
    found: list[str] = []
    try:
        names = [name for _i, name in socket.if_nameindex()]
    except OSError:
        names = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for name in names:
            try:
                packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue
            found.append(socket.inet_ntoa(packed[20:24]))
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as fh:
            for line in fh:
                raw = line.split()[0]
                found.append(str(ipaddress.IPv6Address(int(raw, 16))))
    except (OSError, ValueError, IndexError):
        pass
    return found


def local_addresses(binds: list[str]) -> list[str]:
    hosts = list(binds) or interface_addresses()
    addresses = []
    for host in hosts:
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            continue
        if ip.is_unspecified:
            continue
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if str(ip) not in addresses:
            addresses.append(str(ip))
    outside = [a for a in addresses if not ipaddress.ip_address(a).is_loopback]
    return outside or addresses
