"""One TCP connection to a broker's binary data port (FETCH and PRODUCE frames).

The bytes on the wire are built and parsed by ``annal.protocol.framing`` (sans-I/O); this
module only moves them. The socket is non-blocking: a request is written whole
before ``send`` returns (waiting for the socket to drain, at most ``request_timeout_ms``); answers
are read (``recv_into`` straight into the
frame's own buffer, so a large FETCH response is received with no copy) whenever the owner's
``select`` says the socket is readable. Answers come back in request order, so each frame is
matched with the oldest request in flight, and its correlation id is checked.

Thread-safety: not thread-safe; a connection belongs to one thread (the producer's sender or
the consumer's fetcher).
"""

from __future__ import annotations

import select
import socket
import time
from collections import deque
from typing import Any, Callable, Sequence

from annal.errors import NetworkError, RemoteProtocolError
from annal.protocol.framing import RESPONSE_HEADER_SIZE, FrameReader, decode_response_header

__all__ = ["DataConnection", "InFlight", "send_parts"]


class InFlight:
    """A request waiting for its answer: its correlation id, send time and the caller's
    context (the batches of a PRODUCE, the partitions of a FETCH)."""

    __slots__ = ("correlation_id", "sent_at", "context", "expects_response")

    def __init__(self, correlation_id: int, context: Any, expects_response: bool = True) -> None:
        self.correlation_id = correlation_id
        self.sent_at = time.monotonic()
        self.context = context
        self.expects_response = expects_response


_IOV_MAX = 512  # buffers per sendmsg call (Linux allows 1024)


def send_parts(
    sock: socket.socket,
    parts: Sequence[bytes | bytearray | memoryview],
    wait_writable: Callable[[], None] | None = None,
) -> None:
    """Write every byte of ``parts`` to ``sock`` with ``sendmsg``: the kernel gathers the
    buffers, so a request made of a header and the record bytes is never joined into one
    buffer. On a non-blocking socket that is full, ``wait_writable`` is called (it waits, or
    raises to give up) and the write goes on. Raises OSError as the socket does."""
    pending = [memoryview(p).cast("B") for p in parts if len(p)]
    while pending:
        try:
            n = sock.sendmsg(pending[:_IOV_MAX])
        except (BlockingIOError, InterruptedError):
            if wait_writable is not None:
                wait_writable()
            continue
        # Drop what was written: whole buffers, then the front of a partly written one.
        i = 0
        while i < len(pending) and n >= len(pending[i]):
            n -= len(pending[i])
            i += 1
        del pending[:i]
        if n:
            pending[0] = pending[0][n:]


class DataConnection:
    """A connection to broker ``node_id`` at ``host:port`` (its data port)."""

    def __init__(
        self,
        node_id: int,
        host: str,
        port: int,
        connect_timeout_ms: int = 10000,
        request_timeout_ms: int = 30000,
        max_frame_bytes: int = 512 * 1024 * 1024,
        recv_buffer_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.node_id = node_id
        self.host = host
        self.port = port
        self.request_timeout_ms = request_timeout_ms
        self.in_flight: deque[InFlight] = deque()
        self._next_cid = 0
        self._reader = FrameReader(
            max_frame_bytes, RESPONSE_HEADER_SIZE, scratch_bytes=256 * 1024, error_cls=RemoteProtocolError
        )
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout_ms / 1000.0)
        except OSError as exc:
            raise NetworkError(f"cannot connect to broker {node_id} at {host}:{port}: {exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer_bytes)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, recv_buffer_bytes)
        except OSError:
            pass
        sock.setblocking(False)
        self.sock: socket.socket | None = sock

    def fileno(self) -> int:
        """The socket's descriptor (for ``select``); -1 once closed."""
        return self.sock.fileno() if self.sock is not None else -1

    @property
    def closed(self) -> bool:
        """True once closed (by us or after a failure)."""
        return self.sock is None

    def next_correlation_id(self) -> int:
        """A fresh correlation id for the next request."""
        self._next_cid = (self._next_cid + 1) & 0x7FFFFFFF
        return self._next_cid

    def send(self, parts: Sequence[bytes | bytearray | memoryview], inflight: InFlight) -> None:
        """Write one whole request frame; on failure the connection is closed and
        ``NetworkError`` raised (the request may or may not have reached the broker)."""
        sock = self.sock
        if sock is None:
            raise NetworkError(f"connection to broker {self.node_id} is closed")
        deadline = time.monotonic() + self.request_timeout_ms / 1000.0

        def wait_writable() -> None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"request not written within {self.request_timeout_ms} ms")
            select.select([], [sock], [], left)

        try:
            send_parts(sock, parts, wait_writable)
        except OSError as exc:
            self.close()
            raise NetworkError(f"send to broker {self.node_id} failed: {exc}") from None
        if inflight.expects_response:
            self.in_flight.append(inflight)

    def receive(self) -> list[tuple[InFlight, memoryview]]:
        """Read what is available without blocking; return each complete answer with the
        request it answers. Raises ``NetworkError`` (and closes) if the broker closed the
        connection or sent a frame that does not match the oldest request."""
        sock = self.sock
        if sock is None:
            raise NetworkError(f"connection to broker {self.node_id} is closed")
        reader = self._reader
        out: list[tuple[InFlight, memoryview]] = []
        while True:
            buf = reader.get_buffer()
            try:
                n = sock.recv_into(buf, len(buf))
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.close()
                raise NetworkError(f"receive from broker {self.node_id} failed: {exc}") from None
            if n == 0:
                self.close()
                raise NetworkError(f"broker {self.node_id} closed the connection")
            reader.buffer_updated(n)
            if n < len(buf):
                break
        while True:
            try:
                frame = reader.next_frame()
            except RemoteProtocolError as exc:
                self.close()
                raise RemoteProtocolError(f"bad answer from broker {self.node_id}: {exc}") from None
            except NetworkError as exc:
                self.close()
                raise NetworkError(f"connection to broker {self.node_id} broke mid-answer: {exc}") from None
            if frame is None:
                break
            cid, _code = decode_response_header(frame)
            if not self.in_flight:
                self.close()
                raise RemoteProtocolError(f"broker {self.node_id} answered a request never sent (cid {cid})")
            req = self.in_flight.popleft()
            if cid != req.correlation_id:
                self.close()
                raise RemoteProtocolError(
                    f"broker {self.node_id} answered correlation id {cid}, expected {req.correlation_id}"
                )
            out.append((req, frame))
        return out

    def timed_out(self, now: float) -> bool:
        """True if the oldest request in flight has waited more than request_timeout_ms."""
        return bool(self.in_flight) and now - self.in_flight[0].sent_at > self.request_timeout_ms / 1000.0

    def close(self) -> None:
        """Close the socket (requests in flight stay listed for the owner to fail over)."""
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
