"""Kafka's ``ThroughputThrottler``: hold a send loop to a target rate by sleeping off a deficit.

The loop asks ``should_throttle(sent_so_far, now)`` before each send; when the average rate
since the start is above the target, it calls ``throttle()``, which adds one inter-send interval
(1 / target seconds) to a sleep deficit and sleeps only once the deficit reaches
``MIN_SLEEP_NS`` (2 ms), because sleeping for microseconds at a time costs more than it
throttles. A negative target means unlimited; zero means send nothing (sleep until woken).

The clock and sleep functions are injectable so the behaviour can be tested without waiting.
Not thread-safe except ``wakeup()``, which may be called from another thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["ThroughputThrottler", "MIN_SLEEP_NS", "NS_PER_SEC"]

NS_PER_SEC = 1_000_000_000
MIN_SLEEP_NS = 2_000_000


class ThroughputThrottler:
    __slots__ = ("target_per_sec", "start_ns", "sleep_time_ns", "sleep_deficit_ns", "_clock_ns", "_sleep_s", "_woken")

    def __init__(
        self,
        target_per_sec: float,
        start_ns: int,
        *,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        sleep_s: Callable[[float], None] | None = None,
    ) -> None:
        self.target_per_sec = target_per_sec
        self.start_ns = start_ns
        self.sleep_time_ns = int(NS_PER_SEC / target_per_sec) if target_per_sec > 0 else 0
        self.sleep_deficit_ns = 0
        self._clock_ns = clock_ns
        self._woken = threading.Event()
        self._sleep_s = sleep_s if sleep_s is not None else self._default_sleep

    def _default_sleep(self, seconds: float) -> None:
        # An Event wait rather than time.sleep so wakeup() can cut the sleep short.
        self._woken.wait(seconds)

    def should_throttle(self, amount_so_far: int, now_ns: int) -> bool:
        """True when the average rate since ``start_ns`` is above the target."""
        if self.target_per_sec < 0:
            return False
        elapsed_s = (now_ns - self.start_ns) / NS_PER_SEC
        return elapsed_s > 0 and (amount_so_far / elapsed_s) > self.target_per_sec

    def throttle(self) -> None:
        """Add one interval to the deficit; sleep it off once it is at least ``MIN_SLEEP_NS``."""
        if self.target_per_sec == 0:
            while not self._woken.is_set():
                self._sleep_s(1.0)
            self._woken.clear()
            return
        self.sleep_deficit_ns += self.sleep_time_ns
        if self.sleep_deficit_ns < MIN_SLEEP_NS:
            return
        sleep_start = self._clock_ns()
        remaining = self.sleep_deficit_ns
        while remaining > 0 and not self._woken.is_set():
            self._sleep_s(remaining / NS_PER_SEC)
            remaining = self.sleep_deficit_ns - (self._clock_ns() - sleep_start)
        if self._woken.is_set():
            # Cut short: keep the part of the deficit not slept off.
            self._woken.clear()
            slept = self._clock_ns() - sleep_start
            self.sleep_deficit_ns = max(0, self.sleep_deficit_ns - slept)
        else:
            self.sleep_deficit_ns = 0

    def wakeup(self) -> None:
        """Cut a sleep short (used to stop a throttled loop promptly)."""
        self._woken.set()
