"""annal.bench.cli and the tools' argument checks (nothing here starts a broker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from annal.bench import cli, consumer_performance, end_to_end_latency, producer_performance
from annal.bench._workers import make_keys, make_payloads


def test_usage_and_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    assert "produce" in capsys.readouterr().out
    assert cli.main([]) == 2
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_every_command_has_a_parser() -> None:
    for name, (module, _) in cli.COMMANDS.items():
        with pytest.raises(SystemExit) as e:
            cli.main([name, "--help"])
        assert e.value.code == 0, name


@pytest.mark.parametrize(
    "argv",
    [
        ["--num-records", "0"],
        ["--producers", "0"],
        ["--record-size", "-1"],
        ["--throughput", "0"],
    ],
)
def test_produce_rejects_bad_options_before_starting_anything(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert producer_performance.main(argv) == 2
    assert "annal-bench produce:" in capsys.readouterr().err


def test_bad_acks_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        producer_performance.build_parser().parse_args(["--acks", "2"])
    assert producer_performance.build_parser().parse_args(["--acks", "-1"]).acks == "all"


def test_bootstrap_and_zookeeper_are_exclusive() -> None:
    with pytest.raises(SystemExit):
        producer_performance.build_parser().parse_args(["--bootstrap-server", "a:1", "--zookeeper", "z:2181"])


def test_consume_and_e2e_reject_bad_options() -> None:
    assert consumer_performance.main(["--num-records", "0"]) == 2
    assert consumer_performance.main(["--group", "g"]) == 2  # groups need ZooKeeper
    assert end_to_end_latency.main(["--rate", "0"]) == 2
    assert end_to_end_latency.main(["--record-size", "4"]) == 2


def test_split_is_exact() -> None:
    assert producer_performance._split(10, 3) == [4, 3, 3]
    assert sum(producer_performance._split(1_000_001, 7)) == 1_000_001


def test_consumer_assignment_covers_every_partition_once() -> None:
    a = consumer_performance._assignments(list(range(7)), 3)
    assert sorted(p for part in a for p in part) == list(range(7))
    assert a[0] == [0, 3, 6]


@pytest.mark.parametrize("kind", ["log", "random", "zeros"])
@pytest.mark.parametrize("size", [0, 1, 100, 5000])
def test_payloads_have_the_exact_size(kind: str, size: int) -> None:
    pool = make_payloads(kind, size, count=16)
    assert len(pool) == 16
    assert all(len(p) == size for p in pool)


def test_log_payloads_vary_and_compress() -> None:
    import lz4.frame

    pool = make_payloads("log", 200, count=64)
    assert len(set(pool)) == 64
    assert pool[0].decode().startswith("2026-")
    blob = b"".join(pool)
    assert len(lz4.frame.compress(blob)) < len(blob) * 0.8
    rnd = b"".join(make_payloads("random", 200, count=64))
    assert len(lz4.frame.compress(rnd)) > len(rnd) * 0.95


def test_keys() -> None:
    assert make_keys(0) is None
    keys = make_keys(8, count=4)
    assert keys is not None and all(len(k) == 8 for k in keys)


def test_plot_run_and_ceiling_write_pngs(tmp_path: Path) -> None:
    from annal.bench._histogram import LatencyHistogram
    from annal.bench._plot import plot_ceiling, plot_run

    h = LatencyHistogram()
    for v in range(1, 5000):
        h.record_us(v)
    ts = [{"t_s": float(i + 1), "records": 1000 * i, "bytes": 100_000 * i} for i in range(5)]
    p = tmp_path / "run.png"
    plot_run(str(p), title="t", timeseries=ts, latency_distribution=h.distribution())
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    p2 = tmp_path / "ceiling.png"
    plot_ceiling(str(p2), {"write_buffered_gb_s": 1.0, "sendfile_gb_s": 2.0, "fdatasync_us": 900.0, "python_records_per_s": 3e6})
    assert p2.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    p3 = tmp_path / "throughput-only.png"
    plot_run(str(p3), title="t", timeseries=ts)
    assert p3.stat().st_size > 0


def test_batch_grouping_only_for_futures_that_expose_their_batch() -> None:
    from types import SimpleNamespace

    from annal.bench._workers import _has_batch
    from annal.client import FutureRecordMetadata

    assert _has_batch(FutureRecordMetadata((SimpleNamespace(result=None), 0, 0)))
    assert not _has_batch(object())
    assert not _has_batch((1, 2, 3))


def test_parse_prop() -> None:
    from annal.bench._workers import parse_prop

    assert parse_prop("max_in_flight=10") == ("max_in_flight", 10)
    assert parse_prop("linger.ms=2.5") == ("linger_ms", 2.5)
    assert parse_prop("check_crcs=false") == ("check_crcs", False)
    assert parse_prop("compression_type=lz4") == ("compression_type", "lz4")
    assert parse_prop("compression_type=None") == ("compression_type", None)
    for bad in ("novalue", "=3", "bad name=1"):
        with pytest.raises(ValueError):
            parse_prop(bad)
    args = producer_performance.build_parser().parse_args(["--producer-prop", "retries=3", "--producer-prop", "acks=1"])
    assert args.producer_props == [("retries", 3), ("acks", 1)]
