"""Benchmark of the RecordBatch v2 codec (annal/record/), the SDK's hot path.

Run: ``.venv/bin/python -m annal.bench.codec`` (``--records``, ``--runs``, ``--json``). Every figure is
the median of ``--runs`` independent runs (3 by default) and the runs themselves are printed.
``--baseline FILE`` compares another codec kept in one module with the current ``annal.record``
in the same process (for example the single-module codec from before the split into
``annal/record/``: ``git show 312db59:broker/storage/record_batch.py | sed -e
's/broker.errors/annal.errors/' -e 's/MessageTooLargeError/MessageSizeTooLargeError/g' >
/tmp/rb_before.py``), interleaved: each run measures the baseline, then the current codec, so load
changes on a shared machine hit both sides alike; it prints both medians and their ratio.
``--compare-impls`` does the same with the two implementations of ``annal.record``: the
pure-Python modules as the baseline and the compiled ``annal.record._native`` as the current
one (switched in process with ``annal.record._impl.use_native``).
Times are CPU time of this single-threaded process (``time.process_time``), so a shared
machine's other load inflates them less than wall time would; one core, pure Python.

Workload (the brief's): 100-byte values, no key, no headers, batches of the producer's default
``batch_size`` = 16384 bytes (150 records each). Figures:

- encode: ``encode_batch`` records/s; BatchBuilder: ``append`` ns/record alone, and records/s
  including ``build()`` (header + CRC-32C).
- decode: ``decode_records_into(buf, 0, Record)`` and ``iter_records`` over fetch buffers of
  back-to-back batches (1 MiB each, the consumer's default max_partition_fetch_bytes), CRC
  verified, records/s.
- validate_batch (header + CRC) and validate_records (deep walk) in MB/s of batch bytes.
- lz4 on log-like text (values are generated access-log lines): compression ratio, encode and
  decode records/s.
- the ceiling: a bare Python loop that frames the same 100-byte values with ``struct`` and
  ``b''.join`` (encode), and slices them back out of fixed-size frames (decode). No codec can
  beat it in pure Python; it shows how much of the per-record cost is the interpreter itself.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import statistics
import struct
import sys
import time
import types
from collections.abc import Callable

import annal.record as current_codec

from annal.record import (
    CODEC_LZ4,
    CODEC_NONE,
    BatchBuilder,
    Record,
    decode_records_into,
    encode_batch,
    iter_batch_positions,
    iter_records,
    validate_batch,
    validate_records,
)

VALUE_SIZE = 100
BATCH_SIZE = 16384
TIMESTAMP_MS = 1_767_225_600_000
FETCH_BYTES = 1 << 20  # the consumer's default max_partition_fetch_bytes


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} x {model}, Python {platform.python_version()}, {platform.system()}"


def cpu_time(fn: Callable[[], object]) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def records_per_batch(value_size: int) -> int:
    builder = BatchBuilder(batch_size=BATCH_SIZE)
    while builder.append(TIMESTAMP_MS, None, b"v" * value_size) != -1:
        pass
    return builder.records_count


def fetch_buffer(values: list[bytes], per_batch: int, compression: int = CODEC_NONE) -> bytes:
    """Back-to-back batches with consecutive offsets, as a fetch returns them."""
    out = []
    for base in range(0, len(values), per_batch):
        chunk = values[base : base + per_batch]
        out.append(
            encode_batch(((TIMESTAMP_MS + i, None, v, None) for i, v in enumerate(chunk)), compression, base)
        )
    return b"".join(out)


def split_fetches(buf: bytes, fetch_bytes: int) -> list[bytes]:
    """Cut back-to-back batches into fetch-sized buffers at batch boundaries."""
    fetches = []
    start = 0
    for pos, size in iter_batch_positions(buf):
        if pos + size - start > fetch_bytes and pos > start:
            fetches.append(buf[start:pos])
            start = pos
    fetches.append(buf[start:])
    return fetches


def log_lines(n: int, seed: int = 7) -> list[bytes]:
    """Access-log-like values: what a log pipeline sends (repetitive structure, varying ids)."""
    rnd = random.Random(seed)
    paths = ["/api/v1/orders", "/api/v1/users/{}", "/static/app.js", "/health", "/api/v1/search?q={}"]
    agents = ["Mozilla/5.0 (X11; Linux x86_64)", "curl/8.5.0", "python-requests/2.32.3", "Go-http-client/1.1"]
    lines = []
    for i in range(n):
        path = rnd.choice(paths).format(rnd.randrange(100000))
        lines.append(
            (
                f"2026-11-26T14:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}Z "
                f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(256)} "
                f'"GET {path} HTTP/1.1" {rnd.choice((200, 200, 200, 304, 404, 500))} '
                f'{rnd.randrange(100, 50000)} "{rnd.choice(agents)}" rt={rnd.random():.3f}'
            ).encode()
        )
    return lines


def load_codec(path: str) -> types.ModuleType:
    """A one-module codec from ``path`` as a module of its own (for --baseline)."""
    spec = importlib.util.spec_from_file_location("annal_baseline_record_batch", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_once(n: int, rb: types.ModuleType = current_codec) -> dict[str, float]:
    """One run of every measurement of the codec module ``rb``; returns figure name -> value.
    The input data are made by the current codec (every version writes the same bytes)."""
    r: dict[str, float] = {}
    BatchBuilder = rb.BatchBuilder  # noqa: N806 - the measured codec's names, shadowing the imports
    Record = rb.Record  # noqa: N806
    encode_batch = rb.encode_batch
    decode_records_into = rb.decode_records_into
    iter_records = rb.iter_records
    validate_batch = rb.validate_batch
    validate_records = rb.validate_records
    value = os.urandom(VALUE_SIZE)
    values = [value] * n
    per_batch = records_per_batch(VALUE_SIZE)
    chunks = [
        [(TIMESTAMP_MS, None, value, None)] * len(values[b : b + per_batch]) for b in range(0, n, per_batch)
    ]

    # encode_batch
    t = cpu_time(lambda: [encode_batch(c) for c in chunks])
    r["encode_batch_rec_s"] = n / t

    # BatchBuilder.append alone, then append + build as the producer does it
    builders = [BatchBuilder(batch_size=BATCH_SIZE) for _ in chunks]

    def appends() -> None:
        for builder, c in zip(builders, chunks):
            append = builder.append
            for _ in range(len(c)):
                append(TIMESTAMP_MS, None, value)

    r["builder_append_ns"] = cpu_time(appends) / n * 1e9

    def append_and_build() -> None:
        for i, c in enumerate(chunks):
            builder = BatchBuilder(batch_size=BATCH_SIZE)
            append = builder.append
            for _ in range(len(c)):
                append(TIMESTAMP_MS, None, value)
            builder.build(i * per_batch)

    r["builder_rec_s"] = n / cpu_time(append_and_build)

    # decode, one fetch response (about max_partition_fetch_bytes = 1 MiB) at a time, the
    # records of each dropped before the next as a consumer hands them on
    buf = fetch_buffer(values, per_batch)
    fetches = split_fetches(buf, FETCH_BYTES)

    def decode_all(verify_crc: bool = True) -> None:
        for f in fetches:
            decode_records_into(f, 0, Record, verify_crc)

    r["decode_into_rec_s"] = n / cpu_time(decode_all)
    r["iter_records_rec_s"] = n / cpu_time(lambda: [sum(1 for _ in iter_records(f)) for f in fetches])
    r["decode_no_crc_rec_s"] = n / cpu_time(lambda: decode_all(False))

    # validation, MB/s of batch bytes
    positions = [p for p, _ in iter_batch_positions(buf)]
    mb = len(buf) / 1e6
    reps = 20
    r["validate_batch_mb_s"] = mb * reps / cpu_time(lambda: [validate_batch(buf, p) for _ in range(reps) for p in positions])
    r["validate_records_mb_s"] = mb / cpu_time(lambda: [validate_records(buf, p) for p in positions])

    # lz4 on log-like text
    lines = log_lines(n)
    line_chunks = []
    i = 0
    while i < len(lines):
        builder = BatchBuilder(batch_size=BATCH_SIZE)
        while i < len(lines) and builder.append(TIMESTAMP_MS, None, lines[i]) != -1:
            i += 1
        line_chunks.append([(TIMESTAMP_MS, None, v, None) for v in lines[i - builder.records_count : i]])
    plain = b"".join(encode_batch(c, CODEC_NONE) for c in line_chunks)
    compressed: list[bytes] = []
    t = cpu_time(lambda: compressed.extend(encode_batch(c, CODEC_LZ4) for c in line_chunks))
    lz4_buf = b"".join(compressed)
    r["lz4_ratio"] = len(plain) / len(lz4_buf)
    r["lz4_encode_rec_s"] = n / t
    r["lz4_encode_mb_s"] = len(plain) / 1e6 / t
    r["plain_log_encode_rec_s"] = n / cpu_time(lambda: [encode_batch(c, CODEC_NONE) for c in line_chunks])
    plain_fetches = split_fetches(plain, FETCH_BYTES)
    r["plain_log_decode_rec_s"] = n / cpu_time(lambda: [decode_records_into(f, 0, Record) for f in plain_fetches])
    lz4_fetches = split_fetches(lz4_buf, FETCH_BYTES)
    r["lz4_decode_rec_s"] = n / cpu_time(lambda: [decode_records_into(f, 0, Record) for f in lz4_fetches])

    # the ceiling: bare framing loops
    pack = struct.Struct(">i").pack

    def frame() -> bytes:
        parts: list[bytes] = []
        append = parts.append
        for v in values:
            append(pack(len(v)))
            append(v)
        return b"".join(parts)

    r["ceiling_encode_rec_s"] = n / cpu_time(frame)
    framed = frame()
    unpack_from = struct.Struct(">i").unpack_from

    framed_fetches = [framed[i : i + FETCH_BYTES // 104 * 104] for i in range(0, len(framed), FETCH_BYTES // 104 * 104)]

    def unframe() -> None:
        offset = 0
        for data in framed_fetches:
            out: list[tuple[int, int, None, bytes, tuple[()]]] = []
            append = out.append
            pos = 0
            end = len(data)
            while pos < end:
                (length,) = unpack_from(data, pos)
                pos += 4
                append((offset, TIMESTAMP_MS, None, data[pos : pos + length], ()))
                pos += length
                offset += 1

    r["ceiling_decode_rec_s"] = n / cpu_time(unframe)
    return r


TARGETS = {
    "encode_batch_rec_s": (">= 2,000,000 rec/s", lambda v: v >= 2_000_000),
    "decode_into_rec_s": (">= 1,500,000 rec/s", lambda v: v >= 1_500_000),
    "builder_append_ns": ("a few hundred ns", lambda v: v <= 500),
}

LABELS = {
    "encode_batch_rec_s": ("encode_batch, 100 B values", "rec/s"),
    "builder_append_ns": ("BatchBuilder.append", "ns/record"),
    "builder_rec_s": ("BatchBuilder append + build", "rec/s"),
    "decode_into_rec_s": ("decode_records_into(..., Record), CRC checked", "rec/s"),
    "iter_records_rec_s": ("iter_records, CRC checked", "rec/s"),
    "decode_no_crc_rec_s": ("decode_records_into, verify_crc=False", "rec/s"),
    "validate_batch_mb_s": ("validate_batch (header + CRC-32C)", "MB/s"),
    "validate_records_mb_s": ("validate_records (deep walk)", "MB/s"),
    "lz4_ratio": ("lz4 ratio, log-like text values", "x"),
    "lz4_encode_rec_s": ("encode_batch lz4, log-like text", "rec/s"),
    "lz4_encode_mb_s": ("encode_batch lz4, log-like text", "MB/s in"),
    "plain_log_encode_rec_s": ("encode_batch none, same log-like text", "rec/s"),
    "lz4_decode_rec_s": ("decode_records_into lz4, log-like text", "rec/s"),
    "plain_log_decode_rec_s": ("decode_records_into none, same log-like text", "rec/s"),
    "ceiling_encode_rec_s": ("ceiling: bare struct + b''.join framing loop", "rec/s"),
    "ceiling_decode_rec_s": ("ceiling: bare struct.unpack_from + slice loop", "rec/s"),
}


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m annal.bench.codec", description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=300_000, help="records per measurement")
    parser.add_argument("--runs", type=int, default=3, help="independent runs; the median is reported")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    parser.add_argument(
        "--baseline",
        metavar="FILE",
        help="a one-module codec (the API of annal.record) to measure in the same runs, interleaved, for an A/B",
    )
    parser.add_argument(
        "--compare-impls",
        action="store_true",
        help="baseline = the pure-Python codec, current = the compiled one (annal.record._native), interleaved",
    )
    args = parser.parse_args(argv)
    from annal.record import _impl

    if args.compare_impls and _impl.available is None:
        parser.error("--compare-impls: annal.record._native is not built in this installation")
    baseline = load_codec(args.baseline) if args.baseline else None
    was_native = _impl.native is not None
    runs = []
    base_runs = []
    try:
        for i in range(args.runs):
            if baseline is not None:
                base_runs.append(run_once(args.records, baseline))
            if args.compare_impls:
                _impl.use_native(False)
                base_runs.append(run_once(args.records))
                _impl.use_native(True)
            runs.append(run_once(args.records))
            print(f"run {i + 1}/{args.runs} done", file=sys.stderr)
    finally:
        _impl.use_native(was_native)
    print(f"machine: {machine()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    try:
        print(f"load average: {' '.join(open('/proc/loadavg').read().split()[:3])}")
    except OSError:
        pass
    command = f".venv/bin/python -m annal.bench.codec --records {args.records} --runs {args.runs}"
    print(
        f"command: {command}"
        + (f" --baseline {args.baseline}" if args.baseline else "")
        + (" --compare-impls" if args.compare_impls else "")
    )
    print(f"codec: {'compiled (annal.record._native)' if _impl.native is not None or args.compare_impls else 'pure Python'}")
    print()
    result = {}
    if base_runs:
        b_name, c_name = ("pure Python", "compiled") if args.compare_impls else ("baseline", "current")
        print(f"| figure | unit | {b_name} median | {c_name} median | {c_name} / {b_name} | {b_name} runs | {c_name} runs |")
        print("|---|---|---|---|---|---|---|")
        for key, (label, unit) in LABELS.items():
            b_values = [r[key] for r in base_runs]
            c_values = [r[key] for r in runs]
            b_med = statistics.median(b_values)
            c_med = statistics.median(c_values)
            result[key] = {"baseline": b_med, "current": c_med, "baseline_runs": b_values, "runs": c_values}
            print(
                f"| {label} | {unit} | {fmt(b_med)} | {fmt(c_med)} | {c_med / b_med:.2f}x | "
                f"{' / '.join(fmt(v) for v in b_values)} | {' / '.join(fmt(v) for v in c_values)} |"
            )
        print()
    print("| figure | unit | target | median | runs | met |")
    print("|---|---|---|---|---|---|")
    for key, (label, unit) in LABELS.items():
        values = [r[key] for r in runs]
        med = statistics.median(values)
        result.setdefault(key, {"median": med, "runs": values})["median"] = med
        target, ok = TARGETS.get(key, ("-", None))
        met = "-" if ok is None else ("yes" if ok(med) else "no")
        print(f"| {label} | {unit} | {target} | {fmt(med)} | {' / '.join(fmt(v) for v in values)} | {met} |")
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
