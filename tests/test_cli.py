"""The `pydns` command: flags, -validate, start-up errors, signals."""

from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dns.message
import dns.query

import pydns
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent

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


def test_version_prints_version_python_platform_and_commit():
    out = run("-version")
    assert out.returncode == 0
    first, second = out.stdout.splitlines()
    assert first == f"pydns-{pydns.__version__}"
    parts = second.split(", ")
    assert parts[0] == f"{sys.platform}/{platform.machine()}"
    assert parts[1] == f"{platform.python_implementation()} {platform.python_version()}"
    # This checkout is a git work tree: the commit is known.
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    if head.returncode == 0:
        assert parts[2:] == [head.stdout.strip()]
    assert run("--version").stdout == out.stdout


def test_version_reads_the_commit_stamped_into_a_build(tmp_path):
    # A copy of the package with a REVISION file and no .git beside it, as a built wheel has.
    shutil.copytree(ROOT / "pydns", tmp_path / "pydns", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "pydns" / "REVISION").write_text("0123abc\n")
    out = subprocess.run([sys.executable, "-m", "pydns", "-version"], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(tmp_path)}, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1].endswith(", 0123abc")


def serve_in_background(*args, cwd) -> subprocess.Popen:
    return subprocess.Popen([*PYDNS, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    return out, err


def test_quiet_hides_the_startup_banner_but_not_the_query_log(tmp_path):
    port = free_port()
    conf = tmp_path / "Corefile"
    conf.write_text(f"example.org:{port} {{\n bind 127.0.0.1\n log\n whoami\n}}\n")
    loud = serve_in_background("-conf", str(conf), cwd=tmp_path)
    wait_for_dns(port)
    out, err = stop(loud)
    assert out.splitlines() == [f"example.org.:{port}", *run("-version").stdout.splitlines()]
    assert '"A IN example.org. udp' in err

    quiet = serve_in_background("-conf", str(conf), "-quiet", cwd=tmp_path)
    wait_for_dns(port)
    out, err = stop(quiet)
    assert out == ""
    # The log plugin's line for the query: -quiet is about start-up output only.
    assert '"A IN example.org. udp' in err
    assert "[INFO] shutting down" in err


def test_pidfile_holds_the_pid_while_serving_and_goes_away_after(tmp_path):
    port = free_port()
    conf = tmp_path / "Corefile"
    conf.write_text(f".:{port} {{\n bind 127.0.0.1\n whoami\n}}\n")
    pidfile = tmp_path / "run" / "pydns.pid"
    pidfile.parent.mkdir()
    proc = serve_in_background("-conf", str(conf), "-pidfile", str(pidfile), cwd=tmp_path)
    wait_for_dns(port)
    assert pidfile.read_text() == f"{proc.pid}\n"
    stop(proc)
    assert not pidfile.exists()


def test_an_unwritable_pidfile_is_logged_and_serving_goes_on(tmp_path):
    port = free_port()
    conf = tmp_path / "Corefile"
    conf.write_text(f".:{port} {{\n bind 127.0.0.1\n whoami\n}}\n")
    proc = serve_in_background("-conf", str(conf), "-pidfile", str(tmp_path / "missing" / "pydns.pid"), cwd=tmp_path)
    assert wait_for_dns(port).additional
    _, err = stop(proc)
    assert "[ERROR] could not write pidfile:" in err


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


def test_validate_reports_every_error(tmp_path):
    (tmp_path / "extra.conf").write_text("c.org {\n whoami\n bogus\n}\n")
    conf = tmp_path / "Corefile"
    conf.write_text(
        ".:53 {\n"                       # 1
        " whoami\n"                      # 2
        " nosuchplugin x\n"              # 3
        " log {\n"                       # 4
        "  class nonsense\n"             # 5
        " }\n"                           # 6
        " import missing.conf\n"         # 7
        "}\n"                            # 8
        "b.org:99999 {\n"                # 9
        " whoami extra\n"                # 10
        "}\n"                            # 11
        "a.org {\n"                      # 12
        " cache 30\n"                    # 13
        " cache 60\n"                    # 14
        "}\n"                            # 15
        "import extra.conf\n"            # 16
        "a.org {\n"                      # 17
        " whoami\n"                      # 18
        "}\n")                           # 19
    out = run("-validate", "-conf", str(conf))
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        f"{conf}:3: unknown directive 'nosuchplugin'",
        f"{conf}:5: plugin/log: unknown response class 'nonsense'",
        f"{conf}:7: import: no such file or snippet: missing.conf",
        f"{conf}:9: port 99999 out of range in 'b.org:99999'",
        f"{conf}:10: plugin/whoami: takes no arguments, found 'extra'",
        f"{conf}:14: plugin/cache: this plugin can only be used once per Server Block",
        f"{conf}:17: cannot serve dns://a.org.:53 - it is already defined",
        f"{tmp_path / 'extra.conf'}:3: unknown directive 'bogus'",
    ]
    assert out.stdout == ""


def test_corefile_with_no_server_block_is_refused(tmp_path):
    for text in ("", "# .:53 {\n#  whoami\n# }\n", "(snippet) {\n whoami\n}\n"):
        conf = tmp_path / "Corefile"
        conf.write_text(text)
        message = f"{conf}: no server block: the Corefile is empty or holds only comments or snippets"
        out = run("-validate", "-conf", str(conf))
        assert (out.returncode, out.stderr.strip()) == (1, message)
        out = run("-conf", str(conf))
        assert out.returncode == 1
        assert out.stderr.strip() == f"pydns: {message}"


def test_unset_corefile_variable_is_a_warning(tmp_path):
    fixture = os.path.join(ROOT, "corefile_examples", "test-fixture.Corefile")
    env = {k: v for k, v in os.environ.items() if k != "PYDNS_MANIFESTS"}
    out = subprocess.run([*PYDNS, "-validate", "-conf", fixture], capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode == 0, out.stderr
    assert (f"[WARNING] {fixture}:7: Corefile variable {{$PYDNS_MANIFESTS}} is not set; it is replaced by nothing"
            in out.stderr.splitlines())
    (tmp_path / "cluster.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n")
    env["PYDNS_MANIFESTS"] = str(tmp_path / "cluster.yaml")
    out = subprocess.run([*PYDNS, "-validate", "-conf", fixture], capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode == 0, out.stderr
    assert "not set" not in out.stderr


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
