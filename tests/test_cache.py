"""cache: answers kept and served again, through forward to a real upstream on 127.0.0.1."""

from __future__ import annotations

import time

import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import pytest
from dnslib import QTYPE, RR, A
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import pydns.metrics
from pydns.corefile import CorefileError
from pydns.plugin import REGISTRY, Plugin, register
from pydns.testing import ServerThread
from pydns.testing.upstream import Upstream
from pydns.wire import AD, Answer
from pydns.zones import to_wire

NAME = "example.org."


@pytest.fixture
def upstream():
    started: list[Upstream] = []

    def start(records: dict | None = None, **kw) -> Upstream:
        recs = {(NAME, "A"): ["1.2.3.4"], ("alias.example.org.", "CNAME"): ["nowhere.example.org."]}
        recs.update(records or {})
        up = Upstream(recs, **kw).start()
        started.append(up)
        return up

    yield start
    for up in started:
        up.stop()


def corefile(up: Upstream, cache: str = "cache", extra: str = "") -> str:
    return f".:0 {{\n bind 127.0.0.1\n {cache}\n forward . 127.0.0.1:{up.port}\n{extra}\n}}\n"


def asked(up: Upstream, name: str = NAME, qtype: str | None = None) -> int:
    """How many times the upstream was asked about ``name`` (health checks aside)."""
    return sum(1 for q in up.queries if q[0].lower() == name and (qtype is None or q[1] == qtype))


def ips(msg) -> list[str]:
    return [rr.address for rrset in msg.answer for rr in rrset if hasattr(rr, "address")]


def ttls(msg) -> set[int]:
    return {rrset.ttl for rrset in msg.answer + msg.authority}


def samples() -> list:
    text = generate_latest(pydns.metrics.registry).decode()
    return [s for f in text_string_to_metric_families(text) for s in f.samples]


