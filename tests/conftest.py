"""Shared test helpers: start pydns in-process from Corefile text."""

from __future__ import annotations

import socket

import pytest

from pydns.testing import ServerThread


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


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
