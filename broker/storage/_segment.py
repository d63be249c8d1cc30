"""One segment of a partition log (Kafka's ``LogSegment``): a ``.log`` file of record batches
plus its dense ``.index`` and its ``.timeindex`` (formats in ``_index.py``).

``.log`` is RecordBatch v2 batches back to back (layout in ``annal.record``), each with its
broker-assigned ``baseOffset``; the first batch's baseOffset is the segment's base offset (the
file name) and each batch starts at the previous one's next offset. Nothing else is in the file.

The active segment's ``.log`` is preallocated (a sparse file of ``segment_bytes``, mapped once
read-only; batches are written with ``pwrite`` at ``size``, which the mapping sees through the
page cache). A crash can therefore leave zeros after the last batch; recovery treats them like
any torn tail. On roll and on clean close the files are trimmed to the bytes in use.

Open descriptors live in a ``SegmentHandle`` (log fd for ``sendfile``, the log mapping, the index
mappings). The active segment's handle is pinned; an inactive segment's handle is opened on
demand through a shared, bounded ``HandleCache`` (``_handles.py``), so a broker can keep many more
segments than it has descriptors. Handles are reference-counted: a read holds its handle until
released, so eviction, roll or deletion never pulls a mapping out from under a reader (an unlinked
file stays readable through an open descriptor).

Thread-safety: mutators (``append``, ``truncate_to``, ``make_inactive``, ``recover``...) are
called by the owning ``PartitionLog`` under its lock. ``read_range`` and the lookups may run
concurrently with an append, given offsets below a log end offset read earlier (an entry is
written before the offsets it covers are published).
"""

from __future__ import annotations

import logging
import mmap
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from annal.errors import AnnalError, CorruptRecordError, StorageError
from annal.broker.storage._file_names import (
    DELETED_SUFFIX,
    index_file_name,
    log_file_name,
    time_index_file_name,
)
from annal.broker.storage._file_io import OS_FILE_IO, FileIO
from annal.broker.storage._index import IndexCorruptError, OffsetIndex, TimeIndex
from annal.record import (
    HEADER_SIZE,
    LOG_OVERHEAD,
    BatchHeader,
    batch_size_at,
    parse_header,
    validate_batch,
)

if TYPE_CHECKING:
    from annal.broker.storage._handles import HandleCache

__all__ = ["LogSegment", "SegmentHandle", "SegmentConfig", "ScanResult"]

log = logging.getLogger(__name__)

_WALK_BATCHES = 8  # batches a read walks by their length fields before searching the index


