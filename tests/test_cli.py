"""The `pydns` command: flags, -validate, start-up errors, signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import dns.message
import dns.query

from tests.conftest import free_port

PYDNS = [sys.executable, "-m", "pydns"]


def run(*args, cwd=None, timeout=30):
    return subprocess.run([*PYDNS, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def wait_for_dns(port: int, timeout: float = 10.0) -> dns.message.Message:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return dns.query.udp(dns.message.make_query("example.org", "A"), "127.0.0.1", port=port, timeout=0.3)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_version():
    out = run("-version")
    assert out.returncode == 0
    assert out.stdout.strip().startswith("pydns-")
    assert run("--version").stdout == out.stdout


def test_plugins_lists_what_this_build_knows():
    out = run("-plugins")
    assert out.returncode == 0
    for name in ("whoami", "bind", "errors", "log"):
        assert f"dns.{name}" in out.stdout


def test_validate_ok_and_broken(tmp_path):
    good = tmp_path / "Corefile"
    good.write_text(".:53 {\n whoami\n}\n")
    out = run("-validate", "-conf", str(good))
    assert out.returncode == 0, out.stderr
    bad = tmp_path / "Broken"
    bad.write_text(".:53 {\n whoami\n nosuchplugin x\n}\n")
    out = run("-validate", "--conf", str(bad))
    assert out.returncode == 1
    assert out.stderr.strip() == f"{bad}:3: unknown directive 'nosuchplugin'"


def test_startup_error_names_file_and_line(tmp_path):
    bad = tmp_path / "Corefile"
    bad.write_text(".:53 {\n log {\n  class nonsense\n }\n}\n")
    out = run("-conf", str(bad))
    assert out.returncode != 0
    assert f"{bad}:3: plugin/log: unknown response class 'nonsense'" in out.stderr


def test_port_in_use_is_a_startup_error(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        conf = tmp_path / "Corefile"
        conf.write_text(f"\n.:{port} {{\n bind 127.0.0.1\n whoami\n}}\n")
        out = run("-conf", str(conf))
    assert out.returncode != 0
    assert f"{conf}:2: listen udp 127.0.0.1:{port}:" in out.stderr
    assert "in use" in out.stderr


def test_dns_port_flag_and_corefile_in_working_directory(tmp_path):
    port = free_port()
    (tmp_path / "Corefile").write_text(". {\n bind 127.0.0.1\n whoami\n}\n")
    proc = subprocess.Popen([*PYDNS, "-dns.port", str(port)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        reply = wait_for_dns(port)
        assert reply.additional
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "shutting down" in proc.stderr.read()


def test_sigint_stops_gracefully(tmp_path):
    port = free_port()
    conf = tmp_path / "Corefile"
    conf.write_text(f".:{port} {{\n bind 127.0.0.1\n whoami\n}}\n")
    proc = subprocess.Popen([*PYDNS, "-conf", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_dns(port)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
