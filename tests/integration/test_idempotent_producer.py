"""Annal's SDK producer with ``enable_idempotence=True`` against real brokers: the connection
is cut after the broker wrote a batch and before the producer read the answer, and the retry
is written once (a plain producer writes it twice, the control); the same with the broker
SIGKILLed or stopped between the write and the retry; a producer whose sequence the leader
cannot continue (its topic was re-created) fails that batch, bumps its epoch and goes on; with
replication, the retry reaches a new leader after the old one was SIGKILLed and is still
written once."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from annal.client import _connection
from annal.client.admin import Admin
from annal.client.consumer import Consumer
from annal.client.producer import Producer
from annal.client.structs import NewTopic, TopicPartition
from annal.errors import LocalUsageError, OutOfOrderSequenceNumberError
from harness.broker import BrokerProcess
from harness.zookeeper import ZkCluster, wait_until

pytestmark = pytest.mark.timeout(180)


class AnswerCutter:
    """Cuts the producer's data-port connection once an answer to a PRODUCE has arrived
    (the broker wrote the batch) and before the producer reads it: the answer is lost. Then
    runs ``then`` (in the producer's sender thread, so nothing is retried before it ends)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.armed = False
        self.cuts = 0
        self.done = False  # ``then`` has returned
        self.then: Callable[[], None] | None = None
        orig = _connection.DataConnection.receive
        cutter = self

        def receive(conn: Any) -> Any:
            if cutter.armed and conn.in_flight and conn.sock is not None:
                cutter.armed = False
                cutter.cuts += 1
                conn.sock.setblocking(False)
                try:
                    conn.sock.recv(1 << 20)  # the answer: read and dropped
                except BlockingIOError:
                    pass
                conn.close()
                if cutter.then is not None:
                    cutter.then()
                cutter.done = True
            return orig(conn)

        monkeypatch.setattr(_connection.DataConnection, "receive", receive)

    def arm(self, then: Callable[[], None] | None = None) -> None:
        self.then = then
        self.armed = True


def _values(bootstrap: str, topic: str, partitions: int = 1) -> list[bytes]:
    out: list[bytes] = []
    with Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=3000) as c:
        c.assign([TopicPartition(topic, p) for p in range(partitions)])
        for r in c:
            out.append(r.value)
    return out


def _end(bootstrap: str, topic: str) -> int:
    with Admin(bootstrap_servers=bootstrap) as admin:
        [t] = admin.describe_topics([topic])
    return int(t.partitions[0].log_end_offset)


