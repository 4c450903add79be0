"""Running pydns inside another program: tests, the pytest fixture and benchmarks."""

from pydns.testing.runner import ServerThread, free_port, plugin_named, wait_until_answering

__all__ = ["ServerThread", "free_port", "plugin_named", "wait_until_answering"]
