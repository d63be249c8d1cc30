"""ZooKeeperCoordinator against a real ZooKeeper server, in-process (no broker processes):
registration and its NodeExists cases, placement, controller election and failover, topic
deletion through the controller, session expiry and server restarts."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from typing import Iterator, Mapping

import pytest
from kazoo.client import KazooClient

from annal.zookeeper import paths
from annal.cluster import BrokerInfo, TopicPlacement
from annal.broker.coordination.zookeeper import ZooKeeperCoordinator
from annal.errors import (
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidTopicError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from harness.zookeeper import ZooKeeperHarness, wait_until

pytestmark = pytest.mark.timeout(90)

SESSION_MS = 4000


def _info(broker_id: int) -> BrokerInfo:
    return BrokerInfo(broker_id, "127.0.0.1", 9000 + broker_id, 9100 + broker_id)


@pytest.fixture
def coordinators(zk: ZooKeeperHarness) -> Iterator[list[ZooKeeperCoordinator]]:
    made: list[ZooKeeperCoordinator] = []
    yield made
    for c in made:
        c.stop()


def _start(zk: ZooKeeperHarness, made: list[ZooKeeperCoordinator], broker_id: int, **kw: object) -> ZooKeeperCoordinator:
    c = ZooKeeperCoordinator(zk.hosts, session_timeout_ms=SESSION_MS, **kw)  # type: ignore[arg-type]
    made.append(c)
    c.start(_info(broker_id))
    return c


def _owner(client: KazooClient, path: str) -> int | None:
    stat = client.exists(path)
    return None if stat is None else stat.ephemeralOwner


def test_registration_is_ephemeral_json_and_seen_by_all(zk: ZooKeeperHarness, coordinators: list[ZooKeeperCoordinator]) -> None:
    c1 = _start(zk, coordinators, 1)
    c2 = _start(zk, coordinators, 2)
    client = zk.client()
    data, stat = client.get("/brokers/ids/1")
    assert stat.ephemeralOwner == c1.session_id
    assert paths.decode_broker(1, data) == _info(1)
    wait_until(lambda: set(c1.brokers()) == {1, 2} and set(c2.brokers()) == {1, 2}, message="both brokers seen")
    assert c2.brokers()[1] == _info(1)
    c2.stop()
    wait_until(lambda: set(c1.brokers()) == {1}, message="clean stop deregisters at once")


def test_duplicate_live_broker_id_is_refused(zk: ZooKeeperHarness, coordinators: list[ZooKeeperCoordinator]) -> None:
    _start(zk, coordinators, 1)
    dup = ZooKeeperCoordinator(zk.hosts, session_timeout_ms=SESSION_MS, registration_wait_ms=1500)
    with pytest.raises(InvalidConfigError, match="broker id 1 is registered by another live"):
        dup.start(_info(1))
    dup.stop()
    # The refused broker left nothing behind and the first one is still registered.
    client = zk.client()
    assert client.exists("/brokers/ids/1").ephemeralOwner == coordinators[0].session_id


def test_id_of_a_killed_broker_is_taken_over_once_its_session_expires(
    zk: ZooKeeperHarness, coordinators: list[ZooKeeperCoordinator]
) -> None:
    # A SIGKILLed broker leaves its registration until its session expires; a restarted
    # broker with the same id waits for that instead of failing.
    script = (
        "import sys, time\n"
        "from kazoo.client import KazooClient\n"
        "c = KazooClient(hosts=sys.argv[1], timeout=2.0); c.start(timeout=15)\n"
        "c.create('/brokers/ids/3', b'{\"host\":\"127.0.0.1\",\"port\":1}', ephemeral=True, makepath=True)\n"
        "print('ready', flush=True); time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, zk.hosts], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        ghost_owner = _owner(zk.client(), "/brokers/ids/3")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        c = _start(zk, coordinators, 3)
        owner = _owner(zk.client(), "/brokers/ids/3")
        assert owner == c.session_id and owner != ghost_owner
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_stale_registration_of_our_own_old_session_is_replaced(zk: ZooKeeperHarness, coordinators: list[ZooKeeperCoordinator]) -> None:
    old = zk.client()
    old.create("/brokers/ids/4", b"{}", ephemeral=True, makepath=True)
    c = ZooKeeperCoordinator(zk.hosts, session_timeout_ms=SESSION_MS, registration_wait_ms=30000)
    coordinators.append(c)
    # Pretend that session was one this coordinator held before an expiry it has not yet
    # been told about (the KAFKA-1387 case): it must delete and recreate, not wait.
    c._sessions_seen.add(old.client_id[0])  # type: ignore[index]
    c.start(_info(4))
    check = zk.client()
    assert _owner(check, "/brokers/ids/4") == c.session_id
    assert paths.decode_broker(4, check.get("/brokers/ids/4")[0]) == _info(4)


def test_create_topic_places_round_robin_over_live_brokers(zk: ZooKeeperHarness, coordinators: list[ZooKeeperCoordinator]) -> None:
    cs = [_start(zk, coordinators, i) for i in (1, 2, 3)]
    wait_until(lambda: all(set(c.brokers()) == {1, 2, 3} for c in cs))
    seen: list[Mapping[str, TopicPlacement]] = []
    cs[2].add_listener(seen.append)
    placement = cs[0].create_topic("orders", 6, {"retention_ms": 1000})
    counts = {b: list(placement.partitions.values()).count(b) for b in (1, 2, 3)}
    assert counts == {1: 2, 2: 2, 3: 2}
    # Consecutive partitions go to consecutive brokers.
    ids = [placement.partitions[p] for p in range(6)]
    assert all(ids[i] != ids[i + 1] for i in range(5))
    data = zk.client().get("/brokers/topics/orders")[0]
    assert paths.decode_topic("orders", data) == placement
    wait_until(lambda: "orders" in cs[2].topics() and seen and "orders" in seen[-1])
    assert cs[2].topics()["orders"].config == {"retention_ms": 1000}
    with pytest.raises(TopicAlreadyExistsError):
        cs[1].create_topic("orders", 3, {})
    with pytest.raises(InvalidTopicError):
        cs[0].create_topic("bad/name", 1, {})
    with pytest.raises(InvalidPartitionsError):
        cs[0].create_topic("zero", 0, {})


def test_concurrent_creation_of_one_topic_has_one_winner(zk: ZooKeeperHarness, coordinators: list[ZooKeeperCoordinator]) -> None:
    cs = [_start(zk, coordinators, i) for i in (1, 2, 3)]
    barrier = threading.Barrier(len(cs))
    results: list[object] = []

    def create(c: ZooKeeperCoordinator) -> None:
        barrier.wait()
        try:
            results.append(c.create_topic("race", 4, {}))
        except TopicAlreadyExistsError as exc:
            results.append(exc)

    threads = [threading.Thread(target=create, args=(c,)) for c in cs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if isinstance(r, TopicPlacement)]
    assert len(winners) == 1 and len(results) == 3
    wait_until(lambda: all(c.topics().get("race") == winners[0] for c in cs))


def test_controller_failover_and_topic_deletion(zk: ZooKeeperHarness, coordinators: list[ZooKeeperCoordinator]) -> None:
    cs = {i: _start(zk, coordinators, i) for i in (1, 2, 3)}
    first = wait_until(lambda: cs[1].controller_id() if cs[1].controller_id() > 0 else None, message="a controller")
    wait_until(lambda: all(c.controller_id() == first for c in cs.values()))
    assert sum(c.is_controller for c in cs.values()) == 1
    client = zk.client()
    assert paths.decode_controller(client.get("/controller")[0]) == first
    cs[first].stop()
    rest = [c for i, c in cs.items() if i != first]
    second = wait_until(lambda: rest[0].controller_id() if rest[0].controller_id() not in (-1, first) else None, message="failover")
    wait_until(lambda: all(c.controller_id() == second for c in rest))
    # The new controller carries out deletions.
    rest[0].create_topic("doomed", 2, {})
    client.create("/consumers/g1/offsets/doomed/0", b"17", makepath=True)
    client.create("/consumers/g1/offsets/kept/0", b"5", makepath=True)
    rest[1].delete_topic("doomed")
    assert client.exists("/brokers/topics/doomed") is None
    assert client.exists("/consumers/g1/offsets/doomed") is None
    assert client.get("/consumers/g1/offsets/kept/0")[0] == b"5"
    assert client.get_children("/admin/delete_topics") == []
    wait_until(lambda: all("doomed" not in c.topics() for c in rest))
    with pytest.raises(UnknownTopicOrPartitionError):
        rest[0].delete_topic("doomed")


def test_session_expiry_reregisters_and_moves_the_controller(zk: ZooKeeperHarness, coordinators: list[ZooKeeperCoordinator]) -> None:
    c1 = _start(zk, coordinators, 1)
    wait_until(lambda: c1.is_controller, message="c1 controller")
    c2 = _start(zk, coordinators, 2)
    c1.create_topic("kept", 2, {})
    old_session = c1.session_id
    zk.expire_session(c1.kazoo_client)
    assert c1.session_id != old_session
    client = zk.client()
    wait_until(lambda: _owner(client, "/brokers/ids/1") == c1.session_id, message="re-registered in new session")
    wait_until(lambda: set(c2.brokers()) == {1, 2})
    # The controller moved to c2 when c1's session expired (or c1 won again; either way one).
    wait_until(lambda: c1.controller_id() == c2.controller_id() != -1)
    assert c1.is_controller + c2.is_controller == 1
    # Placements survive: they are persistent, and the cache was kept across the expiry.
    assert "kept" in c1.topics()


def test_server_restart_keeps_sessions_and_state(zk: ZooKeeperHarness, coordinators: list[ZooKeeperCoordinator]) -> None:
    c1 = _start(zk, coordinators, 1)
    c2 = _start(zk, coordinators, 2)
    c1.create_topic("survives", 3, {})
    wait_until(lambda: "survives" in c2.topics())
    zk.stop_server()
    # While ZooKeeper is down, the cached view is still served.
    assert "survives" in c2.topics() and set(c2.brokers()) == {1, 2}
    zk.start_server()
    client = zk.client()
    wait_until(lambda: _owner(client, "/brokers/ids/1") == c1.session_id and _owner(client, "/brokers/ids/2") == c2.session_id,
               timeout_s=20, message="both registered after restart")
    c2.create_topic("after", 1, {})
    wait_until(lambda: "after" in c1.topics())


def test_registering_again_in_the_same_session_keeps_the_node(zk: ZooKeeperHarness, coordinators: list[ZooKeeperCoordinator]) -> None:
    # What a create retried after a lost reply meets: NodeExists owned by this very session.
    c = _start(zk, coordinators, 5)
    client = zk.client()
    czxid = client.exists("/brokers/ids/5").czxid
    c._register(startup=False)
    assert client.exists("/brokers/ids/5").czxid == czxid
    assert c.is_registered


def test_dropped_connection_keeps_session_and_registration(zk: ZooKeeperHarness, coordinators: list[ZooKeeperCoordinator]) -> None:
    c = _start(zk, coordinators, 6)
    client = zk.client()
    session = c.session_id
    czxid = client.exists("/brokers/ids/6").czxid
    zk.drop_connection(c.kazoo_client)
    assert c.session_id == session
    c.create_topic("still-works", 1, {})
    assert client.exists("/brokers/ids/6").czxid == czxid
    wait_until(lambda: c.is_controller and "still-works" in c.topics())


def test_unreachable_zookeeper_is_a_network_error() -> None:
    from annal.broker.coordination.zk_server import find_free_port
    from annal.errors import NetworkError

    c = ZooKeeperCoordinator(f"127.0.0.1:{find_free_port()}/x", connect_timeout_ms=1000)
    with pytest.raises(NetworkError, match="could not connect to ZooKeeper"):
        c.start(_info(1))
    c.stop()


def test_topic_registered_reads_zookeeper_itself(zk: ZooKeeperHarness, coordinators: list[ZooKeeperCoordinator]) -> None:
    c1 = _start(zk, coordinators, 1)
    client = zk.client()
    assert c1.topic_registered("fresh") is False
    c1.create_topic("fresh", 1, {})
    assert c1.topic_registered("fresh") is True
    client.create(paths.delete_topic_path("fresh"), b"", makepath=True)
    assert c1.topic_registered("fresh") is False  # marked for deletion: as good as gone
    client.delete(paths.delete_topic_path("fresh"))
    zk.stop_server()
    try:
        wait_until(lambda: c1.topic_registered("fresh") is None, message="no answer while ZooKeeper is down")
    finally:
        zk.start_server()


def test_a_broker_whose_placement_is_late_answers_leader_not_available(
    zk: ZooKeeperHarness, coordinators: list[ZooKeeperCoordinator], tmp_path
) -> None:
    """A topic created through another broker exists in ZooKeeper before this broker's watch
    delivers it: the SDK's metadata answer must not be 'does not exist' in that window."""
    from annal.broker.server.broker import Broker
    from annal.broker.server.config import BrokerConfig
    from annal.errors import LeaderNotAvailableError

    other = _start(zk, coordinators, 2)
    coord = ZooKeeperCoordinator(zk.hosts, session_timeout_ms=SESSION_MS)
    broker = Broker(BrokerConfig(data_dir=tmp_path / "data"), coord)
    broker.open()
    broker.start(_info(1))
    try:
        wait_until(lambda: set(other.brokers()) == {1, 2}, message="both registered")
        with broker._placement_lock:  # the placement cannot reach the broker meanwhile
            other.create_topic("late", 2, {})
            _, [confirmed] = broker.metadata(["late"], confirm_missing=True)
            _, [cached] = broker.metadata(["late"])
            _, [absent] = broker.metadata(["never-made"], confirm_missing=True)
        assert isinstance(confirmed.error, LeaderNotAvailableError) and confirmed.error.retriable
        assert isinstance(cached.error, UnknownTopicOrPartitionError)  # the loop's answer: no store read
        assert isinstance(absent.error, UnknownTopicOrPartitionError)
        wait_until(lambda: broker.metadata(["late"])[1][0].error is None, message="placement arrives")
    finally:
        broker.close()
