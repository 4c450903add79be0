"""forward — proxies queries to upstream resolvers over UDP, TCP, DNS over TLS or DNS over HTTPS.

Syntax::

    forward FROM TO... {
        except IGNORED_NAMES...
        force_tcp
        prefer_udp
        expire DURATION
        max_age DURATION
        max_idle_conns INTEGER
        read_timeout DURATION
        max_fails INTEGER
        max_connect_attempts INTEGER
        tls [CERT KEY] [CA]
        tls_servername NAME
        doh_method GET|POST
        policy random|round_robin|sequential
        health_check DURATION [no_rec] [domain FQDN]
        max_concurrent MAX
        next RCODE...
        next_on_nodata
        failfast_all_unhealthy_upstreams
        failover RCODE...
        source_address IP
        resolver IP[:PORT]...
    }

FROM is the zone to forward (names outside it, and names under an ``except`` zone, go to
the next plugin).  TO is up to 15 upstreams: ``IP[:PORT]``, ``dns://IP[:PORT]``,
``tls://IP[%SERVERNAME][:PORT]`` (DNS over TLS, port 853 by default),
``https://IP[:PORT]`` (DNS over HTTPS to ``/dns-query``, port 443 by default), a resolv.conf-style
file whose ``nameserver`` lines are used (it is an error when no file or address gives
any upstream), or a host name resolved once at start-up (through ``resolver`` when given).
Several ``forward`` lines may share a block: they are tried in order, and ``next RCODE``
(or ``next_on_nodata``) hands a query whose reply has that rcode to the following one.

Behaviour, as CoreDNS's: the query goes out as the client sent it (its question, case and
EDNS0 record) under a fresh ID per attempt, over the client's transport (``force_tcp``:
always TCP; ``prefer_udp``: always UDP first); sockets and connections are reused until
idle for ``expire`` (default 10s).  Replies whose ID or question do not match are ignored.
A truncated UDP reply is asked again over TCP.  An upstream that fails (timeout after
``read_timeout``, default 2s; refused; reset) makes the query try the next one in
``policy`` order (default random), at most ``max_connect_attempts`` times (default twice
the number of upstreams) and within 5 seconds, and starts a health check of that upstream:
``. IN NS`` (or ``domain FQDN``) every ``health_check`` interval (default 0.5s) until any
reply comes back; more than ``max_fails`` (default 2; 0 disables) failed checks mark it
down and queries skip it.  With every upstream down one is picked at random (or, with
``failfast_all_unhealthy_upstreams``, SERVFAIL).  ``failover RCODE...`` tries the next
upstream on those rcodes.  ``max_concurrent`` answers REFUSED above that many queries in
flight.  When no upstream answers the reply is SERVFAIL, logged by *errors*.  An upstream's
extended DNS errors (RFC 8914) reach clients that sent an EDNS0 OPT record; its other EDNS0
options (cookies, padding...) are for the hop between pydns and the upstream and are not
passed on.

``tls`` takes no files (system CAs), CA, CERT KEY, or CERT KEY CA; ``tls_servername`` names
the server to verify (TLS 1.2 at least).  DNS over HTTPS speaks HTTP/1.1 on kept-alive
connections, with ``doh_method`` POST (default) or GET.  QUIC and gRPC upstreams are
start-up errors.

Metrics: ``coredns_proxy_request_duration_seconds{proxy_name,to,rcode}``,
``coredns_proxy_healthcheck_failures_total{proxy_name,to}``,
``coredns_proxy_conn_cache_hits_total`` / ``_misses_total{proxy_name,to,proto}``,
``coredns_forward_healthcheck_broken_total``, ``coredns_forward_max_concurrent_rejects_total``,
and the older ``coredns_forward_requests_total{to}``, ``coredns_forward_responses_total{to,rcode}``,
``coredns_forward_request_duration_seconds{to,rcode}``,
``coredns_forward_healthcheck_failures_total{to}``.
"""

from __future__ import annotations

import asyncio
import random
import struct

from pydns.corefile import Directive
from pydns.plugin import DNSError, Plugin, register, resolve
from pydns.plugins.forward import metrics
from pydns.plugins.forward.options import Stanza, parse_stanza
from pydns.plugins.forward.proxy import ExchangeError
from pydns.wire import NOERROR, REFUSED, SERVFAIL, Answer, Request, rcode_of

