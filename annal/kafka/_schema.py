"""Kafka message schemas, from Apache Kafka's own message definitions. No I/O but loading them.

``messages/*.json`` are Apache Kafka's ``clients/src/main/resources/common/message`` files
(Apache License 2.0, header kept in each): for every request and response they list each field
with the versions it exists in (``versions``), may be null in (``nullableVersions``) and is a
tagged field in (``taggedVersions`` + ``tag``), and the versions that are *flexible*
(``flexibleVersions``: compact strings/arrays and a tagged-field section after every struct).
Kafka generates Java from them; here ``Message.schema(version)`` compiles one version into a
list of ``Field`` once (cached) and ``decode``/``encode`` walk it. Reading the definitions
rather than typing the layouts again keeps every version's fields exactly Kafka's.

Values are plain dicts keyed by the field names in snake_case (``ThrottleTimeMs`` ->
``throttle_time_ms``); arrays of structs are lists of dicts. ``encode`` fills every field the
dict leaves out with the definition's default (0, "", false, the zero UUID, an empty array, or
null where the field's ``default`` is ``"null"``), so a handler only sets what it knows.

A ``records`` field may be given as a ``FileRecords``-like object (anything with ``size`` that
is not bytes): ``encode`` then writes its length prefix and leaves a hole, returning the parts
around it, so the listener sends those record bytes with ``sendfile`` from the segment file.

Thread-safety: compiled schemas are immutable after compilation; compilation is idempotent, so
a race only compiles a version twice.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from annal.errors import InvalidRequestError
from annal.kafka._primitives import FIXED, ZERO_UUID, Reader, put_uvarint

__all__ = ["Field", "Message", "message", "VersionRange", "Encoder"]


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


@dataclass(frozen=True, slots=True)
class VersionRange:
    low: int
    high: int  # inclusive; 32767 for "N+"

    @classmethod
    def parse(cls, text: str | None) -> "VersionRange":
        if text is None or text == "none":
            return cls(1, 0)  # empty
        if text.endswith("+"):
            return cls(int(text[:-1]), 0x7FFF)
        if "-" in text:
            lo, hi = text.split("-")
            return cls(int(lo), int(hi))
        return cls(int(text), int(text))

    def __contains__(self, version: object) -> bool:
        return isinstance(version, int) and self.low <= version <= self.high


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: str  # int8 ... float64, bool, uuid, string, bytes, records, struct, array
    nullable: bool
    default: Any
    tag: int | None = None  # set for a tagged field
    fields: tuple["Field", ...] = ()  # struct, or array of struct
    elem: str | None = None  # array of a primitive kind


def _default(kind: str, raw: Any, nullable: bool) -> Any:
    if raw == "null" or (raw is None and kind == "records" and nullable):
        return None
    if kind in FIXED:
        if raw is None:
            return 0
        text = str(raw)
        return int(text, 16) if text.lower().startswith("0x") else (float(text) if kind == "float64" else int(text))
    if kind == "bool":
        return str(raw).lower() == "true"
    if kind == "string":
        return "" if raw is None else str(raw)
    if kind == "uuid":
        return ZERO_UUID
    if kind in ("bytes", "records"):
        return b""
    return None


class Message:
    """One request or response definition (``ProduceRequest``...)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.name: str = spec["name"]
        self.api_key: int = int(spec.get("apiKey", -1))
        self.valid = VersionRange.parse(spec["validVersions"])
        self.flexible = VersionRange.parse(spec.get("flexibleVersions"))
        self._fields = spec.get("fields", [])
        self._common = {s["name"]: s["fields"] for s in spec.get("commonStructs", [])}

    def is_flexible(self, version: int) -> bool:
        return version in self.flexible

    @lru_cache(maxsize=None)
    def schema(self, version: int) -> tuple[Field, ...]:
        return self._compile(self._fields, version)

    def _compile(self, specs: list[dict[str, Any]], version: int) -> tuple[Field, ...]:
        out = []
        for f in specs:
            if version not in VersionRange.parse(f.get("versions")):
                continue
            tagged = version in VersionRange.parse(f.get("taggedVersions"))
            nullable = version in VersionRange.parse(f.get("nullableVersions"))
            ftype: str = f["type"]
            tag = int(f["tag"]) if tagged else None
            if ftype.startswith("[]"):
                inner = ftype[2:]
                if inner in FIXED or inner in ("bool", "uuid", "string", "bytes"):
                    out.append(Field(_snake(f["name"]), "array", nullable, None if nullable and f.get("default") == "null" else (), tag, elem=inner))
                else:
                    sub = f.get("fields") or self._common[inner]
                    out.append(Field(_snake(f["name"]), "array", nullable, None if nullable and f.get("default") == "null" else (), tag,
                                     fields=self._compile(sub, version)))
            elif ftype in FIXED or ftype in ("bool", "uuid", "string", "bytes", "records"):
                out.append(Field(_snake(f["name"]), ftype, nullable, _default(ftype, f.get("default"), nullable), tag))
            else:
                sub = f.get("fields") or self._common[ftype]
                out.append(Field(_snake(f["name"]), "struct", nullable, None, tag, fields=self._compile(sub, version)))
        return tuple(out)

    # ------------------------------------------------------------------ decode

    @lru_cache(maxsize=None)
    def _decoder(self, version: int) -> Any:
        from annal.kafka._codegen import make_decoder

        return make_decoder(self.schema(version), version in self.flexible)

    @lru_cache(maxsize=None)
    def _encoder(self, version: int) -> Any:
        from annal.kafka._codegen import make_encoder

        return make_encoder(self.schema(version), version in self.flexible)

    def decode(self, reader: Reader, version: int) -> dict[str, Any]:
        try:
            value, reader.pos = self._decoder(version)(reader.buf, reader.pos, reader.end)
        except UnicodeDecodeError:
            raise InvalidRequestError("a string is not valid UTF-8") from None
        return value  # type: ignore[no-any-return]

    def decode_interpreted(self, reader: Reader, version: int) -> dict[str, Any]:
        """The same as ``decode``, walking the schema (the reference the generated code is
        tested against)."""
        return _decode_struct(reader, self.schema(version), version in self.flexible)

    # ------------------------------------------------------------------ encode

    def encoder(self, version: int) -> Any:
        """The generated ``enc(encoder, value)`` of one version, compiled once: what ``encode``
        calls, for callers that look it up once per (api key, version)."""
        return self._encoder(version)

    def encode(self, value: dict[str, Any], version: int, enc: "Encoder | None" = None) -> "Encoder":
        enc = enc if enc is not None else Encoder()
        self._encoder(version)(enc, value)
        return enc

    def encode_interpreted(self, value: dict[str, Any], version: int) -> "Encoder":
        enc = Encoder()
        _encode_struct(enc, self.schema(version), version in self.flexible, value)
        return enc


