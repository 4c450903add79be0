"""Reading one ``forward`` directive: FROM, the TO upstreams and the options block."""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass, field

from pydns.corefile import Directive, Token
from pydns.parser import label_offsets
from pydns.plugin import expect_args, parse_duration, parse_int
from pydns.plugins.forward.policy import POLICIES, Random
from pydns.plugins.forward.proxy import Proxy
from pydns.zones import fqdn, normalize_zones, to_wire

MAX_UPSTREAMS = 15
DNS_PORT, TLS_PORT, HTTPS_PORT = 53, 853, 443
RCODES = {
    "NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5, "YXDOMAIN": 6,
    "YXRRSET": 7, "NXRRSET": 8, "NOTAUTH": 9, "NOTZONE": 10, "BADSIG": 16, "BADVERS": 16, "BADKEY": 17,
    "BADTIME": 18, "BADMODE": 19, "BADNAME": 20, "BADALG": 21, "BADTRUNC": 22, "BADCOOKIE": 23,
}
UNSUPPORTED_SCHEMES = ("quic", "grpc", "https3", "unix")


@dataclass
class Stanza:
    """One ``forward`` line and its options, with its upstreams."""

    zone: str = "."
    zone_wire: bytes = b"\x00"
    ignored: list[bytes] = field(default_factory=list)
    proxies: list[Proxy] = field(default_factory=list)
    policy: object = field(default_factory=Random)
    max_fails: int = 2
    expire: float = 10.0
    max_age: float = 0.0
    max_idle: int = 0
    read_timeout: float = 2.0
    hc_interval: float = 0.5
    hc_recursion: bool = True
    hc_domain: str = "."
    force_tcp: bool = False
    prefer_udp: bool = False
    max_concurrent: int = 0
    limit_error: str = ""
    next_rcodes: frozenset = frozenset()
    next_on_nodata: bool = False
    failfast: bool = False
    failover: frozenset = frozenset()
    max_attempts: int | None = None  # None: twice the number of upstreams
    source: str | None = None
    resolvers: list[str] = field(default_factory=list)
    tls: ssl.SSLContext | None = None
    tls_servername: str = ""
    doh_method: str = "POST"
    concurrent: int = 0

    def matches(self, key: bytes) -> bool:
        """Does the query name (lower-case wire form) belong to FROM and not to an ``except`` name?"""
        if not in_zone(key, self.zone_wire):
            return False
        if self.ignored and key != self.zone_wire:
            for zone in self.ignored:
                if in_zone(key, zone):
                    return False
        return True


def in_zone(key: bytes, zone: bytes) -> bool:
    """Is the wire name ``key`` equal to or below ``zone`` (both lower-case wire form)?"""
    if zone == b"\x00":
        return True
    cut = len(key) - len(zone)
    if cut < 0 or not key.endswith(zone):
        return False
    return cut == 0 or cut in label_offsets(key)  # the suffix must start on a label boundary


# ---------------------------------------------------------------- the directive


def parse_stanza(d: Directive) -> Stanza:
    args = expect_args(d, 2)
    st = Stanza()
    zones = normalize_zones([args[0]], ["."])
    st.zone = zones[0]  # a CIDR expanding to several reverse zones: the first one, as CoreDNS
    st.zone_wire = to_wire(st.zone)
    max_age_at = None
    for opt in d.options:
        _option(d, opt, st)
        if opt.name == "max_age":
            max_age_at = opt
    if st.max_age and st.max_age < st.expire:
        raise max_age_at.error(f"plugin/forward: max_age ({_show(st.max_age)}) must not be less than expire "
                               f"({_show(st.expire)})")
    upstreams = _upstreams(d, args[1:], st)
    if len(upstreams) > MAX_UPSTREAMS:
        raise d.error(f"plugin/forward: more than {MAX_UPSTREAMS} TOs configured: {len(upstreams)}")
    default_tls = None
    for scheme, host, port, server_name, tok in upstreams:
        tls = None
        if scheme == "https":
            server_name = st.tls_servername  # a per-upstream %NAME only applies to tls://
        if scheme in ("tls", "https"):
            if scheme == "tls" and server_name and st.tls_servername:
                raise d.error(f"plugin/forward: both forward ('{st.tls_servername}') and proxy level "
                              f"('{server_name}') TLS servernames are set for upstream proxy '{tok}'", tok)
            if st.tls is None and default_tls is None:
                default_tls = _tls_context(d, tok, [])  # no `tls` option: the system's CAs
            tls = st.tls or default_tls
            server_name = st.tls_servername or server_name
        proxy = Proxy(host, port, tls, server_name or None, protocol=scheme)
        proxy.doh_method = st.doh_method
        proxy.expire, proxy.max_age, proxy.max_idle = st.expire, st.max_age, st.max_idle
        proxy.read_timeout, proxy.source, proxy.hc_interval = st.read_timeout, st.source, st.hc_interval
        proxy.hc_proto = "tcp" if st.force_tcp else "udp"
        proxy.health_query(st.hc_domain, st.hc_recursion)
        st.proxies.append(proxy)
    return st


