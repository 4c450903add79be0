"""The kubernetes plugin's records, asked of a running server over UDP and TCP.

The table is CoreDNS's behaviour (its handler tests and the Kubernetes DNS specification)
for the cluster in kube_cluster.py, served once from a manifests file and once from a
fake API server: both sources must give the same answers.
"""

from __future__ import annotations

import http.client
import time

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
import yaml

from pydns.corefile import CorefileError, parse
from pydns.server import Instance, build
from pydns.testing import ServerThread
from tests.kube_cluster import cluster

pytestmark = pytest.mark.timeout(60)

NOERROR, NXDOMAIN, SERVFAIL, REFUSED = dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.SERVFAIL, dns.rcode.REFUSED
CL, V4, V6 = "cluster.local.", "in-addr.arpa.", "ip6.arpa."


def svc(name: str, ns: str = "testns") -> str:
    return f"{name}.{ns}.svc.cluster.local."


def rev(ip: str) -> str:
    import ipaddress

    return ipaddress.ip_address(ip).reverse_pointer + "."


def rr(owner: str, rtype: str, data: str, ttl: int = 5) -> str:
    return f"{owner} {ttl} IN {rtype} {data}"


def write_manifests(path, objects) -> str:
    path.write_text(yaml.safe_dump_all(objects))
    return str(path)


def corefile(source: str, options: str = "", zones: str = "cluster.local in-addr.arpa ip6.arpa",
             after: str = "whoami") -> str:
    return (f".:0 {{\n bind 127.0.0.1\n kubernetes {zones} {{\n  {source}\n{options}\n }}\n {after}\n}}\n")


@pytest.fixture(scope="module", params=["manifests", "api"])
def source(request, tmp_path_factory):
    """``source(options)`` serves the fixture cluster from a manifests file or a fake API server."""
    tmp = tmp_path_factory.mktemp(request.param)
    servers: list[ServerThread] = []
    if request.param == "manifests":
        line = f"manifests {write_manifests(tmp / 'cluster.yaml', cluster())}"
        api = None
    else:
        from pydns.testing.fakeapi import FakeApiServer

        api = FakeApiServer(cluster())
        api.start()
        line = f"kubeconfig {api.kubeconfig(str(tmp / 'kubeconfig'))}"

    def start(options: str = "", **kw) -> ServerThread:
        srv = ServerThread(corefile(line, options, **kw)).start()
        servers.append(srv)
        return srv

    start.kind = request.param
    yield start
    for srv in servers:
        srv.stop()
    if api is not None:
        api.stop()


@pytest.fixture(scope="module")
def k8s(source):
    """The main server: pods verified, fallthrough for ip6.arpa only, whoami after it."""
    return source("  pods verified\n  fallthrough ip6.arpa")


def ask(srv: ServerThread, name: str, rdtype: str, tcp: bool = False, **kw) -> dns.message.Message:
    return srv.query(name, rdtype, tcp=tcp, **kw)


def lines(section) -> list[str]:
    return sorted(line for rrset in section for line in rrset.to_text().splitlines())


def lines_nocase(section) -> list[str]:
    return [line.lower() for line in lines(section)]


def soa_zone(msg) -> str | None:
    soas = [rrset for rrset in msg.authority if rrset.rdtype == dns.rdatatype.SOA]
    return soas[0].name.to_text() if soas else None


