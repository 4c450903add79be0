"""What the pytest fixture costs a test: its set-up plus tear-down, per test.

    python bench/fixture_overhead.py [--tests 40] [--json out.json]

Runs pytest (in this process) on a generated file of tests that each ask one question,
alternating two kinds side by side in the same run:

    shared      ``pydns_cluster`` with the default shape: the session's server, reset to
                the test's objects (and an empty journal) before each test
    dedicated   ``pydns_factory``: a server started and stopped for the test, which is what
                every ``pydns_cluster`` test cost before the session server

and reports the median of set-up + tear-down per kind (pytest's own phase durations),
leaving out the first shared test, which starts the session's server (reported apart).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import textwrap

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import finish, fmt, log, median, ratio  # noqa: E402

TESTS = textwrap.dedent('''
    import pytest

    OBJECTS = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
         "spec": {"clusterIP": "10.96.5.5", "clusterIPs": ["10.96.5.5"],
                  "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
    ]

    @pytest.mark.parametrize("n", range({count}))
    @pytest.mark.pydns(objects=OBJECTS)
    def test_shared(pydns_cluster, n):
        assert pydns_cluster.resolver.resolve("web.shop.svc.cluster.local", "A")[0].address == "10.96.5.5"

    @pytest.mark.parametrize("n", range({count}))
    def test_dedicated(pydns_factory, n):
        cluster = pydns_factory(OBJECTS)
        assert cluster.resolver.resolve("web.shop.svc.cluster.local", "A")[0].address == "10.96.5.5"
''')


class Phases:
    """pytest plugin: the set-up and tear-down seconds of every test, by test id."""

    def __init__(self):
        self.seconds: dict[str, dict[str, float]] = {}
        self.failed: list[str] = []

    def pytest_runtest_logreport(self, report):
        self.seconds.setdefault(report.nodeid, {})[report.when] = report.duration
        if report.failed:
            self.failed.append(report.nodeid)

    def pytest_collection_modifyitems(self, items):
        # Interleave the kinds, so a slow moment of the machine hits both alike.
        shared = [i for i in items if "test_shared" in i.nodeid]
        dedicated = [i for i in items if "test_dedicated" in i.nodeid]
        items[:] = [x for pair in zip(shared, dedicated) for x in pair]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tests", type=int, default=40, help="tests of each kind")
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args()

    import pytest

    with tempfile.TemporaryDirectory(prefix="pydns-fixture-bench-") as tmp:
        path = os.path.join(tmp, "test_overhead.py")
        with open(path, "w") as fh:
            fh.write(TESTS.replace("{count}", str(args.tests)))
        phases = Phases()
        log(f"fixture_overhead: {args.tests} tests of each kind")
        code = pytest.main(["-q", "-p", "no:cacheprovider", "-o", "addopts=", "--rootdir", tmp, path], plugins=[phases])
    if code != 0 or phases.failed:
        sys.exit(f"fixture_overhead: the generated tests failed: {phases.failed}")

    def overhead_ms(kind: str) -> list[float]:
        rows = [s for nodeid, s in phases.seconds.items() if f"::{kind}[" in nodeid]
        return [(s["setup"] + s["teardown"]) * 1000 for s in rows]

    shared, dedicated = overhead_ms("test_shared"), overhead_ms("test_dedicated")
    result = {
        "tests_per_kind": args.tests,
        "session_start_ms": shared[0],
        "shared_ms": median(shared[1:]),
        "dedicated_ms": median(dedicated),
    }
    result["dedicated_over_shared"] = ratio(result["dedicated_ms"], result["shared_ms"])
    finish(result, f"fixture_overhead: per test set-up+tear-down, median: shared {fmt(result['shared_ms'], 2, ' ms')}, "
                   f"dedicated {fmt(result['dedicated_ms'], 1, ' ms')} "
                   f"(x{fmt(result['dedicated_over_shared'], 0)}); session start {fmt(result['session_start_ms'], 1, ' ms')}",
           args.json)


if __name__ == "__main__":
    main()
