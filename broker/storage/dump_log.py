"""``annal dump-log FILE... [--records]``: print what is in segment files (Kafka's
``kafka-dump-log``).

For a ``.log`` file, one line per batch::

    baseOffset: 0 lastOffset: 9 count: 10 position: 0 size: 1234 maxTimestamp: 1700000000000 codec: none crcValid: true

and with ``--records`` one line per record under its batch::

    | offset: 0 timestamp: 1700000000000 key: k value: hello headers: [h=1]

A tail that is not a whole batch (a torn write, or the zeros of a preallocated active segment) is
reported, not decoded. For an ``.index`` file: the entry count, a sanity check, and one line per
run of offsets sharing a batch position (``offset: 0..9 position: 0``); for a ``.timeindex``:
one line per entry (``timestamp: T offset: O``). Files are read without being modified, so this
is safe on a running broker's files.
"""

from __future__ import annotations

import argparse
import mmap
import os
import struct
import sys
from typing import TextIO

from annal.errors import AnnalError
from annal.broker.storage._file_names import INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, offset_from_file_name
from annal.record import (
    CODEC_NAMES,
    HEADER_SIZE,
    batch_size_at,
    iter_batch_positions,
    parse_header,
    validate_batch,
)

__all__ = ["configure_parser", "run", "dump_log_file", "dump_index_file", "dump_time_index_file"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help=".log, .index or .timeindex segment files")
    parser.add_argument("--records", action="store_true", help="also print every record of every batch")


def run(args: argparse.Namespace) -> int:
    rc = 0
    for path in args.files:
        try:
            rc |= dump_file(path, sys.stdout, records=args.records)
        except OSError as e:
            print(f"error: {path}: {e.strerror or e}", file=sys.stderr)
            rc = 1
    return rc


def dump_file(path: str, out: TextIO, records: bool = False) -> int:
    print(f"Dumping {path}", file=out)
    if path.endswith(INDEX_SUFFIX):
        return dump_index_file(path, out)
    if path.endswith(TIME_INDEX_SUFFIX):
        return dump_time_index_file(path, out)
    if not path.endswith(LOG_SUFFIX):
        print(f"error: {path}: not a .log, .index or .timeindex file", file=sys.stderr)
        return 1
    return dump_log_file(path, out, records=records)


def _base_offset(path: str) -> int | None:
    try:
        return offset_from_file_name(path)
    except ValueError:
        return None


def _text(b: bytes | None) -> str:
    if b is None:
        return "null"
    return b.decode("utf-8", errors="backslashreplace")


def _map(path: str) -> mmap.mmap | None:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        return mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) if size else None


def dump_log_file(path: str, out: TextIO, records: bool = False) -> int:
    base = _base_offset(path)
    if base is not None:
        print(f"Log starting offset: {base}", file=out)
    mm = _map(path)
    if mm is None:
        print("(empty)", file=out)
        return 0
    try:
        return _dump_batches(mm, out, records)
    finally:
        mm.close()


def _dump_batches(mm: mmap.mmap, out: TextIO, records: bool) -> int:
    from annal import record as record_batch

    end = len(mm)
    pos = 0
    batches = 0
    while pos < end:
        size = batch_size_at(mm, pos)
        if size < HEADER_SIZE or pos + size > end:
            tail = mm[pos:end]
            if tail.count(0) == len(tail):
                print(f"{len(tail)} bytes of zeros at position {pos} (preallocated, unused)", file=out)
            else:
                print(f"{end - pos} bytes at position {pos} do not form a whole batch (torn or corrupt tail)",
                      file=out)
            break
        h = parse_header(mm, pos)
        try:
            validate_batch(mm, pos)
            valid, why = True, ""
        except AnnalError as e:
            valid, why = False, f" error: {e.message}"
        print(
            f"baseOffset: {h.base_offset} lastOffset: {h.last_offset} count: {h.records_count} "
            f"position: {pos} size: {size} maxTimestamp: {h.max_timestamp} "
            f"codec: {CODEC_NAMES.get(h.codec, h.codec)} crcValid: {str(valid).lower()}{why}",
            file=out,
        )
        if records and valid:
            _, recs = record_batch.decode_batch(mm[pos : pos + size])
            for r in recs:
                headers = ", ".join(f"{k}={_text(v)}" for k, v in r.headers)
                print(f"| offset: {r.offset} timestamp: {r.timestamp} key: {_text(r.key)} "
                      f"value: {_text(r.value)} headers: [{headers}]", file=out)
        batches += 1
        pos += size
    print(f"{batches} batches, {pos} bytes", file=out)
    return 0


