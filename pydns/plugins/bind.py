"""bind — the addresses a server block listens on.

Syntax::

    bind ADDRESS|INTERFACE ...
    bind ADDRESS|INTERFACE ... {
        except ADDRESS ...
    }

Without ``bind`` a server listens on every address.  An interface name stands for the
IPv4 addresses of that interface; ``except`` removes addresses from the list.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

from pydns.corefile import Directive
from pydns.plugin import Plugin, expect_args, register, unknown_option

_SIOCGIFADDR = 0x8915


def _interface_addresses(name: str) -> list[str]:
    """IPv4 address of a network interface (Linux ioctl), or [] if it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError:
            return []
    return [socket.inet_ntoa(packed[20:24])]


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%")[0])
        return True
    except ValueError:
        return False


@register("bind")
class Bind(Plugin):
    multiple = True

    def setup(self, d: Directive) -> None:
        args = expect_args(d, 1)
        interfaces = {name for _i, name in socket.if_nameindex()}
        found: list[str] = []
        for arg in args:
            if _is_address(arg):
                found.append(str(arg))
            elif arg in interfaces:
                found.extend(_interface_addresses(arg))
            else:
                raise d.error(f"plugin/bind: not a valid IP address or interface name: '{arg}'", arg)
        excluded: set[str] = set()
        for opt in d.options:
            if opt.name != "except":
                raise unknown_option(d, opt)
            for arg in expect_args(opt, 1):
                if not _is_address(arg):
                    raise opt.error(f"plugin/bind: not a valid IP address: '{arg}'", arg)
                excluded.add(str(arg))
        for addr in found:
            if addr not in excluded and addr not in self.server.binds:
                self.server.binds.append(addr)
        if not self.server.binds:
            raise d.error("plugin/bind: no address left to listen on")
