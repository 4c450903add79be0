"""One cluster served two ways, for tables that must hold for both sources of the kubernetes plugin:
``manifests`` files, and the official client reading the in-process fake API server.

A table module's shape::

    mc = server_fixture("mc", CLUSTER, COREFILE)    # a module fixture, once per source
    CASES = [(name, type, rcode, answer, soa zone, additional), ...]   # see ``check``
    test_names = table_test("mc", CASES)             # every case over UDP
    test_names_over_tcp = table_test("mc", [c for c in CASES if c[1] == "SRV"], tcp=True)
"""

from __future__ import annotations

import contextlib
import os
import time

import dns.rcode
import pytest
import yaml

from pydns.testing import ServerThread
from pydns.testing.fakeapi import FakeApiServer

SOURCES = ["manifests", "api"]
NOERROR, NXDOMAIN = dns.rcode.NOERROR, dns.rcode.NXDOMAIN


@pytest.fixture(scope="module", params=SOURCES)
def kind(request) -> str:
    """Each test module runs once per source."""
    return request.param


def rr(owner: str, rtype: str, data: str, ttl: int = 5) -> str:
    return f"{owner} {ttl} IN {rtype} {data}"


class Cluster:
    def __init__(self, kind: str, objects: list[dict], tmp):
        self.kind, self.objects, self.tmp = kind, [dict(o) for o in objects], tmp
        self.api: FakeApiServer | None = None
        self.path = tmp / "cluster.yaml"

    def source_line(self) -> str:
        if self.kind == "manifests":
            self._write()
            return f"manifests {self.path}"
        self.api = FakeApiServer(self.objects).start()
        return f"kubeconfig {self.api.kubeconfig(str(self.tmp / 'kubeconfig'))}"

    def apply(self, obj: dict) -> None:
        """Add or change one object, in the files or through the API."""
        ident = (obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
        self.objects = [o for o in self.objects
                        if (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) != ident] + [obj]
        if self.api is not None:
            self.api.apply(obj)
        else:
            self._write()

    def _write(self) -> None:
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as fh:
            fh.write(yaml.safe_dump_all(self.objects))
        os.replace(tmp, self.path)


@contextlib.contextmanager
def serving(kind: str, objects: list[dict], tmp, corefile: str):
    """A running server for ``corefile``, whose ``{source}`` is replaced by the source's line."""
    cluster = Cluster(kind, objects, tmp)
    srv = None
    try:
        srv = ServerThread(corefile.replace("{source}", cluster.source_line())).start()
        srv.cluster = cluster
        yield srv
    finally:
        if srv is not None:
            srv.stop()
        if cluster.api is not None:
            cluster.api.stop()


def server_fixture(name: str, objects: list[dict], corefile: str, doc: str | None = None):
    """The module fixture ``name``: a server for ``corefile`` over ``objects``, once per source."""

    @pytest.fixture(scope="module", name=name)
    def server(kind, tmp_path_factory):
        with serving(kind, objects, tmp_path_factory.mktemp(kind), corefile) as srv:
            yield srv

    server.__doc__ = doc
    return server


def lines(section) -> list[str]:
    return sorted(line for rrset in section for line in rrset.to_text().splitlines())


def ask(srv, name: str, rdtype: str, tcp: bool = False):
    msg = srv.query(name, rdtype, tcp=tcp)
    return msg.rcode(), lines(msg.answer)


def eventually(fn, expected, seconds: float = 5.0):
    """Wait (bounded) until ``fn()`` returns ``expected``; the last value otherwise."""
    deadline = time.monotonic() + seconds
    while True:
        got = fn()
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def answers_eventually(srv, name: str, rdtype: str, expected, seconds: float = 5.0) -> None:
    """Assert that ``ask`` comes to return ``expected`` (rcode, answer lines) within ``seconds``."""
    assert eventually(lambda: ask(srv, name, rdtype), expected, seconds) == expected


def setup_error(tmp_path, corefile: str) -> str:
    """The message a Corefile's start-up fails with."""
    path = tmp_path / "Corefile"
    path.write_text(corefile)
    srv = ServerThread("", path=str(path))
    try:
        srv.start()
    except Exception as exc:  # the CorefileError, FILE:LINE first
        return str(exc)
    finally:
        srv.stop()
    raise AssertionError("the Corefile started")


def case_id(case) -> str:
    return f"{case[0]}-{case[1]}"


def table_test(server: str, cases: list, tcp: bool = False):
    """A test asking every case of ``cases`` (see ``check``) of the module fixture named ``server``,
    over UDP or TCP; bind it to a ``test_...`` name in the table's module."""

    @pytest.mark.parametrize("case", cases, ids=case_id)
    def test(kind, request, case):
        # ``kind`` makes the test run once per source; the server is the fixture of that source.
        srv = request.getfixturevalue(server)
        check(srv.query(case[0], case[1], tcp=tcp), case)

    return test


def check(msg, case) -> None:
    """``case``: (name, type, rcode, answer lines, zone of the SOA in authority or None,
    additional lines or None: not checked)."""
    import dns.rdatatype

    name, rdtype, rcode, answer, soa, additional = case
    assert msg.rcode() == rcode, f"{name} {rdtype}: {dns.rcode.to_text(msg.rcode())}"
    got = [" ".join("SERIAL" if i == 6 and " SOA " in line else w for i, w in enumerate(line.split()))
           for line in lines(msg.answer)]
    assert got == sorted(answer)
    soas = [rrset.name.to_text() for rrset in msg.authority if rrset.rdtype == dns.rdatatype.SOA]
    assert soas == ([soa] if soa else [])
    if additional is not None:
        assert lines(msg.additional) == sorted(additional)
