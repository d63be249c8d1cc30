"""Consumer groups kept in ZooKeeper (Kafka 0.7's ZookeeperConsumerConnector, cooperatively).

Znodes (all under the cluster's chroot; see ``annal.zookeeper.paths``)::

    /consumers/<group>/ids/<member_id>            ephemeral  {"member_id", "topics", "host",
                                                              "pid", "timestamp_ms"}
    /consumers/<group>/owners/<topic>/<partition> ephemeral  data = owning member id
    /consumers/<group>/offsets/<topic>/<partition> persistent data = next offset (ASCII int)

Assignment is Kafka's range assignor, computed by every member from the same inputs: for each
subscribed topic, the partitions placed on live brokers (sorted) are split into contiguous
ranges over the members subscribed to that topic (sorted by id). Ownership is made exclusive
by the ephemeral owner claims: a member starts fetching a partition only once it has created
its claim, and deletes a claim only after ``on_partitions_revoked`` ran and the partition's
position was committed. A partition still claimed by another member (which has not yet seen
the change, or has died and whose session has not yet expired) is retried when that claim is
deleted. A member that dies keeps its claims until its session expires; then its partitions
resume at their last committed offsets elsewhere (at-least-once).

Rebalances are cooperative: only partitions that move are revoked (``on_partitions_revoked``
gets the partitions taken away, ``on_partitions_assigned`` the ones added; kafka-python's
``ConsumerRebalanceListener`` shape, Kafka's cooperative semantics). If the session expires,
the member's claims are gone before it can commit, so ``on_partitions_lost`` (or
``on_partitions_revoked`` if the listener has no such method) is called and nothing is
committed: another member may already own those partitions.

Rebalances (member joins/leaves, brokers come/go, partitions appear) are detected by kazoo
watches on any thread, but carried out in the application thread inside ``Consumer.poll``,
so listener callbacks run where the application can safely call ``commit``.

Offsets: ``commit`` writes only offsets that changed since they were last written or read, so
auto-commit (at most once per ``auto_commit_interval_ms``) costs nothing for idle partitions.
Auto-commit writes from a background thread (``annal.client._autocommit``), so a ZooKeeper
outage never blocks ``poll``; it writes only partitions the member still owns at the moment
of the write (``commit_owned``, under the offsets lock that revocation and session loss also
take), so a late background write cannot overwrite a new owner's progress.

Thread-safety: ``poll_rebalance``, ``commit``, ``committed`` and ``close`` are called from the
application thread (the consumer is not thread-safe, like kafka-python's); ``commit_owned``
from the auto-commit thread; watch callbacks only set flags under a lock.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Iterable, Mapping, Protocol

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, KazooException, NodeExistsError, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import KazooState
from kazoo.recipe.watchers import ChildrenWatch

from annal.zookeeper import paths
from annal.zookeeper.reads import read_children_data
from annal.errors import GroupError, LocalUsageError, NetworkError

from annal.client._autocommit import AutoCommitter
from annal.client.structs import TopicPartition

__all__ = ["ConsumerRebalanceListener", "GroupHooks", "GroupMember", "GroupMembership", "range_assign"]

log = logging.getLogger(__name__)


class ConsumerRebalanceListener:
    """Override to act when partitions move (kafka-python's ``ConsumerRebalanceListener``).

    Called from inside ``Consumer.poll`` in the application thread, so ``consumer.commit()``
    may be called from ``on_partitions_revoked`` to commit work done on those partitions
    before another member takes them over."""

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """``revoked`` are about to be taken away; their positions are committed after this."""

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        """``assigned`` were just added; their positions are set from committed offsets."""

    def on_partitions_lost(self, lost: list[TopicPartition]) -> None:
        """The session expired: ``lost`` may already belong to another member; do not commit."""
        self.on_partitions_revoked(lost)


class GroupHooks(Protocol):
    """What the group needs from the consumer it drives."""

    def positions(self) -> dict[TopicPartition, int]:
        """The next offset to consume of every assigned partition with a known position."""
        ...

    def set_assignment(self, partitions: set[TopicPartition], start_offsets: Mapping[TopicPartition, int | None]) -> None:
        """Fetch exactly ``partitions``; start the newly added ones at ``start_offsets``
        (None: apply auto_offset_reset)."""
        ...


def range_assign(
    member_id: str,
    subscriptions: Mapping[str, Iterable[str]],
    partitions: Mapping[str, Iterable[int]],
    topics: Iterable[str],
) -> set[TopicPartition]:
    """Kafka's range assignor, as seen by ``member_id``.

    ``subscriptions`` maps member id -> subscribed topics; ``partitions`` maps topic ->
    assignable partitions. Member i of k (sorted ids) subscribed to a topic of n partitions
    gets the i-th contiguous range: n // k partitions, plus one for the first n % k members.
    """
    out: set[TopicPartition] = set()
    for topic in sorted(set(topics)):
        parts = sorted(partitions.get(topic, ()))
        members = sorted(m for m, subs in subscriptions.items() if topic in set(subs))
        if member_id not in members or not parts:
            continue
        i, k = members.index(member_id), len(members)
        per, extra = divmod(len(parts), k)
        start = i * per + min(i, extra)
        count = per + (1 if i < extra else 0)
        out.update(TopicPartition(topic, p) for p in parts[start : start + count])
    return out


def _member_id(group_id: str) -> str:
    """Kafka 0.7's consumer id: ``<group>_<host>-<ms>-<random>`` (sortable, unique)."""
    host = socket.gethostname().replace("/", "_")[:40] or "host"
    return f"{group_id}_{host}-{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}"


class GroupMember:
    """One member of a ZooKeeper consumer group (module docstring).

    ``client`` is a started kazoo client on the cluster's chroot; the member does not close it.
    """

    def __init__(
        self,
        client: KazooClient,
        group_id: str,
        *,
        listener: ConsumerRebalanceListener | None = None,
        member_id: str | None = None,
        claim_retry_ms: int = 200,
    ) -> None:
        paths.group_path(group_id)  # validates the id
        self.client = client
        self.group_id = group_id
        self.member_id = member_id or _member_id(group_id)
        self.listener = listener
        self.claim_retry_ms = claim_retry_ms
        self._topics: list[str] = []
        self._lock = threading.Lock()
        self._needs_rebalance = True
        self._session_lost = False
        self._registered_session: int | None = None
        self._owned: set[TopicPartition] = set()
        self._pending: set[TopicPartition] = set()
        self._retry_at = 0.0
        self._written: dict[TopicPartition, int] = {}
        # Held while offsets are written or read and while owned partitions are given up, so
        # the auto-commit thread never writes a partition after this member let it go.
        self._offsets_lock = threading.RLock()
        self._watches_set = False
        self._existing_topics: set[str] = set()
        self._closed = False
        self.rebalances = 0
        client.add_listener(self._on_state)

    # -- subscription ---------------------------------------------------------------------

    @property
    def topics(self) -> list[str]:
        return list(self._topics)

    def subscribe(self, topics: Iterable[str], listener: ConsumerRebalanceListener | None = None) -> None:
        """Set the subscribed topics (replacing earlier ones); takes effect at the next poll."""
        names = sorted(set(topics))
        for name in names:
            if not isinstance(name, str) or not name:
                raise TypeError(f"topic names must be non-empty strings, not {name!r}")
        self._topics = names
        if listener is not None:
            self.listener = listener
        with self._lock:
            self._registered_session = None  # re-write our registration with the new topics
            self._needs_rebalance = True

    def assignment(self) -> set[TopicPartition]:
        return set(self._owned)

    # -- watches (any thread) -------------------------------------------------------------

    def _on_state(self, state: str) -> None:
        if state == KazooState.LOST and not self._closed:
            log.warning("group %s member %s: ZooKeeper session LOST; its partitions are lost", self.group_id, self.member_id)
            with self._lock:
                self._session_lost = True
                self._needs_rebalance = True
        elif state == KazooState.CONNECTED:
            with self._lock:
                self._needs_rebalance = True

    def _mark(self, *_args: Any) -> bool | None:
        with self._lock:
            self._needs_rebalance = True
        return False if self._closed else None

    def _ensure_watches(self) -> None:
        if self._watches_set:
            return
        for p in (paths.group_ids_path(self.group_id), paths.BROKER_IDS, paths.BROKER_TOPICS):
            self.client.retry(self.client.ensure_path, p)
        ChildrenWatch(self.client, paths.group_ids_path(self.group_id), self._mark)
        ChildrenWatch(self.client, paths.BROKER_IDS, self._mark)
        ChildrenWatch(self.client, paths.BROKER_TOPICS, self._mark)
        self._watches_set = True

    # -- rebalance (application thread) -----------------------------------------------------

    @property
    def needs_rebalance(self) -> bool:
        return self._needs_rebalance or bool(self._pending and time.monotonic() >= self._retry_at)

    def poll_rebalance(self, hooks: GroupHooks) -> bool:
        """Carry out a pending rebalance; returns True if the assignment changed.

        Errors talking to ZooKeeper leave the rebalance pending for the next poll (and raise
        nothing): the consumer keeps fetching what it owns meanwhile."""
        if self._closed or not self._topics:
            return False
        changed = False
        with self._lock:
            lost = self._session_lost
            self._session_lost = False
        if lost and self._owned:
            gone = sorted(self._owned)
            with self._offsets_lock:
                self._owned = set()
            self._pending.clear()
            hooks.set_assignment(set(), {})
            self._call_listener("on_partitions_lost", gone)
            changed = True
        if not self.needs_rebalance:
            return changed
        with self._lock:
            self._needs_rebalance = False
        try:
            self._ensure_watches()
            self._register()
            return self._rebalance(hooks) or changed
        except (KazooException, KazooTimeoutError) as exc:
            log.info("group %s: rebalance deferred (%r)", self.group_id, exc)
            with self._lock:
                self._needs_rebalance = True
            return changed

    def _register(self) -> None:
        sid = self.client.client_id[0] if self.client.client_id else None
        if sid is not None and sid == self._registered_session:
            return
        path = paths.group_member_path(self.group_id, self.member_id)
        data = json.dumps(
            {
                "member_id": self.member_id,
                "topics": self._topics,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "timestamp_ms": int(time.time() * 1000),
            },
            sort_keys=True,
        ).encode()
        while True:
            try:
                self.client.retry(self.client.create, path, data, ephemeral=True, makepath=True)
                break
            except NodeExistsError:
                pass
            try:
                _, stat = self.client.retry(self.client.get, path)
            except NoNodeError:
                continue
            # Ours either way (the member id is unique): from this session (a retried create,
            # or a new subscription) or from an expired one. Recreate it with fresh data.
            try:
                self.client.retry(self.client.delete, path, version=stat.version)
            except (NoNodeError, BadVersionError):
                pass
        self._registered_session = sid
        log.info("group %s: member %s registered for %s", self.group_id, self.member_id, self._topics)

    def _read_children_data(self, parent: str) -> dict[str, bytes | None]:
        return read_children_data(self.client, parent, missing_parent_ok=True)

    def _target(self) -> set[TopicPartition]:
        subscriptions: dict[str, list[str]] = {}
        for member, data in self._read_children_data(paths.group_ids_path(self.group_id)).items():
            try:
                subscriptions[member] = list(json.loads((data or b"{}").decode())["topics"])
            except (ValueError, KeyError, TypeError):
                continue
        live = {int(b) for b in self.client.get_children(paths.BROKER_IDS) if b.isdigit()}
        partitions: dict[str, list[int]] = {}
        for topic in self._topics:
            try:
                data, _ = self.client.get(paths.topic_path(topic))
                placement = paths.decode_topic(topic, data)
            except (NoNodeError, ValueError):
                continue
            partitions[topic] = [p for p, b in placement.partitions.items() if b in live]
        self._existing_topics = set(partitions)
        return range_assign(self.member_id, subscriptions, partitions, self._topics)

    def _rebalance(self, hooks: GroupHooks) -> bool:
        self.rebalances += 1
        target = self._target()
        changed = False
        revoked = self._owned - target
        if revoked:
            with self._offsets_lock:  # no background commit of these from now on
                self._owned = self._owned - revoked
            self._call_listener("on_partitions_revoked", sorted(revoked))
            positions = hooks.positions()
            # No commit for a deleted topic: the controller has just removed its offsets.
            self._write_offsets(
                {tp: positions[tp] for tp in revoked if tp in positions and tp.topic in self._existing_topics}
            )
            keep = set(self._owned)
            hooks.set_assignment(keep, {})
            for tp in revoked:
                self._release(tp)
            changed = True
            log.info("group %s: %s revoked %s", self.group_id, self.member_id, sorted(revoked))
        self._pending &= target
        added: list[TopicPartition] = []
        for tp in sorted(target - self._owned):
            if self._claim(tp):
                added.append(tp)
                self._pending.discard(tp)
            else:
                self._pending.add(tp)
        if self._pending:
            self._retry_at = time.monotonic() + self.claim_retry_ms / 1000.0
        if added:
            starts = self._read_offsets(added)
            self._owned |= set(added)
            hooks.set_assignment(set(self._owned), starts)
            log.info("group %s: %s assigned %s", self.group_id, self.member_id, added)
            self._call_listener("on_partitions_assigned", added)
            changed = True
        return changed

    def _claim(self, tp: TopicPartition) -> bool:
        """Create our owner claim; False if another member holds it (a watch on the claim
        marks a rebalance when it goes)."""
        path = paths.group_owner_path(self.group_id, tp.topic, tp.partition)
        me = self.member_id.encode()
        sid = self.client.client_id[0] if self.client.client_id else None
        for _ in range(3):
            try:
                self.client.retry(self.client.create, path, me, ephemeral=True, makepath=True)
                return True
            except NodeExistsError:
                pass
            try:
                owner, stat = self.client.retry(self.client.get, path, watch=self._mark)
            except NoNodeError:
                continue
            if owner == me:
                if stat.ephemeralOwner == sid:
                    return True  # a create retried after a lost reply
                try:  # ours from an expired session: replace it
                    self.client.retry(self.client.delete, path, version=stat.version)
                except (NoNodeError, BadVersionError):
                    pass
                continue
            return False
        return False

    def _release(self, tp: TopicPartition) -> None:
        path = paths.group_owner_path(self.group_id, tp.topic, tp.partition)
        try:
            owner, stat = self.client.retry(self.client.get, path)
            if owner == self.member_id.encode():
                self.client.retry(self.client.delete, path, version=stat.version)
        except (NoNodeError, BadVersionError):
            pass

    def _call_listener(self, name: str, partitions: list[TopicPartition]) -> None:
        listener = self.listener
        if listener is None:
            return
        fn = getattr(listener, name, None)
        if fn is None and name == "on_partitions_lost":
            fn = getattr(listener, "on_partitions_revoked", None)
        if fn is None:
            return
        try:
            fn(partitions)
        except Exception:
            log.exception("rebalance listener %s failed", name)

    # -- offsets -------------------------------------------------------------------------------

    def commit(self, offsets: Mapping[TopicPartition, int], *, check_owner: bool = True) -> None:
        """Write ``offsets`` (next offset to read, per partition) of partitions this member
        owns; unchanged ones are skipped. Raises GroupError for a partition not owned (its new
        owner's progress must not be overwritten) and NetworkError if ZooKeeper is unreachable.
        ``check_owner=False`` is for manually assigned partitions (no subscription), which
        the application coordinates itself, as with Kafka's ``assign()`` plus commits."""
        not_owned = [tp for tp in offsets if tp not in self._owned] if check_owner else []
        if not_owned:
            raise GroupError(
                f"cannot commit partitions not owned by member {self.member_id} of group "
                f"{self.group_id}: {sorted(not_owned)}"
            )
        for tp, off in offsets.items():
            if isinstance(off, bool) or not isinstance(off, int) or off < 0:
                raise ValueError(f"offset for {tp} must be an int >= 0, not {off!r}")
        try:
            self._write_offsets(offsets)
        except (KazooException, KazooTimeoutError) as exc:
            raise NetworkError(f"could not commit offsets to ZooKeeper: {exc!r}") from exc

    def commit_owned(self, offsets: Mapping[TopicPartition, int]) -> int:
        """Write the offsets of the partitions this member owns now (the auto-commit
        thread's write); raises kazoo's errors. Nothing is written once the session was lost
        and until ``poll`` has handled it: the claims are gone and another member may own the
        partitions already."""
        with self._offsets_lock:
            if self._session_lost:
                return 0
            return self._write_offsets({tp: off for tp, off in offsets.items() if tp in self._owned})

    def _write_offsets(self, offsets: Mapping[TopicPartition, int]) -> int:
        with self._offsets_lock:
            return self._write_offsets_locked(offsets)

    def _write_offsets_locked(self, offsets: Mapping[TopicPartition, int]) -> int:
        changed = {tp: off for tp, off in offsets.items() if self._written.get(tp) != off}
        if not changed:
            return 0
        pending = [
            (tp, off, self.client.set_async(paths.group_offset_path(self.group_id, tp.topic, tp.partition), paths.encode_offset(off)))
            for tp, off in changed.items()
        ]
        for tp, off, result in pending:
            try:
                result.get(timeout=10.0)
            except NoNodeError:
                path = paths.group_offset_path(self.group_id, tp.topic, tp.partition)
                try:
                    self.client.retry(self.client.create, path, paths.encode_offset(off), makepath=True)
                except NodeExistsError:
                    self.client.retry(self.client.set, path, paths.encode_offset(off))
            self._written[tp] = off
        return len(changed)

    def _read_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int | None]:
        with self._offsets_lock:
            return self._read_offsets_locked(tps)

    def _read_offsets_locked(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int | None]:
        pending = [
            (tp, self.client.get_async(paths.group_offset_path(self.group_id, tp.topic, tp.partition)))
            for tp in tps
        ]
        out: dict[TopicPartition, int | None] = {}
        for tp, result in pending:
            try:
                value = paths.decode_offset(result.get(timeout=10.0)[0])
            except NoNodeError:
                value = None
            out[tp] = value
            if value is not None:
                self._written[tp] = value
            else:
                self._written.pop(tp, None)
        return out

    def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset of ``tp`` as stored in ZooKeeper (None: none yet)."""
        try:
            data, _ = self.client.retry(self.client.get, paths.group_offset_path(self.group_id, tp.topic, tp.partition))
        except NoNodeError:
            return None
        except (KazooException, KazooTimeoutError) as exc:
            raise NetworkError(f"could not read committed offset from ZooKeeper: {exc!r}") from exc
        return paths.decode_offset(data)

    # -- leaving -------------------------------------------------------------------------------

    def leave(self, hooks: GroupHooks | None = None, *, commit: bool = True) -> None:
        """Leave the group: revoke (listener, then commit positions if ``commit``), release
        every claim and delete the member registration. ``subscribe`` joins again. Errors
        are logged: the session's expiry finishes a leave that could not complete."""
        owned = sorted(self._owned)
        self._topics = []
        try:
            if owned:
                self._call_listener("on_partitions_revoked", owned)
                if commit and hooks is not None:
                    positions = hooks.positions()
                    self._write_offsets({tp: positions[tp] for tp in owned if tp in positions})
                if hooks is not None:
                    hooks.set_assignment(set(), {})
                for tp in owned:
                    self._release(tp)
            self._owned.clear()
            self._pending.clear()
            if self.client.connected:
                try:
                    self.client.delete(paths.group_member_path(self.group_id, self.member_id))
                except NoNodeError:
                    pass
            self._registered_session = None
        except (KazooException, KazooTimeoutError) as exc:
            log.warning("group %s: leaving cleanly failed (%r); the session expiry will finish it", self.group_id, exc)

    def close(self, hooks: GroupHooks | None = None, *, commit: bool = True) -> None:
        """``leave`` for good. Idempotent."""
        if self._closed:
            return
        self.leave(hooks, commit=commit)
        self._closed = True
        self.client.remove_listener(self._on_state)


