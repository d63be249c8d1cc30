"""Pytest fixtures around a real ZooKeeper server (kazoo's ``testing/harness.py``, for pytest).

* ``zookeeper_server`` (session scope): one standalone server from the Debian package on a
  free loopback port, tickTime 250 ms so 4-6 s session timeouts expire on time.
* ``zk`` (function scope): a ``ZooKeeperHarness`` giving the test its own chroot
  (``hosts`` is ``127.0.0.1:PORT/t_<test>_<uuid>``), kazoo clients that are closed at
  teardown, and fault helpers: ``expire_session`` (a second client with the same session
  id and password closes the session on the server, which is a real expiry, not a local
  simulation), ``drop_connection``, ``stop_server`` / ``start_server`` / ``restart_server``.
* ``zk_cluster`` (function scope): a ``ZkCluster`` that starts real broker processes
  (``harness.broker.BrokerProcess`` with ``--zookeeper`` and ``--broker-id``) in the
  test's chroot, with a 4 s session timeout, and reads what they registered.
* ``pytest_runtest_makereport``: when a test that used ``zk`` fails, the ZooKeeper server log
  written during that test is attached to the report.

Import the fixtures and the hook into a conftest.py to use them.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
import warnings
from typing import Any, Callable, Generator, Iterator

import pytest
from kazoo.client import KazooClient
from kazoo.protocol.connection import _CONNECTION_DROP
from kazoo.protocol.states import KazooState

from annal.zookeeper import paths as zk_paths
from annal.broker.coordination.zk_server import ZooKeeperNotInstalledError, ZooKeeperServer
from harness.broker import BrokerProcess

__all__ = [
    "ZooKeeperHarness",
    "ZkCluster",
    "zk_cluster",
    "wait_until",
    "zookeeper_server",
    "zk",
    "pytest_runtest_makereport",
]

_SERVER_LOG_OFFSET = pytest.StashKey[int]()
_SERVER = pytest.StashKey[ZooKeeperServer]()


def wait_until(predicate: Callable[[], Any], timeout_s: float = 15.0, message: str = "", interval_s: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns a truthy value (which is returned) or fail the test."""
    deadline = time.monotonic() + timeout_s
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the condition may raise while the system settles
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            pytest.fail(f"timed out after {timeout_s} s waiting for {message or predicate}{detail}")
        time.sleep(interval_s)


class ZooKeeperHarness:
    """One test's view of the shared server: its own chroot, clients and fault helpers.

    Not thread-safe: used from the test's thread.
    """

    def __init__(self, server: ZooKeeperServer, chroot: str) -> None:
        self.server = server
        self.chroot = chroot
        self._clients: list[KazooClient] = []

    @property
    def address(self) -> str:
        """``host:port`` of the server, without chroot."""
        return self.server.address

    @property
    def hosts(self) -> str:
        """The connect string for Annal (brokers, producers, consumers): server + chroot."""
        return self.server.address + self.chroot

    def client(self, *, chroot: bool = True, timeout_s: float = 4.0, start: bool = True, **kwargs: Any) -> KazooClient:
        """A kazoo client on this test's chroot (closed at teardown)."""
        c = KazooClient(hosts=self.hosts if chroot else self.address, timeout=timeout_s, **kwargs)
        self._clients.append(c)
        if start:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="No chroot path exists")  # created just below
                c.start(timeout=15)
            if chroot:
                c.ensure_path("/")
        return c

    def expire_session(self, client: KazooClient, timeout_s: float = 15.0) -> None:
        """Expire ``client``'s session on the server and wait until it has a new one.

        Connecting with the same (session id, password) and closing that connection makes the
        server close the session, deleting its ephemeral nodes, exactly as a timeout would."""
        old_session = client.client_id
        assert old_session is not None, "client is not connected"
        lost = threading.Event()
        back = threading.Event()

        def watch(state: str) -> bool | None:
            if state == KazooState.LOST:
                lost.set()
            elif lost.is_set() and state == KazooState.CONNECTED:
                back.set()
                return True
            return None

        client.add_listener(watch)
        self.close_session(old_session)
        # The client learns of the expiry on its next request or ping.
        deadline = time.monotonic() + timeout_s
        while not lost.is_set() and time.monotonic() < deadline:
            try:
                client.exists("/")
            except Exception:
                pass
            lost.wait(0.1)
        if not lost.is_set():
            pytest.fail("client was not told its session expired")
        if not back.wait(max(0.0, deadline - time.monotonic())):
            pytest.fail("client did not get a new session after expiry")

    def close_session(self, session: tuple[int, bytes]) -> None:
        """Close a session on the server given its (id, password): its ephemerals vanish."""
        other = KazooClient(hosts=self.address, client_id=session, timeout=4.0)
        other.start(timeout=15)
        other.stop()
        other.close()

    def drop_connection(self, client: KazooClient, timeout_s: float = 15.0) -> None:
        """Drop ``client``'s TCP connection (the session survives) and wait for it to reconnect."""
        suspended = threading.Event()
        back = threading.Event()

        def watch(state: str) -> bool | None:
            if state == KazooState.SUSPENDED:
                suspended.set()
            elif suspended.is_set() and state == KazooState.CONNECTED:
                back.set()
                return True
            return None

        client.add_listener(watch)
        client._call(_CONNECTION_DROP, None)
        if not suspended.wait(5):
            pytest.fail("client did not notice the dropped connection")
        if not back.wait(timeout_s):
            pytest.fail("client did not reconnect")

    def pause_server(self, seconds: float) -> None:
        """SIGSTOP the server for ``seconds``, then SIGCONT it (a frozen server, not a dead
        one: clients keep their TCP connections and get no answer). The sleep is the fault."""
        self.server.pause()
        try:
            time.sleep(seconds)
        finally:
            self.server.resume()

    def stop_server(self) -> None:
        self.server.stop()

    def kill_server(self) -> None:
        self.server.kill()

    def start_server(self) -> None:
        self.server._port_fixed = True
        self.server.start()

    def restart_server(self) -> None:
        self.server.restart()

    def close(self) -> None:
        while self._clients:
            c = self._clients.pop()
            try:
                c.stop()
                c.close()
            except Exception:
                pass
        if self.server.running:
            cleaner = KazooClient(hosts=self.address, timeout=4.0)
            try:
                cleaner.start(timeout=10)
                cleaner.delete(self.chroot, recursive=True)
            except Exception:
                pass
            finally:
                try:
                    cleaner.stop()
                    cleaner.close()
                except Exception:
                    pass


