"""Replies kept by the query's bytes (pydns.replies), seen from outside: over real UDP sockets.

A kept reply must be exactly what the chain would give: each query's own ID and question
case, a change (a watch event, a reload) seen by the very next query, nothing kept that
depends on the client or on chance, and every per-query count (prometheus, cache hits)
still counted.
"""

from __future__ import annotations

import collections
import socket
import time

import dns.flags
import dns.message
import dns.rcode
import pytest

from pydns import replies
from pydns.testing.upstream import Upstream
from tests.kube_api_dns import answer, kube_corefile, metric, wait_for
from tests.kube_cluster import endpoint, endpoint_slice, headless, namespace, service
from tests.conftest import free_port
from tests.test_prometheus import Scrape, http_port, udp_reply


def exchange(port: int, query: dns.message.Message, source: str = "127.0.0.1") -> dns.message.Message:
    """One UDP exchange from ``source``; the same Message sends the same bytes, its ID too."""
    return dns.message.from_wire(udp_reply(port, query, source))


def addresses(msg: dns.message.Message) -> list[str]:
    return sorted(rr.address for rrset in msg.answer for rr in rrset if hasattr(rr, "address"))


def test_each_reply_carries_its_query_id_case_and_flags(fake_apis, tmp_path, serve):
    server = fake_apis([namespace("testns"), service("web", ips=("10.0.0.7",))])
    srv = serve(kube_corefile(server, tmp_path))
    for i, (name, rd, edns) in enumerate([("web.testns.svc.cluster.local", True, 0),
                                          ("WEB.TestNS.svc.cluster.local", True, 0),
                                          ("web.testns.svc.cluster.local", False, 0),
                                          ("web.testns.svc.cluster.local", True, 1232)] * 3):
        query = dns.message.make_query(name, "A", use_edns=0 if edns else False, payload=edns or 512)
        query.id = 1000 + i
        if not rd:
            query.flags &= ~dns.flags.RD
        reply = exchange(srv.port, query)
        assert reply.id == query.id
        assert str(reply.question[0].name) == name + "."  # the question as asked, case and all
        assert bool(reply.flags & dns.flags.RD) == rd
        assert (reply.edns >= 0) == bool(edns)
        assert addresses(reply) == ["10.0.0.7"]


def test_a_watch_event_is_seen_by_the_next_query(fake_apis, tmp_path, serve):
    server = fake_apis([namespace("testns"), service("web", ips=("10.0.0.7",)), headless("db"),
                  endpoint_slice("db-1", "db", [endpoint("10.1.0.1")])])
    srv = serve(kube_corefile(server, tmp_path))
    for _ in range(5):  # asked again and again: its reply is kept
        assert answer(srv, "web.testns.svc.cluster.local") == ("NOERROR", ["10.0.0.7"])
        assert answer(srv, "gone.testns.svc.cluster.local")[0] == "NXDOMAIN"
    server.apply(service("gone", ips=("10.0.0.9",)))
    wait_for(lambda: answer(srv, "gone.testns.svc.cluster.local") == ("NOERROR", ["10.0.0.9"]), what="new service")
    # The event that changed one name also reached every other kept reply: the next event
    # is applied, and the first query after it already sees it.
    server.apply(endpoint_slice("db-1", "db", [endpoint("10.1.0.2")]))
    wait_for(lambda: answer(srv, "db.testns.svc.cluster.local") == ("NOERROR", ["10.1.0.2"]), what="moved endpoint")
    server.delete("Service", "testns", "web")
    wait_for(lambda: answer(srv, "web.testns.svc.cluster.local")[0] == "NXDOMAIN", what="deleted service")
    assert answer(srv, "gone.testns.svc.cluster.local") == ("NOERROR", ["10.0.0.9"])


