"""Producer ids and idempotent appends (Kafka's InitProducerId and the leader's sequence check).

Producer ids are unique in the cluster: a broker takes a block of ``BLOCK_SIZE`` ids at a time
from a counter (cluster mode: the ZooKeeper node ``/producer_id_block`` under the cluster's
chroot, incremented with kazoo's ``Counter`` recipe, a compare-and-set; standalone:
``DATA_DIR/producer_id_block.json``, ``{"next": N}``, written atomically before any id of the
block is handed out), so no two producers ever get the same id even across restarts.

The leader checks every batch that carries a producer id (Kafka's ``ProducerStateManager``):
per partition and producer it keeps the epoch and the last ``MAX_CACHED_BATCHES`` batches'
(first sequence, last sequence, base offset). A batch equal to one of them is a retry of a batch
already written: it is answered with that batch's original base offset and not written again.
A batch whose first sequence is not the last one + 1 is refused with
OUT_OF_ORDER_SEQUENCE_NUMBER, an older epoch with INVALID_PRODUCER_EPOCH (Kafka's codes).

Surviving a restart or a crash: the state is rebuilt from the log itself, the first time a
partition sees a batch with a producer id after the broker starts, by reading the headers of
every batch of that partition (producer id, epoch, base sequence and offsets are in each batch
header). That read is proportional to the partition's size; Kafka bounds it with periodic
snapshots, which Annal does not write yet.

Thread-safety: thread-safe; one lock per partition serialises check-and-append (appends come
from the listener's executor threads).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import pathlib
import threading
from dataclasses import dataclass, field
from typing import Any

from annal.errors import InvalidProducerEpochError, InvalidRequestError, OutOfOrderSequenceNumberError
from annal.kafka import ErrorCode, RequestHeader
from annal.record import iter_batch_positions, parse_header
from annal.broker.server.broker import Broker, read_result_bytes, release_read

__all__ = ["ProducerIds", "ProducerStates", "BLOCK_SIZE"]

log = logging.getLogger("annal.kafka_producers")

BLOCK_SIZE = 1000
MAX_CACHED_BATCHES = 5  # Kafka's: a producer has at most 5 requests in flight per connection
ZK_BLOCK_PATH = "/producer_id_block"
STANDALONE_FILE = "producer_id_block.json"


class ProducerIds:
    """Hands out producer ids from blocks reserved in ZooKeeper or the data dir."""

    def __init__(self, broker: Broker) -> None:
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
        with self._lock:
            if self._next >= self._end:
                self._next = self._reserve_block()
                self._end = self._next + BLOCK_SIZE
                log.info("reserved producer ids [%d, %d)", self._next, self._end)
            pid = self._next
            self._next += 1
            return pid


@dataclass
class _Producer:
    epoch: int
    batches: collections.deque[tuple[int, int, int]] = field(
        default_factory=lambda: collections.deque(maxlen=MAX_CACHED_BATCHES))  # (first_seq, last_seq, base_offset)


class _PartitionState:
    __slots__ = ("lock", "producers", "loaded", "plog")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.producers: dict[int, _Producer] = {}
        self.loaded = False
        self.plog: Any = None  # the log the state describes (a re-created topic has a new one)

    def record(self, pid: int, epoch: int, first_seq: int, last_seq: int, base_offset: int) -> None:
        p = self.producers.get(pid)
        if p is None or epoch > p.epoch:
            p = self.producers[pid] = _Producer(epoch)
        p.batches.append((first_seq, last_seq, base_offset))


class ProducerStates:
    """Idempotent appends on top of ``Broker.append``, plus InitProducerId."""

    def __init__(self, broker: Broker, ids: ProducerIds | None = None) -> None:
        self.broker = broker
        self.ids = ids if ids is not None else ProducerIds(broker)
        self._states: dict[tuple[str, int], _PartitionState] = {}
        self._lock = threading.Lock()

    def init_producer_id(self, header: RequestHeader, body: dict[str, Any]) -> Any:
        if body.get("transactional_id"):
            return {"error_code": int(ErrorCode.INVALID_REQUEST), "producer_id": -1, "producer_epoch": -1}
        pid, epoch = body.get("producer_id", -1), body.get("producer_epoch", -1)
        if pid >= 0 and epoch >= 0:  # KIP-360: the same producer asks for a bumped epoch
            if epoch < 32766:
                return {"error_code": 0, "producer_id": pid, "producer_epoch": epoch + 1}
        loop = getattr(self, "loop", None)
        if loop is not None:  # reserving a block may write to ZooKeeper or the disk
            async def run() -> dict[str, Any]:
                new = await loop.run_in_executor(None, self.ids.next_id)
                return {"error_code": 0, "producer_id": new, "producer_epoch": 0}
            return run()
        return {"error_code": 0, "producer_id": self.ids.next_id(), "producer_epoch": 0}

    def _state(self, topic: str, partition: int) -> _PartitionState:
        key = (topic, partition)
        st = self._states.get(key)
        if st is None:
            with self._lock:
                st = self._states.setdefault(key, _PartitionState())
        return st

    def _load(self, topic: str, partition: int, st: _PartitionState) -> None:
        """Rebuild the partition's producer state from its batch headers (see module doc)."""
        plog = self.broker.leader_log(topic, partition)
        offset = plog.log_start_offset
        end = plog.log_end_offset
        batches = 0
        while offset < end:
            r = self.broker.read(topic, partition, offset, 8 * 1024 * 1024)
            try:
                data = read_result_bytes(r)
            finally:
                release_read(r)
            if not data:
                break
            for pos, _ in iter_batch_positions(data):
                h = parse_header(data, pos)
                offset = h.base_offset + h.last_offset_delta + 1
                batches += 1
                if h.producer_id >= 0 and h.base_sequence >= 0:
                    st.record(h.producer_id, h.producer_epoch, h.base_sequence,
                              h.base_sequence + h.last_offset_delta, h.base_offset)
        st.loaded = True
        if st.producers:
            log.info("%s-%d: rebuilt the state of %d producer(s) from %d batch header(s)", topic, partition,
                     len(st.producers), batches)

    def append(self, topic: str, partition: int, records: Any, acks: int) -> tuple[int, int]:
        """Append ``records`` (whole batches); returns (base offset, log start offset)."""
        if len(records) < 61:
            return self._plain(topic, partition, records, acks)
        h = parse_header(records, 0)
        if h.producer_id < 0:
            return self._plain(topic, partition, records, acks)
        positions = list(iter_batch_positions(records))
        if len(positions) != 1:
            raise InvalidRequestError("an idempotent produce must carry exactly one batch per partition")
        if h.base_sequence < 0:
            raise InvalidRequestError("a batch with a producer id must have a base sequence")
        st = self._state(topic, partition)
        with st.lock:
            plog = self.broker.leader_log(topic, partition)
            if not st.loaded or st.plog is not plog:
                st.producers.clear()
                st.plog = plog
                self._load(topic, partition, st)
            first, last = h.base_sequence, h.base_sequence + h.last_offset_delta
            p = st.producers.get(h.producer_id)
            if p is not None:
                if h.producer_epoch < p.epoch:
                    raise InvalidProducerEpochError(
                        f"producer {h.producer_id} epoch {h.producer_epoch} is older than {p.epoch}")
                if h.producer_epoch == p.epoch:
                    for f, l, base in p.batches:
                        if f == first and l == last:
                            log.info("%s-%d: duplicate batch of producer %d (sequence %d-%d): answered with its "
                                     "offset %d, not written again", topic, partition, h.producer_id, first, last, base)
                            return base, -1
                    expected = (p.batches[-1][1] + 1) & 0x7FFFFFFF if p.batches else 0
                    if first != expected:
                        raise OutOfOrderSequenceNumberError(
                            f"producer {h.producer_id} sent sequence {first} to {topic}-{partition}; expected {expected}")
                elif first != 0:
                    raise OutOfOrderSequenceNumberError(
                        f"producer {h.producer_id} epoch {h.producer_epoch} must start at sequence 0, not {first}")
            elif first != 0:
                raise OutOfOrderSequenceNumberError(
                    f"unknown producer {h.producer_id} on {topic}-{partition} must start at sequence 0, not {first}")
            base, start = self._plain(topic, partition, records, acks)
            st.record(h.producer_id, h.producer_epoch, first, last, base)
            return base, start

    def _plain(self, topic: str, partition: int, records: Any, acks: int) -> tuple[int, int]:
        res = self.broker.append(topic, partition, (records,), acks)
        return (res.base_offsets[0] if res.base_offsets else -1), -1

    def forget_topic(self, topic: str) -> None:
        with self._lock:
            for key in [k for k in self._states if k[0] == topic]:
                del self._states[key]
