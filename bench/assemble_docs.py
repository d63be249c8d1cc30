"""Assemble docs/benchmarks.md from the fragments docs/benchmarks/*.md and the ceiling JSON.

    .venv/bin/python -m annal.bench.assemble_docs [--fragments docs/benchmarks] [--out docs/benchmarks.md]

This script only copies: every number in the output comes from a fragment's table (written by
the bench script that made the measurement) or from ``docs/benchmarks/ceiling.json`` (written by
``annal-bench ceiling``). It computes one thing, the fraction of a figure's ceiling, as the
measured median divided by the ceiling it names, and prints which ceiling it used.

A fragment's figures table is the first table whose header has a column naming the figure
(``figure``, ``metric``, ``what``) and at least one of ``target`` or ``measured``/``median``;
later tables in a fragment (earlier runs, before/after comparisons) are only copied with the
fragment itself. Other columns
it picks up by name: ``runs``, ``command``, ``met``, ``ceiling``/``fraction``, ``notes``/
``profile``. Without a command column, a fragment-wide ``Command: `...` `` line is used. Without
a ``met`` column, a target that is a plain comparison (``>= 500 MB/s``) in the measured unit is
compared with the median ("yes"/"no"); anything else says "not stated". A row whose measured cell is empty or says "not measured" is kept and marked
"not measured". Each fragment is also copied whole under "Details by area", so its notes and
profiles travel with the table.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import glob
import json
import os
import re
import sys
from dataclasses import dataclass
from typing import Any

__all__ = ["main", "parse_tables", "Row", "fraction_of_ceiling", "parse_quantity", "met_target"]

AREAS = ("codec", "storage", "broker", "sdk", "cluster", "replication", "kafka", "bench")

_ROLE_PATTERNS: list[tuple[str, tuple[str, ...]]] = [
    ("figure", ("figure", "metric", "what", "benchmark", "name")),
    ("target", ("target", "goal")),
    ("measured", ("median", "measured", "result", "value")),
    ("runs", ("runs", "run 1", "samples")),
    ("command", ("command", "how")),
    ("met", ("met",)),
    ("fraction", ("fraction", "ceiling", "% of")),
    ("notes", ("note", "profile", "why", "comment", "remark")),
    ("unit", ("unit",)),
]


@dataclass(slots=True)
class Row:
    area: str
    figure: str
    target: str = ""
    measured: str = ""
    runs: str = ""
    command: str = ""
    met: str = ""
    fraction: str = ""
    notes: str = ""
    unit: str = ""

    def with_unit(self, cell: str) -> str:
        """A target or measured cell with the table's unit column appended, if it has one."""
        if not self.unit or not re.search(r"[0-9]", cell) or cell.lower().startswith("not measured"):
            return cell
        if parse_quantity(cell) is not None:
            return cell
        return f"{cell} {self.unit}"


def _cells(line: str) -> list[str]:
    s = line.strip()
    if s.startswith("|"):
        s = s[1:]
    if s.endswith("|") and not s.endswith("\\|"):
        s = s[:-1]
    # split on | not escaped and not inside backticks
    out, cur, tick = [], [], False
    i = 0
    while i < len(s):
        ch = s[i]
        if ch == "`":
            tick = not tick
        if ch == "\\" and i + 1 < len(s) and s[i + 1] == "|":
            cur.append("|")
            i += 2
            continue
        if ch == "|" and not tick:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur).strip())
    return out


def _roles(header: list[str]) -> dict[str, int]:
    roles: dict[str, int] = {}
    for idx, h in enumerate(header):
        hl = h.lower()
        for role, pats in _ROLE_PATTERNS:
            if role in roles:
                continue
            if role == "met" and not re.search(r"\bmet\b", hl):
                continue
            if role == "measured" and ("target" in hl or "run" in hl and "median" not in hl):
                continue
            if any(p in hl for p in pats):
                roles[role] = idx
                break
    return roles


def parse_tables(text: str, area: str, *, first_only: bool = False) -> list[Row]:
    """Rows of the figures tables in a fragment's markdown (only the first with ``first_only``:
    later tables in a fragment hold earlier runs or before/after comparisons, not its figures)."""
    lines = text.splitlines()
    rows: list[Row] = []
    i = 0
    while i < len(lines) - 1:
        if lines[i].lstrip().startswith("|") and re.match(r"^\s*\|?\s*:?-{3,}", lines[i + 1]):
            header = _cells(lines[i])
            roles = _roles(header)
            j = i + 2
            body = []
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                body.append(_cells(lines[j]))
                j += 1
            if "figure" in roles and ("measured" in roles or "target" in roles) and not (first_only and rows):
                for cells in body:
                    def get(role: str, cells: list[str] = cells) -> str:
                        k = roles.get(role)
                        return cells[k] if k is not None and k < len(cells) else ""

                    if not get("figure"):
                        continue
                    rows.append(Row(area, get("figure"), get("target"), get("measured"), get("runs"),
                                    get("command"), get("met"), get("fraction"), get("notes"),
                                    get("unit")))  # fmt: skip
            i = j
        else:
            i += 1
    return rows


