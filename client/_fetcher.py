"""The consumer's fetcher: a background thread keeping FETCH requests in flight on each leader's
binary data port, and a prefetch buffer of raw answers the application thread decodes in
``poll``.

Pipelining: as soon as a partition's answer arrives, the thread works out the offset after its
last whole batch (from the batch headers alone) and asks for the next bytes, while the
application is still decoding the previous ones. A partition is fetched again only while fewer
than ``prefetch_count`` answers of it wait in the buffer, which bounds memory.

Positions: ``position`` is the next offset the application will be given (advanced by
``poll``); ``fetch_offset`` is the next offset the thread asks for (advanced by answers,
``>= position``). ``seek``/resets bump the partition's ``epoch``: answers to requests made under
an older epoch are dropped, and buffered answers are cleared, so no record from before a seek
is ever returned after it.

Errors per partition: OFFSET_OUT_OF_RANGE resets the position to the earliest or latest offset
(``auto_offset_reset``) or, with ``"none"``, is raised from ``poll``; leader changes and lost
connections refresh metadata and retry after ``retry_backoff_ms``; any other error is raised
from the next ``poll``.

Thread-safety: the state of every partition is guarded by one condition variable shared by the
fetch thread and the application threads; connections belong to the fetch thread.
"""

from __future__ import annotations

import logging
import select
import struct
import threading
import time
from collections import deque
from typing import Any, Callable

from annal.errors import (
    AnnalError,
    BrokerNotAvailableError,
    LeaderNotAvailableError,
    NetworkError,
    NotLeaderForPartitionError,
    OffsetOutOfRangeError,
    StorageError,
    UnknownTopicOrPartitionError,
    for_code,
)
from annal.protocol import annal_pb2
from annal.protocol.framing import (
    FetchPartition,
    FetchRequest,
    decode_fetch_response,
    encode_fetch_request,
)
from annal.record import HEADER_SIZE, LOG_OVERHEAD

from annal.client._connection import DataConnection, InFlight
from annal.client._ratelimit import RateLimitedWarnings
from annal.client._metadata import ClusterMetadata
from annal.client._rpc import RpcClient
from annal.client._waker import Waker
from annal.client.structs import TopicPartition

__all__ = ["PartitionState", "CompletedFetch", "Fetcher", "EARLIEST", "LATEST"]

log = logging.getLogger("annal.client.consumer")

EARLIEST = -2
LATEST = -1

_OFFSET_LEN = struct.Struct(">qi")
_LAST_DELTA = struct.Struct(">i")

_RETRY_ERRORS = (
    NotLeaderForPartitionError,
    LeaderNotAvailableError,
    UnknownTopicOrPartitionError,
    BrokerNotAvailableError,
    NetworkError,
    StorageError,
)


def next_offset_after(records: bytes | bytearray | memoryview, default: int) -> int:
    """The offset after the last whole batch in ``records`` (``default`` if none), read from
    the batch headers only."""
    n = len(records)
    pos = 0
    nxt = default
    unpack = _OFFSET_LEN.unpack_from
    while n - pos >= HEADER_SIZE:
        base, length = unpack(records, pos)
        size = length + LOG_OVERHEAD
        if size < HEADER_SIZE or pos + size > n:
            break
        last = base + _LAST_DELTA.unpack_from(records, pos + 23)[0] + 1
        if last > nxt:
            nxt = last
        pos += size
    return nxt


class CompletedFetch:
    """One partition's answer waiting to be decoded: whole batches starting at the batch that
    holds ``fetch_offset``, and the offset after them."""

    __slots__ = ("records", "fetch_offset", "next_offset", "epoch")

    def __init__(self, records: bytes | bytearray | memoryview, fetch_offset: int, next_offset: int, epoch: int) -> None:
        self.records = records
        self.fetch_offset = fetch_offset
        self.next_offset = next_offset
        self.epoch = epoch


class PartitionState:
    """What the consumer knows about one assigned partition (guarded by the fetcher's lock)."""

    __slots__ = (
        "tp",
        "position",
        "fetch_offset",
        "epoch",
        "paused",
        "reset_to",
        "buffered",
        "in_flight",
        "high_watermark",
        "log_start_offset",
        "error",
        "retry_at",
        "leftover",
    )

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.position: int | None = None
        self.fetch_offset: int | None = None
        self.epoch = 0
        self.paused = False
        self.reset_to: int | None = None  # EARLIEST, LATEST or None
        self.buffered: deque[CompletedFetch] = deque()
        self.in_flight = False
        self.high_watermark = -1
        self.log_start_offset = -1
        self.error: BaseException | None = None
        self.retry_at = 0.0
        self.leftover: deque[Any] = deque()  # decoded records not yet returned (max_records)

    @property
    def fetchable(self) -> bool:
        """True if a fetch may be sent for this partition now (position known, not paused)."""
        return not self.paused and self.fetch_offset is not None and self.reset_to is None and self.error is None

    def seek(self, offset: int) -> None:
        """Move to ``offset``: drop everything buffered and every answer in flight."""
        self.epoch += 1
        self.position = offset
        self.fetch_offset = offset
        self.reset_to = None
        self.error = None
        self.buffered.clear()
        self.leftover.clear()


