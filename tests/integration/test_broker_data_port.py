"""The data port of a real broker process: FETCH (sendfile, long-poll) and PRODUCE, pipelining,
and every kind of bad input a client can send. After each bad input the broker must still
append at the right offsets and serve another client."""

from __future__ import annotations

import os
import random
import socket
import struct
import threading
import urllib.request

import grpc
import pytest

from annal.errors import (
    CorruptRecordError,
    InvalidFetchSizeError,
    InvalidRecordError,
    InvalidRequestError,
    InvalidRequiredAcksError,
    MessageSizeTooLargeError,
    OffsetOutOfRangeError,
    UnknownTopicOrPartitionError,
    UnsupportedCompressionTypeError,
)
from annal.protocol import annal_pb2 as pb
from annal.protocol import annal_pb2_grpc
from annal.protocol import framing as fr
from harness.batches import damage, make_batch, values_of
from harness.broker import BrokerProcess, attach_logs
from harness.data_port import DataPortClient

pytestmark = pytest.mark.timeout(60)

REQUEST_TIMEOUT_MS = 1500


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory):
    b = BrokerProcess(tmp_path_factory.mktemp("dataport") / "data",
                      extra_args=["--request-timeout-ms", str(REQUEST_TIMEOUT_MS)])
    b.start()
    yield b
    b.stop()


@pytest.fixture
def b(shared: BrokerProcess, request: pytest.FixtureRequest) -> BrokerProcess:
    attach_logs(request, shared)
    assert shared.running, "the shared broker died in an earlier test"
    return shared


_topic_ids = iter(range(10**6))


@pytest.fixture
def stub(b: BrokerProcess):
    ch = grpc.insecure_channel(b.bootstrap)
    yield annal_pb2_grpc.AnnalStub(ch)
    ch.close()


def new_topic(stub, partitions: int = 1, **config: int) -> str:
    name = f"t{next(_topic_ids)}-{os.getpid()}"
    resp = stub.CreateTopics(pb.CreateTopicsRequest(
        topics=[pb.NewTopic(name=name, partitions=partitions, config=pb.TopicConfig(**config))]))
    assert resp.results[0].error_code == 0, resp
    return name


def client(b: BrokerProcess) -> DataPortClient:
    return DataPortClient("127.0.0.1", b.fetch_port, timeout=30)


def assert_serves(b: BrokerProcess, topic: str, expected_next_offset: int) -> None:
    """Another client can append (at the expected offset) and read back."""
    with client(b) as c:
        r = c.produce([(topic, 0, make_batch(2, prefix=b"after"))]).partitions[0]
        assert r.error_code == 0, r
        assert r.base_offset == expected_next_offset
        f = c.fetch([(topic, 0, expected_next_offset, 1 << 20)]).partitions[0]
        assert f.error_code == 0
        assert [v for _, v in values_of(f.records)][:2] == [b"after0....", b"after1...."]


# ---------------------------------------------------------------------- round trips


def test_produce_then_fetch_round_trip(b, stub):
    topic = new_topic(stub, partitions=2)
    with client(b) as c:
        r = c.produce([(topic, 0, make_batch(3)), (topic, 1, make_batch(5))])
        assert [(p.partition, p.error_code, p.base_offset, p.log_end_offset) for p in r.partitions] == [
            (0, 0, 0, 3), (1, 0, 0, 5)]
        r = c.produce([(topic, 0, make_batch(2) + make_batch(4))])  # two batches back to back
        assert (r.partitions[0].base_offset, r.partitions[0].log_end_offset) == (3, 9)
        f = c.fetch([(topic, 0, 0, 1 << 20), (topic, 1, 0, 1 << 20)])
        p0, p1 = f.partitions
        assert isinstance(p0.records, memoryview)
        assert [o for o, _ in values_of(p0.records)] == list(range(9))
        assert (p0.high_watermark, p0.log_start_offset, p1.high_watermark) == (9, 0, 5)
        assert [v for _, v in values_of(p1.records)] == [b"v%d" % i + b"." * 8 for i in range(5)]


