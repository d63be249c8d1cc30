"""An idempotent producer's id, epoch and sequence numbers (the idempotence half of Kafka's
``TransactionManager``).

With ``enable_idempotence=True`` the producer asks a broker for a producer id and epoch
(``InitProducerId``) before it sends anything, and numbers the records it sends to each
partition 0, 1, 2, ...: each batch carries the producer id, the epoch and the sequence of its
first record in its header, stamped when the batch is first sent. A retry re-sends the same
bytes, so a leader that already wrote the batch (its answer was lost) recognises it and answers
with the original offset instead of writing it twice (``annal.broker.storage._producer_state``).
The sender keeps one request per partition in flight and one batch per partition per request,
so a partition's sequences reach the leader in order.

When a batch that was sent fails for good (its delivery timeout passed, or a non-retriable
error such as OUT_OF_ORDER_SEQUENCE_NUMBER), the leader may or may not have it, and the
partition's sequence can no longer continue from it. The producer then waits until nothing is
in flight, asks for its next epoch (KIP-360's bump; a new id past the last epoch), starts every
partition's sequence again at 0, and batches still waiting for a retry are numbered again under
the new epoch. Such a waiting batch that the leader had in fact written is then written a
second time: the window of at-least-once delivery left is after a failure the application was
told about.

Thread-safety: used by the sender thread only.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from annal.errors import AnnalError

from annal.client._accumulator import ProducerBatch, RecordAccumulator
from annal.client.structs import TopicPartition

__all__ = ["IdempotenceManager"]

log = logging.getLogger("annal.client.producer")

_SEQ_MASK = 0x7FFFFFFF  # sequences wrap at 2^31, as Kafka's

InitProducerId = Callable[[int, int], "tuple[int, int]"]


class IdempotenceManager:
    """Producer id, epoch and next sequence per partition (module docstring)."""

    def __init__(self, init_producer_id: InitProducerId, retry_backoff_ms: int) -> None:
        self._init = init_producer_id
        self._backoff = retry_backoff_ms / 1000.0
        self.producer_id = -1
        self.producer_epoch = -1
        self._sequences: dict[TopicPartition, int] = {}
        self._bump = False
        self._retry_at = 0.0
        self.last_error: AnnalError | None = None

    def ready(self, acc: RecordAccumulator, in_flight: int, now: float) -> bool:
        """True when batches may be sent: the producer has an id and no epoch bump waits. Asks
        a broker for an id (or the next epoch) when due; False while that fails (retried
        every ``retry_backoff_ms``) or while requests are in flight before a bump."""
        if self.producer_id >= 0 and not self._bump:
            return True
        if in_flight or now < self._retry_at:
            return False
        try:
            if self.producer_id < 0:
                pid, epoch = self._init(-1, -1)
            else:
                pid, epoch = self._init(self.producer_id, self.producer_epoch)
        except AnnalError as err:
            if self.last_error is None:
                log.warning("no producer id yet (records wait): %s", err.message)
            self.last_error = err
            self._retry_at = now + self._backoff
            return False
        if self.producer_id >= 0:
            renumbered = acc.unstamp_waiting()
            log.info("producer %d: epoch %d -> %d after a failed batch; %d waiting batch(es) renumbered",
                     self.producer_id, self.producer_epoch, epoch, renumbered)
        else:
            log.info("idempotent producer: id %d, epoch %d", pid, epoch)
        self.producer_id, self.producer_epoch = pid, epoch
        self._sequences.clear()
        self._bump = False
        self.last_error = None
        return True

    def stamp(self, batch: ProducerBatch) -> None:
        """Give ``batch`` its id, epoch and first sequence the first time it is sent."""
        if batch.base_sequence >= 0:
            return  # a retry: the same bytes again
        tp = batch.tp
        seq = self._sequences.get(tp, 0)
        batch.stamp(self.producer_id, self.producer_epoch, seq)
        self._sequences[tp] = (seq + batch.records_count) & _SEQ_MASK

    def batch_failed(self, batch: ProducerBatch) -> None:
        """``batch`` failed for good: if it was sent, bump the epoch before sending more."""
        if batch.base_sequence >= 0 and batch.producer_epoch == self.producer_epoch:
            self._bump = True
            self._retry_at = time.monotonic()