# (name, type, rcode, answer, zone of the SOA in authority or None, additional or None: not checked)
CASES = [
    # ClusterIP services, single and dual stack
    (svc("svc1"), "A", NOERROR, [rr(svc("svc1"), "A", "10.0.0.1")], None, None),
    (svc("svc1"), "AAAA", NOERROR, [], CL, None),
    (svc("svc6"), "AAAA", NOERROR, [rr(svc("svc6"), "AAAA", "1234:abcd::1")], None, None),
    (svc("svc6"), "A", NOERROR, [], CL, None),
    (svc("svc-dual-stack"), "A", NOERROR, [rr(svc("svc-dual-stack"), "A", "10.0.0.3")], None, None),
    (svc("svc-dual-stack"), "AAAA", NOERROR, [rr(svc("svc-dual-stack"), "AAAA", "10::3")], None, None),
    (svc("svc-dual-stack"), "SRV", NOERROR, [rr(svc("svc-dual-stack"), "SRV", f"0 50 80 {svc('svc-dual-stack')}")],
     None, [rr(svc("svc-dual-stack"), "A", "10.0.0.3"), rr(svc("svc-dual-stack"), "AAAA", "10::3")]),
    (svc("svc1"), "SRV", NOERROR, [rr(svc("svc1"), "SRV", f"0 100 80 {svc('svc1')}")], None,
     [rr(svc("svc1"), "A", "10.0.0.1")]),
    (svc("svc6"), "SRV", NOERROR, [rr(svc("svc6"), "SRV", f"0 100 80 {svc('svc6')}")], None,
     [rr(svc("svc6"), "AAAA", "1234:abcd::1")]),
    ("_http._tcp." + svc("svc1"), "SRV", NOERROR, [rr("_http._tcp." + svc("svc1"), "SRV", f"0 100 80 {svc('svc1')}")],
     None, [rr(svc("svc1"), "A", "10.0.0.1")]),
    ("_http._tcp." + svc("svc1"), "A", NOERROR, [rr("_http._tcp." + svc("svc1"), "A", "10.0.0.1")], None, None),
    ("_http._udp." + svc("svc1"), "SRV", NXDOMAIN, [], CL, None),
    ("_https._tcp." + svc("svc1"), "SRV", NXDOMAIN, [], CL, None),
    (svc("svc-ports"), "SRV", NOERROR, [rr(svc("svc-ports"), "SRV", f"0 50 8080 {svc('svc-ports')}"),
                                        rr(svc("svc-ports"), "SRV", f"0 50 9090 {svc('svc-ports')}")],
     None, [rr(svc("svc-ports"), "A", "10.0.0.5")]),
    ("_metrics._tcp." + svc("svc-ports"), "SRV", NOERROR,
     [rr("_metrics._tcp." + svc("svc-ports"), "SRV", f"0 100 9090 {svc('svc-ports')}")], None, None),
    (svc("kube-dns", "kube-system"), "SRV", NOERROR,
     [rr(svc("kube-dns", "kube-system"), "SRV", f"0 50 53 {svc('kube-dns', 'kube-system')}")], None, None),
    ("_dns._udp." + svc("kube-dns", "kube-system"), "SRV", NOERROR,
     [rr("_dns._udp." + svc("kube-dns", "kube-system"), "SRV", f"0 100 53 {svc('kube-dns', 'kube-system')}")],
     None, None),
    (svc("svcempty"), "A", NOERROR, [rr(svc("svcempty"), "A", "10.0.0.9")], None, None),
    (svc("web", "other"), "A", NOERROR, [rr(svc("web", "other"), "A", "10.0.1.1")], None, None),
    # endpoint names under a ClusterIP service
    ("ep1a." + svc("svc1"), "A", NOERROR, [rr("ep1a." + svc("svc1"), "A", "172.0.0.1")], None, None),
    ("ep1a." + svc("svc1"), "SRV", NOERROR, [rr("ep1a." + svc("svc1"), "SRV", f"0 100 80 ep1a.{svc('svc1')}")], None,
     [rr("ep1a." + svc("svc1"), "A", "172.0.0.1")]),
    ("bogus." + svc("svc1"), "A", NXDOMAIN, [], CL, None),
    # headless services: every ready endpoint, v4 and v6 slices
    (svc("hdls1"), "A", NOERROR, [rr(svc("hdls1"), "A", ip) for ip in
                                  ("172.0.0.2", "172.0.0.3", "172.0.0.4", "172.0.0.5", "172.0.0.7")], None, None),
    (svc("hdls1"), "AAAA", NOERROR,
     [rr(svc("hdls1"), "AAAA", "5678:abcd::1"), rr(svc("hdls1"), "AAAA", "5678:abcd::2")], None, None),
    ("172-0-0-2." + svc("hdls1"), "A", NOERROR, [rr("172-0-0-2." + svc("hdls1"), "A", "172.0.0.2")], None, None),
    ("dup-name." + svc("hdls1"), "A", NOERROR, [rr("dup-name." + svc("hdls1"), "A", "172.0.0.4"),
                                                rr("dup-name." + svc("hdls1"), "A", "172.0.0.5")], None, None),
    ("5678-abcd--1." + svc("hdls1"), "AAAA", NOERROR, [rr("5678-abcd--1." + svc("hdls1"), "AAAA", "5678:abcd::1")],
     None, None),
    ("5678-abcd--1." + svc("hdls1"), "A", NOERROR, [], CL, None),
    ("172-0-0-6." + svc("hdls1"), "A", NXDOMAIN, [], CL, None),  # not ready
    ("172-0-0-7." + svc("hdls1"), "A", NOERROR, [rr("172-0-0-7." + svc("hdls1"), "A", "172.0.0.7")], None, None),
    ("hdls1-pod-3." + svc("hdls1"), "A", NXDOMAIN, [], CL, None),  # pod names only with endpoint_pod_names
    ("bogusendpoint." + svc("hdls1"), "A", NXDOMAIN, [], CL, None),
    (svc("hdlsprtls"), "A", NOERROR, [rr(svc("hdlsprtls"), "A", "172.0.0.20")], None, None),
    (svc("hdlsprtls"), "SRV", NOERROR, [], CL, None),
    ("172-0-0-20." + svc("hdlsprtls"), "A", NOERROR, [rr("172-0-0-20." + svc("hdlsprtls"), "A", "172.0.0.20")],
     None, None),
    (svc("hdls-notready"), "A", NXDOMAIN, [], CL, None),
    ("dup-name." + svc("hdls1"), "SRV", NOERROR,
     [rr("dup-name." + svc("hdls1"), "SRV", f"0 50 80 dup-name.{svc('hdls1')}")], None,
     [rr("dup-name." + svc("hdls1"), "A", "172.0.0.4"), rr("dup-name." + svc("hdls1"), "A", "172.0.0.5")]),
    # ExternalName
    (svc("external"), "CNAME", NOERROR, [rr(svc("external"), "CNAME", "ext.interwebs.test.")], None, None),
    (svc("external"), "A", NOERROR, [rr(svc("external"), "CNAME", "ext.interwebs.test.")], None, None),
    (svc("external-to-service"), "A", NOERROR, [rr(svc("external-to-service"), "CNAME", svc("svc1")),
                                                rr(svc("svc1"), "A", "10.0.0.1")], None, None),
    (svc("external-to-service"), "AAAA", NOERROR, [], CL, None),  # the target has no AAAA: no CNAME either
    (svc("external"), "SRV", NOERROR, [], CL, None),
    (svc("external"), "TXT", NOERROR, [], CL, None),
    ("endpoint." + svc("external"), "A", NXDOMAIN, [], CL, None),
    ("_http._tcp." + svc("external"), "SRV", NXDOMAIN, [], CL, None),
    # PTR for cluster IPs and endpoints, v4 and v6
    (rev("10.0.0.1"), "PTR", NOERROR, [rr(rev("10.0.0.1"), "PTR", svc("svc1"))], None, None),
    (rev("10.0.0.3"), "PTR", NOERROR, [rr(rev("10.0.0.3"), "PTR", svc("svc-dual-stack"))], None, None),
    (rev("10::3"), "PTR", NOERROR, [rr(rev("10::3"), "PTR", svc("svc-dual-stack"))], None, None),
    (rev("1234:abcd::1"), "PTR", NOERROR, [rr(rev("1234:abcd::1"), "PTR", svc("svc6"))], None, None),
    (rev("10.96.0.10"), "PTR", NOERROR, [rr(rev("10.96.0.10"), "PTR", svc("kube-dns", "kube-system"))], None, None),
    (rev("172.0.0.2"), "PTR", NOERROR, [rr(rev("172.0.0.2"), "PTR", "172-0-0-2." + svc("hdls1"))], None, None),
    (rev("172.0.0.4"), "PTR", NOERROR, [rr(rev("172.0.0.4"), "PTR", "dup-name." + svc("hdls1"))], None, None),
    (rev("172.0.0.1"), "PTR", NOERROR, [rr(rev("172.0.0.1"), "PTR", "ep1a." + svc("svc1"))], None, None),
    (rev("5678:abcd::2"), "PTR", NOERROR, [rr(rev("5678:abcd::2"), "PTR", "5678-abcd--2." + svc("hdls1"))], None, None),
    (rev("172.0.0.6"), "PTR", NXDOMAIN, [], V4, None),  # not ready
    (rev("10.0.0.99"), "PTR", NXDOMAIN, [], V4, None),
    (rev("10.0.0.1"), "A", NXDOMAIN, [], V4, None),  # reverse zones hold PTRs only
    ("0.10.in-addr.arpa.", "PTR", NXDOMAIN, [], V4, None),
    # pods verified
    ("10-244-0-5.testns.pod.cluster.local.", "A", NOERROR,
     [rr("10-244-0-5.testns.pod.cluster.local.", "A", "10.244.0.5")], None, None),
    ("10-244-0-5.testns.pod.cluster.local.", "AAAA", NOERROR, [], CL, None),
    ("fd00--5.testns.pod.cluster.local.", "AAAA", NOERROR,
     [rr("fd00--5.testns.pod.cluster.local.", "AAAA", "fd00::5")], None, None),
    ("10-244-0-6.other.pod.cluster.local.", "A", NOERROR,
     [rr("10-244-0-6.other.pod.cluster.local.", "A", "10.244.0.6")], None, None),
    ("10-244-0-6.testns.pod.cluster.local.", "A", NXDOMAIN, [], CL, None),  # that pod is in another namespace
    ("1-2-3-4.testns.pod.cluster.local.", "A", NXDOMAIN, [], CL, None),
    ("testns.pod.cluster.local.", "A", NOERROR, [], CL, None),
    ("nons.pod.cluster.local.", "A", NXDOMAIN, [], CL, None),
    # the zone itself
    (CL, "SOA", NOERROR,
     ["cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. SERIAL 7200 1800 86400 5"], None, None),
    (CL, "NS", NOERROR, [rr(CL, "NS", "ns.dns.cluster.local.")], None, [rr("ns.dns.cluster.local.", "A", "127.0.0.1")]),
    (CL, "A", NOERROR, [], CL, None),
    (CL, "SRV", NOERROR, [], CL, None),
    (CL, "HINFO", NOERROR, [], CL, None),
    ("ns.dns.cluster.local.", "A", NOERROR, [rr("ns.dns.cluster.local.", "A", "127.0.0.1")], None, None),
    ("dns-version.cluster.local.", "TXT", NOERROR, [rr("dns-version.cluster.local.", "TXT", '"1.1.0"', ttl=28800)],
     None, None),
    ("dns-version.cluster.local.", "A", NXDOMAIN, [], CL, None),
    (V4, "SOA", NOERROR,
     ["in-addr.arpa. 5 IN SOA ns.dns.in-addr.arpa. hostmaster.in-addr.arpa. SERIAL 7200 1800 86400 5"], None, None),
    # NODATA versus NXDOMAIN
    ("svc.cluster.local.", "A", NOERROR, [], CL, None),
    ("svc.cluster.local.", "NS", NOERROR, [], CL, None),
    ("pod.cluster.local.", "A", NOERROR, [], CL, None),
    ("testns.svc.cluster.local.", "A", NOERROR, [], CL, None),
    ("testns.svc.cluster.local.", "NS", NOERROR, [], CL, None),
    ("testns.svc.cluster.local.", "TXT", NXDOMAIN, [], CL, None),  # CoreDNS: TXT needs records of another type
    (svc("svc1"), "TXT", NOERROR, [], CL, None),
    (svc("svc1"), "SOA", NOERROR, [], CL, None),
    (svc("svc1"), "CNAME", NOERROR, [], CL, None),
    ("nons.svc.cluster.local.", "A", NXDOMAIN, [], CL, None),
    (svc("svc1", "nons"), "A", NXDOMAIN, [], CL, None),  # a namespace that does not exist
    (svc("svc0"), "A", NXDOMAIN, [], CL, None),
    (svc("svc0"), "AAAA", NXDOMAIN, [], CL, None),
    (svc("svc0", "svc-nons"), "TXT", NXDOMAIN, [], CL, None),
    ("foo.cluster.local.", "A", NXDOMAIN, [], CL, None),
    ("foo.cluster.local.", "NS", NXDOMAIN, [], CL, None),
    ("foo.svc.cluster.local.", "NS", NXDOMAIN, [], CL, None),
    ("foo.cluster.local.", "SOA", NOERROR, [], CL, None),  # CoreDNS answers SOA below the apex with NODATA
    ("a.b.c." + svc("svc1"), "A", NXDOMAIN, [], CL, None),
    ("subdomain.subdomain." + svc("external"), "CNAME", NXDOMAIN, [], CL, None),
]