def test_fetch_starts_at_the_batch_holding_the_offset_and_sends_whole_batches(b, stub):
    topic = new_topic(stub)
    with client(b) as c:
        batches = [make_batch(4, value_size=100) for _ in range(3)]
        for batch in batches:
            assert c.produce([(topic, 0, batch)]).partitions[0].error_code == 0
        f = c.fetch([(topic, 0, 5, 1)]).partitions[0]  # max_bytes 1 < one batch: still one whole batch
        assert len(f.records) == len(batches[1])
        assert [o for o, _ in values_of(f.records)] == [4, 5, 6, 7]
        f = c.fetch([(topic, 0, 5, len(batches[1]) + len(batches[2]) - 1)]).partitions[0]
        assert len(f.records) == len(batches[1])  # the second batch does not fit: not cut, left out
        f = c.fetch([(topic, 0, 12, 1 << 20)]).partitions[0]  # at the log end: empty, no error
        assert (f.error_code, len(f.records), f.high_watermark) == (0, 0, 12)


def test_pipelined_requests_are_answered_in_order(b, stub):
    topic = new_topic(stub)
    with client(b) as c:
        ids = []
        wire = []
        for i in range(5):
            cid = 100 + i
            ids.append(cid)
            if i % 2 == 0:
                wire.append(fr.encode_produce_request(fr.ProduceRequest(
                    cid, 1, 1000, [fr.ProducePartition(topic, 0, make_batch(1, prefix=b"p%d" % i))])))
            else:
                wire.append(fr.encode_fetch_request(fr.FetchRequest(cid, 0, 0, [fr.FetchPartition(topic, 0, 0, 1 << 20)])))
        c.send_raw(b"".join(wire))  # all in one write
        answers = []
        for i, cid in enumerate(ids):
            frame = c.recv_frame()
            answers.append(fr.decode_response_header(frame)[0])
            if i == 3:
                f = fr.decode_fetch_response(frame).partitions[0]
                assert [o for o, _ in values_of(f.records)] == [0, 1]  # saw the two produces before it
        assert answers == ids


def test_acks_zero_gets_no_answer_but_is_appended(b, stub):
    topic = new_topic(stub)
    with client(b) as c:
        c.send_produce([(topic, 0, make_batch(3))], acks=0)
        c.send_produce([(topic, 0, make_batch(2))], acks=0)
        f = c.fetch([(topic, 0, 0, 1 << 20)])  # the next frame on the wire is the fetch's answer
        assert f.partitions[0].high_watermark == 5


def test_acks_all_is_answered_after_flush(b, stub):
    topic = new_topic(stub)
    with client(b) as c:
        r = c.produce([(topic, 0, make_batch(3))], acks=-1).partitions[0]
        assert (r.error_code, r.base_offset, r.log_end_offset) == (0, 0, 3)


def test_data_port_and_grpc_appends_share_offsets(b, stub):
    topic = new_topic(stub)
    with client(b) as c:
        c.produce([(topic, 0, make_batch(2))])
        r = stub.Produce(pb.ProduceRequest(acks=1, partitions=[pb.ProducePartition(topic=topic, partition=0, batches=[make_batch(3)])]))
        assert list(r.results[0].base_offsets) == [2]
        assert c.produce([(topic, 0, make_batch(1))]).partitions[0].base_offset == 5


# ---------------------------------------------------------------------- long-poll


def test_long_poll_is_woken_by_an_append_on_another_connection(b, stub):
    topic = new_topic(stub, partitions=2)
    with client(b) as waiting, client(b) as producer:
        # max_wait far above the socket timeout: only a wake-up by the append can answer in time.
        cid = waiting.send_fetch([(topic, 0, 0, 1 << 20), (topic, 1, 0, 1 << 20)], max_wait_ms=120_000, min_bytes=1)
        wait_for_long_polls(b, 1)
        assert producer.produce([(topic, 1, make_batch(2))]).partitions[0].error_code == 0
        f = waiting.recv_fetch(cid)
        assert [len(p.records) > 0 for p in f.partitions] == [False, True]


def test_long_poll_is_woken_by_a_grpc_append(b, stub):
    topic = new_topic(stub)
    with client(b) as waiting:
        cid = waiting.send_fetch([(topic, 0, 0, 1 << 20)], max_wait_ms=120_000, min_bytes=1)
        wait_for_long_polls(b, 1)
        stub.Produce(pb.ProduceRequest(acks=1, partitions=[pb.ProducePartition(topic=topic, partition=0, batches=[make_batch(1)])]))
        assert waiting.recv_fetch(cid).partitions[0].high_watermark == 1


