"""Storage engine figures: append and read speed of a ``PartitionLog`` against the ceiling of
this machine's page cache and disk.

    .venv/bin/python -m annal.bench.storage [--dir DIR] [--runs 3] [--write docs/benchmarks/storage.md]

Figures (each the median of ``--runs`` runs, every run printed):

* append of already-encoded 1 MiB batches (the bytes a produce request carries, so ``append``
  copies each once to set its baseOffset) into the page cache, in MB/s;
* the same with an fdatasync per batch (``flush_messages=1``);
* reads of 64 KiB at random offsets of a 10,000,000-record log, and near its head (reads/s), and
  their ratio (the dense index makes a lookup one array read wherever the offset is);
* the ceiling: buffered ``write()`` of 1 MiB blocks, ``write()`` + ``fdatasync`` per 1 MiB, and
  the cost of one fdatasync after a 4 KiB write;
* the time of one append that rolls a segment (16 MiB segments, so every 16th 1 MiB append
  creates and maps a new segment and its two indexes, and trims the old ones), against the
  appends that do not (``--only rolls`` runs just this figure).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

from annal.broker.storage import PartitionLog
from annal.record import encode_batch

MiB = 1 << 20


def one_mib_batch() -> bytes:
    """A 1 MiB RecordBatch: 1024 records of ~1000-byte values."""
    value = bytes(random.Random(1).randbytes(1000))
    b = encode_batch([(1_700_000_000_000 + i, None, value, None) for i in range(1024)])
    return b


def bench_append(root: str, batch: bytes, total_bytes: int, flush_each: bool) -> float:
    path = tempfile.mkdtemp(dir=root)
    try:
        lg = PartitionLog.open(os.path.join(path, "bench-0"), segment_bytes=1 << 30, max_message_bytes=2 * MiB,
                               retention_ms=-1, flush_messages=1 if flush_each else None)
        n = max(1, total_bytes // len(batch))
        t0 = time.perf_counter()
        for _ in range(n):
            lg.append(batch)
        dt = time.perf_counter() - t0
        lg.close()
        return n * len(batch) / dt / 1e6
    finally:
        shutil.rmtree(path, ignore_errors=True)


def bench_rolls(root: str, batch: bytes, appends: int, segment_mib: int = 16) -> tuple[float, float, float]:
    """(median, max) ms of the appends that rolled a segment, and the median ms of the others."""
    path = tempfile.mkdtemp(dir=root)
    try:
        lg = PartitionLog.open(os.path.join(path, "rolls-0"), segment_bytes=segment_mib * MiB,
                               max_message_bytes=2 * MiB, retention_ms=-1)
        rolled: list[float] = []
        other: list[float] = []
        for _ in range(appends):
            before = len(lg.segments)
            t0 = time.perf_counter()
            lg.append(batch)
            dt = (time.perf_counter() - t0) * 1000
            (rolled if len(lg.segments) > before else other).append(dt)
        lg.close()
        return statistics.median(rolled), max(rolled), statistics.median(other)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def build_big_log(root: str, records: int) -> PartitionLog:
    """A log of ``records`` records of 10-byte values in 1000-record batches (segments of
    256 MiB, so it spans a few)."""
    per = 1000
    b = encode_batch([(1_700_000_000_000, None, b"0123456789", None)] * per)
    lg = PartitionLog.open(os.path.join(root, "read-0"), segment_bytes=64 * MiB, retention_ms=-1)
    for _ in range(records // per):
        lg.append(b)
    return lg


def bench_reads(lg: PartitionLog, pick: Callable[[], int], seconds: float, max_bytes: int = 64 * 1024) -> float:
    n = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        for _ in range(200):
            r = lg.read(pick(), max_bytes)
            r.release()
        n += 200
        now = time.perf_counter()
        if now >= end:
            return n / (now - t0)


def bench_read_pair(lg: PartitionLog, pick_a: Callable[[], int], pick_b: Callable[[], int],
                    seconds: float, max_bytes: int = 64 * 1024) -> tuple[float, float]:
    """Reads/s of two offset pickers, alternating blocks of 200 reads so that both see the same
    machine load."""
    n = [0, 0]
    spent = [0.0, 0.0]
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for k, pick in enumerate((pick_a, pick_b)):
            t0 = time.perf_counter()
            for _ in range(200):
                lg.read(pick(), max_bytes).release()
            spent[k] += time.perf_counter() - t0
            n[k] += 200
    return n[0] / spent[0], n[1] / spent[1]


def ceiling_write(root: str, total_bytes: int, fsync_each: bool) -> float:
    path = os.path.join(root, "ceiling.bin")
    block = os.urandom(MiB)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        t0 = time.perf_counter()
        for _ in range(total_bytes // MiB):
            os.write(fd, block)
            if fsync_each:
                os.fdatasync(fd)
        dt = time.perf_counter() - t0
    finally:
        os.close(fd)
        os.unlink(path)
    return total_bytes / dt / 1e6


def ceiling_fdatasync_ms(root: str, n: int = 200) -> float:
    path = os.path.join(root, "fsync.bin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    block = os.urandom(4096)
    times = []
    try:
        for _ in range(n):
            os.write(fd, block)
            t0 = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.unlink(path)
    return statistics.median(times) * 1000


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="annal.bench.storage", description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default=None, help="where to write (default: a temp dir under /tmp)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--append-mib", type=int, default=512, help="MiB appended per append run")
    p.add_argument("--fsync-mib", type=int, default=256, help="MiB appended per fdatasync run")
    p.add_argument("--records", type=int, default=10_000_000, help="records in the read log")
    p.add_argument("--read-seconds", type=float, default=3.0)
    p.add_argument("--rolls-appends", type=int, default=1024, help="1 MiB appends per segment-roll run")
    p.add_argument("--only", choices=["all", "rolls"], default="all", help="rolls: only the segment-roll figure")
    p.add_argument("--write", metavar="MD", help="write the results table to this markdown file")
    args = p.parse_args(argv)
    if args.only != "all" and args.write:
        p.error("--write needs every figure: leave out --only")
    if args.rolls_appends < 17:
        p.error("--rolls-appends must be at least 17: a 16 MiB segment rolls at the 17th 1 MiB append")

    root = tempfile.mkdtemp(prefix="annal-bench-storage-", dir=args.dir)
    rows: list[tuple[str, str, list[float], str]] = []

    def add(name: str, target: str, unit: str, runs: list[float]) -> None:
        rows.append((name, target, runs, unit))
        print(f"{name}: runs {', '.join(f'{v:,.2f}' for v in runs)}; median {statistics.median(runs):,.2f} {unit}",
              flush=True)

    try:
        batch = one_mib_batch()
        print(f"batch: {len(batch)} bytes, 1024 records", flush=True)
        roll_med: list[float] = []
        roll_max: list[float] = []
        no_roll: list[float] = []
        for i in range(args.runs):
            os.sync()
            med, mx, other = bench_rolls(root, batch, args.rolls_appends)
            roll_med.append(med)
            roll_max.append(mx)
            no_roll.append(other)
            print(f"run {i + 1}: append that rolls a 16 MiB segment {med:.2f} ms (max {mx:.2f}), "
                  f"other appends {other:.3f} ms", flush=True)
        add("append of 1 MiB that rolls a 16 MiB segment", "", "ms", roll_med)
        add("slowest append that rolls (same runs)", "", "ms", roll_max)
        add("append of 1 MiB that does not roll (same runs)", "", "ms", no_roll)
        if args.only == "all":
            # The disk and page cache are shared with other work, so each run measures the log and
            # the raw ceiling back to back, and the figures are compared run by run.
            pc: list[float] = []
            pc_ceiling: list[float] = []
            fs: list[float] = []
            fs_ceiling: list[float] = []
            one_sync: list[float] = []
            for i in range(args.runs):
                # Alternate which goes first, so neither always meets the other's dirty pages.
                pairs = [
                    (pc, lambda: bench_append(root, batch, args.append_mib * MiB, False)),
                    (pc_ceiling, lambda: ceiling_write(root, args.append_mib * MiB, False)),
                ]
                sync_pairs = [
                    (fs, lambda: bench_append(root, batch, args.fsync_mib * MiB, True)),
                    (fs_ceiling, lambda: ceiling_write(root, args.fsync_mib * MiB, True)),
                ]
                for group in (pairs, sync_pairs):
                    for out, fn in (group if i % 2 == 0 else group[::-1]):
                        os.sync()
                        out.append(fn())
                one_sync.append(ceiling_fdatasync_ms(root))
                print(f"run {i + 1}: append {pc[-1]:,.0f} MB/s (write() {pc_ceiling[-1]:,.0f}), "
                      f"append+fdatasync {fs[-1]:,.0f} MB/s (write()+fdatasync {fs_ceiling[-1]:,.0f}), "
                      f"fdatasync {one_sync[-1]:.3f} ms", flush=True)
            add("append 1 MiB batches, page cache", ">= 1000 MB/s", "MB/s", pc)
            add("append 1 MiB batches, fdatasync each", ">= 500 MB/s", "MB/s", fs)
            add("ceiling: buffered write() of 1 MiB blocks (same runs)", "", "MB/s", pc_ceiling)
            add("ceiling: write() + fdatasync per 1 MiB (same runs)", "", "MB/s", fs_ceiling)
            add("ceiling: one fdatasync after a 4 KiB write", "", "ms", one_sync)

            print(f"building a {args.records:,}-record log...", flush=True)
            lg = build_big_log(root, args.records)
            leo = lg.log_end_offset
            rnd = random.Random(7)
            rand_runs: list[float] = []
            head_runs: list[float] = []
            for i in range(args.runs):
                r, h = bench_read_pair(lg, lambda: rnd.randrange(0, leo),
                                       lambda: rnd.randrange(leo - 100_000, leo), args.read_seconds)
                rand_runs.append(r)
                head_runs.append(h)
                print(f"run {i + 1}: random {r:,.0f} reads/s, head {h:,.0f} reads/s", flush=True)
            add(f"read 64 KiB at random offsets of {leo:,} records", "", "reads/s", rand_runs)
            add("read 64 KiB near the head (last 100,000 offsets)", "", "reads/s", head_runs)
            add("random/head read rate ratio", "within 1.2x", "x", [r / h for r, h in zip(rand_runs, head_runs)])
            lg.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    cmd = ".venv/bin/python -m annal.bench.storage " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "| figure | target | median | runs |",
        "|---|---|---|---|",
    ]
    for name, target, runs, unit in rows:
        fmt = (lambda v: f"{v:.3f}") if unit in ("x", "ms") else (lambda v: f"{v:,.0f}")
        lines.append(f"| {name} | {target or '-'} | **{fmt(statistics.median(runs))} {unit}** | "
                     f"{', '.join(fmt(v) for v in runs)} |")
    table = "\n".join(lines)
    meta = (f"Command: `{cmd.strip()}`  \nDate: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  \n"
            f"Machine: {os.cpu_count()} CPUs (`nproc`), {cpu_model()}, Python {platform.python_version()}, "
            f"files under {root.rsplit('/', 1)[0]}")
    print()
    print(table)
    print(meta)
    if args.write:
        notes = ""
        try:
            with open(args.write) as f:
                old = f.read()
            if "\n## Notes" in old:  # kept across runs: written by hand from the profiles
                notes = old[old.index("\n## Notes"):]
        except FileNotFoundError:
            pass
        with open(args.write, "w") as f:
            f.write("# Storage engine figures\n\n" + table + "\n\n" + meta + "\n" + notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
