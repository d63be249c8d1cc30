"""Bench worker processes and the parent-side collector.

Every producer or consumer of a bench run is its own process (``multiprocessing`` with the
``spawn`` start method, so a worker never inherits the parent's gRPC threads or locks), because
one CPython process cannot use more than one core for Python code. Workers talk to the parent
over one ``multiprocessing.Queue`` with plain tuples:

- ``("ready", index)`` once connected; the worker then waits for the shared start event, so all
  workers start their clocks together and connection setup is not measured;
- ``("tick", index, t_ns, records, bytes, lat_count, lat_sum_us, lat_max_us)`` about twice a
  second: deltas since the previous tick (``t_ns`` is ``time.monotonic_ns()``, one clock for all
  processes of the machine);
- ``("done", index, result)`` with totals and the worker's HdrHistogram, encoded;
- ``("error", index, message)`` if the worker failed.

Producer latency is ack time minus send time for every record. Registering a callback on every
record's future costs a few microseconds per record in CPython, which would slow the producer it
measures, so by default the producer registers one callback per *batch*: it remembers the send
time of each record in a small list per open batch (records of one batch share their future's
batch object, ``future[0]``, the one piece of the SDK's future layout the bench relies on), and
the batch's callback, registered on its first record's future,
hands (ack time, list) back to the send loop, which records each record's own latency. The
lists live only while their batch is in flight: the bench never holds a list of all samples.
``latency_per="record"`` registers a callback per record instead (for comparison).

Payloads (``payload_text``): ``log`` is a pool of 1024 realistic, varied log lines (compresses
like real logs), ``random`` 1024 random byte strings (incompressible), ``zeros`` zero bytes.
Bytes counted per record are its value plus its key, if any.
"""

from __future__ import annotations

import operator
import random
import signal
import struct
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from annal.bench._histogram import LatencyHistogram, LatencyRecorder
from annal.bench._throttle import ThroughputThrottler

__all__ = [
    "TICK_NS",
    "make_payloads",
    "make_keys",
    "client_kwargs",
    "produce_worker",
    "consume_worker",
    "WorkerError",
    "Collector",
    "E2E_STAMP",
    "parse_prop",
]

TICK_NS = 500_000_000
POOL = 1024
E2E_STAMP = struct.Struct(">q")  # send time (monotonic ns) at the front of each e2e record

_LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")
_SERVICES = ("api-gateway", "orders", "payments", "inventory", "auth", "search")
_PATHS = ("/api/v1/orders", "/api/v1/users/me", "/healthz", "/api/v1/cart/items", "/api/v2/search")


class WorkerError(RuntimeError):
    """A worker process failed; the message carries its traceback."""


def make_payloads(kind: str, size: int, count: int = POOL, seed: int = 42) -> list[bytes]:
    """``count`` values of exactly ``size`` bytes each (see the module docstring)."""
    if size < 0:
        raise ValueError("record size must be >= 0")
    if kind == "zeros":
        return [bytes(size)] * count
    rnd = random.Random(seed)
    if kind == "random":
        return [rnd.randbytes(size) for _ in range(count)]
    if kind != "log":
        raise ValueError(f"unknown payload text {kind!r}: log, random or zeros")
    out = []
    for i in range(count):
        line = (
            f"2026-11-26T14:{rnd.randrange(60):02d}:{rnd.randrange(60):02d}.{rnd.randrange(1000):03d}Z "
            f"{rnd.choice(_LEVELS)} [{rnd.choice(_SERVICES)}-{rnd.randrange(8)}] "
            f"request_id={rnd.getrandbits(64):016x} method=GET path={rnd.choice(_PATHS)} "
            f"status={rnd.choice((200, 200, 200, 201, 204, 404, 500))} latency_ms={rnd.randrange(1, 900)} "
            f"user_id={rnd.randrange(100000)} seq={i}"
        )
        data = line.encode()
        while len(data) < size:
            data += b" " + line.encode()
        out.append(data[:size])
    return out


def make_keys(size: int, count: int = POOL, seed: int = 7) -> list[bytes] | None:
    """``count`` random keys of ``size`` bytes, or None for unkeyed records."""
    if size <= 0:
        return None
    rnd = random.Random(seed)
    return [rnd.randbytes(size) for _ in range(count)]


