"""Kafka's classic consumer-group protocol: FindCoordinator's answer, JoinGroup, SyncGroup,
Heartbeat, LeaveGroup, OffsetCommit and OffsetFetch.

Which broker coordinates a group: in cluster mode, the live broker (with a Kafka listener) at
index ``crc32(group) % n`` of the live broker ids in order, so every broker computes the same
answer from ZooKeeper's broker list; standalone, the broker itself. Membership lives in memory
on that broker (as in Kafka, where it is rebuilt from ``__consumer_offsets``; here a
coordinator that restarts or moves forgets it, the members get UNKNOWN_MEMBER_ID or
NOT_COORDINATOR and join again). Assignment is done by the group's leader member, as Kafka does:
the coordinator only picks the protocol every member supports and hands the leader's
assignment out.

Committed offsets are stored where Annal keeps them, so Annal's SDK and Kafka clients read each
other's commits: cluster mode, ZooKeeper ``/consumers/<group>/offsets/<topic>/<partition>``
(ASCII next offset to read, ``annal.zookeeper.paths``); standalone, the file
``DATA_DIR/consumer_offsets.json`` (``{"version": 1, "groups": {group: {topic: {partition:
offset}}}}``, replaced atomically on each commit). The commit's metadata string is not kept
(OffsetFetch answers ""). Membership of one group is not shared between the two protocols: an
SDK member (ZooKeeper ids) and a Kafka member of the same group do not see each other.

The group state machine (Kafka's ``GroupCoordinator``): Empty -> PreparingRebalance (a member
joined, left or expired: every member must join again within the rebalance timeout; those that
do not are removed) -> CompletingRebalance (new generation; answers sent, waiting for the
leader's SyncGroup) -> Stable. Heartbeats answer REBALANCE_IN_PROGRESS while a rebalance is
being prepared, which is how members learn to rejoin.

Thread-safety: everything runs on the event loop thread; offset reads and writes run on the
loop's executor threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pathlib
import threading
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

from annal.kafka import ErrorCode, RequestHeader
from annal.broker.server.broker import Broker

__all__ = ["GroupCoordinator", "OffsetStore"]

log = logging.getLogger("annal.kafka_groups")

EMPTY, PREPARING, COMPLETING, STABLE = "Empty", "PreparingRebalance", "CompletingRebalance", "Stable"
# Kafka's group.initial.rebalance.delay.ms is 3000; a shorter wait still lets members that
# start together join the first generation together.
INITIAL_REBALANCE_DELAY_MS = 500
MIN_SESSION_TIMEOUT_MS, MAX_SESSION_TIMEOUT_MS = 1000, 1_800_000  # Kafka's group.{min,max}.session.timeout.ms
STANDALONE_FILE = "consumer_offsets.json"


class OffsetStore:
    """Committed offsets of groups, in ZooKeeper (cluster) or the data dir (standalone).
    Blocking: call from executor threads. Thread-safe."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._lock = threading.Lock()
        self._file: dict[str, dict[str, dict[str, int]]] | None = None

    @property
    def _zk(self) -> Any:
        return getattr(self.broker.coordinator, "kazoo_client", None)

    def _path(self) -> pathlib.Path:
        return pathlib.Path(self.broker.config.data_dir) / STANDALONE_FILE

    def _load_file(self) -> dict[str, dict[str, dict[str, int]]]:
        if self._file is None:
            try:
                doc = json.loads(self._path().read_text())
                self._file = {g: {t: {p: int(o) for p, o in ps.items()} for t, ps in ts.items()}
                              for g, ts in doc.get("groups", {}).items()}
            except FileNotFoundError:
                self._file = {}
        return self._file

    def commit(self, group: str, offsets: dict[tuple[str, int], int]) -> None:
        zk = self._zk
        if zk is not None:
            from kazoo.exceptions import NodeExistsError, NoNodeError

            from annal.zookeeper import paths

            for (topic, partition), off in offsets.items():
                path = paths.group_offset_path(group, topic, partition)
                data = paths.encode_offset(off)
                try:
                    zk.retry(zk.set, path, data)
                except NoNodeError:
                    try:
                        zk.retry(zk.create, path, data, makepath=True)
                    except NodeExistsError:
                        zk.retry(zk.set, path, data)
            return
        with self._lock:
            doc = self._load_file()
            g = doc.setdefault(group, {})
            for (topic, partition), off in offsets.items():
                g.setdefault(topic, {})[str(partition)] = int(off)
            target = self._path()
            tmp = target.with_name(target.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, json.dumps({"version": 1, "groups": doc}, sort_keys=True).encode() + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)

    def fetch(self, group: str, partitions: list[tuple[str, int]] | None) -> dict[tuple[str, int], int]:
        """Committed offsets of ``partitions`` (None: every partition the group committed)."""
        zk = self._zk
        out: dict[tuple[str, int], int] = {}
        if zk is not None:
            from kazoo.exceptions import NoNodeError

            from annal.zookeeper import paths

            if partitions is None:
                partitions = []
                try:
                    for topic in zk.get_children(paths.group_offsets_path(group)):
                        for p in zk.get_children(paths.group_offsets_path(group, topic)):
                            if p.isdigit():
                                partitions.append((topic, int(p)))
                except NoNodeError:
                    pass
            pending = [(tp, zk.get_async(paths.group_offset_path(group, tp[0], tp[1]))) for tp in partitions]
            for tp, result in pending:
                try:
                    value = paths.decode_offset(result.get(timeout=10.0)[0])
                except NoNodeError:
                    value = None
                if value is not None:
                    out[tp] = value
            return out
        with self._lock:
            g = self._load_file().get(group, {})
            if partitions is None:
                return {(t, int(p)): o for t, ps in g.items() for p, o in ps.items()}
            for topic, partition in partitions:
                off = g.get(topic, {}).get(str(partition))
                if off is not None:
                    out[(topic, partition)] = off
            return out


