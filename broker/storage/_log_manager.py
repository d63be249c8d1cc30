"""``LogManager``: every partition log of one broker's data directory (Kafka's ``LogManager``).

On disk (names in ``_file_names.py``)::

    <data_dir>/
        <topic>-<partition>/...                 one folder per partition log
        recovery-point-offset-checkpoint        per partition: offset fdatasync'ed below
        log-start-offset-checkpoint             per partition: first offset kept
        .annal_cleanshutdown                    written last by close_all(), removed at start
        <topic>-<partition>.deleting            a deleted partition being removed (crash leftover)

At start every partition folder is opened and recovered: after a clean shutdown (the marker is
there) without scanning, otherwise scanning from each partition's checkpointed recovery point.

Descriptors are bounded: active segments stay open (4 descriptors each), older segments are
opened on demand through one shared LRU ``HandleCache`` of ``max_open_fds`` descriptors.

Thread-safety: all methods are thread-safe (a lock guards the set of logs; each log has its own).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from typing import Any

from annal.errors import StorageError, InvalidTopicError, LocalUsageError
from annal.broker.storage._checkpoint import (
    LOG_START_OFFSET_CHECKPOINT,
    RECOVERY_POINT_CHECKPOINT,
    OffsetCheckpointFile,
    fsync_dir,
)
from annal.broker.storage._file_names import CLEAN_SHUTDOWN_FILE, parse_partition_dir_name, partition_dir_name
from annal.broker.storage._handles import DEFAULT_MAX_FDS, HandleCache
from annal.broker.storage._log import LogConfig, PartitionLog

__all__ = ["LogManager"]

log = logging.getLogger(__name__)

_DELETING_SUFFIX = ".deleting"


class LogManager:
    """The partition logs of ``data_dir``; opens (and recovers) all of them on construction."""

    def __init__(
        self,
        data_dir: str,
        default_config: LogConfig | dict[str, Any] | None = None,
        *,
        max_open_fds: int = DEFAULT_MAX_FDS,
    ) -> None:
        self.data_dir = os.path.realpath(data_dir)
        os.makedirs(self.data_dir, exist_ok=True)
        if isinstance(default_config, dict):
            default_config = LogConfig.from_dict(default_config)
        self.default_config = default_config or LogConfig()
        self.handle_cache = HandleCache(max_open_fds)
        self._lock = threading.RLock()
        self._checkpoint_lock = threading.Lock()
        self._logs: dict[tuple[str, int], PartitionLog] = {}
        self._closed = False
        self._recovery_points = OffsetCheckpointFile(os.path.join(self.data_dir, RECOVERY_POINT_CHECKPOINT))
        self._log_start_offsets = OffsetCheckpointFile(os.path.join(self.data_dir, LOG_START_OFFSET_CHECKPOINT))
        self._load_logs()

    # --- start -------------------------------------------------------------------------------------

    def _load_logs(self) -> None:
        marker = os.path.join(self.data_dir, CLEAN_SHUTDOWN_FILE)
        clean = os.path.exists(marker)
        rps = self._recovery_points.read()
        lsos = self._log_start_offsets.read() or {}
        if rps is None:
            clean = False  # without recovery points, trust nothing
            rps = {}
        for name in sorted(os.listdir(self.data_dir)):
            path = os.path.join(self.data_dir, name)
            if not os.path.isdir(path):
                continue
            if name.endswith(_DELETING_SUFFIX):
                shutil.rmtree(path, ignore_errors=True)
                continue
            tp = parse_partition_dir_name(name)
            if tp is None:
                log.warning("ignoring %s: not a <topic>-<partition> folder", path)
                continue
            self._logs[tp] = PartitionLog.open(
                path,
                config=self.default_config,
                recovery_point=rps.get(tp),
                log_start_offset=lsos.get(tp),
                had_clean_shutdown=clean and tp in rps,
                handle_cache=self.handle_cache,
            )
        if clean:
            os.unlink(marker)
            fsync_dir(self.data_dir)
        log.info("loaded %d logs from %s (%s shutdown)", len(self._logs), self.data_dir,
                 "clean" if clean else "unclean")

    # --- the set of logs ---------------------------------------------------------------------------------

    def _partition_path(self, topic: str, partition: int) -> str:
        try:
            name = partition_dir_name(topic, partition)
        except ValueError as e:
            raise InvalidTopicError(str(e), topic=topic) from e
        path = os.path.realpath(os.path.join(self.data_dir, name))
        if os.path.dirname(path) != self.data_dir:
            raise InvalidTopicError(f"topic {topic!r} would leave the data directory", topic=topic)
        return path

    def get(self, topic: str, partition: int) -> PartitionLog | None:
        return self._logs.get((topic, partition))

    def get_or_create(self, topic: str, partition: int, config: LogConfig | dict[str, Any] | None = None) -> PartitionLog:
        """The log of ``topic``/``partition``, created (empty) with ``config`` (over the default)
        if it does not exist."""
        lg = self._logs.get((topic, partition))
        if lg is not None:
            return lg
        if isinstance(config, dict):
            config = LogConfig.from_dict(config, self.default_config)
        with self._lock:
            if self._closed:
                raise LocalUsageError("log manager is closed")
            lg = self._logs.get((topic, partition))
            if lg is None:
                path = self._partition_path(topic, partition)
                lg = PartitionLog.open(path, config=config or self.default_config,
                                       handle_cache=self.handle_cache)
                fsync_dir(self.data_dir)
                self._logs[(topic, partition)] = lg
            return lg

    def all_logs(self) -> dict[tuple[str, int], PartitionLog]:
        return dict(self._logs)

    def topics(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for t, p in sorted(self._logs):
            out.setdefault(t, []).append(p)
        return out

    def delete_topic(self, topic: str) -> int:
        """Delete every partition log of ``topic``; returns how many."""
        with self._lock:
            victims = [(tp, lg) for tp, lg in self._logs.items() if tp[0] == topic]
            for tp, _ in victims:
                del self._logs[tp]
        for tp, lg in victims:
            # Rename first so a crash mid-removal never leaves a half-deleted log to load.
            doomed = lg.path + _DELETING_SUFFIX
            lg.close_for_delete()
            try:
                os.rename(lg.path, doomed)
            except FileNotFoundError:
                continue
            shutil.rmtree(doomed, ignore_errors=True)
        if victims:
            fsync_dir(self.data_dir)
            self.checkpoint()
        return len(victims)

    # --- periodic work -----------------------------------------------------------------------------------

    def flush_all(self) -> None:
        for lg in list(self._logs.values()):
            lg.flush()
        self.checkpoint()

    def checkpoint(self) -> None:
        """Write both checkpoint files (atomically) from the logs' current state."""
        with self._checkpoint_lock:
            logs = self.all_logs()
            self._recovery_points.write({tp: lg.recovery_point for tp, lg in logs.items()})
            self._log_start_offsets.write({tp: lg.log_start_offset for tp, lg in logs.items()})

    def run_maintenance(self, now_ms: int | None = None) -> dict[str, int]:
        """Retention, time-based roll and time-based flush on every log, then checkpoints.
        The broker calls this on a timer. Returns counts of what was done."""
        deleted = rolled = flushed = 0
        for lg in list(self._logs.values()):
            if lg.closed:
                continue
            deleted += lg.delete_old_segments(now_ms)
            rolled += lg.maybe_roll(now_ms)
            flushed += lg.maybe_flush(now_ms)
        if not self._closed:
            self.checkpoint()
        return {"segments_deleted": deleted, "segments_rolled": rolled, "logs_flushed": flushed}

    def close_all(self) -> None:
        """Flush and close every log, write the checkpoints, then the clean-shutdown marker."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        logs = self.all_logs()
        failed: OSError | StorageError | None = None
        for lg in logs.values():
            try:
                lg.close()
            except (OSError, StorageError) as e:  # close the others all the same
                lg.abandon()
                failed = failed or e
        if failed is not None:
            # No checkpoint and no clean-shutdown marker: the next start recovers these logs.
            self.handle_cache.close()
            raise failed
        with self._checkpoint_lock:
            self._recovery_points.write({tp: lg.recovery_point for tp, lg in logs.items()})
            self._log_start_offsets.write({tp: lg.log_start_offset for tp, lg in logs.items()})
        marker = os.path.join(self.data_dir, CLEAN_SHUTDOWN_FILE)
        with open(marker, "wb") as f:
            os.fsync(f.fileno())
        fsync_dir(self.data_dir)
        self.handle_cache.close()

    def __enter__(self) -> LogManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_all()
