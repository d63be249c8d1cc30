"""Rate-limited WARNING lines for conditions that last (no broker answers, a topic does not
exist, a partition has no leader): the first occurrence of each condition is logged at once,
then at most once per ``interval_s`` while it goes on, so a client that cannot make progress
says why without flooding the log.

Thread-safe.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Hashable

__all__ = ["RateLimitedWarnings"]


class RateLimitedWarnings:
    """``warn(key, msg, *args)`` logs at WARNING unless ``key`` was logged less than
    ``interval_s`` ago; ``clear(key)`` forgets it (the condition ended), so its next
    occurrence is logged at once."""

    def __init__(self, logger: logging.Logger, interval_s: float = 30.0) -> None:
        self._log = logger
        self._interval_s = interval_s
        self._last: dict[Hashable, float] = {}
        self._lock = threading.Lock()

    def warn(self, key: Hashable, msg: str, *args: object) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval_s:
                return False
            self._last[key] = now
        self._log.warning(msg, *args)
        return True

    def clear(self, key: Hashable) -> None:
        with self._lock:
            self._last.pop(key, None)
