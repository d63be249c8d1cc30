"""Admin: create, delete, list and describe topics; describe the cluster; list offsets.

Every call is one gRPC request to a broker (the first of ``bootstrap_servers`` that answers;
topic changes go to the controller in cluster mode when it is known). Per-topic failures raise
the error of the first topic that failed, after every topic of the call was attempted, unless
``raise_errors=False`` asks for the per-topic results instead.

Thread-safe: gRPC channels are; each call is independent.
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Mapping, Sequence

from annal.errors import (
    AnnalError,
    BrokerNotAvailableError,
    InvalidPartitionsError,
    LeaderNotAvailableError,
    LocalUsageError,
    UnknownTopicOrPartitionError,
    for_code,
)
from annal.protocol import annal_pb2

from annal.client._metadata import _CONFIG_KEYS, GrpcMetadataSource, snapshot_from_response
from annal.client._rpc import RpcClient, parse_bootstrap
from annal.client.structs import (
    BrokerMetadata,
    ClusterDescription,
    NewTopic,
    OffsetAndTimestamp,
    PartitionMetadata,
    TopicDescription,
    TopicPartition,
)

__all__ = ["Admin", "EARLIEST", "LATEST"]

EARLIEST = -2
"""``list_offsets`` spec: the log start offset."""
LATEST = -1
"""``list_offsets`` spec: the log end offset (the next offset to be written)."""

# Pause between Metadata calls while a named topic exists but is not described yet.
UNSETTLED_RETRY_S = 0.05


def _topic_config(configs: Mapping[str, Any]) -> annal_pb2.TopicConfig:
    kwargs: dict[str, int] = {}
    for k, v in configs.items():
        key = k.replace(".", "_")
        if key not in _CONFIG_KEYS:
            raise LocalUsageError(f"unknown topic config {k!r}; known: {', '.join(_CONFIG_KEYS)}")
        try:
            kwargs[key] = int(v)
        except (TypeError, ValueError):
            raise LocalUsageError(f"topic config {k}={v!r} is not an integer") from None
    return annal_pb2.TopicConfig(**kwargs)


class Admin:
    """Administers topics (kafka-python's ``KafkaAdminClient`` names).

    Args:
        bootstrap_servers: ``"host:port[,...]"`` of the brokers' gRPC ports, or a list.
        request_timeout_ms: deadline of each call.
    """

    def __init__(self, bootstrap_servers: str | Sequence[str] = "127.0.0.1:9092", request_timeout_ms: int = 30000) -> None:
        self._rpc = RpcClient(request_timeout_ms)
        self._source = GrpcMetadataSource(self._rpc, parse_bootstrap(bootstrap_servers), request_timeout_ms)
        self._timeout_ms = request_timeout_ms

    def _call(self, method: str, request: Any) -> Any:
        last: AnnalError | None = None
        for address in self._source.addresses():
            try:
                return self._rpc.call(address, method, request, self._timeout_ms)
            except AnnalError as exc:
                if not isinstance(exc, BrokerNotAvailableError):
                    raise
                last = exc
        raise BrokerNotAvailableError(f"no broker answered {method}: {last}")

    @staticmethod
    def _raise_first(results: Iterable[Any]) -> dict[str, AnnalError | None]:
        out: dict[str, AnnalError | None] = {}
        for r in results:
            out[r.name] = None if r.error_code == 0 else for_code(r.error_code)(r.error_message or "", topic=r.name)
        return out

    def create_topics(
        self, new_topics: Sequence[NewTopic], validate_only: bool = False, raise_errors: bool = True
    ) -> dict[str, AnnalError | None]:
        """Create topics; returns ``{name: None or its error}``. With ``raise_errors`` the
        first error is raised (after every topic was attempted)."""
        topics = []
        for nt in new_topics:
            if not isinstance(nt, NewTopic):
                raise TypeError(f"create_topics takes NewTopic values, not {type(nt).__name__}")
            if not isinstance(nt.name, str):
                raise TypeError(f"topic name must be a str, not {type(nt.name).__name__}")
            if isinstance(nt.num_partitions, bool) or not isinstance(nt.num_partitions, int) or nt.num_partitions < 1:
                # proto3 cannot tell 0 from unset, so this is checked here, not left to the broker.
                raise InvalidPartitionsError(
                    f"num_partitions of {nt.name!r} must be an int >= 1, not {nt.num_partitions!r}"
                )
            topics.append(
                annal_pb2.NewTopic(name=nt.name, partitions=nt.num_partitions, config=_topic_config(nt.topic_configs),
                                   replication_factor=int(nt.replication_factor))
            )
        resp = self._call("CreateTopics", annal_pb2.CreateTopicsRequest(topics=topics, validate_only=validate_only))
        out = self._raise_first(resp.results)
        if raise_errors:
            for err in out.values():
                if err is not None:
                    raise err
        return out

    def delete_topics(self, topics: Sequence[str], raise_errors: bool = True) -> dict[str, AnnalError | None]:
        """Delete topics; returns ``{name: None or its error}`` (raises the first with
        ``raise_errors``)."""
        if isinstance(topics, str):
            topics = [topics]
        resp = self._call("DeleteTopics", annal_pb2.DeleteTopicsRequest(names=list(topics)))
        out = self._raise_first(resp.results)
        if raise_errors:
            for err in out.values():
                if err is not None:
                    raise err
        return out

    def list_topics(self) -> list[str]:
        """Names of every topic, sorted."""
        resp = self._call("Metadata", annal_pb2.MetadataRequest())
        return sorted(t.name for t in resp.topics if t.error_code == 0)

    def describe_topics(self, topics: Sequence[str] | None = None) -> list[TopicDescription]:
        """Topics (all when None) with each partition's leader and log start/end offsets.
        Raises ``UnknownTopicOrPartitionError`` for a named topic that does not exist. A named
        topic that exists but that the answering broker has not loaded yet (created through
        another broker a moment ago) is asked for again, within ``request_timeout_ms``."""
        names = list(topics) if topics is not None else None
        deadline = time.monotonic() + self._timeout_ms / 1000.0
        while True:
            resp = self._call("Metadata", annal_pb2.MetadataRequest(topics=names or []))
            snap = snapshot_from_response(resp, names)
            if not names:
                break
            missing = [n for n in names if n in snap.missing]
            if missing:
                raise UnknownTopicOrPartitionError(f"no such topic: {', '.join(missing)}", topics=missing)
            unsettled = [n for n in names if n not in snap.topics]
            if not unsettled:
                break
            # A topic just created through another broker: it exists, the answering broker
            # has not loaded its placement yet. Asked again, as Kafka's AdminClient retries
            # LEADER_NOT_AVAILABLE, within the call's timeout.
            if time.monotonic() >= deadline:
                raise LeaderNotAvailableError(
                    f"topic(s) {', '.join(unsettled)} exist but the broker had not loaded them after "
                    f"{self._timeout_ms} ms", topics=unsettled,
                )
            time.sleep(UNSETTLED_RETRY_S)
        wanted = names if names else sorted(snap.topics)
        return self._with_leader_offsets([snap.topics[n] for n in wanted], snap.brokers)

    def _with_leader_offsets(
        self, described: list[TopicDescription], brokers: Mapping[int, BrokerMetadata]
    ) -> list[TopicDescription]:
        """A broker knows the log bounds only of the partitions it leads: ask each other
        leader (one Metadata call per broker) for its own partitions' bounds."""
        by_leader: dict[int, set[str]] = {}
        for t in described:
            for p in t.partitions:
                if p.leader >= 0 and p.log_end_offset < 0 and p.leader in brokers:
                    by_leader.setdefault(p.leader, set()).add(t.name)
        if not by_leader:
            return described
        bounds: dict[tuple[str, int], PartitionMetadata] = {}
        for leader, topic_names in by_leader.items():
            b = brokers[leader]
            try:
                resp = self._rpc.call(
                    f"{b.host}:{b.port}", "Metadata",
                    annal_pb2.MetadataRequest(topics=sorted(topic_names)), self._timeout_ms,
                )
            except BrokerNotAvailableError:
                continue  # its partitions keep -1 bounds: the leader is unreachable right now
            for t in snapshot_from_response(resp, sorted(topic_names)).topics.values():
                for p in t.partitions:
                    if p.leader == leader and p.log_end_offset >= 0:
                        bounds[(t.name, p.partition)] = p
        return [
            TopicDescription(
                t.name,
                tuple(bounds.get((t.name, p.partition), p) for p in t.partitions),
                t.configs,
            )
            for t in described
        ]

    def describe_cluster(self) -> ClusterDescription:
        """The live brokers, the controller id and the cluster id."""
        resp = self._call("Metadata", annal_pb2.MetadataRequest())
        brokers = tuple(
            sorted(
                (BrokerMetadata(b.broker_id, b.host, b.port, b.fetch_port) for b in resp.brokers),
                key=lambda b: b.broker_id,
            )
        )
        return ClusterDescription(resp.cluster_id, resp.controller_id, brokers)

    def list_offsets(self, specs: Mapping[TopicPartition, int]) -> dict[TopicPartition, OffsetAndTimestamp]:
        """For each partition: ``EARLIEST`` (-2), ``LATEST`` (-1) or a timestamp in ms ->
        the offset (and matched timestamp; -1 offset when no record is that recent)."""
        topics = sorted({tp.topic for tp in specs})
        snap = snapshot_from_response(
            self._call("Metadata", annal_pb2.MetadataRequest(topics=topics)), topics
        )
        # Each partition's offsets come from its leader; one call per leader.
        by_address: dict[str | None, list[TopicPartition]] = {}
        for tp in specs:
            desc = snap.topics.get(tp.topic)
            part = next((p for p in desc.partitions if p.partition == tp.partition), None) if desc else None
            leader = snap.brokers.get(part.leader) if part is not None else None
            by_address.setdefault(f"{leader.host}:{leader.port}" if leader else None, []).append(tp)
        out: dict[TopicPartition, OffsetAndTimestamp] = {}
        for address, tps in by_address.items():
            req = annal_pb2.ListOffsetsRequest(
                partitions=[
                    annal_pb2.ListOffsetsPartition(topic=tp.topic, partition=tp.partition, timestamp=int(specs[tp]))
                    for tp in tps
                ]
            )
            # No known leader: let any broker answer (it names the error: unknown topic or
            # partition, or no leader).
            resp = (
                self._call("ListOffsets", req)
                if address is None
                else self._rpc.call(address, "ListOffsets", req, self._timeout_ms)
            )
            for r in resp.results:
                if r.error_code:
                    raise for_code(r.error_code)(r.error_message or "", topic=r.topic, partition=r.partition)
                out[TopicPartition(r.topic, r.partition)] = OffsetAndTimestamp(r.offset, r.timestamp)
        return out

    def close(self) -> None:
        """Close the gRPC channels. Idempotent."""
        self._rpc.close()

    def __enter__(self) -> "Admin":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
