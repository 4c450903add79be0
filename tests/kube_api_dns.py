"""Helpers for tests that run pydns's kubernetes plugin against the fake API server over real HTTP."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import dns.rcode
import dns.rdatatype

from pydns.testing import ServerThread
from pydns.testing.fakeapi import FakeApiServer


def kube_corefile(api: FakeApiServer, folder, options: str = "", zone: str = "cluster.local", plugins: str = "",
                  name: str = "kubeconfig") -> str:
    """A Corefile whose kubernetes plugin reads ``api``, with ``options`` in its block and
    ``plugins`` before it, served on 127.0.0.1."""
    kubeconfig = api.kubeconfig(str(folder / name))
    return (f".:0 {{\n bind 127.0.0.1\n{plugins}\n kubernetes {zone} in-addr.arpa ip6.arpa {{\n"
            f"  kubeconfig {kubeconfig}\n{options}\n }}\n}}\n")


def kube_server(api: FakeApiServer, folder, options: str = "", zone: str = "cluster.local", plugins: str = "",
                name: str = "kubeconfig") -> ServerThread:
    """pydns (UDP/TCP on 127.0.0.1) whose kubernetes plugin reads ``api``, with ``options`` in its block."""
    return ServerThread(kube_corefile(api, folder, options, zone, plugins, name)).start()


def answer(srv: ServerThread, name: str, rdtype: str = "A", tcp: bool = False) -> tuple[str, list[str]]:
    """(rcode name, sorted records of the asked type) of a question asked over the network."""
    msg = srv.query(name, rdtype, tcp=tcp)
    wanted = dns.rdatatype.from_text(rdtype)
    return dns.rcode.to_text(msg.rcode()), sorted(rr.to_text() for rrset in msg.answer if rrset.rdtype == wanted
                                                  for rr in rrset)


def wait_for(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(port: int, name: str) -> float | None:
    """A metric's value as /metrics shows it (the first sample of that name)."""
    for line in http_get(port, "/metrics")[1].splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def setup_error(folder, options: str):
    """The error that setting up a kubernetes block with ``options`` (on line 4 on) gives, with
    the Corefile's path: a CorefileError, or None if it sets up."""
    from pydns.corefile import CorefileError, parse
    from pydns.server import Instance, build

    api = FakeApiServer()
    path = folder / "Corefile"
    text = (f".:0 {{\n bind 127.0.0.1\n kubernetes cluster.local {{\n  kubeconfig {api.kubeconfig(str(folder / 'kc'))}\n"
            f"{options}\n }}\n}}\n")
    path.write_text(text)
    try:
        build(parse(text, str(path)), 53, Instance(str(path), text))
    except CorefileError as exc:
        return exc
    return None
