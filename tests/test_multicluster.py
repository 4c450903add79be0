"""multicluster: KEP-1645 ServiceImports under clusterset.local, from manifests and from the API.

Tables over real sockets, as CoreDNS 1.14.7 answers a ``multicluster`` zone: ClusterSetIP
A/AAAA and SRV, headless imports by endpoint (``hostname.clusterid.svc.ns.svc.ZONE``), the
EndpointSlices labelled ``multicluster.kubernetes.io/service-name`` as their endpoints.
"""

from __future__ import annotations

import dns.rcode
import pytest

from tests.k8s_sources import kind  # noqa: F401 (the fixture: each source in turn)
from tests.k8s_sources import (NOERROR, NXDOMAIN, answers_eventually, ask, rr, server_fixture, serving, setup_error,
                                table_test)
from tests.kube_cluster import endpoint, endpoint_slice, namespace, service

pytestmark = pytest.mark.timeout(90)

CS = "clusterset.local."


def service_import(name, ips=(), ports=(("sql", 5432, "TCP"),), headless=False, ns="default"):
    spec = {"type": "Headless" if headless else "ClusterSetIP",
            "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports]}
    if ips:
        spec["ips"] = list(ips)
    return {"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def import_slice(name, imported, cluster, endpoints, ports=(("redis", 6379, "TCP"),), ns="default"):
    sl = endpoint_slice(name, imported, endpoints, ns=ns, ports=ports)
    sl["metadata"]["labels"] = {"multicluster.kubernetes.io/service-name": imported,
                                "multicluster.kubernetes.io/source-cluster": cluster}
    return sl


CLUSTER = [
    namespace("default"),
    service_import("db", ips=("10.9.0.1", "fd00::9")),
    service_import("cache", ports=(("redis", 6379, "TCP"),), headless=True),
    import_slice("cache-east", "cache", "east", [endpoint("10.2.0.1", hostname="r0"), endpoint("10.2.0.2"),
                                                 endpoint("10.2.0.9", ready=False)]),
    import_slice("cache-west", "cache", "west", [endpoint("10.3.0.1", hostname="r0")]),
    service_import("noports", ips=("10.9.0.2",), ports=()),
    service_import("noips", ports=(("http", 80, "TCP"),)),
    service("web", "default", ips=("10.0.0.60",)),
    endpoint_slice("web-1", "web", [endpoint("10.4.0.1")], ns="default"),
]

COREFILE = """.:0 {
  bind 127.0.0.1
  kubernetes cluster.local clusterset.local {
    {source}
    multicluster clusterset.local
    zonal
  }
}
"""


mc = server_fixture("mc", CLUSTER, COREFILE)


DB = "db.default.svc." + CS
CACHE = "cache.default.svc." + CS
CACHE_SRV = [f"0 33 6379 r0.east.{CACHE}", f"0 33 6379 10-2-0-2.east.{CACHE}", f"0 33 6379 r0.west.{CACHE}"]

# (name, type, rcode, answer, zone of the SOA in authority or None, additional or None: not checked)
CASES = [
    (DB, "A", NOERROR, [rr(DB, "A", "10.9.0.1")], None, None),
    (DB, "AAAA", NOERROR, [rr(DB, "AAAA", "fd00::9")], None, None),
    (DB, "SRV", NOERROR, [rr(DB, "SRV", f"0 50 5432 {DB}")], None,
     [rr(DB, "A", "10.9.0.1"), rr(DB, "AAAA", "fd00::9")]),
    ("_sql._tcp." + DB, "SRV", NOERROR, [rr("_sql._tcp." + DB, "SRV", f"0 50 5432 {DB}")], None, None),
    ("_http._tcp." + DB, "SRV", NXDOMAIN, [], CS, None),
    (DB, "TXT", NOERROR, [], CS, None),
    (CACHE, "A", NOERROR, [rr(CACHE, "A", ip) for ip in ("10.2.0.1", "10.2.0.2", "10.3.0.1")], None, None),
    (CACHE, "SRV", NOERROR, [rr(CACHE, "SRV", d) for d in CACHE_SRV], None,
     [rr(f"r0.east.{CACHE}", "A", "10.2.0.1"), rr(f"10-2-0-2.east.{CACHE}", "A", "10.2.0.2"),
      rr(f"r0.west.{CACHE}", "A", "10.3.0.1")]),
    ("_redis._tcp." + CACHE, "SRV", NOERROR, [rr("_redis._tcp." + CACHE, "SRV", d) for d in CACHE_SRV], None, None),
    # an endpoint is named in the cluster it comes from
    ("r0.east." + CACHE, "A", NOERROR, [rr("r0.east." + CACHE, "A", "10.2.0.1")], None, None),
    ("r0.west." + CACHE, "A", NOERROR, [rr("r0.west." + CACHE, "A", "10.3.0.1")], None, None),
    ("10-2-0-2.east." + CACHE, "A", NOERROR, [rr("10-2-0-2.east." + CACHE, "A", "10.2.0.2")], None, None),
    ("R0.EAST." + CACHE, "A", NOERROR, [rr("R0.EAST." + CACHE, "A", "10.2.0.1")], None, None),
    ("r0.north." + CACHE, "A", NXDOMAIN, [], CS, None),
    ("r0." + CACHE, "A", NXDOMAIN, [], CS, None),
    ("10-2-0-9.east." + CACHE, "A", NXDOMAIN, [], CS, None),  # not ready
    ("noports.default.svc." + CS, "A", NXDOMAIN, [], CS, None),
    ("noips.default.svc." + CS, "A", NOERROR, [], CS, None),
    ("missing.default.svc." + CS, "A", NXDOMAIN, [], CS, None),
    ("default.svc." + CS, "A", NOERROR, [], CS, None),
    ("nons.svc." + CS, "A", NXDOMAIN, [], CS, None),
    ("a.b.c.d." + CACHE, "A", NXDOMAIN, [], CS, None),
    # zonal names are not defined in a multicluster zone
    ("us-east-1a.pin._zone." + CACHE, "A", NXDOMAIN, [], CS, None),
    # Services are the cluster zone's, ServiceImports the clusterset zone's
    ("web.default.svc." + CS, "A", NXDOMAIN, [], CS, None),
    ("web.default.svc.cluster.local.", "A", NOERROR, [rr("web.default.svc.cluster.local.", "A", "10.0.0.60")], None,
     None),
    ("db.default.svc.cluster.local.", "A", NXDOMAIN, [], "cluster.local.", None),
    ("cache.default.svc.cluster.local.", "A", NXDOMAIN, [], "cluster.local.", None),
]


test_clusterset_names = table_test("mc", CASES)
test_clusterset_names_over_tcp = table_test("mc", [c for c in CASES if c[1] == "SRV"], tcp=True)


def test_the_clusterset_zone_has_its_apex(mc):
    msg = mc.query(CS, "SOA")
    assert msg.rcode() == NOERROR and [r.rdtype for r in msg.answer] == [dns.rdatatype.SOA]
    assert ask(mc, "dns-version." + CS, "TXT") == (NOERROR, [f'dns-version.{CS} 28800 IN TXT "1.1.0"'])


def test_imports_and_their_slices_follow_changes(mc):
    cluster = mc.cluster
    name = "queue.default.svc." + CS
    cluster.apply(service_import("queue", ips=("10.9.0.3",), ports=(("amqp", 5672, "TCP"),)))
    answers_eventually(mc, name, "A", (NOERROR, [rr(name, "A", "10.9.0.3")]))
    cluster.apply(import_slice("cache-south", "cache", "south", [endpoint("10.5.0.1", hostname="r0")]))
    south = "r0.south." + CACHE
    answers_eventually(mc, south, "A", (NOERROR, [rr(south, "A", "10.5.0.1")]))
    assert len(ask(mc, CACHE, "A")[1]) == 4


def test_ignore_empty_service_hides_clusterset_ips_without_endpoints(kind, tmp_path):
    corefile = COREFILE.replace("    zonal\n", "    ignore empty_service\n")
    objects = CLUSTER + [import_slice("db-east", "db", "east", [endpoint("10.6.0.1", ready=False)])]
    with serving(kind, objects, tmp_path, corefile) as srv:
        assert ask(srv, DB, "A") == (NXDOMAIN, [])
        assert len(ask(srv, CACHE, "A")[1]) == 3  # headless imports are not affected
        srv.cluster.apply(import_slice("db-east", "db", "east", [endpoint("10.6.0.1")]))
        answers_eventually(srv, DB, "A", (NOERROR, [rr(DB, "A", "10.9.0.1")]))


def test_multicluster_zone_must_be_served(tmp_path):
    corefile = ".:0 {\n  kubernetes cluster.local {\n    multicluster clusterset.local\n  }\n}\n"
    error = setup_error(tmp_path, corefile)
    assert error == (f"{tmp_path / 'Corefile'}:3: plugin/kubernetes: is not authoritative for the multicluster "
                     f"zone clusterset.local. (authoritative zones: cluster.local.)")
