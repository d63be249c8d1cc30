"""``annal topics``, ``annal produce`` and ``annal consume`` as real processes against a real
broker."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import uuid

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def annal(*args: str, stdin: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    return subprocess.run(
        [sys.executable, "-m", "annal.broker", *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        cwd=str(REPO),
        env=env,
    )


@pytest.mark.timeout(120)
def test_topics_produce_consume_end_to_end(broker):
    bs = ["--bootstrap-server", broker.bootstrap]
    topic = "console-" + uuid.uuid4().hex[:8]

    r = annal("topics", "create", *bs, "--topic", topic, "--partitions", "2", "--config", "retention_ms=3600000")
    assert r.returncode == 0, r.stderr
    assert f"Created topic {topic}." in r.stdout.decode()

    r = annal("topics", "create", *bs, "--topic", topic)
    assert r.returncode == 1 and b"TopicAlreadyExistsError" in r.stderr
    assert annal("topics", "create", *bs, "--topic", topic, "--if-not-exists").returncode == 0

    r = annal("topics", "list", *bs)
    assert r.returncode == 0 and topic in r.stdout.decode().split()

    lines = b"".join(b"key%d:value %d\n" % (i % 3, i) for i in range(20)) + b"no separator here\n"
    r = annal("produce", *bs, "--topic", topic, "--key-separator", ":", "--acks", "all", stdin=lines)
    assert r.returncode == 0, r.stderr

    r = annal("topics", "describe", *bs, "--topic", topic)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode().splitlines()
    assert out[0].startswith(f"Topic: {topic}\tPartitionCount: 2\tReplicationFactor: 1\tConfigs: ")
    assert "retention_ms=3600000" in out[0]
    assert out[1].startswith(f"\tTopic: {topic}\tPartition: 0\tLeader: ")
    leader = out[1].split("Leader: ")[1].split()[0]
    assert f"\tReplicas: {leader}\tIsr: {leader}\t" in out[1]  # one copy
    assert out[2].startswith(f"\tTopic: {topic}\tPartition: 1\tLeader: ")
    ends = [int(line.split("LogEndOffset: ")[1].split()[0]) for line in out[1:3]]
    assert sum(ends) == 21

    r = annal("consume", *bs, "--topic", topic, "--from-beginning", "--max-messages", "21", "--print-key")
    assert r.returncode == 0, r.stderr
    got = sorted(r.stdout.decode().splitlines())
    assert got == sorted([f"key{i % 3}\tvalue {i}" for i in range(20)] + ["null\tno separator here"])
    assert b"Processed a total of 21 messages" in r.stderr

    r = annal("consume", *bs, "--topic", topic, "--partition", "0", "--offset", "1", "--print-offset",
              "--max-messages", str(ends[0] - 1))
    assert r.returncode == 0, r.stderr
    rows = r.stdout.decode().splitlines()
    assert len(rows) == ends[0] - 1
    assert rows[0].startswith("Partition:0\tOffset:1\t")
    assert f"Processed a total of {ends[0] - 1} messages".encode() in r.stderr

    r = annal("consume", *bs, "--topic", topic, "--timeout-ms", "800")  # only new records
    assert r.returncode == 0 and r.stdout == b""
    assert b"Processed a total of 0 messages" in r.stderr

    r = annal("topics", "delete", *bs, "--topic", topic)
    assert r.returncode == 0 and f"Deleted topic {topic}." in r.stdout.decode()
    r = annal("topics", "describe", *bs, "--topic", topic)
    assert r.returncode == 1 and b"UnknownTopicOrPartitionError" in r.stderr


@pytest.mark.timeout(60)
def test_console_errors(broker):
    bs = ["--bootstrap-server", broker.bootstrap]
    r = annal("topics", "create", *bs)
    assert r.returncode == 1 and b"needs --topic" in r.stderr
    r = annal("topics", "create", *bs, "--topic", "x" + uuid.uuid4().hex[:6], "--config", "retention_ms")
    assert r.returncode == 1 and b"KEY=VALUE" in r.stderr
    r = annal("consume", *bs, "--topic", "t", "--offset", "5")
    assert r.returncode == 1 and b"--offset needs --partition" in r.stderr
    r = annal("consume", *bs, "--topic", "t", "--group", "g")
    assert r.returncode == 1 and b"zookeeper" in r.stderr
    r = annal("produce", *bs, "--topic", "missing-" + uuid.uuid4().hex[:6], stdin=b"x\n")
    assert r.returncode == 1 and b"UnknownTopicOrPartitionError" in r.stderr


@pytest.mark.timeout(120)
def test_consume_exits_non_zero_with_the_reason_when_nothing_can_be_read(broker):
    r = annal("consume", "--bootstrap-server", "127.0.0.1:1", "--topic", "x", "--timeout-ms", "1000")
    assert r.returncode == 1, r.stderr
    assert b"Error: BrokerNotAvailableError" in r.stderr and b"Processed a total of 0 messages" in r.stderr

    bs = ["--bootstrap-server", broker.bootstrap]
    missing = "missing-" + uuid.uuid4().hex[:8]
    r = annal("consume", *bs, "--topic", missing, "--timeout-ms", "1000")
    assert r.returncode == 1, r.stderr
    assert b"Error: UnknownTopicOrPartitionError" in r.stderr and missing.encode() in r.stderr

    topic = "empty-" + uuid.uuid4().hex[:8]
    assert annal("topics", "create", *bs, "--topic", topic).returncode == 0
    r = annal("consume", *bs, "--topic", topic, "--timeout-ms", "1000")
    assert r.returncode == 0, r.stderr  # an empty topic is not an error
    assert b"Processed a total of 0 messages" in r.stderr


@pytest.mark.timeout(60)
def test_sdk_consumer_warns_once_when_the_topic_does_not_exist(broker, caplog):
    import logging

    from annal.client import Consumer

    missing = "missing-" + uuid.uuid4().hex[:8]
    caplog.set_level(logging.WARNING, logger="annal.client.consumer")
    with Consumer(missing, bootstrap_servers=broker.bootstrap) as c:
        for _ in range(4):
            c.poll(timeout_ms=600)
    lines = [r.getMessage() for r in caplog.records if missing in r.getMessage()]
    assert len(lines) == 1 and "does not exist" in lines[0], lines
