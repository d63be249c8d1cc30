"""Names of the files and folders of Annal's storage (Kafka's ``LogFileUtils``).

On disk, a broker's data directory holds one folder per partition and a few checkpoint files::

    <data_dir>/
        recovery-point-offset-checkpoint      # see _checkpoint.py
        log-start-offset-checkpoint
        .annal_cleanshutdown                  # present only after a clean shutdown
        <topic>-<partition>/                  # e.g. orders-0, my-topic-12
            00000000000000000000.log          # record batches, back to back
            00000000000000000000.index        # dense offset index (4 bytes per offset)
            00000000000000000000.timeindex    # time index (12 bytes per entry)
            00000000000000001234.log          # next segment: its first offset is 1234
            ...
            leader-epoch-checkpoint           # which leader epoch wrote which offsets
            producer-snapshot                 # idempotent producers' state (_producer_state.py)

Segment files are named by their base offset zero-padded to 20 digits, so ``ls`` lists them in
offset order. A topic name may itself contain ``-``; the partition number is what follows the
*last* ``-``.

Transient suffixes: ``.deleted`` (a segment being removed), ``.tmp`` (a file being written
atomically), ``.swap`` (reserved, as in Kafka); recovery removes any left behind by a crash.
"""

from __future__ import annotations

import os
import re

__all__ = [
    "LOG_SUFFIX",
    "INDEX_SUFFIX",
    "TIME_INDEX_SUFFIX",
    "DELETED_SUFFIX",
    "TMP_SUFFIX",
    "SWAP_SUFFIX",
    "CLEAN_SHUTDOWN_FILE",
    "filename_prefix_from_offset",
    "log_file_name",
    "index_file_name",
    "time_index_file_name",
    "offset_from_file_name",
    "is_segment_log_file",
    "partition_dir_name",
    "parse_partition_dir_name",
]

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
DELETED_SUFFIX = ".deleted"
TMP_SUFFIX = ".tmp"
SWAP_SUFFIX = ".swap"
CLEAN_SHUTDOWN_FILE = ".annal_cleanshutdown"

_OFFSET_DIGITS = 20
_SEGMENT_RE = re.compile(r"^(\d{20})(\.log|\.index|\.timeindex)$")
_PARTITION_DIR_RE = re.compile(r"^(.+)-(0|[1-9]\d{0,9})$")


def filename_prefix_from_offset(offset: int) -> str:
    """``12`` -> ``'00000000000000000012'``."""
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    return f"{offset:0{_OFFSET_DIGITS}d}"


def log_file_name(directory: str, base_offset: int) -> str:
    return os.path.join(directory, filename_prefix_from_offset(base_offset) + LOG_SUFFIX)


def index_file_name(directory: str, base_offset: int) -> str:
    return os.path.join(directory, filename_prefix_from_offset(base_offset) + INDEX_SUFFIX)


def time_index_file_name(directory: str, base_offset: int) -> str:
    return os.path.join(directory, filename_prefix_from_offset(base_offset) + TIME_INDEX_SUFFIX)


def offset_from_file_name(name: str) -> int:
    """The base offset of a segment file name (``.log``, ``.index`` or ``.timeindex``);
    ``ValueError`` if the name is not one."""
    m = _SEGMENT_RE.match(os.path.basename(name))
    if m is None:
        raise ValueError(f"not a segment file name: {name!r}")
    return int(m.group(1))


def is_segment_log_file(name: str) -> bool:
    m = _SEGMENT_RE.match(os.path.basename(name))
    return m is not None and m.group(2) == LOG_SUFFIX


def partition_dir_name(topic: str, partition: int) -> str:
    """``('orders', 3)`` -> ``'orders-3'``."""
    if partition < 0:
        raise ValueError(f"partition must be >= 0, got {partition}")
    if not topic or "/" in topic or "\0" in topic or topic in (".", ".."):
        raise ValueError(f"illegal topic name for a folder: {topic!r}")
    return f"{topic}-{partition}"


def parse_partition_dir_name(name: str) -> tuple[str, int] | None:
    """``'my-topic-12'`` -> ``('my-topic', 12)``; ``None`` if the name is not a partition folder
    (no ``-<number>`` suffix, or an empty topic)."""
    m = _PARTITION_DIR_RE.match(os.path.basename(name.rstrip("/")))
    if m is None:
        return None
    topic = m.group(1)
    if topic in (".", ".."):
        return None
    return topic, int(m.group(2))
