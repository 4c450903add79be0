"""hosts — serves A, AAAA and PTR records from an /etc/hosts style file and inline entries.

Syntax::

    hosts [FILE [ZONES...]] {
        [INLINE]
        ttl SECONDS
        no_reverse
        reload DURATION
        fallthrough [ZONES...]
    }

FILE defaults to ``/etc/hosts`` (a relative path is taken from the working directory); a
missing file is logged and its entries appear once it exists.  ZONES limit the names served
(default: the server block's zones); names outside them are ignored.  Lines of the form
``IP NAME [ALIASES...]`` written in the block before ``fallthrough`` are INLINE entries,
served after the file's own.  ``ttl`` sets the TTL of every record (default 3600, 1 to
65535).  PTR records are made for every address unless ``no_reverse``.  The file is checked
for changes (modification time and size) every ``reload`` (default 5s; ``0`` disables).

A name that exists with another type gets NODATA.  An unknown name falls through to the
next plugin with ``fallthrough`` (limited to its ZONES if given), else gets SERVFAIL (a
hosts file has no SOA to deny with).  A PTR query without an entry, and any query outside
ZONES, always go to the next plugin.

Metrics: ``coredns_hosts_entries{hostsfile}`` and ``coredns_hosts_reload_timestamp_seconds``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import struct

from pydns import metrics
from pydns.corefile import CorefileError, Directive
from pydns.plugin import Plugin, parse_duration, register
from pydns.wire import NOERROR, SERVFAIL, Answer, Request, status, type_name
from pydns.zones import fqdn, in_wire_zones, normalize_zones, to_wire

TYPE_A, TYPE_PTR, TYPE_AAAA = 1, 12, 28
_RR_HEAD = struct.Struct("!HHHIH")  # pointer to the question's name, type, class, ttl, rdlength
_NAME_AT_QUESTION = 0xC00C
_CLASS_IN = 1

_entries = metrics.gauge("coredns_hosts_entries", "The combined number of entries in hosts and Corefile.",
                         ("hostsfile",))
_reload_time = metrics.gauge("coredns_hosts_reload_timestamp_seconds",
                             "The timestamp of the last reload of hosts file.")


class HostMap:
    """Parsed entries: names to addresses and, unless disabled, addresses to names."""

    def __init__(self) -> None:
        self.v4: dict[str, list[bytes]] = {}  # name (lower-case FQDN) -> packed addresses
        self.v6: dict[str, list[bytes]] = {}
        self.names_of: dict[str, list[str]] = {}  # reverse name -> host names

    def __len__(self) -> int:
        return (sum(map(len, self.v4.values())) + sum(map(len, self.v6.values()))
                + sum(map(len, self.names_of.values())))


def parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as /etc/hosts writes it (an IPv6 zone is dropped; mapped IPv4 is IPv4)."""
    text = text.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def valid_name(name: str) -> bool:
    """Can the name be written on the wire (labels of 1 to 63 octets, 255 in all)?"""
    try:
        raw = name.encode("latin-1")
    except UnicodeEncodeError:
        return False
    if name == "." or len(raw) > 254:
        return False
    return all(0 < len(label) <= 63 for label in raw[:-1].split(b"."))


def parse_hosts(text: str, zones: list[str], reverse: bool) -> HostMap:
    """Read hosts(5) text; names outside ``zones`` are left out."""
    hmap = HostMap()
    zone_keys = frozenset(to_wire(z) for z in zones)
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        fields = line.split()
        if len(fields) < 2:
            continue
        ip = parse_address(fields[0])
        if ip is None:
            continue
        table = hmap.v4 if ip.version == 4 else hmap.v6
        packed = ip.packed
        rev = ip.reverse_pointer + "."
        for raw in fields[1:]:
            name = fqdn(raw)
            if not valid_name(name) or not in_wire_zones(to_wire(name), zone_keys):
                continue
            table.setdefault(name, []).append(packed)
            if reverse:
                hmap.names_of.setdefault(rev, []).append(name)
    return hmap




