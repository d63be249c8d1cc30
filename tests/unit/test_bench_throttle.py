"""annal.bench._throttle: Kafka's ThroughputThrottler driven by a fake clock (no real sleeping)."""

from __future__ import annotations

import threading

import pytest

from annal.bench._throttle import MIN_SLEEP_NS, NS_PER_SEC, ThroughputThrottler


class FakeClock:
    def __init__(self) -> None:
        self.now_ns = 0
        self.sleeps: list[float] = []

    def clock(self) -> int:
        return self.now_ns

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_ns += int(seconds * NS_PER_SEC)


def _throttler(rate: float, clock: FakeClock) -> ThroughputThrottler:
    return ThroughputThrottler(rate, clock.now_ns, clock_ns=clock.clock, sleep_s=clock.sleep)


def test_unlimited_never_throttles() -> None:
    c = FakeClock()
    t = _throttler(-1, c)
    assert not t.should_throttle(10**9, 1)


def test_should_throttle_compares_average_rate_with_target() -> None:
    c = FakeClock()
    t = _throttler(1000, c)
    assert not t.should_throttle(5, 0)  # no time elapsed yet: never throttle (Kafka: elapsed > 0)
    assert t.should_throttle(1001, NS_PER_SEC)
    assert not t.should_throttle(1000, NS_PER_SEC)
    assert not t.should_throttle(999, NS_PER_SEC)


def test_sleeps_only_once_the_deficit_reaches_min_sleep() -> None:
    c = FakeClock()
    t = _throttler(10_000, c)  # 100 us between records: 20 throttle calls make 2 ms
    calls_before_sleep = MIN_SLEEP_NS // t.sleep_time_ns
    for _ in range(calls_before_sleep - 1):
        t.throttle()
    assert c.sleeps == []
    t.throttle()
    assert len(c.sleeps) == 1
    assert c.sleeps[0] == pytest.approx(MIN_SLEEP_NS / NS_PER_SEC)
    assert t.sleep_deficit_ns == 0


@pytest.mark.parametrize("rate", [50.0, 1000.0, 25_000.0])
def test_send_loop_holds_the_target_rate(rate: float) -> None:
    # A send loop whose sends take 1 us: the throttler must stretch n records over ~n/rate s.
    c = FakeClock()
    t = _throttler(rate, c)
    n = int(rate * 4)
    for i in range(n):
        c.now_ns += 1000
        if t.should_throttle(i + 1, c.now_ns):
            t.throttle()
    elapsed_s = c.now_ns / NS_PER_SEC
    assert n / elapsed_s == pytest.approx(rate, rel=0.02)


def test_wakeup_cuts_a_sleep_short_and_keeps_the_rest_of_the_deficit() -> None:
    c = FakeClock()
    t = _throttler(1, c)  # one second per record

    def sleep_then_wake(seconds: float) -> None:
        c.now_ns += 300_000_000  # slept 0.3 s, then someone calls wakeup()
        t.wakeup()

    t._sleep_s = sleep_then_wake
    t.throttle()
    assert t.sleep_deficit_ns == NS_PER_SEC - 300_000_000


def test_zero_target_blocks_until_woken() -> None:
    t = ThroughputThrottler(0, 0)
    threading.Timer(0.05, t.wakeup).start()
    done = threading.Event()

    def run() -> None:
        t.throttle()
        done.set()

    th = threading.Thread(target=run)
    th.start()
    assert done.wait(10)
    th.join()
