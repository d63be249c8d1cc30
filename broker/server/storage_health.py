"""The broker's view of its disk: a full disk and damaged partitions, logged once and counted.

A full disk (ENOSPC from an append, a flush, a roll, a checkpoint) is one episode: one WARNING
when it starts (and one INFO when an append succeeds again), not a line per refused produce
or per maintenance pass. Produce requests keep being refused with ``StorageError``
(KAFKA_STORAGE_ERROR, retriable) meanwhile; the broker stays up and serves fetches.

Metrics (registered in the broker's registry):

* ``annal_disk_full`` (gauge): 1 while the last write to the data dir failed with ENOSPC;
* ``annal_storage_errors_total{kind}`` (counter): writes refused, ``kind`` = ``disk_full`` or
  ``io`` (any other OS error);
* ``annal_partitions_with_storage_error`` (gauge): partitions whose log holds a damaged range
  (``PartitionLog.damaged_ranges``: found by recovery or by the CRC check on read).

Thread-safe (one lock around the episode state; the counters are prometheus_client's).
"""

from __future__ import annotations

import errno
import logging
import threading
from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["StorageHealth"]

log = logging.getLogger("annal.storage_health")


class StorageHealth:
    def __init__(self, registry: CollectorRegistry, logs: Callable[[], Iterable[Any]]) -> None:
        self._lock = threading.Lock()
        self.disk_full = False
        self._errors = Counter("annal_storage_errors", "Writes to the data dir that failed", ["kind"],
                               registry=registry)
        full = Gauge("annal_disk_full", "1 while the data dir's file system is full", registry=registry)
        full.set_function(lambda: 1.0 if self.disk_full else 0.0)
        damaged = Gauge("annal_partitions_with_storage_error",
                        "Partitions with a damaged (unreadable) range of flushed data", registry=registry)
        damaged.set_function(lambda: float(sum(1 for lg in logs() if lg.has_storage_error)))

    def write_failed(self, err: BaseException, what: str) -> None:
        """A write failed with ``err`` (an ``OSError`` or an ``AnnalError`` with an ``errno``
        detail): count it; a full disk is logged at its start only, other errors each time."""
        code = getattr(err, "errno", None)
        if code is None:
            details = getattr(err, "details", None)
            code = details.get("errno") if isinstance(details, dict) else None
        if code == errno.ENOSPC:
            self._errors.labels("disk_full").inc()
            with self._lock:
                first, self.disk_full = not self.disk_full, True
            if first:
                log.warning("disk full: %s failed (%s); produce requests are refused with KAFKA_STORAGE_ERROR "
                            "until space is freed; fetches are still served", what, _message(err))
            return
        self._errors.labels("io").inc()
        log.error("%s failed: %s", what, _message(err))

    def write_succeeded(self) -> None:
        """An append reached the log: a full-disk episode, if any, is over."""
        if self.disk_full:
            with self._lock:
                was, self.disk_full = self.disk_full, False
            if was:
                log.info("disk space is back: appends succeed again")


def _message(err: BaseException) -> str:
    return getattr(err, "message", None) or str(err)