def _log_offsets(log_path: str, base: int) -> int | None:
    """Offsets held by the whole batches of ``log_path`` (None if there is no such file)."""
    if not os.path.exists(log_path):
        return None
    mm = _map(log_path)
    if mm is None:
        return 0
    try:
        last = None
        for pos, _size in iter_batch_positions(mm):
            last = pos
        return 0 if last is None else parse_header(mm, last).last_offset + 1 - base
    finally:
        mm.close()


def dump_index_file(path: str, out: TextIO) -> int:
    base = _base_offset(path) or 0
    size = os.path.getsize(path)
    problems: list[str] = []
    if size % 4:
        problems.append(f"size {size} is not a multiple of 4")
    log_path = path[: -len(INDEX_SUFFIX)] + LOG_SUFFIX
    mm = _map(path)
    in_file = size // 4
    in_log = _log_offsets(log_path, base)
    if in_log is not None:
        entries = min(in_log, in_file)
        if in_log > in_file:
            problems.append(f"the .log holds {in_log} offsets but the index only {in_file} entries")
    else:
        # No .log to say how many offsets there are: drop the zero entries of a preallocated tail.
        used = len(mm[:].rstrip(b"\0")) if mm is not None else 0
        entries = max((used + 3) // 4, 1 if in_file else 0)
    print(f"Offset index: {entries} entries" + (f" (offsets {base}..{base + entries - 1})" if entries else ""), file=out)
    if in_file > entries:
        print(f"{in_file - entries} preallocated entries after them (unused)", file=out)
    if mm is not None:
        try:
            positions = struct.unpack_from(f">{entries}I", mm, 0) if entries else ()
            if positions and positions[0] != 0:
                problems.append(f"first entry is position {positions[0]}, not 0")
            log_mm = _map(log_path) if in_log else None
            try:
                run_start = 0
                for i in range(1, entries + 1):
                    if i == entries or positions[i] != positions[run_start]:
                        pos = positions[run_start]
                        print(f"offset: {base + run_start}..{base + i - 1} position: {pos}", file=out)
                        if i < entries and positions[i] < pos:
                            problems.append(f"position decreases at offset {base + i}")
                        if log_mm is not None:
                            try:
                                h = parse_header(log_mm, pos)
                                holds = h.base_offset <= base + run_start and h.last_offset >= base + i - 1
                            except AnnalError:
                                holds = False
                            if not holds:
                                problems.append(f"offsets {base + run_start}..{base + i - 1}: no batch holding "
                                                f"them at position {pos}")
                        run_start = i
            finally:
                if log_mm is not None:
                    log_mm.close()
            if positions and in_log:
                problems += _check_against_log(log_path, base, positions)
        finally:
            mm.close()
    for p in problems:
        print(f"Index sanity check failed: {p}", file=out)
    if not problems:
        print("Index sanity check passed", file=out)
    return 1 if problems else 0


def _check_against_log(log_path: str, base: int, positions: tuple[int, ...]) -> list[str]:
    mm = _map(log_path)
    if mm is None:
        return ["index has entries but the .log is empty"]
    try:
        last = positions[-1]
        try:
            h = parse_header(mm, last)
        except AnnalError:
            return [f"last entry points at position {last}, which holds no batch"]
        if h.last_offset != base + len(positions) - 1:
            return [f"last entry's batch ends at offset {h.last_offset}, index at {base + len(positions) - 1}"]
        return []
    finally:
        mm.close()


def dump_time_index_file(path: str, out: TextIO) -> int:
    base = _base_offset(path) or 0
    size = os.path.getsize(path)
    mm = _map(path)
    bad = size % 12 != 0
    # A preallocated (not yet trimmed) file ends in all-zero entries: not entries.
    used = len(mm[:].rstrip(b"\0")) if mm is not None else 0
    entries = (used + 11) // 12
    print(f"Time index: {entries} entries", file=out)
    if size // 12 > entries:
        print(f"{size // 12 - entries} preallocated entries after them (unused)", file=out)
    if mm is not None:
        try:
            last_ts = None
            for i in range(entries):
                ts, rel = struct.unpack_from(">qi", mm, i * 12)
                print(f"timestamp: {ts} offset: {base + rel}", file=out)
                if last_ts is not None and ts <= last_ts:
                    bad = True
                last_ts = ts
        finally:
            mm.close()
    print("Time index sanity check " + ("failed" if bad else "passed"), file=out)
    return 1 if bad else 0
