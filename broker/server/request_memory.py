"""The broker-wide bound on request memory (Kafka's ``queued.max.request.bytes``), shared by the
listeners that read requests on the event loop: the data port and the Kafka listener.

What is counted, per connection (``RequestUser.mem``, kept current by its listener): the
buffers of frames being read, of complete frames not yet taken, of recycled spares, and of the
requests being answered (a PRODUCE's frame stays until its batches are appended). The sum over
all connections is ``queued``.

At the bound (``full``), a connection whose next bytes would need new memory (a new frame, or
a frame whose buffer must grow) reads at most ``HOLD_BYTES`` into the shared hold buffer, keeps
them (``held``) and is **muted**: its reading is paused, so further bytes wait in the kernel's
socket buffer and, past it, in the client. Frames whose buffer is already allocated keep
filling, so they complete and their answers free memory. When ``queued`` falls below the
bound, muted connections are resumed oldest first (``RequestUser.unmute``), each taking back
its held bytes, until the bound is reached again.

Overshoot: the one allocation that crosses the bound (a frame's buffer grows by at most
``max(4 MiB, its size / 2)``) plus ``HOLD_BYTES`` per muted connection.

Not thread-safe: the listeners call it from the event loop they share.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["DEFAULT_BOUND", "RequestMemory", "RequestUser"]


class RequestUser(Protocol):
    """A connection, as the bound sees it."""

    mem: int  # bytes counted for it now (set through RequestMemory.set only)

    def unmute(self) -> None:
        """Take back the held bytes and resume reading (called by the bound)."""


DEFAULT_BOUND = 512 * 1024 * 1024  # queued_max_request_bytes' default


class RequestMemory:
    HOLD_BYTES = 4096  # what a connection over the bound may read before it is muted

    def __init__(self, bound: int = DEFAULT_BOUND, max_request_bytes: int = 0) -> None:
        """``bound``: ``queued_max_request_bytes``; raised to ``max_request_bytes`` if lower,
        so that any one request fits."""
        if bound <= 0:
            raise ValueError("the request memory bound must be positive")
        self.bound = max(bound, max_request_bytes)
        self.queued = 0
        self._muted: dict[RequestUser, None] = {}  # insertion-ordered: first muted, first resumed
        self._hold = bytearray(self.HOLD_BYTES)
        self.hold_view = memoryview(self._hold)
        self._unmuting = False

    @property
    def full(self) -> bool:
        return self.queued >= self.bound

    @property
    def muted(self) -> int:
        """Connections muted now."""
        return len(self._muted)

    def set(self, user: RequestUser, mem: int) -> None:
        """``user`` now holds ``mem`` bytes; resumes muted connections if memory fell below the
        bound."""
        delta = mem - user.mem
        user.mem = mem
        self.queued += delta
        if delta < 0 and self._muted and self.queued < self.bound:
            self._unmute()

    def mute(self, user: RequestUser) -> None:
        """Remember ``user`` as muted (it has paused its own reading)."""
        self._muted[user] = None

    def forget(self, user: RequestUser) -> None:
        """A connection that is gone: its memory is free, and it is no longer muted."""
        self._muted.pop(user, None)
        self.set(user, 0)

    def _unmute(self) -> None:
        if self._unmuting:
            return  # re-entered from a resumed connection's accounting: the outer loop carries on
        self._unmuting = True
        try:
            while self._muted and self.queued < self.bound:
                user = next(iter(self._muted))
                del self._muted[user]
                user.unmute()
        finally:
            self._unmuting = False
