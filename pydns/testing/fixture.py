"""The pytest plugin of pydns (entry point ``pytest11``): a DNS server for a cluster in a test.

    import pytest

    @pytest.mark.pydns(objects=[...dicts...], manifests=["k8s/"])
    def test_my_client(pydns_cluster):
        pydns_cluster.apply({"apiVersion": "v1", "kind": "Service", ...})
        answer = pydns_cluster.resolver.resolve("web.default.svc.cluster.local", "A")
        pydns_cluster.delete("Service", "default", "web")

``pydns_cluster`` starts pydns in-process on 127.0.0.1 and a free port, serving the
objects given (Namespaces, Services, EndpointSlices, Endpoints, Pods: dicts, YAML text or
manifest files and folders), and applies every change before returning, so the next query
already sees it.  ``pydns_factory`` starts more of them with explicit arguments.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Iterable

import pytest
import yaml

from pydns.testing.runner import ServerThread


class Cluster:
    """A running pydns serving a cluster that the test can change."""

    def __init__(self, objects: Iterable[dict] | str = (), manifests: Iterable[str] = (), zone: str = "cluster.local",
                 pods: str = "insecure", forward: str | None = None, extra: str = ""):
        self.zone = zone.rstrip(".")
        self._dir = tempfile.mkdtemp(prefix="pydns-cluster-")
        paths = [os.path.abspath(p) for p in manifests] or [self._dir]
        quoted = " ".join(f'"{p}"' for p in paths)
        lines = [
            ".:0 {",
            "    bind 127.0.0.1",
            "    errors",
            f"    kubernetes {self.zone} in-addr.arpa ip6.arpa {{",
            f"        manifests {quoted}",
            f"        pods {pods}",
            "        fallthrough in-addr.arpa ip6.arpa",
            "    }",
        ]
        if forward:
            lines.append(f"    forward . {forward}")
        lines += [f"    {line}" for line in extra.splitlines() if line.strip()]
        lines.append("}")
        self.corefile = "\n".join(lines) + "\n"
        self.server = ServerThread(self.corefile)
        self._initial = objects

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> "Cluster":
        self.server.start()
        if self._initial:
            self.apply(self._initial)
        return self

    def stop(self) -> None:
        self.server.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------- where to ask
    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def resolver(self):
        """A dnspython resolver that asks this server only."""
        import dns.resolver

        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [self.address[0]]
        resolver.port = self.port
        resolver.timeout = resolver.lifetime = 3.0
        resolver.cache = None
        return resolver

    def query(self, name: str, rdtype: str = "A", tcp: bool = False, **kw):
        """One question, the whole reply message (rcode, answer, authority...)."""
        return self.server.query(name, rdtype, tcp=tcp, **kw)

    # ---------------------------------------------------------------- changing the cluster
    @property
    def _source(self):
        return self.server.instance.configs[0].plugin("kubernetes").source

    def apply(self, objects: Iterable[dict] | dict | str) -> None:
        """Create or replace objects (dicts, a list of dicts, or YAML text with one or more documents)."""
        self._source.apply_objects(_as_list(objects))

    def delete(self, kind_or_obj, namespace: str | None = None, name: str | None = None) -> None:
        """Delete an object, given as a dict or as ``kind, namespace, name``."""
        if isinstance(kind_or_obj, (dict, str)) and namespace is None and name is None:
            objects = _as_list(kind_or_obj)
        else:
            meta = {"name": name}
            if namespace:
                meta["namespace"] = namespace
            objects = [{"apiVersion": _API_VERSIONS.get(kind_or_obj, "v1"), "kind": kind_or_obj, "metadata": meta}]
        self._source.delete_objects(objects)

    def replace_all(self, objects: Iterable[dict] | str) -> None:
        """Make the test's objects exactly these (manifest files stay as they are)."""
        self._source.set_objects(_as_list(objects))


_API_VERSIONS = {"EndpointSlice": "discovery.k8s.io/v1"}


def _as_list(objects) -> list[dict]:
    if isinstance(objects, str):
        return [doc for doc in yaml.safe_load_all(objects) if doc]
    if isinstance(objects, dict):
        return [objects]
    return list(objects)


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers",
        "pydns(objects=None, manifests=None, zone='cluster.local', pods='insecure', forward=None, extra=''): "
        "what the pydns_cluster fixture serves",
    )


@pytest.fixture
def pydns_factory():
    """``start(objects=..., manifests=..., zone=..., pods=..., forward=..., extra=...)`` -> a running Cluster."""
    started: list[Cluster] = []

    def start(objects=(), **kw) -> Cluster:
        cluster = Cluster(objects, **kw).start()
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        cluster.stop()


@pytest.fixture
def pydns_cluster(request, pydns_factory) -> Cluster:
    """pydns serving the cluster named by the test's ``@pytest.mark.pydns(...)`` (empty without one)."""
    marker = request.node.get_closest_marker("pydns")
    kwargs = dict(marker.kwargs) if marker else {}
    objects = kwargs.pop("objects", None) or (marker.args[0] if marker and marker.args else ())
    return pydns_factory(objects, **kwargs)
