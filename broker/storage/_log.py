"""``PartitionLog``: the append-only log of one partition, made of segments (Kafka's
``UnifiedLog``/``LocalLog``).

On disk a log is one folder of segments (``_file_names.py``); the last segment is the active one
that receives appends, the others are read-only. Offsets are dense: each record of each batch has
the next offset, assigned by ``append`` by overwriting the batch's ``baseOffset`` (the CRC does not
cover it, so it stays valid).

Durability: a batch is in the page cache when ``append`` returns. It is fdatasync'ed when the
flush policy says so (``flush_messages`` records since the last flush, ``flush_ms`` since the last
flush via ``maybe_flush``), on ``flush()``, on roll-driven flushes and on ``close()``. The
``recovery_point`` is advanced only to an offset below which every byte (and every rolled
segment's index) has been fdatasync'ed; after a crash, recovery scans from the segment holding it.

Thread-safety: every method may be called from any thread. Appends, rolls, truncation, retention
and close take the log's lock. ``read`` and ``offset_for_timestamp`` take no lock: they work from
an immutable snapshot ``(log_end_offset, segments, active size)`` published atomically after each
append, and hold reference-counted segment handles, so they never wait behind an append or a
flush. ``flush`` fdatasyncs outside the lock (appends go on meanwhile); flushes are serialised
among themselves.
"""

from __future__ import annotations

import bisect
import logging
import os
import shutil
import struct
import threading
import time
from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple

from annal.errors import (
    AnnalError,
    CorruptRecordError,
    InvalidConfigError,
    InvalidFetchSizeError,
    LocalUsageError,
    MessageSizeTooLargeError,
    OffsetOutOfRangeError,
    StorageError,
    UnknownTopicOrPartitionError,
)
from annal.broker.storage._checkpoint import fsync_dir
from annal.broker.storage._file_io import OS_FILE_IO, FileIO
from annal.broker.storage._handles import HandleCache
from annal.broker.storage._leader_epoch import LeaderEpochCache
from annal.broker.storage._producer_state import ProducerStateManager
from annal.broker.storage._recovery import RecoveryReport, load_segments
from annal.broker.storage._segment import LogSegment, SegmentConfig, SegmentHandle
from annal.record import BatchHeader, check_records, set_base_offset, validate_batch

_EPOCH_AT = struct.Struct(">i")  # partitionLeaderEpoch, bytes 12..16 of a batch (not under the CRC)

__all__ = ["LogConfig", "PartitionLog", "LogReadResult", "NeedsVerification", "ReadChunk"]

log = logging.getLogger(__name__)

_DAY_MS = 24 * 3600 * 1000


def _now_ms() -> int:
    return int(time.time() * 1000)


def _fsync_path(path: str, fio: FileIO) -> None:
    try:
        fd = fio.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fio.fsync(fd)
    finally:
        fio.close(fd)


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Per-log configuration, Kafka's topic configs with units last.

    ``segment_bytes``: roll when the active segment would exceed this (max 2 GiB - 1: index
    positions are 4 bytes). ``segment_ms``: roll an active segment this old. ``retention_bytes`` /
    ``retention_ms``: delete the oldest whole segments beyond this size / older than this (-1:
    unlimited). ``flush_messages`` / ``flush_ms``: fdatasync after this many records / this long
    (None: leave it to the OS and explicit flushes). ``max_message_bytes``: largest batch accepted.
    ``segment_index_bytes``: preallocated size of each index (4 bytes per offset; a segment rolls
    when its index is full). ``preallocate``: preallocate the active ``.log`` to ``segment_bytes``.
    """

    segment_bytes: int = 1 << 30
    segment_ms: int = 7 * _DAY_MS
    retention_bytes: int = -1
    retention_ms: int = 7 * _DAY_MS
    flush_messages: int | None = None
    flush_ms: int | None = None
    max_message_bytes: int = 1048588
    segment_index_bytes: int = 64 << 20
    preallocate: bool = False

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> None:
            raise InvalidConfigError(f"{name}={getattr(self, name)!r}: {why}", config=name)

        if not 1024 <= self.segment_bytes <= (1 << 31) - 1:
            bad("segment_bytes", "must be in [1024, 2147483647]")
        if self.segment_ms <= 0:
            bad("segment_ms", "must be positive")
        if self.retention_bytes < -1 or self.retention_bytes == 0:
            bad("retention_bytes", "must be -1 (unlimited) or positive")
        if self.retention_ms < -1 or self.retention_ms == 0:
            bad("retention_ms", "must be -1 (unlimited) or positive")
        if self.flush_messages is not None and self.flush_messages <= 0:
            bad("flush_messages", "must be positive or None")
        if self.flush_ms is not None and self.flush_ms < 0:
            bad("flush_ms", "must be >= 0 or None")
        if self.max_message_bytes < 61:
            bad("max_message_bytes", "must hold at least a batch header (61 bytes)")
        if self.segment_index_bytes < 64:
            bad("segment_index_bytes", "must be at least 64")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None = None, base: LogConfig | None = None) -> LogConfig:
        """A config from ``values`` over ``base`` (defaults); unknown keys are an error."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise InvalidConfigError(f"unknown log config {sorted(unknown)}", config=sorted(unknown))
        return replace(base or cls(), **values)

    @property
    def segment_config(self) -> SegmentConfig:
        return SegmentConfig(self.segment_bytes, self.segment_index_bytes, self.preallocate)


