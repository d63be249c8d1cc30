"""gRPC calls to brokers (control plane: metadata, topics, offsets), with Annal's errors.

A broker reports a whole-call failure as a gRPC status plus the trailing metadata
``annal-error-code`` / ``annal-error-reason``; ``call`` turns it back into the
``annal.errors`` class for that code. Failures to reach the broker become
``BrokerNotAvailableError`` (retriable), an expired deadline ``RequestTimedOutError``.

Thread-safe: gRPC channels are; the channel map is guarded by a lock.
"""

from __future__ import annotations

import threading
from typing import Any, Iterable

import grpc

from annal.errors import (
    AnnalError,
    BrokerNotAvailableError,
    LocalUsageError,
    RequestTimedOutError,
    UnknownServerError,
    for_code,
    for_reason,
)
from annal.protocol import annal_pb2_grpc

__all__ = ["RpcClient", "parse_bootstrap", "map_rpc_error"]


def parse_bootstrap(bootstrap_servers: str | Iterable[str]) -> list[str]:
    """``"h1:9092,h2:9092"`` or a list of ``"host:port"`` -> a list of addresses.

    Raises ``LocalUsageError`` for an empty list or an address without a valid port.
    """
    if isinstance(bootstrap_servers, str):
        items = [s.strip() for s in bootstrap_servers.split(",")]
    elif isinstance(bootstrap_servers, Iterable):
        items = [str(s).strip() for s in bootstrap_servers]
    else:
        raise LocalUsageError(
            f"bootstrap_servers must be 'host:port[,host:port...]' or a list of them, "
            f"not {type(bootstrap_servers).__name__}"
        )
    out = []
    for item in items:
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise LocalUsageError(f"bootstrap server {item!r} is not 'host:port'")
        out.append(f"{host}:{int(port)}")
    if not out:
        raise LocalUsageError("bootstrap_servers is empty")
    return out


def map_rpc_error(exc: grpc.RpcError) -> AnnalError:
    """The Annal error for a failed gRPC call."""
    code_value: int | None = None
    reason: str | None = None
    details = ""
    status: Any = None
    try:
        status = exc.code()  # type: ignore[attr-defined]
        details = exc.details() or ""  # type: ignore[attr-defined]
        for key, value in exc.trailing_metadata() or ():  # type: ignore[attr-defined]
            if key == "annal-error-code":
                code_value = int(value)
            elif key == "annal-error-reason":
                reason = str(value)
    except Exception:  # a locally generated RpcError may lack some accessors
        pass
    if code_value is not None:
        return for_code(code_value)(details)
    if reason is not None:
        return for_reason(reason)(details)
    if status in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return BrokerNotAvailableError(details or "broker not available")
    if status == grpc.StatusCode.DEADLINE_EXCEEDED:
        return RequestTimedOutError(details or "request timed out")
    return UnknownServerError(f"{status}: {details}")


class RpcClient:
    """One gRPC channel per broker address, created on first use."""

    def __init__(self, request_timeout_ms: int = 30000) -> None:
        self.request_timeout_ms = request_timeout_ms
        self._lock = threading.Lock()
        self._channels: dict[str, tuple[grpc.Channel, annal_pb2_grpc.AnnalStub]] = {}
        self._closed = False

    def stub(self, address: str) -> annal_pb2_grpc.AnnalStub:
        """The stub for ``address`` ("host:port")."""
        with self._lock:
            if self._closed:
                raise LocalUsageError("client is closed")
            entry = self._channels.get(address)
            if entry is None:
                channel = grpc.insecure_channel(
                    address,
                    options=[
                        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                        ("grpc.max_send_message_length", 64 * 1024 * 1024),
                        ("grpc.enable_retries", 0),
                        # Reconnect soon after a broker restarts (gRPC's default backoff grows
                        # to minutes); the client's own retry_backoff_ms paces the calls.
                        ("grpc.initial_reconnect_backoff_ms", 100),
                        ("grpc.min_reconnect_backoff_ms", 100),
                        ("grpc.max_reconnect_backoff_ms", 1000),
                    ],
                )
                entry = (channel, annal_pb2_grpc.AnnalStub(channel))
                self._channels[address] = entry
            return entry[1]

    def call(self, address: str, method: str, request: Any, timeout_ms: int | None = None) -> Any:
        """Call unary ``method`` (e.g. "Metadata") on the broker at ``address``."""
        stub = self.stub(address)
        timeout = (timeout_ms if timeout_ms is not None else self.request_timeout_ms) / 1000.0
        try:
            return getattr(stub, method)(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise map_rpc_error(exc) from None

    def forget(self, address: str) -> None:
        """Drop the channel to ``address`` (after the broker went away)."""
        with self._lock:
            entry = self._channels.pop(address, None)
        if entry is not None:
            entry[0].close()

    def close(self) -> None:
        """Close every channel. Idempotent."""
        with self._lock:
            self._closed = True
            entries = list(self._channels.values())
            self._channels.clear()
        for channel, _ in entries:
            channel.close()
