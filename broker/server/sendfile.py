"""Record bytes from a segment file onto a client's socket with ``os.sendfile``, from the loop.

Both listeners (the data port and the Kafka listener) answer a fetch as its fixed fields, written
to the transport, then the record bytes, sent by the kernel straight from the segment file.

asyncio's ``loop.sendfile`` does that, at a fixed price per call: it pauses the transport's
reading and resumes it afterwards, and it registers the socket for writing even when its first
``os.sendfile`` sent everything, so it learns that it is done only one loop iteration later, then
it seeks the file. For a 1 MiB fetch answer, which fits the socket's send buffer (both listeners
ask for 4 MiB), that is four ``epoll_ctl`` calls, two ``fstat``, an ``lseek``, two more
``epoll_wait`` (passes of the loop) and a few dozen Python calls per answer, where one
``sendfile`` call does the work (``strace -c`` of a broker answering 1 MiB fetches: 14 system
calls per data-port answer before, 5 after).

``send_file_range`` calls ``os.sendfile`` itself while the socket takes the bytes, and hands
the socket to ``loop.sendfile`` only when it is full (``EAGAIN``), to wait until it drains.
Segment files are read with positional I/O only, so neither path cares about the file position.

Each ``os.sendfile`` call is at most ``CHUNK_BYTES`` (2 MiB), and the loop runs its other
callbacks between two chunks: a client that reads as fast as the kernel copies would otherwise
keep the socket taking bytes until a whole 64 MiB answer was sent, one call after another, and
every other connection of the loop (long-polls waking, produce answers) would wait for it. The
long-poll p99 while a consumer read 1 GiB from the page cache with 64 MiB fetches was 17-42 ms
that way, and 1-2.3 ms with the chunks (docs/benchmarks/broker.md, "First reads of older
segments").
"""

from __future__ import annotations

import asyncio
import os

__all__ = ["send_file_range"]


CHUNK_BYTES = 2 * 1024 * 1024


async def send_file_range(transport: asyncio.Transport, fd: int, offset: int, count: int) -> int:
    """Send ``count`` bytes of the open file ``fd`` from ``offset`` on the transport's socket,
    after whatever the transport has buffered. Returns the bytes sent: fewer than ``count``
    only when the file ended first. Raises ``ConnectionResetError`` (or another
    ``ConnectionError``) when the peer is gone."""
    sent = 0
    out = -1
    while sent < count:
        if transport.is_closing():
            raise ConnectionResetError("connection closed")
        if not transport.get_write_buffer_size():
            # Nothing queued ahead of these bytes: the socket is ours until it is full.
            if out < 0:
                out = transport.get_extra_info("socket").fileno()
            try:
                n = os.sendfile(out, fd, offset + sent, min(CHUNK_BYTES, count - sent))
            except (BlockingIOError, InterruptedError):
                n = -1
            if n == 0:
                return sent  # the file ended
            if n > 0:
                sent += n
                if sent < count:
                    await asyncio.sleep(0)  # the loop's other callbacks run between chunks
                continue
        # The socket is full (or earlier writes are still queued): asyncio waits until it
        # drains, then sends one chunk.
        n = await _loop_sendfile(transport, fd, offset + sent, min(CHUNK_BYTES, count - sent))
        if n == 0:
            return sent
        sent += n
    return sent


async def _loop_sendfile(transport: asyncio.Transport, fd: int, offset: int, count: int) -> int:
    loop = asyncio.get_running_loop()
    with os.fdopen(fd, "rb", buffering=0, closefd=False) as f:
        try:
            return await loop.sendfile(transport, f, offset, count, fallback=False)
        except asyncio.SendfileNotAvailableError as err:
            # asyncio turns any OSError of its *first* os.sendfile call into this (without a
            # cause), to fall back to send() for files that cannot be sendfile'd. A segment is
            # always a regular file, so that failure is the socket's: the peer reset the
            # connection (ECONNRESET, EPIPE). A disconnect, not a server error.
            if transport.is_closing() or str(err) == "os.sendfile call failed":
                raise ConnectionResetError(f"connection lost during sendfile ({err})") from None
            raise
