"""Auto-commit in the background (Kafka's auto-commit is asynchronous too).

``Consumer.poll`` hands the positions to commit to an ``AutoCommitter`` (``submit``) and goes
on reading; the committer's thread writes them to ZooKeeper. Only the latest positions are
kept: a submit made while a write is under way replaces whatever was waiting, so a slow or
unreachable ZooKeeper costs one thread waiting, never the application's reads. A write that
fails is retried (after ``retry_backoff_ms``) with the newest positions submitted since, and
logged: a WARNING at the first failure and then at most every ``warn_interval_s`` while it goes
on failing, an INFO line when a write succeeds again.

What this means for duplicates: after a crash or a session expiry, the partitions resume at
the last *successful* commit, so the records delivered again are those consumed since then
(at most about ``auto_commit_interval_ms`` of records plus the length of any ZooKeeper outage
that kept commits from succeeding).

Thread-safe: ``submit``, ``flush`` and ``close`` may be called from any thread; the write
function runs on the committer's thread only.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Mapping

from annal.client.structs import TopicPartition

__all__ = ["AutoCommitter"]

log = logging.getLogger("annal.client.consumer")

Offsets = Mapping[TopicPartition, int]


class AutoCommitter:
    """One background thread writing the latest submitted offsets with ``write`` (see the
    module docstring). ``name`` appears in its log lines (the group id)."""

    def __init__(
        self,
        write: Callable[[Offsets], object],
        name: str,
        retry_backoff_ms: int = 1000,
        warn_interval_s: float = 30.0,
    ) -> None:
        self._write = write
        self._name = name
        self._retry_backoff_s = retry_backoff_ms / 1000.0
        self._warn_interval_s = warn_interval_s
        self._cond = threading.Condition()
        self._pending: dict[TopicPartition, int] = {}
        self._busy = False
        self._closed = False
        self._failing_since: float | None = None
        self._last_warning = 0.0
        self.failures = 0  # writes that failed (tests and benches read it)
        self.commits = 0  # writes that succeeded
        self.last_commit_at: float | None = None  # time.monotonic() of the last success
        self._thread = threading.Thread(target=self._run, name=f"annal-autocommit-{name}", daemon=True)
        self._thread.start()

    def submit(self, offsets: Offsets) -> None:
        """Commit these offsets soon; replaces offsets of the same partitions still waiting."""
        if not offsets:
            return
        with self._cond:
            self._pending.update(offsets)
            self._cond.notify_all()

    def flush(self, timeout_s: float) -> bool:
        """Wait until nothing is waiting or being written; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread; offsets still waiting are dropped (the caller commits on leave)."""
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._cond.notify_all()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                offsets, self._pending = self._pending, {}
                self._busy = True
            ok = self._attempt(offsets)
            with self._cond:
                self._busy = False
                if not ok:
                    # Retry with these offsets unless newer ones for the same partitions came.
                    for tp, off in offsets.items():
                        self._pending.setdefault(tp, off)
                self._cond.notify_all()
                if not ok and not self._closed:
                    self._cond.wait(self._retry_backoff_s)

    def _attempt(self, offsets: Offsets) -> bool:
        try:
            self._write(offsets)
        except Exception as exc:
            self.failures += 1
            now = time.monotonic()
            if self._failing_since is None:
                self._failing_since = now
            if now - self._last_warning >= self._warn_interval_s:
                self._last_warning = now
                log.warning(
                    "group %s: auto-commit failed for %.1f s (%r); retrying in the background, reads go on",
                    self._name, now - self._failing_since, exc,
                )
            return False
        self.commits += 1
        self.last_commit_at = time.monotonic()
        if self._failing_since is not None:
            log.info("group %s: auto-commit succeeded again after %.1f s", self._name,
                     time.monotonic() - self._failing_since)
            self._failing_since = None
            self._last_warning = 0.0
        return True
