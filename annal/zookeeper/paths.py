"""Annal's ZooKeeper layout: every znode path and the JSON stored in it, in one place.

All paths are relative to a chroot (``/annal`` unless the hosts string names another),
so several clusters, or several tests, can share one ZooKeeper ensemble::

    /brokers/ids/<broker_id>             ephemeral  {"host", "port", "fetch_port", "version",
                                                    "start_time_ms"}
    /brokers/topics/<topic>              persistent {"partitions": {"<p>": [replica ids,
                                                    preferred leader first]}, "config": {...}}
    /brokers/topics/<topic>/partitions/<p>/state
                                         persistent {"leader", "leader_epoch", "isr",
                                                    "controller_epoch", "version"}; written
                                                    only with the version it was read at
    /controller_epoch                    persistent, data = the controller epoch (ASCII int)
    /controller                          ephemeral  {"broker_id", "version", "timestamp_ms"}
    /controller_election/<lock nodes>    ephemeral sequential contenders (kazoo Election)
    /admin/delete_topics/<topic>         persistent request, removed by the controller when done
    /consumers/<group>/ids/<member>      ephemeral  {"member_id", "host", "pid", "topics",
                                                    "timestamp_ms"}
    /consumers/<group>/owners/<topic>/<p>  ephemeral, data = owning member id
    /consumers/<group>/offsets/<topic>/<p> persistent, data = next offset to read (ASCII int)

The module is pure: it builds paths and encodes/decodes znode data, and never talks to
ZooKeeper. Broker and client share it, so the two sides cannot disagree on the layout.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

from annal.cluster import BrokerInfo, PartitionState, TopicPlacement

__all__ = [
    "DEFAULT_CHROOT",
    "BROKER_IDS",
    "BROKER_TOPICS",
    "CONTROLLER",
    "CONTROLLER_ELECTION",
    "DELETE_TOPICS",
    "CONSUMERS",
    "CONTROLLER_EPOCH",
    "partition_state_path",
    "partitions_path",
    "encode_partition_state",
    "decode_partition_state",
    "assign_replicas",
    "LAYOUT_VERSION",
    "split_hosts",
    "with_default_chroot",
    "broker_path",
    "topic_path",
    "delete_topic_path",
    "group_path",
    "group_ids_path",
    "group_member_path",
    "group_owners_path",
    "group_owner_path",
    "group_offsets_path",
    "group_offset_path",
    "encode_broker",
    "decode_broker",
    "encode_topic",
    "decode_topic",
    "encode_controller",
    "decode_controller",
    "encode_offset",
    "decode_offset",
    "place_partitions",
]

DEFAULT_CHROOT = "/annal"
LAYOUT_VERSION = 1

BROKER_IDS = "/brokers/ids"
BROKER_TOPICS = "/brokers/topics"
CONTROLLER = "/controller"
CONTROLLER_ELECTION = "/controller_election"
DELETE_TOPICS = "/admin/delete_topics"
CONSUMERS = "/consumers"
CONTROLLER_EPOCH = "/controller_epoch"

_GROUP_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def split_hosts(zookeeper: str) -> tuple[str, str]:
    """Split ``"h1:2181,h2:2181/chroot"`` into (hosts, chroot); chroot is ``""`` if absent."""
    zookeeper = zookeeper.strip()
    slash = zookeeper.find("/")
    if slash < 0:
        return zookeeper, ""
    hosts, chroot = zookeeper[:slash], zookeeper[slash:].rstrip("/")
    return hosts, chroot


def with_default_chroot(zookeeper: str) -> str:
    """The kazoo hosts string with ``/annal`` appended when no chroot is given."""
    hosts, chroot = split_hosts(zookeeper)
    if not hosts:
        raise ValueError(f"ZooKeeper connect string has no hosts: {zookeeper!r}")
    return hosts + (chroot or DEFAULT_CHROOT)


def broker_path(broker_id: int) -> str:
    return f"{BROKER_IDS}/{int(broker_id)}"


def topic_path(topic: str) -> str:
    return f"{BROKER_TOPICS}/{topic}"


def partitions_path(topic: str) -> str:
    return f"{BROKER_TOPICS}/{topic}/partitions"


def partition_state_path(topic: str, partition: int) -> str:
    return f"{BROKER_TOPICS}/{topic}/partitions/{int(partition)}/state"


def delete_topic_path(topic: str) -> str:
    return f"{DELETE_TOPICS}/{topic}"


def _check_group(group: str) -> str:
    if not _GROUP_RE.match(group) or group in (".", ".."):
        raise ValueError(f"invalid consumer group id {group!r}: use [A-Za-z0-9._-], 1..249 chars")
    return group


def group_path(group: str) -> str:
    return f"{CONSUMERS}/{_check_group(group)}"


def group_ids_path(group: str) -> str:
    return f"{group_path(group)}/ids"


def group_member_path(group: str, member_id: str) -> str:
    return f"{group_ids_path(group)}/{member_id}"


def group_owners_path(group: str, topic: str | None = None) -> str:
    base = f"{group_path(group)}/owners"
    return base if topic is None else f"{base}/{topic}"


def group_owner_path(group: str, topic: str, partition: int) -> str:
    return f"{group_owners_path(group, topic)}/{int(partition)}"


def group_offsets_path(group: str, topic: str | None = None) -> str:
    base = f"{group_path(group)}/offsets"
    return base if topic is None else f"{base}/{topic}"


def group_offset_path(group: str, topic: str, partition: int) -> str:
    return f"{group_offsets_path(group, topic)}/{int(partition)}"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _loads(data: bytes | None) -> Any:
    if not data:
        raise ValueError("empty znode")
    return json.loads(data.decode("utf-8"))


def encode_broker(info: BrokerInfo, *, start_time_ms: int) -> bytes:
    return _dumps(
        {
            "host": info.host,
            "port": info.port,
            "fetch_port": info.fetch_port,
            "kafka_port": info.kafka_port,
            "version": LAYOUT_VERSION,
            "start_time_ms": int(start_time_ms),
        }
    )


def decode_broker(broker_id: int, data: bytes | None) -> BrokerInfo:
    """Raises ValueError on data that is not a broker registration."""
    obj = _loads(data)
    try:
        return BrokerInfo(
            broker_id=int(broker_id),
            host=str(obj["host"]),
            port=int(obj["port"]),
            fetch_port=int(obj.get("fetch_port", 0) or 0),
            kafka_port=int(obj.get("kafka_port", -1) if obj.get("kafka_port") is not None else -1),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"bad broker registration for {broker_id}: {obj!r}") from exc


def encode_topic(placement: TopicPlacement) -> bytes:
    return _dumps(
        {
            "version": LAYOUT_VERSION,
            "partitions": {str(p): list(placement.replicas_of(p)) for p in sorted(placement.partitions)},
            "config": dict(placement.config),
        }
    )


def decode_topic(name: str, data: bytes | None) -> TopicPlacement:
    """Raises ValueError on data that is not a topic placement.

    The leader of each partition is its preferred replica here; the partition states
    (``decode_partition_state``) say who leads now. A single broker id instead of a list is
    read as a one-replica partition (the layout before replication)."""
    obj = _loads(data)
    try:
        replicas: dict[int, tuple[int, ...]] = {}
        for p, r in obj["partitions"].items():
            ids = (int(r),) if isinstance(r, int) else tuple(int(b) for b in r)
            if not ids:
                raise ValueError(f"partition {p} has no replicas")
            replicas[int(p)] = ids
        config = dict(obj.get("config") or {})
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"bad placement for topic {name!r}: {obj!r}") from exc
    return TopicPlacement(
        name=name,
        partitions={p: r[0] for p, r in replicas.items()},
        config=config,
        replicas=replicas,
        isr=dict(replicas),
        leader_epochs={p: 0 for p in replicas},  # a new topic's states: preferred leader, epoch 0
    )


def encode_partition_state(state: PartitionState) -> bytes:
    return _dumps(
        {
            "version": LAYOUT_VERSION,
            "leader": int(state.leader),
            "leader_epoch": int(state.leader_epoch),
            "isr": [int(b) for b in state.isr],
            "controller_epoch": int(state.controller_epoch),
        }
    )


def decode_partition_state(data: bytes | None, zk_version: int = -1) -> PartitionState:
    """Raises ValueError on data that is not a partition state."""
    obj = _loads(data)
    try:
        return PartitionState(
            leader=int(obj["leader"]),
            leader_epoch=int(obj["leader_epoch"]),
            isr=tuple(int(b) for b in obj["isr"]),
            controller_epoch=int(obj.get("controller_epoch", 0)),
            zk_version=int(zk_version),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"bad partition state {obj!r}") from exc


def encode_controller(broker_id: int, *, timestamp_ms: int) -> bytes:
    return _dumps({"broker_id": int(broker_id), "version": LAYOUT_VERSION, "timestamp_ms": timestamp_ms})


def decode_controller(data: bytes | None) -> int:
    """The controller's broker id; -1 for missing or unreadable data."""
    try:
        return int(_loads(data)["broker_id"])
    except (ValueError, KeyError, TypeError):
        return -1


