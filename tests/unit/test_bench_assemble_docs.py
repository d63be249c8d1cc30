"""annal.bench.assemble_docs: fragment tables are copied, not invented; ceilings fractions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from annal.bench.assemble_docs import Row, fraction_of_ceiling, main, parse_quantity, parse_tables

FRAGMENT = """# Storage benchmarks

Machine: 2 cores.

| Figure | Target | Measured (median of 3) | Runs | Met? | Command |
|---|---|---|---|---|---|
| append throughput, 1 KiB records | >= 200 MB/s | 310.5 MB/s | 300.1, 310.5, 320.0 | yes | `python -m annal.bench.storage append \\| tee` |
| fetch via sendfile | >= 500 MB/s | 420 MB/s | 400, 420, 430 | no: profile shows recv | `python -m annal.bench.storage fetch` |
| recovery of 1 GiB | < 2 s | not measured | | | |

| other | table |
|---|---|
| ignored | row |
"""

CEILING = {"write_buffered_gb_s": 1.0, "write_fdatasync_gb_s": 0.5, "fdatasync_us": 2000.0,
           "sendfile_gb_s": 2.0, "socket_send_gb_s": 1.5, "python_records_per_s": 4e6}  # fmt: skip


def test_parse_tables_copies_cells() -> None:
    rows = parse_tables(FRAGMENT, "storage")
    assert [r.figure for r in rows] == ["append throughput, 1 KiB records", "fetch via sendfile", "recovery of 1 GiB"]
    a = rows[0]
    assert (a.target, a.measured, a.runs, a.met) == (">= 200 MB/s", "310.5 MB/s", "300.1, 310.5, 320.0", "yes")
    assert a.command == "`python -m annal.bench.storage append | tee`"
    assert rows[2].measured == "not measured"


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("310.5 MB/s", (310.5e6, "bytes/s")),
        ("1.2 GB/s", (1.2e9, "bytes/s")),
        ("262,284 records/s", (262284.0, "records/s")),
        ("150k records/s", (150000.0, "records/s")),
        ("3.5 ms", (0.0035, "s")),
        ("850 us", (0.00085, "s")),
        ("yes", None),
    ],
)
def test_parse_quantity(cell: str, expected: tuple[float, str] | None) -> None:
    got = parse_quantity(cell)
    if expected is None:
        assert got is None
    else:
        assert got is not None and got[1] == expected[1] and got[0] == pytest.approx(expected[0])


def test_fraction_picks_the_matching_ceiling() -> None:
    assert fraction_of_ceiling(Row("broker", "fetch via sendfile", measured="1000 MB/s"), CEILING).endswith("of sendfile 2.00 GB/s")
    assert fraction_of_ceiling(Row("storage", "append", measured="500 MB/s"), CEILING).startswith("0.50 of buffered write")
    assert "write+fdatasync" in fraction_of_ceiling(Row("sdk", "produce acks=all", measured="100 MB/s"), CEILING)
    assert fraction_of_ceiling(Row("sdk", "produce", measured="400,000 records/s"), CEILING).startswith("0.100 of Python floor")
    assert fraction_of_ceiling(Row("sdk", "fsync latency", measured="4 ms"), CEILING).startswith("0.50")
    assert fraction_of_ceiling(Row("sdk", "p99 latency", measured="4 ms"), CEILING) == "—"


def test_main_assembles_and_marks_missing(tmp_path: Path) -> None:
    frags = tmp_path / "benchmarks"
    frags.mkdir()
    (frags / "storage.md").write_text(FRAGMENT + "\n![append](images/append.png) [web](https://example.org/x)\n")
    ceiling = {"started_at": "2026-11-26T15:00:00+00:00", "command_line": ["annal-bench", "ceiling"],
               "result": {k: {"median": v, "runs": [v, v, v]} for k, v in CEILING.items()}}  # fmt: skip
    (frags / "ceiling.json").write_text(json.dumps(ceiling))
    out = tmp_path / "benchmarks.md"
    assert main(["--fragments", str(frags), "--ceiling-json", str(frags / "ceiling.json"), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| storage | append throughput, 1 KiB records | >= 200 MB/s | 310.5 MB/s (runs: 300.1, 310.5, 320.0) |" in text
    assert "| storage | recovery of 1 GiB | < 2 s | not measured | — | not stated | — |" in text
    assert "`docs/benchmarks/cluster.md`: not present" in text
    assert "| os.sendfile over loopback | 2.00 GB/s |" in text
    assert "#### Storage benchmarks" in text  # the fragment itself, headings demoted
    assert "![append](benchmarks/images/append.png) [web](https://example.org/x)" in text  # links still resolve


def test_met_target_only_when_mechanical() -> None:
    from annal.bench.assemble_docs import met_target

    assert met_target(">= 500 MB/s", "**303 MB/s**") == "no"
    assert met_target(">= 1000 MB/s", "1,556 MB/s") == "yes"
    assert met_target("<= 1.2x", "0.746 x") == "yes"
    assert met_target("< 2 s", "1500 ms") == "yes"
    assert met_target(">= 100k records/s", "3.5 ms") == ""  # different units: not decided
    assert met_target("fast", "3.5 ms") == ""


def test_mb_is_decimal_except_for_annal_bench_rows() -> None:
    assert parse_quantity("1 MB/s") == (1e6, "bytes/s")
    assert parse_quantity("1 MB/s", mb_is_mib=True) == (2**20, "bytes/s")


def test_unit_column_and_fragment_command_line(tmp_path: Path) -> None:
    frags = tmp_path / "b"
    frags.mkdir()
    (frags / "codec.md").write_text(
        "- Command: `.venv/bin/python -m annal.bench.codec --runs 3`\n\n"
        "| figure | unit | target | median of 3 | runs | met |\n|---|---|---|---|---|---|\n"
        "| encode_batch | rec/s | >= 2,000,000 | 1,439,084 | 1 / 2 / 3 | no |\n"
    )
    out = tmp_path / "o.md"
    assert main(["--fragments", str(frags), "--ceiling-json", str(tmp_path / "none.json"), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| codec | encode_batch | >= 2,000,000 rec/s | 1,439,084 rec/s (runs: 1 / 2 / 3) | — | no | `.venv/bin/python -m annal.bench.codec --runs 3` |" in text


def test_met_target_ratio_and_seconds() -> None:
    from annal.bench.assemble_docs import met_target

    assert met_target("> 1", "0.57 x") == "no"
    assert met_target("> 1", "1.4 x") == "yes"
    assert met_target("<= 8 s (session timeout + 2 s)", "6.26 s") == "yes"
    assert met_target(">= 1 producer -> 1 broker", "157,034 rec/s") == ""


def test_percent_targets_and_not_stated_is_not_a_miss(tmp_path: Path) -> None:
    from annal.bench.assemble_docs import met_target

    assert met_target(">= 80 %", "**120 %**") == "yes"
    assert met_target(">= 80 %", "65 %") == "no"
    frags = tmp_path / "b"
    frags.mkdir()
    (frags / "broker.md").write_text(
        "| figure | target | median of 3 | runs |\n|---|---|---|---|\n"
        "| fetch ratio | >= 80 % | **120 %** | 1, 2, 3 |\n"
        "| odd one | >= 1 thing | 5 widgets | 1, 2, 3 |\n"
        "| slow one | >= 10 MB/s | 5 MB/s | 1, 2, 3 |\n"
    )
    out = tmp_path / "o.md"
    main(["--fragments", str(frags), "--ceiling-json", str(tmp_path / "none.json"), "--out", str(out)])
    missed = out.read_text().split("## Targets missed")[1].split("## Machine ceilings")[0]
    assert "slow one" in missed
    assert "fetch ratio" not in missed and "odd one" not in missed  # met, and not stated


def test_only_the_first_figures_table_of_a_fragment() -> None:
    text = FRAGMENT + "\nEarlier run:\n\n| figure | target | median | runs |\n|---|---|---|---|\n| append | >= 1 MB/s | 9 MB/s | 1, 2, 3 |\n"
    assert len(parse_tables(text, "storage")) == 4
    assert [r.figure for r in parse_tables(text, "storage", first_only=True)][-1] == "recovery of 1 GiB"


def test_fragment_command_forms() -> None:
    from annal.bench.assemble_docs import _fragment_command

    assert _fragment_command("Command: `python -m annal.bench.cluster` — date: x") == "`python -m annal.bench.cluster`"
    assert _fragment_command("- Command: `a b`\n- Date: y") == "`a b`"
    assert _fragment_command("- Command (the figures below): `git show x > y`\n  then `python -m annal.bench.codec --baseline y`.\n") == (
        "`git show x > y` then `python -m annal.bench.codec --baseline y`"
    )
    assert _fragment_command("no command here") == ""
