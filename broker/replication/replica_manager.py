"""``ReplicaManager``: the replication side of one broker in a ZooKeeper cluster (Kafka's
``ReplicaManager``). The protocol and its guarantees are in docs/replication.md.

It reacts to the partition states the coordinator reads from ZooKeeper (``on_placements``,
called with every new placement map, before the broker starts routing requests by it):

* a partition this broker now leads (``leader == me``, or a new ``leader_epoch``): its fetcher
  stops, the epoch is recorded in the log's leader epoch cache at the log end offset, and a
  ``LeaderState`` starts tracking the followers;
* a partition it follows: it is handed to the ``ReplicaFetcher`` of its leader, which first
  truncates the log where it diverges from the leader's (KIP-101) and then copies it.

As a leader it serves the broker's produce and fetch paths: ``check_produce`` (the leader
epoch to stamp, NOT_ENOUGH_REPLICAS for acks=all when the ISR is smaller than
``min_insync_replicas``), ``high_watermark`` (consumers read below it),
``on_replica_fetch`` (a follower's fetch offset is its log end offset; the high watermark
may advance), and ``wait_for_replicas`` (acks=all answers once the high watermark passes the
batch: the "purgatory", a condition variable that every high-watermark move notifies).

Its own thread shrinks the ISR of followers that have not caught up within
``replica_lag_time_max_ms`` and expands it with followers that have, writing the partition
state znode with the version it read (a leader whose epoch is no longer the znode's is
fenced: it stops acknowledging and waits for the coordinator to make it a follower).

``controlled_shutdown`` hands every partition this broker leads to another in-sync replica
before the broker deregisters.

Thread-safety: thread-safe. ``on_placements`` runs on the coordinator's refresh thread;
``on_replica_fetch``/``high_watermark`` on the data port's event loop (they never block);
``wait_for_replicas`` on request threads.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Mapping

from kazoo.exceptions import BadVersionError, KazooException, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from annal.cluster import BrokerInfo, PartitionState, TopicPlacement
from annal.errors import (
    NotEnoughReplicasAfterAppendError,
    NotEnoughReplicasError,
    NotLeaderForPartitionError,
    RequestTimedOutError,
)
from annal.zookeeper import paths
from annal.broker.replication.partition_state import LeaderState
from annal.broker.replication.replica_fetcher import ReplicaFetcher

__all__ = ["ReplicaManager"]

log = logging.getLogger("annal.replication")

Key = tuple[str, int]


def _now_ms() -> float:
    return time.monotonic() * 1000.0


class ReplicaManager:
    def __init__(self, broker: Any, zk: Any) -> None:
        self.broker = broker
        self.zk = zk
        self.config = broker.config
        self.me_id: int = broker.me.broker_id
        self._lock = threading.RLock()
        self._hw_changed = threading.Condition(self._lock)
        self._leaders: dict[Key, LeaderState] = {}
        self._following: dict[Key, tuple[int, int]] = {}  # key -> (leader, epoch)
        self._follower_hw: dict[Key, int] = {}
        self._fetchers: dict[int, ReplicaFetcher] = {}
        self._placements: Mapping[str, TopicPlacement] = {}
        self._isr_kick = threading.Event()
        self._stopped = threading.Event()
        self._shutting_down = False
        self.isr_shrinks = 0
        self.isr_expands = 0
        self._thread = threading.Thread(target=self._isr_loop, name="annal-isr", daemon=True)
        self._thread.start()
        broker.metrics.registry.register(_ReplicationCollector(self))

    # ------------------------------------------------------------------ state changes

    def on_placements(self, placements: Mapping[str, TopicPlacement]) -> None:
        """Become leader or follower of each partition as the states say (see module doc)."""
        me = self.me_id
        seen: set[Key] = set()
        with self._lock:
            self._placements = placements
            if self._stopped.is_set() or self._shutting_down:
                # Leaving: lead nothing new, follow nothing (a follower that fetched now
                # would be taken back into the ISR just before it goes).
                for key, st in list(self._leaders.items()):
                    if placements.get(key[0]) is None or placements[key[0]].partitions.get(key[1]) != me:
                        self._leaders.pop(key).fenced = True
                self._hw_changed.notify_all()
                return
            for name, placement in placements.items():
                for p, leader in placement.partitions.items():
                    replicas = placement.replicas_of(p)
                    if me not in replicas:
                        continue
                    key = (name, p)
                    seen.add(key)
                    epoch = placement.leader_epoch_of(p)
                    isr = placement.isr_of(p)
                    if leader == me:
                        self._become_leader(key, placement, epoch, replicas, isr)
                    else:
                        self._become_follower(key, leader, epoch)
            for key in list(self._leaders):
                if key not in seen:
                    self._leaders.pop(key).fenced = True
            for key in list(self._following):
                if key not in seen:
                    self._stop_following(key)
            self._hw_changed.notify_all()

    def _become_leader(self, key: Key, placement: TopicPlacement, epoch: int,
                       replicas: tuple[int, ...], isr: tuple[int, ...]) -> None:
        st = self._leaders.get(key)
        if st is not None and st.leader_epoch == epoch and not st.fenced:
            st.replicas = replicas
            if st.isr != isr:
                plog = self.broker._local_log(*key)
                st.set_isr(isr, plog.log_end_offset if plog is not None else 0)
            return
        self._stop_following(key)
        plog = self.broker._local_log(*key)
        if plog is None:
            plog = self.broker.logs.get_or_create(key[0], key[1], self.broker._log_config(placement.config))
        leo = plog.log_end_offset
        plog.leader_epochs.assign(epoch, leo)
        hw = min(self._follower_hw.get(key, 0), leo) if len(replicas) > 1 else leo
        self._leaders[key] = LeaderState(self.me_id, epoch, replicas, isr, hw, leo, _now_ms())
        log.info("%s-%d: leader at epoch %d (log end %d, high watermark %d, isr %s)",
                 key[0], key[1], epoch, leo, hw, list(isr))

    def _become_follower(self, key: Key, leader: int, epoch: int) -> None:
        old = self._leaders.pop(key, None)
        if old is not None:
            old.fenced = True
            self._follower_hw[key] = old.high_watermark
        if self._following.get(key) == (leader, epoch):
            return
        self._stop_following(key)
        self._following[key] = (leader, epoch)
        if leader < 0:
            log.info("%s-%d: no leader (epoch %d); not fetching", key[0], key[1], epoch)
            return
        plog = self.broker._local_log(*key)
        if plog is None:
            return
        fetcher = self._fetchers.get(leader)
        if fetcher is None:
            fetcher = self._fetchers[leader] = ReplicaFetcher(self, leader)
        fetcher.add(key[0], key[1], plog)
        log.info("%s-%d: follower of broker %d at epoch %d (log end %d)", key[0], key[1], leader, epoch,
                 plog.log_end_offset)

    def _stop_following(self, key: Key) -> None:
        prev = self._following.pop(key, None)
        if prev is not None:
            fetcher = self._fetchers.get(prev[0])
            if fetcher is not None:
                fetcher.remove(*key)

    def close(self) -> None:
        self._stopped.set()
        self._isr_kick.set()
        with self._lock:
            fetchers = list(self._fetchers.values())
            self._fetchers.clear()
            for st in self._leaders.values():
                st.fenced = True
            self._hw_changed.notify_all()
        for f in fetchers:
            f.close()
        self._thread.join(timeout=5.0)

    # ------------------------------------------------------------------ follower side

    def broker_info(self, broker_id: int) -> BrokerInfo | None:
        return self.broker.coordinator.brokers().get(broker_id)

    def follower_high_watermark(self, topic: str, partition: int) -> int:
        return self._follower_hw.get((topic, partition), 0)

    def on_follower_fetched(self, topic: str, partition: int, leader_hw: int) -> None:
        if leader_hw >= 0:
            self._follower_hw[(topic, partition)] = leader_hw

    def on_truncated(self, topic: str, partition: int) -> None:
        key = (topic, partition)
        plog = self.broker._local_log(topic, partition)
        if plog is not None and key in self._follower_hw:
            self._follower_hw[key] = min(self._follower_hw[key], plog.log_end_offset)

    # ------------------------------------------------------------------ leader side

    def _leader(self, topic: str, partition: int) -> LeaderState:
        st = self._leaders.get((topic, partition))
        if st is None or st.fenced:
            details: dict[str, Any] = {}
            placement = self._placements.get(topic)
            leader = placement.partitions.get(partition, -1) if placement is not None else -1
            info = self.broker_info(leader) if leader not in (-1, self.me_id) else None
            if info is not None:
                details["leader"] = info  # the client's hint, as Broker.leader_log gives
            raise NotLeaderForPartitionError(
                f"broker {self.me_id} is not (or no longer) the leader of {topic}-{partition}",
                topic=topic, partition=partition, **details,
            )
        return st

    def check_produce(self, topic: str, partition: int, acks: int) -> int:
        """The leader epoch to stamp on the batches; raises NOT_LEADER when fenced and
        NOT_ENOUGH_REPLICAS for acks=all when the ISR is below min_insync_replicas."""
        st = self._leader(topic, partition)
        if acks == -1:
            min_isr = self._min_isr(topic)
            if len(st.isr) < min_isr:
                raise NotEnoughReplicasError(
                    f"{topic}-{partition} has {len(st.isr)} in-sync replica(s) {list(st.isr)}; "
                    f"min_insync_replicas is {min_isr}",
                    topic=topic, partition=partition, isr=list(st.isr),
                )
        return st.leader_epoch

    def replication_factor(self, topic: str, partition: int) -> int:
        st = self._leaders.get((topic, partition))
        return len(st.replicas) if st is not None else 1

    def _min_isr(self, topic: str) -> int:
        placement = self._placements.get(topic)
        overrides = placement.config if placement is not None else {}
        return int(overrides.get("min_insync_replicas", self.config.topic_defaults["min_insync_replicas"]))

    def high_watermark(self, topic: str, partition: int, plog: Any) -> int:
        return self._leader(topic, partition).current_high_watermark(plog.log_end_offset)

    def on_replica_fetch(self, topic: str, partition: int, replica_id: int, offset: int, plog: Any) -> int:
        """A follower fetches at ``offset``; returns the high watermark to tell it. Never blocks."""
        st = self._leader(topic, partition)
        leo = plog.log_end_offset
        if st.update_follower(replica_id, min(offset, leo), leo, _now_ms()):
            with self._lock:
                self._hw_changed.notify_all()
            self.broker.notify_append(topic, partition)  # consumers waiting for the HW
        if replica_id not in st.isr and replica_id in st.caught_up() \
                and replica_id in self.broker.coordinator.brokers():
            self._isr_kick.set()
        return st.high_watermark

    def on_append(self, topic: str, partition: int, plog: Any) -> None:
        st = self._leaders.get((topic, partition))
        if st is not None and st.maybe_advance(plog.log_end_offset):
            with self._lock:
                self._hw_changed.notify_all()

    def wait_for_replicas(self, topic: str, partition: int, end_offset: int, timeout_ms: int) -> None:
        """acks=all: wait until the high watermark reaches ``end_offset`` (every ISR member has
        the batch). Raises NOT_LEADER when fenced meanwhile, REQUEST_TIMED_OUT after
        ``timeout_ms``, NOT_ENOUGH_REPLICAS_AFTER_APPEND when the ISR shrank below the minimum."""
        deadline = time.monotonic() + max(0, timeout_ms) / 1000.0
        with self._lock:
            while True:
                st = self._leader(topic, partition)
                plog = self.broker._local_log(topic, partition)
                if plog is None:
                    raise NotLeaderForPartitionError(f"{topic}-{partition} is gone", topic=topic, partition=partition)
                if st.current_high_watermark(plog.log_end_offset) >= end_offset:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RequestTimedOutError(
                        f"{topic}-{partition}: the in-sync replicas {list(st.isr)} did not all reach offset "
                        f"{end_offset} within {timeout_ms} ms", topic=topic, partition=partition,
                    )
                self._hw_changed.wait(min(left, 0.5))
        min_isr = self._min_isr(topic)
        if len(st.isr) < min_isr:
            raise NotEnoughReplicasAfterAppendError(
                f"{topic}-{partition}: appended, but the ISR {list(st.isr)} is below min_insync_replicas {min_isr}",
                topic=topic, partition=partition,
            )

    def epoch_end_offset(self, topic: str, partition: int, epoch: int) -> tuple[int, int]:
        """OffsetsForLeaderEpoch on the leader: (largest epoch <= ``epoch``, its end offset)."""
        self._leader(topic, partition)
        plog = self.broker._local_log(topic, partition)
        if plog is None:
            raise NotLeaderForPartitionError(f"{topic}-{partition} is gone", topic=topic, partition=partition)
        return plog.leader_epochs.end_offset_for(epoch, plog.log_end_offset)

    # ------------------------------------------------------------------ ISR changes

    def _isr_loop(self) -> None:
        lag_max = self.config.replica_lag_time_max_ms
        interval = max(0.05, lag_max / 4000.0)
        while not self._stopped.is_set():
            self._isr_kick.wait(interval)
            self._isr_kick.clear()
            if self._stopped.is_set():
                return
            with self._lock:
                leaders = list(self._leaders.items())
            now = _now_ms()
            for key, st in leaders:
                if st.fenced:
                    continue
                plog = self.broker._local_log(*key)
                if plog is None:
                    continue
                lagging = st.lagging(now, lag_max)
                live = self.broker.coordinator.brokers()
                # Only registered brokers join: one that is leaving may still fetch.
                joining = tuple(b for b in st.caught_up() if b in live)
                if not lagging and not joining:
                    continue
                old_isr = st.isr
                new_isr = tuple(b for b in old_isr if b not in lagging) + tuple(b for b in joining if b not in old_isr)
                try:
                    if not self._write_isr(key, st, new_isr, plog):
                        continue
                except (KazooException, KazooTimeoutError) as exc:
                    log.info("%s-%d: ISR change deferred (%r)", key[0], key[1], exc)
                    continue
                if lagging:
                    self.isr_shrinks += 1
                    log.warning("%s-%d: ISR shrinks %s -> %s (%s not caught up for over %d ms)", key[0], key[1],
                                list(old_isr), list(new_isr), list(lagging), lag_max)
                if joining:
                    self.isr_expands += 1
                    log.info("%s-%d: ISR expands to %s (caught up: %s)", key[0], key[1], list(new_isr), list(joining))

    def _write_isr(self, key: Key, st: LeaderState, new_isr: tuple[int, ...], plog: Any) -> bool:
        # While the change is being written, the high watermark waits for the old ISR and the
        # new one together (KIP-497's "maximal ISR"): once ZooKeeper names a joining replica
        # in sync, the controller may elect it, so it must already have everything acknowledged.
        old_isr = st.isr
        maximal = tuple(dict.fromkeys(old_isr + new_isr))
        with self._lock:
            st.set_isr(maximal, plog.log_end_offset)
        done = False
        try:
            done = self._write_isr_znode(key, st, new_isr, plog)
        finally:
            if not done:
                with self._lock:
                    st.set_isr(old_isr, plog.log_end_offset)
        return done

    def _write_isr_znode(self, key: Key, st: LeaderState, new_isr: tuple[int, ...], plog: Any) -> bool:
        path = paths.partition_state_path(*key)
        for _attempt in range(3):
            try:
                data, stat = self.zk.get(path)
            except NoNodeError:
                return False
            cur = paths.decode_partition_state(data, stat.version)
            if cur.leader != self.me_id or cur.leader_epoch != st.leader_epoch:
                # ZooKeeper moved on: this broker is a zombie leader for this partition.
                log.warning("%s-%d: fenced (state says leader %d epoch %d, this broker led epoch %d)",
                            key[0], key[1], cur.leader, cur.leader_epoch, st.leader_epoch)
                with self._lock:
                    st.fenced = True
                    self._hw_changed.notify_all()
                return False
            # The controller may have changed the ISR since this leader last read it (a dead
            # broker left it): apply this change to ZooKeeper's version, not to an older copy.
            removed = set(st.isr) - set(new_isr)
            new_isr = tuple(b for b in cur.isr if b not in removed) + tuple(
                b for b in new_isr if b not in cur.isr and b not in removed)
            new = PartitionState(self.me_id, st.leader_epoch, new_isr, cur.controller_epoch)
            try:
                self.zk.set(path, paths.encode_partition_state(new), version=stat.version)
            except BadVersionError:
                continue
            with self._lock:
                st.set_isr(new_isr, plog.log_end_offset)
                self._hw_changed.notify_all()
            self.broker.notify_append(*key)
            return True
        return False

    # ------------------------------------------------------------------ controlled shutdown

    def controlled_shutdown(self) -> int:
        """Hand each partition led here to the first other live ISR member (epoch + 1), with a
        conditional write of its state; returns how many moved."""
        live = set(self.broker.coordinator.brokers())
        moved = 0
        with self._lock:
            self._shutting_down = True
            leaders = list(self._leaders.items())
            for key in list(self._following):
                self._stop_following(key)
            fetchers = list(self._fetchers.values())
            self._fetchers.clear()
        for f in fetchers:
            f.close()
        for key, st in leaders:
            if st.fenced:
                continue
            path = paths.partition_state_path(*key)
            try:
                data, stat = self.zk.get(path)
                cur = paths.decode_partition_state(data, stat.version)
                if cur.leader != self.me_id:
                    continue
                others = [b for b in st.replicas if b != self.me_id and b in cur.isr and b in live]
                if not others:
                    continue
                new = PartitionState(others[0], cur.leader_epoch + 1, tuple(b for b in cur.isr if b != self.me_id),
                                     cur.controller_epoch)
                self.zk.set(path, paths.encode_partition_state(new), version=stat.version)
            except (BadVersionError, NoNodeError, KazooException, KazooTimeoutError, ValueError) as exc:
                log.info("%s-%d: controlled shutdown could not move leadership (%r)", key[0], key[1], exc)
                continue
            with self._lock:
                st.fenced = True
                self._hw_changed.notify_all()
            moved += 1
            log.info("%s-%d: leadership handed to broker %d (epoch %d) for shutdown", key[0], key[1],
                     new.leader, new.leader_epoch)
        return moved

    # ------------------------------------------------------------------ metrics

    def stats(self) -> dict[str, Any]:
        with self._lock:
            leaders = list(self._leaders.items())
        under = 0
        lag: dict[tuple[str, int, int], int] = {}
        for key, st in leaders:
            if st.fenced:
                continue
            if len(st.isr) < len(st.replicas):
                under += 1
            plog = self.broker._local_log(*key)
            if plog is not None:
                for b, n in st.follower_lag(plog.log_end_offset).items():
                    lag[(key[0], key[1], b)] = n
        return {"leaders": sum(1 for _, st in leaders if not st.fenced), "under_replicated": under, "lag": lag}


class _ReplicationCollector(Collector):
    """Kafka's replication gauges, read at scrape time."""

    def __init__(self, manager: ReplicaManager) -> None:
        self._m = manager

    def collect(self):  # type: ignore[override]
        s = self._m.stats()
        g = GaugeMetricFamily("annal_leader_count", "Partitions this broker leads")
        g.add_metric([], s["leaders"])
        yield g
        g = GaugeMetricFamily("annal_under_replicated_partitions", "Led partitions whose ISR is smaller than the replicas")
        g.add_metric([], s["under_replicated"])
        yield g
        c = CounterMetricFamily("annal_isr_shrinks", "ISR shrinks written by this broker")
        c.add_metric([], self._m.isr_shrinks)
        yield c
        c = CounterMetricFamily("annal_isr_expands", "ISR expansions written by this broker")
        c.add_metric([], self._m.isr_expands)
        yield c
        g = GaugeMetricFamily("annal_replica_follower_lag", "Offsets a follower is behind the leader's log end",
                              labels=["topic", "partition", "follower"])
        for (t, p, b), n in s["lag"].items():
            g.add_metric([t, str(p), str(b)], n)
        yield g
