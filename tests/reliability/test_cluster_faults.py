"""A broker of three killed (SIGKILL) during traffic in ZooKeeper cluster mode, then restarted.

Traffic: one acks="all" producer in cluster mode sends numbered keyless records to a topic of
six partitions (two per broker) from a thread; a consumer group of two members consumes and
commits (auto-commit, and commit on revocation) from two more threads. Broker 2 is killed; its
ZooKeeper session expires (4 s session timeout); it is started again later on the same data
dir and ports.

What must hold:

* the producer reroutes: records are acknowledged while broker 2 is down, all of them on
  partitions of brokers 1 and 3;
* the group rebalances: broker 2's partitions leave the members' assignment while it is down
  and come back after, resuming exactly at the offsets committed when they were revoked
  (committed offsets hold);
* nothing acknowledged is lost, broker 2's partitions included: every acknowledged record is
  in its partition at the offset it was acknowledged with (read back with CRC checks);
* every record in the logs is consumed at least once; at the end the committed offsets equal
  the log end offsets.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from annal.zookeeper import paths as zk_paths
from annal.client import Admin, Consumer, FutureRecordMetadata, NewTopic, Producer
from harness.data_port import DataPortClient
from harness.faults import fetch_all, seeded_rng
from harness.zookeeper import ZkCluster, wait_until

GROUP = "reliability"


class _Member:
    """One group member polled from its own thread (a Consumer is not thread-safe, so only that
    thread touches it); what it consumed and its rebalances are read after ``join``."""

    def __init__(self, name: str, topic: str, hosts: str) -> None:
        self.name = name
        self.topic = topic
        self.hosts = hosts
        self.consumed: list[tuple[float, int, int, bytes | None]] = []  # (time, partition, offset, value)
        self.assigned_events: list[tuple[float, frozenset[int]]] = []
        self.revoked_events: list[tuple[float, frozenset[int]]] = []
        self.assignment: frozenset[int] = frozenset()
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"member-{name}")

    def on_partitions_assigned(self, tps) -> None:  # noqa: ANN001
        self.assigned_events.append((time.monotonic(), frozenset(tp.partition for tp in tps)))

    def on_partitions_revoked(self, tps) -> None:  # noqa: ANN001
        self.revoked_events.append((time.monotonic(), frozenset(tp.partition for tp in tps)))

    def _run(self) -> None:
        try:
            c = Consumer(group_id=GROUP, zookeeper=self.hosts, auto_offset_reset="earliest",
                         enable_auto_commit=True, auto_commit_interval_ms=200, fetch_max_wait_ms=200)
            try:
                c.subscribe([self.topic], listener=self)
                while not self.stop.is_set():
                    for tp, recs in c.poll(timeout_ms=100).items():
                        now = time.monotonic()
                        self.consumed.extend((now, r.partition, r.offset, r.value) for r in recs)
                    self.assignment = frozenset(tp.partition for tp in c.assignment())
                c.commit()
            finally:
                c.close()
        except BaseException as e:  # reported by the test
            self.errors.append(e)


@pytest.mark.timeout(180)
def test_broker_killed_during_traffic_producers_reroute_group_rebalances_nothing_acked_lost(zk_cluster: ZkCluster) -> None:
    rng, seed = seeded_rng("cluster-kill")
    zk_cluster.start(1, 2, 3)
    zk_cluster.wait_registered({1, 2, 3})
    topic = "cf-" + uuid.uuid4().hex[:8]
    with Admin(bootstrap_servers=zk_cluster.bootstrap) as admin:
        admin.create_topics([NewTopic(topic, 6)])
    placement = zk_cluster.placement(topic)
    on_2 = {p for p, b in placement.items() if b == 2}
    assert len(on_2) == 2

    members = [_Member(n, topic, zk_cluster.hosts) for n in ("a", "b")]
    for m in members:
        m.thread.start()
    producer = Producer(zookeeper=zk_cluster.hosts, acks="all", linger_ms=2, batch_size=2048,
                        retry_backoff_ms=50, request_timeout_ms=3000, delivery_timeout_ms=120_000)
    futures: list[tuple[float, FutureRecordMetadata]] = []
    stop_sending = threading.Event()

    def send_loop() -> None:
        i = 0
        while not stop_sending.is_set():
            futures.append((time.monotonic(), producer.send(topic, b"%09d" % i)))
            i += 1
            if i % 20 == 0:
                time.sleep(0.004)

    sender = threading.Thread(target=send_loop, name="cluster-sender")
    sender.start()

    def acked() -> int:
        return sum(1 for _, f in list(futures) if f.succeeded())

    def assigned_union() -> frozenset[int]:
        return frozenset().union(*(m.assignment for m in members))

    try:
        wait_until(lambda: acked() >= 2000, 60, "2000 records acknowledged before the kill")
        wait_until(lambda: assigned_union() == frozenset(range(6)), 60, "the group owns all six partitions")
        time.sleep(rng.uniform(0.0, 1.0))  # a random moment in the traffic
        zk_cluster.brokers[2].kill()
        killed_at = time.monotonic()
        zk_cluster.wait_registered({1, 3}, timeout_s=30)
        # The group rebalances: broker 2's partitions leave the assignment.
        wait_until(lambda: assigned_union() == frozenset(range(6)) - on_2, 30,
                   "the group drops broker 2's partitions")
        committed_at_revoke = {p: _committed(zk_cluster, topic, p) for p in on_2}
        # The producer reroutes: records sent now are acknowledged, on brokers 1 and 3.
        marker = len(futures)
        wait_until(lambda: sum(1 for _, f in futures[marker:] if f.succeeded()) >= 1000, 60,
                   "1000 records acknowledged while broker 2 is down")
        down_partitions = {f.get(0).partition for _, f in futures[marker:] if f.succeeded()}
        assert down_partitions and not down_partitions & on_2, down_partitions
        zk_cluster.brokers[2].start()
        restarted_at = time.monotonic()
        zk_cluster.wait_registered({1, 2, 3}, timeout_s=30)
        wait_until(lambda: assigned_union() == frozenset(range(6)), 60, "the group takes broker 2's partitions back")
        marker = len(futures)
        wait_until(lambda: sum(1 for _, f in futures[marker:] if f.succeeded()) >= 1000, 60,
                   "1000 more records acknowledged after the restart")
    finally:
        stop_sending.set()
        sender.join()
        producer.flush(timeout=120)
        producer.close(timeout=30)

    # Let the group catch up with the logs, then stop it.
    ends = {p: _end_offset(zk_cluster.brokers[placement[p]], topic, p) for p in range(6)}
    try:
        wait_until(lambda: all(_committed(zk_cluster, topic, p) == ends[p] for p in range(6)), 60,
                   "the group commits every log end offset")
    except BaseException:
        print("ends", ends, "committed", {p: _committed(zk_cluster, topic, p) for p in range(6)},
              "assignments", [m.assignment for m in members], "errors", [m.errors for m in members])
        raise
    finally:
        for m in members:
            m.stop.set()
        for m in members:
            m.thread.join(60)
    for m in members:
        assert not m.errors, m.errors

    # Nothing acknowledged is lost, broker 2's partitions included.
    logs = {p: fetch_all(zk_cluster.brokers[placement[p]].fetch_address, topic, p) for p in range(6)}
    values = {p: log.values for p, log in logs.items()}
    sent = len(futures)
    n_acked = failed = 0
    for i, (_, f) in enumerate(futures):
        assert f.is_done()
        if f.failed():
            failed += 1
            continue
        n_acked += 1
        md = f.get(0)
        assert values[md.partition][md.offset] == b"%09d" % i, (i, md)
    # Every record in the logs consumed at least once; committed offsets hold.
    consumed = [c for m in members for c in m.consumed]
    seen = {(p, o) for _, p, o, _ in consumed}
    for p in range(6):
        assert {(p, o) for o in range(len(values[p]))} <= seen, f"partition {p}: records never consumed"
        assert _committed(zk_cluster, topic, p) == len(values[p])
    for p in on_2:
        after = [o for t, pp, o, _ in consumed if pp == p and t > restarted_at]
        if after:
            assert min(after) == committed_at_revoke[p], (p, min(after), committed_at_revoke[p])
    duplicates = len(consumed) - len(seen)
    rebalances = sum(len(m.assigned_events) + len(m.revoked_events) for m in members)
    print(f"[cluster-kill] seed={seed} sent={sent} acknowledged={n_acked} failed={failed} acknowledged_lost=0 "
          f"log_records={sum(len(v) for v in values.values())} consumed={len(consumed)} "
          f"consumed_twice={duplicates} rebalance_callbacks={rebalances} "
          f"committed_at_revoke={committed_at_revoke} down_for_s={restarted_at - killed_at:.1f}")


def _committed(zk_cluster: ZkCluster, topic: str, partition: int) -> int | None:
    """The group's committed offset as stored in ZooKeeper (None if never committed)."""
    path = zk_paths.group_offset_path(GROUP, topic, partition)
    if zk_cluster.client().exists(path) is None:
        return None
    data, _ = zk_cluster.client().get(path)
    return int(data.decode())


def _end_offset(broker, topic: str, partition: int) -> int:  # noqa: ANN001
    """The partition's log end offset, asked of the broker that holds it."""
    with DataPortClient(*broker.fetch_address) as c:
        part = c.fetch([(topic, partition, 0, 1)]).partitions[0]
    assert part.error_code == 0, part
    return part.high_watermark
