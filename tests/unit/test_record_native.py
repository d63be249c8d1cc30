"""The compiled codec (annal.record._native) against the pure-Python reference.

Differential: thousands of random batches (keys, headers, nulls, empty and long values,
timestamps before the base, lz4) are encoded by both BatchBuilders, which must write identical
bytes and give identical answers (offset deltas, -1 when full, sizes, max timestamp), and decoded
by both decoders, which must return identical records. Fuzz: truncated, mutated and random
record areas must get the same outcome from both (the same records, or the same error), and
the native decoder must never crash; a slow test runs that fuzz under valgrind's memcheck, which
reports any read outside the buffers. The rest of the codec tests run against both
implementations through the ``codec_impl`` fixture (tests/conftest.py).
"""

from __future__ import annotations

import os
import pathlib
import random
import shutil
import subprocess
import sys
import threading
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import annal
import annal.record as record_package
from annal.errors import CorruptRecordError, InvalidRecordError
from annal.record import (
    CODEC_LZ4,
    CODEC_NONE,
    HEADER_SIZE,
    Record,
    _builder,
    _decoder,
    _impl,
    check_records,
    decode_batch,
    decode_records_into,
    parse_header,
)

native = _impl.available
ORIGINAL = _impl.native is not None  # what this process runs (ANNAL_PURE_PYTHON may force Python)

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        native is None and os.environ.get("ANNAL_REQUIRE_NATIVE") != "1",
        reason="annal.record._native is not built in this installation",
    ),
]


@pytest.fixture(autouse=True)
def _require_native() -> None:
    if native is None:
        pytest.fail("annal.record._native is not built (ANNAL_REQUIRE_NATIVE=1)")


class _Prefixed(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple


# ------------------------------------------------------------------------------ strategies

_bytes_or_none = st.one_of(
    st.none(),
    st.binary(max_size=40),
    st.binary(min_size=60, max_size=70),  # one- and two-byte length varints around 64
    st.builds(lambda n, b: bytes([b]) * n, st.integers(8180, 8200), st.integers(0, 255)),  # around 8 KiB
)
_header = st.tuples(st.text(max_size=8), st.one_of(st.none(), st.binary(max_size=20)))
_record = st.tuples(
    st.integers(-100_000, 100_000),  # timestamp offset from the base
    _bytes_or_none,  # key
    _bytes_or_none,  # value
    st.one_of(st.none(), st.lists(_header, max_size=3)),
)
_uniform = st.builds(
    lambda n, vlen, step: [(i * step, None, bytes([i % 256]) * vlen, None) for i in range(n)],
    st.integers(1, 200),
    st.integers(0, 150),
    st.sampled_from([0, 0, 1, 37]),
)
_records = st.one_of(st.lists(_record, min_size=1, max_size=30), _uniform)


def _both_builders(compression: int, batch_size: int, base: int | None):
    return (
        _builder.BatchBuilder(compression, batch_size, base),
        native.BatchBuilder(compression, batch_size, base),  # type: ignore[union-attr]
    )


# ------------------------------------------------------------------------ differential


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    records=_records,
    base=st.integers(0, 2**41),
    compression=st.sampled_from([CODEC_NONE, CODEC_LZ4]),
    batch_size=st.sampled_from([61, 200, 1000, 16384, 1 << 20]),
    preset_base=st.booleans(),
    base_offset=st.integers(0, 2**40),
)
def test_builders_write_identical_bytes(records, base, compression, batch_size, preset_base, base_offset) -> None:
    py, nat = _both_builders(compression, batch_size, base if preset_base else None)
    for off, key, value, headers in records:
        ts = base + off
        if key is None and headers is None and type(value) is bytes and off % 2:
            a, b = py.append_value(ts, value), nat.append_value(ts, value)
        else:
            a, b = py.append(ts, key, value, headers), nat.append(ts, key, value, headers)
        assert a == b
        assert (py.records_count, py.size_in_bytes, py.max_timestamp, py.base_timestamp) == (
            nat.records_count,
            nat.size_in_bytes,
            nat.max_timestamp,
            nat.base_timestamp,
        )
        if a < 0:
            break
    built = py.build(base_offset)
    assert nat.build(base_offset) == built
    assert nat.build_parts(base_offset) == py.build_parts(base_offset)
    assert b"".join(nat.build_parts(base_offset)) == built
    # An idempotent producer's stamp: the same bytes as build(), in both.
    stamp = dict(producer_id=base_offset % 2**40, producer_epoch=base % 32768, base_sequence=base % 2**31)
    stamped = py.build(base_offset, **stamp)
    assert b"".join(py.build_parts(base_offset, **stamp)) == stamped
    assert nat.build_parts(base_offset, **stamp) == py.build_parts(base_offset, **stamp)
    if compression == CODEC_NONE:
        assert py.size_in_bytes == len(built)
    # and both decoders read back the same records
    results = []
    for impl in (False, True):
        _impl.use_native(impl)
        try:
            results.append(
                (
                    decode_batch(built),
                    decode_records_into(built, base_offset + 1, _Prefixed, True, ("t", 3)),
                    check_records(built, 0, parse_header(built)),
                )
            )
        finally:
            _impl.use_native(ORIGINAL)
    assert results[0] == results[1]
    assert all(type(r) is Record for r in results[1][0][1])
    assert all(type(r) is _Prefixed for r in results[1][1][0])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(_record, min_size=1, max_size=30), compression=st.sampled_from([CODEC_NONE, CODEC_LZ4]))
