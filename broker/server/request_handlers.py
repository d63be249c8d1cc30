"""The request-handler pool (Kafka's ``KafkaRequestHandlerPool``, ``num.io.threads``): the
threads that do the data port's log work, so that its event loop only frames, waits and calls
``sendfile``.

``submit(topic, partition, records, acks, done)`` queues one partition's part of a PRODUCE
request and returns at once; a worker thread appends it (validation, ``pwrite``, a segment roll
when due, the ``fdatasync`` of acks=-1) and calls ``done(result)`` on the worker thread with an
``AppendResult`` or the ``AnnalError`` that refused it.

Appends to the same partition are **coalesced**: requests queued for a partition while a worker
is busy with it are taken together by the next worker pass (``Broker.append_coalesced``: each
keeps its own result, they share the log's lock pass and one ``fdatasync`` for all acks=-1
among them). A partition is worked on by one thread at a time, so appends keep their order.
Within a pass, a part with acks 0/1 (or a refused one) is answered as soon as it is appended,
not at the end of the pass: a pipelining producer's next request then arrives while the
worker goes on with the parts behind it (docs/benchmarks/broker.md: +6 % data-port produce
throughput in 10 interleaved runs with 1 MiB requests).

The queue is bounded: at most ``max_queued_requests`` parts wait for a worker; past it,
``submit`` keeps the part in a backlog that is moved into the queue as workers finish (the
data port answers one request at a time per connection and bounds request memory, so the
backlog is bounded by the connections). ``queued`` says how many wait in both.

Thread-safe: ``submit`` from any thread (the event loop); workers are daemon threads stopped
by ``close()``, which lets queued work finish.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from typing import Any, Callable

from annal.errors import AnnalError, UnknownServerError

__all__ = ["RequestHandlerPool"]

log = logging.getLogger("annal.request_handlers")

Done = Callable[[Any], None]
_Key = tuple[str, int]


def _complete(done: Done, result: Any) -> None:
    try:
        done(result)
    except Exception:
        log.exception("produce completion failed")


class RequestHandlerPool:
    def __init__(self, broker: Any, num_io_threads: int = 2, max_queued_requests: int = 500) -> None:
        if num_io_threads < 1 or max_queued_requests < 1:
            raise ValueError("num_io_threads and max_queued_requests must be positive")
        self.broker = broker
        self.num_io_threads = num_io_threads
        self.max_queued_requests = max_queued_requests
        self._lock = threading.Lock()
        # One token per entry of ``_ready`` (and one per thread at close): a worker blocks in
        # the C-level ``get`` (one futex wait and wake per hand-off; a Condition takes several).
        self._tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._pending: dict[_Key, list[tuple[Any, int, int, Done]]] = {}  # partition -> parts, in order
        self._ready: deque[_Key] = deque()  # partitions with parts and no worker on them
        self._running: set[_Key] = set()
        self._in_queue = 0
        self._backlog: deque[tuple[_Key, Any, int, int, Done]] = deque()
        self._closed = False
        self.coalesced = 0  # parts appended in a pass with others (for the bench)
        self.passes = 0
        self._threads = [threading.Thread(target=self._work, name=f"annal-io-{i}", daemon=True)
                         for i in range(num_io_threads)]
        for t in self._threads:
            t.start()

    @property
    def queued(self) -> int:
        with self._lock:
            return self._in_queue + len(self._backlog)

    def submit(self, topic: str, partition: int, records: Any, acks: int, done: Done,
               timeout_ms: int = 30_000) -> None:
        """Queue one partition's part of a produce; ``timeout_ms`` bounds a replicated acks=-1
        wait for the in-sync replicas."""
        key = (topic, partition)
        with self._lock:
            if self._closed:
                raise RuntimeError("request handler pool is closed")
            if self._in_queue >= self.max_queued_requests:
                self._backlog.append((key, records, acks, timeout_ms, done))
                return
            self._enqueue(key, records, acks, timeout_ms, done)

    def _enqueue(self, key: _Key, records: Any, acks: int, timeout_ms: int, done: Done) -> None:
        parts = self._pending.get(key)
        if parts is None:
            parts = self._pending[key] = []
            if key not in self._running:
                self._ready.append(key)
                self._tokens.put(None)
        parts.append((records, acks, timeout_ms, done))
        self._in_queue += 1

    def _work(self) -> None:
        while True:
            self._tokens.get()
            with self._lock:
                if not self._ready:
                    return  # a close token: closed and drained
                key = self._ready.popleft()
                parts = self._pending.pop(key)
                self._running.add(key)
            early = [False] * len(parts)

            def answered(i: int, result: Any, parts: list[Any] = parts, early: list[bool] = early) -> None:
                early[i] = True
                _complete(parts[i][3], result)

            try:
                results = self.broker.append_coalesced(
                    key[0], key[1], [(r, a, t) for r, a, t, _ in parts], answered)
            except AnnalError as err:
                results = [err] * len(parts)
            except Exception as err:  # a bug: answer every part rather than leave it hanging
                log.exception("append to %s-%d failed", key[0], key[1])
                results = [UnknownServerError(f"append failed: {err!r}")] * len(parts)
            with self._lock:
                self._running.discard(key)
                self._in_queue -= len(parts)
                self.passes += 1
                if len(parts) > 1:
                    self.coalesced += len(parts)
                if key in self._pending:  # more arrived meanwhile: its turn again
                    self._ready.append(key)
                    self._tokens.put(None)
                while self._backlog and self._in_queue < self.max_queued_requests:
                    self._enqueue(*self._backlog.popleft())
            for (_, _, _, done), result, was_answered in zip(parts, results, early):
                if not was_answered:
                    _complete(done, result)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the workers after the queued work is done."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            while self._backlog:
                self._enqueue(*self._backlog.popleft())
        for _ in self._threads:
            self._tokens.put(None)  # after every ready entry's token: the queue drains first
        for t in self._threads:
            t.join(timeout)
