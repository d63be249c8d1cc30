"""``ProducerStateManager``: what each idempotent producer last wrote to one partition (Kafka's
``ProducerStateManager``).

A batch whose header carries a producer id (``producerId >= 0``) comes from an idempotent
producer: its header also holds the producer's epoch and the sequence number of its first
record (``baseSequence``); a producer numbers the records it sends to a partition 0, 1, 2, ...
The leader keeps, per producer, the epoch and the last ``MAX_CACHED_BATCHES`` batches' (first
sequence, last sequence, base offset) and checks each new batch before it is appended:

- equal to one of those batches: a retry of a batch already written (its answer was lost).
  It is not written again; the producer is answered with the original base offset.
- the next sequence (last sequence + 1, or 0 for a producer new to the partition or a new
  epoch): appended.
- anything else: ``OutOfOrderSequenceNumberError`` (Kafka's OUT_OF_ORDER_SEQUENCE_NUMBER); an
  epoch older than the one seen: ``InvalidProducerEpochError``.

The state is built from the log itself, which is the truth: the header of every batch says who
wrote it. It is loaded the first time an idempotent batch reaches the partition, and kept up to
date by the appends that go through ``check``; batches that reach the log another way (appends
without a producer id, a follower's fetches while this broker did not lead) are read back from
their headers before the next check (``_catch_up``). A new leader epoch (this broker led, then
followed and maybe truncated, and leads again) rebuilds the state.

On disk, beside the segments, ``producer-snapshot`` (JSON)::

    {"version": 1, "offset": 1200, "epoch_at": 3,
     "producers": [[producer_id, epoch, [[first_seq, last_seq, base_offset], ...]], ...]}

the state as of log offset ``offset`` (every batch below it is in it), and ``epoch_at`` the
leader epoch of the batch just below ``offset`` (-1 if none). Written to a temporary file,
fsync'ed and renamed, when the active segment rolls and when the log closes. Loading starts
from the snapshot when ``offset`` is at most the log end and the log's leader-epoch history
still gives the batch below ``offset`` the same epoch (a truncation followed by other batches
would not), then reads the headers of the batches from ``offset`` to the log end: after a crash
about one segment's worth. Without a usable snapshot, every batch header of the log is read
(proportional to the partition's size, logged). A truncation below the snapshot removes it.

Thread-safety: ``lock`` serialises check-and-append for the partition; the caller holds it
around ``check`` + the append + ``appended``. ``truncated`` and ``write_snapshot`` take it
themselves.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
from typing import Any

from annal.errors import InvalidProducerEpochError, InvalidRequestError, OutOfOrderSequenceNumberError
from annal.record import BatchHeader, iter_batch_positions, parse_header

from annal.broker.storage._checkpoint import fsync_dir

__all__ = ["ProducerStateManager", "SNAPSHOT_FILE", "MAX_CACHED_BATCHES"]

log = logging.getLogger(__name__)

SNAPSHOT_FILE = "producer-snapshot"
MAX_CACHED_BATCHES = 5  # Kafka's: a producer has at most 5 requests in flight per connection
_READ_BYTES = 8 * 1024 * 1024
_SEQ_MASK = 0x7FFFFFFF  # sequences wrap at 2^31


class _Producer:
    __slots__ = ("epoch", "batches")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.batches: collections.deque[tuple[int, int, int]] = collections.deque(maxlen=MAX_CACHED_BATCHES)


class ProducerStateManager:
    """Idempotent producers' state of one partition log (see the module docstring)."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, SNAPSHOT_FILE)
        self.lock = threading.RLock()
        self.producers: dict[int, _Producer] = {}
        self.loaded = False
        self.end = 0  # every batch below this offset is in ``producers``
        self.leader_epoch: int | None = None  # the epoch the state was checked under
        self._snapshot_segment = -1  # base offset of the active segment at the last snapshot

    # -- checking ------------------------------------------------------------------------------

    @staticmethod
    def producer_id(buf: Any) -> int:
        """The producer id of the first batch in ``buf`` (-1: none, or too short to say)."""
        if len(buf) < 61:
            return -1
        return int.from_bytes(buf[43:51], "big", signed=True)

    def check(self, plog: Any, buf: Any, leader_epoch: int | None) -> tuple[BatchHeader, tuple[int, int] | None]:
        """Check the one batch in ``buf`` against the state, with ``lock`` held. Returns its
        header and, for a duplicate, ``(base offset, last offset)`` of the batch already in the
        log (then nothing is to be appended). Raises ``InvalidRequestError`` (not exactly one
        batch, no base sequence), ``OutOfOrderSequenceNumberError``, ``InvalidProducerEpochError``."""
        positions = list(iter_batch_positions(buf))
        if len(positions) != 1 or positions[0][1] != len(buf):
            raise InvalidRequestError("an idempotent produce must carry exactly one batch per partition")
        h = parse_header(buf, 0)
        if h.base_sequence < 0:
            raise InvalidRequestError("a batch with a producer id must have a base sequence")
        if h.producer_epoch < 0:
            raise InvalidRequestError("a batch with a producer id must have a producer epoch")
        self._ensure_current(plog, leader_epoch)
        first = h.base_sequence
        last = (first + h.last_offset_delta) & _SEQ_MASK
        p = self.producers.get(h.producer_id)
        if p is None:
            if first != 0:
                raise OutOfOrderSequenceNumberError(
                    f"producer {h.producer_id} is new to this partition and must start at sequence 0, not {first}")
        elif h.producer_epoch < p.epoch:
            raise InvalidProducerEpochError(
                f"producer {h.producer_id} epoch {h.producer_epoch} is older than its epoch {p.epoch}")
        elif h.producer_epoch > p.epoch:
            if first != 0:
                raise OutOfOrderSequenceNumberError(
                    f"producer {h.producer_id} epoch {h.producer_epoch} must start at sequence 0, not {first}")
        else:
            for f, l, base in p.batches:
                if f == first and l == last:
                    return h, (base, base + h.last_offset_delta)
            expected = (p.batches[-1][1] + 1) & _SEQ_MASK if p.batches else 0
            if first != expected:
                raise OutOfOrderSequenceNumberError(
                    f"producer {h.producer_id} sent sequence {first}; the partition expects {expected}")
        return h, None

    def appended(self, plog: Any, h: BatchHeader, base_offset: int) -> None:
        """Record the batch ``h`` just appended at ``base_offset`` (``lock`` held), and write a
        snapshot when the active segment has rolled since the last one."""
        self._record(h.producer_id, h.producer_epoch, h.base_sequence,
                     (h.base_sequence + h.last_offset_delta) & _SEQ_MASK, base_offset)
        end = base_offset + h.last_offset_delta + 1
        if end > self.end:
            self.end = end
        active = plog.active_segment.base_offset
        if active != self._snapshot_segment:
            if self._snapshot_segment >= 0:
                self._catch_up(plog)
                self._write(plog)
            self._snapshot_segment = active

    def _record(self, pid: int, epoch: int, first: int, last: int, base: int) -> None:
        p = self.producers.get(pid)
        if p is None or epoch > p.epoch:
            p = self.producers[pid] = _Producer(epoch)
        elif epoch < p.epoch:
            return
        p.batches.append((first, last, base))

    # -- loading -------------------------------------------------------------------------------

    def _ensure_current(self, plog: Any, leader_epoch: int | None) -> None:
        if self.loaded and leader_epoch is not None and leader_epoch != self.leader_epoch:
            # This broker followed in between: the log may have been truncated and refilled.
            log.info("%s: leader epoch %s -> %s: rebuilding producer state", plog.path, self.leader_epoch, leader_epoch)
            self.loaded = False
        if not self.loaded:
            self._load(plog, use_snapshot=self.leader_epoch is None)
            self.loaded = True
            self._snapshot_segment = plog.active_segment.base_offset
        self.leader_epoch = leader_epoch
        self._catch_up(plog)

    def _load(self, plog: Any, use_snapshot: bool) -> None:
        self.producers.clear()
        self.end = plog.log_start_offset
        source = "the log"
        if use_snapshot:
            snap = self._read_snapshot(plog)
            if snap is not None:
                offset, producers = snap
                self.producers = producers
                self.end = max(offset, plog.log_start_offset)
                source = f"{SNAPSHOT_FILE} at offset {offset} and the log"
        start = self.end
        batches = self._catch_up(plog)
        if self.producers or batches:
            log.info("%s: producer state of %d producer(s) loaded from %s (%d batch header(s) read from offset %d)",
                     plog.path, len(self.producers), source, batches, start)

    def _catch_up(self, plog: Any) -> int:
        """Read the headers of the batches from ``end`` to the log end into the state."""
        end = plog.log_end_offset
        if end < self.end:  # truncated under us without ``truncated`` (should not happen): rebuild
            self.producers.clear()
            self.end = plog.log_start_offset
        start = plog.log_start_offset
        if self.end < start:
            self.end = start
        batches = 0
        while self.end < end:
            r = plog.read(self.end, _READ_BYTES)
            try:
                data = r.tobytes()
            finally:
                r.release()
            if not data:
                break
            progressed = False
            for pos, _ in iter_batch_positions(data):
                h = parse_header(data, pos)
                nxt = h.base_offset + h.last_offset_delta + 1
                if nxt <= self.end:
                    continue  # the batch holding ``end`` started before it: already counted
                if h.producer_id >= 0 and h.base_sequence >= 0:
                    self._record(h.producer_id, h.producer_epoch, h.base_sequence,
                                 (h.base_sequence + h.last_offset_delta) & _SEQ_MASK, h.base_offset)
                self.end = nxt
                batches += 1
                progressed = True
            if not progressed:
                break
        return batches

    def _read_snapshot(self, plog: Any) -> tuple[int, dict[int, _Producer]] | None:
        try:
            with open(self.path, "r", encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self.path, exc)
            return None
        try:
            if doc["version"] != 1:
                raise ValueError(f"version {doc['version']!r}")
            offset = int(doc["offset"])
            epoch_at = int(doc["epoch_at"])
            producers: dict[int, _Producer] = {}
            for pid, epoch, batches in doc["producers"]:
                p = producers[int(pid)] = _Producer(int(epoch))
                for f, l, b in batches:
                    p.batches.append((int(f), int(l), int(b)))
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self.path, exc)
            return None
        if offset > plog.log_end_offset:
            log.info("%s: %s is past the log end (%d > %d): not used", plog.path, SNAPSHOT_FILE, offset,
                     plog.log_end_offset)
            return None
        if _epoch_below(plog, offset) != epoch_at:
            log.info("%s: the log below %s's offset %d was rewritten: not used", plog.path, SNAPSHOT_FILE, offset)
            return None
        return offset, producers

    # -- snapshots -----------------------------------------------------------------------------

    def write_snapshot(self, plog: Any) -> None:
        """Bring the state up to the log end and write it (at close); nothing if never loaded."""
        with self.lock:
            if not self.loaded:
                return
            self._catch_up(plog)
            self._write(plog)

    def _write(self, plog: Any) -> None:
        doc = {
            "version": 1,
            "offset": self.end,
            "epoch_at": _epoch_below(plog, self.end),
            "producers": [[pid, p.epoch, [list(b) for b in p.batches]] for pid, p in sorted(self.producers.items())],
        }
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(doc, f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            fsync_dir(os.path.dirname(self.path))
        except FileNotFoundError:
            pass  # the log's folder was deleted (topic deleted)
        except OSError as exc:
            # The state is rebuilt from the log when the snapshot is missing: only time is lost.
            log.warning("could not write %s: %s", self.path, exc)

    def truncated(self, offset: int) -> None:
        """The log was truncated to ``offset``: forget the state and a snapshot past it."""
        with self.lock:
            self.loaded = False
            self.producers.clear()
            self.end = 0
            try:
                with open(self.path, "r", encoding="utf-8") as f:
                    snap_offset = int(json.load(f)["offset"])
            except FileNotFoundError:
                return
            except (OSError, ValueError, KeyError, TypeError):
                snap_offset = offset + 1
            if snap_offset > offset:
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass


def _epoch_below(plog: Any, offset: int) -> int:
    """The leader epoch that wrote the batch just below ``offset`` by the log's leader-epoch
    history (-1 when it has none for it)."""
    found = -1
    for epoch, start in plog.leader_epochs.entries():
        if start < offset:
            found = epoch
        else:
            break
    return found
