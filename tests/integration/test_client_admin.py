"""Admin against a real standalone broker process."""

from __future__ import annotations

import uuid

import pytest

from annal.client import EARLIEST, LATEST, Admin, NewTopic, Producer, TopicPartition
from annal.errors import (
    BrokerNotAvailableError,
    InvalidPartitionsError,
    InvalidTopicError,
    LocalUsageError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)


@pytest.mark.timeout(60)
def test_topic_lifecycle_and_offsets(broker):
    name = "adm-" + uuid.uuid4().hex[:8]
    with Admin(broker.bootstrap) as admin:
        assert admin.create_topics([NewTopic(name, 3, {"retention_ms": 3600000})]) == {name: None}
        with pytest.raises(TopicAlreadyExistsError):
            admin.create_topics([NewTopic(name, 3)])
        res = admin.create_topics([NewTopic(name, 1)], raise_errors=False)
        assert isinstance(res[name], TopicAlreadyExistsError)
        assert name in admin.list_topics()

        (desc,) = admin.describe_topics([name])
        assert desc.name == name and desc.partition_count == 3
        assert [p.partition for p in desc.partitions] == [0, 1, 2]
        assert desc.configs["retention_ms"] == 3600000
        cluster = admin.describe_cluster()
        assert [b.broker_id for b in cluster.brokers] == [broker.broker_id]
        assert cluster.brokers[0].fetch_port == broker.fetch_port
        assert all(p.leader == broker.broker_id for p in desc.partitions)

        with Producer(broker.bootstrap) as p:
            for i in range(10):
                p.send(name, b"%d" % i, partition=1, timestamp_ms=1_700_000_000_000 + i)
        tp = TopicPartition(name, 1)
        offs = admin.list_offsets({tp: EARLIEST, TopicPartition(name, 0): LATEST})
        assert offs[tp].offset == 0 and offs[TopicPartition(name, 0)].offset == 0
        assert admin.list_offsets({tp: LATEST})[tp].offset == 10
        (desc,) = admin.describe_topics([name])
        assert desc.partitions[1].log_end_offset == 10 and desc.partitions[1].size_bytes > 0

        assert admin.delete_topics([name]) == {name: None}
        assert name not in admin.list_topics()
        with pytest.raises(UnknownTopicOrPartitionError):
            admin.describe_topics([name])
        with pytest.raises(UnknownTopicOrPartitionError):
            admin.delete_topics([name])


@pytest.mark.timeout(60)
def test_bad_requests(broker):
    with Admin(broker.bootstrap) as admin:
        with pytest.raises(InvalidPartitionsError):
            admin.create_topics([NewTopic("adm-" + uuid.uuid4().hex[:8], 0)])
        with pytest.raises(InvalidTopicError):
            admin.create_topics([NewTopic("bad/name", 1)])
        with pytest.raises(LocalUsageError, match="unknown topic config"):
            admin.create_topics([NewTopic("adm-x", 1, {"colour": 3})])
        with pytest.raises(TypeError):
            admin.create_topics(["not-a-NewTopic"])  # type: ignore[list-item]
    broker.kill()
    with Admin(broker.bootstrap, request_timeout_ms=2000) as admin:
        with pytest.raises(BrokerNotAvailableError):
            admin.list_topics()