def test_encode_batch_is_identical(records, compression) -> None:
    recs = [(1_700_000_000_000 + off, k, v, h) for off, k, v, h in records]
    outs = []
    for impl in (False, True):
        _impl.use_native(impl)
        try:
            outs.append(_builder.encode_batch(recs, compression, base_offset=9))
        finally:
            _impl.use_native(ORIGINAL)
    assert outs[0] == outs[1]


def test_builder_refuses_what_the_reference_refuses() -> None:
    for args in [(1, None, "text"), (1, "key", b"v"), (1, None, b"v", [(b"bytes-key", b"v")]), (1, None, b"v", [("k", "str")])]:
        errors = []
        for builder in _both_builders(CODEC_NONE, 16384, None):
            with pytest.raises(TypeError) as info:
                builder.append(*args)
            errors.append(info.type)
        assert errors[0] is errors[1]
    for builder in _both_builders(CODEC_NONE, 16384, None):
        with pytest.raises(ValueError):
            builder.build()


# ------------------------------------------------------------------------------- fuzzing


def _outcome(data: bytes, count: int, use_native: bool, cls: type = Record, prefix: tuple = ()):
    out: list = ["earlier"]
    _impl.use_native(use_native)
    try:
        _decoder._decode_into(data, 0, len(data), count, 1000, 5_000_000, out, cls, prefix)
    except (CorruptRecordError, InvalidRecordError) as exc:
        return (type(exc), str(exc))
    finally:
        _impl.use_native(ORIGINAL)
    return out


def _area(records) -> bytes:
    return b"".join(
        _builder._encode_record(i, tsd, key, value, headers) for i, (tsd, key, value, headers) in enumerate(records)
    )


def _mutated_area(records, cut: int, edits) -> bytearray:
    """The records' area with bytes overwritten at ``edits`` and the last ``cut`` bytes cut."""
    area = bytearray(_area([(off, k, v, h) for off, k, v, h in records]))
    for where, byte in edits:
        if area:
            area[where % len(area)] = byte
    if cut and area:
        del area[len(area) - cut % len(area) :]
    return area


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    records=st.lists(_record, min_size=1, max_size=12),
    cut=st.integers(0, 10_000),
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=4),
    count_change=st.sampled_from([0, 0, -1, 1, 5]),
)
def test_mutated_record_areas_get_the_same_outcome(records, cut, edits, count_change) -> None:
    area = _mutated_area(records, cut, edits)
    data = bytes(area)
    count = max(0, len(records) + count_change)
    assert _outcome(data, count, True) == _outcome(data, count, False)
    assert _outcome(data, count, True, _Prefixed, ("t", 1)) == _outcome(data, count, False, _Prefixed, ("t", 1))