def _records(rtype: int, ttl: int, rdatas: list[bytes]) -> bytes:
    """Records owned by the question's name (a pointer to offset 12)."""
    return b"".join(_RR_HEAD.pack(_NAME_AT_QUESTION, rtype, _CLASS_IN, ttl, len(rdata)) + rdata for rdata in rdatas)


def build_table(maps: list[HostMap], ttl: int, plugin: str) -> tuple[dict, frozenset]:
    """Ready answers keyed by (wire name, qtype), and the names that have any address."""
    table: dict[tuple[bytes, int], Answer] = {}
    names: set[bytes] = set()
    for rtype, attr in ((TYPE_A, "v4"), (TYPE_AAAA, "v6")):
        merged: dict[str, list[bytes]] = {}
        for hmap in maps:
            for name, addrs in getattr(hmap, attr).items():
                merged.setdefault(name, []).extend(addrs)
        for name, addrs in merged.items():
            key = to_wire(name)
            table[(key, rtype)] = Answer(NOERROR, an=len(addrs), body=_records(rtype, ttl, addrs), aa=True,
                                         ttl=ttl, plugin=plugin)
            names.add(key)
    reverse: dict[str, list[str]] = {}
    for hmap in maps:
        for rev, hosts in hmap.names_of.items():
            reverse.setdefault(rev, []).extend(hosts)
    for rev, hosts in reverse.items():
        body = _records(TYPE_PTR, ttl, [to_wire(h) for h in hosts])
        table[(to_wire(rev), TYPE_PTR)] = Answer(NOERROR, an=len(hosts), body=body, aa=True, ttl=ttl, plugin=plugin)
    return table, frozenset(names)


