"""The part of Go's text/template that the template plugin's records are written in.

The template plugin compiles each record with ``compile_template`` at setup (where a
construct outside this subset is an error) and renders it per query.

Supported, as text/template defines them: literal text; actions ``{{ ... }}`` with
``{{-``/``-}}`` trimming and ``{{/* comments */}}``; field chains (``.Name``, ``.Group.a``,
``$.Zone``, ``$x.Field``, ``(pipeline).Field``); string, raw string, character, number,
``true``/``false``/``nil`` literals; commands with arguments and ``|`` pipelines; method
calls on the data (``.Meta "kubernetes/client-namespace"``); ``$variables`` (``$x := ...``,
``$x = ...``, ``$`` the data); ``if``/``else if``/``else``, ``with``/``else with``,
``range`` (over lists, maps in key order and integers, with ``$i, $v :=``, ``break``,
``continue``) and ``end``; the functions ``and``, ``or``, ``not``, ``eq``, ``ne``, ``lt``,
``le``, ``gt``, ``ge``, ``index``, ``len``, ``slice``, ``print``, ``printf``, ``println``,
``html``, ``urlquery`` and ``parseInt``.  Not supported (an error at setup): ``define``,
``template``, ``block``, ``call`` and ``js``.

A rendering stops with TemplateError once it has written ``MAX_OUTPUT`` characters or run
``MAX_STEPS`` loop iterations, so no template can make a query expensive.
"""

from __future__ import annotations

from pydns.plugins.template.gotemplate.functions import TemplateError, go_string
from pydns.plugins.template.gotemplate.parse import Parser
from pydns.plugins.template.gotemplate.run import MAX_OUTPUT, MAX_STEPS, Run

__all__ = ["MAX_OUTPUT", "MAX_STEPS", "Template", "TemplateError", "compile_template", "go_string"]


class Template:
    """A compiled record template; ``fields`` are the names of the data it reads (``*``: all of it)."""

    def __init__(self, source: str, nodes: list, fields: set[str]):
        self.source, self.nodes, self.fields = source, nodes, fields

    def render(self, data) -> str:
        run = Run(data)
        run.walk(self.nodes, data)
        return "".join(run.out)


def compile_template(text: str) -> Template:
    """Compile ``text``; TemplateError names what is wrong (unknown function, unsupported construct)."""
    parser = Parser(text)
    nodes = parser.parse()
    return Template(text, nodes, parser.fields)
