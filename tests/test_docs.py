"""The docs are generated from the code, or checked against it, so they cannot drift."""

from __future__ import annotations

import os
import re

from pydns.docgen import plugin_pages
from pydns.plugin import load_plugins

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_plugin_pages_are_up_to_date():
    pages = plugin_pages()
    folder = os.path.join(ROOT, "docs", "plugins")
    on_disk = {f for f in os.listdir(folder) if f.endswith(".md")}
    assert on_disk == set(pages), "run: python -m pydns.docgen"
    for fname, text in pages.items():
        with open(os.path.join(folder, fname), encoding="utf-8") as fh:
            assert fh.read() == text, f"docs/plugins/{fname} is stale: run python -m pydns.docgen"


def test_every_plugin_documents_its_syntax():
    import sys

    for name, cls in load_plugins().items():
        doc = sys.modules[cls.__module__].__doc__ or ""
        assert re.search(rf"^\s*{name}\b", doc, re.M), f"plugin {name}: its docstring must show its syntax"
