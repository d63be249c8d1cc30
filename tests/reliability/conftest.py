"""Fixtures of the reliability suite: the same real broker and ZooKeeper fixtures as the
integration tests (tests/harness), plus the broker and ZooKeeper logs of a failed test in its
report. The fault helpers themselves are in tests/harness/faults.py."""

from harness.broker import broker, broker_factory, register_plugin  # noqa: F401
from harness.zookeeper import pytest_runtest_makereport, zk, zk_cluster, zookeeper_server  # noqa: F401


def pytest_configure(config):  # type: ignore[no-untyped-def]
    register_plugin(config)