@dataclass(frozen=True, slots=True)
class SegmentConfig:
    """What a segment needs to know of its log's configuration."""

    segment_bytes: int = 1 << 30
    max_index_bytes: int = 64 << 20
    preallocate: bool = False
    # Where file writes go (``_file_io.py``): the OS, or a simulated disk in tests.
    file_io: FileIO = field(default=OS_FILE_IO, compare=False)


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What ``LogSegment.recover`` found."""

    batches: int
    valid_bytes: int
    bytes_truncated: int
    error: str | None  # why the scan stopped early, or None if the whole file was valid


LOG_GROWTH_MIN = 8 << 20  # the smallest step by which an active ``.log`` (and its mapping) grows


class SegmentHandle:
    """The open descriptors of one segment, reference-counted.

    ``log_fd`` (for ``sendfile``), ``log_mm`` (read-only mapping of the ``.log``), ``index`` and,
    on demand, ``time_index``. ``close()`` happens when the handle is retired (evicted, rolled,
    deleted) *and* no reader holds it. Thread-safe.
    """

    __slots__ = ("segment", "writable", "fio", "log_fd", "log_mm", "index", "_time_index", "_refs", "_retired",
                 "_closed", "_lock", "__weakref__")

    def __init__(self, segment: LogSegment, writable: bool) -> None:
        self.segment = segment
        self.writable = writable
        self._lock = threading.Lock()
        self._refs = 0
        self._retired = False
        self._closed = False
        cfg = segment.config
        self.fio = fio = cfg.file_io
        flags = (os.O_RDWR | os.O_CREAT) if writable else os.O_RDONLY
        self.log_fd = fio.open(segment.log_path, flags, 0o644)
        self.log_mm: mmap.mmap | None = None
        self._time_index: TimeIndex | None = None
        try:
            length = os.fstat(self.log_fd).st_size
            if writable:
                capacity = max(length, cfg.segment_bytes if cfg.preallocate else 0)
                if capacity > length:
                    fio.ftruncate(self.log_fd, capacity)
                length = capacity
            if length:
                self.log_mm = mmap.mmap(self.log_fd, length, access=mmap.ACCESS_READ)
            self.index = OffsetIndex(segment.index_path, segment.base_offset, cfg.max_index_bytes, writable, fio)
            if writable:
                self._time_index = TimeIndex(
                    segment.time_index_path, segment.base_offset, cfg.max_index_bytes, True, fio
                )
        except BaseException:
            self._close_now()
            raise

    @property
    def fd_count(self) -> int:
        n = 1 + (self.log_mm is not None) + (self.index._mm is not None)
        if self._time_index is not None and self._time_index._mm is not None:
            n += 1
        return n

    @property
    def time_index(self) -> TimeIndex:
        ti = self._time_index
        if ti is None:
            with self._lock:
                if self._time_index is None:
                    self._time_index = TimeIndex(
                        self.segment.time_index_path, self.segment.base_offset, 0, False, self.fio
                    )
                ti = self._time_index
        return ti

    @property
    def log_capacity(self) -> int:
        return len(self.log_mm) if self.log_mm is not None else 0

    def ensure_log_capacity(self, end: int) -> None:
        """Grow the file and its mapping so ``[0, end)`` is mapped. The previous mapping stays
        alive as long as views of it do.

        The file grows geometrically (to twice its size, at least ``LOG_GROWTH_MIN`` bytes, at
        most ``segment_bytes`` unless one append needs more): growing it to exactly ``end`` on
        every append cost an ``ftruncate``, a new mapping and an unmap per request (seven
        system calls; removing them took data-port produce with 1 MiB requests from 16 % to
        7 % below the broker that appended on its event loop, docs/benchmarks/broker.md).
        The part past the data is a hole (no disk blocks); roll and clean close cut it
        (``make_inactive``), recovery cuts it after a crash, so a data dir's apparent size is
        at most its data plus one active segment's worth while the broker runs."""
        cur = self.log_capacity
        if end <= cur:
            return
        limit = self.segment.config.segment_bytes
        cap = max(end, min(limit, max(2 * cur, cur + LOG_GROWTH_MIN)))
        self.fio.ftruncate(self.log_fd, cap)
        self.log_mm = mmap.mmap(self.log_fd, cap, access=mmap.ACCESS_READ)

    def acquire(self) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._refs += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._refs -= 1
            close = self._refs <= 0 and self._retired and not self._closed
            if close:
                self._closed = True
        if close:
            self._close_now()

    def retire(self) -> None:
        """No new reader will get this handle; close it once the current ones are done."""
        with self._lock:
            self._retired = True
            close = self._refs <= 0 and not self._closed
            if close:
                self._closed = True
        if close:
            self._close_now()

    @property
    def closed(self) -> bool:
        return self._closed

    def _close_now(self) -> None:
        for idx in (getattr(self, "index", None), self._time_index):
            if idx is not None:
                idx.close()
        mm, self.log_mm = self.log_mm, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # a LogReadResult view is still alive; the mapping goes with it
        if self.log_fd >= 0:
            self.fio.close(self.log_fd)
            self.log_fd = -1


