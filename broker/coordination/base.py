"""The one interface between a broker and whatever holds cluster state.

A broker talks to cluster state only through ``Coordinator``. Two implementations share every
other line of the broker: ``StandaloneCoordinator`` (one broker, topic metadata in the data dir)
and ``ZooKeeperCoordinator`` (brokers, placements and the controller in ZooKeeper).

Thread-safety: implementations are called from the gRPC worker threads and the event loop
thread; they must be safe to call from any thread. Listeners are called from the coordinator's
own thread (kazoo's event thread for ZooKeeper) and must not block.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

__all__ = ["BrokerInfo", "TopicPlacement", "Coordinator", "PlacementListener"]


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    """How to reach one broker: gRPC on ``port``, the binary data port on ``fetch_port``."""

    broker_id: int
    host: str
    port: int
    fetch_port: int

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


PlacementListener = Callable[[Mapping[str, TopicPlacement]], None]
"""Called with the whole new placement map whenever a topic is created, deleted or moved."""


class Coordinator(abc.ABC):
    """Cluster state as one broker sees it."""

    @abc.abstractmethod
    def start(self, me: BrokerInfo) -> None:
        """Join: register this broker (refusing if its id is held by a live broker) and load
        placements. Raises ``broker.errors.AnnalError`` subclasses on failure."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Leave: deregister and release every resource. Idempotent."""

    @abc.abstractmethod
    def brokers(self) -> dict[int, BrokerInfo]:
        """Live brokers by id."""

    @abc.abstractmethod
    def controller_id(self) -> int:
        """Id of the broker that places partitions, or -1 when none is elected."""

    @abc.abstractmethod
    def topics(self) -> dict[str, TopicPlacement]:
        """Every topic's placement."""

    @abc.abstractmethod
    def create_topic(self, name: str, partitions: int, config: Mapping[str, Any]) -> TopicPlacement:
        """Create a topic and place its partitions. Raises TopicAlreadyExistsError,
        InvalidTopicError, InvalidPartitionsError or InvalidConfigError."""

    @abc.abstractmethod
    def delete_topic(self, name: str) -> None:
        """Delete a topic; its brokers drop its partitions. Raises
        UnknownTopicOrPartitionError."""

    @abc.abstractmethod
    def add_listener(self, listener: PlacementListener) -> None:
        """Call ``listener`` with the placement map now and after every change."""
