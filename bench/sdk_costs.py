"""What one record costs the SDK, piece by piece: the per-record operations of
``Producer.send`` timed alone, and the consumer's record building with and without the cyclic
GC paused. No broker: this times only Python-level work in one process.

    .venv/bin/python -m annal.bench.sdk_costs [--loops 1000000] [--repeats 7]

Each figure is the minimum over ``--repeats`` timed loops of ``--loops`` iterations, minus the
empty loop (the least disturbed run: this measures costs, not throughput). The consumer part
decodes 1 MiB fetch responses of the producer's 100-byte batches into ``ConsumerRecord``\\s,
as ``Consumer.poll`` does, holding each response's records until the next is built (as a poll
loop does), and counts the collector's young passes with ``gc.get_stats``.
"""

from __future__ import annotations

import argparse
import gc
import threading
import time
from typing import Callable

from annal.record import BatchBuilder, decode_records_into
from annal.client._accumulator import FutureRecordMetadata
from annal.client.structs import ConsumerRecord

VALUE = b"v" * 100
TS = 1_764_000_000_000


def _best_ns(loop: Callable[[int], None], loops: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        loop(loops)
        best = min(best, time.perf_counter() - t0)
    return best / loops * 1e9


def send_pieces(loops: int, repeats: int) -> dict[str, float]:
    """ns per iteration of each piece ``send()``'s plain-bytes path runs per record."""
    time_ns = time.time_ns
    lock = threading.Lock()
    sticky = {"t": object()}
    holder = object()

    def empty(n: int) -> None:
        for _ in range(n):
            pass

    def clock(n: int) -> None:
        for _ in range(n):
            time_ns() // 1000000

    def locked(n: int) -> None:
        for _ in range(n):
            lock.acquire()
            lock.release()

    def lookup(n: int) -> None:
        for _ in range(n):
            sticky.get("t")

    def future(n: int) -> None:
        for i in range(n):
            FutureRecordMetadata((holder, i, TS))

    def plain_tuple(n: int) -> None:
        for i in range(n):
            (holder, i, TS)

    def append(n: int) -> None:
        done = 0
        while done < n:  # a fresh 64 KiB batch whenever one is full, as the producer does
            b = BatchBuilder(0, 65536, TS)
            a = b.append_value
            while done < n and a(TS, VALUE) >= 0:
                done += 1

    base = _best_ns(empty, loops, repeats)
    out = {"empty loop iteration": base}
    for name, fn in (
        ("clock read for CreateTime: time.time_ns() // 10**6", clock),
        ("accumulator lock: acquire + release", locked),
        ("sticky-batch lookup: dict.get", lookup),
        ("returned FutureRecordMetadata (tuple subclass)", future),
        ("a plain 3-tuple, for comparison", plain_tuple),
        ("BatchBuilder.append_value (call + exact size + two appends)", append),
    ):
        out[name] = _best_ns(fn, loops, repeats) - base
    return out


def fetch_responses(records: int) -> list[bytes]:
    """1 MiB fetch responses of 64 KiB batches of 100-byte records, back to back."""
    batches: list[bytes] = []
    offset = 0
    while offset < records:
        b = BatchBuilder(0, 65536, TS)
        while offset + b.records_count < records and b.append_value(TS + b.records_count // 300, VALUE) >= 0:
            pass
        batches.append(b.build(offset))
        offset += b.records_count
    return [b"".join(batches[i : i + 16]) for i in range(0, len(batches), 16)]


class _Allocation:
    """One object allocated the way most are (not from a free list), so it can start a due
    collection as any allocation by the application or the fetch thread would."""

    __slots__ = ("records",)

    def __init__(self, records: list[ConsumerRecord]) -> None:
        self.records = records


def _decode_gc_paused(records: bytes, start: int, prefix: tuple[str, int], check_crcs: bool) -> tuple[list[ConsumerRecord], int]:
    """``decode_records_into`` with this process's collector paused while it runs: what an
    application may choose to do around ``poll`` (the consumer itself never switches it)."""
    gc.disable()
    try:
        return decode_records_into(records, start, ConsumerRecord, check_crcs, prefix)
    finally:
        gc.enable()


def consumer_building(records: int, repeats: int) -> dict[str, float]:
    """ns per record to build ConsumerRecords, collector running and paused, and the young
    collections each way."""
    responses = fetch_responses(records)
    n = sum(len(decode_records_into(r, 0, ConsumerRecord, True, ("t", 0))[0]) for r in responses)
    out: dict[str, float] = {}
    for label, paused in (("collector running", False), ("collector paused during the build", True)):
        best = float("inf")
        collections = 0
        for _ in range(repeats):
            before = gc.get_stats()[0]["collections"]
            held: list[ConsumerRecord] = []
            t0 = time.perf_counter()
            for r in responses:
                # As a poll loop does: one poll's records are held until the next poll has
                # returned, so the collector's pass after a paused build finds them alive.
                if paused:
                    fresh, _ = _decode_gc_paused(r, 0, ("t", 0), True)
                else:
                    fresh, _ = decode_records_into(r, 0, ConsumerRecord, True, ("t", 0))
                # poll() and the fetch thread allocate before the application drops the
                # previous records: a collection that came due during the build runs here.
                answer = _Allocation(fresh)
                held = fresh
            del held, fresh, answer
            best = min(best, time.perf_counter() - t0)
            collections = gc.get_stats()[0]["collections"] - before
        out[f"build ConsumerRecords, {label} (ns/record)"] = best / n * 1e9
        out[f"young collections per {n:,} records, {label}"] = float(collections)
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the per-record costs as a markdown table."""
    parser = argparse.ArgumentParser(prog="python -m annal.bench.sdk_costs", description=__doc__.split("\n")[0])
    parser.add_argument("--loops", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--records", type=int, default=200_000, help="records decoded per consumer repeat")
    args = parser.parse_args(argv)
    rows = {**send_pieces(args.loops, args.repeats), **consumer_building(args.records, args.repeats)}
    print("| piece | cost |")
    print("|---|---|")
    for name, value in rows.items():
        unit = "" if name.startswith("young") else " ns"
        print(f"| {name} | {value:,.0f}{unit} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
