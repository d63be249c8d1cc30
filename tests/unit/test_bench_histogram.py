"""annal.bench._histogram: HdrHistogram wrapper, cross-process encoding, merge, the hot-path recorder."""

from __future__ import annotations

import random

import pytest

from annal.bench._histogram import HIGHEST_US, LatencyHistogram, LatencyRecorder


def _filled(values: list[int]) -> LatencyHistogram:
    h = LatencyHistogram()
    for v in values:
        h.record_us(v)
    return h


def test_empty_summary_is_all_zero() -> None:
    s = LatencyHistogram().summary()
    assert s.count == 0
    assert (s.avg_ms, s.max_ms, s.p50_ms, s.p999_ms) == (0.0, 0.0, 0.0, 0.0)
    assert LatencyHistogram().distribution() == []


def test_percentiles_within_precision_and_ordered() -> None:
    h = _filled(list(range(1, 100_001)))  # 1 us .. 100 ms, uniform
    s = h.summary()
    assert s.count == 100_000
    assert s.p50_ms == pytest.approx(50.0, rel=2e-3)
    assert s.p95_ms == pytest.approx(95.0, rel=2e-3)
    assert s.p99_ms == pytest.approx(99.0, rel=2e-3)
    assert s.p999_ms == pytest.approx(99.9, rel=2e-3)
    assert s.max_ms == pytest.approx(100.0, rel=2e-3)
    assert s.avg_ms == pytest.approx(50.0, rel=2e-3)
    assert s.p50_ms <= s.p95_ms <= s.p99_ms <= s.p999_ms <= s.max_ms


def test_merge_equals_recording_everything_in_one() -> None:
    rnd = random.Random(1)
    parts = [[rnd.randrange(1, 5_000_000) for _ in range(5000)] for _ in range(4)]
    merged = LatencyHistogram.merged(_filled(p) for p in parts)
    whole = _filled([v for p in parts for v in p])
    assert merged.count == whole.count == 20_000
    assert merged.summary() == whole.summary()


def test_encode_decode_round_trip_then_merge() -> None:
    a = _filled([10, 20, 30_000])
    b = LatencyHistogram.decode(a.encode())
    assert b.summary() == a.summary()
    b.merge(_filled([5_000_000]))
    assert b.count == 4
    assert b.max_us() >= 5_000_000 * 0.999


def test_values_out_of_range_are_clamped_not_lost() -> None:
    h = LatencyHistogram()
    h.record_us(0)
    h.record_us(-5)
    h.record_us(HIGHEST_US * 10, count=3)
    assert h.count == 5
    assert h.clamped == 3
    assert h.min_us() == 1
    h2 = LatencyHistogram()
    h2.merge(h)
    assert h2.clamped == 3


def test_record_with_count_and_zero_count() -> None:
    h = LatencyHistogram()
    h.record_us(1000, count=7)
    h.record_us(1000, count=0)
    assert h.count == 7
    assert h.summary().p50_ms == pytest.approx(1.0, rel=1e-3)


def test_recorder_drains_exact_counts_and_windows() -> None:
    r = LatencyRecorder()
    for v in (100, 200, 200, 5000):
        r.record_us(v)
    r.record_many_us(300, 4)
    r.record_many_us(999, 0)
    assert r.take_window() == (8, 100 + 400 + 5000 + 1200, 5000)
    assert r.take_window() == (0, 0, 0)
    h = LatencyHistogram()
    r.drain_into(h)
    assert h.count == 8
    r.drain_into(h)  # nothing pending: no double counting
    assert h.count == 8
    assert h.summary().max_ms == pytest.approx(5.0, rel=1e-3)


def test_distribution_is_monotonic_and_ends_at_100() -> None:
    h = _filled([random.Random(3).randrange(1, 100_000) for _ in range(10_000)])
    d = h.distribution()
    pcts = [p for p, _ in d]
    vals = [v for _, v in d]
    assert pcts == sorted(pcts) and vals == sorted(vals)
    assert pcts[-1] == 100.0


def test_record_sends_equals_recording_each_latency() -> None:
    rng = random.Random(11)
    one, bulk = LatencyRecorder(), LatencyRecorder()
    h_one, h_bulk = LatencyHistogram(), LatencyHistogram()
    for _ in range(50):
        ack = rng.randrange(10**12, 2 * 10**12)
        sends = [ack - rng.randrange(0, 60_000_000) for _ in range(rng.randrange(0, 300))]
        for s in sends:
            one.record_us((ack - s) // 1000)
        bulk.record_sends_us(ack, sends)
        assert one.take_window() == bulk.take_window()
    one.drain_into(h_one)
    bulk.drain_into(h_bulk)
    assert h_one.encode() == h_bulk.encode()
    assert h_one.summary() == h_bulk.summary()


def test_record_sends_folds_values_into_their_bucket_and_records_the_same_histogram() -> None:
    """record_sends_us counts each latency as its bucket's lowest value (so the recorder holds
    few distinct keys); the histogram it drains into equals one fed every exact value."""
    import random

    from annal.bench._histogram import LatencyHistogram, LatencyRecorder

    rng = random.Random(5)
    for _ in range(10):
        rec, folded, exact = LatencyRecorder(), LatencyHistogram(), LatencyHistogram()
        for _ in range(40):
            ack = 10**12 + rng.randrange(0, 10**10)
            spread = rng.choice([10**4, 10**6, 10**9, 3 * 10**12])
            sends = [ack - rng.randrange(0, spread) for _ in range(rng.randrange(1, 300))]
            rec.record_sends_us(ack, sends)
            for s in sends:
                exact.record_us((ack - s) // 1000)
        rec.drain_into(folded)
        assert list(folded._hist.counts) == list(exact._hist.counts)
        assert folded.summary() == exact.summary()