def test_random_bytes_never_crash_the_native_decoder() -> None:
    rng = random.Random(17)
    for _ in range(20_000):
        data = rng.randbytes(rng.randrange(0, 64))
        count = rng.randrange(0, 6)
        out: list = []
        ok = native.decode_records(data, 0, len(data), count, 0, 0, out, Record, (), False)  # type: ignore[union-attr]
        if ok:
            assert len(out) == count
            # the reference decodes the same records (base offset 0, base timestamp 0)
            ref: list = []
            _decoder._decode_general(data, 0, len(data), count, 0, 0, ref, Record)
            assert ref == out
        else:
            assert out == []
        assert native.decode_records(data, 0, len(data), count, 0, 0, [], tuple, (), True) in (True, False)  # type: ignore[union-attr]


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    records=st.lists(_record, min_size=1, max_size=12),
    cut=st.integers(0, 10_000),
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=4),
    pad=st.integers(0, 7),
)
def test_check_only_over_a_buffer_answers_as_over_bytes(records, cut, edits, pad) -> None:
    """The broker checks a received request's records in place (a bytearray or a memoryview
    of it): the same True/False as over the same bytes, with the area at an offset."""
    area = _mutated_area(records, cut, edits)
    held = bytearray(b"\xaa" * pad) + area + bytearray(b"\xbb" * pad)
    want = native.decode_records(bytes(area), 0, len(area), len(records), 0, 0, [], tuple, (), True)  # type: ignore[union-attr]
    for buf in (held, memoryview(held)):
        got = native.decode_records(buf, pad, pad + len(area), len(records), 0, 0, [], tuple, (), True)  # type: ignore[union-attr]
        assert got is want
    # Building records still takes bytes only: anything else is left to the Python decoder.
    assert native.decode_records(held, pad, pad + len(area), len(records), 0, 0, [], tuple, (), False) is False  # type: ignore[union-attr]


def test_check_only_over_a_buffer_refuses_positions_outside_it() -> None:
    data = bytearray(_area([(0, None, b"abc", None)]))
    for pos, end in [(-1, len(data)), (0, len(data) + 1), (5, 4), (0, 10**9)]:
        assert native.decode_records(memoryview(data), pos, end, 1, 0, 0, [], tuple, (), True) is False  # type: ignore[union-attr]
    assert native.decode_records(object(), 0, 1, 1, 0, 0, [], tuple, (), True) is False  # type: ignore[union-attr]


def test_native_decoder_refuses_positions_outside_the_buffer() -> None:
    data = _area([(0, None, b"abc", None)])
    for pos, end in [(-1, len(data)), (0, len(data) + 1), (5, 4), (0, 10**9)]:
        assert native.decode_records(data, pos, end, 1, 0, 0, [], tuple, (), False) is False  # type: ignore[union-attr]
    out = ["kept"]
    assert native.decode_records(data, 0, len(data) - 1, 1, 0, 0, out, tuple, (), False) is False  # type: ignore[union-attr]
    assert out == ["kept"]


# --------------------------------------------------------------------- the switch and send()


def test_annal_native_says_which_implementation_runs() -> None:
    try:
        _impl.use_native(True)
        assert annal.native is True
        assert record_package.BatchBuilder is native.BatchBuilder  # type: ignore[union-attr]
        _impl.use_native(False)
        assert annal.native is False
        assert record_package.BatchBuilder is _builder.BatchBuilder
    finally:
        _impl.use_native(ORIGINAL)


def test_pure_python_is_forced_by_the_environment() -> None:
    code = "import annal, annal.record; print(annal.native, annal.record.BatchBuilder.__module__)"
    env = dict(os.environ, ANNAL_PURE_PYTHON="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "annal.record._builder"]
    env["ANNAL_PURE_PYTHON"] = "0"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "annal.record._native"]


def test_send_value_appends_under_the_lock_and_returns_the_future() -> None:
    from annal.client._accumulator import FutureRecordMetadata, ProducerBatch
    from annal.client.structs import TopicPartition

    lock = threading.Lock()
    builder = native.BatchBuilder(CODEC_NONE, 300, 1_000)  # type: ignore[union-attr]
    batch = ProducerBatch(TopicPartition("t", 0), builder, 0.0, 1000, 0)
    sticky = {"t": batch}
    f = native.send_value(lock, sticky, "t", b"x" * 100, FutureRecordMetadata)  # type: ignore[union-attr]
    assert type(f) is FutureRecordMetadata and f[0] is batch and f[1] == 0
    assert not lock.locked()
    assert native.send_value(lock, sticky, "t", b"y" * 100, FutureRecordMetadata)[1] == 1  # type: ignore[union-attr]
    # full, no sticky batch, unhashable topic, not bytes: None (the caller's slow path)
    assert native.send_value(lock, sticky, "t", b"z" * 100, FutureRecordMetadata) is None  # type: ignore[union-attr]
    assert native.send_value(lock, sticky, "other", b"z", FutureRecordMetadata) is None  # type: ignore[union-attr]
    assert native.send_value(lock, sticky, ["t"], b"z", FutureRecordMetadata) is None  # type: ignore[union-attr]
    assert native.send_value(lock, sticky, "t", bytearray(b"z"), FutureRecordMetadata) is None  # type: ignore[union-attr]
    assert not lock.locked()
    records = decode_batch(builder.build())[1]
    assert [r.value for r in records] == [b"x" * 100, b"y" * 100]
    assert records[0].timestamp == f[2]