def _decode_value(r: Reader, f: Field, kind: str, flexible: bool) -> Any:
    st = FIXED.get(kind)
    if st is not None:
        return r.fixed(st)
    if kind == "string":
        return r.compact_string(f.nullable) if flexible else r.string(f.nullable)
    if kind == "bool":
        return r.boolean()
    if kind == "uuid":
        return r.uuid()
    if kind in ("bytes", "records"):
        return r.compact_bytes(f.nullable) if flexible else r.bytes(f.nullable)
    if kind == "struct":
        return _decode_struct(r, f.fields, flexible)
    raise AssertionError(kind)


def _decode_field(r: Reader, f: Field, flexible: bool) -> Any:
    if f.kind == "array":
        n = r.array_len(flexible)
        if n < 0:
            if not f.nullable:
                raise InvalidRequestError(f"null array {f.name} where an array is required")
            return None
        if f.elem is not None:
            return [_decode_value(r, f, f.elem, flexible) for _ in range(n)]
        fields = f.fields
        return [_decode_struct(r, fields, flexible) for _ in range(n)]
    if f.kind == "struct" and f.nullable:
        if r.int8() < 0:
            return None
    return _decode_value(r, f, f.kind, flexible)


def _decode_struct(r: Reader, fields: tuple[Field, ...], flexible: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    tagged: dict[int, Field] | None = None
    for f in fields:
        if f.tag is not None:
            if tagged is None:
                tagged = {}
            tagged[f.tag] = f
            out[f.name] = f.default
            continue
        out[f.name] = _decode_field(r, f, flexible)
    if flexible:
        for _ in range(r.uvarint()):
            tag = r.uvarint()
            size = r.uvarint()
            data = r.raw(size)
            f2 = tagged.get(tag) if tagged else None
            if f2 is not None:  # unknown tags are skipped, as Kafka does
                out[f2.name] = _decode_field(Reader(data), f2, flexible)
    return out


class Encoder:
    """Bytes being built, with holes for ``records`` sent by the caller (see module doc).
    ``parts`` alternates bytes and hole objects; ``size`` counts both."""

    __slots__ = ("parts", "cur", "hole_bytes")

    def __init__(self) -> None:
        self.parts: list[Any] = []
        self.cur = bytearray()
        self.hole_bytes = 0

    def hole(self, obj: Any, size: int) -> None:
        self.parts.append(bytes(self.cur))
        self.parts.append(obj)
        self.cur = bytearray()
        self.hole_bytes += size

    def finish(self) -> list[Any]:
        if self.cur:
            self.parts.append(bytes(self.cur))
            self.cur = bytearray()
        return self.parts

    @property
    def size(self) -> int:
        return sum(len(p) for p in self.parts if isinstance(p, bytes)) + len(self.cur) + self.hole_bytes

    def tobytes(self) -> bytes:
        if self.hole_bytes:
            raise ValueError("message has records holes; send its parts")
        return b"".join(self.finish())


def _put_len(out: bytearray, n: int, flexible: bool, wide: bool) -> None:
    """Length prefix: compact (uvarint n+1) or int16/int32; ``n = -1`` is null."""
    if flexible:
        put_uvarint(out, n + 1)
    elif wide:
        out += n.to_bytes(4, "big", signed=True)
    else:
        out += n.to_bytes(2, "big", signed=True)


def _encode_value(enc: Encoder, f: Field, kind: str, flexible: bool, v: Any) -> None:
    out = enc.cur
    st = FIXED.get(kind)
    if st is not None:
        out += st.pack(v)
    elif kind == "string":
        if v is None:
            if not f.nullable:
                raise ValueError(f"field {f.name} is not nullable")
            _put_len(out, -1, flexible, False)
        else:
            b = v.encode()
            _put_len(out, len(b), flexible, False)
            out += b
    elif kind == "bool":
        out.append(1 if v else 0)
    elif kind == "uuid":
        out += (v if isinstance(v, uuid.UUID) else uuid.UUID(str(v))).bytes
    elif kind in ("bytes", "records"):
        if v is None:
            _put_len(out, -1, flexible, True)
        elif isinstance(v, (bytes, bytearray, memoryview)):
            _put_len(out, len(v), flexible, True)
            out += v
        else:  # a records hole: size now, bytes sent by the caller
            size = int(v.size)
            _put_len(out, size, flexible, True)
            enc.hole(v, size)
    elif kind == "struct":
        _encode_struct(enc, f.fields, flexible, v or {})
    else:
        raise AssertionError(kind)


def _encode_field(enc: Encoder, f: Field, flexible: bool, v: Any) -> None:
    if f.kind == "array":
        if v is None:
            _put_len(enc.cur, -1, flexible, True)
            return
        _put_len(enc.cur, len(v), flexible, True)
        if f.elem is not None:
            for item in v:
                _encode_value(enc, f, f.elem, flexible, item)
        else:
            for item in v:
                _encode_struct(enc, f.fields, flexible, item)
        return
    if f.kind == "struct" and f.nullable:
        if v is None:
            enc.cur.append(0xFF)
            return
        enc.cur.append(1)
    _encode_value(enc, f, f.kind, flexible, v)


def _encode_struct(enc: Encoder, fields: tuple[Field, ...], flexible: bool, value: dict[str, Any]) -> None:
    tagged = []
    for f in fields:
        v = value.get(f.name, f.default)
        if f.tag is not None:
            if f.name in value and v is not None and v != f.default:
                tagged.append((f, v))
            continue
        _encode_field(enc, f, flexible, v)
    if flexible:
        put_uvarint(enc.cur, len(tagged))
        for f, v in sorted(tagged, key=lambda t: t[0].tag or 0):
            sub = Encoder()
            _encode_field(sub, f, flexible, v)
            data = sub.tobytes()
            put_uvarint(enc.cur, f.tag or 0)
            put_uvarint(enc.cur, len(data))
            enc.cur += data


_COMMENTS = re.compile(r"(?m)^\s*//.*\n?")


@lru_cache(maxsize=None)
def message(name: str) -> Message:
    """The definition ``name`` (``"FetchResponse"``) from ``messages/``."""
    text = resources.files("annal.kafka").joinpath("messages", f"{name}.json").read_text(encoding="utf-8")
    return Message(json.loads(_COMMENTS.sub("", text)))
