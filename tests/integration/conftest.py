"""Fixtures shared by the integration tests (real processes on 127.0.0.1)."""

from tests.harness.zookeeper import pytest_runtest_makereport, zk, zookeeper_server  # noqa: F401
