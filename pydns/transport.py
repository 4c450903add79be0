"""What UDP and TCP listeners share: the router, the per-query dispatch, bound sockets.

Each listener (``pydns.udp``, ``pydns.tcp``) owns a socket and a ``Router`` (swapped
atomically on reload).  The dispatch is the hot path: pick the server block, run its chain.
Nothing here knows any plugin.
"""

from __future__ import annotations

import errno
import logging
import socket
import sys

from pydns import stats
from pydns.plugin import DNSError, NoReply
from pydns.zones import wire_lookup
from pydns.wire import NOTIMP, REFUSED, SERVFAIL, Answer, Request, status

log = logging.getLogger("pydns")

OPCODE_QUERY, OPCODE_NOTIFY = 0, 4


class Router:
    """Maps a query to the server block with the most specific zone on this listener."""

    def __init__(self, servers_by_zone: dict[bytes, tuple]):
        # zone in wire form -> (ServerConfig, zone text)
        self.by_zone = servers_by_zone
        self.only = servers_by_zone.get(b"\x00") if len(servers_by_zone) == 1 else None

    def route(self, key: bytes):
        if self.only is not None:
            return self.only
        return wire_lookup(key, self.by_zone)


def _panic(req: Request, exc: BaseException) -> Answer:
    stats.panics += 1
    log.error("panic while serving %s %s: %r", req.name, req.qtype, exc, exc_info=exc)
    return status(SERVFAIL)


def dispatch(router: Router, req: Request):
    """Run one query through its server block: an Answer, or an awaitable of one."""
    entry = router.route(req.key)
    if entry is None:
        refused = status(REFUSED)
        for hook in stats.unrouted_hooks:
            hook(req, refused)
        return refused
    server, req.zone = entry
    req.server = server
    if req.opcode != OPCODE_QUERY and req.opcode != OPCODE_NOTIFY:
        return status(NOTIMP)
    try:
        return server.handler.serve(req)
    except DNSError as err:
        req.memo_until = 0.0
        return status(err.rcode)
    except Exception as exc:
        req.memo_until = 0.0
        return _panic(req, exc)


async def settle(req: Request, result) -> Answer | None:
    """The answer a chain gave later, or None for a query that gets no reply at all (a
    ``NoReply``: acl's drop); its failures become rcodes, as in ``dispatch``."""
    try:
        return await result
    except NoReply:
        return None
    except DNSError as err:
        return status(err.rcode)
    except Exception as exc:
        return _panic(req, exc)


def wildcard_family() -> tuple[str, int]:
    """Dual-stack '::' where the host has IPv6, else 0.0.0.0."""
    if socket.has_ipv6:
        try:
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            s.close()
            return "::", socket.AF_INET6
        except OSError:
            pass
    return "0.0.0.0", socket.AF_INET


# The UDP receive buffer asked for by default (``-so-rcvbuf``): room for a burst of some
# thousands of queries while the loop is busy, as Unbound's so-rcvbuf advice (4m).
DEFAULT_RCVBUF = 4 << 20
# Python does not name this Linux option; 33 is its number there.
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33 if sys.platform.startswith("linux") else None)
_capped_logged = False


def set_receive_buffer(sock: socket.socket, size: int) -> None:
    """Ask for a ``size``-byte receive buffer (0: keep the kernel's default).

    SO_RCVBUFFORCE goes past the system's cap (net.core.rmem_max) where the process may
    (CAP_NET_ADMIN); else SO_RCVBUF, which the kernel silently caps: that is logged once.
    """
    global _capped_logged
    if size <= 0:
        return
    forced = False
    if SO_RCVBUFFORCE is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
            forced = True
        except OSError:  # not allowed to: what rmem_max allows
            pass
    if not forced:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if sys.platform.startswith("linux"):
        granted //= 2  # Linux reports twice the size set: the other half is its bookkeeping
    if granted < size and not _capped_logged:
        _capped_logged = True
        log.warning("UDP receive buffer is %d bytes, not the %d asked (-so-rcvbuf): the kernel caps it at "
                    "net.core.rmem_max; raise that to allow more", granted, size)


# The ancillary data that tells the address a datagram was sent to.  Python 3.11 names only
# the IPv6 one; IP_PKTINFO is 8 on Linux.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8 if sys.platform.startswith("linux") else None)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", None)
WILDCARDS = ("", "0.0.0.0", "::")
_no_pktinfo_logged = False


def receive_destination(sock: socket.socket) -> bool:
    """Ask the kernel for each datagram's destination address (and interface) on a socket
    bound to every address, so that the reply can be sent from the address the client
    asked.  False (said once in the log) where the platform cannot."""
    global _no_pktinfo_logged
    try:
        if sock.family == socket.AF_INET6 and IPV6_RECVPKTINFO is not None:
            # on a dual-stack socket this covers IPv4 too, as v4-mapped addresses
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            return True
        if sock.family == socket.AF_INET and IP_PKTINFO is not None:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            return True
    except OSError:
        pass
    if not _no_pktinfo_logged:
        _no_pktinfo_logged = True
        log.warning("this platform cannot tell which local address a UDP query was sent to (no IP_PKTINFO / "
                    "IPV6_RECVPKTINFO): listeners on every address reply from the address the kernel picks, which "
                    "clients reject when it is another one; use the bind plugin to listen on each address instead")
    return False


def parse_size(text: str) -> int:
    """Bytes from '4m', '512k', '8388608' (Unbound's notation; k, m, g are powers of 1024)."""
    text = text.strip().lower()
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1:], 1)
    digits = text[:-1] if scale != 1 else text
    if not digits.isdigit():
        raise ValueError(f"not a size: {text!r} (say 4m, 512k or a number of bytes)")
    return int(digits) * scale


def make_sockets(host: str, port: int, rcvbuf: int = DEFAULT_RCVBUF) -> tuple[socket.socket, socket.socket]:
    """Bound UDP and TCP sockets for host:port (host '' means every address)."""
    # Port 0: the free UDP port may be taken for TCP by another process; try another one.
    for _ in range(19 if port == 0 else 0):
        try:
            return _bound_pair(host, port, rcvbuf)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
    return _bound_pair(host, port, rcvbuf)


def _bound_pair(host: str, port: int, rcvbuf: int) -> tuple[socket.socket, socket.socket]:
    if host == "":
        host, family = wildcard_family()
    else:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
    udp = socket.socket(family, socket.SOCK_DGRAM)
    tcp = socket.socket(family, socket.SOCK_STREAM)
    try:
        for s in (udp, tcp):
            if family == socket.AF_INET6 and host == "::":
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        set_receive_buffer(udp, rcvbuf)
        if host in WILDCARDS:
            receive_destination(udp)
        udp.bind((host, port))
        # port 0 asks for a free port: use the UDP one for TCP too
        tcp.bind((host, udp.getsockname()[1]))
        tcp.listen(1024)
        udp.setblocking(False)
        tcp.setblocking(False)
    except OSError:
        udp.close()
        tcp.close()
        raise
    return udp, tcp
