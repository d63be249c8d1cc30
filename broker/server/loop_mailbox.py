"""Calls posted to an event loop from other threads, with one wake-up of the loop for all that
arrive before it runs them.

The request-handler pool finishes appends on worker threads; their answers, and the long-polls
an append wakes, must run on the loop that owns the connections. ``loop.call_soon_threadsafe``
writes to the loop's self-pipe for every call, and each write wakes the loop (a system call on
the worker, another read and an ``epoll_wait`` return on the loop, and, under CPython's GIL, a
hand-over of the interpreter lock for each). ``LoopMailbox.post`` queues the call and asks the
loop to run the queue only when no such request is pending: answers finished while the loop is
busy receiving the next request are run together by one wake-up.

Calls run in the order they were posted. A call that raises is logged and the others still run
(as the loop's own callbacks are). Thread-safe; ``post`` from the loop's own thread works too.
After the loop is closed, ``post`` drops the call (the broker is shutting down) and returns
False.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from typing import Any, Callable

__all__ = ["LoopMailbox"]

log = logging.getLogger("annal.loop_mailbox")


class LoopMailbox:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._calls: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self.wakeups = 0  # loop wake-ups asked for (for tests and the bench)
        self.posted = 0

    def post(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Run ``fn(*args)`` on the loop soon; False if the loop is closed."""
        with self._lock:
            self._calls.append((fn, args))
            self.posted += 1
            if self._scheduled:
                return True
            self._scheduled = True
            self.wakeups += 1
        try:
            self.loop.call_soon_threadsafe(self._run)
        except RuntimeError:  # the loop is closed: shutting down
            with self._lock:
                self._scheduled = False
                self._calls.clear()
            return False
        return True

    def _run(self) -> None:
        with self._lock:
            self._scheduled = False
            calls, self._calls = self._calls, deque()
        for fn, args in calls:
            try:
                fn(*args)
            except Exception:
                log.exception("call posted to the event loop failed: %r", fn)