_QTY = re.compile(
    r"(?P<num>[0-9][0-9,]*(?:\.[0-9]+)?)\s*(?P<mult>[kKMG](?![Bi]))?\s*(?P<unit>"
    r"GB/s|GiB/s|MB/s|MiB/s|records/s|records/sec|rec/s|msgs?/s|messages/s|ops/s|batches/s|reads/s|us|µs|ms|s\b|x\b|%)?"
)


def parse_quantity(cell: str, *, mb_is_mib: bool = False) -> tuple[float, str] | None:
    """The first number with a unit in a cell: (value in base units, unit family).

    "MB/s" is 10^6 bytes/s unless ``mb_is_mib`` (annal-bench, like Kafka's tools, prints MiB/s
    as "MB/sec"); "MiB/s" is always 2^20.
    """
    for m in _QTY.finditer(cell.replace("\u202f", "")):
        num = float(m.group("num").replace(",", ""))
        mult = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}.get(m.group("mult") or "", 1.0)
        unit = (m.group("unit") or "").lower()
        if not unit:
            continue
        v = num * mult
        if unit in ("gb/s", "gib/s"):
            return v * (1e9 if unit == "gb/s" else 2**30), "bytes/s"
        if unit == "mib/s" or (unit == "mb/s" and mb_is_mib):
            return v * 2**20, "bytes/s"
        if unit == "mb/s":
            return v * 1e6, "bytes/s"
        if unit in ("records/s", "records/sec", "rec/s", "msg/s", "msgs/s", "messages/s"):
            return v, "records/s"
        if unit in ("us", "µs"):
            return v / 1e6, "s"
        if unit == "ms":
            return v / 1e3, "s"
        if unit == "s":
            return v, "s"
        return v, unit
    return None


_CMP = re.compile(r"(>=|<=|≥|≤|>|<)")


def met_target(target: str, measured: str, *, mb_is_mib: bool = False) -> str:
    """"yes"/"no" when the target is a plain comparison (">= 100 MB/s", "<= 8 s", "> 1" for a
    ratio) in the measured unit; "" when it cannot be decided mechanically."""
    m = _CMP.search(target)
    if not m:
        return ""
    rest = target[m.end():]
    t = parse_quantity(rest, mb_is_mib=mb_is_mib)
    v = parse_quantity(measured, mb_is_mib=mb_is_mib)
    if t is None and v is not None and v[1] == "x":
        bare = re.match(r"\s*([0-9][0-9,]*(?:\.[0-9]+)?)\s*(?:x\b|\(|$)", rest)
        if bare:
            t = (float(bare.group(1).replace(",", "")), "x")
    if t is None or v is None or t[1] != v[1]:
        return ""
    op = m.group(1)
    ok = {">=": v[0] >= t[0], "≥": v[0] >= t[0], ">": v[0] > t[0],
          "<=": v[0] <= t[0], "≤": v[0] <= t[0], "<": v[0] < t[0]}[op]  # fmt: skip
    return "yes" if ok else "no"


def fraction_of_ceiling(row: Row, ceiling: dict[str, float]) -> str:
    """measured / ceiling for throughput figures (ceiling / measured for fsync latency)."""
    if row.figure.lower().startswith("ceiling"):
        return "—"  # a ceiling measured by a fragment is not divided by another ceiling
    q = parse_quantity(row.with_unit(row.measured), mb_is_mib="annal-bench" in row.command)
    if q is None:
        return "—"
    value, family = q
    text = f"{row.figure} {row.command}".lower()
    if family == "bytes/s":
        if any(w in text for w in ("fetch", "consum", "read", "sendfile", "zero-copy")):
            key, label = "sendfile_gb_s", "sendfile"
        elif any(w in text for w in ("fsync", "fdatasync", "acks=all", "acks all", "durab", "flush")):
            key, label = "write_fdatasync_gb_s", "write+fdatasync"
        elif any(w in text for w in ("append", "write", "produc", "segment")):
            key, label = "write_buffered_gb_s", "buffered write"
        elif any(w in text for w in ("socket", "loopback", "network")):
            key, label = "socket_send_gb_s", "loopback send"
        else:
            return "—"  # a CPU-bound byte rate (validation, checksums): no machine ceiling applies
        c = ceiling.get(key)
        if not c:
            return "—"
        return f"{value / (c * 1e9):.2f} of {label} {c:.2f} GB/s"
    if family == "records/s":
        c = ceiling.get("python_records_per_s")
        if not c:
            return "—"
        return f"{value / c:.3f} of Python floor {c / 1e6:.2f}M rec/s"
    if family == "s" and any(w in text for w in ("fsync", "fdatasync", "acks=all")):
        c = ceiling.get("fdatasync_us")
        if not c or value <= 0:
            return "—"
        return f"{(c / 1e6) / value:.2f} (fdatasync {c:.0f} us / measured)"
    return "—"


