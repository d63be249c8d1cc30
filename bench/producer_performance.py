"""``annal-bench produce``: producer throughput and latency, like Kafka's ``ProducerPerformance``.

Sends ``--num-records`` records of ``--record-size`` bytes from ``--producers`` processes
(``--num-records`` in total, split evenly; ``--throughput`` in total, split evenly), prints a
window line every ``--reporting-interval-ms`` (5 s) and a final line with the percentiles::

    74015 records sent, 36837.3 records/sec (3.51 MB/sec), 172.9 ms avg latency, 623.9 ms max latency.
    1000000 records sent, 262284.849315 records/sec (25.01 MB/sec), 14.63 ms avg latency, 147.46 ms max latency, 13.15 ms 50th, 33.47 ms 95th, 52.00 ms 99th, 58.46 ms 99.9th.

A record counts as sent when it is acknowledged (its batch's callback ran without error); its
latency is ack time minus the time just before ``send`` (see ``bench/_workers.py`` for how it
is recorded per batch without a callback per record). With no ``--bootstrap-server`` or
``--zookeeper`` a standalone broker is started on a temporary directory for the run.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from typing import Any

from annal.bench._common import (
    Progress, add_connection_args, add_output_args, connection, ensure_topic, finish, log, terminate_as_interrupt,
)  # fmt: skip
from annal.bench._histogram import LatencyHistogram
from annal.bench._report import MIB, producer_total_line, producer_window_line
from annal.bench._workers import Collector, Window, WorkerError, produce_worker, parse_prop

__all__ = ["build_parser", "main", "run", "run_producers"]


def _prop(text: str) -> tuple[str, Any]:
    try:
        return parse_prop(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _acks(value: str) -> str:
    if value in ("0", "1", "all"):
        return value
    if value == "-1":
        return "all"
    raise argparse.ArgumentTypeError("acks must be 0, 1, all or -1")


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="annal-bench produce", description=__doc__.split("\n\n")[0])
    p.add_argument("--topic", default="annal-bench", help="topic to produce to (created if missing; default annal-bench)")
    p.add_argument("--num-records", type=int, default=1_000_000, help="records to send in total (default 1,000,000)")
    p.add_argument("--record-size", type=int, default=100, help="value bytes per record (default 100)")
    p.add_argument("--key-size", type=int, default=0, help="key bytes per record; 0 = no key (default)")
    p.add_argument("--throughput", type=float, default=-1, help="records/s in total; -1 = unlimited (default)")
    p.add_argument("--producers", type=int, default=1, help="producer processes (default 1)")
    p.add_argument("--partitions", type=int, default=1, help="partitions when the topic is created (default 1)")
    p.add_argument("--acks", type=_acks, default="1", help="0, 1 or all (default 1)")
    p.add_argument("--linger-ms", type=float, default=None, help="producer linger.ms (default: the SDK's)")
    p.add_argument("--batch-size", type=int, default=None, help="producer batch size in bytes (default: the SDK's)")
    p.add_argument("--compression", dest="compression_type", choices=["none", "lz4"], default="none",
                   help="batch compression (default none)")
    p.add_argument("--payload-text", choices=["log", "random", "zeros"], default="log",
                   help="record values: varied log lines, random bytes or zeros (default log)")
    p.add_argument("--latency-per", choices=["batch", "record"], default="batch",
                   help="one ack callback per batch (default, cheap) or per record")
    p.add_argument("--reporting-interval-ms", type=int, default=5000, help="progress line interval (default 5000)")
    p.add_argument("--producer-prop", dest="producer_props", action="append", default=[], type=_prop, metavar="NAME=VALUE",
                   help="any other Producer() option, e.g. max_in_flight_requests_per_connection=10 (repeatable)")
    add_connection_args(p)
    add_output_args(p)
    return p


def _validate(args: argparse.Namespace) -> str | None:
    if args.num_records < 1:
        return "--num-records must be >= 1"
    if args.record_size < 0 or args.key_size < 0:
        return "--record-size and --key-size must be >= 0"
    if args.producers < 1:
        return "--producers must be >= 1"
    if args.partitions < 1:
        return "--partitions must be >= 1"
    if args.throughput == 0:
        return "--throughput must be > 0, or -1 for unlimited"
    return None


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def worker_config(args: argparse.Namespace, conn: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "topic": args.topic,
        "record_size": args.record_size,
        "key_size": args.key_size,
        "acks": args.acks,
        "linger_ms": args.linger_ms,
        "batch_size": args.batch_size,
        "compression_type": None if args.compression_type in (None, "none") else args.compression_type,
        "payload_text": args.payload_text,
        "latency_per": args.latency_per,
        "producer_props": dict(args.producer_props),
        "bootstrap_servers": conn.get("bootstrap_servers"),
        "zookeeper": conn.get("zookeeper"),
    }


def run_producers(
    cfg: Mapping[str, Any],
    *,
    producers: int,
    num_records: int,
    throughput: float,
    reporting_interval_s: float,
    quiet: bool = False,
) -> tuple[dict[str, Any], list[dict[str, float]], LatencyHistogram]:
    """Run the producer processes; return (result, timeseries, merged latency histogram)."""
    progress = Progress(num_records, desc="produce") if not quiet else None

    def on_window(w: Window, now_ns: int) -> None:
        line = producer_window_line(w.records, w.bytes, (now_ns - w.start_ns) / 1e9, w.lat_sum_us / 1000.0, w.lat_max_us / 1000.0)
        if progress is not None:
            progress.write(line)

    collector = Collector(window_s=reporting_interval_s, on_window=on_window,
                          on_tick=progress.update if progress is not None else None)  # fmt: skip
    shares = _split(num_records, producers)
    for i, n in enumerate(shares):
        wcfg = dict(cfg)
        wcfg["num_records"] = n
        wcfg["throughput"] = throughput / producers if throughput > 0 else -1
        collector.spawn(produce_worker, wcfg, name=f"annal-bench-producer-{i}")
    try:
        start_ns = collector.run()
    finally:
        if progress is not None:
            progress.close()
    results = [collector.results[i] for i in sorted(collector.results)]
    end_ns = max(r["end_ns"] for r in results)
    elapsed_s = max((end_ns - start_ns) / 1e9, 1e-9)
    hist = collector.merged_histogram()
    records = sum(r["records"] for r in results)
    bytes_ = sum(r["bytes"] for r in results)
    errors = sum(r["errors"] for r in results)
    first_error = next((r["first_error"] for r in results if r["first_error"]), "")
    result = {
        "records": records,
        "bytes": bytes_,
        "errors": errors,
        "first_error": first_error,
        "elapsed_s": elapsed_s,
        "records_per_sec": records / elapsed_s,
        "mb_per_sec": bytes_ / elapsed_s / MIB,
        "latency_ms": hist.summary().as_dict(),
        "latency_clamped": hist.clamped,
        "latency_per": results[0]["latency_per"] if results else cfg.get("latency_per", "batch"),
        "latency_histogram": hist.encode(),
        "per_producer": [
            {"records": r["records"], "errors": r["errors"], "elapsed_s": (r["end_ns"] - r["start_ns"]) / 1e9}
            for r in results
        ],
    }
    return result, collector.timeseries(), hist


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with terminate_as_interrupt():
        return run(args, argv)


def run(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    problem = _validate(args)
    if problem:
        log(f"annal-bench produce: {problem}")
        return 2
    started = time.time()
    try:
        with connection(args) as conn:
            partitions = ensure_topic(conn, args.topic, args.partitions)
            cfg = worker_config(args, conn)
            result, timeseries, hist = run_producers(
                cfg, producers=args.producers, num_records=args.num_records, throughput=args.throughput,
                reporting_interval_s=args.reporting_interval_ms / 1000.0,
            )  # fmt: skip
    except WorkerError as e:
        log(f"annal-bench produce: a producer failed:\n{e}")
        return 1
    finished = time.time()
    print(producer_total_line(result["records"], result["bytes"], result["elapsed_s"], hist.summary()), flush=True)
    if result["errors"]:
        log(f"annal-bench produce: {result['errors']} records failed; first error: {result['first_error']}")
    config = {k: v for k, v in vars(args).items() if k not in ("json_path", "plot_path")}
    config["topic_partitions"] = partitions
    config["local_broker"] = not (args.bootstrap_servers or args.zookeeper)
    finish(
        args, "produce", argv, config=config, result=result, started_epoch_s=started, finished_epoch_s=finished,
        timeseries=timeseries, latency_distribution=hist.distribution(), latency_label="produce latency (send to ack)", latency_count=hist.count,
        title=f"annal-bench produce: {args.num_records} x {args.record_size} B, {args.producers} producer(s), acks={args.acks}",
    )  # fmt: skip
    return 0 if result["errors"] == 0 and result["records"] == args.num_records else 1


if __name__ == "__main__":
    sys.exit(main())
