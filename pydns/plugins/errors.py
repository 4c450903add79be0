"""errors — logs the errors that plugins answer with.

Syntax::

    errors {
        stacktrace
        consolidate DURATION REGEXP [LEVEL]
    }

Each error is logged as ``[ERROR] plugin/errors: RCODE NAME TYPE: message``.  With
``consolidate``, errors matching REGEXP are counted instead and one line per DURATION says
how many there were (LEVEL: warning, error, info or debug; default error).  ``stacktrace``
is accepted for compatibility (Python tracebacks of crashes are always logged).
"""

from __future__ import annotations

import asyncio
import logging
import re

from pydns.corefile import Directive
from pydns.plugin import DNSError, Plugin, expect_args, parse_duration, register, unknown_option
from pydns.wire import Answer, Request, status, type_name

_LEVELS = {"warning": logging.WARNING, "error": logging.ERROR, "info": logging.INFO, "debug": logging.DEBUG}


class _Consolidator:
    def __init__(self, period: float, pattern: re.Pattern, level: int, source: str):
        self.period, self.pattern, self.level, self.source = period, pattern, level, source
        self.count = 0
        self.task: asyncio.Task | None = None

    async def run(self, log: logging.Logger) -> None:
        while True:
            await asyncio.sleep(self.period)
            if self.count:
                log.log(self.level, "%d errors like '%s' occurred in last %s", self.count, self.source, _show(self.period))
                self.count = 0


def _show(seconds: float) -> str:
    return f"{seconds:g}s" if seconds < 60 else f"{seconds / 60:g}m"


@register("errors")
class Errors(Plugin):
    memoizable = True  # it acts on failures only, and vetoes keeping those (pydns.replies)

    def setup(self, d: Directive) -> None:
        expect_args(d, 0, 0)
        self.consolidators: list[_Consolidator] = []
        for opt in d.options:
            if opt.name == "stacktrace":
                expect_args(opt, 0, 0)
            elif opt.name == "consolidate":
                args = expect_args(opt, 2, 3)
                period = parse_duration(args[0], "errors")
                try:
                    pattern = re.compile(args[1])
                except re.error as exc:
                    raise opt.error(f"plugin/errors: invalid regexp '{args[1]}': {exc}", args[1]) from None
                level = logging.ERROR
                if len(args) == 3:
                    if args[2] not in _LEVELS:
                        raise opt.error(f"plugin/errors: unknown log level '{args[2]}'", args[2])
                    level = _LEVELS[args[2]]
                self.consolidators.append(_Consolidator(period, pattern, level, str(args[1])))
            else:
                raise unknown_option(d, opt)

    async def start(self) -> None:
        for c in self.consolidators:
            c.task = asyncio.ensure_future(c.run(self.log))

    async def stop(self) -> None:
        for c in self.consolidators:
            if c.task:
                c.task.cancel()

    def report(self, req: Request, rcode: int, message: str) -> None:
        for c in self.consolidators:
            if c.pattern.search(message):
                c.count += 1
                return
        self.log.error("%d %s %s: %s", rcode, req.name, type_name(req.qtype), message)

    def serve(self, req: Request):
        try:
            result = self.next.serve(req)
        except DNSError as err:
            self.report(req, err.rcode, str(err))
            req.memo_until = 0.0
            return status(err.rcode)
        if result.__class__ is Answer:
            if result.error:
                self.report(req, result.rcode, result.error)
                req.memo_until = 0.0  # every failure is reported: none is kept (pydns.replies)
            return result
        return self._later(req, result)

    async def _later(self, req: Request, result) -> Answer:
        try:
            answer = await result
        except DNSError as err:
            self.report(req, err.rcode, str(err))
            return status(err.rcode)
        if answer.error:
            self.report(req, answer.rcode, answer.error)
        return answer
