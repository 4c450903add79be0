"""k8s_external: services' external addresses in another zone, from manifests and from the API.

Tables over real sockets, as CoreDNS 1.14.7's k8s_external answers them; each runs against a
server whose kubernetes plugin reads manifest files and one that reads the fake API server
through the official client.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.k8s_sources import kind  # noqa: F401 (the fixture: each source in turn)
from tests.k8s_sources import (NOERROR, NXDOMAIN, answers_eventually, ask, lines, rr, server_fixture, setup_error,
                                table_test)
from tests.kube_cluster import endpoint, endpoint_slice, headless, namespace, service

pytestmark = pytest.mark.timeout(90)


def load_balancer(name, ingress, external_ips=(), ports=(("http", 80, "TCP"),), ns="default"):
    svc = service(name, ns, ips=("10.0.0.50",), ports=ports)
    svc["spec"]["type"] = "LoadBalancer"
    if external_ips:
        svc["spec"]["externalIPs"] = list(external_ips)
    svc["status"] = {"loadBalancer": {"ingress": ingress}}
    return svc


def with_external_ips(svc, *ips):
    svc["spec"]["externalIPs"] = list(ips)
    return svc


CLUSTER = [
    namespace("default"),
    load_balancer("lb", [{"ip": "203.0.113.7"}, {"ip": "2001:db8::7"}], external_ips=["192.168.200.123"]),
    load_balancer("lbhost", [{"hostname": "lb.provider.test"}]),
    load_balancer("loop1", [{"hostname": "loop2.default.example.org"}]),
    load_balancer("loop2", [{"hostname": "loop1.default.example.org"}]),
    with_external_ips(service("noports", "default", ips=("10.0.0.51",), ports=()), "192.0.2.9"),
    service("plain", "default", ips=("10.0.0.52",)),
    headless("hl", "default"),
    endpoint_slice("hl-1", "hl", [endpoint("10.1.0.1", hostname="a"), endpoint("10.1.0.2")], ns="default"),
    with_external_ips(headless("hlext", "default"), "192.0.2.20"),
    endpoint_slice("hlext-1", "hlext", [endpoint("10.1.0.3")], ns="default"),
]
for _svc in CLUSTER:
    if _svc["kind"] == "Service" and not _svc["spec"]["ports"]:
        del _svc["spec"]["ports"]

COREFILE = """.:0 {{
  bind 127.0.0.1
  hosts {{
    198.51.100.1 lb.provider.test
    fallthrough
  }}
  kubernetes cluster.local {{
    {{source}}
    ttl {kttl}
  }}
  k8s_external example.org 113.0.203.in-addr.arpa {{
{options}
  }}
  whoami
}}
"""

EX = "example.org."


plain = server_fixture("plain", CLUSTER, COREFILE.format(kttl=10, options=""),
                       "k8s_external with its defaults; the kubernetes plugin's TTL is 10 (SRV and CNAME keep it).")
EXTENDED_OPTIONS = "    headless\n    apex ns\n    ttl 30\n    fallthrough"
extended = server_fixture("extended", CLUSTER, COREFILE.format(kttl=5, options=EXTENDED_OPTIONS),
                          "headless, apex ns, ttl 30, fallthrough (to whoami).")


LB = "lb.default." + EX
SOA = f"{EX} 5 IN SOA ns1.dns.{EX} hostmaster.dns.{EX} SERIAL 7200 1800 86400 5"

# (name, type, rcode, answer, zone of the SOA in authority or None, additional or None: not checked)
CASES = [
    (LB, "A", NOERROR, [rr(LB, "A", "192.168.200.123"), rr(LB, "A", "203.0.113.7")], None, None),
    (LB, "AAAA", NOERROR, [rr(LB, "AAAA", "2001:db8::7")], None, None),
    # one "service" per address and port: three, so weight 33; SRV keeps kubernetes' TTL (10)
    (LB, "SRV", NOERROR, [rr(LB, "SRV", f"0 33 80 {LB}", 10)],
     None, [rr(LB, "A", "192.168.200.123"), rr(LB, "A", "203.0.113.7"), rr(LB, "AAAA", "2001:db8::7")]),
    ("_http._tcp." + LB, "SRV", NOERROR, [rr("_http._tcp." + LB, "SRV", f"0 33 80 {LB}", 10)], None, None),
    ("http.tcp." + LB, "SRV", NOERROR, [rr("http.tcp." + LB, "SRV", f"0 33 80 {LB}", 10)], None, None),
    ("_dns._udp." + LB, "SRV", NXDOMAIN, [], EX, None),
    # without headless an endpoint label is ignored: the service's addresses, as in CoreDNS
    ("x." + LB, "A", NOERROR, [rr("x." + LB, "A", "192.168.200.123"), rr("x." + LB, "A", "203.0.113.7")], None,
     None),
    (LB, "TXT", NOERROR, [], EX, None),
    (LB, "MX", NOERROR, [], EX, None),
    ("noports.default." + EX, "A", NOERROR, [rr("noports.default." + EX, "A", "192.0.2.9")], None, None),
    ("noports.default." + EX, "SRV", NOERROR, [], EX, None),
    ("plain.default." + EX, "A", NXDOMAIN, [], EX, None),
    ("missing.default." + EX, "A", NXDOMAIN, [], EX, None),
    ("default." + EX, "A", NOERROR, [], EX, None),
    ("nons." + EX, "A", NXDOMAIN, [], EX, None),
    ("lb.nons." + EX, "A", NXDOMAIN, [], EX, None),
    ("a.b.c.lb.default." + EX, "A", NXDOMAIN, [], EX, None),
    ("hl.default." + EX, "A", NXDOMAIN, [], EX, None),  # headless only with `headless`
    ("hlext.default." + EX, "A", NOERROR, [rr("hlext.default." + EX, "A", "192.0.2.20")], None, None),
    # a load balancer known by hostname: CNAME (kubernetes' TTL), then what the server finds for it
    ("lbhost.default." + EX, "A", NOERROR,
     [rr("lbhost.default." + EX, "CNAME", "lb.provider.test.", 10), "lb.provider.test. 3600 IN A 198.51.100.1"],
     None, None),
    # the apex and its dns subdomain
    (EX, "SOA", NOERROR, [SOA], None, None),
    (EX, "NS", NOERROR, [rr(EX, "NS", f"ns1.dns.{EX}")], None, [rr(f"ns1.dns.{EX}", "A", "127.0.0.1")]),
    (EX, "A", NOERROR, [], EX, None),
    ("dns." + EX, "A", NOERROR, [], EX, None),
    ("ns1.dns." + EX, "A", NOERROR, [rr("ns1.dns." + EX, "A", "127.0.0.1")], None, None),
    ("ns1.dns." + EX, "AAAA", NOERROR, [], EX, None),
    ("ns2.dns." + EX, "A", NXDOMAIN, [], EX, None),
    ("a.ns1.dns." + EX, "A", NXDOMAIN, [], EX, None),
    # PTR of an external address, in a reverse zone k8s_external serves
    ("7.113.0.203.in-addr.arpa.", "PTR", NOERROR, [rr("7.113.0.203.in-addr.arpa.", "PTR", LB)], None, None),
]


def test_negative_answers_carry_the_zones_soa(plain):
    for name, rcode in (("missing.default." + EX, NXDOMAIN), (LB, NOERROR), ("ns2.dns." + EX, NXDOMAIN)):
        msg = plain.query(name, "TXT")
        assert msg.rcode() == rcode and not msg.answer
        assert [" ".join("SERIAL" if i == 6 else w for i, w in enumerate(a.split()))
                for a in lines(msg.authority)] == [SOA]


test_external_names = table_test("plain", CASES)
test_external_names_over_tcp = table_test("plain", [c for c in CASES if c[1] in ("SRV", "NS")], tcp=True)


def test_load_balancer_hostnames_that_loop_are_followed_once(plain):
    one, two = "loop1.default." + EX, "loop2.default." + EX
    assert ask(plain, one, "A") == (NOERROR, [rr(one, "CNAME", two, 10), rr(two, "CNAME", one, 10)])


def test_cluster_names_are_the_kubernetes_plugins(plain):
    assert ask(plain, "lb.default.svc.cluster.local.", "A") == (NOERROR, ["lb.default.svc.cluster.local. 10 IN A "
                                                                          "10.0.0.50"])


HL = "hl.default." + EX

EXTENDED = [
    (HL, "A", NOERROR, [rr(HL, "A", "10.1.0.1", 30), rr(HL, "A", "10.1.0.2", 30)], None, None),
    (HL, "SRV", NOERROR, [rr(HL, "SRV", f"0 50 80 a.{HL}"), rr(HL, "SRV", f"0 50 80 10-1-0-2.{HL}")], None,
     [rr("a." + HL, "A", "10.1.0.1", 30), rr("10-1-0-2." + HL, "A", "10.1.0.2", 30)]),
    ("_http._tcp." + HL, "SRV", NOERROR,
     [rr("_http._tcp." + HL, "SRV", f"0 50 80 a.{HL}"), rr("_http._tcp." + HL, "SRV", f"0 50 80 10-1-0-2.{HL}")],
     None, None),
    ("a." + HL, "A", NOERROR, [rr("a." + HL, "A", "10.1.0.1", 30)], None, None),
    ("10-1-0-2." + HL, "A", NOERROR, [rr("10-1-0-2." + HL, "A", "10.1.0.2", 30)], None, None),
    # external addresses win over endpoints
    ("hlext.default." + EX, "A", NOERROR, [rr("hlext.default." + EX, "A", "192.0.2.20", 30)], None, None),
    (LB, "A", NOERROR, [rr(LB, "A", "192.168.200.123", 30), rr(LB, "A", "203.0.113.7", 30)], None, None),
]


test_headless_apex_and_ttl_options = table_test("extended", EXTENDED)


def test_apex_option_names_the_soa_and_ns(extended):
    msg = extended.query(EX, "SOA")
    (rrset,) = msg.answer
    (soa,) = rrset
    assert rrset.ttl == 30 and soa.minimum == 30
    assert (soa.mname.to_text(), soa.rname.to_text()) == (f"ns1.ns.{EX}", f"hostmaster.ns.{EX}")
    assert (soa.refresh, soa.retry, soa.expire) == (7200, 1800, 86400)
    assert ask(extended, f"ns1.ns.{EX}", "A") == (NOERROR, [rr(f"ns1.ns.{EX}", "A", "127.0.0.1", 30)])
    # "dns" is an ordinary (missing) namespace now: its NXDOMAIN falls through to whoami
    passed = extended.query(f"ns1.dns.{EX}", "A")
    assert passed.rcode() == NOERROR and not passed.authority


def test_fallthrough_passes_on_nxdomain_only(extended):
    passed = extended.query("plain.default." + EX, "A")
    assert passed.rcode() == NOERROR and not passed.authority  # whoami answered
    assert any("127.0.0.1" in line for line in lines(passed.additional))
    kept = extended.query("default." + EX, "A")
    assert kept.rcode() == NOERROR and lines(kept.authority)  # NODATA stays k8s_external's


def test_changes_are_served(plain):
    cluster = plain.cluster
    cluster.apply(load_balancer("lb", [{"ip": "203.0.113.8"}], external_ips=["192.168.200.123"]))
    answers_eventually(plain, LB, "A", (NOERROR, [rr(LB, "A", "192.168.200.123"), rr(LB, "A", "203.0.113.8")]))
    assert ask(plain, "8.113.0.203.in-addr.arpa.", "PTR") == (
        NOERROR, [rr("8.113.0.203.in-addr.arpa.", "PTR", LB)])
    cluster.apply(load_balancer("lb", [{"ip": "203.0.113.7"}, {"ip": "2001:db8::7"}],
                                external_ips=["192.168.200.123"]))
    answers_eventually(plain, LB, "A", (NOERROR, [rr(LB, "A", "192.168.200.123"), rr(LB, "A", "203.0.113.7")]))


# ---------------------------------------------------------------- setup


def block(options: str, kubernetes: bool = True) -> str:
    kube = "  kubernetes cluster.local\n" if kubernetes else ""
    return f".:0 {{\n  bind 127.0.0.1\n{kube}  k8s_external example.org {{\n{options}\n  }}\n}}\n"


@pytest.mark.parametrize("options, line, message", [
    ("    ttl 4000", 5, "plugin/k8s_external: ttl must be in range [0, 3600]: 4000"),
    ("    ttl -1", 5, "plugin/k8s_external: ttl must be in range [0, 3600]: -1"),
    ("    ttl five", 5, "plugin/k8s_external: ttl must be an integer, got 'five'"),
    ("    ttl", 5, "plugin/k8s_external: ttl: wrong argument count"),
    ("    apex", 5, "plugin/k8s_external: apex: wrong argument count"),
    ("    headless on", 5, "plugin/k8s_external: headless: wrong argument count"),
    ("    zonal", 5, "plugin/k8s_external: unknown property 'zonal'"),
])
def test_setup_errors_name_file_and_line(tmp_path, options, line, message):
    error = setup_error(tmp_path, block(options))
    assert error.startswith(f"{tmp_path / 'Corefile'}:{line}: {message}"), error


def test_without_the_kubernetes_plugin_start_up_fails_at_the_directive(tmp_path):
    error = setup_error(tmp_path, block("", kubernetes=False))
    assert error == f"{tmp_path / 'Corefile'}:3: plugin/k8s_external: kubernetes plugin not loaded"
    # -validate says so too, without serving
    result = subprocess.run([sys.executable, "-m", "pydns", "-validate", "-conf", str(tmp_path / "Corefile")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    message = f"{tmp_path / 'Corefile'}:3: plugin/k8s_external: kubernetes plugin not loaded"
    assert message in result.stdout + result.stderr
