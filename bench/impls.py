"""``annal-bench produce`` and ``consume`` with each codec implementation, and where the CPU goes.

    .venv/bin/python -m annal.bench.impls [--runs 3] [--num-records 1000000] [--write FILE]

For each run and each implementation (``native``: the compiled ``annal.record._native``;
``python``: ``ANNAL_PURE_PYTHON=1``), alternating: a standalone broker is started with that
implementation, then ``annal-bench produce --num-records N --record-size 100`` and
``annal-bench consume --num-records N --no-fill`` run against it as subprocesses with the same
implementation (``--bootstrap-server``, a fresh topic). For each command this records its
records/s (from its ``--json``), the CPU seconds of the broker process over the command
(``/proc/PID/stat``) and of the annal-bench process tree (``RUSAGE_CHILDREN``: the command and
its worker processes, their interpreter start-up and imports included), and reports the
broker's share of that CPU time. Every figure is the
median of ``--runs`` runs, every run listed, with the load average before each run (the
machine may be shared).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from typing import Any

from annal.bench._local_broker import LocalBroker
from annal.bench._report import machine_info
from annal.bench.sdk import process_cpu_s
from annal.record import _impl

__all__ = ["main"]

IMPL_LABELS = {"native": "compiled codec", "python": "pure Python, ANNAL_PURE_PYTHON=1"}
TARGET = ">= 1,000,000"  # issue 17: annal-bench produce and consume, compiled


def _env(impl: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("ANNAL_PURE_PYTHON", None)
    if impl == "python":
        env["ANNAL_PURE_PYTHON"] = "1"
    return env


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _loadavg() -> str:
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def run_command(cmd: list[str], impl: str, broker_pid: int, json_path: str) -> dict[str, float]:
    """One annal-bench command: its records/s and the CPU split between broker and client."""
    exe = shutil.which("annal-bench", path=os.path.dirname(sys.executable))
    argv = [exe] if exe else [sys.executable, "-m", "annal.bench.cli"]
    b0, c0 = process_cpu_s(broker_pid), _children_cpu_s()
    proc = subprocess.run([*argv, *cmd, "--json", json_path], capture_output=True, text=True, env=_env(impl))
    b1, c1 = process_cpu_s(broker_pid), _children_cpu_s()
    if proc.returncode != 0:
        raise RuntimeError(f"annal-bench {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    with open(json_path, encoding="utf-8") as f:
        result = json.load(f)["result"]
    broker_s, client_s = b1 - b0, c1 - c0
    records = float(result.get("records", 0) or result.get("num_records", 0) or 0)
    out = {
        "rate": float(result["records_per_sec"]),
        "broker_s": broker_s,
        "client_s": client_s,
        "broker_pct": 100.0 * broker_s / (broker_s + client_s) if broker_s + client_s > 0 else float("nan"),
    }
    if records:
        out["client_us"] = client_s / records * 1e6
        out["broker_us"] = broker_s / records * 1e6
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    print(f"[{impl}] annal-bench {' '.join(cmd)}: {last}", flush=True)
    return out


ROWS = [
    ("produce", "rate", "annal-bench produce, 1 producer, acks=1, 100 B", "records/s", True),
    ("produce", "broker_pct", "annal-bench produce: broker's share of the CPU time (broker / (broker + client))", "%", False),
    ("produce", "client_us", "annal-bench produce: client processes' CPU per record", "us/record", False),
    ("produce", "broker_us", "annal-bench produce: broker process CPU per record", "us/record", False),
    ("consume", "rate", "annal-bench consume, 1 consumer, 100 B", "records/s", True),
    ("consume", "broker_pct", "annal-bench consume: broker's share of the CPU time (broker / (broker + client))", "%", False),
    ("consume", "client_us", "annal-bench consume: client processes' CPU per record", "us/record", False),
    ("consume", "broker_us", "annal-bench consume: broker process CPU per record", "us/record", False),
]


def _fmt(key: str, v: float) -> str:
    if key == "rate":
        return f"{v:,.0f}"
    if key == "broker_pct":
        return f"{v:.0f}"
    return f"{v:.2f}"


def markdown(results: dict[str, dict[str, list[dict[str, float]]]], command: str, started: str, loads: list[str]) -> str:
    lines = ["| figure | unit | target | median | runs | met |", "|---|---|---|---|---|---|"]
    for what, key, label, unit, has_target in ROWS:
        for impl, by_cmd in results.items():
            runs = [r[key] for r in by_cmd.get(what, []) if key in r]
            if not runs:
                continue
            med = statistics.median(runs)
            target = TARGET if has_target and impl == "native" else "-"
            met = ("yes" if med >= 1_000_000 else "no") if target != "-" else "-"
            lines.append(
                f"| {label} ({IMPL_LABELS[impl]}) | {unit} | {target} | {_fmt(key, med)} | "
                f"{' / '.join(_fmt(key, v) for v in runs)} | {met} |"
            )
    info = machine_info()
    machine = f"{info['cpus']} cores, {info['cpu_model']}, Python {info['python']}"
    return "\n".join(lines) + (
        f"\n\n- Command: `{command}`\n- Date: {started}\n- Machine: {machine}\n"
        f"- Load average before each run: {'; '.join(loads)}\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m annal.bench.impls", description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--num-records", type=int, default=1_000_000)
    p.add_argument("--impls", default="native,python" if _impl.available is not None else "python")
    p.add_argument("--write", default=None, metavar="FILE", help="write the markdown table here")
    args = p.parse_args(argv)
    impls = [i for i in args.impls.split(",") if i]
    if "native" in impls and _impl.available is None:
        p.error("--impls native: annal.record._native is not built in this installation")
    command = ".venv/bin/python -m annal.bench.impls " + " ".join(argv if argv is not None else sys.argv[1:])
    started = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results: dict[str, dict[str, list[dict[str, float]]]] = {i: {"produce": [], "consume": []} for i in impls}
    loads: list[str] = []
    n = str(args.num_records)
    with tempfile.TemporaryDirectory(prefix="annal-bench-impls-") as tmp:
        for run in range(1, args.runs + 1):
            for impl in impls:
                loads.append(f"run {run} {impl}: {_loadavg()}")
                saved = dict(os.environ)
                os.environ.clear()
                os.environ.update(_env(impl))  # the broker inherits the implementation
                try:
                    broker = LocalBroker(data_dir=os.path.join(tmp, f"{impl}-{run}"), extra_args=["--log-level", "WARNING"])
                    broker.start()
                finally:
                    os.environ.clear()
                    os.environ.update(saved)
                try:
                    assert broker.process is not None
                    pid = broker.process.pid
                    topic = f"impls-{impl}-{run}"
                    conn = ["--bootstrap-server", broker.bootstrap, "--topic", topic]
                    results[impl]["produce"].append(
                        run_command(["produce", "--num-records", n, "--record-size", "100", *conn], impl, pid,
                                    os.path.join(tmp, "p.json"))
                    )
                    results[impl]["consume"].append(
                        run_command(["consume", "--num-records", n, "--no-fill", *conn], impl, pid,
                                    os.path.join(tmp, "c.json"))
                    )
                finally:
                    broker.stop()
    print(json.dumps(results, indent=2))
    table = markdown(results, command, started, loads)
    print(table)
    if args.write:
        with open(args.write, "w", encoding="utf-8") as f:
            f.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
