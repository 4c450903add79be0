"""What the kubernetes plugin knows about a name, in words: its part of ``pydns explain``.

``why(plugin, key, qtype)`` reads the store and the options the way the renderer does and
says what the name is (a service, an endpoint, a pod, a namespace...) or why it does not
exist: the namespace is missing or not served, no service has that name there (and where
services with that name do exist), the service has no ready endpoints (and how many are not
ready, and whether it publishes not-ready addresses), the name looks like a client's
search-list expansion.  It decides nothing: the answer a query gets comes from the plugin
itself, and this only says what it was made from.

The store keeps the ready endpoints, and of the others only their count per slice
(``objects.read_slice``): it can say how many are not served, not which.
"""

from __future__ import annotations

from pydns.wire import NXDOMAIN, SERVFAIL, Answer, type_name
from pydns.zones import to_wire

from .objects import CLUSTER_IP, EXTERNAL, HEADLESS, canonical_ip
from .packing import TYPE_A, TYPE_AAAA, ip_of_reverse, wire_labels

KIND_NAMES = {CLUSTER_IP: "ClusterIP", HEADLESS: "headless", EXTERNAL: "ExternalName"}
SHOWN = 10  # names listed at most in one reason (namespaces, endpoints)


def explain(plugin, req, answer: Answer) -> tuple[str, dict]:
    """Why the plugin gave ``answer``: what the name is, then what that means for the reply."""
    reason, fields = why(plugin, req.key, req.qtype)
    if answer.rcode == SERVFAIL and not plugin.ready():
        reason += ("; the plugin has not finished its first sync with the API, so a name it does not know "
                   "yet answers SERVFAIL, not NXDOMAIN or NODATA")
    elif answer.rcode == NXDOMAIN:
        guess = search_expansion(plugin, req.key)
        if guess is not None:
            reason += "; " + guess[0]
            fields.update(guess[1])
    elif answer.an == 0 and fields.get("exists"):
        reason += f"; it has no {type_name(req.qtype)} records: NODATA"
    return reason, fields


def why(plugin, key: bytes, qtype: int) -> tuple[str, dict]:
    index = plugin.index
    zone = index.zone_of(key)
    if zone is None:
        return "not in the plugin's zones (" + ", ".join(z.name for z in index.zones) + ")", {}
    if zone.reverse:
        return _reverse(plugin, key)
    labels = [raw.decode("latin-1") for raw in wire_labels(key[: len(key) - len(zone.wire)])]
    n = len(labels)
    if n == 0:
        return f"the zone apex {zone.name}", {"exists": True}
    if labels in (["dns-version"], ["ns", "dns"]):
        return f"a name every zone has ({'.'.join(labels)}.{zone.name})", {"exists": True}
    if n == 1 and labels[0] in ("svc", "pod"):
        return f"the {labels[0]} subdomain of {zone.name}", {"exists": True}
    kind = labels[-1]
    if n < 2 or kind not in ("svc", "pod"):
        return (f"not a name the kubernetes plugin serves: below {zone.name} it serves "
                f"SERVICE.NAMESPACE.svc and POD.NAMESPACE.pod names"), {}
    ns = labels[-2]
    fields: dict = {"namespace": ns}
    missing = _namespace_missing(plugin, ns)
    if missing is not None:
        return missing, fields
    if n == 2:
        return f"namespace `{ns}` exists", {**fields, "exists": True}
    if kind == "pod":
        return _pod(plugin, labels, ns, fields)
    if n > 5:
        return f"too many labels for a service name: at most ENDPOINT.SERVICE.{ns}.svc or _PORT._PROTO.SERVICE", fields
    return _service(plugin, labels, ns, qtype, fields)


def _namespace_missing(plugin, ns: str) -> str | None:
    renderer = plugin.index.renderer
    if ns not in renderer.store.namespaces:
        if plugin.options.namespace_labels is not None:
            return (f"namespace `{ns}` does not exist, or its labels do not match `namespace_labels "
                    f"{plugin.options.namespace_labels.text}`")
        return f"namespace `{ns}` does not exist"
    if renderer.namespaces and ns not in renderer.namespaces:
        shown = ", ".join(f"`{x}`" for x in sorted(renderer.namespaces))
        return f"namespace `{ns}` is not in `namespaces` ({shown})"
    return None


