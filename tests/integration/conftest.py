"""Fixtures shared by the integration tests (real processes on 127.0.0.1)."""

from harness.broker import broker, broker_factory, register_plugin  # noqa: F401
from harness.zookeeper import pytest_runtest_makereport, zk, zk_cluster, zookeeper_server  # noqa: F401


def pytest_configure(config):  # type: ignore[no-untyped-def]
    register_plugin(config)
