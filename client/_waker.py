"""Waking a client thread that is blocked in ``select``.

The fetch thread and the sender thread each wait in ``select`` on their broker sockets plus a
``Waker``; another thread calls ``wakeup()`` after changing what they should do (a new batch, a
seek, close). One byte goes over a socketpair, at most one at a time, so a burst of wakeups
costs one syscall.
"""

from __future__ import annotations

import socket

__all__ = ["Waker"]


class Waker:
    """A socketpair that ``select`` can wait on. ``wakeup()`` may be called from any thread;
    ``drain()`` and ``close()`` only from the thread that waits."""

    __slots__ = ("_r", "_w", "_woken")

    def __init__(self) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        self._woken = False

    def fileno(self) -> int:
        """The read end, for ``select``."""
        return self._r.fileno()

    def wakeup(self) -> None:
        """Make the waiting thread's ``select`` return (no-op while a byte is pending)."""
        if not self._woken:
            self._woken = True
            try:
                self._w.send(b"x")
            except OSError:
                pass

    def drain(self) -> None:
        """Read the pending bytes after ``select`` said this is readable."""
        try:
            while self._r.recv(4096):
                pass
        except OSError:
            pass
        # Only after draining: a wakeup() between the drain and this line leaves its byte
        # in the pipe (a spurious wake), while clearing first could swallow one for good.
        self._woken = False

    def close(self) -> None:
        self._r.close()
        self._w.close()
