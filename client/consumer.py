"""The Consumer: read records from partitions (kafka-python's ``KafkaConsumer`` API).

Fetching happens in a background thread (``_fetcher.py``) over each leader's binary data port,
one request in flight per broker and the next one sent while the application works on the
last; ``poll`` decodes the prefetched batches (CRC-checked, lz4 decompressed) with
``annal.record.decode_records_into`` and advances the positions.

Assignment: ``Consumer(*topics)`` without a group assigns itself every partition of those
topics (and picks up partitions added later); ``assign([...])`` assigns explicitly. Group
consumption (``subscribe``, ``commit``, ``committed``, a ``group_id`` with topics) needs
``zookeeper=``: the group membership plugs in through ``annal.client._group`` and calls
``_set_assignment`` when partitions are handed over.

Thread-safety: kafka-python's rule applies — one application thread uses a consumer at a time
(``poll``, ``seek``, ``position``...); the fetch thread works alongside it.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from annal.errors import (
    AnnalError,
    ConsumerClosedError,
    KafkaTimeoutError,
    LocalUsageError,
    UnknownTopicOrPartitionError,
)
from annal.record import decode_records_into

from annal.client._fetcher import EARLIEST, LATEST, CompletedFetch, Fetcher, PartitionState
from annal.client._metadata import ClusterMetadata, GrpcMetadataSource, zookeeper_metadata
from annal.client._rpc import RpcClient, parse_bootstrap
from annal.client.structs import ConsumerRecord, OffsetAndTimestamp, TopicPartition

__all__ = ["Consumer"]

_RESETS = ("earliest", "latest", "none")


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LocalUsageError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise LocalUsageError(f"{name} must be >= {minimum}, not {value}")
    return value


def _check_tp(tp: Any) -> TopicPartition:
    if isinstance(tp, TopicPartition):
        return tp
    if isinstance(tp, tuple) and len(tp) == 2 and isinstance(tp[0], str) and isinstance(tp[1], int):
        return TopicPartition(tp[0], tp[1])
    raise TypeError(f"expected a TopicPartition(topic, partition), not {tp!r}")


class Consumer:
    """Reads records from Annal partitions.

    Args:
        *topics: topics to consume; without ``group_id`` every partition of them is assigned.
        bootstrap_servers: ``"host:port[,...]"`` of the brokers' gRPC ports, or a list.
        group_id: consumer group (needs ``zookeeper=``); None for no group.
        auto_offset_reset: where to start without a position, or when the position is out of
            range: ``"earliest"``, ``"latest"``, or ``"none"`` (raise OffsetOutOfRangeError).
        fetch_min_bytes / fetch_max_wait_ms: a fetch is answered once this many bytes are
            available or after this long (long-poll).
        fetch_max_bytes: byte budget of one fetch request over all its partitions.
        max_partition_fetch_bytes: byte budget per partition per fetch (a first batch larger
            than this is still returned whole).
        max_poll_records: most records one ``poll`` returns.
        key_deserializer / value_deserializer: callables applied to the raw bytes.
        check_crcs: verify each batch's CRC-32C before decoding it.
        consumer_timeout_ms: iteration stops after this long without a record (default: never).
        metadata_max_age_ms: how often the partitions of consumed topics are re-read.
        zookeeper, enable_auto_commit, auto_commit_interval_ms: group consumption in cluster
            mode (see ``annal.client._group``).

    Not thread-safe for concurrent application calls (see the module docstring).
    """

    def __init__(
        self,
        *topics: str,
        bootstrap_servers: str | Sequence[str] = "127.0.0.1:9092",
        group_id: str | None = None,
        auto_offset_reset: str = "latest",
        fetch_min_bytes: int = 1,
        fetch_max_wait_ms: int = 500,
        fetch_max_bytes: int = 52428800,
        max_partition_fetch_bytes: int = 1048576,
        max_poll_records: int = 500,
        key_deserializer: Callable[[bytes | None], Any] | None = None,
        value_deserializer: Callable[[bytes | None], Any] | None = None,
        check_crcs: bool = True,
        consumer_timeout_ms: float = float("inf"),
        retry_backoff_ms: int = 100,
        request_timeout_ms: int = 30000,
        metadata_max_age_ms: int = 300000,
        zookeeper: str | None = None,
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: int = 5000,
        client_id: str = "annal-consumer",
    ) -> None:
        for t in topics:
            if not isinstance(t, str) or not t:
                raise TypeError(f"topics must be non-empty strings, not {t!r}")
        if auto_offset_reset not in _RESETS:
            raise LocalUsageError(f"auto_offset_reset must be one of {_RESETS}, not {auto_offset_reset!r}")
        _check_int("fetch_min_bytes", fetch_min_bytes, 0)
        _check_int("fetch_max_wait_ms", fetch_max_wait_ms, 0)
        _check_int("fetch_max_bytes", fetch_max_bytes, 1)
        _check_int("max_partition_fetch_bytes", max_partition_fetch_bytes, 1)
        _check_int("max_poll_records", max_poll_records, 1)
        _check_int("retry_backoff_ms", retry_backoff_ms, 0)
        _check_int("request_timeout_ms", request_timeout_ms, 1)
        _check_int("auto_commit_interval_ms", auto_commit_interval_ms, 1)
        _check_int("metadata_max_age_ms", metadata_max_age_ms, 0)
        if group_id is not None and not isinstance(group_id, str):
            raise TypeError(f"group_id must be a str, not {type(group_id).__name__}")
        if topics and group_id is not None and zookeeper is None:
            raise LocalUsageError(
                "group consumption needs zookeeper= (consumer groups live in ZooKeeper); "
                "without it, drop group_id to read every partition, or assign() partitions"
            )
        self.config: dict[str, Any] = dict(
            bootstrap_servers=bootstrap_servers, group_id=group_id, auto_offset_reset=auto_offset_reset,
            fetch_min_bytes=fetch_min_bytes, fetch_max_wait_ms=fetch_max_wait_ms,
            fetch_max_bytes=fetch_max_bytes, max_partition_fetch_bytes=max_partition_fetch_bytes,
            max_poll_records=max_poll_records, check_crcs=check_crcs,
            consumer_timeout_ms=consumer_timeout_ms, retry_backoff_ms=retry_backoff_ms,
            request_timeout_ms=request_timeout_ms, zookeeper=zookeeper,
            enable_auto_commit=enable_auto_commit, auto_commit_interval_ms=auto_commit_interval_ms,
            client_id=client_id,
        )
        self._key_deserializer = key_deserializer
        self._value_deserializer = value_deserializer
        self._check_crcs = bool(check_crcs)
        self._max_poll_records = max_poll_records
        self._consumer_timeout_ms = consumer_timeout_ms
        self._closed = False
        self._rpc = RpcClient(request_timeout_ms)
        if zookeeper is not None:
            self._metadata = zookeeper_metadata(zookeeper, retry_backoff_ms)
        else:
            source = GrpcMetadataSource(self._rpc, parse_bootstrap(bootstrap_servers), request_timeout_ms)
            self._metadata = ClusterMetadata(source, retry_backoff_ms)
        self._fetcher = Fetcher(
            self._metadata,
            self._rpc,
            auto_offset_reset=auto_offset_reset,
            fetch_min_bytes=fetch_min_bytes,
            fetch_max_wait_ms=fetch_max_wait_ms,
            fetch_max_bytes=fetch_max_bytes,
            max_partition_fetch_bytes=max_partition_fetch_bytes,
            retry_backoff_ms=retry_backoff_ms,
            request_timeout_ms=request_timeout_ms,
        )
        self._states = self._fetcher.states
        self._cond = self._fetcher.cond
        # Topics whose every partition this consumer assigns itself (no group).
        self._topics: set[str] = set()
        self._manual = False
        self._last_topic_refresh = time.monotonic()
        self._unreachable: AnnalError | None = None
        self._metadata_max_age_ms = metadata_max_age_ms
        self._rotate = 0
        self._iter: Iterator[ConsumerRecord] | None = None
        self._group: Any = None
        self._fetcher.start()
        if group_id is not None and zookeeper is not None:
            self._group = self._make_group(zookeeper, group_id, enable_auto_commit, auto_commit_interval_ms)
            if topics:
                self._group.subscribe(list(topics), None)
        elif topics:
            self._topics = set(topics)
            self._metadata.add_listener(lambda md: self._update_topic_assignment())
            try:
                self._metadata.refresh(list(self._topics))
            except AnnalError:
                pass  # retried from poll()

    def _make_group(self, zookeeper: str, group_id: str, enable_auto_commit: bool, auto_commit_interval_ms: int) -> Any:
        """The group-membership seam (``annal.client._group``)."""
        try:
            from annal.client._group import GroupMembership  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise LocalUsageError(f"consumer groups are not available: {exc}") from None
        return GroupMembership(
            self,
            zookeeper=zookeeper,
            group_id=group_id,
            enable_auto_commit=enable_auto_commit,
            auto_commit_interval_ms=auto_commit_interval_ms,
        )

    # -- assignment ------------------------------------------------------------------------------

    def _ensure_open(self) -> None:
        if self._closed:
            raise ConsumerClosedError("the consumer is closed")
        if self._fetcher.fatal_error is not None:
            raise AnnalError(f"the consumer's fetch thread failed: {self._fetcher.fatal_error!r}")

    def _set_assignment(
        self, partitions: Iterable[TopicPartition], start_offsets: Mapping[TopicPartition, int | None] | None = None
    ) -> None:
        """Replace the assigned partitions (kept ones keep their positions), then seek those in
        ``start_offsets`` that have an offset (a group's committed ones). The hook the group
        membership calls after a rebalance, and what ``assign`` does."""
        self._fetcher.set_assignment({_check_tp(tp) for tp in partitions})
        self._iter = None
        if start_offsets is None:
            return
        with self._cond:
            for tp, offset in start_offsets.items():
                st = self._states.get(tp)
                if st is not None and offset is not None:
                    st.seek(offset)
        self._fetcher.wakeup()

    def _update_topic_assignment(self) -> None:
        if not self._topics or self._manual or self._closed:
            return
        tps: set[TopicPartition] = set()
        for topic in self._topics:
            for p in self._metadata.partitions_for(topic) or ():
                tps.add(TopicPartition(topic, p))
        if tps != set(self._states):
            self._fetcher.set_assignment(tps)

    def _maybe_refresh_topics(self) -> None:
        if not self._topics or self._manual:
            return
        missing = [t for t in self._topics if self._metadata.partition_count(t) is None]
        now = time.monotonic()
        age = now - self._last_topic_refresh
        # Missing topics are asked for twice a second; known ones every metadata_max_age_ms,
        # so a topic re-created with another partition count is picked up.
        if (missing and age > 0.5) or age > self._metadata_max_age_ms / 1000.0:
            self._last_topic_refresh = now
            self._refresh_topics_and_warn()

    def _refresh_topics_and_warn(self) -> None:
        """Refresh the subscribed topics; say (rate-limited WARNING) when no broker answers
        or a topic does not exist, and remember it for ``_problem``."""
        warnings = self._fetcher.warnings
        try:
            self._metadata.refresh(list(self._topics))
        except AnnalError as exc:
            self._unreachable = exc
            warnings.warn("unreachable", "consumer: no broker answered: %s", exc)
            return
        self._unreachable = None
        warnings.clear("unreachable")
        for t in sorted(self._topics):
            if self._metadata.is_missing(t):
                warnings.warn(("missing", t), "consumer: topic %r does not exist; waiting for it", t)
            else:
                warnings.clear(("missing", t))

    def _problem(self) -> AnnalError | None:
        """Why nothing can be read right now, if it is that no broker answers or a subscribed
        topic does not exist (the console consumer's exit reason)."""
        if self._unreachable is not None:
            return self._unreachable
        missing = sorted(t for t in self._topics if self._metadata.is_missing(t))
        if missing:
            return UnknownTopicOrPartitionError(f"topic {missing[0]!r} does not exist", topic=missing[0])
        return None

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read exactly these partitions (replacing any assignment or topic list). With a
        ``group_id`` they start at the group's committed offsets (read from ZooKeeper here;
        ``NetworkError`` when it cannot be read), else at ``auto_offset_reset``."""
        self._ensure_open()
        if self._group is not None and self._group.subscribed:
            raise LocalUsageError("assign() cannot be mixed with a group subscription")
        tps = [_check_tp(tp) for tp in partitions]
        starts: dict[TopicPartition, int | None] | None = None
        if self._group is not None:
            # New partitions start at the group's committed offsets, read before they are
            # assigned and set right after (a seek drops whatever the fetch thread got from
            # auto_offset_reset's position meanwhile), so poll() never returns those records.
            starts = self._group.committed_offsets([tp for tp in tps if tp not in self._states])
        self._manual = True
        self._topics = set()
        self._set_assignment(tps, starts)

    def assignment(self) -> set[TopicPartition]:
        """The partitions currently assigned."""
        return set(self._states)

    def subscribe(self, topics: Sequence[str] = (), pattern: str | None = None, listener: Any = None) -> None:
        """Join the consumer group and share ``topics`` with its other members (needs
        ``zookeeper=`` and ``group_id``)."""
        self._ensure_open()
        if self._group is None:
            raise LocalUsageError("subscribe() is group consumption and needs group_id= and zookeeper=")
        self._manual = False
        self._group.subscribe(list(topics), listener)

    def unsubscribe(self) -> None:
        """Leave the group subscription (or forget the topics / assignment)."""
        if self._group is not None:
            self._group.unsubscribe()
        self._topics = set()
        self._set_assignment(())

    def subscription(self) -> set[str]:
        """Topics subscribed to (group) or consumed whole (no group)."""
        if self._group is not None and self._group.subscribed:
            return set(self._group.subscription())
        return set(self._topics)

    def commit(self, offsets: Mapping[TopicPartition, Any] | None = None) -> None:
        """Commit offsets for the group (needs ``zookeeper=`` and ``group_id``)."""
        self._ensure_open()
        if self._group is None:
            raise LocalUsageError("commit() needs a consumer group: pass group_id= and zookeeper=")
        self._group.commit(offsets)

    def committed(self, partition: TopicPartition) -> int | None:
        """The group's committed offset of ``partition`` (needs ``zookeeper=`` and ``group_id``)."""
        self._ensure_open()
        if self._group is None:
            raise LocalUsageError("committed() needs a consumer group: pass group_id= and zookeeper=")
        return self._group.committed(_check_tp(partition))  # type: ignore[no-any-return]

    # -- positions ---------------------------------------------------------------------------------

    def _state(self, tp: Any) -> PartitionState:
        tp = _check_tp(tp)
        st = self._states.get(tp)
        if st is None:
            raise LocalUsageError(f"{tp.topic}-{tp.partition} is not assigned to this consumer")
        return st

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Make the next ``poll`` start ``partition`` at ``offset``."""
        self._ensure_open()
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise LocalUsageError(f"offset must be an int >= 0, not {offset!r}")
        with self._cond:
            self._state(partition).seek(offset)
        self._iter = None
        self._fetcher.wakeup()

    def _seek_to(self, partitions: Sequence[TopicPartition], where: int) -> None:
        self._ensure_open()
        tps = [_check_tp(tp) for tp in partitions] or list(self._states)
        with self._cond:
            for tp in tps:
                st = self._state(tp)
                st.seek(0)
                st.position = st.fetch_offset = None
                st.reset_to = where
        self._iter = None
        self._fetcher.wakeup()

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        """Start the given partitions (default: all assigned) at their log start offset."""
        self._seek_to(partitions, EARLIEST)

    def seek_to_end(self, *partitions: TopicPartition) -> None:
        """Start the given partitions (default: all assigned) at their log end offset."""
        self._seek_to(partitions, LATEST)

    def position(self, partition: TopicPartition) -> int:
        """The offset of the next record ``poll`` will return for ``partition`` (resolving
        ``auto_offset_reset`` or a pending seek_to_* now if needed)."""
        self._ensure_open()
        tp = _check_tp(partition)
        with self._cond:
            st = self._state(tp)
            if st.position is not None and st.reset_to is None:
                return st.position
            where = st.reset_to
            epoch = st.epoch
            if where is None:
                if st.error is not None:
                    raise st.error
                where = self._fetcher.default_reset()
        if where is None:
            raise LocalUsageError(f"{tp.topic}-{tp.partition} has no position and auto_offset_reset='none'")
        offset = self._fetcher.list_offsets({tp: where})[tp][0]
        with self._cond:
            st = self._state(tp)
            if st.epoch == epoch and (st.position is None or st.reset_to is not None):
                st.seek(offset)
            self._fetcher.wakeup()
            return st.position if st.position is not None else offset

    def highwater(self, partition: TopicPartition) -> int | None:
        """The partition's log end offset as of the last fetch answer (None before one)."""
        with self._cond:
            hw = self._state(partition).high_watermark
        return None if hw < 0 else hw

    def beginning_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The log start offset of each partition (asked from the brokers now)."""
        tps = [_check_tp(tp) for tp in partitions]
        res = self._fetcher.list_offsets({tp: EARLIEST for tp in tps})
        return {tp: res[tp][0] for tp in tps}

    def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The log end offset (next offset to be written) of each partition."""
        tps = [_check_tp(tp) for tp in partitions]
        res = self._fetcher.list_offsets({tp: LATEST for tp in tps})
        return {tp: res[tp][0] for tp in tps}

    def offsets_for_times(self, timestamps: Mapping[TopicPartition, int]) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """For each partition, the first offset whose batch timestamp is >= the given one
        (ms since the epoch), or None when no record is that recent."""
        req: dict[TopicPartition, int] = {}
        for tp, ts in timestamps.items():
            if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
                raise LocalUsageError(f"timestamp for {tp} must be an int >= 0 (ms), not {ts!r}")
            req[_check_tp(tp)] = ts
        res = self._fetcher.list_offsets(req)
        return {
            tp: (None if res[tp][0] < 0 else OffsetAndTimestamp(res[tp][0], res[tp][1])) for tp in req
        }

    def pause(self, *partitions: TopicPartition) -> None:
        """Stop fetching and returning records of these partitions until ``resume``."""
        with self._cond:
            for tp in partitions:
                self._state(tp).paused = True
        self._iter = None

    def resume(self, *partitions: TopicPartition) -> None:
        """Fetch and return records of these paused partitions again."""
        with self._cond:
            for tp in partitions:
                self._state(tp).paused = False
        self._fetcher.wakeup()

    def paused(self) -> set[TopicPartition]:
        """The paused partitions."""
        with self._cond:
            return {tp for tp, st in self._states.items() if st.paused}

    # -- metadata --------------------------------------------------------------------------------

    def topics(self) -> set[str]:
        """Every topic of the cluster (asked from a broker now)."""
        self._ensure_open()
        self._metadata.refresh(None)
        return self._metadata.topics()

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        """Partition numbers of ``topic``, or None if it does not exist."""
        self._ensure_open()
        try:
            self._metadata.refresh([topic])
        except UnknownTopicOrPartitionError:
            return None
        return self._metadata.partitions_for(topic)

    # -- records ------------------------------------------------------------------------------------

    def _decode(self, tp: TopicPartition, records: Any, start_offset: int) -> tuple[list[ConsumerRecord], int]:
        """ConsumerRecords of the whole batches in ``records`` from ``start_offset`` on, and the
        offset after the last batch."""
        kd, vd = self._key_deserializer, self._value_deserializer
        if kd is None and vd is None:
            # The codec builds each ConsumerRecord in C, once, with (topic, partition) in
            # front: several times cheaper than a Python call per record. The cyclic garbage
            # collector is the application's: the consumer never switches it.
            return decode_records_into(records, start_offset, ConsumerRecord, self._check_crcs,
                                       (tp.topic, tp.partition))
        topic, part = tp

        def make_deser(o: int, t: int, k: Any, v: Any, h: Any) -> ConsumerRecord:
            return ConsumerRecord(
                topic, part, o, t, kd(k) if kd is not None else k, vd(v) if vd is not None else v, h
            )

        return decode_records_into(records, start_offset, make_deser, self._check_crcs)

    def poll(self, timeout_ms: float = 0, max_records: int | None = None, update_offsets: bool = True) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Records fetched since the last poll, at most ``max_records`` (default
        ``max_poll_records``), waiting up to ``timeout_ms`` for some to arrive.

        Raises the error of a partition that cannot be read (``OffsetOutOfRangeError`` with
        ``auto_offset_reset="none"``, ``CorruptRecordError`` for a batch whose CRC does not
        match: the position stays at the bad offset).
        """
        self._ensure_open()
        if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, (int, float)) or timeout_ms < 0:
            raise LocalUsageError(f"timeout_ms must be a number >= 0, not {timeout_ms!r}")
        limit = self._max_poll_records if max_records is None else _check_int("max_records", max_records, 1)
        if self._group is not None:
            self._group.poll()
        self._maybe_refresh_topics()
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            out = self._collect(limit)
            if out:
                return out
            left = deadline - time.monotonic()
            if left <= 0:
                return {}
            with self._cond:
                if not self._has_data():
                    self._cond.wait(min(left, 0.5))
            self._ensure_open()
            self._maybe_refresh_topics()

    def _has_data(self) -> bool:
        for st in self._states.values():
            if st.error is not None or (not st.paused and (st.buffered or st.leftover)):
                return True
        return False

    def _collect(self, limit: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        out: dict[TopicPartition, list[ConsumerRecord]] = {}
        count = 0
        fetches: list[tuple[PartitionState, CompletedFetch, int, int]] = []
        with self._cond:
            states = list(self._states.values())
            if len(states) > 1:
                self._rotate = (self._rotate + 1) % len(states)
                states = states[self._rotate :] + states[: self._rotate]
            for st in states:
                if st.error is not None:
                    err, st.error = st.error, None
                    raise err
            for st in states:
                if count >= limit:
                    break
                if st.paused or st.position is None:
                    continue
                if st.leftover:
                    take = []
                    lo = st.leftover
                    while lo and count < limit:
                        take.append(lo.popleft())
                        count += 1
                    st.position = take[-1].offset + 1
                    out[st.tp] = take
                    continue
                while st.buffered and count < limit:
                    cf = st.buffered.popleft()
                    fetches.append((st, cf, st.position, st.epoch))
                    count += 1  # counted properly below; reserves the partition's turn
                    break
        if fetches:
            self._fetcher.wakeup()
        for st, cf, position, epoch in fetches:
            count -= 1
            try:
                records, nxt = self._decode(st.tp, cf.records, position)
            except AnnalError:
                with self._cond:
                    if st.epoch == epoch:
                        st.seek(position)  # fetch again from the bad offset next time
                self._fetcher.wakeup()
                raise
            room = limit - count
            with self._cond:
                if st.epoch != epoch or st.position != position:
                    continue  # seek() meanwhile
                if len(records) > room:
                    rest = records[room:]
                    records = records[:room]
                    st.leftover.extend(rest)
                if records:
                    st.position = records[-1].offset + 1 if st.leftover else max(nxt, records[-1].offset + 1)
                else:
                    st.position = max(position, nxt)
            if records:
                out.setdefault(st.tp, []).extend(records)
                count += len(records)
        return out

    def __iter__(self) -> Iterator[ConsumerRecord]:
        return self

    def __next__(self) -> ConsumerRecord:
        """The next record; ``StopIteration`` after ``consumer_timeout_ms`` without one."""
        deadline = time.monotonic() + self._consumer_timeout_ms / 1000.0
        while True:
            it = self._iter
            if it is not None:
                try:
                    return next(it)
                except StopIteration:
                    self._iter = None
            left = deadline - time.monotonic()
            if left <= 0:
                raise StopIteration
            batch = self.poll(timeout_ms=min(left * 1000.0, 1000.0))
            if batch:
                self._iter = iter([r for recs in batch.values() for r in recs])

    # -- lifecycle ------------------------------------------------------------------------------------

    def close(self, autocommit: bool = True) -> None:
        """Stop the fetch thread and close connections (and leave the group). Idempotent."""
        if self._closed:
            return
        try:
            if self._group is not None:
                # Before marking closed: the rebalance listener may still call commit/position.
                self._group.close(autocommit)
        finally:
            self._closed = True
            self._fetcher.close()
            self._metadata.close()
            self._rpc.close()

    @property
    def closed(self) -> bool:
        """True once ``close`` was called."""
        return self._closed

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