@dataclass(eq=False)
class _Member:
    member_id: str
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    group_instance_id: str | None = None
    assignment: bytes = b""
    join: asyncio.Future[dict[str, Any]] | None = None
    sync: asyncio.Future[dict[str, Any]] | None = None
    deadline: float = 0.0  # loop time after which the session has expired


@dataclass(eq=False)
class _Group:
    group_id: str
    state: str = EMPTY
    generation: int = 0
    protocol_type: str | None = None
    protocol: str | None = None
    leader: str | None = None
    members: dict[str, _Member] = field(default_factory=dict)
    rebalance_timer: asyncio.TimerHandle | None = None


class GroupCoordinator:
    """The classic group protocol for the groups this broker coordinates."""

    def __init__(self, broker: Broker, store: OffsetStore | None = None) -> None:
        self.broker = broker
        self.store = store if store is not None else OffsetStore(broker)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.kafka_port = 0
        self._groups: dict[str, _Group] = {}
        self._expiry: asyncio.TimerHandle | None = None

    def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        for g in self._groups.values():
            if g.rebalance_timer is not None:
                g.rebalance_timer.cancel()
            for m in g.members.values():
                for fut in (m.join, m.sync):
                    if fut is not None and not fut.done():
                        fut.set_result({"error_code": int(ErrorCode.COORDINATOR_NOT_AVAILABLE)})

    # ------------------------------------------------------------------ coordinator placement

    def _candidates(self) -> list[Any]:
        me = self.broker.me
        out = []
        for info in sorted(self.broker.coordinator.brokers().values(), key=lambda b: b.broker_id):
            if me is not None and info.broker_id == me.broker_id:
                out.append((info.broker_id, info.host, self.kafka_port))
            elif getattr(info, "kafka_port", -1) > 0:
                out.append((info.broker_id, info.host, info.kafka_port))
        return out

    def coordinator_id(self, key: str) -> int:
        cands = self._candidates()
        if not cands:
            return -1
        return int(cands[zlib.crc32(key.encode()) % len(cands)][0])

    def coordinator_for(self, key: str, key_type: int) -> tuple[tuple[str, int] | None, int, str | None]:
        if key_type != 0:
            return None, int(ErrorCode.COORDINATOR_NOT_AVAILABLE), "Annal has no transaction coordinator"
        if not key:
            return None, int(ErrorCode.INVALID_GROUP_ID), "the group id is empty"
        cands = self._candidates()
        if not cands:
            return None, int(ErrorCode.COORDINATOR_NOT_AVAILABLE), "no live broker with a Kafka listener"
        _, host, port = cands[zlib.crc32(key.encode()) % len(cands)]
        return (host, port), 0, None

    def _not_mine(self, group_id: str) -> int:
        """0 when this broker coordinates ``group_id``, else the error code to answer."""
        if not group_id:
            return int(ErrorCode.INVALID_GROUP_ID)
        me = self.broker.me
        cid = self.coordinator_id(group_id)
        if me is None or cid == -1:
            return int(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        return 0 if cid == me.broker_id else int(ErrorCode.NOT_COORDINATOR)

    # ------------------------------------------------------------------ timers

    def _now(self) -> float:
        assert self.loop is not None
        return self.loop.time()

    def _arm_expiry(self) -> None:
        if self._expiry is None and self.loop is not None:
            self._expiry = self.loop.call_later(0.25, self._expire_sessions)

    def _expire_sessions(self) -> None:
        self._expiry = None
        now = self._now()
        for g in list(self._groups.values()):
            expired = [m for m in g.members.values()
                       if m.deadline < now and (m.join is None or m.join.done())]
            for m in expired:
                log.info("group %s: member %s expired (no heartbeat in %d ms)", g.group_id, m.member_id,
                         m.session_timeout_ms)
                self._remove(g, m, rebalance=True)
        if any(g.members for g in self._groups.values()):
            self._arm_expiry()

    def _touch(self, m: _Member) -> None:
        m.deadline = self._now() + m.session_timeout_ms / 1000

    # ------------------------------------------------------------------ JoinGroup

    def join_group(self, header: RequestHeader, body: dict[str, Any]) -> Any:
        gid = body["group_id"]
        code = self._not_mine(gid)
        if code:
            return self._join_error(code)
        session = body["session_timeout_ms"]
        if not MIN_SESSION_TIMEOUT_MS <= session <= MAX_SESSION_TIMEOUT_MS:
            return self._join_error(ErrorCode.INVALID_SESSION_TIMEOUT)
        g = self._groups.setdefault(gid, _Group(gid))
        protocols = [(p["name"], bytes(p["metadata"])) for p in body.get("protocols") or ()]
        ptype = body["protocol_type"]
        if not protocols or (g.members and (ptype != g.protocol_type or not self._common(g, protocols))):
            return self._join_error(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
        member_id = body.get("member_id") or ""
        if member_id and member_id not in g.members:
            return self._join_error(ErrorCode.UNKNOWN_MEMBER_ID, member_id)
        assert self.loop is not None
        if not member_id:
            member_id = f"{header.client_id or 'member'}-{uuid.uuid4()}"
            m = _Member(member_id, header.client_id or "", "", session, body.get("rebalance_timeout_ms", -1)
                        if body.get("rebalance_timeout_ms", -1) > 0 else session, ptype, protocols,
                        body.get("group_instance_id"))
            g.members[member_id] = m
            log.info("group %s: member %s joins", gid, member_id)
        else:
            m = g.members[member_id]
            m.protocols = protocols
            m.session_timeout_ms = session
        g.protocol_type = ptype
        if m.join is not None and not m.join.done():
            m.join.set_result(self._join_error(ErrorCode.REBALANCE_IN_PROGRESS, member_id))
        m.join = self.loop.create_future()
        self._touch(m)
        self._arm_expiry()
        if g.state in (EMPTY, STABLE, COMPLETING):
            self._prepare_rebalance(g, initial=g.state == EMPTY)
        else:
            self._maybe_complete_join(g)
        return m.join

    @staticmethod
    def _join_error(code: int, member_id: str = "") -> dict[str, Any]:
        return {"throttle_time_ms": 0, "error_code": int(code), "generation_id": -1, "protocol_type": None,
                "protocol_name": None, "leader": "", "member_id": member_id, "members": []}

    @staticmethod
    def _common(g: _Group, protocols: list[tuple[str, bytes]]) -> bool:
        names = {n for n, _ in protocols}
        return all(names & {n for n, _ in m.protocols} for m in g.members.values())

    def _prepare_rebalance(self, g: _Group, initial: bool = False) -> None:
        assert self.loop is not None
        if g.state == COMPLETING:
            # Members waiting for their assignment must join again.
            for m in g.members.values():
                if m.sync is not None and not m.sync.done():
                    m.sync.set_result({"throttle_time_ms": 0, "error_code": int(ErrorCode.REBALANCE_IN_PROGRESS),
                                       "assignment": b""})
        g.state = PREPARING
        if g.rebalance_timer is not None:
            g.rebalance_timer.cancel()
        timeout_ms = max((m.rebalance_timeout_ms for m in g.members.values()), default=0)
        if initial:
            timeout_ms = min(timeout_ms, INITIAL_REBALANCE_DELAY_MS)
            g.rebalance_timer = self.loop.call_later(timeout_ms / 1000, self._rebalance_deadline, g)
            return
        g.rebalance_timer = self.loop.call_later(timeout_ms / 1000, self._rebalance_deadline, g)
        self._maybe_complete_join(g)

    def _rebalance_deadline(self, g: _Group) -> None:
        g.rebalance_timer = None
        if g.state != PREPARING:
            return
        for m in [m for m in g.members.values() if m.join is None or m.join.done()]:
            log.info("group %s: member %s did not join the rebalance in time; removed", g.group_id, m.member_id)
            del g.members[m.member_id]
        self._complete_join(g)

    def _maybe_complete_join(self, g: _Group) -> None:
        if g.state == PREPARING and g.members and all(m.join is not None and not m.join.done()
                                                      for m in g.members.values()):
            if g.rebalance_timer is not None and g.generation == 0 and g.rebalance_timer.when() > self._now():
                return  # the first generation waits the initial delay for others to join
            if g.rebalance_timer is not None:
                g.rebalance_timer.cancel()
                g.rebalance_timer = None
            self._complete_join(g)

    def _complete_join(self, g: _Group) -> None:
        if not g.members:
            g.state = EMPTY
            g.generation += 1
            g.leader = g.protocol = None
            return
        g.generation += 1
        if g.leader not in g.members:
            g.leader = next(iter(g.members))
        leader = g.members[g.leader]
        shared = set.intersection(*({n for n, _ in m.protocols} for m in g.members.values()))
        g.protocol = next(n for n, _ in leader.protocols if n in shared)
        g.state = COMPLETING
        log.info("group %s: generation %d with %d member(s), protocol %s, leader %s", g.group_id, g.generation,
                 len(g.members), g.protocol, g.leader)
        for m in g.members.values():
            m.assignment = b""
            members = []
            if m.member_id == g.leader:
                members = [{"member_id": o.member_id, "group_instance_id": o.group_instance_id,
                            "metadata": dict(o.protocols)[g.protocol]} for o in g.members.values()]
            answer = {"throttle_time_ms": 0, "error_code": 0, "generation_id": g.generation,
                      "protocol_type": g.protocol_type, "protocol_name": g.protocol, "leader": g.leader,
                      "skip_assignment": False, "member_id": m.member_id, "members": members}
            self._touch(m)
            if m.join is not None and not m.join.done():
                m.join.set_result(answer)

    def _remove(self, g: _Group, m: _Member, rebalance: bool) -> None:
        g.members.pop(m.member_id, None)
        for fut in (m.join, m.sync):
            if fut is not None and not fut.done():
                fut.set_result({"throttle_time_ms": 0, "error_code": int(ErrorCode.UNKNOWN_MEMBER_ID),
                                "generation_id": -1, "member_id": m.member_id, "leader": "", "members": [],
                                "assignment": b""})
        if not g.members:
            if g.rebalance_timer is not None:
                g.rebalance_timer.cancel()
                g.rebalance_timer = None
            g.state = EMPTY
            g.leader = None
            g.generation += 1
        elif rebalance:
            if g.state == PREPARING:
                self._maybe_complete_join(g)
            else:
                self._prepare_rebalance(g)

    # ------------------------------------------------------------------ SyncGroup

    def _check_member(self, gid: str, member_id: str, generation: int) -> tuple[_Group | None, _Member | None, int]:
        code = self._not_mine(gid)
        if code:
            return None, None, code
        g = self._groups.get(gid)
        if g is None or member_id not in g.members:
            return g, None, int(ErrorCode.UNKNOWN_MEMBER_ID)
        m = g.members[member_id]
        if generation != g.generation:
            return g, m, int(ErrorCode.ILLEGAL_GENERATION)
        return g, m, 0

    def sync_group(self, header: RequestHeader, body: dict[str, Any]) -> Any:
        g, m, code = self._check_member(body["group_id"], body["member_id"], body["generation_id"])
        if code:
            return {"throttle_time_ms": 0, "error_code": code, "assignment": b""}
        assert g is not None and m is not None and self.loop is not None
        if g.state == PREPARING:
            return {"throttle_time_ms": 0, "error_code": int(ErrorCode.REBALANCE_IN_PROGRESS), "assignment": b""}
        self._touch(m)
        if g.state == STABLE:
            return self._sync_answer(g, m)
        if m.member_id == g.leader:
            assignments = {a["member_id"]: bytes(a["assignment"]) for a in body.get("assignments") or ()}
            for other in g.members.values():
                other.assignment = assignments.get(other.member_id, b"")
            g.state = STABLE
            for other in g.members.values():
                if other.sync is not None and not other.sync.done():
                    other.sync.set_result(self._sync_answer(g, other))
            return self._sync_answer(g, m)
        m.sync = self.loop.create_future()
        return m.sync

    @staticmethod
    def _sync_answer(g: _Group, m: _Member) -> dict[str, Any]:
        return {"throttle_time_ms": 0, "error_code": 0, "protocol_type": g.protocol_type,
                "protocol_name": g.protocol, "assignment": m.assignment}

    # ------------------------------------------------------------------ Heartbeat, LeaveGroup

    def heartbeat(self, header: RequestHeader, body: dict[str, Any]) -> Any:
        g, m, code = self._check_member(body["group_id"], body["member_id"], body["generation_id"])
        if g is not None and g.state == PREPARING and code in (0, ErrorCode.ILLEGAL_GENERATION):
            code = int(ErrorCode.REBALANCE_IN_PROGRESS)
        if m is not None and code in (0, ErrorCode.REBALANCE_IN_PROGRESS):
            self._touch(m)
        return {"throttle_time_ms": 0, "error_code": code}

    def leave_group(self, header: RequestHeader, body: dict[str, Any]) -> Any:
        gid = body["group_id"]
        code = self._not_mine(gid)
        leaving = body.get("members")
        if leaving is None:
            leaving = [{"member_id": body.get("member_id", ""), "group_instance_id": None}]
        results = []
        g = self._groups.get(gid)
        for item in leaving:
            mcode = code
            if not mcode:
                m = g.members.get(item["member_id"]) if g is not None else None
                if m is None:
                    mcode = int(ErrorCode.UNKNOWN_MEMBER_ID)
                else:
                    assert g is not None
                    log.info("group %s: member %s leaves", gid, m.member_id)
                    self._remove(g, m, rebalance=True)
            results.append({"member_id": item["member_id"], "group_instance_id": item.get("group_instance_id"),
                            "error_code": mcode})
        top = code or (results[0]["error_code"] if header.api_version < 3 and results else 0)
        return {"throttle_time_ms": 0, "error_code": top, "members": results}

    # ------------------------------------------------------------------ offsets

    def offset_commit(self, header: RequestHeader, body: dict[str, Any]) -> Any:
        gid = body["group_id"]
        generation = body.get("generation_id_or_member_epoch", -1)
        member_id = body.get("member_id", "")
        code = self._not_mine(gid)
        if not code and (generation >= 0 or member_id):
            g, m, code = self._check_member(gid, member_id, generation)
            if not code and g is not None and g.state == COMPLETING:
                # As Kafka: a member of the current generation may commit while the group
                # prepares a rebalance (clients commit before they rejoin); between the new
                # generation's JoinGroup answers and its SyncGroup it must wait.
                code = int(ErrorCode.REBALANCE_IN_PROGRESS)
            if m is not None and not code:
                self._touch(m)
        elif not code:
            g = self._groups.get(gid)
            if g is not None and g.members:  # a simple commit into a group that has members
                code = int(ErrorCode.UNKNOWN_MEMBER_ID)
        topics = body.get("topics") or ()

        def answer(code_for: dict[tuple[str, int], int]) -> dict[str, Any]:
            return {"throttle_time_ms": 0, "topics": [
                {"name": t["name"], "partitions": [
                    {"partition_index": p["partition_index"], "error_code": code_for.get((t["name"], p["partition_index"]), code)}
                    for p in t.get("partitions") or ()]} for t in topics]}

        if code:
            return answer({})
        offsets = {(t["name"], p["partition_index"]): p["committed_offset"]
                   for t in topics for p in t.get("partitions") or ()}
        bad = {tp: int(ErrorCode.INVALID_REQUEST) for tp, off in offsets.items() if off < 0}
        good = {tp: off for tp, off in offsets.items() if tp not in bad}
        assert self.loop is not None

        async def run() -> dict[str, Any]:
            try:
                await self.loop.run_in_executor(None, self.store.commit, gid, good)  # type: ignore[union-attr]
            except Exception as err:
                log.warning("group %s: storing committed offsets failed: %r", gid, err)
                return answer({tp: int(ErrorCode.COORDINATOR_NOT_AVAILABLE) for tp in offsets})
            return answer(bad)

        return run()

    def offset_fetch(self, header: RequestHeader, body: dict[str, Any]) -> Any:
        gid = body["group_id"]
        code = self._not_mine(gid)
        topics = body.get("topics")
        if code:
            return {"throttle_time_ms": 0, "error_code": code, "topics": [
                {"name": t["name"], "partitions": [{"partition_index": p, "committed_offset": -1,
                                                    "committed_leader_epoch": -1, "metadata": "", "error_code": code}
                                                   for p in t.get("partition_indexes") or ()]}
                for t in topics or ()]}
        wanted = None if topics is None else [(t["name"], p) for t in topics for p in t.get("partition_indexes") or ()]
        assert self.loop is not None

        async def run() -> dict[str, Any]:
            try:
                found = await self.loop.run_in_executor(None, self.store.fetch, gid, wanted)  # type: ignore[union-attr]
            except Exception as err:
                log.warning("group %s: reading committed offsets failed: %r", gid, err)
                return {"throttle_time_ms": 0, "error_code": int(ErrorCode.COORDINATOR_NOT_AVAILABLE), "topics": []}
            keys = wanted if wanted is not None else sorted(found)
            by_topic: dict[str, list[dict[str, Any]]] = {}
            for topic, p in keys:
                by_topic.setdefault(topic, []).append({
                    "partition_index": p, "committed_offset": found.get((topic, p), -1),
                    "committed_leader_epoch": -1, "metadata": "", "error_code": 0})
            return {"throttle_time_ms": 0, "error_code": 0,
                    "topics": [{"name": t, "partitions": ps} for t, ps in by_topic.items()]}

        return run()
