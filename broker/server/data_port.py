"""The binary data port (``--fetch-port``): FETCH with long-poll answered by ``sendfile``, and
PRODUCE. The bytes are specified in docs/protocol.md and built/parsed by
``broker.protocol.framing``; this module only moves them.

One asyncio task per connection reads a frame, answers it completely, then reads the next, so
pipelined requests are answered in order. Frames are received straight into their own buffer
(``FrameReader.get_buffer`` + ``sock_recv_into``); a PRODUCE request's batches are appended from
that buffer without a copy. A FETCH answer is the fixed fields of each partition followed by
its batches sent with ``os.sendfile`` from the segment file: record bytes never pass through
Python. (``loop.sock_sendfile`` is not used: it seeks the shared file object afterwards.)

Long-poll: when fewer than ``min_bytes`` are available the task registers a wake-up with the
broker for the partitions it named (any append to one of them calls it, from whatever thread
appended) and a single timer for ``max_wait_ms``; it sleeps on an ``asyncio.Event`` until one of
them fires. An idle long-poll costs one timer and a few dict entries, no CPU.

Failure handling: a frame whose length prefix is out of bounds, or that does not parse, is
answered with INVALID_REQUEST and the connection closed; a peer that stops in the middle of a
frame is disconnected after ``request_timeout_ms``; a peer that disconnects mid-``sendfile`` only
ends its own connection. Nothing a client sends can take the broker down.

Thread-safety: everything here runs on the event loop thread, except the wake-up callbacks,
which hop onto the loop with ``call_soon_threadsafe`` when called from another thread.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import threading
import time
from typing import Any

from broker.errors import (
    AnnalError,
    InvalidRequestError,
    NetworkError,
    NotLeaderError,
    OffsetOutOfRangeError,
    StorageError,
)
from broker.protocol import framing as fr
from broker.server.broker import Broker, read_result_size, release_read

__all__ = ["DataPortServer"]

log = logging.getLogger("annal.data_port")


class _Connection:
    __slots__ = ("sock", "fd", "peer", "reader", "task", "busy", "timer", "timed_out")

    def __init__(self, sock: socket.socket, peer: str, reader: fr.FrameReader) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.reader = reader
        self.task: asyncio.Task[None] | None = None
        self.busy = False
        self.timer: asyncio.TimerHandle | None = None
        self.timed_out = False


class DataPortServer:
    """Serves the data port on one event loop. Not thread-safe: call its methods from the loop."""

    def __init__(
        self,
        broker: Broker,
        host: str,
        port: int,
        *,
        request_timeout_ms: int,
        max_request_bytes: int,
        fetch_max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.broker = broker
        self.host = host
        self.port = port
        self.request_timeout = request_timeout_ms / 1000
        self.max_request_bytes = max_request_bytes
        self.fetch_max_bytes = fetch_max_bytes
        self._lsock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._accept_task: asyncio.Task[None] | None = None
        self._conns: set[_Connection] = set()
        self._closing = False

    # ------------------------------------------------------------------ lifecycle

    def bind(self) -> int:
        """Create the listening socket; returns the bound port (useful with port 0)."""
        lsock = socket.create_server((self.host, self.port), backlog=1024, reuse_port=False)
        lsock.setblocking(False)
        self._lsock = lsock
        self.port = lsock.getsockname()[1]
        return self.port

    def start(self) -> None:
        """Start accepting connections (call from the loop, after ``bind``)."""
        assert self._lsock is not None, "bind() first"
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._accept_task = self._loop.create_task(self._accept_loop(), name="data-port-accept")

    async def close(self, timeout: float = 10.0) -> None:
        """Stop accepting, close idle connections, let requests in flight finish (up to
        ``timeout`` seconds), then close the rest."""
        self._closing = True
        if self._accept_task is not None:
            self._accept_task.cancel()
            await asyncio.gather(self._accept_task, return_exceptions=True)
        if self._lsock is not None:
            self._lsock.close()
            self._lsock = None
        tasks = []
        for conn in list(self._conns):
            if conn.task is None:
                continue
            if not conn.busy:
                conn.task.cancel()
            tasks.append(conn.task)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)

    # ------------------------------------------------------------------ connections

    async def _accept_loop(self) -> None:
        loop = self._loop
        assert loop is not None and self._lsock is not None
        while not self._closing:
            try:
                sock, addr = await loop.sock_accept(self._lsock)
            except asyncio.CancelledError:
                raise
            except OSError as e:
                if self._closing:
                    return
                log.warning("data port accept failed: %s", e)
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: back off instead of spinning on a ready listener.
                    await asyncio.sleep(0.1)
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
            reader = fr.FrameReader(max_frame_bytes=self.max_request_bytes, min_frame_bytes=fr.REQUEST_HEADER_SIZE)
            conn = _Connection(sock, peer, reader)
            self._conns.add(conn)
            self.broker.metrics.connections.inc()
            conn.task = loop.create_task(self._serve(conn))

    async def _serve(self, conn: _Connection) -> None:
        loop = self._loop
        assert loop is not None
        try:
            while not self._closing:
                try:
                    frame = await self._read_frame(conn)
                except InvalidRequestError as err:  # bad length prefix: correlation id unknown
                    log.info("data port %s: %s; closing the connection", conn.peer, err.message)
                    await self._send(conn, fr.encode_error_response(-1, err.code))
                    return
                if frame is None:
                    return
                conn.busy = True
                try:
                    try:
                        req = fr.decode_request(frame)
                    except InvalidRequestError as err:
                        cid = int(err.details.get("correlation_id", -1))
                        log.info("data port %s: bad request (correlation id %d): %s; closing the connection",
                                 conn.peer, cid, err.message)
                        await self._send(conn, fr.encode_error_response(cid, err.code))
                        return
                    if isinstance(req, fr.FetchRequest):
                        await self._fetch(conn, req)
                    elif not await self._produce(conn, req):
                        return
                finally:
                    conn.busy = False
                    del frame
        except asyncio.CancelledError:
            if not conn.timed_out:
                raise
            log.info(
                "data port %s: no complete request within request_timeout_ms=%d (%d bytes of a frame received); "
                "closing the connection",
                conn.peer, int(self.request_timeout * 1000), conn.reader.buffered_bytes,
            )
        except NetworkError as err:
            log.info("data port %s: %s", conn.peer, err.message)
        except (ConnectionError, TimeoutError) as err:
            log.info("data port %s: connection lost: %s", conn.peer, err)
        except OSError as err:
            log.warning("data port %s: socket error: %s", conn.peer, err)
        except Exception:
            log.exception("data port %s: unexpected error; closing the connection", conn.peer)
        finally:
            if conn.timer is not None:
                conn.timer.cancel()
            self._conns.discard(conn)
            self.broker.metrics.connections.dec()
            try:
                conn.sock.close()
            except OSError:
                pass

    async def _read_frame(self, conn: _Connection) -> memoryview | None:
        """The next request frame, or None at a clean end of stream."""
        reader = conn.reader
        loop = self._loop
        assert loop is not None
        while True:
            frame = reader.next_frame()
            if frame is not None:
                if conn.timer is not None:
                    conn.timer.cancel()
                    conn.timer = None
                return frame
            if reader.eof:
                return None
            if reader.in_frame and conn.timer is None:
                conn.timer = loop.call_later(self.request_timeout, self._on_read_timeout, conn)
            n = await loop.sock_recv_into(conn.sock, reader.get_buffer())
            reader.buffer_updated(n)

    def _on_read_timeout(self, conn: _Connection) -> None:
        conn.timer = None
        if conn.task is not None and not conn.busy:
            conn.timed_out = True
            conn.task.cancel()

    # ------------------------------------------------------------------ sending

    async def _send(self, conn: _Connection, data: bytes) -> None:
        assert self._loop is not None
        await self._loop.sock_sendall(conn.sock, data)

    async def _sendfile(self, conn: _Connection, fd: int, offset: int, count: int) -> None:
        """Send ``count`` bytes of file ``fd`` from ``offset`` with ``os.sendfile``."""
        loop = self._loop
        assert loop is not None
        while count > 0:
            try:
                sent = os.sendfile(conn.fd, fd, offset, count)
            except BlockingIOError:
                fut = loop.create_future()
                loop.add_writer(conn.fd, _resolve, fut)
                try:
                    await fut
                finally:
                    loop.remove_writer(conn.fd)
                continue
            if sent == 0:
                # The file is shorter than the index said: the connection's frame cannot be
                # completed any more, so it must be dropped.
                raise StorageError(f"segment file ended {count} bytes early during sendfile")
            offset += sent
            count -= sent

    # ------------------------------------------------------------------ FETCH

    def _wake_for(self, event: asyncio.Event) -> Any:
        loop = self._loop
        assert loop is not None
        loop_thread = self._loop_thread

        def wake() -> None:
            if threading.get_ident() == loop_thread:
                event.set()
            else:
                try:
                    loop.call_soon_threadsafe(event.set)
                except RuntimeError:  # loop closed during shutdown
                    pass

        return wake

    def _read_all(self, req: fr.FetchRequest) -> list[tuple[fr.FetchPartition, Any, AnnalError | None]]:
        out = []
        broker = self.broker
        cap = self.fetch_max_bytes
        for p in req.partitions:
            try:
                out.append((p, broker.read(p.topic, p.partition, p.offset, min(p.max_bytes, cap)), None))
            except AnnalError as err:
                out.append((p, None, err))
        return out

    async def _fetch(self, conn: _Connection, req: fr.FetchRequest) -> None:
        loop = self._loop
        assert loop is not None
        broker = self.broker
        started = time.perf_counter()
        outcome = "NONE"
        wait = req.max_wait_ms > 0 and req.min_bytes > 0 and bool(req.partitions)
        event: asyncio.Event | None = None
        keys = None
        wake = None
        timer = None
        expired = False
        results: list[tuple[fr.FetchPartition, Any, AnnalError | None]] = []
        try:
            if wait:
                event = asyncio.Event()
                wake = self._wake_for(event)
                keys = broker.add_waiter(((p.topic, p.partition) for p in req.partitions), wake)

                def expire() -> None:
                    nonlocal expired
                    expired = True
                    event.set()

                timer = loop.call_later(req.max_wait_ms / 1000, expire)
            waiting = False
            try:
                while True:
                    if event is not None:
                        event.clear()
                    results = self._read_all(req)
                    if not wait or expired or broker.shutting_down or self._closing:
                        break
                    if any(err is not None for _, _, err in results):
                        break
                    if sum(read_result_size(r) for _, r, _ in results if r is not None) >= req.min_bytes:
                        break
                    for _, r, _ in results:
                        release_read(r)
                    results = []
                    if not waiting:
                        waiting = True
                        broker.metrics.long_polls.inc()
                    assert event is not None
                    await event.wait()
            finally:
                if waiting:
                    broker.metrics.long_polls.dec()
                if timer is not None:
                    timer.cancel()
                if keys is not None and wake is not None:
                    broker.remove_waiter(keys, wake)
            await self._send_fetch_response(conn, req, results)
        except BaseException as exc:
            outcome = "NETWORK_EXCEPTION" if isinstance(exc, (OSError, asyncio.CancelledError)) else "UNKNOWN"
            raise
        finally:
            for _, r, _ in results:
                release_read(r)
            broker.metrics.observe_request("Fetch", "data", outcome, time.perf_counter() - started)

    async def _send_fetch_response(
        self, conn: _Connection, req: fr.FetchRequest, results: list[tuple[fr.FetchPartition, Any, AnnalError | None]]
    ) -> None:
        broker = self.broker
        heads: list[bytes] = []
        sizes: list[int] = []
        budget = self.fetch_max_bytes
        have_data = False
        for i, (p, r, err) in enumerate(results):
            if err is not None:
                hw = lso = -1
                if isinstance(err, OffsetOutOfRangeError):
                    hw = err.log_end_offset if err.log_end_offset is not None else -1
                    lso = err.log_start_offset if err.log_start_offset is not None else -1
                heads.append(fr.encode_fetch_partition_head(p.topic, p.partition, err.code, err.message, hw, lso, 0))
                sizes.append(0)
                if not isinstance(err, (NotLeaderError, OffsetOutOfRangeError)) and not err.retriable:
                    log.info("data port %s: fetch %s-%d: %s", conn.peer, p.topic[:100], p.partition, err.message)
                continue
            size = read_result_size(r)
            if have_data and size > budget:
                # Over the response budget: answer this partition empty (no error); the
                # consumer asks again. The first partition with data is always sent whole.
                release_read(r)
                results[i] = (p, None, None)
                size = 0
            budget -= size
            have_data = have_data or size > 0
            heads.append(fr.encode_fetch_partition_head(p.topic, p.partition, 0, "", r.high_watermark,
                                                        r.log_start_offset, size))
            sizes.append(size)
        body = sum(len(h) for h in heads) + sum(sizes)
        pending = [fr.encode_fetch_response_head(req.correlation_id, body, len(heads))]
        for (p, r, _), head, size in zip(results, heads, sizes):
            pending.append(head)
            if size:
                await self._send(conn, b"".join(pending))
                pending = []
                for chunk in r.chunks:
                    await self._sendfile(conn, chunk.fd, chunk.position, chunk.size)
                broker.metrics.record_fetch(p.topic, size)
        if pending:
            await self._send(conn, b"".join(pending))

    # ------------------------------------------------------------------ PRODUCE

    def _produce_sync(self, req: fr.ProduceRequest) -> list[fr.ProducePartitionResult]:
        out = []
        for p in req.partitions:
            try:
                res = self.broker.append(p.topic, p.partition, (p.records,), req.acks)
                base = res.base_offsets[0] if res.base_offsets else -1
                out.append(fr.ProducePartitionResult(p.topic, p.partition, 0, "", base, res.log_end_offset, -1))
            except AnnalError as err:
                leader = err.details.get("leader") if isinstance(err, NotLeaderError) else None
                out.append(fr.ProducePartitionResult(
                    p.topic, p.partition, err.code, err.message, -1, -1,
                    getattr(leader, "broker_id", -1) if leader is not None else -1,
                ))
        return out

    async def _produce(self, conn: _Connection, req: fr.ProduceRequest) -> bool:
        """Append and answer; False when the connection must be closed (acks=0 and an error,
        so that the producer notices, as Kafka does)."""
        loop = self._loop
        assert loop is not None
        started = time.perf_counter()
        outcome = "NONE"
        try:
            if req.acks == -1:
                # fdatasync must not stall the loop (and every other connection on it).
                results = await loop.run_in_executor(None, self._produce_sync, req)
            else:
                results = self._produce_sync(req)
            errors = [r for r in results if r.error_code]
            if errors:
                outcome = "PARTITION_ERRORS"
                for r in errors:
                    if r.error_code not in (3, 6):  # unknown partition / not leader are routine
                        log.info("data port %s: produce to %s-%d refused: %s", conn.peer, r.topic[:100],
                                 r.partition, r.error_message)
            if req.acks == 0:
                if errors:
                    log.info("data port %s: closing the acks=0 connection after a refused produce", conn.peer)
                    return False
                return True
            await self._send(conn, fr.encode_produce_response(fr.ProduceResponse(req.correlation_id, 0, results)))
            return True
        finally:
            self.broker.metrics.observe_request("Produce", "data", outcome, time.perf_counter() - started)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
