"""The error table: one hierarchy, unique wire codes, and codes that round-trip."""

from __future__ import annotations

import inspect

import pytest

import annal.errors as errors


def _error_classes() -> list[type[errors.AnnalError]]:
    return [
        c
        for _, c in inspect.getmembers(errors, inspect.isclass)
        if issubclass(c, errors.AnnalError) and c is not errors.AnnalError
    ]


def test_every_error_is_exported_and_has_a_unique_code() -> None:
    classes = _error_classes()
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes)), sorted(codes)
    for c in classes:
        assert c.__name__ in errors.__all__


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda c: c.__name__)
def test_for_code_and_for_reason_round_trip(cls: type[errors.AnnalError]) -> None:
    assert errors.for_code(cls.code) is cls
    assert errors.for_reason(cls.reason) is cls


def test_unknown_code_maps_to_unknown_server_error() -> None:
    assert errors.for_code(31337) is errors.UnknownServerError
    assert errors.for_reason("NO_SUCH_REASON") is errors.UnknownServerError


def test_kafka_codes_kept_where_kafka_has_them() -> None:
    assert errors.OffsetOutOfRangeError.code == 1
    assert errors.CorruptRecordError.code == 2
    assert errors.UnknownTopicOrPartitionError.code == 3
    assert errors.NotLeaderForPartitionError.code == 6
    assert errors.MessageSizeTooLargeError.code == 10
    assert errors.UnsupportedCompressionTypeError.code == 76


def test_details_travel_with_the_error() -> None:
    e = errors.OffsetOutOfRangeError("offset 9 out of range", log_start_offset=2, log_end_offset=5)
    assert (e.log_start_offset, e.log_end_offset) == (2, 5)
    assert "log_start_offset=2" in repr(e)
    assert not e.retriable
    assert errors.NotLeaderForPartitionError().retriable


def test_local_misuse_is_distinct_from_remote_errors() -> None:
    assert issubclass(errors.ProducerClosedError, errors.LocalUsageError)
    assert not issubclass(errors.CorruptRecordError, errors.LocalUsageError)
