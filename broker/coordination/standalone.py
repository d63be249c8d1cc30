"""``StandaloneCoordinator``: cluster state for a single broker, kept in its data dir.

On disk: ``DATA_DIR/topics.json``::

    {"version": 1, "cluster_id": "3f1c...", "topics": {"orders": {"partitions": 3, "config": {"retention_ms": 60000}}}}

``cluster_id`` is made (a random UUID) the first time the broker starts on an empty data dir and
kept for its life, so that clients can tell two standalone brokers apart.

Written atomically (a temporary file, fsync, rename over the old one, fsync of the directory),
so a crash leaves either the old or the new map, never a torn one. Every partition is led by
this broker. Thread-safe: one lock guards the map; listeners are called outside it, in the
thread that made the change (and once, from ``add_listener``, in the caller's thread).
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import threading
import uuid
from typing import Any, Mapping

from annal.broker.coordination.base import BrokerInfo, Coordinator, PlacementListener, TopicPlacement
from annal.errors import (
    InvalidConfigError,
    InvalidPartitionsError,
    StorageError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from annal.topic_names import validate_topic_name

__all__ = ["StandaloneCoordinator", "TOPICS_FILE_NAME"]

TOPICS_FILE_NAME = "topics.json"
_FORMAT_VERSION = 1
log = logging.getLogger("annal.coordination")


class StandaloneCoordinator(Coordinator):
    def __init__(self, data_dir: pathlib.Path | str) -> None:
        self.data_dir = pathlib.Path(data_dir)
        self.path = self.data_dir / TOPICS_FILE_NAME
        self._lock = threading.RLock()
        self._me: BrokerInfo | None = None
        self._topics: dict[str, TopicPlacement] = {}
        self._listeners: list[PlacementListener] = []
        self.cluster_id = ""

    # -- lifecycle

    def start(self, me: BrokerInfo) -> None:
        with self._lock:
            self._me = me
            self._topics = self._load(me.broker_id)
            if not self.cluster_id:
                self.cluster_id = uuid.uuid4().hex
                self._save(self._topics)

    def stop(self) -> None:
        with self._lock:
            self._listeners.clear()

    # -- queries

    def brokers(self) -> dict[int, BrokerInfo]:
        me = self._require_started()
        return {me.broker_id: me}

    def controller_id(self) -> int:
        return self._require_started().broker_id

    def topics(self) -> dict[str, TopicPlacement]:
        with self._lock:
            return dict(self._topics)

    # -- changes

    def create_topic(
        self,
        name: str,
        partitions: int,
        config: Mapping[str, Any],
        replication_factor: int = 1,
        *,
        deadline: float | None = None,
    ) -> TopicPlacement:
        me = self._require_started()
        if replication_factor != 1:
            from annal.errors import InvalidReplicationFactorError

            raise InvalidReplicationFactorError(
                f"a standalone broker holds one copy: replication factor {replication_factor} is not possible"
            )
        validate_topic_name(name)
        if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
            raise InvalidPartitionsError(f"partitions must be a positive integer, not {partitions!r}")
        for key, value in config.items():
            if not isinstance(key, str) or isinstance(value, bool) or not isinstance(value, int):
                raise InvalidConfigError(f"topic config {key!r}={value!r} is not an integer setting")
        placement = TopicPlacement(
            name=name, partitions={p: me.broker_id for p in range(partitions)}, config=dict(config)
        )
        with self._lock:
            if name in self._topics:
                raise TopicAlreadyExistsError(f"topic {name!r} already exists", topic=name)
            topics = dict(self._topics)
            topics[name] = placement
            self._save(topics)
            self._topics = topics
        self._notify()
        return placement

    def delete_topic(self, name: str, *, deadline: float | None = None) -> None:
        self._require_started()
        with self._lock:
            if name not in self._topics:
                raise UnknownTopicOrPartitionError(f"topic {name!r} does not exist", topic=name)
            topics = dict(self._topics)
            del topics[name]
            self._save(topics)
            self._topics = topics
        self._notify()

    def add_listener(self, listener: PlacementListener) -> None:
        with self._lock:
            self._listeners.append(listener)
            snapshot = dict(self._topics)
        listener(snapshot)

    # -- internals

    def _require_started(self) -> BrokerInfo:
        me = self._me
        if me is None:
            raise RuntimeError("StandaloneCoordinator.start() has not been called")
        return me

    def _notify(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
            snapshot = dict(self._topics)
        for listener in listeners:
            listener(snapshot)

    def _load(self, broker_id: int) -> dict[str, TopicPlacement]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise StorageError(f"cannot read {self.path}: {e.strerror}") from None
        try:
            doc = json.loads(raw)
            self.cluster_id = str(doc.get("cluster_id") or "")
            if doc.get("version") != _FORMAT_VERSION:
                raise ValueError(f"unsupported version {doc.get('version')!r}")
            topics = {}
            for name, entry in doc["topics"].items():
                validate_topic_name(name)
                count = int(entry["partitions"])
                if count < 1:
                    raise ValueError(f"topic {name!r} has {count} partitions")
                topics[name] = TopicPlacement(
                    name=name,
                    partitions={p: broker_id for p in range(count)},
                    config={str(k): int(v) for k, v in dict(entry.get("config", {})).items()},
                )
        except Exception as e:
            raise StorageError(f"{self.path} is not a valid topic map: {e}") from None
        log.info("loaded %d topic(s) from %s", len(topics), self.path)
        return topics

    def _save(self, topics: Mapping[str, TopicPlacement]) -> None:
        doc = {
            "version": _FORMAT_VERSION,
            "cluster_id": self.cluster_id,
            "topics": {
                name: {"partitions": t.partition_count, "config": dict(t.config)}
                for name, t in sorted(topics.items())
            },
        }
        data = json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dfd = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as e:
            raise StorageError(f"cannot write {self.path}: {e.strerror}") from None
