"""The kubernetes plugin's manifests source: files and folders, edits, and the objects it derives."""

from __future__ import annotations

import http.client
import json
import logging
import os
import time
from datetime import datetime, timezone

import dns.rcode
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pydns.corefile import parse
from pydns.demo import CLUSTER as DEMO_CLUSTER, demo_corefile
from pydns.testing import ServerThread
from tests.kube_cluster import endpoint, endpoint_slice, headless, namespace, pod
from tests.kube_cluster import service as _service

pytestmark = pytest.mark.timeout(60)

NOERROR, NXDOMAIN = dns.rcode.NOERROR, dns.rcode.NXDOMAIN
PICKUP = 2.0  # edits must be served within this many seconds


def service(name: str, ns: str = "default", **kw) -> dict:
    return _service(name, ns, **kw)


def svc(name: str, ns: str = "default") -> str:
    return f"{name}.{ns}.svc.cluster.local."


def values(srv: ServerThread, name: str, rdtype: str = "A"):
    msg = srv.query(name, rdtype, tcp=True)
    return msg.rcode(), sorted(r.to_text() for rrset in msg.answer for r in rrset)


def dump(path, objects) -> None:
    """Write a file the way an editor does: a new file renamed over the old one."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        fh.write(yaml.safe_dump_all(objects))
    os.replace(tmp, path)


def served_within(srv: ServerThread, name: str, expected, rdtype: str = "A", seconds: float = PICKUP) -> float:
    """Seconds until the name answers ``expected``; fails after ``seconds``."""
    start = time.monotonic()
    while True:
        got = values(srv, name, rdtype)
        elapsed = time.monotonic() - start
        if got == expected:
            return elapsed
        assert elapsed < seconds, f"{name} {rdtype}: still {got} after {seconds}s, expected {expected}"
        time.sleep(0.05)


@pytest.fixture
def serve(tmp_path):
    started: list[ServerThread] = []

    def start(paths, options: str = "", plugins: str = "") -> ServerThread:
        text = (f".:0 {{\n bind 127.0.0.1\n{plugins} kubernetes cluster.local in-addr.arpa {{\n"
                f"  manifests {' '.join(str(p) for p in paths)}\n{options}\n }}\n}}\n")
        srv = ServerThread(text).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


def source_of(srv: ServerThread):
    return srv.instance.configs[0].plugin("kubernetes").source


def test_edits_to_a_file_are_served_within_two_seconds(serve, tmp_path):
    path = tmp_path / "cluster.yaml"
    dump(path, [service("web", ips=("10.0.0.10",))])
    srv = serve([path])
    assert values(srv, svc("web")) == (NOERROR, ["10.0.0.10"])
    dump(path, [service("web", ips=("10.0.0.11",)), service("api", ips=("10.0.0.12",))])
    served_within(srv, svc("web"), (NOERROR, ["10.0.0.11"]))
    served_within(srv, svc("api"), (NOERROR, ["10.0.0.12"]))
    assert values(srv, "11.0.0.10.in-addr.arpa.", "PTR") == (NOERROR, [svc("web")])
    dump(path, [service("api", ips=("10.0.0.12",))])
    served_within(srv, svc("web"), (NXDOMAIN, []))
    assert values(srv, "11.0.0.10.in-addr.arpa.", "PTR") == (NXDOMAIN, [])
    assert values(srv, svc("api")) == (NOERROR, ["10.0.0.12"])


def test_objects_without_a_namespace_are_in_default_and_namespaces_exist_when_used(serve, tmp_path):
    path = tmp_path / "cluster.yaml"
    plain = service("web", ips=("10.0.0.10",))
    del plain["metadata"]["namespace"]
    dump(path, [plain, service("api", "team", ips=("10.0.0.20",))])
    srv = serve([path])
    assert values(srv, svc("web")) == (NOERROR, ["10.0.0.10"])
    assert values(srv, svc("api", "team")) == (NOERROR, ["10.0.0.20"])
    assert values(srv, "team.svc.cluster.local.") == (NOERROR, [])


def test_a_folder_of_files_follows_new_and_removed_files(serve, tmp_path):
    folder = tmp_path / "manifests"
    folder.mkdir()
    dump(folder / "web.yaml", [service("web", ips=("10.0.0.10",))])
    listed = service("api", ips=("10.0.0.20",))
    del listed["kind"]  # as the API lists them
    (folder / "api.json").write_text(json.dumps({"apiVersion": "v1", "kind": "ServiceList", "items": [listed]}))
    (folder / "notes.txt").write_text("kind: Service\n")
    (folder / ".hidden.yaml").write_text(yaml.safe_dump(service("hidden", ips=("10.0.0.99",))))
    srv = serve([folder])
    assert values(srv, svc("web")) == (NOERROR, ["10.0.0.10"])
    assert values(srv, svc("api")) == (NOERROR, ["10.0.0.20"])
    assert values(srv, svc("hidden")) == (NXDOMAIN, [])
    dump(folder / "db.yml", [service("db", ips=("10.0.0.30",))])
    served_within(srv, svc("db"), (NOERROR, ["10.0.0.30"]))
    os.unlink(folder / "web.yaml")
    served_within(srv, svc("web"), (NXDOMAIN, []))
    assert values(srv, svc("api")) == (NOERROR, ["10.0.0.20"])


def test_several_paths_list_kind_and_multiple_documents(serve, tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [
        namespace("default"), service("web", ips=("10.0.0.10",))]}))
    dump(second, [service("api", ips=("10.0.0.20",)), {"apiVersion": "apps/v1", "kind": "Deployment",
                                                        "metadata": {"name": "ignored"}}])
    srv = serve([first, second])
    assert values(srv, svc("web")) == (NOERROR, ["10.0.0.10"])
    assert values(srv, svc("api")) == (NOERROR, ["10.0.0.20"])


def test_a_broken_file_keeps_its_last_good_objects_and_says_why(serve, tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="plugin/kubernetes")
    path = tmp_path / "cluster.yaml"
    dump(path, [service("web", ips=("10.0.0.10",))])
    srv = serve([path])
    path.write_text("kind: Service\nmetadata: {name: web\n  spec: [unclosed\n")
    deadline = time.monotonic() + PICKUP
    while not any(str(path) in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
        time.sleep(0.05)
    errors = [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]
    assert errors and "keeping its last good objects" in errors[0]
    assert values(srv, svc("web")) == (NOERROR, ["10.0.0.10"])
    time.sleep(1.2)  # more polls of the same broken file: logged once
    assert len([r for r in caplog.records if str(path) in r.getMessage()]) == 1
    dump(path, [service("web", ips=("10.0.0.11",))])
    served_within(srv, svc("web"), (NOERROR, ["10.0.0.11"]))


def test_a_source_without_objects_warns_naming_its_paths(serve, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="plugin/kubernetes")
    empty, folder = tmp_path / "empty.yaml", tmp_path / "nothing-here"
    empty.write_text("# nothing yet\n")
    folder.mkdir()
    serve([empty, folder])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"manifests: no objects in {empty}, {folder}"]
    caplog.clear()
    full = tmp_path / "full.yaml"
    dump(full, [service("web", ips=("10.0.0.10",))])
    serve([full])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_document_without_a_name_is_a_broken_file(serve, tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="plugin/kubernetes")
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    dump(good, [service("web", ips=("10.0.0.10",))])
    bad.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Service", "metadata": {}}))
    srv = serve([good, bad])
    assert values(srv, svc("web")) == (NOERROR, ["10.0.0.10"])
    assert any("Service without metadata.name" in r.getMessage() for r in caplog.records)


def test_endpoints_objects_become_slices_for_services_without_one(serve, tmp_path):
    path = tmp_path / "cluster.yaml"
    endpoints = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "db", "namespace": "default"},
                 "subsets": [{"addresses": [{"ip": "10.1.0.1", "hostname": "db-0"}, {"ip": "fd00::1"}],
                              "notReadyAddresses": [{"ip": "10.1.0.2", "hostname": "db-1"}],
                              "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}]}
    dump(path, [headless("db", "default", ports=(("pg", 5432, "TCP"),)), endpoints,
                service("web", ips=("10.0.0.10",)),
                {**endpoints, "metadata": {"name": "web", "namespace": "default"}}])
    srv = serve([path])
    assert values(srv, svc("db")) == (NOERROR, ["10.1.0.1"])
    assert values(srv, svc("db"), "AAAA") == (NOERROR, ["fd00::1"])
    assert values(srv, "db-0." + svc("db")) == (NOERROR, ["10.1.0.1"])
    assert values(srv, "db-1." + svc("db")) == (NXDOMAIN, [])
    assert values(srv, "fd00--1." + svc("db"), "AAAA") == (NOERROR, ["fd00::1"])
    assert values(srv, "_pg._tcp." + svc("db"), "SRV") == (NOERROR, [f"0 50 5432 db-0.{svc('db')}",
                                                                     f"0 50 5432 fd00--1.{svc('db')}"])
    assert values(srv, "db-0." + svc("web")) == (NOERROR, ["10.1.0.1"])  # endpoint names under ClusterIP too


def test_services_with_a_selector_get_their_ready_pods(serve, tmp_path):
    path = tmp_path / "cluster.yaml"
    statefulset = headless("db", "default", ports=(("pg", 5432, "TCP"),), selector={"app": "db"})
    statefulset["spec"]["ports"][0]["targetPort"] = "postgres"
    statefulset["spec"]["ipFamilies"] = ["IPv4"]

    def db_pod(i, ip, ready=True, phase="Running", **extra):
        p = pod(f"db-{i}", ip, ns="default", labels={"app": "db"}, ready=ready)
        p["spec"].update(hostname=f"db-{i}", subdomain="db")
        p["spec"]["containers"][0]["ports"] = [{"name": "postgres", "containerPort": 5433}]
        p["status"]["phase"] = phase
        p["status"]["podIPs"] = [{"ip": ip}, *extra.get("more", [])]
        return p

    web = service("web", ips=("10.0.0.10",), selector={"app": "web"})
    dump(path, [statefulset, web,
                db_pod(0, "10.1.0.1", more=[{"ip": "fd00::1"}]),
                db_pod(1, "10.1.0.2", ready=False),
                db_pod(2, "10.1.0.3", phase="Failed"),
                db_pod(3, "10.1.0.4"),
                pod("web-a", "10.2.0.1", ns="default", labels={"app": "web"}),
                pod("other", "10.3.0.1", ns="default", labels={"app": "other"})])
    srv = serve([path])
    assert values(srv, svc("db")) == (NOERROR, ["10.1.0.1", "10.1.0.4"])
    assert values(srv, svc("db"), "AAAA") == (NOERROR, [])  # the service has no IPv6 family
    assert values(srv, "fd00--1." + svc("db"), "AAAA") == (NXDOMAIN, [])
    assert values(srv, "db-0." + svc("db")) == (NOERROR, ["10.1.0.1"])
    assert values(srv, "db-1." + svc("db")) == (NXDOMAIN, [])
    assert values(srv, "_pg._tcp." + svc("db"), "SRV") == (NOERROR, [f"0 50 5433 db-0.{svc('db')}",
                                                                     f"0 50 5433 db-3.{svc('db')}"])
    assert values(srv, "10-2-0-1." + svc("web")) == (NOERROR, ["10.2.0.1"])
    assert values(srv, "1.0.2.10.in-addr.arpa.", "PTR") == (NOERROR, ["10-2-0-1." + svc("web")])
    # a pod turning ready appears, as the EndpointSlice controller would publish it
    dump(path, [statefulset, web, db_pod(0, "10.1.0.1"), db_pod(1, "10.1.0.2"), db_pod(3, "10.1.0.4")])
    served_within(srv, "db-1." + svc("db"), (NOERROR, ["10.1.0.2"]))


def test_an_explicit_slice_wins_over_pods(serve, tmp_path):
    path = tmp_path / "cluster.yaml"
    dump(path, [headless("web", "default", selector={"app": "web"}),
                pod("web-a", "10.2.0.1", ns="default", labels={"app": "web"}),
                endpoint_slice("web-abc", "web", [endpoint("10.9.0.9")], ns="default")])
    srv = serve([path])
    assert values(srv, svc("web")) == (NOERROR, ["10.9.0.9"])


def test_in_memory_objects_and_rescan_apply_at_once(serve, tmp_path):
    path = tmp_path / "cluster.yaml"
    dump(path, [service("web", ips=("10.0.0.10",))])
    srv = serve([path])
    source = source_of(srv)
    source.apply_objects([service("mem", ips=("10.0.0.50",))])
    assert values(srv, svc("mem")) == (NOERROR, ["10.0.0.50"])
    source.apply_objects([service("mem", ips=("10.0.0.51",))])
    assert values(srv, svc("mem")) == (NOERROR, ["10.0.0.51"])
    source.delete_objects([service("mem")])
    assert values(srv, svc("mem")) == (NXDOMAIN, [])
    dump(path, [service("web", ips=("10.0.0.11",))])
    source.rescan()
    assert values(srv, svc("web")) == (NOERROR, ["10.0.0.11"])
    source.set_objects([headless("db", "default"), endpoint_slice("db-x", "db", [endpoint("10.1.1.1")], ns="default")])
    assert values(srv, svc("db")) == (NOERROR, ["10.1.1.1"])
    source.set_objects([])
    assert values(srv, svc("db")) == (NXDOMAIN, [])


def metric_counts(srv: ServerThread) -> dict[str, float]:
    port = srv.instance.http[("127.0.0.1", 0)].bound_port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
    finally:
        conn.close()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        if family.name == "coredns_kubernetes_dns_programming_duration_seconds":
            for sample in family.samples:
                if sample.name.endswith("_count"):
                    counts[sample.labels["service_kind"]] = sample.value
                if sample.name.endswith("_bucket") and sample.labels["le"] in ("0.001", "524.288"):
                    assert sample.labels["service_kind"] in ("cluster_ip", "headless_with_selector")
    return counts


def test_programming_duration_counts_only_changed_slices(serve, tmp_path):
    path = tmp_path / "cluster.yaml"
    now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")

    def objects(web_ip):
        stamp = {"endpoints.kubernetes.io/last-change-trigger-time": now}
        return [service("web", ips=("10.0.0.10",)), headless("db", "default", selector={"app": "db"}),
                endpoint_slice("web-1", "web", [endpoint(web_ip)], ns="default", annotations=stamp),
                endpoint_slice("db-1", "db", [endpoint("10.1.0.9")], ns="default", annotations=stamp)]

    dump(path, objects("10.1.0.1"))
    srv = serve([path], plugins=" prometheus 127.0.0.1:0\n")
    before = metric_counts(srv)
    assert before.get("cluster_ip", 0) >= 1 and before.get("headless_with_selector", 0) >= 1
    source_of(srv).apply_objects([])  # an unchanged cluster: nothing observed
    assert metric_counts(srv) == before
    dump(path, objects("10.1.0.2"))
    served_within(srv, "10-1-0-2." + svc("web"), (NOERROR, ["10.1.0.2"]))
    after = metric_counts(srv)
    assert after["cluster_ip"] == before["cluster_ip"] + 1
    assert after["headless_with_selector"] == before["headless_with_selector"]


def test_the_demo_corefile_sets_up_and_its_cluster_answers(serve):
    blocks = parse(demo_corefile(), "Corefile")
    (k8s,) = [d for d in blocks[0].directives if d.name == "kubernetes"]
    assert [str(a) for a in k8s.block[0].args] == [DEMO_CLUSTER]
    options = "\n".join("  " + " ".join([str(o.name), *map(str, o.args)]) for o in k8s.block[1:])
    srv = serve([DEMO_CLUSTER], options)
    assert values(srv, svc("web", "shop")) == (NOERROR, ["10.96.20.10"])
    assert values(srv, svc("web", "shop"), "AAAA") == (NOERROR, ["fd00:10:96::20:10"])
    assert values(srv, svc("db", "shop")) == (NOERROR, ["10.244.1.20", "10.244.2.21"])
    assert values(srv, "db-0." + svc("db", "shop")) == (NOERROR, ["10.244.1.20"])
    # dual-stack: two addresses share the weight, as in CoreDNS
    assert values(srv, "_http._tcp." + svc("web", "shop"), "SRV") == (NOERROR, [f"0 50 80 {svc('web', 'shop')}"])
    assert values(srv, svc("docs", "shop"), "CNAME") == (NOERROR, ["docs.example.com."])
    assert values(srv, "10.20.96.10.in-addr.arpa.", "PTR") == (NOERROR, [svc("web", "shop")])
    assert values(srv, "1-2-3-4.shop.pod.cluster.local.") == (NOERROR, ["1.2.3.4"])  # pods insecure


def test_the_apex_ns_names_the_service_whose_endpoint_this_server_is(serve, tmp_path):
    path = tmp_path / "cluster.yaml"
    dump(path, [service("other", ips=("10.0.0.20",))])
    srv = serve([path])
    assert values(srv, "cluster.local.", "NS") == (NOERROR, ["ns.dns.cluster.local."])
    assert values(srv, "ns.dns.cluster.local.") == (NOERROR, ["127.0.0.1"])
    # once the server's own address (127.0.0.1 here) is an endpoint of kube-dns, NS is kube-dns
    source_of(srv).apply_objects([
        service("kube-dns", "kube-system", ips=("10.96.0.10",)),
        endpoint_slice("kube-dns-x", "kube-dns", [endpoint("127.0.0.1")], ns="kube-system")])
    msg = srv.query("cluster.local.", "NS")
    assert [r.to_text() for rrset in msg.answer for r in rrset] == [svc("kube-dns", "kube-system")]
    assert [rrset.to_text() for rrset in msg.additional] == [f"{svc('kube-dns', 'kube-system')} 5 IN A 10.96.0.10"]
    assert values(srv, "ns.dns.cluster.local.") == (NOERROR, ["10.96.0.10"])


def test_externalname_chains_are_followed_and_loops_stopped(serve, tmp_path):
    path = tmp_path / "cluster.yaml"

    def ext(name, target):
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
                "spec": {"type": "ExternalName", "externalName": target}}

    dump(path, [service("web", ips=("10.0.0.10",)), ext("one", svc("two")), ext("two", svc("web")),
                ext("ping", svc("pong")), ext("pong", svc("ping")), ext("ip", "10.0.0.1")])
    srv = serve([path])
    msg = srv.query(svc("one"), "A")
    assert [rrset.to_text() for rrset in msg.answer] == [f"{svc('one')} 5 IN CNAME {svc('two')}",
                                                         f"{svc('two')} 5 IN CNAME {svc('web')}",
                                                         f"{svc('web')} 5 IN A 10.0.0.10"]
    assert values(srv, svc("ping")) == (NOERROR, [])
    assert values(srv, svc("ip")) == (NXDOMAIN, [])  # an address is no CNAME target
    source_of(srv).apply_objects([service("web", ips=("10.0.0.11",))])
    assert "10.0.0.11" in values(srv, svc("one"))[1]  # what was followed is not kept past a change


def test_endpoint_and_ptr_names_follow_every_change_after_they_were_asked(serve, tmp_path):
    """Endpoint and PTR answers are rendered on their first query; a change must reach them."""
    path = tmp_path / "cluster.yaml"
    dump(path, [service("web", ips=("10.0.0.10",))])
    srv = serve([path])
    source = source_of(srv)
    db = headless("db", "default", ports=(("sql", 5432, "TCP"),))
    source.apply_objects([db, endpoint_slice("db-x", "db", [endpoint("10.1.1.1", "db-0"), endpoint("10.1.1.2", "db-1")],
                                             ns="default", ports=(("sql", 5432, "TCP"),))])
    db0, db1 = "db-0." + svc("db"), "db-1." + svc("db")
    assert values(srv, db0) == (NOERROR, ["10.1.1.1"])
    assert values(srv, db0, "AAAA") == (NOERROR, [])  # the name exists: NODATA
    assert values(srv, db1, "SRV") == (NOERROR, ["0 100 5432 db-1.db.default.svc.cluster.local."])
    assert values(srv, "1.1.1.10.in-addr.arpa.", "PTR") == (NOERROR, [db0])
    assert values(srv, "10.0.0.10.in-addr.arpa.", "PTR") == (NOERROR, [svc("web")])
    assert values(srv, "10.0.0.10.in-addr.arpa.", "A") == (NXDOMAIN, [])

    # db-0 moves, db-1 goes, the port changes: every name asked above must follow.
    source.apply_objects([endpoint_slice("db-x", "db", [endpoint("10.1.1.5", "db-0")], ns="default",
                                         ports=(("sql", 6000, "TCP"),))])
    assert values(srv, db0) == (NOERROR, ["10.1.1.5"])
    assert values(srv, db0, "SRV") == (NOERROR, ["0 100 6000 db-0.db.default.svc.cluster.local."])
    assert values(srv, db1) == (NXDOMAIN, [])
    assert values(srv, db1, "SRV") == (NXDOMAIN, [])
    assert values(srv, "1.1.1.10.in-addr.arpa.", "PTR") == (NXDOMAIN, [])
    assert values(srv, "5.1.1.10.in-addr.arpa.", "PTR") == (NOERROR, [db0])

    # A service's new cluster IP moves its PTR; deleting the service removes its endpoint names.
    source.apply_objects([service("web", ips=("10.0.0.11",))])
    assert values(srv, "10.0.0.10.in-addr.arpa.", "PTR") == (NXDOMAIN, [])
    assert values(srv, "11.0.0.10.in-addr.arpa.", "PTR") == (NOERROR, [svc("web")])
    source.delete_objects([db])
    assert values(srv, db0) == (NXDOMAIN, [])
    # Only the canonical spelling of an address names it.
    assert values(srv, "011.0.0.10.in-addr.arpa.", "PTR") == (NXDOMAIN, [])


def test_names_answer_correctly_beyond_the_bound_of_rendered_names(serve, tmp_path, monkeypatch):
    from pydns.plugins.kubernetes import index as index_mod

    monkeypatch.setattr(index_mod, "MEMO_MAX", 4)
    path = tmp_path / "cluster.yaml"
    eps = [endpoint(f"10.3.0.{i}", f"web-{i}") for i in range(1, 13)]
    dump(path, [headless("web", "default"), endpoint_slice("web-x", "web", eps, ns="default")])
    srv = serve([path])
    for _ in range(2):
        assert values(srv, svc("web")) == (NOERROR, sorted(f"10.3.0.{i}" for i in range(1, 13)))
        for i in range(1, 13):
            assert values(srv, f"web-{i}." + svc("web")) == (NOERROR, [f"10.3.0.{i}"])
            assert values(srv, f"{i}.0.3.10.in-addr.arpa.", "PTR") == (NOERROR, [f"web-{i}." + svc("web")])
    # A change after names were evicted reaches the names still held and those asked again.
    source_of(srv).apply_objects([endpoint_slice("web-x", "web", eps[1:], ns="default")])
    assert values(srv, "web-1." + svc("web")) == (NXDOMAIN, [])
    assert values(srv, "1.0.3.10.in-addr.arpa.", "PTR") == (NXDOMAIN, [])
    assert values(srv, svc("web")) == (NOERROR, sorted(f"10.3.0.{i}" for i in range(2, 13)))
    for i in range(12, 1, -1):
        assert values(srv, f"{i}.0.3.10.in-addr.arpa.", "PTR") == (NOERROR, [f"web-{i}." + svc("web")])