def test_send_waits_for_a_lock_held_by_another_thread() -> None:
    from annal.client._accumulator import FutureRecordMetadata, ProducerBatch
    from annal.client.structs import TopicPartition

    lock = threading.Lock()
    builder = native.BatchBuilder(CODEC_NONE, 1 << 20, 1_000)  # type: ignore[union-attr]
    sticky = {"t": ProducerBatch(TopicPartition("t", 0), builder, 0.0, 1000, 0)}
    lock.acquire()
    result: list = []
    t = threading.Thread(target=lambda: result.append(native.send_value(lock, sticky, "t", b"v", FutureRecordMetadata)))  # type: ignore[union-attr]
    t.start()
    t.join(0.2)
    assert t.is_alive() and builder.records_count == 0  # blocked on the lock, GIL released
    lock.release()
    t.join(10)
    assert result and result[0][1] == 0 and builder.records_count == 1


# ----------------------------------------------------------------- memcheck (slow, opt-in)

_FUZZ_SCRIPT = r"""
import random, sys
from annal.record import _impl, _builder, Record
nat = _impl.available
rng = random.Random(int(sys.argv[1]))
recs = []
for i in range(40):
    key = None if rng.random() < 0.5 else rng.randbytes(rng.randrange(0, 80))
    value = None if rng.random() < 0.1 else rng.randbytes(rng.randrange(0, 200))
    headers = None if rng.random() < 0.6 else [("h%d" % j, None if rng.random() < 0.3 else rng.randbytes(5)) for j in range(rng.randrange(0, 3))]
    recs.append((rng.randrange(-100, 100), key, value, headers))
area = b"".join(_builder._encode_record(i, *r) for i, r in enumerate(recs))
decoded = 0
for n in range(int(sys.argv[2])):
    data = bytearray(area[: rng.randrange(0, len(area) + 1)])
    for _ in range(rng.randrange(0, 4)):
        if data:
            data[rng.randrange(len(data))] = rng.randrange(256)
    data = bytes(data)
    count = rng.randrange(0, 45)
    out = []
    decoded += nat.decode_records(data, 0, len(data), count, 0, 0, out, Record, ("t", 0), False)
    nat.decode_records(data, 0, len(data), count, 0, 0, [], tuple, (), True)
b = nat.BatchBuilder(3, 1 << 16)
for i, (tsd, key, value, headers) in enumerate(recs):
    b.append(1000 + tsd, key, value, headers)
    b.append_value(1000, b"x" * i)
b.build(5)
print("fuzzed", decoded)
"""


