"""Producer ids for idempotent producers (Kafka's ``ProducerIdManager``), handed out by
InitProducerId on the Kafka listener and on the gRPC API (Annal's SDK).

Producer ids are unique in the cluster: a broker takes a block of ``BLOCK_SIZE`` ids at a time
from a counter (cluster mode: the ZooKeeper node ``/producer_id_block`` under the cluster's
chroot, incremented with kazoo's ``Counter`` recipe, a compare-and-set; standalone:
``DATA_DIR/producer_id_block.json``, ``{"next": N}``, written atomically and fsync'ed before any
id of the block is handed out), so no two producers ever get the same id, across restarts too.
The sequence check itself is the partition log's (``annal.broker.storage._producer_state``).

Thread-safety: thread-safe (one lock); ``next_id`` may write to ZooKeeper or the disk, so call
it off event loops.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import threading
from typing import Any

__all__ = ["ProducerIds", "BLOCK_SIZE", "MAX_EPOCH"]

log = logging.getLogger("annal.producer_ids")

BLOCK_SIZE = 1000
MAX_EPOCH = 32767  # the header's producerEpoch is an int16
ZK_BLOCK_PATH = "/producer_id_block"
STANDALONE_FILE = "producer_id_block.json"


class ProducerIds:
    """Hands out producer ids from blocks reserved in ZooKeeper or the data dir."""

    def __init__(self, broker: Any) -> None:
        self.broker = broker
        self._lock = threading.Lock()
        self._next = 0
        self._end = 0

    def _reserve_block(self) -> int:
        client = getattr(self.broker.coordinator, "kazoo_client", None)
        if client is not None:
            from kazoo.recipe.counter import Counter

            counter = Counter(client, ZK_BLOCK_PATH, default=0)
            counter += BLOCK_SIZE  # compare-and-set retried by the recipe
            return int(counter.value) - BLOCK_SIZE  # type: ignore[attr-defined]
        path = pathlib.Path(self.broker.config.data_dir) / STANDALONE_FILE
        try:
            start = int(json.loads(path.read_text())["next"])
        except FileNotFoundError:
            start = 0
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, json.dumps({"next": start + BLOCK_SIZE}).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return start

    def next_id(self) -> int:
        """A producer id no other producer of the cluster has had."""
        with self._lock:
            if self._next >= self._end:
                self._next = self._reserve_block()
                self._end = self._next + BLOCK_SIZE
                log.info("reserved producer ids [%d, %d)", self._next, self._end)
            pid = self._next
            self._next += 1
            return pid

    def init_producer_id(self, producer_id: int = -1, producer_epoch: int = -1) -> tuple[int, int]:
        """``(producer id, epoch)`` for a producer starting (``-1, -1``: a new id, epoch 0) or
        one asking for its next epoch (KIP-360: after a batch failed for good, a producer
        bumps its epoch and starts its sequences again at 0); past the last epoch, a new id."""
        if producer_id >= 0 and 0 <= producer_epoch < MAX_EPOCH:
            return producer_id, producer_epoch + 1
        return self.next_id(), 0
