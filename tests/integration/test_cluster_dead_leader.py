"""A broker SIGKILLed in cluster mode: metadata says its partitions have no leader, and records
for them fail after delivery_timeout_ms naming why (issue 13).

Three brokers (4 s session timeout), a topic of three partitions (one per broker); broker 2 is
SIGKILLed. Then:

* ``Admin.describe_topics`` (asked of broker 1), ``annal topics describe`` and a cluster-mode
  client's metadata report leader -1 and LEADER_NOT_AVAILABLE for broker 2's partition, once
  broker 2's session has expired;
* a record sent to that partition (bootstrap producer and cluster-mode producer) fails after
  its ``delivery_timeout_ms`` with KafkaTimeoutError whose last error is LeaderNotAvailableError
  naming broker 2, and a WARNING said so when the record started waiting;
* ``annal produce --delivery-timeout-ms`` to that partition exits 1 with that reason (without
  the broker id: a producer started after the leader died never knew it).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid

import pytest

from annal.client import Admin, NewTopic, Producer
from annal.client._metadata import zookeeper_metadata
from annal.errors import KafkaTimeoutError, LeaderNotAvailableError
from harness.zookeeper import ZkCluster, wait_until


def _annal(*args: str, stdin: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "annal.broker", *args], input=stdin, capture_output=True,
                          timeout=timeout, env=dict(os.environ))


@pytest.mark.timeout(180)
def test_dead_leader_reported_as_minus_one_and_produce_fails_naming_it(
    zk_cluster: ZkCluster, caplog: pytest.LogCaptureFixture
) -> None:
    zk_cluster.start(1, 2, 3)
    zk_cluster.wait_registered({1, 2, 3})
    topic = "dead-" + uuid.uuid4().hex[:8]
    b1 = zk_cluster.brokers[1].bootstrap
    with Admin(bootstrap_servers=b1) as admin:
        admin.create_topics([NewTopic(topic, 3)])
    (p2,) = [p for p, b in zk_cluster.placement(topic).items() if b == 2]
    # Producers that wrote to broker 2's partition before it died (so they knew its leader).
    producers = [
        Producer(**kwargs, delivery_timeout_ms=3000, request_timeout_ms=1000, linger_ms=0, retry_backoff_ms=50)
        for kwargs in (dict(bootstrap_servers=b1), dict(zookeeper=zk_cluster.hosts))
    ]
    for producer in producers:
        producer.send(topic, b"before", partition=p2).get(timeout=30)
    zk_cluster.brokers[2].kill()
    zk_cluster.wait_registered({1, 3})

    with Admin(bootstrap_servers=b1, request_timeout_ms=5000) as admin:
        def leader_of_p2() -> int:
            (desc,) = admin.describe_topics([topic])
            return next(p for p in desc.partitions if p.partition == p2).leader

        wait_until(lambda: leader_of_p2() == -1, 30, "describe_topics reports leader -1 for broker 2's partition")
        (desc,) = admin.describe_topics([topic])
        part = next(p for p in desc.partitions if p.partition == p2)
        assert part.error_code == LeaderNotAvailableError.code
        assert all(p.leader in (1, 3) for p in desc.partitions if p.partition != p2)

    r = _annal("topics", "describe", "--bootstrap-server", b1, "--topic", topic)
    assert r.returncode == 0, r.stderr
    assert f"Partition: {p2}\tLeader: -1" in r.stdout.decode(), r.stdout.decode()

    md = zookeeper_metadata(zk_cluster.hosts, 100)
    try:
        md.refresh([topic])
        wait_until(lambda: md.leader_for(topic, p2) == -1, 30, "cluster-mode metadata: leader -1")
    finally:
        md.close()

    caplog.set_level(logging.WARNING, logger="annal.client.producer")
    for producer in producers:
        try:
            future = producer.send(topic, b"x", partition=p2)
            with pytest.raises(KafkaTimeoutError) as info:
                future.get(timeout=60)
        finally:
            producer.close(timeout=10)
        text = str(info.value)
        assert "LeaderNotAvailableError" in text and "broker 2" in text, text
        assert isinstance(info.value.__cause__, LeaderNotAvailableError)
        assert info.value.__cause__.details.get("leader_id") == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and f"{topic}-{p2}" in r.getMessage()]
    assert warnings and "waiting" in warnings[0].getMessage()

    r = _annal("produce", "--bootstrap-server", b1, "--topic", topic, "--partition", str(p2),
               "--delivery-timeout-ms", "3000", stdin=b"a\n")
    err = r.stderr.decode()
    assert r.returncode == 1, err
    # A producer started after the leader died has never seen it lead: it names the broker from
    # the partition's replica list in the metadata.
    assert "LeaderNotAvailableError" in err and "has no live leader" in err, err
    assert "broker 2" in err, err
