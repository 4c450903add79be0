"""The container image, proven without Docker.

Two halves.  The lint half parses the Dockerfile (dockerfile-parse) and holds it to what
the image promises: a build stage on the official Python image pinned by digest that
installs the dependencies from image/requirements.lock with every hash required, a final
stage that is only the assembled root filesystem (no shell, no package manager), a numeric
non-root user, CoreDNS's entrypoint style and ports, and a health check.  The build half
runs the build stage's own COPY and RUN lines for real, with the image's paths moved into
a temporary directory: the locked, hash-checked install, the wheel, and image/rootfs.py
assembling the root filesystem.  Then it runs pydns *inside* that filesystem (chroot, as
root), the way the Deployment does: -version, -plugins, -validate of the deployed
Corefile, serving names synced from a fake API server through the pruned kubernetes
client, the health check, and writing nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
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
from tests.test_demo import ask, running
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

DIGEST = re.compile(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}")
LOCK = ROOT / "image" / "requirements.lock"
BUILD_LOCK = ROOT / "image" / "build-requirements.lock"


def locked(path: Path) -> dict[str, tuple[str, list[str]]]:
    """A pip-compile lock as {name: (version, [hashes])}; fails on an unpinned or unhashed line."""
    out: dict[str, tuple[str, list[str]]] = {}
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        # name==version, an environment marker where the dependency has one, then the hashes
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s;]+)(?:\s*;[^-]+?)?((?:\s+--hash=sha256:[0-9a-f]{64})+)", line)
        assert m, f"{path.name}: not pinned with hashes: {line}"
        out[m.group(1).lower().replace("_", "-")] = (m.group(2), re.findall(r"sha256:([0-9a-f]{64})", m.group(3)))
    return out


def test_every_instruction_is_a_dockerfile_instruction():
    parser = DockerfileParser(path=str(DOCKERFILE))
    for ins in parser.structure:
        assert ins["instruction"] in INSTRUCTIONS | {"COMMENT"}, ins


def test_the_base_image_is_the_official_python_image_pinned_by_digest():
    assert len(STAGES) == 2 and BUILD.name == "build"
    assert DIGEST.fullmatch(BUILD.base), f"not pinned by digest: {BUILD.base}"
    name, _, tag = BUILD.base.split("@")[0].partition(":")
    assert name in ("python", "docker.io/library/python") and tag.startswith("3.11.") and "slim" in tag
    # The tag names the same Python the lock was made for.
    assert "with Python 3.11" in LOCK.read_text()


def test_the_final_stage_is_only_the_assembled_root_filesystem():
    assert FINAL.base == "scratch"
    # Nothing runs in the final stage (there is nothing to run a RUN with), and the only
    # thing it takes is the build stage's /rootfs.
    assert FINAL.values("RUN") == [] and FINAL.values("ADD") == []
    assert FINAL.values("COPY") == ["--from=build /rootfs /"]
    assert any("image/rootfs.py /opt/pydns /rootfs" in run for run in BUILD.values("RUN"))


def test_dependencies_are_installed_from_the_lock_with_every_hash_required():
    runs = " ".join(BUILD.values("RUN"))
    install = re.search(r"pip --python /opt/pydns/bin/python install ([^&]*)-r image/requirements\.lock", runs)
    assert install and "--require-hashes" in install.group(1) and "--only-binary=:all:" in install.group(1)
    assert "--no-deps" in install.group(1)  # the lock is the whole list: nothing resolved at build time
    assert re.search(r"pip install --require-hashes --no-deps -r image/build-requirements\.lock", runs)
    # pydns itself is built from the source without fetching a build backend.
    assert "--no-build-isolation" in runs
    assert "image/requirements.lock" in " ".join(BUILD.values("COPY"))


def test_the_lock_pins_every_dependency_that_pyproject_declares():
    from packaging.requirements import Requirement

    lock = locked(LOCK)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for text in pyproject["project"]["dependencies"]:
        req = Requirement(text)
        name = req.name.lower().replace("_", "-")
        assert name in lock, f"{name} is not in image/requirements.lock: regenerate it (docs/image.md)"
        assert req.specifier.contains(lock[name][0], prereleases=True), f"{name}=={lock[name][0]} breaks {text}"
    assert all(hashes for _, hashes in lock.values())
    (setuptools,) = locked(BUILD_LOCK).items()
    build = Requirement(tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"][0])
    assert setuptools[0] == build.name and build.specifier.contains(setuptools[1][0])


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


def test_byte_code_is_never_written_at_run_time():
    env = FINAL.all("ENTRYPOINT")[-1][1]
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env["PATH"] == env["VIRTUAL_ENV"] + "/bin"


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
                "pydns/demo/cluster.yaml", "image/requirements.lock", "image/build-requirements.lock",
                "image/rootfs.py"):
        assert in_context(rel), rel
    for rel in ("tests/test_cli.py", ".git/HEAD", "deploy/base/deployment.yaml", "docs/deploy.md", "bench/x.py",
                "pydns/__pycache__/cli.cpython-311.pyc", "pydns/plugins/__pycache__/log.cpython-311.pyc",
                "pydns.egg-info/PKG-INFO", "Dockerfile", "image/build-requirements.in"):
        assert not in_context(rel), rel


# ---------------------------------------------------------------- running the build stage


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


def _sh(command: str, env: dict[str, str], cwd: Path) -> None:
    proc = subprocess.run(["sh", "-ec", command], env=env, cwd=cwd, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, f"{command}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"


REVISION = "0badc0de"


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """The build stage's COPY and RUN steps, run for real into a temporary tree."""
    tmp = tmp_path_factory.mktemp("image")
    # The build stage's `python`: a fresh interpreter environment with pip, as the base
    # image has (made from this interpreter, so the test's own packages stay untouched).
    base = tmp / "base"
    subprocess.run([sys.executable, "-m", "venv", str(base)], check=True, timeout=120)
    shims = tmp / "bin"
    shims.mkdir()
    (shims / "python").symlink_to(base / "bin" / "python")
    paths = {"/src": tmp / "src", "/wheels": tmp / "wheels", "/opt/pydns": tmp / "opt" / "pydns", "/rootfs": tmp / "rootfs"}

    def relocate(value: str) -> str:
        for image_path, here in paths.items():
            value = re.sub(rf"(?<![\w./-]){re.escape(image_path)}(?=[/\s:]|$)", str(here), value)
        return value

    env = dict(os.environ, PATH=f"{shims}:{os.environ['PATH']}", REVISION=REVISION)
    for key in ("PYTHONPATH", "VIRTUAL_ENV"):
        env.pop(key, None)
    workdir = None
    for ins, value, stage_env in BUILD.items:
        if ins == "WORKDIR":
            workdir = Path(relocate(value))
            workdir.mkdir(parents=True)
        elif ins == "COPY":
            _copy_into_context(workdir, value)
        elif ins == "RUN":
            run_env = {**env, **{k: relocate(v) for k, v in stage_env.items() if k != "REVISION"}}
            run_env.pop("PIP_NO_CACHE_DIR")  # here pip's cache only saves time
            _sh(relocate(value), run_env, workdir)
    root = paths["/rootfs"]
    assert (root / str(paths["/opt/pydns"]).lstrip("/") / "bin" / "pydns").exists()
    # What a container runtime mounts into every container.
    assert not (root / "etc" / "resolv.conf").exists()
    (root / "etc" / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    return {"root": root, "venv": paths["/opt/pydns"], "wheel": next(paths["/wheels"].glob("*.whl")),
            "env": FINAL.all("ENTRYPOINT")[-1][1]}


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="running inside the image's filesystem needs chroot (root)")


