"""Running pydns inside another program: tests, the pytest fixture and benchmarks."""

from pydns.testing.runner import ServerThread

__all__ = ["ServerThread"]
