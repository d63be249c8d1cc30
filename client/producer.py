"""The Producer: ``send`` records to topics, batched, in the background.

Layout (kafka-python's): this facade serializes and partitions each record and appends it to
the ``RecordAccumulator`` (``_accumulator.py``); the ``Sender`` thread (``_sender.py``) ships
batches to the partition leaders' data ports; ``_partitioner.py`` picks partitions;
``_metadata.py`` knows the leaders.

Thread-safe: ``send``, ``flush`` and ``close`` may be called from any number of threads.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Mapping, Sequence

from annal.errors import (
    AnnalError,
    BrokerNotAvailableError,
    InvalidRequiredAcksError,
    KafkaTimeoutError,
    LocalUsageError,
    ProducerClosedError,
    UnknownTopicOrPartitionError,
)
from annal.record import _impl as _codec_impl
from annal.record import compression_from_name

from annal.client._accumulator import FutureRecordMetadata, RecordAccumulator
from annal.client._metadata import ClusterMetadata, GrpcMetadataSource, zookeeper_metadata
from annal.client._partitioner import StickyPartitionCache, partition_for_key
from annal.client._rpc import RpcClient, parse_bootstrap
from annal.client._idempotence import IdempotenceManager
from annal.client._sender import Sender
from annal.protocol import annal_pb2

__all__ = ["Producer"]

_time_ns = time.time_ns
_FRM = FutureRecordMetadata


def _check_positive(name: str, value: Any, allow_zero: bool = True) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LocalUsageError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero):
        raise LocalUsageError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, not {value}")
    return value


def _as_bytes(what: str, value: Any) -> bytes | None:
    if value is None or type(value) is bytes:
        return value  # type: ignore[no-any-return]
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(
        f"{what} must be bytes or None (or pass a {what}_serializer to the Producer), "
        f"not {type(value).__name__}"
    )


class Producer:
    """Sends records to Annal topics (kafka-python's ``KafkaProducer`` API).

    Args:
        bootstrap_servers: ``"host:port[,host:port]"`` of the brokers' gRPC ports, or a list.
        acks: 0 (no answer awaited; offsets are reported as -1), 1 (the leader appended the
            record) or ``"all"``/-1 (every in-sync replica has it; with one replica, fsynced on
            the leader). Default 1, or ``"all"`` with ``enable_idempotence``.
        enable_idempotence: the leader writes each batch once even when a retry re-sends
            it after a lost answer (producer id and per-partition sequence numbers, as
            Kafka's idempotent producer; needs ``acks="all"``). Default False, as
            kafka-python's.
        linger_ms: how long a batch waits for more records before it is sent.
        batch_size: bytes per batch (a record larger than this gets a batch of its own).
        compression_type: None or ``"lz4"`` (whole batches, lz4 frame).
        retries: retries of a batch after retriable errors (bounded by delivery_timeout_ms).
        retry_backoff_ms: wait before a retry, and between metadata refreshes.
        delivery_timeout_ms: a record not acknowledged this long after ``send`` fails with
            ``KafkaTimeoutError``.
        request_timeout_ms: how long to wait for a broker's answer before giving up on the
            connection (and retrying).
        max_in_flight_requests_per_connection: requests in flight per broker connection (one per partition at most,
            which keeps each partition's order across retries).
        max_request_size: bytes of batches per request.
        buffer_memory: bytes of records waiting to be sent; ``send`` blocks when it is full.
        max_block_ms: how long ``send`` may block (buffer full, metadata not yet known) before
            raising ``BufferExhaustedError`` / ``KafkaTimeoutError``.
        key_serializer, value_serializer: callables turning keys/values into bytes.
        metadata_max_age_ms: how often the metadata of the topics sent to is re-read even
            when no error asked for it (new partitions, brokers and leaders are picked up).
        zookeeper: ZooKeeper connect string for cluster mode (brokers and leaders are then
            watched in ZooKeeper instead of asked from ``bootstrap_servers``).

    Thread-safe. Use as a context manager or call ``close()``.
    """

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str] = "127.0.0.1:9092",
        *,
        acks: int | str | None = None,
        enable_idempotence: bool = False,
        linger_ms: float = 5,
        batch_size: int = 65536,
        compression_type: str | None = None,
        retries: int = 2147483647,
        retry_backoff_ms: int = 100,
        delivery_timeout_ms: int = 120000,
        request_timeout_ms: int = 30000,
        max_in_flight_requests_per_connection: int = 5,
        max_request_size: int = 1048576,
        buffer_memory: int = 33554432,
        max_block_ms: int = 60000,
        key_serializer: Callable[[Any], bytes] | None = None,
        value_serializer: Callable[[Any], bytes] | None = None,
        metadata_max_age_ms: int = 300000,
        zookeeper: str | None = None,
        client_id: str = "annal-producer",
    ) -> None:
        if not isinstance(enable_idempotence, bool):
            raise LocalUsageError(f"enable_idempotence must be True or False, not {enable_idempotence!r}")
        if acks is None:
            acks = "all" if enable_idempotence else 1
        if acks in ("all", -1):
            acks_value = -1
        elif acks in (0, 1) and not isinstance(acks, bool):
            acks_value = int(acks)
        else:
            raise InvalidRequiredAcksError(f"acks must be 0, 1 or 'all' (-1), not {acks!r}")
        if isinstance(linger_ms, bool) or not isinstance(linger_ms, (int, float)) or linger_ms < 0:
            raise LocalUsageError(f"linger_ms must be a number >= 0, not {linger_ms!r}")
        if enable_idempotence and acks_value != -1:
            raise LocalUsageError(f"enable_idempotence needs acks='all', not {acks!r}")
        _check_positive("batch_size", batch_size, allow_zero=False)
        _check_positive("retries", retries)
        if enable_idempotence and retries == 0:
            raise LocalUsageError("enable_idempotence needs retries > 0 (it exists to make retries safe)")
        _check_positive("retry_backoff_ms", retry_backoff_ms)
        _check_positive("delivery_timeout_ms", delivery_timeout_ms, allow_zero=False)
        _check_positive("request_timeout_ms", request_timeout_ms, allow_zero=False)
        _check_positive(
            "max_in_flight_requests_per_connection", max_in_flight_requests_per_connection, allow_zero=False
        )
        _check_positive("max_request_size", max_request_size, allow_zero=False)
        _check_positive("buffer_memory", buffer_memory, allow_zero=False)
        _check_positive("max_block_ms", max_block_ms)
        _check_positive("metadata_max_age_ms", metadata_max_age_ms, allow_zero=False)
        if key_serializer is not None and not callable(key_serializer):
            raise LocalUsageError("key_serializer must be callable")
        if value_serializer is not None and not callable(value_serializer):
            raise LocalUsageError("value_serializer must be callable")
        if batch_size > buffer_memory:
            raise LocalUsageError(f"batch_size={batch_size} is larger than buffer_memory={buffer_memory}")
        compression = compression_from_name(compression_type)
        self.config: dict[str, Any] = dict(
            bootstrap_servers=bootstrap_servers, acks=acks_value, enable_idempotence=enable_idempotence,
            linger_ms=linger_ms,
            batch_size=batch_size, compression_type=compression_type, retries=retries,
            retry_backoff_ms=retry_backoff_ms, delivery_timeout_ms=delivery_timeout_ms,
            request_timeout_ms=request_timeout_ms,
            max_in_flight_requests_per_connection=max_in_flight_requests_per_connection,
            max_request_size=max_request_size, buffer_memory=buffer_memory,
            max_block_ms=max_block_ms, metadata_max_age_ms=metadata_max_age_ms,
            zookeeper=zookeeper, client_id=client_id,
        )
        self._key_serializer = key_serializer
        self._value_serializer = value_serializer
        self._max_block_ms = max_block_ms
        self._closed = False
        # send()'s fast path is open while this is True: not closed, no value serializer.
        self._plain = value_serializer is None
        self._rpc = RpcClient(request_timeout_ms)
        self._metadata = self._make_metadata(bootstrap_servers, zookeeper, retry_backoff_ms, request_timeout_ms)
        self._partitioner = StickyPartitionCache()
        self._accumulator = RecordAccumulator(
            batch_size=batch_size,
            compression=compression,
            linger_ms=linger_ms,
            buffer_memory=buffer_memory,
            delivery_timeout_ms=delivery_timeout_ms,
            retry_backoff_ms=retry_backoff_ms,
            partitioner=self._partitioner,
        )
        self._sender = Sender(
            self._accumulator,
            self._metadata,
            acks=acks_value,
            retries=retries,
            retry_backoff_ms=retry_backoff_ms,
            request_timeout_ms=request_timeout_ms,
            max_in_flight=max_in_flight_requests_per_connection,
            max_request_size=max_request_size,
            metadata_max_age_ms=metadata_max_age_ms,
            idempotence=IdempotenceManager(self._init_producer_id, retry_backoff_ms) if enable_idempotence else None,
        )
        self._accumulator._wakeup = self._sender.wakeup
        self._metadata.add_listener(self._on_metadata)
        self._on_metadata(self._metadata)  # a watching source may have filled it already
        self._sticky = self._accumulator.sticky
        self._lock = self._accumulator.lock
        nat = _codec_impl.native
        if nat is not None and self._plain and type(self).send is Producer.send:
            # The compiled send(): ``send(topic, value)`` with a bytes value appends to the
            # sticky batch in C (clock, lock, append, future); any other call, or no open
            # sticky batch, runs the Python send() below. An instance attribute, so a
            # subclass that overrides send() is left alone.
            self.send = nat.Send(self, self._lock, self._sticky, FutureRecordMetadata, Producer.send)  # type: ignore[method-assign]
        self._sender.start()

    def _make_metadata(
        self, bootstrap_servers: Any, zookeeper: str | None, retry_backoff_ms: int, request_timeout_ms: int
    ) -> ClusterMetadata:
        """The metadata seam: bootstrap gRPC polling now; a ZooKeeper source in cluster mode."""
        if zookeeper is not None:
            return zookeeper_metadata(zookeeper, retry_backoff_ms)
        source = GrpcMetadataSource(self._rpc, parse_bootstrap(bootstrap_servers), request_timeout_ms)
        return ClusterMetadata(source, retry_backoff_ms)

    def _init_producer_id(self, producer_id: int, producer_epoch: int) -> tuple[int, int]:
        """InitProducerId from the first broker that answers (live brokers, else the
        bootstrap servers); raises the last error when none does."""
        req = annal_pb2.InitProducerIdRequest()
        if producer_id >= 0:
            req.producer_id = producer_id
            req.producer_epoch = producer_epoch
        addresses = [f"{b.host}:{b.port}" for _, b in sorted(self._metadata.brokers().items())]
        if not addresses:
            addresses = parse_bootstrap(self.config["bootstrap_servers"])
        last: AnnalError = BrokerNotAvailableError("no broker to ask for a producer id")
        for address in addresses:
            try:
                resp = self._rpc.call(address, "InitProducerId", req)
            except AnnalError as err:
                last = err
                continue
            return int(resp.producer_id), int(resp.producer_epoch)
        raise last

    def _on_metadata(self, md: ClusterMetadata) -> None:
        for topic in md.topics():
            n = md.partition_count(topic)
            if n:
                self._accumulator.set_partition_count(topic, n)
                # Keyless records go only to partitions whose leader is alive (keyed ones
                # keep key -> partition and wait for the leader to come back).
                desc = md.topic(topic)
                live = [pm.partition for pm in desc.partitions if pm.leader >= 0 and md.is_alive(pm.leader)] if desc else []
                self._accumulator.set_available_partitions(topic, live if 0 < len(live) < n else None)

    # -- sending ------------------------------------------------------------------------------------

    def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes | None]] | None = None,
        timestamp_ms: int | None = None,
    ) -> FutureRecordMetadata:
        """Queue one record for ``topic`` and return its future ``RecordMetadata``.

        ``value`` and ``key`` are bytes (or None) unless serializers were given; ``headers`` a
        list of ``(str, bytes | None)``; ``timestamp_ms`` defaults to now. The partition is
        ``partition`` if given, else the key's hash, else the topic's sticky partition (see
        ``_partitioner.py``). Blocks up to ``max_block_ms`` while the topic's metadata is
        unknown or ``buffer_memory`` is full. Raises ``ProducerClosedError`` after close,
        ``TypeError`` for values of the wrong type, ``UnknownTopicOrPartitionError`` for a
        topic or partition that does not exist.
        """
        if (
            type(value) is bytes
            and key is None
            and partition is None
            and headers is None
            and timestamp_ms is None
            and self._plain
        ):
            # The hot path: plain bytes, no key, partition, headers or timestamp. Written out
            # here rather than in a helper, since a Python call costs as much as this body.
            ts = _time_ns() // 1000000
            lock = self._lock
            lock.acquire()
            try:  # released even if topic is unhashable (the slow path then explains)
                batch = self._sticky.get(topic)
                if batch is not None:
                    delta = batch.append_value(ts, value)
                    if delta >= 0:
                        return _FRM((batch, delta, ts))
            except TypeError:
                pass
            finally:
                lock.release()
            return self._send_slow(topic, value, None, None, None, ts)
        if self._closed:
            raise ProducerClosedError("send() on a closed producer")
        if self._value_serializer is not None:
            value = self._value_serializer(value)
        if timestamp_ms is None:
            timestamp_ms = _time_ns() // 1000000
        elif isinstance(timestamp_ms, bool) or not isinstance(timestamp_ms, int) or timestamp_ms < 0:
            raise TypeError(f"timestamp_ms must be a non-negative int (ms since the epoch), not {timestamp_ms!r}")
        if key is None and partition is None and headers is None and type(value) is bytes:
            # A keyless record appended to the topic's sticky batch (serialized values and
            # explicit timestamps come here; plain bytes take the path above).
            lock = self._lock
            lock.acquire()
            try:
                batch = self._sticky.get(topic)
                if batch is not None:
                    delta = batch.append(timestamp_ms, None, value, None)
                    if delta >= 0:
                        return _FRM((batch, delta, timestamp_ms))
            except TypeError:
                pass  # an unhashable topic: _send_slow says what is wrong with it
            finally:
                lock.release()
        return self._send_slow(topic, value, key, partition, headers, timestamp_ms)

    def _send_slow(
        self,
        topic: str,
        value: Any,
        key: Any,
        partition: int | None,
        headers: Sequence[tuple[str, bytes | None]] | None,
        timestamp_ms: int,
    ) -> FutureRecordMetadata:
        if not isinstance(topic, str) or not topic:
            raise TypeError(f"topic must be a non-empty str, not {topic!r}")
        if self._key_serializer is not None and key is not None:
            key = self._key_serializer(key)
        key_b = _as_bytes("key", key)
        value_b = _as_bytes("value", value)
        hdrs: list[tuple[str, bytes | None]] | None = None
        if headers is not None:
            hdrs = []
            for h in headers:
                if not isinstance(h, tuple) or len(h) != 2 or not isinstance(h[0], str):
                    raise TypeError(f"headers must be (str, bytes | None) pairs, not {h!r}")
                hdrs.append((h[0], _as_bytes("header value", h[1])))
            if not hdrs:
                hdrs = None
        n = self._metadata.wait_for_topic(topic, self._max_block_ms)
        self._accumulator.set_partition_count(topic, n)
        p: int | None
        if partition is not None:
            if isinstance(partition, bool) or not isinstance(partition, int):
                raise TypeError(f"partition must be an int, not {type(partition).__name__}")
            if not 0 <= partition < n:
                raise UnknownTopicOrPartitionError(
                    f"topic {topic!r} has partitions 0..{n - 1}; there is no partition {partition}",
                    topic=topic,
                    partition=partition,
                )
            p = partition
        elif key_b is not None:
            p = partition_for_key(key_b, n)
        else:
            p = None  # the topic's sticky partition, chosen by the accumulator
        if self._closed:
            raise ProducerClosedError("send() on a closed producer")
        if self._sender.fatal_error is not None:
            raise ProducerClosedError(f"the producer's sender thread failed: {self._sender.fatal_error!r}")
        return self._accumulator.append(topic, p, n, timestamp_ms, key_b, value_b, hdrs, self._max_block_ms)

    def flush(self, timeout: float | None = None) -> None:
        """Send everything queued now (ignoring linger_ms) and wait until every record sent
        before this call is acknowledged or failed. Raises ``KafkaTimeoutError`` after
        ``timeout`` seconds."""
        acc = self._accumulator
        acc.begin_flush()
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            for batch in acc.incomplete_batches():
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not batch.result.wait(left):
                    raise KafkaTimeoutError(f"flush did not complete within {timeout} s")
        finally:
            acc.end_flush()

    def close(self, timeout: float | None = None) -> None:
        """Send everything queued, wait for the answers, and stop the sender thread.

        With ``timeout`` (seconds), records still unanswered when it passes fail with
        ``ProducerClosedError`` (``timeout=0`` fails them at once). Idempotent; ``send`` after
        ``close`` raises ``ProducerClosedError``.
        """
        if self._closed and not self._sender.is_alive():
            return
        self._closed = True
        self._plain = False
        if "send" in self.__dict__:
            self.send.disable()  # type: ignore[attr-defined]  # the compiled send(): Python's from now on
        self._accumulator.closing = True
        if timeout is not None and timeout <= 0:
            self._sender.force_close()
        else:
            self._sender.initiate_close()
        self._sender.join(timeout)
        if self._sender.is_alive():
            self._sender.force_close()
            self._sender.join()
        self._metadata.close()
        self._rpc.close()

    # -- metadata -------------------------------------------------------------------------------------

    def partitions_for(self, topic: str) -> set[int]:
        """The partition numbers of ``topic`` (waiting up to max_block_ms for metadata)."""
        self._metadata.wait_for_topic(topic, self._max_block_ms)
        return self._metadata.partitions_for(topic) or set()

    @property
    def closed(self) -> bool:
        """True once ``close`` was called."""
        return self._closed

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not self._closed:
                self._sender.force_close()
        except Exception:
            pass