def test_a_reload_drops_every_kept_reply(tmp_path, serve):
    manifests = tmp_path / "cluster.yaml"
    manifests.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: testns}\n"
        "spec: {type: ClusterIP, clusterIP: 10.0.0.7, clusterIPs: [10.0.0.7], ports: [{port: 80}]}\n")
    conf = tmp_path / "Corefile"
    body = ".:{port} {{\n bind 127.0.0.1\n kubernetes cluster.local {{\n  manifests {m}\n  ttl {ttl}\n }}\n}}\n"
    port = free_port()
    conf.write_text(body.format(port=port, m=manifests, ttl=5))
    srv = serve("", path=str(conf))
    for _ in range(3):
        assert srv.query("web.testns.svc.cluster.local", "A").answer[0].ttl == 5
    conf.write_text(body.format(port=port, m=manifests, ttl=30))
    assert srv.reload()
    assert srv.query("web.testns.svc.cluster.local", "A").answer[0].ttl == 30


def test_replies_that_depend_on_the_client_are_not_kept(fake_apis, tmp_path, serve):
    # acl comes before kubernetes: what a client gets depends on its address.
    server = fake_apis([namespace("testns"), service("web", ips=("10.0.0.7",))])
    srv = serve(kube_corefile(server, tmp_path, plugins=" acl {\n  block net 127.0.0.2/32\n }"))
    query = dns.message.make_query("web.testns.svc.cluster.local", "A")
    for _ in range(4):
        assert addresses(exchange(srv.port, query, "127.0.0.1")) == ["10.0.0.7"]
        assert exchange(srv.port, query, "127.0.0.2").rcode() == dns.rcode.REFUSED


@pytest.mark.parametrize("count, kept", [(3, True), (8, False)])
def test_orders_are_drawn_per_query_even_from_kept_replies(fake_apis, tmp_path, serve, count, kept):
    # 3 records have 6 orders, made ahead and kept together; 8 have 40,320, drawn per query.
    ips = [f"10.1.0.{i}" for i in range(1, count + 1)]
    server = fake_apis([namespace("testns"), headless("db"),
                        endpoint_slice("db-1", "db", [endpoint(ip) for ip in ips])])
    srv = serve(kube_corefile(server, tmp_path, plugins=" prometheus 127.0.0.1:0\n loadbalance"))
    query = dns.message.make_query("db.testns.svc.cluster.local", "A")
    orders = collections.Counter()
    for _ in range(120):
        reply = exchange(srv.port, query)
        orders[tuple(rr.address for rrset in reply.answer for rr in rrset)] += 1
    assert {ip for order in orders for ip in order} == set(ips)
    if kept:
        assert len(orders) == 6 and min(orders.values()) >= 5  # each of 6 orders about 20 times
    else:
        assert len(orders) > 100
    assert (metric(http_port(srv), "pydns_udp_kept_replies") > 0) == kept


def test_every_kept_reply_is_counted(fake_apis, tmp_path, serve):
    server = fake_apis([namespace("testns"), service("web", ips=("10.0.0.7",))])
    srv = serve(kube_corefile(server, tmp_path, plugins=" prometheus 127.0.0.1:0\n errors"))
    query = dns.message.make_query("web.testns.svc.cluster.local", "A")
    zone = dict(zone=".", proto="udp")
    counted = {  # what the process counted before (other servers of the tests count into it too)
        "requests": lambda m: m.value("coredns_dns_requests_total", **zone, type="A"),
        "responses": lambda m: m.value("coredns_dns_responses_total", zone=".", rcode="NOERROR", plugin="kubernetes"),
        "durations": lambda m: m.value("coredns_dns_request_duration_seconds_count", zone="."),
        "request bytes": lambda m: m.value("coredns_dns_request_size_bytes_sum", **zone),
        "response bytes": lambda m: m.value("coredns_dns_response_size_bytes_sum", **zone),
    }
    before = Scrape(http_port(srv))
    sizes = [len(udp_reply(srv.port, query)) for _ in range(25)]
    after = Scrape(http_port(srv))
    added = {what: read(after) - read(before) for what, read in counted.items()}
    assert added == {"requests": 25, "responses": 25, "durations": 25, "request bytes": 25 * len(query.to_wire()),
                     "response bytes": sum(sizes)}


