"""Small value types of the client SDK (kafka-python's ``kafka/structs.py`` names).

All are immutable: NamedTuples where a record is created per message (cheap to build, unpack
and compare) and frozen slotted dataclasses for the admin results. Thread-safe (immutable).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple, Sequence

__all__ = [
    "TopicPartition",
    "RecordMetadata",
    "ConsumerRecord",
    "OffsetAndTimestamp",
    "NewTopic",
    "BrokerMetadata",
    "PartitionMetadata",
    "TopicDescription",
    "ClusterDescription",
    "Header",
]

Header = tuple[str, "bytes | None"]
"""One record header: a UTF-8 key and a byte value (None for a null value)."""


class TopicPartition(NamedTuple):
    """One partition of one topic: the unit of ordering, assignment and offsets."""

    topic: str
    partition: int


class RecordMetadata(NamedTuple):
    """Where the broker stored a produced record.

    ``offset`` is -1 when the producer used ``acks=0`` (no answer is awaited, so the offset is
    unknown). ``timestamp`` is the record's create time in ms since the epoch.
    """

    topic: str
    partition: int
    offset: int
    timestamp: int


class ConsumerRecord(NamedTuple):
    """One record as read by a Consumer.

    ``key`` and ``value`` are the bytes on the wire (None for null) unless the consumer has a
    deserializer; ``headers`` is a list of ``(str, bytes | None)``; ``timestamp`` is the create
    time in ms since the epoch.
    """

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: Any
    value: Any
    headers: Sequence[Header]


class OffsetAndTimestamp(NamedTuple):
    """Answer of ``offsets_for_times``: the first offset whose batch timestamp is >= the one
    asked for, and that batch's max timestamp."""

    offset: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class NewTopic:
    """A topic to create with ``Admin.create_topics``.

    ``topic_configs`` keys are the broker's topic config names: segment_bytes, segment_ms,
    retention_bytes, retention_ms, flush_messages, flush_ms, max_message_bytes,
    min_insync_replicas, unclean_leader_election_enable (integers). ``replication_factor``:
    copies of each partition (-1: the broker's ``default_replication_factor``), as Kafka's
    ``NewTopic(name, num_partitions, replication_factor)``.
    """

    name: str
    num_partitions: int
    topic_configs: Mapping[str, int] = field(default_factory=dict)
    replication_factor: int = -1


@dataclass(frozen=True, slots=True)
class BrokerMetadata:
    """How to reach a broker: gRPC on ``port``, the binary data port on ``fetch_port``."""

    broker_id: int
    host: str
    port: int
    fetch_port: int


@dataclass(frozen=True, slots=True)
class PartitionMetadata:
    """One partition as described by the broker: its leader (-1: none alive) and its log
    bounds (``log_end_offset`` is the high watermark, the next offset to be written)."""

    topic: str
    partition: int
    leader: int
    log_start_offset: int
    log_end_offset: int
    size_bytes: int
    error_code: int = 0
    replicas: tuple[int, ...] = ()
    isr: tuple[int, ...] = ()
    leader_epoch: int = 0


@dataclass(frozen=True, slots=True)
class TopicDescription:
    """A topic, its partitions in partition order and the config keys set on it."""

    name: str
    partitions: tuple[PartitionMetadata, ...]
    configs: Mapping[str, int] = field(default_factory=dict)

    @property
    def partition_count(self) -> int:
        """Number of partitions."""
        return len(self.partitions)


@dataclass(frozen=True, slots=True)
class ClusterDescription:
    """The brokers of the cluster, its controller (-1: none) and its id."""

    cluster_id: str
    controller_id: int
    brokers: tuple[BrokerMetadata, ...]
