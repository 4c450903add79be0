"""zonal: zone-scoped names of headless services, from manifests and from the API.

``TOPOLOGY-ZONE.pin._zone.svc.ns.svc.ZONE`` (that zone's endpoints only) and
``TOPOLOGY-ZONE.prefer._zone...`` (that zone's, else all), as CoreDNS 1.14.7 answers them,
over real sockets.
"""

from __future__ import annotations

import pytest

from tests.k8s_sources import kind  # noqa: F401 (the fixture: each source in turn)
from tests.k8s_sources import NOERROR, NXDOMAIN, answers_eventually, ask, rr, server_fixture, setup_error, table_test
from tests.kube_cluster import endpoint, endpoint_slice, external, headless, namespace, service

pytestmark = pytest.mark.timeout(90)

CL = "cluster.local."


def zoned(ip, zone=None, hostname=None):
    ep = endpoint(ip, hostname=hostname)
    if zone:
        ep["zone"] = zone
    return ep


V4 = [zoned("10.1.0.1", "us-east-1a", hostname="a"), zoned("10.1.0.2", "us-east-1a"), zoned("10.1.0.3", "us-east-1b"),
      zoned("10.1.0.4"), zoned("10.1.0.5", "Corp.Example.com")]

CLUSTER = [
    namespace("default"),
    headless("db", "default"),
    endpoint_slice("db-v4", "db", V4, ns="default"),
    endpoint_slice("db-v6", "db", [zoned("fd00::1", "us-east-1a")], ns="default", family="IPv6"),
    headless("empty", "default"),
    service("web", "default", ips=("10.0.0.70",)),
    endpoint_slice("web-1", "web", [zoned("10.2.0.1", "us-east-1a")], ns="default"),
    external("ext", "db.default.svc.cluster.local", ns="default"),
]

COREFILE = """.:0 {{
  bind 127.0.0.1
  kubernetes cluster.local {{
    {{source}}
{options}
  }}
}}
"""


zonal = server_fixture("zonal", CLUSTER, COREFILE.format(options="    zonal"))
stock = server_fixture("stock", CLUSTER, COREFILE.format(options=""), "Without the zonal option.")


DB = "db.default.svc." + CL
PIN_A = "us-east-1a.pin._zone." + DB
ALL_V4 = ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5"]

# (name, type, rcode, answer, zone of the SOA in authority or None, additional or None: not checked)
CASES = [
    (PIN_A, "A", NOERROR, [rr(PIN_A, "A", "10.1.0.1"), rr(PIN_A, "A", "10.1.0.2")], None, None),
    (PIN_A, "AAAA", NOERROR, [rr(PIN_A, "AAAA", "fd00::1")], None, None),
    # SRV and its glue are zone-filtered too; targets are the endpoints' own names
    (PIN_A, "SRV", NOERROR, [rr(PIN_A, "SRV", f"0 33 80 {t}.{DB}") for t in ("a", "10-1-0-2", "fd00--1")], None,
     [rr(f"a.{DB}", "A", "10.1.0.1"), rr(f"10-1-0-2.{DB}", "A", "10.1.0.2"), rr(f"fd00--1.{DB}", "AAAA", "fd00::1")]),
    ("US-EAST-1A.pin._zone." + DB, "A", NOERROR,
     [rr("US-EAST-1A.pin._zone." + DB, "A", "10.1.0.1"), rr("US-EAST-1A.pin._zone." + DB, "A", "10.1.0.2")], None,
     None),
    ("us-east-1b.pin._zone." + DB, "A", NOERROR, [rr("us-east-1b.pin._zone." + DB, "A", "10.1.0.3")], None, None),
    ("us-east-1b.prefer._zone." + DB, "A", NOERROR, [rr("us-east-1b.prefer._zone." + DB, "A", "10.1.0.3")], None,
     None),
    # zone values may hold dots: every label left of the directive
    ("corp.example.com.pin._zone." + DB, "A", NOERROR, [rr("corp.example.com.pin._zone." + DB, "A", "10.1.0.5")],
     None, None),
    # an empty zone: pin is NODATA, prefer widens to the whole service
    ("us-east-1c.pin._zone." + DB, "A", NOERROR, [], CL, None),
    ("us-east-1c.prefer._zone." + DB, "A", NOERROR, [rr("us-east-1c.prefer._zone." + DB, "A", ip) for ip in ALL_V4],
     None, None),
    (PIN_A, "TXT", NOERROR, [], CL, None),
    (PIN_A, "PTR", NOERROR, [], CL, None),
    ("us-east-1a.pin._zone.empty.default.svc." + CL, "A", NOERROR, [], CL, None),
    ("us-east-1a.nearest._zone." + DB, "A", NXDOMAIN, [], CL, None),
    ("us-east-1a.pin.zone." + DB, "A", NXDOMAIN, [], CL, None),
    ("pin._zone." + DB, "A", NXDOMAIN, [], CL, None),
    ("us-east-1a.pin._zone.web.default.svc." + CL, "A", NXDOMAIN, [], CL, None),
    ("us-east-1a.pin._zone.ext.default.svc." + CL, "A", NXDOMAIN, [], CL, None),
    ("us-east-1a.pin._zone.missing.default.svc." + CL, "A", NXDOMAIN, [], CL, None),
    ("us-east-1a.pin._zone.db.nons.svc." + CL, "A", NXDOMAIN, [], CL, None),
    # plain names are not affected
    (DB, "A", NOERROR, [rr(DB, "A", ip) for ip in ALL_V4], None, None),
    ("empty.default.svc." + CL, "A", NXDOMAIN, [], CL, None),
]


test_zonal_names = table_test("zonal", CASES)
test_zonal_names_over_tcp = table_test("zonal", [c for c in CASES if c[1] == "SRV"], tcp=True)


def test_without_the_option_zonal_names_do_not_exist(stock):
    assert ask(stock, PIN_A, "A") == (NXDOMAIN, [])
    assert ask(stock, "us-east-1c.prefer._zone." + DB, "A") == (NXDOMAIN, [])
    assert len(ask(stock, DB, "A")[1]) == 5


def test_endpoints_moving_zone_are_followed(zonal):
    moved = [zoned("10.1.0.3", "us-east-1a") if ep["addresses"] == ["10.1.0.3"] else ep for ep in V4]
    zonal.cluster.apply(endpoint_slice("db-v4", "db", moved, ns="default"))
    expected = (NOERROR, [rr(PIN_A, "A", ip) for ip in ("10.1.0.1", "10.1.0.2", "10.1.0.3")])
    answers_eventually(zonal, PIN_A, "A", expected)
    assert ask(zonal, "us-east-1b.pin._zone." + DB, "A") == (NOERROR, [])


@pytest.mark.parametrize("options, line, message", [
    ("    zonal on", 5, "plugin/kubernetes: wrong argument count or unexpected line ending after 'on'"),
    ("    zonal\n    noendpoints", 5, "plugin/kubernetes: zonal requires the endpoint cache; remove noendpoints"),
])
def test_setup_errors_name_file_and_line(tmp_path, options, line, message):
    manifests = tmp_path / "c.yaml"
    manifests.write_text("")
    error = setup_error(tmp_path, COREFILE.format(options=options).replace("{source}", f"manifests {manifests}"))
    assert error == f"{tmp_path / 'Corefile'}:{line}: {message}"
