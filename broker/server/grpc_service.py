"""The gRPC edge: ``AnnalServicer`` implements every RPC of ``proto/annal/v1/annal.proto`` on
top of ``Broker``.

Errors. A whole-call failure is a gRPC status (``grpc_status_for``: NOT_FOUND, OUT_OF_RANGE,
INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE...; this module is the only place that maps
Annal's errors to gRPC statuses) plus trailing metadata:

    annal-error-code     the wire code from annal/errors.py ("6")
    annal-error-reason   its reason ("NOT_LEADER_OR_FOLLOWER")
    annal-error-details  JSON of the error's details, e.g. {"log_start_offset": 0,
                         "log_end_offset": 10} or {"leader": {"broker_id": 2, "host": ...,
                         "port": ..., "fetch_port": ...}}

Per-partition (and per-topic) failures go in the result fields (error_code, error_message, and
``leader`` for NOT_LEADER_OR_FOLLOWER; the Fetch stream's high_watermark/log_start_offset give
the valid range for OFFSET_OUT_OF_RANGE), so one bad partition never fails a request naming
several. acks = -1 answers only after the append is fdatasync'ed.

Thread-safety: the servicer is stateless beyond ``Broker`` (thread-safe); gRPC calls it from its
worker threads.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import threading
import time
from typing import Any, Callable, Iterator

import grpc

from annal import errors
from annal.broker.coordination.base import BrokerInfo
from annal.errors import (
    AnnalError,
    InvalidRequestError,
    NotLeaderForPartitionError,
    OffsetOutOfRangeError,
    UnknownServerError,
    for_code,
)
from annal.protocol import annal_pb2 as pb
from annal.protocol import annal_pb2_grpc
from annal.broker.server.broker import Broker, read_result_bytes, read_result_size, release_read

__all__ = ["AnnalServicer", "error_trailers", "TOPIC_CONFIG_FIELDS"]

log = logging.getLogger("annal.grpc")

TOPIC_CONFIG_FIELDS = (
    "segment_bytes", "segment_ms", "retention_bytes", "retention_ms",
    "flush_messages", "flush_ms", "max_message_bytes", "min_insync_replicas", "unclean_leader_election_enable",
)


def _jsonable(value: Any) -> Any:
    if isinstance(value, BrokerInfo):
        return dataclasses.asdict(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def error_trailers(err: AnnalError) -> tuple[tuple[str, str], ...]:
    trailers = [("annal-error-code", str(err.code)), ("annal-error-reason", err.reason)]
    if err.details:
        trailers.append(("annal-error-details", json.dumps(_jsonable(err.details), separators=(",", ":"))))
    return tuple(trailers)


# The gRPC status of each error class (the nearest base class listed wins); the client reads
# the wire code from the trailers, so the status only serves generic gRPC tooling.
_GRPC_STATUS: dict[type[AnnalError], grpc.StatusCode] = {
    errors.LocalUsageError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.OffsetOutOfRangeError: grpc.StatusCode.OUT_OF_RANGE,
    errors.CorruptRecordError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.UnknownTopicOrPartitionError: grpc.StatusCode.NOT_FOUND,
    errors.InvalidFetchSizeError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.LeaderNotAvailableError: grpc.StatusCode.UNAVAILABLE,
    errors.NotLeaderForPartitionError: grpc.StatusCode.UNAVAILABLE,
    errors.RequestTimedOutError: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.BrokerNotAvailableError: grpc.StatusCode.UNAVAILABLE,
    errors.MessageSizeTooLargeError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.NetworkError: grpc.StatusCode.UNAVAILABLE,
    errors.InvalidTopicError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.InvalidRequiredAcksError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.TopicAlreadyExistsError: grpc.StatusCode.ALREADY_EXISTS,
    errors.InvalidPartitionsError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.InvalidConfigError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.StorageError: grpc.StatusCode.UNAVAILABLE,
    errors.UnsupportedCompressionTypeError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.InvalidRecordError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.BrokerShuttingDownError: grpc.StatusCode.UNAVAILABLE,
    errors.GroupError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.KafkaTimeoutError: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def grpc_status_for(err: AnnalError) -> grpc.StatusCode:
    """The gRPC status a failed call answers with for ``err`` (INTERNAL when unlisted)."""
    for cls in type(err).__mro__:
        status = _GRPC_STATUS.get(cls)  # type: ignore[call-overload]
        if status is not None:
            return status
    return grpc.StatusCode.INTERNAL


def _abort(context: grpc.ServicerContext, err: AnnalError) -> None:
    context.set_trailing_metadata(error_trailers(err))
    context.abort(grpc_status_for(err), err.message)


def _caller_deadline(context: grpc.ServicerContext) -> float | None:
    """The caller's gRPC deadline as a ``time.monotonic()`` time, less a margin for the
    answer to travel back (None when the caller set none)."""
    remaining = context.time_remaining()
    if remaining is None or remaining > 1e9:
        return None
    return time.monotonic() + max(0.0, remaining - 0.25)


def results_outcome(resp: Any) -> str:
    """The metrics error label of an answer whose per-item ``results`` carry error codes
    (CreateTopics, DeleteTopics, Produce, ListOffsets): the protocol name of the first error
    (``MESSAGE_TOO_LARGE``, ``TOPIC_ALREADY_EXISTS``...), ``NONE`` when every item succeeded."""
    for r in getattr(resp, "results", ()):
        if r.error_code:
            return for_code(r.error_code).reason
    return "NONE"


def _broker_pb(info: BrokerInfo) -> pb.BrokerInfo:
    return pb.BrokerInfo(broker_id=info.broker_id, host=info.host, port=info.port, fetch_port=info.fetch_port)


def _rpc(api: str) -> Callable:
    """Time and count a unary RPC; turn AnnalError into status + trailers."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(self: "AnnalServicer", request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            outcome = "NONE"
            try:
                resp = fn(self, request, context)
                outcome = results_outcome(resp)
                return resp
            except AnnalError as err:
                outcome = err.reason
                _abort(context, err)
            except Exception as exc:
                if isinstance(exc, grpc.RpcError) or type(exc).__name__ == "_AbortError":
                    raise
                outcome = "UNKNOWN_SERVER_ERROR"
                log.exception("%s failed", api)
                _abort(context, UnknownServerError(f"{type(exc).__name__}: {exc}"))
            finally:
                self.broker.metrics.observe_request(api, "grpc", outcome, time.perf_counter() - started)

        return wrapper

    return deco


