"""Shared test helpers: start pydns in-process from Corefile text."""

from __future__ import annotations

import pytest

from pydns.testing import ServerThread, free_port  # noqa: F401 (tests import it from here)
from pydns.testing.fakeapi import FakeApiServer


@pytest.fixture
def serve():
    """``serve(corefile_text)`` starts pydns and returns the ServerThread; stopped after the test."""
    started: list[ServerThread] = []

    def start(corefile: str, **kw) -> ServerThread:
        srv = ServerThread(corefile, **kw).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def fake_apis():
    """``fake_apis(objects, **options)`` starts a FakeApiServer; every one is stopped after the test."""
    servers: list[FakeApiServer] = []

    def make(objects=(), **kw) -> FakeApiServer:
        srv = FakeApiServer(objects, **kw).start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()
