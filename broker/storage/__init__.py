"""Annal's storage: partition logs made of segment files (see docs/storage.md).

``PartitionLog`` is one partition's log (append, read, retention, recovery); ``LogManager`` is the
set of logs of one broker's data directory. The RecordBatch v2 codec they store is the shared
``annal.record``.
"""

from __future__ import annotations

from annal.broker.storage._checkpoint import (
    LOG_START_OFFSET_CHECKPOINT,
    RECOVERY_POINT_CHECKPOINT,
    CheckpointCorruptError,
    OffsetCheckpointFile,
)
from annal.broker.storage._file_names import (
    filename_prefix_from_offset,
    offset_from_file_name,
    parse_partition_dir_name,
    partition_dir_name,
)
from annal.broker.storage._file_io import OS_FILE_IO, FileIO, OsFileIO
from annal.broker.storage._handles import DEFAULT_MAX_FDS, HandleCache
from annal.broker.storage._index import IndexCorruptError, OffsetIndex, TimeIndex
from annal.broker.storage._log import LogConfig, LogReadResult, NeedsVerification, PartitionLog, ReadChunk
from annal.broker.storage._log_manager import LogManager
from annal.broker.storage._recovery import RecoveryReport
from annal.broker.storage._segment import LogSegment, SegmentHandle

__all__ = [
    "PartitionLog",
    "LogConfig",
    "LogReadResult",
    "NeedsVerification",
    "ReadChunk",
    "LogManager",
    "LogSegment",
    "SegmentHandle",
    "HandleCache",
    "FileIO",
    "OsFileIO",
    "OS_FILE_IO",
    "DEFAULT_MAX_FDS",
    "OffsetIndex",
    "TimeIndex",
    "IndexCorruptError",
    "RecoveryReport",
    "OffsetCheckpointFile",
    "CheckpointCorruptError",
    "RECOVERY_POINT_CHECKPOINT",
    "LOG_START_OFFSET_CHECKPOINT",
    "filename_prefix_from_offset",
    "offset_from_file_name",
    "partition_dir_name",
    "parse_partition_dir_name",
]