def _case_id(case) -> str:
    return f"{case[0]}-{case[1]}"


def check(msg, case) -> None:
    name, rdtype, rcode, answer, soa, additional = case
    assert msg.rcode() == rcode, f"{name} {rdtype}: {dns.rcode.to_text(msg.rcode())}"
    assert msg.flags & dns.flags.AA
    got = lines(msg.answer)
    if rdtype == "SOA" and answer:
        got = [" ".join(w if i != 6 else "SERIAL" for i, w in enumerate(line.split())) for line in got]
    assert got == sorted(answer)
    assert soa_zone(msg) == soa
    if soa:
        (rrset,) = msg.authority
        (record,) = rrset
        assert rrset.ttl == 5 and record.minimum == 5
        assert record.mname.to_text() == "ns.dns." + soa and record.rname.to_text() == "hostmaster." + soa
    if additional is not None:
        assert lines(msg.additional) == sorted(additional)


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_record(k8s, case):
    check(ask(k8s, case[0], case[1], use_edns=0, payload=4096), case)


TCP_CASES = [c for c in CASES if c[1] in ("SRV", "PTR")][:6] + [CASES[0]]


@pytest.mark.parametrize("case", TCP_CASES, ids=[_case_id(c) for c in TCP_CASES])
def test_record_over_tcp(k8s, case):
    check(ask(k8s, case[0], case[1], tcp=True), case)


