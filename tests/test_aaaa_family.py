"""AAAA by the cluster's IP families (``ipv6 auto|on|off``), asked over UDP of a server whose
kubernetes plugin reads the fake API server, with ``fallthrough`` to a forward upstream that
records every question it gets."""

from __future__ import annotations

import dns.rdatatype
import pytest

from pydns.testing.fakeapi import FakeApiServer
from pydns.testing.upstream import Upstream
from tests.kube_api_dns import answer, kube_server, setup_error, wait_for
from tests.kube_cluster import cluster, service

pytestmark = pytest.mark.timeout(60)

ZONE = "testns.svc.cluster.local"
EXT_TARGET = "ext.interwebs.test."
MISSING = f"nothere.{ZONE}."


def v4_only() -> list[dict]:
    """The test cluster without anything IPv6: a single-stack IPv4 cluster."""
    def v6(obj):
        spec = obj.get("spec") or {}
        return (any(":" in ip for ip in spec.get("clusterIPs") or ()) or obj.get("addressType") == "IPv6"
                or ":" in ((obj.get("status") or {}).get("podIP") or ""))
    return [obj for obj in cluster() if not v6(obj)]


@pytest.fixture
def upstream():
    up = Upstream({(EXT_TARGET, "A"): ["192.0.2.7"], (EXT_TARGET, "AAAA"): ["2001:db8::7"],
                   (MISSING, "A"): ["192.0.2.9"], (MISSING, "AAAA"): ["2001:db8::9"]}).start()
    yield up
    up.stop()


@pytest.fixture
def dns_server(tmp_path, upstream):
    """``dns_server(objects, mode)``: pydns reading a fake API server holding ``objects``."""
    running = []

    def start(objects, mode):
        api = FakeApiServer(objects).start()
        option = f"  ipv6 {mode}\n" if mode else ""
        srv = kube_server(api, tmp_path, option + "  fallthrough\n",
                          plugins=f" forward . {upstream.address[0]}:{upstream.address[1]}\n",
                          name=f"kubeconfig-{len(running)}")
        running.append((srv, api))
        return srv, api

    yield start
    for srv, api in running:
        srv.stop()
        api.stop()


def asked(upstream, name, rdtype):
    return sum(1 for q, t, _proto in upstream.queries if q.lower() == name and t == rdtype)


def nodata_with_soa(srv, name):
    msg = srv.query(name, "AAAA")
    return msg.rcode() == 0 and not msg.answer and [rrset.rdtype for rrset in msg.authority] == [dns.rdatatype.SOA]


def as_cluster_with_ipv6(srv, upstream):
    """What AAAA questions get where the cluster may have IPv6 (CoreDNS's answers)."""
    upstream.reset()
    assert nodata_with_soa(srv, f"svc1.{ZONE}")
    assert answer(srv, f"external.{ZONE}", "AAAA") == ("NOERROR", ["2001:db8::7"])
    assert asked(upstream, EXT_TARGET, "AAAA") == 1
    assert answer(srv, MISSING, "AAAA") == ("NOERROR", ["2001:db8::9"])  # handed on by fallthrough
    assert asked(upstream, MISSING, "AAAA") == 1


def as_ipv4_cluster(srv, upstream):
    """What AAAA questions get where the cluster has no IPv6: answered here, nothing forwarded."""
    upstream.reset()
    assert nodata_with_soa(srv, f"svc1.{ZONE}")
    msg = srv.query(f"external.{ZONE}", "AAAA")
    assert msg.rcode() == 0 and [rr.to_text() for rrset in msg.answer for rr in rrset] == [EXT_TARGET]
    missing = srv.query(MISSING, "AAAA")
    assert missing.rcode() == 3 and [r.rdtype for r in missing.authority] == [dns.rdatatype.SOA]
    assert asked(upstream, EXT_TARGET, "AAAA") == 0 and asked(upstream, MISSING, "AAAA") == 0
    # A is untouched: still followed and still handed on.
    assert answer(srv, f"external.{ZONE}", "A") == ("NOERROR", ["192.0.2.7"])
    assert answer(srv, MISSING, "A") == ("NOERROR", ["192.0.2.9"])
    assert asked(upstream, EXT_TARGET, "A") == 1 and asked(upstream, MISSING, "A") == 1


@pytest.mark.parametrize("mode", [None, "on"])
def test_on_and_unset_answer_aaaa_as_coredns_does(dns_server, upstream, mode):
    srv, _ = dns_server(v4_only(), mode)
    as_cluster_with_ipv6(srv, upstream)


def test_off_answers_aaaa_of_cluster_names_here_and_never_forwards_them(dns_server, upstream):
    srv, _ = dns_server(cluster(), "off")
    as_ipv4_cluster(srv, upstream)
    # Records that exist are still served: off never hides an answer.
    assert answer(srv, f"svc6.{ZONE}", "AAAA") == ("NOERROR", ["1234:abcd::1"])


def test_auto_learns_the_families_from_the_services(dns_server, upstream):
    srv, api = dns_server(v4_only(), "auto")
    as_ipv4_cluster(srv, upstream)
    api.create(service("svc6", ips=("1234:abcd::1",)))
    wait_for(lambda: answer(srv, f"svc6.{ZONE}", "AAAA") == ("NOERROR", ["1234:abcd::1"]), what="svc6")
    as_cluster_with_ipv6(srv, upstream)
    api.delete("Service", "testns", "svc6")
    wait_for(lambda: answer(srv, f"svc6.{ZONE}", "AAAA")[0] == "NXDOMAIN", what="svc6 gone")
    as_ipv4_cluster(srv, upstream)


def test_auto_on_a_dual_stack_cluster_is_as_coredns(dns_server, upstream):
    srv, _ = dns_server(cluster(), "auto")
    as_cluster_with_ipv6(srv, upstream)
    assert answer(srv, f"svc-dual-stack.{ZONE}", "AAAA") == ("NOERROR", ["10::3"])




@pytest.mark.parametrize("mode,expected", [("on", "SERVFAIL"), ("off", "NOERROR")])
def test_before_the_first_sync_off_answers_a_known_names_aaaa_with_nodata(tmp_path, mode, expected):
    """Services are listed, endpoint slices hang: svc1 is known, the plugin is not synced."""
    api = FakeApiServer(v4_only()).start()
    api.stall("EndpointSlice")
    srv = kube_server(api, tmp_path, f"  ipv6 {mode}\n  startup_timeout 1s\n")
    try:
        wait_for(lambda: answer(srv, f"svc1.{ZONE}") == ("NOERROR", ["10.0.0.1"]), what="svc1 known")
        assert answer(srv, f"svc1.{ZONE}", "AAAA") == (expected, [])
        if mode == "off":
            assert nodata_with_soa(srv, f"svc1.{ZONE}")
        assert answer(srv, MISSING, "AAAA")[0] == "SERVFAIL"  # may exist: not known yet
    finally:
        api.unstall()
        srv.stop()
        api.stop()


@pytest.mark.parametrize("option,message", [
    ("ipv6", "wrong argument count"),
    ("ipv6 yes", "wrong value for ipv6: yes, must be one of: auto, on, off"),
    ("ipv6 on off", "wrong argument count"),
])
def test_ipv6_setup_errors_name_file_and_line(tmp_path, option, message):
    err = setup_error(tmp_path, "  " + option)
    assert err is not None and message in err.message and str(err).startswith(f"{tmp_path / 'Corefile'}:5: ")
