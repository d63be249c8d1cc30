"""Broker process lifecycle: restart on the same data dir, the data dir lock, SIGTERM (answer
in-flight requests, flush, exit 0), SIGKILL and recovery, configuration files and flags."""

from __future__ import annotations

import os
import subprocess
import sys

import grpc
import pytest

from annal.protocol import annal_pb2 as pb
from annal.protocol import annal_pb2_grpc
from harness.batches import make_batch, values_of
from harness.broker import REPO_ROOT, BrokerProcess, BrokerStartError
from harness.data_port import DataPortClient

pytestmark = pytest.mark.timeout(90)


def _stub(b: BrokerProcess):
    return annal_pb2_grpc.AnnalStub(grpc.insecure_channel(b.bootstrap))


def _create(b: BrokerProcess, name: str, partitions: int = 1, **config: int) -> None:
    r = _stub(b).CreateTopics(pb.CreateTopicsRequest(
        topics=[pb.NewTopic(name=name, partitions=partitions, config=pb.TopicConfig(**config))]))
    assert r.results[0].error_code == 0, r


def test_restart_on_the_same_data_dir_serves_everything(broker_factory):
    b = broker_factory("b")
    _create(b, "orders", partitions=2, retention_ms=3_600_000)
    with DataPortClient("127.0.0.1", b.fetch_port) as c:
        for i in range(5):
            c.produce([("orders", i % 2, make_batch(3, prefix=b"r%d-" % i))])
    ports = (b.port, b.fetch_port)
    cluster_id = _stub(b).Metadata(pb.MetadataRequest()).cluster_id
    assert cluster_id
    assert b.stop() == 0
    b.start()
    assert (b.port, b.fetch_port) == ports  # restart keeps the addresses clients know
    md = _stub(b).Metadata(pb.MetadataRequest(topics=["orders"]))
    t = md.topics[0]
    assert md.cluster_id == cluster_id
    assert [p.log_end_offset for p in t.partitions] == [9, 6]
    assert t.config.retention_ms == 3_600_000
    with DataPortClient("127.0.0.1", b.fetch_port) as c:
        f = c.fetch([("orders", 0, 0, 1 << 20)]).partitions[0]
        assert [v[:3] for _, v in values_of(f.records)] == [b"r0-"] * 3 + [b"r2-"] * 3 + [b"r4-"] * 3
        assert c.produce([("orders", 0, make_batch())]).partitions[0].base_offset == 9
    b.wait_for_log(r"loaded 2 logs from .* \(clean shutdown\)")


def test_sigterm_flushes_and_exits_zero(broker_factory):
    b = broker_factory("b")
    _create(b, "t")
    with DataPortClient("127.0.0.1", b.fetch_port) as c:
        assert c.produce([("t", 0, make_batch(10))], acks=1).partitions[0].error_code == 0
    assert b.stop() == 0
    log = b.log_text()
    assert "flushed and closed all logs" in log and "stopped cleanly" in log
    assert (b.data_dir / ".annal_cleanshutdown").exists()
    # recovery points cover everything: nothing is rescanned or truncated after a clean stop
    b.start()
    b.wait_for_log(r"clean shutdown")
    assert _stub(b).Metadata(pb.MetadataRequest(topics=["t"])).topics[0].partitions[0].log_end_offset == 10


def test_sigterm_answers_a_waiting_long_poll_before_exiting(broker_factory):
    b = broker_factory("b")
    _create(b, "t")
    with DataPortClient("127.0.0.1", b.fetch_port) as c:
        cid = c.send_fetch([("t", 0, 0, 1000)], max_wait_ms=120_000, min_bytes=1)
        from integration.test_broker_data_port import wait_for_long_polls

        wait_for_long_polls(b, 1)
        b.proc.terminate()
        f = c.recv_fetch(cid)  # answered (empty) instead of cut off
        assert (f.partitions[0].error_code, len(f.partitions[0].records)) == (0, 0)
        assert c.recv_frame() is None
    assert b.stop() == 0


def test_sigkill_then_restart_keeps_acknowledged_data(broker_factory):
    b = broker_factory("b")
    _create(b, "t")
    with DataPortClient("127.0.0.1", b.fetch_port) as c:
        for _ in range(4):
            assert c.produce([("t", 0, make_batch(5))], acks=-1).partitions[0].error_code == 0
    b.kill()
    b.start()
    with DataPortClient("127.0.0.1", b.fetch_port) as c:
        f = c.fetch([("t", 0, 0, 1 << 20)]).partitions[0]
        assert [o for o, _ in values_of(f.records)] == list(range(20))
        assert c.produce([("t", 0, make_batch())]).partitions[0].base_offset == 20