def test_headless_srv_has_one_record_per_endpoint_name_and_its_addresses(k8s):
    name = "_http._tcp." + svc("hdls1")
    msg = ask(k8s, name, "SRV", tcp=True)
    targets = ["172-0-0-2", "172-0-0-3", "dup-name", "172-0-0-7", "5678-abcd--1", "5678-abcd--2"]
    # seven addresses share a weight of 100: 14 each, CoreDNS's rounding
    assert lines(msg.answer) == sorted(rr(name, "SRV", f"0 14 80 {t}.{svc('hdls1')}") for t in targets)
    assert lines(msg.additional) == sorted(
        [rr(f"{t}.{svc('hdls1')}", "A", f"172.0.0.{t[-1]}") for t in targets[:2]]
        + [rr(f"dup-name.{svc('hdls1')}", "A", "172.0.0.4"), rr(f"dup-name.{svc('hdls1')}", "A", "172.0.0.5"),
           rr(f"172-0-0-7.{svc('hdls1')}", "A", "172.0.0.7"),
           rr(f"5678-abcd--1.{svc('hdls1')}", "AAAA", "5678:abcd::1"),
           rr(f"5678-abcd--2.{svc('hdls1')}", "AAAA", "5678:abcd::2")])
    bare = ask(k8s, svc("hdls1"), "SRV", tcp=True)
    assert len(bare.answer[0]) == 6 and len(lines(bare.additional)) == 7


