"""The pytest plugin of pydns (entry point ``pytest11``): a DNS server for a cluster in a test.

    import pytest

    @pytest.mark.pydns(objects=[...dicts...])
    def test_my_client(pydns_cluster):
        pydns_cluster.apply({"apiVersion": "v1", "kind": "Service", ...})
        with pydns_cluster.as_system_resolver(namespace="shop"):
            my_client.connect("web")                 # socket.getaddrinfo asks pydns
        assert pydns_cluster.journal.names() == ["web.shop.svc.cluster.local", ...]

``pydns_cluster`` is pydns running in the test's process on 127.0.0.1 and a free port,
serving the objects given (Namespaces, Services, EndpointSlices, Endpoints, Pods: dicts,
YAML text, or manifest files and folders).  Tests that leave the server's shape at its
defaults (no ``manifests``, ``zone``, ``pods``, ``forward`` or ``extra``) share one server
per session, reset before each test to the test's own objects, an empty journal and the
system resolver restored; other tests get a server of their own.  ``pydns_factory``
starts more, with explicit arguments.

Changes are applied before the call returns, so the next query already sees them.  The
queries and ``wait_for`` need dnspython: ``pip install 'pydns-cluster[fixture]'``.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

import pytest
import yaml

from pydns.testing.runner import ServerThread
from pydns.testing.sysresolver import SystemResolver, dnspython, pod_resolver

# The log plugin writes one record per query to this logger (pydns/plugins/log.py).
_QUERYLOG = logging.getLogger("querylog")
_ids = itertools.count(1)


# ---------------------------------------------------------------- the journal


@dataclass(frozen=True)
class Query:
    """One question the server answered."""

    name: str      # as asked, without the final dot
    type: str      # "A", "AAAA", "SRV", ...
    rcode: str     # "NOERROR", "NXDOMAIN", ...
    proto: str     # "udp" or "tcp"
    client: tuple[str, int]


class Journal(list):
    """The queries the server answered, oldest first (``wait_for``'s own are left out)."""

    def names(self, rdtype: str | None = None) -> list[str]:
        return [q.name for q in self if rdtype is None or q.type == rdtype]


class _QueryLogHooks:
    """The journals' filters on the query log, and its level while any is there: INFO (a
    WARNING root would drop the records before any filter), the level it had after the last."""

    count = 0
    level_before = logging.NOTSET

    @classmethod
    def add(cls, journal_filter: logging.Filter) -> None:
        if cls.count == 0:
            cls.level_before = _QUERYLOG.level
            if not _QUERYLOG.isEnabledFor(logging.INFO):
                _QUERYLOG.setLevel(logging.INFO)
        cls.count += 1
        _QUERYLOG.addFilter(journal_filter)

    @classmethod
    def remove(cls, journal_filter: logging.Filter) -> None:
        _QUERYLOG.removeFilter(journal_filter)
        cls.count -= 1
        if cls.count == 0:
            _QUERYLOG.setLevel(cls.level_before)


class _JournalFilter(logging.Filter):
    """Takes the journal's lines out of the query log, so they are recorded, never printed."""

    def __init__(self, marker: str, journal: Journal, ignored: set[tuple[str, int]]):
        super().__init__()
        self.marker, self.journal, self.ignored = marker, journal, ignored

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(self.marker):
            return True
        remote, port, proto, rtype, rcode, name = message[len(self.marker):].split(" ", 5)
        client = (remote.strip("[]"), int(port))
        if client not in self.ignored:
            self.journal.append(Query(name.rstrip(".") or ".", rtype, rcode, proto, client))
        return False


# ---------------------------------------------------------------- the cluster


class Cluster:
    """A running pydns serving a cluster that the test can change and watch being asked."""

    def __init__(self, objects: Iterable[dict] | str = (), manifests: Iterable[str] = (), zone: str = "cluster.local",
                 pods: str = "insecure", forward: str | None = None, extra: str = ""):
        if any(line.split()[:1] == ["log"] for line in extra.splitlines()):
            raise ValueError("extra: the fixture logs every query into .journal already; leave 'log' out")
        self.zone = zone.rstrip(".")
        self._dir = tempfile.mkdtemp(prefix="pydns-cluster-")
        self._marker = f"pydns-journal-{os.getpid()}-{next(_ids)} "
        self.journal = Journal()
        self._probes: set[tuple[str, int]] = set()
        self._filter = _JournalFilter(self._marker, self.journal, self._probes)
        self._patch: SystemResolver | None = None
        paths = [os.path.abspath(p) for p in manifests] or [self._dir]
        quoted = " ".join(f'"{p}"' for p in paths)
        lines = [
            ".:0 {",
            "    bind 127.0.0.1",
            "    errors",
            f'    log . "{self._marker}{{remote}} {{port}} {{proto}} {{type}} {{rcode}} {{name}}"',
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
        self._hooked = False

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> "Cluster":
        _QueryLogHooks.add(self._filter)
        self._hooked = True
        try:
            self.server.start()
        except BaseException:
            self._unhook()
            raise
        if self._initial:
            self.apply(self._initial)
        return self

    def stop(self) -> None:
        self.restore_system_resolver()
        self.server.stop()
        self._unhook()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _unhook(self) -> None:
        if self._hooked:
            _QueryLogHooks.remove(self._filter)
            self._hooked = False

    def reset(self, objects: Iterable[dict] | str = ()) -> None:
        """Back to a fresh start: exactly these objects, an empty journal, the system resolver restored."""
        self.restore_system_resolver()
        self.replace_all(objects)
        self.journal.clear()

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

    def search_path(self, namespace: str) -> list[str]:
        """The search list of a pod's /etc/resolv.conf in ``namespace``."""
        return [f"{namespace}.svc.{self.zone}", f"svc.{self.zone}", self.zone]

    def make_resolver(self, namespace: str | None = None):
        """A dnspython resolver that asks this server only, without a cache; with a namespace,
        short names are completed the way a pod's resolver does (its search list, ndots:5)."""
        return pod_resolver(self.address[0], self.port, self.search_path(namespace) if namespace else ())

    @property
    def resolver(self):
        """A dnspython resolver that asks this server only (no cache, no search list)."""
        return self.make_resolver()

    def query(self, name: str, rdtype: str = "A", tcp: bool = False, **kw):
        """One question, the whole reply message (rcode, answer, authority...)."""
        return self.server.query(name, rdtype, tcp=tcp, **kw)

    def wait_for(self, name: str, rdtype: str = "A", *, value: str | Iterable[str] | None = None,
                 absent: bool = False, timeout: float = 5.0, interval: float = 0.02) -> list[str]:
        """Ask until ``name`` answers: with any record of ``rdtype``, with ``value`` (one or
        more records' text) among them, or, with ``absent=True``, with none (NXDOMAIN or
        NODATA).  Returns the records' text; raises TimeoutError, naming the last answer.

        For changes the test does not make through this object: manifest files edited on
        disk, objects written by the code under test.  These queries stay out of the journal.
        """
        dns = dnspython()
        wanted = {value} if isinstance(value, str) else set(value or ())
        question = dns.message.make_query(name, rdtype)
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            probe = sock.getsockname()
            self._probes.add(probe)
            try:
                while True:
                    reply = dns.query.udp(question, self.address[0], port=self.port, timeout=1.0, sock=sock)
                    found = [rr.to_text() for rrset in reply.answer if rrset.rdtype == question.question[0].rdtype
                             for rr in rrset]
                    if absent and not found and reply.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                        return found
                    if not absent and found and wanted <= set(found):
                        return found
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{name} {rdtype}: still {dns.rcode.to_text(reply.rcode())} {found} "
                                           f"after {timeout}s")
                    time.sleep(interval)
            finally:
                self._probes.discard(probe)

    # ---------------------------------------------------------------- the code under test resolving here
    def as_system_resolver(self, namespace: str | None = None) -> SystemResolver:
        """Route this process's ``socket.getaddrinfo``, ``gethostbyname``, ``gethostbyname_ex``,
        ``gethostbyaddr``, ``getnameinfo`` and ``getfqdn`` to this server, as a pod in
        ``namespace`` would resolve (its search list); ``localhost`` and loopback addresses
        stay with the system.  In effect at once; undone by ``restore_system_resolver()``,
        at the end of a ``with`` block, or when the test ends."""
        if self._patch is not None:
            self._patch.restore()
        self._patch = SystemResolver(self.make_resolver(namespace or "default"))
        return self._patch

    def restore_system_resolver(self) -> None:
        if self._patch is not None:
            self._patch.restore()
            self._patch = None

    def subprocess_env(self, namespace: str | None = None, env: dict[str, str] | None = None) -> dict[str, str]:
        """An environment in which a Python child process resolves through this server from
        its first line (socket functions as ``as_system_resolver``); needs dnspython there."""
        env = dict(os.environ if env is None else env)
        hook = os.path.join(os.path.dirname(os.path.abspath(__file__)), "subprocess_hook")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (hook, env.get("PYTHONPATH", "")) if p)
        env["PYDNS_RESOLVER"] = f"{self.address[0]}:{self.port}"
        env["PYDNS_SEARCH"] = " ".join(self.search_path(namespace or "default"))
        return env

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


# ---------------------------------------------------------------- pytest


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


@pytest.fixture(scope="session")
def pydns_session() -> Iterator[Cluster]:
    """One pydns for the whole session, with the default shape; ``pydns_cluster`` resets it per test."""
    with Cluster() as cluster:
        yield cluster


@pytest.fixture
def pydns_cluster(request) -> Iterator[Cluster]:
    """pydns serving the cluster named by the test's ``@pytest.mark.pydns(...)`` (empty without one)."""
    marker = request.node.get_closest_marker("pydns")
    kwargs = dict(marker.kwargs) if marker else {}
    objects = kwargs.pop("objects", None) or (marker.args[0] if marker and marker.args else ())
    if any(kwargs.get(key) for key in ("manifests", "forward", "extra")) or kwargs.get("zone", "cluster.local") != "cluster.local" \
            or kwargs.get("pods", "insecure") != "insecure":
        with Cluster(objects, **kwargs) as cluster:
            yield cluster
        return
    cluster = request.getfixturevalue("pydns_session")
    cluster.reset(objects)
    try:
        yield cluster
    finally:
        cluster.restore_system_resolver()