def _esc(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _not_measured(row: Row) -> bool:
    m = row.measured.strip().lower()
    return not m or m in ("-", "—", "n/a") or m.startswith("not measured")


def render(rows: list[Row], ceiling_summary: dict[str, Any] | None, fragments: dict[str, str]) -> str:
    from annal.bench._report import machine_info

    m = machine_info()
    ceiling = {k: v["median"] for k, v in (ceiling_summary or {}).get("result", {}).items()}
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Annal benchmarks",
        "",
        f"Assembled {now} by `.venv/bin/python -m annal.bench.assemble_docs` from the fragments in "
        "`docs/benchmarks/` (each written with the measurement it reports; this file only "
        "copies their numbers).",
        "",
        f"Assembled on: {m['cpus']} cores (`nproc`), CPU model \"{m['cpu_model']}\", "
        f"{round((m['mem_total_bytes'] or 0) / 2**30)} GiB RAM, {m['platform']}, Python {m['python']}. "
        "Each fragment names the machine its figures were measured on (the 2-core hosts have not "
        "all had the same CPU model), which was shared with other test and benchmark runs while "
        "they were taken, so they are noisy; each is the median of 3 runs.",
        "",
        "## Every figure",
        "",
        "\"Fraction of ceiling\" divides the measured median by this machine's limit from "
        "`annal-bench ceiling` (below): byte rates by sendfile (fetch/consume), write+fdatasync "
        "(durable writes), buffered write (appends/produce) or loopback send (socket figures), and none "
        "for CPU-bound byte rates; record rates by the "
        "pure-Python floor of framing 100-byte records; fsync-bound latencies as fdatasync time / "
        "measured. A fragment's own ceiling column is used when it has one. The ceiling runs and a "
        "figure's runs happened at different moments on a shared machine: a fraction above 1 means the "
        "figure's runs met a quieter machine than the ceiling's, and reads as \"at the ceiling\" (several "
        "fragments also measured a bare ceiling in the same runs as their figure; see their rows).",
        "",
        "| area | figure | target | measured (median of 3) | fraction of ceiling | met? | command |",
        "|---|---|---|---|---|---|---|",
    ]
    judged: list[tuple[Row, str]] = []
    for r in rows:
        measured = "not measured" + (f" ({r.notes})" if r.notes else "") if _not_measured(r) else r.with_unit(r.measured)
        if r.runs and not _not_measured(r):
            measured += f" (runs: {r.runs})"
        frac = r.fraction or ("—" if _not_measured(r) else fraction_of_ceiling(r, ceiling))
        computed = (
            met_target(r.with_unit(r.target), r.with_unit(r.measured), mb_is_mib="annal-bench" in r.command)
            if not _not_measured(r)
            else ""
        )
        no_target = not r.target or r.target in ("-", "—") or r.target.startswith("(")
        met = r.met or computed or ("—" if no_target else "not stated")
        judged.append((r, met.strip().lower()))
        cmd = r.command or "—"
        out.append(f"| {r.area} | {_esc(r.figure)} | {_esc(r.with_unit(r.target)) or '—'} | {_esc(measured)} | {_esc(frac)} | {_esc(met)} | {_esc(cmd)} |")
    missed = [(r, m) for r, m in judged if re.match(r"no\b", m)]
    out += ["", "## Targets missed", ""]
    if missed:
        out.append("What is in the way is written in each area's fragment (copied under \"Details by area\"); "
                   "the line says whether that fragment reports a profile (py-spy or pyinstrument).")
        out.append("")
        for r, _m in missed:
            note = f" Fragment's note: {r.notes}." if r.notes else ""
            text = fragments.get(r.area, "").lower()
            profiled = any(w in text for w in ("py-spy", "pyinstrument", "profile"))
            where = (f"see the profile in \"{r.area}\" below" if profiled
                     else f"the {r.area} fragment reports no profile")  # fmt: skip
            out.append(f"- {r.area}: {r.figure}: measured {r.with_unit(r.measured)} against "
                       f"{r.with_unit(r.target)}.{note} ({where})")  # fmt: skip
    else:
        out.append("None of the figures with a target missed it (as stated or compared above).")
    out += ["", "## Machine ceilings", ""]
    if ceiling_summary:
        from annal.bench.ceiling import FIGURES

        argv = list(ceiling_summary.get("command_line", ["annal-bench", "ceiling"]))
        for opt in ("--json", "--plot"):  # where the summary was written is not part of the measurement
            while opt in argv and argv.index(opt) + 1 < len(argv):
                k = argv.index(opt)
                del argv[k : k + 2]
        cmd = " ".join(argv)
        out += [
            f"`{cmd}` at {ceiling_summary['started_at']}: each figure measured 3 times, interleaved; the median:",
            "",
            "| ceiling | median | runs |",
            "|---|---|---|",
        ]
        for key, label, unit, fmt in FIGURES:
            v = ceiling_summary["result"].get(key)
            if v:
                out.append(f"| {label} | {fmt.format(v['median'])} {unit} | {', '.join(fmt.format(x) for x in v['runs'])} |")
    else:
        out.append("not measured: no docs/benchmarks/ceiling.json")
    missing = [a for a in AREAS if a not in fragments]
    if missing:
        out += ["", "## Fragments missing at assembly time", ""]
        out += [f"- `docs/benchmarks/{a}.md`: not present when this file was assembled, so its figures are "
                "not measured here." for a in missing]  # fmt: skip
    out += ["", "## Details by area", ""]
    for area, text in fragments.items():
        out += [f"### {area} (`docs/benchmarks/{area}.md`)", ""]
        for line in text.splitlines():
            # Fragments live in docs/benchmarks/; this file one level up.
            line = re.sub(r"\]\((?!https?:|/|#)([^)]+)\)", lambda m: f"](benchmarks/{m.group(1)})", line)
            out.append("###" + line if line.startswith("#") else line)
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _fragment_command(text: str) -> str:
    """A fragment-wide ``Command: `...` `` line (a bullet, "Command (...):" and indented
    continuation lines allowed), for tables without a command column: its backticked spans,
    joined with "then"."""
    lines = text.splitlines()
    for k, line in enumerate(lines):
        m = re.match(r"^\s*(?:[-*]\s+)?(?:\*\*)?Command[^:\n]*:\s*(?:\*\*)?\s*(.*)$", line, re.IGNORECASE)
        if not m:
            continue
        body = [m.group(1)]
        for cont in lines[k + 1 :]:
            # only a continuation of the command itself ("then `...`", "`...`", "&& ...")
            if cont.startswith((" ", "\t")) and cont.strip().startswith(("then ", "`", "&&")):
                body.append(cont.strip())
            else:
                break
        joined = " ".join(body).strip()
        spans = re.findall(r"`[^`]+`", joined)
        return " then ".join(spans) if spans else joined
    return ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m annal.bench.assemble_docs", description=__doc__.split("\n\n")[0])
    p.add_argument("--fragments", default="docs/benchmarks")
    p.add_argument("--ceiling-json", default="docs/benchmarks/ceiling.json")
    p.add_argument("--out", default="docs/benchmarks.md")
    args = p.parse_args(argv)
    fragments: dict[str, str] = {}
    paths = sorted(glob.glob(os.path.join(args.fragments, "*.md")))
    order = {a: i for i, a in enumerate(AREAS)}
    paths.sort(key=lambda pth: (order.get(os.path.basename(pth)[:-3], 99), pth))
    rows: list[Row] = []
    for path in paths:
        area = os.path.basename(path)[:-3]
        with open(path, encoding="utf-8") as f:
            text = f.read()
        fragments[area] = text
        found = parse_tables(text, area, first_only=True)
        default_cmd = _fragment_command(text)
        for r in found:
            if not r.command and default_cmd:
                r.command = default_cmd
        if not found:
            print(f"warning: no figures table recognised in {path}", file=sys.stderr)
        rows += found
    ceiling = None
    if os.path.exists(args.ceiling_json):
        with open(args.ceiling_json, encoding="utf-8") as f:
            ceiling = json.load(f)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(render(rows, ceiling, fragments))
    print(f"wrote {args.out}: {len(rows)} figures from {len(fragments)} fragments")
    return 0


if __name__ == "__main__":
    sys.exit(main())
