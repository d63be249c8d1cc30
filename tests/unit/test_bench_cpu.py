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



def test_wake_penalty_times_the_same_work_back_to_back_and_after_each_sleep():
    """``bench.kafka_clients.wake_penalty``: both medians are the thread CPU of the same burst
    (no sleep counted in either), and the paced bursts really slept first."""
    from annal.bench import kafka_clients

    start = time.perf_counter()
    warm_us, woken_us = kafka_clients.wake_penalty(gap_s=0.01, rounds=3, paced=4, back_to_back=20)
    assert time.perf_counter() - start >= 3 * 4 * 0.01  # 12 sleeps of 10 ms
    # Thread CPU, not wall time: a burst after a 10 ms sleep is not charged the sleep.
    assert 0 < warm_us < 10_000 and 0 < woken_us < 10_000, (warm_us, woken_us)
