"""Assemble the image's whole filesystem: pydns's virtual environment and just what runs it.

    python image/rootfs.py VENV ROOT [--revision COMMIT]

Run by the Dockerfile's build stage with the interpreter the virtual environment was made
from; the final stage is ``FROM scratch`` plus ROOT.  ROOT receives, at their own paths:

- the interpreter and the standard library, without what a server never imports (tests,
  IDLE, tkinter, ensurepip, lib2to3, turtledemo);
- VENV, without the parts of the ``kubernetes`` client pydns does not use: its asyncio
  flavour ``kubernetes/aio`` and the packages only that imports (PRUNED below);
- every shared library the interpreter and the extension modules load (as ``ldd`` lists
  them) and the dynamic loader's cache, so that nothing else of the base image is needed;
- /etc/passwd and /etc/group naming the unprivileged user 65532, the CA bundle where
  OpenSSL looks for it, and an empty /tmp;
- byte code for all of it, compiled here, so a read-only root filesystem costs nothing.

No shell, no package manager, no coreutils: nothing but Python and pydns can run in it.
``--revision`` stamps the commit into the installed package (``pydns -version`` prints it).
"""

from __future__ import annotations

import argparse
import compileall
import os
import py_compile
import shutil
import ssl
import subprocess
import sys
import sysconfig
from pathlib import Path

# Not used by a DNS server; the largest of them are the test suite and IDLE.
STDLIB_SKIPPED = {"idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages"}
# Anywhere in the standard library: test suites; and the files for building C extensions.
STDLIB_SKIPPED_ANYWHERE = {"test", "tests", "idle_test"}
DYNLOAD_SKIPPED = ("_tkinter", "_test", "_ctypes_test", "_xxtestfuzz", "xx")

# The asyncio flavour of the kubernetes client (kubernetes.aio, never imported by
# `import kubernetes` nor by pydns) and the packages that only it imports.
PRUNED = ("kubernetes/aio", "aiohttp", "aiohappyeyeballs", "aiohttp_retry", "aiosignal", "frozenlist", "multidict",
          "propcache", "yarl", "attr", "attrs")

USER = "pydns"
UID = GID = 65532


def copy_file(src: str, root: Path) -> None:
    """``src`` at the same path under ``root``, with each symlink on the way kept as one."""
    path = Path(src)
    while True:
        target = root / path.relative_to("/")
        if target.exists() or target.is_symlink():
            return
        make_parents(path.parent, root)
        if path.is_symlink():
            link = os.readlink(path)
            target.symlink_to(link)
            path = (path.parent / link) if not os.path.isabs(link) else Path(link)
            continue
        if path.is_dir():  # a link to a directory: the directory, whose files come on their own
            make_parents(path, root)
            return
        shutil.copy2(path, target)
        return


def make_parents(directory: Path, root: Path) -> None:
    """Create ``directory`` under root, keeping directory symlinks (merged /usr: /lib -> usr/lib)."""
    parts = directory.relative_to("/").parts
    here = Path("/")
    for part in parts:
        here = here / part
        target = root / here.relative_to("/")
        if target.exists() or target.is_symlink():
            continue
        if here.is_symlink():
            link = os.readlink(here)
            target.symlink_to(link)
            make_parents((here.parent / link).resolve(), root)
        else:
            target.mkdir()


def copy_tree(src: Path, root: Path, skip=lambda path: False) -> None:
    for dirpath, dirnames, filenames in os.walk(src):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not skip(here / d)]
        make_parents(here, root)
        for name in dirnames + filenames:
            path = here / name
            if skip(path):
                continue
            if path.is_symlink() or not path.is_dir():
                copy_file(str(path), root)


def is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def shared_libraries(binaries: list[Path]) -> set[str]:
    """Every library ``ldd`` resolves for these binaries, and the dynamic loader."""
    found: set[str] = set()
    for binary in binaries:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            words = line.split()
            if "=>" in words and len(words) > words.index("=>") + 1 and words[words.index("=>") + 1].startswith("/"):
                found.add(words[words.index("=>") + 1])
            elif words and words[0].startswith("/"):
                found.add(words[0])  # the loader: /lib64/ld-linux-x86-64.so.2
    return found


def prune(site: Path) -> None:
    for name in PRUNED:
        for path in [site / name, *site.glob(f"{name.split('/')[-1]}-*.dist-info")]:
            if "/" in name and path.name.endswith(".dist-info"):
                continue
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()


def write_etc(root: Path) -> None:
    etc = root / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text(f"root:x:0:0:root:/root:/sbin/nologin\n{USER}:x:{UID}:{GID}:{USER}:/nonexistent:/sbin/nologin\n")
    (etc / "group").write_text(f"root:x:0:\n{USER}:x:{GID}:\n")
    if Path("/etc/ld.so.cache").exists():
        shutil.copy2("/etc/ld.so.cache", etc / "ld.so.cache")
    # The CA bundle where this interpreter's OpenSSL looks (forward to tls://, kubeconfigs).
    paths = ssl.get_default_verify_paths()
    bundle = next((p for p in ("/etc/ssl/certs/ca-certificates.crt", paths.cafile, paths.openssl_cafile)
                   if p and Path(p).is_file()), None)
    if bundle:
        copy_file(bundle, root)
        for where in (paths.openssl_cafile, os.environ.get("SSL_CERT_FILE")):
            if where and where != bundle and not (root / where.lstrip("/")).exists():
                make_parents(Path(where).parent, root)
                (root / where.lstrip("/")).symlink_to(bundle)
    tmp = root / "tmp"
    tmp.mkdir(exist_ok=True)
    tmp.chmod(0o1777)


def compile_all(root: Path, directories: list[Path]) -> None:
    """Byte code for every module, recorded under its path in the image, never re-checked
    against the source (the files cannot change in a read-only image)."""
    for directory in directories:
        compileall.compile_dir(root / directory.relative_to("/"), quiet=2, stripdir=str(root), prependdir="/",
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH, workers=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("venv", type=Path)
    ap.add_argument("root", type=Path)
    ap.add_argument("--revision", default="")
    args = ap.parse_args()
    venv, root = args.venv.absolute(), args.root.absolute()
    root.mkdir(parents=True, exist_ok=True)

    python = Path(os.path.realpath(venv / "bin" / "python"))
    stdlib = Path(sysconfig.get_path("stdlib"))
    dynload = stdlib / "lib-dynload"
    copy_file(str(venv / "bin" / "python"), root)  # the venv's link chain down to the interpreter
    copy_file(str(python), root)
    copy_tree(stdlib, root, skip=lambda p: p.parent == stdlib and (p.name in STDLIB_SKIPPED or p.name.startswith("config-"))
              or p.name in STDLIB_SKIPPED_ANYWHERE or p.name == "__pycache__"
              or p.parent == dynload and p.name.startswith(DYNLOAD_SKIPPED))
    copy_tree(venv, root, skip=lambda p: p.name == "__pycache__")
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    prune(root / site.relative_to("/"))
    if args.revision:
        (root / site.relative_to("/") / "pydns" / "REVISION").write_text(args.revision + "\n")

    binaries = [python] + [p for p in (root / stdlib.relative_to("/")).rglob("*.so")] \
        + [p for p in (root / venv.relative_to("/")).rglob("*.so*") if is_elf(p)]
    for library in sorted(shared_libraries(binaries)):
        copy_file(library, root)
    write_etc(root)
    compile_all(root, [stdlib, venv])


if __name__ == "__main__":
    main()