def _show(seconds: float) -> str:
    return f"{seconds:g}s"


def _option(d: Directive, opt: Directive, st: Stanza) -> None:
    name = str(opt.name)
    if name == "except":
        st.ignored.extend(to_wire(z) for z in normalize_zones(expect_args(opt, 1, plugin="forward"), []))
    elif name == "force_tcp":
        expect_args(opt, 0, 0, plugin="forward")
        st.force_tcp = True
    elif name == "prefer_udp":
        expect_args(opt, 0, 0, plugin="forward")
        st.prefer_udp = True
    elif name == "expire":
        st.expire = _duration(opt, "expire")
    elif name == "max_age":
        st.max_age = _duration(opt, "max_age")
    elif name == "read_timeout":
        st.read_timeout = _duration(opt, "read_timeout")
        if st.read_timeout <= 0:
            raise opt.error(f"plugin/forward: read_timeout must be positive: {opt.args[0]}", opt.args[0])
    elif name == "max_idle_conns":
        st.max_idle = _integer(opt, "max_idle_conns")
    elif name == "max_fails":
        st.max_fails = _integer(opt, "max_fails")
    elif name == "max_connect_attempts":
        st.max_attempts = _integer(opt, "max_connect_attempts")
    elif name == "max_concurrent":
        st.max_concurrent = _integer(opt, "max_concurrent")
        st.limit_error = f"concurrent queries exceeded maximum {opt.args[0]}"
    elif name == "health_check":
        _health_check(opt, st)
    elif name == "tls":
        args = expect_args(opt, 0, 3, plugin="forward")
        st.tls = _tls_context(opt, opt.name, [str(a) for a in args])
    elif name == "tls_servername":
        st.tls_servername = str(expect_args(opt, 1, 1, plugin="forward")[0])
    elif name == "policy":
        (tok,) = expect_args(opt, 1, 1, plugin="forward")
        if tok not in POLICIES:
            raise opt.error(f"plugin/forward: unknown policy '{tok}'", tok)
        st.policy = POLICIES[tok]()
    elif name in ("next", "failover"):
        codes = set()
        for tok in expect_args(opt, 1, plugin="forward"):
            code = RCODES.get(tok.upper())
            if code is None:
                raise opt.error(f"plugin/forward: {tok} is not a valid rcode", tok)
            if name == "failover" and code == 0:
                raise opt.error("plugin/forward: NoError cannot be used in failover", tok)
            codes.add(code)
        if name == "next":
            st.next_rcodes = st.next_rcodes | codes
        else:
            st.failover = st.failover | codes
    elif name == "next_on_nodata":
        expect_args(opt, 0, 0, plugin="forward")
        st.next_on_nodata = True
    elif name == "failfast_all_unhealthy_upstreams":
        expect_args(opt, 0, 0, plugin="forward")
        st.failfast = True
    elif name == "source_address":
        (tok,) = expect_args(opt, 1, 1, plugin="forward")
        if not _is_ip(tok):
            raise opt.error(f"plugin/forward: invalid IP address: {tok}", tok)
        st.source = str(tok)
    elif name == "resolver":
        for tok in expect_args(opt, 1, plugin="forward"):
            host, _port = _split_host_port(tok)
            if host is None or not _is_ip(host):
                raise opt.error(f"plugin/forward: resolver must be an IP address or IP:port: \"{tok}\"", tok)
        st.resolvers = [str(t) for t in opt.args]
    elif name == "doh_method":
        (tok,) = expect_args(opt, 1, 1, plugin="forward")
        if tok not in ("GET", "POST"):
            raise opt.error("plugin/forward: doh_method must be either POST or GET", tok)
        st.doh_method = str(tok)
    else:
        raise opt.error(f"plugin/forward: unknown property '{name}'")