class AnnalServicer(annal_pb2_grpc.AnnalServicer):
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._waiting = 0  # Fetch calls long-polling now
        self._waiting_lock = threading.Lock()
        broker.metrics.long_poll_sources.append(lambda: self._waiting)

    # ------------------------------------------------------------------ topics

    @_rpc("CreateTopics")
    def CreateTopics(self, request: pb.CreateTopicsRequest, context: grpc.ServicerContext) -> pb.CreateTopicsResponse:
        results = []
        deadline = _caller_deadline(context)
        for topic in request.topics:
            config = {f: getattr(topic.config, f) for f in TOPIC_CONFIG_FIELDS if topic.config.HasField(f)}
            try:
                self.broker.create_topic(topic.name, topic.partitions, config, request.validate_only,
                                         replication_factor=topic.replication_factor, deadline=deadline)
                results.append(pb.TopicResult(name=topic.name))
            except AnnalError as err:
                log.info("create topic %r refused: %s", topic.name[:100], err.message)
                results.append(pb.TopicResult(name=topic.name, error_code=err.code, error_message=err.message))
        return pb.CreateTopicsResponse(results=results)

    @_rpc("DeleteTopics")
    def DeleteTopics(self, request: pb.DeleteTopicsRequest, context: grpc.ServicerContext) -> pb.DeleteTopicsResponse:
        results = []
        deadline = _caller_deadline(context)
        for name in request.names:
            try:
                self.broker.delete_topic(name, deadline=deadline)
                results.append(pb.TopicResult(name=name))
            except AnnalError as err:
                results.append(pb.TopicResult(name=name, error_code=err.code, error_message=err.message))
        return pb.DeleteTopicsResponse(results=results)

    @_rpc("Metadata")
    def Metadata(self, request: pb.MetadataRequest, context: grpc.ServicerContext) -> pb.MetadataResponse:
        brokers, topics = self.broker.metadata(list(request.topics), confirm_missing=True)
        resp = pb.MetadataResponse(
            brokers=[_broker_pb(b) for _, b in sorted(brokers.items())],
            controller_id=self.broker.coordinator.controller_id(),
            cluster_id=str(getattr(self.broker.coordinator, "cluster_id", "") or ""),
        )
        for t in topics:
            tm = resp.topics.add(name=t.name, error_code=t.error.code if t.error else 0)
            for p in t.partitions:
                tm.partitions.add(
                    partition=p.partition, leader=p.leader, log_start_offset=p.log_start_offset,
                    log_end_offset=p.log_end_offset, size_bytes=p.size_bytes,
                    error_code=p.error.code if p.error else 0,
                    replicas=list(p.replicas), isr=list(p.isr), leader_epoch=p.leader_epoch,
                )
            if t.config:
                for f in TOPIC_CONFIG_FIELDS:
                    if f in t.config:
                        setattr(tm.config, f, int(t.config[f]))
        return resp

    # ------------------------------------------------------------------ produce

    def _produce(self, request: pb.ProduceRequest) -> pb.ProduceResponse:
        resp = pb.ProduceResponse(correlation_id=request.correlation_id)
        for part in request.partitions:
            r = resp.results.add(topic=part.topic, partition=part.partition)
            try:
                res = self.broker.append(part.topic, part.partition, part.batches, request.acks,
                                         request.timeout_ms if request.timeout_ms > 0 else 30_000)
                r.base_offsets.extend(res.base_offsets)
                r.log_end_offset = res.log_end_offset
            except AnnalError as err:
                r.error_code = err.code
                r.error_message = err.message
                if isinstance(err, NotLeaderForPartitionError) and isinstance(err.details.get("leader"), BrokerInfo):
                    r.leader.CopyFrom(_broker_pb(err.details["leader"]))
                if not err.retriable:
                    log.info("produce to %s-%d refused: %s", part.topic[:100], part.partition, err.message)
        return resp

    @_rpc("Produce")
    def Produce(self, request: pb.ProduceRequest, context: grpc.ServicerContext) -> pb.ProduceResponse:
        return self._produce(request)

    def ProduceStream(self, request_iterator: Iterator[pb.ProduceRequest], context: grpc.ServicerContext) -> Iterator[pb.ProduceResponse]:
        metrics = self.broker.metrics
        try:
            for request in request_iterator:
                started = time.perf_counter()
                outcome = "NONE"
                try:
                    resp = self._produce(request)
                    outcome = results_outcome(resp)
                    yield resp
                except AnnalError as err:
                    outcome = err.reason
                    _abort(context, err)
                finally:
                    metrics.observe_request("ProduceStream", "grpc", outcome, time.perf_counter() - started)
        except grpc.RpcError:
            return

    # ------------------------------------------------------------------ offsets

    @_rpc("ListOffsets")
    def ListOffsets(self, request: pb.ListOffsetsRequest, context: grpc.ServicerContext) -> pb.ListOffsetsResponse:
        resp = pb.ListOffsetsResponse()
        for p in request.partitions:
            r = resp.results.add(topic=p.topic, partition=p.partition)
            try:
                r.offset, r.timestamp = self.broker.list_offset(p.topic, p.partition, p.timestamp)
            except AnnalError as err:
                r.error_code, r.error_message = err.code, err.message
                r.offset, r.timestamp = -1, -1
        return resp

    @_rpc("InitProducerId")
    def InitProducerId(self, request: pb.InitProducerIdRequest,
                       context: grpc.ServicerContext) -> pb.InitProducerIdResponse:
        pid, epoch = -1, -1
        if request.HasField("producer_id") and request.HasField("producer_epoch"):
            pid, epoch = request.producer_id, request.producer_epoch
        pid, epoch = self.broker.producer_ids.init_producer_id(pid, epoch)
        return pb.InitProducerIdResponse(producer_id=pid, producer_epoch=epoch)

    # ------------------------------------------------------------------ fetch (fallback)

    def Fetch(self, request: pb.FetchRequest, context: grpc.ServicerContext) -> Iterator[pb.FetchResponse]:
        started = time.perf_counter()
        outcome = "NONE"
        broker = self.broker
        try:
            if not request.partitions:
                raise InvalidRequestError("a fetch must name at least one partition")
            if request.max_wait_ms < 0:
                raise InvalidRequestError(f"max_wait_ms must be >= 0, not {request.max_wait_ms}")
            deadline = time.monotonic() + request.max_wait_ms / 1000
            event = threading.Event()
            keys = None
            if request.max_wait_ms > 0 and request.min_bytes > 0:
                keys = broker.add_waiter([(p.topic, p.partition) for p in request.partitions], event.set)
            try:
                while True:
                    event.clear()
                    results = [self._read(p) for p in request.partitions]
                    available = sum(read_result_size(r) for r, _ in results if r is not None)
                    errored = any(e is not None for _, e in results)
                    remaining = deadline - time.monotonic()
                    if (available >= request.min_bytes or errored or remaining <= 0 or keys is None
                            or broker.shutting_down or not context.is_active()):
                        break
                    for r, _ in results:
                        release_read(r)
                    with self._waiting_lock:
                        self._waiting += 1
                    try:
                        event.wait(remaining)
                    finally:
                        with self._waiting_lock:
                            self._waiting -= 1
            finally:
                if keys is not None:
                    broker.remove_waiter(keys, event.set)
            messages = []
            for p, (r, err) in zip(request.partitions, results):
                try:
                    if err is not None:
                        m = pb.FetchResponse(topic=p.topic, partition=p.partition, error_code=err.code,
                                             error_message=err.message, high_watermark=-1, log_start_offset=-1)
                        if isinstance(err, OffsetOutOfRangeError):
                            m.high_watermark = err.log_end_offset if err.log_end_offset is not None else -1
                            m.log_start_offset = err.log_start_offset if err.log_start_offset is not None else -1
                    else:
                        data = read_result_bytes(r)
                        broker.metrics.record_fetch(p.topic, len(data))
                        m = pb.FetchResponse(topic=p.topic, partition=p.partition, high_watermark=r.high_watermark,
                                             log_start_offset=r.log_start_offset, records=data)
                    messages.append(m)
                finally:
                    release_read(r)
            yield from messages
        except AnnalError as err:
            outcome = err.reason
            _abort(context, err)
        finally:
            broker.metrics.observe_request("Fetch", "grpc", outcome, time.perf_counter() - started)

    def _read(self, p: pb.FetchPartition) -> tuple[Any, AnnalError | None]:
        try:
            return self.broker.read(p.topic, p.partition, p.offset, p.max_bytes), None
        except AnnalError as err:
            return None, err