class ZkCluster:
    """Broker processes joined to one test's chroot. Not thread-safe."""

    def __init__(self, zk: ZooKeeperHarness, broker_factory: Callable[..., BrokerProcess], session_timeout_ms: int = 4000) -> None:
        self.zk = zk
        self._factory = broker_factory
        self.session_timeout_ms = session_timeout_ms
        self.brokers: dict[int, BrokerProcess] = {}
        self._client: KazooClient | None = None

    @property
    def hosts(self) -> str:
        return self.zk.hosts

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers.values() if b.running)

    def client(self) -> KazooClient:
        if self._client is None:
            self._client = self.zk.client()
        return self._client

    def add(
        self, broker_id: int, *, start: bool = True, extra_args: tuple[str, ...] = (), name: str | None = None, keep: bool = True
    ) -> BrokerProcess:
        """A broker process with this id (``keep=False``: not recorded in ``brokers``, for a
        second process claiming a taken id)."""
        b = self._factory(
            name or f"broker{broker_id}",
            start=False,
            broker_id=broker_id,
            extra_args=[
                "--zookeeper", self.zk.hosts,
                "--zookeeper-session-timeout-ms", str(self.session_timeout_ms),
                *extra_args,
            ],
        )
        if keep:
            self.brokers[broker_id] = b
        if start:
            b.start()
        return b

    def start(self, *broker_ids: int) -> list[BrokerProcess]:
        """Start brokers in parallel (each start waits for its ready line)."""
        made = [self.add(i, start=False) for i in broker_ids]
        errors: list[BaseException] = []

        def go(b: BrokerProcess) -> None:
            try:
                b.start()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=go, args=(b,)) for b in made]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return made

    def registered(self) -> set[int]:
        return {int(c) for c in self.client().get_children(zk_paths.BROKER_IDS)}

    def registration_owner(self, broker_id: int) -> int | None:
        stat = self.client().exists(zk_paths.broker_path(broker_id))
        return None if stat is None else stat.ephemeralOwner

    def controller(self) -> int:
        try:
            data, _ = self.client().get(zk_paths.CONTROLLER)
        except Exception:
            return -1
        return zk_paths.decode_controller(data)

    def placement(self, topic: str) -> dict[int, int]:
        data, _ = self.client().get(zk_paths.topic_path(topic))
        return dict(zk_paths.decode_topic(topic, data).partitions)

    def wait_registered(self, ids: set[int], timeout_s: float = 30.0) -> None:
        wait_until(lambda: self.registered() == ids, timeout_s, f"registered brokers == {sorted(ids)}")


@pytest.fixture
def zk_cluster(zk: ZooKeeperHarness, broker_factory: Callable[..., BrokerProcess]) -> ZkCluster:
    """Broker processes in this test's chroot (stopped at teardown by ``broker_factory``)."""
    return ZkCluster(zk, broker_factory)


@pytest.fixture(scope="session")
def zookeeper_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    """One real ZooKeeper server for the whole test session."""
    server = ZooKeeperServer(
        tmp_path_factory.mktemp("zookeeper"),
        tick_time_ms=250,
        min_session_timeout_ms=1000,
        max_session_timeout_ms=30000,
    )
    try:
        server.start()
    except ZooKeeperNotInstalledError as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture
def zk(zookeeper_server: ZooKeeperServer, request: pytest.FixtureRequest) -> Iterator[ZooKeeperHarness]:
    """This test's chroot on the shared server, with fault helpers."""
    if not zookeeper_server.running:  # a previous test stopped it and failed before restarting
        zookeeper_server._port_fixed = True
        zookeeper_server.start()
    name = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:60]
    harness = ZooKeeperHarness(zookeeper_server, f"/t_{name}_{uuid.uuid4().hex[:8]}")
    request.node.stash[_SERVER] = zookeeper_server
    request.node.stash[_SERVER_LOG_OFFSET] = zookeeper_server.log_size()
    yield harness
    harness.close()
    if not zookeeper_server.running:
        zookeeper_server._port_fixed = True
        zookeeper_server.start()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """Attach the ZooKeeper server log of a failed test to its report."""
    outcome: Any = yield
    report = outcome.get_result()
    if report.failed and _SERVER in item.stash:
        server = item.stash[_SERVER]
        text = server.log_since(item.stash.get(_SERVER_LOG_OFFSET, 0))
        lines = text.splitlines()[-300:]
        report.sections.append(("ZooKeeper server log (last 300 lines of this test)", "\n".join(lines)))
