"""Report lines and JSON summaries of ``annal-bench``, in the format of Kafka's perf tools.

Producer lines follow Kafka's ``ProducerPerformance`` (``Stats.printWindow`` and
``Stats.printTotal``) character for character, except that the percentiles are printed with
two decimals instead of whole milliseconds: a Python client on loopback sees sub-millisecond
latencies, and ``0 ms 50th`` says nothing. Consumer lines follow ``kafka-consumer-perf-test``
(``ConsumerPerformance``): a CSV header, then one line with start/end time, MB consumed, MB/s,
records and records/s. MB is MiB (1024 * 1024 bytes) in both, as in Kafka.

The JSON summary (``--json FILE``) is one object::

    {"schema": "annal-bench/1", "tool": "produce" | "consume" | "e2e" | "ceiling",
     "command_line": [...], "started_at": ISO-8601 UTC, "finished_at": ...,
     "config": {...the parsed options...}, "machine": {...machine_info()...},
     "result": {...per tool...}, "timeseries": [{"t_s", "records", "bytes"}, ...]}

Everything here is pure formatting: no I/O except ``write_json``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from annal.bench._histogram import LatencySummary

__all__ = [
    "SCHEMA",
    "MIB",
    "producer_window_line",
    "producer_total_line",
    "CONSUMER_HEADER",
    "consumer_line",
    "e2e_line",
    "kafka_date",
    "machine_info",
    "build_summary",
    "write_json",
]

SCHEMA = "annal-bench/1"
MIB = 1024.0 * 1024.0


def producer_window_line(records: int, bytes_: int, elapsed_s: float, latency_sum_ms: float, latency_max_ms: float) -> str:
    """Kafka's ``printWindow``: ``N records sent, X records/sec (Y MB/sec), A ms avg latency, M ms max latency.``"""
    elapsed_s = max(elapsed_s, 1e-9)
    recs_per_sec = records / elapsed_s
    mb_per_sec = bytes_ / elapsed_s / MIB
    avg = latency_sum_ms / records if records else 0.0
    return (
        f"{records} records sent, {recs_per_sec:.1f} records/sec ({mb_per_sec:.2f} MB/sec), "
        f"{avg:.1f} ms avg latency, {latency_max_ms:.1f} ms max latency."
    )


def producer_total_line(records: int, bytes_: int, elapsed_s: float, latency: LatencySummary) -> str:
    """Kafka's ``printTotal``: the window line plus the 50th, 95th, 99th and 99.9th percentiles."""
    elapsed_s = max(elapsed_s, 1e-9)
    recs_per_sec = records / elapsed_s
    mb_per_sec = bytes_ / elapsed_s / MIB
    return (
        f"{records} records sent, {recs_per_sec:f} records/sec ({mb_per_sec:.2f} MB/sec), "
        f"{latency.avg_ms:.2f} ms avg latency, {latency.max_ms:.2f} ms max latency, "
        f"{latency.p50_ms:.2f} ms 50th, {latency.p95_ms:.2f} ms 95th, "
        f"{latency.p99_ms:.2f} ms 99th, {latency.p999_ms:.2f} ms 99.9th."
    )


CONSUMER_HEADER = (
    "start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, "
    "rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec"
)


def kafka_date(epoch_s: float) -> str:
    """``yyyy-MM-dd HH:mm:ss:SSS`` in UTC, the date format of Kafka's consumer perf tool."""
    t = _dt.datetime.fromtimestamp(epoch_s, tz=_dt.timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M:%S:") + f"{t.microsecond // 1000:03d}"


def consumer_line(start_epoch_s: float, end_epoch_s: float, bytes_: int, records: int, rebalance_ms: float) -> str:
    """``ConsumerPerformance``'s result line (non-detailed form)."""
    elapsed_s = max(end_epoch_s - start_epoch_s, 1e-9)
    fetch_s = max(elapsed_s - rebalance_ms / 1000.0, 1e-9)
    mb = bytes_ / MIB
    return (
        f"{kafka_date(start_epoch_s)}, {kafka_date(end_epoch_s)}, {mb:.4f}, {mb / elapsed_s:.4f}, "
        f"{records}, {records / elapsed_s:.4f}, {int(round(rebalance_ms))}, {int(round(fetch_s * 1000))}, "
        f"{mb / fetch_s:.4f}, {records / fetch_s:.4f}"
    )


def e2e_line(records: int, latency: LatencySummary) -> str:
    """End-to-end latency line, worded like the producer's total line."""
    return (
        f"{records} records received, {latency.avg_ms:.2f} ms avg end-to-end latency, "
        f"{latency.max_ms:.2f} ms max, {latency.p50_ms:.2f} ms 50th, {latency.p95_ms:.2f} ms 95th, "
        f"{latency.p99_ms:.2f} ms 99th, {latency.p999_ms:.2f} ms 99.9th."
    )


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_info() -> dict[str, Any]:
    """What a reader needs to compare two runs: cores, CPU model, memory, OS and Python."""
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": _cpu_model(),
        "mem_total_bytes": _mem_total_bytes(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
    }


def _iso(epoch_s: float) -> str:
    return _dt.datetime.fromtimestamp(epoch_s, tz=_dt.timezone.utc).isoformat(timespec="milliseconds")


def build_summary(
    tool: str,
    *,
    config: Mapping[str, Any],
    result: Mapping[str, Any],
    started_epoch_s: float,
    finished_epoch_s: float,
    timeseries: Sequence[Mapping[str, Any]] = (),
    command_line: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The JSON summary object (see the module docstring for its shape)."""
    return {
        "schema": SCHEMA,
        "tool": tool,
        "command_line": list(command_line) if command_line is not None else [os.path.basename(sys.argv[0]), *sys.argv[1:]],
        "started_at": _iso(started_epoch_s),
        "finished_at": _iso(finished_epoch_s),
        "config": {k: v for k, v in config.items() if not k.startswith("_") and _jsonable(v)},
        "machine": machine_info(),
        "result": dict(result),
        "timeseries": [dict(p) for p in timeseries],
    }


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
    except (TypeError, ValueError):
        return False
    return True


def write_json(path: str, summary: Mapping[str, Any]) -> None:
    """Write atomically (temp file + rename) so a reader never sees half a summary."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)
