"""Unit tests of annal.topic_names: Kafka's legal topic names, and nothing that could name a
path outside the data dir."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from annal.errors import InvalidTopicError
from annal.topic_names import is_valid_topic_name, validate_topic_name


@pytest.mark.parametrize("name", ["a", "orders", "my.topic_v2-x", "A" * 249, "..a", "a..", "-", "_"])
def test_legal(name):
    assert validate_topic_name(name) == name


@pytest.mark.parametrize(
    "name", ["", ".", "..", "a/b", "../etc", "/abs", "a\\b", "a b", "nul\0", "x" * 250, "é", "tab\t", "a:b", 3, None]
)
def test_illegal(name):
    assert not is_valid_topic_name(name)
    with pytest.raises(InvalidTopicError):
        validate_topic_name(name)


@given(st.text(max_size=300))
def test_no_legal_name_can_leave_a_directory(name):
    if is_valid_topic_name(name):
        assert "/" not in name and "\0" not in name and name not in (".", "..")
        assert len(f"{name}-2147483647".encode()) <= 255
