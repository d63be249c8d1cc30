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


def test_replicated_topic_placement_state_and_identical_replicas(zk_cluster: ZkCluster, capsys: Any) -> None:
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
    # Kafka's describe shape.
    from annal.client.console import topics as topics_cli

    capsys.readouterr()
    assert topics_cli.main(["describe", "--bootstrap-server", zk_cluster.bootstrap.split(",")[0], "--topic", "rep"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Topic: rep\tPartitionCount: 3\tReplicationFactor: 3\tConfigs: ")
    for p, line in enumerate(lines[1:]):
        r = ",".join(map(str, replicas[p]))
        assert f"\tPartition: {p}\tLeader: {replicas[p][0]}\tReplicas: {r}\tIsr: " in line
        assert sorted(line.split("Isr: ")[1].split()[0].split(",")) == ["1", "2", "3"]

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


class _Load:
    """An acks=all producer writing unique values to every partition, and a consumer reading
    them, both in threads, while brokers are bounced."""

    def __init__(self, zk_cluster: ZkCluster, topic: str, partitions: int) -> None:
        self.topic = topic
        self.partitions = partitions
        self.stop = threading.Event()
        self.acked: set[bytes] = set()
        self.failed = 0
        self.errors: list[BaseException] = []
        self.consumed: set[bytes] = set()
        self.producer = Producer(bootstrap_servers=zk_cluster.bootstrap, acks="all", linger_ms=2,
                                 delivery_timeout_ms=60000, request_timeout_ms=10000, retry_backoff_ms=100)
        self.consumer = Consumer(bootstrap_servers=zk_cluster.bootstrap, auto_offset_reset="earliest")
        self.consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._produce, daemon=True),
                         threading.Thread(target=self._consume, daemon=True)]
        self._consume_stop = threading.Event()
        for t in self._threads:
            t.start()

    def _acked(self, value: bytes, _meta: Any) -> None:
        with self._lock:
            self.acked.add(value)

    def _failed(self, _exc: Any) -> None:
        with self._lock:
            self.failed += 1

    def _produce(self) -> None:
        i = 0
        try:
            while not self.stop.is_set():
                value = b"r%07d" % i
                fut = self.producer.send(self.topic, value, partition=i % self.partitions)
                fut.add_callback(self._acked, value)
                fut.add_errback(self._failed)
                i += 1
                if i % 50 == 0:
                    time.sleep(0.01)
            self.producer.flush(90)
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)

    def _consume(self) -> None:
        try:
            while not self._consume_stop.is_set():
                batch = self.consumer.poll(timeout_ms=200)
                for records in batch.values():
                    for r in records:
                        self.consumed.add(r.value)
        except BaseException as exc:
            self.errors.append(exc)

    def acked_count(self) -> int:
        with self._lock:
            return len(self.acked)

    def finish(self, timeout_s: float = 90) -> None:
        self.stop.set()
        self._threads[0].join(timeout_s)
        wait_until(lambda: self.acked <= self.consumed, timeout_s, "the consumer has every acknowledged record")
        self._consume_stop.set()
        self._threads[1].join(10)
        self.producer.close()
        self.consumer.close()


def _wait_all_in_sync(zk_cluster: ZkCluster, topic: str, partitions: int, timeout_s: float = 60) -> None:
    for p in range(partitions):
        _wait_isr(zk_cluster, topic, p, len(zk_cluster.brokers), timeout_s)


def _bounce_leaders(zk_cluster: ZkCluster, load: _Load, bounces: int, partition: int = 0) -> None:
    topic = load.topic
    for n in range(bounces):
        _wait_all_in_sync(zk_cluster, topic, load.partitions)
        before = _state(zk_cluster, topic, partition)
        victim = zk_cluster.brokers[before.leader]
        acked = load.acked_count()
        wait_until(lambda: load.acked_count() > acked + 50, 60, "acknowledged writes before the bounce")
        victim.kill()
        wait_until(lambda: _state(zk_cluster, topic, partition).leader not in (-1, before.leader), 60,
                   f"a new leader for {topic}-{partition} (bounce {n + 1})")
        acked = load.acked_count()
        wait_until(lambda: load.acked_count() > acked + 50, 60, "acknowledged writes to the new leader")
        victim.start()


def _assert_replicas_identical(zk_cluster: ZkCluster, topic: str, partitions: int) -> None:
    for b in zk_cluster.brokers.values():
        b.stop()
    from annal.broker.storage import PartitionLog

    for p in range(partitions):
        ends = []
        for b in zk_cluster.brokers.values():
            plog = PartitionLog.open(str(b.data_dir / f"{topic}-{p}"))
            ends.append(plog.log_end_offset)
            plog.close()
        end = min(ends)
        copies = [_log_bytes(b.data_dir, topic, p, end) for b in zk_cluster.brokers.values()]
        assert copies[0] and all(c == copies[0] for c in copies), f"replicas of {topic}-{p} differ below {end}"