class _ConsumerHooks:
    """``GroupHooks`` over a ``annal.client.consumer.Consumer`` (its fetcher's partition states)."""

    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer

    def positions(self) -> dict[TopicPartition, int]:
        c = self._consumer
        with c._cond:
            return {
                tp: st.position
                for tp, st in c._states.items()
                if st.position is not None and st.reset_to is None
            }

    def set_assignment(self, partitions: set[TopicPartition], start_offsets: Mapping[TopicPartition, int | None]) -> None:
        self._consumer._set_assignment(partitions, start_offsets)


class GroupMembership:
    """The consumer's group seam: ``Consumer(group_id=..., zookeeper=...)`` creates one.

    Shares the kazoo client of the consumer's ZooKeeper metadata source when there is one.
    Auto-commit is due at most once per ``auto_commit_interval_ms``: ``poll`` takes the
    positions of records returned by earlier polls (at-least-once) and hands them to the
    background ``AutoCommitter``, which writes the changed ones. Used from the consumer's
    (application) thread only.
    """

    def __init__(
        self,
        consumer: Any,
        *,
        zookeeper: str,
        group_id: str,
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: int = 5000,
    ) -> None:
        from annal.client._zk import ZooKeeperMetadataSource, connect

        try:
            paths.group_path(group_id)
        except ValueError as exc:
            raise LocalUsageError(str(exc)) from None
        source = getattr(getattr(consumer, "_metadata", None), "source", None)
        if isinstance(source, ZooKeeperMetadataSource):
            self._client = source.client
            self._owns_client = False
        else:
            self._client = connect(zookeeper)
            self._owns_client = True
        self._hooks = _ConsumerHooks(consumer)
        self.member = GroupMember(self._client, group_id)
        self.enable_auto_commit = enable_auto_commit
        self.auto_commit_interval_ms = auto_commit_interval_ms
        self._next_auto_commit = time.monotonic() + auto_commit_interval_ms / 1000.0
        self.auto_committer: AutoCommitter | None = (
            AutoCommitter(self._write_auto, group_id, retry_backoff_ms=min(1000, auto_commit_interval_ms))
            if enable_auto_commit else None
        )

    @property
    def subscribed(self) -> bool:
        return bool(self.member.topics)

    def subscription(self) -> list[str]:
        return self.member.topics

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        if not topics:
            raise LocalUsageError("subscribe() needs at least one topic")
        self.member.subscribe(topics, listener)

    def unsubscribe(self) -> None:
        self.member.leave(self._hooks, commit=self.enable_auto_commit)

    def poll(self) -> None:
        """Rebalance if needed, then auto-commit if due (errors are logged, not raised).
        Manually assigned partitions got their committed offsets in ``assign()``."""
        if self.subscribed:
            self.member.poll_rebalance(self._hooks)
        if self.auto_committer is not None and time.monotonic() >= self._next_auto_commit:
            self._next_auto_commit = time.monotonic() + self.auto_commit_interval_ms / 1000.0
            self.auto_committer.submit(self._hooks.positions())

    def _write_auto(self, offsets: Mapping[TopicPartition, int]) -> None:
        """The auto-commit thread's write: owned partitions (subscribed), or every assigned
        one (``assign()``, coordinated by the application)."""
        if self.subscribed:
            self.member.commit_owned(offsets)
        else:
            self.member._write_offsets(offsets)

    def committed_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed offsets of ``partitions`` (None where nothing is committed),
        read from ZooKeeper now. ``assign()`` starts new partitions there. Raises
        ``NetworkError`` when ZooKeeper cannot be read."""
        try:
            return dict(self.member._read_offsets(partitions))
        except (KazooException, KazooTimeoutError) as exc:
            raise NetworkError(
                f"group {self.member.group_id}: committed offsets could not be read from ZooKeeper: {exc!r}"
            ) from exc

    def _commit_positions(self) -> None:
        positions = self._hooks.positions()
        if self.subscribed:
            owned = self.member.assignment()
            self.member.commit({tp: off for tp, off in positions.items() if tp in owned})
        else:
            self.member.commit(positions, check_owner=False)

    def commit(self, offsets: Mapping[TopicPartition, Any] | None = None) -> None:
        """Commit ``offsets`` ({tp: offset or OffsetAndMetadata-like}), or the positions of
        every owned (subscribed) or assigned (``assign()``) partition."""
        if offsets is None:
            self._commit_positions()
            return
        plain: dict[TopicPartition, int] = {}
        for tp, value in offsets.items():
            offset = getattr(value, "offset", value)
            plain[TopicPartition(*tp)] = offset
        self.member.commit(plain, check_owner=self.subscribed)

    def committed(self, tp: TopicPartition) -> int | None:
        return self.member.committed(tp)

    def close(self, autocommit: bool = True) -> None:
        if self.auto_committer is not None:
            self.auto_committer.close()  # leaving commits the final positions itself
        self.member.close(self._hooks, commit=autocommit and self.enable_auto_commit)
        if self._owns_client:
            try:
                self._client.stop()
                self._client.close()
            except Exception:
                pass
