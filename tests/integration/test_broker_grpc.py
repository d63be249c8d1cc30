"""The gRPC API of a real broker process: topics, metadata, produce (unary and stream), list
offsets, the streaming fetch fallback, and how errors are reported (per partition in results,
whole-call as status + annal-error-* trailers)."""

from __future__ import annotations

import json
import os
import threading

import grpc
import pytest

from annal.errors import (
    InvalidConfigError,
    InvalidFetchSizeError,
    InvalidPartitionsError,
    InvalidRequestError,
    InvalidRequiredAcksError,
    InvalidTopicError,
    OffsetOutOfRangeError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from annal.protocol import annal_pb2 as pb
from annal.protocol import annal_pb2_grpc
from harness.batches import make_batch, values_of
from harness.broker import BrokerProcess, attach_logs

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory):
    b = BrokerProcess(tmp_path_factory.mktemp("grpc") / "data")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def b(shared: BrokerProcess, request: pytest.FixtureRequest) -> BrokerProcess:
    attach_logs(request, shared)
    assert shared.running
    return shared


@pytest.fixture
def stub(b: BrokerProcess):
    ch = grpc.insecure_channel(b.bootstrap, options=[("grpc.max_receive_message_length", 64 << 20)])
    yield annal_pb2_grpc.AnnalStub(ch)
    ch.close()


_ids = iter(range(10**6))


def new_topic(stub, partitions: int = 1, **config: int) -> str:
    name = f"g{next(_ids)}-{os.getpid()}"
    r = stub.CreateTopics(pb.CreateTopicsRequest(
        topics=[pb.NewTopic(name=name, partitions=partitions, config=pb.TopicConfig(**config))]))
    assert r.results[0].error_code == 0, r
    return name


def produce(stub, topic: str, partition: int, *batches: bytes, acks: int = 1) -> pb.ProducePartitionResult:
    r = stub.Produce(pb.ProduceRequest(acks=acks, partitions=[
        pb.ProducePartition(topic=topic, partition=partition, batches=list(batches))]))
    return r.results[0]


def fetch(stub, *parts: tuple[str, int, int, int], max_wait_ms: int = 0, min_bytes: int = 0) -> list[pb.FetchResponse]:
    return list(stub.Fetch(pb.FetchRequest(
        partitions=[pb.FetchPartition(topic=t, partition=p, offset=o, max_bytes=m) for t, p, o, m in parts],
        max_wait_ms=max_wait_ms, min_bytes=min_bytes)))


def trailers(err: grpc.RpcError) -> dict[str, str]:
    return dict(err.trailing_metadata() or ())


# ---------------------------------------------------------------------- topics


def test_create_topic_then_metadata(b, stub):
    name = new_topic(stub, partitions=3, retention_ms=60_000)
    md = stub.Metadata(pb.MetadataRequest(topics=[name, "absent-topic"]))
    assert [(x.broker_id, x.host, x.port, x.fetch_port) for x in md.brokers] == [(0, "127.0.0.1", b.port, b.fetch_port)]
    assert md.controller_id == 0
    t, absent = md.topics
    assert (t.name, t.error_code, [p.partition for p in t.partitions]) == (name, 0, [0, 1, 2])
    assert all(p.leader == 0 and p.log_end_offset == 0 for p in t.partitions)
    assert t.config.retention_ms == 60_000 and t.config.segment_bytes == 1 << 30
    assert absent.error_code == UnknownTopicOrPartitionError.code
    assert name in [x.name for x in stub.Metadata(pb.MetadataRequest()).topics]


def test_create_topic_errors(b, stub):
    existing = new_topic(stub)
    cases = [
        pb.NewTopic(name=existing, partitions=1),
        pb.NewTopic(name="a/b", partitions=1),
        pb.NewTopic(name="..", partitions=1),
        pb.NewTopic(name=".", partitions=1),
        pb.NewTopic(name="", partitions=1),
        pb.NewTopic(name="x" * 250, partitions=1),
        pb.NewTopic(name="sp ace", partitions=1),
        pb.NewTopic(name="nul\x00", partitions=1),
        pb.NewTopic(name="ünï", partitions=1),
        pb.NewTopic(name="ok-but-too-many", partitions=100_000),
        pb.NewTopic(name="ok-bad-config", partitions=1, config=pb.TopicConfig(segment_bytes=10)),
        pb.NewTopic(name="ok-bad-retention", partitions=1, config=pb.TopicConfig(retention_ms=-5)),
    ]
    r = stub.CreateTopics(pb.CreateTopicsRequest(topics=cases))
    assert [x.error_code for x in r.results] == [
        TopicAlreadyExistsError.code] + [InvalidTopicError.code] * 8 + [
        InvalidPartitionsError.code, InvalidConfigError.code, InvalidConfigError.code]
    assert all(x.error_message for x in r.results)
    names = {t.name for t in stub.Metadata(pb.MetadataRequest()).topics}
    assert not names & {"ok-but-too-many", "ok-bad-config", "ok-bad-retention"}
    assert "x" * 249 not in names
    ok = "y" * 249
    assert stub.CreateTopics(pb.CreateTopicsRequest(topics=[pb.NewTopic(name=ok, partitions=1)])).results[0].error_code == 0


