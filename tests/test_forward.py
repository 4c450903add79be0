"""forward: real queries through pydns to real upstream servers on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import pydns.metrics
from pydns.corefile import CorefileError
from pydns.testing.upstream import Upstream, self_signed_cert

NAME = "example.org."


@pytest.fixture
def upstream():
    """``upstream(ip="1.2.3.4", **kw)``: a started Upstream answering NAME A with ``ip``."""
    started: list[Upstream] = []

    def start(ip: str = "1.2.3.4", records: dict | None = None, **kw) -> Upstream:
        recs = {(NAME, "A"): [ip]}
        recs.update(records or {})
        up = Upstream(recs, **kw).start()
        started.append(up)
        return up

    yield start
    for up in started:
        up.stop()


def corefile(body: str) -> str:
    return f".:0 {{\n bind 127.0.0.1\n errors\n{body}\n}}\n"


def addrs(*ups: Upstream) -> str:
    return " ".join(f"127.0.0.1:{u.port}" for u in ups)


def ips(msg) -> list[str]:
    return [rr.address for rrset in msg.answer for rr in rrset if hasattr(rr, "address")]


def scrape() -> list:
    """Every sample in the process registry, as a scrape would see it."""
    text = generate_latest(pydns.metrics.registry).decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def samples(name: str, scraped: list | None = None) -> list:
    return [s for s in (scrape() if scraped is None else scraped) if s.name == name]


def value(name: str, scraped: list | None = None, **labels) -> float:
    return sum(s.value for s in samples(name, scraped) if all(s.labels.get(k) == v for k, v in labels.items()))


def wait_for(predicate, timeout: float = 5.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# ---------------------------------------------------------------- the basics


def test_answers_from_upstream_keeping_the_question_case(serve, upstream):
    up = upstream("10.0.0.1")
    srv = serve(corefile(f" forward . {addrs(up)}"))
    for tcp in (False, True):
        r = srv.query("ExAmple.ORG", "A", tcp=tcp)
        assert r.rcode() == dns.rcode.NOERROR
        assert ips(r) == ["10.0.0.1"]
        assert r.question[0].name.to_text() == "ExAmple.ORG."
        assert r.answer[0].name.to_text() == "ExAmple.ORG."
    assert [q[2] for q in up.queries] == ["udp", "tcp"]


def test_negative_answers_pass_through(serve, upstream):
    up = upstream()
    srv = serve(corefile(f" forward . {addrs(up)}"))
    nx = srv.query("missing.example.org", "A")
    assert nx.rcode() == dns.rcode.NXDOMAIN
    assert nx.authority and nx.authority[0].rdtype == dns.rdatatype.SOA
    nodata = srv.query(NAME, "MX")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority


def test_each_attempt_uses_a_fresh_id(serve, upstream):
    up = upstream()
    srv = serve(corefile(f" forward . {addrs(up)}"))
    q = dns.message.make_query(NAME, "A")
    for _ in range(5):
        q.id = 4242
        r = dns.query.udp(q, "127.0.0.1", port=srv.port, timeout=3)
        assert r.id == 4242 and ips(r) == ["1.2.3.4"]
    assert len(up.ids) == 5 and 4242 not in up.ids


def test_client_edns_buffer_is_forwarded(serve, upstream):
    up = upstream(records={("big.example.org.", "TXT"): [str(i) * 200 for i in range(5)]})
    srv = serve(corefile(f" forward . {addrs(up)}"))
    small = srv.query("big.example.org", "TXT")
    assert small.flags & dns.flags.TC
    large = srv.query("big.example.org", "TXT", use_edns=0, payload=4096)
    assert not large.flags & dns.flags.TC and len(large.answer[0]) == 5
    assert len(srv.query("big.example.org", "TXT", tcp=True).answer[0]) == 5


def test_udp_socket_and_tcp_connection_are_reused(serve, upstream):
    up = upstream()
    srv = serve(corefile(f" forward . {addrs(up)}"))
    for i in range(20):
        assert srv.query(f"n{i}.example.org", "A").rcode() == dns.rcode.NXDOMAIN
    for i in range(10):
        assert srv.query(f"t{i}.example.org", "A", tcp=True).rcode() == dns.rcode.NXDOMAIN
    udp_ports = {addr[1] for proto, addr in up.sources if proto == "udp"}
    assert len(udp_ports) == 1
    assert up.tcp_connections == 1
    assert value("coredns_proxy_conn_cache_hits_total", to=f"127.0.0.1:{up.port}", proto="udp") >= 19
    assert value("coredns_proxy_conn_cache_misses_total", to=f"127.0.0.1:{up.port}", proto="tcp") >= 1


def test_idle_socket_expires(serve, upstream):
    up = upstream()
    srv = serve(corefile(f" forward . {addrs(up)} {{\n  expire 100ms\n }}"))
    srv.query(NAME, "A")
    srv.query(NAME, "A")
    time.sleep(0.3)
    srv.query(NAME, "A")
    ports = [addr[1] for proto, addr in up.sources]
    assert ports[0] == ports[1] != ports[2]


def test_truncated_udp_reply_is_retried_over_tcp(serve, upstream):
    up = upstream(mode="truncate")
    srv = serve(corefile(f" forward . {addrs(up)}"))
    r = srv.query(NAME, "A")
    assert not r.flags & dns.flags.TC and ips(r) == ["1.2.3.4"]
    assert [q[2] for q in up.queries] == ["udp", "tcp"]


def test_replies_with_a_wrong_id_are_ignored(serve, upstream):
    up = upstream(mode="wrong_id")
    srv = serve(corefile(f" forward . {addrs(up)}"))
    for tcp in (False, True):
        assert ips(srv.query(NAME, "A", tcp=tcp)) == ["1.2.3.4"]


# ---------------------------------------------------------------- failures


def test_slow_upstream_times_out_and_the_next_answers(serve, upstream):
    slow = upstream("10.0.0.1", mode="slow", delay=1.0)
    good = upstream("10.0.0.2")
    srv = serve(corefile(f" forward . {addrs(slow, good)} {{\n  policy sequential\n  read_timeout 200ms\n }}"))
    assert ips(srv.query(NAME, "A")) == ["10.0.0.2"]
    assert slow.queries and good.queries


def test_dead_upstream_fails_over(serve, upstream):
    dead = upstream("10.0.0.1", mode="dead")
    good = upstream("10.0.0.2")
    srv = serve(corefile(f" forward . {addrs(dead, good)} {{\n  policy sequential\n  read_timeout 100ms\n }}"))
    assert ips(srv.query(NAME, "A")) == ["10.0.0.2"]
    assert (NAME, "A", "udp") in dead.queries


def test_all_dead_gives_servfail_and_is_logged(serve, upstream, caplog):
    a, b = upstream(mode="dead"), upstream(mode="dead")
    srv = serve(corefile(f" forward . {addrs(a, b)} {{\n  read_timeout 100ms\n }}"))
    with caplog.at_level("ERROR"):
        r = srv.query(NAME, "A", timeout=4)
    assert r.rcode() == dns.rcode.SERVFAIL
    # two attempts per upstream, then give up
    assert len([q for q in a.queries + b.queries if q[0] == NAME]) == 4
    assert any("i/o timeout" in rec.getMessage() for rec in caplog.records)


def test_closed_port_gives_servfail(serve, upstream):
    up = upstream()
    port = up.port
    up.stop()
    srv = serve(corefile(f" forward . 127.0.0.1:{port}"))
    assert srv.query(NAME, "A", timeout=2).rcode() == dns.rcode.SERVFAIL
    assert srv.query(NAME, "A", tcp=True, timeout=2).rcode() == dns.rcode.SERVFAIL


def test_max_connect_attempts_caps_tries(serve, upstream):
    a, b = upstream(mode="dead"), upstream(mode="dead")
    srv = serve(corefile(f" forward . {addrs(a, b)} {{\n  read_timeout 100ms\n  max_connect_attempts 1\n }}"))
    assert srv.query(NAME, "A").rcode() == dns.rcode.SERVFAIL
    assert len([q for q in a.queries + b.queries if q[0] == NAME]) == 1


def test_down_upstream_is_skipped_then_recovers(serve, upstream):
    first = upstream("10.0.0.1")
    port = first.port
    first.stop()
    second = upstream("10.0.0.2")
    to = f"127.0.0.1:{port}"
    srv = serve(corefile(f" forward . 127.0.0.1:{port} {addrs(second)} {{\n  policy sequential\n"
                         "  max_fails 1\n  health_check 50ms\n }"))
    assert ips(srv.query(NAME, "A")) == ["10.0.0.2"]
    # the failed exchange started health checks; two failures mark the upstream down
    assert wait_for(lambda: value("coredns_proxy_healthcheck_failures_total", to=to) >= 2)
    assert value("coredns_forward_healthcheck_failures_total", to=to) >= 2
    before = value("coredns_forward_requests_total", to=to)
    for _ in range(5):
        assert ips(srv.query(NAME, "A")) == ["10.0.0.2"]
    assert value("coredns_forward_requests_total", to=to) == before  # skipped while down
    revived = upstream("10.0.0.1", port=port)
    assert wait_for(lambda: ips(srv.query(NAME, "A")) == ["10.0.0.1"])
    assert (".", "NS", "udp") in revived.queries


def test_all_down_still_tries_one_or_fails_fast(serve, upstream):
    plain, failfast = upstream(), upstream()
    ports = plain.port, failfast.port
    plain.stop()
    failfast.stop()
    opts = "  max_fails 1\n  health_check 2s\n"
    srv_plain = serve(corefile(f" forward . 127.0.0.1:{ports[0]} {{\n{opts} }}"))
    srv_fast = serve(corefile(f" forward . 127.0.0.1:{ports[1]} {{\n{opts}  failfast_all_unhealthy_upstreams\n }}"))
    for srv in (srv_plain, srv_fast):
        assert srv.query(NAME, "A").rcode() == dns.rcode.SERVFAIL
    for port in ports:
        assert wait_for(lambda: value("coredns_proxy_healthcheck_failures_total", to=f"127.0.0.1:{port}") >= 2, 10)
    # Start right after a failed check of the failfast upstream, so that its next one (2s away)
    # cannot find it healthy before the queries below, however busy the machine is.
    checked = value("coredns_proxy_healthcheck_failures_total", to=f"127.0.0.1:{ports[1]}")
    assert wait_for(lambda: value("coredns_proxy_healthcheck_failures_total", to=f"127.0.0.1:{ports[1]}") > checked, 5)
    # both upstreams are down now, and back before their next health check
    back = [upstream("10.9.9.9", port=p) for p in ports]
    broken = value("coredns_forward_healthcheck_broken_total")
    assert ips(srv_plain.query(NAME, "A")) == ["10.9.9.9"]
    assert srv_fast.query(NAME, "A").rcode() == dns.rcode.SERVFAIL
    assert value("coredns_forward_healthcheck_broken_total") >= broken + 2
    assert (NAME, "A", "udp") in back[0].queries and (NAME, "A", "udp") not in back[1].queries


# ---------------------------------------------------------------- policies


def _distinct_upstreams(upstream, n=3):
    return [upstream(f"10.0.0.{i + 1}") for i in range(n)]


def test_policy_sequential(serve, upstream):
    ups = _distinct_upstreams(upstream)
    srv = serve(corefile(f" forward . {addrs(*ups)} {{\n  policy sequential\n }}"))
    assert {ips(srv.query(NAME, "A"))[0] for _ in range(6)} == {"10.0.0.1"}


def test_policy_round_robin(serve, upstream):
    ups = _distinct_upstreams(upstream)
    srv = serve(corefile(f" forward . {addrs(*ups)} {{\n  policy round_robin\n }}"))
    seen = [ips(srv.query(NAME, "A"))[0] for _ in range(6)]
    assert seen[:3] == seen[3:] and sorted(seen[:3]) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


def test_policy_random_is_the_default(serve, upstream):
    ups = _distinct_upstreams(upstream)
    srv = serve(corefile(f" forward . {addrs(*ups)}"))
    seen = {ips(srv.query(NAME, "A"))[0] for _ in range(40)}
    assert len(seen) >= 2


# ---------------------------------------------------------------- options


def test_max_concurrent_refuses_above_the_limit(serve, upstream):
    up = upstream(mode="slow", delay=0.5)
    srv = serve(corefile(f" forward . {addrs(up)} {{\n  max_concurrent 2\n }}"))
    before = value("coredns_forward_max_concurrent_rejects_total")
    socks = []
    for i in range(5):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.sendto(dns.message.make_query(f"c{i}.example.org", "A").to_wire(), ("127.0.0.1", srv.port))
        socks.append(s)
        time.sleep(0.02)
    rcodes = []
    for s in socks:
        rcodes.append(dns.message.from_wire(s.recv(4096)).rcode())
        s.close()
    assert sorted(rcodes) == [dns.rcode.NXDOMAIN] * 2 + [dns.rcode.REFUSED] * 3
    assert value("coredns_forward_max_concurrent_rejects_total") == before + 3


def test_except_and_from_pass_to_the_next_plugin(serve, upstream):
    up = upstream(records={("sub.example.org.", "A"): ["10.1.1.1"], ("other.test.", "A"): ["10.2.2.2"]})
    srv = serve(corefile(f" forward example.org {addrs(up)} {{\n  except internal.example.org\n }}\n whoami"))
    assert ips(srv.query("sub.example.org", "A")) == ["10.1.1.1"]
    for name in ("host.internal.example.org", "internal.example.org", "other.test"):
        r = srv.query(name, "A")
        assert not r.answer and r.additional, name  # whoami's answer
    assert {q[0] for q in up.queries} == {"sub.example.org."}


def test_except_never_excludes_the_from_zone_itself(serve, upstream):
    up = upstream()
    srv = serve(corefile(f" forward example.org {addrs(up)} {{\n  except example.org\n }}\n whoami"))
    assert ips(srv.query(NAME, "A")) == ["1.2.3.4"]
    assert not srv.query("www.example.org", "A").answer


def test_several_forward_lines(serve, upstream):
    inner, outer = upstream("10.0.0.1"), upstream("10.0.0.2", records={("a.test.", "A"): ["10.0.0.3"]})
    inner.set("lab.example.org.", "A", ["10.0.0.4"])
    srv = serve(corefile(f" forward example.org {addrs(inner)}\n forward . {addrs(outer)}"))
    assert ips(srv.query("lab.example.org", "A")) == ["10.0.0.4"]
    assert ips(srv.query("a.test", "A")) == ["10.0.0.3"]


def test_next_hands_rcodes_to_the_following_forward(serve, upstream):
    first = upstream("10.0.0.1")
    second = upstream("10.0.0.2", records={("only-second.test.", "A"): ["10.0.0.9"]})
    srv = serve(corefile(f" forward . {addrs(first)} {{\n  next NXDOMAIN\n }}\n forward . {addrs(second)}"))
    assert ips(srv.query(NAME, "A")) == ["10.0.0.1"]
    assert ips(srv.query("only-second.test", "A")) == ["10.0.0.9"]
    assert srv.query("nowhere.test", "A").rcode() == dns.rcode.NXDOMAIN
    assert ("nowhere.test.", "A", "udp") in second.queries


def test_next_without_a_following_forward_is_ignored(serve, upstream):
    up = upstream()
    srv = serve(corefile(f" forward . {addrs(up)} {{\n  next NXDOMAIN\n }}\n whoami"))
    assert srv.query("nowhere.test", "A").rcode() == dns.rcode.NXDOMAIN


def test_next_on_nodata(serve, upstream):
    first = upstream("10.0.0.1")
    second = upstream("10.0.0.2", records={(NAME, "MX"): ["10 mail.example.org."]})
    srv = serve(corefile(f" forward . {addrs(first)} {{\n  next_on_nodata\n }}\n forward . {addrs(second)}"))
    assert srv.query(NAME, "MX").answer
    assert ips(srv.query(NAME, "A")) == ["10.0.0.1"]


def test_failover_on_rcode(serve, upstream):
    bad = upstream("10.0.0.1", mode="servfail")
    good = upstream("10.0.0.2")
    srv = serve(corefile(f" forward . {addrs(bad, good)} {{\n  policy sequential\n  failover SERVFAIL REFUSED\n }}"))
    assert ips(srv.query(NAME, "A")) == ["10.0.0.2"]
    plain = serve(corefile(f" forward . {addrs(bad, good)} {{\n  policy sequential\n }}"))
    assert plain.query(NAME, "A").rcode() == dns.rcode.SERVFAIL
    good.mode = "refused"
    assert srv.query(NAME, "A").rcode() == dns.rcode.REFUSED  # all tried: the last reply stands


def test_force_tcp(serve, upstream):
    up = upstream()
    srv = serve(corefile(f" forward . {addrs(up)} {{\n  force_tcp\n  prefer_udp\n }}"))
    assert ips(srv.query(NAME, "A")) == ["1.2.3.4"]
    assert [q[2] for q in up.queries] == ["tcp"]


def test_prefer_udp(serve, upstream):
    up = upstream()
    srv = serve(corefile(f" forward . {addrs(up)} {{\n  prefer_udp\n }}"))
    assert ips(srv.query(NAME, "A", tcp=True)) == ["1.2.3.4"]
    assert [q[2] for q in up.queries] == ["udp"]


def test_resolv_conf_nameservers(serve, tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("# test\nsearch example.org\nnameserver 127.0.0.1\noptions ndots:5\n")
    srv = serve(corefile(f" forward . {conf}"))
    before = value("coredns_forward_requests_total", to="127.0.0.1:53")
    srv.query(NAME, "A", timeout=6)
    assert value("coredns_forward_requests_total", to="127.0.0.1:53") > before


def test_hostname_upstream_resolved_through_resolver(serve, upstream):
    target = upstream("10.7.7.7")
    directory = upstream(records={("dns.test.", "A"): ["127.0.0.1"]})
    srv = serve(corefile(f" forward . dns.test:{target.port} {{\n  resolver 127.0.0.1:{directory.port}\n }}"))
    assert ips(srv.query(NAME, "A")) == ["10.7.7.7"]
    assert ("dns.test.", "A", "udp") in directory.queries


def test_dns_over_tls(serve, upstream, tmp_path):
    cert, key = self_signed_cert(str(tmp_path), "dns.example")
    up = upstream("10.5.5.5", tls=(cert, key))
    srv = serve(corefile(f" forward . tls://127.0.0.1:{up.port} {{\n  tls {cert}\n  tls_servername dns.example\n }}"))
    for _ in range(5):
        assert ips(srv.query(NAME, "A")) == ["10.5.5.5"]
    assert {q[2] for q in up.queries} == {"tls"}
    assert up.tcp_connections == 1
    sni = serve(corefile(f" forward . tls://127.0.0.1%dns.example:{up.port} {{\n  tls {cert}\n }}"))
    assert ips(sni.query(NAME, "A")) == ["10.5.5.5"]


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_dns_over_https(serve, upstream, tmp_path, method):
    cert, key = self_signed_cert(str(tmp_path), "doh.example")
    up = upstream("10.6.6.6", tls=(cert, key), doh=True)
    srv = serve(corefile(f" forward . https://127.0.0.1:{up.port} {{\n  tls {cert}\n  tls_servername doh.example\n"
                         f"  doh_method {method}\n }}"))
    for tcp in (False, True, False):
        r = srv.query("Example.ORG", "A", tcp=tcp)
        assert ips(r) == ["10.6.6.6"] and r.answer[0].name.to_text() == "Example.ORG."
    assert srv.query("missing.example.org", "A").rcode() == dns.rcode.NXDOMAIN
    assert {q[2] for q in up.queries} == {"https"} and len(up.queries) == 4
    assert up.tcp_connections == 1


def test_dns_over_https_dead_server_fails_over(serve, upstream, tmp_path):
    cert, key = self_signed_cert(str(tmp_path), "doh.example")
    dead = upstream(tls=(cert, key), doh=True, mode="dead")
    good = upstream("10.0.0.2")
    srv = serve(corefile(f" forward . https://127.0.0.1:{dead.port} {addrs(good)} {{\n  tls {cert}\n"
                         "  tls_servername doh.example\n  policy sequential\n  read_timeout 200ms\n }"))
    assert ips(srv.query(NAME, "A")) == ["10.0.0.2"]
    assert (NAME, "A", "https") in dead.queries
    # the health check speaks DoH too
    assert wait_for(lambda: (".", "NS", "https") in dead.queries)


def test_dns_over_tls_checks_the_server_name(serve, upstream, tmp_path):
    cert, key = self_signed_cert(str(tmp_path), "dns.example")
    up = upstream(tls=(cert, key))
    srv = serve(corefile(f" forward . tls://127.0.0.1:{up.port} {{\n  tls {cert}\n  tls_servername other.example\n"
                         "  max_fails 0\n }"))
    assert srv.query(NAME, "A").rcode() == dns.rcode.SERVFAIL
    assert not up.queries


def test_metrics_have_coredns_names_and_labels(serve, upstream):
    up = upstream()
    to = f"127.0.0.1:{up.port}"
    srv = serve(corefile(f" forward . {addrs(up)}"))
    srv.query(NAME, "A")
    srv.query("missing.example.org", "A")
    now = scrape()
    assert value("coredns_forward_requests_total", now, to=to) == 2
    assert value("coredns_forward_responses_total", now, to=to, rcode="NOERROR") == 1
    assert value("coredns_forward_responses_total", now, to=to, rcode="NXDOMAIN") == 1
    assert value("coredns_forward_request_duration_seconds_count", now, to=to, rcode="NXDOMAIN") == 1
    assert value("coredns_proxy_request_duration_seconds_count", now, proxy_name="forward", to=to,
                 rcode="NOERROR") == 1
    assert value("coredns_proxy_conn_cache_misses_total", now, proxy_name="forward", to=to, proto="udp") == 1
    for name in ("coredns_forward_healthcheck_broken_total", "coredns_forward_max_concurrent_rejects_total"):
        assert samples(name, now), name


def test_concurrent_queries_all_answered(serve, upstream):
    up = upstream(mode="slow", delay=0.2)
    srv = serve(corefile(f" forward . {addrs(up)}"))
    results: list = []

    def ask(i: int) -> None:
        results.append(srv.query(f"q{i}.example.org", "A", tcp=bool(i % 2)).rcode())

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert results == [dns.rcode.NXDOMAIN] * 20


# ---------------------------------------------------------------- start-up errors

BAD = [
    ("forward .", "wrong argument count", 3),
    ("forward . 127.0.0.1 {\n  foo\n }", "plugin/forward: unknown property 'foo'", 4),
    ("forward . 127.0.0.1 {\n  policy fastest\n }", "unknown policy 'fastest'", 4),
    ("forward . 127.0.0.1 {\n  next NOPE\n }", "NOPE is not a valid rcode", 4),
    ("forward . 127.0.0.1 {\n  failover NOERROR\n }", "NoError cannot be used in failover", 4),
    ("forward . 127.0.0.1 {\n  max_fails -1\n }", "max_fails", 4),
    ("forward . 127.0.0.1 {\n  max_fails x\n }", "max_fails", 4),
    ("forward . 127.0.0.1 {\n  max_concurrent -5\n }", "max_concurrent can't be negative", 4),
    ("forward . 127.0.0.1 {\n  health_check 1s bogus\n }", "health_check: unknown option bogus", 4),
    ("forward . 127.0.0.1 {\n  health_check -1s\n }", "health_check can't be negative", 4),
    ("forward . 127.0.0.1 {\n  expire soon\n }", "invalid duration", 4),
    ("forward . 127.0.0.1 {\n  read_timeout 0s\n }", "read_timeout must be positive", 4),
    ("forward . 127.0.0.1 {\n  expire 10s\n  max_age 5s\n }", "must not be less than expire", 5),
    ("forward . 127.0.0.1 {\n  force_tcp yes\n }", "wrong argument count", 4),
    ("forward . 127.0.0.1 {\n  source_address nowhere\n }", "invalid IP address: nowhere", 4),
    ("forward . 127.0.0.1 {\n  resolver dns.test\n }", "resolver must be an IP address", 4),
    ("forward . 127.0.0.1 {\n  tls /nonexistent/ca.pem\n }", "/nonexistent/ca.pem", 4),
    ("forward . https://127.0.0.1/dns-query", "paths are not allowed in HTTPS upstream addresses", 3),
    ("forward . https://127.0.0.1 {\n  doh_method PUT\n }", "doh_method must be either POST or GET", 4),
    ("forward . quic://127.0.0.1", "'quic' is not supported as a destination protocol", 3),
    ("forward . 127.0.0.1:99999", "invalid port", 3),
    ("forward . /nonexistent/resolv.conf", "not an IP address or file", 3),
    ("forward . tls://127.0.0.1%a.example {\n  tls_servername b.example\n }", "TLS servernames are set", 3),
    ("forward . " + " ".join(f"127.0.0.{i}" for i in range(1, 17)), "more than 15 TOs configured: 16", 3),
]


@pytest.mark.parametrize("text,message,line", BAD, ids=[b[1] for b in BAD])
def test_bad_options_stop_start_up_naming_file_and_line(serve, text, message, line):
    with pytest.raises(CorefileError) as err:
        serve(f".:0 {{\n bind 127.0.0.1\n {text}\n}}\n")
    shown = str(err.value)
    assert message in shown
    assert shown.startswith(f"{err.value.file}:{line}: plugin/forward: ")


def test_empty_resolv_conf_is_an_error(serve, tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("search example.org\n")
    with pytest.raises(CorefileError) as err:
        serve(corefile(f" forward . {conf}"))
    assert "no valid upstream addresses found" in str(err.value) and str(conf) in str(err.value)
    assert err.value.line == 4
