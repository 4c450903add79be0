"""The built-in demo: a small cluster served when pydns starts without a Corefile."""

from __future__ import annotations

import os

DEMO_PORT = 1053
HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER = os.path.join(HERE, "cluster.yaml")


def demo_corefile() -> str:
    """The built-in Corefile: the demo cluster on 127.0.0.1, the rest forwarded to the host's resolvers."""
    with open(os.path.join(HERE, "Corefile"), encoding="utf-8") as fh:
        return fh.read().replace("DEMO_CLUSTER", CLUSTER)