def test_big_answers_are_truncated_over_plain_udp(k8s):
    msg = ask(k8s, "_http._tcp." + svc("hdls1"), "SRV")
    assert msg.flags & dns.flags.TC


def test_cname_comes_before_its_target(k8s):
    msg = ask(k8s, svc("external-to-service"), "A")
    assert [rrset.rdtype for rrset in msg.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]


def test_question_case_is_kept_in_answers(k8s):
    name = "SVC1.TestNS.svc.Cluster.Local."
    msg = ask(k8s, name, "A")
    assert msg.answer[0].name.to_text() == name
    assert lines_nocase(msg.answer) == [rr(svc("svc1"), "A", "10.0.0.1").lower()]
    msg = ask(k8s, "Nope.TestNS.svc.CLUSTER.local.", "A")
    assert msg.rcode() == NXDOMAIN and soa_zone(msg) == "CLUSTER.local."
    msg = ask(k8s, "_HTTP._Tcp.Svc1.testns.svc.cluster.local.", "SRV", tcp=True)
    assert msg.answer[0].name.to_text() == "_HTTP._Tcp.Svc1.testns.svc.cluster.local."
    assert lines_nocase(msg.answer) == [rr("_http._tcp." + svc("svc1"), "SRV", f"0 100 80 {svc('svc1')}").lower()]
    msg = ask(k8s, "External-To-Service.testns.svc.cluster.local.", "A")
    assert msg.answer[0].name.to_text() == "External-To-Service.testns.svc.cluster.local."
    assert msg.question[0].name.to_text() == "External-To-Service.testns.svc.cluster.local."


def test_ports_written_without_underscores_or_as_wildcards(k8s):
    expected = [f"0 100 9090 {svc('svc-ports')}"]
    for spelling in ("metrics.tcp", "_metrics.tcp", "metrics._tcp", "_metrics._TCP"):
        msg = ask(k8s, f"{spelling}.{svc('svc-ports')}", "SRV")
        assert [r.to_text() for rrset in msg.answer for r in rrset] == expected, spelling
    wildcard = ask(k8s, f"_._tcp.{svc('svc-ports')}", "SRV")
    assert sorted(r.port for rrset in wildcard.answer for r in rrset) == [8080, 9090]
    assert ask(k8s, f"metrics.udp.{svc('svc-ports')}", "SRV").rcode() == NXDOMAIN


def test_pod_names_ignore_labels_in_front_as_coredns_does(k8s):
    msg = ask(k8s, "x.10-244-0-5.testns.pod.cluster.local.", "A")
    assert [r.to_text() for rrset in msg.answer for r in rrset] == ["10.244.0.5"]


def test_fallthrough_passes_missing_names_of_its_zones_only(k8s):
    missing6 = rev("2001:db8::1")
    msg = ask(k8s, missing6, "PTR")  # whoami, the next plugin, answers
    assert msg.rcode() == NOERROR and not msg.answer
    assert any(rrset.name.to_text().startswith("_udp.") for rrset in msg.additional)
    msg = ask(k8s, rev("10.9.9.9"), "PTR")  # in-addr.arpa does not fall through
    assert msg.rcode() == NXDOMAIN and soa_zone(msg) == V4
    # outside the plugin's zones every query goes on
    msg = ask(k8s, "example.org.", "A")
    assert msg.rcode() == NOERROR and msg.additional


