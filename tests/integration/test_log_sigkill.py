"""A process appending to a log is killed with SIGKILL; reopening the log gives a valid prefix
that holds every batch the child reported as flushed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from annal.broker.storage import PartitionLog
from annal.record import iter_records

CHILD = textwrap.dedent(
    """
    import sys
    from annal.broker.storage import PartitionLog
    from annal.record import encode_batch

    path, every = sys.argv[1], int(sys.argv[2])
    lg = PartitionLog.open(path, segment_bytes=8 * 1024, segment_index_bytes=4 * 1024)
    i = 0
    while True:
        n = 1 + i % 7
        base = lg.append(encode_batch([(i, b"k", b"%d/%d" % (i, j) + b"v" * (i % 300), None) for j in range(n)]))
        i += 1
        if i % every == 0:
            lg.flush()
            print(base + n, flush=True)   # every offset below this is durable
    """
)


def _wait_for_lines(proc: subprocess.Popen, n: int, deadline_s: float) -> list[int]:
    assert proc.stdout is not None
    flushed: list[int] = []
    end = time.monotonic() + deadline_s
    while len(flushed) < n and time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        flushed.append(int(line))
    return flushed


@pytest.mark.timeout(120)
@pytest.mark.parametrize("round_", range(3))
def test_sigkill_leaves_a_valid_prefix_with_everything_flushed(tmp_path, round_):
    path = str(tmp_path / "t-0")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, path, "5"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        flushed = _wait_for_lines(proc, 15 + 10 * round_, 60)
        assert len(flushed) >= 10, proc.stderr.read() if proc.poll() is not None else "child too slow"
        proc.send_signal(signal.SIGKILL)
        # Reports printed before the kill landed are durable too.
        rest = proc.stdout.read() if proc.stdout else ""
        flushed += [int(x) for x in rest.split()]
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    lg = PartitionLog.open(path)  # no checkpoint: scan everything
    try:
        leo = lg.log_end_offset
        assert leo >= max(flushed)
        with lg.read(0, 1 << 30) as r:
            recs = list(iter_records(r.tobytes()))
        assert [rec.offset for rec in recs] == list(range(leo))
        # Each record is the one the child wrote at that offset: batch i has 1 + i % 7 records.
        i = j = 0
        for rec in recs:
            assert rec.value.startswith(b"%d/%d" % (i, j)) and rec.timestamp == i
            j += 1
            if j == 1 + i % 7:
                i, j = i + 1, 0
        assert len(lg.segments) > 1
        assert not [n for n in os.listdir(path) if n.endswith((".deleted", ".tmp"))]
    finally:
        lg.close()
