"""Annal's ZooKeeper layout: every znode path and the JSON stored in it, in one place.

All paths are relative to a chroot (``/annal`` unless the hosts string names another),
so several clusters, or several tests, can share one ZooKeeper ensemble::

    /brokers/ids/<broker_id>             ephemeral  {"host", "port", "fetch_port", "version",
                                                    "start_time_ms"}
    /brokers/topics/<topic>              persistent {"partitions": {"<p>": broker_id},
                                                    "config": {...}}
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

from annal.cluster import BrokerInfo, TopicPlacement

__all__ = [
    "DEFAULT_CHROOT",
    "BROKER_IDS",
    "BROKER_TOPICS",
    "CONTROLLER",
    "CONTROLLER_ELECTION",
    "DELETE_TOPICS",
    "CONSUMERS",
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
            "partitions": {str(p): int(b) for p, b in sorted(placement.partitions.items())},
            "config": dict(placement.config),
        }
    )


def decode_topic(name: str, data: bytes | None) -> TopicPlacement:
    """Raises ValueError on data that is not a topic placement."""
    obj = _loads(data)
    try:
        partitions = {int(p): int(b) for p, b in obj["partitions"].items()}
        config = dict(obj.get("config") or {})
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"bad placement for topic {name!r}: {obj!r}") from exc
    return TopicPlacement(name=name, partitions=partitions, config=config)


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

