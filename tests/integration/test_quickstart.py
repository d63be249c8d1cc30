"""``bash scripts/run`` end to end: the README's first command, with a small record count.

The set-up part (venv, apt) is skipped with ``ANNAL_RUN_PYTHON`` pointing at this interpreter;
everything else is the same script: a real ZooKeeper and three real brokers on loopback,
records through the SDK, annal-bench against the cluster, and the stop. Afterwards no process
may still name the run's directory (the brokers' ``--data-dir`` and ZooKeeper's ``zoo.cfg``
live under it), whether the run ended normally or by Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "run"


@pytest.fixture()
def needs_zookeeper() -> None:
    from annal.broker.coordination.zk_server import ZooKeeperNotInstalledError, zookeeper_classpath

    try:
        zookeeper_classpath()
    except ZooKeeperNotInstalledError as exc:
        pytest.skip(str(exc))


def processes_naming(path: Path) -> list[str]:
    """Command lines of live processes that mention ``path``."""
    needle = str(path).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if needle in cmd:
            words = cmd.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry}: {words}")
    return found


def _env(run_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["ANNAL_RUN_PYTHON"] = sys.executable
    env["ANNAL_RUN_DIR"] = str(run_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _wait_for_text(path: Path, pattern: str, proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if re.search(pattern, text):
            return text
        if proc.poll() is not None:
            pytest.fail(f"scripts/run exited ({proc.returncode}) before {pattern!r}:\n{text}")
        time.sleep(0.1)
    pytest.fail(f"no {pattern!r} in the output after {timeout_s} s:\n{path.read_text(errors='replace')}")


@pytest.mark.timeout(300)
def test_run_end_to_end(tmp_path: Path, needs_zookeeper: None) -> None:
    run_dir = tmp_path / "run"
    records = 3000
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--records", str(records), "--bench-records", "3000"],
        cwd=ROOT, env=_env(run_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        timeout=280, check=False,
    )  # fmt: skip
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, out
    # A real cluster: ZooKeeper, three brokers, partitions led by all three.
    assert re.search(r"^   zookeeper: 127\.0\.0\.1:\d+", out, re.MULTILINE), out
    bootstrap = re.search(r"^   bootstrap servers: (\S+)", out, re.MULTILINE)
    assert bootstrap and len(bootstrap.group(1).split(",")) == 3, out
    leaders = re.search(r"topic quickstart: 6 partitions, leaders \[([\d, ]+)\]", out)
    assert leaders and len(set(leaders.group(1).split(", "))) == 3, out
    # The summary block.
    assert f"records produced: {records}  (" in out, out
    assert re.search(rf"^records consumed: {records}  \(.*group offsets committed: {records}\)$", out, re.MULTILINE), out
    assert re.search(r"^bench produce: 3000 records sent, [\d.]+ records/sec \([\d.]+ MB/sec\)", out, re.MULTILINE), out
    assert re.search(r"^bench consume: 3000 records consumed, [\d.]+ records/sec", out, re.MULTILINE), out
    assert "processes left behind: none" in out, out
    assert out.rstrip().endswith("result: ok"), out
    # Nothing left: no process, no directory.
    assert processes_naming(run_dir) == []
    assert not run_dir.exists()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupted_run_leaves_nothing(tmp_path: Path, how: str, needs_zookeeper: None) -> None:
    """Ctrl-C (SIGINT to the terminal's process group) or SIGTERM to the script, mid-run."""
    run_dir = tmp_path / "run"
    log_path = tmp_path / "out.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            # Far more records than can be sent before the signal: the run is mid-produce.
            ["bash", str(SCRIPT), "--records", "50000000"],
            cwd=ROOT, env=_env(run_dir), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        _wait_for_text(log_path, r"== producing", proc, timeout_s=180)
        assert processes_naming(run_dir), "the cluster should be running under the run dir"
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGTERM)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = log_path.read_text(errors="replace")
    assert rc == 130, out
    assert "== stopping the cluster" in out, out
    assert "result: FAILED (exit 130)" in out, out
    # scripts/run returns only after its clean-up: nothing may be left at this point.
    left = processes_naming(run_dir)
    assert left == [], "processes left behind:\n" + "\n".join(left) + f"\n{out}"
    assert not run_dir.exists()


@pytest.mark.timeout(60)
def test_readme_python_example_runs(broker: Any, tmp_path: Path) -> None:
    """The README's ten lines, as printed there, against a real standalone broker."""
    readme = (ROOT / "README.md").read_text()
    example = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)[0]
    assert "127.0.0.1:9092" in example
    script = tmp_path / "example.py"
    script.write_text(example.replace("127.0.0.1:9092", broker.bootstrap))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=50, check=False)  # fmt: skip
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, out
    rows = [line.split(" ", 2) for line in out.splitlines()]
    assert len(rows) == 10, out
    values = sorted(row[2].split(" b")[-1] for row in rows)
    assert values == sorted(f"'order {i}'" for i in range(10)), out
    # Same key, same partition.
    by_key: dict[str, set[str]] = {}
    for partition, _offset, rest in rows:
        by_key.setdefault(rest.split(" ")[0], set()).add(partition)
    assert all(len(p) == 1 for p in by_key.values()), out
