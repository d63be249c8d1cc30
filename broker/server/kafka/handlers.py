"""The Kafka APIs, answered from the ``Broker`` core: one method per API, taking the decoded
request (a dict, see ``annal.kafka._schema``) and returning the response dict, or a coroutine of
it when the answer waits (Fetch long-poll, Produce with acks=-1, the group APIs).

Everything Annal knows maps onto Kafka's answers: live brokers (with their Kafka port), each
partition's leader, replicas, in-sync replicas, offline replicas and leader epoch,
the controller, the cluster id, and a topic id derived from the cluster id and the topic name
(Annal's topics have no id of their own; the same name in the same cluster gets the same id).
``AnnalError`` subclasses become their Kafka error codes (``annal.kafka.kafka_error_code``).

Thread-safety: called on the event loop thread only; appends run on the broker's
request-handler pool (shared with the data port), topic changes on the loop's executor.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import uuid
from typing import Any, Awaitable

from annal.errors import AnnalError, BrokerShuttingDownError, InvalidRequestError, NotLeaderForPartitionError, OffsetOutOfRangeError
from annal.kafka import ApiKey, ErrorCode, RequestHeader, kafka_error_code
from annal.kafka.apis import SUPPORTED
from annal.broker.server.broker import Broker, read_result_size, release_read
from annal.broker.server.config import TOPIC_CONFIG_KEYS
from annal.broker.server.loop_mailbox import LoopMailbox
from annal.broker.storage import NeedsVerification

__all__ = ["KafkaHandlers", "NoResponse", "topic_id"]

log = logging.getLogger("annal.kafka_listener")


def _release_reads(fut: "asyncio.Future[Any]") -> None:
    if not fut.cancelled() and fut.exception() is None:
        for _, _, r, _ in fut.result() or ():
            release_read(r)


class NoResponse(enum.Enum):
    """A request answered by no frame (Produce with acks=0), or by closing the connection
    (acks=0 with a refused partition: Kafka's way of telling such a producer)."""

    NONE = 0
    CLOSE = 1


_TOPIC_NAMESPACE = uuid.UUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8")  # RFC 4122's URL namespace


def topic_id(cluster_id: str, name: str) -> uuid.UUID:
    """A stable id for a topic (Kafka 2.8+ clients expect one): UUIDv5 of cluster id and name."""
    return uuid.uuid5(_TOPIC_NAMESPACE, f"annal://{cluster_id}/{name}")


def _code(err: AnnalError) -> int:
    return kafka_error_code(err.code)


# Kafka's config names for Annal's topic settings (DescribeConfigs/CreateTopics speak Kafka's).
KAFKA_CONFIG_NAMES = {
    "segment_bytes": "segment.bytes",
    "segment_ms": "segment.ms",
    "retention_bytes": "retention.bytes",
    "retention_ms": "retention.ms",
    "flush_messages": "flush.messages",
    "flush_ms": "flush.ms",
    "max_message_bytes": "max.message.bytes",
}
ANNAL_CONFIG_NAMES = {v: k for k, v in KAFKA_CONFIG_NAMES.items()}
assert set(KAFKA_CONFIG_NAMES) <= TOPIC_CONFIG_KEYS


class KafkaHandlers:
    """Answers decoded Kafka requests. ``loop`` is set by the listener when it starts."""

    def __init__(self, broker: Broker, groups: Any = None, producers: Any = None, pool: Any = None) -> None:
        self.broker = broker
        # The request-handler pool that appends (request_handlers.py); None: executor threads.
        self.pool = pool
        self._loop: asyncio.AbstractEventLoop | None = None
        # Answers and long-poll wake-ups from worker threads onto the loop (loop_mailbox.py).
        self.mailbox: LoopMailbox | None = None
        self.groups = groups
        self.producers = producers
        self.kafka_port = 0  # set by the listener's owner once bound (this broker's Kafka port)
        self._dispatch: dict[int, Any] = {
            ApiKey.API_VERSIONS: self.api_versions,
            ApiKey.METADATA: self.metadata,
            ApiKey.PRODUCE: self.produce,
            ApiKey.FETCH: self.fetch,
            ApiKey.LIST_OFFSETS: self.list_offsets,
            ApiKey.CREATE_TOPICS: self.create_topics,
            ApiKey.DELETE_TOPICS: self.delete_topics,
            ApiKey.DESCRIBE_CONFIGS: self.describe_configs,
            ApiKey.DESCRIBE_CLUSTER: self.describe_cluster,
        }
        if groups is not None:
            self._dispatch.update({
                ApiKey.FIND_COORDINATOR: self.find_coordinator,
                ApiKey.JOIN_GROUP: groups.join_group,
                ApiKey.SYNC_GROUP: groups.sync_group,
                ApiKey.HEARTBEAT: groups.heartbeat,
                ApiKey.LEAVE_GROUP: groups.leave_group,
                ApiKey.OFFSET_COMMIT: groups.offset_commit,
                ApiKey.OFFSET_FETCH: groups.offset_fetch,
            })
        if producers is not None:
            self._dispatch[ApiKey.INIT_PRODUCER_ID] = producers.init_producer_id

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The listener's event loop (set by the listener when it starts)."""
        return self._loop

    @loop.setter
    def loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._loop = loop
        self.mailbox = LoopMailbox(loop) if loop is not None else None

    @property
    def supported(self) -> dict[int, Any]:
        return {k: v for k, v in SUPPORTED.items() if k in self._dispatch}

    def close(self) -> None:
        if self.groups is not None:
            self.groups.close()

    def handle(self, header: RequestHeader, body: dict[str, Any]) -> Any:
        fn = self._dispatch.get(header.api_key)
        if fn is None:
            raise InvalidRequestError(f"api key {header.api_key} is not served")
        return fn(header, body)

    # ------------------------------------------------------------------ cluster

    @property
    def cluster_id(self) -> str:
        return str(getattr(self.broker.coordinator, "cluster_id", "") or "annal")

    def api_versions_body(self, error_code: int = 0) -> dict[str, Any]:
        return {
            "error_code": error_code,
            "api_keys": [{"api_key": int(k), "min_version": v.min_version, "max_version": v.max_version}
                         for k, v in sorted(self.supported.items())],
        }

    def api_versions(self, header: RequestHeader, body: dict[str, Any]) -> dict[str, Any]:
        return self.api_versions_body()

    def _brokers(self) -> list[dict[str, Any]]:
        out = []
        for info in sorted(self.broker.coordinator.brokers().values(), key=lambda b: b.broker_id):
            port = getattr(info, "kafka_port", -1)
            if info.broker_id == self.broker.me.broker_id if self.broker.me else False:
                port = self.kafka_port
            if port and port > 0:
                out.append({"node_id": info.broker_id, "host": info.host, "port": port, "rack": None})
        return out

    def metadata(self, header: RequestHeader, body: dict[str, Any]) -> dict[str, Any]:
        requested = body.get("topics")
        if requested is None or (header.api_version == 0 and not requested):
            names = None  # every topic
        else:
            names = [t["name"] for t in requested if t.get("name") is not None]
        brokers_by_id, topics = self.broker.metadata(names) if names is None or names else ({}, [])
        cluster_id = self.cluster_id
        live = self.broker.coordinator.brokers()
        out_topics = []
        for t in topics:
            if t.error is not None:
                out_topics.append({"error_code": _code(t.error), "name": t.name, "partitions": [],
                                   "topic_authorized_operations": -2147483648})
                continue
            parts = []
            for p in t.partitions:
                leader_live = p.leader in live
                replicas = list(p.replicas) or ([p.leader] if p.leader >= 0 else [])
                parts.append({
                    "error_code": 0 if leader_live else int(ErrorCode.LEADER_NOT_AVAILABLE),
                    "partition_index": p.partition,
                    "leader_id": p.leader if leader_live else -1,
                    "leader_epoch": p.leader_epoch,
                    "replica_nodes": replicas,
                    "isr_nodes": [b for b in (p.isr or replicas) if b in live],
                    "offline_replicas": [b for b in replicas if b not in live],
                })
            out_topics.append({"error_code": 0, "name": t.name, "topic_id": topic_id(cluster_id, t.name),
                               "is_internal": False, "partitions": parts,
                               "topic_authorized_operations": -2147483648})
        return {
            "brokers": self._brokers(),
            "cluster_id": cluster_id,
            "controller_id": self.broker.coordinator.controller_id(),
            "topics": out_topics,
            "cluster_authorized_operations": -2147483648,
        }

    def describe_cluster(self, header: RequestHeader, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "error_code": 0,
            "error_message": None,
            "endpoint_type": 1,
            "cluster_id": self.cluster_id,
            "controller_id": self.broker.coordinator.controller_id(),
            "brokers": [{"broker_id": b["node_id"], "host": b["host"], "port": b["port"], "rack": None}
                        for b in self._brokers()],
            "cluster_authorized_operations": -2147483648,
        }

    # ------------------------------------------------------------------ topics

    def create_topics(self, header: RequestHeader, body: dict[str, Any]) -> Awaitable[dict[str, Any]]:
        assert self.loop is not None
        return self.loop.run_in_executor(None, self._create_topics_sync, header, body)

    def _create_topics_sync(self, header: RequestHeader, body: dict[str, Any]) -> dict[str, Any]:
        results = []
        for t in body.get("topics") or ():
            name = t["name"]
            res: dict[str, Any] = {"name": name, "error_code": 0, "error_message": None,
                                   "topic_config_error_code": 0, "num_partitions": -1, "replication_factor": -1,
                                   "configs": None}
            try:
                config: dict[str, int] = {}
                for c in t.get("configs") or ():
                    key = ANNAL_CONFIG_NAMES.get(c["name"], c["name"])
                    if key not in KAFKA_CONFIG_NAMES:
                        from annal.errors import InvalidConfigError

                        raise InvalidConfigError(
                            f"unknown topic config {c['name']!r}; Annal knows {', '.join(sorted(ANNAL_CONFIG_NAMES))}")
                    try:
                        config[key] = int(c["value"])
                    except (TypeError, ValueError):
                        from annal.errors import InvalidConfigError

                        raise InvalidConfigError(f"topic config {c['name']}={c['value']!r} is not an integer") from None
                partitions = int(t.get("num_partitions", -1))
                replication_factor = int(t.get("replication_factor", -1))
                if t.get("assignments"):
                    # The controller places replicas itself; an explicit assignment gives
                    # the partition count and the replication factor, not the brokers.
                    partitions = len(t["assignments"])
                    replication_factor = len(t["assignments"][0].get("broker_ids") or ()) or -1
                placement = self.broker.create_topic(name, partitions, config,
                                                     validate_only=bool(body.get("validate_only")),
                                                     replication_factor=replication_factor)
                if placement is not None:
                    res["num_partitions"] = placement.partition_count
                    res["replication_factor"] = placement.replication_factor
                    res["topic_id"] = topic_id(self.cluster_id, name)
            except AnnalError as err:
                res["error_code"] = _code(err)
                res["error_message"] = err.message
            results.append(res)
        return {"topics": results}

    def delete_topics(self, header: RequestHeader, body: dict[str, Any]) -> Awaitable[dict[str, Any]]:
        assert self.loop is not None
        return self.loop.run_in_executor(None, self._delete_topics_sync, header, body)

    def _delete_topics_sync(self, header: RequestHeader, body: dict[str, Any]) -> dict[str, Any]:
        results = []
        for name in body.get("topic_names") or ():
            res: dict[str, Any] = {"name": name, "error_code": 0, "error_message": None}
            try:
                self.broker.delete_topic(name)
            except AnnalError as err:
                res["error_code"] = _code(err)
                res["error_message"] = err.message
            results.append(res)
        return {"responses": results}

    def describe_configs(self, header: RequestHeader, body: dict[str, Any]) -> dict[str, Any]:
        results = []
        placements = self.broker.placements()
        for res in body.get("resources") or ():
            name = res["resource_name"]
            out: dict[str, Any] = {"error_code": 0, "error_message": None, "resource_type": res["resource_type"],
                                   "resource_name": name, "configs": []}
            if res["resource_type"] != 2:  # 2 = TOPIC; broker configs are not exposed
                out["error_code"] = int(ErrorCode.INVALID_REQUEST)
                out["error_message"] = "Annal describes topic configs only (resource type 2)"
                results.append(out)
                continue
            placement = placements.get(name)
            if placement is None:
                out["error_code"] = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
                out["error_message"] = f"topic {name!r} does not exist"
                results.append(out)
                continue
            merged = self.broker.config.topic_config(placement.config)
            wanted = res.get("configuration_keys")
            for key, kname in KAFKA_CONFIG_NAMES.items():
                if wanted and kname not in wanted:
                    continue
                is_default = key not in placement.config
                out["configs"].append({
                    "name": kname, "value": str(merged[key]), "read_only": False,
                    "is_default": is_default,
                    "config_source": 5 if is_default else 1,  # DEFAULT_CONFIG / DYNAMIC_TOPIC_CONFIG
                    "is_sensitive": False, "synonyms": [], "config_type": 5,  # LONG
                    "documentation": None,
                })
            results.append(out)
        return {"results": results}

    # ------------------------------------------------------------------ produce

    def produce(self, header: RequestHeader, body: dict[str, Any]) -> Any:
        acks = body.get("acks", 1)
        if body.get("transactional_id"):
            return self._produce_refused(body, ErrorCode.INVALID_REQUEST, "transactions are not supported")
        # Appends run off the event loop, on the broker's request-handler pool shared with
        # the data port (Kafka's num.io.threads): validation, a segment roll and an fdatasync
        # (acks=-1, flush_messages) must not stall the other connections, and appends to one
        # partition from both listeners are coalesced.
        assert self.loop is not None
        if self.pool is None:
            return self._produce_async(body, acks)
        return self._produce_pooled(body, acks)

    async def _produce_async(self, body: dict[str, Any], acks: int) -> Any:
        assert self.loop is not None
        results = await self.loop.run_in_executor(None, self._produce_sync, body, acks)
        return self._produce_answer(body, acks, results)

    async def _produce_pooled(self, body: dict[str, Any], acks: int) -> Any:
        loop = self.loop
        assert loop is not None and self.pool is not None
        results: dict[tuple[str, int], tuple[int, str | None, int, int]] = {}
        waiting = loop.create_future()
        left = [0]

        def finish(key: tuple[str, int], result: Any) -> None:  # on the loop
            results[key] = self._produce_result(key, result)
            left[0] -= 1
            if not left[0] and not waiting.done():
                waiting.set_result(None)

        mailbox = self.mailbox
        assert mailbox is not None

        def done_for(key: tuple[str, int]) -> Any:
            def done(result: Any) -> None:  # on a worker thread
                mailbox.post(finish, key, result)
            return done

        timeout_ms = int(body.get("timeout_ms", 30_000))
        for t in body.get("topic_data") or ():
            name = t["name"]
            for p in t.get("partition_data") or ():
                key = (name, p["index"])
                records = p.get("records")
                if not records:
                    results[key] = self._produce_result(key, InvalidRequestError("a produce request with no records"))
                    continue
                left[0] += 1
                try:
                    self.pool.submit(name, p["index"], records, acks, done_for(key), timeout_ms)
                except RuntimeError:  # the pool is closed: the broker is shutting down
                    left[0] -= 1
                    results[key] = self._produce_result(key, BrokerShuttingDownError("broker is shutting down"))
        if left[0]:
            await waiting
        return self._produce_answer(body, acks, results)

    def _produce_result(self, key: tuple[str, int], result: Any) -> tuple[int, str | None, int, int]:
        if isinstance(result, AnnalError):
            code = _code(result)
            if code not in (ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION):
                log.info("kafka produce to %s-%d refused: %s", key[0][:100], key[1], result.message)
            return (code, result.message, -1, -1)
        return (0, None, result.base_offsets[0] if result.base_offsets else -1, -1)

    def _produce_refused(self, body: dict[str, Any], code: int, message: str) -> Any:
        results: dict[tuple[str, int], tuple[int, str | None, int, int]] = {}
        for t in body.get("topic_data") or ():
            for p in t.get("partition_data") or ():
                results[(t["name"], p["index"])] = (int(code), message, -1, -1)
        return self._produce_answer(body, body.get("acks", 1), results)

    def _produce_sync(self, body: dict[str, Any], acks: int) -> dict[tuple[str, int], tuple[int, str | None, int, int]]:
        out: dict[tuple[str, int], tuple[int, str | None, int, int]] = {}
        append = self.broker.append
        for t in body.get("topic_data") or ():
            name = t["name"]
            for p in t.get("partition_data") or ():
                key = (name, p["index"])
                records = p.get("records")
                try:
                    if not records:
                        raise InvalidRequestError("a produce request with no records")
                    # An idempotent producer's batch is checked by the log's producer state.
                    result: Any = append(name, p["index"], (records,), acks)
                except AnnalError as err:
                    result = err
                out[key] = self._produce_result(key, result)
        return out

    def _produce_answer(self, body: dict[str, Any], acks: int, results: dict[tuple[str, int], tuple[int, str | None, int, int]]) -> Any:
        if acks == 0:
            if any(r[0] for r in results.values()):
                log.info("kafka: closing an acks=0 connection after a refused produce")
                return NoResponse.CLOSE
            return NoResponse.NONE
        responses = []
        for t in body.get("topic_data") or ():
            parts = []
            for p in t.get("partition_data") or ():
                code, message, base, start = results[(t["name"], p["index"])]
                parts.append({"index": p["index"], "error_code": code, "base_offset": base,
                              "log_append_time_ms": -1, "log_start_offset": start, "record_errors": [],
                              "error_message": message})
            responses.append({"name": t["name"], "partition_responses": parts})
        return {"responses": responses, "throttle_time_ms": 0}

    # ------------------------------------------------------------------ fetch

    def _read_all(self, body: dict[str, Any], verify: bool = False) -> list[tuple[str, int, Any, AnnalError | None]] | None:
        """Every partition's read. On the loop (``verify=False``): None, holding nothing, when
        one of them has bytes of an older segment to CRC-check first (``_read_off_loop``)."""
        out: list[tuple[str, int, Any, AnnalError | None]] = []
        broker = self.broker
        for t in body.get("topics") or ():
            name = t["topic"]
            for p in t.get("partitions") or ():
                max_bytes = p.get("partition_max_bytes", 1024 * 1024)
                try:
                    if max_bytes <= 0:
                        from annal.errors import InvalidFetchSizeError

                        raise InvalidFetchSizeError(f"partition_max_bytes must be positive, not {max_bytes}")
                    out.append((name, p["partition"], broker.read(name, p["partition"], p["fetch_offset"], max_bytes,
                                                                  verify=verify), None))
                except AnnalError as err:
                    out.append((name, p["partition"], None, err))
                except NeedsVerification:
                    for _, _, r, _ in out:
                        release_read(r)
                    return None
        return out

    async def _read_off_loop(self, body: dict[str, Any]) -> list[tuple[str, int, Any, AnnalError | None]]:
        """The reads on a worker thread, CRC-checking bytes never checked since start-up (the
        check reads them from disk when they are not cached)."""
        assert self.loop is not None
        self.broker.metrics.first_reads.labels("kafka").inc()
        fut = self.loop.run_in_executor(None, self._read_all, body, True)
        try:
            reads = await asyncio.shield(fut)
        except asyncio.CancelledError:  # the connection went away: release the reads when they come
            fut.add_done_callback(_release_reads)
            raise
        assert reads is not None
        return reads

    def fetch(self, header: RequestHeader, body: dict[str, Any]) -> Any:
        reads = self._read_all(body)
        if reads is None:
            return self._fetch_after_read_off_loop(body)
        return self._fetch_with(body, reads)

    async def _fetch_after_read_off_loop(self, body: dict[str, Any]) -> dict[str, Any]:
        answer = self._fetch_with(body, await self._read_off_loop(body))
        return await answer if asyncio.iscoroutine(answer) else answer

    def _fetch_with(self, body: dict[str, Any], reads: list[tuple[str, int, Any, AnnalError | None]]) -> Any:
        max_wait_ms = body.get("max_wait_ms", 0)
        min_bytes = body.get("min_bytes", 1)
        available = sum(read_result_size(r) for _, _, r, _ in reads if r is not None)
        if (available >= min_bytes or max_wait_ms <= 0 or any(e is not None for *_, e in reads)
                or self.broker.shutting_down or not reads):
            return self._fetch_answer(body, reads)
        for _, _, r, _ in reads:
            release_read(r)
        return self._long_poll(body, max_wait_ms, min_bytes)

    async def _long_poll(self, body: dict[str, Any], max_wait_ms: int, min_bytes: int) -> dict[str, Any]:
        loop = self.loop
        assert loop is not None
        woken = asyncio.Event()

        mailbox = self.mailbox
        assert mailbox is not None

        def wake() -> None:  # from whatever thread appended
            mailbox.post(woken.set)

        keys = [(t["topic"], p["partition"]) for t in body.get("topics") or () for p in t.get("partitions") or ()]
        keys = self.broker.add_waiter(keys, wake)
        deadline = loop.time() + max_wait_ms / 1000
        try:
            while True:
                # Registered before reading: an append after this read always wakes us.
                woken.clear()
                reads = self._read_all(body)
                if reads is None:
                    reads = await self._read_off_loop(body)
                available = sum(read_result_size(r) for _, _, r, _ in reads if r is not None)
                remaining = deadline - loop.time()
                if (available >= min_bytes or remaining <= 0 or any(e is not None for *_, e in reads)
                        or self.broker.shutting_down):
                    return self._fetch_answer(body, reads)
                for _, _, r, _ in reads:
                    release_read(r)
                try:
                    await asyncio.wait_for(woken.wait(), remaining)
                except asyncio.TimeoutError:
                    pass
        finally:
            self.broker.remove_waiter(keys, wake)

    def _fetch_answer(self, body: dict[str, Any], reads: list[tuple[str, int, Any, AnnalError | None]]) -> dict[str, Any]:
        budget = body.get("max_bytes", 0x7FFFFFFF)
        have_data = False
        by_topic: dict[str, list[dict[str, Any]]] = {}
        kept = []
        for name, partition, r, err in reads:
            part: dict[str, Any] = {"partition_index": partition, "aborted_transactions": None,
                                    "preferred_read_replica": -1}
            if err is not None:
                part.update(error_code=_code(err), high_watermark=-1, last_stable_offset=-1, log_start_offset=-1,
                            records=None)
                if isinstance(err, OffsetOutOfRangeError):
                    hw = err.log_end_offset if err.log_end_offset is not None else -1
                    part.update(high_watermark=hw, last_stable_offset=hw,
                                log_start_offset=err.log_start_offset if err.log_start_offset is not None else -1)
                elif not isinstance(err, NotLeaderForPartitionError) and not err.retriable:
                    log.info("kafka fetch %s-%d: %s", name[:100], partition, err.message)
            else:
                size = read_result_size(r)
                if have_data and size > budget:
                    # Over the response's max_bytes: this partition answers empty and the
                    # client asks again; the first partition with data is always sent whole.
                    release_read(r)
                    r, size = None, 0
                budget -= size
                have_data = have_data or size > 0
                hw = r.high_watermark if r is not None else self._high_watermark(name, partition)
                start = r.log_start_offset if r is not None else -1
                part.update(error_code=0, high_watermark=hw, last_stable_offset=hw, log_start_offset=start,
                            records=r if size else b"")
                if size:
                    kept.append(r)
                    self.broker.metrics.record_fetch(name, size)
                elif r is not None:
                    release_read(r)
            by_topic.setdefault(name, []).append(part)
        return {
            "throttle_time_ms": 0, "error_code": 0, "session_id": 0,  # sessionless
            "responses": [{"topic": name, "partitions": parts} for name, parts in by_topic.items()],
            "_reads": kept,
        }

    def _high_watermark(self, topic: str, partition: int) -> int:
        try:
            plog = self.broker.leader_log(topic, partition)
            rep = self.broker.replication
            if rep is not None:
                return int(rep.high_watermark(topic, partition, plog))
            return int(plog.log_end_offset)
        except AnnalError:
            return -1

    # ------------------------------------------------------------------ list offsets

    def list_offsets(self, header: RequestHeader, body: dict[str, Any]) -> dict[str, Any]:
        topics = []
        for t in body.get("topics") or ():
            parts = []
            for p in t.get("partitions") or ():
                out: dict[str, Any] = {"partition_index": p["partition_index"], "error_code": 0,
                                       "timestamp": -1, "offset": -1, "leader_epoch": 0}
                try:
                    offset, ts = self.broker.list_offset(t["name"], p["partition_index"], p["timestamp"])
                    out.update(offset=offset, timestamp=ts)
                except AnnalError as err:
                    out.update(error_code=_code(err), leader_epoch=-1)
                parts.append(out)
            topics.append({"name": t["name"], "partitions": parts})
        return {"throttle_time_ms": 0, "topics": topics}

    # ------------------------------------------------------------------ groups

    def find_coordinator(self, header: RequestHeader, body: dict[str, Any]) -> Any:
        assert self.groups is not None
        keys = body.get("coordinator_keys")
        if header.api_version < 4:
            keys = [body.get("key", "")]
        answers = []
        for key in keys or ():
            node, code, message = self.groups.coordinator_for(key, body.get("key_type", 0))
            host, port = "", -1
            if node is not None:
                host, port = node
            answers.append({"key": key, "node_id": self.groups.coordinator_id(key) if node else -1,
                            "host": host, "port": port, "error_code": code, "error_message": message})
        if header.api_version < 4:
            a = answers[0]
            return {"throttle_time_ms": 0, "error_code": a["error_code"], "error_message": a["error_message"],
                    "node_id": a["node_id"], "host": a["host"], "port": a["port"]}
        return {"throttle_time_ms": 0, "coordinators": answers}

