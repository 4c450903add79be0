"""The container image, proven without Docker.

Two halves.  The lint half parses the Dockerfile (dockerfile-parse) and holds it to what
the image promises: two stages on python:3.11-slim, a numeric non-root user, CoreDNS's
entrypoint style and ports, a health check, byte code compiled at build time, and no
package-manager or pip leftovers.  The build half runs the Dockerfile's own install steps
for real -- the build stage's COPY and RUN lines, then the final stage's install step with
its bind mount pointed at the wheels just built -- into a temporary virtual environment,
and runs the resulting ``pydns`` the way the Deployment does.

To keep it quick the build half adds ``--no-deps`` to pip and lends the virtual
environment this interpreter's installed packages; the dependency list the wheel declares
is then checked against pyproject.toml separately.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
import yaml

from dockerfile_parse import DockerfileParser

try:
    import tomllib
except ImportError:  # Python 3.10: the test extra installs tomli
    import tomli as tomllib

from tests.conftest import free_port
from tests.test_deploy import corefile_outside_the_cluster

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy" / "base"

# Every instruction the Dockerfile reference knows.
INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}


# ---------------------------------------------------------------- reading the Dockerfile


class Stage:
    """One FROM ... section: its instructions, each with the ENV/ARG values in force there."""

    def __init__(self, base: str, name: str | None):
        self.base = base
        self.name = name
        self.items: list[tuple[str, str, dict[str, str]]] = []  # (instruction, value, env)

    def all(self, instruction: str) -> list[tuple[str, dict[str, str]]]:
        return [(value, env) for ins, value, env in self.items if ins == instruction]

    def values(self, instruction: str) -> list[str]:
        return [value for value, _ in self.all(instruction)]


def parse_stages() -> list[Stage]:
    parser = DockerfileParser(path=str(DOCKERFILE))
    stages: list[Stage] = []
    global_args: dict[str, str] = {}
    for ins, ctx in zip(parser.structure, parser.context_structure):
        kind, value = ins["instruction"], ins["value"]
        if kind == "COMMENT":
            continue
        if kind == "FROM":
            m = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", value.strip(), re.IGNORECASE)
            assert m, f"unreadable FROM: {value}"
            base = re.sub(r"\$\{?(\w+)\}?", lambda v: global_args.get(v.group(1), v.group(0)), m.group(1))
            stages.append(Stage(base, m.group(2)))
            continue
        if not stages:
            assert kind == "ARG", f"only ARG may come before the first FROM, found {kind}"
            global_args.update(ctx.args)
            continue
        env = {**ctx.args, **ctx.envs}
        stages[-1].items.append((kind, value, env))
    return stages


def exec_form(value: str) -> list[str]:
    """A JSON-array instruction argument (exec form), or fail."""
    try:
        words = json.loads(value)
    except json.JSONDecodeError:
        pytest.fail(f"not in exec (JSON array) form: {value}")
    assert isinstance(words, list) and all(isinstance(w, str) for w in words)
    return words


def run_flags(value: str) -> tuple[dict[str, dict[str, str]], str]:
    """Split ``RUN --mount=type=bind,from=x,... cmd`` into ({flag: options}, command)."""
    flags: dict[str, dict[str, str]] = {}
    rest = value.strip()
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        name, _, opts = flag[2:].partition("=")
        flags[name] = dict(kv.partition("=")[::2] for kv in opts.split(","))
        rest = rest.strip()
    return flags, rest


STAGES = parse_stages()
BUILD, FINAL = STAGES[0], STAGES[-1]


def deploy_docs() -> list[dict]:
    docs = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def deploy_object(kind: str, name: str) -> dict:
    found = [d for d in deploy_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name} in deploy/: {len(found)} found"
    return found[0]


def pydns_container() -> dict:
    containers = deploy_object("Deployment", "coredns")["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "coredns")


# ---------------------------------------------------------------- lint


def test_every_instruction_is_a_dockerfile_instruction():
    parser = DockerfileParser(path=str(DOCKERFILE))
    unknown = [i["instruction"] for i in parser.structure if i["instruction"] not in INSTRUCTIONS | {"COMMENT"}]
    assert not unknown
    # RUN --mount needs BuildKit's Dockerfile syntax, declared as the first line.
    assert DOCKERFILE.read_text().splitlines()[0] == "# syntax=docker/dockerfile:1"


def test_two_stages_on_python_slim():
    assert len(STAGES) == 2
    assert [s.base for s in STAGES] == ["python:3.11-slim", "python:3.11-slim"]
    assert BUILD.name == "build" and FINAL.name is None
    # The wheels are built in the first stage; the final stage only installs them.
    assert any("pip wheel" in run for run in BUILD.values("RUN"))
    assert not any("pip wheel" in run for run in FINAL.values("RUN"))


def test_the_final_stage_takes_only_wheels_from_the_build_stage():
    # No COPY/ADD of the source tree: the wheels arrive through a bind mount, which
    # leaves nothing behind in a layer.
    assert FINAL.values("COPY") == [] and FINAL.values("ADD") == []
    mounts = [run_flags(run)[0].get("mount") for run in FINAL.values("RUN")]
    mounts = [m for m in mounts if m]
    assert mounts == [{"type": "bind", "from": "build", "source": "/wheels", "target": "/wheels"}]
    (_, env), = [(v, e) for v, e in FINAL.all("RUN") if "--mount" in v]
    assert env["WHEELS"] == mounts[0]["target"]


def test_no_package_manager_or_pip_leftovers():
    for stage in STAGES:
        for run in stage.values("RUN"):
            if "apt-get install" in run:
                assert stage is BUILD or "rm -rf /var/lib/apt/lists" in run, f"apt lists left behind by: {run}"
            assert "curl" not in run and "wget" not in run
    compilers = ("gcc", "build-essential", "libcap2-bin", "make ")
    assert not any(c in run for run in FINAL.values("RUN") for c in compilers)
    for run, env in FINAL.all("RUN"):
        if re.search(r"\bpip\b.*\binstall\b", run):
            assert "--no-cache-dir" in run or env.get("PIP_NO_CACHE_DIR") == "1", run
    # The build stage's pip keeps no cache either (its layer is thrown away, but the
    # wheel directory is what the final stage mounts: it must hold only wheels).
    assert BUILD.all("RUN")[-1][1].get("PIP_NO_CACHE_DIR") == "1"


def test_runs_as_a_numeric_non_root_user_that_the_deployment_agrees_with():
    users = FINAL.values("USER")
    assert users, "no USER in the final stage"
    uid, _, gid = users[-1].partition(":")
    # Numeric, so that the kubelet can check runAsNonRoot without an /etc/passwd lookup.
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    pod = deploy_object("Deployment", "coredns")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid)
    assert pod["securityContext"]["runAsGroup"] == int(gid)
    assert pod["securityContext"]["runAsNonRoot"] is True
    # The user exists in the image too (tools that read /etc/passwd find a name).
    assert any(f"--uid {uid}" in run and "useradd" in run for run in FINAL.values("RUN"))


def test_entrypoint_and_cmd_are_coredns_style_and_match_the_deployment():
    entrypoint = exec_form(FINAL.values("ENTRYPOINT")[-1])
    cmd = exec_form(FINAL.values("CMD")[-1])
    assert entrypoint == ["pydns"]
    assert cmd == ["-conf", "/etc/coredns/Corefile"]
    container = pydns_container()
    assert container.get("args", cmd) == cmd
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/coredns")
    volume = next(v for v in deploy_object("Deployment", "coredns")["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == "coredns"
    assert {"key": "Corefile", "path": "Corefile"} in volume["configMap"]["items"]


def test_exposes_coredns_ports():
    exposed = set()
    for value in FINAL.values("EXPOSE"):
        for word in value.split():
            port, _, proto = word.partition("/")
            exposed.add((int(port), proto or "tcp"))
    assert exposed == {(53, "udp"), (53, "tcp"), (9153, "tcp"), (8080, "tcp"), (8181, "tcp")}


def test_healthcheck_asks_the_health_endpoint_with_python():
    (check,) = FINAL.values("HEALTHCHECK")
    head, _, command = check.partition("CMD")
    assert head.strip() and all(opt.startswith("--") for opt in head.split())
    argv = exec_form(command.strip())
    assert argv[0] == "python"
    assert "http://127.0.0.1:8080/health" in argv[-1]


def test_byte_code_is_compiled_at_build_time_and_never_written_at_run_time():
    env = FINAL.all("ENTRYPOINT")[-1][1]
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    runs = FINAL.values("RUN")
    assert any('compileall -q "$VIRTUAL_ENV"' in run for run in runs)
    assert any("compileall" in run and "stdlib" in run for run in runs)
    assert env["PATH"].startswith(env["VIRTUAL_ENV"] + "/bin:")


# ---------------------------------------------------------------- .dockerignore


def _ignore_patterns() -> list[tuple[bool, re.Pattern]]:
    """.dockerignore as (negated, regex) in file order; the last match decides."""
    out = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip().lstrip("/"))
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex += pattern[i:end + 1]
                i = end + 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        out.append((negated, re.compile(regex + r"\Z")))
    return out


def in_context(rel: str) -> bool:
    """Would Docker send this path (relative to the repository) in the build context?"""
    parts = rel.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for negated, regex in _ignore_patterns():
        if any(regex.match(c) for c in candidates):
            excluded = not negated
    return not excluded


def test_dockerignore_sends_only_what_the_image_is_made_of():
    for rel in ("pyproject.toml", "README.md", "LICENSE", "pydns/__init__.py", "pydns/plugins/whoami.py",
                "pydns/demo/cluster.yaml"):
        assert in_context(rel), rel
    for rel in ("tests/test_cli.py", ".git/HEAD", "deploy/base/deployment.yaml", "docs/deploy.md", "bench/x.py",
                "pydns/__pycache__/cli.cpython-311.pyc", "pydns/plugins/__pycache__/log.cpython-311.pyc",
                "pydns.egg-info/PKG-INFO", "Dockerfile"):
        assert not in_context(rel), rel


# ---------------------------------------------------------------- running the install steps


def _copy_into_context(workdir: Path, value: str) -> None:
    """``COPY src... dest`` from the repository, as Docker would after .dockerignore."""
    words = value.split()
    assert not any(w.startswith("--") for w in words), f"unexpected COPY flags: {value}"
    *sources, dest = words
    target = workdir / dest
    for src in sources:
        path = ROOT / src
        assert path.exists(), f"COPY source missing: {src}"
        if path.is_file():
            assert in_context(src), f"{src} is excluded by .dockerignore"
            out = target / path.name if dest.endswith("/") else target
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out)
            continue
        for file in path.rglob("*"):
            rel = file.relative_to(ROOT).as_posix()
            if file.is_file() and in_context(rel):
                out = target / file.relative_to(path)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, out)


def _no_deps(command: str) -> str:
    """The same pip command without dependency resolution (they come from this environment)."""
    out, n = re.subn(r"(\bpip\b[^&;|]*?\s)(wheel|install)(\s)", r"\1\2 --no-deps\3", command)
    assert n == 1, f"expected one pip wheel/install in: {command}"
    return out


def _sh(command: str, env: dict[str, str], cwd: Path) -> None:
    proc = subprocess.run(["sh", "-ec", command], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{command}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """The build and install steps of the Dockerfile, run into a temporary tree."""
    tmp = tmp_path_factory.mktemp("image")
    shims = tmp / "bin"
    shims.mkdir()
    # The Dockerfile's `python` is the base image's interpreter: here, this one.
    (shims / "python").symlink_to(sys.executable)
    paths = {"/wheels": tmp / "wheels", "/opt/pydns": tmp / "venv"}

    def relocate(value: str) -> str:
        """The image's absolute paths, moved under the temporary tree."""
        out = []
        for part in value.split(":"):
            for image_path, here in paths.items():
                if part == image_path or part.startswith(image_path + "/"):
                    part = str(here) + part[len(image_path):]
            out.append(part)
        return ":".join(out)

    def env_for(stage_env: dict[str, str]) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        env.pop("VIRTUAL_ENV", None)
        for key, value in stage_env.items():
            env[key] = relocate(value)
        # The image's PATH (where it sets one) ahead of the base image's, which is here
        # this interpreter (the shim) and the host's PATH.
        image_path = env.get("PATH", "") if "PATH" in stage_env else ""
        env["PATH"] = ":".join(p for p in (image_path.strip(":"), str(shims), os.environ["PATH"]) if p)
        return env

    # Build stage: WORKDIR, COPY, RUN, in order.
    workdir = tmp / "src"
    for ins, value, stage_env in BUILD.items:
        if ins == "WORKDIR":
            assert value == "/src"
            workdir.mkdir()
        elif ins == "COPY":
            _copy_into_context(workdir, value)
        elif ins == "RUN":
            _sh(_no_deps(value), env_for(stage_env), workdir)
    wheels = sorted(paths["/wheels"].glob("*.whl"))
    assert [w.name.split("-")[0] for w in wheels] == ["pydns_cluster"]

    # Final stage: the install step, the one that mounts the build stage's wheels.
    (value, stage_env), = [(v, e) for v, e in FINAL.all("RUN") if "from=build" in v]
    _, command = run_flags(value)
    _sh(_no_deps(command), env_for(stage_env), tmp)
    venv = paths["/opt/pydns"]
    site = Path(subprocess.check_output([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True).strip())
    # The dependencies pip was told not to fetch: this interpreter's, after the venv's own.
    import sysconfig

    (site / "zz_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n" + sysconfig.get_path("platlib") + "\n")
    runtime = env_for(FINAL.all("ENTRYPOINT")[-1][1])
    return {"venv": venv, "site": site, "wheel": wheels[0], "env": runtime}


def _run(image, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), env=image["env"], capture_output=True, text=True, timeout=timeout, cwd="/")