def test_validate_only_creates_nothing(b, stub):
    r = stub.CreateTopics(pb.CreateTopicsRequest(topics=[pb.NewTopic(name="dry-run", partitions=2)], validate_only=True))
    assert r.results[0].error_code == 0
    assert stub.Metadata(pb.MetadataRequest(topics=["dry-run"])).topics[0].error_code == UnknownTopicOrPartitionError.code


def test_delete_topic(b, stub):
    name = new_topic(stub, partitions=2)
    assert produce(stub, name, 1, make_batch()).error_code == 0
    r = stub.DeleteTopics(pb.DeleteTopicsRequest(names=[name, "never-existed", "../x"]))
    assert [x.error_code for x in r.results] == [0, UnknownTopicOrPartitionError.code, UnknownTopicOrPartitionError.code]
    assert produce(stub, name, 1, make_batch()).error_code == UnknownTopicOrPartitionError.code
    assert not (b.data_dir / f"{name}-1").exists()
    # the name can be used again, starting from offset 0
    stub.CreateTopics(pb.CreateTopicsRequest(topics=[pb.NewTopic(name=name, partitions=1)]))
    assert list(produce(stub, name, 0, make_batch()).base_offsets) == [0]


# ---------------------------------------------------------------------- produce


def test_produce_and_fetch_round_trip(b, stub):
    name = new_topic(stub, partitions=2)
    r = produce(stub, name, 0, make_batch(3), make_batch(2), make_batch(4))
    assert (r.error_code, list(r.base_offsets), r.log_end_offset) == (0, [0, 3, 5], 9)
    r = produce(stub, name, 0, make_batch(1), acks=-1)
    assert list(r.base_offsets) == [9]
    msgs = fetch(stub, (name, 0, 0, 1 << 20), (name, 1, 0, 1 << 20))
    assert [(m.partition, m.error_code, m.high_watermark) for m in msgs] == [(0, 0, 10), (1, 0, 0)]
    assert [o for o, _ in values_of(msgs[0].records)] == list(range(10))
    assert msgs[1].records == b""


def test_produce_per_partition_errors(b, stub):
    name = new_topic(stub)
    r = stub.Produce(pb.ProduceRequest(acks=1, partitions=[
        pb.ProducePartition(topic="missing", partition=0, batches=[make_batch()]),
        pb.ProducePartition(topic=name, partition=5, batches=[make_batch()]),
        pb.ProducePartition(topic=name, partition=0, batches=[make_batch()]),
    ]))
    assert [x.error_code for x in r.results] == [UnknownTopicOrPartitionError.code] * 2 + [0]
    r = stub.Produce(pb.ProduceRequest(acks=2, partitions=[pb.ProducePartition(topic=name, partition=0, batches=[make_batch()])]))
    assert r.results[0].error_code == InvalidRequiredAcksError.code
    assert list(produce(stub, name, 0, make_batch()).base_offsets) == [3]


def test_produce_stream_answers_in_order_with_correlation_ids(b, stub):
    name = new_topic(stub)
    requests = [pb.ProduceRequest(acks=1, correlation_id=1000 + i, partitions=[
        pb.ProducePartition(topic=name, partition=0, batches=[make_batch(2)])]) for i in range(20)]
    answers = list(stub.ProduceStream(iter(requests)))
    assert [a.correlation_id for a in answers] == [1000 + i for i in range(20)]
    assert [a.results[0].base_offsets[0] for a in answers] == [2 * i for i in range(20)]


def test_request_over_the_size_limit_is_resource_exhausted(tmp_path, broker_factory):
    b = broker_factory("small", config={"max_request_bytes": 1 << 20})
    with grpc.insecure_channel(b.bootstrap) as ch:
        stub = annal_pb2_grpc.AnnalStub(ch)
        with pytest.raises(grpc.RpcError) as ei:
            stub.Produce(pb.ProduceRequest(acks=1, partitions=[
                pb.ProducePartition(topic="t", partition=0, batches=[b"x" * (2 << 20)])]))
        assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


# ---------------------------------------------------------------------- offsets and fetch


def test_list_offsets(b, stub):
    name = new_topic(stub)
    produce(stub, name, 0, make_batch(3, timestamp_ms=1000))
    produce(stub, name, 0, make_batch(3, timestamp_ms=5000))
    r = stub.ListOffsets(pb.ListOffsetsRequest(partitions=[
        pb.ListOffsetsPartition(topic=name, partition=0, timestamp=-2),
        pb.ListOffsetsPartition(topic=name, partition=0, timestamp=-1),
        pb.ListOffsetsPartition(topic=name, partition=0, timestamp=3000),
        pb.ListOffsetsPartition(topic=name, partition=0, timestamp=9000),
        pb.ListOffsetsPartition(topic="missing", partition=0, timestamp=-1),
    ]))
    assert [(x.error_code, x.offset) for x in r.results] == [
        (0, 0), (0, 6), (0, 3), (0, -1), (UnknownTopicOrPartitionError.code, -1)]
    assert r.results[2].timestamp == 5000