def _service(plugin, labels: list[str], ns: str, qtype: int, fields: dict) -> tuple[str, dict]:
    store = plugin.index.store
    name = labels[-3]
    fields["service"] = name
    svc = store.services.get((ns, name))
    if svc is None:
        elsewhere = sorted(other for other, sname in store.services if sname == name and other != ns)
        reason = f"no such service `{name}` in namespace `{ns}`"
        if elsewhere:
            shown = ", ".join(f"`{x}`" for x in elsewhere[:SHOWN]) + (", ..." if len(elsewhere) > SHOWN else "")
            reason += f"; services with that name exist in {shown}"
            fields["service_in"] = elsewhere
        if plugin.options.labels is not None:
            reason += f" (only services matching `labels {plugin.options.labels.text}` are served)"
        return reason, fields
    kind = KIND_NAMES[svc.kind]
    fields["kind"] = kind
    if svc.kind == EXTERNAL:
        return _external(plugin, svc, labels, qtype, fields)
    slices = store.slices_of((ns, name))
    ready = sum(len(sl.ips) for sl in slices)
    not_ready = sum(sl.not_ready for sl in slices)
    fields.update(ready_endpoints=ready, not_ready_endpoints=not_ready, endpoint_slices=len(slices),
                  publish_not_ready_addresses=svc.publish_not_ready)
    what = f"{kind} service `{ns}/{name}`"
    if svc.kind == CLUSTER_IP:
        what += f" ({', '.join(svc.ips) or 'no cluster IP'})"
        fields["cluster_ips"] = list(svc.ips)
    what += f"; {ready} ready endpoint{'s' if ready != 1 else ''}"
    if not_ready:
        what += f", {not_ready} not ready,"
    what += f" in {len(slices)} EndpointSlice{'s' if len(slices) != 1 else ''}"
    if plugin.options.noendpoints:
        what += " (`noendpoints`: endpoints are not watched)"
    elif not_ready:
        what += "; " + _not_ready(svc.publish_not_ready)
    n = len(labels)
    if n == 3:
        if svc.kind == HEADLESS and not ready:
            what += "; a headless service without ready endpoints has no records"
        elif svc.kind == CLUSTER_IP and not ready and plugin.options.ignore_empty_service:
            what += "; `ignore empty_service` hides a ClusterIP service without ready endpoints"
        else:
            fields["exists"] = True
        return what, fields
    if n == 4:
        host = labels[0]
        names = sorted({_endpoint_name(h) for sl in slices for _ip, h in sl.endpoints})
        fields["endpoint"] = host
        if host in names:
            fields["exists"] = True
            return f"{what}; endpoint `{host}` is one of them", fields
        shown = ", ".join(names[:SHOWN]) + (", ..." if len(names) > SHOWN else "")
        return f"{what}; no ready endpoint is named `{host}` (ready ones: {shown or 'none'})", fields
    ports = ", ".join(f"{p or '(unnamed)'}/{proto} {port}" for p, proto, port in svc.ports if port >= 0)
    fields["port"] = f"{labels[0]}.{labels[1]}"
    return f"{what}; the port name `{labels[0]}.{labels[1]}` is matched against its ports ({ports or 'none'})", fields


def _not_ready(published: bool) -> str:
    """Why endpoints that are not ready are not served, by the service's publishNotReadyAddresses."""
    if published:
        # The EndpointSlice controller marks every endpoint of such a service ready: these
        # were marked by something else (a manifest, another controller).
        return ("publishNotReadyAddresses is true, yet their EndpointSlices mark them not ready, "
                "and an endpoint's ready condition decides")
    return ("publishNotReadyAddresses is false: endpoints that are not ready are never served "
            "(with true, the EndpointSlice controller marks every endpoint ready)")


def _endpoint_name(wire_label: bytes) -> str:
    return wire_label[1:].decode("latin-1")