def test_zone_transfers_are_refused(k8s):
    query = dns.message.make_query(CL, "AXFR")
    msg = dns.query.tcp(query, "127.0.0.1", port=k8s.port, timeout=3)
    assert msg.rcode() == REFUSED


def test_soa_serial_is_the_time_of_the_last_change(k8s):
    msg = ask(k8s, CL, "SOA")
    serial = msg.answer[0][0].serial
    assert abs(serial - time.time()) < 24 * 3600 * 365  # a Unix time, as CoreDNS's
    assert ask(k8s, svc("svc0"), "A").authority[0][0].serial == serial


# ---------------------------------------------------------------- options, each on a server of its own


def values(srv, name, rdtype="A"):
    msg = ask(srv, name, rdtype)
    return msg.rcode(), sorted(r.to_text() for rrset in msg.answer for r in rrset)


def test_ttl_option_sets_every_ttl_and_the_soa_minimum(source):
    srv = source("  ttl 30")
    msg = ask(srv, svc("svc1"), "A")
    assert msg.answer[0].ttl == 30
    neg = ask(srv, svc("svc0"), "A")
    assert neg.authority[0].ttl == 30 and neg.authority[0][0].minimum == 30
    capped = ask(source("  ttl 3600"), svc("svc0"), "A")
    assert capped.authority[0].ttl == 300 and capped.authority[0][0].minimum == 3600  # SOA TTL is capped at 300
    zero = source("  ttl 0")
    assert ask(zero, svc("svc1"), "A").answer[0].ttl == 0
    assert ask(zero, "dns-version.cluster.local.", "TXT").answer[0].ttl == 28800


def test_pods_insecure_answers_any_address_in_an_existing_namespace(source):
    srv = source("  pods insecure")
    assert values(srv, "1-2-3-4.testns.pod.cluster.local.") == (NOERROR, ["1.2.3.4"])
    assert values(srv, "fd00--1.testns.pod.cluster.local.", "AAAA") == (NOERROR, ["fd00::1"])
    assert values(srv, "fd00--1.testns.pod.cluster.local.") == (NOERROR, [])
    assert values(srv, "1-2-3-4.nons.pod.cluster.local.") == (NXDOMAIN, [])
    assert values(srv, "not-an-ip.testns.pod.cluster.local.") == (NXDOMAIN, [])
    assert values(srv, "1-2-3-400.testns.pod.cluster.local.") == (NXDOMAIN, [])
    assert values(srv, "testns.pod.cluster.local.") == (NOERROR, [])


def test_pods_disabled_answers_nxdomain_below_pod(source):
    srv = source()
    assert values(srv, "10-244-0-5.testns.pod.cluster.local.") == (NXDOMAIN, [])
    assert values(srv, "testns.pod.cluster.local.") == (NXDOMAIN, [])
    assert values(srv, "pod.cluster.local.") == (NOERROR, [])


def test_fallthrough_without_zones_covers_every_zone(source):
    srv = source("  fallthrough")
    msg = ask(srv, svc("svc0"), "A")
    assert msg.rcode() == NOERROR and not msg.answer and msg.additional  # whoami
    assert values(srv, svc("svc1")) == (NOERROR, ["10.0.0.1"])
    assert values(srv, svc("svc1"), "AAAA") == (NOERROR, [])  # NODATA never falls through


def test_namespaces_option_limits_names_and_ptrs(source):
    srv = source("  namespaces testns")
    assert values(srv, svc("svc1")) == (NOERROR, ["10.0.0.1"])
    assert values(srv, svc("web", "other")) == (NXDOMAIN, [])
    assert values(srv, "other.svc.cluster.local.") == (NXDOMAIN, [])
    assert values(srv, rev("10.0.1.1"), "PTR") == (NXDOMAIN, [])
    assert values(srv, rev("10.0.0.1"), "PTR") == (NOERROR, [svc("svc1")])


def test_namespace_labels_option(source):
    srv = source("  namespace_labels team=b")
    assert values(srv, svc("web", "other")) == (NOERROR, ["10.0.1.1"])
    assert values(srv, svc("svc1")) == (NXDOMAIN, [])


def test_labels_option_filters_services_and_slices(source):
    srv = source("  labels app in (svc1, web)")
    assert values(srv, svc("svc1")) == (NOERROR, ["10.0.0.1"])
    assert values(srv, svc("web", "other")) == (NOERROR, ["10.0.1.1"])
    assert values(srv, svc("svc6"), "AAAA") == (NXDOMAIN, [])
    assert values(srv, "ep1a." + svc("svc1")) == (NXDOMAIN, [])  # its slice has no app label


