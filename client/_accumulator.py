"""The producer's record accumulator: one deque of batches per partition.

``Producer.send`` appends each record to the open (last) batch of its partition's deque, built
incrementally as RecordBatch v2 bytes by ``annal.record.BatchBuilder``; when a
record does not fit, that batch is closed and a new one opened. The sender thread drains the
first batch of each deque once it is full, older than ``linger_ms``, or a flush/close is under
way, and gives it back with ``reenqueue`` (at the front, so order holds) when a retriable error
makes it try again.

Futures: a batch has one ``ProduceRequestResult`` (an event plus base offset or error); each
``send`` returns a ``FutureRecordMetadata``, a 3-tuple ``(batch, offset_delta, timestamp)``
that is built in C and only turns into a ``RecordMetadata`` when asked. Callbacks are kept per
batch, only for the records that asked for one.

Memory: each batch reserves ``max(batch_size, its first record)`` bytes of ``buffer_memory``
when it is opened and gives them back when it completes (Kafka's BufferPool, by count of bytes
rather than pooled buffers). ``send`` waits up to ``max_block_ms`` for room, then raises
``BufferExhaustedError``.

Thread-safety: every method may be called from any thread. One lock guards the deques and the
open batches (application threads append, the sender drains); a batch, once drained, is owned by
the sender alone until it completes.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable, Iterable

from annal.errors import (
    AnnalError,
    BufferExhaustedError,
    KafkaTimeoutError,
)
import annal.record as _record
from annal.record import HEADER_SIZE, BatchBuilder

from annal.client._partitioner import StickyPartitionCache
from annal.client.structs import RecordMetadata, TopicPartition

__all__ = [
    "ProduceRequestResult",
    "ProducerBatch",
    "FutureRecordMetadata",
    "RecordAccumulator",
]

_callback_lock = threading.Lock()


class ProduceRequestResult:
    """The outcome of one batch: set once by the sender, waited on by any thread."""

    __slots__ = ("_event", "base_offset", "error", "_callbacks", "done")

    def __init__(self) -> None:
        self._event = threading.Event()
        self.base_offset = -1
        self.error: BaseException | None = None
        self._callbacks: list[tuple[int, int, Callable[[Any], Any], bool]] | None = None
        self.done = False

    def wait(self, timeout: float | None) -> bool:
        """Wait until the batch completed; False on timeout."""
        return self._event.wait(timeout)


def _refuse_append(*_args: Any) -> int:
    """The append of a completed batch: never takes a record (-1, as a full batch)."""
    return -1


class ProducerBatch:
    """One batch of one partition: an open BatchBuilder until drained, then built bytes.

    Owned by the accumulator (under its lock) until drained, then by the sender thread.
    """

    __slots__ = (
        "tp",
        "builder",
        "append",
        "append_value",
        "result",
        "created_ms",
        "deadline_ms",
        "retry_at_ms",
        "attempts",
        "closed",
        "reserved",
        "buffer",
        "last_error",
        "count",
        "producer_id",
        "producer_epoch",
        "base_sequence",
    )

    def __init__(self, tp: TopicPartition, builder: BatchBuilder, now_ms: float, delivery_timeout_ms: int, reserved: int) -> None:
        self.tp = tp
        self.builder: BatchBuilder | None = builder
        self.append: Callable[..., int] = builder.append
        self.append_value: Callable[[int, bytes], int] = builder.append_value
        self.result = ProduceRequestResult()
        self.created_ms = now_ms
        self.deadline_ms = now_ms + delivery_timeout_ms
        self.retry_at_ms = 0.0
        self.attempts = 0
        self.closed = False
        self.reserved = reserved
        self.buffer: tuple[bytes, bytes | bytearray] | None = None
        self.last_error: BaseException | None = None
        self.count = 0
        # An idempotent producer's stamp (``stamp``), given when the batch is first sent.
        self.producer_id = -1
        self.producer_epoch = -1
        self.base_sequence = -1

    @property
    def records_count(self) -> int:
        """Records in the batch."""
        builder = self.builder
        return builder.records_count if builder is not None else self.count

    def close(self) -> tuple[bytes, bytes | bytearray]:
        """Stop appends and build the batch (base offset 0: the broker assigns it), as its
        header and records area (``BatchBuilder.build_parts``); kept for retries."""
        self.closed = True
        if self.buffer is None:
            assert self.builder is not None, "a completed batch is never sent again"
            if self.base_sequence >= 0:
                self.buffer = self.builder.build_parts(
                    0, producer_id=self.producer_id, producer_epoch=self.producer_epoch,
                    base_sequence=self.base_sequence)
            else:
                self.buffer = self.builder.build_parts(0)
        return self.buffer

    def stamp(self, producer_id: int, producer_epoch: int, base_sequence: int) -> None:
        """Give the batch an idempotent producer's id, epoch and first sequence (-1: none),
        rebuilding its header on the next ``close``."""
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.base_sequence = base_sequence
        self.buffer = None

    def complete(self, base_offset: int, error: BaseException | None) -> None:
        """Record the outcome, wake waiters and run callbacks (in the calling thread).

        The record bytes are dropped here: an application that keeps futures keeps only this
        small object and its result, not the batch it was sent in.
        """
        builder = self.builder
        if builder is not None:
            self.count = builder.records_count
            self.builder = None
            self.append = _refuse_append
            self.append_value = _refuse_append
        self.buffer = None
        r = self.result
        with _callback_lock:
            if r.done:
                return
            r.base_offset = base_offset
            r.error = error
            r.done = True
            callbacks = r._callbacks
            r._callbacks = None
        r._event.set()
        if callbacks:
            tp = self.tp
            for delta, ts, fn, is_errback in callbacks:
                _run_callback(fn, is_errback, tp, base_offset, delta, ts, error)


def _run_callback(
    fn: Callable[[Any], Any],
    is_errback: bool,
    tp: TopicPartition,
    base_offset: int,
    delta: int,
    ts: int,
    error: BaseException | None,
) -> None:
    try:
        if error is None:
            if not is_errback:
                fn(RecordMetadata(tp.topic, tp.partition, base_offset + delta if base_offset >= 0 else -1, ts))
        elif is_errback:
            fn(error)
    except Exception:  # a user callback must not kill the sender thread
        import logging

        logging.getLogger("annal.client.producer").exception("producer callback raised")


class FutureRecordMetadata(tuple):  # type: ignore[type-arg]
    """The future result of one ``Producer.send``: a ``RecordMetadata`` or an exception.

    A tuple ``(batch, offset_delta, timestamp)`` made in C, so a send costs no Python-level
    constructor; the batch's ``ProduceRequestResult`` carries the shared outcome. Thread-safe.
    """

    __slots__ = ()

    def get(self, timeout: float | None = None) -> RecordMetadata:
        """Wait for the outcome: the record's metadata, or raise its error.

        Raises ``KafkaTimeoutError`` if ``timeout`` seconds pass first.
        """
        batch: ProducerBatch = self[0]
        r = batch.result
        if not r.done and not r._event.wait(timeout):
            raise KafkaTimeoutError(f"no answer for the record within {timeout} s")
        if r.error is not None:
            raise r.error
        tp = batch.tp
        base = r.base_offset
        return RecordMetadata(tp.topic, tp.partition, base + self[1] if base >= 0 else -1, self[2])

    def is_done(self) -> bool:
        """True once the record was acknowledged or failed."""
        return bool(self[0].result.done)

    def succeeded(self) -> bool:
        """True if the record was acknowledged."""
        r = self[0].result
        return bool(r.done and r.error is None)

    def failed(self) -> bool:
        """True if the record failed for good."""
        r = self[0].result
        return bool(r.done and r.error is not None)

    @property
    def exception(self) -> BaseException | None:
        """The error, once failed; None otherwise."""
        r = self[0].result
        return r.error if r.done else None

    @property
    def value(self) -> RecordMetadata | None:
        """The metadata once succeeded; None otherwise."""
        return self.get(0) if self.succeeded() else None

    @property
    def topic_partition(self) -> TopicPartition:
        """The partition the record was appended to."""
        return self[0].tp  # type: ignore[no-any-return]

    def add_callback(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> "FutureRecordMetadata":
        """Call ``fn(*args, metadata, **kwargs)`` when the record is acknowledged (at once if it
        already was). Runs in the sender thread: keep it short."""
        cb = _bind(fn, args, kwargs)
        self._add(cb, False)
        return self

    def add_errback(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> "FutureRecordMetadata":
        """Call ``fn(*args, exception, **kwargs)`` if the record fails (at once if it did)."""
        cb = _bind(fn, args, kwargs)
        self._add(cb, True)
        return self

    def _add(self, fn: Callable[[Any], Any], is_errback: bool) -> None:
        batch: ProducerBatch = self[0]
        r = batch.result
        with _callback_lock:
            if not r.done:
                if r._callbacks is None:
                    r._callbacks = []
                r._callbacks.append((self[1], self[2], fn, is_errback))
                return
        _run_callback(fn, is_errback, batch.tp, r.base_offset, self[1], self[2], r.error)

    def __repr__(self) -> str:
        r = self[0].result
        state = "pending" if not r.done else ("failed" if r.error is not None else "done")
        return f"FutureRecordMetadata({self[0].tp}, {state})"


def _bind(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[[Any], Any]:
    if not callable(fn):
        raise TypeError(f"callback must be callable, not {type(fn).__name__}")
    if not args and not kwargs:
        return fn
    return lambda v: fn(*args, v, **kwargs)


class RecordAccumulator:
    """Batches of records waiting to be sent, one deque per partition (module docstring)."""

    def __init__(
        self,
        batch_size: int,
        compression: int,
        linger_ms: float,
        buffer_memory: int,
        delivery_timeout_ms: int,
        retry_backoff_ms: int,
        partitioner: StickyPartitionCache | None = None,
        wakeup: Callable[[], None] | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.compression = compression
        self.linger_ms = linger_ms
        self.buffer_memory = buffer_memory
        self.delivery_timeout_ms = delivery_timeout_ms
        self.retry_backoff_ms = retry_backoff_ms
        self.lock = threading.Lock()
        self._memory = threading.Condition(threading.Lock())
        self._available = buffer_memory
        self.batches: dict[TopicPartition, deque[ProducerBatch]] = {}
        # The open (last, not closed) batch of each partition, and of each topic's sticky
        # partition: the send() fast path looks here first.
        self.open: dict[TopicPartition, ProducerBatch] = {}
        self.sticky: dict[str, ProducerBatch] = {}
        self.partitioner = partitioner or StickyPartitionCache()
        self.incomplete: set[ProducerBatch] = set()
        self._flushes = 0
        self.closing = False
        self._wakeup = wakeup or (lambda: None)
        self._waiting_for_memory = 0
        self._partition_counts: dict[str, int] = {}

    # -- memory -----------------------------------------------------------------------------

    def _reserve(self, nbytes: int, max_block_ms: float) -> None:
        with self._memory:
            if self._available >= nbytes:
                self._available -= nbytes
                return
            if nbytes > self.buffer_memory:
                raise BufferExhaustedError(
                    f"a batch of {nbytes} bytes can never fit in buffer_memory={self.buffer_memory}"
                )
            deadline = time.monotonic() + max_block_ms / 1000.0
            self._waiting_for_memory += 1
            try:
                self._wakeup()  # make the sender drain everything it can now
                while self._available < nbytes:
                    left = deadline - time.monotonic()
                    if left <= 0 or self.closing:
                        raise BufferExhaustedError(
                            f"buffer_memory={self.buffer_memory} stayed full for {max_block_ms} ms"
                        )
                    self._memory.wait(left)
                self._available -= nbytes
            finally:
                self._waiting_for_memory -= 1

    def _release(self, nbytes: int) -> None:
        with self._memory:
            self._available += nbytes
            self._memory.notify_all()

    @property
    def memory_waiters(self) -> bool:
        """True while some send() waits for buffer memory (the sender then drains eagerly)."""
        return self._waiting_for_memory > 0

    # -- append (application threads) ----------------------------------------------------------

    def append(
        self,
        topic: str,
        partition: int | None,
        num_partitions: int,
        timestamp_ms: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes | None]] | None,
        max_block_ms: float,
    ) -> FutureRecordMetadata:
        """Add one record to the open batch of ``topic``/``partition``, opening a new batch when
        needed. ``partition=None`` means a keyless record: it goes to the topic's sticky
        partition, and when the sticky batch is full the record (and the ones after it) move
        to another partition.
        """
        sticky = partition is None
        reserved = 0
        try:
            while True:
                with self.lock:
                    p = self.partitioner.partition(topic, num_partitions) if sticky else partition
                    tp = TopicPartition(topic, p)  # type: ignore[arg-type]
                    batch = self.open.get(tp)
                    if batch is not None:
                        delta = batch.append(timestamp_ms, key, value, headers)
                        if delta >= 0:
                            if sticky:
                                self.sticky[topic] = batch
                            return FutureRecordMetadata((batch, delta, timestamp_ms))
                        self._close_open(batch)  # full: moves the sticky partition on
                        self._wakeup()
                        continue
                    if reserved:
                        now_ms = time.monotonic() * 1000.0
                        # Looked up per batch: the compiled builder, or the pure-Python one.
                        builder = _record.BatchBuilder(self.compression, self.batch_size, timestamp_ms)
                        batch = ProducerBatch(tp, builder, now_ms, self.delivery_timeout_ms, reserved)
                        delta = batch.append(timestamp_ms, key, value, headers)
                        reserved = 0  # owned by the batch now
                        dq = self.batches.get(tp)
                        if dq is None:
                            dq = self.batches[tp] = deque()
                        dq.append(batch)
                        self.open[tp] = batch
                        self.incomplete.add(batch)
                        if sticky:
                            self.sticky[topic] = batch
                        first = len(dq) == 1
                        break
                # A new batch is needed; reserving its memory may block, so outside the lock.
                estimate = HEADER_SIZE + 32 + (len(key) if key else 0) + (len(value) if value else 0)
                if headers:
                    estimate += sum(len(k) * 4 + 8 + (len(v) if v else 0) for k, v in headers)
                need = max(self.batch_size, estimate)
                self._reserve(need, max_block_ms)
                reserved = need
        finally:
            if reserved:
                self._release(reserved)
        if first:
            self._wakeup()
        return FutureRecordMetadata((batch, delta, timestamp_ms))

    def _close_open(self, batch: ProducerBatch) -> None:
        """Under the lock: ``batch`` takes no more records (full or drained)."""
        batch.closed = True
        tp = batch.tp
        if self.open.get(tp) is batch:
            del self.open[tp]
        if self.sticky.get(tp.topic) is batch:
            del self.sticky[tp.topic]
            # Kafka's sticky partitioner: keyless records move on once their batch is done.
            n = self._partition_counts.get(tp.topic)
            self.partitioner.next_partition(tp.topic, n if n else tp.partition + 1, tp.partition)

    def topics(self) -> list[str]:
        """The topics records were sent to (whose partition count is known)."""
        return list(self._partition_counts)

    def set_partition_count(self, topic: str, n: int) -> None:
        """Tell the sticky partitioner how many partitions ``topic`` has."""
        self._partition_counts[topic] = n

    def set_available_partitions(self, topic: str, partitions: list[int] | None) -> None:
        """Send keyless records of ``topic`` only to ``partitions`` (those whose leader is
        alive; None: all). If the open sticky batch is on a partition no longer available it
        is closed, so keyless records from the next batch on go to a live partition; records
        already in it wait for their leader until delivery_timeout_ms."""
        with self.lock:
            self.partitioner.set_available(topic, partitions)
            batch = self.sticky.get(topic)
            if batch is not None and not self.partitioner.is_available(topic, batch.tp.partition):
                self._close_open(batch)

    # -- sender side ---------------------------------------------------------------------------

    def ready(self, now_ms: float, muted: set[TopicPartition]) -> tuple[list[TopicPartition], float]:
        """Partitions whose first batch may be sent now, and ms until the next one could be.

        A batch is sendable when it is closed (full, or not the last of its deque), has
        lingered ``linger_ms``, or a flush, close or a memory wait is under way; and its retry
        backoff is over. Muted partitions (a request in flight) are skipped: one request per
        partition at a time keeps their order across retries.
        """
        out: list[TopicPartition] = []
        next_ms = float("inf")
        eager = self._flushes > 0 or self.closing or self._waiting_for_memory > 0
        linger = self.linger_ms
        with self.lock:
            for tp, dq in self.batches.items():
                if not dq or tp in muted:
                    continue
                b = dq[0]
                if b.retry_at_ms > now_ms:
                    next_ms = min(next_ms, b.retry_at_ms - now_ms)
                    continue
                if eager or b.closed or len(dq) > 1:
                    out.append(tp)
                    continue
                wait = b.created_ms + linger - now_ms
                if wait <= 0:
                    out.append(tp)
                else:
                    next_ms = min(next_ms, wait)
        return out, next_ms

    def drain(self, tps: Iterable[TopicPartition], max_request_size: int,
              max_batches: int | None = None) -> dict[TopicPartition, list[ProducerBatch]]:
        """Take the sendable batches of ``tps`` off their deques, in order, up to about
        ``max_request_size`` bytes per request (at least one batch per partition) and
        ``max_batches`` per partition (an idempotent producer sends one, as Kafka's does)."""
        out: dict[TopicPartition, list[ProducerBatch]] = {}
        size = 0
        now_ms = time.monotonic() * 1000.0
        with self.lock:
            for tp in tps:
                dq = self.batches.get(tp)
                if not dq:
                    continue
                taken: list[ProducerBatch] = []
                while dq:
                    b = dq[0]
                    if b.retry_at_ms > now_ms or (max_batches is not None and len(taken) >= max_batches):
                        break
                    nbytes = b.builder.size_in_bytes if b.builder is not None else 0
                    if (taken or out) and size + nbytes > max_request_size:
                        break
                    dq.popleft()
                    if not b.closed:
                        self._close_open(b)
                    taken.append(b)
                    size += nbytes
                if taken:
                    out[tp] = taken
        return out

    def reenqueue(self, batches: list[ProducerBatch], backoff_ms: float) -> None:
        """Put batches that failed retriably back at the front of their deques, in order."""
        retry_at = time.monotonic() * 1000.0 + backoff_ms
        with self.lock:
            for b in reversed(batches):
                b.retry_at_ms = retry_at
                dq = self.batches.get(b.tp)
                if dq is None:
                    dq = self.batches[b.tp] = deque()
                dq.appendleft(b)

    def unstamp_waiting(self) -> int:
        """Clear the idempotent stamp of every batch waiting in a deque (for a retry): under
        a new producer epoch they are numbered again, in order, when sent. Returns how many."""
        n = 0
        with self.lock:
            for dq in self.batches.values():
                for b in dq:
                    if b.base_sequence >= 0:
                        b.stamp(-1, -1, -1)
                        n += 1
        return n

    def complete(self, batch: ProducerBatch, base_offset: int, error: BaseException | None) -> None:
        """Finish ``batch`` (success or failure), release its memory."""
        batch.complete(base_offset, error)
        with self.lock:
            self.incomplete.discard(batch)
        self._release(batch.reserved)

    def expired(self, now_ms: float, muted: set[TopicPartition]) -> list[ProducerBatch]:
        """Remove and return batches (not in flight) whose delivery_timeout_ms has passed."""
        out: list[ProducerBatch] = []
        with self.lock:
            for tp, dq in self.batches.items():
                if tp in muted:
                    continue
                while dq and dq[0].deadline_ms <= now_ms:
                    b = dq.popleft()
                    if not b.closed:
                        self._close_open(b)
                    out.append(b)
        return out

    def abort_all(self, error: AnnalError) -> None:
        """Fail every batch still waiting in the accumulator (not those in flight)."""
        with self.lock:
            batches = [b for dq in self.batches.values() for b in dq]
            for dq in self.batches.values():
                dq.clear()
            self.open.clear()
            self.sticky.clear()
        for b in batches:
            b.closed = True
            self.complete(b, -1, error)

    def has_undrained(self) -> bool:
        """True if some batch waits in a deque."""
        with self.lock:
            return any(self.batches.values())

    def begin_flush(self) -> None:
        """Make every batch sendable now (until ``end_flush``)."""
        with self.lock:
            self._flushes += 1
        self._wakeup()

    def end_flush(self) -> None:
        """Undo one ``begin_flush``."""
        with self.lock:
            self._flushes -= 1

    def incomplete_batches(self) -> list[ProducerBatch]:
        """Every batch created and not completed yet."""
        with self.lock:
            return list(self.incomplete)
