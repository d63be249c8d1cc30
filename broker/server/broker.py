"""The broker core, shared by standalone and cluster mode.

``Broker`` owns the ``LogManager`` (every partition log this broker leads), the current topic
placements (pushed by the ``Coordinator``, the only thing that differs between the two modes),
the long-poll waiters, the maintenance timer (retention, flush_ms, segment_ms) and the metrics.
The network edges (``grpc_service.py``, ``data_port.py``) call it and turn its results and
``AnnalError`` exceptions into wire answers; nothing here knows about gRPC or frames.

Leadership: a request for a partition this broker does not lead raises ``NotLeaderForPartitionError`` with
``details['leader']`` = the leader's ``BrokerInfo`` (host, port, fetch_port), or
``LeaderNotAvailableError`` when the leader is not live; an unknown topic or partition raises
``UnknownTopicOrPartitionError``. Topic names are validated (``annal.topic_names``) before any
name can reach the file system.

Replication (ZooKeeper mode, docs/replication.md): ``replication`` is the
``ReplicaManager``; the logs of partitions this broker follows are open too, consumers read
below the high watermark it computes, followers' fetches (``replica_id >= 0``) read past it,
and acks=-1 on a replicated partition waits for the in-sync replicas.

Long-poll: ``add_waiter(partitions, wake)`` registers a callback that every append to one of
those partitions calls (from the appending thread); fetches wait on timers and these wake-ups,
never in polling loops.

Thread-safety: thread-safe. Appends come from gRPC worker threads and the data port's event
loop thread; the logs serialise their own appends. The placement map is replaced whole
(copy-on-write), so readers never lock it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from annal.broker.coordination.base import BrokerInfo, Coordinator, TopicPlacement
from annal.errors import (
    AnnalError,
    BrokerShuttingDownError,
    InvalidConfigError,
    InvalidFetchSizeError,
    InvalidPartitionsError,
    InvalidRequiredAcksError,
    LeaderNotAvailableError,
    NotLeaderForPartitionError,
    StorageError,
    UnknownTopicOrPartitionError,
)
from annal.broker.server.config import (
    MAX_PARTITIONS,
    NEVER,
    REPLICATION_TOPIC_KEYS,
    BrokerConfig,
    validate_topic_config,
)
from annal.broker.server.metrics import BrokerMetrics, PartitionStat
from annal.broker.server.producer_ids import ProducerIds
from annal.broker.server.storage_health import StorageHealth
from annal.record import iter_batch_positions, parse_header
from annal.topic_names import is_valid_topic_name, validate_topic_name

__all__ = [
    "Broker",
    "AppendResult",
    "PartitionMetadata",
    "TopicMetadata",
    "read_result_size",
    "read_result_bytes",
    "release_read",
]

log = logging.getLogger("annal.broker")

Buffer = bytes | bytearray | memoryview
WakeCallback = Callable[[], None]

LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Base offset of each batch appended, in order, and the log end offset after them."""

    base_offsets: tuple[int, ...]
    log_end_offset: int
    bytes: int
    records: int


@dataclass(frozen=True, slots=True)
class PartitionMetadata:
    partition: int
    leader: int
    log_start_offset: int = -1
    log_end_offset: int = -1
    size_bytes: int = -1
    error: AnnalError | None = None
    replicas: tuple[int, ...] = ()
    isr: tuple[int, ...] = ()
    leader_epoch: int = 0


def _leaderless(topic: str, partition: int, placed: int, replicas: tuple[int, ...] = (),
                isr: tuple[int, ...] = (), leader_epoch: int = 0) -> PartitionMetadata:
    """Metadata of a partition whose placed leader is not registered (dead or cut off), or
    that has none (``placed`` -1). It keeps its replicas, ISR and epoch, as Kafka's answer
    does, so that clients can name the brokers that hold it."""
    if placed >= 0:
        why = f"broker {placed} is not registered"
    elif replicas:
        why = f"none of its replicas, brokers {', '.join(map(str, replicas))}, leads"
    else:
        why = "no leader is placed"
    return PartitionMetadata(
        partition, -1,
        error=LeaderNotAvailableError(
            f"partition {topic}-{partition} has no live leader ({why})",
            topic=topic, partition=partition, leader_id=placed,
        ),
        replicas=replicas, isr=isr, leader_epoch=leader_epoch,
    )


