"""Consumer groups in ZooKeeper: rebalancing on join, leave, SIGKILL of a member and broker
changes; one owner per partition; offsets committed to ZooKeeper and resumed (at-least-once);
the rebalance listener committing before a partition moves; coalesced commits."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterable

import pytest

from annal.zookeeper import paths
from annal.errors import GroupError, LocalUsageError
from annal.client._group import ConsumerRebalanceListener
from annal.client.admin import Admin
from annal.client.consumer import Consumer
from annal.client.producer import Producer
from annal.client.structs import NewTopic, TopicPartition
from harness.zookeeper import ZkCluster, wait_until

pytestmark = pytest.mark.timeout(150)

REPO_ROOT = Path(__file__).resolve().parents[2]
TOPIC = "events"


def _setup(zk_cluster: ZkCluster, brokers: Iterable[int] = (1, 2), partitions: int = 6, records_per_partition: int = 0) -> None:
    ids = set(brokers)
    zk_cluster.start(*ids)
    zk_cluster.wait_registered(ids)
    with Admin(bootstrap_servers=zk_cluster.bootstrap) as admin:
        admin.create_topics([NewTopic(TOPIC, partitions)])
    if records_per_partition:
        with Producer(zookeeper=zk_cluster.hosts, linger_ms=5) as p:
            for i in range(records_per_partition):
                for part in range(partitions):
                    p.send(TOPIC, b"%d-%d" % (part, i), partition=part)
            p.flush(60)


def _consumer(zk_cluster: ZkCluster, **kw: object) -> Consumer:
    kw.setdefault("auto_offset_reset", "earliest")
    return Consumer(TOPIC, group_id="g", zookeeper=zk_cluster.hosts, **kw)  # type: ignore[arg-type]


def _poll_until(consumers: list[Consumer], predicate, timeout_s: float = 30.0, sink: dict | None = None) -> None:  # type: ignore[no-untyped-def,type-arg]
    deadline = time.monotonic() + timeout_s
    while True:
        for c in consumers:
            for tp, recs in c.poll(50).items():
                if sink is not None:
                    sink.setdefault(id(c), []).extend((tp.partition, r.offset) for r in recs)
        if predicate():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"condition not reached; assignments: {[sorted(c.assignment()) for c in consumers]}")


def _owners(zk_cluster: ZkCluster) -> dict[int, str]:
    client = zk_cluster.client()
    out = {}
    base = paths.group_owners_path("g", TOPIC)
    if client.exists(base) is None:
        return out
    for child in client.get_children(base):
        out[int(child)] = client.get(f"{base}/{child}")[0].decode()
    return out


def test_group_rebalances_on_join_and_leave(zk_cluster: ZkCluster) -> None:
    _setup(zk_cluster)
    all_tps = {TopicPartition(TOPIC, p) for p in range(6)}
    c1 = _consumer(zk_cluster)
    c2 = _consumer(zk_cluster)
    c3 = None
    try:
        _poll_until([c1], lambda: c1.assignment() == all_tps)
        _poll_until([c1, c2], lambda: len(c1.assignment()) == 3 and len(c2.assignment()) == 3)
        assert c1.assignment() | c2.assignment() == all_tps
        # Range assignment: each member gets a contiguous range.
        for c in (c1, c2):
            ps = sorted(tp.partition for tp in c.assignment())
            assert ps == list(range(ps[0], ps[0] + 3))
        c3 = _consumer(zk_cluster)
        _poll_until([c1, c2, c3], lambda: [len(c.assignment()) for c in (c1, c2, c3)] == [2, 2, 2])
        assert c1.assignment() | c2.assignment() | c3.assignment() == all_tps
        # Each partition has exactly one owner claim, held by the member fetching it.
        owners = _owners(zk_cluster)
        assert set(owners) == set(range(6))
        c2.close()
        _poll_until([c1, c3], lambda: len(c1.assignment()) == 3 and len(c3.assignment()) == 3)
        assert c1.assignment() | c3.assignment() == all_tps
    finally:
        for c in (c1, c2, c3):
            if c is not None:
                c.close()


def test_partitions_of_a_dead_broker_leave_the_assignment_and_come_back(zk_cluster: ZkCluster) -> None:
    _setup(zk_cluster)
    placement = zk_cluster.placement(TOPIC)
    on_2 = {TopicPartition(TOPIC, p) for p, b in placement.items() if b == 2}
    c1 = _consumer(zk_cluster)
    try:
        _poll_until([c1], lambda: len(c1.assignment()) == 6)
        zk_cluster.brokers[2].kill()
        _poll_until([c1], lambda: c1.assignment() == {TopicPartition(TOPIC, p) for p in range(6)} - on_2, timeout_s=30)
        zk_cluster.brokers[2].start()
        _poll_until([c1], lambda: len(c1.assignment()) == 6, timeout_s=30)
    finally:
        c1.close()


class _CommitOnRevoke(ConsumerRebalanceListener):
    def __init__(self) -> None:
        self.consumer: Consumer | None = None
        self.revoked: list[TopicPartition] = []
        self.assigned: list[TopicPartition] = []

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.revoked.extend(revoked)
        assert self.consumer is not None
        self.consumer.commit({tp: self.consumer.position(tp) for tp in revoked})

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.assigned.extend(assigned)


def test_listener_commits_before_partitions_move_so_nothing_is_read_twice(zk_cluster: ZkCluster) -> None:
    _setup(zk_cluster, records_per_partition=50)
    listener = _CommitOnRevoke()
    c1 = Consumer(group_id="g", zookeeper=zk_cluster.hosts, auto_offset_reset="earliest", enable_auto_commit=False)
    listener.consumer = c1
    c1.subscribe([TOPIC], listener=listener)
    seen: dict = {}  # type: ignore[type-arg]
    c2 = None
    try:
        _poll_until([c1], lambda: len(c1.assignment()) == 6, sink=seen)
        assert sorted(listener.assigned) == sorted(TopicPartition(TOPIC, p) for p in range(6))
        # c1 reads some or all of every partition, without committing.
        _poll_until([c1], lambda: len(seen.get(id(c1), [])) >= 120, sink=seen)
        c2 = Consumer(TOPIC, group_id="g", zookeeper=zk_cluster.hosts, auto_offset_reset="earliest", enable_auto_commit=False)
        _poll_until([c1, c2], lambda: len(c1.assignment()) == 3 and len(c2.assignment()) == 3, sink=seen)
        assert len(listener.revoked) == 3
        # Drain everything; no record is read twice because c1 committed on revoke.
        _poll_until([c1, c2], lambda: sum(len(v) for v in seen.values()) >= 300, sink=seen)
        records = [r for v in seen.values() for r in v]
        assert len(records) == len(set(records)) == 300
    finally:
        c1.close()
        if c2 is not None:
            c2.close()


def test_commit_committed_and_coalesced_writes(zk_cluster: ZkCluster) -> None:
    _setup(zk_cluster, brokers=(1,), partitions=2, records_per_partition=10)
    tp0, tp1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    c = _consumer(zk_cluster, enable_auto_commit=False)
    other = Consumer(zookeeper=zk_cluster.hosts, auto_offset_reset="earliest", bootstrap_servers=zk_cluster.bootstrap)
    try:
        _poll_until([c], lambda: len(c.assignment()) == 2)
        assert c.committed(tp0) is None
        c.commit({tp0: 4, tp1: 7})
        assert (c.committed(tp0), c.committed(tp1)) == (4, 7)
        client = zk_cluster.client()
        path = paths.group_offset_path("g", TOPIC, 0)
        version = client.get(path)[1].version
        c.commit({tp0: 4, tp1: 7})  # unchanged: no write
        assert client.get(path)[1].version == version
        c.commit({tp0: 5})
        assert client.get(path)[1].version == version + 1 and c.committed(tp0) == 5
        with pytest.raises(GroupError):
            c.commit({TopicPartition(TOPIC, 9): 1})
        with pytest.raises(LocalUsageError):
            other.commit()  # no group
    finally:
        c.close()
        other.close()
    # A new member resumes at the committed offsets.
    c = _consumer(zk_cluster, enable_auto_commit=False)
    try:
        firsts: dict[int, int] = {}

        def got_both() -> bool:
            return len(firsts) == 2

        deadline = time.monotonic() + 30
        while not got_both() and time.monotonic() < deadline:
            for tp, recs in c.poll(100).items():
                firsts.setdefault(tp.partition, recs[0].offset)
        assert firsts == {0: 5, 1: 7}
    finally:
        c.close()


def test_auto_commit_writes_at_most_once_per_interval(zk_cluster: ZkCluster) -> None:
    _setup(zk_cluster, brokers=(1,), partitions=1, records_per_partition=200)
    c = _consumer(zk_cluster, enable_auto_commit=True, auto_commit_interval_ms=500, max_poll_records=5)
    client = zk_cluster.client()
    path = paths.group_offset_path("g", TOPIC, 0)
    try:
        started = time.monotonic()
        consumed = polls = 0
        # Keep polling well past the end of the data: idle auto-commits must not write.
        while time.monotonic() - started < 2.5 or consumed < 200:
            consumed += sum(len(v) for v in c.poll(10).values())
            polls += 1
            assert time.monotonic() - started < 60, "did not consume the topic"
        elapsed = time.monotonic() - started
        writes = client.get(path)[1].version + 1  # created once, then set
        assert polls >= 40
        assert 1 <= writes <= elapsed / 0.5 + 1
        settled = client.get(path)[1].version
        end = time.monotonic() + 1.2
        while time.monotonic() < end:
            c.poll(10)
        assert client.get(path)[1].version == settled  # nothing changed, nothing written
    finally:
        c.close()  # commits the final position
    assert paths.decode_offset(client.get(path)[0]) == 200


_MEMBER = textwrap.dedent(
    """
    import sys, time
    from annal.client.consumer import Consumer
    c = Consumer(sys.argv[2], group_id="g", zookeeper=sys.argv[1], auto_offset_reset="earliest",
                 enable_auto_commit=False, max_poll_records=5)
    while True:
        batch = c.poll(100)
        for tp, recs in batch.items():
            for r in recs:
                print("rec", tp.partition, r.offset, flush=True)
        if batch:
            c.commit()
        print("assigned", ",".join(str(tp.partition) for tp in sorted(c.assignment())), flush=True)
        time.sleep(0.05)
    """
)


def test_sigkill_of_a_member_resumes_its_partitions_from_committed_offsets(zk_cluster: ZkCluster, tmp_path: Path) -> None:
    _setup(zk_cluster, records_per_partition=100)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    out_path = tmp_path / "member.out"
    with open(out_path, "wb") as out:
        member = subprocess.Popen([sys.executable, "-c", _MEMBER, zk_cluster.hosts, TOPIC], stdout=out, stderr=subprocess.STDOUT, env=env)
    survivor = None
    try:
        wait_until(lambda: "assigned 0,1,2,3,4,5" in out_path.read_text(), timeout_s=30, message="member owns all")
        survivor = _consumer(zk_cluster, enable_auto_commit=False)
        mine: dict = {}  # type: ignore[type-arg]
        _poll_until([survivor], lambda: len(survivor.assignment()) == 3, sink=mine)

        def member_records() -> list[tuple[int, int]]:
            return [
                (int(parts[1]), int(parts[2]))
                for parts in (line.split() for line in out_path.read_text().splitlines())
                if len(parts) == 3 and parts[0] == "rec"
            ]

        theirs_tps = {0, 1, 2, 3, 4, 5} - {tp.partition for tp in survivor.assignment()}
        wait_until(lambda: sum(1 for p, _ in member_records() if p in theirs_tps) >= 30, message="member made progress")
        member.kill()
        member.wait()
        client = zk_cluster.client()
        committed = {}
        for p in theirs_tps:
            stat = client.exists(paths.group_offset_path("g", TOPIC, p))
            committed[p] = paths.decode_offset(client.get(paths.group_offset_path("g", TOPIC, p))[0]) if stat else 0
        # The survivor takes the dead member's partitions once its session expires, and
        # starts each at the last committed offset.
        firsts: dict[int, int] = {}
        delivered = {r for v in mine.values() for r in v} | set(member_records())
        everything = {(p, o) for p in range(6) for o in range(100)}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (len(firsts) < len(theirs_tps) or delivered != everything):
            for tp, recs in survivor.poll(100).items():
                if tp.partition in theirs_tps:
                    firsts.setdefault(tp.partition, recs[0].offset)
                delivered.update((tp.partition, r.offset) for r in recs)
        assert firsts == committed
        # At-least-once: every record was delivered to one member or the other.
        assert delivered == everything
    finally:
        if member.poll() is None:
            member.kill()
            member.wait()
        if survivor is not None:
            survivor.close()


def test_manual_assignment_with_a_group_commits_and_resumes(zk_cluster: ZkCluster) -> None:
    _setup(zk_cluster, brokers=(1,), partitions=2, records_per_partition=10)
    tp0, tp1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    with Consumer(group_id="manual", zookeeper=zk_cluster.hosts, auto_offset_reset="earliest", enable_auto_commit=False) as c:
        c.assign([tp0, tp1])
        c.commit({tp0: 6, tp1: 3})  # no subscription: the application owns the partitions
        assert c.committed(tp0) == 6
    with Consumer(group_id="manual", zookeeper=zk_cluster.hosts, auto_offset_reset="earliest") as c:
        c.assign([tp0, tp1])
        firsts: dict[int, int] = {}
        deadline = time.monotonic() + 30
        while len(firsts) < 2 and time.monotonic() < deadline:
            for tp, recs in c.poll(100).items():
                firsts.setdefault(tp.partition, recs[0].offset)
        assert firsts == {0: 6, 1: 3}


def test_deleted_and_recreated_topic_is_read_from_its_start(zk_cluster: ZkCluster) -> None:
    _setup(zk_cluster, brokers=(1,), partitions=2, records_per_partition=5)
    client = zk_cluster.client()
    c = _consumer(zk_cluster, enable_auto_commit=False)
    try:
        got: dict = {}  # type: ignore[type-arg]
        _poll_until([c], lambda: len(got.get(id(c), [])) == 10, sink=got)
        c.commit()
        assert client.exists(paths.group_offsets_path("g", TOPIC)) is not None
        with Admin(bootstrap_servers=zk_cluster.bootstrap) as admin:
            admin.delete_topics([TOPIC])
        _poll_until([c], lambda: c.assignment() == set())
        # The controller removed the group's offsets and the revocation did not write them back.
        assert client.exists(paths.group_offsets_path("g", TOPIC)) is None
        with Admin(bootstrap_servers=zk_cluster.bootstrap) as admin:
            admin.create_topics([NewTopic(TOPIC, 2)])
        with Producer(zookeeper=zk_cluster.hosts) as p:
            for i in range(3):
                p.send(TOPIC, b"new-%d" % i, partition=0)
            p.flush(30)
        again: dict = {}  # type: ignore[type-arg]
        _poll_until([c], lambda: len(again.get(id(c), [])) == 3, sink=again)
        assert sorted(again[id(c)]) == [(0, 0), (0, 1), (0, 2)]
    finally:
        c.close()


def test_group_needs_zookeeper(zk_cluster: ZkCluster) -> None:
    _setup(zk_cluster, brokers=(1,), partitions=1)
    with pytest.raises(LocalUsageError):
        Consumer(TOPIC, group_id="g", auto_offset_reset="earliest", bootstrap_servers=zk_cluster.bootstrap)
    with Consumer(auto_offset_reset="earliest", bootstrap_servers=zk_cluster.bootstrap) as c:
        with pytest.raises(LocalUsageError):
            c.subscribe([TOPIC])
        with pytest.raises(LocalUsageError):
            c.committed(TopicPartition(TOPIC, 0))
