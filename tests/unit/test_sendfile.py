"""send_file_range: segment bytes onto a transport's socket, over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any, Awaitable, Callable

import pytest

from annal.broker.server.sendfile import send_file_range


class _Server(asyncio.Protocol):
    def __init__(self, ready: asyncio.Future[asyncio.Transport]) -> None:
        self.ready = ready

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.ready.set_result(transport)


async def _with_connection(sndbuf: int | None,
                           body: Callable[[asyncio.Transport, socket.socket], Awaitable[Any]]) -> Any:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[asyncio.Transport] = loop.create_future()
    server = await loop.create_server(lambda: _Server(ready), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    client.setblocking(False)
    try:
        transport = await asyncio.wait_for(ready, 10)
        if sndbuf is not None:
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        return await body(transport, client)
    finally:
        client.close()
        server.close()
        await server.wait_closed()


async def _read_exactly(client: socket.socket, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    out = bytearray()
    while len(out) < n:
        chunk = await asyncio.wait_for(loop.sock_recv(client, min(1 << 20, n - len(out))), 10)
        if not chunk:
            break
        out += chunk
    return bytes(out)


@pytest.fixture
def segment(tmp_path: Any) -> tuple[int, bytes]:
    data = os.urandom(3 << 20)
    path = tmp_path / "00000000000000000000.log"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    yield fd, data
    os.close(fd)


def test_a_range_that_fits_the_socket_goes_whole_and_in_order(segment: tuple[int, bytes]) -> None:
    fd, data = segment

    async def body(transport: asyncio.Transport, client: socket.socket) -> None:
        transport.write(b"head")
        sent = await send_file_range(transport, fd, 1000, 300_000)
        transport.write(b"tail")
        assert sent == 300_000
        got = await _read_exactly(client, 4 + 300_000 + 4)
        assert got == b"head" + data[1000:301_000] + b"tail"

    asyncio.run(_with_connection(4 << 20, body))


def test_a_range_larger_than_the_socket_buffer_waits_for_the_reader(segment: tuple[int, bytes]) -> None:
    """A small send buffer and a reader that starts late: the first os.sendfile calls fill the
    socket, the rest waits for it to drain (loop.sendfile); every byte arrives, in order."""
    fd, data = segment

    async def body(transport: asyncio.Transport, client: socket.socket) -> None:
        task = asyncio.ensure_future(send_file_range(transport, fd, 7, len(data) - 7))
        await asyncio.sleep(0.2)
        assert not task.done()  # the socket is full: nobody has read yet
        got = await _read_exactly(client, len(data) - 7)
        assert await task == len(data) - 7
        assert got == data[7:]

    asyncio.run(_with_connection(64 << 10, body))


def test_bytes_queued_in_the_transport_go_first(segment: tuple[int, bytes]) -> None:
    fd, data = segment
    queued = os.urandom(8 << 20)  # more than the socket takes: the transport buffers the rest

    async def body(transport: asyncio.Transport, client: socket.socket) -> None:
        transport.write(queued)
        assert transport.get_write_buffer_size() > 0
        task = asyncio.ensure_future(send_file_range(transport, fd, 0, 100_000))
        got = await _read_exactly(client, len(queued) + 100_000)
        assert await task == 100_000
        assert got == queued + data[:100_000]

    asyncio.run(_with_connection(64 << 10, body))


def test_a_file_shorter_than_the_range_returns_what_it_sent(segment: tuple[int, bytes]) -> None:
    fd, data = segment

    async def body(transport: asyncio.Transport, client: socket.socket) -> None:
        sent = await send_file_range(transport, fd, len(data) - 10, 1000)
        assert sent == 10
        assert await _read_exactly(client, 10) == data[-10:]

    asyncio.run(_with_connection(4 << 20, body))


def test_a_peer_that_is_gone_raises_a_connection_error(segment: tuple[int, bytes]) -> None:
    fd, _ = segment

    async def body(transport: asyncio.Transport, client: socket.socket) -> None:
        # A reset, not a FIN: the next write to the socket fails at once.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        client.close()
        await asyncio.sleep(0.1)
        with pytest.raises(ConnectionError):
            for _ in range(10):
                await send_file_range(transport, fd, 0, 1 << 20)
        transport.abort()

    asyncio.run(_with_connection(4 << 20, body))


def test_a_closing_transport_is_refused(segment: tuple[int, bytes]) -> None:
    fd, _ = segment

    async def body(transport: asyncio.Transport, client: socket.socket) -> None:
        transport.close()
        with pytest.raises(ConnectionResetError):
            await send_file_range(transport, fd, 0, 100)

    asyncio.run(_with_connection(None, body))


def test_a_large_range_goes_in_chunks_with_the_loop_running_between_them(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader as fast as the kernel copies keeps the socket taking bytes: each os.sendfile
    call is still at most CHUNK_BYTES, and the loop's other callbacks run between two calls
    (a 64 MiB answer must not hold the loop for its whole length)."""
    import threading

    from annal.broker.server.sendfile import CHUNK_BYTES

    data = os.urandom(12 << 20)
    path = tmp_path / "big.log"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    ticks = [0]
    calls: list[tuple[int, int]] = []  # calls that sent bytes: (count asked, ticks at the call)
    real = os.sendfile

    def spy(out: int, in_fd: int, offset: int, count: int) -> int:
        n = real(out, in_fd, offset, count)  # a full socket raises: no bytes, not counted
        calls.append((count, ticks[0]))
        return n

    monkeypatch.setattr(os, "sendfile", spy)

    async def body(transport: asyncio.Transport, client: socket.socket) -> None:
        client.setblocking(True)
        got = bytearray()

        def read() -> None:
            while len(got) < len(data):
                chunk = client.recv(1 << 20)
                if not chunk:
                    break
                got.extend(chunk)

        reader = threading.Thread(target=read)
        reader.start()

        async def ticker() -> None:
            while True:
                ticks[0] += 1
                await asyncio.sleep(0)

        t = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        try:
            assert await send_file_range(transport, fd, 0, len(data)) == len(data)
        finally:
            t.cancel()
        await asyncio.get_running_loop().run_in_executor(None, reader.join, 10)
        assert bytes(got) == data

    try:
        asyncio.run(_with_connection(4 << 20, body))
    finally:
        os.close(fd)
    assert len(calls) >= len(data) // CHUNK_BYTES
    assert all(count <= CHUNK_BYTES for count, _ in calls)
    assert all(b[1] > a[1] for a, b in zip(calls, calls[1:])), calls
