"""``annal-bench e2e``: end-to-end latency, produce to consume, at a fixed rate.

A producer process sends ``--rate`` records/s for ``--duration-s`` seconds (Kafka's
``ThroughputThrottler``), writing its clock (``time.monotonic_ns()``, one clock for every
process of the machine) into the first 8 bytes of each value just before ``send``; a consumer
process, positioned at the log end before the producer starts, takes the clock once per
``poll`` that returns records and records ``receive time - send time`` of each record in an
HdrHistogram. The result line::

    10000 records sent in 5.01 s (1997.9 records/sec), target 2000 records/sec.
    10000 records received, 7.14 ms avg end-to-end latency, 121.92 ms max, 6.04 ms 50th, 12.74 ms 95th, 69.31 ms 99th, 92.16 ms 99.9th.

The producer's own ack latency (send to acknowledgement) is reported beside it. Producer and
consumer run on this machine, so their clocks agree; ``--acks`` and ``--linger-ms`` change what
the latency includes (``acks=all`` adds an fsync; ``linger-ms`` adds batching delay).
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
from annal.bench._histogram import LatencyHistogram
from annal.bench._report import e2e_line
from annal.bench._workers import E2E_STAMP, Collector, Window, WorkerError, consume_worker, produce_worker
from annal.bench.producer_performance import _acks

__all__ = ["build_parser", "main", "run"]


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="annal-bench e2e", description=__doc__.split("\n\n")[0])
    p.add_argument("--topic", default="annal-bench-e2e", help="topic (created if missing; default annal-bench-e2e)")
    p.add_argument("--rate", type=float, default=1000.0, help="records/s sent (default 1000)")
    p.add_argument("--duration-s", type=float, default=10.0, help="seconds of sending (default 10)")
    p.add_argument("--record-size", type=int, default=100, help=f"value bytes per record, >= {E2E_STAMP.size} (default 100)")
    p.add_argument("--partitions", type=int, default=1, help="partitions when the topic is created (default 1)")
    p.add_argument("--acks", type=_acks, default="1", help="0, 1 or all (default 1)")
    p.add_argument("--linger-ms", type=float, default=None, help="producer linger.ms (default: the SDK's)")
    p.add_argument("--batch-size", type=int, default=None, help="producer batch size in bytes (default: the SDK's)")
    p.add_argument("--compression", dest="compression_type", choices=["none", "lz4"], default="none")
    p.add_argument("--timeout-ms", type=int, default=10_000, help="consumer gives up after this long without a record")
    p.add_argument("--reporting-interval-ms", type=int, default=5000, help="progress line interval (default 5000)")
    add_connection_args(p)
    add_output_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with terminate_as_interrupt():
        return run(args, argv)


def run(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    if args.rate <= 0 or args.duration_s <= 0:
        log("annal-bench e2e: --rate and --duration-s must be > 0")
        return 2
    if args.record_size < E2E_STAMP.size:
        log(f"annal-bench e2e: --record-size must be >= {E2E_STAMP.size} (the send time is stamped in the value)")
        return 2
    n = max(1, int(round(args.rate * args.duration_s)))
    started = time.time()
    try:
        with connection(args) as conn:
            partitions = ensure_topic(conn, args.topic, args.partitions)
            start_offsets = {p: end for p, (_start, end) in describe_partitions(conn, args.topic).items()}
            progress = Progress(n, desc="e2e")

            def on_window(w: Window, now_ns: int) -> None:
                avg = w.lat_sum_us / w.lat_count / 1000.0 if w.lat_count else 0.0
                progress.write(f"{w.records} records received, {avg:.1f} ms avg end-to-end latency, "
                               f"{w.lat_max_us / 1000.0:.1f} ms max.")  # fmt: skip

            # worker 0 is the consumer (the only one whose ticks count), worker 1 the producer
            collector = Collector(window_s=args.reporting_interval_ms / 1000.0, on_window=on_window,
                                  on_tick=progress.update, counted={0})  # fmt: skip
            remaining = collector.shared_counter(n)
            common: dict[str, Any] = {"topic": args.topic, "bootstrap_servers": conn.get("bootstrap_servers"),
                                      "zookeeper": conn.get("zookeeper"), "e2e": True}  # fmt: skip
            ccfg = dict(common, assignments=[sorted(start_offsets)], start_offsets=start_offsets, timeout_ms=args.timeout_ms)
            pcfg = dict(
                common, num_records=n, throughput=args.rate, record_size=args.record_size, key_size=0,
                acks=args.acks, linger_ms=args.linger_ms, batch_size=args.batch_size,
                compression_type=None if args.compression_type == "none" else args.compression_type,
                payload_text="log", latency_per="batch",
            )  # fmt: skip
            collector.spawn(consume_worker, ccfg, remaining, name="annal-bench-e2e-consumer")
            collector.spawn(produce_worker, pcfg, name="annal-bench-e2e-producer")
            try:
                start_ns = collector.run()
            finally:
                progress.close()
    except WorkerError as e:
        log(f"annal-bench e2e: a worker failed:\n{e}")
        return 1
    finished = time.time()
    cres, pres = collector.results[0], collector.results[1]
    e2e = LatencyHistogram.decode(cres["histogram"])
    ack = LatencyHistogram.decode(pres["histogram"])
    send_s = max((pres["end_ns"] - start_ns) / 1e9, 1e-9)
    print(f"{pres['records']} records sent in {send_s:.2f} s ({pres['records'] / send_s:.1f} records/sec), "
          f"target {args.rate:g} records/sec.")  # fmt: skip
    print(e2e_line(cres["records"], e2e.summary()), flush=True)
    if cres["timed_out"] or cres["records"] < n:
        log(f"WARNING: received {cres['records']} of {n} records before the {args.timeout_ms} ms timeout.")
    result = {
        "records_sent": pres["records"],
        "records_received": cres["records"],
        "send_errors": pres["errors"],
        "send_elapsed_s": send_s,
        "send_records_per_sec": pres["records"] / send_s,
        "target_records_per_sec": args.rate,
        "e2e_latency_ms": e2e.summary().as_dict(),
        "e2e_latency_histogram": e2e.encode(),
        "produce_latency_ms": ack.summary().as_dict(),
        "produce_latency_histogram": ack.encode(),
        "timed_out": bool(cres["timed_out"]),
    }
    config = {k: v for k, v in vars(args).items() if k not in ("json_path", "plot_path")}
    config["num_records"] = n
    config["topic_partitions"] = partitions
    config["local_broker"] = not (args.bootstrap_servers or args.zookeeper)
    finish(
        args, "e2e", argv, config=config, result=result, started_epoch_s=started, finished_epoch_s=finished,
        timeseries=collector.timeseries(), latency_distribution=e2e.distribution(),
        latency_label="end-to-end latency", latency_count=e2e.count, title=f"annal-bench e2e: {args.rate:g} records/s for {args.duration_s:g} s",
    )  # fmt: skip
    ok = cres["records"] == n and pres["errors"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
