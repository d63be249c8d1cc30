"""``LeaderEpochCache``: which leader epoch wrote which offsets of a log (Kafka's
``LeaderEpochFileCache``, KIP-101).

Every leader stamps the batches it appends with its leader epoch (the batch header's
``partitionLeaderEpoch``), and the log remembers where each epoch started. A follower that
starts following a new leader asks it for the end offset of its own latest epoch
(OffsetsForLeaderEpoch) and truncates to where the two histories agree, instead of to its
high watermark (which loses acknowledged records or keeps divergent ones: the 0.8 bugs that
KIP-101 fixed).

On disk, beside the segments, ``leader-epoch-checkpoint`` in Kafka's text format::

    0                      version
    2                      number of entries
    0 0                    epoch start_offset
    3 1200

written whole to a temporary file, fsync'ed and renamed over the old one, so a crash leaves
either the old or the new file.

Thread-safety: thread-safe (one lock).
"""

from __future__ import annotations

import bisect
import logging
import os
import threading

from annal.broker.storage._checkpoint import fsync_dir

__all__ = ["LeaderEpochCache", "FILE_NAME", "UNDEFINED_EPOCH", "UNDEFINED_OFFSET"]

log = logging.getLogger(__name__)

FILE_NAME = "leader-epoch-checkpoint"
UNDEFINED_EPOCH = -1
UNDEFINED_OFFSET = -1


class LeaderEpochCache:
    """Epoch -> start offset entries of one log, ascending in both."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, FILE_NAME)
        self._lock = threading.Lock()
        self._epochs: list[int] = []
        self._starts: list[int] = []
        self._load()

    # -- reading ---------------------------------------------------------------------------

    def entries(self) -> list[tuple[int, int]]:
        with self._lock:
            return list(zip(self._epochs, self._starts))

    @property
    def latest_epoch(self) -> int:
        with self._lock:
            return self._epochs[-1] if self._epochs else UNDEFINED_EPOCH

    def end_offset_for(self, epoch: int, log_end_offset: int) -> tuple[int, int]:
        """Kafka's ``endOffsetFor``: ``(e, end)`` with ``e`` the largest epoch <= ``epoch``
        known here and ``end`` the start offset of the epoch after it (the log end offset when
        ``e`` is the latest). ``(-1, -1)`` when every epoch here is larger than ``epoch``."""
        with self._lock:
            if not self._epochs:
                return UNDEFINED_EPOCH, UNDEFINED_OFFSET
            i = bisect.bisect_right(self._epochs, epoch)
            if i == 0:
                return UNDEFINED_EPOCH, UNDEFINED_OFFSET
            found = self._epochs[i - 1]
            end = self._starts[i] if i < len(self._epochs) else log_end_offset
            return found, end

    # -- writing ---------------------------------------------------------------------------

    def assign(self, epoch: int, start_offset: int) -> bool:
        """Record that ``epoch`` starts at ``start_offset`` (no-op unless ``epoch`` is newer than
        the latest). Entries at or after ``start_offset`` of older epochs are dropped first (they
        were truncated away). True when the file was rewritten."""
        if epoch < 0:
            return False
        with self._lock:
            if self._epochs and epoch <= self._epochs[-1]:
                return False
            while self._starts and self._starts[-1] >= start_offset:
                self._epochs.pop()
                self._starts.pop()
            self._epochs.append(epoch)
            self._starts.append(start_offset)
            self._write_locked()
            return True

    def truncate_from_end(self, end_offset: int) -> None:
        """The log was truncated to ``end_offset``: drop epochs that start at or after it."""
        with self._lock:
            changed = False
            while self._starts and self._starts[-1] >= end_offset:
                self._epochs.pop()
                self._starts.pop()
                changed = True
            if changed:
                self._write_locked()

    def clear(self) -> None:
        with self._lock:
            self._epochs.clear()
            self._starts.clear()
            self._write_locked()

    # -- file --------------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            with open(self.path, "r", encoding="ascii") as f:
                lines = f.read().split("\n")
        except FileNotFoundError:
            return
        try:
            if int(lines[0]) != 0:
                raise ValueError(f"version {lines[0]!r}")
            count = int(lines[1])
            for line in lines[2:2 + count]:
                e, s = line.split()
                self._epochs.append(int(e))
                self._starts.append(int(s))
        except (ValueError, IndexError) as exc:
            # A follower re-learns the epochs from the batches it fetches; a leader from its
            # own appends. Only truncation precision is lost.
            log.warning("ignoring unreadable %s: %s", self.path, exc)
            self._epochs.clear()
            self._starts.clear()

    def _write_locked(self) -> None:
        body = "0\n%d\n%s" % (len(self._epochs), "".join(f"{e} {s}\n" for e, s in zip(self._epochs, self._starts)))
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w", encoding="ascii") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            fsync_dir(os.path.dirname(self.path))
        except FileNotFoundError:
            pass  # the log's folder was deleted (topic deleted): nothing to keep
