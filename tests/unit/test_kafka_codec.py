"""annal.kafka: the Kafka codec against kafka-python's own encoder/decoder, every supported
version, and malformed input."""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest

from annal.errors import InvalidRequestError
from annal.kafka import SUPPORTED, ApiKey, UnsupportedVersion, decode_request, encode_response
from annal.kafka._primitives import Reader, put_uvarint
from annal.kafka._schema import message
from annal.kafka.header import decode_response, encode_request


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**31 - 1, 2**63 - 1])
def test_uvarint_round_trip(value: int) -> None:
    out = bytearray()
    put_uvarint(out, value)
    assert Reader(out).uvarint() == value


@pytest.mark.parametrize("api_key", sorted(SUPPORTED))
def test_every_supported_version_round_trips_defaults(api_key: int) -> None:
    api = SUPPORTED[api_key]
    for version in range(api.min_version, api.max_version + 1):
        for kind in ("Request", "Response"):
            msg = message(api.name + kind)
            data = msg.encode({}, version).tobytes()
            r = Reader(data)
            decoded = msg.decode(r, version)
            assert r.remaining == 0, (api.name, kind, version)
            assert msg.encode(decoded, version).tobytes() == data


@pytest.mark.parametrize("version", [0, 1, 4, 8, 9, 10, 12])
def test_metadata_request_from_kafka_python(version: int) -> None:
    from kafka.protocol.metadata import MetadataRequest

    req = MetadataRequest(version=version, topics=[MetadataRequest.MetadataRequestTopic(name="orders")],
                          allow_auto_topic_creation=False)
    body = message("MetadataRequest").decode(Reader(req.encode()), version)
    assert [t["name"] for t in body["topics"]] == ["orders"]


@pytest.mark.parametrize("version", [1, 5, 9, 12])
def test_metadata_response_read_by_kafka_python(version: int) -> None:
    from kafka.protocol.metadata import MetadataResponse

    tid = uuid.uuid4()
    body = {"brokers": [{"node_id": 3, "host": "h", "port": 19092, "rack": None}], "cluster_id": "c",
            "controller_id": 3, "topics": [{"error_code": 0, "name": "orders", "topic_id": tid, "partitions": [
                {"error_code": 0, "partition_index": 0, "leader_id": 3, "replica_nodes": [3], "isr_nodes": [3]}]}]}
    data = message("MetadataResponse").encode(body, version).tobytes()
    resp = MetadataResponse.decode(data, version=version)
    assert resp.brokers[0].port == 19092
    assert resp.topics[0].name == "orders"
    assert resp.topics[0].partitions[0].leader_id == 3
    if version >= 10:
        assert resp.topics[0].topic_id == tid


def test_request_frame_round_trip_and_header() -> None:
    frame = encode_request(ApiKey.FETCH, 12, 77, "me", {"max_wait_ms": 500, "min_bytes": 1, "topics": [
        {"topic": "t", "partitions": [{"partition": 2, "fetch_offset": 10, "partition_max_bytes": 1024}]}]})
    header, body = decode_request(memoryview(frame)[4:])
    assert (header.api_key, header.api_version, header.correlation_id, header.client_id) == (1, 12, 77, "me")
    assert body["topics"][0]["partitions"][0]["fetch_offset"] == 10
    assert body["session_epoch"] == -1  # the definition's default


def test_request_header_tagged_fields_are_skipped() -> None:
    """A flexible request's header may carry tagged fields (none that Annal uses): skipped,
    and a header cut inside them is refused."""
    frame = bytearray(encode_request(ApiKey.FETCH, 12, 5, "me", {"topics": []})[4:])
    at = 2 + 2 + 4 + 2 + 2  # api_key, api_version, correlation_id, client_id "me": the tag count
    assert frame[at] == 0
    _, plain = decode_request(bytes(frame))
    tagged = frame[:at] + bytes([2, 0, 1, 0x7F, 9, 3, 1, 2, 3]) + frame[at + 1:]  # two tags
    header, body = decode_request(bytes(tagged))
    assert header.correlation_id == 5 and body == plain
    with pytest.raises(InvalidRequestError):
        decode_request(bytes(tagged[:at + 6]))


