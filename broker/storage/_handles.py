"""A bounded LRU cache of open segment handles, shared by every log of a broker.

Active segments keep their handle pinned outside this cache. An inactive segment's descriptors
(its ``.log`` fd and the mappings of ``.log``, ``.index`` and, when used, ``.timeindex``: 3-4
descriptors, since every ``mmap`` holds its own) are opened on demand here and closed when the
cache holds more than ``max_fds`` descriptors, least recently used first. A handle a reader still
holds is retired, not closed, and closes when released; so the bound can be exceeded briefly by
handles in use, never by idle ones.

Thread-safe (one lock; opening a handle happens outside it).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from annal.broker.storage._segment import LogSegment, SegmentHandle

__all__ = ["HandleCache", "DEFAULT_MAX_FDS"]

DEFAULT_MAX_FDS = 512


class HandleCache:
    """LRU of ``SegmentHandle`` keyed by segment, bounded by total descriptors (``max_fds``)."""

    def __init__(self, max_fds: int = DEFAULT_MAX_FDS) -> None:
        if max_fds < 4:
            raise ValueError("max_fds must be at least 4")
        self.max_fds = max_fds
        self._lock = threading.Lock()
        self._handles: OrderedDict[int, SegmentHandle] = OrderedDict()
        self.opened = 0  # handles opened so far (misses)
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._handles)

    @property
    def fd_count(self) -> int:
        with self._lock:
            return sum(h.fd_count for h in self._handles.values())

    def acquire(self, segment: LogSegment) -> SegmentHandle:
        """The segment's handle with one reference taken (opened if not cached)."""
        key = id(segment)
        with self._lock:
            h = self._handles.get(key)
            if h is not None and h.segment is segment and h.acquire():
                self._handles.move_to_end(key)
                return h
        new = segment.open_read_handle()
        new.acquire()
        retire: list[SegmentHandle] = []
        with self._lock:
            old = self._handles.pop(key, None)
            if old is not None:
                retire.append(old)
            if segment.deleted or segment.is_active:
                retire.append(new)  # use it once, do not cache it
                new.acquire()  # balanced by the retire below
            else:
                self._handles[key] = new
                self.opened += 1
                total = sum(h.fd_count for h in self._handles.values())
                while total > self.max_fds and len(self._handles) > 1:
                    k, victim = next(iter(self._handles.items()))
                    if victim is new:
                        break
                    del self._handles[k]
                    total -= victim.fd_count
                    retire.append(victim)
                    self.evicted += 1
        for h in retire:
            h.retire()
            if h is new:
                h.release()
        return new

    def note_opened(self, handle: SegmentHandle) -> None:
        """Re-check the bound after a cached handle opened another descriptor (time index)."""
        retire: list[SegmentHandle] = []
        with self._lock:
            total = sum(h.fd_count for h in self._handles.values())
            while total > self.max_fds and len(self._handles) > 1:
                k, victim = next(iter(self._handles.items()))
                if victim is handle:
                    self._handles.move_to_end(k)
                    k, victim = next(iter(self._handles.items()))
                del self._handles[k]
                total -= victim.fd_count
                retire.append(victim)
                self.evicted += 1
        for h in retire:
            h.retire()

    def invalidate(self, segment: LogSegment) -> None:
        """Drop the segment's cached handle (segment deleted, rolled back to active, closed)."""
        with self._lock:
            h = self._handles.pop(id(segment), None)
        if h is not None:
            h.retire()

    def close(self) -> None:
        with self._lock:
            handles = list(self._handles.values())
            self._handles.clear()
        for h in handles:
            h.retire()