def metric(name: str, **labels) -> float:
    return sum(s.value for s in samples() if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def wait_for(fn, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def test_hits_are_served_without_asking_upstream_and_counted(serve, upstream):
    up = upstream()
    srv = serve(corefile(up))
    labels = {"server": "dns://127.0.0.1:0", "zones": ".", "view": ""}
    before = {n: metric(n, **labels) for n in ("coredns_cache_hits_total", "coredns_cache_misses_total",
                                                "coredns_cache_requests_total")}
    hits_success = metric("coredns_cache_hits_total", type="success", **labels)
    for i in range(10):
        msg = srv.query("Example.ORG", "A", tcp=(i == 5))
        assert ips(msg) == ["1.2.3.4"]
    assert asked(up) == 1
    assert metric("coredns_cache_misses_total", **labels) - before["coredns_cache_misses_total"] == 1
    assert metric("coredns_cache_hits_total", type="success", **labels) - hits_success == 9
    assert metric("coredns_cache_requests_total", **labels) - before["coredns_cache_requests_total"] == 10
    # the cached reply is authoritative, as CoreDNS's cache makes it
    assert srv.query(NAME, "A").flags & dns.flags.AA


def test_ttl_counts_down_in_served_answers(serve, upstream):
    up = upstream(ttl=10)
    srv = serve(corefile(up))
    assert ttls(srv.query(NAME, "A")) == {10}
    time.sleep(1.1)
    (ttl,) = ttls(srv.query(NAME, "A"))
    assert 7 <= ttl <= 9
    assert asked(up) == 1


def test_cache_ttl_caps_and_keepttl_keeps(serve, upstream):
    up = upstream(ttl=300)
    srv = serve(corefile(up, "cache 30"))
    assert ttls(srv.query(NAME, "A")) == {30}  # capped on the way through, too
    up2 = upstream(ttl=10)
    srv2 = serve(corefile(up2, "cache {\n  keepttl\n }"))
    assert ttls(srv2.query(NAME, "A")) == {10}
    time.sleep(1.1)
    assert ttls(srv2.query(NAME, "A")) == {10}
    assert asked(up2) == 1


def test_denials_are_cached_with_the_soa_ttl(serve, upstream):
    up = upstream(ttl=120)
    srv = serve(corefile(up))
    for _ in range(3):
        msg = srv.query("missing.example.org", "A")
        assert msg.rcode() == dns.rcode.NXDOMAIN
        assert msg.authority and ttls(msg) <= {120, 119}
    assert asked(up, "missing.example.org.") == 1
    for _ in range(3):
        msg = srv.query(NAME, "TXT")  # NODATA
        assert msg.rcode() == dns.rcode.NOERROR and not msg.answer and msg.authority
    assert asked(up, NAME, "TXT") == 1
    assert metric("coredns_cache_entries", type="denial", server="dns://127.0.0.1:0") >= 2


def test_dnssec_ok_queries_are_kept_apart(serve, upstream):
    up = upstream()
    srv = serve(corefile(up))
    srv.query(NAME, "A")
    srv.query(NAME, "A", want_dnssec=True)
    srv.query(NAME, "A", want_dnssec=True)
    srv.query(NAME, "A")
    assert asked(up) == 2


def test_a_cname_chain_that_answers_nothing_is_not_kept(serve, upstream):
    up = upstream()
    srv = serve(corefile(up))
    for _ in range(3):
        msg = srv.query("alias.example.org", "A")
        assert msg.answer and not msg.authority
    assert asked(up, "alias.example.org.") == 3


def test_servfail_is_cached_briefly_or_not_at_all(serve, upstream):
    up = upstream(mode="servfail")
    srv = serve(corefile(up))
    for _ in range(3):
        assert srv.query(NAME, "A").rcode() == dns.rcode.SERVFAIL
    assert asked(up) == 1
    up2 = upstream(mode="servfail")
    srv2 = serve(corefile(up2, "cache {\n  servfail 0\n }"))
    for _ in range(3):
        assert srv2.query(NAME, "A").rcode() == dns.rcode.SERVFAIL
    assert asked(up2) == 3


def test_disable_and_zones(serve, upstream):
    up = upstream()
    srv = serve(corefile(up, "cache {\n  disable denial\n  disable success other.test\n }"))
    for _ in range(2):
        srv.query("missing.example.org", "A")
        srv.query(NAME, "A")
        srv.query("x.other.test", "A")
    assert asked(up, "missing.example.org.") == 2  # denials not kept
    assert asked(up) == 1  # answers kept...
    up.set("x.other.test.", "A", ["5.5.5.5"])
    srv.query("x.other.test", "A")
    srv.query("x.other.test", "A")
    assert asked(up, "x.other.test.", "A") == 4  # ...except in other.test

    up2 = upstream(records={("www.other.test.", "A"): ["6.6.6.6"]})
    srv2 = serve(corefile(up2, "cache example.org"))
    labels = {"server": "dns://127.0.0.1:0", "zones": "example.org.", "view": ""}
    requests = metric("coredns_cache_requests_total", **labels)
    for _ in range(3):
        srv2.query(NAME, "A")
        srv2.query("www.other.test", "A")
    assert asked(up2) == 1
    assert asked(up2, "www.other.test.") == 3
    assert metric("coredns_cache_requests_total", **labels) - requests == 3  # only its zones count


FIXED: dict[bytes, Answer] = {}  # lower-cased wire name -> the ready answer _Fixed hands out


class _Fixed(Plugin):
    """Hands out the same ready Answer objects again and again, as kubernetes and hosts do."""

    def serve(self, req):
        answer = FIXED.get(req.key)
        return answer if answer is not None else self.next.serve(req)


def fixed(name: str, ttl: int, address: str = "192.0.2.1", ad: bool = False) -> Answer:
    answer = Answer.build(name, QTYPE.A, answer=[RR(name, QTYPE.A, ttl=ttl, rdata=A(address))], plugin="erratic")
    if ad:
        answer.flags |= AD
    FIXED[to_wire(name)] = answer
    return answer


@pytest.fixture
def fixed_plugin():
    previous = REGISTRY.get("erratic")
    register("erratic")(_Fixed)
    FIXED.clear()
    yield
    FIXED.clear()
    if previous is None:
        REGISTRY.pop("erratic", None)
    else:
        REGISTRY["erratic"] = previous


KUBEADM_CACHE = "cache 30 {\n  disable success cluster.test\n  disable denial cluster.test\n }"


def counts(**labels) -> dict:
    return {"requests": metric("coredns_cache_requests_total", **labels),
            "misses": metric("coredns_cache_misses_total", **labels),
            "hits": metric("coredns_cache_hits_total", **labels),
            "entries": metric("coredns_cache_entries", **labels)}


def test_names_where_nothing_is_kept_are_counted_as_misses_and_not_kept(serve, fixed_plugin):
    # kubeadm's arrangement: answers and denials of the cluster zone are never kept.
    fixed("web.ns.svc.cluster.test", 300)
    fixed("www.example.org", 300)
    srv = serve(f".:0 {{\n bind 127.0.0.1\n {KUBEADM_CACHE}\n erratic\n}}\n")
    labels = {"server": "dns://127.0.0.1:0", "zones": ".", "view": ""}
    before = counts(**labels)
    for _ in range(4):
        assert srv.query("web.ns.svc.cluster.test", "A").answer
    after = counts(**labels)
    # As in CoreDNS: every such query is a request and a miss, and nothing is stored.
    assert after["requests"] - before["requests"] == 4
    assert after["misses"] - before["misses"] == 4
    assert after["hits"] == before["hits"] and after["entries"] == before["entries"] == 0
    for _ in range(3):
        assert srv.query("www.example.org", "A").answer  # outside the cluster zone: kept
    final = counts(**labels)
    assert final["requests"] - after["requests"] == 3
    assert final["misses"] - after["misses"] == 1
    assert final["hits"] - after["hits"] == 2
    assert final["entries"] == 1


def test_answers_passed_on_unkept_still_get_capped_ttls_every_time(serve, fixed_plugin):
    fixed("web.ns.svc.cluster.test", 300)
    fixed("short.ns.svc.cluster.test", 1)
    fixed("fits.ns.svc.cluster.test", 20)
    srv = serve(f".:0 {{\n bind 127.0.0.1\n {KUBEADM_CACHE}\n erratic\n}}\n")
    for _ in range(3):
        # capped at 30, raised to the 5s minimum, or left alone, on every query
        assert ttls(srv.query("web.ns.svc.cluster.test", "A")) == {30}
        assert ttls(srv.query("short.ns.svc.cluster.test", "A")) == {5}
        assert ttls(srv.query("fits.ns.svc.cluster.test", "A")) == {20}
    # the client's own spelling, EDNS and TCP change none of that
    msg = srv.query("WEB.Ns.svc.Cluster.TEST", "A", use_edns=0)
    assert ttls(msg) == {30} and msg.answer[0].name.to_text() == "WEB.Ns.svc.Cluster.TEST."
    assert ttls(srv.query("web.ns.svc.cluster.test", "A", tcp=True)) == {30}
    # a new answer for the name (the data changed) is read afresh
    fixed("web.ns.svc.cluster.test", 10, address="192.0.2.9")
    msg = srv.query("web.ns.svc.cluster.test", "A")
    assert ttls(msg) == {10} and ips(msg) == ["192.0.2.9"]


def test_answers_passed_on_unkept_follow_each_query_for_ad_and_opcode(serve, fixed_plugin):
    fixed("signed.ns.svc.cluster.test", 300, ad=True)
    srv = serve(f".:0 {{\n bind 127.0.0.1\n {KUBEADM_CACHE}\n erratic\n}}\n")

    def ask(ad: bool = False, notify: bool = False, **kw):
        q = dns.message.make_query("signed.ns.svc.cluster.test", "A", **kw)
        if ad:
            q.flags |= dns.flags.AD
        if notify:
            q.set_opcode(dns.opcode.NOTIFY)
        return dns.query.udp(q, "127.0.0.1", port=srv.port, timeout=3)

    for _ in range(2):
        # AD only for a client that asked for it (AD or DO), as CoreDNS's cache does
        assert not ask().flags & dns.flags.AD
        assert ask(ad=True).flags & dns.flags.AD
        assert ask(want_dnssec=True).flags & dns.flags.AD
        # a NOTIFY is no answer to keep: CoreDNS gives it the minimum TTL
        assert ttls(ask(notify=True)) == {5}
        assert ttls(ask()) == {30}


def test_unkept_names_through_forward_are_asked_every_time_and_capped(serve, upstream):
    up = upstream(ttl=300)
    srv = serve(corefile(up, "cache 30 {\n  disable success example.org\n  disable denial example.org\n }"))
    for _ in range(3):
        assert ttls(srv.query(NAME, "A")) == {30}
        msg = srv.query("missing.example.org", "A")
        assert msg.rcode() == dns.rcode.NXDOMAIN and ttls(msg) == {30}
    assert asked(up) == 3
    assert asked(up, "missing.example.org.") == 3


def test_capacity_evicts_at_random(serve, upstream):
    # whoami answers every name and its answers are kept for 5s: fill past the capacity
    srv = serve(".:0 {\n bind 127.0.0.1\n cache example.test {\n  success 1024\n }\n whoami\n}\n")
    labels = {"server": "dns://127.0.0.1:0", "zones": "example.test.", "view": "", "type": "success"}
    evicted = metric("coredns_cache_evictions_total", **labels)
    n = 1500
    for i in range(n):
        srv.query(f"host{i}.example.test", "A")
    entries = metric("coredns_cache_entries", **labels)
    assert 0 < entries <= 1024  # 256 shards of 4
    assert metric("coredns_cache_evictions_total", **labels) - evicted == n - entries


def test_prefetch_refreshes_popular_entries_in_the_background(serve, upstream):
    up = upstream(ttl=5)
    srv = serve(corefile(up, "cache {\n  prefetch 1 1m 90%\n }"))
    prefetched = metric("coredns_cache_prefetch_total", server="dns://127.0.0.1:0", zones=".")
    assert ips(srv.query(NAME, "A")) == ["1.2.3.4"]
    up.set(NAME, "A", ["5.6.7.8"])
    # a hit with the TTL under 90% of 5s is popular enough: served from the cache, refreshed behind
    assert ips(srv.query(NAME, "A")) == ["1.2.3.4"]
    assert wait_for(lambda: ips(srv.query(NAME, "A")) == ["5.6.7.8"])
    assert metric("coredns_cache_prefetch_total", server="dns://127.0.0.1:0", zones=".") > prefetched
    assert ("example.org.", "A", "tcp") in up.queries  # prefetches ask over TCP, as CoreDNS does


def test_without_prefetch_a_changed_record_waits_for_expiry(serve, upstream):
    up = upstream(ttl=30)
    srv = serve(corefile(up))
    srv.query(NAME, "A")
    up.set(NAME, "A", ["5.6.7.8"])
    time.sleep(0.2)
    assert ips(srv.query(NAME, "A")) == ["1.2.3.4"]
    assert asked(up) == 1


def test_serve_stale_immediate_then_window_ends(serve, upstream):
    up = upstream(ttl=60)
    srv = serve(corefile(up, "cache 1 {\n  serve_stale 1s\n }"))
    stale = metric("coredns_cache_served_stale_total", server="dns://127.0.0.1:0", zones=".")
    assert ips(srv.query(NAME, "A")) == ["1.2.3.4"]
    up.mode = "servfail"
    time.sleep(1.1)
    msg = srv.query(NAME, "A")
    assert ips(msg) == ["1.2.3.4"] and ttls(msg) == {0}  # expired, still served, TTL 0
    assert metric("coredns_cache_served_stale_total", server="dns://127.0.0.1:0", zones=".") > stale
    time.sleep(1.0)
    assert srv.query(NAME, "A").rcode() == dns.rcode.SERVFAIL  # past the stale window: asked again


def test_serve_stale_refreshes_in_the_background(serve, upstream):
    up = upstream()
    srv = serve(corefile(up, "cache 1 {\n  serve_stale 1h immediate 30s\n }"))
    srv.query(NAME, "A")
    up.set(NAME, "A", ["5.6.7.8"])
    time.sleep(1.1)
    msg = srv.query(NAME, "A")
    assert ips(msg) == ["1.2.3.4"] and ttls(msg) == {30}  # RESPONSE_TTL
    assert wait_for(lambda: ips(srv.query(NAME, "A")) == ["5.6.7.8"])


def test_serve_stale_verify_asks_first_and_falls_back(serve, upstream):
    up = upstream()
    srv = serve(corefile(up, "cache 1 {\n  serve_stale 1h verify 300ms\n }"))
    srv.query(NAME, "A")
    up.set(NAME, "A", ["5.6.7.8"])
    time.sleep(1.1)
    assert ips(srv.query(NAME, "A")) == ["5.6.7.8"]  # verified: the new answer, never the stale one
    up.mode = "dead"
    time.sleep(1.1)
    started = time.monotonic()
    msg = srv.query(NAME, "A", timeout=5)
    assert ips(msg) == ["5.6.7.8"] and ttls(msg) == {0}  # upstream silent: stale after the timeout
    assert time.monotonic() - started >= 0.25


@pytest.mark.parametrize("cache, line, message", [
    ("cache 0", 3, "cache TTL can not be zero or negative: 0"),
    ("cache {\n  success\n }", 4, "wrong argument count"),
    ("cache {\n  success many\n }", 4, "capacity must be an integer"),
    ("cache {\n  denial 100 0\n }", 4, "cache TTL can not be zero or negative: 0"),
    ("cache {\n  success 100 10 -1\n }", 4, "cache min TTL can not be negative: -1"),
    ("cache {\n  prefetch\n }", 4, "wrong argument count"),
    ("cache {\n  prefetch -1\n }", 4, "prefetch amount should be positive: -1"),
    ("cache {\n  prefetch 2 1m 95%\n }", 4, "percentage should fall in range [10, 90]: 95"),
    ("cache {\n  prefetch 2 1m 50\n }", 4, "last character of percentage should be"),
    ("cache {\n  prefetch 2 soon\n }", 4, "invalid duration 'soon'"),
    ("cache {\n  serve_stale -1h\n }", 4, "invalid negative duration for serve_stale"),
    ("cache {\n  serve_stale 1h sometimes\n }", 4, "invalid value for serve_stale refresh mode: sometimes"),
    ("cache {\n  serve_stale 1h immediate 1.5s\n }", 4, "must be a whole number of seconds"),
    ("cache {\n  serve_stale 1h immediate 0 10m\n }", 4, "cannot exceed 5 minutes"),
    ("cache {\n  serve_stale_policy prefer_positive\n }", 4, "serve_stale_policy is not supported"),
    ("cache {\n  servfail 10m\n }", 4, "over 5 minutes is not permitted"),
    ("cache {\n  servfail\n }", 4, "wrong argument count"),
    ("cache {\n  disable everything\n }", 4, 'cache type for disable must be "success" or "denial"'),
    ("cache {\n  keepttl please\n }", 4, "wrong argument count"),
    ("cache {\n  evict lru\n }", 4, "unknown property 'evict'"),
])
def test_bad_options_are_startup_errors(tmp_path, upstream, cache, line, message):
    up = upstream()
    path = tmp_path / "Corefile"
    path.write_text(corefile(up, cache))
    with pytest.raises(CorefileError) as err:
        ServerThread("", path=str(path)).start()
    assert f"{path}:{line}:" in str(err.value) and message in str(err.value)
    assert "plugin/cache" in str(err.value)


def test_metric_names_and_labels(serve, upstream):
    up = upstream()
    srv = serve(corefile(up))
    srv.query(NAME, "A")
    srv.query(NAME, "A")
    found = {s.name: set(s.labels) for s in samples() if s.name.startswith("coredns_cache_")}
    typed = {"server", "type", "zones", "view"}
    plain = {"server", "zones", "view"}
    assert found == {
        "coredns_cache_entries": typed, "coredns_cache_hits_total": typed, "coredns_cache_evictions_total": typed,
        "coredns_cache_misses_total": plain, "coredns_cache_requests_total": plain,
        "coredns_cache_prefetch_total": plain, "coredns_cache_drops_total": plain,
        "coredns_cache_served_stale_total": plain,
    }
    assert metric("coredns_cache_entries", server="dns://127.0.0.1:0", type="success", zones=".") >= 1