def test_response_with_records_hole_counts_its_size() -> None:
    class Hole:
        size = 100

    parts = encode_response(ApiKey.FETCH, 11, 5, {"responses": [{"topic": "t", "partitions": [
        {"partition_index": 0, "records": Hole()}]}]})
    assert isinstance(parts[1], Hole)
    total = sum(len(p) for p in parts if isinstance(p, bytes)) + 100
    assert int.from_bytes(parts[0][:4], "big") == total - 4


def test_response_decodes_with_kafka_python_api_versions() -> None:
    from kafka.protocol.metadata import ApiVersionsResponse

    parts = encode_response(ApiKey.API_VERSIONS, 3, 9, {"api_keys": [
        {"api_key": 0, "min_version": 3, "max_version": 12}]})
    data = b"".join(parts)
    cid, body = decode_response(ApiKey.API_VERSIONS, 3, data[4:])
    assert cid == 9 and body["api_keys"][0]["max_version"] == 12
    resp = ApiVersionsResponse.decode(data[8:], version=3)
    assert resp.api_keys[0].max_version == 12


def test_unsupported_version_and_unknown_api_are_reported_with_the_header() -> None:
    frame = encode_request(ApiKey.FETCH, 4, 1, None, {})
    bad = bytearray(frame[4:])
    bad[2:4] = (99).to_bytes(2, "big")
    with pytest.raises(UnsupportedVersion) as exc:
        decode_request(bad)
    assert exc.value.header.correlation_id == 1
    bad[0:2] = (999).to_bytes(2, "big")
    with pytest.raises(UnsupportedVersion):
        decode_request(bad)


@pytest.mark.parametrize("cut", [1, 5, 9, 12, 20])
def test_truncated_requests_raise_invalid_request(cut: int) -> None:
    frame = encode_request(ApiKey.PRODUCE, 9, 3, "c", {"acks": 1, "timeout_ms": 1000, "topic_data": [
        {"name": "t", "partition_data": [{"index": 0, "records": b"x" * 10}]}]})[4:]
    with pytest.raises(InvalidRequestError):
        decode_request(frame[:-cut])


def test_absurd_array_length_is_refused_before_allocating() -> None:
    frame = bytearray(encode_request(ApiKey.METADATA, 1, 3, "c", {"topics": []})[4:])
    frame[-4:] = (2**31 - 1).to_bytes(4, "big")
    with pytest.raises(InvalidRequestError):
        decode_request(frame)


def test_the_compatibility_doc_lists_exactly_the_supported_versions() -> None:
    import pathlib
    import re

    doc = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "kafka-compatibility.md").read_text()
    rows = {int(m[2]): (m[1], int(m[3]), int(m[4]))
            for m in re.finditer(r"^\| (\w+) \| (\d+) \| (\d+)-(\d+) \|", doc, re.MULTILINE)}
    assert rows == {int(k): (v.name, v.min_version, v.max_version) for k, v in SUPPORTED.items()}


@pytest.mark.parametrize("api_key", sorted(SUPPORTED))
def test_generated_code_matches_the_interpreter(api_key: int) -> None:
    api = SUPPORTED[api_key]
    for version in range(api.min_version, api.max_version + 1):
        for kind in ("Request", "Response"):
            msg = message(api.name + kind)
            data = msg.encode_interpreted({}, version).tobytes()
            assert msg.encode({}, version).tobytes() == data
            a, b = Reader(data), Reader(data)
            assert msg.decode(a, version) == msg.decode_interpreted(b, version)
            assert a.pos == b.pos == len(data)


def test_generated_code_round_trips_a_full_fetch_answer() -> None:
    body = {"throttle_time_ms": 1, "error_code": 0, "session_id": 0, "responses": [{"topic": "t", "partitions": [
        {"partition_index": 3, "error_code": 0, "high_watermark": 99, "last_stable_offset": 99, "log_start_offset": 1,
         "aborted_transactions": None, "preferred_read_replica": -1, "records": b"abc"}]}]}
    msg = message("FetchResponse")
    for version in (4, 11, 12):
        data = msg.encode(body, version).tobytes()
        assert data == msg.encode_interpreted(body, version).tobytes()
        got = msg.decode(Reader(data), version)
        assert bytes(got["responses"][0]["partitions"][0]["records"]) == b"abc"
        assert got["responses"][0]["partitions"][0]["high_watermark"] == 99


