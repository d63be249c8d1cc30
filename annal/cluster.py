"""Value types of cluster state that brokers and clients both read: how to reach a broker and
where a topic's partitions live. Both sides decode them from ZooKeeper (``annal.zookeeper``) or
from a broker's Metadata answer. Immutable, so thread-safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["BrokerInfo", "TopicPlacement", "PartitionState"]


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    """How to reach one broker: gRPC on ``port``, the binary data port on ``fetch_port``, the
    Kafka protocol on ``kafka_port`` (-1: no Kafka listener)."""

    broker_id: int
    host: str
    port: int
    fetch_port: int
    kafka_port: int = -1

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class PartitionState:
    """The leader and in-sync replicas of one partition, as the controller and the leader
    last wrote them (``/brokers/topics/<t>/partitions/<p>/state``). ``leader`` is -1 when no
    replica may lead; ``leader_epoch`` goes up by one with every leader change; ``zk_version``
    is the znode's version the state was read at (-1: not read from ZooKeeper), which a
    conditional write must name."""

    leader: int
    leader_epoch: int
    isr: tuple[int, ...]
    controller_epoch: int = 0
    zk_version: int = -1


@dataclass(frozen=True, slots=True)
class TopicPlacement:
    """Where each partition of a topic lives, and the topic's config overrides.

    ``partitions`` maps partition number to the id of the broker that leads it now (-1: none).
    ``replicas`` maps it to the brokers that hold a copy, the preferred leader first (empty
    for a placement without replication: then the leader is the only replica). ``isr`` and
    ``leader_epochs`` are the partition states' in-sync replicas and leader epochs. ``config``
    holds only the keys set for this topic (segment_bytes, retention_ms, ...); the broker
    fills the rest from its defaults.
    """

    name: str
    partitions: Mapping[int, int]
    config: Mapping[str, Any] = field(default_factory=dict)
    replicas: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    isr: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    leader_epochs: Mapping[int, int] = field(default_factory=dict)

    @property
    def partition_count(self) -> int:
        return len(self.partitions)

    def replicas_of(self, partition: int) -> tuple[int, ...]:
        """The replicas of ``partition``, preferred leader first."""
        r = self.replicas.get(partition)
        if r:
            return tuple(r)
        leader = self.partitions.get(partition, -1)
        return (leader,) if leader >= 0 else ()

    def isr_of(self, partition: int) -> tuple[int, ...]:
        r = self.isr.get(partition)
        return tuple(r) if r is not None else self.replicas_of(partition)

    def leader_epoch_of(self, partition: int) -> int:
        return int(self.leader_epochs.get(partition, 0))

    @property
    def replication_factor(self) -> int:
        return max((len(self.replicas_of(p)) for p in self.partitions), default=1)
