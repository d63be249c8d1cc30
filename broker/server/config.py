"""Broker configuration: broker-wide settings and topic config defaults/overrides.

Sources, later ones winning: built-in defaults, a TOML file (``--config FILE``), command-line
flags. The file's top level holds broker settings; the table ``[topic_defaults]`` holds the
defaults every topic gets unless it overrides them when created::

    host = "127.0.0.1"
    port = 9092
    fetch_port = 9093
    metrics_port = 9094          # -1: no metrics endpoint
    kafka_port = 19092           # Apache Kafka protocol listener; -1: off
    broker_id = 0
    request_timeout_ms = 30000   # a peer that stalls mid-frame is disconnected after this
    max_request_bytes = 104857600

    [topic_defaults]
    partitions = 1
    segment_bytes = 1073741824
    retention_ms = 604800000

Unknown keys, wrong types and out-of-range values raise ``InvalidConfigError`` (a bad partition
count ``InvalidPartitionsError``), so a typo never silently becomes a default. Values are
immutable once built; thread-safe.
"""

from __future__ import annotations

import dataclasses
import pathlib
import tomllib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from annal.errors import InvalidConfigError, InvalidPartitionsError

__all__ = [
    "NEVER",
    "REPLICATION_TOPIC_KEYS",
    "TOPIC_CONFIG_KEYS",
    "DEFAULT_TOPIC_CONFIG",
    "MAX_PARTITIONS",
    "BrokerConfig",
    "validate_topic_config",
    "load_config",
]

NEVER = 2**63 - 1  # Kafka's Long.MAX_VALUE: "never" for flush_messages / flush_ms
MAX_PARTITIONS = 10_000

# key -> (default, minimum, allows -1 meaning "unlimited")
_TOPIC_KEYS: dict[str, tuple[int, int, bool]] = {
    "partitions": (1, 1, False),
    "segment_bytes": (1024**3, 1024, False),  # at most 2 GiB - 1 (4-byte index positions)
    "segment_ms": (7 * 24 * 3600 * 1000, 1, False),
    "retention_bytes": (-1, 1, True),
    "retention_ms": (7 * 24 * 3600 * 1000, 1, True),
    "flush_messages": (NEVER, 1, False),
    "flush_ms": (NEVER, 0, False),
    # Kafka's default (1 MiB + 12): the largest batch a topic accepts.
    "max_message_bytes": (1024 * 1024 + 12, 61, False),
    # Replication (docs/replication.md): acks=all is refused with NOT_ENOUGH_REPLICAS while
    # fewer replicas than this are in sync; 1 lets a lone leader acknowledge.
    "min_insync_replicas": (1, 1, False),
    # 1: a replica outside the ISR may lead when no ISR member is alive (records may be lost).
    "unclean_leader_election_enable": (0, 0, False),
}
# Topic keys that configure replication, not the log (the storage LogConfig does not take them).
REPLICATION_TOPIC_KEYS = frozenset({"min_insync_replicas", "unclean_leader_election_enable"})
TOPIC_CONFIG_KEYS = frozenset(_TOPIC_KEYS)
DEFAULT_TOPIC_CONFIG: Mapping[str, int] = MappingProxyType({k: v[0] for k, v in _TOPIC_KEYS.items()})


