"""The producer's background sender thread: drains the accumulator into PRODUCE requests on
each broker's binary data port and completes the batches' futures from the answers.

Why the data port and not gRPC ``ProduceStream``: a PRODUCE frame carries the batch bytes as-is
(written with one ``send``; the broker validates and appends them without a protobuf
round trip), and answers come back in order on the same connection, so up to
``max_in_flight`` requests can be pipelined per broker without any per-request Python objects
on the broker's side beyond the frame.

Ordering: at most one request per partition is in flight (a partition is "muted" until its
answer comes back), while up to ``max_in_flight`` requests for different partitions share a
broker connection; a request carries every sendable batch of a partition (up to
``max_request_size``), so one partition still moves many batches per round trip. When a
request fails with a retriable error (broker gone, not leader, timeout, connection lost) its
batches go back to the *front* of their deques and wait ``retry_backoff_ms``; since nothing
else of the partition was in flight, no later batch can overtake them. They are retried until
``delivery_timeout_ms`` after the batch was opened (or ``retries`` attempts), then failed with
``KafkaTimeoutError`` whose message (and ``__cause__``) is the last error seen: an answer's
error, or why the batch could not be sent at all (LeaderNotAvailableError naming the last
known leader when the partition has no live leader, the connection error when its leader
cannot be reached). A WARNING is logged when a partition starts waiting for a leader, and an
INFO line when it has one again. A retry after a lost answer may store a batch twice
(at-least-once) unless the producer is idempotent (``enable_idempotence``, _idempotence.py:
the leader recognises the retry by its sequence); a future only ever reports an offset the
broker answered with.

Thread-safety: the sender owns its connections; ``wakeup``, ``initiate_close`` and
``force_close`` may be called from any thread.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from typing import Any

from annal.errors import (
    AnnalError,
    BrokerNotAvailableError,
    KafkaTimeoutError,
    LeaderNotAvailableError,
    NetworkError,
    NotLeaderForPartitionError,
    ProducerClosedError,
    RequestTimedOutError,
    UnknownTopicOrPartitionError,
    for_code,
)
from annal.protocol.framing import (
    ProducePartition,
    ProduceRequest,
    decode_produce_response,
    produce_request_parts,
)

from annal.client._accumulator import ProducerBatch, RecordAccumulator
from annal.client._connection import DataConnection, InFlight
from annal.client._idempotence import IdempotenceManager
from annal.client._metadata import ClusterMetadata
from annal.client._waker import Waker
from annal.client.structs import TopicPartition

__all__ = ["Sender"]

log = logging.getLogger("annal.client.producer")

_METADATA_ERRORS = (
    NotLeaderForPartitionError,
    LeaderNotAvailableError,
    UnknownTopicOrPartitionError,
    BrokerNotAvailableError,
    NetworkError,
)


class Sender(threading.Thread):
    """The background thread of one Producer (module docstring)."""

    def __init__(
        self,
        accumulator: RecordAccumulator,
        metadata: ClusterMetadata,
        acks: int,
        retries: int,
        retry_backoff_ms: int,
        request_timeout_ms: int,
        max_in_flight: int,
        max_request_size: int,
        connect_timeout_ms: int = 10000,
        metadata_max_age_ms: int = 300000,
        idempotence: IdempotenceManager | None = None,
    ) -> None:
        super().__init__(name="annal-producer-sender", daemon=True)
        self.acc = accumulator
        self.metadata = metadata
        self.acks = acks
        self.retries = retries
        self.retry_backoff_ms = retry_backoff_ms
        self.request_timeout_ms = request_timeout_ms
        self.max_in_flight = max_in_flight
        self.max_request_size = max_request_size
        self.connect_timeout_ms = connect_timeout_ms
        self.muted: set[TopicPartition] = set()
        self._conns: dict[int, DataConnection] = {}
        self._node_backoff_until: dict[int, float] = {}
        self._node_errors: dict[int, AnnalError] = {}
        self._running = True
        self._forced = False
        self._waker = Waker()
        self._next_expiry_check = 0.0
        self.metadata_max_age_ms = metadata_max_age_ms
        self._next_metadata_refresh = time.monotonic() + metadata_max_age_ms / 1000.0
        self.fatal_error: BaseException | None = None
        # Why each partition with ready batches could not be sent (cleared once it is sent),
        # and the last leader seen for each partition, to name it when it is gone.
        self._unsendable: dict[TopicPartition, AnnalError] = {}
        self._last_leader: dict[TopicPartition, int] = {}
        # enable_idempotence: ids, epochs and sequences (_idempotence.py); one batch per
        # partition per request.
        self.idempotence = idempotence
        self._max_batches = 1 if idempotence is not None else None

    # -- control (any thread) ------------------------------------------------------------------

    def wakeup(self) -> None:
        """Interrupt the sender's wait (new batch, flush, close, memory pressure)."""
        self._waker.wakeup()

    def initiate_close(self) -> None:
        """Stop after everything accumulated has been sent and answered."""
        self._running = False
        self.wakeup()

    def force_close(self) -> None:
        """Stop now: batches not yet answered fail with ProducerClosedError."""
        self._forced = True
        self._running = False
        self.wakeup()

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        """Loop until closed: send what is ready, wait for answers or the next linger expiry."""
        try:
            while self._running:
                self._run_once()
            while not self._forced and (self.acc.has_undrained() or self._in_flight_count()):
                self._run_once()
        except BaseException as exc:  # a bug here must not leave futures hanging forever
            log.exception("producer sender thread failed")
            self.fatal_error = exc
        finally:
            err = ProducerClosedError("the producer was closed before the record was acknowledged")
            if self.fatal_error is not None:
                err = ProducerClosedError(f"the producer's sender thread failed: {self.fatal_error!r}")
            for conn in list(self._conns.values()):
                self._fail_connection(conn, err, retriable=False)
            self.acc.abort_all(err)
            for conn in self._conns.values():
                conn.close()
            self._conns.clear()
            self._waker.close()

    def _in_flight_count(self) -> int:
        return sum(len(c.in_flight) for c in self._conns.values())

    def _run_once(self) -> None:
        acc = self.acc
        now = time.monotonic()
        now_ms = now * 1000.0
        if now >= self._next_expiry_check:
            # Expiry is checked a few times a second, not on every wakeup: it takes the
            # accumulator's lock, which send() needs too.
            self._next_expiry_check = now + 0.1
            for batch in acc.expired(now_ms, self.muted):
                self._fail_batch(batch, self._timeout_error(batch))
        if now >= self._next_metadata_refresh:
            # Kafka's metadata.max.age.ms: re-read the topics sent to even when nothing
            # failed, so new brokers, leaders and partition counts are picked up.
            self._next_metadata_refresh = now + self.metadata_max_age_ms / 1000.0
            topics = acc.topics()
            if topics:
                self.metadata.request_update()
                self.metadata.maybe_refresh(topics)
        idem = self.idempotence
        if idem is not None and not idem.ready(acc, self._in_flight_count(), now):
            # No producer id yet, or an epoch bump waits for the requests in flight.
            self._poll(now, self.retry_backoff_ms)
            return
        tps, next_ms = acc.ready(now_ms, self.muted)
        by_node: dict[int, list[TopicPartition]] = {}
        wait_for_metadata = False
        if tps:
            md = self.metadata
            for tp in tps:
                leader = md.leader_for(tp.topic, tp.partition)
                if leader < 0 or md.broker(leader) is None:
                    self._cannot_send(tp, self._no_leader_error(tp, leader))
                    wait_for_metadata = True
                    continue
                self._last_leader[tp] = leader
                by_node.setdefault(leader, []).append(tp)
            if wait_for_metadata or md.need_update:
                md.request_update()
                md.maybe_refresh({tp.topic for tp in tps})
        for node, node_tps in by_node.items():
            conn = self._connection(node, now)
            if conn is None:
                err = self._node_errors.get(node) or BrokerNotAvailableError(f"broker {node} cannot be reached")
                for tp in node_tps:
                    self._cannot_send(tp, err)
                wait_for_metadata = True
                continue
            for tp in node_tps:
                self._can_send(tp)
            while len(conn.in_flight) < self.max_in_flight and node_tps:
                drained = acc.drain(node_tps, self.max_request_size, self._max_batches)
                if not drained:
                    break
                self._send_produce(conn, drained)
                if conn.closed:
                    break
                node_tps = [tp for tp in node_tps if tp not in drained and tp not in self.muted]
        timeout_ms = min(next_ms, max(0.0, (self._next_metadata_refresh - now) * 1000.0))
        if wait_for_metadata:
            timeout_ms = min(timeout_ms, self.retry_backoff_ms)
        self._poll(now, timeout_ms)

    def _poll(self, now: float, timeout_ms: float) -> None:
        conns = [c for c in self._conns.values() if c.in_flight and not c.closed]
        if conns:
            oldest = min(c.in_flight[0].sent_at for c in conns)
            timeout_ms = min(timeout_ms, max(0.0, (oldest + self.request_timeout_ms / 1000.0 - now) * 1000.0))
        if not self._running:
            timeout_ms = min(timeout_ms, 50.0)
        timeout = None if timeout_ms == float("inf") else max(0.0, timeout_ms / 1000.0)
        rlist: list[Any] = [self._waker, *conns]
        try:
            readable, _, _ = select.select(rlist, [], [], timeout)
        except (OSError, ValueError):
            readable = []
        if self._waker in readable:
            self._waker.drain()
        for conn in conns:
            if conn in readable:
                try:
                    answers = conn.receive()
                except NetworkError as exc:
                    self._fail_connection(conn, exc, retriable=True)
                    continue
                for req, frame in answers:
                    self._handle_produce_response(req, frame)
        now = time.monotonic()
        for conn in list(self._conns.values()):
            if not conn.closed and conn.timed_out(now):
                conn.close()
                self._fail_connection(
                    conn,
                    RequestTimedOutError(f"no answer from broker {conn.node_id} in {self.request_timeout_ms} ms"),
                    retriable=True,
                )

    # -- connections ------------------------------------------------------------------------------

    def _connection(self, node: int, now: float) -> DataConnection | None:
        conn = self._conns.get(node)
        if conn is not None and not conn.closed:
            return conn
        if self._node_backoff_until.get(node, 0.0) > now:
            return None
        info = self.metadata.broker(node)
        if info is None:
            return None
        try:
            conn = DataConnection(
                node, info.host, info.fetch_port, self.connect_timeout_ms, self.request_timeout_ms
            )
        except NetworkError as exc:
            log.debug("connect to broker %s failed: %s", node, exc)
            self._node_errors[node] = exc
            self._node_backoff_until[node] = now + self.retry_backoff_ms / 1000.0
            self.metadata.request_update()
            return None
        self._node_errors.pop(node, None)
        self._conns[node] = conn
        return conn

    # -- partitions that cannot be sent -----------------------------------------------------------

    def _no_leader_error(self, tp: TopicPartition, leader: int) -> AnnalError:
        known = leader if leader >= 0 else self._last_leader.get(tp, -1)
        if known >= 0:
            who = f"broker {known} is not among the live brokers"
        else:
            # A producer that never saw the leader still names the brokers holding the
            # partition: the metadata lists its replicas even while none of them leads.
            replicas = self.metadata.replicas_for(tp.topic, tp.partition)
            if len(replicas) == 1:
                known = replicas[0]
                who = f"its only replica, broker {known}, is not among the live brokers"
            elif replicas:
                who = f"none of its replicas, brokers {', '.join(map(str, replicas))}, leads"
            else:
                who = "no leader known"
        return LeaderNotAvailableError(
            f"partition {tp.topic}-{tp.partition} has no live leader ({who})",
            topic=tp.topic, partition=tp.partition, leader_id=known,
        )

    def _cannot_send(self, tp: TopicPartition, error: AnnalError) -> None:
        """``tp`` has batches ready that cannot be sent now: say so once, remember why."""
        if tp not in self._unsendable:
            log.warning(
                "records for %s-%d are waiting (up to delivery_timeout_ms): %s", tp.topic, tp.partition, error
            )
        self._unsendable[tp] = error

    def _can_send(self, tp: TopicPartition) -> None:
        if self._unsendable.pop(tp, None) is not None:
            log.info("records for %s-%d are being sent again", tp.topic, tp.partition)

    def _fail_connection(self, conn: DataConnection, error: AnnalError, retriable: bool) -> None:
        """The connection is gone: every request in flight on it failed with ``error``."""
        conn.close()
        if self._conns.get(conn.node_id) is conn:
            del self._conns[conn.node_id]
        self._node_backoff_until[conn.node_id] = time.monotonic() + self.retry_backoff_ms / 1000.0
        self.metadata.request_update()
        requests = list(conn.in_flight)
        conn.in_flight.clear()
        for req in requests:
            drained: dict[TopicPartition, list[ProducerBatch]] = req.context
            for tp, batches in drained.items():
                self.muted.discard(tp)
                if retriable:
                    self._retry_or_fail(batches, error)
                else:
                    for b in batches:
                        self._fail_batch(b, error)

    # -- requests and answers -------------------------------------------------------------------

    def _send_produce(self, conn: DataConnection, drained: dict[TopicPartition, list[ProducerBatch]]) -> None:
        parts = []
        idem = self.idempotence
        for tp, batches in drained.items():
            if idem is not None:
                for b in batches:
                    idem.stamp(b)
            # One copy of the partition's batches, header and records area side by side.
            records = b"".join([part for b in batches for part in b.close()])
            parts.append(ProducePartition(tp.topic, tp.partition, records))
            self.muted.add(tp)
        cid = conn.next_correlation_id()
        req = ProduceRequest(cid, self.acks, self.request_timeout_ms, parts)
        inflight = InFlight(cid, drained, expects_response=self.acks != 0)
        try:
            conn.send(produce_request_parts(req), inflight)
        except NetworkError as exc:
            # Not listed in flight: fail over these batches here, then the rest of the conn.
            for tp, batches in drained.items():
                self.muted.discard(tp)
                self._retry_or_fail(batches, exc)
            self._fail_connection(conn, exc, retriable=True)
            return
        if self.acks == 0:
            for tp, batches in drained.items():
                self.muted.discard(tp)
                for b in batches:
                    self.acc.complete(b, -1, None)

    def _handle_produce_response(self, req: InFlight, frame: memoryview) -> None:
        drained: dict[TopicPartition, list[ProducerBatch]] = req.context
        try:
            resp = decode_produce_response(frame)
        except AnnalError as bad:
            for tp, batches in drained.items():
                self.muted.discard(tp)
                for b in batches:
                    self._fail_batch(b, bad)
            return
        if resp.error_code:
            err = for_code(resp.error_code)(f"broker rejected the produce request ({resp.error_code})")
            for tp, batches in drained.items():
                self.muted.discard(tp)
                self._retry_or_fail(batches, err)
            return
        seen: set[TopicPartition] = set()
        for result in resp.partitions:
            tp = TopicPartition(result.topic, result.partition)
            found = drained.get(tp)
            if found is None or tp in seen:
                continue
            batches = found
            seen.add(tp)
            self.muted.discard(tp)
            if result.error_code == 0:
                base = result.base_offset
                complete = self.acc.complete
                for b in batches:
                    n = b.records_count
                    complete(b, base, None)
                    base += n
            else:
                cls = for_code(result.error_code)
                details: dict[str, Any] = {}
                if result.leader_id >= 0:
                    details["leader"] = result.leader_id
                self._retry_or_fail(batches, cls(result.error_message or cls.reason, **details))
        for tp, batches in drained.items():
            if tp not in seen:
                self.muted.discard(tp)
                self._retry_or_fail(batches, NetworkError(f"the broker's answer did not mention {tp}"))

    # -- outcomes ---------------------------------------------------------------------------------

    def _retry_or_fail(self, batches: list[ProducerBatch], error: BaseException) -> None:
        """Re-queue ``batches`` (one partition's, in order) after a failure, or fail them."""
        if isinstance(error, _METADATA_ERRORS):
            self.metadata.request_update()
        retriable = isinstance(error, AnnalError) and error.retriable
        now_ms = time.monotonic() * 1000.0
        first = batches[0]
        if (
            retriable
            and not self._forced
            and first.attempts < self.retries
            and now_ms + self.retry_backoff_ms < first.deadline_ms
        ):
            for b in batches:
                b.attempts += 1
                b.last_error = error
            log.debug("retrying %d batch(es) of %s after %r", len(batches), first.tp, error)
            self.acc.reenqueue(batches, self.retry_backoff_ms)
            # The loop's next wait was computed before these came back (a send that failed
            # in the middle of it): wake it so that it waits for their backoff, not longer.
            self._waker.wakeup()
            return
        for b in batches:
            b.last_error = error
            self._fail_batch(b, self._timeout_error(b) if retriable and not self._forced else error)

    def _timeout_error(self, batch: ProducerBatch) -> AnnalError:
        # A batch that could never be sent has no answer's error: the reason it waited is its
        # last error (no live leader, leader unreachable).
        last = self._unsendable.get(batch.tp) or batch.last_error
        if last is None and self.idempotence is not None:
            last = self.idempotence.last_error  # waited for a producer id
        sent = f"after {batch.attempts + 1} attempt(s)" if batch.last_error is not None else "without being sent"
        err = KafkaTimeoutError(
            f"{batch.records_count} record(s) for {batch.tp.topic}-{batch.tp.partition} not delivered "
            f"within delivery_timeout_ms {sent}; last error: {last!r}"
        )
        err.__cause__ = last
        return err

    def _fail_batch(self, batch: ProducerBatch, error: BaseException) -> None:
        if self.idempotence is not None:
            self.idempotence.batch_failed(batch)
        self.acc.complete(batch, -1, error)