def test_leader_sigkill_bounces_lose_no_acknowledged_record(zk_cluster: ZkCluster) -> None:
    zk_cluster.start(1, 2, 3)
    zk_cluster.wait_registered({1, 2, 3})
    _create(zk_cluster, "bounce", 3, 3, min_insync_replicas=2)
    load = _Load(zk_cluster, "bounce", 3)
    try:
        _bounce_leaders(zk_cluster, load, bounces=3)
        _wait_all_in_sync(zk_cluster, "bounce", 3)
    finally:
        load.finish()
    lost = load.acked - load.consumed
    print(f"\nreplication bounces: 3 hard bounces, {len(load.acked)} records acknowledged, "
          f"{load.failed} failed (not acknowledged), {len(lost)} acknowledged records lost")
    assert not load.errors, load.errors
    assert load.acked, "nothing was acknowledged"
    assert not lost, f"{len(lost)} acknowledged record(s) lost, e.g. {sorted(lost)[:5]}"
    _wait_all_in_sync(zk_cluster, "bounce", 3)
    _assert_replicas_identical(zk_cluster, "bounce", 3)


def test_zombie_leader_is_fenced_and_truncates_its_tail(zk_cluster: ZkCluster) -> None:
    from harness.batches import make_batch
    from harness.data_port import DataPortClient

    zk_cluster.start(1, 2, 3)
    zk_cluster.wait_registered({1, 2, 3})
    _create(zk_cluster, "zombie", 1, 3, min_insync_replicas=2)
    # A request to the stopped leader waits request_timeout_ms before the producer retries
    # elsewhere (as Kafka's does).
    producer = Producer(bootstrap_servers=zk_cluster.bootstrap, acks="all", linger_ms=1, delivery_timeout_ms=90000,
                        request_timeout_ms=5000)
    try:
        for i in range(100):
            producer.send("zombie", b"before%d" % i, partition=0)
        producer.flush(30)
        old = _state(zk_cluster, "zombie", 0)
        zombie = zk_cluster.brokers[old.leader]
        client = DataPortClient(*zombie.fetch_address)
        os.kill(zombie.pid, signal.SIGSTOP)
        try:
            # Past the session timeout the controller elects another ISR member.
            wait_until(lambda: _state(zk_cluster, "zombie", 0).leader not in (-1, old.leader), 60,
                       "a new leader while the old one is stopped")
            futures = [producer.send("zombie", b"after%d" % i, partition=0) for i in range(100)]
            producer.flush(60)
            assert all(f.get(5).offset >= 0 for f in futures)
            # Queued in the zombie's socket: handled the moment it resumes, before it has
            # heard from ZooKeeper.
            cid = client.send_produce([("zombie", 0, make_batch(5, prefix=b"zombie"))], acks=-1, timeout_ms=15000)
        finally:
            os.kill(zombie.pid, signal.SIGCONT)
        resp = client.recv_produce(cid)
        client.close()
        (part,) = resp.partitions
        assert part.error_code != 0, "a fenced leader acknowledged an acks=all write"
        wait_until(lambda: old.leader in _state(zk_cluster, "zombie", 0).isr, 60, "the old leader back in the ISR")
    finally:
        producer.close()
    consumer = Consumer(bootstrap_servers=zk_cluster.bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=3000)
    try:
        consumer.assign([TopicPartition("zombie", 0)])
        values = [r.value for r in consumer]
    finally:
        consumer.close()
    assert sum(1 for v in values if v.startswith(b"before")) == 100
    assert sum(1 for v in values if v.startswith(b"after")) == 100
    assert not [v for v in values if v.startswith(b"zombie")]
    _wait_all_in_sync(zk_cluster, "zombie", 1)
    _assert_replicas_identical(zk_cluster, "zombie", 1)


def test_follower_without_its_partition_directory_recovers_by_fetching(zk_cluster: ZkCluster) -> None:
    import shutil

    zk_cluster.start(1, 2, 3)
    zk_cluster.wait_registered({1, 2, 3})
    _create(zk_cluster, "disk", 1, 3, min_insync_replicas=2)
    producer = Producer(bootstrap_servers=zk_cluster.bootstrap, acks="all", linger_ms=1)
    try:
        for i in range(2000):
            producer.send("disk", b"d%d" % i, partition=0)
        producer.flush(30)
        leader = _state(zk_cluster, "disk", 0).leader
        follower = zk_cluster.brokers[next(b for b in (1, 2, 3) if b != leader)]
        follower.kill()
        shutil.rmtree(follower.data_dir / "disk-0")
        follower.start()
        for i in range(2000, 2500):
            producer.send("disk", b"d%d" % i, partition=0)
        producer.flush(30)
    finally:
        producer.close()
    _wait_all_in_sync(zk_cluster, "disk", 1)
    _assert_replicas_identical(zk_cluster, "disk", 1)