def test_noendpoints_drops_headless_and_endpoint_names(source):
    srv = source("  noendpoints")
    assert values(srv, svc("svc1")) == (NOERROR, ["10.0.0.1"])
    assert values(srv, svc("hdls1")) == (NXDOMAIN, [])
    assert values(srv, "ep1a." + svc("svc1")) == (NXDOMAIN, [])
    assert values(srv, rev("172.0.0.2"), "PTR") == (NXDOMAIN, [])


def test_ignore_empty_service(source):
    srv = source("  ignore empty_service")
    assert values(srv, svc("svcempty")) == (NXDOMAIN, [])
    assert values(srv, svc("svc6"), "AAAA") == (NXDOMAIN, [])  # no endpoints at all
    assert values(srv, svc("svc1")) == (NOERROR, ["10.0.0.1"])
    assert values(srv, svc("hdls1"))[0] == NOERROR


def test_endpoint_pod_names(source):
    srv = source("  endpoint_pod_names")
    assert values(srv, "hdls1-pod-3." + svc("hdls1")) == (NOERROR, ["172.0.0.3"])
    assert values(srv, "172-0-0-3." + svc("hdls1")) == (NXDOMAIN, [])
    assert values(srv, "dup-name." + svc("hdls1")) == (NOERROR, ["172.0.0.4", "172.0.0.5"])  # hostnames win
    assert values(srv, rev("172.0.0.3"), "PTR") == (NOERROR, ["hdls1-pod-3." + svc("hdls1")])


def test_zones_default_to_the_server_block_and_ptr_targets_use_the_first_zone(source, tmp_path):
    srv = source(zones="example.org cluster.local in-addr.arpa")
    assert values(srv, "svc1.testns.svc.example.org.") == (NOERROR, ["10.0.0.1"])
    assert values(srv, svc("svc1")) == (NOERROR, ["10.0.0.1"])
    assert values(srv, rev("10.0.0.1"), "PTR") == (NOERROR, ["svc1.testns.svc.example.org."])
    assert values(srv, rev("1234:abcd::1"), "PTR")[1] == []  # ip6.arpa is not one of its zones: whoami
    text = corefile("manifests " + write_manifests(tmp_path / "c.yaml", cluster()), zones="").replace(
        ".:0 {", "cluster.local:0 {", 1).replace(" whoami\n", "")
    block = ServerThread(text).start()
    try:
        assert values(block, svc("svc1")) == (NOERROR, ["10.0.0.1"])
        assert values(block, "example.org.")[0] == REFUSED
    finally:
        block.stop()


# ---------------------------------------------------------------- start-up and setup errors


def ready_status(srv: ServerThread) -> int:
    port = srv.instance.http[("127.0.0.1", 0)].bound_port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/ready")
        return conn.getresponse().status
    finally:
        conn.close()


def test_servfail_until_the_first_sync_then_answers(tmp_path):
    from pydns.testing.fakeapi import FakeApiServer

    api = FakeApiServer(cluster())
    api.start()
    try:
        api.pause()
        line = f"kubeconfig {api.kubeconfig(str(tmp_path / 'kubeconfig'))}"
        srv = ServerThread(corefile(line, "  startup_timeout 300ms\n  fallthrough ip6.arpa",
                                    after="ready 127.0.0.1:0\n whoami")).start()
        try:
            msg = ask(srv, svc("svc1"), "A")
            assert msg.rcode() == SERVFAIL and soa_zone(msg) == CL
            assert ask(srv, CL, "SOA").rcode() == NOERROR  # the apex is known before any sync
            assert ask(srv, rev("2001:db8::1"), "PTR").rcode() == NOERROR  # fallthrough zones go on
            assert ready_status(srv) == 503
            api.resume()
            deadline = time.monotonic() + 10
            while values(srv, svc("svc1")) != (NOERROR, ["10.0.0.1"]) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert values(srv, svc("svc1")) == (NOERROR, ["10.0.0.1"])
            assert ready_status(srv) == 200
        finally:
            srv.stop()
    finally:
        api.resume()
        api.stop()


