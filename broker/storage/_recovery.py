"""Loading a partition folder at open, as numbered passes (Kafka's ``LogLoader``).

1. Remove what a crash can leave behind: ``*.deleted`` (a segment being removed), ``*.tmp``,
   ``*.swap``, and index files whose ``.log`` is gone.
2. List the segments (``<20 digits>.log``) in offset order.
3. Segments wholly below the recovery point (everything in them was fdatasync'ed together with
   their trimmed indexes) are loaded without scanning: ``LogSegment.load_clean`` checks, in O(1),
   that the last index entry points at a batch ending exactly at the end of the ``.log`` and
   holding the last indexed offset (for the last segment, that its last batch passes
   ``validate_batch``, CRC included). A missing or inconsistent index is rebuilt by scanning.
   These segments are **trusted**: recovery never cuts or deletes them, nor anything after
   them (Kafka's ``LogLoader.recoverLog`` only deletes segments after the recovery point). A
   trusted segment whose scan finds an invalid batch (a flipped bit on disk, not a torn
   write: it was flushed) keeps its bytes; the offsets from that batch to the next segment's
   base are reported as a damaged range (``RecoveryReport.damaged``, logged at ERROR by the
   log) and a fetch of them gets ``CorruptRecordError``; the rest of the log stays readable
   and writable.
4. From the segment holding the recovery point to the end (every segment after an unclean
   shutdown with no checkpoint), each segment is scanned batch by batch with ``validate_batch``
   and its indexes rebuilt. At the first torn, corrupt or out-of-sequence batch the ``.log`` is
   cut there and every later segment deleted: the log is then exactly the prefix of valid
   batches. Segments must also follow each other (base offset = previous next offset).
5. The last segment becomes the active one.

A ``RecoveryReport`` says what was done; ``PartitionLog.open`` logs it (WARNING if anything was
truncated). Runs before the log is shared: not thread-safe, no need.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from annal.broker.storage._file_names import (
    DELETED_SUFFIX,
    INDEX_SUFFIX,
    LOG_SUFFIX,
    SWAP_SUFFIX,
    TIME_INDEX_SUFFIX,
    TMP_SUFFIX,
    is_segment_log_file,
    offset_from_file_name,
)
from annal.broker.storage._handles import HandleCache
from annal.broker.storage._index import IndexCorruptError
from annal.broker.storage._segment import LogSegment, SegmentConfig

__all__ = ["RecoveryReport", "load_segments"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RecoveryReport:
    """What opening a partition folder found and did."""

    path: str
    segments: int = 0
    segments_scanned: int = 0
    batches_scanned: int = 0
    bytes_truncated: int = 0
    segments_deleted: int = 0
    indexes_rebuilt: int = 0
    files_removed: list[str] = field(default_factory=list)
    truncated_at_offset: int | None = None
    problems: list[str] = field(default_factory=list)
    clean: bool = False
    # Offset ranges [start, end) of trusted segments found damaged (kept, not readable).
    damaged: list[tuple[int, int]] = field(default_factory=list)

    @property
    def lost_data(self) -> bool:
        return self.bytes_truncated > 0 or self.segments_deleted > 0

    def summary(self) -> str:
        s = (f"{self.path}: {self.segments} segments, scanned {self.segments_scanned} "
             f"({self.batches_scanned} batches), rebuilt {self.indexes_rebuilt} indexes, "
             f"truncated {self.bytes_truncated} bytes, deleted {self.segments_deleted} later segments")
        if self.truncated_at_offset is not None:
            s += f", log now ends at offset {self.truncated_at_offset}"
        if self.files_removed:
            s += f", removed leftovers {self.files_removed}"
        if self.damaged:
            s += ", damaged offset ranges " + ", ".join(f"[{a}, {b})" for a, b in self.damaged)
        if self.problems:
            s += "; " + "; ".join(self.problems)
        return s


def _remove_leftovers(directory: str, report: RecoveryReport) -> None:
    names = os.listdir(directory)
    logs = {n[: -len(LOG_SUFFIX)] for n in names if is_segment_log_file(n)}
    for name in names:
        path = os.path.join(directory, name)
        orphan_index = (name.endswith(INDEX_SUFFIX) or name.endswith(TIME_INDEX_SUFFIX)) and (
            name.rsplit(".", 1)[0] not in logs
        )
        if name.endswith((DELETED_SUFFIX, TMP_SUFFIX, SWAP_SUFFIX)) or orphan_index:
            try:
                os.unlink(path)
                report.files_removed.append(name)
            except (FileNotFoundError, IsADirectoryError):
                pass


def load_segments(
    directory: str,
    config: SegmentConfig,
    cache: HandleCache,
    *,
    recovery_point: int | None,
    had_clean_shutdown: bool,
    max_batch_bytes: int | None,
) -> tuple[list[LogSegment], RecoveryReport]:
    """Run the passes of the module docstring over ``directory``; returns the segments in
    offset order (the last one active) and the report. An empty list means no segment file."""
    report = RecoveryReport(path=directory, clean=had_clean_shutdown)
    # Pass 1
    _remove_leftovers(directory, report)
    # Pass 2
    bases = sorted(offset_from_file_name(n) for n in os.listdir(directory) if is_segment_log_file(n))
    segments = [LogSegment(directory, b, config, cache) for b in bases]
    report.segments = len(segments)
    if not segments:
        return [], report
    if had_clean_shutdown:
        scan_from = len(segments)  # trust everything that passes the sanity check
    else:
        rp = recovery_point or 0
        scan_from = 0
        for i, seg in enumerate(segments):
            if seg.base_offset <= rp:
                scan_from = i
    kept: list[LogSegment] = []
    expected_base: int | None = None
    for i, seg in enumerate(segments):
        if expected_base is not None and seg.base_offset != expected_base:
            report.problems.append(
                f"segment {seg.base_offset} does not follow the previous segment's end {expected_base}"
            )
            _delete_from(segments[i:], report)
            report.truncated_at_offset = expected_base
            break
        scan = i >= scan_from
        # Pass 3
        if not scan:
            is_last = i == len(segments) - 1
            try:
                seg.load_clean(verify_last_batch=is_last)
            except IndexCorruptError as e:
                report.problems.append(f"rebuilding index: {e}")
                report.indexes_rebuilt += 1
                if is_last:
                    scan = True  # the end of the log: a torn tail is cut as usual
                else:
                    # Trusted and followed by other segments: never cut (module docstring).
                    end = segments[i + 1].base_offset
                    result = seg.recover_trusted(end, max_batch_bytes)
                    report.segments_scanned += 1
                    report.batches_scanned += result.batches
                    if seg.damaged is not None:
                        report.damaged.append(seg.damaged)
                        report.problems.append(
                            f"segment {seg.base_offset} (flushed, below the recovery point) is damaged at "
                            f"position {result.valid_bytes}: offsets [{seg.damaged[0]}, {seg.damaged[1]}) "
                            f"cannot be read: {result.error}"
                        )
        # Pass 4
        if scan:
            result = seg.recover(max_batch_bytes)
            report.segments_scanned += 1
            report.batches_scanned += result.batches
            if i >= scan_from:
                report.indexes_rebuilt += 1  # a scan rebuilds both indexes
            if result.error is not None or result.bytes_truncated:
                report.bytes_truncated += result.bytes_truncated
                report.truncated_at_offset = seg.next_offset
                report.problems.append(
                    f"segment {seg.base_offset}: cut at position {result.valid_bytes} "
                    f"(offset {seg.next_offset}): {result.error}"
                )
                if seg.size == 0 and kept:
                    # Nothing valid: drop the file; the previous segment becomes the last.
                    _delete_from([seg], report)
                    _delete_from(segments[i + 1 :], report)
                    break
                kept.append(seg)
                _delete_from(segments[i + 1 :], report)
                break
        kept.append(seg)
        expected_base = seg.next_offset
    # Pass 5
    for seg in kept[:-1]:
        seg.make_inactive()
    kept[-1].make_active()
    report.segments = len(kept)
    return kept, report


def _delete_from(segments: list[LogSegment], report: RecoveryReport) -> None:
    for seg in segments:
        if seg.is_active:
            seg.abandon()
        seg.delete()
        report.segments_deleted += 1
