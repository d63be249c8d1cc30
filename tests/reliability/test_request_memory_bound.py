"""The broker-wide bound on request memory (``queued_max_request_bytes``, Kafka's
``queued.max.request.bytes``): 200 connections each send the start of a large request frame and
stop, on the data port, on the Kafka listener, or half on each (the two share one bound). The
broker reads until the bound, then stops reading from sockets (the rest waits in the kernel's
socket buffers, not in the broker), and its RSS stays under the bound plus the stated overhead.
Once the connections go, the memory is free again and both ports serve.
"""

from __future__ import annotations

import socket
import struct
import time
import urllib.request
import uuid

import pytest

from annal.client import Admin, NewTopic
from annal.kafka import ApiKey
from annal.kafka.header import decode_response, encode_request
from harness.batches import make_batch
from harness.broker import BrokerProcess, attach_logs
from harness.data_port import DataPortClient

BOUND = 64 << 20
FRAME = 50 << 20  # what each connection announces
SENT = 2 << 20  # what each connection sends of it
CONNECTIONS = 200
# The stated overhead (broker/server/request_memory.py): the one allocation that crosses the
# bound (<= max(4 MiB, a frame / 2)) plus a 4 KiB hold buffer per muted connection, plus per
# connection its 64 KiB scratch buffer and the Python objects of a connection (~20 KiB,
# measured below as slack).
OVERHEAD = max(4 << 20, FRAME // 2) + CONNECTIONS * (4096 + 65536 + 20 * 1024)


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _metric(b: BrokerProcess, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{b.metrics_port}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name}")


def _broker_with_topic(tmp_path, request, request_timeout_ms: int = 120_000) -> tuple[BrokerProcess, str]:
    """A broker with the test's bound, started, and a topic of one partition."""
    b = BrokerProcess(tmp_path / "data", metrics_port=0,
                      config={"queued_max_request_bytes": BOUND, "max_request_bytes": 60 << 20,
                              "request_timeout_ms": request_timeout_ms})
    attach_logs(request, b)
    try:
        b.start()
        topic = "mem-" + uuid.uuid4().hex[:8]
        with Admin(b.bootstrap) as admin:
            admin.create_topics([NewTopic(topic, 1)])
    except BaseException:
        b.stop()
        raise
    return b, topic


@pytest.mark.timeout(180)
@pytest.mark.parametrize("ports", ["data", "kafka", "both"])
def test_200_large_partial_frames_stay_under_the_bound(tmp_path, request, ports):
    b, topic = _broker_with_topic(tmp_path, request)
    socks: list[socket.socket] = []
    try:
        baseline = _rss(b.proc.pid)
        chunk = b"\0" * (256 << 10)
        targets = {"data": [b.fetch_port], "kafka": [b.kafka_port], "both": [b.fetch_port, b.kafka_port]}[ports]
        for i in range(CONNECTIONS):
            s = socket.create_connection(("127.0.0.1", targets[i % len(targets)]))
            s.setblocking(False)
            socks.append(s)
        unsent = {s: SENT for s in socks}
        unsent_prefix = {s: struct.pack(">i", FRAME) for s in socks}
        # Push what the kernel takes, round-robin, until nothing moves for a while: the broker
        # has read all it will (muted connections' bytes sit in socket buffers).
        idle_rounds = 0
        deadline = time.monotonic() + 120
        while idle_rounds < 20 and time.monotonic() < deadline:
            moved = 0
            for s in socks:
                try:
                    if unsent_prefix[s]:
                        n = s.send(unsent_prefix[s])
                        unsent_prefix[s] = unsent_prefix[s][n:]
                        moved += n
                    if not unsent_prefix[s] and unsent[s]:
                        n = s.send(chunk[: min(len(chunk), unsent[s])])
                        unsent[s] -= n
                        moved += n
                except BlockingIOError:
                    pass
            idle_rounds = idle_rounds + 1 if moved == 0 else 0
            if moved == 0:
                time.sleep(0.05)  # the broker drains socket buffers meanwhile
        offered = CONNECTIONS * SENT - sum(unsent.values())
        queued = _metric(b, "annal_queued_request_bytes")
        muted = _metric(b, "annal_muted_connections")
        grown = _rss(b.proc.pid) - baseline
        print(f"{ports}: offered {offered >> 20} MiB over {CONNECTIONS} connections; broker queued "
              f"{int(queued) >> 20} MiB, muted {int(muted)} connections, RSS +{grown >> 20} MiB (bound "
              f"{BOUND >> 20} MiB + overhead {OVERHEAD >> 20} MiB)")
        assert offered > 2 * BOUND, "the test did not offer more than the bound"
        assert muted > 0
        assert queued <= BOUND + max(4 << 20, FRAME // 2)
        assert grown <= BOUND + OVERHEAD
        for s in socks:
            s.close()
        socks.clear()
        # Memory comes back and both ports still serve.
        deadline = time.monotonic() + 30
        while _metric(b, "annal_queued_request_bytes") > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _metric(b, "annal_queued_request_bytes") == 0
        assert _metric(b, "annal_muted_connections") == 0
        with DataPortClient(*b.fetch_address) as c:
            assert c.produce([(topic, 0, make_batch(3))]).partitions[0].error_code == 0
        _kafka_produce(b.kafka_port, topic)
    finally:
        for s in socks:
            s.close()
        b.stop()


@pytest.mark.timeout(120)
def test_a_muted_connection_is_served_once_memory_frees(tmp_path, request):
    """A Kafka client whose produce arrives while the bound is taken by stalled frames on the
    data port is not read (muted, between requests), and is answered as soon as those
    connections go: the bytes it held are not lost."""
    b, topic = _broker_with_topic(tmp_path, request)
    hogs: list[socket.socket] = []
    try:
        # Take the whole bound with frames that never complete (sent without blocking: past
        # the bound the broker stops reading them).
        unsent = {}
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", b.fetch_port))
            s.setblocking(False)
            hogs.append(s)
            unsent[s] = memoryview(struct.pack(">i", 50 << 20) + b"\0" * (30 << 20))
        deadline = time.monotonic() + 30
        while _metric(b, "annal_queued_request_bytes") < BOUND and time.monotonic() < deadline:
            for s in hogs:
                try:
                    unsent[s] = unsent[s][s.send(unsent[s][:1 << 20]):]
                except BlockingIOError:
                    pass
            time.sleep(0.01)
        assert _metric(b, "annal_queued_request_bytes") >= BOUND
        k = socket.create_connection(("127.0.0.1", b.kafka_port))
        k.settimeout(30)
        k.sendall(_produce_frame(topic, 7))
        deadline = time.monotonic() + 30
        while _metric(b, "annal_muted_connections") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _metric(b, "annal_muted_connections") >= 1
        k.settimeout(0.5)
        with pytest.raises(socket.timeout):
            k.recv(1)  # not answered while muted
        for s in hogs:
            s.close()
        hogs.clear()
        k.settimeout(30)
        _, body = decode_response(ApiKey.PRODUCE, 9, _recv_frame(k))
        part = body["responses"][0]["partition_responses"][0]
        assert part["error_code"] == 0 and part["base_offset"] == 0
        k.close()
        assert _metric(b, "annal_muted_connections") == 0
    finally:
        for s in hogs:
            s.close()
        b.stop()


def _produce_frame(topic: str, correlation_id: int) -> bytes:
    return encode_request(ApiKey.PRODUCE, 9, correlation_id, "mem-test", {
        "transactional_id": None, "acks": 1, "timeout_ms": 10_000,
        "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": make_batch(3)}]}]})