@pytest.mark.parametrize("namespaces", ["  namespaces testns", ""])
def test_ptr_with_namespaces_set_follows_the_namespace_object_as_coredns(tmp_path, namespaces):
    """CoreDNS checks that a PTR's namespace is exposed (and present) only when ``namespaces`` is set."""
    from pydns.testing.fakeapi import FakeApiServer

    api = FakeApiServer(cluster())
    api.start()
    try:
        srv = ServerThread(corefile(f"kubeconfig {api.kubeconfig(str(tmp_path / 'kubeconfig'))}", namespaces)).start()
        try:
            assert values(srv, rev("10.0.0.1"), "PTR") == (NOERROR, [svc("svc1")])
            assert values(srv, rev("172.0.0.1"), "PTR") == (NOERROR, ["ep1a." + svc("svc1")])
            gone = api.get("Namespace", None, "testns")
            api.delete("Namespace", None, "testns")
            deadline = time.monotonic() + 10
            while values(srv, svc("svc1"))[0] != NXDOMAIN and time.monotonic() < deadline:
                time.sleep(0.05)
            assert values(srv, svc("svc1")) == (NXDOMAIN, [])
            if namespaces:
                assert values(srv, rev("10.0.0.1"), "PTR") == (NXDOMAIN, [])
                assert values(srv, rev("172.0.0.1"), "PTR") == (NXDOMAIN, [])
            else:
                assert values(srv, rev("10.0.0.1"), "PTR") == (NOERROR, [svc("svc1")])
                assert values(srv, rev("172.0.0.1"), "PTR") == (NOERROR, ["ep1a." + svc("svc1")])
            gone["metadata"].pop("resourceVersion", None)
            api.create(gone)
            deadline = time.monotonic() + 10
            while values(srv, rev("10.0.0.1"), "PTR")[0] != NOERROR and time.monotonic() < deadline:
                time.sleep(0.05)
            assert values(srv, rev("10.0.0.1"), "PTR") == (NOERROR, [svc("svc1")])
        finally:
            srv.stop()
    finally:
        api.stop()


SETUP_ERRORS = [
    ("ttl 3601", "ttl must be in range [0, 3600]: 3601"),
    ("ttl -1", "ttl must be in range [0, 3600]: -1"),
    ("ttl x", "ttl must be an integer"),
    ("pods sometimes", "wrong value for pods: sometimes"),
    ("pods", "wrong argument count"),
    ("ignore everything", "unable to parse ignore value: 'everything'"),
    ("labels app >> web", "unable to parse label selector value"),
    ("namespace_labels a in b", "unable to parse namespace_label selector value"),
    ("namespaces a\n  namespace_labels team=a", "namespaces and namespace_labels cannot both be set"),
    ("startup_timeout soon", "failed to parse startup_timeout: soon"),
    ("apiserver_qps -1", "apiserver_qps must be >= 0"),
    ("apiserver_burst many", 'invalid apiserver_burst "many"'),
    ("tls a b", "wrong argument count"),
    ("kubeconfig", "wrong argument count"),
    ("noendpoints yes", "wrong argument count"),
    ("resyncperiod 30s", "unknown property 'resyncperiod'"),
    ("zonal", "option 'zonal' is not supported"),
    ("multicluster clusterset.local", "option 'multicluster' is not supported"),
    ("apiserver_max_inflight -1", "apiserver_max_inflight must be >= 0"),
    ("apiserver_max_inflight some", 'invalid apiserver_max_inflight "some"'),
    ("apiserver_max_inflight 5", "'apiserver_max_inflight' cannot be combined with 'manifests'"),
    ("endpoint http://127.0.0.1:1", "'endpoint' cannot be combined with 'manifests'"),
]


@pytest.mark.parametrize("option,message", SETUP_ERRORS, ids=[e[0] for e in SETUP_ERRORS])
def test_bad_options_stop_setup_with_a_clear_error(tmp_path, option, message):
    text = corefile(f"manifests {write_manifests(tmp_path / 'c.yaml', [])}", f"  {option}")
    with pytest.raises(CorefileError) as err:
        build(parse(text, "Corefile"), 53, Instance(None, text))
    assert message in str(err.value) and "plugin/kubernetes: " in str(err.value)
    assert err.value.line is not None and err.value.line >= 4


def test_a_connection_that_cannot_be_configured_ends_start_up(tmp_path):
    from pydns.testing.fakeapi import FakeApiServer

    path = FakeApiServer().kubeconfig(str(tmp_path / "kubeconfig"))
    with pytest.raises(CorefileError) as err:
        ServerThread(corefile(f"kubeconfig {path} no-such-context")).start()
    assert "plugin/kubernetes: unable to load kubeconfig" in str(err.value) and "no-such-context" in str(err.value)
    assert err.value.line == 3


def test_setup_errors_for_zones_files_and_kubeconfig(tmp_path):
    cases = [
        (corefile("manifests /nonexistent/cluster.yaml"), "manifests: no such file or directory"),
        (corefile("manifests x.yaml", zones="in-addr.arpa"), "non-reverse zone name must be used"),
        (corefile(f"kubeconfig {tmp_path / 'missing'}"), "unable to load kubeconfig"),
        (".:0 {\n kubernetes\n kubernetes\n}\n", "can only be used once"),
    ]
    for text, message in cases:
        with pytest.raises(CorefileError) as err:
            build(parse(text, "Corefile"), 53, Instance(None, text))
        assert message in str(err.value), text
