"""A consumer group member keeps reading while ZooKeeper is frozen (issue 13).

One broker in cluster mode (4 s session timeout), a topic of two partitions, a group member
(auto-commit every 200 ms) and a plain consumer (``assign``, no group) reading both
partitions, a producer writing numbered records at a steady rate. ZooKeeper is frozen
(SIGSTOP) for 10 s here, 30 s in the slow run; the producer keeps writing during the first
part of the outage.

What must hold:

* the group member reads every record produced during the first part of the outage *before*
  ZooKeeper resumes: auto-commit runs in the background, so ZooKeeper's silence never blocks
  ``poll`` (before, each auto-commit blocked it for ~10 s);
* after the resume (the sessions expired: the member rebalances and resumes at its last
  successful commit) the member reads everything, and the records it got twice are no more
  than those read after the last commit that succeeded before the outage.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from annal.client import Admin, Consumer, NewTopic, Producer, TopicPartition
from harness.zookeeper import ZkCluster, wait_until


class _Reader:
    """A consumer polled from its own thread; ``seen`` holds (time, partition, offset)."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.seen: list[tuple[float, int, int]] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                for tp, recs in self.consumer.poll(timeout_ms=100).items():
                    now = time.monotonic()
                    self.seen.extend((now, r.partition, r.offset) for r in recs)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            self.consumer.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)


def run_outage(zk_cluster: ZkCluster, outage_s: float) -> dict[str, float]:
    zk_cluster.start(1)
    zk_cluster.wait_registered({1})
    topic = "gzo-" + uuid.uuid4().hex[:8]
    bootstrap = zk_cluster.bootstrap
    with Admin(bootstrap_servers=bootstrap) as admin:
        admin.create_topics([NewTopic(topic, 2)])
    member_consumer = Consumer(group_id="g", zookeeper=zk_cluster.hosts, auto_offset_reset="earliest",
                               enable_auto_commit=True, auto_commit_interval_ms=200, fetch_max_wait_ms=100)
    lost_at: list[float] = []

    class _Listener:
        def on_partitions_lost(self, _tps: object) -> None:
            lost_at.append(time.monotonic())

    member_consumer.subscribe([topic], listener=_Listener())
    plain_consumer = Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=100)
    plain_consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
    member, plain = _Reader(member_consumer), _Reader(plain_consumer)
    producer = Producer(bootstrap_servers=bootstrap, linger_ms=1)
    sent: list[tuple[float, object]] = []
    produce_until = [float("inf")]
    stop = threading.Event()

    def produce() -> None:
        i = 0
        while not stop.is_set():
            if time.monotonic() < produce_until[0]:
                sent.append((time.monotonic(), producer.send(topic, b"%09d" % i)))
                i += 1
            time.sleep(0.002)

    producing = threading.Thread(target=produce)
    producing.start()
    try:
        wait_until(lambda: len(member.seen) >= 500 and len(plain.seen) >= 500, 60, "both read 500 records")
        paused_at = time.monotonic()
        produce_until[0] = paused_at + outage_s / 2
        zk_cluster.zk.server.pause()
        try:
            time.sleep(outage_s)  # the fault's length
            resumed_at = time.monotonic()
            member_in_outage = sum(1 for t, _, _ in member.seen if paused_at <= t < resumed_at)
            plain_in_outage = sum(1 for t, _, _ in plain.seen if paused_at <= t < resumed_at)
            sent_in_outage = [f for t, f in sent if paused_at <= t < produce_until[0]]
            acked = {(f.get(30).partition, f.get(30).offset) for f in sent_in_outage}
            member_before_resume = {(p, o) for t, p, o in member.seen if t < resumed_at}
        finally:
            zk_cluster.zk.server.resume()
        produce_until[0] = float("inf")
        missing = acked - member_before_resume
        assert acked and not missing, f"{len(missing)} of {len(acked)} records produced in the outage unread by the group member before the resume"
        # After the resume: more records, the member reads everything.
        marker = len(sent)
        wait_until(lambda: len(sent) >= marker + 200, 60, "200 records after the resume")
    finally:
        stop.set()
        producing.join()
        producer.flush(30)
        producer.close()
    ends = {(f.get(30).partition, f.get(30).offset) for _, f in sent}
    try:
        wait_until(lambda: ends <= {(p, o) for _, p, o in member.seen}, 60, "the member reads everything")
    finally:
        member.close()
        plain.close()
    assert not member.errors and not plain.errors, (member.errors, plain.errors)
    duplicates = len(member.seen) - len({(p, o) for _, p, o in member.seen})
    # Records read twice are those read after the last commit that succeeded before the expiry:
    # no commit succeeds during the freeze, so that is at most what the member read from
    # shortly before the pause (one auto-commit interval and a write) to the moment it lost
    # its partitions (it learns of the expiry only after the resume).
    lost = lost_at[0] if lost_at else time.monotonic()
    read_since_pause = sum(1 for t, _, _ in member.seen if paused_at - 1.0 <= t < lost)
    assert duplicates <= read_since_pause, (duplicates, read_since_pause)
    out = {"member_in_outage": member_in_outage, "plain_in_outage": plain_in_outage,
           "duplicates": duplicates, "read_since_pause": read_since_pause}
    print(f"[group-zk-outage] outage_s={outage_s} " + " ".join(f"{k}={v}" for k, v in out.items()))
    return out


@pytest.mark.timeout(180)
def test_group_member_reads_through_a_10s_zookeeper_freeze(zk_cluster: ZkCluster) -> None:
    run_outage(zk_cluster, 10.0)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_group_member_reads_through_a_30s_zookeeper_freeze(zk_cluster: ZkCluster) -> None:
    run_outage(zk_cluster, 30.0)
