"""StorageHealth: a full disk is one WARNING per episode and a gauge; other write errors are
logged each time; the damaged-partition gauge counts logs with a storage error."""

from __future__ import annotations

import errno
import logging

import pytest
from prometheus_client import CollectorRegistry

from annal.broker.server.storage_health import StorageHealth
from annal.errors import StorageError

pytestmark = pytest.mark.timeout(30)


class _Log:
    def __init__(self, damaged: bool) -> None:
        self.has_storage_error = damaged


def test_disk_full_is_one_warning_per_episode_and_a_gauge(caplog):
    reg = CollectorRegistry()
    logs = [_Log(False), _Log(True)]
    h = StorageHealth(reg, lambda: logs)
    with caplog.at_level(logging.INFO, logger="annal.storage_health"):
        for _ in range(20):
            h.write_failed(StorageError("write failed: No space left on device", errno=errno.ENOSPC), "append to t-0")
        h.write_failed(OSError(errno.ENOSPC, "No space left on device"), "log maintenance")
        assert reg.get_sample_value("annal_disk_full") == 1
        h.write_succeeded()
        h.write_succeeded()
        assert reg.get_sample_value("annal_disk_full") == 0
        h.write_failed(OSError(errno.ENOSPC, "No space left on device"), "append to t-0")  # a new episode
        h.write_failed(OSError(errno.EIO, "Input/output error"), "flush of t-0")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("disk full" in r.getMessage() for r in warnings)
    assert sum("disk space is back" in r.getMessage() for r in caplog.records) == 1
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "flush of t-0 failed: [Errno 5] Input/output error"]
    assert reg.get_sample_value("annal_storage_errors_total", {"kind": "disk_full"}) == 22
    assert reg.get_sample_value("annal_storage_errors_total", {"kind": "io"}) == 1
    assert reg.get_sample_value("annal_partitions_with_storage_error") == 1
    assert not any(r.exc_info for r in caplog.records)  # no tracebacks
