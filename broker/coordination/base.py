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
from typing import Any, Callable, Mapping

from annal.cluster import BrokerInfo, TopicPlacement

__all__ = ["BrokerInfo", "TopicPlacement", "Coordinator", "PlacementListener"]


PlacementListener = Callable[[Mapping[str, TopicPlacement]], None]
"""Called with the whole new placement map whenever a topic is created, deleted or moved."""


class Coordinator(abc.ABC):
    """Cluster state as one broker sees it."""

    @abc.abstractmethod
    def start(self, me: BrokerInfo) -> None:
        """Join: register this broker (refusing if its id is held by a live broker) and load
        placements. Raises ``annal.errors.AnnalError`` subclasses on failure."""

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
    def create_topic(
        self,
        name: str,
        partitions: int,
        config: Mapping[str, Any],
        replication_factor: int = 1,
        *,
        deadline: float | None = None,
    ) -> TopicPlacement:
        """Create a topic and place ``replication_factor`` replicas of each partition. Raises
        TopicAlreadyExistsError, InvalidTopicError, InvalidPartitionsError,
        InvalidReplicationFactorError or InvalidConfigError. ``deadline``
        (``time.monotonic()``) is the caller's: past it the topic is not created and
        RequestTimedOutError is raised."""

    @abc.abstractmethod
    def delete_topic(self, name: str, *, deadline: float | None = None) -> None:
        """Delete a topic; its brokers drop its partitions. Raises
        UnknownTopicOrPartitionError; RequestTimedOutError past ``deadline`` (the caller's,
        ``time.monotonic()``)."""

    def topic_registered(self, name: str) -> bool | None:
        """Whether the cluster's store holds topic ``name`` now (not marked for deletion),
        read from the store itself rather than this broker's copy of it; None when the
        store did not answer. A standalone broker's copy is the store."""
        return name in self.topics()

    @abc.abstractmethod
    def add_listener(self, listener: PlacementListener) -> None:
        """Call ``listener`` with the placement map now and after every change."""