class Fetcher(threading.Thread):
    """The fetch thread of one Consumer (module docstring)."""

    def __init__(
        self,
        metadata: ClusterMetadata,
        rpc: RpcClient,
        *,
        auto_offset_reset: str,
        fetch_min_bytes: int,
        fetch_max_wait_ms: int,
        fetch_max_bytes: int,
        max_partition_fetch_bytes: int,
        retry_backoff_ms: int,
        request_timeout_ms: int,
        prefetch_count: int = 2,
    ) -> None:
        super().__init__(name="annal-consumer-fetcher", daemon=True)
        self.metadata = metadata
        self.rpc = rpc
        self.auto_offset_reset = auto_offset_reset
        self.fetch_min_bytes = fetch_min_bytes
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.fetch_max_bytes = fetch_max_bytes
        self.max_partition_fetch_bytes = max_partition_fetch_bytes
        self.retry_backoff_ms = retry_backoff_ms
        self.request_timeout_ms = request_timeout_ms
        self.prefetch_count = prefetch_count
        self.cond = threading.Condition(threading.Lock())
        self.states: dict[TopicPartition, PartitionState] = {}
        self._conns: dict[int, DataConnection] = {}
        self._node_backoff_until: dict[int, float] = {}
        self._running = True
        self._waker = Waker()
        self.fatal_error: BaseException | None = None
        # Conditions that stop progress, said once and then every 30 s (the consumer's too).
        self.warnings = RateLimitedWarnings(log)

    # -- control (application threads) --------------------------------------------------------

    def wakeup(self) -> None:
        """Make the thread look at the partitions again (assignment, seek, resume, poll)."""
        self._waker.wakeup()

    def close(self) -> None:
        """Stop the thread and close its connections."""
        self._running = False
        self.wakeup()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(5.0)

    def set_assignment(self, tps: set[TopicPartition]) -> None:
        """Replace the assigned partitions; kept partitions keep their positions."""
        with self.cond:
            for tp in list(self.states):
                if tp not in tps:
                    del self.states[tp]
            for tp in tps:
                if tp not in self.states:
                    st = PartitionState(tp)
                    st.reset_to = self.default_reset()
                    self.states[tp] = st
            self.cond.notify_all()
        self.wakeup()

    def default_reset(self) -> int | None:
        """The reset of a partition with no position: EARLIEST, LATEST or None ("none")."""
        return {"earliest": EARLIEST, "latest": LATEST}.get(self.auto_offset_reset)

    # -- offsets by gRPC ------------------------------------------------------------------------

    def list_offsets(self, requests: dict[TopicPartition, int]) -> dict[TopicPartition, tuple[int, int]]:
        """``ListOffsets`` for each partition (timestamp, or EARLIEST/LATEST) from its leader:
        ``{tp: (offset, timestamp)}``. Raises the first partition's error."""
        by_address: dict[str, list[TopicPartition]] = {}
        md = self.metadata
        for tp in requests:
            leader = md.leader_for(tp.topic, tp.partition)
            info = md.broker(leader) if leader >= 0 else None
            if info is None:
                # Ask now, not rate-limited: the fetch thread may be refreshing the same topic
                # at this moment, and this caller needs the answer before going on.
                md.refresh([tp.topic], force=True)
                leader = md.leader_for(tp.topic, tp.partition)
                info = md.broker(leader) if leader >= 0 else None
            if info is None:
                if md.partitions_for(tp.topic) is None:
                    raise UnknownTopicOrPartitionError(f"topic {tp.topic!r} is not known", topic=tp.topic)
                if tp.partition not in (md.partitions_for(tp.topic) or ()):
                    raise UnknownTopicOrPartitionError(
                        f"{tp.topic} has no partition {tp.partition}", topic=tp.topic, partition=tp.partition
                    )
                raise LeaderNotAvailableError(f"no leader for {tp.topic}-{tp.partition}")
            by_address.setdefault(f"{info.host}:{info.port}", []).append(tp)
        out: dict[TopicPartition, tuple[int, int]] = {}
        for address, tps in by_address.items():
            req = annal_pb2.ListOffsetsRequest(
                partitions=[
                    annal_pb2.ListOffsetsPartition(topic=tp.topic, partition=tp.partition, timestamp=requests[tp])
                    for tp in tps
                ]
            )
            resp = self.rpc.call(address, "ListOffsets", req)
            for r in resp.results:
                tp = TopicPartition(r.topic, r.partition)
                if r.error_code:
                    cls = for_code(r.error_code)
                    if cls.retriable:
                        md.request_update()
                    raise cls(r.error_message or cls.reason, topic=r.topic, partition=r.partition)
                out[tp] = (r.offset, r.timestamp)
        missing = [tp for tp in requests if tp not in out]
        if missing:
            raise UnknownTopicOrPartitionError(f"no offsets returned for {missing}")
        return out

    def _resolve_resets(self) -> None:
        with self.cond:
            todo = {tp: st.reset_to for tp, st in self.states.items() if st.reset_to is not None and st.retry_at <= time.monotonic()}
            epochs = {tp: self.states[tp].epoch for tp in todo}
        if not todo:
            return
        try:  # one call for every partition; one by one only if that fails
            found = self.list_offsets(todo)  # type: ignore[arg-type]
        except AnnalError:
            found = {}
        for tp, strategy in todo.items():
            try:
                if tp in found:
                    offset = found[tp][0]
                else:
                    (offset, _ts) = self.list_offsets({tp: strategy})[tp]  # type: ignore[dict-item]
            except AnnalError as exc:
                with self.cond:
                    st = self.states.get(tp)
                    if st is None or st.epoch != epochs[tp]:
                        continue
                    if exc.retriable:
                        st.retry_at = time.monotonic() + self.retry_backoff_ms / 1000.0
                    else:
                        st.error = exc
                        self.cond.notify_all()
                continue
            with self.cond:
                st = self.states.get(tp)
                if st is not None and st.epoch == epochs[tp] and st.reset_to is not None:
                    st.seek(offset)
                    self.cond.notify_all()

    # -- the loop --------------------------------------------------------------------------------

    def run(self) -> None:
        """Loop until closed: resolve resets, send fetches, read answers."""
        try:
            while self._running:
                self._run_once()
        except BaseException as exc:
            log.exception("consumer fetch thread failed")
            self.fatal_error = exc
            with self.cond:
                self.cond.notify_all()
        finally:
            for conn in self._conns.values():
                conn.close()
            self._conns.clear()
            self._waker.close()

    def _run_once(self) -> None:
        self._resolve_resets()
        now = time.monotonic()
        md = self.metadata
        by_node: dict[int, list[tuple[PartitionState, int, int]]] = {}
        need_metadata = False
        next_wait = 1.0
        with self.cond:
            for tp, st in self.states.items():
                if st.reset_to is not None:
                    next_wait = min(next_wait, max(0.0, st.retry_at - now))
                if not st.fetchable or st.in_flight or len(st.buffered) >= self.prefetch_count:
                    continue
                if st.retry_at > now:
                    next_wait = min(next_wait, st.retry_at - now)
                    continue
                leader = md.leader_for(tp.topic, tp.partition)
                if leader < 0 or md.broker(leader) is None:
                    if md.partition_count(tp.topic) is not None:  # not just metadata still on its way
                        self.warnings.warn(("leader", tp), "no live leader for %s-%d (leader %d); its records wait",
                                           tp.topic, tp.partition, leader)
                    need_metadata = True
                    continue
                self.warnings.clear(("leader", tp))
                by_node.setdefault(leader, []).append((st, st.fetch_offset, st.epoch))  # type: ignore[arg-type]
        if need_metadata:
            md.request_update()
            md.maybe_refresh({tp.topic for tp in list(self.states)})
            next_wait = min(next_wait, self.retry_backoff_ms / 1000.0)
        for node, items in by_node.items():
            conn = self._connection(node, now)
            if conn is None or conn.in_flight:
                if conn is None:
                    next_wait = min(next_wait, self.retry_backoff_ms / 1000.0)
                continue
            parts: list[FetchPartition] = []
            budget = self.fetch_max_bytes
            sent = []
            for st, offset, epoch in items:
                if budget <= 0 and parts:
                    break
                max_bytes = min(self.max_partition_fetch_bytes, max(budget, 1))
                parts.append(FetchPartition(st.tp.topic, st.tp.partition, offset, max_bytes))
                budget -= max_bytes
                sent.append((st.tp, offset, epoch))
            cid = conn.next_correlation_id()
            req = FetchRequest(cid, self.fetch_max_wait_ms, self.fetch_min_bytes, parts)
            with self.cond:
                for tp, _o, _e in sent:
                    self.states[tp].in_flight = True
            try:
                conn.send([encode_fetch_request(req)], InFlight(cid, sent))
            except NetworkError as exc:
                self._fail_requests(sent, exc)
                self._drop_connection(conn)
        self._poll(next_wait)

    def _poll(self, timeout: float) -> None:
        conns = [c for c in self._conns.values() if c.in_flight and not c.closed]
        rlist: list[Any] = [self._waker, *conns]
        try:
            readable, _, _ = select.select(rlist, [], [], max(0.0, timeout))
        except (OSError, ValueError):
            readable = []
        if self._waker in readable:
            self._waker.drain()
        for conn in conns:
            if conn in readable:
                try:
                    answers = conn.receive()
                except NetworkError as exc:
                    self._drop_connection(conn, exc)
                    continue
                for req, frame in answers:
                    self._handle_fetch_response(req.context, frame)
        now = time.monotonic()
        for conn in list(self._conns.values()):
            # A long-poll fetch legitimately waits fetch_max_wait_ms on top of the timeout.
            if conn.in_flight and now - conn.in_flight[0].sent_at > (
                self.request_timeout_ms + self.fetch_max_wait_ms
            ) / 1000.0:
                self._drop_connection(conn, NetworkError(f"fetch from broker {conn.node_id} timed out"))

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
            conn = DataConnection(node, info.host, info.fetch_port, request_timeout_ms=self.request_timeout_ms)
        except NetworkError:
            self._node_backoff_until[node] = now + self.retry_backoff_ms / 1000.0
            self.metadata.request_update()
            return None
        self._conns[node] = conn
        return conn

    def _drop_connection(self, conn: DataConnection, error: AnnalError | None = None) -> None:
        conn.close()
        if self._conns.get(conn.node_id) is conn:
            del self._conns[conn.node_id]
        self._node_backoff_until[conn.node_id] = time.monotonic() + self.retry_backoff_ms / 1000.0
        self.metadata.request_update()
        for req in list(conn.in_flight):
            self._fail_requests(req.context, error or NetworkError("connection lost"))
        conn.in_flight.clear()

    def _fail_requests(self, sent: list[tuple[TopicPartition, int, int]], error: BaseException) -> None:
        retry_at = time.monotonic() + self.retry_backoff_ms / 1000.0
        with self.cond:
            for tp, _offset, _epoch in sent:
                st = self.states.get(tp)
                if st is not None:
                    st.in_flight = False
                    st.retry_at = retry_at

    def _handle_fetch_response(self, sent: list[tuple[TopicPartition, int, int]], frame: memoryview) -> None:
        try:
            resp = decode_fetch_response(frame)
        except AnnalError as exc:
            self._fail_requests(sent, exc)
            return
        asked = {tp: (offset, epoch) for tp, offset, epoch in sent}
        now = time.monotonic()
        with self.cond:
            for tp in asked:
                st = self.states.get(tp)
                if st is not None:
                    st.in_flight = False
            if resp.error_code:
                for tp in asked:
                    st = self.states.get(tp)
                    if st is not None:
                        st.retry_at = now + self.retry_backoff_ms / 1000.0
                self.metadata.request_update()
                return
            notify = False
            for r in resp.partitions:
                tp = TopicPartition(r.topic, r.partition)
                st = self.states.get(tp)
                if st is None or tp not in asked:
                    continue
                offset, epoch = asked[tp]
                if st.epoch != epoch:
                    continue  # a seek happened meanwhile: this answer is stale
                if r.error_code == 0:
                    st.high_watermark = r.high_watermark
                    st.log_start_offset = r.log_start_offset
                    if len(r.records):
                        nxt = next_offset_after(r.records, offset)
                        if nxt > offset:
                            st.buffered.append(CompletedFetch(r.records, offset, nxt, epoch))
                            st.fetch_offset = nxt
                            notify = True
                        else:
                            # Bytes but no whole batch (the broker always sends the first batch
                            # whole, so this is a broker fault): do not spin on it.
                            log.warning("fetch of %s at %d returned no whole batch", tp, offset)
                            st.retry_at = now + self.retry_backoff_ms / 1000.0
                    continue
                cls = for_code(r.error_code)
                if cls is OffsetOutOfRangeError:
                    strategy = self.default_reset()
                    if strategy is None:
                        st.error = OffsetOutOfRangeError(
                            f"offset {offset} of {tp.topic}-{tp.partition} is out of range "
                            f"[{r.log_start_offset}, {r.high_watermark}] and auto_offset_reset='none'",
                            topic=tp.topic,
                            partition=tp.partition,
                            offset=offset,
                            log_start_offset=r.log_start_offset,
                            log_end_offset=r.high_watermark,
                        )
                    else:
                        log.info("offset %d of %s out of range; resetting", offset, tp)
                        st.epoch += 1
                        st.buffered.clear()
                        st.leftover.clear()
                        st.reset_to = strategy
                    notify = True
                elif issubclass(cls, _RETRY_ERRORS) or cls.retriable:
                    st.retry_at = now + self.retry_backoff_ms / 1000.0
                    self.metadata.request_update()
                else:
                    st.error = cls(r.error_message or cls.reason, topic=tp.topic, partition=tp.partition)
                    notify = True
            if notify:
                self.cond.notify_all()
