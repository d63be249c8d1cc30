"""Client SDK benchmarks: Producer and Consumer against a real standalone broker on 127.0.0.1
(broker and client side by side on this machine), plus ``Producer.send`` alone.

    .venv/bin/python -m annal.bench.sdk --runs 3 --records 10000000 --write docs/benchmarks/sdk.md

Figures (each measured ``--runs`` times; the median is reported with every run):

- ``send_ns``: ns per ``Producer.send(topic, value)`` call with the sender thread replaced by an
  inert one, so only the application thread's work is timed (serialize checks, partition,
  accumulator append into the open batch's ``BatchBuilder``, the returned future).
- ``produce``: one Producer (acks=1, no compression, linger_ms=5, default batch_size), 100-byte
  values, no key, one partition: records/s from the first ``send`` until ``flush`` returns.
- ``consume``: one Consumer reading those records back from offset 0 (``poll`` with
  ``max_records=--poll-records``): records/s until the last one is returned.
- ``lz4`` / ``plain_log``: the same producer sending ``--log-records`` access-log-like lines
  (``annal.bench.codec.log_lines``, ~120 B) with lz4 and without; the lz4 rate as a % of the
  uncompressed one, and the compression ratio (partition bytes on the broker without / with
  lz4).

Both codec implementations in the same run (``--impls native,python``, the default where the
C extension is built): for each, a standalone broker started with that implementation
(``ANNAL_PURE_PYTHON=1`` for the pure-Python one) and this process switched to it
(``annal.record._impl.use_native``); the runs of the two alternate. For the produce and consume
figures the CPU time of the broker process (``/proc/PID/stat``) and of this client process
(``os.times``) over the same interval are recorded, and their split is reported: which share of
the CPU that figure cost was the broker's and which the client's.

Prints one line per figure per run and a JSON summary; ``--write`` writes the markdown fragment.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import annal.client.producer as producer_module
from annal.record import _impl
from annal.bench._local_broker import LocalBroker
from annal.bench.codec import log_lines
from annal.client import Admin, Consumer, NewTopic, Producer

VALUE = b"v" * 100

FIGURES: dict[str, tuple[str, str, str, str]] = {
    # key: (label, unit, target, better); targets are issue 17's, for the compiled SDK
    "send_ns": ("Producer.send() alone (accumulator only), 100 B, no key, wall clock", "ns/record", "<= 300", "lower"),
    "send_cpu_ns": ("Producer.send() alone, CPU time of the process", "ns/record", "<= 300", "lower"),
    "produce": ("Producer acks=1, no compression, 100 B, no key, 1 partition", "records/s", ">= 1,500,000", "higher"),
    "produce_broker_pct": ("produce: broker's share of the CPU time (broker / (broker + client))", "%", "-", "lower"),
    "produce_client_us": ("produce: client process CPU per record", "us/record", "-", "lower"),
    "produce_broker_us": ("produce: broker process CPU per record", "us/record", "-", "lower"),
    "consume": ("Consumer reading them back", "records/s", ">= 2,000,000", "higher"),
    "consume_broker_pct": ("consume: broker's share of the CPU time (broker / (broker + client))", "%", "-", "lower"),
    "consume_client_us": ("consume: client process CPU per record", "us/record", "-", "lower"),
    "consume_broker_us": ("consume: broker process CPU per record", "us/record", "-", "lower"),
    "plain_log": ("Producer acks=1, log-like text (~120 B), no compression", "records/s", "-", "higher"),
    "lz4": ("Producer acks=1, log-like text, lz4", "records/s", "-", "higher"),
    "lz4_pct": ("lz4 rate as % of the uncompressed rate (same text)", "%", ">= 70", "higher"),
    "lz4_ratio": ("lz4 compression ratio (broker bytes without / with lz4)", "x", "-", "higher"),
}


class _InertSender:
    """Stands in for the sender thread so that ``send_ns`` times the application thread only."""

    fatal_error = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def start(self) -> None:
        pass

    def wakeup(self) -> None:
        pass

    def initiate_close(self) -> None:
        pass

    def force_close(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> None:
        pass

    def is_alive(self) -> bool:
        return False


def measure_send_ns(bootstrap: str, topic: str, n: int) -> tuple[float, float]:
    """(wall ns, CPU ns) per send() with an inert sender thread."""
    real = producer_module.Sender
    producer_module.Sender = _InertSender  # type: ignore[misc,assignment]
    try:
        p = Producer(bootstrap, buffer_memory=1 << 31, linger_ms=5)
    finally:
        producer_module.Sender = real  # type: ignore[misc]
    try:
        p.partitions_for(topic)  # metadata cached: the loop below is the steady state
        send = p.send
        value = VALUE
        send(topic, value)
        c0 = time.process_time()
        t0 = time.perf_counter()
        for _ in range(n):
            send(topic, value)
        dt = time.perf_counter() - t0
        dc = time.process_time() - c0
    finally:
        p._closed = True  # nothing to flush: the inert sender never sent anything
        p._rpc.close()
    return dt / n * 1e9, dc / n * 1e9


def process_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` (this process when None), all threads."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


class CpuSplit:
    """CPU seconds of the client (this process) and the broker over a ``with`` block."""

    def __init__(self, broker_pid: int | None) -> None:
        self.broker_pid = broker_pid
        self.client_s = 0.0
        self.broker_s = float("nan")

    def __enter__(self) -> "CpuSplit":
        self._c0 = process_cpu_s(None)
        self._b0 = process_cpu_s(self.broker_pid) if self.broker_pid else float("nan")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client_s = process_cpu_s(None) - self._c0
        if self.broker_pid:
            self.broker_s = process_cpu_s(self.broker_pid) - self._b0

    def record(self, r: dict[str, float], key: str, records: int) -> None:
        r[f"{key}_client_us"] = self.client_s / records * 1e6
        if self.broker_pid:
            r[f"{key}_broker_us"] = self.broker_s / records * 1e6
            r[f"{key}_broker_pct"] = 100.0 * self.broker_s / (self.broker_s + self.client_s)


def produce(bootstrap: str, topic: str, values: list[bytes] | None, n: int, compression: str | None) -> float:
    with Producer(bootstrap, acks=1, linger_ms=5, compression_type=compression) as p:
        send = p.send
        p.send(topic, b"warm-up").get(timeout=120)
        t0 = time.perf_counter()
        if values is None:
            value = VALUE
            for _ in range(n):
                send(topic, value)
        else:
            for v in values:
                send(topic, v)
        p.flush()
        dt = time.perf_counter() - t0
    return (n if values is None else len(values)) / dt


def consume(bootstrap: str, topic: str, n: int, poll_records: int) -> float:
    with Consumer(topic, auto_offset_reset="earliest", bootstrap_servers=bootstrap, max_poll_records=poll_records) as c:
        got = 0
        t0 = time.perf_counter()
        deadline = t0 + 600
        while got < n and time.perf_counter() < deadline:
            for recs in c.poll(timeout_ms=1000).values():
                got += len(recs)
        dt = time.perf_counter() - t0
    if got < n:
        raise RuntimeError(f"consumer read {got} of {n} records")
    return got / dt


def partition_bytes(admin: Admin, topic: str) -> int:
    (desc,) = admin.describe_topics([topic])
    return sum(p.size_bytes for p in desc.partitions)


def machine() -> str:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"nproc={os.cpu_count()}, CPU {cpu}, Python {platform.python_version()}, {platform.system()}"


def run_once(
    bootstrap: str, args: argparse.Namespace, run: int, log: Callable[[str], None], broker_pid: int | None = None
) -> dict[str, float]:
    r: dict[str, float] = {}
    suffix = f"{os.getpid()}-{run}-{'native' if _impl.native is not None else 'python'}"
    with Admin(bootstrap) as admin:
        names = {k: f"sdk-{k}-{suffix}" for k in ("send", "perf", "log-plain", "log-lz4")}
        admin.create_topics([NewTopic(t, 1) for t in names.values()])
        try:
            if "send" in args.only:
                r["send_ns"], r["send_cpu_ns"] = measure_send_ns(bootstrap, names["send"], args.send_records)
                log(
                    f"run {run}: send() alone {r['send_ns']:.0f} ns/record wall, {r['send_cpu_ns']:.0f} ns CPU "
                    f"({args.send_records:,} records)"
                )
            if "produce" in args.only:
                with CpuSplit(broker_pid) as cpu:
                    r["produce"] = produce(bootstrap, names["perf"], None, args.records, None)
                cpu.record(r, "produce", args.records)
                log(
                    f"run {run}: produce {r['produce']:,.0f} records/s ({args.records:,} records; CPU: client "
                    f"{cpu.client_s:.2f} s, broker {cpu.broker_s:.2f} s)"
                )
                if "consume" in args.only:
                    with CpuSplit(broker_pid) as cpu:
                        r["consume"] = consume(bootstrap, names["perf"], args.records + 1, args.poll_records)
                    cpu.record(r, "consume", args.records + 1)
                    log(
                        f"run {run}: consume {r['consume']:,.0f} records/s (CPU: client {cpu.client_s:.2f} s, "
                        f"broker {cpu.broker_s:.2f} s)"
                    )
            if "lz4" in args.only:
                lines = log_lines(args.log_records)
                r["plain_log"] = produce(bootstrap, names["log-plain"], lines, len(lines), None)
                r["lz4"] = produce(bootstrap, names["log-lz4"], lines, len(lines), "lz4")
                r["lz4_pct"] = 100.0 * r["lz4"] / r["plain_log"]
                r["lz4_ratio"] = partition_bytes(admin, names["log-plain"]) / partition_bytes(admin, names["log-lz4"])
                log(
                    f"run {run}: log-like text {r['plain_log']:,.0f} records/s plain, {r['lz4']:,.0f} lz4 "
                    f"({r['lz4_pct']:.0f} %), ratio {r['lz4_ratio']:.2f}"
                )
        finally:
            admin.delete_topics(list(names.values()), raise_errors=False)
    return r


def fmt(key: str, value: float) -> str:
    if key in ("lz4_ratio",) or key.endswith("_us"):
        return f"{value:.2f}"
    if key in ("lz4_pct",) or key.endswith("_pct"):
        return f"{value:.0f}"
    return f"{value:,.0f}"


IMPL_LABELS = {"native": "compiled codec", "python": "pure Python, ANNAL_PURE_PYTHON=1"}


def markdown(
    results: dict[str, list[dict[str, float]]], command: str, started: str, load: str, loads: list[str] | None = None
) -> str:
    """The fragment's table: every figure for each implementation; targets on the compiled
    rows (the pure-Python rows are the reference they are compared with)."""
    rows = []
    for key, (label, unit, target, better) in FIGURES.items():
        for impl, impl_results in results.items():
            runs = [r[key] for r in impl_results if key in r]
            if not runs:
                continue
            med = statistics.median(runs)
            tgt = target if impl == "native" else "-"
            met = "-"
            if tgt.startswith(">="):
                met = "yes" if med >= float(tgt[2:].replace(",", "")) else "no"
            elif tgt.startswith("<="):
                met = "yes" if med <= float(tgt[2:].replace(",", "")) else "no"
            rows.append(
                f"| {label} ({IMPL_LABELS.get(impl, impl)}) | {unit} | {tgt} | {fmt(key, med)} | "
                f"{' / '.join(fmt(key, v) for v in runs)} | {met} |"
            )
    during = f"\n- Load average before each run: {'; '.join(loads)}" if loads else ""
    return "\n".join(
        [
            "| figure | unit | target | median | runs | met |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    ) + (
        f"\n\n- Command: `{command}`\n- Date: {started}\n- Machine: {machine()}\n"
        f"- Load average at the start: {load}{during}\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the SDK benchmarks; prints per-run lines and a JSON summary."""
    parser = argparse.ArgumentParser(prog="python -m annal.bench.sdk", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--records", type=int, default=10_000_000, help="records for produce/consume")
    parser.add_argument("--send-records", type=int, default=500_000, help="records for send_ns")
    parser.add_argument("--log-records", type=int, default=1_000_000, help="records for the lz4 figures")
    parser.add_argument("--poll-records", type=int, default=10_000, help="consumer max_poll_records")
    parser.add_argument("--only", default="send,produce,consume,lz4", help="comma-separated subset")
    parser.add_argument("--bootstrap-server", default=None, help="use this broker instead of starting one")
    parser.add_argument("--write", default=None, metavar="FILE", help="write the markdown table here")
    parser.add_argument(
        "--impls",
        default="native,python" if _impl.available is not None else "python",
        help="codec implementations to measure, alternating run by run (native, python)",
    )
    args = parser.parse_args(argv)
    impls = [i for i in args.impls.split(",") if i]
    if "native" in impls and _impl.available is None:
        parser.error("--impls native: annal.record._native is not built in this installation")
    # SIGTERM unwinds like Ctrl-C, so the broker started below is stopped and its data removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.only = set(args.only.split(","))
    command = ".venv/bin/python -m annal.bench.sdk " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else ["?"]
    load_s = " ".join(load)

    def log(msg: str) -> None:
        print(msg, flush=True)

    results: dict[str, list[dict[str, float]]] = {impl: [] for impl in impls}
    loads: list[str] = []
    was_native = _impl.native is not None
    with tempfile.TemporaryDirectory(prefix="annal-bench-sdk-") as tmp:
        brokers: dict[str, LocalBroker] = {}
        try:
            if args.bootstrap_server is None:
                for impl in impls:
                    # The broker runs the same implementation as the client it serves.
                    saved = os.environ.pop("ANNAL_PURE_PYTHON", None)
                    if impl == "python":
                        os.environ["ANNAL_PURE_PYTHON"] = "1"
                    try:
                        broker = LocalBroker(data_dir=str(pathlib.Path(tmp) / f"data-{impl}"), extra_args=["--log-level", "WARNING"])
                        broker.start()
                    finally:
                        os.environ.pop("ANNAL_PURE_PYTHON", None)
                        if saved is not None:
                            os.environ["ANNAL_PURE_PYTHON"] = saved
                    brokers[impl] = broker
            for run in range(1, args.runs + 1):
                for impl in impls:
                    _impl.use_native(impl == "native")
                    if impl in brokers:
                        bootstrap, pid = brokers[impl].bootstrap, brokers[impl].process.pid  # type: ignore[union-attr]
                    else:
                        bootstrap, pid = args.bootstrap_server, None
                    loadavg = " ".join(open("/proc/loadavg").read().split()[:3]) if os.path.exists("/proc/loadavg") else "?"
                    loads.append(f"run {run} {impl}: {loadavg}")
                    log(f"run {run}, {impl}: load average {loadavg}")
                    results[impl].append(run_once(bootstrap, args, run, lambda m, i=impl: log(f"[{i}] {m}"), pid))
        finally:
            _impl.use_native(was_native)
            for broker in brokers.values():
                broker.stop()
    summary = {
        impl: {
            key: {"median": statistics.median([r[key] for r in res]), "runs": [r[key] for r in res]}
            for key in FIGURES
            if res and all(key in r for r in res)
        }
        for impl, res in results.items()
    }
    print(json.dumps(summary, indent=2))
    table = markdown(results, command, started, load_s, loads)
    print(table)
    if args.write:
        pathlib.Path(args.write).write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
