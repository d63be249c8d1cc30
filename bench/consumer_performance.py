"""``annal-bench consume``: consumer throughput, like Kafka's ``kafka-consumer-perf-test``.

Reads ``--num-records`` records (in total over ``--consumers`` processes) from the beginning
of ``--topic`` and prints Kafka's CSV header and result line::

    start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
    2026-11-26 15:01:49:030, 2026-11-26 15:01:51:168, 95.3674, 44.5962, 1000000, 467624.8453, 0, 2138, 44.5962, 467624.8453

Without ``--group`` the partitions are split over the consumers by hand (``assign``: consumer
``i`` reads the partitions ``p`` with ``p % consumers == i``, so rebalance time is 0); with
``--group`` they subscribe as one group and rebalance time is the time to the first
assignment. Bytes are key plus value bytes, MB is MiB (as in Kafka).

If the topic holds fewer than ``--num-records`` records, the missing ones are produced first
(``--record-size`` bytes each, not timed), so ``annal-bench consume`` works on its own, for
example against the standalone broker it starts when given no ``--bootstrap-server``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from annal.bench._common import (
    Progress, add_connection_args, add_output_args, connection, describe_partitions, ensure_topic, finish, log,
    terminate_as_interrupt,
)  # fmt: skip
from annal.bench._report import CONSUMER_HEADER, MIB, consumer_line
from annal.bench._workers import Collector, Window, WorkerError, consume_worker, parse_prop

__all__ = ["build_parser", "main", "run"]


def _prop(text: str) -> tuple[str, Any]:
    try:
        return parse_prop(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="annal-bench consume", description=__doc__.split("\n\n")[0])
    p.add_argument("--topic", default="annal-bench", help="topic to read (default annal-bench)")
    p.add_argument("--num-records", type=int, default=1_000_000, help="records to read in total (default 1,000,000)")
    p.add_argument("--consumers", type=int, default=1, help="consumer processes (default 1)")
    p.add_argument("--group", default=None, help="consumer group id (default: no group, partitions assigned by hand)")
    p.add_argument("--fetch-max-bytes", type=int, default=None, help="consumer fetch_max_bytes (default: the SDK's)")
    p.add_argument("--max-partition-fetch-bytes", type=int, default=None,
                   help="consumer max_partition_fetch_bytes (default: the SDK's)")
    p.add_argument("--timeout-ms", type=int, default=10_000,
                   help="give up after this long without a record (default 10000, as Kafka)")
    p.add_argument("--partitions", type=int, default=1, help="partitions if the topic has to be created (default 1)")
    p.add_argument("--record-size", type=int, default=100, help="value bytes of records produced to fill the topic")
    p.add_argument("--no-fill", dest="fill", action="store_false",
                   help="fail instead of producing the missing records first")
    p.add_argument("--hide-header", action="store_true", help="do not print the CSV header")
    p.add_argument("--reporting-interval-ms", type=int, default=5000, help="progress line interval (default 5000)")
    p.add_argument("--consumer-prop", dest="consumer_props", action="append", default=[], type=_prop, metavar="NAME=VALUE",
                   help="any other Consumer() option, e.g. fetch_max_wait_ms=100 (repeatable)")
    add_connection_args(p)
    add_output_args(p)
    return p


def _assignments(partitions: list[int], consumers: int) -> list[list[int]]:
    return [[p for p in partitions if p % consumers == i] for i in range(consumers)]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with terminate_as_interrupt():
        return run(args, argv)


def _fill(args: argparse.Namespace, conn: dict[str, Any], missing: int) -> None:
    from annal.bench.producer_performance import run_producers

    log(f"the topic holds too few records: producing {missing} records of {args.record_size} bytes first (not timed)")
    cfg = {
        "topic": args.topic, "record_size": args.record_size, "key_size": 0, "acks": "1",
        "linger_ms": None, "batch_size": None, "compression_type": None, "payload_text": "log",
        "latency_per": "batch", "bootstrap_servers": conn.get("bootstrap_servers"), "zookeeper": conn.get("zookeeper"),
    }  # fmt: skip
    result, _, _ = run_producers(cfg, producers=1, num_records=missing, throughput=-1, reporting_interval_s=3600, quiet=True)
    if result["records"] != missing:
        raise RuntimeError(f"filling the topic failed: {result['records']} of {missing} records acknowledged; {result['first_error']}")


def run(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    if args.num_records < 1 or args.consumers < 1:
        log("annal-bench consume: --num-records and --consumers must be >= 1")
        return 2
    if args.group and not args.zookeeper:
        log("annal-bench consume: --group needs --zookeeper (consumer groups live in ZooKeeper)")
        return 2
    started = time.time()
    filled = 0
    try:
        with connection(args) as conn:
            ensure_topic(conn, args.topic, args.partitions)
            offsets = describe_partitions(conn, args.topic)
            available = sum(max(0, end - start) for start, end in offsets.values())
            if available < args.num_records:
                if not args.fill:
                    log(f"annal-bench consume: topic {args.topic!r} holds {available} records, fewer than --num-records")
                    return 1
                filled = args.num_records - available
                _fill(args, conn, filled)
            partitions = sorted(offsets)
            if not args.group and args.consumers > len(partitions):
                log(f"annal-bench consume: {args.consumers} consumers for {len(partitions)} partitions: "
                    "use --group or at most one consumer per partition")  # fmt: skip
                return 2
            result, timeseries = _run_consumers(args, conn, partitions)
    except (WorkerError, RuntimeError) as e:
        log(f"annal-bench consume: {e}")
        return 1
    finished = time.time()
    if not args.hide_header:
        print(CONSUMER_HEADER)
    print(consumer_line(result["start_epoch_s"], result["end_epoch_s"], result["bytes"], result["records"], result["rebalance_ms"]), flush=True)
    if result["timed_out"]:
        log(f"WARNING: Exiting before consuming the expected number of records: timeout ({args.timeout_ms} ms) exceeded.")
    result["filled_records"] = filled
    config = {k: v for k, v in vars(args).items() if k not in ("json_path", "plot_path")}
    config["topic_partitions"] = len(partitions)
    config["local_broker"] = not (args.bootstrap_servers or args.zookeeper)
    finish(
        args, "consume", argv, config=config, result=result, started_epoch_s=started, finished_epoch_s=finished,
        timeseries=timeseries, title=f"annal-bench consume: {args.num_records} records, {args.consumers} consumer(s)",
    )  # fmt: skip
    return 0 if result["records"] == args.num_records else 1


def _run_consumers(args: argparse.Namespace, conn: dict[str, Any], partitions: list[int]) -> tuple[dict[str, Any], list[dict[str, float]]]:
    progress = Progress(args.num_records, desc="consume")

    def on_window(w: Window, now_ns: int) -> None:
        secs = max((now_ns - w.start_ns) / 1e9, 1e-9)
        progress.write(f"{w.records} records consumed, {w.records / secs:.1f} records/sec "
                       f"({w.bytes / secs / MIB:.2f} MB/sec).", stderr=True)  # fmt: skip

    collector = Collector(window_s=args.reporting_interval_ms / 1000.0, on_window=on_window, on_tick=progress.update)
    remaining = collector.shared_counter(args.num_records)
    base = {
        "topic": args.topic, "group": args.group, "fetch_max_bytes": args.fetch_max_bytes,
        "max_partition_fetch_bytes": args.max_partition_fetch_bytes, "timeout_ms": args.timeout_ms,
        "assignments": _assignments(partitions, args.consumers), "consumer_props": dict(args.consumer_props),
        "bootstrap_servers": conn.get("bootstrap_servers"), "zookeeper": conn.get("zookeeper"),
    }  # fmt: skip
    for i in range(args.consumers):
        collector.spawn(consume_worker, base, remaining, name=f"annal-bench-consumer-{i}")
    wall0, mono0 = time.time(), time.monotonic_ns()
    try:
        start_ns = collector.run()
    finally:
        progress.close()
    results = [collector.results[i] for i in sorted(collector.results)]
    end_ns = max(r["end_ns"] for r in results)
    records = sum(r["records"] for r in results)
    bytes_ = sum(r["bytes"] for r in results)
    elapsed_s = max((end_ns - start_ns) / 1e9, 1e-9)
    rebalance_ms = max(r["rebalance_ms"] for r in results)
    fetch_s = max(elapsed_s - rebalance_ms / 1000.0, 1e-9)
    result = {
        "records": records,
        "bytes": bytes_,
        "elapsed_s": elapsed_s,
        "start_epoch_s": wall0 + (start_ns - mono0) / 1e9,
        "end_epoch_s": wall0 + (end_ns - mono0) / 1e9,
        "mb": bytes_ / MIB,
        "mb_per_sec": bytes_ / MIB / elapsed_s,
        "records_per_sec": records / elapsed_s,
        "rebalance_ms": rebalance_ms,
        "fetch_ms": fetch_s * 1000.0,
        "fetch_mb_per_sec": bytes_ / MIB / fetch_s,
        "fetch_records_per_sec": records / fetch_s,
        "timed_out": records < args.num_records,
        "per_consumer": [{"records": r["records"], "elapsed_s": (r["end_ns"] - r["start_ns"]) / 1e9} for r in results],
    }
    return result, collector.timeseries()


if __name__ == "__main__":
    sys.exit(main())