def validate_topic_config(config: Mapping[str, Any], *, allow_partitions: bool = True) -> dict[str, int]:
    """Check topic config keys and values; return them as a plain dict of ints.

    Raises ``InvalidConfigError`` for an unknown key, a non-integer or out-of-range value, and
    ``InvalidPartitionsError`` for a bad ``partitions``.
    """
    out: dict[str, int] = {}
    for key, value in config.items():
        if key not in _TOPIC_KEYS or (key == "partitions" and not allow_partitions):
            raise InvalidConfigError(
                f"unknown topic config key {key!r}; known keys: {', '.join(sorted(_TOPIC_KEYS))}",
                key=key,
            )
        _, minimum, unlimited = _TOPIC_KEYS[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidConfigError(f"topic config {key} must be an integer, not {value!r}", key=key)
        if key == "partitions" and not (minimum <= value <= MAX_PARTITIONS):
            raise InvalidPartitionsError(
                f"partitions must be between 1 and {MAX_PARTITIONS}, not {value}", partitions=value
            )
        maximum = 2**31 - 1 if key in ("segment_bytes", "max_message_bytes") else NEVER
        if key == "unclean_leader_election_enable":
            maximum = 1
        if value > maximum or (value < minimum and not (unlimited and value == -1)):
            limit = f"in [{minimum}, {maximum}]" + (" or -1" if unlimited else "")
            raise InvalidConfigError(f"topic config {key}={value} is out of range (must be {limit})", key=key)
        out[key] = value
    return out


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Broker-wide settings. Ports may be 0 (the OS picks one; the broker logs the choice)."""

    data_dir: pathlib.Path
    host: str = "127.0.0.1"
    advertised_host: str | None = None
    port: int = 9092
    fetch_port: int = 9093
    metrics_port: int = 9094
    # The Kafka protocol listener (docs/kafka-compatibility.md says why it is not 9092).
    kafka_port: int = 19092
    broker_id: int = 0
    log_level: str = "INFO"
    zookeeper: str | None = None
    zookeeper_session_timeout_ms: int = 6000
    zookeeper_connect_timeout_ms: int = 0  # 0: wait for ZooKeeper until it answers
    request_timeout_ms: int = 30_000
    max_request_bytes: int = 100 * 1024 * 1024
    # Kafka's queued.max.request.bytes: request bytes read or queued, all data port and Kafka
    # listener connections together (at least max_request_bytes, so that any one request fits).
    queued_max_request_bytes: int = 512 * 1024 * 1024
    # Kafka's num.io.threads / queued.max.requests: the threads doing the log work of the data
    # port and the Kafka listener (appends, rolls, fdatasyncs) and the parts of produce requests
    # that may wait for them.
    num_io_threads: int = 2
    queued_max_requests: int = 500
    grpc_workers: int = 16
    maintenance_interval_ms: int = 1000
    shutdown_timeout_ms: int = 15_000
    # Replication (Kafka's names): replicas of a topic created without a replication factor;
    # a follower that has not caught up with the leader's log end for this long leaves the
    # ISR; a follower's fetch waits at most this long for new records.
    default_replication_factor: int = 1
    replica_lag_time_max_ms: int = 10_000
    replica_fetch_wait_max_ms: int = 500
    replica_fetch_max_bytes: int = 1024 * 1024
    topic_defaults: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_TOPIC_CONFIG))

    def __post_init__(self) -> None:
        for name in ("port", "fetch_port"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 65535:
                raise InvalidConfigError(f"{name} must be 0..65535, not {v!r}", key=name)
        if not isinstance(self.metrics_port, int) or not -1 <= self.metrics_port <= 65535:
            raise InvalidConfigError(f"metrics_port must be -1..65535, not {self.metrics_port!r}")
        if isinstance(self.kafka_port, bool) or not isinstance(self.kafka_port, int) or not -1 <= self.kafka_port <= 65535:
            raise InvalidConfigError(f"kafka_port must be -1..65535, not {self.kafka_port!r}", key="kafka_port")
        if not isinstance(self.broker_id, int) or self.broker_id < 0:
            raise InvalidConfigError(f"broker_id must be a non-negative integer, not {self.broker_id!r}")
        if self.log_level.upper() not in _LOG_LEVELS:
            raise InvalidConfigError(f"log_level must be one of {', '.join(_LOG_LEVELS)}, not {self.log_level!r}")
        for name in ("request_timeout_ms", "max_request_bytes", "queued_max_request_bytes", "num_io_threads",
                     "queued_max_requests", "grpc_workers",
                     "maintenance_interval_ms",
                     "shutdown_timeout_ms", "zookeeper_session_timeout_ms", "default_replication_factor",
                     "replica_lag_time_max_ms", "replica_fetch_wait_max_ms", "replica_fetch_max_bytes"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise InvalidConfigError(f"{name} must be a positive integer, not {v!r}", key=name)
        v = self.zookeeper_connect_timeout_ms
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise InvalidConfigError(f"zookeeper_connect_timeout_ms must be 0 or more, not {v!r}",
                                     key="zookeeper_connect_timeout_ms")
        if self.max_request_bytes > 2**31 - 1:
            raise InvalidConfigError("max_request_bytes must fit in an int32")
        if self.queued_max_request_bytes < self.max_request_bytes:
            raise InvalidConfigError(
                f"queued_max_request_bytes ({self.queued_max_request_bytes}) must be at least max_request_bytes "
                f"({self.max_request_bytes}): one request must fit", key="queued_max_request_bytes")
        merged = dict(DEFAULT_TOPIC_CONFIG)
        merged.update(validate_topic_config(self.topic_defaults))
        object.__setattr__(self, "topic_defaults", MappingProxyType(merged))
        object.__setattr__(self, "log_level", self.log_level.upper())
        object.__setattr__(self, "data_dir", pathlib.Path(self.data_dir))

    @property
    def public_host(self) -> str:
        """The host clients are told to connect to."""
        if self.advertised_host:
            return self.advertised_host
        return "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host

    def topic_config(self, overrides: Mapping[str, Any]) -> dict[str, int]:
        """The broker defaults with a topic's overrides applied."""
        merged = dict(self.topic_defaults)
        merged.update(overrides)
        return merged


_BROKER_KEYS = frozenset(f.name for f in dataclasses.fields(BrokerConfig)) - {"topic_defaults"}


def load_config(path: pathlib.Path | str | None, overrides: Mapping[str, Any]) -> BrokerConfig:
    """Build the config from the TOML file at ``path`` (if any) and ``overrides`` (flags that
    were given; ``None`` values are ignored). Raises ``InvalidConfigError``."""
    values: dict[str, Any] = {}
    topic_defaults: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except OSError as e:
            raise InvalidConfigError(f"cannot read config file {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise InvalidConfigError(f"config file {path} is not valid TOML: {e}") from None
        for key, value in doc.items():
            if key == "topic_defaults":
                if not isinstance(value, dict):
                    raise InvalidConfigError("[topic_defaults] must be a table")
                topic_defaults.update(value)
            elif key in _BROKER_KEYS:
                values[key] = value
            else:
                raise InvalidConfigError(
                    f"unknown broker config key {key!r} in {path}; known keys: "
                    f"{', '.join(sorted(_BROKER_KEYS | {'topic_defaults'}))}",
                    key=key,
                )
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "topic_defaults":
            topic_defaults.update(value)
        elif key in _BROKER_KEYS:
            values[key] = value
        else:
            raise InvalidConfigError(f"unknown broker config key {key!r}", key=key)
    if "data_dir" not in values:
        raise InvalidConfigError("data_dir is required (--data-dir or data_dir in the config file)")
    for key in ("data_dir",):
        if not isinstance(values[key], (str, pathlib.Path)):
            raise InvalidConfigError(f"{key} must be a path string")
    for key in ("host", "advertised_host", "log_level", "zookeeper"):
        if key in values and values[key] is not None and not isinstance(values[key], str):
            raise InvalidConfigError(f"{key} must be a string, not {values[key]!r}", key=key)
    values["topic_defaults"] = topic_defaults
    return BrokerConfig(**values)
