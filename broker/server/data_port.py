"""The binary data port (``--fetch-port``): FETCH with long-poll answered by ``sendfile``, and
PRODUCE. The bytes are specified in docs/protocol.md and built/parsed by
``broker.protocol.framing``; this module only moves them.

Each connection is an asyncio ``BufferedProtocol`` whose transport receives straight into the
frame being assembled (``FrameReader.get_buffer``), so a PRODUCE request's batches are appended
from the very buffer the kernel filled, and the socket stays registered with epoll for its whole
life (no per-request registration churn). One task per connection takes a frame, answers it
completely, then takes the next, so pipelined requests are answered in order. A FETCH answer is
the fixed fields of each partition followed by its batches sent with ``sendfile`` from the
segment file (asyncio's native ``loop.sendfile``): record bytes never pass through Python.

Long-poll: when fewer than ``min_bytes`` are available the task registers a wake-up with the
broker for the partitions it named (any append to one of them calls it, from whatever thread
appended) and a single timer for ``max_wait_ms``; it sleeps on a future until one of them fires.
An idle long-poll costs one timer and a few dict entries, no CPU; when the timer fires with no
append since the last read, that (empty) read is the answer, without reading again.

PRODUCE appends run on the loop's executor threads (``pwrite`` releases the GIL), so a write
into new page-cache pages, a segment roll or an ``fdatasync`` never stalls other connections.

Failure handling: a frame whose length prefix is out of bounds, or that does not parse, is
answered with INVALID_REQUEST and the connection closed; a peer that stops in the middle of a
frame is disconnected after ``request_timeout_ms``; a peer that disconnects mid-``sendfile`` only
ends its own connection. Nothing a client sends can take the broker down.

Thread-safety: everything here runs on the event loop thread, except the wake-up callbacks,
which hop onto the loop with ``call_soon_threadsafe`` when called from another thread.
"""

from __future__ import annotations

import asyncio
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


