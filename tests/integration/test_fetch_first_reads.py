"""After a restart, the first fetch of an older segment's bytes checks their CRC-32C, which reads
them from disk when they are not cached. Both listeners hand such a fetch to a worker thread
(``annal_fetch_first_reads_total``) and answer it back on the event loop; later fetches of the
same bytes are answered on the loop. A real broker process, restarted cleanly."""

from __future__ import annotations

import os
import socket
import urllib.request
from typing import Any

import grpc
import pytest

from annal.kafka import ApiKey
from annal.kafka.header import decode_response, encode_request
from annal.protocol import annal_pb2 as pb
from annal.protocol import annal_pb2_grpc
from annal.record import iter_records
from harness.batches import make_batch
from harness.broker import BrokerProcess
from harness.data_port import DataPortClient

pytestmark = pytest.mark.timeout(120)

BATCHES = 40
PER_BATCH = 20
SEGMENT_BYTES = 16 * 1024


def _first_reads(b: BrokerProcess, transport: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{b.metrics_port}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(f'annal_fetch_first_reads_total{{transport="{transport}"}} '):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _offsets(records: bytes | memoryview) -> list[int]:
    return [r.offset for r in iter_records(bytes(records))]


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, "the broker closed the connection"
        buf += chunk
    return bytes(buf)


def _kafka_fetch(b: BrokerProcess, topic: str, offset: int, max_wait_ms: int) -> list[int]:
    with socket.create_connection(("127.0.0.1", b.kafka_port), timeout=20) as s:
        s.sendall(encode_request(ApiKey.FETCH, 12, 1, "first-reads", {
            "max_wait_ms": max_wait_ms, "min_bytes": 1, "max_bytes": 1 << 20, "topics": [
                {"topic": topic, "partitions": [{"partition": 0, "fetch_offset": offset,
                                                 "partition_max_bytes": 4096}]}]}))
        body = _recv_exact(s, int.from_bytes(_recv_exact(s, 4), "big"))
    _, resp = decode_response(ApiKey.FETCH, 12, body)
    p: dict[str, Any] = resp["responses"][0]["partitions"][0]
    assert p["error_code"] == 0, p
    return _offsets(p["records"])


@pytest.fixture
def restarted(broker: BrokerProcess) -> tuple[BrokerProcess, str]:
    """A topic of six 16 KiB segments written before a clean restart."""
    topic = f"first-reads-{os.getpid()}"
    with grpc.insecure_channel(broker.bootstrap) as ch:
        r = annal_pb2_grpc.AnnalStub(ch).CreateTopics(pb.CreateTopicsRequest(topics=[pb.NewTopic(
            name=topic, partitions=1, config=pb.TopicConfig(segment_bytes=SEGMENT_BYTES))]))
        assert r.results[0].error_code == 0, r
    with DataPortClient("127.0.0.1", broker.fetch_port) as c:
        for i in range(BATCHES):
            resp = c.produce([(topic, 0, make_batch(PER_BATCH, value_size=100, prefix=b"b%d-" % i))])
            assert resp.partitions[0].error_code == 0
    broker.restart()
    segments = [n for n in os.listdir(broker.data_dir / f"{topic}-0") if n.endswith(".log")]
    assert len(segments) > 5
    return broker, topic


def test_data_port_first_reads_run_on_a_worker_and_are_checked_once(restarted: tuple[BrokerProcess, str]) -> None:
    b, topic = restarted
    assert _first_reads(b, "data") == 0
    with DataPortClient("127.0.0.1", b.fetch_port) as c:
        first = c.fetch([(topic, 0, 0, 4096)]).partitions[0]
        assert first.error_code == 0 and _offsets(first.records)[0] == 0
        assert _first_reads(b, "data") == 1
        again = c.fetch([(topic, 0, 0, 4096)]).partitions[0]  # checked: read on the loop
        assert bytes(again.records) == bytes(first.records)
        assert _first_reads(b, "data") == 1
        # A long-poll (max_wait_ms > 0) that finds unchecked bytes: read on a worker too.
        mid = 10 * PER_BATCH
        cid = c.send_fetch([(topic, 0, mid, 4096)], max_wait_ms=5000, min_bytes=1)
        waited = c.recv_fetch(cid).partitions[0]
        assert waited.error_code == 0 and _offsets(waited.records)[0] == mid
        assert _first_reads(b, "data") == 2
        # Everything, to the end: every byte checked, the answer whole and in order.
        offsets: list[int] = []
        at = 0
        while at < BATCHES * PER_BATCH:
            got = _offsets(c.fetch([(topic, 0, at, 1 << 20)]).partitions[0].records)
            assert got and got[0] == at
            offsets += got
            at = got[-1] + 1
        assert offsets == list(range(BATCHES * PER_BATCH))
    assert b.running


def test_kafka_listener_first_reads_run_on_a_worker(restarted: tuple[BrokerProcess, str]) -> None:
    b, topic = restarted
    assert _first_reads(b, "kafka") == 0
    assert _kafka_fetch(b, topic, 0, 0)[0] == 0
    assert _first_reads(b, "kafka") == 1
    assert _kafka_fetch(b, topic, 0, 0)[0] == 0
    assert _first_reads(b, "kafka") == 1
    mid = 15 * PER_BATCH
    assert _kafka_fetch(b, topic, mid, 5000)[0] == mid  # a long-poll's first read
    assert _first_reads(b, "kafka") == 2
    assert _first_reads(b, "data") == 0
