"""Coalescing ZooKeeper watch events into re-reads, shared by the broker's coordinator and the
client's ZooKeeper metadata source.

A kazoo watch callback runs on kazoo's event thread and must not block, so the watches only
mark what changed (the broker registrations, the topic placements); one thread of the owner
runs ``WatchRefresher.run``, which waits for a mark, takes every mark set so far at once and
re-reads those parts. A burst of events (ten brokers joining) is one re-read, not ten.

The watches are set by the re-reads themselves (``watch_brokers`` / ``watch_topics`` passed to
``annal.zookeeper.reads``), not by kazoo's ``ChildrenWatch``: a watch set by the read that
returned the state fires on any later change, so the owner's state cannot stay older than
ZooKeeper's. Every kazoo session state change marks everything too (``on_session_state``):
after a reconnection or a new session (whose watches are gone) the owner re-reads whatever
happened during the outage, however the children changed meanwhile.

A re-read that fails because ZooKeeper cannot be reached (a kazoo error or timeout) puts its
marks back and is tried again after the owner's ``backoff`` (wait for the connection, or a
short sleep); any other error is logged and the marks are dropped, so a bad node cannot make
the thread spin. Both marks start set: the first wake-up (or the one-second poll) re-reads
everything once more after start, which covers events lost between the first read and the
watches being placed.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Protocol

from kazoo.exceptions import KazooException
from kazoo.handlers.threading import KazooTimeoutError

__all__ = ["WatchRefresher"]


class _Read(Protocol):
    def __call__(self, *, brokers: bool, topics: bool) -> None: ...


class WatchRefresher:
    """Marks set by watches, and the loop that turns them into calls of ``read`` (see the
    module docstring). ``stopped``: the owner's stop event; ``run`` returns once it is set."""

    def __init__(
        self,
        read: _Read,
        stopped: threading.Event,
        backoff: Callable[[], object],
        logger: logging.Logger,
        what: str,
        deferred_level: int = logging.INFO,
    ) -> None:
        self._read = read
        self._stopped = stopped
        self._backoff = backoff
        self._log = logger
        self._what = what
        self._deferred_level = deferred_level
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._brokers = True
        self._topics = True

    def mark(self, *, brokers: bool = False, topics: bool = False) -> None:
        """Ask for a re-read of the brokers and/or the topics (any thread, never blocks)."""
        with self._lock:
            self._brokers |= brokers
            self._topics |= topics
        self._wakeup.set()

    def watch_brokers(self, _event: object = None) -> None:
        """One-shot watch for the broker registrations (and ``/controller``)."""
        self.mark(brokers=True)

    def watch_topics(self, _event: object = None) -> None:
        """One-shot watch for the topic placements."""
        self.mark(topics=True)

    def on_session_state(self, _state: str) -> None:
        """kazoo state listener: any change (SUSPENDED, LOST, CONNECTED) marks everything; the
        re-read waits for the connection (the owner's ``backoff``)."""
        self.mark(brokers=True, topics=True)

    def wake(self) -> None:
        """Wake ``run`` without marking anything (on stop)."""
        self._wakeup.set()

    def run(self) -> None:
        """The owner's refresh thread: re-read what is marked until ``stopped`` is set."""
        while not self._stopped.is_set():
            self._wakeup.wait(1.0)
            if self._stopped.is_set():
                return
            with self._lock:
                brokers, topics = self._brokers, self._topics
                self._brokers = self._topics = False
                self._wakeup.clear()
            if not (brokers or topics):
                continue
            try:
                self._read(brokers=brokers, topics=topics)
            except (KazooException, KazooTimeoutError) as exc:
                self._log.log(self._deferred_level, "re-read of %s deferred (%r)", self._what, exc)
                self.mark(brokers=brokers, topics=topics)
                self._backoff()
            except Exception:
                self._log.exception("re-read of %s failed", self._what)
