"""Unit tests of annal.broker.coordination.standalone: topics persist atomically in topics.json."""

from __future__ import annotations

import json

import pytest

from annal.broker.coordination.base import BrokerInfo
from annal.broker.coordination.standalone import StandaloneCoordinator
from annal.errors import (
    InvalidPartitionsError,
    InvalidTopicError,
    StorageError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

ME = BrokerInfo(3, "127.0.0.1", 9092, 9093)


def test_create_delete_persist_and_notify(tmp_path):
    c = StandaloneCoordinator(tmp_path)
    c.start(ME)
    seen = []
    c.add_listener(lambda topics: seen.append(sorted(topics)))
    p = c.create_topic("orders", 3, {"retention_ms": 1000})
    assert dict(p.partitions) == {0: 3, 1: 3, 2: 3}
    c.create_topic("logs", 1, {})
    c.delete_topic("logs")
    assert seen == [[], ["orders"], ["logs", "orders"], ["orders"]]
    assert c.brokers() == {3: ME} and c.controller_id() == 3
    doc = json.loads((tmp_path / "topics.json").read_text())
    assert doc == {"version": 1, "cluster_id": c.cluster_id,
                   "topics": {"orders": {"partitions": 3, "config": {"retention_ms": 1000}}}}
    assert len(c.cluster_id) == 32
    assert not (tmp_path / "topics.json.tmp").exists()
    again = StandaloneCoordinator(tmp_path)
    again.start(ME)
    assert again.topics()["orders"].config == {"retention_ms": 1000}
    assert again.cluster_id == c.cluster_id


def test_errors(tmp_path):
    c = StandaloneCoordinator(tmp_path)
    c.start(ME)
    c.create_topic("t", 1, {})
    with pytest.raises(TopicAlreadyExistsError):
        c.create_topic("t", 1, {})
    with pytest.raises(InvalidTopicError):
        c.create_topic("../t", 1, {})
    with pytest.raises(InvalidPartitionsError):
        c.create_topic("u", 0, {})
    with pytest.raises(UnknownTopicOrPartitionError):
        c.delete_topic("nope")


def test_corrupt_file_is_a_clear_storage_error(tmp_path):
    (tmp_path / "topics.json").write_text("{not json")
    with pytest.raises(StorageError, match="not a valid topic map"):
        StandaloneCoordinator(tmp_path).start(ME)
    (tmp_path / "topics.json").write_text(json.dumps({"version": 1, "topics": {"../x": {"partitions": 1}}}))
    with pytest.raises(StorageError):
        StandaloneCoordinator(tmp_path).start(ME)
