"""annal.bench.ceiling: each measurement at a tiny size, and the command's JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from annal.bench import ceiling


def test_write_measurements(tmp_path: Path) -> None:
    assert ceiling.measure_write(str(tmp_path), 4 * ceiling.MIB, sync=False) > 0
    assert ceiling.measure_write(str(tmp_path), 4 * ceiling.MIB, sync=True) > 0
    assert ceiling.measure_fdatasync_us(str(tmp_path), iterations=3) > 0
    assert list(tmp_path.iterdir()) == []  # temporary files removed


def test_loopback_measurements(tmp_path: Path) -> None:
    assert ceiling.measure_sendfile(str(tmp_path), 2 * ceiling.MIB, 5 * ceiling.MIB) > 0
    assert ceiling.measure_socket_send(3 * ceiling.MIB + 123) > 0
    assert list(tmp_path.iterdir()) == []


def test_record_build_floor() -> None:
    assert ceiling.measure_record_build(5000, record_bytes=100, batch_records=1000) > 0


@pytest.mark.timeout(60)
def test_main_writes_every_figure_with_runs_and_median(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c.json"
    data = tmp_path / "data"
    rc = ceiling.main([
        "--data-dir", str(data), "--write-mb", "2", "--fsync-iterations", "2", "--sendfile-file-mb", "1",
        "--transfer-mb", "2", "--records", "2000", "--runs", "3", "--json", str(out),
    ])  # fmt: skip
    assert rc == 0
    summary = json.loads(out.read_text())
    assert summary["tool"] == "ceiling"
    keys = {k for k, *_ in ceiling.FIGURES}
    assert set(summary["result"]) == keys
    for k in keys:
        runs = summary["result"][k]["runs"]
        assert len(runs) == 3 and all(v > 0 for v in runs)
        assert summary["result"][k]["median"] == sorted(runs)[1]
    printed = capsys.readouterr().out
    assert "os.sendfile over loopback" in printed and "GB/s" in printed
    assert summary["config"]["data_dir"] == str(data)