@dataclass(frozen=True, slots=True)
class TopicMetadata:
    name: str
    partitions: tuple[PartitionMetadata, ...] = ()
    config: Mapping[str, int] | None = None
    error: AnnalError | None = None


def _record_counts(buf: Buffer) -> list[int]:
    """Record count of each batch in ``buf``, from the length fields and headers alone (the
    log validates the batches; these counts are used only once it has accepted them)."""
    return [parse_header(buf, pos).last_offset_delta + 1 for pos, _ in iter_batch_positions(buf)]


class Broker:
    def __init__(self, config: BrokerConfig, coordinator: Coordinator, metrics: BrokerMetrics | None = None) -> None:
        self.config = config
        self.coordinator = coordinator
        self.metrics = metrics if metrics is not None else BrokerMetrics(self.partition_stats)
        # Idempotent producers' ids (InitProducerId, Kafka listener and gRPC).
        self.producer_ids = ProducerIds(self)
        self.me: BrokerInfo | None = None
        self.logs: Any = None  # annal.broker.storage.LogManager once open()
        self._placements: dict[str, TopicPlacement] = {}
        self._placement_lock = threading.Lock()
        self._waiters: dict[tuple[str, int], set[WakeCallback]] = {}
        self._waiters_lock = threading.Lock()
        self._shutting_down = False
        self._closed = False
        self._maintenance_stop = threading.Event()
        self._maintenance_thread: threading.Thread | None = None
        self.replication: Any = None  # annal.broker.replication.ReplicaManager in a ZooKeeper cluster
        self.storage_health = StorageHealth(
            self.metrics.registry, lambda: list(self.logs.all_logs().values()) if self.logs is not None else [])

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Open (and recover) every partition log in the data dir."""
        from annal.broker.storage import LogManager

        started = time.monotonic()
        self.logs = LogManager(str(self.config.data_dir), self._log_config({}))
        logs = self.logs.all_logs()
        truncated = sum(1 for plog in logs.values() if getattr(plog.report, "lost_data", False))
        log.info(
            "opened %d partition log(s) in %s in %.0f ms (%d truncated by recovery)",
            len(logs), self.config.data_dir, (time.monotonic() - started) * 1000, truncated,
        )

    def start(self, me: BrokerInfo) -> None:
        """Join the cluster as ``me`` and start following placements and the maintenance timer."""
        self.me = me
        self.coordinator.start(me)
        zk = getattr(self.coordinator, "kazoo_client", None)
        if zk is not None:
            from annal.broker.replication.replica_manager import ReplicaManager

            self.replication = ReplicaManager(self, zk)
        self.coordinator.add_listener(self._on_placements)
        self._maintenance_thread = threading.Thread(
            target=self._maintenance_loop, name="annal-maintenance", daemon=True
        )
        self._maintenance_thread.start()

    def begin_shutdown(self) -> None:
        """Wake every long-poll so it answers now (the edges stop taking new requests; the
        ones in flight still complete)."""
        self._shutting_down = True
        self._wake_all()

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def controlled_shutdown(self) -> int:
        """Hand the partitions this broker leads to other in-sync replicas before it stops
        (Kafka's controlled shutdown); returns how many moved. Safe to call more than once."""
        rep = self.replication
        return rep.controlled_shutdown() if rep is not None else 0

    def close(self) -> None:
        """Stop the timer, flush and close every log, leave the cluster. Idempotent."""
        self.begin_shutdown()
        if self.replication is not None:
            self.replication.close()
        self._closed = True
        self._maintenance_stop.set()
        if self._maintenance_thread is not None:
            self._maintenance_thread.join(timeout=30)
            self._maintenance_thread = None
        try:
            self.coordinator.stop()
        except Exception:
            log.exception("leaving the cluster failed")
        if self.logs is not None:
            logs, self.logs = self.logs, None
            started = time.monotonic()
            try:
                logs.flush_all()
            except (OSError, StorageError) as err:  # e.g. a full disk: close what can be closed
                self.storage_health.write_failed(err, "flushing the logs at shutdown")
            try:
                logs.close_all()
            except (OSError, StorageError) as err:
                log.warning("closing the logs at shutdown failed (%s); no clean-shutdown marker was written, "
                            "so the next start recovers from the last checkpoint", err)
                return
            log.info("flushed and closed all logs in %.0f ms", (time.monotonic() - started) * 1000)

    # ------------------------------------------------------------------ placements

    def _on_placements(self, placements: Mapping[str, TopicPlacement]) -> None:
        """Coordinator callback: open logs for partitions now led here, drop deleted topics."""
        me = self.me
        assert me is not None
        with self._placement_lock:
            old = self._placements
            new = dict(placements)
            for name, placement in new.items():
                if not is_valid_topic_name(name):
                    log.error("ignoring topic with an illegal name %r from the coordinator", name)
                    continue
                wanted = None
                for partition, leader in placement.partitions.items():
                    if (leader == me.broker_id or me.broker_id in placement.replicas_of(partition)) \
                            and self.logs is not None:
                        try:
                            wanted = wanted or self._log_config(placement.config)
                            plog = self.logs.get_or_create(name, partition, wanted)
                            if plog.config != wanted:
                                # Logs recovered at start-up were opened with the broker
                                # defaults; the topic's own settings apply from here on.
                                plog.config = wanted
                        except Exception:
                            log.exception("cannot open log %s-%d", name, partition)
                if name not in old:
                    log.info("topic %s: %d partition(s), config %s", name, placement.partition_count,
                             dict(placement.config) or "defaults")
            if self.replication is not None:
                # Leaders and followers switch before requests are routed by the new map.
                self.replication.on_placements(new)
            self._placements = new
            for name in old.keys() - new.keys():
                if self.logs is not None:
                    try:
                        self.logs.delete_topic(name)
                    except Exception:
                        log.exception("deleting the logs of topic %s failed", name)
                log.info("topic %s deleted", name)
                self._wake_topic(name, old[name])

    def placements(self) -> dict[str, TopicPlacement]:
        return self._placements

    def _log_config(self, overrides: Mapping[str, Any]) -> Any:
        """The storage ``LogConfig`` of a topic: broker defaults, then the topic's overrides.
        ``NEVER`` (Kafka's Long.MAX_VALUE) for flush_messages/flush_ms is storage's None."""
        from annal.broker.storage import LogConfig

        merged: dict[str, Any] = self.config.topic_config(overrides)
        merged.pop("partitions", None)
        for key in REPLICATION_TOPIC_KEYS:
            merged.pop(key, None)
        for key in ("flush_messages", "flush_ms"):
            if merged.get(key) == NEVER:
                merged[key] = None
        return LogConfig.from_dict(merged)

    # ------------------------------------------------------------------ topics

    def _check_serving(self) -> None:
        if self._closed:
            raise BrokerShuttingDownError("broker is shutting down")

    def create_topic(
        self, name: str, partitions: int, config: Mapping[str, Any], validate_only: bool = False,
        replication_factor: int = -1,
        *,
        deadline: float | None = None,
    ) -> TopicPlacement | None:
        """Validate and create one topic. ``partitions <= 0`` takes the broker default, and
        ``replication_factor <= 0`` the broker's ``default_replication_factor``. ``deadline``
        (``time.monotonic()``): the caller's, passed to the coordinator."""
        self._check_serving()
        validate_topic_name(name)
        overrides = validate_topic_config(config, allow_partitions=False)
        if partitions is None or partitions <= 0:
            partitions = int(self.config.topic_defaults["partitions"])
        if partitions > MAX_PARTITIONS:
            raise InvalidPartitionsError(f"partitions must be at most {MAX_PARTITIONS}, not {partitions}")
        merged = self.config.topic_config(overrides)
        if merged["max_message_bytes"] > self.config.max_request_bytes:
            raise InvalidConfigError(
                f"max_message_bytes {merged['max_message_bytes']} exceeds the broker's "
                f"max_request_bytes {self.config.max_request_bytes}"
            )
        if validate_only:
            from annal.errors import TopicAlreadyExistsError

            if name in self._placements:
                raise TopicAlreadyExistsError(f"topic {name!r} already exists", topic=name)
            return None
        if replication_factor is None or replication_factor <= 0:
            replication_factor = self.config.default_replication_factor
        return self.coordinator.create_topic(name, partitions, overrides, replication_factor, deadline=deadline)

    def delete_topic(self, name: str, *, deadline: float | None = None) -> None:
        self._check_serving()
        if not is_valid_topic_name(name):
            raise UnknownTopicOrPartitionError(f"topic {name[:60]!r} does not exist", topic=name)
        self.coordinator.delete_topic(name, deadline=deadline)

    def metadata(
        self, topics: Sequence[str] | None = None, *, confirm_missing: bool = False
    ) -> tuple[dict[int, BrokerInfo], list[TopicMetadata]]:
        """Live brokers and, for ``topics`` (all when empty), placements plus local offsets.
        A partition whose leader is not among the live brokers reports leader -1 with
        LEADER_NOT_AVAILABLE (Kafka's answer), not the dead broker's id.

        ``confirm_missing``: before a named topic is reported as not existing, the
        coordinator's store is read (``Coordinator.topic_registered``); a topic created
        through another broker whose placement has not reached this one yet is answered
        with the retriable LEADER_NOT_AVAILABLE instead. The SDK fails at once on
        UNKNOWN_TOPIC_OR_PARTITION, so its answer must be the cluster's, not this broker's
        possibly late copy. Blocks up to a ZooKeeper round trip: not for the event loop."""
        placements = self._placements
        live = self.coordinator.brokers()
        names = list(topics) if topics else sorted(placements)
        out = []
        for name in names:
            placement = placements.get(name)
            if placement is None:
                out.append(TopicMetadata(name, error=self._missing_topic_error(name, confirm_missing)))
                continue
            parts = []
            for partition in sorted(placement.partitions):
                leader = placement.partitions[partition]
                replicas = placement.replicas_of(partition)
                isr = placement.isr_of(partition)
                epoch = placement.leader_epoch_of(partition)
                if leader not in live:
                    parts.append(_leaderless(name, partition, leader, replicas, isr, epoch))
                    continue
                plog = self._local_log(name, partition) if self.me and leader == self.me.broker_id else None
                if plog is not None:
                    end = plog.log_end_offset
                    if self.replication is not None:
                        try:
                            end = self.replication.high_watermark(name, partition, plog)
                        except AnnalError:
                            pass
                    parts.append(PartitionMetadata(partition, leader, plog.log_start_offset, end,
                                                   plog.size_bytes, None, replicas, isr, epoch))
                else:
                    parts.append(PartitionMetadata(partition, leader, replicas=replicas, isr=isr, leader_epoch=epoch))
            out.append(TopicMetadata(name, tuple(parts), self.config.topic_config(placement.config)))
        return live, out

    def _missing_topic_error(self, name: str, confirm: bool) -> AnnalError:
        if confirm and is_valid_topic_name(name) and self.coordinator.topic_registered(name):
            me = self.me.broker_id if self.me else -1
            return LeaderNotAvailableError(
                f"topic {name!r} exists but its placement has not reached broker {me} yet", topic=name
            )
        return UnknownTopicOrPartitionError(f"topic {name[:60]!r} does not exist")

    # ------------------------------------------------------------------ partition lookup

    def _local_log(self, topic: str, partition: int) -> Any:
        logs = self.logs
        return None if logs is None else logs.get(topic, partition)

    def leader_log(self, topic: str, partition: int) -> Any:
        """The ``PartitionLog`` of a partition this broker leads, or the error saying why not."""
        placement = self._placements.get(topic)
        if placement is None:
            if not is_valid_topic_name(topic):
                raise UnknownTopicOrPartitionError(f"topic {topic[:60]!r} does not exist (illegal name)", topic=topic[:255])
            raise UnknownTopicOrPartitionError(f"topic {topic!r} does not exist", topic=topic)
        leader = placement.partitions.get(partition)
        if leader is None:
            raise UnknownTopicOrPartitionError(
                f"topic {topic!r} has no partition {partition} (it has {placement.partition_count})",
                topic=topic, partition=partition,
            )
        me = self.me
        if me is None or leader != me.broker_id:
            info = self.coordinator.brokers().get(leader)
            if info is None:
                raise LeaderNotAvailableError(
                    f"partition {topic}-{partition} has no live leader (broker {leader})",
                    topic=topic, partition=partition, leader_id=leader,
                )
            raise NotLeaderForPartitionError(
                f"broker {me.broker_id if me else -1} does not lead {topic}-{partition}; broker {leader} "
                f"at {info.host}:{info.port} does",
                topic=topic, partition=partition, leader=info,
            )
        plog = self._local_log(topic, partition)
        if plog is None:
            if self.logs is None:
                raise BrokerShuttingDownError("broker is shutting down")
            plog = self.logs.get_or_create(topic, partition, self._log_config(placement.config))
        return plog

    def max_message_bytes(self, topic: str) -> int:
        placement = self._placements.get(topic)
        overrides = placement.config if placement is not None else {}
        return int(overrides.get("max_message_bytes", self.config.topic_defaults["max_message_bytes"]))

    # ------------------------------------------------------------------ produce

    def append(self, topic: str, partition: int, batches: Sequence[Buffer], acks: int,
               timeout_ms: int = 30_000) -> AppendResult:
        """Append ``batches`` (each one or more whole RecordBatch v2 batches) to a partition.

        All batches are validated before any is written: one bad batch fails the partition and
        nothing of it is appended. With ``acks == -1`` and one replica the log is flushed
        (fdatasync) before this returns. Raises ``AnnalError`` subclasses (CorruptRecordError, InvalidRecordError,
        MessageSizeTooLargeError, UnsupportedCompressionTypeError, NotLeaderForPartitionError, ...).
        In a replicated cluster, acks=-1 also waits (up to ``timeout_ms``) until every in-sync
        replica has the batches (docs/replication.md).
        """
        buf: Buffer = batches[0] if len(batches) == 1 else b"".join(batches)
        result = self.append_coalesced(topic, partition, [(buf, acks, timeout_ms)])[0]
        if isinstance(result, AnnalError):
            raise result
        return result

    def append_coalesced(self, topic: str, partition: int, parts: Sequence[tuple[Buffer, int, int]],
                         answered: Callable[[int, AppendResult | AnnalError], None] | None = None,
                         ) -> list[AppendResult | AnnalError]:
        """Append several requests' ``(records, acks, timeout_ms)`` to one partition in order,
        each validated and answered on its own (a refused one does not affect the others), with
        one ``fdatasync`` (or, replicated, one wait for the in-sync replicas, up to the largest
        ``timeout_ms``) for all those with acks=-1 and one wake-up of the partition's
        long-polls. Raises only what refuses them all (not the leader, shutting down).

        ``answered(i, result)``, when given, is called as soon as part ``i``'s result is final
        without waiting for the others: right after its append for acks 0/1, at once for a
        refusal (acks=-1 parts wait for the shared flush or replication). The request-handler
        pool answers those producers then, so that a pipelining producer is not held back by
        the parts coalesced behind its request. The returned list holds every result, these
        included."""
        self._check_serving()
        plog = self.leader_log(topic, partition)
        health = self.storage_health
        rep = self.replication
        out: list[AppendResult | AnnalError] = []
        durable: list[int] = []  # indexes in ``out`` of acks=-1 parts: flushed or replicated below
        wait_ms = 0
        active_before = plog.active_segment
        appended = False

        def answer_last() -> None:
            """Hand the last part's result to ``answered`` unless it waits for the flush."""
            if answered is not None and out and (not durable or durable[-1] != len(out) - 1):
                answered(len(out) - 1, out[-1])

        for buf, acks, timeout_ms in parts:
            answer_last()  # the previous part's result is final (its ``continue``s skip the end)
            if acks not in (0, 1, -1):
                out.append(InvalidRequiredAcksError(f"acks must be 0, 1 or -1 (all), not {acks}", acks=acks))
                continue
            if not len(buf):
                out.append(AppendResult((), plog.log_end_offset, 0, 0))
                continue
            try:
                epoch = rep.check_produce(topic, partition, acks) if rep is not None else None
                counts = _record_counts(buf)
                pstate = plog.producer_state
                if pstate.producer_id(buf) < 0:
                    base = plog.append_batches(buf, epoch)  # validates every batch (CRC, lengths, size) first
                else:
                    # An idempotent producer's batch: checked against its sequence and
                    # appended under the partition's producer-state lock.
                    with pstate.lock:
                        header, duplicate = pstate.check(plog, buf, epoch)
                        if duplicate is None:
                            base = plog.append_batches(buf, epoch)
                            pstate.appended(plog, header, base)
                    if duplicate is not None:
                        log.info("%s-%d: duplicate batch of producer %d (sequence %d): answered with its "
                                 "offset %d, not written again", topic, partition, header.producer_id,
                                 header.base_sequence, duplicate[0])
                        if acks == -1:
                            durable.append(len(out))
                            wait_ms = max(wait_ms, timeout_ms)
                        out.append(AppendResult((duplicate[0],), duplicate[1] + 1, 0, 0))
                        continue
            except StorageError as err:
                health.write_failed(err, f"append to {topic}-{partition}")
                out.append(err)
                continue
            except AnnalError as err:
                out.append(err)
                continue
            appended = True
            offsets = []
            next_offset = base
            for n in counts:
                offsets.append(next_offset)
                next_offset += n
            records = sum(counts)
            self.metrics.record_append(topic, len(buf), records)
            if acks == -1:
                durable.append(len(out))
                wait_ms = max(wait_ms, timeout_ms)
            out.append(AppendResult(tuple(offsets), next_offset, len(buf), records))
        answer_last()
        if appended:
            health.write_succeeded()
            if plog.active_segment is not active_before:
                log.info("rolled %s-%d: new segment at offset %d", topic, partition, plog.active_segment.base_offset)
            self.notify_append(topic, partition)  # followers' fetches too
            if rep is not None:
                rep.on_append(topic, partition, plog)
        if durable:
            failed: AnnalError | None = None
            if rep is not None and rep.replication_factor(topic, partition) > 1:
                # Kafka's acks=all: every in-sync replica has the batches (in its page cache);
                # the copies, not an fdatasync, are what survives a broker's loss. One wait for
                # all of them: up to the last one's end.
                end = max(out[i].log_end_offset for i in durable)  # type: ignore[union-attr]
                try:
                    rep.wait_for_replicas(topic, partition, end, wait_ms)
                except AnnalError as err:
                    failed = err
            else:
                try:
                    plog.flush()  # one copy: acks=all means on this disk
                except (OSError, StorageError) as err:
                    health.write_failed(err, f"flush of {topic}-{partition}")
                    failed = err if isinstance(err, StorageError) else StorageError(
                        f"flush of {topic}-{partition} failed: {err}", errno=err.errno)
            if failed is not None:
                for i in durable:
                    out[i] = failed
        return out

    # ------------------------------------------------------------------ fetch

    def read(self, topic: str, partition: int, offset: int, max_bytes: int, replica_id: int = -1,
             verify: bool = True) -> Any:
        """A ``LogReadResult`` starting at the batch holding ``offset``: whole batches up to
        ``max_bytes``, at least one. The caller must ``release()`` it. Raises
        ``OffsetOutOfRangeError`` (with the valid range), ``InvalidFetchSizeError``, ...;
        with ``verify=False`` (an event loop's read), ``NeedsVerification`` when bytes not yet
        CRC-checked since start-up would have to be checked (``PartitionLog.read``)."""
        if max_bytes <= 0:
            raise InvalidFetchSizeError(f"max_bytes must be positive, not {max_bytes}", max_bytes=max_bytes)
        # The log checks the range itself (OffsetOutOfRangeError with log_start_offset and
        # log_end_offset in details) against one consistent snapshot.
        plog = self.leader_log(topic, partition)
        rep = self.replication
        if rep is None:
            return plog.read(offset, max_bytes, verify=verify)
        if replica_id >= 0:
            # A follower: its fetch offset is its log end offset; it reads past the HW.
            hw = rep.on_replica_fetch(topic, partition, replica_id, offset, plog)
            result = plog.read(offset, max_bytes, verify=verify)
            result.high_watermark = hw
            return result
        return plog.read(offset, max_bytes, max_offset=rep.high_watermark(topic, partition, plog), verify=verify)

    def offset_for_leader_epoch(self, topic: str, partition: int, leader_epoch: int) -> tuple[int, int]:
        """OffsetsForLeaderEpoch (KIP-101) on the leader: ``(epoch, end_offset)``."""
        self.leader_log(topic, partition)
        rep = self.replication
        if rep is None:
            plog = self.leader_log(topic, partition)
            return plog.leader_epochs.end_offset_for(leader_epoch, plog.log_end_offset)
        return rep.epoch_end_offset(topic, partition, leader_epoch)

    def list_offset(self, topic: str, partition: int, timestamp: int) -> tuple[int, int]:
        """``(offset, timestamp)``: -2 earliest, -1 latest, else the first batch with a max
        timestamp >= ``timestamp`` (offset -1 when none)."""
        plog = self.leader_log(topic, partition)
        if timestamp == EARLIEST_TIMESTAMP:
            return plog.log_start_offset, -1
        if timestamp == LATEST_TIMESTAMP:
            if self.replication is not None:
                return self.replication.high_watermark(topic, partition, plog), -1
            return plog.log_end_offset, -1
        if timestamp < 0:
            from annal.errors import InvalidRequestError

            raise InvalidRequestError(f"timestamp {timestamp} is neither -1, -2 nor a time in ms")
        found = plog.offset_for_timestamp(timestamp)
        if found is None:
            return -1, -1
        if isinstance(found, tuple):
            return int(found[0]), int(found[1])
        return int(getattr(found, "offset")), int(getattr(found, "timestamp", -1))

    # ------------------------------------------------------------------ long-poll waiters

    def add_waiter(self, partitions: Iterable[tuple[str, int]], wake: WakeCallback) -> list[tuple[str, int]]:
        """Call ``wake()`` (from the appending thread) on every append to one of ``partitions``
        until ``remove_waiter`` with the returned keys. ``wake`` must be cheap and must not
        block; it may be called more than once."""
        keys = partitions if isinstance(partitions, list) else list(partitions)
        with self._waiters_lock:
            for key in keys:
                self._waiters.setdefault(key, set()).add(wake)
        if self._shutting_down:
            wake()
        return keys

    def remove_waiter(self, keys: Iterable[tuple[str, int]], wake: WakeCallback) -> None:
        with self._waiters_lock:
            for key in keys:
                s = self._waiters.get(key)
                if s is not None:
                    s.discard(wake)
                    if not s:
                        del self._waiters[key]

    def notify_append(self, topic: str, partition: int) -> None:
        key = (topic, partition)
        if key not in self._waiters:  # the common case, no lock needed (dict reads are atomic)
            return
        with self._waiters_lock:
            callbacks = list(self._waiters.get(key, ()))
        for wake in callbacks:
            try:
                wake()
            except Exception:
                log.exception("long-poll wake-up failed")

    def _wake_topic(self, topic: str, placement: TopicPlacement) -> None:
        for partition in placement.partitions:
            self.notify_append(topic, partition)

    def _wake_all(self) -> None:
        with self._waiters_lock:
            callbacks = {w for s in self._waiters.values() for w in s}
        for wake in callbacks:
            try:
                wake()
            except Exception:
                log.exception("long-poll wake-up failed")

    # ------------------------------------------------------------------ maintenance

    def _maintenance_loop(self) -> None:
        interval = self.config.maintenance_interval_ms / 1000
        while not self._maintenance_stop.wait(interval):
            logs = self.logs
            if logs is None:
                return
            try:
                done = logs.run_maintenance(int(time.time() * 1000))
            except (OSError, StorageError) as err:  # a full disk: said once, not every second
                self.storage_health.write_failed(err, "log maintenance (roll, flush, checkpoint)")
                continue
            except Exception:
                log.exception("log maintenance failed")
                continue
            if done.get("segments_rolled"):
                log.info("maintenance: rolled %d segment(s) older than segment_ms", done["segments_rolled"])
            if done.get("segments_deleted"):
                log.info("maintenance: retention deleted %d segment(s)", done["segments_deleted"])

    # ------------------------------------------------------------------ metrics

    def partition_stats(self) -> Iterable[PartitionStat]:
        for name, placement in list(self._placements.items()):
            for partition in placement.partitions:
                plog = self._local_log(name, partition)
                if plog is not None:
                    yield (name, partition, plog.log_start_offset, plog.log_end_offset, plog.size_bytes)


# ---------------------------------------------------------------------- LogReadResult access
# The edges use these three so that they depend on one small surface of the storage API.


def read_result_size(result: Any) -> int:
    """Bytes of record batches in a ``LogReadResult``."""
    return int(result.size)


def read_result_bytes(result: Any) -> bytes:
    """The record batches of a ``LogReadResult`` copied into one ``bytes`` (gRPC needs bytes)."""
    return bytes(result.tobytes())


def release_read(result: Any) -> None:
    """Give back the segment handles a ``LogReadResult`` holds. ``None`` is ignored."""
    if result is not None:
        result.release()