def test_long_poll_answers_empty_when_max_wait_expires(b, stub):
    topic = new_topic(stub)
    with client(b) as c:
        f = c.fetch([(topic, 0, 0, 1 << 20)], max_wait_ms=200, min_bytes=1)
        p = f.partitions[0]
        assert (p.error_code, len(p.records), p.high_watermark) == (0, 0, 0)


def test_long_poll_waits_for_min_bytes(b, stub):
    topic = new_topic(stub)
    small = make_batch(1)
    with client(b) as waiting, client(b) as producer:
        cid = waiting.send_fetch([(topic, 0, 0, 1 << 20)], max_wait_ms=120_000, min_bytes=3 * len(small))
        wait_for_long_polls(b, 1)
        producer.produce([(topic, 0, small)])
        producer.produce([(topic, 0, small)])
        # Two batches are not enough; the fetch must still be waiting after both appends.
        wait_for_long_polls(b, 1)
        producer.produce([(topic, 0, small)])
        f = waiting.recv_fetch(cid).partitions[0]
        assert len(f.records) == 3 * len(small)


def _metric(b: BrokerProcess, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{b.metrics_port}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_for_long_polls(b: BrokerProcess, n: int) -> None:
    from harness.zookeeper import wait_until

    wait_until(lambda: _metric(b, "annal_long_polls_waiting") >= n, 20, f"{n} long-poll(s) waiting")


# ---------------------------------------------------------------------- fetch errors


def test_fetch_errors_are_per_partition(b, stub):
    topic = new_topic(stub)
    with client(b) as c:
        c.produce([(topic, 0, make_batch(3))])
        f = c.fetch([
            (topic, 0, -1, 100),        # negative offset
            (topic, 0, 4, 100),         # beyond the log end
            (topic, 0, 0, 0),           # max_bytes 0
            (topic, 7, 0, 100),         # unknown partition
            ("no-such-topic", 0, 0, 100),
            ("../../etc", 0, 0, 100),   # illegal name: never reaches the file system
            ("a/b", 0, 0, 100),
            (topic, 0, 0, 100),         # and a good one in the same request
        ])
        codes = [p.error_code for p in f.partitions]
        assert codes == [OffsetOutOfRangeError.code, OffsetOutOfRangeError.code, InvalidFetchSizeError.code,
                         UnknownTopicOrPartitionError.code, UnknownTopicOrPartitionError.code,
                         UnknownTopicOrPartitionError.code, UnknownTopicOrPartitionError.code, 0]
        oor = f.partitions[0]
        assert (oor.log_start_offset, oor.high_watermark) == (0, 3)  # the valid range
        assert "outside" in oor.error_message
        assert len(f.partitions[-1].records) > 0
    assert_serves(b, topic, 3)


# ---------------------------------------------------------------------- bad frames


def _expect_invalid_request_then_close(c: DataPortClient, expected_cid: int) -> None:
    frame = c.recv_frame()
    assert frame is not None, "broker closed without answering"
    assert fr.decode_response_header(frame) == (expected_cid, InvalidRequestError.code)
    assert c.recv_frame() is None  # then the connection is closed


def test_huge_length_prefix_is_refused_and_closed(b, stub):
    topic = new_topic(stub)
    with client(b) as c:
        c.send_raw(struct.pack(">i", 2**31 - 1) + b"\x00" * 100)
        _expect_invalid_request_then_close(c, -1)
    with client(b) as c:
        c.send_raw(struct.pack(">i", -5))
        _expect_invalid_request_then_close(c, -1)
    with client(b) as c:
        c.send_raw(struct.pack(">i", 3) + b"abc")  # shorter than a request header
        _expect_invalid_request_then_close(c, -1)
    assert_serves(b, topic, 0)


def test_unparseable_bodies_are_answered_with_their_correlation_id(b, stub):
    topic = new_topic(stub)
    cases = [
        struct.pack(">hhi", 9, 0, 77),                               # unknown api key
        struct.pack(">hhi", fr.API_FETCH, 3, 77),                    # unknown version
        struct.pack(">hhiiii", fr.API_FETCH, 0, 77, 0, 0, 5),        # 5 partitions, none present
        struct.pack(">hhihii", fr.API_PRODUCE, 0, 77, 1, 0, 1) + struct.pack(">h", 1) + b"x"
        + struct.pack(">ii", 0, 1000) + b"short",                    # records_bytes beyond the frame
    ]
    for body in cases:
        with client(b) as c:
            c.send_raw(struct.pack(">i", len(body)) + body)
            _expect_invalid_request_then_close(c, 77)
    assert_serves(b, topic, 0)


@pytest.mark.parametrize("seed", range(6))
def test_random_bytes_never_hurt_the_broker(b, stub, seed):
    rng = random.Random(seed)
    with client(b) as c:
        junk = rng.randbytes(rng.choice([1, 7, 64, 5000]))
        if seed % 2:  # a plausible length prefix followed by garbage
            junk = struct.pack(">i", len(junk)) + junk
        c.send_raw(junk)
        c.sock.shutdown(socket.SHUT_WR)
        while (frame := c.recv_frame()) is not None:  # whatever comes back is well-formed
            cid, code = fr.decode_response_header(frame)
            assert code == InvalidRequestError.code
    assert_serves(b, new_topic(stub), 0)


def test_truncated_frame_then_disconnect(b, stub):
    topic = new_topic(stub)
    wire = fr.encode_produce_request(fr.ProduceRequest(1, 1, 1000, [fr.ProducePartition(topic, 0, make_batch(3))]))
    for cut in (2, 10, len(wire) - 1):
        with client(b) as c:
            c.send_raw(wire[:cut])
        # nothing of the cut request may have been appended
    assert_serves(b, topic, 0)


def test_half_a_frame_then_stall_is_freed_by_the_read_timeout(b, stub):
    topic = new_topic(stub)
    wire = fr.encode_fetch_request(fr.FetchRequest(5, 0, 0, [fr.FetchPartition(topic, 0, 0, 100)]))
    with client(b) as c:
        c.send_raw(wire[: len(wire) // 2])
        # The broker closes the connection after request_timeout_ms; the socket timeout (30 s)
        # is the test's deadline.
        assert c.recv_frame() is None
    b.wait_for_log(r"no complete request within request_timeout_ms")
    assert_serves(b, topic, 0)


def test_disconnect_in_the_middle_of_a_sendfile(b, stub):
    topic = new_topic(stub)
    big = make_batch(64, value_size=16000)  # ~1 MiB
    with client(b) as c:
        for _ in range(16):
            assert c.produce([(topic, 0, big)]).partitions[0].error_code == 0
    log_before = len(b.log_text())
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", b.fetch_port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(fr.encode_fetch_request(fr.FetchRequest(1, 0, 0, [fr.FetchPartition(topic, 0, 0, 64 << 20)])))
        s.recv(1000)  # the answer has started
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, not FIN
        s.close()
    with client(b) as c:
        f = c.fetch([(topic, 0, 0, 64 << 20)]).partitions[0]
        assert len(f.records) == 16 * len(big)
    assert_serves(b, topic, 16 * 64)
    # A client going away is routine: INFO lines, no ERROR and no traceback.
    text = b.log_text()[log_before:]
    assert "Traceback" not in text and " ERROR " not in text, text


# ---------------------------------------------------------------------- bad batches


def _bad_batches(good: bytes) -> dict[str, tuple[bytes, int]]:
    return {
        "wrong crc": (damage(good, crc=0xDEADBEEF), CorruptRecordError.code),
        "flipped record byte": (damage(good, fix_crc=False, flip_byte_at=len(good) - 2), CorruptRecordError.code),
        "wrong magic": (damage(good, magic=1), InvalidRecordError.code),
        "batch length beyond the data": (damage(good, batch_length=len(good) + 100), CorruptRecordError.code),
        "batch length too small": (damage(good, batch_length=10), CorruptRecordError.code),
        "record count mismatch": (damage(good, records_count=7), InvalidRecordError.code),
        "zero records": (damage(good, records_count=0, last_offset_delta=-1), InvalidRecordError.code),
        "gzip codec": (damage(good, attributes=1), UnsupportedCompressionTypeError.code),
        "zstd codec": (damage(good, attributes=4), UnsupportedCompressionTypeError.code),
        "truncated header": (good[:40], CorruptRecordError.code),
        "trailing garbage after a good batch": (good + b"\x00" * 20, CorruptRecordError.code),
    }


def test_bad_batches_are_refused_and_nothing_is_written(b, stub):
    topic = new_topic(stub)
    good = make_batch(3)
    with client(b) as c:
        assert c.produce([(topic, 0, good)]).partitions[0].log_end_offset == 3
        for name, (bad, code) in _bad_batches(good).items():
            r = c.produce([(topic, 0, bad)]).partitions[0]
            assert r.error_code == code, (name, r)
            assert r.error_message, name
            # a good batch followed by a bad one: the whole partition fails, nothing written
            r = c.produce([(topic, 0, good + bad)]).partitions[0]
            assert r.error_code != 0, name
        r = c.produce([(topic, 0, good)]).partitions[0]
        assert r.base_offset == 3, "a refused batch moved the log end offset"
    assert_serves(b, topic, 6)
    with client(b) as c:
        f = c.fetch([(topic, 0, 0, 1 << 20)]).partitions[0]
        assert [o for o, _ in values_of(f.records)] == list(range(8))  # every stored batch is valid


def test_bad_batches_over_grpc(b, stub):
    topic = new_topic(stub)
    good = make_batch(3)
    for name, (bad, code) in _bad_batches(good).items():
        r = stub.Produce(pb.ProduceRequest(acks=1, partitions=[pb.ProducePartition(topic=topic, partition=0, batches=[good, bad])]))
        assert r.results[0].error_code == code, (name, r)
        assert not r.results[0].base_offsets
    r = stub.Produce(pb.ProduceRequest(acks=1, partitions=[pb.ProducePartition(topic=topic, partition=0, batches=[good])]))
    assert list(r.results[0].base_offsets) == [0]


def test_batch_over_max_message_bytes(b, stub):
    topic = new_topic(stub, max_message_bytes=2000)
    with client(b) as c:
        r = c.produce([(topic, 0, make_batch(10, value_size=300))]).partitions[0]
        assert r.error_code == MessageSizeTooLargeError.code
        assert c.produce([(topic, 0, make_batch(2))]).partitions[0].base_offset == 0


def test_produce_to_unknown_topic_partition_and_bad_acks(b, stub):
    topic = new_topic(stub, partitions=2)
    with client(b) as c:
        r = c.produce([("missing", 0, make_batch()), (topic, 2, make_batch()), ("..", 0, make_batch()),
                       (topic, 1, make_batch())])
        assert [p.error_code for p in r.partitions] == [UnknownTopicOrPartitionError.code] * 3 + [0]
        r = c.produce([(topic, 0, make_batch())], acks=5)
        assert r.partitions[0].error_code == InvalidRequiredAcksError.code
    assert_serves(b, topic, 0)


def test_refused_acks_zero_produce_closes_the_connection(b, stub):
    topic = new_topic(stub)
    with client(b) as c:
        c.send_produce([(topic, 0, damage(make_batch(), crc=1))], acks=0)
        assert c.recv_frame() is None  # closed, so the producer notices
    assert_serves(b, topic, 0)


def test_many_connections_at_once(b, stub):
    topic = new_topic(stub)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with client(b) as c:
                for _ in range(5):
                    assert c.produce([(topic, 0, make_batch(2))]).partitions[0].error_code == 0
                    c.fetch([(topic, 0, 0, 1000)])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert_serves(b, topic, 200)


def test_topic_with_flush_messages_appends_and_answers(b, stub):
    topic = new_topic(stub, flush_messages=1)  # each append fdatasyncs: done off the event loop
    with client(b) as c, client(b) as other:
        for i in range(3):
            r = c.produce([(topic, 0, make_batch(2))]).partitions[0]
            assert (r.error_code, r.base_offset) == (0, 2 * i)
            assert other.fetch([(topic, 0, 0, 1 << 20)]).partitions[0].high_watermark == 2 * (i + 1)