def encode_offset(offset: int) -> bytes:
    return str(int(offset)).encode("ascii")


def decode_offset(data: bytes | None) -> int | None:
    if not data:
        return None
    try:
        return int(data.decode("ascii"))
    except ValueError:
        return None


def place_partitions(partitions: int, live_broker_ids: list[int] | set[int], start: int) -> dict[int, int]:
    """Round-robin placement (Kafka's replica-free assignment): partition p goes to
    ``sorted(ids)[(start + p) % n]``. ``start`` is chosen at random by the caller so that
    many single-partition topics do not all land on the lowest broker id."""
    ids = sorted(set(int(b) for b in live_broker_ids))
    if not ids:
        raise ValueError("no live brokers to place partitions on")
    n = len(ids)
    return {p: ids[(start + p) % n] for p in range(partitions)}



def assign_replicas(
    partitions: int, replication_factor: int, live_broker_ids: list[int] | set[int], start: int, shift: int
) -> dict[int, tuple[int, ...]]:
    """Kafka's rack-unaware replica assignment (``AdminUtils.assignReplicasToBrokers``).

    The first replica of partition p (its preferred leader) is ``ids[(start + p) % n]``, so
    leaders spread evenly; the others follow it at a distance of ``1 + (shift + j) % (n - 1)``
    brokers, with ``shift`` bumped after every n partitions, so that the followers of one
    broker's partitions are spread over the others too. No broker holds two replicas of a
    partition. ``start`` and ``shift`` are chosen at random by the caller."""
    ids = sorted(set(int(b) for b in live_broker_ids))
    n = len(ids)
    if not ids:
        raise ValueError("no live brokers to place partitions on")
    if not 1 <= replication_factor <= n:
        raise ValueError(f"replication factor {replication_factor} needs that many live brokers; {n} are live")
    out: dict[int, tuple[int, ...]] = {}
    for p in range(partitions):
        if p > 0 and p % n == 0:
            shift += 1
        first = (start + p) % n
        replicas = [ids[first]]
        for j in range(replication_factor - 1):
            replicas.append(ids[(first + 1 + (shift + j) % (n - 1)) % n])
        out[p] = tuple(replicas)
    return out