def in_image(image, *argv: str, timeout: float = 60, background: bool = False):
    """Run argv inside the assembled filesystem, with the image's environment and nothing else."""
    venv = str(image["venv"])
    env = {k: v.replace("/opt/pydns", venv) for k, v in image["env"].items()}
    argv = [venv + a[len("/opt/pydns"):] if a.startswith("/opt/pydns/") else a for a in argv]
    command = [shutil.which("chroot") or "/usr/sbin/chroot", str(image["root"]), *argv]
    if background:
        return running(command, env=env, cwd="/")
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd="/")


def test_the_filesystem_holds_python_and_pydns_and_no_shell_or_package_manager(image):
    root = image["root"]
    for tool in ("bin/sh", "bin/bash", "bin/dash", "usr/bin/apt", "usr/bin/apt-get", "usr/bin/dpkg", "usr/bin/perl",
                 "usr/bin/env", "bin/ls"):
        assert not (root / tool).exists(), tool
    programs = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and os.access(path, os.X_OK) and ".so" not in path.name:
            with open(path, "rb") as fh:
                if fh.read(4) == b"\x7fELF":
                    programs.append(path.name)
    assert programs == [f"python{sys.version_info.major}.{sys.version_info.minor}"]
    # No pip anywhere: nothing can install into the image.
    assert not list(root.rglob("pip")) and not list(root.rglob("ensurepip"))
    assert (root / "etc" / "passwd").read_text().splitlines()[-1].startswith("pydns:x:65532:65532:")