def parse_prop(text: str) -> tuple[str, Any]:
    """``name=value`` of a client option (``--producer-prop``/``--consumer-prop``): the value as
    an int, float, bool or None when it reads as one, else the string."""
    name, sep, raw = text.partition("=")
    name = name.strip().replace(".", "_")
    if not sep or not name.isidentifier():
        raise ValueError(f"expected NAME=VALUE, got {text!r}")
    raw = raw.strip()
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return name, lowered == "true"
    if lowered in ("none", "null"):
        return name, None
    for conv in (int, float):
        try:
            return name, conv(raw)
        except ValueError:
            pass
    return name, raw


def client_kwargs(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """How to reach the cluster: ``bootstrap_servers`` or ``zookeeper``."""
    if cfg.get("zookeeper"):
        return {"zookeeper": cfg["zookeeper"]}
    return {"bootstrap_servers": cfg["bootstrap_servers"]}


def _producer(cfg: Mapping[str, Any]) -> Any:
    from annal.client import Producer

    kwargs: dict[str, Any] = client_kwargs(cfg)
    acks = cfg.get("acks", "1")
    kwargs["acks"] = acks if acks == "all" else int(acks)
    for name in ("linger_ms", "batch_size", "compression_type", "buffer_memory", "max_in_flight_requests_per_connection"):
        if cfg.get(name) is not None:
            kwargs[name] = cfg[name]
    kwargs.update(cfg.get("producer_props") or {})
    return Producer(**kwargs)


def _run_worker(queue: Any, index: int, body: Callable[[], dict[str, Any]]) -> None:
    # Ctrl-C reaches the whole process group: the parent decides when workers stop (stop event,
    # then terminate), so a worker ignores SIGINT instead of dying with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result = body()
    except BaseException:  # noqa: BLE001 - everything goes back to the parent
        queue.put(("error", index, traceback.format_exc()))
        raise SystemExit(1) from None
    queue.put(("done", index, result))


# --------------------------------------------------------------------------------------------
# producer
# --------------------------------------------------------------------------------------------


def produce_worker(cfg: dict[str, Any], index: int, queue: Any, start_event: Any, stop_event: Any) -> None:
    """Send ``cfg["num_records"]`` records at up to ``cfg["throughput"]`` records/s (-1: no limit)."""
    _run_worker(queue, index, lambda: _produce(cfg, index, queue, start_event, stop_event))


def _produce(cfg: dict[str, Any], index: int, queue: Any, start_event: Any, stop_event: Any) -> dict[str, Any]:
    topic: str = cfg["topic"]
    n: int = cfg["num_records"]
    e2e: bool = bool(cfg.get("e2e", False))
    payloads = make_payloads(cfg.get("payload_text", "log"), cfg["record_size"], seed=42 + index)
    keys = make_keys(cfg.get("key_size", 0), seed=7 + index)
    per_record = cfg.get("latency_per", "batch") == "record"
    producer = _producer(cfg)
    hist = LatencyHistogram()
    rec = LatencyRecorder()
    # (ack_ns, send time(s), error, batch): appended by callbacks on the sender thread, consumed
    # by the send loop only (deque append/popleft are atomic).
    completed: deque[tuple[int, list[int] | int, BaseException | None, Any]] = deque()
    in_flight: dict[Any, list[int]] = {}  # open batch -> send times of its records
    done_records = 0
    errors = 0
    first_error = ""
    value_bytes = cfg["record_size"] + cfg.get("key_size", 0)
    monotonic_ns = time.monotonic_ns

    def on_batch_ack(batch: Any, send_times: list[int], _md: Any) -> None:
        completed.append((monotonic_ns(), send_times, None, batch))

    def on_batch_error(batch: Any, send_times: list[int], exc: BaseException) -> None:
        completed.append((monotonic_ns(), send_times, exc, batch))

    def on_record_ack(send_ns: int, _md: Any) -> None:
        completed.append((monotonic_ns(), send_ns, None, None))

    def on_record_error(send_ns: int, exc: BaseException) -> None:
        completed.append((monotonic_ns(), send_ns, exc, None))

    def drain_completed() -> None:
        nonlocal done_records, errors, first_error
        popleft = completed.popleft
        record_sends = rec.record_sends_us
        while completed:
            ack_ns, sends, exc, batch = popleft()
            if isinstance(sends, int):
                sends = [sends]
            elif batch is not None:
                # The batch is complete, so no later send can land in it: every send time it
                # will ever hold is already in the list (the send loop appends right after send).
                in_flight.pop(batch, None)
            if exc is not None:
                errors += len(sends)
                if not first_error:
                    first_error = repr(exc)
                continue
            record_sends(ack_ns, sends)
            done_records += len(sends)

    last_tick = [0]  # records acknowledged at the previous tick

    def tick(now_ns: int) -> None:
        drain_completed()
        count, sum_us, max_us = rec.take_window()
        d_records = done_records - last_tick[0]
        last_tick[0] = done_records
        rec.drain_into(hist)
        queue.put(("tick", index, now_ns, d_records, d_records * value_bytes, count, sum_us, max_us))

    queue.put(("ready", index))
    start_event.wait()
    if stop_event.is_set():  # another worker failed before the start
        n = 0
    start_ns = monotonic_ns()
    throughput = float(cfg.get("throughput", -1))
    throttler = ThroughputThrottler(throughput, start_ns) if throughput >= 0 else None
    next_tick = start_ns + TICK_NS
    send = producer.send
    npay = len(payloads)
    sent = 0
    e2e_pad = payloads[0][E2E_STAMP.size :] if e2e else b""
    pack_stamp = E2E_STAMP.pack
    plain = not e2e and keys is None and not per_record and throttler is None
    start = 0
    if plain and n:
        # The common case (no key, no e2e stamp, no throttle, latency per batch) as a loop of
        # its own: the general loop's per-record checks cost about as much as a compiled
        # send() itself. Same bookkeeping: every record's send time goes into its batch's list.
        now = monotonic_ns()
        fut = send(topic, payloads[0])
        sent = start = 1
        if not _has_batch(fut):
            per_record, plain = True, False  # the general loop registers per-record callbacks
            fut.add_callback(on_record_ack, now)
            fut.add_errback(on_record_error, now)
        else:
            last_batch = fut[0]
            last_times = [now]
            in_flight[last_batch] = last_times
            fut.add_callback(on_batch_ack, last_batch, last_times)
            fut.add_errback(on_batch_error, last_batch, last_times)
    if plain:
        for i in range(1, n):
            now = monotonic_ns()
            if now >= next_tick:
                tick(now)
                next_tick = now + TICK_NS
                if stop_event.is_set():
                    sent = i
                    break
            fut = send(topic, payloads[i % npay])
            batch = fut[0]
            if batch is last_batch:
                last_times.append(now)
                continue
            times = in_flight.get(batch)
            if times is None:
                times = [now]
                in_flight[batch] = times
                fut.add_callback(on_batch_ack, batch, times)
                fut.add_errback(on_batch_error, batch, times)
            else:
                times.append(now)
            last_batch, last_times = batch, times
            if completed:
                drain_completed()
        else:
            sent = n
        start = n  # the general loop below has nothing left to send
    for i in range(start, n):
        now = monotonic_ns()
        if now >= next_tick:
            tick(now)
            next_tick = now + TICK_NS
            if stop_event.is_set():
                break
        if e2e:
            value = pack_stamp(now) + e2e_pad
        else:
            value = payloads[i % npay]
        key = keys[i % npay] if keys is not None else None
        fut = send(topic, value, key)
        sent += 1
        if sent == 1 and not per_record and not _has_batch(fut):
            per_record = True  # a future that does not expose its batch: one callback per record
        if per_record:
            fut.add_callback(on_record_ack, now)
            fut.add_errback(on_record_error, now)
        else:
            batch = fut[0]
            times = in_flight.get(batch)
            if times is None:
                times = [now]
                in_flight[batch] = times
                fut.add_callback(on_batch_ack, batch, times)
                fut.add_errback(on_batch_error, batch, times)
            else:
                times.append(now)
        if (i & 1023) == 1023 and completed:
            drain_completed()
        if throttler is not None and throttler.should_throttle(i + 1, now):
            throttler.throttle()
    producer.flush()
    # Callbacks run just after a batch's waiters are woken: wait (bounded) for the last ones.
    deadline = time.monotonic() + 30.0
    while True:
        drain_completed()
        if done_records + errors >= sent or time.monotonic() > deadline:
            break
        time.sleep(0.001)
    end_ns = monotonic_ns()
    tick(end_ns)
    producer.close()
    return {
        "records": done_records,
        "bytes": done_records * value_bytes,
        "sent": sent,
        "errors": errors,
        "first_error": first_error,
        "start_ns": start_ns,
        "end_ns": end_ns,
        "histogram": hist.encode(),
        "clamped": hist.clamped,
        "latency_per": "record" if per_record else "batch",
    }


def _has_batch(fut: Any) -> bool:
    """True if the future is the SDK's ``(batch, offset_delta, timestamp)`` tuple."""
    return isinstance(fut, tuple) and len(fut) == 3 and hasattr(fut[0], "result")


# --------------------------------------------------------------------------------------------
# consumers
# --------------------------------------------------------------------------------------------


def _consumer(cfg: Mapping[str, Any], index: int) -> tuple[Any, bool]:
    """A consumer on ``cfg["topic"]``: subscribed in ``cfg["group"]``, or assigned this
    worker's share of the partitions (``cfg["assignments"][index]``). Returns (consumer, grouped)."""
    from annal.client import Consumer
    from annal.client.structs import TopicPartition

    kwargs: dict[str, Any] = client_kwargs(cfg)
    kwargs["auto_offset_reset"] = "earliest"
    if cfg.get("fetch_max_bytes") is not None:
        kwargs["fetch_max_bytes"] = cfg["fetch_max_bytes"]
    if cfg.get("max_partition_fetch_bytes") is not None:
        kwargs["max_partition_fetch_bytes"] = cfg["max_partition_fetch_bytes"]
    kwargs.update(cfg.get("consumer_props") or {})
    topic = cfg["topic"]
    if cfg.get("group"):
        return Consumer(topic, group_id=cfg["group"], **kwargs), True
    consumer = Consumer(**kwargs)
    tps = [TopicPartition(topic, p) for p in cfg["assignments"][index]]
    consumer.assign(tps)
    start_offsets: Mapping[int, int] | None = cfg.get("start_offsets")
    for tp in tps:
        if start_offsets is not None and tp.partition in start_offsets:
            consumer.seek(tp, int(start_offsets[tp.partition]))
        else:
            consumer.seek_to_beginning(tp)
    return consumer, False


_VALUE = operator.attrgetter("value")
_KEY = operator.attrgetter("key")


def _record_bytes(records: list[Any]) -> int:
    """Key plus value bytes of ``records``, summed in C loops (no Python work per record)."""
    values = list(map(_VALUE, records))
    keys = list(map(_KEY, records))
    try:
        total = sum(map(len, values))
    except TypeError:  # null values
        total = sum(len(v) for v in values if v is not None)
    if keys.count(None) != len(keys):
        total += sum(len(k) for k in keys if k is not None)
    return total


def consume_worker(
    cfg: dict[str, Any], index: int, queue: Any, start_event: Any, stop_event: Any, remaining: Any
) -> None:
    """Read records until the run's shared ``remaining`` count reaches zero.

    ``remaining`` (a ``multiprocessing.Value('q')``) is claimed once per poll under its lock, so
    the consumers of a run together count exactly ``num_records`` however the partitions are
    spread. With ``cfg["e2e"]`` each record's value starts with its send time and the worker
    records receive time minus send time in its histogram.
    """
    _run_worker(queue, index, lambda: _consume(cfg, index, queue, start_event, stop_event, remaining))


def _consume(cfg: dict[str, Any], index: int, queue: Any, start_event: Any, stop_event: Any, remaining: Any) -> dict[str, Any]:
    e2e = bool(cfg.get("e2e", False))
    timeout_ns = int(cfg.get("timeout_ms", 10_000)) * 1_000_000
    consumer, grouped = _consumer(cfg, index)
    hist = LatencyHistogram()
    rec = LatencyRecorder()
    records = 0
    bytes_ = 0
    monotonic_ns = time.monotonic_ns
    unpack_stamp = E2E_STAMP.unpack_from
    queue.put(("ready", index))
    start_event.wait()
    start_ns = monotonic_ns()
    rebalance_ns = 0 if not grouped else -1
    last_data_ns = start_ns
    next_tick = start_ns + TICK_NS
    tick_records = 0
    tick_bytes = 0
    timed_out = False
    while not stop_event.is_set():
        polled = consumer.poll(timeout_ms=100)
        now = monotonic_ns()
        if rebalance_ns < 0 and consumer.assignment():
            rebalance_ns = now - start_ns
        batch: list[Any] = []
        for recs in polled.values():
            batch.extend(recs)
        if batch:
            last_data_ns = now
            with remaining.get_lock():
                take = min(len(batch), remaining.value)
                remaining.value -= take
                left = remaining.value
            if take < len(batch):
                del batch[take:]
            nbytes = _record_bytes(batch)
            if e2e:
                for r in batch:
                    v = r.value
                    if v is not None and len(v) >= 8:
                        rec.record_us((now - unpack_stamp(v)[0]) // 1000)
            records += len(batch)
            bytes_ += nbytes
            tick_records += len(batch)
            tick_bytes += nbytes
            if left <= 0:
                stop_event.set()
        elif now - last_data_ns > timeout_ns:
            timed_out = True
            break
        if now >= next_tick:
            count, sum_us, max_us = rec.take_window()
            rec.drain_into(hist)
            queue.put(("tick", index, now, tick_records, tick_bytes, count, sum_us, max_us))
            tick_records = tick_bytes = 0
            next_tick = now + TICK_NS
    end_ns = monotonic_ns()
    count, sum_us, max_us = rec.take_window()
    rec.drain_into(hist)
    queue.put(("tick", index, end_ns, tick_records, tick_bytes, count, sum_us, max_us))
    consumer.close()
    return {
        "records": records,
        "bytes": bytes_,
        "start_ns": start_ns,
        # The run ends when its last record arrived: a consumer that stops because another one
        # took the last record, or after a timeout, must not stretch the elapsed time.
        "end_ns": last_data_ns if records else start_ns,
        "timed_out": timed_out,
        "rebalance_ms": max(rebalance_ns, 0) / 1e6,
        "histogram": hist.encode() if e2e else None,
        "clamped": hist.clamped,
    }


# --------------------------------------------------------------------------------------------
# parent side
# --------------------------------------------------------------------------------------------


class Window:
    """Deltas summed over all workers since the last progress line."""

    __slots__ = ("start_ns", "records", "bytes", "lat_count", "lat_sum_us", "lat_max_us")

    def __init__(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self.records = 0
        self.bytes = 0
        self.lat_count = 0
        self.lat_sum_us = 0
        self.lat_max_us = 0


class Collector:
    """Starts worker processes, gathers their ticks into progress windows and one-second
    buckets, and returns their results. Used by one thread (the bench's main thread).

    ``on_window(window, now_ns)`` is called every ``window_s`` seconds with the deltas of all
    workers (of the ``counted`` ones, if given); ``on_tick(records_delta)`` after every tick
    (to move a progress bar).
    """

    def __init__(
        self,
        *,
        window_s: float = 5.0,
        on_window: Callable[[Window, int], None] | None = None,
        on_tick: Callable[[int], None] | None = None,
        ready_timeout_s: float = 120.0,
        counted: set[int] | None = None,
    ) -> None:
        import multiprocessing

        self._ctx = multiprocessing.get_context("spawn")
        self.queue = self._ctx.Queue()
        self.start_event = self._ctx.Event()
        self.stop_event = self._ctx.Event()
        self.window_ns = int(window_s * 1e9)
        self.on_window = on_window
        self.on_tick = on_tick
        self.ready_timeout_s = ready_timeout_s
        self.counted = counted  # workers whose ticks count (None: all)
        self.processes: list[Any] = []
        self.results: dict[int, dict[str, Any]] = {}
        self.errors: dict[int, str] = {}
        self.buckets: dict[int, list[int]] = {}  # second -> [records, bytes]
        self.start_ns = 0
        self.records = 0
        self.bytes = 0

    def shared_counter(self, value: int) -> Any:
        return self._ctx.Value("q", value)

    def spawn(self, target: Callable[..., None], *args: Any, name: str) -> None:
        index = len(self.processes)
        p = self._ctx.Process(target=target, args=(*args[:1], index, self.queue, self.start_event, self.stop_event, *args[1:]), name=name, daemon=True)
        p.start()
        self.processes.append(p)

    def _handle(self, msg: tuple[Any, ...], window: Window | None) -> int | None:
        kind = msg[0]
        if kind == "tick":
            _, idx, t_ns, recs, nbytes, lat_count, lat_sum, lat_max = msg
            if self.counted is not None and idx not in self.counted:
                return None
            self.records += recs
            self.bytes += nbytes
            if self.start_ns:
                sec = max(0, (t_ns - self.start_ns) // 1_000_000_000)
                b = self.buckets.setdefault(int(sec), [0, 0])
                b[0] += recs
                b[1] += nbytes
            if window is not None:
                window.records += recs
                window.bytes += nbytes
                window.lat_count += lat_count
                window.lat_sum_us += lat_sum
                window.lat_max_us = max(window.lat_max_us, lat_max)
            if self.on_tick is not None and recs:
                self.on_tick(recs)
        elif kind == "done":
            self.results[msg[1]] = msg[2]
        elif kind == "error":
            self.errors[msg[1]] = msg[2]
            self.stop_event.set()
        elif kind == "ready":
            return int(msg[1])
        return None

    def _reap_dead(self) -> None:
        for i, p in enumerate(self.processes):
            if i not in self.results and i not in self.errors and p.exitcode is not None:
                # Give a message that was sent just before the exit a chance to arrive.
                self._drain_nowait(None)
                if i not in self.results and i not in self.errors:
                    self.errors[i] = f"worker {p.name} exited with code {p.exitcode} without a result"
                    self.stop_event.set()

    def _drain_nowait(self, window: Window | None) -> None:
        import queue as _q

        while True:
            try:
                msg = self.queue.get_nowait()
            except _q.Empty:
                return
            self._handle(msg, window)

    def run(self) -> int:
        """Wait until every worker is ready, start them together, collect until all finish.

        Returns the start time (monotonic ns). Raises ``WorkerError`` if any worker failed.
        """
        try:
            return self._run()
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM) or failed: stop every worker before unwinding.
            self.stop_event.set()
            self.start_event.set()
            for p in self.processes:
                if p.exitcode is None:
                    p.terminate()
            for p in self.processes:
                p.join(timeout=10)
                if p.exitcode is None:
                    p.kill()
            raise

    def _run(self) -> int:
        import queue as _q

        ready: set[int] = set()
        deadline = time.monotonic() + self.ready_timeout_s
        while len(ready) < len(self.processes) and not self.errors:
            try:
                msg = self.queue.get(timeout=0.2)
            except _q.Empty:
                self._reap_dead()
                if time.monotonic() > deadline:
                    self.errors[-1] = f"workers not ready within {self.ready_timeout_s} s"
                continue
            idx = self._handle(msg, None)
            if idx is not None:
                ready.add(idx)
        if not self.errors:
            self.start_ns = time.monotonic_ns()
            self.start_event.set()
            window = Window(self.start_ns)
            while len(self.results) + len(self.errors) < len(self.processes):
                try:
                    msg = self.queue.get(timeout=0.2)
                except _q.Empty:
                    self._reap_dead()
                else:
                    self._handle(msg, window)
                now = time.monotonic_ns()
                if now - window.start_ns >= self.window_ns:
                    if self.on_window is not None and window.records:
                        self.on_window(window, now)
                    window = Window(now)
        self.stop_event.set()
        self.start_event.set()  # release workers still waiting, so they can exit
        for p in self.processes:
            p.join(timeout=30)
            if p.exitcode is None:
                p.kill()
                p.join(timeout=5)
        self._drain_nowait(None)
        if self.errors:
            raise WorkerError("\n".join(f"worker {i}: {e}" for i, e in sorted(self.errors.items())))
        return self.start_ns

    def timeseries(self) -> list[dict[str, float]]:
        """One point per second of the run: {"t_s": end of the second, "records", "bytes"}."""
        if not self.buckets:
            return []
        last = max(self.buckets)
        return [
            {"t_s": float(s + 1), "records": self.buckets.get(s, [0, 0])[0], "bytes": self.buckets.get(s, [0, 0])[1]}
            for s in range(last + 1)
        ]

    def merged_histogram(self) -> LatencyHistogram:
        return LatencyHistogram.merged(
            LatencyHistogram.decode(r["histogram"]) for r in self.results.values() if r.get("histogram")
        )
