"""Latency histograms for the bench: HdrHistogram in microseconds, mergeable across processes.

Latencies are never kept as a list of samples. Each worker process records into a
``LatencyHistogram`` (an ``hdrh`` HdrHistogram of integer microseconds, 1 us to 1 hour, 3
significant digits, so any percentile is within 0.1 % of the true value) and ships it to the
parent as HdrHistogram's standard compressed base64 encoding (``encode()``), where the parent
merges them (``merge``), exactly as Kafka's tools and wrk2 do.

Recording into ``hdrh`` costs about 3 us per value in pure Python, which would distort a
producer loop running at 100k+ records/s. The hot path therefore goes through
``LatencyRecorder``: ``record_us`` bumps a counter in a plain dict keyed by the integer latency
in microseconds (a fraction of a microsecond), and ``drain_into`` folds those counts into the
HdrHistogram with ``record_value(value, count)`` once per progress window. The dict is bounded by
the number of distinct microsecond values seen in one window, not by the number of samples.

Neither class is thread-safe: one recorder per thread (the producer's callbacks all run on its
sender thread; the bench drains on the same thread or under its own lock).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from itertools import repeat
from operator import floordiv, lshift, rshift, sub
from dataclasses import dataclass

from hdrh.histogram import HdrHistogram

__all__ = [
    "LOWEST_US",
    "HIGHEST_US",
    "SIGNIFICANT_FIGURES",
    "PERCENTILES",
    "LatencyHistogram",
    "LatencyRecorder",
    "LatencySummary",
]

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour: anything longer is clamped, and counted as such
SIGNIFICANT_FIGURES = 3
# With 3 significant figures and 1 us units, HdrHistogram keeps every value below 2**11 exactly
# and, above, the top 11 bits of each value (its sub-bucket): values that agree there land in
# the same bucket and are recorded alike.
_EXACT_BITS = 11
_EXACT_BELOW = 1 << _EXACT_BITS

# The percentiles every report prints, as (label, percentile) pairs.
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p95", 95.0),
    ("p99", 99.0),
    ("p999", 99.9),
)


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Percentiles of one histogram, in milliseconds (what the reports and JSON carry)."""

    count: int
    avg_ms: float
    min_ms: float
    max_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "avg_ms": self.avg_ms,
            "min_ms": self.min_ms,
            "max_ms": self.max_ms,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "p999_ms": self.p999_ms,
        }


class LatencyHistogram:
    """An HdrHistogram of latencies in integer microseconds.

    Values above ``HIGHEST_US`` are clamped to it (and counted in ``clamped``) rather than
    raising, so one pathological stall never loses a run's results. Not thread-safe.
    """

    __slots__ = ("_hist", "clamped")

    def __init__(self, hist: HdrHistogram | None = None) -> None:
        self._hist = hist if hist is not None else HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)
        self.clamped = 0

    # --- recording -----------------------------------------------------------------------
    def record_us(self, value_us: int, count: int = 1) -> None:
        """Record ``count`` samples of ``value_us`` microseconds (values below 1 us count as 1)."""
        if count <= 0:
            return
        v = int(value_us)
        if v < LOWEST_US:
            v = LOWEST_US
        elif v > HIGHEST_US:
            v = HIGHEST_US
            self.clamped += count
        self._hist.record_value(v, count)

    def merge(self, other: LatencyHistogram) -> None:
        """Add every sample of ``other`` into this histogram."""
        self._hist.add(other._hist)
        self.clamped += other.clamped

    # --- wire form (between processes, into JSON) ------------------------------------------
    def encode(self) -> str:
        """HdrHistogram's compressed base64 form (readable by any HdrHistogram implementation)."""
        return self._hist.encode().decode("ascii")

    @classmethod
    def decode(cls, encoded: str | bytes) -> LatencyHistogram:
        data = encoded.encode("ascii") if isinstance(encoded, str) else encoded
        return cls(HdrHistogram.decode(data))

    @classmethod
    def merged(cls, histograms: Iterable[LatencyHistogram]) -> LatencyHistogram:
        out = cls()
        for h in histograms:
            out.merge(h)
        return out

    # --- reading -------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return int(self._hist.get_total_count())

    def value_at_percentile_us(self, percentile: float) -> int:
        return int(self._hist.get_value_at_percentile(percentile)) if self.count else 0

    def mean_us(self) -> float:
        return float(self._hist.get_mean_value()) if self.count else 0.0

    def max_us(self) -> int:
        # hdrh reports the highest *equivalent* value of the max bucket; for the max that is
        # what every HdrHistogram tool prints, and it keeps max >= p99.9 always.
        return int(self._hist.get_max_value()) if self.count else 0

    def min_us(self) -> int:
        return int(self._hist.get_min_value()) if self.count else 0

    def summary(self) -> LatencySummary:
        """Percentiles in milliseconds; all zero for an empty histogram."""
        p = {label: self.value_at_percentile_us(q) / 1000.0 for label, q in PERCENTILES}
        return LatencySummary(
            count=self.count,
            avg_ms=self.mean_us() / 1000.0,
            min_ms=self.min_us() / 1000.0,
            max_ms=self.max_us() / 1000.0,
            p50_ms=p["p50"],
            p95_ms=p["p95"],
            p99_ms=p["p99"],
            p999_ms=p["p999"],
        )

    def distribution(self, ticks_per_half_distance: int = 5) -> list[tuple[float, float]]:
        """(percentile, latency_ms) points for a percentile plot (HdrHistogram's iterator)."""
        if not self.count:
            return []
        out: list[tuple[float, float]] = []
        for item in self._hist.get_percentile_iterator(ticks_per_half_distance):
            out.append((float(item.percentile_level_iterated_to), item.value_iterated_to / 1000.0))
        return out


