"""annal-bench end to end at a tiny size: real broker process, real worker processes.

Each test runs a tool through its ``main([...])`` (or the installed ``annal-bench`` command)
with a local standalone broker started by the bench itself, then checks the JSON summary for
sane values. No timing asserts: rates only have to be positive and percentiles ordered.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from annal.bench import consumer_performance, end_to_end_latency, producer_performance
from annal.bench._local_broker import LocalBroker, LocalBrokerError
from annal.bench._workers import Collector, WorkerError
from annal.record import parse_header

N = 10_000


def _load(path: Path) -> dict[str, Any]:
    summary = json.loads(path.read_text())
    assert summary["schema"] == "annal-bench/1"
    assert summary["machine"]["cpus"] >= 1
    assert summary["command_line"][0] == "annal-bench"
    return summary


def _ordered(lat: dict[str, float]) -> None:
    assert 0 < lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"] <= lat["p999_ms"] <= lat["max_ms"]
    assert lat["min_ms"] <= lat["avg_ms"] <= lat["max_ms"]


def _local_data_dir(stderr: str) -> str:
    m = re.search(r"started a standalone broker on \S+ \(data dir (\S+)\)", stderr)
    assert m, stderr
    return m.group(1)


@pytest.mark.timeout(120)
def test_produce_json_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, png = tmp_path / "p.json", tmp_path / "p.png"
    rc = producer_performance.main([
        "--num-records", str(N), "--record-size", "100", "--json", str(out), "--plot", str(png),
    ])  # fmt: skip
    assert rc == 0
    s = _load(out)
    r = s["result"]
    assert s["tool"] == "produce"
    assert r["records"] == N and r["errors"] == 0
    assert r["bytes"] == N * 100
    assert r["records_per_sec"] > 0 and r["mb_per_sec"] > 0
    assert r["latency_ms"]["count"] == N
    _ordered(r["latency_ms"])
    assert sum(p["records"] for p in s["timeseries"]) == N
    assert s["config"]["num_records"] == N and s["config"]["local_broker"] is True
    captured = capsys.readouterr()
    final = captured.out.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"{N} records sent, [\d.]+ records/sec \([\d.]+ MB/sec\), [\d.]+ ms avg latency, [\d.]+ ms max latency, "
        r"[\d.]+ ms 50th, [\d.]+ ms 95th, [\d.]+ ms 99th, [\d.]+ ms 99\.9th\.",
        final,
    )
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert not os.path.exists(_local_data_dir(captured.err))  # the local broker's directory is gone


@pytest.mark.timeout(180)
def test_produce_several_producers_keys_lz4_merge_histograms(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    rc = producer_performance.main([
        "--num-records", str(N + 1), "--record-size", "64", "--key-size", "8", "--producers", "2",
        "--partitions", "3", "--compression", "lz4", "--acks", "all", "--linger-ms", "2",
        "--throughput", "20000", "--payload-text", "random", "--json", str(out),
    ])  # fmt: skip
    assert rc == 0
    r = _load(out)["result"]
    assert r["records"] == N + 1
    assert [p["records"] for p in r["per_producer"]] == [5001, 5000]
    assert r["bytes"] == (N + 1) * (64 + 8)
    assert r["latency_ms"]["count"] == N + 1  # both producers' histograms merged
    _ordered(r["latency_ms"])


@pytest.mark.timeout(120)
def test_produce_with_per_record_callbacks(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    assert producer_performance.main(["--num-records", "3000", "--latency-per", "record", "--json", str(out)]) == 0
    r = _load(out)["result"]
    assert r["latency_per"] == "record"
    assert r["records"] == 3000 and r["latency_ms"]["count"] == 3000


@pytest.mark.timeout(180)
def test_consume_fills_the_topic_then_reads_exactly_n(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c.json"
    rc = consumer_performance.main([
        "--num-records", str(N), "--consumers", "2", "--partitions", "2", "--json", str(out),
    ])  # fmt: skip
    assert rc == 0
    s = _load(out)
    r = s["result"]
    assert s["tool"] == "consume"
    assert r["filled_records"] == N
    assert r["records"] == N
    assert sum(c["records"] for c in r["per_consumer"]) == N
    assert r["bytes"] == N * 100
    assert r["records_per_sec"] > 0 and r["mb_per_sec"] > 0
    assert r["end_epoch_s"] >= r["start_epoch_s"]
    assert r["timed_out"] is False
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("start.time, end.time, data.consumed.in.MB")
    fields = lines[-1].split(", ")
    assert len(fields) == 10 and fields[4] == str(N)


@pytest.mark.timeout(120)
def test_consume_refuses_more_consumers_than_partitions_without_group() -> None:
    assert consumer_performance.main(["--num-records", "10", "--consumers", "3", "--partitions", "2"]) == 2


@pytest.mark.timeout(120)
def test_e2e_latency(tmp_path: Path) -> None:
    out, png = tmp_path / "e.json", tmp_path / "e.png"
    rc = end_to_end_latency.main([
        "--rate", "5000", "--duration-s", "2", "--record-size", "100", "--json", str(out), "--plot", str(png),
    ])  # fmt: skip
    assert rc == 0
    s = _load(out)
    r = s["result"]
    assert s["tool"] == "e2e"
    assert r["records_sent"] == r["records_received"] == N
    assert r["e2e_latency_ms"]["count"] == N
    _ordered(r["e2e_latency_ms"])
    _ordered(r["produce_latency_ms"])
    assert r["send_records_per_sec"] > 0
    assert sum(p["records"] for p in s["timeseries"]) == N  # the consumer's records only
    assert png.stat().st_size > 0


@pytest.mark.timeout(120)
def test_installed_command_ceiling(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("annal-bench")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "annal.bench.cli"]
    out = tmp_path / "ceiling.json"
    proc = subprocess.run(
        [*cmd, "ceiling", "--data-dir", str(tmp_path / "d"), "--write-mb", "4", "--fsync-iterations", "3",
         "--sendfile-file-mb", "2", "--transfer-mb", "8", "--records", "10000", "--runs", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    s = json.loads(out.read_text())
    assert s["command_line"][1] == "ceiling"
    assert all(v["median"] > 0 for v in s["result"].values())
    assert "sequential write + fdatasync" in proc.stdout


@pytest.mark.timeout(60)
def test_local_broker_start_stop_and_cleanup() -> None:
    b = LocalBroker().start()
    data_dir, log_path = b.data_dir, b.log_path
    try:
        assert b.alive() and b.port > 0 and b.fetch_port > 0
        assert os.path.isdir(data_dir)
        assert "ready:" in b.log_tail()
    finally:
        assert b.stop() == 0  # SIGTERM: a clean shutdown
    assert not os.path.exists(data_dir) and not os.path.exists(log_path)


@pytest.mark.timeout(60)
def test_local_broker_that_cannot_start_reports_its_log(monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    made: list[str] = []
    real_mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(*args: Any, **kwargs: Any) -> str:
        made.append(real_mkdtemp(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)
    b = LocalBroker(extra_args=["--log-level", "NOT-A-LEVEL"])
    with pytest.raises(LocalBrokerError, match="exited with code"):
        b.start()
    assert len(made) == 2 and not any(os.path.exists(d) for d in made)  # data and log dirs removed
    assert b.process is None


def failing_worker(cfg: dict[str, Any], index: int, queue: Any, start_event: Any, stop_event: Any) -> None:
    from annal.bench._workers import _run_worker

    def body() -> dict[str, Any]:
        raise ValueError(f"worker {index} broke: {cfg['why']}")

    _run_worker(queue, index, body)


@pytest.mark.timeout(60)
def test_collector_reports_a_failed_worker() -> None:
    c = Collector()
    c.spawn(failing_worker, {"why": "on purpose"}, name="failing")
    with pytest.raises(WorkerError, match="broke: on purpose"):
        c.run()


@pytest.mark.timeout(240)
def test_cluster_mode_produce_and_group_consume(zk_cluster: Any, tmp_path: Path) -> None:
    zk_cluster.start(1, 2)
    zk_cluster.wait_registered({1, 2})
    pout, cout = tmp_path / "p.json", tmp_path / "c.json"
    rc = producer_performance.main([
        "--zookeeper", zk_cluster.hosts, "--topic", "bench-zk", "--partitions", "4", "--num-records", "5000",
        "--json", str(pout),
    ])  # fmt: skip
    assert rc == 0
    p = _load(pout)
    assert p["result"]["records"] == 5000 and p["config"]["local_broker"] is False
    rc = consumer_performance.main([
        "--zookeeper", zk_cluster.hosts, "--topic", "bench-zk", "--num-records", "5000", "--consumers", "2",
        "--group", "bench-group", "--no-fill", "--json", str(cout),
    ])  # fmt: skip
    assert rc == 0
    c = _load(cout)["result"]
    assert c["records"] == 5000 and c["filled_records"] == 0
    assert c["rebalance_ms"] >= 0


@pytest.mark.timeout(60)
def test_longpoll_sampler_times_the_fetch_its_own_produce_wakes() -> None:
    """``bench.broker``'s long-poll sampler on a topic that already holds records (as its
    loaded phase finds it after the idle phase): every sample is a fetch parked at the log end
    and answered with the record produced after it, and a record from anyone else is refused
    rather than timed."""
    import threading

    from annal.bench import broker as bench_broker
    from annal.record import encode_batch

    b = LocalBroker(extra_args=["--log-level", "WARNING", "--metrics-port", "-1"], kafka_port=-1).start()
    try:
        bench_broker.create_topic(b, "lp")
        small = encode_batch([(0, None, b"x" * 100, None)])
        bench_broker.produce_data_port(b, "lp", small, 50, 4)
        samples = bench_broker._longpoll_latencies(b, "lp", 0.5)
        assert len(samples) >= 20 and all(0 < s < 2.0 for s in samples)

        stop = threading.Event()

        def other_producer() -> None:
            while not stop.is_set():
                bench_broker.produce_data_port(b, "lp", small, 1, 1)
                time.sleep(0.0005)

        t = threading.Thread(target=other_producer, daemon=True)
        t.start()
        try:
            with pytest.raises(RuntimeError, match="was not answered with the record produced"):
                bench_broker._longpoll_latencies(b, "lp", 5.0)
        finally:
            stop.set()
            t.join(10)
    finally:
        assert b.stop() == 0


@pytest.mark.timeout(60)
def test_storage_bench_times_segment_rolls_apart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``bench.storage --only rolls``: 40 appends of 1 MiB into 16 MiB segments roll twice; the
    rolling appends and the others are reported apart."""
    from annal.bench import storage

    assert storage.main(["--only", "rolls", "--runs", "1", "--rolls-appends", "40", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    m = re.search(r"append that rolls a 16 MiB segment ([\d.]+) ms \(max ([\d.]+)\), other appends ([\d.]+) ms", out)
    assert m, out
    med, mx, other = map(float, m.groups())
    assert 0 < med <= mx and other > 0
    assert "| append of 1 MiB that rolls a 16 MiB segment |" in out
    assert list(tmp_path.iterdir()) == []  # its files are gone
    with pytest.raises(SystemExit):
        storage.main(["--only", "rolls", "--write", str(tmp_path / "x.md")])


@pytest.mark.timeout(120)
def test_kafka_clients_same_client_phases_read_every_record_through_both_ports_paced() -> None:
    """``bench.kafka_clients``' same-client phases with ``--fetch-gap-ms``: raw sockets write
    the same batches through both ports and read them back, then again with a pause before
    every fetch; each figure is broker CPU per million records, and the paced reads really
    wait (their time is at least the pauses)."""
    from annal.bench import broker as bench_broker
    from annal.bench import kafka_clients

    b = LocalBroker(extra_args=["--log-level", "WARNING", "--metrics-port", "-1"]).start()
    try:
        assert b.process is not None
        logged: list[str] = []
        out = kafka_clients.same_client_phases(b, b.process.pid, 3000, logged.append, gap_ms=2)
        keys = ["same-client produce kafka broker cpu s/M", "same-client produce data port broker cpu s/M",
                "same-client consume kafka broker cpu s/M", "same-client consume data port broker cpu s/M",
                "paced consume kafka broker cpu s/M", "paced consume data port broker cpu s/M"]
        assert all(out[k] > 0 for k in keys), out
        assert out["paced consume cpu ratio kafka/data"] == (out["paced consume kafka broker cpu s/M"]
                                                             / out["paced consume data port broker cpu s/M"])
        assert any("2 ms apart" in line for line in logged)
        # The records the phases wrote, read 64 KiB at a time with 10 ms before each fetch.

        per = parse_header(kafka_clients._sdk_sized_batch()).last_offset_delta + 1  # records per batch
        end = 3000 // per * per
        elapsed, total = bench_broker.fetch_data_port(b, "same-data", end, 1 << 16, gap_s=0.01)
        fetches_at_least = total // (1 << 16)
        assert total > 0 and elapsed >= fetches_at_least * 0.01
        elapsed, total2 = kafka_clients.fetch_kafka(b.kafka_port, "same-data", end, 1 << 16, gap_s=0.01)
        assert total2 == total and elapsed >= fetches_at_least * 0.01
    finally:
        assert b.stop() == 0


@pytest.mark.timeout(120)
def test_kafka_clients_replay_confluent_kafka_workload_through_both_ports_at_its_pace() -> None:
    """``bench.kafka_clients``' client-workload phases: the batches confluent-kafka wrote are
    replayed, one produce request each, through both ports, and land byte for byte as they
    were; the replays and the reads keep the pace they are given."""
    from annal.bench import broker as bench_broker
    from annal.bench import kafka_clients

    b = LocalBroker(extra_args=["--log-level", "WARNING", "--metrics-port", "-1"]).start()
    try:
        assert b.process is not None
        create = bench_broker.create_topic
        create(b, "cf")
        n = 40_000  # about 4.4 MB: several 1 MiB fetches
        kafka_clients.confluent_produce(f"127.0.0.1:{b.kafka_port}", "cf", n)
        original: list[bytes] = []
        _, total = bench_broker.fetch_data_port(b, "cf", n, 1 << 20, keep=original)
        assert original and sum(map(len, original)) == total
        logged: list[str] = []
        out = kafka_clients.client_workload_phases(b, b.process.pid, "cf", n, 0.3, logged.append)
        for what in ("produce", "consume"):
            for port in ("data port", "kafka"):
                assert out[f"client-workload {what} {port} broker cpu s/M"] > 0, out
            assert out[f"client-workload {what} cpu ratio kafka/data"] == (
                out[f"client-workload {what} kafka broker cpu s/M"] / out[f"client-workload {what} data port broker cpu s/M"])
        assert out["consume cpu ratio confluent-kafka/data port, its workload"] == (
            out["client-workload consume confluent-kafka broker cpu s/M"]
            / out["client-workload consume data port broker cpu s/M"])
        # Each replay wrote confluent-kafka's batches again, in order, to a topic of its own:
        # the same offsets, so the same bytes.
        for port in ("data-port", "kafka"):
            replayed: list[bytes] = []
            bench_broker.fetch_data_port(b, f"cf-replay-{port}", n, 1 << 20, keep=replayed)
            assert replayed == original, port
        # The replays keep confluent-kafka's produce pace (0.3 s over its requests: the last one
        # leaves at 0.3 * (k - 1) / k); the raw reads after each confluent-kafka read keep that
        # read's pace (the last fetch, at most 1 MiB or one batch, leaves when the rest would
        # have been read).
        k = len(original)
        assert any(f"{k} produce requests" in line for line in logged), logged
        replays = [float(m.group(1)) for line in logged
                   for m in [re.search(r"produce workload via .*: ([\d.]+) s,", line)] if m]
        assert len(replays) == 2 and all(s >= 0.3 * (k - 1) / k - 0.01 for s in replays), logged
        last_fetch = max(1 << 20, max(map(len, original)))
        assert total > 2 * last_fetch  # several fetches
        # Three reads by confluent-kafka, each followed by a read through each port at its pace.
        reads = [m.groups() for line in logged for m in [re.search(
            r"read \d: confluent-kafka ([\d.]+) s .* data port ([\d.]+) s, .* kafka ([\d.]+) s,", line)] if m]
        assert len(reads) == 3, logged
        for theirs, *ours in reads:
            assert all(float(s) >= float(theirs) * (total - last_fetch) / total - 0.01 for s in ours), reads
        # The pacing primitives themselves.
        sent: list[float] = []
        t0 = time.perf_counter()
        bench_broker.pipelined(lambda i: sent.append(time.perf_counter() - t0), lambda: None, 5, 4, 0.05)
        assert all(at >= i * 0.05 - 0.005 for i, at in enumerate(sent)), sent
        create(b, "small")
        batch = kafka_clients._sdk_sized_batch()
        bench_broker.produce_data_port(b, "small", batch, 20, 4)
        end = 20 * (parse_header(batch).last_offset_delta + 1)
        # 20 fetches of one batch each at 20 batches per 0.3 s: the last one leaves at 0.285 s.
        rate = 20 * len(batch) / 0.3
        for port, (elapsed, total) in {
            "data port": bench_broker.fetch_data_port(b, "small", end, len(batch), rate_bps=rate),
            "kafka": kafka_clients.fetch_kafka(b.kafka_port, "small", end, len(batch), rate_bps=rate),
        }.items():
            assert total == 20 * len(batch) and elapsed >= 0.285 - 0.01, (port, elapsed)
    finally:
        assert b.stop() == 0