def test_controlled_shutdown_moves_leadership_with_only_retriable_errors(zk_cluster: ZkCluster) -> None:
    zk_cluster.start(1, 2, 3)
    zk_cluster.wait_registered({1, 2, 3})
    _create(zk_cluster, "clean", 3, 3, min_insync_replicas=2)
    load = _Load(zk_cluster, "clean", 3)
    try:
        _wait_all_in_sync(zk_cluster, "clean", 3)
        acked = load.acked_count()
        wait_until(lambda: load.acked_count() > acked + 100, 60, "acknowledged writes")
        before = _state(zk_cluster, "clean", 0)
        victim = zk_cluster.brokers[before.leader]
        assert victim.stop() == 0
        after = _state(zk_cluster, "clean", 0)
        # Leadership moved before the broker left (not after its session expired).
        assert after.leader not in (-1, before.leader) and after.leader_epoch == before.leader_epoch + 1
        acked = load.acked_count()
        wait_until(lambda: load.acked_count() > acked + 100, 60, "acknowledged writes to the new leader")
        victim.start()
        _wait_all_in_sync(zk_cluster, "clean", 3)
    finally:
        load.finish()
    assert not load.errors, load.errors
    assert load.failed == 0, f"{load.failed} record(s) failed during a controlled shutdown"
    assert not load.acked - load.consumed


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_twenty_leader_sigkill_bounces_lose_no_acknowledged_record(zk_cluster: ZkCluster) -> None:
    """Kafka's replication_test bar: >= 20 hard bounces of a partition's leader under an
    acks=all load with min ISR 2; every acknowledged record is consumed and the replicas are
    identical below the high watermark. The counts are printed for docs/reliability.md."""
    zk_cluster.start(1, 2, 3)
    zk_cluster.wait_registered({1, 2, 3})
    _create(zk_cluster, "bounce20", 3, 3, min_insync_replicas=2)
    load = _Load(zk_cluster, "bounce20", 3)
    bounces = int(os.environ.get("ANNAL_BOUNCES", "20"))
    try:
        _bounce_leaders(zk_cluster, load, bounces=bounces)
        _wait_all_in_sync(zk_cluster, "bounce20", 3)
    finally:
        load.finish(timeout_s=180)
    lost = load.acked - load.consumed
    print(f"\nreplication bounces: {bounces} hard bounces, {len(load.acked)} records acknowledged, "
          f"{load.failed} failed (not acknowledged), {len(lost)} acknowledged records lost")
    assert not load.errors, load.errors
    assert not lost, f"{len(lost)} acknowledged record(s) lost, e.g. {sorted(lost)[:5]}"
    _wait_all_in_sync(zk_cluster, "bounce20", 3)
    _assert_replicas_identical(zk_cluster, "bounce20", 3)


def test_lagging_followers_leave_the_isr_and_min_insync_replicas_refuses_acks_all(zk_cluster: ZkCluster) -> None:
    from annal.errors import NotEnoughReplicasError
    from harness.batches import make_batch
    from harness.data_port import DataPortClient

    # Followers paused for longer than the lag time but well within the session timeout:
    # the leader, not the controller, takes them out of the ISR.
    zk_cluster.session_timeout_ms = 30000
    for i in (1, 2, 3):
        b = zk_cluster._factory(f"broker{i}", start=False, broker_id=i,
                                config={"replica_lag_time_max_ms": 1000},
                                extra_args=["--zookeeper", zk_cluster.zk.hosts,
                                            "--zookeeper-session-timeout-ms", "30000"])
        zk_cluster.brokers[i] = b
        b.start()
    zk_cluster.wait_registered({1, 2, 3})
    _create(zk_cluster, "lag", 1, 3, min_insync_replicas=2)
    leader_id = _state(zk_cluster, "lag", 0).leader
    leader = zk_cluster.brokers[leader_id]
    a, b = (zk_cluster.brokers[i] for i in (1, 2, 3) if i != leader_id)
    client = DataPortClient(*leader.fetch_address)
    try:
        (ok,) = client.produce([("lag", 0, make_batch(3))], acks=-1).partitions
        assert ok.error_code == 0
        os.kill(a.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: len(_state(zk_cluster, "lag", 0).isr) == 2, 30, "the ISR without the paused follower")
            (ok,) = client.produce([("lag", 0, make_batch(3))], acks=-1).partitions
            assert ok.error_code == 0  # two in sync: enough
            os.kill(b.pid, signal.SIGSTOP)
            try:
                wait_until(lambda: _state(zk_cluster, "lag", 0).isr == (leader_id,), 30, "the leader alone in the ISR")
                before = _state(zk_cluster, "lag", 0)
                (refused,) = client.produce([("lag", 0, make_batch(3))], acks=-1).partitions
                assert refused.error_code == NotEnoughReplicasError.code
                (one,) = client.produce([("lag", 0, make_batch(3))], acks=1).partitions
                assert one.error_code == 0  # acks=1 does not need the ISR
                assert _state(zk_cluster, "lag", 0).leader_epoch == before.leader_epoch
            finally:
                os.kill(b.pid, signal.SIGCONT)
        finally:
            os.kill(a.pid, signal.SIGCONT)
        wait_until(lambda: len(_state(zk_cluster, "lag", 0).isr) == 3, 30, "both followers back in the ISR")
        (ok,) = client.produce([("lag", 0, make_batch(3))], acks=-1).partitions
        assert ok.error_code == 0
    finally:
        client.close()
    _assert_replicas_identical(zk_cluster, "lag", 1)
