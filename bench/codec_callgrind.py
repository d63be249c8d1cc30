"""Instructions per record of the codec's hot paths, counted by ``valgrind --tool=callgrind``.

Wall-clock figures on a shared virtual machine move by 30 % between identical runs (see the
"ceiling" rows of ``python -m annal.bench.codec``); instruction counts do not. For each path
this runs a small workload once and four times in a fresh interpreter under callgrind and
divides the difference by the records of three iterations, so start-up and imports cancel out.
PYTHONHASHSEED is fixed, so the same code gives the same count on every run.

    python -m annal.bench.codec_callgrind                          # the current annal.record
    python -m annal.bench.codec_callgrind --baseline /tmp/rb.py    # and a one-module codec

Paths: ``decode`` (``decode_records_into`` of 32 batches of 595 records, 100 B values, into
``Record``, CRC checked), ``append`` (``BatchBuilder.append`` x 595 + ``build``) and
``append_value`` (``BatchBuilder.append_value`` x 595 + ``build``). Needs valgrind.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys

__all__ = ["main", "count", "PATHS"]

RECORDS = 595
BATCHES = 32

# Run in a fresh interpreter: argv = [path, iterations, baseline file or ""].
_WORKLOAD = r"""
import sys, importlib.util
path, iterations, baseline = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if baseline:
    spec = importlib.util.spec_from_file_location("baseline_codec", baseline)
    rb = importlib.util.module_from_spec(spec); spec.loader.exec_module(rb)
else:
    import annal.record as rb
value = b"v" * 100
ts = 1_700_000_000_000
batch = rb.encode_batch([(ts, None, value, None)] * %(records)d)
buf = batch * %(batches)d
for _ in range(iterations):
    if path == "decode":
        rb.decode_records_into(buf, 0, rb.Record)
    elif path == "append":
        b = rb.BatchBuilder()
        for _ in range(%(records)d):
            b.append(ts, None, value)
        b.build()
    elif path == "append_value":
        b = rb.BatchBuilder()
        for _ in range(%(records)d):
            b.append_value(ts, value)
        b.build()
""" % {"records": RECORDS, "batches": BATCHES}

PATHS = {"decode": RECORDS * BATCHES, "append": RECORDS, "append_value": RECORDS}


def count(path: str, iterations: int, baseline: str = "") -> int:
    """Instructions callgrind collects for one interpreter running ``iterations`` of ``path``."""
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, "-c", _WORKLOAD, path, str(iterations), baseline],
        capture_output=True, text=True, check=False,
        # String hashing is salted per process; the salt changes dict probing and so the
        # count by a few per cent. A fixed seed makes the count the same on every run.
        env=dict(os.environ, PYTHONHASHSEED="0"),
    )
    m = re.search(r"Collected\s*:\s*(\d+)", proc.stderr)
    if proc.returncode != 0 or not m:
        raise RuntimeError(f"callgrind run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return int(m.group(1))


def per_record(path: str, baseline: str = "") -> float:
    return (count(path, 4, baseline) - count(path, 1, baseline)) / (3 * PATHS[path])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m annal.bench.codec_callgrind", description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="", help="a one-module codec (the API of annal.record) to count too")
    parser.add_argument("--paths", default=",".join(PATHS), help="comma-separated subset of " + ", ".join(PATHS))
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install -y valgrind)", file=sys.stderr)
        return 2
    paths = [p for p in args.paths.split(",") if p]
    print("| path | " + ("baseline | " if args.baseline else "") + "current | instructions per record |")
    print("|---|" + ("---|" if args.baseline else "") + "---|---|")
    for path in paths:
        if path not in PATHS:
            parser.error(f"unknown path {path!r}")
        current = per_record(path)
        if args.baseline:
            base = per_record(path, args.baseline)
            print(f"| {path} | {base:,.0f} | {current:,.0f} | current / baseline = {current / base:.3f} |", flush=True)
        else:
            print(f"| {path} | {current:,.0f} | |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
