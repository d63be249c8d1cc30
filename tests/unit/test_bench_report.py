"""annal.bench._report: Kafka perf-tool lines, character for character, and the JSON summary shape."""

from __future__ import annotations

import calendar
import json
import re
from pathlib import Path

from annal.bench._histogram import LatencySummary
from annal.bench._report import (
    CONSUMER_HEADER,
    SCHEMA,
    build_summary,
    consumer_line,
    e2e_line,
    kafka_date,
    machine_info,
    producer_total_line,
    producer_window_line,
    write_json,
)

SUMMARY = LatencySummary(count=1000, avg_ms=3.0512, min_ms=0.2, max_ms=25.0, p50_ms=2.81, p95_ms=5.934, p99_ms=9.1, p999_ms=18.3)


def test_producer_window_line_is_kafkas_print_window() -> None:
    # 500,000 records of 100 bytes in 5 s, latency sum 1,550,000 ms, max 21 ms.
    line = producer_window_line(500_000, 50_000_000, 5.0, 1_550_000.0, 21.0)
    assert line == "500000 records sent, 100000.0 records/sec (9.54 MB/sec), 3.1 ms avg latency, 21.0 ms max latency."


def test_producer_total_line_is_kafkas_print_total_with_decimal_percentiles() -> None:
    line = producer_total_line(1_000_000, 100_000_000, 10.0, SUMMARY)
    assert line == (
        "1000000 records sent, 100000.000000 records/sec (9.54 MB/sec), 3.05 ms avg latency, "
        "25.00 ms max latency, 2.81 ms 50th, 5.93 ms 95th, 9.10 ms 99th, 18.30 ms 99.9th."
    )


def test_producer_lines_parse_with_kafkas_regex() -> None:
    # The pattern tools that scrape ProducerPerformance output use.
    pat = re.compile(r"^(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, ([\d.]+) ms max latency")
    assert pat.match(producer_total_line(10, 1000, 1.0, SUMMARY))
    assert pat.match(producer_window_line(10, 1000, 1.0, 5.0, 1.0))


def test_window_line_with_no_records_does_not_divide_by_zero() -> None:
    assert producer_window_line(0, 0, 0.0, 0.0, 0.0).startswith("0 records sent, 0.0 records/sec (0.00 MB/sec), 0.0 ms avg")


def test_kafka_date_format_in_utc() -> None:
    t = calendar.timegm((2026, 11, 26, 16, 20, 1, 0, 0, 0)) + 0.123
    assert kafka_date(t) == "2026-11-26 16:20:01:123"


def test_consumer_line_is_consumer_performance() -> None:
    start = calendar.timegm((2026, 11, 26, 16, 20, 0, 0, 0, 0))
    # 1,000,000 records, 100 MiB in 4 s, 500 ms of it rebalancing.
    line = consumer_line(start, start + 4.0, 100 * 1024 * 1024, 1_000_000, 500.0)
    assert line == (
        "2026-11-26 16:20:00:000, 2026-11-26 16:20:04:000, 100.0000, 25.0000, 1000000, 250000.0000, "
        "500, 3500, 28.5714, 285714.2857"
    )
    assert len(line.split(", ")) == len(CONSUMER_HEADER.split(", ")) == 10


def test_e2e_line() -> None:
    assert e2e_line(1000, SUMMARY) == (
        "1000 records received, 3.05 ms avg end-to-end latency, 25.00 ms max, 2.81 ms 50th, "
        "5.93 ms 95th, 9.10 ms 99th, 18.30 ms 99.9th."
    )


def test_machine_info_has_cores_and_cpu_model() -> None:
    m = machine_info()
    assert isinstance(m["cpus"], int) and m["cpus"] >= 1
    assert isinstance(m["cpu_model"], str) and m["cpu_model"]
    assert m["python"].count(".") == 2


def test_summary_schema_and_atomic_write(tmp_path: Path) -> None:
    s = build_summary(
        "produce",
        config={"num_records": 10, "record_size": 100, "_private": 1, "callable": print},
        result={"records": 10, "latency_ms": SUMMARY.as_dict()},
        started_epoch_s=1_700_000_000.0,
        finished_epoch_s=1_700_000_001.5,
        timeseries=[{"t_s": 1.0, "records": 10, "bytes": 1000}],
        command_line=["annal-bench", "produce", "--num-records", "10"],
    )
    path = tmp_path / "out.json"
    write_json(str(path), s)
    loaded = json.loads(path.read_text())
    assert loaded["schema"] == SCHEMA
    assert loaded["tool"] == "produce"
    assert loaded["command_line"] == ["annal-bench", "produce", "--num-records", "10"]
    assert loaded["config"] == {"num_records": 10, "record_size": 100}  # private and non-JSON values dropped
    assert loaded["started_at"] == "2023-11-14T22:13:20.000+00:00"
    assert loaded["finished_at"] == "2023-11-14T22:13:21.500+00:00"
    assert set(loaded["machine"]) >= {"cpus", "cpu_model", "python", "platform"}
    assert loaded["result"]["latency_ms"]["p999_ms"] == 18.3
    assert loaded["timeseries"] == [{"t_s": 1.0, "records": 10, "bytes": 1000}]
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left behind