def test_cache_hits_kept_count_and_age(serve):
    up = Upstream({("kept.example.", "A"): ["192.0.2.1"]}, ttl=60).start()
    try:
        srv = serve(f".:0 {{\n bind 127.0.0.1\n prometheus 127.0.0.1:0\n cache\n"
                    f" forward . {up.address[0]}:{up.address[1]}\n}}\n")
        query = dns.message.make_query("kept.example", "A")
        first = exchange(srv.port, query)
        hits = Scrape(http_port(srv)).value("coredns_cache_hits_total")  # the process's, other servers' too
        ttls = [exchange(srv.port, query).answer[0].ttl for _ in range(10)]
        assert len(up.queries) == 1  # every later one came from the cache
        assert first.answer[0].ttl == 60 and min(ttls) >= 59
        time.sleep(2.1)
        assert exchange(srv.port, query).answer[0].ttl <= 58  # a kept reply ages with its cache entry
        assert Scrape(http_port(srv)).value("coredns_cache_hits_total") - hits == 11
    finally:
        up.stop()


def test_kept_replies_are_bounded(fake_apis, tmp_path, serve):
    server = fake_apis([namespace("testns")])
    srv = serve(kube_corefile(server, tmp_path, plugins=" prometheus 127.0.0.1:0"))
    n = replies.MAX_ENTRIES + 500
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        for start in range(0, n, 200):  # in waves, so that no datagram is lost to a full buffer
            for i in range(start, min(start + 200, n)):
                s.sendto(dns.message.make_query(f"x{i}.testns.svc.cluster.local", "A").to_wire(),
                         ("127.0.0.1", srv.port))
            for _ in range(start, min(start + 200, n)):
                s.recv(512)
    kept = metric(http_port(srv), "pydns_udp_kept_replies")
    assert 0 < kept <= replies.MAX_ENTRIES
    size = metric(http_port(srv), "pydns_udp_kept_reply_bytes")
    assert 0 < size <= replies.MAX_BYTES


def test_bufsize_ahead_keeps_replies_sized_for_each_query(fake_apis, tmp_path, serve):
    # bufsize lowers a large EDNS0 size: a reply kept for one size is never sent for another.
    ips = [f"10.1.{i // 250}.{i % 250 + 1}" for i in range(60)]  # 60 A records: about 1 KB
    server = fake_apis([namespace("testns"), headless("db"), endpoint_slice("db-1", "db", [endpoint(ip) for ip in ips])])
    srv = serve(kube_corefile(server, tmp_path, plugins=" bufsize 512"))
    for _ in range(3):
        for payload in (4096, 1232, 512):
            query = dns.message.make_query("db.testns.svc.cluster.local", "A", use_edns=0, payload=payload)
            reply = exchange(srv.port, query)
            assert reply.flags & dns.flags.TC  # cut to bufsize's 512, whatever the client offered
        plain = exchange(srv.port, dns.message.make_query("db.testns.svc.cluster.local", "A"))
        assert plain.flags & dns.flags.TC and plain.edns < 0


@pytest.mark.parametrize("ahead", ["minimal", "header {\n  response set ra\n }", "bufsize 1232"])
def test_plugins_that_change_replies_alike_keep_them(fake_apis, tmp_path, serve, ahead):
    server = fake_apis([namespace("testns"), service("web", ips=("10.0.0.7",))])
    srv = serve(kube_corefile(server, tmp_path, plugins=f" prometheus 127.0.0.1:0\n {ahead}"))
    for _ in range(3):
        assert answer(srv, "web.testns.svc.cluster.local") == ("NOERROR", ["10.0.0.7"])
    assert metric(http_port(srv), "pydns_udp_kept_replies") > 0
    server.apply(service("web", ips=("10.0.0.8",)))
    wait_for(lambda: answer(srv, "web.testns.svc.cluster.local") == ("NOERROR", ["10.0.0.8"]), what="changed service")
