"""Broker processes in ZooKeeper cluster mode: registration, refusal of a duplicate id, SIGKILL
and session expiry, controller failover, ZooKeeper restarts during traffic, and topic
placement/deletion through the brokers' gRPC API."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from annal.errors import KafkaTimeoutError
from annal.client.admin import Admin
from annal.client.consumer import Consumer
from annal.client.producer import Producer
from annal.client.structs import NewTopic, TopicPartition
from harness.broker import BrokerStartError
from harness.zookeeper import ZkCluster, ZooKeeperHarness, wait_until

pytestmark = pytest.mark.timeout(120)


def _consume_all(hosts: str, bootstrap: str, tps: list[TopicPartition], expected: int, timeout_s: float = 30.0) -> list[bytes]:
    values: list[bytes] = []
    with Consumer(bootstrap_servers=bootstrap, zookeeper=hosts, auto_offset_reset="earliest") as c:
        c.assign(tps)
        c.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout_s
        while len(values) < expected and time.monotonic() < deadline:
            for recs in c.poll(200).values():
                values.extend(r.value for r in recs)
    return values


def test_brokers_register_and_a_duplicate_id_is_refused(zk_cluster: ZkCluster) -> None:
    zk_cluster.start(1, 2)
    zk_cluster.wait_registered({1, 2})
    wait_until(lambda: zk_cluster.controller() in (1, 2), message="a controller")
    first_owner = zk_cluster.registration_owner(1)
    dup = zk_cluster.add(1, start=False, name="broker1-dup", keep=False)
    with pytest.raises(BrokerStartError) as info:
        dup.start()
    assert dup.returncode == 2
    assert "broker id 1 is registered by another live ZooKeeper session" in str(info.value)
    # The live broker 1 was not disturbed.
    assert zk_cluster.registration_owner(1) == first_owner
    assert zk_cluster.registered() == {1, 2}


def test_sigkill_expires_the_registration_and_the_controller_fails_over(zk_cluster: ZkCluster) -> None:
    zk_cluster.start(1, 2, 3)
    zk_cluster.wait_registered({1, 2, 3})
    controller = wait_until(lambda: zk_cluster.controller() if zk_cluster.controller() > 0 else None, message="controller")
    zk_cluster.brokers[controller].kill()
    # The ephemeral registration outlives the process until its session expires (4 s).
    assert controller in zk_cluster.registered()
    survivors = {1, 2, 3} - {controller}
    zk_cluster.wait_registered(survivors, timeout_s=20)
    new_controller = wait_until(lambda: zk_cluster.controller() if zk_cluster.controller() in survivors else None,
                                timeout_s=20, message="controller failover")
    # The new controller works: a topic is created over the survivors and deleted again.
    admin = Admin(bootstrap_servers=zk_cluster.bootstrap)
    try:
        admin.create_topics([NewTopic("after-failover", 4)])
        placement = zk_cluster.placement("after-failover")
        assert set(placement.values()) == survivors
        admin.delete_topics(["after-failover"])
        wait_until(lambda: "after-failover" not in admin.list_topics(), message="topic deleted")
    finally:
        admin.close()
    # The killed broker comes back with the same id and registers again.
    zk_cluster.brokers[controller].start()
    zk_cluster.wait_registered({1, 2, 3})
    assert zk_cluster.controller() == new_controller


def test_session_expiry_broker_keeps_serving_and_registers_again(zk_cluster: ZkCluster) -> None:
    b1, _ = zk_cluster.start(1, 2)
    zk_cluster.wait_registered({1, 2})
    with Admin(bootstrap_servers=zk_cluster.bootstrap) as admin:
        admin.create_topics([NewTopic("t", 4)])
    placement = zk_cluster.placement("t")
    mine = [TopicPartition("t", p) for p, b in placement.items() if b == 1]
    old_session = zk_cluster.registration_owner(1)
    # A pause longer than the session timeout (as a long GC pause or a frozen VM would):
    # the server expires the session while the broker cannot answer.
    os.kill(b1.pid, signal.SIGSTOP)
    try:
        zk_cluster.wait_registered({2}, timeout_s=20)
    finally:
        os.kill(b1.pid, signal.SIGCONT)
    b1.wait_for_log(r"session LOST", timeout=20)
    zk_cluster.wait_registered({1, 2}, timeout_s=20)
    assert zk_cluster.registration_owner(1) not in (None, old_session)
    b1.wait_for_log(r"broker 1 (re-registered|registered at)", timeout=5)
    # It still serves its partitions.
    with Producer(zookeeper=zk_cluster.hosts, linger_ms=0) as p:
        futures = [p.send("t", b"after-expiry-%d" % i, partition=tp.partition) for i, tp in enumerate(mine * 5)]
        p.flush(30)
        assert all(f.get(10).offset >= 0 for f in futures)
    values = _consume_all(zk_cluster.hosts, zk_cluster.bootstrap, mine, len(futures))
    assert sorted(values) == sorted(b"after-expiry-%d" % i for i in range(len(futures)))


def test_zookeeper_restart_during_traffic(zk: ZooKeeperHarness, zk_cluster: ZkCluster) -> None:
    zk_cluster.start(1, 2)
    zk_cluster.wait_registered({1, 2})
    with Admin(bootstrap_servers=zk_cluster.bootstrap) as admin:
        admin.create_topics([NewTopic("traffic", 4)])
    sessions = {i: zk_cluster.registration_owner(i) for i in (1, 2)}
    producer = Producer(zookeeper=zk.hosts, linger_ms=2)
    wait_until(lambda: producer.partitions_for("traffic") == {0, 1, 2, 3})
    stop = threading.Event()
    futures = []
    sent_while_down = threading.Event()
    zk_down = threading.Event()

    def produce() -> None:
        i = 0
        while not stop.is_set():
            futures.append(producer.send("traffic", b"%d" % i, key=b"k%d" % (i % 16)))
            if zk_down.is_set():
                sent_while_down.set()
            i += 1
            time.sleep(0.002)

    t = threading.Thread(target=produce)
    t.start()
    try:
        wait_until(lambda: len(futures) > 100)
        zk_cluster._client = None  # the harness client reconnects after the restart
        zk.stop_server()
        zk_down.set()
        sent_while_down.wait(10)
        # Existing partitions keep taking writes with ZooKeeper down.
        mark = len(futures)
        wait_until(lambda: len(futures) > mark + 200 and all(f.is_done() for f in futures[mark : mark + 100]), timeout_s=20,
                   message="records acknowledged while ZooKeeper is down")
        assert all(f.succeeded() for f in futures[mark : mark + 100])
        zk.start_server()
        zk_down.clear()
        zk_cluster.wait_registered({1, 2}, timeout_s=30)
        more = len(futures)
        wait_until(lambda: len(futures) > more + 100)
    finally:
        stop.set()
        t.join()
    producer.flush(30)
    producer.close()
    assert all(f.succeeded() for f in futures), [f.exception for f in futures if not f.succeeded()][:3]
    # The sessions survived the restart (the server kept them) or the brokers registered again.
    for i in (1, 2):
        assert zk_cluster.registration_owner(i) is not None
    assert set(sessions) == {1, 2}
    values = _consume_all(zk.hosts, zk_cluster.bootstrap, [TopicPartition("traffic", p) for p in range(4)], len(futures))
    assert sorted(values, key=int) == [b"%d" % i for i in range(len(futures))]


def test_records_for_a_dead_brokers_partition_time_out_not_dropped(zk_cluster: ZkCluster) -> None:
    zk_cluster.start(1, 2)
    zk_cluster.wait_registered({1, 2})
    with Admin(bootstrap_servers=zk_cluster.bootstrap) as admin:
        admin.create_topics([NewTopic("dead", 2)])
    placement = zk_cluster.placement("dead")
    dead_partition = next(p for p, b in placement.items() if b == 2)
    zk_cluster.brokers[2].kill()
    zk_cluster.wait_registered({1}, timeout_s=20)
    with Producer(zookeeper=zk_cluster.hosts, linger_ms=0, delivery_timeout_ms=1500, request_timeout_ms=1000) as p:
        fut = p.send("dead", b"x", partition=dead_partition)
        with pytest.raises(KafkaTimeoutError):
            fut.get(20)