@needs_root
def test_pydns_version_from_the_image_carries_the_build_revision(image):
    proc = in_image(image, "/opt/pydns/bin/pydns", "-version")
    assert proc.returncode == 0, proc.stderr
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    first, second = proc.stdout.splitlines()
    assert first == f"pydns-{pyproject['project']['version']}"
    assert second.endswith(f", {REVISION}")


@needs_root
def test_the_image_carries_every_plugin(image):
    installed = in_image(image, "/opt/pydns/bin/pydns", "-plugins")
    source = subprocess.run([sys.executable, "-m", "pydns", "-plugins"], capture_output=True, text=True, cwd=ROOT)
    assert installed.returncode == 0 and source.returncode == 0, installed.stderr
    assert installed.stdout == source.stdout


@needs_root
def test_the_deployed_corefile_validates_in_the_image_and_nothing_is_written(image, tmp_path):
    root = image["root"]
    etc = root / "etc" / "coredns"
    etc.mkdir(exist_ok=True)
    corefile = corefile_outside_the_cluster(tmp_path)
    kubeconfig = tmp_path / "kubeconfig"
    shutil.copy(kubeconfig, etc / "kubeconfig")
    (etc / "Corefile").write_text(corefile.read_text().replace(str(kubeconfig), "/etc/coredns/kubeconfig"))

    def snapshot():
        return {p: p.stat().st_mtime_ns for p in root.rglob("*") if "etc/coredns" not in str(p)}

    before = snapshot()
    proc = in_image(image, "/opt/pydns/bin/pydns", "-validate", "-conf", "/etc/coredns/Corefile")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "/etc/coredns/Corefile: OK" in proc.stdout
    assert snapshot() == before, "running pydns wrote into the image's filesystem"


@needs_root
def test_the_image_serves_names_synced_from_the_api_with_the_pruned_client(image, tmp_path):
    from pydns.testing.fakeapi import FakeApiServer
    from tests.test_deploy import CLUSTER

    site = next((image["root"] / str(image["venv"]).lstrip("/")).rglob("site-packages"))
    assert (site / "kubernetes" / "client").is_dir() and not (site / "kubernetes" / "aio").exists()
    assert not (site / "aiohttp").exists()
    api = FakeApiServer(CLUSTER).start()
    etc = image["root"] / "etc" / "coredns"
    etc.mkdir(exist_ok=True)
    api.kubeconfig(str(etc / "api.kubeconfig"))
    port = free_port()
    (etc / "Api.Corefile").write_text(
        f".:{port} {{\n    bind 127.0.0.1\n    kubernetes cluster.local {{\n        kubeconfig /etc/coredns/api.kubeconfig\n    }}\n}}\n")
    try:
        with in_image(image, "/opt/pydns/bin/pydns", "-conf", "/etc/coredns/Api.Corefile", background=True):
            reply = ask(port, "web.default.svc.cluster.local", "A", time.monotonic() + 30, until=lambda r: r.answer)
            assert [rr.to_text() for rrset in reply.answer for rr in rrset] == ["10.96.0.20"]
    finally:
        api.stop()


@needs_root
def test_healthcheck_command_reports_health_from_the_image(image, serve):
    (check,) = FINAL.values("HEALTHCHECK")
    argv = exec_form(check.partition("CMD")[2].strip())
    port = free_port()
    srv = serve(f".:0 {{\n bind 127.0.0.1\n health 127.0.0.1:{port}\n whoami\n}}\n")
    here = [a.replace("127.0.0.1:8080", f"127.0.0.1:{port}") for a in argv]
    # `python` resolves through the image's PATH, as the container runtime resolves it.
    python = "/opt/pydns/bin/" + here[0]
    assert in_image(image, python, *here[1:], timeout=20).returncode == 0
    srv.stop()
    assert in_image(image, python, *here[1:], timeout=20).returncode != 0


def test_the_wheel_declares_the_dependencies_of_pyproject(image):
    with zipfile.ZipFile(image["wheel"]) as whl:
        name = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(whl.read(name).decode())
    declared = {_req(r) for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert declared == {_req(r) for r in pyproject["project"]["dependencies"]}


def _req(text: str) -> str:
    """A requirement string in one spelling: lower case, no spaces, ``_`` as ``-``."""
    return re.sub(r"\s+", "", text).lower().replace("_", "-")


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
