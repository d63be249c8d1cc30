"""Memory-mapped index files of a segment (Kafka's ``AbstractIndex``, ``OffsetIndex``,
``TimeIndex``).

Both index files are arrays of fixed-width big-endian entries, with no header:

``.index`` (``OffsetIndex``, **dense**): entry ``i`` is a uint32, the position in the segment's
``.log`` of the batch that holds offset ``base_offset + i``. Every offset of the segment has an
entry, so finding an offset's batch is one array read, whatever the size of the log::

    entry i:  uint32 relative_position          (4 bytes; file length = 4 * offsets in segment)

``.timeindex`` (``TimeIndex``): one entry per batch whose max timestamp is larger than every
earlier batch's, so timestamps strictly increase down the file::

    entry j:  int64 max_timestamp_ms | int32 relative_offset (of that batch's first offset)

The active segment's index files are preallocated (a sparse file of ``max_index_bytes``, mapped
once, so appending an entry is a memory write) and trimmed to the entries in use on roll and on
clean close. An index of an inactive segment is mapped read-only at its exact size.

The writable mapping of an active segment's index is advised ``MADV_RANDOM``. Without it, the
kernel answers a page fault on a file mapping by reading around the faulting page (8 MiB of a
16 MiB index here), and for the sparse file of a new segment's index that means allocating and
zeroing thousands of pages inside the first store: 1.5-2.5 ms measured on ext4 (6.18 kernel),
taken while the appending thread holds the interpreter lock, so every other thread of the
broker, the event loop included, waited that long at each segment roll. With it, a fault maps
one page (about 10 us). The read-only mapping of an inactive segment's index keeps the default:
it has no holes, and a consumer reading an old segment from disk looks up entries in order, so
reading around a fault saves it the next ones.

Thread-safety: one writer (the owning log, under its lock) and any number of readers. An entry is
written before ``entries`` grows past it, so a reader that only looks below an ``entries`` (or
offset) it read earlier never sees an unwritten entry.
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import ClassVar

from annal.broker.storage._file_io import OS_FILE_IO, FileIO

__all__ = ["AbstractIndex", "OffsetIndex", "TimeIndex", "IndexCorruptError"]

_U32 = struct.Struct(">I")
RESERVE_STEP = 64 << 10  # bytes of index given disk blocks per ``reserve`` that needs any
_TIME_ENTRY = struct.Struct(">qi")


class IndexCorruptError(Exception):
    """An index file failed its sanity check; recovery rebuilds it from the ``.log``."""


class AbstractIndex:
    """An mmap'd array of fixed-size entries backed by a file (see the module docstring).

    ``writable=True`` opens the file for appending: it is grown (sparse) to ``max_index_bytes``
    and mapped read-write; its in-use entries are those of the existing file (rounded down to
    whole entries), which the caller may trust or ``reset()``. ``writable=False`` maps the file
    read-only at its current size.
    """

    ENTRY_SIZE: ClassVar[int] = 1

    def __init__(self, path: str, base_offset: int, max_index_bytes: int, writable: bool,
                 file_io: FileIO = OS_FILE_IO) -> None:
        self.path = path
        self.fio = fio = file_io
        self.base_offset = base_offset
        self.writable = writable
        self.entries_read = 0  # entries touched by lookups, for the O(1) lookup claim
        self._allocated = 0  # bytes from 0 known to have disk blocks (see reserve)
        es = self.ENTRY_SIZE
        flags = os.O_RDWR | os.O_CREAT if writable else os.O_RDONLY
        fd = fio.open(path, flags, 0o644)
        try:
            length = os.fstat(fd).st_size
            self._entries = length // es
            if writable:
                capacity = max(max_index_bytes // es * es, self._entries * es, es)
                if length != capacity:
                    fio.ftruncate(fd, capacity)
                self._capacity = capacity
                self._mm: mmap.mmap | None = mmap.mmap(fd, capacity)
                _no_read_around(self._mm)
            else:
                self._capacity = self._entries * es
                self._mm = mmap.mmap(fd, self._capacity, access=mmap.ACCESS_READ) if self._capacity else None
        finally:
            fio.close(fd)  # the mmap keeps its own descriptor

    # --- state -------------------------------------------------------------------------------

    @property
    def entries(self) -> int:
        return self._entries

    @property
    def max_entries(self) -> int:
        return self._capacity // self.ENTRY_SIZE

    def is_full(self, extra: int = 1) -> bool:
        return self._entries + extra > self.max_entries

    @property
    def size_bytes(self) -> int:
        return self._entries * self.ENTRY_SIZE

    def reset(self) -> None:
        """Forget every entry (before a rebuild)."""
        self._entries = 0

    def reserve(self, extra: int) -> None:
        """Allocate disk blocks for the next ``extra`` entries before they are written.

        The preallocated file is sparse; storing into a hole of a shared mapping when the
        filesystem is full raises SIGBUS, which would kill the broker. ``posix_fallocate`` of
        the pages about to be touched turns that into an ``OSError`` (ENOSPC) the caller can
        answer. One call per new page at most (``_allocated`` remembers how far it got)."""
        if not self.writable:
            return
        end = min((self._entries + extra) * self.ENTRY_SIZE, self._capacity)
        if end <= self._allocated:
            return
        # Whole pages, at least RESERVE_STEP bytes at a time (one open + fallocate + close
        # per 16 pages rather than per page: dense entries fill a page every 1,024 offsets).
        end = _page_round_up(max(end, min(self._allocated + RESERVE_STEP, self._capacity)), self._capacity)
        fd = self.fio.open(self.path, os.O_RDWR)
        try:
            self.fio.posix_fallocate(fd, self._allocated, end - self._allocated)
        finally:
            self.fio.close(fd)
        self._allocated = end

    def truncate_to_entries(self, n: int) -> None:
        if n < self._entries:
            self._entries = max(n, 0)

    # --- file lifecycle ------------------------------------------------------------------------

    def flush(self) -> None:
        """Write the in-use entries and the file length to disk (msync + fsync)."""
        if self._mm is not None and self.writable and self._entries:
            self._mm.flush(0, _page_round_up(self._entries * self.ENTRY_SIZE, self._capacity))
        fd = self.fio.open(self.path, os.O_RDONLY)
        try:
            self.fio.fsync(fd)
        finally:
            self.fio.close(fd)

    def trim_to_valid_size(self) -> None:
        """Cut the preallocated file down to the entries in use (on roll and clean close).

        The mapping stays valid for every entry in use, so concurrent readers are safe."""
        if not self.writable:
            return
        self.fio.truncate(self.path, self._entries * self.ENTRY_SIZE)

    def close(self) -> None:
        mm, self._mm = self._mm, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:  # a view is still exported; the mapping goes when it does
                pass

    def delete(self) -> None:
        self.close()
        try:
            self.fio.unlink(self.path)
        except FileNotFoundError:
            pass

    @property
    def closed(self) -> bool:
        return self._mm is None and self._capacity > 0


def _no_read_around(mm: mmap.mmap) -> None:
    """Advise ``MADV_RANDOM`` (see the module docstring); a platform without it keeps the
    default."""
    advice = getattr(mmap, "MADV_RANDOM", None)
    if advice is not None:
        try:
            mm.madvise(advice)
        except OSError:
            pass


def _page_round_up(n: int, cap: int) -> int:
    page = mmap.PAGESIZE
    return min(cap, (n + page - 1) // page * page)


class OffsetIndex(AbstractIndex):
    """Dense offset index: one uint32 relative file position per offset (see module docstring).

    ``lookup(offset)`` reads exactly one entry. ``entries_read`` counts every entry any lookup
    touched, so the O(1) claim can be checked without timing.
    """

    ENTRY_SIZE = 4

    def append_batch(self, relative_offset: int, count: int, relative_position: int) -> None:
        """Record that offsets ``[relative_offset, relative_offset + count)`` live in the batch at
        ``relative_position``. Offsets are dense, so ``relative_offset`` must equal ``entries``.
        The ``count`` entries are written with one slice assignment (no Python loop)."""
        if relative_offset != self._entries:
            raise ValueError(f"dense index expects relative offset {self._entries}, got {relative_offset}")
        if self._entries + count > self.max_entries:
            raise ValueError(f"offset index {self.path} is full ({self.max_entries} entries)")
        if not 0 <= relative_position <= 0xFFFFFFFF:
            raise ValueError(f"relative position {relative_position} does not fit in 4 bytes")
        assert self._mm is not None
        start = self._entries * 4
        self._mm[start : start + 4 * count] = relative_position.to_bytes(4, "big") * count
        self._entries += count

    def lookup(self, relative_offset: int) -> int:
        """Relative position of the batch holding ``base_offset + relative_offset``."""
        if not 0 <= relative_offset < self._entries:
            raise IndexError(f"relative offset {relative_offset} outside [0, {self._entries})")
        self.entries_read += 1
        assert self._mm is not None
        return _U32.unpack_from(self._mm, relative_offset * 4)[0]

    def last_position_at_most(self, lo: int, hi: int, limit: int, step: int = 1) -> tuple[int, int]:
        """``(r, position)`` of the largest relative offset ``r`` in ``[lo, hi)`` whose batch
        starts at or before ``limit`` (``lo`` must qualify). Positions never decrease, so this
        gallops from ``lo`` (first probe ``lo + step``; pass the distance to the next batch)
        then bisects: O(log k) entries for an answer k entries away, independent of the size
        of the index."""
        mm = self._mm
        assert mm is not None
        unpack = _U32.unpack_from
        good = lo
        step = max(step, 1)
        touched = 0
        bad = hi
        while True:
            probe = lo + step
            if probe >= hi:
                break
            touched += 1
            if unpack(mm, probe * 4)[0] <= limit:
                good = probe
                step *= 2
            else:
                bad = probe
                break
        while bad - good > 1:
            mid = (good + bad) // 2
            touched += 1
            if unpack(mm, mid * 4)[0] <= limit:
                good = mid
            else:
                bad = mid
        self.entries_read += touched
        return good, unpack(mm, good * 4)[0]

    def sanity_check(self) -> None:
        if self._entries and self._mm is not None and _U32.unpack_from(self._mm, 0)[0] != 0:
            raise IndexCorruptError(f"{self.path}: first entry is not position 0")


class TimeIndex(AbstractIndex):
    """Time index: ``(max_timestamp_ms int64, relative_offset int32)`` per batch that raised the
    segment's max timestamp (see module docstring). Lookups bisect."""

    ENTRY_SIZE = 12

    def entry(self, i: int) -> tuple[int, int]:
        assert self._mm is not None
        self.entries_read += 1
        ts, rel = _TIME_ENTRY.unpack_from(self._mm, i * 12)
        return ts, rel

    def last_entry(self) -> tuple[int, int] | None:
        return self.entry(self._entries - 1) if self._entries else None

    def maybe_append(self, max_timestamp: int, relative_offset: int) -> bool:
        """Add an entry if ``max_timestamp`` is larger than the last one's; True if added."""
        if self._entries:
            last_ts, last_rel = self.entry(self._entries - 1)
            if max_timestamp <= last_ts:
                return False
            if relative_offset <= last_rel:
                raise ValueError("time index offsets must increase")
        if self._entries + 1 > self.max_entries:
            raise ValueError(f"time index {self.path} is full ({self.max_entries} entries)")
        assert self._mm is not None
        _TIME_ENTRY.pack_into(self._mm, self._entries * 12, max_timestamp, relative_offset)
        self._entries += 1
        return True

    def lookup(self, timestamp_ms: int) -> tuple[int, int] | None:
        """``(max_timestamp, relative_offset)`` of the first entry with
        ``max_timestamp >= timestamp_ms``, or None if every batch is older."""
        lo, hi = 0, self._entries
        while lo < hi:
            mid = (lo + hi) // 2
            if self.entry(mid)[0] < timestamp_ms:
                lo = mid + 1
            else:
                hi = mid
        return self.entry(lo) if lo < self._entries else None

    def sanity_check(self) -> None:
        if self._entries >= 2:
            (t0, r0), (t1, r1) = self.entry(0), self.entry(self._entries - 1)
            if t1 < t0 or r1 < r0:
                raise IndexCorruptError(f"{self.path}: entries are not increasing")