def _duration(opt: Directive, what: str) -> float:
    (tok,) = expect_args(opt, 1, 1, plugin="forward")
    return parse_duration(tok, "forward", f"{what} can't be negative: {tok}")


def _integer(opt: Directive, what: str) -> int:
    (tok,) = expect_args(opt, 1, 1, plugin="forward")
    value = parse_int(tok, "forward", what)
    if value < 0:
        raise opt.error(f"plugin/forward: {what} can't be negative: {value}", tok)
    return value


def _health_check(opt: Directive, st: Stanza) -> None:
    args = expect_args(opt, 1, plugin="forward")
    st.hc_interval = parse_duration(args[0], "forward", f"health_check can't be negative: {args[0]}")
    st.hc_domain = "."
    i = 1
    while i < len(args):
        word = args[i]
        if word == "no_rec":
            st.hc_recursion = False
        elif word == "domain":
            if i + 1 >= len(args):
                raise opt.error("plugin/forward: health_check: 'domain' needs a name", word)
            i += 1
            domain = args[i]
            if not _is_domain(domain):
                raise opt.error(f"plugin/forward: health_check: invalid domain name {domain}", domain)
            st.hc_domain = fqdn(domain)
        else:
            raise opt.error(f"plugin/forward: health_check: unknown option {word}", word)
        i += 1


def _is_domain(name: str) -> bool:
    if name == ".":
        return True
    labels = name.rstrip(".").split(".")
    return len(name) <= 255 and all(0 < len(label) <= 63 for label in labels)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%")[0])
        return True
    except ValueError:
        return False


def _split_host_port(text: str) -> tuple[str | None, str | None]:
    """``1.2.3.4:53`` / ``[::1]:53`` -> (host, port); a bare host -> (host, None)."""
    if text.startswith("["):
        end = text.find("]")
        if end == -1:
            return None, None
        rest = text[end + 1:]
        if rest and not rest.startswith(":"):
            return None, None
        return text[1:end], (rest[1:] if rest else None)
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, port
    return text, None


# ---------------------------------------------------------------- TLS


def _tls_context(d: Directive, tok: Token, args: list[str]) -> ssl.SSLContext:
    """``tls`` [CA] | CERT KEY [CA]: the client side of DNS over TLS (TLS 1.2 at least)."""
    cert = key = ca = None  # relative paths are relative to the working directory, as in CoreDNS
    if len(args) == 1:
        ca = args[0]
    elif len(args) >= 2:
        cert, key = args[0], args[1]
        ca = args[2] if len(args) == 3 else None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if ca:
            ctx.load_verify_locations(cafile=ca)
        else:
            ctx.load_default_certs()
        if cert:
            ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        what = f"error reading {ca}" if ca and not cert else "could not load TLS cert"
        raise d.error(f"plugin/forward: {what}: {getattr(exc, 'strerror', None) or exc}", tok) from None
    return ctx


# ---------------------------------------------------------------- upstreams


def _upstreams(d: Directive, tos: list[Token], st: Stanza) -> list[tuple]:
    """(scheme, host, port, tls server name, token) for every TO, files and names expanded."""
    out: list[tuple] = []
    seen: set[tuple] = set()
    empty_files: list[str] = []
    for tok in tos:
        for entry in _expand(d, tok, st, empty_files):
            ident = entry[1:3]
            if ident not in seen:
                seen.add(ident)
                out.append(entry)
    if not out:
        where = f" (no nameservers in {', '.join(empty_files)})" if empty_files else ""
        raise d.error(f"plugin/forward: no valid upstream addresses found{where}", tos[0])
    return out


