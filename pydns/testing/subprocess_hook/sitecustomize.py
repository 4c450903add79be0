"""Run at start-up by a Python child of a test (``Cluster.subprocess_env`` puts this folder
first on PYTHONPATH): its lookups go to the pydns server in ``PYDNS_RESOLVER``
(``HOST:PORT``), completing short names with ``PYDNS_SEARCH``, as ``as_system_resolver``
does in the test's own process.  Any sitecustomize this one hides then runs as usual."""

import os
import sys


def _resolve_through_pydns() -> None:
    host, _, port = os.environ["PYDNS_RESOLVER"].rpartition(":")
    from pydns.testing.sysresolver import SystemResolver, pod_resolver

    SystemResolver(pod_resolver(host, int(port), os.environ.get("PYDNS_SEARCH", "").split()))


def _run_the_hidden_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    del sys.modules[__name__]
    try:
        import sitecustomize  # noqa: F401  (the next one on the path, if any)
    except ImportError:
        pass
    finally:
        sys.path[:] = saved


if os.environ.get("PYDNS_RESOLVER"):
    _resolve_through_pydns()
_run_the_hidden_sitecustomize()
