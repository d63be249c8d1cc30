"""Admin in cluster mode: a broker knows the log bounds only of the partitions it leads, so
describe_topics and list_offsets must ask each partition's leader."""

from __future__ import annotations

import pytest

from annal.client.admin import EARLIEST, LATEST, Admin
from annal.client.producer import Producer
from annal.client.structs import NewTopic, TopicPartition
from harness.zookeeper import ZkCluster

pytestmark = pytest.mark.timeout(120)


def test_describe_and_list_offsets_come_from_each_leader(zk_cluster: ZkCluster) -> None:
    zk_cluster.start(1, 2, 3)
    zk_cluster.wait_registered({1, 2, 3})
    # Only broker 1 is given as bootstrap: offsets of partitions on 2 and 3 must still be right.
    first = zk_cluster.bootstrap.split(",")[0]
    with Admin(bootstrap_servers=first) as admin:
        admin.create_topics([NewTopic("spread", 3)])
        placement = zk_cluster.placement("spread")
        assert set(placement.values()) == {1, 2, 3}
        with Producer(bootstrap_servers=zk_cluster.bootstrap, linger_ms=0) as producer:
            for p in range(3):
                for _ in range(10 * (p + 1)):
                    producer.send("spread", b"v", partition=p)
            producer.flush(30)

        (desc,) = admin.describe_topics(["spread"])
        assert [(p.partition, p.leader) for p in desc.partitions] == sorted(placement.items())
        assert [(p.log_start_offset, p.log_end_offset) for p in desc.partitions] == [(0, 10), (0, 20), (0, 30)]

        tps = [TopicPartition("spread", p) for p in range(3)]
        latest = admin.list_offsets({tp: LATEST for tp in tps})
        assert [latest[tp].offset for tp in tps] == [10, 20, 30]
        earliest = admin.list_offsets({tp: EARLIEST for tp in tps})
        assert [earliest[tp].offset for tp in tps] == [0, 0, 0]
