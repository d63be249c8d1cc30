"""The benchmarks' broker CPU readings (annal.bench.broker): the scheduler's nanosecond
accounting agrees with the process's own CPU clock, and the tick-based reading with it."""

from __future__ import annotations

import os
import time

from annal.bench.broker import _cpu_seconds, _cpu_seconds_precise


def test_precise_cpu_time_counts_the_cpu_this_process_spends():
    pid = os.getpid()
    before, before_ticks = _cpu_seconds_precise(pid), _cpu_seconds(pid)
    start = time.thread_time()
    while time.thread_time() - start < 0.1:  # 100 ms of CPU on this thread, however long it takes
        pass
    spent = _cpu_seconds_precise(pid) - before
    assert spent >= 0.1 - 1e-3  # every thread of the process is counted, this one at least
    assert _cpu_seconds(pid) - before_ticks >= 0.05  # ticks: the same time, coarsely