@register("hosts")
class Hosts(Plugin):
    def __init__(self, server) -> None:
        super().__init__(server)
        self.path = "/etc/hosts"
        self.origins: list[str] = []
        self.ttl = 3600
        self.reverse = True
        self.reload = 5.0
        self.fall: frozenset | None = None  # zones (wire form) that fall through; None: never
        self.inline = HostMap()
        self.file_map = HostMap()
        self._stamp: tuple | None = None  # (mtime_ns, size) of the file as last read
        self._mtime = 0.0
        self._task: asyncio.Task | None = None
        self.table: dict[tuple[bytes, int], Answer] = {}
        self.names: frozenset = frozenset()
        self._origin_keys: frozenset = frozenset()
        self.nodata = Answer(NOERROR, aa=True, plugin=self.name)

    # ------------------------------------------------------------------ setup
    def setup(self, d: Directive) -> None:
        args = list(d.args)
        if args:
            self.path = str(args.pop(0))
            try:
                if os.path.isdir(self.path):
                    self.log.warning("Hosts file %r is a directory", self.path)
                elif not os.path.exists(self.path):
                    self.log.warning("File does not exist: %s", self.path)
                else:
                    os.stat(self.path)
            except OSError as exc:
                raise d.error(f"plugin/hosts: unable to access hosts file '{self.path}': {exc}", d.args[0]) from None
        self.origins = normalize_zones(args, self.server.zones)
        self._origin_keys = frozenset(to_wire(z) for z in self.origins)
        inline: list[Directive] = []
        for opt in d.options:
            name = str(opt.name)
            if name == "fallthrough":
                zones = normalize_zones(opt.args, ["."])
                self.fall = frozenset(to_wire(z) for z in zones)
            elif name == "no_reverse":
                if opt.args:
                    raise opt.error(f"plugin/hosts: no_reverse takes no arguments, found '{opt.args[0]}'", opt.args[0])
                self.reverse = False
            elif name == "ttl":
                self.ttl = self._ttl(opt)
            elif name == "reload":
                self.reload = self._reload(opt)
            elif self.fall is None:
                inline.append(opt)
            else:
                raise opt.error(f"plugin/hosts: unknown property '{name}'")
        lines = []
        for opt in inline:
            if parse_address(str(opt.name)) is None:
                raise opt.error(f"plugin/hosts: unknown property '{opt.name}'")
            if not opt.args or opt.block is not None:
                raise opt.error(f"plugin/hosts: inline entry '{opt.name}' needs a host name")
            lines.append(" ".join([str(opt.name), *map(str, opt.args)]))
        self.inline = parse_hosts("\n".join(lines), self.origins, self.reverse)
        self._rebuild()

    @staticmethod
    def _ttl(opt: Directive) -> int:
        if not opt.args:
            raise opt.error("plugin/hosts: ttl needs a time in second")
        if len(opt.args) > 1:
            raise opt.error(f"plugin/hosts: ttl takes one value, found '{opt.args[1]}'", opt.args[1])
        try:
            ttl = int(str(opt.args[0]))
        except ValueError:
            raise opt.error("plugin/hosts: ttl needs a number of second", opt.args[0]) from None
        if ttl <= 0 or ttl > 65535:
            raise opt.error("plugin/hosts: ttl provided is invalid", opt.args[0])
        return ttl

    @staticmethod
    def _reload(opt: Directive) -> float:
        if len(opt.args) != 1:
            raise opt.error("plugin/hosts: reload needs a duration (zero seconds to disable)")
        text = str(opt.args[0])
        if text.startswith("-"):
            raise opt.error(f"plugin/hosts: invalid negative duration for reload '{text}'", opt.args[0])
        try:
            return parse_duration(opt.args[0])
        except CorefileError:
            raise opt.error(f"plugin/hosts: invalid duration for reload '{text}'", opt.args[0]) from None

    # ------------------------------------------------------------------ data
    def _rebuild(self) -> None:
        self.table, self.names = build_table([self.file_map, self.inline], self.ttl, self.name)

    def _read_file(self) -> bool:
        """Parse the file if it changed; True when the table needs rebuilding."""
        try:
            st = os.stat(self.path)
            if not os.path.isfile(self.path):
                return False
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return False
            with open(self.path, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError:
            return False  # a missing file keeps what was read last, as CoreDNS does
        self.file_map = parse_hosts(text, self.origins, self.reverse)
        self._stamp = stamp
        self._mtime = st.st_mtime_ns / 1e9
        return True

    def _refresh(self) -> bool:
        if not self._read_file():
            return False
        self._rebuild()
        _entries.labels(self.path).set(len(self.inline) + len(self.file_map))
        _reload_time.set(self._mtime)
        self.log.debug("Parsed hosts file into %d entries", len(self.file_map))
        return True

    async def start(self) -> None:
        await asyncio.to_thread(self._refresh)
        if self.reload > 0:
            self._task = asyncio.ensure_future(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.reload)
            try:
                # Parsing a large file happens off the event loop; the table is swapped whole.
                await asyncio.to_thread(self._refresh)
            except Exception:
                self.log.exception("reading %s failed", self.path)

    # ------------------------------------------------------------------ queries
    def serve(self, req: Request):
        answer = self.table.get((req.key, req.qtype))
        if answer is not None:
            return answer
        return self._not_found(req)

    def explain(self, req: Request, answer: Answer):
        name = req.lname
        sources = [where for where, entries in ((f"the hosts file {self.path}", self.file_map),
                                                ("the Corefile's inline entries", self.inline))
                   if name in entries.v4 or name in entries.v6 or name in entries.names_of]
        reason = f"{name} is in " + " and ".join(sources or ["the hosts entries"])
        if answer.an == 0:
            reason += f", without {type_name(req.qtype)} records: NODATA"
        return reason, {}

    def _not_found(self, req: Request):
        if req.qtype == TYPE_PTR or not in_wire_zones(req.key, self._origin_keys):
            return self.next.serve(req)
        if req.key in self.names:
            return self.nodata
        if self.fall is not None and in_wire_zones(req.key, self.fall):
            if req.trace is not None:
                req.trace.note(self.name, "passed on", "not in the hosts file; `fallthrough` hands it on")
            return self.next.serve(req)
        if req.trace is not None:
            req.trace.note(self.name, "failed", "not in the hosts file, and no `fallthrough`: SERVFAIL")
        return status(SERVFAIL)