class LogSegment:
    """A segment: ``<base>.log`` + ``<base>.index`` + ``<base>.timeindex`` (module docstring).

    In-memory state: ``size`` (valid bytes of ``.log``), ``next_offset`` (one past the last
    offset), ``max_timestamp`` (largest batch max timestamp, -1 if none), ``created_ms``.
    """

    def __init__(self, directory: str, base_offset: int, config: SegmentConfig, cache: HandleCache) -> None:
        self.directory = directory
        self.base_offset = base_offset
        self.config = config
        self.cache = cache
        self.log_path = log_file_name(directory, base_offset)
        self.index_path = index_file_name(directory, base_offset)
        self.time_index_path = time_index_file_name(directory, base_offset)
        self.size = 0
        self.next_offset = base_offset
        self.max_timestamp = -1
        self.created_ms = int(time.time() * 1000)
        self.deleted = False
        self._active: SegmentHandle | None = None
        self.unflushed = False  # data written since the last flush of this segment's files
        # A trusted (flushed) segment found damaged at open: offsets [start, end) cannot be
        # read; ``readable_bytes`` is where its valid batches stop. None: the whole segment.
        self.damaged: tuple[int, int] | None = None
        self.readable_bytes = 0
        # Inactive segments: byte ranges [start, end) of whole batches whose CRC-32C was checked
        # since open (on read, or on append for a segment this process rolled). Sorted and
        # disjoint; replaced whole, never changed in place, so a reader on another thread sees
        # the old or the new ranges.
        self.verified: tuple[tuple[int, int], ...] = ()

    MAX_VERIFIED_RANGES = 64

    def unverified_from(self, start: int, end: int) -> int:
        """Where the first byte of ``[start, end)`` not yet CRC-checked is (``end`` when all
        were); ranges are batch-aligned, so the result is a batch boundary."""
        for a, b in self.verified:
            if a <= start < b:
                start = b
            elif a > start:
                break
        return min(start, end)

    def mark_verified(self, start: int, end: int) -> None:
        """Record ``[start, end)`` (whole batches) as CRC-checked, merged with the ranges it
        touches. At most ``MAX_VERIFIED_RANGES`` are kept (the largest): a consumer reading
        at random only costs a check again."""
        out = []
        for a, b in self.verified:
            if b < start or a > end:
                out.append((a, b))
            else:
                start, end = min(a, start), max(b, end)
        out.append((start, end))
        if len(out) > self.MAX_VERIFIED_RANGES:
            out = sorted(out, key=lambda r: r[1] - r[0])[-self.MAX_VERIFIED_RANGES:]
        out.sort()
        self.verified = tuple(out)

    def __repr__(self) -> str:
        return (f"LogSegment(base_offset={self.base_offset}, next_offset={self.next_offset}, "
                f"size={self.size}, active={self.is_active})")

    # --- handles -------------------------------------------------------------------------------

    @property
    def is_active(self) -> bool:
        return self._active is not None

    def make_active(self) -> SegmentHandle:
        """Open the writable handle (preallocating the files) and pin it."""
        if self._active is None:
            self.cache.invalidate(self)
            h = SegmentHandle(self, writable=True)
            h.acquire()  # the pin
            self._active = h
        return self._active

    def make_inactive(self) -> None:
        """Trim the files to the bytes in use and drop the writable handle (on roll, close)."""
        h = self._active
        if h is None:
            return
        self._active = None
        # ``size`` is the file's data length, damaged bytes included: those are kept for
        # inspection (dump_log) and never cut by recovery.
        h.fio.ftruncate(h.log_fd, self.size)
        h.index.trim_to_valid_size()
        h.time_index.trim_to_valid_size()
        h.retire()
        h.release()

    def acquire(self) -> SegmentHandle:
        """A handle with a reference taken: ``release()`` it when done."""
        while True:
            h = self._active
            if h is not None:
                if h.acquire():
                    return h
                continue  # rolled in the meantime: go through the cache
            if self.deleted:
                raise FileNotFoundError(self.log_path)
            return self.cache.acquire(self)

    def open_read_handle(self) -> SegmentHandle:
        """Called by the cache: a new read-only handle."""
        return SegmentHandle(self, writable=False)

    # --- append / read -------------------------------------------------------------------------

    def append(self, data: memoryview, headers: list[BatchHeader]) -> None:
        """Write already-validated batches (baseOffsets assigned, contiguous from
        ``next_offset``) at the end of the segment and index them."""
        h = self._active
        assert h is not None, "append to an inactive segment"
        pos = self.size
        end = pos + len(data)
        try:
            # Index pages first: a full disk must fail here, before anything is written.
            h.index.reserve(sum(hd.records_count for hd in headers))
            h.time_index.reserve(len(headers))
            h.ensure_log_capacity(end)
            written = 0
            pwrite = h.fio.pwrite
            while written < len(data):
                written += pwrite(h.log_fd, data[written:], pos + written)
        except OSError as e:
            raise StorageError(f"write to {self.log_path} failed: {e}", errno=e.errno) from e
        ti = h.time_index
        rel = pos
        for hd in headers:
            h.index.append_batch(hd.base_offset - self.base_offset, hd.records_count, rel)
            if ti.maybe_append(hd.max_timestamp, hd.base_offset - self.base_offset):
                self.max_timestamp = hd.max_timestamp
            rel += hd.batch_length + LOG_OVERHEAD
        self.size = end
        self.next_offset = headers[-1].next_offset
        self.unflushed = True

    def can_fit(self, nbytes: int, noffsets: int, nbatches: int) -> bool:
        """Whether a write of that many bytes/offsets/batches stays within the segment's limits
        (an empty segment takes anything, as in Kafka)."""
        if self.size == 0:
            return True
        h = self._active
        assert h is not None
        return (
            self.size + nbytes <= self.config.segment_bytes
            and not h.index.is_full(noffsets)
            and not h.time_index.is_full(nbatches)
        )

    def index_has_room(self, noffsets: int, nbatches: int) -> bool:
        h = self._active
        assert h is not None
        return not h.index.is_full(noffsets) and not h.time_index.is_full(nbatches)

    def read_range(self, h: SegmentHandle, offset: int, max_bytes: int, end_offset: int, size: int) -> tuple[int, int]:
        """``(start, end)`` byte positions of the whole batches to return for a read at
        ``offset`` (< ``end_offset``) within the first ``size`` bytes: the batch holding
        ``offset``, then as many following batches as fit in ``max_bytes`` (at least one)."""
        idx = h.index
        rel = offset - self.base_offset
        start = idx.lookup(rel)
        limit = start + max_bytes
        if size <= limit:
            return start, size
        mm = h.log_mm
        if mm is None or size - start < HEADER_SIZE:
            raise CorruptRecordError(f"{self.log_path}: no batch at position {start}", position=start)
        first = batch_size_at(mm, start)
        if first < HEADER_SIZE:
            raise CorruptRecordError(f"{self.log_path}: no batch at position {start}", position=start)
        if start + first >= limit:
            return start, start + first
        # A fetch usually spans a few batches: walk their length fields first...
        pos = start + first
        for _ in range(_WALK_BATCHES):
            n = batch_size_at(mm, pos)
            if n < HEADER_SIZE:
                raise CorruptRecordError(f"{self.log_path}: no batch at position {pos}", position=pos)
            if pos + n > limit:
                return start, pos
            pos += n
            if pos >= size:
                return start, size
        # ...then gallop through the index from there, in steps of about a batch: O(log k).
        hd = parse_header(mm, pos)
        _, end = idx.last_position_at_most(
            hd.base_offset - self.base_offset, end_offset - self.base_offset, limit, hd.records_count
        )
        return start, end

    # --- recovery ------------------------------------------------------------------------------

    def recover_trusted(self, end_offset: int, max_batch_bytes: int | None) -> ScanResult:
        """Rebuild the indexes of a segment below the recovery point (flushed: trusted) whose
        index check failed, **without cutting anything**: the scan stops at the first invalid
        batch, and offsets from there to ``end_offset`` (the next segment's base) are marked
        ``damaged``; the file keeps its bytes. The one thing cut is a tail of zeros after a
        scan that found every offset up to ``end_offset``: the unused part of a file that grew
        in steps (``ensure_log_capacity``) whose cut at roll was not on disk yet. Leaves the
        segment inactive (indexes trimmed)."""
        try:
            file_bytes = os.stat(self.log_path).st_size
        except FileNotFoundError:
            file_bytes = 0
        result = self.recover(max_batch_bytes, truncate=False, file_bytes=file_bytes)
        self.readable_bytes = result.valid_bytes
        h = self._active
        if (self.next_offset == end_offset and result.valid_bytes < file_bytes and h is not None
                and h.log_mm is not None
                and _nonzero_tail_length(h.log_mm, result.valid_bytes, min(file_bytes, h.log_capacity)) == 0):
            # Every offset is there and only zeros follow: the hole of a segment that grew in
            # steps while it was active and was rolled (or flushed) without its cut to size
            # reaching the disk before the broker stopped. Cutting it loses nothing.
            result = ScanResult(result.batches, result.valid_bytes, 0, None)
        elif result.error is not None or self.next_offset != end_offset:
            self.damaged = (self.next_offset, end_offset)
            self.size = file_bytes
        self.next_offset = max(self.next_offset, end_offset)
        self.make_inactive()
        return result

    def recover(self, max_batch_bytes: int | None, *, truncate: bool = True,
                file_bytes: int | None = None) -> ScanResult:
        """Rebuild both indexes by scanning the ``.log`` batch by batch with ``validate_batch``
        (and checking each baseOffset follows the previous batch); cut the file at the first
        torn, corrupt or out-of-sequence batch (``truncate=False``: only stop there; the scan
        covers ``file_bytes``). Leaves the segment active (writable handle)."""
        h = self.make_active()
        h.index.reset()
        h.time_index.reset()
        self.max_timestamp = -1
        mm = h.log_mm
        file_len = h.log_capacity if file_bytes is None else min(file_bytes, h.log_capacity)
        pos = 0
        expected = self.base_offset
        batches = 0
        error: str | None = None
        while mm is not None and pos < file_len:
            try:
                hd = validate_batch(mm, pos, max_batch_bytes)
            except AnnalError as e:
                error = f"{type(e).__name__}: {e.message}"
                break
            if hd.base_offset != expected:
                error = f"baseOffset {hd.base_offset} where {expected} was expected"
                break
            if not self.index_has_room(hd.records_count, 1):
                error = "index full"
                break
            h.index.reserve(hd.records_count)  # ENOSPC here, not SIGBUS in the mapping
            h.time_index.reserve(1)
            h.index.append_batch(hd.base_offset - self.base_offset, hd.records_count, pos)
            if h.time_index.maybe_append(hd.max_timestamp, hd.base_offset - self.base_offset):
                self.max_timestamp = hd.max_timestamp
            pos += hd.batch_length + LOG_OVERHEAD
            expected = hd.next_offset
            batches += 1
        truncated = _nonzero_tail_length(mm, pos, file_len) if mm is not None else 0
        if error is not None and truncated == 0:
            error = None  # only preallocated zeros after the last batch: a clean end
        self.size = pos
        self.readable_bytes = pos
        self.next_offset = expected
        if not truncate:
            if error is None and pos < file_len:
                error = f"{file_len - pos} bytes after the last valid batch"
            self.unflushed = True
            return ScanResult(batches, pos, 0, error)
        if pos < file_len:
            # Cut the tail (no reader exists yet during recovery), then preallocate again.
            h.log_mm = None
            if mm is not None:
                mm.close()
            h.fio.ftruncate(h.log_fd, pos)
            h.fio.ftruncate(h.log_fd, max(pos, self.config.segment_bytes if self.config.preallocate else pos))
            cap = os.fstat(h.log_fd).st_size
            h.log_mm = mmap.mmap(h.log_fd, cap, access=mmap.ACCESS_READ) if cap else None
        self.unflushed = True
        return ScanResult(batches, pos, truncated, error)

    def load_clean(self, verify_last_batch: bool = False) -> None:
        """Load an inactive segment trusted to be whole (flushed, below the recovery point):
        size from the file, next offset and max timestamp from the last index entries, then an
        O(1) sanity check that the last index entry points at a batch ending at the end of the
        file and holding the last indexed offset. ``verify_last_batch`` also checks that last
        batch in full (CRC-32C included): the end of the last segment is where the last write
        went. Raises ``IndexCorruptError`` if it does not add up (the caller then runs
        ``recover``)."""
        try:
            size = os.stat(self.log_path).st_size
            n_index = os.stat(self.index_path).st_size
            n_time = os.stat(self.time_index_path).st_size
        except FileNotFoundError as e:
            raise IndexCorruptError(f"missing index file: {e.filename}") from e
        if n_index % OffsetIndex.ENTRY_SIZE or n_time % TimeIndex.ENTRY_SIZE:
            raise IndexCorruptError(f"{self.index_path}: size is not a whole number of entries")
        self.size = size
        if size == 0:
            if n_index:
                raise IndexCorruptError(f"{self.index_path}: entries for an empty log")
            self.next_offset = self.base_offset
            return
        h = self.cache.acquire(self)
        try:
            idx = h.index
            if idx.entries == 0:
                raise IndexCorruptError(f"{self.index_path}: empty index for a non-empty log")
            idx.sanity_check()
            last_pos = idx.lookup(idx.entries - 1)
            assert h.log_mm is not None
            try:
                hd = validate_batch(h.log_mm, last_pos) if verify_last_batch else parse_header(h.log_mm, last_pos)
            except AnnalError as e:
                raise IndexCorruptError(f"{self.index_path}: last entry points at no valid batch: {e}") from e
            last = self.base_offset + idx.entries - 1
            if last_pos + hd.batch_length + LOG_OVERHEAD != size or hd.last_offset != last or hd.base_offset > last:
                raise IndexCorruptError(f"{self.index_path}: last entry does not match the end of {self.log_path}")
            if idx.lookup(0) != 0 or parse_header(h.log_mm, 0).base_offset != self.base_offset:
                raise IndexCorruptError(f"{self.log_path}: first batch does not start at the base offset")
            ti = h.time_index
            ti.sanity_check()
            last_t = ti.last_entry()
            self.max_timestamp = last_t[0] if last_t is not None else -1
            self.next_offset = last + 1
        finally:
            h.release()

    # --- truncation, flush, deletion -------------------------------------------------------------

    def truncate_to(self, offset: int) -> int:
        """Remove every batch whose last offset is >= ``offset`` (the batch holding ``offset``
        goes whole). Returns bytes removed. The segment must be active. The removed bytes are
        overwritten with zeros rather than cut, so a concurrent reader's mapping stays valid,
        and a crash cannot bring the batches back."""
        h = self._active
        assert h is not None
        if offset >= self.next_offset:
            return 0
        rel = max(offset - self.base_offset, 0)
        pos = h.index.lookup(rel) if rel < h.index.entries else self.size
        assert h.log_mm is not None or pos == 0
        new_next = self.base_offset if pos == 0 else parse_header(h.log_mm, pos).base_offset  # type: ignore[arg-type]
        removed = self.size - pos
        zeros = bytes(min(removed, 1 << 20))
        at = pos
        while at < self.size:
            n = min(len(zeros), self.size - at)
            h.fio.pwrite(h.log_fd, zeros[:n], at)
            at += n
        h.index.truncate_to_entries(new_next - self.base_offset)
        ti = h.time_index
        keep = 0
        lo, hi = 0, ti.entries
        while lo < hi:  # entries whose relative offset < new_next stay
            mid = (lo + hi) // 2
            if ti.entry(mid)[1] < new_next - self.base_offset:
                lo = mid + 1
            else:
                hi = mid
        keep = lo
        ti.truncate_to_entries(keep)
        last = ti.last_entry()
        self.max_timestamp = last[0] if last is not None else -1
        self.size = pos
        self.next_offset = new_next
        self.unflushed = True
        return removed

    def flush(self) -> None:
        """fdatasync the ``.log``; for an inactive segment also its (trimmed) index files, so a
        segment below the recovery point is trusted whole after a crash. Uses a fresh descriptor:
        safe while the handle is evicted or retired concurrently; a segment deleted meanwhile has
        nothing to flush."""
        paths = [self.log_path] if self.is_active else [self.log_path, self.index_path, self.time_index_path]
        fio = self.config.file_io
        for i, path in enumerate(paths):
            try:
                fd = fio.open(path, os.O_RDONLY)
            except FileNotFoundError:
                return
            try:
                (fio.fdatasync if i == 0 else fio.fsync)(fd)
            finally:
                fio.close(fd)

    def close(self) -> None:
        """Trim and release the files (clean shutdown)."""
        self.make_inactive()
        self.cache.invalidate(self)

    def abandon(self) -> None:
        """Release descriptors without trimming or flushing anything, as a crash would leave
        the files (used to simulate crashes in tests)."""
        h, self._active = self._active, None
        if h is not None:
            h.retire()
            h.release()
        self.cache.invalidate(self)

    def delete(self) -> None:
        """Remove the segment's files: ``mark_deleted`` then ``unlink_deleted``."""
        self.mark_deleted()
        self.unlink_deleted()

    def mark_deleted(self) -> None:
        """Rename the files to ``.deleted`` (cheap; done under the log's lock), so a crash before
        ``unlink_deleted`` leaves files recovery knows to remove. Readers holding a handle keep
        reading the renamed (later unlinked) files."""
        self.deleted = True
        h, self._active = self._active, None
        if h is not None:
            h.retire()
            h.release()
        self.cache.invalidate(self)
        fio = self.config.file_io
        for path in (self.log_path, self.index_path, self.time_index_path):
            try:
                fio.rename(path, path + DELETED_SUFFIX)
            except FileNotFoundError:
                continue

    def unlink_deleted(self) -> None:
        """Unlink the ``.deleted`` files (slow for a large file on some file systems: called
        outside the log's lock, so appends and reads do not wait for it)."""
        fio = self.config.file_io
        for path in (self.log_path, self.index_path, self.time_index_path):
            try:
                fio.unlink(path + DELETED_SUFFIX)
            except FileNotFoundError:
                pass


def _nonzero_tail_length(mm: mmap.mmap, pos: int, end: int) -> int:
    """Bytes after ``pos`` up to the start of the all-zero preallocated tail (chunks of 64 KiB)."""
    chunk = 1 << 16
    last_nonzero_end = pos
    at = pos
    while at < end:
        n = min(chunk, end - at)
        block = mm[at : at + n]
        if block.count(0) == n:
            break
        last_nonzero_end = at + len(block.rstrip(b"\0"))
        at += n
    return last_nonzero_end - pos
