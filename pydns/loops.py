"""The one place that chooses pydns's event loop: uvloop when it is installed, else asyncio's.

uvloop runs the same asyncio programs on libuv, with less work per wake-up and per handle;
measured side by side it answers UDP queries with less CPU each (docs/performance.md).
Everything in pydns runs on the one loop this returns, in one thread.
"""

from __future__ import annotations

import asyncio

try:
    import uvloop
except ImportError:  # a platform without uvloop's wheels: the standard loop serves the same
    uvloop = None


def loop_factory():
    """The event loop class's factory pydns runs on."""
    return uvloop.new_event_loop if uvloop is not None else asyncio.new_event_loop


def new_event_loop() -> asyncio.AbstractEventLoop:
    return loop_factory()()


def run(coro):
    """``asyncio.run(coro)`` on the chosen loop (``asyncio.Runner`` is Python 3.11+)."""
    loop = new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro)
    finally:
        close(loop)


def close(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what still runs on ``loop`` (replies still waiting on an upstream), then close it."""
    try:
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