OVERALL_TIMEOUT = 5.0  # CoreDNS's defaultTimeout: all attempts of one query
SWEEP_EVERY = 10.0


@register("forward")
class Forward(Plugin):
    multiple = True

    def __init__(self, server) -> None:
        super().__init__(server)
        self.stanzas: list[Stanza] = []
        self._sweeper: asyncio.Task | None = None

    def setup(self, d: Directive) -> None:
        self.stanzas.append(parse_stanza(d))

    async def start(self) -> None:
        self._sweeper = asyncio.ensure_future(self._sweep())

    async def _sweep(self) -> None:
        """Close idle upstream connections now and then, as CoreDNS's connection manager does."""
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            for st in self.stanzas:
                for proxy in st.proxies:
                    proxy.sweep()

    async def stop(self) -> None:
        tasks = [p for st in self.stanzas for p in (proxy.stop() for proxy in st.proxies) if p is not None]
        if self._sweeper is not None:
            self._sweeper.cancel()
            tasks.append(self._sweeper)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------ queries
    def serve(self, req: Request):
        return self._serve_from(req, 0)

    def _serve_from(self, req: Request, first: int):
        stanzas = self.stanzas
        key = req.key
        for index in range(first, len(stanzas)):
            st = stanzas[index]
            if st.matches(key):
                return self._forward(req, st, index)
        return self.next.serve(req)

    async def _forward(self, req: Request, st: Stanza, index: int) -> Answer:
        if st.max_concurrent:
            if st.concurrent >= st.max_concurrent:
                metrics.max_concurrent_rejects.inc()
                if req.trace is not None:
                    req.trace.note(self.name, "failed", f"{st.limit_error}: REFUSED")
                raise DNSError(REFUSED, st.limit_error)
            st.concurrent += 1
            try:
                return await self._attempts(req, st, index)
            finally:
                st.concurrent -= 1
        return await self._attempts(req, st, index)

    async def _attempts(self, req: Request, st: Stanza, index: int) -> Answer:
        loop = asyncio.get_running_loop()
        proxies = st.proxies
        order = st.policy.order(proxies)
        deadline = loop.time() + OVERALL_TIMEOUT
        max_attempts = 2 * len(proxies) if st.max_attempts is None else st.max_attempts
        if st.force_tcp:
            proto = "tcp"
        elif st.prefer_udp:
            proto = "udp"
        else:
            proto = req.proto
        data, key, qtail = req.data, req.key, req.data[req.qend:req.qend + 4]
        attempts = fails = failovers = i = 0
        error: ExchangeError | None = None
        while loop.time() < deadline and (max_attempts == 0 or attempts < max_attempts):
            if i >= len(order):
                i = fails = 0
            proxy = order[i]
            i += 1
            if proxy.down(st.max_fails):
                fails += 1
                if fails < len(proxies):
                    continue
                metrics.healthcheck_broken.inc()
                if st.failfast:
                    break
                proxy = random.choice(proxies)  # health checking itself may be what is broken
            try:
                reply = await proxy.exchange(data, key, qtail, proto, deadline)
                answer = Answer.from_message(reply, plugin=self.name)
            except (ExchangeError, ValueError, IndexError, struct.error) as exc:
                error = exc if isinstance(exc, ExchangeError) else ExchangeError(f"bad reply from {proxy.to}")
                if st.max_fails:
                    proxy.healthcheck()
                if max_attempts:
                    attempts += 1
                    if attempts >= max_attempts:
                        break
                if fails < len(proxies):
                    continue
                break
            rcode = answer.rcode
            if rcode in st.failover:
                failovers += 1
                if failovers < len(proxies):
                    continue
            if req.trace is not None:
                req.trace.note(self.name, "asked", f"upstream {proxy.to} answered {rcode_of(answer)}", upstream=proxy.to)
            if index + 1 < len(self.stanzas):
                if rcode in st.next_rcodes or (st.next_on_nodata and rcode == NOERROR and answer.an == 0):
                    return await resolve(self._serve_from(req, index + 1))
            return answer
        reason = str(error) if error is not None else "no healthy proxies"
        if req.trace is not None:
            req.trace.note(self.name, "failed", f"no upstream answered ({reason}): SERVFAIL")
        raise DNSError(SERVFAIL, reason)