class LatencyRecorder:
    """The cheap hot-path front of a ``LatencyHistogram``, with window statistics.

    ``record_us`` costs one dict update, ``record_sends_us`` a few C passes over a batch's send
    times; ``drain_into`` moves the pending counts into the histogram. It also keeps the per-window count, sum and max that Kafka's progress line
    prints (``take_window``). Not thread-safe.
    """

    __slots__ = ("_pending", "_shifted", "window_count", "window_sum_us", "window_max_us")

    def __init__(self) -> None:
        self._pending: Counter[int] = Counter()
        # shift -> Counter of (value >> shift): batches whose latencies share one bucket width
        self._shifted: dict[int, Counter[int]] = {}
        self.window_count = 0
        self.window_sum_us = 0
        self.window_max_us = 0

    def record_us(self, value_us: int) -> None:
        pending = self._pending
        pending[value_us] = pending.get(value_us, 0) + 1
        self.window_count += 1
        self.window_sum_us += value_us
        if value_us > self.window_max_us:
            self.window_max_us = value_us

    def record_many_us(self, value_us: int, count: int) -> None:
        """``count`` samples of one latency (records acknowledged together in one batch)."""
        if count <= 0:
            return
        pending = self._pending
        pending[value_us] = pending.get(value_us, 0) + count
        self.window_count += count
        self.window_sum_us += value_us * count
        if value_us > self.window_max_us:
            self.window_max_us = value_us

    def record_sends_us(self, ack_ns: int, send_ns: list[int]) -> None:
        """One sample per send time: ``(ack_ns - s) // 1000`` microseconds, for the records of
        one acknowledged batch. The same samples as ``record_us`` for each, counted in C
        (``Counter.update``), so the bench's own cost per record stays small."""
        if not send_ns:
            return
        lat = list(map(floordiv, map(sub, repeat(ack_ns), send_ns), repeat(1000)))
        self.window_count += len(lat)
        self.window_sum_us += sum(lat)
        top = max(lat)
        if top >= _EXACT_BELOW:
            # Each value as its HdrHistogram bucket (3 significant figures: v with its bits
            # below the top 11 cleared), which the histogram records identically: the counters
            # then hold a few thousand distinct keys per window instead of one per
            # microsecond, and drain_into's pure-Python record_value (~3 us each) stops
            # costing about a microsecond per record.
            shift = top.bit_length() - _EXACT_BITS
            if min(lat).bit_length() - _EXACT_BITS == shift:
                # The usual batch: every latency within one power of two, one bucket width.
                counter = self._shifted.get(shift)
                if counter is None:
                    counter = self._shifted[shift] = Counter()
                counter.update(map(rshift, lat, repeat(shift)))
            else:
                shifts = list(map(max, map(sub, map(int.bit_length, lat), repeat(_EXACT_BITS)), repeat(0)))
                self._pending.update(map(lshift, map(rshift, lat, shifts), shifts))
        else:
            self._pending.update(lat)
        if top > self.window_max_us:
            self.window_max_us = top

    def drain_into(self, histogram: LatencyHistogram) -> None:
        pending, self._pending = self._pending, Counter()
        shifted, self._shifted = self._shifted, {}
        for value, count in pending.items():
            histogram.record_us(value, count)
        for shift, counter in shifted.items():
            for value, count in counter.items():
                histogram.record_us(value << shift, count)

    def take_window(self) -> tuple[int, int, int]:
        """(count, sum_us, max_us) since the last call, then reset them."""
        w = (self.window_count, self.window_sum_us, self.window_max_us)
        self.window_count = 0
        self.window_sum_us = 0
        self.window_max_us = 0
        return w
