"""The event loop pydns runs on, and the lock that lets UDP threads answer beside it.

On a moderately busy server most of a UDP query's cost is the event loop's, not the DNS
work: ``epoll_wait``, a handle run per wake-up, a ``recvfrom`` that ends each drain with
``BlockingIOError``.  A thread that sits in a blocking ``recvfrom`` pays none of that.  But
plugins are written for one thread.  So pydns's loop runs under a *serving lock*: the loop
thread holds it whenever it runs anything and lets go only while it waits for events, and a
UDP thread answers a query only while holding it.  Plugin code therefore never runs in two
threads at once, and a UDP thread sees the loop as its own (``get_running_loop`` works; what
it schedules wakes the loop when it lets go of the lock).

The loop comes first: a UDP thread that sees the loop waiting for the lock steps aside until
the loop has it, so that watch events, TCP and timers are never starved by a flood of UDP.

``new_event_loop()`` makes such a loop (``loop.serving_lock``); ``run(coro)`` is
``asyncio.run`` on one.  On any other loop (pydns embedded in someone else's asyncio
program), and on one in asyncio's debug mode (which refuses callbacks scheduled from other
threads), listeners read UDP from the loop's selector instead, with the same answers.
"""

from __future__ import annotations

import asyncio
import selectors
import threading
import time

# The longest the loop sleeps without looking at its ready queue: a safety net for anything
# a UDP thread scheduled that did not wake it.
MAX_WAIT = 0.1
# How long a UDP thread waits, per look, for the loop to take the lock it wants.
YIELD_WAIT = 0.00005


class ServingLock:
    """One thread at a time runs pydns code: the loop thread, or a UDP thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.loop_waiting = False

    # -- the loop thread
    def loop_acquire(self) -> None:
        self.loop_waiting = True
        self._lock.acquire()
        self.loop_waiting = False

    def loop_release(self) -> None:
        self._lock.release()

    # -- a UDP thread
    def acquire(self, timeout: float) -> bool:
        while self.loop_waiting:
            time.sleep(YIELD_WAIT)  # let the loop in first
        return self._lock.acquire(timeout=timeout)

    def release(self) -> None:
        self._lock.release()


class ServingSelector(selectors.DefaultSelector):  # type: ignore[misc, valid-type]
    """The loop's selector: the serving lock is let go only while waiting for events."""

    def __init__(self, lock: ServingLock) -> None:
        super().__init__()
        self.lock = lock
        self.held = False

    def select(self, timeout=None):
        if self.held:
            self.lock.loop_release()
            self.held = False
        try:
            return super().select(MAX_WAIT if timeout is None or timeout > MAX_WAIT else timeout)
        finally:
            self.lock.loop_acquire()
            self.held = True


def new_event_loop() -> asyncio.AbstractEventLoop:
    lock = ServingLock()
    loop = asyncio.SelectorEventLoop(ServingSelector(lock))
    loop.serving_lock = lock
    return loop


def run(coro):
    """``asyncio.run(coro)`` on a loop of ``new_event_loop()``."""
    loop = new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro)
    finally:
        try:
            _cancel_all(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def wake_if_scheduled(loop: asyncio.AbstractEventLoop) -> None:
    """Called by a UDP thread after a query: wake the loop if that query scheduled work on it.

    Peeks at the loop's ready queue (an attribute every asyncio loop of the standard library
    has) rather than routing every plugin's scheduling through ``call_soon_threadsafe``.
    """
    if getattr(loop, "_ready", None):
        loop.call_soon_threadsafe(_nothing)


def _nothing() -> None:
    pass
