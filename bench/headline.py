"""Run annal-bench's own headline figures 3 times and write docs/benchmarks/bench.md.

    .venv/bin/python -m annal.bench.headline [--runs 3] [--out docs/benchmarks/bench.md]

Each command below runs as a subprocess (exactly the command printed in the table) with
``--json``; the fragment reports the median of the runs and every run, the date, the machine
(``nproc``, CPU model) and the load average before and after, since the machine may be shared.
The ceiling run measures each of its figures 3 times itself (interleaved) and is run once; its
JSON is kept next to the fragment as ``docs/benchmarks/ceiling.json`` for ``annal.bench.assemble_docs``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from annal.bench._report import machine_info

__all__ = ["main"]

HEADLINE: list[tuple[str, list[str], list[tuple[str, str, Callable[[dict[str, Any]], float], str]]]] = [
    (
        "produce",
        ["produce", "--num-records", "1000000", "--record-size", "100"],
        [
            ("produce throughput, 1 producer, acks=1, 100 B", "records/s", lambda r: r["records_per_sec"], "{:,.0f}"),
            ("produce throughput, 1 producer, acks=1, 100 B", "MB/s", lambda r: r["mb_per_sec"], "{:.2f}"),
            ("produce latency p50 (send to ack)", "ms", lambda r: r["latency_ms"]["p50_ms"], "{:.2f}"),
            ("produce latency p99 (send to ack)", "ms", lambda r: r["latency_ms"]["p99_ms"], "{:.2f}"),
        ],
    ),
    (
        "consume",
        ["consume", "--num-records", "1000000"],
        [
            ("consume throughput, 1 consumer, 100 B", "records/s", lambda r: r["records_per_sec"], "{:,.0f}"),
            ("consume throughput, 1 consumer, 100 B", "MB/s", lambda r: r["mb_per_sec"], "{:.2f}"),
        ],
    ),
    (
        "produce-per-record",
        ["produce", "--num-records", "1000000", "--record-size", "100", "--latency-per", "record"],
        [
            ("produce throughput with a callback per record (bench overhead check)", "records/s",
             lambda r: r["records_per_sec"], "{:,.0f}"),
        ],
    ),
    (
        "e2e",
        ["e2e", "--rate", "1000", "--duration-s", "10"],
        [
            ("end-to-end latency p50 at 1000 records/s", "ms", lambda r: r["e2e_latency_ms"]["p50_ms"], "{:.2f}"),
            ("end-to-end latency p99 at 1000 records/s", "ms", lambda r: r["e2e_latency_ms"]["p99_ms"], "{:.2f}"),
            ("end-to-end latency p99.9 at 1000 records/s", "ms", lambda r: r["e2e_latency_ms"]["p999_ms"], "{:.2f}"),
        ],
    ),
]


NOTES = [
    "## Notes",
    "",
    "- Targets: annal-bench's own figures have none; the produce and consume targets belong to the SDK "
    "and broker issues and are judged in their fragments (`sdk.md`, `broker.md`).",
    "- Why latency is recorded per batch: `py-spy record --subprocesses -- annal-bench produce "
    "--num-records 300000 --latency-per record` (run at 15:09 UTC, 37,205 records/s) puts the two largest "
    "self-time entries of the producer process in the SDK's callback registration: "
    "`FutureRecordMetadata._add` (14 % of samples; a process-wide `_callback_lock` taken by every "
    "`add_callback`/`add_errback`, contended with the sender thread completing batches) and `_bind` with "
    "its lambda (12 %; a closure per callback with arguments). One callback per batch removes both from the send loop; the "
    "per-record row above shows the difference.",
    "- Finding, fixed (end-to-end latency): a FETCH answer reached the client in two steps. Measured at "
    "15:29 UTC with a raw FETCH on the data port sent right after an acknowledged 100-byte produce (30 "
    "requests, `annal.protocol.framing`, client socket with TCP_NODELAY): the 45-byte response head arrived "
    "after a median 0.39 ms, the sendfile'd batch after 42.76 ms. `strace -f -e trace=setsockopt,accept4` of "
    "the broker showed only `SO_SNDBUF` set on the accepted data-port socket: Nagle held the sendfile'd bytes "
    "until the head was acknowledged, and the client's delayed ACK took ~40 ms. End-to-end p50 was 71-73 ms "
    "at 200, 1000 and 2000 records/s while the produce ack p50 was 4-6 ms. Commit ecd2cd2 sets `TCP_NODELAY` on "
    "accepted data-port sockets; the same probe then gave 0.27 ms / 0.39 ms (15:42 UTC), and the e2e rows "
    "above were measured after it.",
    "- What is in the way of consume: `py-spy record --subprocesses -- annal-bench consume --num-records "
    "1000000` (16:00 UTC; 330,533 records/s in that run) finds, of the consumer process's active samples, "
    "71 % under `Consumer.poll`: 39 % in the codec's `decode_records_into` (32 % self time in "
    "`_decode_uniform`) and 21 % self time in `Consumer._decode` building `ConsumerRecord`s; the fetch thread "
    "takes 15 %, the bench's own byte counting 6 %. Consume throughput is bounded by per-record decoding in "
    "Python, not by the broker (its sendfile fetch runs at a fraction of the ceiling, see `broker.md`).",
    "- The standalone broker, the producer or consumer process and the bench's parent share 2 cores, and "
    "the machine was shared with other runs: the spread between runs is the noise, not the "
    "code.",
    "",
]


def _loadavg() -> str:
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def _run(cmd: list[str], json_path: str, plot_path: str | None = None) -> dict[str, Any]:
    exe = shutil.which("annal-bench", path=os.path.dirname(sys.executable)) or ""
    argv = [exe] if exe else [sys.executable, "-m", "annal.bench.cli"]
    extra = ["--plot", plot_path] if plot_path else []
    proc = subprocess.run([*argv, *cmd, "--json", json_path, *extra], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"annal-bench {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    sys.stderr.write(proc.stdout.strip().splitlines()[-1] + "\n")
    with open(json_path, encoding="utf-8") as f:
        return json.load(f)  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m annal.bench.headline", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", default="docs/benchmarks/bench.md")
    p.add_argument("--ceiling-json", default="docs/benchmarks/ceiling.json")
    p.add_argument("--skip-ceiling", action="store_true", help="reuse the existing ceiling JSON")
    args = p.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="annal-headline-")
    load_before = _loadavg()
    started = _dt.datetime.now(_dt.timezone.utc)
    rows: list[str] = []
    images = os.path.join(os.path.dirname(args.out) or ".", "images")
    os.makedirs(images, exist_ok=True)
    plots: list[tuple[str, list[str]]] = []
    try:
        if not args.skip_ceiling:
            summary = _run(["ceiling"], os.path.join(tmp, "ceiling.json"))
            with open(args.ceiling_json, "w", encoding="utf-8") as f:
                json.dump(summary, f, indent=2)
                f.write("\n")
        for name, cmd, figures in HEADLINE:
            plot = os.path.join(images, f"{name}.png")
            results = [
                _run(cmd, os.path.join(tmp, f"{name}-{i}.json"), plot if i == 0 else None)["result"]
                for i in range(args.runs)
            ]
            plots.append((name, cmd))
            for label, unit, get, fmt in figures:
                vals = [get(r) for r in results]
                med = statistics.median(vals)
                runs = ", ".join(fmt.format(v) for v in vals)
                rows.append(f"| {label} | {fmt.format(med)} {unit} | {runs} | `annal-bench {' '.join(cmd)}` |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with open(args.ceiling_json, encoding="utf-8") as f:
        ceiling = json.load(f)
    m = machine_info()
    lines = [
        "# annal-bench: headline figures",
        "",
        f"Date: {started.strftime('%Y-%m-%d %H:%M UTC')}. Machine: {m['cpus']} cores (`nproc`), "
        f"{m['cpu_model']}, {round((m['mem_total_bytes'] or 0) / 2**30)} GiB, Python {m['python']}. "
        f"Load average before/after: {load_before} / {_loadavg()} (the machine was shared with other "
        "test and benchmark runs; figures are noisy).",
        "",
        f"Written by `.venv/bin/python -m annal.bench.headline` (median of {args.runs} runs, each run a separate "
        "command; every run listed). Each command starts its own standalone broker on a temporary data "
        "directory (no `--bootstrap-server`), so the broker and the bench share the machine's cores. "
        "Latency is recorded per batch callback (see docs/bench.md); the per-record row shows what a "
        "callback per record costs.",
        "",
        "| figure | measured (median) | runs | command |",
        "|---|---|---|---|",
        *rows,
        "",
        "## Machine ceilings",
        "",
        f"`annal-bench ceiling` ({ceiling['started_at']}; each figure measured 3 times, interleaved; median):",
        "",
        "| ceiling | median | runs |",
        "|---|---|---|",
    ]
    from annal.bench.ceiling import FIGURES

    for key, label, unit, fmt in FIGURES:
        v = ceiling["result"][key]
        lines.append(f"| {label} | {fmt.format(v['median'])} {unit} | {', '.join(fmt.format(x) for x in v['runs'])} |")
    lines += ["", "## Plots (first run of each command)", ""]
    for name, cmd in plots:
        lines += [f"`annal-bench {' '.join(cmd)} --plot ...`:", "", f"![{name}](images/{name}.png)", ""]
    lines += [*NOTES]
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