def test_second_broker_on_the_same_data_dir_is_refused(broker_factory):
    first = broker_factory("shared")
    second = BrokerProcess(first.data_dir, log_path=first.data_dir.parent / "second.log")
    with pytest.raises(BrokerStartError) as ei:
        second.start()
    assert second.returncode not in (None, 0)
    assert "in use by another broker" in str(ei.value) and f"pid {first.pid}" in str(ei.value)
    assert first.running
    _create(first, "still-fine")


def test_config_file_defaults_and_flags_win(broker_factory):
    b = broker_factory("b", config={"request_timeout_ms": 5000, "topic_defaults": {"partitions": 3, "retention_ms": 1234567}})
    r = _stub(b).CreateTopics(pb.CreateTopicsRequest(topics=[pb.NewTopic(name="d", partitions=0)]))
    assert r.results[0].error_code == 0
    t = _stub(b).Metadata(pb.MetadataRequest(topics=["d"])).topics[0]
    assert len(t.partitions) == 3 and t.config.retention_ms == 1234567


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_num_io_threads_sizes_the_request_handler_pool(broker_factory):
    """The config key reaches the broker: started the same way, a broker with 6 request-handler
    threads runs 5 more threads than one with 1 (the key was once read and then ignored)."""
    one = broker_factory("io1", config={"num_io_threads": 1, "queued_max_requests": 10})
    six = broker_factory("io6", config={"num_io_threads": 6, "queued_max_requests": 10})
    assert _threads(six.proc.pid) - _threads(one.proc.pid) == 5
    with DataPortClient(*six.fetch_address) as c:  # and the pool serves
        _create(six, "io")
        assert c.produce([("io", 0, make_batch(3))]).partitions[0].error_code == 0


@pytest.mark.parametrize(
    "toml, message",
    [
        ("bogus_key = 1\n", "unknown broker config key 'bogus_key'"),
        ("[topic_defaults]\nsegment_megabytes = 1\n", "unknown topic config key 'segment_megabytes'"),
        ("[topic_defaults]\nretention_ms = 'a week'\n", "must be an integer"),
        ("port = \n", "not valid TOML"),
    ],
)
def test_bad_config_file_is_a_clear_error(tmp_path, toml, message):
    cfg = tmp_path / "broker.toml"
    cfg.write_text(toml)
    proc = subprocess.run(
        [sys.executable, "-m", "annal.broker", "broker", "start", "--standalone", "--data-dir", str(tmp_path / "d"),
         "--config", str(cfg), "--port", "0", "--fetch-port", "0", "--metrics-port", "-1", "--kafka-port", "0"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert message in proc.stderr


def test_help_lists_the_start_flags():
    proc = subprocess.run([sys.executable, "-m", "annal.broker", "broker", "start", "--help"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for flag in ("--standalone", "--data-dir", "--port", "--fetch-port", "--metrics-port", "--config",
                 "--log-level", "--broker-id", "--zookeeper"):
        assert flag in proc.stdout


def test_segments_roll_and_retention_runs_on_the_timer(broker_factory):
    b = broker_factory("b", config={"maintenance_interval_ms": 100})
    _create(b, "small", segment_bytes=4096, retention_bytes=8192)
    with DataPortClient("127.0.0.1", b.fetch_port) as c:
        for _ in range(30):
            assert c.produce([("small", 0, make_batch(4, value_size=200))]).partitions[0].error_code == 0
    from harness.zookeeper import wait_until

    def start_offset() -> int:
        return _stub(b).Metadata(pb.MetadataRequest(topics=["small"])).topics[0].partitions[0].log_start_offset

    wait_until(lambda: start_offset() > 0, 20, "retention to delete old segments")
    logs = [n for n in os.listdir(b.data_dir / "small-0") if n.endswith(".log")]
    assert 1 < len(logs) < 10
    b.wait_for_log(r"retention deleted")
    b.wait_for_log(r"rolled small-0: new segment at offset \d+")


@pytest.mark.parametrize("which", ["--port", "--fetch-port"])
def test_port_in_use_is_a_clear_error(tmp_path, which):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        args = {"--port": "0", "--fetch-port": "0", which: str(port)}
        proc = subprocess.run(
            [sys.executable, "-m", "annal.broker", "broker", "start", "--standalone", "--data-dir", str(tmp_path / "d"),
             "--port", args["--port"], "--fetch-port", args["--fetch-port"], "--metrics-port", "-1", "--kafka-port", "0"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        )
    assert proc.returncode == 2
    assert "broker failed to start" in proc.stderr and "Traceback" not in proc.stderr
