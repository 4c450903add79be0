"""One small cluster, as the raw objects the API returns, for the kubernetes plugin's tests.

It holds a case of every record kind the plugin serves (after CoreDNS's own test cluster):

testns (labels team=a)
  svc1            ClusterIP 10.0.0.1, port http/TCP 80; one endpoint with hostname ep1a
  svc6            ClusterIP 1234:abcd::1 (IPv6 only), port http/TCP 80
  svc-dual-stack  ClusterIP 10.0.0.3 and 10::3, port http/TCP 80
  svc-ports       ClusterIP 10.0.0.5, an unnamed port 8080/TCP and metrics/TCP 9090
  svcempty        ClusterIP 10.0.0.9, port http/TCP 80; its only endpoint is not ready
  hdls1           headless; an IPv4 slice (172.0.0.2, 172.0.0.3 (pod hdls1-pod-3),
                  dup-name: 172.0.0.4 and 172.0.0.5, 172.0.0.6 not ready, 172.0.0.7 with
                  no ready condition at all) and an IPv6 slice (5678:abcd::1, 5678:abcd::2),
                  both with port http/TCP 80
  hdlsprtls       headless without ports: 172.0.0.20
  hdls-notready   headless whose only endpoint is not ready
  external        ExternalName ext.interwebs.test (outside the cluster)
  external-to-service  ExternalName svc1.testns.svc.cluster.local (inside)
  pods            pod-a 10.244.0.5, pod-v6 fd00::5
other (labels team=b)
  web             ClusterIP 10.0.1.1 (labels app=web), port http/TCP 80
  pod-b           10.244.0.6
kube-system
  kube-dns        ClusterIP 10.96.0.10, ports dns/UDP 53 and dns-tcp/TCP 53
"""

from __future__ import annotations

import copy

ZONE = "cluster.local"
TRIGGER = "endpoints.kubernetes.io/last-change-trigger-time"


def namespace(name: str, **labels) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def service(name: str, ns: str = "testns", ips=("10.0.0.100",), ports=(("http", 80, "TCP"),), labels=None,
            selector=None) -> dict:
    spec: dict = {"type": "ClusterIP", "clusterIP": ips[0], "clusterIPs": list(ips),
                  "ports": [{**({"name": n} if n else {}), "port": p, "protocol": proto} for n, p, proto in ports]}
    if selector:
        spec["selector"] = selector
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {}}, "spec": spec}


def headless(name: str, ns: str = "testns", ports=(("http", 80, "TCP"),), selector=None) -> dict:
    svc = service(name, ns, ips=("None",), ports=ports, selector=selector)
    if not ports:
        del svc["spec"]["ports"]
    return svc


def external(name: str, target: str, ns: str = "testns") -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"type": "ExternalName", "externalName": target}}


def endpoint(ip: str, hostname: str | None = None, ready: bool | None = True, pod: str | None = None) -> dict:
    ep: dict = {"addresses": [ip]}
    if ready is not None:
        ep["conditions"] = {"ready": ready}
    else:
        ep["conditions"] = {}
    if hostname:
        ep["hostname"] = hostname
    if pod:
        ep["targetRef"] = {"kind": "Pod", "name": pod, "namespace": "testns"}
    return ep


def endpoint_slice(name: str, svc: str, endpoints: list[dict], ns: str = "testns", family: str = "IPv4",
                   ports=(("http", 80, "TCP"),), annotations=None) -> dict:
    meta: dict = {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": svc}}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": meta, "addressType": family,
            "endpoints": endpoints,
            "ports": [{**({"name": n} if n else {}), "port": p, "protocol": proto} for n, p, proto in ports]}


def pod(name: str, ip: str, ns: str = "testns", labels=None, ready: bool = True) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
            "spec": {"containers": [{"name": "app", "image": "app"}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


CLUSTER: list[dict] = [
    namespace("default"),
    namespace("kube-system"),
    namespace("testns", team="a"),
    namespace("other", team="b"),
    service("kube-dns", "kube-system", ips=("10.96.0.10",), ports=(("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"))),
    service("svc1", ips=("10.0.0.1",), labels={"app": "svc1"}),
    endpoint_slice("svc1-abcde", "svc1", [endpoint("172.0.0.1", hostname="ep1a")]),
    service("svc6", ips=("1234:abcd::1",)),
    service("svc-dual-stack", ips=("10.0.0.3", "10::3")),
    service("svc-ports", ips=("10.0.0.5",), ports=(("", 8080, "TCP"), ("metrics", 9090, "TCP"))),
    service("svcempty", ips=("10.0.0.9",)),
    endpoint_slice("svcempty-abcde", "svcempty", [endpoint("172.0.0.30", ready=False)]),
    headless("hdls1", selector={"app": "hdls1"}),
    endpoint_slice("hdls1-v4", "hdls1", [
        endpoint("172.0.0.2"),
        endpoint("172.0.0.3", pod="hdls1-pod-3"),
        endpoint("172.0.0.4", hostname="dup-name"),
        endpoint("172.0.0.5", hostname="dup-name"),
        endpoint("172.0.0.6", ready=False),
        endpoint("172.0.0.7", ready=None),
    ], annotations={TRIGGER: "2024-01-01T00:00:00Z"}),
    endpoint_slice("hdls1-v6", "hdls1", [endpoint("5678:abcd::1"), endpoint("5678:abcd::2")], family="IPv6"),
    headless("hdlsprtls", ports=()),
    endpoint_slice("hdlsprtls-abcde", "hdlsprtls", [endpoint("172.0.0.20")], ports=()),
    headless("hdls-notready"),
    endpoint_slice("hdls-notready-abcde", "hdls-notready", [endpoint("172.0.0.40", ready=False)]),
    external("external", "ext.interwebs.test"),
    external("external-to-service", "svc1.testns.svc.cluster.local"),
    pod("pod-a", "10.244.0.5"),
    pod("pod-v6", "fd00::5"),
    service("web", "other", ips=("10.0.1.1",), labels={"app": "web"}),
    pod("pod-b", "10.244.0.6", ns="other"),
]


def cluster() -> list[dict]:
    """A fresh copy of the cluster's objects."""
    return copy.deepcopy(CLUSTER)