def test_the_installed_package_is_the_wheel_not_the_source_tree(image):
    out = _run(image, "python", "-c", "import pydns, sys; print(pydns.__file__); print(sys.prefix)").stdout.split()
    assert out[0].startswith(str(image["site"]))
    assert out[1] == str(image["venv"])


def test_pydns_version_from_the_image(image):
    proc = _run(image, "pydns", "-version")
    assert proc.returncode == 0, proc.stderr
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert proc.stdout.splitlines()[0] == f"pydns-{pyproject['project']['version']}"


def test_the_wheel_carries_every_plugin(image):
    installed = _run(image, "pydns", "-plugins")
    source = subprocess.run([sys.executable, "-m", "pydns", "-plugins"], capture_output=True, text=True, cwd=ROOT)
    assert installed.returncode == 0 and source.returncode == 0
    assert installed.stdout == source.stdout
    assert "dns.kubernetes" in installed.stdout


def test_the_deployed_corefile_validates_with_the_image(image, tmp_path):
    corefile = corefile_outside_the_cluster(tmp_path)
    proc = _run(image, "pydns", "-validate", "-conf", str(corefile))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout


def test_nothing_is_written_at_run_time(image, tmp_path):
    """Every module has its byte code already, and running pydns adds no file."""
    venv = image["venv"]
    missing = []
    for py in (image["site"] / "pydns").rglob("*.py"):
        tag = sys.implementation.cache_tag
        if not (py.parent / "__pycache__" / f"{py.stem}.{tag}.pyc").exists():
            missing.append(py)
    assert not missing

    def snapshot():
        return {p: p.stat().st_mtime_ns for p in venv.rglob("*")}

    before = snapshot()
    corefile = corefile_outside_the_cluster(tmp_path)
    assert _run(image, "pydns", "-validate", "-conf", str(corefile)).returncode == 0
    assert _run(image, "pydns", "-plugins").returncode == 0
    assert snapshot() == before


