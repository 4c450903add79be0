"""The pytest fixture that test authors use: pydns serving a cluster they describe and change."""

from __future__ import annotations

import dns.rcode
import dns.resolver
import pytest

WEB = {
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {"clusterIP": "10.96.5.5", "clusterIPs": ["10.96.5.5"],
             "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
}
SHOP = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}

DB_YAML = """
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: None
  ports: [{name: pg, port: 5432, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  namespace: shop
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
ports: [{name: pg, port: 5432, protocol: TCP}]
endpoints:
- addresses: [10.244.0.7]
  hostname: db-0
  conditions: {ready: true}
"""


@pytest.mark.pydns(objects=[SHOP, WEB])
def test_serves_the_objects_of_the_marker(pydns_cluster):
    answer = pydns_cluster.resolver.resolve("web.shop.svc.cluster.local", "A")
    assert [r.address for r in answer] == ["10.96.5.5"]
    srv = pydns_cluster.resolver.resolve("_http._tcp.web.shop.svc.cluster.local", "SRV")
    assert [(r.port, r.target.to_text()) for r in srv] == [(80, "web.shop.svc.cluster.local.")]


@pytest.mark.pydns(objects=[SHOP])
def test_objects_change_while_the_test_runs(pydns_cluster):
    with pytest.raises(dns.resolver.NXDOMAIN):
        pydns_cluster.resolver.resolve("web.shop.svc.cluster.local", "A")
    pydns_cluster.apply(WEB)
    assert pydns_cluster.resolver.resolve("web.shop.svc.cluster.local", "A")[0].address == "10.96.5.5"
    pydns_cluster.apply({**WEB, "spec": {**WEB["spec"], "clusterIP": "10.96.5.6", "clusterIPs": ["10.96.5.6"]}})
    assert pydns_cluster.resolver.resolve("web.shop.svc.cluster.local", "A")[0].address == "10.96.5.6"
    pydns_cluster.delete("Service", "shop", "web")
    reply = pydns_cluster.query("web.shop.svc.cluster.local", "A", tcp=True)
    assert reply.rcode() == dns.rcode.NXDOMAIN


@pytest.mark.pydns(objects=[SHOP])
def test_yaml_text_and_headless_services(pydns_cluster):
    pydns_cluster.apply(DB_YAML)
    assert pydns_cluster.resolver.resolve("db-0.db.shop.svc.cluster.local", "A")[0].address == "10.244.0.7"
    pydns_cluster.delete(DB_YAML)
    with pytest.raises(dns.resolver.NXDOMAIN):
        pydns_cluster.resolver.resolve("db.shop.svc.cluster.local", "A")


def test_manifest_files_and_another_zone(pydns_factory, tmp_path):
    (tmp_path / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
    (tmp_path / "db.yaml").write_text(DB_YAML)
    cluster = pydns_factory(manifests=[str(tmp_path)], zone="corp.internal")
    assert cluster.resolver.resolve("db-0.db.shop.svc.corp.internal", "A")[0].address == "10.244.0.7"
    assert cluster.address[0] == "127.0.0.1" and cluster.port > 0