class NeedsVerification(Exception):
    """``PartitionLog.read(verify=False)`` met bytes of an inactive segment whose CRC-32C has
    not been checked since the log was opened: read again with ``verify=True``, off the event
    loop (the check reads the whole range, from disk when it is not cached). Not an
    ``AnnalError``: it never reaches a client."""


class ReadChunk(NamedTuple):
    """Bytes of one segment to send: ``os.sendfile(sock, fd, position, size)`` sends exactly
    ``view`` (a read-only memoryview of the mapped ``.log``, no copy)."""

    fd: int
    position: int
    size: int
    view: memoryview
    segment_base_offset: int


class LogReadResult:
    """Whole batches read from a log, as chunks of its segment files.

    The segment handles stay open (descriptors valid, mappings alive) until ``release()`` (or
    the end of a ``with`` block), even if the segment is rolled, evicted or deleted meanwhile.
    ``high_watermark`` is the log end offset at the time of the read. Not thread-safe: one
    consumer of the result.
    """

    __slots__ = ("chunks", "size", "high_watermark", "log_start_offset", "start_offset", "_handles")

    def __init__(self, chunks: list[ReadChunk], high_watermark: int, log_start_offset: int,
                 start_offset: int, handles: list[SegmentHandle]) -> None:
        self.chunks = chunks
        self.size = sum(c.size for c in chunks)
        self.high_watermark = high_watermark
        self.log_start_offset = log_start_offset
        self.start_offset = start_offset
        self._handles = handles

    def tobytes(self) -> bytes:
        return b"".join(c.view for c in self.chunks)

    def release(self) -> None:
        handles, self._handles = self._handles, []
        for c in self.chunks:
            c.view.release()
        self.chunks = []
        for h in handles:
            h.release()

    def __enter__(self) -> LogReadResult:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        if self._handles:
            try:
                self.release()
            except Exception:
                pass

    def __repr__(self) -> str:
        return (f"LogReadResult(start_offset={self.start_offset}, size={self.size}, "
                f"chunks={len(self.chunks)}, high_watermark={self.high_watermark})")


class _Head(NamedTuple):
    """Immutable snapshot readers use; replaced whole after each change."""

    log_end_offset: int
    segments: tuple[LogSegment, ...]
    bases: tuple[int, ...]
    active_size: int
    damaged: tuple[tuple[int, int], ...] = ()


