"""Pure parts of scripts/quickstart.py: bench result lines, record values, the /proc scan."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(30)

_PATH = Path(__file__).resolve().parents[2] / "scripts" / "quickstart.py"
_spec = importlib.util.spec_from_file_location("quickstart", _PATH)
assert _spec is not None and _spec.loader is not None
quickstart = importlib.util.module_from_spec(_spec)
sys.modules["quickstart"] = quickstart
_spec.loader.exec_module(quickstart)


def test_bench_result_of_the_producer_tool() -> None:
    lines = [
        "374918 records sent, 74221.1 records/sec (7.08 MB/sec), 60.6 ms avg latency, 674.7 ms max latency.",
        "1000000 records sent, 87707.742412 records/sec (8.36 MB/sec), 97.20 ms avg latency, 916.99 ms max "
        "latency, 43.20 ms 50th, 507.39 ms 95th, 693.25 ms 99th, 823.81 ms 99.9th.",
    ]
    assert quickstart._bench_result(lines) == lines[1]


def test_bench_result_of_the_consumer_tool() -> None:
    lines = [
        "the topic holds too few records: producing 12 records of 100 bytes first (not timed)",
        "start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, "
        "rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec",
        "2026-11-26 15:07:45:241, 2026-11-26 15:07:59:313, 95.3674, 6.7769, 1000000, 71061.3003, 0, 14072, "
        "6.7769, 71061.3003",
    ]
    assert quickstart._bench_result(lines) == "1000000 records consumed, 71061.3 records/sec (6.78 MB/sec), 14072 ms"


def test_bench_result_without_a_result_line() -> None:
    assert quickstart._bench_result([]) == "(no output)"
    assert quickstart._bench_result(["boom"]) == "boom"


def test_value_carries_the_record_number() -> None:
    v = quickstart._value(42, 100)
    assert len(v) == 100 and int(v[:8]) == 42
    assert quickstart._value(7, 8) == b"00000007"


def test_processes_naming_finds_a_child(tmp_path: Path) -> None:
    marker = tmp_path / "marker-dir"
    child = subprocess.Popen([sys.executable, "-c", "import sys; print('up', flush=True); sys.stdin.read()", str(marker)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    try:
        # Once it printed, it has exec'd: its /proc cmdline is its own, not the parent's copy.
        assert child.stdout is not None and child.stdout.readline() == b"up\n"
        found = quickstart.processes_naming(str(marker))
        assert [pid for pid, _ in found] == [child.pid]
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)
    assert quickstart.processes_naming(str(marker)) == []