def test_fetch_errors_carry_the_valid_range(b, stub):
    name = new_topic(stub)
    produce(stub, name, 0, make_batch(3))
    msgs = fetch(stub, (name, 0, 10, 100), (name, 0, -3, 100), (name, 0, 0, 0), ("missing", 0, 0, 100), (name, 0, 1, 100))
    assert [m.error_code for m in msgs] == [OffsetOutOfRangeError.code, OffsetOutOfRangeError.code,
                                            InvalidFetchSizeError.code, UnknownTopicOrPartitionError.code, 0]
    assert (msgs[0].log_start_offset, msgs[0].high_watermark) == (0, 3)
    assert [o for o, _ in values_of(msgs[4].records, 1)] == [1, 2]


def test_fetch_whole_call_error_has_status_and_trailers(b, stub):
    with pytest.raises(grpc.RpcError) as ei:
        fetch(stub)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    t = trailers(ei.value)
    assert (t["annal-error-code"], t["annal-error-reason"]) == (str(InvalidRequestError.code), InvalidRequestError.reason)


def test_grpc_fetch_long_poll_is_woken_by_an_append(b, stub):
    name = new_topic(stub)
    result: list = []
    t = threading.Thread(target=lambda: result.extend(fetch(stub, (name, 0, 0, 1 << 20), max_wait_ms=120_000, min_bytes=1)))
    t.start()
    from integration.test_broker_data_port import wait_for_long_polls

    wait_for_long_polls(b, 1)
    produce(stub, name, 0, make_batch(2))
    t.join(30)
    assert not t.is_alive(), "the long-poll was not woken by the append"
    assert result[0].high_watermark == 2 and len(result[0].records) > 0


def test_metrics_endpoint(b, stub):
    import urllib.request

    name = new_topic(stub)
    produce(stub, name, 0, make_batch(5))
    text = urllib.request.urlopen(f"http://127.0.0.1:{b.metrics_port}/metrics", timeout=10).read().decode()
    assert f'annal_partition_log_end_offset{{partition="0",topic="{name}"}} 5.0' in text
    assert f'annal_records_in_total{{topic="{name}"}} 5.0' in text
    assert 'annal_requests_total{api="Produce",error="NONE",transport="grpc"}' in text
    assert "annal_request_latency_seconds_bucket" in text


def test_not_leader_details_are_json_in_trailers():
    """The trailer format the SDK parses (unit-level check of the servicer helper)."""
    from annal.broker.coordination.base import BrokerInfo
    from annal.errors import NotLeaderForPartitionError
    from annal.broker.server.grpc_service import error_trailers

    t = dict(error_trailers(NotLeaderForPartitionError("x", leader=BrokerInfo(2, "h", 1, 3), topic="t")))
    assert t["annal-error-code"] == "6"
    assert json.loads(t["annal-error-details"]) == {
        "leader": {"broker_id": 2, "host": "h", "port": 1, "fetch_port": 3, "kafka_port": -1}, "topic": "t"}


def test_metrics_error_labels_are_protocol_error_names(b, stub):
    """Failed CreateTopics/DeleteTopics and refused produces are counted under their protocol
    error names on both transports (not NONE, not a catch-all label)."""
    import urllib.request

    from harness.data_port import DataPortClient

    name = new_topic(stub, max_message_bytes=2000)
    assert stub.CreateTopics(pb.CreateTopicsRequest(topics=[pb.NewTopic(name=name, partitions=1)])).results[0].error_code
    assert stub.DeleteTopics(pb.DeleteTopicsRequest(names=[f"missing-{name}"])).results[0].error_code
    assert produce(stub, name, 0, make_batch(10, value_size=300)).error_code
    with DataPortClient(*b.fetch_address) as c:
        assert c.produce([(name, 0, make_batch(10, value_size=300))]).partitions[0].error_code
    text = urllib.request.urlopen(f"http://127.0.0.1:{b.metrics_port}/metrics", timeout=10).read().decode()
    for api, error, transport in (
        ("CreateTopics", "TOPIC_ALREADY_EXISTS", "grpc"),
        ("DeleteTopics", "UNKNOWN_TOPIC_OR_PARTITION", "grpc"),
        ("Produce", "MESSAGE_TOO_LARGE", "grpc"),
        ("Produce", "MESSAGE_TOO_LARGE", "data"),
    ):
        assert f'annal_requests_total{{api="{api}",error="{error}",transport="{transport}"}}' in text, (api, error)
