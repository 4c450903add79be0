"""loop: a server that forwards to itself is found out at start-up; a sound one is left alone."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import dns.rcode
import pytest
from conftest import free_port

from pydns.corefile import CorefileError
from pydns.testing.upstream import Upstream

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def self_forwarding(port: int) -> str:
    return f".:{port} {{\n bind 127.0.0.1\n loop\n forward . 127.0.0.1:{port}\n}}\n"


def wait_for(predicate, timeout: float = 5.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def upstream():
    up = Upstream({("example.org.", "A"): ["1.2.3.4"]}).start()
    yield up
    up.stop()


def test_forwarding_to_itself_is_fatal(serve):
    port = free_port()
    srv = serve(self_forwarding(port))
    assert wait_for(lambda: srv.instance.fatal_error is not None)
    message = srv.instance.fatal_error
    assert f"-> 127.0.0.1:{port}) detected for zone \".\"" in message
    assert "https://coredns.io/plugins/loop#troubleshooting" in message
    assert 'Query: "HINFO ' in message and "forward" in message
    assert srv.instance.stopping.is_set()


def test_the_command_exits_non_zero_on_a_loop(tmp_path):
    conf = tmp_path / "Corefile"
    conf.write_text(self_forwarding(free_port()))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "pydns", "-conf", str(conf)], capture_output=True, text=True,
                          timeout=30, env=env, cwd=str(tmp_path))
    assert proc.returncode != 0
    assert "Loop (" in proc.stderr and "detected for zone" in proc.stderr, proc.stderr


def test_a_sound_configuration_is_not_flagged(serve, upstream):
    srv = serve(f".:0 {{\n bind 127.0.0.1\n loop\n forward . 127.0.0.1:{upstream.port}\n}}\n")
    assert wait_for(lambda: any(q[1] == "HINFO" for q in upstream.queries))
    probes = [q for q in upstream.queries if q[1] == "HINFO"]
    assert len(probes) == 1
    labels = probes[0][0].rstrip(".").split(".")
    assert len(labels) == 2 and all(label.isdigit() for label in labels)
    r = srv.query("example.org", "A")
    assert r.rcode() == dns.rcode.NOERROR and r.answer
    assert srv.instance.fatal_error is None
    assert not srv.instance.stopping.is_set()


def test_probe_is_asked_in_the_blocks_first_zone(serve, upstream):
    serve(f"example.org:0 example.net:0 {{\n bind 127.0.0.1\n loop\n forward . 127.0.0.1:{upstream.port}\n}}\n")
    assert wait_for(lambda: any(q[1] == "HINFO" for q in upstream.queries))
    (name,) = [q[0] for q in upstream.queries if q[1] == "HINFO"]
    assert name.endswith(".example.org.") and len(name.split(".")) == 5


@pytest.mark.parametrize("text,message", [
    ("loop now", "takes no arguments"),
    ("loop {\n  fast\n }", "unknown property 'fast'"),
    ("loop\n loop", "can only be used once"),
])
def test_bad_loop_lines_are_start_up_errors(serve, text, message):
    with pytest.raises(CorefileError) as err:
        serve(f".:0 {{\n bind 127.0.0.1\n {text}\n}}\n")
    assert message in str(err.value) and err.value.line >= 3
