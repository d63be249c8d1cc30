"""Replication on real brokers and ZooKeeper (docs/replication.md): replicas and ISR in
ZooKeeper and Metadata, followers copying the leader byte for byte, leader failover on
SIGKILL with no acknowledged record lost, a zombie leader (SIGSTOP) fenced and truncated,
a follower that lost its partition directory, controlled shutdown."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest

from annal.client.admin import Admin
from annal.client.consumer import Consumer
from annal.client.producer import Producer
from annal.client.structs import NewTopic, TopicPartition
from annal.zookeeper import paths
from harness.zookeeper import ZkCluster, wait_until

pytestmark = pytest.mark.timeout(240)


def _state(zk_cluster: ZkCluster, topic: str, partition: int) -> Any:
    data, stat = zk_cluster.client().get(paths.partition_state_path(topic, partition))
    return paths.decode_partition_state(data, stat.version)


def _replicas(zk_cluster: ZkCluster, topic: str) -> dict[int, tuple[int, ...]]:
    data, _ = zk_cluster.client().get(paths.topic_path(topic))
    return dict(paths.decode_topic(topic, data).replicas)


def _log_bytes(data_dir: Any, topic: str, partition: int, end_offset: int) -> bytes:
    """The record batches of one replica below ``end_offset``, read from its files (the broker
    is stopped)."""
    from annal.broker.storage import PartitionLog

    plog = PartitionLog.open(str(data_dir / f"{topic}-{partition}"))
    try:
        out = bytearray()
        offset = plog.log_start_offset
        while offset < min(end_offset, plog.log_end_offset):
            with plog.read(offset, 1 << 20, max_offset=end_offset) as r:
                if not r.size:
                    break
                out += r.tobytes()
            from annal.record import iter_batch_positions, parse_header

            last = None
            for pos, _ in iter_batch_positions(out):
                last = parse_header(out, pos)
            assert last is not None
            offset = last.base_offset + last.last_offset_delta + 1
        return bytes(out)
    finally:
        plog.close()


def _create(zk_cluster: ZkCluster, topic: str, partitions: int, rf: int, **configs: int) -> None:
    with Admin(bootstrap_servers=zk_cluster.bootstrap) as admin:
        admin.create_topics([NewTopic(topic, partitions, configs, rf)])
    # Every broker has seen the topic (its Metadata names it).
    for b in zk_cluster.brokers.values():
        if b.running:
            with Admin(bootstrap_servers=b.bootstrap) as one:
                wait_until(lambda: topic in one.list_topics(), 20, f"broker sees {topic}")


def _wait_isr(zk_cluster: ZkCluster, topic: str, partition: int, size: int, timeout_s: float = 60) -> None:
    wait_until(lambda: len(_state(zk_cluster, topic, partition).isr) == size, timeout_s,
               f"{topic}-{partition} ISR of {size}")


def test_replicated_topic_placement_state_and_identical_replicas(zk_cluster: ZkCluster) -> None:
    zk_cluster.start(1, 2, 3)
    zk_cluster.wait_registered({1, 2, 3})
    _create(zk_cluster, "rep", 3, 3, min_insync_replicas=2)
    replicas = _replicas(zk_cluster, "rep")
    # Every partition on all three brokers, no broker twice, one preferred leader each.
    assert all(sorted(r) == [1, 2, 3] for r in replicas.values())
    assert sorted(r[0] for r in replicas.values()) == [1, 2, 3]
    for p, r in replicas.items():
        st = _state(zk_cluster, "rep", p)
        assert st.leader == r[0] and st.leader_epoch == 0 and sorted(st.isr) == [1, 2, 3]

    with Admin(bootstrap_servers=zk_cluster.bootstrap) as admin:
        (desc,) = admin.describe_topics(["rep"])
    for pm in desc.partitions:
        assert pm.replicas == replicas[pm.partition] and sorted(pm.isr) == [1, 2, 3]

    producer = Producer(bootstrap_servers=zk_cluster.bootstrap, acks="all", linger_ms=1)
    try:
        futures = [producer.send("rep", b"v%d" % i, key=b"k%d" % i) for i in range(3000)]
        producer.flush(60)
        metas = [f.get(10) for f in futures]
    finally:
        producer.close()
    ends = {p: max(m.offset for m in metas if m.partition == p) + 1 for p in range(3)}

    consumer = Consumer(bootstrap_servers=zk_cluster.bootstrap, auto_offset_reset="earliest",
                        consumer_timeout_ms=3000)
    try:
        consumer.assign([TopicPartition("rep", p) for p in range(3)])
        got = {r.value for r in consumer}
    finally:
        consumer.close()
    assert got == {b"v%d" % i for i in range(3000)}

    # Followers catch up (acks=all answered once every ISR member had the batch).
    for b in zk_cluster.brokers.values():
        b.stop()
    for p, end in ends.items():
        copies = {bid: _log_bytes(b.data_dir, "rep", p, end) for bid, b in zk_cluster.brokers.items()}
        assert len(copies[1]) > 0
        assert copies[1] == copies[2] == copies[3], f"replicas of rep-{p} differ"
