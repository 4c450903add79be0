"""EndpointSlices for Services that have none, made the way a cluster's controllers make them.

Used by the manifests source: a hand-written cluster rarely spells out EndpointSlices.

* From an ``Endpoints`` object of the same name (what the EndpointSlice mirroring
  controller does): one slice per subset and address family; ``addresses`` are ready,
  ``notReadyAddresses`` are not; hostnames, node names and target refs carry over, and so
  does the ``endpoints.kubernetes.io/last-change-trigger-time`` annotation.
* Else, for a Service with a ``selector``, from the Pods of its namespace whose labels
  match (the EndpointSlice controller): pods that have an address and are neither finished
  (Succeeded/Failed) nor being deleted; ready when their ``Ready`` condition is ``True``
  (or ``publishNotReadyAddresses`` is set; a pod written without any status conditions
  counts as ready); ``hostname`` when the pod's ``spec.hostname`` is set and its
  ``spec.subdomain`` is the Service's name; one address per family from ``podIPs``; ports
  from the Service's ports with ``targetPort`` resolved against the pod's container ports
  (named ports included), pods that resolve differently going to separate slices.

The address families are the Service's ``ipFamilies``, else those of its cluster IPs, else
(headless without ``ipFamilies``) those its endpoints have.
"""

from __future__ import annotations

from .objects import SERVICE_NAME_LABEL, TRIGGER_TIME, canonical_ip, key_of, labels_of, meta_of

MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
FAMILIES = ("IPv4", "IPv6")


def family(ip: str) -> str:
    return "IPv6" if ":" in ip else "IPv4"


def _spec(obj: dict) -> dict:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _service_families(svc: dict) -> list[str] | None:
    spec = _spec(svc)
    families = [f for f in spec.get("ipFamilies") or () if f in FAMILIES]
    if families:
        return families
    ips = [canonical_ip(ip) for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")])]
    families = list(dict.fromkeys(family(ip) for ip in ips if ip))
    return families or None


def _slice(svc: dict, name: str, fam: str, endpoints: list, ports: list, manager: str,
           annotations: dict | None = None) -> dict:
    ns, svc_name = key_of(svc)
    labels = {**labels_of(svc), SERVICE_NAME_LABEL: svc_name, MANAGED_BY: manager}
    meta = {"name": name, "namespace": ns, "labels": labels}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": meta, "addressType": fam,
            "endpoints": endpoints, "ports": ports}


def from_endpoints(svc: dict, endpoints: dict) -> list[dict]:
    out = []
    stamp = (meta_of(endpoints).get("annotations") or {}).get(TRIGGER_TIME)
    annotations = {TRIGGER_TIME: stamp} if stamp else None
    _ns, name = key_of(svc)
    for i, subset in enumerate(endpoints.get("subsets") or ()):
        if not isinstance(subset, dict):
            continue
        ports = [{"name": p.get("name") or "", "port": p.get("port"), "protocol": p.get("protocol") or "TCP"}
                 for p in subset.get("ports") or () if isinstance(p, dict)]
        by_family: dict[str, list] = {}
        for field, ready in (("addresses", True), ("notReadyAddresses", False)):
            for addr in subset.get(field) or ():
                ip = canonical_ip(addr.get("ip")) if isinstance(addr, dict) else None
                if ip is None:
                    continue
                ep = {"addresses": [ip], "conditions": {"ready": ready}}
                for src, dst in (("hostname", "hostname"), ("nodeName", "nodeName"), ("targetRef", "targetRef")):
                    if addr.get(src):
                        ep[dst] = addr[src]
                by_family.setdefault(family(ip), []).append(ep)
        for fam, eps in by_family.items():
            out.append(_slice(svc, f"{name}-{i}-{fam.lower()}", fam, eps, ports,
                              "endpointslicemirroring-controller.k8s.io", annotations))
    return out


def _pod_ready(pod: dict, publish_not_ready: bool) -> bool:
    if publish_not_ready:
        return True
    status = pod.get("status") if isinstance(pod.get("status"), dict) else {}
    conditions = status.get("conditions")
    if conditions is None:
        return True
    return any(isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _pod_ips(pod: dict) -> list[str]:
    status = pod.get("status") if isinstance(pod.get("status"), dict) else {}
    raw = [p.get("ip") for p in status.get("podIPs") or () if isinstance(p, dict)] or [status.get("podIP")]
    return [ip for ip in map(canonical_ip, raw) if ip]


def _target_port(port: dict, pod: dict) -> int | None:
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for container in _spec(pod).get("containers") or ():
        for cport in (container.get("ports") or ()) if isinstance(container, dict) else ():
            if isinstance(cport, dict) and cport.get("name") == target and isinstance(cport.get("containerPort"), int):
                return cport["containerPort"]
    return None


def from_pods(svc: dict, pods: list[dict]) -> list[dict]:
    spec = _spec(svc)
    selector = spec.get("selector")
    if not isinstance(selector, dict) or not selector:
        return []
    ns, name = key_of(svc)
    publish = bool(spec.get("publishNotReadyAddresses"))
    svc_ports = [p for p in spec.get("ports") or () if isinstance(p, dict)]
    groups: dict[tuple, dict[str, list]] = {}
    for pod in pods:
        labels = labels_of(pod)
        if any(labels.get(k) != v for k, v in selector.items()):
            continue
        status = pod.get("status") if isinstance(pod.get("status"), dict) else {}
        if status.get("phase") in ("Succeeded", "Failed") or meta_of(pod).get("deletionTimestamp"):
            continue
        ips = _pod_ips(pod)
        if not ips:
            continue
        ports = []
        for p in svc_ports:
            target = _target_port(p, pod)
            if target is None:
                break
            ports.append((p.get("name") or "", target, p.get("protocol") or "TCP"))
        else:
            pod_spec = _spec(pod)
            ep_base = {"conditions": {"ready": _pod_ready(pod, publish)},
                       "targetRef": {"kind": "Pod", "namespace": ns, "name": key_of(pod)[1]}}
            if pod_spec.get("hostname") and pod_spec.get("subdomain") == name:
                ep_base["hostname"] = pod_spec["hostname"]
            if pod_spec.get("nodeName"):
                ep_base["nodeName"] = pod_spec["nodeName"]
            seen: set[str] = set()
            for ip in ips:
                fam = family(ip)
                if fam in seen:
                    continue
                seen.add(fam)
                groups.setdefault(tuple(ports), {}).setdefault(fam, []).append({"addresses": [ip], **ep_base})
    families = _service_families(svc)
    out = []
    for n, (ports, by_family) in enumerate(groups.items()):
        port_list = [{"name": pname, "port": port, "protocol": proto} for pname, port, proto in ports]
        for fam in families or list(by_family):
            eps = by_family.get(fam)
            if eps:
                suffix = f"-{n}" if n else ""
                out.append(_slice(svc, f"{name}-{fam.lower()}{suffix}", fam, eps, port_list,
                                  "endpointslice-controller.k8s.io"))
    return out
