"""ClusterMetadata with a scripted source (no broker): refresh, missing topics, timeouts,
listeners and leader lookup."""

from __future__ import annotations

import pytest

from annal.errors import BrokerNotAvailableError, KafkaTimeoutError, UnknownTopicOrPartitionError
from annal.client._metadata import ClusterMetadata, MetadataSnapshot
from annal.client.structs import BrokerMetadata, PartitionMetadata, TopicDescription


def topic(name: str, leaders: list[int]) -> TopicDescription:
    return TopicDescription(
        name, tuple(PartitionMetadata(name, i, leader, 0, 0, 0) for i, leader in enumerate(leaders))
    )


class ScriptedSource:
    def __init__(self, answers):
        self.answers = list(answers)
        self.calls: list = []

    def fetch(self, topics):
        self.calls.append(topics)
        a = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(a, Exception):
            raise a
        return a

    def close(self):
        pass


BROKERS = {1: BrokerMetadata(1, "127.0.0.1", 9092, 9093)}


def test_wait_for_topic_refreshes_until_known():
    snap = MetadataSnapshot(BROKERS, {"t": topic("t", [1, 1])})
    src = ScriptedSource([BrokerNotAvailableError("down"), snap])
    md = ClusterMetadata(src, retry_backoff_ms=1)
    seen = []
    md.add_listener(lambda m: seen.append(m.version))
    assert md.wait_for_topic("t", 5000) == 2
    assert md.partitions_for("t") == {0, 1}
    assert md.leader_for("t", 1) == 1 and md.leader_for("t", 5) == -1 and md.leader_for("x", 0) == -1
    assert md.broker(1) == BROKERS[1] and md.is_alive(1) and not md.is_alive(2)
    assert seen == [1]
    assert md.wait_for_topic("t", 0) == 2  # cached: no call
    assert len(src.calls) == 2


def test_missing_topic_raises_unknown():
    src = ScriptedSource([MetadataSnapshot(BROKERS, {}, missing=frozenset({"nope"}))])
    md = ClusterMetadata(src, retry_backoff_ms=1)
    with pytest.raises(UnknownTopicOrPartitionError, match="nope"):
        md.wait_for_topic("nope", 5000)
    assert md.is_missing("nope")


def test_unreachable_cluster_times_out():
    md = ClusterMetadata(ScriptedSource([BrokerNotAvailableError("down")]), retry_backoff_ms=5)
    with pytest.raises(KafkaTimeoutError, match="not available"):
        md.wait_for_topic("t", 50)


def test_refresh_is_rate_limited_unless_forced():
    src = ScriptedSource([MetadataSnapshot(BROKERS, {"t": topic("t", [1])})])
    md = ClusterMetadata(src, retry_backoff_ms=60000)
    assert md.refresh(["t"], force=False)
    assert not md.refresh(["t"], force=False)
    md.request_update()
    assert md.need_update
    md.maybe_refresh(["t"])  # rate-limited: no call, still stale
    assert len(src.calls) == 1
    assert md.refresh(["t"])
    assert not md.need_update


def test_complete_snapshot_drops_deleted_topics():
    src = ScriptedSource([
        MetadataSnapshot(BROKERS, {"a": topic("a", [1]), "b": topic("b", [1])}, complete=True),
        MetadataSnapshot(BROKERS, {"a": topic("a", [1])}, complete=True),
    ])
    md = ClusterMetadata(src, retry_backoff_ms=0)
    md.refresh(None)
    assert md.topics() == {"a", "b"}
    md.refresh(None)
    assert md.topics() == {"a"} and md.partition_count("b") is None


def test_a_topic_the_broker_has_not_loaded_yet_is_waited_for_not_missing():
    """LEADER_NOT_AVAILABLE at topic level (a new topic's placement has not reached the
    answering broker) is neither a topic nor missing: wait_for_topic asks again."""
    from annal.client._metadata import snapshot_from_response
    from annal.protocol import annal_pb2

    pending = annal_pb2.MetadataResponse()
    pending.topics.add(name="new", error_code=5)
    snap = snapshot_from_response(pending, ["new"])
    assert snap.unsettled == {"new"} and not snap.missing and not snap.topics
    src = ScriptedSource([
        MetadataSnapshot(BROKERS, {}, missing=frozenset({"new"})),  # an earlier answer: gone
        snap,
        snap,
        MetadataSnapshot(BROKERS, {"new": topic("new", [1, 1, 1])}),
    ])
    md = ClusterMetadata(src, retry_backoff_ms=1)
    md.refresh(["new"])
    assert md.is_missing("new")
    md.refresh(["new"])
    assert not md.is_missing("new")  # exists now, only not described yet
    assert md.wait_for_topic("new", 5000) == 3
    assert len(src.calls) == 4
