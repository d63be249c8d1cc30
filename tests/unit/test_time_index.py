"""The time index: monotonic entries, lookup by timestamp, reopening."""

from __future__ import annotations

import os

import pytest

from annal.broker.storage._index import IndexCorruptError, TimeIndex

pytestmark = pytest.mark.timeout(10)


def test_only_increasing_timestamps_are_kept_and_lookup_finds_first_at_or_after(tmp_path):
    p = str(tmp_path / "00000000000000000000.timeindex")
    ti = TimeIndex(p, 0, 1200, writable=True)
    assert ti.maybe_append(100, 0)
    assert not ti.maybe_append(90, 3)   # older batch: no entry
    assert not ti.maybe_append(100, 4)  # equal: no entry
    assert ti.maybe_append(200, 6)
    assert ti.maybe_append(300, 9)
    with pytest.raises(ValueError):
        ti.maybe_append(400, 9)  # offsets must increase
    assert ti.entries == 3
    assert ti.lookup(0) == (100, 0)
    assert ti.lookup(100) == (100, 0)
    assert ti.lookup(101) == (200, 6)
    assert ti.lookup(300) == (300, 9)
    assert ti.lookup(301) is None
    assert ti.last_entry() == (300, 9)
    ti.trim_to_valid_size()
    ti.close()
    assert os.path.getsize(p) == 36
    ro = TimeIndex(p, 0, 0, writable=False)
    assert ro.entries == 3 and ro.lookup(150) == (200, 6)
    ro.sanity_check()
    ro.close()


def test_sanity_check_catches_decreasing_entries(tmp_path):
    p = str(tmp_path / "x.timeindex")
    with open(p, "wb") as f:
        f.write((500).to_bytes(8, "big") + (0).to_bytes(4, "big") + (100).to_bytes(8, "big") + (5).to_bytes(4, "big"))
    ti = TimeIndex(p, 0, 0, writable=False)
    with pytest.raises(IndexCorruptError):
        ti.sanity_check()
    ti.close()


def test_full_and_empty(tmp_path):
    ti = TimeIndex(str(tmp_path / "y.timeindex"), 0, 24, writable=True)
    assert ti.lookup(0) is None and ti.last_entry() is None
    ti.maybe_append(1, 0)
    ti.maybe_append(2, 1)
    assert ti.is_full()
    with pytest.raises(ValueError):
        ti.maybe_append(3, 2)
    ti.close()
