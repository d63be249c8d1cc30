"""The ZooKeeper server stopped during traffic: 10 s here, 30 s in the slow run (both longer
than the brokers' 4 s session timeout).

Two brokers in cluster mode serve a topic of four partitions; an acks="all" producer and a
consumer (no group: it reads every partition), both in cluster mode, run in threads. The server
is stopped (``ZooKeeperHarness.stop_server``), kept down, and started again on the same port
and data.

What must hold:

* produce and consume on the existing partitions go on while ZooKeeper is down (both make
  progress during the outage: the partitions and their leaders are already known);
* afterwards both brokers are registered in ``/brokers/ids`` again, under live sessions (their
  registrations are still there after one more session timeout), and a new cluster-mode
  client finds both and writes to every partition;
* nothing acknowledged is lost and every record is consumed.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from annal.client import Admin, Consumer, NewTopic, Producer
from harness.faults import fetch_all
from harness.zookeeper import ZkCluster, wait_until

PARTITIONS = 4


def run_zookeeper_outage(zk_cluster: ZkCluster, outage_s: float, name: str) -> dict[str, object]:
    zk = zk_cluster.zk
    zk_cluster.start(1, 2)
    zk_cluster.wait_registered({1, 2})
    topic = "zkf-" + uuid.uuid4().hex[:8]
    with Admin(bootstrap_servers=zk_cluster.bootstrap) as admin:
        admin.create_topics([NewTopic(topic, PARTITIONS)])
    placement = zk_cluster.placement(topic)

    producer = Producer(zookeeper=zk_cluster.hosts, acks="all", linger_ms=2, batch_size=2048,
                        retry_backoff_ms=50, request_timeout_ms=3000, delivery_timeout_ms=120_000)
    futures: list = []
    consumed: list[tuple[int, int]] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def send_loop() -> None:
        i = 0
        try:
            while not stop.is_set():
                futures.append(producer.send(topic, b"%09d" % i))
                i += 1
                if i % 20 == 0:
                    time.sleep(0.004)
        except BaseException as e:
            errors.append(e)

    def consume_loop() -> None:
        try:
            with Consumer(topic, zookeeper=zk_cluster.hosts, auto_offset_reset="earliest",
                          fetch_max_wait_ms=200) as c:
                while not stop.is_set():
                    for recs in c.poll(timeout_ms=100).values():
                        consumed.extend((r.partition, r.offset) for r in recs)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=send_loop, name="zk-sender"), threading.Thread(target=consume_loop, name="zk-consumer")]
    for t in threads:
        t.start()

    def acked() -> int:
        return sum(1 for f in list(futures) if f.succeeded())

    try:
        wait_until(lambda: acked() >= 2000 and len(consumed) >= 2000, 60, "traffic before the outage")
        acked_before, consumed_before = acked(), len(consumed)
        zk.stop_server()
        down_at = time.monotonic()
        try:
            # Produce and consume go on while ZooKeeper is down.
            wait_until(lambda: acked() >= acked_before + 1000 and len(consumed) >= consumed_before + 1000,
                       outage_s, "produce and consume progress while ZooKeeper is down")
            time.sleep(max(0.0, outage_s - (time.monotonic() - down_at)))  # the rest of the outage
            acked_during, consumed_during = acked() - acked_before, len(consumed) - consumed_before
        finally:
            zk.start_server()
        up_at = time.monotonic()
        zk_cluster.wait_registered({1, 2}, timeout_s=60)
        registered_after_s = time.monotonic() - up_at
        # Registered under live sessions: an expired session's ephemeral node would vanish
        # within a session timeout, so look again after one.
        time.sleep(zk_cluster.session_timeout_ms / 1000 * 1.5)
        assert zk_cluster.registered() == {1, 2}
        # A new cluster-mode client finds both brokers and writes everywhere.
        with Producer(zookeeper=zk_cluster.hosts, acks="all") as fresh:
            fs = [fresh.send(topic, b"fresh", partition=p) for p in range(PARTITIONS)]
            fresh.flush(timeout=60)
        assert all(f.succeeded() for f in fs)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        producer.flush(timeout=120)
        producer.close(timeout=30)
    assert not errors, errors

    logs = {p: fetch_all(zk_cluster.brokers[placement[p]].fetch_address, topic, p).values for p in range(PARTITIONS)}
    failed = 0
    for i, f in enumerate(futures):
        assert f.is_done()
        if f.failed():
            failed += 1
            continue
        md = f.get(0)
        assert logs[md.partition][md.offset] == b"%09d" % i
    # The consumer read every partition in order, without gaps, up to where it stopped.
    for p in range(PARTITIONS):
        offs = [o for pp, o in consumed if pp == p]
        assert offs == list(range(len(offs))), f"partition {p}: consumed offsets not contiguous"
    figures: dict[str, object] = {
        "outage_s": outage_s, "sent": len(futures), "acknowledged": len(futures) - failed, "failed": failed,
        "acknowledged_lost": 0, "acked_during_outage": acked_during, "consumed_during_outage": consumed_during,
        "reregistered_within_s": round(registered_after_s, 1),
    }
    print(f"[{name}] " + " ".join(f"{k}={v}" for k, v in figures.items()))
    return figures


@pytest.mark.timeout(180)
def test_zookeeper_down_10s_traffic_goes_on_and_brokers_register_again(zk_cluster: ZkCluster) -> None:
    run_zookeeper_outage(zk_cluster, 10.0, "zk-outage-10s")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_zookeeper_down_30s_traffic_goes_on_and_brokers_register_again(zk_cluster: ZkCluster) -> None:
    run_zookeeper_outage(zk_cluster, 30.0, "zk-outage-30s")