class _Connection(asyncio.BufferedProtocol):
    """One data port connection: the transport reads straight into the ``FrameReader``'s
    buffers (``get_buffer``/``buffer_updated``), and a task (``DataPortServer._serve``) takes
    frames and answers them one at a time. Reading pauses while a few frames wait unanswered
    (a client pipelining faster than it is served) and resumes as they are taken."""

    # Pause reading while this much is received but not yet answered.
    MAX_PENDING_BYTES = 16 * 1024 * 1024
    MAX_PENDING_FRAMES = 64
    SEND_BUFFER_BYTES = 4 * 1024 * 1024

    def __init__(self, server: "DataPortServer") -> None:
        self.server = server
        self.reader = fr.FrameReader(max_frame_bytes=server.max_request_bytes, min_frame_bytes=fr.REQUEST_HEADER_SIZE)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.task: asyncio.Task[None] | None = None
        self.busy = False
        self.timer: asyncio.TimerHandle | None = None
        self.timed_out = False
        self.lost = False
        self._frame_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._read_paused = False

    # -- protocol callbacks (event loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # A bigger send buffer means fewer wake-ups per sendfile'd megabyte (the kernel
            # doubles the value; autotuning stops at tcp_wmem's maximum, 4 MiB by default).
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.SEND_BUFFER_BYTES)
            except OSError:
                pass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.server._connection_made(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.reader.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.reader.buffer_updated(nbytes)
        r = self.reader
        if r.pending_frames and (r.pending_frames >= self.MAX_PENDING_FRAMES or r.pending_bytes >= self.MAX_PENDING_BYTES):
            self._pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self.reader.receive_data(b"")
        self._wake_reader()
        return True  # keep the write side open: requests received before the EOF get answers

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._wake_reader()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(ConnectionResetError("connection lost"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # -- used by the serving task

    def _wake_reader(self) -> None:
        w = self._frame_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None and not self.lost:
            self._read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_paused and self.transport is not None and not self.lost:
            self._read_paused = False
            self.transport.resume_reading()

    async def next_frame(self, loop: asyncio.AbstractEventLoop, timeout: float) -> memoryview | None:
        """The next request frame, or None at the end of the stream. Raises
        ``InvalidRequestError`` (bad length prefix), ``NetworkError`` (EOF mid-frame)."""
        reader = self.reader
        while True:
            frame = reader.next_frame()
            if frame is not None:
                if self.timer is not None and not reader.in_frame:
                    self.timer.cancel()
                    self.timer = None
                if self._read_paused and reader.pending_bytes < self.MAX_PENDING_BYTES // 2 \
                        and reader.pending_frames < self.MAX_PENDING_FRAMES // 2:
                    self._resume_reading()
                return frame
            if reader.eof or self.lost:
                if reader.in_frame and not reader.eof:
                    raise NetworkError("connection lost mid-frame")
                return None
            self._resume_reading()
            if reader.in_frame and self.timer is None:
                self.timer = loop.call_later(timeout, self.server._on_read_timeout, self)
            self._frame_waiter = loop.create_future()
            try:
                await self._frame_waiter
            finally:
                self._frame_waiter = None

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        if self.lost:
            raise ConnectionResetError("connection lost")
        self.transport.write(data)

    async def drain(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.lost:
            raise ConnectionResetError("connection lost")
        if self._write_paused:
            self._drain_waiter = loop.create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


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
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[_Connection] = set()
        self._closing = False
        self._long_polls = 0  # fetches waiting now (event loop thread only)
        metrics = broker.metrics
        metrics.long_poll_sources.append(lambda: self._long_polls)
        metrics.connection_sources.append(lambda: len(self._conns))
        self._observe_fetch = metrics.request_observer("Fetch", "data")
        self._observe_produce = metrics.request_observer("Produce", "data")

    # ------------------------------------------------------------------ lifecycle

    def bind(self) -> int:
        """Create the listening socket; returns the bound port (useful with port 0)."""
        lsock = socket.create_server((self.host, self.port), backlog=1024, reuse_port=False)
        lsock.setblocking(False)
        self._lsock = lsock
        self.port = lsock.getsockname()[1]
        return self.port

    async def start(self) -> None:
        """Start accepting connections (after ``bind``)."""
        assert self._lsock is not None, "bind() first"
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._server = await self._loop.create_server(
            lambda: _Connection(self), sock=self._lsock, backlog=1024, start_serving=True
        )

    async def close(self, timeout: float = 10.0) -> None:
        """Stop accepting, close idle connections, let requests in flight finish (up to
        ``timeout`` seconds), then close the rest."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        tasks = []
        for conn in list(self._conns):
            if conn.task is None:
                continue
            if not conn.busy:
                conn.task.cancel()
            else:
                conn._wake_reader()
            tasks.append(conn.task)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)

    # ------------------------------------------------------------------ connections

    def _connection_made(self, conn: _Connection) -> None:
        loop = self._loop
        assert loop is not None
        if self._closing:
            conn.close()
            return
        self._conns.add(conn)
        conn.task = loop.create_task(self._serve(conn))

    async def _serve(self, conn: _Connection) -> None:
        loop = self._loop
        assert loop is not None
        try:
            while not self._closing:
                try:
                    frame = await conn.next_frame(loop, self.request_timeout)
                except InvalidRequestError as err:  # bad length prefix: correlation id unknown
                    log.info("data port %s: %s; closing the connection", conn.peer, err.message)
                    conn.write(fr.encode_error_response(-1, err.code))
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
                        conn.write(fr.encode_error_response(cid, err.code))
                        return
                    if isinstance(req, fr.FetchRequest):
                        await self._fetch(conn, req)
                    elif not await self._produce(conn, req):
                        return
                    await conn.drain(loop)
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
            conn.close()

    def _on_read_timeout(self, conn: _Connection) -> None:
        conn.timer = None
        if conn.task is not None and not conn.busy:
            conn.timed_out = True
            conn.task.cancel()

    # ------------------------------------------------------------------ sending

    async def _sendfile(self, conn: _Connection, fd: int, offset: int, count: int) -> None:
        """Send ``count`` bytes of file ``fd`` from ``offset`` with ``os.sendfile`` (asyncio's
        native path: it waits for the transport's buffer to empty, then sendfiles on the
        socket). The lseek it does afterwards is harmless: segments use positional I/O only."""
        loop = self._loop
        assert loop is not None and conn.transport is not None
        if conn.lost:
            raise ConnectionResetError("connection lost")
        with os.fdopen(fd, "rb", buffering=0, closefd=False) as f:
            sent = await loop.sendfile(conn.transport, f, offset, count, fallback=False)
        if sent != count:
            # The file is shorter than the index said: this frame can no longer be completed,
            # so the connection must be dropped.
            raise StorageError(f"segment file ended {count - sent} bytes early during sendfile")

    # ------------------------------------------------------------------ FETCH

    def _read_all(self, req: fr.FetchRequest) -> list[tuple[fr.FetchPartition, Any, AnnalError | None]]:
        out: list[tuple[fr.FetchPartition, Any, AnnalError | None]] = []
        broker = self.broker
        cap = self.fetch_max_bytes
        for p in req.partitions:
            try:
                out.append((p, broker.read(p.topic, p.partition, p.offset, min(p.max_bytes, cap)), None))
            except AnnalError as err:
                out.append((p, None, err))
        return out

    async def _fetch(self, conn: _Connection, req: fr.FetchRequest) -> None:
        """Answer a FETCH, long-polling first when fewer than min_bytes are available.

        The wake-up is registered before the first read, and a fresh future is armed before
        every read, so an append that lands between a read and the wait still wakes it."""
        loop = self._loop
        assert loop is not None
        broker = self.broker
        started = time.perf_counter()
        outcome = "NONE"
        results: list[tuple[fr.FetchPartition, Any, AnnalError | None]] = []
        wait = req.max_wait_ms > 0 and req.min_bytes > 0 and bool(req.partitions) and not broker.shutting_down
        slot: list[Any] = [None, False, False]  # [future to resolve, expired, woken by an append]
        keys: list[tuple[str, int]] = []
        timer = None
        waiting = False
        loop_thread = self._loop_thread

        def resolve() -> None:
            fut = slot[0]
            if fut is not None and not fut.done():
                fut.set_result(None)

        def wake() -> None:  # any thread: called by every append to a named partition
            slot[2] = True
            if threading.get_ident() == loop_thread:
                resolve()
            else:
                try:
                    loop.call_soon_threadsafe(resolve)
                except RuntimeError:  # loop closed during shutdown
                    pass

        def expire() -> None:
            slot[1] = True
            resolve()

        try:
            if wait:
                keys = [(p.topic, p.partition) for p in req.partitions]
                broker.add_waiter(keys, wake)
                timer = loop.call_later(req.max_wait_ms / 1000, expire)
            while True:
                if wait:
                    slot[0] = loop.create_future()
                    slot[2] = False
                results = self._read_all(req)
                if not wait or slot[1] or broker.shutting_down or self._closing:
                    break
                if any(err is not None for _, _, err in results):
                    break
                available = sum(read_result_size(r) for _, r, _ in results if r is not None)
                if available >= req.min_bytes:
                    break
                if available:
                    # Do not pin segment handles while waiting; read again when woken.
                    for _, r, _ in results:
                        release_read(r)
                    results = []
                if not waiting:
                    waiting = True
                    self._long_polls += 1
                await slot[0]
                if results:
                    if slot[1] and not slot[2] and not broker.shutting_down:
                        break  # expired with no append since the read: the empty answer stands
                    results = []  # empty reads hold no handles; nothing to release
            if waiting:
                waiting = False
                self._long_polls -= 1
            if timer is not None:
                timer.cancel()
            if keys:
                broker.remove_waiter(keys, wake)
                keys = []
            await self._send_fetch_response(conn, req, results)
        except BaseException as exc:
            outcome = "NETWORK_EXCEPTION" if isinstance(exc, (OSError, asyncio.CancelledError)) else "UNKNOWN"
            raise
        finally:
            if waiting:
                self._long_polls -= 1
            if timer is not None:
                timer.cancel()
            if keys:
                broker.remove_waiter(keys, wake)
            for _, r, _ in results:
                release_read(r)
            self._observe_fetch(outcome, time.perf_counter() - started)

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
                conn.write(b"".join(pending))
                pending = []
                for chunk in r.chunks:
                    await self._sendfile(conn, chunk.fd, chunk.position, chunk.size)
                broker.metrics.record_fetch(p.topic, size)
        if pending:
            conn.write(b"".join(pending))

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
            # Appends run on the I/O threads: a write into new page-cache pages, a roll, or an
            # fdatasync (acks=-1, flush_messages) must not stall the loop and every other
            # connection on it; pwrite releases the GIL, so the loop keeps receiving meanwhile.
            results = await loop.run_in_executor(None, self._produce_sync, req)
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
            conn.write(fr.encode_produce_response(fr.ProduceResponse(req.correlation_id, 0, results)))
            return True
        finally:
            self._observe_produce(outcome, time.perf_counter() - started)