@pytest.mark.parametrize("idempotent", [True, False], ids=["idempotent", "plain-control"])
def test_a_retry_after_a_lost_answer_is_written_once(broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch,
                                                      idempotent: bool) -> None:
    with Admin(bootstrap_servers=broker.bootstrap) as admin:
        admin.create_topics([NewTopic("idem", 1)])
    cutter = AnswerCutter(monkeypatch)
    with Producer(broker.bootstrap, acks="all", enable_idempotence=idempotent, linger_ms=0) as p:
        offsets = [p.send("idem", b"r-%d" % i).get(30).offset for i in range(3)]
        cutter.arm()
        offsets.append(p.send("idem", b"r-3").get(30).offset)
        offsets += [p.send("idem", b"r-%d" % i).get(30).offset for i in range(4, 6)]
    assert cutter.cuts == 1
    got = _values(broker.bootstrap, "idem")
    if idempotent:
        assert offsets == [0, 1, 2, 3, 4, 5]
        assert got == [b"r-%d" % i for i in range(6)]
        assert "duplicate batch of producer" in broker.log_text()
    else:
        # Without idempotence the retry is a second copy: what idempotence exists to prevent.
        assert got == [b"r-0", b"r-1", b"r-2", b"r-3", b"r-3", b"r-4", b"r-5"]
        assert offsets == [0, 1, 2, 4, 5, 6]


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_the_dedup_holds_when_the_broker_restarts_between_the_write_and_the_retry(
        broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    with Admin(bootstrap_servers=broker.bootstrap) as admin:
        admin.create_topics([NewTopic("idem", 1)])
    cutter = AnswerCutter(monkeypatch)
    with Producer(broker.bootstrap, acks="all", enable_idempotence=True, linger_ms=0,
                  retry_backoff_ms=200, delivery_timeout_ms=120000) as p:
        for i in range(5):
            p.send("idem", b"r-%d" % i).get(30)
        # The broker goes down after writing r-5 (acks=all: fsynced) and before its answer is read.
        cutter.arm(then=broker.kill if how == "sigkill" else broker.stop)
        fut = p.send("idem", b"r-5")
        wait_until(lambda: cutter.done and not broker.running, 30, "answer cut, broker down")
        broker.start()
        assert fut.get(60).offset == 5
        p.send("idem", b"r-6").get(30)
    assert _values(broker.bootstrap, "idem") == [b"r-%d" % i for i in range(7)]
    log = broker.log_text()
    assert "duplicate batch of producer" in log
    if how == "sigterm":
        assert "loaded from producer-snapshot" in log


def test_a_sequence_the_leader_cannot_continue_fails_one_batch_then_a_new_epoch_goes_on(
        broker: BrokerProcess) -> None:
    with Admin(bootstrap_servers=broker.bootstrap) as admin:
        admin.create_topics([NewTopic("reborn", 1)])
    with Producer(broker.bootstrap, enable_idempotence=True, linger_ms=0, retry_backoff_ms=100,
                  delivery_timeout_ms=20000) as p:
        for i in range(3):
            p.send("reborn", b"old-%d" % i).get(30)
        with Admin(bootstrap_servers=broker.bootstrap) as admin:
            admin.delete_topics(["reborn"])
            wait_until(lambda: "reborn" not in admin.list_topics(), 20, "topic deleted")
            admin.create_topics([NewTopic("reborn", 1)])
        # The new log does not know this producer at sequence 3.
        with pytest.raises(OutOfOrderSequenceNumberError):
            p.send("reborn", b"lost").get(30)
        assert p.send("reborn", b"new-0").get(30).offset == 0
        assert p.send("reborn", b"new-1").get(30).offset == 1
    assert _values(broker.bootstrap, "reborn") == [b"new-0", b"new-1"]


def test_idempotence_needs_acks_all_and_retries() -> None:
    with pytest.raises(LocalUsageError, match="acks='all'"):
        Producer("127.0.0.1:1", enable_idempotence=True, acks=1)
    with pytest.raises(LocalUsageError, match="retries"):
        Producer("127.0.0.1:1", enable_idempotence=True, retries=0)


@pytest.mark.timeout(240)
def test_a_retry_that_reaches_a_new_leader_is_written_once(zk_cluster: ZkCluster,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    zk_cluster.start(1, 2, 3)
    zk_cluster.wait_registered({1, 2, 3})
    with Admin(bootstrap_servers=zk_cluster.bootstrap) as admin:
        admin.create_topics([NewTopic("rep-idem", 1, {"min_insync_replicas": 2}, 3)])

        def full_isr() -> bool:
            [t] = admin.describe_topics(["rep-idem"])
            return len(t.partitions[0].isr) == 3

        wait_until(full_isr, 60, "ISR of 3")
        [t] = admin.describe_topics(["rep-idem"])
        leader = t.partitions[0].leader
    cutter = AnswerCutter(monkeypatch)
    victim = zk_cluster.brokers[leader]
    with Producer(zk_cluster.bootstrap, enable_idempotence=True, linger_ms=0, retry_backoff_ms=200,
                  delivery_timeout_ms=120000) as p:
        for i in range(5):
            p.send("rep-idem", b"r-%d" % i).get(30)
        # acks=all: the answer comes once every in-sync replica has r-5; the leader then dies.
        cutter.arm(then=victim.kill)
        assert p.send("rep-idem", b"r-5").get(90).offset == 5
        p.send("rep-idem", b"r-6").get(30)
    assert cutter.cuts == 1
    survivor = next(b for i, b in zk_cluster.brokers.items() if i != leader)
    assert _values(survivor.bootstrap, "rep-idem") == [b"r-%d" % i for i in range(7)]
    new_leader = next(b for b in zk_cluster.brokers.values() if b.running and "duplicate batch of producer" in b.log_text())
    assert new_leader is not victim
