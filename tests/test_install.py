"""README's two set-up commands, run as a newcomer would: in a fresh copy, a fresh venv.

The test command installs the ``test`` extra into a new virtual environment (no system
site-packages, so nothing the machine happens to have can stand in for a missing
dependency), then pytest collects every test module there, which imports each of them and
the pytest plugin pydns registers.  The demo command then installs pydns (not editable)
into the same environment and its ``pydns`` serves the demo.  pip's cache is used and byte
code is left to the first import (PIP_NO_COMPILE), which only saves time.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.test_demo import ask, running

ROOT = Path(__file__).resolve().parent.parent


def readme_command(after: str) -> str:
    """The one-line ``sh`` block that follows the README sentence starting with ``after``."""
    text = (ROOT / "README.md").read_text()
    m = re.search(re.escape(after) + r".*?\n```sh\n(.+?)\n```", text, re.S)
    assert m, f"README has no command after {after!r}"
    (command,) = m.group(1).splitlines()
    return command


DEMO = readme_command("Run pydns on its built-in demo cluster")
TESTS = readme_command("Run the tests:")


def test_the_readme_commands_make_and_use_a_virtual_environment():
    for command in (DEMO, TESTS):
        steps = command.split(" && ")
        assert steps[0] == "python3 -m venv .venv"
        # Every later step runs the environment's own programs, never the machine's.
        assert all(step.startswith(".venv/bin/") for step in steps[1:]), command
    assert ".venv/bin/python -m pip install -e '.[test]'" in TESTS.split(" && ")


def source_files() -> list[str]:
    """What a fresh clone holds: the files git tracks (and new ones it does not ignore)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, check=True, timeout=30).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no way to tell a fresh clone's files")
    return [f for f in out.decode().split("\0") if f and (ROOT / f).is_file()]


def clean_env() -> dict[str, str]:
    """This process's environment without any sign of the virtual environment running it."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    venv_bin = str(Path(sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_COMPILE"] = "1"
    return env


def sh(command: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run(["sh", "-ec", command], cwd=cwd, env=clean_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{command}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.timeout(600)
def test_readme_commands_work_in_a_fresh_clone_and_venv(tmp_path):
    if shutil.which("python3", path=clean_env()["PATH"]) is None:
        pytest.skip("no python3 on PATH")
    clone = tmp_path / "pydns"
    for rel in source_files():
        (clone / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, clone / rel)
    venv_python = clone / ".venv" / "bin" / "python"

    # README's test command, up to the test run: the run itself is this suite.
    *install, run = TESTS.split(" && ")
    assert run == ".venv/bin/python -m pytest -q"
    sh(" && ".join(install), clone, timeout=540)
    isolated = subprocess.run([venv_python, "-c", "import sys; print(sys.prefix == sys.base_prefix)"],
                              capture_output=True, text=True, check=True).stdout.strip()
    assert isolated == "False"
    collected = sh(".venv/bin/python -m pytest --collect-only -q", clone, timeout=300)
    modules = {line.split("::")[0] for line in collected.stdout.splitlines() if "::" in line}
    on_disk = {p.relative_to(clone).as_posix() for p in (clone / "tests").glob("test_*.py")}
    assert modules == on_disk, f"not collected: {sorted(on_disk - modules)}"

    # README's demo command: install pydns itself, then the `pydns` it installed serves the
    # demo (on a free port rather than 1053, which a developer's own pydns may hold).
    *install, serve = DEMO.split(" && ")
    assert serve == ".venv/bin/pydns"
    sh(" && ".join(install), clone, timeout=300)
    port = free_port()
    empty = tmp_path / "cwd"
    empty.mkdir()
    with running([clone / serve, "-dns.port", str(port)], cwd=empty, env=clean_env()):
        reply = ask(port, "web.shop.svc.cluster.local", "A", time.monotonic() + 30)
        assert [rr.address for rr in reply.answer[0]] == ["10.96.20.10"]
