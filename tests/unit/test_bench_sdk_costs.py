"""annal.bench.sdk_costs runs end to end on a small workload and reports every piece."""

from __future__ import annotations

import pytest

from annal.bench import sdk_costs


def test_reports_every_piece(capsys: pytest.CaptureFixture[str]) -> None:
    assert sdk_costs.main(["--loops", "2000", "--repeats", "1", "--records", "5000"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    names = [r.split(" | ")[0].lstrip("| ") for r in rows[1:]]
    assert "accumulator lock: acquire + release" in names
    assert "returned FutureRecordMetadata (tuple subclass)" in names
    assert any(n.startswith("build ConsumerRecords, collector paused") for n in names)
    assert len(names) == 11


def test_fetch_responses_hold_the_asked_records() -> None:
    from annal.record import iter_records

    responses = sdk_costs.fetch_responses(3000)
    offsets = [r.offset for buf in responses for r in iter_records(buf)]
    assert offsets == list(range(3000))