def _external(plugin, svc, labels: list[str], qtype: int, fields: dict) -> tuple[str, dict]:
    what = f"ExternalName service `{svc.ns}/{svc.name}`"
    if not svc.target:
        return f"{what}; its externalName is empty or an IP address, so it has no records", fields
    fields["target"] = svc.target + "."
    if len(labels) != 3:
        return f"{what}; it has no endpoint or port names", fields
    fields["exists"] = True
    what += f": CNAME to {svc.target}."
    if qtype in (TYPE_A, TYPE_AAAA):
        if plugin.index.zone_of(to_wire(svc.target)) is not None:
            what += "; the target is in the cluster's zone and is looked up in the store"
        else:
            what += "; the target is outside the cluster's zone and is resolved through this server's own chain"
    return what, fields


def _pod(plugin, labels: list[str], ns: str, fields: dict) -> tuple[str, dict]:
    mode = plugin.options.pods
    if mode == "disabled":
        return "pod names are off (`pods disabled`, the default; `pods insecure` or `verified` turns them on)", fields
    dashed = labels[-3]
    text = dashed.replace("-", ".") if dashed.count("-") == 3 and "--" not in dashed else dashed.replace("-", ":")
    ip = canonical_ip(text)
    if ip is None or len(labels) > 5:
        return f"`{dashed}` is not a dashed pod address (as 10-0-0-1)", fields
    fields["address"] = ip
    if mode == "insecure":
        fields["exists"] = True
        return f"`pods insecure`: any address answers, here {ip}", fields
    count = plugin.index.store.pod_count(ns, text)
    if not count:
        return f"`pods verified`: no pod in namespace `{ns}` has address {ip}", fields
    fields["exists"] = True
    return f"`pods verified`: {count} pod{'s' if count != 1 else ''} in namespace `{ns}` with address {ip}", fields


def _reverse(plugin, key: bytes) -> tuple[str, dict]:
    ip = ip_of_reverse(key)
    if ip is None:
        return "not the reverse name of one address", {}
    store = plugin.index.store
    fields = {"address": ip}
    services = [f"{s.ns}/{s.name}" for s in store.services_at(ip)]
    if services:
        fields["exists"] = True
        return f"{ip} is the cluster IP of service {', '.join(services)}", fields
    endpoints = sorted({f"{sl.ns}/{sl.service}" for sl in store.slices_at(ip)})
    if endpoints:
        fields["exists"] = True
        return f"{ip} is a ready endpoint of service {', '.join(endpoints)}", fields
    return f"no service or ready endpoint has address {ip}", fields


def search_expansion(plugin, key: bytes) -> tuple[str, dict] | None:
    """The name a client meant, if ``key`` looks like a search-list expansion of it.

    A pod's resolv.conf says ``search NS.svc.ZONE svc.ZONE ZONE`` with ``ndots:5``: a name
    with fewer than five dots is first tried with each of those appended.  A name that is
    another name (two labels or more, as ``example.com``) plus one of those suffixes is
    such a try; its NXDOMAIN is expected, and the client goes on down its list.
    """
    index = plugin.index
    zone = index.zone_of(key)
    if zone is None or zone.reverse:
        return None
    labels = [raw.decode("latin-1") for raw in wire_labels(key[: len(key) - len(zone.wire)])]
    zone_text = zone.name.rstrip(".")
    store = index.store

    def under(*parts: str) -> str:
        return ".".join(p for p in parts if p)

    n = len(labels)
    tries = []
    if n >= 4 and labels[-1] == "svc" and labels[-2] in store.namespaces and (labels[-2], labels[-3]) not in store.services:
        tries.append((labels[:-2], under(labels[-2], "svc", zone_text)))  # NAME + NS.svc.ZONE
    if n >= 3 and labels[-1] == "svc" and labels[-2] not in store.namespaces:
        tries.append((labels[:-1], under("svc", zone_text)))  # NAME + svc.ZONE
    if n >= 2 and labels[-1] not in ("svc", "pod"):
        tries.append((labels, zone_text))  # NAME + ZONE
    for meant, domain in tries:
        if len(meant) >= 2:
            name = ".".join(meant) + "."
            return (f"the name looks like a search-list expansion of {name} with search domain {domain} "
                    f"(the client's ndots made this query; it asks {name} itself next)",
                    {"search_expansion_of": name, "search_domain": domain + "."})
    return None
