"""Generate a benchmark cluster, the same records for every server, and dnsperf query files.

    python bench/gen_cluster.py --out /tmp/cluster --services 1000

writes into --out:

    cluster.yaml       Namespaces, Services and EndpointSlices for pydns's ``manifests`` source
    dnsmasq.conf       the same DNS records for dnsmasq (host-record / srv-host, local=/ZONE/)
    dnsmasq-nosrv.conf the same without SRV records (dnsmasq walks its srv-host list per query)
    records.json       the same records as a dict {name: {type: [rdata...]}} for the dnslib reference
    checks.json        a few questions with their expected answers, asked before measuring
    queries/KIND.txt   dnsperf input for each query kind (see KINDS) and the weighted mix
    external.json      names for the cache scenario (answered by an upstream, then cached)

Services are spread over namespaces of 100; a fraction are headless with ready endpoints
(every other one StatefulSet-like, with hostnames); a fraction of the ClusterIP services are
dual-stack; every service has a named ``http`` port and every fourth a ``grpc`` port too.
The records follow CoreDNS's kubernetes plugin: A/AAAA for cluster IPs or, for headless
services, for every ready endpoint; SRV for ``_port._proto.svc`` and the bare service name;
endpoint names (hostname or dashed IP) under their service; PTR for every address.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import sys
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import log, write_json  # noqa: E402

ZONE = "cluster.local"
TTL = 5  # the kubernetes plugin's default
CLUSTER_V4 = ipaddress.IPv4Address("10.96.0.16")
CLUSTER_V6 = ipaddress.IPv6Address("fd00:10:96::10")
POD_V4 = ipaddress.IPv4Address("10.128.0.2")
EXTERNAL_V4 = ipaddress.IPv4Address("198.18.0.1")
MIX = {"a": 40, "aaaa": 20, "nx": 20, "headless": 10, "srv": 10}
KINDS = ("a", "headless", "srv", "aaaa", "nx", "mix")
KIND_HELP = {
    "a": "A for ClusterIP service names",
    "headless": "A for headless service names (one record per ready endpoint)",
    "srv": "SRV _http._tcp for service names (with the targets' addresses in additional)",
    "aaaa": "AAAA for IPv4-only ClusterIP names (NODATA)",
    "nx": "A for names that do not exist in existing namespaces (NXDOMAIN)",
    "mix": "weighted mix " + ", ".join(f"{k} {v}%" for k, v in MIX.items()),
    "ext": "A for names outside the cluster, answered by an upstream and cached",
}


@dataclass
class Cluster:
    zone: str
    namespaces: list[dict] = field(default_factory=list)
    services: list[dict] = field(default_factory=list)
    slices: list[dict] = field(default_factory=list)
    records: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    clusterip: list[str] = field(default_factory=list)  # FQDNs of ClusterIP services
    v4only: list[str] = field(default_factory=list)
    dual: list[str] = field(default_factory=list)
    headless: list[str] = field(default_factory=list)
    nx: list[str] = field(default_factory=list)
    endpoints: int = 0

    @property
    def objects(self) -> list[dict]:
        return [*self.namespaces, *self.services, *self.slices]

    def add(self, name: str, rtype: str, rdata: str) -> None:
        self.records.setdefault(name, {}).setdefault(rtype, []).append(rdata)


def reverse_name(ip: str) -> str:
    return ipaddress.ip_address(ip).reverse_pointer + "."


def dashed(ip: str) -> str:
    """The endpoint name CoreDNS gives an address without a hostname (``10-0-0-1``, ``fd00--1``)."""
    if ":" in ip:
        name = str(ipaddress.IPv6Address(ip)).replace(":", "-")
        return name + "0" if name.endswith("-") else name
    return ip.replace(".", "-")


def make_cluster(services: int = 1000, headless_ratio: float = 0.1, headless_endpoints: int = 5,
                 clusterip_endpoints: int = 2, dual_stack_ratio: float = 0.2, per_namespace: int = 100,
                 nx_names: int = 1000, zone: str = ZONE) -> Cluster:
    """A deterministic cluster of ``services`` services and their EndpointSlices and records."""
    c = Cluster(zone=zone)
    namespaces = max(1, -(-services // per_namespace))
    for n in range(namespaces):
        c.namespaces.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"ns-{n}"}})
    headless_every = round(1 / headless_ratio) if headless_ratio > 0 else 0
    dual_every = round(1 / dual_stack_ratio) if dual_stack_ratio > 0 else 0
    pod = int(POD_V4)
    clusterip_count = 0
    for i in range(services):
        ns, name = f"ns-{i % namespaces}", f"svc-{i}"
        fqdn = f"{name}.{ns}.svc.{zone}."
        is_headless = bool(headless_every) and i % headless_every == 0
        ports = [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]
        if i % 4 == 1:
            ports.append({"name": "grpc", "port": 9090, "targetPort": 9090, "protocol": "TCP"})
        spec: dict = {"ports": ports, "selector": {"app": name}}
        if is_headless:
            spec.update(clusterIP="None", clusterIPs=["None"])
            count = headless_endpoints
        else:
            v4 = str(CLUSTER_V4 + clusterip_count)
            ips = [v4]
            is_dual = bool(dual_every) and clusterip_count % dual_every == 1
            if is_dual:
                ips.append(str(CLUSTER_V6 + clusterip_count))
            clusterip_count += 1
            spec.update(type="ClusterIP", clusterIP=v4, clusterIPs=ips,
                        ipFamilies=["IPv4", "IPv6"] if is_dual else ["IPv4"],
                        ipFamilyPolicy="PreferDualStack" if is_dual else "SingleStack")
            count = clusterip_endpoints
        c.services.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
                           "spec": spec})
        stateful = is_headless and (i // max(headless_every, 1)) % 2 == 0
        endpoints = []
        for j in range(count):
            ep = {"addresses": [str(ipaddress.IPv4Address(pod))], "conditions": {"ready": True},
                  "nodeName": f"node-{pod % 50}",
                  "targetRef": {"kind": "Pod", "namespace": ns, "name": f"{name}-{j}"}}
            if stateful:
                ep["hostname"] = f"{name}-{j}"
            endpoints.append(ep)
            pod += 1
        c.endpoints += len(endpoints)
        c.slices.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{name}-abc12", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": name,
                                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
            "endpoints": endpoints,
            "ports": [{"name": p["name"], "port": p["targetPort"], "protocol": p["protocol"]} for p in ports],
        })
        _records(c, fqdn, spec, ports, endpoints, is_headless)
    for k in range(nx_names):
        c.nx.append(f"missing-{k}.ns-{k % namespaces}.svc.{zone}.")
    return c


def _records(c: Cluster, fqdn: str, spec: dict, ports: list[dict], endpoints: list[dict], headless: bool) -> None:
    ep_names = []
    for ep in endpoints:
        ip = ep["addresses"][0]
        ep_name = f"{ep.get('hostname') or dashed(ip)}.{fqdn}"
        ep_names.append((ep_name, ip))
        c.add(ep_name, "AAAA" if ":" in ip else "A", ip)
        c.add(reverse_name(ip), "PTR", ep_name)
    if headless:
        c.headless.append(fqdn)
        for ep_name, ip in ep_names:
            c.add(fqdn, "AAAA" if ":" in ip else "A", ip)
        weight = 100 // max(len(ep_names) * len(ports), 1)
        for p in ports:
            for ep_name, _ip in ep_names:
                srv = f"0 {max(weight, 1)} {p['targetPort']} {ep_name}"
                c.add(fqdn, "SRV", srv)
                c.add(f"_{p['name']}._{p['protocol'].lower()}.{fqdn}", "SRV", srv)
        return
    c.clusterip.append(fqdn)
    (c.dual if len(spec["clusterIPs"]) > 1 else c.v4only).append(fqdn)
    for ip in spec["clusterIPs"]:
        c.add(fqdn, "AAAA" if ":" in ip else "A", ip)
        c.add(reverse_name(ip), "PTR", fqdn)
    for p in ports:
        c.add(fqdn, "SRV", f"0 {100 // len(ports)} {p['port']} {fqdn}")
        c.add(f"_{p['name']}._{p['protocol'].lower()}.{fqdn}", "SRV", f"0 100 {p['port']} {fqdn}")


def external_names(count: int) -> dict[str, str]:
    """Names outside the cluster and their addresses, for the cache scenario."""
    return {f"ext-{k}.example.org.": str(EXTERNAL_V4 + k) for k in range(count)}


# ---------------------------------------------------------------- query files
def queries(c: Cluster, kind: str, count: int, seed: int = 7, external: dict | None = None) -> list[str]:
    """``count`` dnsperf lines ("name TYPE") of one kind, drawn with a fixed seed."""
    rng = random.Random(f"{seed}-{kind}")
    if kind == "mix":
        kinds = [k for k, w in MIX.items() for _ in range(w)]
        pools = {k: _pool(c, k, external) for k in MIX}
        out = []
        for _ in range(count):
            k = rng.choice(kinds)
            if not pools[k][0]:
                k = "a"
            out.append(_line(rng.choice(pools[k][0]), pools[k][1]))
        return out
    names, qtype = _pool(c, kind, external)
    if not names:
        return []
    return [_line(rng.choice(names), qtype) for _ in range(count)]


def _pool(c: Cluster, kind: str, external: dict | None) -> tuple[list[str], str]:
    if kind == "a":
        return c.clusterip, "A"
    if kind == "headless":
        return c.headless, "A"
    if kind == "srv":
        return [f"_http._tcp.{n}" for n in c.clusterip + c.headless], "SRV"
    if kind == "aaaa":
        return c.v4only, "AAAA"
    if kind == "nx":
        return c.nx, "A"
    if kind == "ext":
        return sorted(external or {}), "A"
    raise ValueError(f"unknown query kind {kind!r}")


def _line(name: str, qtype: str) -> str:
    return f"{name.rstrip('.')} {qtype}"


# ---------------------------------------------------------------- the other servers' forms
def dnsmasq_conf(c: Cluster, srv: bool = True) -> str:
    """dnsmasq configuration answering the same records (listen options come from the command line).

    dnsmasq keeps ``srv-host`` records in a list it walks for every query, so with
    ``srv=False`` (no SRV records) it shows its speed on hashed host records alone.
    """
    lines = [
        "# generated by bench/gen_cluster.py: the benchmark cluster's records",
        "no-resolv", "no-hosts", f"local=/{c.zone}/", f"local-ttl={TTL}", "cache-size=10000",
    ]
    for name, types in c.records.items():
        bare = name.rstrip(".")
        for rtype in ("A", "AAAA"):
            for ip in types.get(rtype, ()):
                lines.append(f"host-record={bare},{ip},{TTL}")
        for record in types.get("SRV", ()) if srv else ():
            prio, weight, port, target = record.split()
            lines.append(f"srv-host={bare},{target.rstrip('.')},{port},{prio},{weight}")
    return "\n".join(lines) + "\n"


def checks(c: Cluster) -> list[dict]:
    """Questions whose answers every server must give before it is measured."""
    out = []
    r = c.records
    for fqdn in c.v4only[:2]:
        out.append({"name": fqdn, "type": "A", "rcode": "NOERROR", "answers": r[fqdn]["A"]})
        out.append({"name": fqdn, "type": "AAAA", "rcode": "NOERROR", "answers": []})
        srv = f"_http._tcp.{fqdn}"
        out.append({"name": srv, "type": "SRV", "rcode": "NOERROR",
                    "srv": [(s.split()[2], s.split()[3]) for s in r[srv]["SRV"]]})
    for fqdn in c.dual[:1]:
        out.append({"name": fqdn, "type": "AAAA", "rcode": "NOERROR", "answers": r[fqdn]["AAAA"]})
    for fqdn in c.headless[:2]:
        out.append({"name": fqdn, "type": "A", "rcode": "NOERROR", "answers": r[fqdn]["A"]})
        srv = f"_http._tcp.{fqdn}"
        out.append({"name": srv, "type": "SRV", "rcode": "NOERROR",
                    "srv": [(s.split()[2], s.split()[3]) for s in r[srv]["SRV"]]})
    for fqdn in c.nx[:2]:
        out.append({"name": fqdn, "type": "A", "rcode": "NXDOMAIN", "answers": []})
    return out


def write_yaml(path: str, objects: list[dict]) -> None:
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    with open(path, "w") as fh:
        yaml.dump_all(objects, fh, Dumper=dumper, default_flow_style=None, sort_keys=False, width=200)


def write_all(c: Cluster, out: str, query_count: int = 10000, external_count: int = 1000) -> dict:
    """Write every form of the cluster into ``out``; returns the paths."""
    os.makedirs(os.path.join(out, "queries"), exist_ok=True)
    paths = {"yaml": os.path.join(out, "cluster.yaml"), "dnsmasq": os.path.join(out, "dnsmasq.conf"),
             "dnsmasq_nosrv": os.path.join(out, "dnsmasq-nosrv.conf"),
             "records": os.path.join(out, "records.json"), "checks": os.path.join(out, "checks.json"),
             "external": os.path.join(out, "external.json"), "queries": {}}
    write_yaml(paths["yaml"], c.objects)
    with open(paths["dnsmasq"], "w") as fh:
        fh.write(dnsmasq_conf(c))
    with open(paths["dnsmasq_nosrv"], "w") as fh:
        fh.write(dnsmasq_conf(c, srv=False))
    write_json(paths["records"], {"zone": c.zone, "ttl": TTL, "records": c.records})
    write_json(paths["checks"], {"checks": checks(c)})
    external = external_names(external_count)
    write_json(paths["external"], external)
    for kind in (*KINDS, "ext"):
        lines = queries(c, kind, query_count, external=external)
        path = os.path.join(out, "queries", f"{kind}.txt")
        with open(path, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        paths["queries"][kind] = path
    return paths


def add_cluster_options(p: argparse.ArgumentParser, services: int = 1000) -> None:
    p.add_argument("--services", type=int, default=services, help="number of services (default %(default)s)")
    p.add_argument("--headless-ratio", type=float, default=0.1, help="fraction of headless services (default %(default)s)")
    p.add_argument("--headless-endpoints", type=int, default=5, help="ready endpoints per headless service (default %(default)s)")
    p.add_argument("--clusterip-endpoints", type=int, default=2, help="endpoints per ClusterIP service (default %(default)s)")
    p.add_argument("--dual-stack-ratio", type=float, default=0.2, help="fraction of ClusterIP services that are dual-stack (default %(default)s)")


def cluster_from_args(args) -> Cluster:
    return make_cluster(services=args.services, headless_ratio=args.headless_ratio,
                        headless_endpoints=args.headless_endpoints, clusterip_endpoints=args.clusterip_endpoints,
                        dual_stack_ratio=args.dual_stack_ratio, nx_names=min(1000, max(10, args.services)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder to write into")
    add_cluster_options(p)
    p.add_argument("--queries", type=int, default=10000, help="lines per dnsperf query file (default %(default)s)")
    p.add_argument("--external", type=int, default=1000, help="names for the cache scenario (default %(default)s)")
    p.add_argument("--json", metavar="PATH", help="write the summary as JSON")
    args = p.parse_args(argv)
    c = cluster_from_args(args)
    paths = write_all(c, args.out, args.queries, args.external)
    summary = {"services": len(c.services), "headless": len(c.headless), "dual_stack": len(c.dual),
               "namespaces": len(c.namespaces), "endpoint_slices": len(c.slices), "endpoints": c.endpoints,
               "dns_names": len(c.records), "out": os.path.abspath(args.out), "paths": paths}
    write_json(args.json, summary)
    log(f"wrote {', '.join(sorted(k for k in paths if k != 'queries'))} and {len(paths['queries'])} query files")
    print(f"gen_cluster: {len(c.services)} services ({len(c.headless)} headless x {args.headless_endpoints} endpoints, "
          f"{len(c.dual)} dual-stack), {len(c.slices)} EndpointSlices, {c.endpoints} endpoints, "
          f"{len(c.namespaces)} namespaces, {len(c.records)} DNS names -> {os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
