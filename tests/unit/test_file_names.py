"""Segment file names and partition folder names."""

from __future__ import annotations

import pytest

from annal.broker.storage._file_names import (
    filename_prefix_from_offset,
    index_file_name,
    is_segment_log_file,
    log_file_name,
    offset_from_file_name,
    parse_partition_dir_name,
    partition_dir_name,
    time_index_file_name,
)

pytestmark = pytest.mark.timeout(10)


def test_segment_names_are_20_digit_zero_padded_and_sort():
    assert filename_prefix_from_offset(0) == "00000000000000000000"
    assert filename_prefix_from_offset(1234) == "00000000000000001234"
    assert log_file_name("/d", 5) == "/d/00000000000000000005.log"
    assert index_file_name("/d", 5) == "/d/00000000000000000005.index"
    assert time_index_file_name("/d", 5) == "/d/00000000000000000005.timeindex"
    offsets = [0, 9, 10, 99, 100, 2**40]
    names = [filename_prefix_from_offset(o) for o in offsets]
    assert sorted(names) == names
    with pytest.raises(ValueError):
        filename_prefix_from_offset(-1)


def test_offset_from_file_name():
    assert offset_from_file_name("/x/00000000000000001234.log") == 1234
    assert offset_from_file_name("00000000000000000007.timeindex") == 7
    for bad in ("1234.log", "00000000000000001234.log.deleted", "0000000000000000123a.log", "x.index"):
        with pytest.raises(ValueError):
            offset_from_file_name(bad)
    assert is_segment_log_file("00000000000000000000.log")
    assert not is_segment_log_file("00000000000000000000.index")
    assert not is_segment_log_file("00000000000000000000.log.tmp")


@pytest.mark.parametrize(
    "topic,partition",
    [("orders", 0), ("my-topic", 12), ("a-1", 3), ("x--y-", 7), ("t.1_2", 999), ("-", 0)],
)
def test_partition_dir_roundtrip_with_dashes(topic, partition):
    name = partition_dir_name(topic, partition)
    assert parse_partition_dir_name(name) == (topic, partition)
    assert parse_partition_dir_name("/data/" + name + "/") == (topic, partition)


@pytest.mark.parametrize("name", ["orders", "orders-", "-3", "orders-01", "orders-x", "..-1", "t-1.deleting"])
def test_not_partition_dirs(name):
    assert parse_partition_dir_name(name) is None


@pytest.mark.parametrize("topic", ["", ".", "..", "a/b", "a\0b"])
def test_illegal_topic_folder_names(topic):
    with pytest.raises(ValueError):
        partition_dir_name(topic, 0)
    with pytest.raises(ValueError):
        partition_dir_name("ok", -1)
