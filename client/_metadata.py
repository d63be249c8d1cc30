"""What the client knows about the cluster: brokers, topics, partitions and their leaders.

``ClusterMetadata`` is the one place the producer, consumer and admin ask "partitions of topic
T", "leader of partition P", "how do I reach broker B", "is broker B alive". It is filled by a
``MetadataSource``:

- ``GrpcMetadataSource`` (bootstrap mode) asks any reachable broker with the gRPC ``Metadata``
  call, when asked to refresh and at most every ``retry_backoff_ms`` per topic.
- A ZooKeeper source can instead push updates from its watches with ``ClusterMetadata.update``;
  ``request_update`` then only needs to be a no-op or a re-read.

Thread-safe: every method may be called from any thread; state is replaced under a lock and
readers see a consistent snapshot. Listeners run in the thread that applied the update and must
not block.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Protocol

from annal.errors import (
    AnnalError,
    BrokerNotAvailableError,
    KafkaTimeoutError,
    LocalUsageError,
    UnknownTopicOrPartitionError,
    for_code,
)
from annal.protocol import annal_pb2

from annal.client._rpc import RpcClient
from annal.client.structs import BrokerMetadata, PartitionMetadata, TopicDescription

__all__ = [
    "MetadataSnapshot",
    "MetadataSource",
    "ClusterMetadata",
    "GrpcMetadataSource",
    "snapshot_from_response",
    "zookeeper_metadata",
]

_CONFIG_KEYS = (
    "segment_bytes",
    "segment_ms",
    "retention_bytes",
    "retention_ms",
    "flush_messages",
    "flush_ms",
    "max_message_bytes",
    "min_insync_replicas",
    "unclean_leader_election_enable",
)


@dataclass(frozen=True, slots=True)
class MetadataSnapshot:
    """One answer about the cluster. ``topics`` holds the topics that exist; ``missing`` the
    ones asked for that do not; ``unsettled`` the ones asked for that exist but that the
    answering broker could not describe yet (a retriable topic-level error such as
    LEADER_NOT_AVAILABLE while a new topic's placement reaches it). ``complete`` is True
    when ``topics`` lists every topic (so a topic absent from it was deleted)."""

    brokers: Mapping[int, BrokerMetadata]
    topics: Mapping[str, TopicDescription]
    missing: frozenset[str] = frozenset()
    unsettled: frozenset[str] = frozenset()
    complete: bool = False
    controller_id: int = -1
    cluster_id: str = ""


def topic_config_dict(config: annal_pb2.TopicConfig) -> dict[str, int]:
    """The config keys set in a TopicConfig message."""
    return {k: int(getattr(config, k)) for k in _CONFIG_KEYS if config.HasField(k)}


def snapshot_from_response(resp: annal_pb2.MetadataResponse, asked: Iterable[str] | None) -> MetadataSnapshot:
    """A snapshot from a gRPC MetadataResponse (``asked`` None: all topics were asked for)."""
    brokers = {
        b.broker_id: BrokerMetadata(b.broker_id, b.host, b.port, b.fetch_port) for b in resp.brokers
    }
    topics: dict[str, TopicDescription] = {}
    missing: set[str] = set()
    unsettled: set[str] = set()
    for t in resp.topics:
        if t.error_code == UnknownTopicOrPartitionError.code:
            missing.add(t.name)
            continue
        if t.error_code:
            # Retriable (LEADER_NOT_AVAILABLE while a new topic's placement reaches the
            # broker): ask again. Anything else: the topic cannot be used.
            (unsettled if for_code(t.error_code).retriable else missing).add(t.name)
            continue
        parts = tuple(
            sorted(
                (
                    PartitionMetadata(
                        t.name,
                        p.partition,
                        p.leader,
                        p.log_start_offset,
                        p.log_end_offset,
                        p.size_bytes,
                        p.error_code,
                        tuple(p.replicas),
                        tuple(p.isr),
                        p.leader_epoch,
                    )
                    for p in t.partitions
                ),
                key=lambda pm: pm.partition,
            )
        )
        topics[t.name] = TopicDescription(t.name, parts, topic_config_dict(t.config))
    if asked is not None:
        missing.update(n for n in asked if n not in topics and n not in unsettled)
    return MetadataSnapshot(
        brokers=brokers,
        topics=topics,
        missing=frozenset(missing),
        unsettled=frozenset(unsettled),
        complete=asked is None,
        controller_id=resp.controller_id,
        cluster_id=resp.cluster_id,
    )


class MetadataSource(Protocol):
    """Where ClusterMetadata gets its answers from."""

    def fetch(self, topics: list[str] | None) -> MetadataSnapshot:
        """A fresh snapshot for ``topics`` (None: every topic). Raises an AnnalError when no
        broker answers."""
        ...

    def close(self) -> None:
        """Release connections and watches."""
        ...


class GrpcMetadataSource:
    """Asks the brokers' gRPC ``Metadata`` call, trying the last broker that answered first,
    then every known broker, then the bootstrap list."""

    def __init__(self, rpc: RpcClient, bootstrap: list[str], request_timeout_ms: int = 10000) -> None:
        self._rpc = rpc
        self._bootstrap = list(bootstrap)
        self._known: list[str] = []
        self._last_good: str | None = None
        self._timeout_ms = request_timeout_ms

    def addresses(self) -> list[str]:
        """Addresses to try, best first (deduplicated)."""
        seen: dict[str, None] = {}
        for a in ([self._last_good] if self._last_good else []) + self._known + self._bootstrap:
            seen.setdefault(a, None)
        return list(seen)

    def fetch(self, topics: list[str] | None) -> MetadataSnapshot:
        """Ask one broker after another until one answers."""
        request = annal_pb2.MetadataRequest(topics=topics or [])
        last: AnnalError | None = None
        for address in self.addresses():
            try:
                resp = self._rpc.call(address, "Metadata", request, self._timeout_ms)
            except AnnalError as exc:
                if not exc.retriable:
                    raise
                last = exc
                continue
            self._last_good = address
            snap = snapshot_from_response(resp, topics)
            self._known = [f"{b.host}:{b.port}" for b in snap.brokers.values()]
            return snap
        raise BrokerNotAvailableError(
            f"no broker answered a metadata request (tried {', '.join(self.addresses())}): {last}"
        )

    def close(self) -> None:
        """Nothing to release: the RpcClient is owned by the caller."""


Listener = Callable[["ClusterMetadata"], None]


class ClusterMetadata:
    """The client's cached view of the cluster (see the module docstring)."""

    def __init__(self, source: MetadataSource, retry_backoff_ms: int = 100) -> None:
        self.source = source
        self.retry_backoff_ms = retry_backoff_ms
        self._lock = threading.Lock()
        self._brokers: dict[int, BrokerMetadata] = {}
        self._topics: dict[str, TopicDescription] = {}
        self._partition_counts: dict[str, int] = {}
        self._missing: set[str] = set()
        self._last_refresh: dict[str | None, float] = {}
        self._need_update = False
        self._listeners: list[Listener] = []
        self.controller_id = -1
        self.cluster_id = ""
        self.version = 0

    # -- updates ---------------------------------------------------------------------------

    def update(self, snap: MetadataSnapshot) -> None:
        """Apply a snapshot (from ``refresh`` or pushed by a watching source)."""
        with self._lock:
            self._brokers = dict(snap.brokers)
            if snap.complete:
                self._topics = dict(snap.topics)
            else:
                self._topics.update(snap.topics)
                for name in snap.missing:
                    self._topics.pop(name, None)
            self._partition_counts = {n: len(t.partitions) for n, t in self._topics.items()}
            self._missing = set(snap.missing) | (self._missing - set(snap.topics) - snap.unsettled)
            self.controller_id = snap.controller_id
            self.cluster_id = snap.cluster_id
            self._need_update = False
            self.version += 1
            listeners = list(self._listeners)
        for listener in listeners:
            listener(self)

    def refresh(self, topics: Iterable[str] | None = None, force: bool = True) -> bool:
        """Ask the source for ``topics`` (None: all) now; returns False if skipped because
        the same refresh ran less than ``retry_backoff_ms`` ago and ``force`` is False.
        Raises the source's error when no broker answers."""
        names = sorted(set(topics)) if topics is not None else None
        key = ",".join(names) if names is not None else None
        now = time.monotonic()
        with self._lock:
            last = self._last_refresh.get(key, 0.0)
            if not force and now - last < self.retry_backoff_ms / 1000.0:
                return False
            self._last_refresh[key] = now
        self.update(self.source.fetch(names))
        return True

    def request_update(self) -> None:
        """Mark the cache stale: the next ``maybe_refresh`` will ask again."""
        self._need_update = True

    @property
    def need_update(self) -> bool:
        """True after ``request_update`` until the next update."""
        return self._need_update

    def maybe_refresh(self, topics: Iterable[str]) -> None:
        """Refresh ``topics`` if marked stale, at most every ``retry_backoff_ms``; errors are
        swallowed (the caller will retry)."""
        if self._need_update:
            try:
                self.refresh(topics, force=False)
            except AnnalError:
                pass

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(metadata)`` after every update."""
        with self._lock:
            self._listeners.append(listener)

    # -- queries -----------------------------------------------------------------------------

    def partition_count(self, topic: str) -> int | None:
        """Number of partitions of ``topic``, or None if not known (yet)."""
        return self._partition_counts.get(topic)

    def partitions_for(self, topic: str) -> set[int] | None:
        """Partition numbers of ``topic``, or None if not known."""
        t = self._topics.get(topic)
        return None if t is None else {p.partition for p in t.partitions}

    def topic(self, topic: str) -> TopicDescription | None:
        """The cached description of ``topic``."""
        return self._topics.get(topic)

    def topics(self) -> set[str]:
        """Names of the topics known to exist."""
        return set(self._topics)

    def is_missing(self, topic: str) -> bool:
        """True if the last answer said ``topic`` does not exist."""
        return topic in self._missing

    def _partition(self, topic: str, partition: int) -> PartitionMetadata | None:
        t = self._topics.get(topic)
        if t is None or not 0 <= partition < len(t.partitions):
            return None
        pm = t.partitions[partition]
        if pm.partition != partition:  # sparse numbering: search
            for pm in t.partitions:
                if pm.partition == partition:
                    return pm
            return None
        return pm

    def leader_for(self, topic: str, partition: int) -> int:
        """Broker id leading the partition, -1 if none or unknown."""
        pm = self._partition(topic, partition)
        return -1 if pm is None else pm.leader

    def replicas_for(self, topic: str, partition: int) -> tuple[int, ...]:
        """Broker ids holding a replica of the partition (empty if unknown)."""
        pm = self._partition(topic, partition)
        return () if pm is None else tuple(pm.replicas)

    def broker(self, broker_id: int) -> BrokerMetadata | None:
        """How to reach broker ``broker_id`` (None if not alive)."""
        return self._brokers.get(broker_id)

    def brokers(self) -> dict[int, BrokerMetadata]:
        """Live brokers by id."""
        return dict(self._brokers)

    def is_alive(self, broker_id: int) -> bool:
        """True if the broker is registered (alive) in the last answer."""
        return broker_id in self._brokers

    def wait_for_topic(self, topic: str, timeout_ms: float) -> int:
        """The partition count of ``topic``, refreshing until it is known.

        Raises ``UnknownTopicOrPartitionError`` if a broker says it does not exist, or
        ``KafkaTimeoutError`` if no answer came within ``timeout_ms``.
        """
        n = self._partition_counts.get(topic)
        if n is not None:
            return n
        deadline = time.monotonic() + timeout_ms / 1000.0
        last: AnnalError | None = None
        while True:
            try:
                self.refresh([topic], force=True)
                last = None
            except AnnalError as exc:
                if not exc.retriable:
                    raise
                last = exc
            n = self._partition_counts.get(topic)
            if n is not None:
                return n
            if last is None and topic in self._missing:
                raise UnknownTopicOrPartitionError(f"topic {topic!r} does not exist", topic=topic)
            if time.monotonic() >= deadline:
                raise KafkaTimeoutError(
                    f"metadata for topic {topic!r} not available after {timeout_ms:.0f} ms: {last}"
                )
            time.sleep(min(self.retry_backoff_ms / 1000.0, max(0.0, deadline - time.monotonic())))

    def close(self) -> None:
        """Close the source."""
        self.source.close()


def zookeeper_metadata(zookeeper: str, retry_backoff_ms: int) -> ClusterMetadata:
    """ClusterMetadata fed from ZooKeeper watches (cluster mode), from ``annal.client._zk``.

    Raises ``LocalUsageError`` when this installation has no ZooKeeper support."""
    try:
        from annal.client._zk import ZooKeeperMetadataSource
    except ImportError as exc:
        raise LocalUsageError(
            f"zookeeper= cluster mode is not available: {exc}; use bootstrap_servers="
        ) from None
    source = ZooKeeperMetadataSource(zookeeper)
    metadata = ClusterMetadata(source, retry_backoff_ms)
    source.attach(metadata)  # watches push every change from now on
    return metadata
