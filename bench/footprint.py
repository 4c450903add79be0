"""What the image's Python side weighs: installed size, and the memory of an idle pydns.

    python bench/footprint.py [--json out.json]

Sizes are read from this environment's site-packages (where the ``kubernetes`` client and
the rest are installed): the whole client, its asyncio flavour ``kubernetes/aio`` and the
packages only that imports (what image/rootfs.py leaves out), with and without byte code.
Memory is the resident set size (VmRSS) of real processes, side by side in one run,
medians of three:

    python          a bare interpreter (the floor)
    client          python importing ``kubernetes.client`` and ``kubernetes.config``
    demo            ``pydns`` serving its built-in demo (manifests: no API client loaded)
    api             ``pydns`` synced from a fake API server through the official client

``api - demo`` is what the client costs a running pydns, the most a lighter API client
could save.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import sysconfig
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import finish, fmt, free_port, log, median, wait_until  # noqa: E402



def image_rootfs():
    """image/rootfs.py, for its list of what the image leaves out."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "image", "rootfs.py")
    spec = importlib.util.spec_from_file_location("image_rootfs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tree_mb(path: str, with_pyc: bool = True) -> float:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        if not with_pyc and os.path.basename(dirpath) == "__pycache__":
            continue
        total += sum(os.lstat(os.path.join(dirpath, f)).st_size for f in filenames)
    return total / 1e6


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def idle_rss(argv: list[str], ready, env=None, cwd=None) -> float:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd)
    try:
        wait_until(ready, timeout=60)
        time.sleep(1.0)  # settled: every start-up allocation done
        return rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(15)


def answers(port: int, name: str):
    import dns.message
    import dns.query

    def check():
        try:
            reply = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=0.3)
            return bool(reply.answer)
        except Exception:
            return False
    return check


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args()

    site = sysconfig.get_path("purelib")
    pruned = [os.path.join(site, name) for name in image_rootfs().PRUNED]
    sizes = {
        "kubernetes_mb": tree_mb(os.path.join(site, "kubernetes")),
        "kubernetes_aio_mb": tree_mb(os.path.join(site, "kubernetes", "aio")),
        "pruned_total_mb": sum(tree_mb(p) for p in pruned if os.path.isdir(p)),
        "pruned_total_source_mb": sum(tree_mb(p, with_pyc=False) for p in pruned if os.path.isdir(p)),
    }
    log(f"footprint: sizes {sizes}")

    from pydns.testing.fakeapi import FakeApiServer

    cluster = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
         "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"], "ports": [{"port": 80, "protocol": "TCP"}]}},
    ]
    runs: dict[str, list[float]] = {"python": [], "client": [], "demo": [], "api": []}
    with tempfile.TemporaryDirectory(prefix="pydns-footprint-") as tmp:
        api = FakeApiServer(cluster).start()
        try:
            kubeconfig = api.kubeconfig(os.path.join(tmp, "kubeconfig"))
            for _ in range(3):
                flag = os.path.join(tmp, "imported")
                for kind, code in (("python", ""), ("client", "import kubernetes.client, kubernetes.config\n")):
                    script = f"{code}open({flag!r}, 'w').close()\nimport time\ntime.sleep(60)\n"
                    if os.path.exists(flag):
                        os.unlink(flag)
                    runs[kind].append(idle_rss([sys.executable, "-c", script], lambda: os.path.exists(flag)))
                port = free_port()
                runs["demo"].append(idle_rss([sys.executable, "-m", "pydns", "-dns.port", str(port)],
                                             answers(port, "web.shop.svc.cluster.local"), cwd=tmp))
                port = free_port()
                corefile = os.path.join(tmp, "api.Corefile")  # not ./Corefile: the demo runs in tmp
                with open(corefile, "w") as fh:
                    fh.write(f".:{port} {{\n bind 127.0.0.1\n kubernetes cluster.local {{\n  kubeconfig {kubeconfig}\n }}\n}}\n")
                runs["api"].append(idle_rss([sys.executable, "-m", "pydns", "-conf", corefile],
                                            answers(port, "web.default.svc.cluster.local")))
        finally:
            api.stop()
    rss = {kind: median(values) for kind, values in runs.items()}
    result = {"sizes_mb": sizes, "rss_mb": rss, "client_cost_rss_mb": rss["api"] - rss["demo"],
              "client_import_rss_mb": rss["client"] - rss["python"]}
    finish(result, f"footprint: kubernetes {fmt(sizes['kubernetes_mb'], 0, ' MB')} installed, "
                   f"{fmt(sizes['pruned_total_mb'], 0, ' MB')} of it and its aio-only packages left out of the image; "
                   f"RSS idle demo {fmt(rss['demo'], 0, ' MB')}, synced from an API {fmt(rss['api'], 0, ' MB')} "
                   f"(client import {fmt(result['client_import_rss_mb'], 0, ' MB')})", args.json)


if __name__ == "__main__":
    main()