class _Hole:
    """A records hole, as a ``LogReadResult`` stands in a Fetch answer."""

    def __init__(self, size: int) -> None:
        self.size = size


_RANGES = {"int8": 7, "int16": 15, "uint16": 16, "int32": 31, "uint32": 32, "int64": 63}


def _random_value(rng: random.Random, f: Any, kind: str, holes: bool) -> Any:
    """A value of ``kind`` for field ``f``: lengths that need one- and two-byte varints, nulls
    where the field may be null."""
    if kind in _RANGES:
        bits = _RANGES[kind]
        if kind.startswith("uint"):
            return rng.choice([0, 1, 2**bits - 1, rng.randrange(2**bits)])
        return rng.choice([0, -1, 2 ** bits - 1, -(2 ** bits), rng.randrange(-(2 ** bits), 2 ** bits)])
    if kind == "float64":
        return rng.choice([0.0, -1.5, rng.random() * 1e9])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "uuid":
        return uuid.UUID(int=rng.getrandbits(128))
    if f.nullable and rng.random() < 0.2:
        return None
    if kind == "string":
        return "".join(rng.choice("ab\u00e9\u4e2d") for _ in range(rng.choice([0, 3, 126, 127])))
    if kind in ("bytes", "records"):
        if kind == "records" and holes and rng.random() < 0.5:
            return _Hole(rng.choice([0, 5, 200, 1 << 20]))
        return rng.randbytes(rng.choice([0, 3, 126, 127, 200]))
    if kind == "struct":
        return _random_struct(rng, f.fields, holes)
    raise AssertionError(kind)


def _random_struct(rng: random.Random, fields: Any, holes: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields:
        if f.tag is not None and rng.random() < 0.5:
            continue  # a tagged field left out (absent from the encoding)
        if f.kind == "array":
            if f.nullable and rng.random() < 0.2:
                out[f.name] = None
                continue
            n = rng.choice([0, 1, 2, 126, 127]) if f.elem is not None else rng.choice([0, 1, 2])
            out[f.name] = [_random_value(rng, f, f.elem, holes) if f.elem is not None
                           else _random_struct(rng, f.fields, holes) for _ in range(n)]
        elif f.kind == "struct" and f.nullable and rng.random() < 0.3:
            out[f.name] = None
        else:
            out[f.name] = _random_value(rng, f, f.kind, holes)
    return out


def _outcome(fn: Any, data: Any) -> tuple[Any, ...]:
    r = Reader(data)
    try:
        return ("ok", fn(r), r.pos)
    except InvalidRequestError:
        return ("invalid",)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_code_matches_the_interpreter_on_random_messages(seed: int) -> None:
    """Every supported message and version, with random values (tagged fields set and unset,
    lengths of one- and two-byte varints, nulls, records holes): the generated encoder writes the
    interpreter's bytes and holes, the generated decoder reads what the interpreter reads, and
    both refuse the same truncated inputs. Replay a failure with its seed."""
    rng = random.Random(seed)
    for api in SUPPORTED.values():
        for version in range(api.min_version, api.max_version + 1):
            for kind in ("Request", "Response"):
                msg = message(api.name + kind)
                where = f"{api.name}{kind} v{version}, seed {seed}"
                for _ in range(3):
                    value = _random_struct(rng, msg.schema(version), holes=kind == "Response")
                    got, want = msg.encode(value, version), msg.encode_interpreted(value, version)
                    assert got.size == want.size, where
                    parts = got.finish()
                    assert parts == want.finish(), where
                    if any(not isinstance(p, bytes) for p in parts):
                        continue  # a hole: no whole message to decode
                    data = b"".join(parts)
                    assert _outcome(lambda r: msg.decode(r, version), data) == \
                        _outcome(lambda r: msg.decode_interpreted(r, version), data) != ("invalid",), where
                    for cut in {1, 2, rng.randint(1, max(1, len(data)))}:
                        if cut <= len(data):
                            short = data[:-cut]
                            assert _outcome(lambda r: msg.decode(r, version), short) == \
                                _outcome(lambda r: msg.decode_interpreted(r, version), short), f"{where}, cut {cut}"