class PartitionLog:
    """One partition's log. Create with ``PartitionLog.open``; see the module docstring for files,
    durability and thread-safety."""

    def __init__(self, path: str, config: LogConfig, cache: HandleCache, own_cache: bool,
                 segments: list[LogSegment], log_start_offset: int, recovery_point: int,
                 report: RecoveryReport, file_io: FileIO = OS_FILE_IO) -> None:
        self.path = path
        self.config = config
        self._fio = file_io
        self._segment_config = replace(config.segment_config, file_io=file_io)
        self.report = report
        self._cache = cache
        self._own_cache = own_cache
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._log_start_offset = log_start_offset
        self._recovery_point = recovery_point
        self._unflushed_messages = 0
        self._last_flush_ms = _now_ms()
        self._rolled_since_flush = False
        self._truncations = 0  # bumped by truncate_to: a flush racing one must not advance
        self._dir_dirty = True  # a segment file was created since the folder was last fsync'ed
        self._closed = False
        self._deleted = False
        self._head = _Head(0, (), (), 0)
        self._publish(segments)
        # Which leader epoch wrote which offsets (``leader-epoch-checkpoint``, KIP-101).
        self.leader_epochs = LeaderEpochCache(path)
        self.leader_epochs.truncate_from_end(self._head.log_end_offset)
        # Idempotent producers' sequences (``producer-snapshot``), loaded on first use.
        self.producer_state = ProducerStateManager(path)

    # --- opening ---------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str,
        *,
        config: LogConfig | None = None,
        recovery_point: int | None = None,
        log_start_offset: int | None = None,
        had_clean_shutdown: bool = False,
        handle_cache: HandleCache | None = None,
        file_io: FileIO = OS_FILE_IO,
        **config_values: Any,
    ) -> PartitionLog:
        """Open (creating if needed) the log in folder ``path``, running recovery
        (``_recovery.py``). ``recovery_point`` / ``log_start_offset`` come from the data
        directory's checkpoints (None: scan every segment; start at the first segment).
        ``config_values`` override ``config`` (``segment_bytes=...``). ``file_io``: where file
        writes go (``_file_io.py``; the OS unless a test simulates a disk)."""
        cfg = LogConfig.from_dict(config_values, config)
        seg_cfg = replace(cfg.segment_config, file_io=file_io)
        os.makedirs(path, exist_ok=True)
        own = handle_cache is None
        cache = handle_cache if handle_cache is not None else HandleCache()
        segments, report = load_segments(
            path, seg_cfg, cache,
            recovery_point=recovery_point if not had_clean_shutdown else None,
            had_clean_shutdown=had_clean_shutdown, max_batch_bytes=None,
        )
        lso = log_start_offset or 0
        if not segments:
            seg = LogSegment(path, lso, seg_cfg, cache)
            seg.make_active()
            segments = [seg]
        leo = segments[-1].next_offset
        lso = max(lso, segments[0].base_offset)
        if lso > leo:
            lso = leo
        rp = leo if had_clean_shutdown and not report.lost_data else min(recovery_point or 0, leo)
        level = logging.WARNING if report.lost_data or report.problems else logging.INFO
        if report.damaged:
            level = logging.ERROR  # flushed data is unreadable: an operator must look
        log.log(level, "loaded log %s: offsets [%d, %d); %s", path, lso, leo, report.summary())
        lg = cls(path, cfg, cache, own, segments, lso, rp, report, file_io)
        if report.segments_scanned or report.lost_data:
            # What recovery kept (and cut) is made durable now, so the next crash need not
            # scan it again.
            lg.flush()
        return lg

    # --- snapshot ---------------------------------------------------------------------------------

    def _publish(self, segments: list[LogSegment] | tuple[LogSegment, ...] | None = None) -> None:
        segs = tuple(segments) if segments is not None else self._head.segments
        bases = tuple(s.base_offset for s in segs) if segments is not None else self._head.bases
        active = segs[-1]
        damaged = tuple(s.damaged for s in segs if s.damaged is not None) if segments is not None \
            else self._head.damaged
        self._head = _Head(active.next_offset, segs, bases, active.size, damaged)

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self._head.log_end_offset

    @property
    def high_watermark(self) -> int:
        return self._head.log_end_offset

    @property
    def recovery_point(self) -> int:
        return self._recovery_point

    @property
    def size_bytes(self) -> int:
        h = self._head
        return sum(s.size for s in h.segments[:-1]) + h.active_size

    @property
    def segments(self) -> tuple[LogSegment, ...]:
        return self._head.segments

    @property
    def active_segment(self) -> LogSegment:
        return self._head.segments[-1]

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def damaged_ranges(self) -> list[tuple[int, int]]:
        """Offset ranges ``[start, end)`` of flushed segments found damaged at open (kept on
        disk, not readable: a fetch of them raises ``CorruptRecordError``); empty if none.
        A log with such ranges has a storage error (``has_storage_error``)."""
        return [s.damaged for s in self._head.segments if s.damaged is not None
                and s.damaged[1] > self._log_start_offset]

    @property
    def has_storage_error(self) -> bool:
        return any(s.damaged is not None for s in self._head.segments)

    def _check_open(self) -> None:
        if self._closed:
            if self._deleted:
                raise UnknownTopicOrPartitionError(f"log {self.path} was deleted")
            raise LocalUsageError(f"log {self.path} is closed")

    # --- append ------------------------------------------------------------------------------------

    def _validate(self, buf: bytes | bytearray | memoryview,
                  walk_records: bool = True) -> tuple[bytearray | memoryview, list[BatchHeader]]:
        """Validate every batch in ``buf`` (nothing touched yet) and return a writable buffer
        holding them plus their headers. ``walk_records=False`` checks batches (lengths, CRC)
        but not each record: for batches a leader already walked."""
        view = memoryview(buf)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        if len(view) == 0:
            raise CorruptRecordError("empty produce payload: no record batch")
        headers: list[BatchHeader] = []
        pos = 0
        max_bytes = self.config.max_message_bytes
        max_offsets = self.config.segment_index_bytes // 4
        while pos < len(view):
            hd = validate_batch(view, pos, max_bytes)
            # Every record is walked too, as Kafka's LogValidator does: a batch with a valid
            # CRC over malformed records would otherwise be stored and stop every consumer
            # at its offset for good.
            if walk_records:
                check_records(view, pos, hd)
            if hd.records_count > max_offsets:
                raise MessageSizeTooLargeError(
                    f"batch of {hd.records_count} records exceeds the {max_offsets} offsets a segment "
                    f"index holds", records=hd.records_count)
            headers.append(hd)
            pos += hd.batch_length + 12
        writable: bytearray | memoryview = view if not view.readonly else bytearray(view)
        return writable, headers

    def append(self, batch: bytes | bytearray | memoryview) -> int:
        """Append one record batch; returns its base offset. The batch is fully validated
        (``validate_batch`` with ``max_message_bytes``, then every record with
        ``check_records``; exactly one batch) before anything is
        written; on error nothing is. A writable buffer gets its baseOffset set in place; a
        read-only one is copied once."""
        buf, headers = self._validate(batch)
        if len(headers) != 1:
            raise CorruptRecordError(f"append takes one batch, got {len(headers)}; use append_batches")
        return self._append(buf, headers)

    def append_batches(self, buf: bytes | bytearray | memoryview, leader_epoch: int | None = None) -> int:
        """Append back-to-back batches (a produce request's records): all are validated first,
        then written in one write; returns the first base offset. ``leader_epoch`` (a leader of a
        replicated partition) is stamped into each batch's partitionLeaderEpoch and recorded in
        the leader epoch cache."""
        data, headers = self._validate(buf)
        return self._append(data, headers, leader_epoch)

    def append_as_follower(self, buf: bytes | bytearray | memoryview) -> int:
        """Append batches fetched from the leader as they are: their offsets are kept (the
        first must be this log's end offset, the rest contiguous) and their leader epochs go
        into the epoch cache. Each batch's lengths and CRC are checked (the network could have
        damaged it) but not each record: the leader walked them before storing them, as
        Kafka's followers trust it. Returns the new log end offset."""
        data, headers = self._validate(buf, walk_records=False)
        with self._lock:
            self._check_open()
            expected = self._head.log_end_offset
            for hd in headers:
                if hd.base_offset != expected:
                    raise CorruptRecordError(
                        f"{self.path}: fetched batch at offset {hd.base_offset}, expected {expected}",
                        offset=hd.base_offset)
                expected = hd.base_offset + hd.records_count
            seg = self._head.segments[-1]
            total = len(data)
            count = sum(h.records_count for h in headers)
            if (not seg.can_fit(total, count, len(headers))
                    or (seg.size > 0 and _now_ms() - seg.created_ms >= self.config.segment_ms)):
                seg = self._roll_locked()
            for hd in headers:
                if hd.partition_leader_epoch > self.leader_epochs.latest_epoch:
                    self.leader_epochs.assign(hd.partition_leader_epoch, hd.base_offset)
            seg.append(memoryview(data), headers)
            self._publish()
            self._unflushed_messages += count
            return self._head.log_end_offset

    def _append(self, data: bytearray | memoryview, headers: list[BatchHeader], leader_epoch: int | None = None) -> int:
        flush = False
        total = len(data)
        count = sum(h.records_count for h in headers)
        with self._lock:
            self._check_open()
            seg = self._head.segments[-1]
            now = _now_ms()
            if (not seg.can_fit(total, count, len(headers))
                    or (seg.size > 0 and now - seg.created_ms >= self.config.segment_ms)):
                seg = self._roll_locked()
            first = seg.next_offset
            offset = first
            pos = 0
            fixed: list[BatchHeader] = []
            if leader_epoch is not None:
                if leader_epoch > self.leader_epochs.latest_epoch:
                    self.leader_epochs.assign(leader_epoch, first)
            for hd in headers:
                set_base_offset(data, offset, pos)
                if leader_epoch is not None:
                    _EPOCH_AT.pack_into(data, pos + 12, leader_epoch)
                    hd = hd._replace(partition_leader_epoch=leader_epoch)
                fixed.append(hd._replace(base_offset=offset))
                offset += hd.records_count
                pos += hd.batch_length + 12
            seg.append(memoryview(data), fixed)
            self._publish()
            self._unflushed_messages += count
            fm = self.config.flush_messages
            if fm is not None and self._unflushed_messages >= fm:
                flush = True
        if flush:
            self.flush()
        return first

    # --- read ----------------------------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int, max_offset: int | None = None, verify: bool = True) -> LogReadResult:
        """Whole batches from the one holding ``offset``: at least one batch (even if larger than
        ``max_bytes``), then following batches, across segments, while the total stays within
        ``max_bytes``. ``offset == log_end_offset`` gives an empty result;
        outside ``[log_start_offset, log_end_offset]`` raises ``OffsetOutOfRangeError``.
        Release the result when done with its bytes.

        Bytes of an inactive segment are CRC-checked the first time they are read after open
        (``_verify_read``). With ``verify=False`` such a read raises ``NeedsVerification``
        instead, holding nothing: an event loop calls it so, and repeats the read with
        ``verify=True`` on a worker thread."""
        if max_bytes <= 0:
            raise InvalidFetchSizeError(f"max_bytes must be positive, got {max_bytes}", max_bytes=max_bytes)
        for _attempt in range(3):
            self._check_open()
            head = self._head
            lso = self._log_start_offset
            leo = head.log_end_offset
            if offset < lso or offset > leo:
                raise OffsetOutOfRangeError(
                    f"offset {offset} is outside [{lso}, {leo}]",
                    offset=offset, log_start_offset=lso, log_end_offset=leo)
            if offset == leo:
                return LogReadResult([], leo, lso, offset, [])
            if head.damaged:
                for start, end in head.damaged:
                    if start <= offset < end:
                        raise CorruptRecordError(
                            f"{self.path}: offsets [{start}, {end}) are in a damaged segment (found at open; "
                            f"see the broker log); seek past {end - 1} to read on",
                            first_offset=start, last_offset=end - 1)
            if max_offset is not None and max_offset < leo:
                # A consumer of a replicated partition reads only below the high watermark,
                # which always falls on a batch boundary (followers copy whole batches).
                if offset >= max_offset:
                    return LogReadResult([], max_offset, lso, offset, [])
                try:
                    head = self._head_until(head, max_offset)
                except (FileNotFoundError, IndexError):
                    continue
            try:
                return self._read_from(head, offset, max_bytes, lso, verify)
            except (FileNotFoundError, IndexError):
                continue  # retention, truncation or deletion raced with the read: look again
        self._check_open()
        raise OffsetOutOfRangeError(
            f"offset {offset} moved out of the log while reading",
            offset=offset, log_start_offset=self._log_start_offset, log_end_offset=self.log_end_offset)

    @staticmethod
    def _head_until(head: _Head, end_offset: int) -> _Head:
        """``head`` cut at ``end_offset`` (a batch boundary below its log end offset)."""
        i = bisect.bisect_right(head.bases, end_offset) - 1
        seg = head.segments[i]
        h = seg.acquire()
        try:
            size = h.index.lookup(end_offset - seg.base_offset) if end_offset > seg.base_offset else 0
        finally:
            h.release()
        return _Head(end_offset, head.segments[:i + 1], head.bases[:i + 1], size, head.damaged)

    def _read_from(self, head: _Head, offset: int, max_bytes: int, lso: int, verify: bool) -> LogReadResult:
        i = bisect.bisect_right(head.bases, offset) - 1
        chunks: list[ReadChunk] = []
        handles: list[SegmentHandle] = []
        remaining = max_bytes
        at = offset
        last = len(head.segments) - 1
        try:
            while i <= last and remaining > 0 and at < head.log_end_offset:
                seg = head.segments[i]
                size = head.active_size if i == last else seg.size
                if seg.damaged is not None:
                    if at >= seg.damaged[0]:
                        break  # the damaged range: the next read raises
                    size = seg.readable_bytes
                end_offset = head.log_end_offset if i == last else seg.next_offset
                h = seg.acquire()
                handles.append(h)
                start, end = seg.read_range(h, at, remaining, end_offset, size)
                if chunks and end - start > remaining:
                    break  # only the first batch may exceed max_bytes
                mm = h.log_mm
                assert mm is not None
                if i != last and seg.unverified_from(start, end) < end:
                    if not verify:
                        raise NeedsVerification(f"{self.path}: bytes [{start}, {end}) of segment "
                                                f"{seg.base_offset} not CRC-checked since open")
                    bad = self._verify_read(seg, h, start, end)
                    if bad is not None:
                        if bad == start:
                            first, stop = seg.damaged or (at, seg.next_offset)
                            raise CorruptRecordError(
                                f"{self.path}: offsets [{first}, {stop}) are in a damaged segment (CRC check on "
                                f"read; see the broker log); seek past {stop - 1} to read on",
                                first_offset=first, last_offset=stop - 1)
                        end = bad
                        size = bad
                chunks.append(ReadChunk(h.log_fd, start, end - start, memoryview(mm)[start:end], seg.base_offset))
                remaining -= end - start
                if end < size or seg.damaged is not None:
                    break
                at = end_offset
                i += 1
        except BaseException:
            for c in chunks:
                c.view.release()
            for h in handles:
                h.release()
            raise
        return LogReadResult(chunks, head.log_end_offset, lso, offset, handles)

    def _verify_read(self, seg: LogSegment, h: SegmentHandle, start: int, end: int) -> int | None:
        """Check the CRC-32C of every batch of ``[start, end)`` of an inactive segment not yet
        checked since open (``seg.verified``: the ranges already checked, so each byte is
        checked once per process, not once per fetch). Returns the position of the first bad
        batch, after marking the segment damaged from there (logged at ERROR), or None.

        This reads every byte of the range from the file: a disk read when the segment is not
        in the page cache. The listeners' event loops therefore read with ``verify=False`` and
        hand a read that needs a check (``NeedsVerification``) to a worker thread."""
        mm = h.log_mm
        assert mm is not None
        pos = seg.unverified_from(start, end)
        first = pos
        while pos < end:
            try:
                hd = validate_batch(mm, pos, None)
            except (CorruptRecordError, AnnalError):
                if pos > first:
                    seg.mark_verified(first, pos)
                self._mark_damaged(seg, h, pos)
                return pos
            pos += hd.batch_length + 12
        seg.mark_verified(first, end)
        return None

    def _mark_damaged(self, seg: LogSegment, h: SegmentHandle, pos: int) -> None:
        idx = h.index
        lo, hi = 0, idx.entries  # first offset whose batch starts at or after pos
        while lo < hi:
            mid = (lo + hi) // 2
            if idx.lookup(mid) < pos:
                lo = mid + 1
            else:
                hi = mid
        with self._lock:
            if seg.damaged is not None and seg.damaged[0] <= seg.base_offset + lo:
                return
            seg.damaged = (seg.base_offset + lo, seg.next_offset)
            seg.readable_bytes = pos
            if not self._closed:
                self._publish(list(self._head.segments))
        log.error("log %s: segment %d is damaged at position %d (CRC check on read): offsets [%d, %d) "
                  "cannot be read; the rest of the log is served", self.path, seg.base_offset, pos,
                  seg.damaged[0], seg.damaged[1])

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """``(offset, max_timestamp)`` of the first batch whose max timestamp is >=
        ``timestamp_ms`` (the offset is that batch's base offset), or None if there is none."""
        self._check_open()
        for seg in self._head.segments:
            if seg.max_timestamp < timestamp_ms:
                continue
            try:
                h = seg.acquire()
            except FileNotFoundError:
                continue
            try:
                had = h._time_index is not None
                found = h.time_index.lookup(timestamp_ms)
                if not had and not h.writable:
                    self._cache.note_opened(h)
            finally:
                h.release()
            if found is not None:
                ts, rel = found
                off = seg.base_offset + rel
                if off >= self._log_start_offset:
                    return off, ts
        return None

    # --- roll, flush -----------------------------------------------------------------------------------

    def _roll_locked(self) -> LogSegment:
        old = self._head.segments[-1]
        if old.size == 0:
            return old
        new = LogSegment(self.path, old.next_offset, self._segment_config, self._cache)
        for p in (new.log_path, new.index_path, new.time_index_path):
            if os.path.exists(p):  # left from an earlier truncation that never got appended to
                self._fio.unlink(p)
        try:
            new.make_active()
        except OSError as e:  # e.g. ENOSPC preallocating: the old segment stays active
            new.abandon()
            for p in (new.log_path, new.index_path, new.time_index_path):
                try:
                    self._fio.unlink(p)
                except FileNotFoundError:
                    pass
            raise StorageError(f"cannot create segment {new.log_path}: {e}", errno=e.errno) from e
        old.make_inactive()
        old.verified = ((0, old.size),)  # every batch was validated, CRC included, on append
        old.unflushed = True
        self._rolled_since_flush = True
        self._dir_dirty = True
        self._publish(self._head.segments + (new,))
        log.debug("rolled %s at offset %d", self.path, new.base_offset)
        return new

    def roll(self) -> None:
        """Start a new active segment at the log end offset (no-op if the active one is empty)."""
        with self._lock:
            self._check_open()
            self._roll_locked()

    def maybe_roll(self, now_ms: int | None = None) -> bool:
        """Roll if the active segment is older than ``segment_ms``; True if it rolled."""
        now = _now_ms() if now_ms is None else now_ms
        with self._lock:
            if self._closed:
                return False
            seg = self._head.segments[-1]
            if seg.size > 0 and now - seg.created_ms >= self.config.segment_ms:
                self._roll_locked()
                return True
        return False

    def flush(self) -> None:
        """fdatasync everything appended so far and advance the recovery point to it. The
        fdatasync runs outside the log's lock, so appends and reads go on meanwhile."""
        with self._flush_lock:
            with self._lock:
                if self._closed:
                    return
                target = self._head.log_end_offset
                epoch = self._truncations
                todo = [s for s in self._head.segments if s.unflushed]
                for s in todo:
                    s.unflushed = False
                self._unflushed_messages = 0
                self._rolled_since_flush = False
            dir_dirty, self._dir_dirty = self._dir_dirty, False
            try:
                for s in todo:
                    if not s.deleted:
                        s.flush()
                if dir_dirty:  # new segment files must survive a crash too
                    fsync_dir(self.path)
            except OSError:
                for s in todo:
                    s.unflushed = True
                self._dir_dirty = self._dir_dirty or dir_dirty
                raise
            with self._lock:
                # A segment rolled after the capture may have an index not yet on disk: keep it
                # below the recovery point so recovery rebuilds it.
                for s in self._head.segments[:-1]:
                    if s.unflushed and s.base_offset < target:
                        target = min(target, s.base_offset)
                        break
                if epoch == self._truncations and target > self._recovery_point:
                    self._recovery_point = min(target, self._head.log_end_offset)
                self._last_flush_ms = _now_ms()

    def maybe_flush(self, now_ms: int | None = None) -> bool:
        """Flush if ``flush_ms`` has passed since the last flush with data waiting, or a
        segment was rolled since; True if it flushed."""
        now = _now_ms() if now_ms is None else now_ms
        fm = self.config.flush_ms
        due = self._rolled_since_flush or (
            fm is not None and now - self._last_flush_ms >= fm
            and (self._unflushed_messages > 0 or self._recovery_point < self.log_end_offset))
        if due and not self._closed:
            self.flush()
            return True
        return False

    # --- retention, truncation ---------------------------------------------------------------------

    def delete_old_segments(self, now_ms: int | None = None) -> int:
        """Delete the oldest whole segments beyond ``retention_bytes`` or older than
        ``retention_ms`` (by their largest batch timestamp, or file time if none). Never the
        active segment. Moves ``log_start_offset``; returns the number of segments deleted."""
        now = _now_ms() if now_ms is None else now_ms
        cfg = self.config
        with self._lock:
            if self._closed:
                return 0
            segs = list(self._head.segments)
            total = sum(s.size for s in segs)
            victims: list[LogSegment] = []
            for s in segs[:-1]:
                too_big = cfg.retention_bytes >= 0 and total - s.size >= cfg.retention_bytes
                ts = s.max_timestamp
                if ts < 0:
                    try:
                        ts = int(os.stat(s.log_path).st_mtime * 1000)
                    except FileNotFoundError:
                        ts = now
                too_old = cfg.retention_ms >= 0 and now - ts > cfg.retention_ms
                if not (too_big or too_old):
                    break
                victims.append(s)
                total -= s.size
            if not victims:
                return 0
            remaining = segs[len(victims):]
            self._log_start_offset = max(self._log_start_offset, remaining[0].base_offset)
            self._publish(remaining)
            for s in victims:
                s.mark_deleted()  # a rename under the lock (Kafka's asynchronous delete)...
            lso = self._log_start_offset
        for s in victims:
            s.unlink_deleted()  # ...the unlink of a possibly large file outside it
        log.info("retention deleted %d segments of %s; log start offset now %d", len(victims), self.path, lso)
        return len(victims)

    def truncate_to(self, offset: int) -> None:
        """Remove every batch holding an offset >= ``offset`` (a batch straddling ``offset``
        goes whole, so the log end may land below ``offset``); no-op if ``offset`` is at or past
        the end. ``offset`` at or below the log start empties the log, which restarts at
        ``offset``. Made durable before returning."""
        if offset < 0:
            raise OffsetOutOfRangeError(f"cannot truncate to negative offset {offset}",
                                        offset=offset, log_start_offset=self._log_start_offset,
                                        log_end_offset=self.log_end_offset)
        if offset < self.log_end_offset:
            self.producer_state.truncated(offset)
        with self._lock:
            self._check_open()
            segs = list(self._head.segments)
            if offset >= segs[-1].next_offset:
                return
            self._truncations += 1
            self.leader_epochs.truncate_from_end(offset)
            if offset <= self._log_start_offset:
                for s in segs:
                    s.delete()
                new = LogSegment(self.path, offset, self._segment_config, self._cache)
                new.make_active()
                self._dir_dirty = True
                self._log_start_offset = offset
                self._recovery_point = offset
                self._publish([new])
                return
            while segs[-1].base_offset >= offset:
                segs.pop().delete()
            seg = segs[-1]
            seg.make_active()
            seg.truncate_to(offset)
            seg.flush()
            seg.unflushed = False
            self._recovery_point = min(self._recovery_point, seg.next_offset)
            self._publish(segs)
            # A batch straddling ``offset`` went whole: drop epochs past the new end too.
            self.leader_epochs.truncate_from_end(seg.next_offset)

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Delete every segment and restart the log empty at ``offset`` (Kafka's name): a
        follower whose log lies wholly before the leader's log start (retention deleted what
        it needs) starts again where the leader's log starts."""
        self.producer_state.truncated(-1)
        with self._lock:
            self._check_open()
            self._truncations += 1
            for s in self._head.segments:
                s.delete()
            new = LogSegment(self.path, offset, self.config.segment_config, self._cache)
            for p in (new.log_path, new.index_path, new.time_index_path):
                if os.path.exists(p):
                    os.unlink(p)
            new.make_active()
            self._dir_dirty = True
            self._log_start_offset = offset
            self._recovery_point = offset
            self._publish([new])
            self.leader_epochs.clear()

    # --- close, delete ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Write the producer-state snapshot, flush, trim the active segment's files and
        release every descriptor."""
        if self._closed:
            return
        try:
            self.producer_state.write_snapshot(self)
        except AnnalError as exc:  # a damaged range read back: the log rebuilds the state later
            log.warning("%s: producer state not snapshotted at close: %s", self.path, exc)
        self.flush()  # the bulk, outside the lock
        with self._lock:
            if self._closed:
                return
            self._closed = True
            # Whatever was appended since, and the trimmed files, reach the disk before the
            # recovery point says so.
            for s in self._head.segments:
                was_active = s.is_active
                if s.unflushed and not was_active:
                    s.flush()
                s.close()
                if was_active:
                    s.flush()
                    _fsync_path(s.log_path, self._fio)
                s.unflushed = False
            self._recovery_point = self._head.log_end_offset
        if self._own_cache:
            self._cache.close()

    def abandon(self) -> None:
        """Drop every descriptor without flushing or trimming: the files stay as a crash would
        leave them (for crash tests)."""
        with self._lock:
            self._closed = True
            for s in self._head.segments:
                s.abandon()
        if self._own_cache:
            self._cache.close()

    def close_for_delete(self) -> None:
        """Mark the log deleted (later calls raise ``UnknownTopicOrPartitionError``) and drop its
        descriptors without flushing; the files are left for the caller to remove. Readers
        holding a result keep their open files."""
        with self._lock:
            self._closed = True
            self._deleted = True
            for s in self._head.segments:
                s.abandon()
                s.deleted = True
        if self._own_cache:
            self._cache.close()

    def delete(self) -> None:
        """Close the log and remove its folder."""
        self.close_for_delete()
        shutil.rmtree(self.path, ignore_errors=True)

    def __repr__(self) -> str:
        return (f"PartitionLog({self.path!r}, log_start_offset={self._log_start_offset}, "
                f"log_end_offset={self.log_end_offset}, segments={len(self._head.segments)})")

