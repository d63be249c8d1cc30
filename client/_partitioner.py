"""Which partition a produced record goes to.

- An explicit ``partition=`` wins.
- A record with a key goes to ``murmur3_32(key) & 0x7fffffff`` modulo the topic's partition
  count (``mmh3``, seed 0): the same key always lands on the same partition as long as the
  partition count does not change, so per-key order holds.
- A record without a key sticks to one partition (Kafka's sticky partitioner, KIP-480): every
  keyless record goes to that partition until the batch it was filling is closed (full, or
  drained by the sender), then the next keyless record picks another partition at random.
  Batches stay big under low load, and load still spreads over all partitions.

Thread-safety: ``StickyPartitionCache`` is used under the accumulator's lock; the functions are
pure.
"""

from __future__ import annotations

import random

import mmh3

__all__ = ["partition_for_key", "StickyPartitionCache"]

_hash = mmh3.hash


def partition_for_key(key: bytes, num_partitions: int) -> int:
    """The partition of a record with serialized key ``key`` among ``num_partitions``."""
    return (_hash(key, 0, False) & 0x7FFFFFFF) % num_partitions


class StickyPartitionCache:
    """The current sticky partition of each topic, for records without a key.

    Not thread-safe by itself: the record accumulator calls it under its lock.
    """

    __slots__ = ("_current", "_random", "_available")

    def __init__(self, seed: int | None = None) -> None:
        self._current: dict[str, int] = {}
        self._random = random.Random(seed)
        # Partitions whose leader is alive, for topics where some are not (cluster mode:
        # keyless records go only there, Kafka 0.7's producer load balancing).
        self._available: dict[str, list[int]] = {}

    def set_available(self, topic: str, partitions: list[int] | None) -> None:
        """Restrict keyless records of ``topic`` to ``partitions`` (None or empty: all)."""
        if partitions:
            self._available[topic] = sorted(partitions)
        else:
            self._available.pop(topic, None)

    def is_available(self, topic: str, partition: int) -> bool:
        avail = self._available.get(topic)
        return avail is None or partition in avail

    def partition(self, topic: str, num_partitions: int) -> int:
        """The topic's sticky partition, chosen now if the topic has none yet."""
        p = self._current.get(topic)
        if p is None or p >= num_partitions or (topic in self._available and p not in self._available[topic]):
            avail = [a for a in self._available.get(topic, ()) if a < num_partitions]
            p = self._random.choice(avail) if avail else self._random.randrange(num_partitions)
            self._current[topic] = p
        return p

    def next_partition(self, topic: str, num_partitions: int, previous: int) -> int:
        """Move the topic off ``previous`` (whose batch was closed) to another partition at
        random; a no-op if the topic already moved on (another batch closed first)."""
        p = self._current.get(topic)
        if p is not None and p != previous and p < num_partitions and self.is_available(topic, p):
            return p
        avail = [a for a in self._available.get(topic, ()) if a < num_partitions]
        if avail:
            others = [a for a in avail if a != previous]
            p = self._random.choice(others or avail)
            self._current[topic] = p
            return p
        if num_partitions <= 1:
            p = 0
        else:
            p = self._random.randrange(num_partitions - 1)
            if p >= previous:
                p += 1
        self._current[topic] = p
        return p