def test_the_wheel_declares_the_dependencies_of_pyproject(image):
    with zipfile.ZipFile(image["wheel"]) as whl:
        name = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(whl.read(name).decode())
    declared = {_req(r) for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert declared == {_req(r) for r in pyproject["project"]["dependencies"]}
    scripts = whl_entry_points(image["wheel"])
    assert scripts.get("pydns") == pyproject["project"]["scripts"]["pydns"]


def _req(text: str) -> str:
    """A requirement string in one spelling: lower case, no spaces, ``_`` as ``-``."""
    return re.sub(r"\s+", "", text).lower().replace("_", "-")


def whl_entry_points(wheel: Path) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as whl:
        name = next(n for n in whl.namelist() if n.endswith(".dist-info/entry_points.txt"))
        text = whl.read(name).decode()
    section, out = None, {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and section == "console_scripts":
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_healthcheck_command_reports_health(image, serve):
    (check,) = FINAL.values("HEALTHCHECK")
    argv = exec_form(check.partition("CMD")[2].strip())
    port = free_port()
    srv = serve(f".:0 {{\n bind 127.0.0.1\n health 127.0.0.1:{port}\n whoami\n}}\n")
    here = [a.replace("127.0.0.1:8080", f"127.0.0.1:{port}") for a in argv]
    assert _run(image, *here, timeout=20).returncode == 0
    srv.stop()
    assert _run(image, *here, timeout=20).returncode != 0


def test_the_wheel_is_typed_licensed_and_named_for_pypi(image):
    with zipfile.ZipFile(image["wheel"]) as whl:
        names = whl.namelist()
        metadata = Parser().parsestr(whl.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode())
    assert "pydns/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert metadata["Name"] == "pydns-cluster" and metadata["License-Expression"] == "Apache-2.0"
    assert "Typing :: Typed" in metadata.get_all("Classifier")
    assert {url.split(",")[0] for url in metadata.get_all("Project-URL")} >= {"Homepage", "Source", "Issues"}
    assert (ROOT / "LICENSE").read_text().split()[:3] == ["Apache", "License", "Version"]
