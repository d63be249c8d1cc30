"""Cluster metadata from ZooKeeper watches, for clients in cluster mode (Kafka 0.7's design).

A producer or consumer created with ``zookeeper="127.0.0.1:2181/annal"`` does not ask brokers
where partitions live: it watches the same znodes the brokers write (layout in
``annal.zookeeper.paths``)::

    /brokers/ids/<id>        -> live brokers (ephemeral; gone when a broker dies)
    /brokers/topics/<topic>  -> partition -> broker id, and topic config
    /controller              -> the controller's broker id

Every change is pushed to the ``ClusterMetadata`` it is attached to (``attach``) as a whole
``MetadataSnapshot``. A partition whose placed broker is not registered has leader -1 and
LEADER_NOT_AVAILABLE (placements are fixed, as in Kafka 0.7, so it gets its broker back when
that broker registers again): the sender holds its batches until then or until
``delivery_timeout_ms`` passes, while the producer's partitioner steers keyless records to
partitions whose broker is alive.

Watches are set by the re-reads themselves and every session state change marks everything
for a re-read (``annal.zookeeper.refresh``), so the view converges to ZooKeeper's after any
reconnection or session expiry. Watch callbacks only mark state dirty; one thread of this
source re-reads ZooKeeper and applies the snapshot, so listeners never run on kazoo's threads.

Thread-safe.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any, Callable

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import KazooState
from kazoo.retry import KazooRetry

from annal.zookeeper import paths
from annal.cluster import TopicPlacement
from annal.zookeeper.reads import (
    read_children_data,
    read_controller_id,
    read_partition_states,
    with_partition_states,
)
from annal.zookeeper.refresh import WatchRefresher
from annal.errors import LeaderNotAvailableError, NetworkError

from annal.client.structs import BrokerMetadata, PartitionMetadata, TopicDescription

if TYPE_CHECKING:
    from annal.client._metadata import ClusterMetadata, MetadataSnapshot

__all__ = ["ZooKeeperMetadataSource", "connect"]

log = logging.getLogger(__name__)


def connect(zookeeper: str, *, session_timeout_ms: int = 6000, connect_timeout_ms: int = 15000) -> KazooClient:
    """A started kazoo client on ``zookeeper`` (``/annal`` chroot when none is given) that
    retries connections forever. Raises ``NetworkError`` when ZooKeeper cannot be reached
    within ``connect_timeout_ms``."""
    hosts = paths.with_default_chroot(zookeeper)
    client = KazooClient(
        hosts=hosts,
        timeout=session_timeout_ms / 1000.0,
        connection_retry=KazooRetry(max_tries=-1, delay=0.05, backoff=2, max_delay=1.0, max_jitter=0.2),
        command_retry=KazooRetry(
            max_tries=-1, delay=0.05, backoff=2, max_delay=1.0, max_jitter=0.2,
            deadline=max(2.0, session_timeout_ms / 1000.0),
        ),
        logger=logging.getLogger("kazoo.client"),
    )
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No chroot path exists")
            client.start(timeout=connect_timeout_ms / 1000.0)
    except (KazooTimeoutError, KazooException) as exc:
        try:
            client.stop()
            client.close()
        except Exception:
            pass
        raise NetworkError(f"could not connect to ZooKeeper at {hosts} within {connect_timeout_ms} ms: {exc}") from exc
    return client


class ZooKeeperMetadataSource:
    """A ``MetadataSource`` that watches ZooKeeper and pushes snapshots to its
    ``ClusterMetadata`` (see the module docstring). ``client`` may be shared (for example
    with a consumer group member); the source only closes a client it created."""

    def __init__(
        self,
        zookeeper: str | None = None,
        *,
        client: KazooClient | None = None,
        session_timeout_ms: int = 6000,
    ) -> None:
        if client is None:
            if zookeeper is None:
                raise ValueError("pass zookeeper= or client=")
            client = connect(zookeeper, session_timeout_ms=session_timeout_ms)
            self._owns_client = True
        else:
            self._owns_client = False
        self.client = client
        self._lock = threading.Lock()
        self._brokers: dict[int, BrokerMetadata] = {}
        self._placements: dict[str, TopicPlacement] = {}
        self._controller_id = -1
        self._metadata: ClusterMetadata | None = None
        self._closed = threading.Event()
        self._refresher = WatchRefresher(
            self._read_and_push, self._closed, lambda: self._closed.wait(0.2), log, "cluster metadata", logging.DEBUG
        )
        self.version = 0  # bumped after every applied re-read
        self._applied = threading.Condition(self._lock)
        client.add_listener(self._on_state)
        for p in (paths.BROKER_IDS, paths.BROKER_TOPICS):
            client.retry(client.ensure_path, p)
        self._read(brokers=True, topics=True)
        self._thread = threading.Thread(target=self._refresher.run, name="annal-zk-metadata", daemon=True)
        self._thread.start()

    # -- MetadataSource ------------------------------------------------------------------

    def attach(self, metadata: "ClusterMetadata") -> None:
        """Push every future change (and the current state, now) to ``metadata``."""
        self._metadata = metadata
        metadata.update(self.snapshot())

    def fetch(self, topics: list[str] | None) -> "MetadataSnapshot":
        """The watched state; topics asked for but not yet seen are read directly, so a
        topic created a moment ago is found before its watch event arrives."""
        if topics:
            with self._lock:
                unseen = [t for t in topics if t not in self._placements]
            if unseen:
                try:
                    self._read(brokers=False, topics=True)
                except (KazooException, KazooTimeoutError) as exc:
                    raise NetworkError(f"ZooKeeper unavailable: {exc!r}") from exc
        return self.snapshot(topics)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._refresher.wake()
        self.client.remove_listener(self._on_state)
        if self._owns_client:
            try:
                self.client.stop()
                self.client.close()
            except Exception:
                pass

    # -- state ------------------------------------------------------------------------------

    def snapshot(self, topics: list[str] | None = None) -> "MetadataSnapshot":
        from annal.client._metadata import MetadataSnapshot

        with self._lock:
            brokers = dict(self._brokers)
            placements = dict(self._placements)
            controller = self._controller_id
        described: dict[str, TopicDescription] = {}
        for name, placement in placements.items():
            parts = tuple(
                PartitionMetadata(
                    name,
                    p,
                    leader if leader in brokers else -1,
                    -1,
                    -1,
                    0,
                    0 if leader in brokers else LeaderNotAvailableError.code,
                    placement.replicas_of(p),
                    placement.isr_of(p),
                    placement.leader_epoch_of(p),
                )
                for p, leader in sorted(placement.partitions.items())
            )
            described[name] = TopicDescription(name, parts, dict(placement.config))
        missing = frozenset(t for t in (topics or ()) if t not in described)
        return MetadataSnapshot(
            brokers=brokers, topics=described, missing=missing, complete=True, controller_id=controller
        )

    def placements(self) -> dict[str, TopicPlacement]:
        with self._lock:
            return dict(self._placements)

    def wait_for_version(self, version: int, timeout_s: float) -> bool:
        """Wait until a re-read after ``version`` was applied (used by tests and benches)."""
        deadline = time.monotonic() + timeout_s
        with self._applied:
            while self.version <= version:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._applied.wait(left)
        return True

    # -- watches ----------------------------------------------------------------------------

    def _on_state(self, state: str) -> None:
        self._refresher.on_session_state(state)
        if state == KazooState.LOST:
            log.warning("ZooKeeper session of the client expired; metadata will be re-read")

    def _on_partition_state(self, _event: object) -> None:
        self._refresher.mark(topics=True)

    def _read_and_push(self, *, brokers: bool, topics: bool) -> None:
        """The refresher's read: re-read, then hand the new state to the attached metadata."""
        self._read(brokers=brokers, topics=topics)
        md = self._metadata
        if md is not None:
            try:
                md.update(self.snapshot())
            except Exception:
                log.exception("metadata listener failed")

    def _read_all(self, parent: str, watch: Callable[[Any], None]) -> dict[str, bytes | None]:
        if self._closed.is_set():
            watch = None  # type: ignore[assignment]  # no more watches once closed
        return read_children_data(self.client, parent, watch=watch)

    def _read(self, *, brokers: bool, topics: bool) -> None:
        fresh_brokers: dict[int, BrokerMetadata] | None = None
        fresh_topics: dict[str, TopicPlacement] | None = None
        controller: int | None = None
        if brokers:
            controller = read_controller_id(self.client, None if self._closed.is_set() else self._refresher.watch_brokers)
            fresh_brokers = {}
            for child, data in self._read_all(paths.BROKER_IDS, self._refresher.watch_brokers).items():
                try:
                    info = paths.decode_broker(int(child), data)
                except ValueError:
                    continue
                fresh_brokers[info.broker_id] = BrokerMetadata(info.broker_id, info.host, info.port, info.fetch_port)
        if topics:
            fresh_topics = {}
            for child, data in self._read_all(paths.BROKER_TOPICS, self._refresher.watch_topics).items():
                try:
                    fresh_topics[child] = paths.decode_topic(child, data)
                except ValueError:
                    continue
            # The leaders and ISRs live in the partition states (docs/replication.md).
            fresh_topics = with_partition_states(
                fresh_topics, read_partition_states(self.client, fresh_topics, self._on_partition_state)
            )
        with self._lock:
            if controller is not None:
                self._controller_id = controller
            if fresh_brokers is not None:
                if fresh_brokers.keys() != self._brokers.keys():
                    log.info("live brokers (pid %d): %s", os.getpid(), sorted(fresh_brokers))
                self._brokers = fresh_brokers
            if fresh_topics is not None:
                self._placements = fresh_topics
            self.version += 1
            self._applied.notify_all()