def _memcheck_errors_in(stderr: str, needle: str) -> list[str]:
    """The memcheck error reports (blocks between blank ``==pid==`` lines) whose stack
    names ``needle``. CPython itself shows a few reports under memcheck that are not ours
    (uninitialised-value reports from the interpreter's start-up, for instance)."""
    blocks: list[str] = []
    current: list[str] = []
    for line in stderr.splitlines():
        if line.startswith("==") and line.rstrip().endswith("==") and line.count("==") == 2:
            if current:
                blocks.append("\n".join(current))
            current = []
        else:
            current.append(line)
    if current:
        blocks.append("\n".join(current))
    return [b for b in blocks if needle in b]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_native_decoder_under_valgrind_memcheck(tmp_path: pathlib.Path) -> None:
    """Truncated and mutated record areas through the native decoder (and the builder) under
    memcheck: any invalid read or write, or use of uninitialised memory, with the extension
    on the stack fails the test. (Checked against a build that reads 8 bytes past a varint:
    memcheck reports it in get_varint. A read of the single byte after a bytes object's end
    stays invisible: CPython keeps a NUL there, inside the allocation.)"""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        pytest.skip("valgrind is not installed (apt-get install valgrind)")
    script = tmp_path / "fuzz.py"
    script.write_text(_FUZZ_SCRIPT)
    # Every bytes object its own heap block, so a read past one hits memcheck's red zone.
    env = dict(os.environ, PYTHONMALLOC="malloc", PYTHONHASHSEED="0")
    proc = subprocess.run(
        [valgrind, "--tool=memcheck", "--leak-check=no", "--num-callers=30", sys.executable, str(script), "17", "3000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1700,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert "fuzzed" in proc.stdout
    assert "ERROR SUMMARY" in proc.stderr  # memcheck did run
    # the extension's frames: "_native.c:LINE" with debug info, "in .../_native.cpython-..." without
    ours = _memcheck_errors_in(proc.stderr, "_native.c:") + _memcheck_errors_in(proc.stderr, "/_native.cpython")
    assert not ours, "\n\n".join(ours)[:8000]


def test_memcheck_report_filter() -> None:
    report = "==1== \n==1== Invalid read of size 1\n==1==    at 0x1: decode_records (_native.c:10)\n==1== \n==1== Use of uninitialised value\n==1==    at 0x2: get_small_int (longobject.c:62)\n==1== \n"
    found = _memcheck_errors_in(report, "_native.c:")
    assert len(found) == 1 and "Invalid read" in found[0]


def test_annal_version_names_the_codec() -> None:
    cmd = [sys.executable, "-m", "annal.broker.cli", "--version"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert f"annal {annal.__version__} (codec: native C extension)" in out
    env = dict(os.environ, ANNAL_PURE_PYTHON="1")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    assert "(codec: pure Python (ANNAL_PURE_PYTHON is set))" in out


def test_send_object_takes_only_plain_calls_and_hands_the_rest_to_python() -> None:
    """Producer installs native.Send as its instance's send(): plain calls (a bytes value, the
    optional arguments None or absent) append in C; any other call reaches the Python send()
    with exactly its arguments; after disable() every call does."""
    from annal.client._accumulator import FutureRecordMetadata, ProducerBatch
    from annal.client.structs import TopicPartition

    class Owner:
        calls: list = []

        def send(self, *args, **kwargs):
            self.calls.append((args, kwargs))
            return "python"

    owner = Owner()
    lock = threading.Lock()
    builder = native.BatchBuilder(CODEC_NONE, 1 << 20, 1_000)  # type: ignore[union-attr]
    sticky = {"t": ProducerBatch(TopicPartition("t", 0), builder, 0.0, 1000, 0)}
    send = native.Send(owner, lock, sticky, FutureRecordMetadata, Owner.send)  # type: ignore[union-attr]
    plain = [
        ("t", b"v"),
        ("t", b"v", None),
        ("t", b"v", None, None, None, None),
    ]
    for args in plain:
        assert type(send(*args)) is FutureRecordMetadata
    assert type(send("t", b"v", key=None, headers=None, timestamp_ms=None)) is FutureRecordMetadata
    assert builder.records_count == 4 and owner.calls == []
    others = [
        (("t", b"v", b"key"), {}),
        (("t", "str"), {}),
        (("t", b"v", None, 3), {}),
        (("t",), {"value": b"v"}),
        (("t", b"v"), {"key": b"k"}),
        (("t", b"v", None), {"key": None}),  # key twice: Python's TypeError to raise
        (("t", b"v"), {"unknown": None}),
        (("nosticky", b"v"), {}),
    ]
    for args, kwargs in others:
        assert send(*args, **kwargs) == "python"
    assert owner.calls == others
    assert builder.records_count == 4
    send.disable()
    assert send("t", b"v") == "python" and builder.records_count == 4
    del owner
    with pytest.raises(ReferenceError):
        send("t", b"v")


def test_decoded_records_are_left_to_reference_counting() -> None:
    """Records made of atoms (ints, bytes, str, None, header tuples) cannot be in a cycle: the
    native decoder untracks them from the cyclic collector, as CPython does for such plain
    tuples, unless the class has a __dict__ (an attribute could then close a cycle)."""
    import gc

    b = native.BatchBuilder(CODEC_NONE, 1 << 20)  # type: ignore[union-attr]
    b.append(1, b"k", b"v", [("h", b"x"), ("n", None)])
    b.append(2, None, b"w", None)
    data = b.build()
    h = parse_header(data)

    class WithDict(tuple):
        pass

    for cls, prefix, tracked in [(Record, (), False), (_Prefixed, ("t", 1), False), (tuple, (), False), (WithDict, (), True)]:
        out: list = []
        assert native.decode_records(data, HEADER_SIZE, len(data), h.records_count, 0, 0, out, cls, prefix, False)  # type: ignore[union-attr]
        assert [gc.is_tracked(r) for r in out] == [tracked, tracked]
        assert not gc.is_tracked(out[0][-1]) and not gc.is_tracked(out[0][-1][0])
    out = []
    mutable_prefix = ([],)  # a prefix that is not an atom keeps the records tracked
    assert native.decode_records(data, HEADER_SIZE, len(data), 2, 0, 0, out, tuple, mutable_prefix, False)  # type: ignore[union-attr]
    assert all(gc.is_tracked(r) for r in out)
