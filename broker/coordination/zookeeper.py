"""``ZooKeeperCoordinator``: cluster state for a broker kept in ZooKeeper (Kafka 0.7/0.8 style).

What this broker writes (layout in ``zk_paths`` and docs/zookeeper.md):

* ``/brokers/ids/<id>``: an ephemeral registration, created at start and again on every new
  session. A broker refuses to start while its id is held by another live session.
* ``/brokers/topics/<topic>``: written by the broker that receives a CreateTopics request,
  with the same round-robin placement function every broker uses; ``create`` fails if the
  znode exists, which makes concurrent creation of one name race-free
  (TopicAlreadyExistsError for all but one).
* ``/controller``: written by the broker that wins kazoo's ``Election`` on
  ``/controller_election``; the controller carries out ``/admin/delete_topics/<topic>``
  requests (it deletes the topic znode and the groups' committed offsets of the topic, then
  the request).

What it watches: the broker registrations, the topic placements and ``/controller``, each
with a one-shot watch set by the re-read itself (``annal.zookeeper.refresh``: kazoo's
``ChildrenWatch`` could skip the change that followed a session expiry), and the deletion
requests (``ChildrenWatch``). Watch callbacks only mark state dirty; one thread of this
coordinator re-reads ZooKeeper and calls the placement listeners, so listeners never run on
kazoo's threads and a slow listener cannot stall ZooKeeper I/O. Every session state change
(SUSPENDED, LOST, CONNECTED) marks everything for a re-read as well, so the view of live
brokers, placements and the controller converges to ZooKeeper's within a re-read of the
reconnection, whatever changed during the outage.

Sessions: on SUSPENDED and LOST the broker keeps serving the partitions it has open (their
data is on its disk; only the cluster view is stale). When a new session comes, the broker
registers again. The registration handles the NodeExists cases Kafka learnt about the hard
way (KAFKA-1387, KAFKA-7165): the node may be ours from this session (a create retried
after a connection loss that had in fact succeeded): keep it; ours from an earlier,
expired session that the server has not yet cleaned up: delete it and create it again; or
another live session's: wait for it to go (a dead broker's session expires within its
session timeout), and at start-up refuse after that wait.

Thread-safety: every public method may be called from any thread. Listeners are called
from the coordinator's refresh thread, one at a time, in order of changes.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import warnings
from typing import Any, Callable, Mapping

from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    CancelledError,
    ConnectionLoss,
    SessionExpiredError,
    KazooException,
    NodeExistsError,
    NoNodeError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import KazooState
from kazoo.recipe.election import Election
from kazoo.recipe.watchers import ChildrenWatch
from kazoo.retry import KazooRetry

from annal.zookeeper import paths
from annal.broker.coordination.base import BrokerInfo, Coordinator, PlacementListener, TopicPlacement
from annal.zookeeper.reads import (
    read_children_data,
    read_controller_id,
    read_partition_states,
    with_partition_states,
)
from annal.broker.coordination.controller import bump_controller_epoch, elect_leaders, initial_states
from annal.zookeeper.refresh import WatchRefresher
from annal.errors import (
    AnnalError,
    BrokerNotAvailableError,
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    NetworkError,
    RequestTimedOutError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from annal.topic_names import validate_topic_name

__all__ = ["ZooKeeperCoordinator", "MAX_PARTITIONS"]

log = logging.getLogger(__name__)

MAX_PARTITIONS = 10_000
# How long a metadata answer waits for ZooKeeper to confirm a topic this broker has not seen.
TOPIC_READ_TIMEOUT_S = 1.0


def _hex(session_id: int | None) -> str:
    return "none" if session_id is None else f"0x{session_id:x}"


class ZooKeeperCoordinator(Coordinator):
    """Cluster membership, placements and the controller role, kept in ZooKeeper.

    ``zookeeper`` is a kazoo hosts string with an optional chroot
    (``"127.0.0.1:2181,127.0.0.1:2182/annal"``); ``/annal`` is used when none is given.
    ``connect_timeout_ms`` bounds how long start() waits for ZooKeeper to answer (0: until it
    does, or until stop()). ``registration_wait_ms`` bounds how long start() waits for a
    registration of the same broker id held by another session to expire before refusing
    (default: 1.5 x the session timeout + 1 s, enough for the session of a killed broker to
    expire).
    """

    def __init__(
        self,
        zookeeper: str,
        *,
        session_timeout_ms: int = 6000,
        connect_timeout_ms: int = 15000,
        registration_wait_ms: int | None = None,
        delete_timeout_ms: int = 30000,
        create_timeout_ms: int = 30000,
    ) -> None:
        self.zookeeper = paths.with_default_chroot(zookeeper)
        self.session_timeout_ms = int(session_timeout_ms)
        self.connect_timeout_ms = int(connect_timeout_ms)
        self.registration_wait_ms = (
            int(registration_wait_ms) if registration_wait_ms is not None else int(session_timeout_ms * 1.5) + 1000
        )
        self.delete_timeout_ms = int(delete_timeout_ms)
        self.create_timeout_ms = int(create_timeout_ms)
        self._zk = KazooClient(
            hosts=self.zookeeper,
            timeout=self.session_timeout_ms / 1000.0,
            connection_retry=KazooRetry(max_tries=-1, delay=0.05, backoff=2, max_delay=1.0, max_jitter=0.2),
            command_retry=KazooRetry(
                max_tries=-1, delay=0.05, backoff=2, max_delay=1.0, max_jitter=0.2,
                deadline=max(2.0, self.session_timeout_ms / 1000.0),
            ),
            logger=logging.getLogger("kazoo.client"),
        )
        self._me: BrokerInfo | None = None
        self._start_time_ms = int(time.time() * 1000)

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._brokers: dict[int, BrokerInfo] = {}
        self._topics: dict[str, TopicPlacement] = {}
        self._controller_id = -1
        self._listeners: list[PlacementListener] = []

        self._stopping = threading.Event()
        self._started = False
        self._stopped = False
        self._connected = threading.Event()
        self._session_gen = 0  # bumped on every LOST
        self._sessions_seen: set[int] = set()
        self._registered_session: int | None = None
        self._last_session_id: int | None = None
        self._registered = threading.Event()

        self._refresher = WatchRefresher(
            self._refresh, self._stopping, lambda: self._connected.wait(1.0), log, "cluster state"
        )
        self._session_kick = threading.Event()
        self._deletions_kick = threading.Event()
        self._is_controller = False
        self._election: Election | None = None
        self._threads: list[threading.Thread] = []

    # -- public API ---------------------------------------------------------------------

    @property
    def session_id(self) -> int | None:
        """The current ZooKeeper session id (None before connecting)."""
        cid = self._zk.client_id
        return cid[0] if cid else None

    @property
    def is_controller(self) -> bool:
        return self._is_controller

    @property
    def is_registered(self) -> bool:
        return self._registered.is_set()

    @property
    def kazoo_client(self) -> KazooClient:
        """The underlying client (tests use it to expire the session)."""
        return self._zk

    def start(self, me: BrokerInfo) -> None:
        if self._started:
            raise RuntimeError("ZooKeeperCoordinator.start() called twice")
        self._started = True
        self._me = me
        self._zk.add_listener(self._on_state)
        try:
            with warnings.catch_warnings():
                # A missing chroot is expected on a fresh ensemble: ensure_path creates it.
                warnings.filterwarnings("ignore", message="No chroot path exists")
                self._connect()
        except (KazooTimeoutError, KazooException) as exc:
            self._close_client()
            raise NetworkError(
                f"could not connect to ZooKeeper at {self.zookeeper} within {self.connect_timeout_ms} ms: {exc}"
            ) from exc
        try:
            for p in (paths.BROKER_IDS, paths.BROKER_TOPICS, paths.DELETE_TOPICS, paths.CONSUMERS, paths.CONTROLLER_ELECTION):
                self._zk.retry(self._zk.ensure_path, p)
            self._register(startup=True)
            self._refresh(brokers=True, topics=True)
            ChildrenWatch(self._zk, paths.DELETE_TOPICS, self._on_delete_requests)
        except (KazooException, KazooTimeoutError) as exc:
            self._close_client()
            raise NetworkError(f"ZooKeeper failed while broker {me.broker_id} was joining the cluster: {exc!r}") from exc
        except BaseException:
            self._close_client()
            raise
        for name, target in (
            ("annal-zk-refresh", self._refresher.run),
            ("annal-zk-session", self._session_loop),
            ("annal-zk-controller", self._controller_loop),
        ):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def _connect(self) -> None:
        """Connect, waiting for ZooKeeper as long as it takes: any orchestrator may start the
        brokers before ZooKeeper answers. kazoo retries the connection (at least once a second)
        while this logs a line every few seconds. Gives up with KazooTimeoutError after
        ``connect_timeout_ms`` (0: never) or when stop() is called meanwhile."""
        started = time.monotonic()
        next_line_s = 1.0
        live = self._zk.start_async()
        while not live.wait(0.25):
            waited_s = time.monotonic() - started
            if self._stopping.is_set() or 0 < self.connect_timeout_ms <= waited_s * 1000:
                self._close_client()
                raise KazooTimeoutError("stopped while waiting" if self._stopping.is_set() else "connection time-out")
            if waited_s >= next_line_s:
                log.warning(
                    "ZooKeeper at %s does not answer yet; broker %d waits and retries (%.0f s so far, %s)",
                    self.zookeeper, self._me.broker_id if self._me else -1, waited_s,
                    f"gives up after {self.connect_timeout_ms} ms" if self.connect_timeout_ms > 0 else "until it answers",
                )
                next_line_s = waited_s + 5.0

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        election = self._election
        if election is not None:
            election.cancel()
        self._refresher.wake()
        self._session_kick.set()
        self._deletions_kick.set()
        for t in self._threads:
            t.join(timeout=max(5.0, self.session_timeout_ms / 1000.0))
        if self._me is not None and self._zk.connected:
            # Deregister explicitly so the cluster learns at once, not after a session timeout.
            try:
                _, stat = self._zk.get(paths.broker_path(self._me.broker_id))
                if stat.ephemeralOwner == self.session_id:
                    self._zk.delete(paths.broker_path(self._me.broker_id), version=stat.version)
                    log.info("broker %d deregistered from ZooKeeper", self._me.broker_id)
            except (KazooException, KazooTimeoutError) as exc:
                log.debug("deregistration skipped: %r", exc)
        self._registered.clear()
        self._close_client()

    def brokers(self) -> dict[int, BrokerInfo]:
        with self._lock:
            return dict(self._brokers)

    def controller_id(self) -> int:
        with self._lock:
            return self._controller_id

    def topics(self) -> dict[str, TopicPlacement]:
        with self._lock:
            return dict(self._topics)

    def topic_registered(self, name: str) -> bool | None:
        """Read ``/brokers/topics/<name>`` and its deletion mark from ZooKeeper itself: a
        topic another broker just created exists there before this broker's watch has
        delivered its placement. At most ``TOPIC_READ_TIMEOUT_S`` (None past it or while
        disconnected)."""
        zk = self._zk
        if not zk.connected:
            return None
        try:
            exists = zk.exists_async(paths.topic_path(name))
            marked = zk.exists_async(paths.delete_topic_path(name))
            found = exists.get(timeout=TOPIC_READ_TIMEOUT_S)
            deleting = marked.get(timeout=TOPIC_READ_TIMEOUT_S)
        except (KazooException, KazooTimeoutError) as exc:
            log.debug("cannot read topic %s from ZooKeeper: %r", name, exc)
            return None
        return found is not None and deleting is None

    def add_listener(self, listener: PlacementListener) -> None:
        with self._lock:
            self._listeners.append(listener)
            snapshot = dict(self._topics)
        listener(snapshot)

    def create_topic(
        self,
        name: str,
        partitions: int,
        config: Mapping[str, Any],
        replication_factor: int = 1,
        *,
        deadline: float | None = None,
    ) -> TopicPlacement:
        """Write ``/brokers/topics/<name>`` and each partition's first state (module
        docstring), within ``deadline`` (the caller's; default ``create_timeout_ms`` from now). Every ZooKeeper call waits at most
        until the deadline, and the placement is written only while connected and before the
        deadline, so a caller that got RequestTimedOutError("not created") can rely on it: the
        write was never sent (kazoo would otherwise queue it and apply it on reconnection).
        Only a write sent whose answer was lost or late may still be applied: that error says
        so (as Kafka's TimeoutException does)."""
        validate_topic_name(name)
        if isinstance(partitions, bool) or not isinstance(partitions, int) or not 1 <= partitions <= MAX_PARTITIONS:
            raise InvalidPartitionsError(f"partitions must be an integer in 1..{MAX_PARTITIONS}, got {partitions!r}")
        config = dict(config or {})
        for key, value in config.items():
            if not isinstance(key, str) or not (value is None or isinstance(value, (str, int, float, bool))):
                raise InvalidConfigError(f"topic config {key!r}={value!r} is not a string/number/bool setting")
        if deadline is None:
            deadline = time.monotonic() + self.create_timeout_ms / 1000.0
        try:
            if self._read_by(deadline, name, self._zk.exists_async, paths.delete_topic_path(name)) is not None:
                raise TopicAlreadyExistsError(f"topic {name!r} is marked for deletion; retry once it is deleted")
            live = self._read_by(deadline, name, self._zk.get_children_async, paths.BROKER_IDS)
            ids = [int(b) for b in live if b.isdigit()]
            if not ids:
                raise BrokerNotAvailableError("no live brokers registered in ZooKeeper to place partitions on")
            if not 1 <= replication_factor <= len(ids):
                raise InvalidReplicationFactorError(
                    f"replication factor {replication_factor} needs as many live brokers; {len(ids)} are live"
                )
            replicas = paths.assign_replicas(
                partitions, replication_factor, ids, random.randrange(len(ids)), random.randrange(len(ids))
            )
            placement = TopicPlacement(
                name=name, partitions={p: r[0] for p, r in replicas.items()}, config=config,
                replicas=replicas, isr=dict(replicas), leader_epochs={p: 0 for p in replicas},
            )
            self._write_placement_by(deadline, placement)
        except AnnalError:
            raise
        except (KazooException, KazooTimeoutError) as exc:
            raise NetworkError(f"ZooKeeper unavailable while creating topic {name!r}: {exc!r}") from exc
        log.info("created topic %s with placement %s", name, dict(placement.partitions))
        self._refresher.mark(topics=True)
        self._wait_for(lambda: name in self._topics, min(5.0, max(0.0, deadline - time.monotonic())))
        return placement

    def _request_deletion_by(self, deadline: float, name: str) -> None:
        if not self._zk.connected or time.monotonic() >= deadline:
            raise RequestTimedOutError(
                f"topic {name!r} was not deleted: the broker is not connected to ZooKeeper"
            )
        result = self._zk.create_async(paths.delete_topic_path(name), b"")
        try:
            result.get(timeout=max(0.0, deadline - time.monotonic()))
        except NodeExistsError:
            pass  # already requested; wait for the controller like the first caller
        except (ConnectionLoss, SessionExpiredError, KazooTimeoutError) as exc:
            raise RequestTimedOutError(
                f"topic {name!r}: ZooKeeper did not confirm the deletion request before the "
                f"request's deadline ({type(exc).__name__}); the topic may still be deleted"
            ) from exc

    def _read_by(
        self, deadline: float, topic: str, call: Callable[..., Any], *args: Any, what: str = "created"
    ) -> Any:
        """A ZooKeeper read before a topic creation, retried on connection loss until ``deadline``;
        RequestTimedOutError (nothing written) past it."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                return call(*args).get(timeout=left)
            except (ConnectionLoss, KazooTimeoutError):
                self._stopping.wait(min(0.1, max(0.0, deadline - time.monotonic())))
        raise RequestTimedOutError(
            f"topic {topic!r} was not {what}: ZooKeeper did not answer before the request's deadline"
        )

    def _write_placement_by(self, deadline: float, placement: TopicPlacement) -> None:
        """Create the topic znode, only if connected and before ``deadline`` (see create_topic)."""
        name = placement.name
        if not self._zk.connected or time.monotonic() >= deadline:
            raise RequestTimedOutError(
                f"topic {name!r} was not created: ZooKeeper is not reachable and the request's deadline came"
                if time.monotonic() >= deadline else
                f"topic {name!r} was not created: the broker is not connected to ZooKeeper"
            )
        # The placement and every partition's first state in one transaction: a reader never
        # sees a topic whose states are missing for good. Not retried: a create retried after a
        # lost reply would see NodeExists for our own write.
        tx = self._zk.transaction()
        tx.create(paths.topic_path(name), paths.encode_topic(placement))
        tx.create(paths.partitions_path(name), b"")
        for p, state in initial_states(placement.replicas).items():
            tx.create(paths.partition_state_path(name, p).rsplit("/", 1)[0], b"")
            tx.create(paths.partition_state_path(name, p), paths.encode_partition_state(state))
        try:
            results = tx.commit_async().get(timeout=max(0.0, deadline - time.monotonic()))
        except (ConnectionLoss, SessionExpiredError, KazooTimeoutError) as exc:
            raise RequestTimedOutError(
                f"topic {name!r}: ZooKeeper did not confirm the write before the request's deadline "
                f"({type(exc).__name__}); the topic may still be created: check with describe"
            ) from exc
        if any(isinstance(r, NodeExistsError) for r in results):
            raise TopicAlreadyExistsError(f"topic {name!r} already exists")
        for r in results:
            if isinstance(r, Exception):
                raise r

    def delete_topic(self, name: str, *, deadline: float | None = None) -> None:
        """Request the deletion (``/admin/delete_topics/<name>``) and wait for the controller to
        finish it, within ``deadline`` (the caller's) and ``delete_timeout_ms``. The request
        is written only while connected and before the deadline (as in ``create_topic``)."""
        validate_topic_name(name)
        path = paths.topic_path(name)
        own = time.monotonic() + self.delete_timeout_ms / 1000.0
        deadline = own if deadline is None else min(deadline, own)
        try:
            if self._read_by(deadline, name, self._zk.exists_async, path, what="deleted") is None:
                raise UnknownTopicOrPartitionError(f"unknown topic {name!r}")
            self._request_deletion_by(deadline, name)
            # The controller removes the request last: its absence means the deletion is done.
            request = paths.delete_topic_path(name)
            gone = threading.Event()
            finished = False
            while not finished and time.monotonic() < deadline:
                gone.clear()
                try:
                    finished = self._read_by(deadline, name, self._zk.exists_async, request,
                                             lambda _e: gone.set(), what="deleted") is None
                except RequestTimedOutError:
                    break
                if not finished:
                    gone.wait(min(1.0, max(0.0, deadline - time.monotonic())))
            if not finished:
                raise RequestTimedOutError(
                    f"deletion of {name!r} was requested but not finished before the request's deadline "
                    f"(at most delete_timeout_ms={self.delete_timeout_ms}; controller id "
                    f"{self.controller_id()}); it stays pending and completes when a controller carries it out"
                )
        except AnnalError:
            raise
        except (KazooException, KazooTimeoutError) as exc:
            raise NetworkError(f"ZooKeeper unavailable while deleting topic {name!r}: {exc!r}") from exc
        self._refresher.mark(topics=True)
        self._wait_for(lambda: name not in self._topics, min(5.0, max(0.0, deadline - time.monotonic())))

    # -- registration -------------------------------------------------------------------

    def _register(self, *, startup: bool) -> None:
        """Create our ephemeral ``/brokers/ids/<id>`` in the current session (see module
        docstring for the NodeExists cases). At start-up, raises InvalidConfigError when
        another live session keeps the id past ``registration_wait_ms``."""
        assert self._me is not None
        me = self._me
        path = paths.broker_path(me.broker_id)
        data = paths.encode_broker(me, start_time_ms=self._start_time_ms)
        deadline = time.monotonic() + self.registration_wait_ms / 1000.0
        announced_wait = False
        while not self._stopping.is_set():
            sid = self.session_id
            if sid is not None:
                self._sessions_seen.add(sid)
            try:
                self._zk.retry(self._zk.create, path, data, ephemeral=True)
                self._registered_session = sid
                self._registered.set()
                log.info("broker %d registered at %s (session %s)", me.broker_id, path, _hex(sid))
                return
            except NodeExistsError:
                pass
            try:
                old, stat = self._zk.retry(self._zk.get, path)
            except NoNodeError:
                continue  # vanished between create and get: try again
            owner = stat.ephemeralOwner
            if owner == sid:
                if old == data:
                    # A create retried after a lost reply: the first one had succeeded.
                    self._registered_session = sid
                    self._registered.set()
                    log.info("broker %d already registered in this session %s", me.broker_id, _hex(sid))
                    return
                # Ours, but stale content: recreate it so watchers see a children change.
                log.info("broker %d: replacing our own registration with fresh data", me.broker_id)
                self._delete_quietly(path, stat.version)
                continue
            if owner in self._sessions_seen:
                log.warning(
                    "broker %d: registration still held by our expired session %s; deleting it and registering again",
                    me.broker_id, _hex(owner),
                )
                self._delete_quietly(path, stat.version)
                continue
            now = time.monotonic()
            if now >= deadline:
                holder = old.decode("utf-8", "replace") if old else ""
                msg = (
                    f"broker id {me.broker_id} is registered by another live ZooKeeper session "
                    f"{_hex(owner)} ({holder}) at {self.zookeeper}; another broker is running with "
                    f"this id. Stop it or choose another --broker-id."
                )
                if startup:
                    raise InvalidConfigError(msg)
                log.error("%s Will keep trying; serving unregistered meanwhile.", msg)
                deadline = now + self.registration_wait_ms / 1000.0
            elif not announced_wait:
                announced_wait = True
                log.warning(
                    "broker %d: id held by session %s; waiting up to %.1f s for it to expire",
                    me.broker_id, _hex(owner), deadline - now,
                )
            gone = threading.Event()
            if self._zk.retry(self._zk.exists, path, watch=lambda _e: gone.set()) is not None:
                gone.wait(min(1.0, max(0.05, deadline - time.monotonic())))

    def _delete_quietly(self, path: str, version: int) -> None:
        try:
            self._zk.retry(self._zk.delete, path, version=version)
        except (NoNodeError, BadVersionError):
            pass

    # -- session handling ---------------------------------------------------------------

    def _on_state(self, state: str) -> None:
        """kazoo state listener (runs on kazoo's connection thread: must not block)."""
        if self._stopping.is_set():
            return
        self._refresher.on_session_state(state)
        if state == KazooState.SUSPENDED:
            self._connected.clear()
            log.warning(
                "ZooKeeper connection SUSPENDED (session %s); still serving open partitions",
                _hex(self._last_session_id),
            )
        elif state == KazooState.LOST:
            self._connected.clear()
            self._session_gen += 1
            self._registered.clear()
            self._registered_session = None
            log.warning("ZooKeeper session LOST (expired); still serving open partitions, will register again")
        else:
            self._connected.set()
            self._last_session_id = self.session_id
            log.info("ZooKeeper connected (session %s)", _hex(self._last_session_id))
            self._session_kick.set()
            self._refresher.mark(brokers=True, topics=True)
            self._deletions_kick.set()

    def _session_loop(self) -> None:
        while not self._stopping.is_set():
            self._session_kick.wait(1.0)
            self._session_kick.clear()
            if self._stopping.is_set():
                return
            if not self._connected.is_set():
                continue
            sid = self.session_id
            if sid is None or sid == self._registered_session:
                continue
            log.info("new ZooKeeper session %s: registering broker %d again", _hex(sid), self._me.broker_id if self._me else -1)
            try:
                self._register(startup=False)
                log.info("broker %d re-registered (session %s)", self._me.broker_id if self._me else -1, _hex(sid))
                self._refresher.mark(brokers=True)
            except Exception as exc:  # keep trying while we serve
                log.warning("re-registration failed, will retry: %r", exc)
                self._stopping.wait(0.5)
                self._session_kick.set()

    # -- watches and refresh ------------------------------------------------------------

    def _on_partition_state_changed(self, _event: object) -> None:
        """One-shot data watch on every partition state (re-set by each re-read)."""
        self._refresher.mark(topics=True)

    def _on_delete_requests(self, children: list[str]) -> bool | None:
        if children:
            self._deletions_kick.set()
        return False if self._stopping.is_set() else None

    def _read_all(self, parent: str, watch: Callable[[Any], None] | None = None) -> dict[str, bytes | None]:
        return read_children_data(self._zk, parent, self.session_timeout_ms / 1000.0, watch=watch)

    def _refresh_controller(self) -> None:
        cid = read_controller_id(self._zk, watch=self._refresher.watch_brokers)
        with self._lock:
            if cid != self._controller_id:
                log.info("controller is now broker %d", cid)
            self._controller_id = cid

    def _refresh(self, *, brokers: bool, topics: bool) -> None:
        """Re-read registrations and/or placements; call listeners when placements changed.
        Re-reads every child (not just new names) so a topic deleted and created again
        between two watch events is not missed."""
        if brokers:
            self._refresh_controller()
            fresh: dict[int, BrokerInfo] = {}
            for child, data in self._read_all(paths.BROKER_IDS, self._refresher.watch_brokers).items():
                try:
                    fresh[int(child)] = paths.decode_broker(int(child), data)
                except ValueError as exc:
                    log.warning("ignoring bad broker registration %s: %s", child, exc)
            with self._lock:
                changed_brokers = fresh != self._brokers
                if changed_brokers:
                    log.info("live brokers: %s", sorted(fresh))
                self._brokers = fresh
                self._changed.notify_all()
            if changed_brokers:
                self._deletions_kick.set()  # the controller elects leaders for a dead broker's partitions
        if topics:
            placed: dict[str, TopicPlacement] = {}
            for child, data in self._read_all(paths.BROKER_TOPICS, self._refresher.watch_topics).items():
                try:
                    placed[child] = paths.decode_topic(child, data)
                except ValueError as exc:
                    log.warning("ignoring bad topic placement %s: %s", child, exc)
            states = read_partition_states(self._zk, placed, self._on_partition_state_changed,
                                           self.session_timeout_ms / 1000.0)
            placed = with_partition_states(placed, states)
            with self._lock:
                changed = placed != self._topics
                self._topics = placed
                listeners = list(self._listeners)
                self._changed.notify_all()
            if changed:
                for listener in listeners:
                    try:
                        listener(dict(placed))
                    except Exception:
                        log.exception("placement listener %r failed", listener)

    def _wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    # -- controller ---------------------------------------------------------------------

    def _controller_loop(self) -> None:
        assert self._me is not None
        while not self._stopping.is_set():
            if not self._connected.wait(0.5):
                continue
            self._election = Election(self._zk, paths.CONTROLLER_ELECTION, identifier=str(self._me.broker_id))
            if self._stopping.is_set():
                return
            try:
                self._election.run(self._lead)
            except CancelledError:
                pass
            except Exception as exc:
                log.info("controller election interrupted (%r); contending again", exc)
                self._stopping.wait(0.5)

    def _lead(self) -> None:
        """Runs while this broker holds the election lock; returns to step down."""
        assert self._me is not None and self._election is not None
        gen = self._session_gen
        sid = self.session_id
        lock = self._election.lock
        # The lock may have been won by a session that has just expired: check that our
        # contender node is alive in the current session before acting as controller.
        try:
            stat = self._zk.exists(f"{lock.path}/{lock.node}")
        except (KazooException, KazooTimeoutError):
            return
        if stat is None or stat.ephemeralOwner != sid or self._stopping.is_set():
            return
        if not self._claim_controller_node(gen, sid):
            return
        self._is_controller = True
        try:
            controller_epoch = bump_controller_epoch(self._zk)
        except (KazooException, KazooTimeoutError):
            return
        log.info("broker %d is now the controller (session %s, epoch %d)", self._me.broker_id, _hex(sid),
                 controller_epoch)
        self._deletions_kick.set()
        try:
            while not self._stopping.is_set() and gen == self._session_gen:
                self._deletions_kick.wait(1.0)
                self._deletions_kick.clear()
                if self._stopping.is_set() or gen != self._session_gen:
                    break
                try:
                    self._process_deletions()
                except (KazooException, KazooTimeoutError) as exc:
                    log.info("controller: deletions deferred (%r)", exc)
                try:
                    self._elect_leaders(controller_epoch)
                except (KazooException, KazooTimeoutError) as exc:
                    log.info("controller: leader election deferred (%r)", exc)
        finally:
            self._is_controller = False
            log.info("broker %d resigns as controller", self._me.broker_id)
            if gen == self._session_gen:
                try:
                    data, stat = self._zk.get(paths.CONTROLLER)
                    if stat.ephemeralOwner == sid:
                        self._zk.delete(paths.CONTROLLER, version=stat.version)
                except (KazooException, KazooTimeoutError):
                    pass

    def _elect_leaders(self, controller_epoch: int) -> None:
        # Read live brokers and topics straight from ZooKeeper: the cached view may lag.
        live = {int(b) for b in self._zk.get_children(paths.BROKER_IDS) if b.isdigit()}
        placed: dict[str, TopicPlacement] = {}
        for child, data in self._read_all(paths.BROKER_TOPICS).items():
            if self._zk.exists(paths.delete_topic_path(child)) is not None:
                continue
            try:
                placed[child] = paths.decode_topic(child, data)
            except ValueError:
                continue
        if elect_leaders(self._zk, placed, live, controller_epoch, timeout_s=self.session_timeout_ms / 1000.0):
            self._refresher.mark(topics=True)

    def _claim_controller_node(self, gen: int, sid: int | None) -> bool:
        assert self._me is not None
        data = paths.encode_controller(self._me.broker_id, timestamp_ms=int(time.time() * 1000))
        while not self._stopping.is_set() and gen == self._session_gen:
            try:
                self._zk.create(paths.CONTROLLER, data, ephemeral=True)
                return True
            except NodeExistsError:
                pass
            except (KazooException, KazooTimeoutError) as exc:
                log.info("controller: could not write %s (%r)", paths.CONTROLLER, exc)
                return False
            try:
                old, stat = self._zk.get(paths.CONTROLLER)
            except NoNodeError:
                continue
            except (KazooException, KazooTimeoutError):
                return False
            if stat.ephemeralOwner == sid:
                return True
            if stat.ephemeralOwner in self._sessions_seen or stat.ephemeralOwner == 0:
                self._delete_quietly(paths.CONTROLLER, stat.version)
                continue
            # The previous controller's session is ending (it lost the lock with it).
            gone = threading.Event()
            try:
                if self._zk.exists(paths.CONTROLLER, watch=lambda _e: gone.set()) is not None:
                    gone.wait(1.0)
            except (KazooException, KazooTimeoutError):
                return False
        return False

    def _process_deletions(self) -> None:
        for topic in self._zk.get_children(paths.DELETE_TOPICS):
            try:
                self._zk.delete(paths.topic_path(topic), recursive=True)
                log.info("controller: deleted topic %s", topic)
            except NoNodeError:
                pass
            # Committed group offsets of the topic go with it, so a topic created again
            # with the same name is read from its start, not from stale offsets.
            try:
                groups = self._zk.get_children(paths.CONSUMERS)
            except NoNodeError:
                groups = []
            for group in groups:
                try:
                    self._zk.delete(paths.group_offsets_path(group, topic), recursive=True)
                except (NoNodeError, ValueError):
                    pass
            try:
                self._zk.delete(paths.delete_topic_path(topic))
            except NoNodeError:
                pass

    def _close_client(self) -> None:
        self._stopping.set()  # the LOST that zk.stop() reports is not a session expiry
        try:
            self._zk.stop()
        except Exception:
            pass
        try:
            self._zk.close()
        except Exception:
            pass
