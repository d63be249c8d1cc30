"""Value types of cluster state that brokers and clients both read: how to reach a broker and
where a topic's partitions live. Both sides decode them from ZooKeeper (``annal.zookeeper``) or
from a broker's Metadata answer. Immutable, so thread-safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["BrokerInfo", "TopicPlacement"]


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
class TopicPlacement:
    """Where each partition of a topic lives, and the topic's config overrides.

    ``partitions`` maps partition number to the id of the broker that leads it. ``config``
    holds only the keys set for this topic (segment_bytes, retention_ms, ...); the broker
    fills the rest from its defaults.
    """

    name: str
    partitions: Mapping[int, int]
    config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def partition_count(self) -> int:
        return len(self.partitions)