def _recv_frame(sock: socket.socket) -> bytes:
    def exactly(n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed")
            out += chunk
        return out

    (length,) = struct.unpack(">i", exactly(4))
    return exactly(length)


def _kafka_produce(port: int, topic: str) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as k:
        k.sendall(_produce_frame(topic, 1))
        _, body = decode_response(ApiKey.PRODUCE, 9, _recv_frame(k))
        assert body["responses"][0]["partition_responses"][0]["error_code"] == 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("port", ["data", "kafka"])
def test_large_frames_that_wait_for_each_other_are_cut_after_the_request_timeout(tmp_path, request, port):
    """Two 60 MiB requests under a 64 MiB bound: each grows its buffer as its bytes arrive, so
    both end up holding about half the bound and needing more, muted in the middle of a frame.
    Neither can complete; request_timeout_ms cuts them, the memory comes back, and the port
    serves again (without the timeout they would hold the bound for ever)."""
    b, topic = _broker_with_topic(tmp_path, request, request_timeout_ms=3000)
    socks: list[socket.socket] = []
    try:
        target = b.fetch_port if port == "data" else b.kafka_port
        unsent = {}
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", target))
            s.setblocking(False)
            socks.append(s)
            unsent[s] = memoryview(struct.pack(">i", 60 << 20) + b"\0" * (60 << 20))
        saw_muted = False
        deadline = time.monotonic() + 60
        while not saw_muted and time.monotonic() < deadline:
            for s in socks:
                try:
                    unsent[s] = unsent[s][s.send(unsent[s][:1 << 20]):]
                except (BlockingIOError, ConnectionError):
                    pass
            saw_muted = _metric(b, "annal_muted_connections") >= 1
            time.sleep(0.01)
        assert saw_muted, "the two frames did not fill the bound"
        # Nothing more is sent; the broker must let go of the bound by itself.
        deadline = time.monotonic() + 30
        while _metric(b, "annal_queued_request_bytes") > 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _metric(b, "annal_queued_request_bytes") == 0
        assert _metric(b, "annal_muted_connections") == 0
        if port == "data":
            with DataPortClient(*b.fetch_address) as c:
                assert c.produce([(topic, 0, make_batch(3))]).partitions[0].error_code == 0
        else:
            _kafka_produce(b.kafka_port, topic)
    finally:
        for s in socks:
            s.close()
        b.stop()