def _expand(d: Directive, tok: Token, st: Stanza, empty_files: list[str]) -> list[tuple]:
    text = str(tok)
    scheme = "dns"
    if "://" in text:
        scheme, text = text.split("://", 1)
        scheme = scheme.lower()
    if scheme == "https" and "/" in text:
        raise d.error("plugin/forward: paths are not allowed in HTTPS upstream addresses (the /dns-query path is "
                      f"used by default): {tok}", tok)
    if scheme in UNSUPPORTED_SCHEMES or scheme not in ("dns", "tls", "https"):
        raise d.error(f"plugin/forward: '{scheme}' is not supported as a destination protocol in forward: {tok}",
                      tok)
    server_name = ""
    if scheme in ("tls", "https") and "%" in text:
        text, server_name = _split_server_name(text)
    default_port = {"tls": TLS_PORT, "https": HTTPS_PORT}.get(scheme, DNS_PORT)
    if not text:
        raise d.error(f"plugin/forward: invalid address: \"{tok}\"", tok)
    host, port_text = _split_host_port(text)
    if host is not None and _is_ip(host):
        return [(scheme, host.split("%")[0], _port(d, tok, port_text, default_port), server_name, tok)]
    path = text
    if os.path.exists(path):
        servers = _resolv_conf(d, tok, path)
        if not servers:
            empty_files.append(path)
        # Nameservers of a file are plain DNS on port 53, whatever scheme the TO had.
        return [("dns", s, DNS_PORT, "", tok) for s in servers]
    if host is not None and _is_domain(host) and any(c.isalpha() for c in host) and "/" not in host:
        port = _port(d, tok, port_text, default_port)
        try:
            addresses = _lookup(host, st.resolvers)
        except OSError as exc:
            raise d.error(f"plugin/forward: failed to resolve \"{host}\": {exc}", tok) from None
        return [(scheme, a, port, server_name, tok) for a in addresses]
    raise d.error(f"plugin/forward: not an IP address or file: \"{tok}\"", tok)


def _split_server_name(text: str) -> tuple[str, str]:
    """``9.9.9.9%dns.quad9.net:853`` -> (``9.9.9.9:853``, ``dns.quad9.net``); ``[::1%name]:853`` too."""
    cut = text.rfind("%")
    host, name = text[:cut], text[cut + 1:]
    if host.startswith("["):
        host += "]"
    if ":" in name:
        colon = name.rfind(":")
        host += name[colon:]
        name = name[:colon].removesuffix("]")
    return host, name


def _port(d: Directive, tok: Token, text: str | None, default: int) -> int:
    if text is None:
        return default
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise d.error(f"plugin/forward: invalid port in \"{tok}\"", tok)
    return int(text)


def _resolv_conf(d: Directive, tok: Token, path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise d.error(f"plugin/forward: failed to open file \"{path}\": {exc.strerror}", tok) from None
    servers = []
    for line in lines:
        words = line.split("#")[0].split(";")[0].split()
        if len(words) >= 2 and words[0] == "nameserver":
            addr = words[1].split("%")[0]
            if _is_ip(addr):
                servers.append(addr)
    return servers


def _lookup(host: str, resolvers: list[str]) -> list[str]:
    """Addresses of a TO written as a host name, resolved once at start-up."""
    if not resolvers:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
        found = list(dict.fromkeys(info[4][0] for info in infos))
        if not found:
            raise OSError(f"no addresses found for \"{host}\"")
        return found
    from dnslib import DNSRecord

    last: Exception | None = None
    for resolver in resolvers:
        rhost, rport = _split_host_port(resolver)
        found: list[str] = []
        for qtype in ("A", "AAAA"):
            try:
                raw = DNSRecord.question(fqdn(host), qtype).send(rhost, int(rport or DNS_PORT), timeout=2)
            except (OSError, Exception) as exc:  # dnslib raises socket.timeout and parse errors
                last = exc
                continue
            found += [str(rr.rdata) for rr in DNSRecord.parse(raw).rr if rr.rtype in (1, 28)]
        if found:
            return found
    raise OSError(f"no addresses found for \"{host}\"" + (f": {last}" if last else ""))
