"""A broker started before ZooKeeper answers waits for it (any orchestrator may start the brokers
first, and podman-compose does not wait for ZooKeeper's health check), says so in its log, and
still stops on SIGTERM while it waits; ``--zookeeper-connect-timeout-ms`` bounds the wait."""

from __future__ import annotations

import os
import pathlib
import signal
import threading
import uuid
from typing import Callable

import pytest
from kazoo.client import KazooClient

from annal.broker.coordination.zk_server import ZooKeeperServer, find_free_port
from harness.broker import BrokerProcess, BrokerStartError

pytestmark = pytest.mark.timeout(120)

WAITING = r"ZooKeeper at \S+ does not answer yet; broker \d+ waits and retries"


class _Starter(threading.Thread):
    """``BrokerProcess.start()`` on a thread (it blocks until the ready line), keeping its error."""

    def __init__(self, broker: BrokerProcess) -> None:
        super().__init__(daemon=True)
        self.broker = broker
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.broker.start(timeout=90)
        except BaseException as exc:  # reported by the test
            self.error = exc


def _broker_without_zookeeper(broker_factory: Callable[..., BrokerProcess], *extra: str) -> tuple[BrokerProcess, int, str]:
    port = find_free_port()  # nothing listens there yet
    chroot = f"/t_wait_{uuid.uuid4().hex[:8]}"
    b = broker_factory(
        "waiting", start=False, broker_id=7,
        extra_args=["--zookeeper", f"127.0.0.1:{port}{chroot}", "--zookeeper-session-timeout-ms", "4000", *extra],
    )
    return b, port, chroot


def test_broker_waits_for_zookeeper_then_registers(
    broker_factory: Callable[..., BrokerProcess], tmp_path: pathlib.Path
) -> None:
    b, port, chroot = _broker_without_zookeeper(broker_factory)
    starter = _Starter(b)
    starter.start()
    b.wait_for_log(WAITING, timeout=30)
    assert b.running, b.log_text()

    with ZooKeeperServer(tmp_path / "zk", port=port, tick_time_ms=250) as server:
        starter.join(timeout=60)
        assert not starter.is_alive(), f"broker not ready after ZooKeeper started:\n{b.log_text()}"
        assert starter.error is None, starter.error
        client = KazooClient(hosts=f"{server.address}{chroot}")
        client.start(timeout=10)
        try:
            assert client.exists("/brokers/ids/7") is not None
        finally:
            client.stop()
            client.close()
        assert b.stop() == 0


def test_sigterm_stops_a_broker_waiting_for_zookeeper(broker_factory: Callable[..., BrokerProcess]) -> None:
    b, _, _ = _broker_without_zookeeper(broker_factory)
    starter = _Starter(b)
    starter.start()
    b.wait_for_log(WAITING, timeout=30)
    os.kill(b.pid, signal.SIGTERM)
    starter.join(timeout=30)
    assert not starter.is_alive(), b.log_text()
    assert isinstance(starter.error, BrokerStartError)  # it exited before any ready line
    assert b.returncode == 0, b.log_text()
    assert "stopped before joining the cluster" in b.log_text()


def test_connect_timeout_bounds_the_wait(broker_factory: Callable[..., BrokerProcess]) -> None:
    b, _, _ = _broker_without_zookeeper(broker_factory, "--zookeeper-connect-timeout-ms", "2500")
    with pytest.raises(BrokerStartError, match="could not connect to ZooKeeper"):
        b.start(timeout=60)
    assert b.returncode == 2
    assert "waits and retries" in b.log_text()
